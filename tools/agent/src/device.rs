//! The DM device: resolving DEV to a name and major:minor, reading its live
//! table and status through the DM ioctls (the `devicemapper` crate), and
//! parsing a switch target's constructor and status parameters.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use devicemapper::{DevId, DmFlags, DmName, DmOptions, DM};
use serde::Serialize;

/// A resolved device-mapper device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// DM name, as `dmsetup` knows it.
    pub name: String,
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

/// What a DEV argument looks like, before touching the system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DevSpec {
    /// `MAJOR:MINOR`.
    Numbers(u32, u32),
    /// `/dev/mapper/NAME`.
    MapperPath(PathBuf, String),
    /// `/dev/dm-N` (the kernel name `dm-N`).
    DmNode(PathBuf, String),
    /// Any other path to a block device node.
    OtherPath(PathBuf),
    /// A bare DM name, found at `/dev/mapper/NAME`.
    Name(String),
}

/// Classifies a DEV argument.
pub fn classify(spec: &str) -> Result<DevSpec> {
    if spec.is_empty() {
        bail!("empty device name");
    }
    if let Some((a, b)) = spec.split_once(':') {
        let num = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
        if num(a) && num(b) {
            let major = a
                .parse()
                .map_err(|_| anyhow!("major number in `{spec}` is too large"))?;
            let minor = b
                .parse()
                .map_err(|_| anyhow!("minor number in `{spec}` is too large"))?;
            return Ok(DevSpec::Numbers(major, minor));
        }
    }
    if spec.contains('/') {
        let path = PathBuf::from(spec);
        if let Some(name) = spec.strip_prefix("/dev/mapper/") {
            if !name.is_empty() && !name.contains('/') {
                return Ok(DevSpec::MapperPath(path, name.to_string()));
            }
        }
        if let Some(kname) = spec.strip_prefix("/dev/") {
            if kname
                .strip_prefix("dm-")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
            {
                return Ok(DevSpec::DmNode(path, kname.to_string()));
            }
        }
        return Ok(DevSpec::OtherPath(path));
    }
    if spec.starts_with('-') {
        bail!("device name `{spec}` starts with `-`: not supported");
    }
    Ok(DevSpec::Name(spec.to_string()))
}

/// Splits a Linux `dev_t` into (major, minor), as glibc's `major`/`minor`.
pub fn split_dev_t(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major as u32, minor as u32)
}

/// The device numbers of block device node `path`.
pub fn block_dev_numbers(path: &Path) -> Result<(u32, u32)> {
    let meta = fs::metadata(path).with_context(|| format!("cannot stat {}", path.display()))?;
    if !meta.file_type().is_block_device() {
        bail!("{} is not a block device", path.display());
    }
    Ok(split_dev_t(meta.rdev()))
}

fn read_sys_name(path: &Path, what: &str) -> Result<String> {
    let text = fs::read_to_string(path).map_err(|e| {
        anyhow!(
            "{what} is not a device-mapper device (cannot read {}: {e})",
            path.display()
        )
    })?;
    let name = text.trim_end_matches('\n').to_string();
    if name.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(name)
}

/// Resolves DEV (`NAME`, `/dev/mapper/NAME`, `/dev/dm-N`, a block device
/// path, or `MAJOR:MINOR`) to the DM name and the device numbers.
pub fn resolve(spec: &str) -> Result<Device> {
    let (name, (major, minor)) = match classify(spec)? {
        DevSpec::Numbers(major, minor) => {
            let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}/dm/name"));
            (read_sys_name(&sys, spec)?, (major, minor))
        }
        DevSpec::MapperPath(path, name) => (name, block_dev_numbers(&path)?),
        DevSpec::DmNode(path, kname) => {
            let nums = block_dev_numbers(&path)?;
            let sys = PathBuf::from(format!("/sys/block/{kname}/dm/name"));
            (read_sys_name(&sys, spec)?, nums)
        }
        DevSpec::OtherPath(path) => {
            let (major, minor) = block_dev_numbers(&path)?;
            let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}/dm/name"));
            (read_sys_name(&sys, spec)?, (major, minor))
        }
        DevSpec::Name(name) => {
            let path = PathBuf::from(format!("/dev/mapper/{name}"));
            if !path.exists() {
                bail!(
                    "no device-mapper device named `{name}` ({} does not exist)",
                    path.display()
                );
            }
            let nums = block_dev_numbers(&path)?;
            (name, nums)
        }
    };
    Ok(Device { name, major, minor })
}

