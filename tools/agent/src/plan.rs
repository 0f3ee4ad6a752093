//! Window planning: cutting a table of `page_total` entries into as few
//! requests as the largest payload (`MAX_IPC_MSG_LEN`) allows.
//!
//! A request holds at most [`wire::MAX_WORDS_PER_MSG`] (16360) words, so a
//! window holds at most 16360 × (32 / pte_bits) entries. Every window starts
//! at a multiple of that size (hence of the fields per word, as the kernel
//! requires); all windows but the last are full.

use anyhow::{anyhow, bail, Result};

use crate::device::{self, Device, SwitchTable};
use crate::mapping::{Mapping, MappingFile};
use crate::wire;

/// One request's slice of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First region (`page_offset`).
    pub offset: u32,
    /// Number of regions (`page_count`).
    pub count: u32,
}

/// Entries in a full window at `pte_bits` bits per entry.
pub fn entries_per_window(pte_bits: u8) -> u32 {
    wire::MAX_WORDS_PER_MSG as u32 * wire::fields_per_word(pte_bits)
}

/// The windows covering `0..page_total` exactly, in order.
pub fn plan(page_total: u32, pte_bits: u8) -> Vec<Window> {
    let step = u64::from(entries_per_window(pte_bits));
    let total = u64::from(page_total);
    (0..total.div_ceil(step))
        .map(|i| {
            let offset = i * step;
            Window {
                offset: offset as u32,
                count: step.min(total - offset) as u32,
            }
        })
        .collect()
}

/// The single window that frees kernel chunk `chunk` (`page_count` 0 at
/// `chunk * CHUNK_PTE_COUNT`), checked against `page_total`.
pub fn free_chunk(chunk: u32, page_total: u32) -> Result<Window, String> {
    let offset = u64::from(chunk) * u64::from(wire::CHUNK_PTE_COUNT);
    if offset >= u64::from(page_total) {
        let chunks = u64::from(page_total).div_ceil(u64::from(wire::CHUNK_PTE_COUNT));
        return Err(format!(
            "--free-chunk {chunk} is out of range: {page_total} regions make {chunks} chunk{} of {} (0..={})",
            if chunks == 1 { "" } else { "s" },
            wire::CHUNK_PTE_COUNT,
            chunks.saturating_sub(1)
        ));
    }
    Ok(Window {
        offset: offset as u32,
        count: 0,
    })
}

/// Table geometry for an upload: the device's defaults with overrides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Paths of the target (what the kernel compares `dev_count` with).
    pub dev_count: u16,
    /// Regions in the whole table.
    pub page_total: u32,
    /// Bits per entry.
    pub pte_bits: u8,
}

impl Params {
    /// The header of an upload to `dev` with this geometry (page_offset and
    /// page_count are per window).
    pub fn header(&self, dev: &Device, userland: [u32; 2]) -> wire::PgTableHeader {
        wire::PgTableHeader {
            userland,
            dev_major: dev.major,
            dev_minor: dev.minor,
            page_total: self.page_total,
            page_offset: 0,
            page_count: 0,
            dev_count: self.dev_count,
            pte_bits: self.pte_bits,
        }
    }

    /// Derives the geometry from a switch table line, applying
    /// `--page-total` and `--pte-bits` if given, and validates it.
    pub fn resolve(
        table: &SwitchTable,
        page_total: Option<u32>,
        pte_bits: Option<u8>,
    ) -> Result<Self> {
        let dev_count = u16::try_from(table.dev_count).map_err(|_| {
            anyhow!(
                "the target has {} paths; the ABI carries at most {}",
                table.dev_count,
                u16::MAX
            )
        })?;
        let page_total = match page_total {
            Some(0) => bail!("--page-total must be at least 1"),
            Some(n) => n,
            None => table.page_total()?,
        };
        if page_total == 0 {
            bail!("the device has no regions (length 0)");
        }
        let pte_bits = pte_bits.unwrap_or_else(|| device::default_pte_bits(table.dev_count));
        device::check_pte_bits(pte_bits, table.dev_count)?;
        Ok(Self {
            dev_count,
            page_total,
            pte_bits,
        })
    }
}

/// What an upload's entries come from, and what else the source sets.
pub struct Source {
    /// The entries.
    pub mapping: Mapping,
    /// Chunks to leave unallocated (mapping files only).
    pub unallocated: Vec<u32>,
    /// Userland words (mapping files only).
    pub userland: Option<[u32; 2]>,
}

impl Source {
    /// A source of entries only.
    pub fn entries(mapping: Mapping) -> Self {
        Self {
            mapping,
            unallocated: Vec::new(),
            userland: None,
        }
    }

    /// A mapping file's content.
    pub fn file(f: MappingFile) -> Self {
        Self {
            mapping: Mapping::Table(f.table),
            unallocated: f.unallocated,
            userland: f.userland,
        }
    }
}

