//! Command-line interface: `dm-switch upload`, `dump`, `status`, `activate`,
//! `deactivate` and `check-config`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const ABOUT: &str = "Userland agent for the dm-switch device-mapper target";

const LONG_ABOUT: &str = "\
Userland agent for the dm-switch device-mapper target.

It uploads a switch device's region table (which path each region goes to)
to the dm_switch kernel module over generic netlink (family DM_SWITCH),
reads it back, shows the target's status, and sets up the switch devices
of a configuration file (/etc/dm-switch/switch.toml) idempotently. Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN).

DEV is a DM name (sw0 = /dev/mapper/sw0), /dev/mapper/NAME, /dev/dm-N, or
MAJOR:MINOR.

Mapping file format (upload --file, and what `dump` writes):
  one `REGION PATH` or `FIRST-LAST PATH` per line, decimal numbers;
  `#` starts a comment; blank lines are ignored; regions not named map to
  path 0; a later line overrides an earlier one; `FIRST-LAST -` leaves
  whole chunks (8192 regions) unallocated; `userland A,B` sets the userland
  words. Errors name FILE:LINE.

Exit codes: 0 success, 1 usage or user error, 2 the kernel refused.";

const EXAMPLES: &str = "\
Examples:
  dm-switch upload sw0 --round-robin
  dm-switch upload /dev/mapper/sw0 --file map.txt --userland 1,0x2a
  printf '0-99 1\\n100 2\\n' | dm-switch upload 253:0 --file -
  dm-switch upload sw0 --region-mappings '0:0 :1 :2 R3,fd'
  dm-switch upload sw0 --free-chunk 2
  dm-switch dump sw0 > map.txt; dm-switch upload sw0 --file map.txt --diff
  dm-switch status sw0 --json
  dm-switch check-config && dm-switch activate --all
  dm-switch deactivate sw0";

/// Top-level command line.
#[derive(Debug, Parser)]
#[command(
    name = "dm-switch",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = EXAMPLES
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload a region table (or free one chunk of it) to the kernel.
    #[command(
        long_about = "Upload a region table to a switch device, or free one kernel chunk.\n\n\
Defaults come from `dmsetup table`: page_total = ceil(length / region size),\n\
pte_bits = max(1, ceil(log2(path count))). The table is sent in as few\n\
windows as the largest message (MAX_IPC_MSG_LEN) allows; every reply is checked.\n\n\
Mapping file format (--file): one `REGION PATH` or `FIRST-LAST PATH` per\n\
line, decimal; `#` starts a comment; blank lines are ignored; regions not\n\
named map to path 0; a later line overrides an earlier one.\n\n\
--region-mappings takes upstream dm-switch `set_region_mappings` tokens\n\
(hexadecimal, no 0x): `IDX:PATH` sets region IDX; `:PATH` sets the next\n\
region; `Rn,m` repeats the last n mappings over the next m regions. The\n\
first token must be IDX:PATH.",
        after_help = "Examples:\n  \
dm-switch upload sw0 --round-robin\n  \
dm-switch upload sw0 --file map.txt --dry-run\n  \
dm-switch upload /dev/dm-3 --region-mappings '0:1 :2 R2,1fe' --userland 7,0x10\n  \
dm-switch upload 253:3 --free-chunk 0"
    )]
    Upload(UploadArgs),
    /// Read the live region table back from the kernel.
    #[command(
        long_about = "Read the live region table of a switch device back from the kernel\n\
(a generic-netlink dump: an exact snapshot, taken when the dump starts).\n\n\
--format file (the default) prints a mapping file that `upload --file`\n\
reads back to the same table: placement, userland words and unallocated\n\
chunks (`FIRST-LAST -`). region-mappings prints upstream\n\
`set_region_mappings` tokens (unallocated chunks cannot be expressed and\n\
are reported on standard error); json prints geometry, userland words,\n\
allocated chunks and runs of regions (path null: unallocated).",
        after_help = "Examples:\n  dm-switch dump sw0 > map.txt\n  dm-switch dump 253:3 --format json\n  \
dm-switch dump sw0 | dm-switch upload sw1 --file -"
    )]
    Dump(DumpArgs),
    /// Create, reload and upload the switch devices of the configuration.
    #[command(
        long_about = "Bring switch devices in line with the configuration file (TOML; see\n\
`dm-switch check-config --help` for its format). For each device named (or\n\
every one with --all): wait for its paths (path_timeout), check them, read\n\
its mapping file, then create the device, reload it if its live table\n\
differs (a grown or shrunk device keeps its mapping), or leave it; then\n\
send only the windows of the mapping that differ from the live table.\n\
Running it again changes nothing and says so. A device it creates is\n\
removed again if a later step fails. The other devices are still done\n\
when one fails; the exit code is then non-zero.",
        after_help = "Examples:\n  dm-switch activate --all\n  \
dm-switch activate sw0 --config /etc/dm-switch/switch.toml"
    )]
    Activate(ActivateArgs),
    /// Remove the switch devices of the configuration.
    #[command(
        long_about = "Remove switch devices named in the configuration (or every one with\n\
--all). A device still open after 10 s (udev's probes open a device for a\n\
moment after each change) is refused, naming who holds it (stacked\n\
devices, mounts, processes), unless --force: its table is then replaced by\n\
one that fails all I/O and it is removed when the last opener closes it\n\
(as `dmsetup remove --force --deferred`). A device that is not active is\n\
reported and skipped; one that is not a switch is refused.",
        after_help = "Examples:\n  dm-switch deactivate --all\n  dm-switch deactivate sw0 --force"
    )]
    Deactivate(DeactivateArgs),
    /// Check the configuration file; every error names its line.
    #[command(
        long_about = "Check the configuration file without touching any device; every error\n\
is printed as FILE:LINE: message.\n\n\
Format (TOML), one [[switch]] table per device:\n\
  path_timeout = 30            # seconds activate waits for a missing path\n\
  [[switch]]\n\
  name = \"sw0\"                 # DM name: /dev/mapper/sw0\n\
  format = \"rfc\"               # or \"upstream\" (table line layout)\n\
  region_size = 16384          # sectors per region\n\
  paths = [\"/dev/mapper/m0\", \"/dev/mapper/m1\"]\n\
  offsets = [0, 0]             # optional: first sector on each path\n\
  sectors = 1048576            # optional: length (default: shortest path)\n\
  mapping_file = \"sw0.map\"     # upload --file format, relative to the file\n\
  # round_robin = true         # ... instead of a mapping file\n\
  userland = [1, 0x2a]         # optional",
        after_help = "Examples:\n  dm-switch check-config\n  dm-switch check-config --config ./switch.toml"
    )]
    CheckConfig(ConfigArg),
    /// Show the switch target's paths, userland words and I/O counters.
    #[command(
        long_about = "Show a switch device's status: its paths and their states, the userland\n\
words, the remapped and unmapped I/O counts (`dmsetup status`), and the I/O\n\
the kernel sent to each path since the table was loaded (read over netlink):\n\
bios and sectors routed, the path's share of the bios, reads and writes (bios\n\
and MiB), discards and flushes (an empty flush goes once to each device, on\n\
the first path over it). Counts follow /proc/diskstats: write-zeroes\n\
count as writes.\n\n\
--watch SECONDS shows rates per second over each interval instead: a table\n\
redrawn in place on a terminal, one JSON object per line otherwise\n\
({\"time\", \"interval\", \"name\", \"paths\": [...]}), until interrupted or\n\
--count intervals have passed.",
        after_help = "Examples:\n  dm-switch status sw0\n  dm-switch status /dev/dm-3 --json\n  \
dm-switch status sw0 --watch 1\n  dm-switch status sw0 --watch 5 --count 12 > rates.jsonl"
    )]
    Status(StatusArgs),
}