/// One target of a device's live table, as the `DM_TABLE_STATUS` ioctl
/// returns it (what `dmsetup table` / `dmsetup status` print on one line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmTarget {
    /// First sector.
    pub start: u64,
    /// Length in sectors.
    pub len: u64,
    /// Target type (`switch`, `linear`, ...).
    pub target_type: String,
    /// Constructor parameters (table) or status text (status).
    pub params: String,
}

/// What [`live_targets`] reads for each target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Query {
    /// The constructor parameters (`dmsetup table`).
    Table,
    /// The status text (`dmsetup status`).
    Status,
}

/// Reads the targets of `dev`'s live table through the DM ioctls. Refuses
/// if the name now belongs to another device than the one resolved.
pub fn live_targets(dev: &Device, query: Query) -> Result<Vec<DmTarget>> {
    let dm = DM::new().map_err(|e| anyhow!("cannot open the DM control device: {e}"))?;
    let name = DmName::new(&dev.name).map_err(|e| anyhow!("bad DM name `{}`: {e}", dev.name))?;
    let (flags, what) = match query {
        Query::Table => (DmFlags::DM_STATUS_TABLE, "table"),
        Query::Status => (DmFlags::empty(), "status"),
    };
    let (info, targets) = dm
        .table_status(&DevId::Name(name), DmOptions::default().set_flags(flags))
        .map_err(|e| anyhow!("cannot read the {what} of {}: {e}", dev.name))?;
    let devno = info.device();
    if (devno.major, devno.minor) != (dev.major, dev.minor) {
        bail!(
            "{} is now device {}:{}, not {}:{} (renamed or recreated meanwhile)",
            dev.name,
            devno.major,
            devno.minor,
            dev.major,
            dev.minor
        );
    }
    Ok(targets
        .into_iter()
        .map(|(start, len, target_type, params)| DmTarget {
            start,
            len,
            target_type,
            params,
        })
        .collect())
}

/// Test input: one [`DmTarget`] per `START LEN TYPE PARAMS...` line.
#[cfg(test)]
pub fn targets(text: &str) -> Vec<DmTarget> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.splitn(4, ' ');
            let mut next = || f.next().unwrap_or_default();
            DmTarget {
                start: next().parse().unwrap(),
                len: next().parse().unwrap(),
                target_type: next().to_string(),
                params: next().to_string(),
            }
        })
        .collect()
}

/// The two constructor argument layouts of a switch table line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TableFormat {
    /// RFC: `DEV_COUNT PAGE_SIZE DEV OFF [DEV OFF]...`.
    Rfc,
    /// Upstream: `NUM_PATHS REGION_SIZE 0 DEV OFF [DEV OFF]...`.
    Upstream,
}

/// A switch target's table line, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchTable {
    /// First sector.
    pub start: u64,
    /// Length in sectors.
    pub len: u64,
    /// Argument layout.
    pub format: TableFormat,
    /// Number of paths.
    pub dev_count: u32,
    /// Region (page) size in sectors.
    pub region_size: u64,
    /// Paths: device and start offset.
    pub paths: Vec<(String, u64)>,
}

fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T> {
    s.parse()
        .map_err(|_| anyhow!("bad {what} `{s}` in the switch line"))
}

/// Returns the one target of a table and its parameters, or refuses if the
/// table is not exactly one switch target.
fn single_switch<'a>(targets: &'a [DmTarget], what: &str) -> Result<(&'a DmTarget, Vec<&'a str>)> {
    let [target] = targets else {
        bail!(
            "the device's {what} has {} targets; dm-switch needs exactly one switch target",
            targets.len()
        );
    };
    if target.target_type != "switch" {
        bail!(
            "the device's target is `{}`, not `switch`",
            target.target_type
        );
    }
    Ok((target, target.params.split_whitespace().collect()))
}

