//! Sources of a region table: round robin, a mapping file, or an upstream
//! `set_region_mappings` string, and the packed table they fill.
//!
//! A table is kept packed exactly as the kernel keeps it (`pte_bits` per
//! entry in u32 words), so its memory is the kernel's and a window is a plain
//! slice of words.

use std::fmt;
use std::io::BufRead;

use crate::wire;

/// The whole region table, packed at `pte_bits` bits per entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedTable {
    pte_bits: u8,
    len: u64,
    words: Vec<u32>,
}

impl PackedTable {
    /// An all-zero table of `len` entries (every region on path 0).
    ///
    /// Fails cleanly rather than aborting when memory cannot be had.
    pub fn new(len: u64, pte_bits: u8) -> Result<Self, String> {
        let nwords = wire::words_for(len, pte_bits);
        let nwords = usize::try_from(nwords)
            .map_err(|_| format!("a table of {len} regions does not fit in memory"))?;
        let mut words = Vec::new();
        words.try_reserve_exact(nwords).map_err(|_| {
            format!(
                "cannot allocate {} MiB for a table of {len} regions",
                (nwords as u64 * 4).div_ceil(1 << 20)
            )
        })?;
        words.resize(nwords, 0);
        Ok(Self {
            pte_bits,
            len,
            words,
        })
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Path of region `index` (< len).
    pub fn get(&self, index: u64) -> u32 {
        wire::get_field(&self.words, self.pte_bits, index)
    }

    /// Sets region `index` (< len) to `path`.
    pub fn set(&mut self, index: u64, path: u32) {
        wire::set_field(&mut self.words, self.pte_bits, index, path)
    }

    /// Sets regions `first..=last` to `path`.
    pub fn set_range(&mut self, first: u64, last: u64, path: u32) {
        for i in first..=last {
            self.set(i, path);
        }
    }

    /// The same entries packed at `pte_bits` (wide enough for every entry).
    pub fn repacked(&self, pte_bits: u8) -> Result<Self, String> {
        let mut t = Self::new(self.len, pte_bits)?;
        for i in 0..self.len {
            t.set(i, self.get(i));
        }
        Ok(t)
    }

    /// The packed words of window `offset..offset+count`; `offset` must be a
    /// multiple of the fields per word. Fields past the window are zero.
    pub fn window_words(&self, offset: u64, count: u64) -> Vec<u32> {
        let fpw = u64::from(wire::fields_per_word(self.pte_bits));
        debug_assert_eq!(offset % fpw, 0);
        let first = (offset / fpw) as usize;
        let n = wire::words_for(count, self.pte_bits) as usize;
        let mut words = self.words[first..first + n].to_vec();
        let tail = (count % fpw) as u32;
        if tail != 0 {
            if let Some(last) = words.last_mut() {
                *last &= (1u32 << (tail * u32::from(self.pte_bits))) - 1;
            }
        }
        words
    }
}

/// Where the entries of an upload come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// Region r goes to path r mod dev_count; computed per window.
    RoundRobin {
        /// Number of paths.
        dev_count: u32,
    },
    /// An explicit table.
    Table(PackedTable),
}

impl Mapping {
    /// The path of region `r`.
    pub fn get(&self, r: u64) -> u32 {
        match self {
            Mapping::Table(t) => t.get(r),
            Mapping::RoundRobin { dev_count } => (r % u64::from((*dev_count).max(1))) as u32,
        }
    }

    /// The same mapping for windows of `pte_bits` bits.
    pub fn repacked(self, pte_bits: u8) -> anyhow::Result<Self> {
        Ok(match self {
            Mapping::Table(t) => Mapping::Table(t.repacked(pte_bits).map_err(anyhow::Error::msg)?),
            rr => rr,
        })
    }

    /// The packed words of window `offset..offset+count` at `pte_bits`.
    pub fn window_words(&self, offset: u64, count: u64, pte_bits: u8) -> Vec<u32> {
        match self {
            Mapping::Table(t) => t.window_words(offset, count),
            Mapping::RoundRobin { dev_count } => {
                let n = u64::from((*dev_count).max(1));
                let mut words = vec![0u32; wire::words_for(count, pte_bits) as usize];
                for i in 0..count {
                    wire::set_field(&mut words, pte_bits, i, ((offset + i) % n) as u32);
                }
                words
            }
        }
    }
}

/// A mapping file error, naming the file and line.
#[derive(Debug, PartialEq, Eq)]
pub struct FileError {
    /// File name as given (`<stdin>` for `-`).
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub msg: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.msg)
    }
}

impl std::error::Error for FileError {}

