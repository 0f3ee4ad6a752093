//! `activate` and `deactivate`: bringing the host's switch devices in line
//! with the configuration ([`crate::config`]), idempotently.
//!
//! For each switch, `activate` first checks everything it can without
//! touching a device (paths present within the timeout, sizes, logical
//! block sizes, holders, the mapping file), then creates the device, reloads
//! it if its live table differs, or leaves it, and finally uploads only the
//! windows of the mapping that differ from the live table (read back).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::config::{MappingSource, PathSpec, SwitchSpec};
use crate::device::{self, Device, DmTarget, Query, SwitchTable, TableFormat};
use crate::lifecycle;
use crate::mapping::{self, Mapping};
use crate::netlink::Channel;
use crate::plan::{Params, Source, UploadPlan};
use crate::readback;
use crate::transfer;

/// What the system says about one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathProbe {
    /// Device numbers.
    pub major: u32,
    /// Device numbers.
    pub minor: u32,
    /// Size in 512-byte sectors.
    pub sectors: u64,
    /// Logical block size in bytes.
    pub logical_block_size: u64,
    /// Devices stacked on it (DM names, or kernel names of other holders).
    pub holders: Vec<String>,
}

fn read_sys(path: &Path) -> Result<String> {
    Ok(fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .trim()
        .to_string())
}

fn sys_number(path: &Path) -> Result<u64> {
    let text = read_sys(path)?;
    text.parse()
        .map_err(|_| anyhow!("{} holds `{text}`, not a number", path.display()))
}

/// The names of the devices that hold block device `major:minor`.
pub fn holders(major: u32, minor: u32) -> Vec<String> {
    let dir = PathBuf::from(format!("/sys/dev/block/{major}:{minor}/holders"));
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| {
            let kname = e.file_name().to_string_lossy().into_owned();
            read_sys(&PathBuf::from(format!("/sys/class/block/{kname}/dm/name"))).unwrap_or(kname)
        })
        .collect();
    names.sort();
    names
}

