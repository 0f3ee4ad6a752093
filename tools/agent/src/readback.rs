//! The live table read back from the kernel (`dm-switch dump`, `upload
//! --diff`): the dump's windows decoded into a [`TableImage`], and its
//! renderings (a mapping file, `set_region_mappings` tokens, JSON).
//!
//! A dump is the sequence of uploads that recreates the table (see
//! `include/uapi/dm-switch.h`, `NETLINK_CMD_DUMP_PAGE_TBL`): a window with
//! `page_count` 0 is an unallocated chunk, every other window carries its
//! regions' entries.

use std::fmt::Write as _;

use crate::mapping::PackedTable;
use crate::plan::{UploadPlan, Window};
use crate::wire;

/// A run of consecutive regions on one path, or unallocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// First region.
    pub first: u64,
    /// Last region (inclusive).
    pub last: u64,
    /// The path, or `None` for regions of an unallocated chunk (unmapped).
    pub path: Option<u32>,
}

/// The live table of a device, as a dump describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableImage {
    /// Regions in the table.
    pub page_total: u32,
    /// Paths of the target.
    pub dev_count: u16,
    /// The `pte_bits` the table was uploaded with (`reserved` of the dump's
    /// windows): the width that changes it in place.
    pub table_bits: u8,
    /// The two userland words.
    pub userland: [u32; 2],
    /// Entries (unallocated chunks read as path 0), packed at the dump's width.
    pub entries: PackedTable,
    /// Whether each chunk is allocated.
    pub allocated: Vec<bool>,
}

impl TableImage {
    /// Decodes a dump's windows; checks that they describe one table once.
    pub fn from_windows(windows: &[Vec<u8>]) -> Result<Self, String> {
        let first = windows.first().ok_or("the kernel sent an empty dump")?;
        let h0 = wire::decode_request_header(first).map_err(|e| e.to_string())?;
        let chunk = u64::from(wire::CHUNK_PTE_COUNT);
        let total = u64::from(h0.page_total);
        let mut entries = PackedTable::new(total, h0.pte_bits)?;
        let mut allocated = vec![true; total.div_ceil(chunk) as usize];
        let mut next = 0u64;
        for w in windows {
            let h = wire::decode_request_header(w).map_err(|e| e.to_string())?;
            let off = u64::from(h.page_offset);
            if (h.page_total, h.pte_bits, h.dev_count, h.userland)
                != (h0.page_total, h0.pte_bits, h0.dev_count, h0.userland)
                || off != next
            {
                return Err(format!("inconsistent dump window at region {off}"));
            }
            if h.page_count == 0 {
                allocated[(off / chunk) as usize] = false;
                next = (off + chunk).min(total);
                continue;
            }
            let count = u64::from(h.page_count);
            let words: Vec<u32> = w[wire::pg::HDR_LEN..]
                .chunks_exact(4)
                .map(|b| wire::read_u32(b, 0))
                .collect();
            if (words.len() as u64) < wire::words_for(count, h.pte_bits) {
                return Err(format!("truncated dump window at region {off}"));
            }
            for i in 0..count {
                entries.set(off + i, wire::get_field(&words, h.pte_bits, i));
            }
            next = off + count;
        }
        if next != total {
            return Err(format!("the dump ended at region {next} of {total}"));
        }
        Ok(Self {
            page_total: h0.page_total,
            dev_count: h0.dev_count,
            table_bits: first[wire::pg::RESERVED],
            userland: h0.userland,
            entries,
            allocated,
        })
    }

    /// Whether region `r`'s chunk is allocated.
    pub fn is_allocated(&self, r: u64) -> bool {
        self.allocated[(r / u64::from(wire::CHUNK_PTE_COUNT)) as usize]
    }

    /// The table as runs of equal placement, in region order.
    pub fn runs(&self) -> Vec<Run> {
        let mut runs: Vec<Run> = Vec::new();
        for r in 0..u64::from(self.page_total) {
            let path = self.is_allocated(r).then(|| self.entries.get(r));
            match runs.last_mut() {
                Some(run) if run.path == path && run.last + 1 == r => run.last = r,
                _ => runs.push(Run {
                    first: r,
                    last: r,
                    path,
                }),
            }
        }
        runs
    }