fn parse_dec(s: &str, what: &str) -> Result<u64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} `{s}` is not a decimal number"));
    }
    s.parse::<u64>()
        .map_err(|_| format!("{what} `{s}` is too large"))
}

/// One line of a mapping file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    /// Blank or comment only.
    Blank,
    /// `FIRST-LAST PATH` (or `REGION PATH`): regions on a path.
    Entries(u64, u64, u64),
    /// `FIRST-LAST -`: whole chunks left unallocated (unmapped regions).
    Unallocated(u64, u64),
    /// `userland A,B`: the two userland words.
    Userland([u32; 2]),
}

/// Parses one mapping-file line. Bounds are not checked here.
pub fn parse_line(line: &str) -> Result<Line, String> {
    let content = match line.find('#') {
        Some(i) => &line[..i],
        None => line,
    };
    let fields: Vec<&str> = content.split_whitespace().collect();
    match fields.as_slice() {
        [] => Ok(Line::Blank),
        ["userland", words] => crate::cli::parse_userland(words)
            .map(Line::Userland)
            .map_err(|e| format!("userland: {e}")),
        [regions, path] => {
            let (first, last) = match regions.split_once('-') {
                Some((a, b)) => (parse_dec(a, "first region")?, parse_dec(b, "last region")?),
                None => {
                    let r = parse_dec(regions, "region")?;
                    (r, r)
                }
            };
            if first > last {
                return Err(format!("range {first}-{last} is backwards"));
            }
            if *path == "-" {
                return Ok(Line::Unallocated(first, last));
            }
            Ok(Line::Entries(first, last, parse_dec(path, "path")?))
        }
        _ => Err(format!(
            "expected `REGION PATH`, `FIRST-LAST PATH`, `FIRST-LAST -` or `userland A,B`, found `{}`",
            content.trim()
        )),
    }
}

/// What a mapping file says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingFile {
    /// Every region's path (0 where no line names it).
    pub table: PackedTable,
    /// Chunks to leave unallocated, in order.
    pub unallocated: Vec<u32>,
    /// The userland words, if the file sets them.
    pub userland: Option<[u32; 2]>,
}

/// Opens the mapping file at `path` and reads it ([`read_mapping_file`]).
pub fn open_mapping_file(
    path: &std::path::Path,
    page_total: u32,
    dev_count: u32,
    pte_bits: u8,
) -> Result<MappingFile, anyhow::Error> {
    let name = path.display().to_string();
    let f = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot open mapping file {name}: {e}"))?;
    read_mapping_file(
        std::io::BufReader::new(f),
        &name,
        page_total,
        dev_count,
        pte_bits,
    )
}

/// Reads a mapping file into a table of `page_total` entries.
///
/// Format: one `REGION PATH` or `FIRST-LAST PATH` per line, decimal; `#`
/// starts a comment; blank lines are ignored; unnamed regions map to path 0;
/// a later line overrides an earlier one for the regions they share.
/// `FIRST-LAST -` leaves whole chunks (of `CHUNK_PTE_COUNT` regions; the
/// last may be partial) unallocated, and no other line may name their
/// regions; `userland A,B` sets the userland words. `dm-switch dump` writes
/// this format.
pub fn read_mapping_file<R: BufRead>(
    reader: R,
    file: &str,
    page_total: u32,
    dev_count: u32,
    pte_bits: u8,
) -> Result<MappingFile, anyhow::Error> {
    let mut table =
        PackedTable::new(u64::from(page_total), pte_bits).map_err(anyhow::Error::msg)?;
    let chunk = u64::from(wire::CHUNK_PTE_COUNT);
    let total = u64::from(page_total);
    // The line that left each chunk unallocated (0: allocated).
    let mut unallocated_by = vec![0usize; total.div_ceil(chunk) as usize];
    let mut named = vec![false; unallocated_by.len()];
    let mut userland = None;
    let err = |line: usize, msg: String| FileError {
        file: file.to_string(),
        line,
        msg,
    };
    let out_of_range = |last: u64| {
        format!(
            "region {last} is out of range: the table has {page_total} regions (0..={})",
            total.saturating_sub(1)
        )
    };
    for (i, line) in reader.split(b'\n').enumerate() {
        let lineno = i + 1;
        let bytes = line.map_err(|e| err(lineno, format!("read error: {e}")))?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| err(lineno, "line is not valid UTF-8".into()))?;
        let line = parse_line(text).map_err(|m| err(lineno, m))?;
        let (first, last, path) = match line {
            Line::Blank => continue,
            Line::Userland(words) => {
                userland = Some(words);
                continue;
            }
            Line::Entries(first, last, path) => (first, last, Some(path)),
            Line::Unallocated(first, last) => (first, last, None),
        };
        if last >= total {
            return Err(err(lineno, out_of_range(last)).into());
        }
        let chunks = (first / chunk) as usize..=(last / chunk) as usize;
        if let Some(path) = path {
            if path >= u64::from(dev_count) {
                return Err(err(lineno, path_range_msg(path, dev_count)).into());
            }
            if let Some(c) = chunks.clone().find(|&c| unallocated_by[c] != 0) {
                let msg = format!("chunk {c} is unallocated (line {})", unallocated_by[c]);
                return Err(err(lineno, msg).into());
            }
            named[chunks].fill(true);
            table.set_range(first, last, path as u32);
        } else {
            if first % chunk != 0 || ((last + 1) % chunk != 0 && last + 1 != total) {
                let msg =
                    format!("an unallocated range must cover whole chunks of {chunk} regions");
                return Err(err(lineno, msg).into());
            }
            if let Some(c) = chunks.clone().find(|&c| named[c]) {
                return Err(
                    err(lineno, format!("chunk {c} has entries on an earlier line")).into(),
                );
            }
            unallocated_by[chunks].fill(lineno);
        }
    }
    let unallocated = (0..unallocated_by.len() as u32)
        .filter(|&c| unallocated_by[c as usize] != 0)
        .collect();
    Ok(MappingFile {
        table,
        unallocated,
        userland,
    })
}