/// Everything one upload sends: the common header, the windows, and where
/// their entries come from (`None` for a chunk free, which carries none).
#[derive(Clone, Debug)]
pub struct UploadPlan {
    /// Header fields shared by every window (offset and count are per window).
    pub header: wire::PgTableHeader,
    /// Windows, in order.
    pub windows: Vec<Window>,
    /// Entry source.
    pub mapping: Option<Mapping>,
}

impl UploadPlan {
    /// A plan covering the whole table from `mapping`.
    pub fn full(header: wire::PgTableHeader, mapping: Mapping) -> Self {
        Self {
            windows: plan(header.page_total, header.pte_bits),
            header,
            mapping: Some(mapping),
        }
    }

    /// The same plan, then a free of each chunk in `chunks` (after the
    /// entries, so the chunks end up unallocated).
    pub fn with_frees(mut self, chunks: &[u32]) -> Self {
        self.windows.extend(chunks.iter().map(|&c| Window {
            offset: c * wire::CHUNK_PTE_COUNT,
            count: 0,
        }));
        self
    }

    /// The plan that uploads `src` under `header` (page_total, dev_count,
    /// pte_bits and userland set). Chunks left unallocated need windows
    /// aligned to chunk starts, so a pte_bits that does not divide 32 is
    /// widened to the next power of two, or refused if `fixed_bits` (the
    /// user chose it). The source's userland words replace the header's
    /// unless `keep_userland`.
    pub fn for_source(
        mut header: wire::PgTableHeader,
        src: Source,
        fixed_bits: bool,
        keep_userland: bool,
    ) -> Result<Self> {
        let mut mapping = src.mapping;
        if !src.unallocated.is_empty() && 32 % u32::from(header.pte_bits) != 0 {
            if fixed_bits {
                bail!(
                    "unallocated chunks need a pte_bits that divides 32 (--pte-bits {} does not)",
                    header.pte_bits
                );
            }
            header.pte_bits = header.pte_bits.next_power_of_two();
            mapping = mapping.repacked(header.pte_bits)?;
        }
        if !keep_userland {
            header.userland = src.userland.unwrap_or([0, 0]);
        }
        Ok(Self::full(header, mapping).with_frees(&src.unallocated))
    }

    /// A plan that frees kernel chunk `chunk`.
    pub fn free(header: wire::PgTableHeader, chunk: u32) -> Result<Self> {
        Ok(Self {
            windows: vec![free_chunk(chunk, header.page_total).map_err(anyhow::Error::msg)?],
            header,
            mapping: None,
        })
    }

    /// Regions carried by all windows.
    pub fn regions(&self) -> u64 {
        self.windows.iter().map(|w| u64::from(w.count)).sum()
    }

