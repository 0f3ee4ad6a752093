//! The declarative configuration that `dm-switch activate`, `deactivate`
//! and `check-config` read (default `/etc/dm-switch/switch.toml`).
//!
//! A TOML file (<https://toml.io>), one `[[switch]]` table per device:
//!
//! ```toml
//! path_timeout = 30              # seconds to wait for a missing path (default 30)
//!
//! [[switch]]
//! name = "sw0"                   # the DM name: /dev/mapper/sw0
//! format = "rfc"                 # table line layout: "rfc" (default) or "upstream"
//! region_size = 16384            # sectors (512 bytes) per region
//! paths = ["/dev/mapper/member0", "/dev/mapper/member1"]
//! offsets = [0, 0]               # first sector used on each path (default all 0)
//! sectors = 1048576              # device length (default: the shortest path's room)
//! mapping_file = "sw0.map"       # `upload --file` format; relative to this file
//! # round_robin = true           # ... or region r on path r mod (number of paths)
//! userland = [1, 0x2a]           # the two words `dmsetup status` shows (optional)
//! ```
//!
//! Unknown keys are errors (a typo must not be silently ignored). Every
//! error names the file and line it is about ([`ConfigError`]).

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::device::TableFormat;

/// Where `activate` looks without `--config`.
pub const DEFAULT_PATH: &str = "/etc/dm-switch/switch.toml";

/// How long `activate` waits for a missing path unless the file says.
pub const DEFAULT_PATH_TIMEOUT_S: u64 = 30;

/// The most paths a switch target takes (its constructor's limit).
pub const MAX_PATHS: usize = 65535;

/// Longest DM name (`DM_NAME_LEN` is 128 with the terminating NUL).
const MAX_NAME_LEN: usize = 127;

/// One error in a configuration file: `FILE:LINE: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as given.
    pub file: String,
    /// 1-based line the error is about (0: the whole file).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => write!(f, "{}: {}", self.file, self.message),
            n => write!(f, "{}:{n}: {}", self.file, self.message),
        }
    }
}

/// The configuration, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// How long `activate` waits for each missing path.
    pub path_timeout: Duration,
    /// The devices, in file order.
    pub switches: Vec<SwitchSpec>,
}

/// One switch device of the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchSpec {
    /// The DM name.
    pub name: String,
    /// Line of its `name` key (for messages about it).
    pub line: usize,
    /// Table line layout.
    pub format: TableFormat,
    /// Sectors per region.
    pub region_size: u64,
    /// The paths, in table order.
    pub paths: Vec<PathSpec>,
    /// Device length in sectors; `None`: the shortest path's room.
    pub sectors: Option<u64>,
    /// Where the region table comes from.
    pub mapping: MappingSource,
    /// The userland words; `None`: the mapping file's, else 0,0.
    pub userland: Option<[u32; 2]>,
}

/// One path: a block device and the first sector used on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathSpec {
    /// The device node (e.g. `/dev/disk/by-id/...` or `/dev/mapper/NAME`).
    pub device: PathBuf,
    /// First sector used on it.
    pub offset: u64,
    /// Line of the entry in `paths`.
    pub line: usize,
}

/// Where a switch's region table comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MappingSource {
    /// A mapping file (resolved against the configuration's directory).
    File(PathBuf),
    /// Region r on path r mod (number of paths).
    RoundRobin,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    path_timeout: Option<Spanned<u64>>,
    #[serde(default)]
    switch: Vec<RawSwitch>,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawFormat {
    Rfc,
    Upstream,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSwitch {
    name: Spanned<String>,
    format: Option<RawFormat>,
    region_size: Spanned<u64>,
    paths: Spanned<Vec<Spanned<String>>>,
    offsets: Option<Spanned<Vec<u64>>>,
    sectors: Option<Spanned<u64>>,
    mapping_file: Option<Spanned<String>>,
    round_robin: Option<Spanned<bool>>,
    userland: Option<[u32; 2]>,
}

/// Reads and checks the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            file: file.clone(),
            line: 0,
            message: format!("cannot read the configuration: {e}"),
        }]
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, &file, base)
}