fn path_range_msg(path: u64, dev_count: u32) -> String {
    format!(
        "path {path} is out of range: the target has {dev_count} path{} (0..={})",
        if dev_count == 1 { "" } else { "s" },
        dev_count.saturating_sub(1)
    )
}

/// The `set_region_mappings` grammar: the kernel module's own parser
/// (`pure/message.rs`), so `--region-mappings` accepts and refuses exactly
/// what `dmsetup message ... set_region_mappings` does.
// The agent's table is allocated up front: an edit never runs out of memory.
#[allow(dead_code)]
#[path = "../../../pure/message.rs"]
mod grammar;

/// A [`PackedTable`] of a target with `dev_count` paths, as the grammar
/// edits it.
struct Edit<'a> {
    table: &'a mut PackedTable,
    dev_count: u32,
}

impl grammar::Regions for Edit<'_> {
    fn page_total(&self) -> u32 {
        // Tables are made from a u32 page_total.
        u32::try_from(self.table.len()).unwrap_or(u32::MAX)
    }

    fn path(&self, region: u32) -> u32 {
        self.table.get(u64::from(region))
    }

    fn set(&mut self, region: u32, path: u32) -> Result<(), grammar::SetError> {
        if u64::from(region) >= self.table.len() {
            return Err(grammar::SetError::RegionOutOfRange);
        }
        if path >= self.dev_count {
            return Err(grammar::SetError::NoSuchPath);
        }
        self.table.set(u64::from(region), path);
        Ok(())
    }
}