    /// A mapping file `upload --file` reads back to this very table.
    pub fn to_mapping_file(&self, title: &str) -> String {
        let mut s = format!(
            "# dm-switch dump of {title}: {} regions, {} paths, pte_bits {}\n\
             # REGION(S) PATH; `-` marks unallocated chunks (unmapped: path 0)\n\
             userland {:#x},{:#x}\n",
            self.page_total, self.dev_count, self.table_bits, self.userland[0], self.userland[1]
        );
        for run in self.runs() {
            let regions = if run.first == run.last {
                run.first.to_string()
            } else {
                format!("{}-{}", run.first, run.last)
            };
            let path = run.path.map_or("-".to_string(), |p| p.to_string());
            let _ = writeln!(s, "{regions} {path}");
        }
        s
    }

    /// Upstream `set_region_mappings` tokens (hexadecimal) for the mapped
    /// regions, and how many regions lie in unallocated chunks (which the
    /// grammar cannot express).
    pub fn to_region_mappings(&self) -> (String, u64) {
        let mut tokens = Vec::new();
        let mut unallocated = 0;
        for run in self.runs() {
            match run.path {
                None => unallocated += run.last - run.first + 1,
                Some(p) => {
                    tokens.push(format!("{:x}:{p:x}", run.first));
                    if run.last > run.first {
                        tokens.push(format!("R1,{:x}", run.last - run.first));
                    }
                }
            }
        }
        (tokens.join(" "), unallocated)
    }

    /// The table as JSON: geometry, userland, chunks and runs.
    pub fn to_json(&self) -> serde_json::Value {
        let runs: Vec<serde_json::Value> = self
            .runs()
            .iter()
            .map(|r| serde_json::json!({"first": r.first, "last": r.last, "path": r.path}))
            .collect();
        serde_json::json!({
            "page_total": self.page_total,
            "dev_count": self.dev_count,
            "pte_bits": self.table_bits,
            "userland": self.userland,
            "allocated_chunks": self.allocated.iter().enumerate()
                .filter(|(_, &a)| a).map(|(i, _)| i).collect::<Vec<_>>(),
            "runs": runs,
        })
    }
}