/// Parses and checks configuration `text`; `file` names it in errors and
/// relative mapping files are resolved against `base`. Returns every error
/// found (a TOML syntax error stops at the first).
pub fn parse(text: &str, file: &str, base: &Path) -> Result<Config, Vec<ConfigError>> {
    let line = |span: Range<usize>| line_of(text, span.start);
    let err = |span: Range<usize>, message: String| ConfigError {
        file: file.to_string(),
        line: line(span),
        message,
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        vec![ConfigError {
            file: file.to_string(),
            line: e.span().map_or(1, |s| line_of(text, s.start)),
            message: e.message().to_string(),
        }]
    })?;
    let mut errors = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut devices: HashMap<PathBuf, (usize, String, usize)> = HashMap::new();
    let mut switches = Vec::new();
    for (index, s) in raw.switch.into_iter().enumerate() {
        let name = s.name.get_ref().clone();
        let name_line = line(s.name.span());
        if let Some(problem) = bad_name(&name) {
            errors.push(err(s.name.span(), problem));
        } else if let Some(first) = names.insert(name.clone(), name_line) {
            errors.push(err(
                s.name.span(),
                format!("switch `{name}` is already defined at line {first}"),
            ));
        }
        let region_size = *s.region_size.get_ref();
        if region_size == 0 || region_size > u64::from(u32::MAX) {
            errors.push(err(
                s.region_size.span(),
                format!(
                    "region_size {region_size} is out of range (1..={} sectors)",
                    u32::MAX
                ),
            ));
        }
        let given = s.paths.get_ref();
        if given.is_empty() || given.len() > MAX_PATHS {
            errors.push(err(
                s.paths.span(),
                format!(
                    "switch `{name}` has {} paths; a switch takes 1..={MAX_PATHS}",
                    given.len()
                ),
            ));
        }
        let offsets = match &s.offsets {
            Some(o) if o.get_ref().len() != given.len() => {
                errors.push(err(
                    o.span(),
                    format!(
                        "offsets has {} entries but paths has {}",
                        o.get_ref().len(),
                        given.len()
                    ),
                ));
                vec![0; given.len()]
            }
            Some(o) => o.get_ref().clone(),
            None => vec![0; given.len()],
        };
        let mut paths = Vec::with_capacity(given.len());
        for (p, offset) in given.iter().zip(offsets) {
            let device = PathBuf::from(p.get_ref());
            if !device.is_absolute() {
                errors.push(err(
                    p.span(),
                    format!("path `{}` is not absolute", p.get_ref()),
                ));
            }
            match devices.get(&device) {
                Some((i, other, at)) if *i != index => errors.push(err(
                    p.span(),
                    format!(
                        "path {} is also used by switch `{other}` (line {at}): a path belongs to one switch",
                        device.display()
                    ),
                )),
                _ => {
                    devices.insert(device.clone(), (index, name.clone(), line(p.span())));
                }
            }
            paths.push(PathSpec {
                device,
                offset,
                line: line(p.span()),
            });
        }
        if let Some(sec) = &s.sectors {
            if *sec.get_ref() == 0 {
                errors.push(err(sec.span(), "sectors must be at least 1".into()));
            }
        }
        let round_robin = s.round_robin.as_ref().is_some_and(|r| *r.get_ref());
        let mapping = match (&s.mapping_file, round_robin) {
            (Some(f), false) => MappingSource::File(base.join(f.get_ref())),
            (None, true) => MappingSource::RoundRobin,
            (Some(f), true) => {
                errors.push(err(
                    f.span(),
                    format!(
                        "switch `{name}` has both mapping_file and round_robin = true: choose one"
                    ),
                ));
                MappingSource::RoundRobin
            }
            (None, false) => {
                errors.push(err(
                    s.name.span(),
                    format!(
                        "switch `{name}` has no mapping source: set mapping_file or round_robin = true"
                    ),
                ));
                MappingSource::RoundRobin
            }
        };
        switches.push(SwitchSpec {
            name,
            line: name_line,
            format: match s.format {
                Some(RawFormat::Upstream) => TableFormat::Upstream,
                Some(RawFormat::Rfc) | None => TableFormat::Rfc,
            },
            region_size,
            paths,
            sectors: s.sectors.map(|v| *v.get_ref()),
            mapping,
            userland: s.userland,
        });
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        return Err(errors);
    }
    Ok(Config {
        path_timeout: Duration::from_secs(
            raw.path_timeout
                .map_or(DEFAULT_PATH_TIMEOUT_S, |t| *t.get_ref()),
        ),
        switches,
    })
}