/// Waits up to `timeout` for `p` to exist, then probes it.
pub fn probe(p: &PathSpec, timeout: Duration) -> Result<PathProbe> {
    let start = Instant::now();
    while !p.device.exists() {
        if start.elapsed() >= timeout {
            bail!(
                "path {} (line {}) did not appear within {} s",
                p.device.display(),
                p.line,
                timeout.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
    let (major, minor) = device::block_dev_numbers(&p.device)
        .with_context(|| format!("path {} (line {})", p.device.display(), p.line))?;
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    // A partition has no queue of its own: its disk's applies.
    let lbs = sys_number(&sys.join("queue/logical_block_size"))
        .or_else(|_| sys_number(&sys.join("../queue/logical_block_size")))?;
    Ok(PathProbe {
        major,
        minor,
        sectors: sys_number(&sys.join("size"))?,
        logical_block_size: lbs,
        holders: holders(major, minor),
    })
}

/// The switch table `spec` asks for over the probed paths: checks every
/// path's room, block size and holders, and works out the length (the
/// shortest room unless `sectors` is set).
pub fn desired_table(spec: &SwitchSpec, probes: &[PathProbe]) -> Result<SwitchTable> {
    let mut room = u64::MAX;
    for (p, pr) in spec.paths.iter().zip(probes) {
        let at = format!("path {} (line {})", p.device.display(), p.line);
        if let Some(other) = pr.holders.iter().find(|h| **h != spec.name) {
            bail!("{at} is already held by device `{other}`");
        }
        if p.offset >= pr.sectors {
            bail!(
                "{at}: offset {} is past its end ({} sectors)",
                p.offset,
                pr.sectors
            );
        }
        let lbs_sectors = (pr.logical_block_size / 512).max(1);
        if !spec.region_size.is_multiple_of(lbs_sectors) || !p.offset.is_multiple_of(lbs_sectors) {
            bail!(
                "{at} has {}-byte logical blocks: region_size {} and offset {} must be multiples of {lbs_sectors} sectors",
                pr.logical_block_size,
                spec.region_size,
                p.offset
            );
        }
        room = room.min(pr.sectors - p.offset);
    }
    let len = spec.sectors.unwrap_or(room);
    if len > room {
        bail!(
            "switch `{}` wants {len} sectors but its shortest path has room for {room}",
            spec.name
        );
    }
    let table = SwitchTable {
        start: 0,
        len,
        format: spec.format,
        dev_count: u32::try_from(spec.paths.len())?,
        region_size: spec.region_size,
        paths: spec
            .paths
            .iter()
            .zip(probes)
            .map(|(p, pr)| (format!("{}:{}", pr.major, pr.minor), p.offset))
            .collect(),
    };
    table
        .page_total()
        .with_context(|| format!("switch `{}`", spec.name))?;
    Ok(table)
}

/// The DM target of a switch table (what `dmsetup table` prints).
pub fn switch_target(t: &SwitchTable) -> DmTarget {
    let mut params = format!("{} {}", t.dev_count, t.region_size);
    if t.format == TableFormat::Upstream {
        params += " 0";
    }
    for (dev, off) in &t.paths {
        params += &format!(" {dev} {off}");
    }
    DmTarget {
        start: t.start,
        len: t.len,
        target_type: "switch".into(),
        params,
    }
}

/// What `activate` does with a device's table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableAction {
    /// No device of that name: create it.
    Create,
    /// The live table is the one asked for.
    Keep,
    /// The live table differs (the text says how): load and resume.
    Reload(String),
}

/// Decides what to do with device `name`, given its live table (`None`: no
/// such device). A device that is not a single switch target is refused.
pub fn table_action(
    name: &str,
    want: &SwitchTable,
    live: Option<&[DmTarget]>,
) -> Result<TableAction> {
    let Some(live) = live else {
        return Ok(TableAction::Create);
    };
    let have = device::parse_table(live).with_context(|| {
        format!("device `{name}` exists and is not a switch device: not touching it")
    })?;
    let mut changes = Vec::new();
    if have.len != want.len {
        changes.push(format!("length {} -> {} sectors", have.len, want.len));
    }
    if have.format != want.format {
        changes.push(format!("format {:?} -> {:?}", have.format, want.format));
    }
    if have.region_size != want.region_size {
        changes.push(format!(
            "region size {} -> {} sectors",
            have.region_size, want.region_size
        ));
    }
    if have.paths != want.paths {
        changes.push(format!(
            "paths {} -> {}",
            describe_paths(&have.paths),
            describe_paths(&want.paths)
        ));
    }
    if have.start != want.start && changes.is_empty() {
        changes.push(format!("start {} -> {}", have.start, want.start));
    }
    Ok(if changes.is_empty() {
        TableAction::Keep
    } else {
        TableAction::Reload(changes.join(", "))
    })
}

fn describe_paths(paths: &[(String, u64)]) -> String {
    paths
        .iter()
        .map(|(d, o)| format!("{d}+{o}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The upload plan for `spec`'s mapping over `table` (reads the mapping
/// file). Its header names no device yet (0:0).
pub fn mapping_plan(spec: &SwitchSpec, table: &SwitchTable) -> Result<UploadPlan> {
    let params = Params::resolve(table, None, None)?;
    let src = match &spec.mapping {
        MappingSource::RoundRobin => Source::entries(Mapping::RoundRobin {
            dev_count: table.dev_count,
        }),
        MappingSource::File(path) => Source::file(mapping::open_mapping_file(
            path,
            params.page_total,
            table.dev_count,
            params.pte_bits,
        )?),
    };
    let nowhere = Device {
        name: spec.name.clone(),
        major: 0,
        minor: 0,
    };
    let header = params.header(&nowhere, spec.userland.unwrap_or([0, 0]));
    UploadPlan::for_source(header, src, false, spec.userland.is_some())
}

/// Brings switch `spec` in line with the configuration; returns one line
/// saying what was done.
pub fn activate(spec: &SwitchSpec, path_timeout: Duration) -> Result<String> {
    let probes = spec
        .paths
        .iter()
        .map(|p| probe(p, path_timeout))
        .collect::<Result<Vec<_>>>()?;
    let want = desired_table(spec, &probes)?;
    let target = switch_target(&want);
    let live = lifecycle::lookup(&spec.name)?;
    let live_table = match &live {
        Some(l) => Some(device::live_targets(&l.device, Query::Table)?),
        None => None,
    };
    let action = table_action(&spec.name, &want, live_table.as_deref())?;
    // Read the mapping before touching the device: a bad file changes nothing.
    let plan = mapping_plan(spec, &want)?;
    let (dev, table_done) = match (&action, live) {
        (TableAction::Create, _) => (
            lifecycle::create(&spec.name, &[target])?,
            format!(
                "created ({} paths, {} regions of {} sectors)",
                want.dev_count,
                want.page_total()?,
                want.region_size
            ),
        ),
        (TableAction::Reload(how), Some(l)) => {
            lifecycle::reload(&spec.name, &[target])?;
            (l.device, format!("table reloaded ({how})"))
        }
        (_, Some(l)) => (l.device, "table unchanged".to_string()),
        (_, None) => bail!("device `{}` vanished while activating it", spec.name),
    };
    let upload = upload_changes(plan, &dev);
    match upload {
        Ok(sent) => Ok(format!(
            "{} ({}:{}): {table_done}; {sent}",
            dev.name, dev.major, dev.minor
        )),
        Err(e) if action == TableAction::Create => {
            // Created by this run: leave nothing half-made behind.
            match lifecycle::remove(&spec.name, false, want.len) {
                Ok(()) => Err(e.context(format!("removed {} again", spec.name))),
                Err(r) => Err(e.context(format!("and removing {} failed: {r:#}", spec.name))),
            }
        }
        Err(e) => Err(e),
    }
}

/// Uploads the windows of `plan` that differ from `dev`'s live table; says
/// how many.
fn upload_changes(mut plan: UploadPlan, dev: &Device) -> Result<String> {
    (plan.header.dev_major, plan.header.dev_minor) = (dev.major, dev.minor);
    let planned = plan.windows.len();
    let mut ch = Channel::open()?;
    if let Some(changed) = readback::changed_windows(&plan, &transfer::read_back(&mut ch, dev)?) {
        plan.windows = changed;
    }
    if plan.windows.is_empty() {
        return Ok("mapping already live (nothing sent)".into());
    }
    transfer::send_windows(&mut ch, &plan, |_| {})?;
    Ok(format!(
        "mapping: sent {} of {planned} window{}",
        plan.windows.len(),
        if planned == 1 { "" } else { "s" }
    ))
}

/// Who has block device `major:minor` open, as far as can be seen: devices
/// stacked on it, mounts, and processes with it open.
pub fn openers(major: u32, minor: u32) -> Vec<String> {
    let mut who: Vec<String> = holders(major, minor)
        .into_iter()
        .map(|h| format!("device `{h}`"))
        .collect();
    let devno = format!("{major}:{minor}");
    if let Ok(mounts) = fs::read_to_string("/proc/self/mountinfo") {
        who.extend(mounts.lines().filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&devno.as_str())).then(|| format!("mounted at {}", f[4]))
        }));
    }
    let rdev = libc::makedev(major, minor);
    if let Ok(procs) = fs::read_dir("/proc") {
        for p in procs.flatten() {
            let pid = p.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
                continue;
            };
            let holds = fds.flatten().any(|fd| {
                fs::metadata(fd.path()).is_ok_and(|m| {
                    use std::os::unix::fs::FileTypeExt;
                    m.file_type().is_block_device() && m.rdev() == rdev
                })
            });
            if holds {
                let comm = read_sys(&p.path().join("comm")).unwrap_or_default();
                who.push(format!("pid {pid} ({comm})"));
            }
        }
    }
    who
}