/// Applies an upstream dm-switch `set_region_mappings` argument string to
/// `table` (of `table.len()` regions, `dev_count` paths).
///
/// Tokens (hexadecimal, no prefix, separated by whitespace): `IDX:PATH` sets
/// region IDX to PATH; `:PATH` sets the region after the previous one; `Rn,m`
/// writes the next m regions, each copying the region n before it (so the
/// last n mappings repeat over the next m slots). The first token must name
/// a region. Every number is overflow-checked (32 bits); errors name the
/// token by its position, as the kernel logs them.
pub fn apply_region_mappings(
    spec: &str,
    table: &mut PackedTable,
    dev_count: u32,
) -> Result<(), String> {
    let mut edit = Edit { table, dev_count };
    grammar::apply(&mut edit, spec.split_ascii_whitespace().map(str::as_bytes))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str, total: u32, devs: u32) -> Result<PackedTable, String> {
        let bits = crate::device::default_pte_bits(devs);
        read_mapping_file(text.as_bytes(), "map.txt", total, devs, bits)
            .map(|f| f.table)
            .map_err(|e| e.to_string())
    }

    fn entries(t: &PackedTable) -> Vec<u32> {
        (0..t.len()).map(|i| t.get(i)).collect()
    }

    #[test]
    fn mapping_file_good() {
        let t = file(
            "# header\n\n0 1\n2-4 2   # trailing comment\n  5\t1\n3 0\n",
            8,
            3,
        )
        .unwrap();
        assert_eq!(entries(&t), vec![1, 0, 2, 0, 2, 1, 0, 0]);
        // Empty file: everything on path 0.
        assert_eq!(entries(&file("", 3, 2).unwrap()), vec![0, 0, 0]);
        // No trailing newline, CRLF endings.
        assert_eq!(entries(&file("1 1\r\n2 1", 3, 2).unwrap()), vec![0, 1, 1]);
    }

    #[test]
    fn mapping_file_errors_name_file_and_line() {
        let cases = [
            (
                "0 1\nx 1\n",
                "map.txt:2: region `x` is not a decimal number",
            ),
            (
                "0 1 2\n",
                "map.txt:1: expected `REGION PATH`, `FIRST-LAST PATH`, `FIRST-LAST -` or `userland A,B`, found `0 1 2`",
            ),
            (
                "0\n",
                "map.txt:1: expected `REGION PATH`, `FIRST-LAST PATH`, `FIRST-LAST -` or `userland A,B`, found `0`",
            ),
            ("\n\n5-2 1\n", "map.txt:3: range 5-2 is backwards"),
            (
                "8 0\n",
                "map.txt:1: region 8 is out of range: the table has 8 regions (0..=7)",
            ),
            (
                "0-8 0\n",
                "map.txt:1: region 8 is out of range: the table has 8 regions (0..=7)",
            ),
            (
                "1 3\n",
                "map.txt:1: path 3 is out of range: the target has 3 paths (0..=2)",
            ),
            ("1 -1\n", "map.txt:1: path `-1` is not a decimal number"),
            ("0x1 1\n", "map.txt:1: region `0x1` is not a decimal number"),
            (
                "-3 1\n",
                "map.txt:1: first region `` is not a decimal number",
            ),
            (
                "1- 1\n",
                "map.txt:1: last region `` is not a decimal number",
            ),
            (
                "99999999999999999999 1\n",
                "map.txt:1: region `99999999999999999999` is too large",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(file(text, 8, 3).unwrap_err(), want, "input {text:?}");
        }
        // Unallocated chunks and userland words (what `dump` writes).
        let c = wire::CHUNK_PTE_COUNT;
        let total = 2 * c + 100;
        let read = |text: &str| {
            read_mapping_file(text.as_bytes(), "d", total, 3, 2).map_err(|e| e.to_string())
        };
        let f = read(&format!(
            "userland 0x10,3\n0-{} -\n{} 2\n{}-{} -\n",
            c - 1,
            c,
            2 * c,
            total - 1
        ))
        .unwrap();
        assert_eq!(
            (f.unallocated, f.userland, f.table.get(u64::from(c))),
            (vec![0, 2], Some([16, 3]), 2)
        );
        assert_eq!(
            read("1-8191 -\n").unwrap_err(),
            "d:1: an unallocated range must cover whole chunks of 8192 regions"
        );
        assert_eq!(
            read("0-8190 -\n").unwrap_err(),
            "d:1: an unallocated range must cover whole chunks of 8192 regions"
        );
        assert_eq!(
            read("0-8191 -\n5 1\n").unwrap_err(),
            "d:2: chunk 0 is unallocated (line 1)"
        );
        assert_eq!(
            read("5 1\n0-8191 -\n").unwrap_err(),
            "d:2: chunk 0 has entries on an earlier line"
        );
        assert!(read("userland 1\n")
            .unwrap_err()
            .starts_with("d:1: userland: expected two words"));
        let bad_utf8 = read_mapping_file(&b"0 1\n\xff 1\n"[..], "m", 4, 2, 1).unwrap_err();
        assert_eq!(bad_utf8.to_string(), "m:2: line is not valid UTF-8");
    }

    fn rm(spec: &str, total: u64, devs: u32) -> Result<Vec<u32>, String> {
        let mut t = PackedTable::new(total, crate::device::default_pte_bits(devs))?;
        apply_region_mappings(spec, &mut t, devs)?;
        Ok(entries(&t))
    }

    #[test]
    fn region_mappings_good() {
        // The upstream documentation's first example.
        assert_eq!(
            rm("0:0 :1 :2 :0 :1 :2 :1", 8, 3).unwrap(),
            vec![0, 1, 2, 0, 1, 2, 1, 0]
        );
        // Hex indices and paths, multiple spaces, lower and upper case.
        assert_eq!(
            rm("a:B  f:1\t:c", 0x11, 13).unwrap()[10..],
            [11, 0, 0, 0, 0, 1, 12]
        );
    }

    #[test]
    fn region_mappings_repeat() {
        // Upstream: "1000:1 :2 R2,10" == 1000:1 :2 then 16 more alternating.
        let v = rm("1000:1 :2 R2,10", 0x1100, 3).unwrap();
        for (k, &p) in v[0x1000..0x1012].iter().enumerate() {
            assert_eq!(
                p,
                if k % 2 == 0 { 1 } else { 2 },
                "region {:#x}",
                0x1000 + k
            );
        }
        assert_eq!(v[0x1012], 0);
        assert_eq!(v[..0x1000].iter().filter(|&&p| p != 0).count(), 0);
        // Lower-case r; a cycle of 3; R with m = 0 is a no-op.
        let v = rm("0:1 :2 :0 r3,6 R1,0", 12, 3).unwrap();
        assert_eq!(v, vec![1, 2, 0, 1, 2, 0, 1, 2, 0, 0, 0, 0]);
        // A cycle of 1 fills.
        assert_eq!(rm("2:1 R1,3", 8, 2).unwrap(), vec![0, 0, 1, 1, 1, 1, 0, 0]);
        // The repeat may end exactly on the last region.
        assert_eq!(rm("0:1 R1,3", 4, 2).unwrap(), vec![1, 1, 1, 1]);
    }

    /// The kernel's refusals, word for word (the grammar is the kernel's).
    #[test]
    fn region_mappings_errors() {
        let e = |s: &str| rm(s, 16, 3).unwrap_err();
        let arg = |n: usize, why: &str| format!("set_region_mappings argument {n}: {why}");
        let syntax = "expected INDEX:PATH, :PATH or Rn,m (hex)";
        assert_eq!(e(""), "set_region_mappings needs at least one mapping");
        assert_eq!(e("   "), "set_region_mappings needs at least one mapping");
        assert_eq!(e(":1"), arg(1, "no previous region"));
        assert_eq!(e("R1,2"), arg(1, "no previous region"));
        for bad in [
            "0:1 x:1",
            "0:1 5",
            "0:1 :",
            "0:1 R,2",
            "0:1 R1",
            "0:1 R1,",
            "0:1 R1,2x",
            "0:1 R",
        ] {
            assert_eq!(e(bad), arg(2, syntax), "{bad}");
        }
        for bad in ["0:", "0:1g", "0:0x1", "g:1"] {
            assert_eq!(e(bad), arg(1, syntax), "{bad}");
        }
        assert_eq!(e("10:1"), arg(1, "region 0x10 out of range"));
        assert_eq!(e("f:1 :1"), arg(2, "region 0x10 out of range"));
        assert_eq!(e("0:3"), arg(1, "path 0x3 out of range"));
        assert_eq!(e("0:1 R0,2"), arg(2, "invalid cycle length 0x0"));
        assert_eq!(e("0:1 :2 R3,2"), arg(3, "invalid cycle length 0x3"));
        assert_eq!(e("0:1 Rf,1"), arg(2, "invalid cycle length 0xf"));
        assert_eq!(e("0:1 R1,10"), arg(2, "region 0x10 out of range"));
        assert!(rm("0:1 R1,f", 16, 3).is_ok());
        assert_eq!(e("e:1 R1,2"), arg(2, "region 0x10 out of range"));
        // Every number is a checked 32-bit value.
        assert_eq!(e("100000000:1"), arg(1, "number too large"));
        assert_eq!(e("0:10000000000000000"), arg(1, "number too large"));
        assert_eq!(e("0:1 R100000000,1"), arg(2, "number too large"));
        assert_eq!(e("0:1 R1,ffffffffffffffff"), arg(2, "number too large"));
        assert_eq!(
            e("0:1 ffffffff:1 :1"),
            arg(2, "region 0xffffffff out of range")
        );
    }

    #[test]
    fn packed_table_windows() {
        let mut t = PackedTable::new(100, 3).unwrap();
        for i in 0..100 {
            t.set(i, (i % 7) as u32);
        }
        let all = t.window_words(0, 100);
        assert_eq!(crate::wire::unpack(&all, 3, 100), entries(&t));
        // A window of 15 at offset 20 (a multiple of 10 fields per word).
        let w = t.window_words(20, 15);
        assert_eq!(w.len(), 2);
        assert_eq!(w[1] >> 15, 0, "fields past the window are zero");
        let want: Vec<u32> = (20..35).map(|i| (i % 7) as u32).collect();
        assert_eq!(crate::wire::unpack(&w, 3, 15), want);
    }

    #[test]
    fn round_robin_windows() {
        let m = Mapping::RoundRobin { dev_count: 3 };
        let w = m.window_words(16, 5, 2);
        assert_eq!(crate::wire::unpack(&w, 2, 5), vec![1, 2, 0, 1, 2]);
        assert_eq!(w[0] >> 10, 0);
    }
}