/// Parses a switch target's table (RFC or upstream format).
pub fn parse_table(targets: &[DmTarget]) -> Result<SwitchTable> {
    let (target, args) = single_switch(targets, "table")?;
    let (start, len) = (target.start, target.len);
    if args.len() < 2 {
        bail!(
            "switch table line has too few arguments: `{}`",
            target.params
        );
    }
    let dev_count: u32 = num(args[0], "path count")?;
    let region_size: u64 = num(args[1], "region size")?;
    let (format, rest) = if args.len() % 2 == 0 {
        (TableFormat::Rfc, &args[2..])
    } else {
        if args[2] != "0" {
            bail!(
                "switch table line has {} optional arguments; expected 0",
                args[2]
            );
        }
        (TableFormat::Upstream, &args[3..])
    };
    if rest.len() as u64 != 2 * u64::from(dev_count) {
        bail!(
            "switch table line announces {dev_count} paths but lists {}",
            rest.len() / 2
        );
    }
    if dev_count == 0 {
        bail!("switch table line has no paths");
    }
    if region_size == 0 {
        bail!("switch table line has region size 0");
    }
    let paths = rest
        .chunks(2)
        .map(|p| Ok((p[0].to_string(), num(p[1], "path offset")?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(SwitchTable {
        start,
        len,
        format,
        dev_count,
        region_size,
        paths,
    })
}

impl SwitchTable {
    /// Regions in the device: ceil(len / region_size), refused past u32.
    pub fn page_total(&self) -> Result<u32> {
        let n = self.len.div_ceil(self.region_size);
        u32::try_from(n).map_err(|_| {
            anyhow!(
                "the device has {n} regions ({} sectors / {} per region), more than the ABI's {}",
                self.len,
                self.region_size,
                u32::MAX
            )
        })
    }
}

/// The smallest entry width for `dev_count` paths: max(1, ceil(log2 n)).
pub fn default_pte_bits(dev_count: u32) -> u8 {
    if dev_count <= 2 {
        1
    } else {
        (32 - (dev_count - 1).leading_zeros()) as u8
    }
}

/// Checks that `pte_bits` is 1..=32 and wide enough for `dev_count` paths.
pub fn check_pte_bits(pte_bits: u8, dev_count: u32) -> Result<()> {
    if !(1..=32).contains(&pte_bits) {
        bail!("--pte-bits {pte_bits} is out of range (1..=32)");
    }
    if u64::from(dev_count.saturating_sub(1)) >> pte_bits != 0 {
        bail!(
            "--pte-bits {pte_bits} is too narrow for {dev_count} paths (needs at least {})",
            default_pte_bits(dev_count)
        );
    }
    Ok(())
}

/// One path in a status line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PathStatus {
    /// Device (major:minor).
    pub dev: String,
    /// `active` for 'A', `down` for 'D', else `unknown(X)`.
    pub state: String,
}

/// A parsed `dmsetup status` line of a switch target (RFC format).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SwitchStatus {
    /// Number of paths.
    pub dev_count: u32,
    /// Paths and states.
    pub paths: Vec<PathStatus>,
    /// Userland words from the last upload.
    pub userland: [u32; 2],
    /// I/Os remapped to a path from the table.
    pub remapped: u64,
    /// I/Os that found no mapping.
    pub unmapped: u64,
}

/// Parses a switch target's status:
/// `DEV_COUNT DEV... 5 STATES U0 U1 REMAPPED UNMAPPED`.
pub fn parse_status(targets: &[DmTarget]) -> Result<SwitchStatus> {
    let (_, args) = single_switch(targets, "status")?;
    let Some(first) = args.first() else {
        bail!("switch status line carries no statistics (is this the upstream switch target?)");
    };
    let dev_count: u32 = num(first, "path count")?;
    let n = dev_count as usize;
    if args.len() != 1 + n + 6 {
        bail!(
            "switch status line has {} fields after `switch`; expected {} for {dev_count} paths",
            args.len(),
            7 + n
        );
    }
    let devs = &args[1..1 + n];
    let tail = &args[1 + n..];
    if tail[0] != "5" {
        bail!(
            "switch status line: expected `5` after the paths, found `{}`",
            tail[0]
        );
    }
    let states = tail[1];
    if states.chars().count() != n {
        bail!("switch status line: state word `{states}` does not have {n} letters");
    }
    let hex = |s: &str| -> Result<u32> {
        if s.is_empty() || s.len() > 8 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
            bail!("switch status line: bad userland word `{s}`");
        }
        u32::from_str_radix(s, 16).map_err(|_| anyhow!("bad userland word `{s}`"))
    };
    let paths = devs
        .iter()
        .zip(states.chars())
        .map(|(d, c)| PathStatus {
            dev: d.to_string(),
            state: match c {
                'A' => "active".to_string(),
                'D' => "down".to_string(),
                c => format!("unknown({c})"),
            },
        })
        .collect();
    Ok(SwitchStatus {
        dev_count,
        paths,
        userland: [hex(tail[2])?, hex(tail[3])?],
        remapped: num(tail[4], "remapped counter")?,
        unmapped: num(tail[5], "unmapped counter")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_specs() {
        assert_eq!(classify("253:4").unwrap(), DevSpec::Numbers(253, 4));
        assert_eq!(classify("sw0").unwrap(), DevSpec::Name("sw0".into()));
        assert_eq!(classify("a:b").unwrap(), DevSpec::Name("a:b".into()));
        assert_eq!(
            classify("/dev/mapper/sw0").unwrap(),
            DevSpec::MapperPath("/dev/mapper/sw0".into(), "sw0".into())
        );
        assert_eq!(
            classify("/dev/dm-12").unwrap(),
            DevSpec::DmNode("/dev/dm-12".into(), "dm-12".into())
        );
        assert_eq!(
            classify("/dev/dm-x").unwrap(),
            DevSpec::OtherPath("/dev/dm-x".into())
        );
        assert_eq!(
            classify("./node").unwrap(),
            DevSpec::OtherPath("./node".into())
        );
        assert!(classify("").is_err());
        assert!(classify("-x").is_err());
        assert!(classify("99999999999:1")
            .unwrap_err()
            .to_string()
            .contains("too large"));
    }

    #[test]
    fn dev_t_split() {
        assert_eq!(split_dev_t((253 << 8) | 3), (253, 3));
        // Large minors/majors use the high bits (glibc encoding).
        let rdev = (0x123u64 << 8) | 0x45 | (0x678u64 << 20) | (0xabcu64 << 44);
        assert_eq!(split_dev_t(rdev), (0xabc123, 0x67845));
    }

    #[test]
    fn resolve_missing_device() {
        let e = resolve("no-such-dm-device-xyz").unwrap_err().to_string();
        assert!(
            e.contains("no device-mapper device named `no-such-dm-device-xyz`"),
            "{e}"
        );
        let e = resolve("/nonexistent/node").unwrap_err().to_string();
        assert!(e.contains("cannot stat /nonexistent/node"), "{e}");
        let e = resolve("/dev/null").unwrap_err().to_string();
        assert!(e.contains("not a block device"), "{e}");
    }

    #[test]
    fn table_rfc_format() {
        let t = parse_table(&targets("0 2097152 switch 3 128 8:16 0 8:32 0 8:48 1024\n")).unwrap();
        assert_eq!(t.format, TableFormat::Rfc);
        assert_eq!(t.start, 0);
        assert_eq!(t.len, 2097152);
        assert_eq!(t.dev_count, 3);
        assert_eq!(t.region_size, 128);
        assert_eq!(t.paths[2], ("8:48".to_string(), 1024));
        assert_eq!(t.page_total().unwrap(), 16384);
    }

    #[test]
    fn table_upstream_format() {
        let t = parse_table(&targets("0 1000 switch 2 64 0 253:1 0 253:2 0")).unwrap();
        assert_eq!(t.format, TableFormat::Upstream);
        assert_eq!(t.dev_count, 2);
        assert_eq!(t.region_size, 64);
        assert_eq!(t.paths.len(), 2);
        // ceil(1000 / 64) = 16.
        assert_eq!(t.page_total().unwrap(), 16);
    }

    #[test]
    fn table_errors() {
        let e = |s: &str| parse_table(&targets(s)).unwrap_err().to_string();
        assert!(e("").contains("has 0 targets"));
        assert!(e("0 8 switch 1 8 8:1 0\n8 8 switch 1 8 8:1 0\n").contains("has 2 targets"));
        assert!(e("0 8 linear 8:1 0").contains("`linear`, not `switch`"));
        assert!(e("0 8 switch 3 8 8:1 0").contains("announces 3 paths but lists 1"));
        assert!(e("0 8 switch 1 8 1 8:1 0").contains("1 optional arguments"));
        assert!(e("0 8 switch 1 0 8:1 0").contains("region size 0"));
        assert!(e("0 8 switch 0 8").contains("no paths"));
        assert!(e("0 8 switch x 8 8:1 0").contains("bad path count `x`"));
        assert!(e("0 8 switch 1 8 8:1 z").contains("bad path offset `z`"));
        assert!(e("0 8 switch 1").contains("too few arguments"));
        // More regions than a u32 can count.
        let t = parse_table(&targets("0 18446744073709551615 switch 1 1 8:1 0")).unwrap();
        assert!(t
            .page_total()
            .unwrap_err()
            .to_string()
            .contains("more than the ABI"));
        let t = parse_table(&targets("0 8589934590 switch 1 2 8:1 0")).unwrap();
        assert_eq!(t.page_total().unwrap(), u32::MAX);
    }

    #[test]
    fn pte_bits_defaults() {
        let cases = [
            (1, 1),
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 3),
            (8, 3),
            (9, 4),
            (16, 4),
            (17, 5),
            (256, 8),
            (257, 9),
            (65535, 16),
            (65536, 16),
            (65537, 17),
            (u32::MAX, 32),
        ];
        for (n, bits) in cases {
            assert_eq!(default_pte_bits(n), bits, "dev_count {n}");
            check_pte_bits(bits, n).unwrap();
            if bits > 1 {
                assert!(check_pte_bits(bits - 1, n).is_err(), "dev_count {n}");
            }
        }
        assert!(check_pte_bits(0, 1)
            .unwrap_err()
            .to_string()
            .contains("1..=32"));
        assert!(check_pte_bits(33, 1).is_err());
        assert!(check_pte_bits(32, 2).is_ok());
        assert!(check_pte_bits(2, 5)
            .unwrap_err()
            .to_string()
            .contains("too narrow for 5 paths (needs at least 3)"));
    }

    #[test]
    fn status_line() {
        let s = parse_status(&targets(
            "0 2097152 switch 3 8:16 8:32 8:48 5 AAD 0000002a deadbeef 123 4\n",
        ))
        .unwrap();
        assert_eq!(s.dev_count, 3);
        assert_eq!(
            s.paths[0],
            PathStatus {
                dev: "8:16".into(),
                state: "active".into()
            }
        );
        assert_eq!(s.paths[2].state, "down");
        assert_eq!(s.userland, [42, 0xdeadbeef]);
        assert_eq!(s.remapped, 123);
        assert_eq!(s.unmapped, 4);
    }

    #[test]
    fn status_errors() {
        let e = |s: &str| parse_status(&targets(s)).unwrap_err().to_string();
        assert!(e("0 8 switch").contains("no statistics"));
        assert!(e("0 8 switch ").contains("no statistics"));
        assert!(e("0 8 switch 2 8:1 5 AA 0 0 1 2").contains("expected 9"));
        assert!(e("0 8 switch 1 8:1 4 A 0 0 1 2").contains("expected `5`"));
        assert!(e("0 8 switch 1 8:1 5 AA 0 0 1 2").contains("does not have 1 letters"));
        assert!(e("0 8 switch 1 8:1 5 A 0g 0 1 2").contains("bad userland word `0g`"));
        assert!(e("0 8 switch 1 8:1 5 A 123456789 0 1 2").contains("bad userland word"));
        assert!(e("0 8 switch 1 8:1 5 A 0 0 -1 2").contains("bad remapped counter"));
        assert!(e("0 8 striped 1 8:1 5 A 0 0 1 2").contains("not `switch`"));
        let s = parse_status(&targets("0 8 switch 1 8:1 5 X 0 0 0 0")).unwrap();
        assert_eq!(s.paths[0].state, "unknown(X)");
    }
}