/// How long `deactivate` waits for a device's openers to go before it
/// refuses: udev's probes open a device for a moment after every change
/// (`dmsetup remove --retry` waits for the same reason).
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Removes switch `name` (`deactivate`); returns one line saying what was
/// done. A device still open after [`CLOSE_WAIT`] is refused, naming who
/// holds it, unless `force`.
pub fn deactivate(name: &str, force: bool) -> Result<String> {
    let not_active = || Ok(format!("{name}: not active (nothing to do)"));
    let Some(mut live) = lifecycle::lookup(name)? else {
        return not_active();
    };
    let start = Instant::now();
    while live.open_count > 0 && !force && start.elapsed() < CLOSE_WAIT {
        thread::sleep(Duration::from_millis(100));
        match lifecycle::lookup(name)? {
            Some(l) => live = l,
            None => return not_active(),
        }
    }
    let d = &live.device;
    let table = device::parse_table(&device::live_targets(d, Query::Table)?)
        .with_context(|| format!("device `{name}` is not a switch device: not removing it"))?;
    if live.open_count > 0 && !force {
        let who = openers(d.major, d.minor);
        bail!(
            "{name} ({}:{}) is open ({} opener{}{}): not removed; close it first, or use --force (I/O then fails and it goes when closed)",
            d.major,
            d.minor,
            live.open_count,
            if live.open_count == 1 { "" } else { "s" },
            if who.is_empty() {
                String::new()
            } else {
                format!(": {}", who.join(", "))
            }
        );
    }
    lifecycle::remove(name, force, table.len)?;
    Ok(if live.open_count > 0 {
        format!(
            "{name} ({}:{}): I/O now fails; removed when its last opener closes it",
            d.major, d.minor
        )
    } else {
        format!("{name} ({}:{}): removed", d.major, d.minor)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn spec(text: &str) -> SwitchSpec {
        config::parse(text, "t.toml", Path::new("/etc"))
            .unwrap()
            .switches
            .remove(0)
    }

    fn probe(major: u32, sectors: u64, lbs: u64, holders: &[&str]) -> PathProbe {
        PathProbe {
            major,
            minor: 0,
            sectors,
            logical_block_size: lbs,
            holders: holders.iter().map(ToString::to_string).collect(),
        }
    }

    const TWO: &str = "[[switch]]\nname = \"sw\"\nregion_size = 128\n\
                       paths = [\"/dev/a\", \"/dev/b\"]\noffsets = [0, 2048]\nround_robin = true\n";

    #[test]
    fn table_from_config_and_probes() {
        let s = spec(TWO);
        let t = desired_table(
            &s,
            &[probe(8, 10_000, 512, &[]), probe(9, 10_000, 512, &["sw"])],
        )
        .unwrap();
        assert_eq!(t.len, 10_000 - 2048, "the shortest room");
        assert_eq!(t.paths, [("8:0".into(), 0), ("9:0".into(), 2048)]);
        let target = switch_target(&t);
        assert_eq!(target.params, "2 128 8:0 0 9:0 2048");
        assert_eq!(device::parse_table(&[target]).unwrap(), t, "round trip");
        let up = spec(&TWO.replace("round_robin", "format = \"upstream\"\nround_robin"));
        let tu = desired_table(
            &up,
            &[probe(8, 10_000, 512, &[]), probe(9, 10_000, 512, &[])],
        )
        .unwrap();
        assert_eq!(switch_target(&tu).params, "2 128 0 8:0 0 9:0 2048");
        let fixed = spec(&TWO.replace("round_robin", "sectors = 4096\nround_robin"));
        let t = desired_table(
            &fixed,
            &[probe(8, 10_000, 512, &[]), probe(9, 10_000, 512, &[])],
        )
        .unwrap();
        assert_eq!(t.len, 4096);
    }

    #[test]
    fn table_refusals_name_the_path() {
        let err = |text: &str, probes: &[PathProbe]| {
            format!("{:#}", desired_table(&spec(text), probes).unwrap_err())
        };
        let ok = probe(8, 10_000, 512, &[]);
        let e = err(TWO, &[ok.clone(), probe(9, 10_000, 512, &["other"])]);
        assert!(
            e.contains("/dev/b (line 4) is already held by device `other`"),
            "{e}"
        );
        let e = err(TWO, &[ok.clone(), probe(9, 2048, 512, &[])]);
        assert!(
            e.contains("offset 2048 is past its end (2048 sectors)"),
            "{e}"
        );
        let e = err(
            &TWO.replace("2048", "2047"),
            &[ok.clone(), probe(9, 10_000, 4096, &[])],
        );
        assert!(
            e.contains(
                "/dev/b (line 4) has 4096-byte logical blocks: region_size 128 and offset 2047"
            ),
            "{e}"
        );
        let e = err(
            &TWO.replace("128", "7"),
            &[probe(8, 10_000, 4096, &[]), ok.clone()],
        );
        assert!(
            e.contains("/dev/a (line 4) has 4096-byte logical blocks: region_size 7"),
            "{e}"
        );
        let e = err(
            &TWO.replace("round_robin", "sectors = 9000\nround_robin"),
            &[ok.clone(), ok],
        );
        assert!(
            e.contains("wants 9000 sectors but its shortest path has room for 7952"),
            "{e}"
        );
    }

    #[test]
    fn table_actions() {
        let s = spec(TWO);
        let probes = [probe(8, 10_000, 512, &[]), probe(9, 10_000, 512, &[])];
        let want = desired_table(&s, &probes).unwrap();
        let same = [switch_target(&want)];
        assert_eq!(
            table_action("sw", &want, None).unwrap(),
            TableAction::Create
        );
        assert_eq!(
            table_action("sw", &want, Some(&same)).unwrap(),
            TableAction::Keep
        );
        let mut shorter = want.clone();
        shorter.len = 4096;
        let TableAction::Reload(how) =
            table_action("sw", &want, Some(&[switch_target(&shorter)])).unwrap()
        else {
            panic!("not a reload")
        };
        assert_eq!(how, "length 4096 -> 7952 sectors");
        let mut moved = want.clone();
        moved.paths[1].0 = "10:0".into();
        moved.format = TableFormat::Upstream;
        let TableAction::Reload(how) =
            table_action("sw", &want, Some(&[switch_target(&moved)])).unwrap()
        else {
            panic!("not a reload")
        };
        assert_eq!(
            how,
            "format Upstream -> Rfc, paths 8:0+0 10:0+2048 -> 8:0+0 9:0+2048"
        );
        let linear = device::targets("0 100 linear 8:0 0");
        let e = format!(
            "{:#}",
            table_action("sw", &want, Some(&linear)).unwrap_err()
        );
        assert!(e.contains("exists and is not a switch device"), "{e}");
        assert!(e.contains("`linear`, not `switch`"), "{e}");
    }
}