/// Where the entries come from: exactly one.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct SourceArgs {
    /// Read a mapping file (`-` for standard input).
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Map region r to path r mod (number of paths).
    #[arg(long)]
    pub round_robin: bool,
    /// Upstream `set_region_mappings` tokens, e.g. '0:0 :1 R2,10'.
    #[arg(long, value_name = "STRING")]
    pub region_mappings: Option<String>,
    /// Free kernel chunk N (regions N*8192 ..) by sending page_count 0.
    #[arg(long, value_name = "N")]
    pub free_chunk: Option<u32>,
}

/// `upload` arguments.
#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The switch device: NAME, /dev/mapper/NAME, /dev/dm-N or MAJOR:MINOR.
    #[arg(value_name = "DEV")]
    pub dev: String,
    /// The mapping source.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Regions in the table (default: from the device's table).
    #[arg(long, value_name = "N")]
    pub page_total: Option<u32>,
    /// Bits per entry, 1..=32 (default: smallest that fits the paths).
    #[arg(long, value_name = "B")]
    pub pte_bits: Option<u8>,
    /// Two opaque words shown by `dmsetup status` (decimal or 0x-hex).
    #[arg(long, value_name = "A,B", value_parser = parse_userland)]
    pub userland: Option<[u32; 2]>,
    /// Plan and encode every window, but send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Read the live table back first and send only the windows that change
    /// it (everything if its page_total, paths or pte_bits differ).
    #[arg(long)]
    pub diff: bool,
    /// Print nothing on success.
    #[arg(long, short)]
    pub quiet: bool,
}

/// What `dump` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DumpFormat {
    /// A mapping file (`upload --file` reads it back).
    File,
    /// Upstream `set_region_mappings` tokens.
    RegionMappings,
    /// JSON.
    Json,
}

/// `dump` arguments.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The switch device: NAME, /dev/mapper/NAME, /dev/dm-N or MAJOR:MINOR.
    #[arg(value_name = "DEV")]
    pub dev: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = DumpFormat::File)]
    pub format: DumpFormat,
}

/// The configuration file option.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The configuration file.
    #[arg(long, value_name = "FILE", default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,
}

/// Which configured switches: NAME... or --all.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Selection {
    /// Switch names from the configuration.
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// Every switch in the configuration.
    #[arg(long)]
    pub all: bool,
}