    /// The encoded `IpcPgTable` of window `w`.
    pub fn payload(&self, w: &Window) -> Result<Vec<u8>, wire::WireError> {
        let words = match &self.mapping {
            Some(m) => m.window_words(
                u64::from(w.offset),
                u64::from(w.count),
                self.header.pte_bits,
            ),
            None => Vec::new(),
        };
        let header = wire::PgTableHeader {
            page_offset: w.offset,
            page_count: w.count,
            ..self.header
        };
        wire::encode_request(&header, &words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_plan(total: u32, bits: u8) {
        let w = plan(total, bits);
        let step = entries_per_window(bits);
        let fpw = wire::fields_per_word(bits);
        assert_eq!(w.len() as u64, u64::from(total).div_ceil(u64::from(step)));
        let mut next = 0u64;
        for (i, win) in w.iter().enumerate() {
            assert_eq!(u64::from(win.offset), next, "contiguous");
            assert_eq!(win.offset % fpw, 0, "aligned to fields per word");
            assert!(win.count > 0 && win.count <= step);
            if i + 1 < w.len() {
                assert_eq!(win.count, step, "all but the last are full");
            }
            let words = wire::words_for(u64::from(win.count), bits) as usize;
            assert!(wire::pg::HDR_LEN + 4 * words <= wire::MAX_IPC_MSG_LEN);
            next += u64::from(win.count);
        }
        assert_eq!(next, u64::from(total), "exact coverage");
    }

    #[test]
    fn window_sizes() {
        assert_eq!(entries_per_window(1), 16360 * 32);
        assert_eq!(entries_per_window(2), 16360 * 16);
        assert_eq!(entries_per_window(3), 16360 * 10);
        assert_eq!(entries_per_window(5), 16360 * 6);
        assert_eq!(entries_per_window(17), 16360);
        assert_eq!(entries_per_window(32), 16360);
    }

    #[test]
    fn plans_cover_exactly() {
        for bits in 1..=32u8 {
            for total in [
                1,
                2,
                31,
                32,
                33,
                16360,
                16361,
                523_519,
                523_520,
                523_521,
                1 << 20,
            ] {
                check_plan(total, bits);
            }
        }
        check_plan(u32::MAX, 1);
        check_plan(u32::MAX, 32);
    }

    #[test]
    fn plan_counts_and_last_window() {
        assert!(plan(0, 2).is_empty());
        let w = plan(1_000_000, 2);
        assert_eq!(w.len(), 4);
        assert_eq!(
            w[3],
            Window {
                offset: 3 * 261_760,
                count: 1_000_000 - 3 * 261_760
            }
        );
        let w = plan(523_520, 1);
        assert_eq!(
            w,
            vec![Window {
                offset: 0,
                count: 523_520
            }]
        );
        let w = plan(u32::MAX, 32);
        assert_eq!(w.len(), 262_529);
        assert_eq!(w.last().unwrap().count, (u32::MAX % 16360));
    }

    #[test]
    fn free_chunk_window() {
        assert_eq!(
            free_chunk(0, 1).unwrap(),
            Window {
                offset: 0,
                count: 0
            }
        );
        assert_eq!(
            free_chunk(3, 8192 * 3 + 1).unwrap(),
            Window {
                offset: 8192 * 3,
                count: 0
            }
        );
        let e = free_chunk(3, 8192 * 3).unwrap_err();
        assert!(
            e.contains("out of range: 24576 regions make 3 chunks of 8192 (0..=2)"),
            "{e}"
        );
        assert!(free_chunk(u32::MAX, u32::MAX).is_err());
    }

    fn header(p: Params) -> wire::PgTableHeader {
        wire::PgTableHeader {
            userland: [7, 0x2a],
            dev_major: 253,
            dev_minor: 4,
            page_total: p.page_total,
            page_offset: 0,
            page_count: 0,
            dev_count: p.dev_count,
            pte_bits: p.pte_bits,
        }
    }

    #[test]
    fn params_from_table_and_overrides() {
        let t = device::parse_table(&device::targets("0 4800000 switch 3 8 8:1 0 8:2 0 8:3 0"))
            .unwrap();
        let p = Params::resolve(&t, None, None).unwrap();
        assert_eq!(
            p,
            Params {
                dev_count: 3,
                page_total: 600_000,
                pte_bits: 2
            }
        );
        let p = Params::resolve(&t, Some(10), Some(8)).unwrap();
        assert_eq!(
            p,
            Params {
                dev_count: 3,
                page_total: 10,
                pte_bits: 8
            }
        );
        let e = |pt, pb| Params::resolve(&t, pt, pb).unwrap_err().to_string();
        assert!(e(Some(0), None).contains("at least 1"));
        assert!(e(None, Some(1)).contains("too narrow for 3 paths"));
        assert!(e(None, Some(33)).contains("1..=32"));
        let t = device::parse_table(&device::targets("0 0 switch 1 8 8:1 0")).unwrap();
        assert!(Params::resolve(&t, None, None)
            .unwrap_err()
            .to_string()
            .contains("no regions"));
    }

    #[test]
    fn round_robin_upload_end_to_end() {
        let t = device::parse_table(&device::targets("0 4800000 switch 3 8 8:1 0 8:2 0 8:3 0"))
            .unwrap();
        let p = Params::resolve(&t, None, None).unwrap();
        let plan = UploadPlan::full(header(p), Mapping::RoundRobin { dev_count: 3 });
        assert_eq!(plan.windows.len(), 3); // 261760 entries per window at 2 bits
        assert_eq!(plan.regions(), 600_000);
        let mut seen = 0u64;
        for w in &plan.windows {
            let bytes = plan.payload(w).unwrap();
            let h = wire::decode_request_header(&bytes).unwrap();
            assert_eq!((h.page_offset, h.page_count), (w.offset, w.count));
            assert_eq!((h.page_total, h.dev_count, h.pte_bits), (600_000, 3, 2));
            assert_eq!((h.dev_major, h.dev_minor, h.userland), (253, 4, [7, 0x2a]));
            let words: Vec<u32> = bytes[wire::pg::PTBL_BUFF..]
                .chunks(4)
                .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            assert_eq!(words.len() as u64, wire::words_for(u64::from(w.count), 2));
            for (i, e) in wire::unpack(&words, 2, u64::from(w.count))
                .into_iter()
                .enumerate()
            {
                assert_eq!(u64::from(e), (u64::from(w.offset) + i as u64) % 3);
            }
            seen += u64::from(w.count);
        }
        assert_eq!(seen, 600_000);
    }

    #[test]
    fn free_chunk_upload() {
        let p = Params {
            dev_count: 2,
            page_total: 20_000,
            pte_bits: 1,
        };
        let plan = UploadPlan::free(header(p), 2).unwrap();
        assert_eq!(plan.regions(), 0);
        let bytes = plan.payload(&plan.windows[0]).unwrap();
        assert_eq!(bytes.len(), wire::pg::HDR_LEN);
        let h = wire::decode_request_header(&bytes).unwrap();
        assert_eq!(
            (h.page_offset, h.page_count, h.page_total),
            (16384, 0, 20_000)
        );
        assert!(UploadPlan::free(header(p), 3).is_err());
    }
}