/// The windows of `plan` that change the live table `live` (`upload
/// --diff`), or `None` when the plan's geometry differs from the table's
/// (page_total, paths, or the pte_bits it was uploaded with: the first
/// window would replace the whole table, so everything must be sent).
pub fn changed_windows(plan: &UploadPlan, live: &TableImage) -> Option<Vec<Window>> {
    let h = &plan.header;
    if (h.page_total, h.dev_count, h.pte_bits) != (live.page_total, live.dev_count, live.table_bits)
    {
        return None;
    }
    let chunk = u64::from(wire::CHUNK_PTE_COUNT);
    let freed: std::collections::BTreeSet<u64> = plan
        .windows
        .iter()
        .filter(|w| w.count == 0)
        .map(|w| u64::from(w.offset) / chunk)
        .collect();
    let mapping = plan.mapping.as_ref();
    let entries_differ = |w: &Window| {
        let first = u64::from(w.offset);
        (first..first + u64::from(w.count)).any(|r| {
            !freed.contains(&(r / chunk))
                && (!live.is_allocated(r)
                    || mapping.is_some_and(|m| m.get(r) != live.entries.get(r)))
        })
    };
    let sent: Vec<Window> = plan
        .windows
        .iter()
        .copied()
        .filter(|w| w.count != 0 && entries_differ(w))
        .collect();
    // A chunk the plan frees is freed again if it is allocated, or if an
    // entry window sent covers part of it (writing entries allocates it).
    let refree = |w: &Window| {
        let c = u64::from(w.offset) / chunk;
        live.is_allocated(u64::from(w.offset))
            || sent.iter().any(|s| {
                let (first, end) = (
                    u64::from(s.offset),
                    u64::from(s.offset) + u64::from(s.count),
                );
                first / chunk <= c && c <= (end - 1) / chunk
            })
    };
    let mut changed: Vec<Window> = plan
        .windows
        .iter()
        .copied()
        .filter(|w| {
            if w.count == 0 {
                refree(w)
            } else {
                sent.contains(w)
            }
        })
        .collect();
    if changed.is_empty() && h.userland != live.userland {
        // Every window carries the userland words: send one.
        changed.extend(plan.windows.first().copied());
    }
    Some(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::kernel;

    fn window(offset: u32, entries: &[u32], total: u32, bits: u8, reserved: u8) -> Vec<u8> {
        let hdr = wire::PgTableHeader {
            userland: [7, 8],
            dev_major: 1,
            dev_minor: 2,
            page_total: total,
            page_offset: offset,
            page_count: entries.len() as u32,
            dev_count: 3,
            pte_bits: bits,
        };
        let mut w = wire::encode_request(&hdr, &wire::pack(entries, bits)).unwrap();
        w[wire::pg::RESERVED] = reserved;
        // Every window is a valid upload for the kernel's own decoder.
        assert!(kernel::Request::parse(&w).is_ok());
        w
    }

    #[test]
    fn decodes_runs_and_renders() {
        let c = wire::CHUNK_PTE_COUNT;
        let total = 2 * c + 10;
        let mut first: Vec<u32> = vec![1; c as usize];
        first[5] = 2;
        let ws = vec![
            window(0, &first, total, 2, 2),
            window(c, &[], total, 2, 2),
            window(2 * c, &[0; 10], total, 2, 2),
        ];
        let img = TableImage::from_windows(&ws).unwrap();
        assert_eq!(
            (img.page_total, img.dev_count, img.table_bits, img.userland),
            (total, 3, 2, [7, 8])
        );
        assert_eq!(img.allocated, vec![true, false, true]);
        let runs = img.runs();
        assert_eq!(runs.len(), 5);
        assert_eq!(
            runs[2],
            Run {
                first: 6,
                last: u64::from(c) - 1,
                path: Some(1)
            }
        );
        assert_eq!(runs[3].path, None);
        let file = img.to_mapping_file("sw0");
        assert!(
            file.ends_with("userland 0x7,0x8\n0-4 1\n5 2\n6-8191 1\n8192-16383 -\n16384-16393 0\n"),
            "{file}"
        );
        let (rm, unalloc) = img.to_region_mappings();
        assert!(rm.starts_with("0:1 R1,4 5:2 6:1 R1,1ff9"), "{rm}");
        assert_eq!(unalloc, u64::from(c));
        assert_eq!(img.to_json()["allocated_chunks"], serde_json::json!([0, 2]));
    }

    #[test]
    fn diff_sends_only_what_changed() {
        use crate::mapping::Mapping;
        let c = wire::CHUNK_PTE_COUNT;
        let total = 3 * c;
        let live = TableImage::from_windows(&[
            window(0, &vec![1; c as usize], total, 2, 2),
            window(c, &[], total, 2, 2),
            window(2 * c, &vec![2; c as usize], total, 2, 2),
        ])
        .unwrap();
        let mut t = PackedTable::new(u64::from(total), 2).unwrap();
        t.set_range(0, u64::from(c) - 1, 1);
        t.set_range(2 * u64::from(c), 3 * u64::from(c) - 1, 2);
        let header = wire::PgTableHeader {
            userland: [7, 8],
            dev_major: 1,
            dev_minor: 2,
            page_total: total,
            page_offset: 0,
            page_count: 0,
            dev_count: 3,
            pte_bits: 2,
        };
        let plan = |t: &PackedTable, frees: &[u32]| {
            UploadPlan::full(header, Mapping::Table(t.clone())).with_frees(frees)
        };
        // The same table, chunk 1 unallocated: nothing to send.
        assert_eq!(changed_windows(&plan(&t, &[1]), &live), Some(vec![]));
        // Without the free, chunk 1 must be allocated: the window is sent.
        assert_eq!(changed_windows(&plan(&t, &[]), &live).unwrap().len(), 1);
        // One region changed; chunk 0 freed too.
        let mut t2 = t.clone();
        t2.set(5, 0);
        let w = changed_windows(&plan(&t2, &[1, 0]), &live).unwrap();
        assert_eq!(
            w,
            vec![Window {
                offset: 0,
                count: 0
            }]
        );
        // One region changed in the window that also covers freed chunk 1:
        // sending it allocates chunk 1, so the free is sent again after it.
        let w = changed_windows(&plan(&t2, &[1]), &live).unwrap();
        assert_eq!(
            w,
            vec![
                Window {
                    offset: 0,
                    count: total
                },
                Window {
                    offset: c,
                    count: 0
                }
            ]
        );
        // Other userland words: one window carries them.
        let mut other = plan(&t, &[1]);
        other.header.userland = [9, 9];
        assert_eq!(changed_windows(&other, &live).unwrap().len(), 1);
        // Another pte_bits: everything.
        let mut wide = plan(&t, &[1]);
        wide.header.pte_bits = 4;
        assert_eq!(changed_windows(&wide, &live), None);
    }

    #[test]
    fn refuses_inconsistent_dumps() {
        let ws = vec![window(0, &[1; 16], 40, 2, 2), window(32, &[1; 8], 40, 2, 2)];
        assert!(TableImage::from_windows(&ws)
            .unwrap_err()
            .contains("region 32"));
        assert!(TableImage::from_windows(&ws[..1])
            .unwrap_err()
            .contains("ended at region 16"));
        assert!(TableImage::from_windows(&[]).is_err());
    }
}