/// `activate` arguments.
#[derive(Debug, Args)]
pub struct ActivateArgs {
    /// Which switches.
    #[command(flatten)]
    pub which: Selection,
    /// The configuration file.
    #[command(flatten)]
    pub config: ConfigArg,
}

/// `deactivate` arguments.
#[derive(Debug, Args)]
pub struct DeactivateArgs {
    /// Which switches.
    #[command(flatten)]
    pub which: Selection,
    /// Remove open devices too: I/O fails from now on, removal when closed.
    #[arg(long)]
    pub force: bool,
    /// The configuration file.
    #[command(flatten)]
    pub config: ConfigArg,
}

/// `status` arguments.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The switch device: NAME, /dev/mapper/NAME, /dev/dm-N or MAJOR:MINOR.
    #[arg(value_name = "DEV")]
    pub dev: String,
    /// Print JSON instead of text.
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,
    /// Show per-path rates every SECONDS (0.1 to 86400).
    #[arg(long, value_name = "SECONDS", value_parser = parse_interval)]
    pub watch: Option<f64>,
    /// With --watch: stop after N intervals.
    #[arg(long, value_name = "N", requires = "watch", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

/// Parses `--watch SECONDS`: a number from 0.1 to 86400.
pub fn parse_interval(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(0.1..=86400.0).contains(&v) {
        return Err(format!("{s} seconds is out of range (0.1 to 86400)"));
    }
    Ok(v)
}

/// Parses a u32 in decimal or `0x` hexadecimal.
pub fn parse_u32(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) if !h.is_empty() && h.bytes().all(|c| c.is_ascii_hexdigit()) => {
            u32::from_str_radix(h, 16)
        }
        Some(_) => return Err(format!("`{s}` is not a hexadecimal number")),
        None if !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()) => t.parse(),
        None => return Err(format!("`{s}` is not a number (decimal or 0x-hex)")),
    };
    r.map_err(|_| format!("`{s}` does not fit in 32 bits"))
}

/// Parses `--userland A,B`.
pub fn parse_userland(s: &str) -> Result<[u32; 2], String> {
    let Some((a, b)) = s.split_once(',') else {
        return Err("expected two words A,B".into());
    };
    Ok([parse_u32(a)?, parse_u32(b)?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn userland_words() {
        assert_eq!(parse_userland("1,0x2a").unwrap(), [1, 42]);
        assert_eq!(
            parse_userland("0XFFFFFFFF, 4294967295").unwrap(),
            [u32::MAX, u32::MAX]
        );
        assert!(parse_userland("1").unwrap_err().contains("A,B"));
        assert!(parse_userland("1,2,3")
            .unwrap_err()
            .contains("not a number"));
        assert!(parse_userland("4294967296,0")
            .unwrap_err()
            .contains("32 bits"));
        assert!(parse_userland("0x,1").unwrap_err().contains("hexadecimal"));
        assert!(parse_userland("-1,1").is_err());
    }

    #[test]
    fn watch_arguments() {
        assert_eq!(parse_interval("0.5"), Ok(0.5));
        assert!(parse_interval("0").unwrap_err().contains("out of range"));
        assert!(parse_interval("NaN").unwrap_err().contains("out of range"));
        assert!(parse_interval("1s").unwrap_err().contains("not a number"));
        let c = Cli::try_parse_from(["dm-switch", "status", "sw0", "--watch", "2", "--count", "3"])
            .unwrap();
        let Command::Status(s) = c.command else {
            panic!("not status")
        };
        assert_eq!((s.watch, s.count), (Some(2.0), Some(3)));
        assert!(Cli::try_parse_from(["dm-switch", "status", "sw0", "--count", "3"]).is_err());
        assert!(
            Cli::try_parse_from(["dm-switch", "status", "sw0", "--watch", "1", "--json"]).is_err()
        );
        assert!(Cli::try_parse_from([
            "dm-switch",
            "status",
            "sw0",
            "--watch",
            "1",
            "--count",
            "0"
        ])
        .is_err());
    }

    #[test]
    fn exactly_one_source() {
        let ok = Cli::try_parse_from(["dm-switch", "upload", "sw0", "--round-robin"]);
        assert!(ok.is_ok());
        let none = Cli::try_parse_from(["dm-switch", "upload", "sw0"]);
        assert!(none.is_err());
        let two = Cli::try_parse_from([
            "dm-switch",
            "upload",
            "sw0",
            "--round-robin",
            "--free-chunk",
            "1",
        ]);
        assert!(two.is_err());
        let c = Cli::try_parse_from([
            "dm-switch",
            "upload",
            "sw0",
            "--file",
            "-",
            "--page-total",
            "10",
            "--pte-bits",
            "4",
            "--userland",
            "1,2",
            "--dry-run",
        ])
        .unwrap();
        let Command::Upload(u) = c.command else {
            panic!("not upload")
        };
        assert_eq!(u.source.file, Some(PathBuf::from("-")));
        assert_eq!(u.page_total, Some(10));
        assert_eq!(u.pte_bits, Some(4));
        assert_eq!(u.userland, Some([1, 2]));
        assert!(u.dry_run);
    }
}