/// Why `name` cannot be a DM device name, if it cannot.
fn bad_name(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("the switch name is empty".into())
    } else if name.len() > MAX_NAME_LEN {
        Some(format!(
            "switch name `{name}` is {} bytes; device-mapper allows {MAX_NAME_LEN}",
            name.len()
        ))
    } else if name.contains('/') || name == "." || name == ".." {
        Some(format!(
            "switch name `{name}` cannot be a device-mapper name (no `/`, `.` or `..`)"
        ))
    } else {
        None
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

impl Config {
    /// The switches named, in the order given (all of them if `names` is
    /// empty); an unknown name is an error naming the known ones.
    pub fn select(&self, names: &[String]) -> Result<Vec<&SwitchSpec>, String> {
        if names.is_empty() {
            return Ok(self.switches.iter().collect());
        }
        names
            .iter()
            .map(|n| {
                self.switches.iter().find(|s| &s.name == n).ok_or_else(|| {
                    let known: Vec<&str> = self.switches.iter().map(|s| s.name.as_str()).collect();
                    format!(
                        "no switch `{n}` in the configuration (it has: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    )
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<(usize, String)> {
        parse(text, "t.toml", Path::new("/etc/dm-switch"))
            .unwrap_err()
            .into_iter()
            .map(|e| (e.line, e.message))
            .collect()
    }

    fn one_error(text: &str, line: usize, needle: &str) {
        let e = errors(text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].0, line, "{e:?}");
        assert!(e[0].1.contains(needle), "{e:?} lacks {needle}");
    }

    const GOOD: &str = r#"
path_timeout = 5

[[switch]]
name = "sw0"
region_size = 128
paths = ["/dev/mapper/m0", "/dev/mapper/m1"]
mapping_file = "sw0.map"
userland = [1, 0x2a]

[[switch]]
name = "sw1"
format = "upstream"
region_size = 64
paths = ["/dev/nullb0", "/dev/nullb0"]
offsets = [0, 8192]
sectors = 8192
round_robin = true
"#;

    #[test]
    fn a_good_file() {
        let c = parse(GOOD, "t.toml", Path::new("/etc/dm-switch")).unwrap();
        assert_eq!(c.path_timeout, Duration::from_secs(5));
        assert_eq!(c.switches.len(), 2);
        let s0 = &c.switches[0];
        assert_eq!((s0.name.as_str(), s0.line, s0.region_size), ("sw0", 5, 128));
        assert_eq!(s0.format, TableFormat::Rfc);
        assert_eq!(
            s0.mapping,
            MappingSource::File(PathBuf::from("/etc/dm-switch/sw0.map"))
        );
        assert_eq!(s0.userland, Some([1, 42]));
        assert_eq!(s0.paths[1].device, PathBuf::from("/dev/mapper/m1"));
        assert_eq!(s0.paths[1].line, 7);
        let s1 = &c.switches[1];
        assert_eq!(s1.format, TableFormat::Upstream);
        assert_eq!(s1.mapping, MappingSource::RoundRobin);
        assert_eq!(
            s1.paths.iter().map(|p| p.offset).collect::<Vec<_>>(),
            [0, 8192]
        );
        assert_eq!(s1.sectors, Some(8192));
        assert_eq!(c.select(&["sw1".into()]).unwrap()[0].name, "sw1");
        assert!(c.select(&["nope".into()]).unwrap_err().contains("sw0, sw1"));
        assert_eq!(c.select(&[]).unwrap().len(), 2);
        let empty = parse("", "t.toml", Path::new("/")).unwrap();
        assert!(empty.switches.is_empty());
        assert_eq!(
            empty.path_timeout,
            Duration::from_secs(DEFAULT_PATH_TIMEOUT_S)
        );
    }

    #[test]
    fn every_error_names_its_line() {
        let sw = |body: &str| format!("[[switch]]\nname = \"a\"\n{body}\n");
        one_error("x = = 1\n", 1, "");
        one_error(
            &sw("region_size = 8\npaths = [\"/dev/x\"]\nround_robin = true\ncolour = 1"),
            6,
            "unknown field `colour`",
        );
        one_error(
            &sw("region_size = 8\nformat = \"linear\"\npaths = [\"/dev/x\"]\nround_robin = true"),
            4,
            "unknown variant `linear`",
        );
        one_error(
            &sw("region_size = 0\npaths = [\"/dev/x\"]\nround_robin = true"),
            3,
            "region_size 0 is out of range",
        );
        one_error(
            &sw("region_size = 4294967296\npaths = [\"/dev/x\"]\nround_robin = true"),
            3,
            "out of range",
        );
        one_error(
            &sw("region_size = -8\npaths = [\"/dev/x\"]\nround_robin = true"),
            3,
            "",
        );
        one_error(
            &sw("region_size = 8\npaths = []\nround_robin = true"),
            4,
            "has 0 paths",
        );
        one_error(
            &sw("region_size = 8\npaths = [\"/dev/x\",\n \"dev/y\"]\nround_robin = true"),
            5,
            "`dev/y` is not absolute",
        );
        one_error(
            &sw("region_size = 8\npaths = [\"/dev/x\"]\noffsets = [0, 1]\nround_robin = true"),
            5,
            "offsets has 2 entries but paths has 1",
        );
        one_error(
            &sw("region_size = 8\npaths = [\"/dev/x\"]"),
            2,
            "no mapping source",
        );
        one_error(
            &sw("region_size = 8\npaths = [\"/dev/x\"]\nround_robin = true\nmapping_file = \"m\""),
            6,
            "choose one",
        );
        one_error(
            &sw("region_size = 8\npaths = [\"/dev/x\"]\nround_robin = true\nsectors = 0"),
            6,
            "sectors must be at least 1",
        );
        one_error(
            &sw("region_size = 8\npaths = [\"/dev/x\"]\nround_robin = true\nuserland = [1]"),
            6,
            "",
        );
        one_error("[[switch]]\nregion_size = 8\n", 1, "missing field `name`");
        one_error(
            "[[switch]]\nname = \"a/b\"\nregion_size = 8\npaths = [\"/dev/x\"]\nround_robin = true\n",
            2,
            "cannot be a device-mapper name",
        );
        one_error(
            &format!(
                "[[switch]]\nname = \"{}\"\nregion_size = 8\npaths = [\"/dev/x\"]\nround_robin = true\n",
                "n".repeat(128)
            ),
            2,
            "allows 127",
        );
    }

    #[test]
    fn duplicates_name_both_lines_and_all_errors_are_reported() {
        let text = "\
[[switch]]
name = \"a\"
region_size = 8
paths = [\"/dev/x\"]
round_robin = true

[[switch]]
name = \"a\"
region_size = 0
paths = [\"/dev/y\", \"/dev/x\"]
round_robin = true
";
        let e = errors(text);
        assert_eq!(e.len(), 3, "{e:?}");
        assert_eq!(e[0].0, 8);
        assert!(e[0].1.contains("already defined at line 2"), "{e:?}");
        assert_eq!(e[1].0, 9);
        assert_eq!(e[2].0, 10);
        assert!(e[2].1.contains("also used by switch `a` (line 4)"), "{e:?}");
        let shown = parse(text, "/etc/x.toml", Path::new("/"))
            .unwrap_err()
            .first()
            .map(ToString::to_string);
        assert_eq!(
            shown.as_deref(),
            Some("/etc/x.toml:8: switch `a` is already defined at line 2")
        );
    }
}
