//! Per-path I/O statistics (`dm-switch status`): the counters the kernel
//! keeps for each path of a switch target (`DM_SWITCH_CMD_DUMP_PATH_STATS`),
//! their rates between two reads, and their renderings (a table, JSON, one
//! JSON line per `--watch` interval).
//!
//! Counts are the block layer's stat groups (`/proc/diskstats`): reads,
//! writes (write-zeroes included), discards, and flushes (an empty flush
//! goes once to each device, on the first path over it). A path's *share*
//! is its part of the bios that were routed (reads, writes and discards: a
//! flush is not routed by the table).

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{json, Value};

use crate::wire::PathStats;

const READ: usize = 0;
const WRITE: usize = 1;
const DISCARD: usize = 2;
const FLUSH: usize = 3;

/// Bios that were routed (reads, writes, discards) of one record.
fn routed(s: &PathStats) -> u64 {
    s.ios[READ] + s.ios[WRITE] + s.ios[DISCARD]
}

/// Sectors that were routed of one record.
fn routed_sectors(s: &PathStats) -> u64 {
    s.sectors[READ] + s.sectors[WRITE] + s.sectors[DISCARD]
}

/// One path's counters as shown: totals, or rates per second.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PathRow {
    /// Index in the table line.
    pub path: u32,
    /// Device (major:minor), from `dmsetup status`.
    pub dev: String,
    /// Bios routed: reads + writes + discards.
    pub bios: f64,
    /// Sectors routed (512 bytes).
    pub sectors: f64,
    /// Part of all routed bios, 0..=1 (0 when nothing was routed).
    pub share: f64,
    /// Read bios.
    pub reads: f64,
    /// Sectors read.
    pub read_sectors: f64,
    /// Write bios (write-zeroes included).
    pub writes: f64,
    /// Sectors written.
    pub write_sectors: f64,
    /// Discard bios.
    pub discards: f64,
    /// Sectors discarded.
    pub discard_sectors: f64,
    /// Empty flushes.
    pub flushes: f64,
}

/// Whether `now` cannot follow `before`: another path count, or a counter
/// that went down. A reloaded table counts from zero again.
pub fn restarted(now: &[PathStats], before: &[PathStats]) -> bool {
    now.len() != before.len()
        || now.iter().zip(before).any(|(n, b)| {
            n.ios.iter().zip(&b.ios).any(|(x, y)| x < y)
                || n.sectors.iter().zip(&b.sectors).any(|(x, y)| x < y)
        })
}

/// The rows of `now`, as totals (`before` = `None`) or as rates per second
/// over `seconds` since `before`. If the counters [`restarted`] in between,
/// the rates are from zero. `devs[i]` names path `i`; a path with no name
/// is shown as `?`.
pub fn rows(
    now: &[PathStats],
    before: Option<&[PathStats]>,
    seconds: f64,
    devs: &[String],
) -> Vec<PathRow> {
    let before = before.filter(|b| !restarted(now, b));
    let deltas: Vec<PathStats> = now
        .iter()
        .zip(0..)
        .map(|(n, i)| {
            let Some(b) = before.and_then(|b| b.get(i)) else {
                return *n;
            };
            PathStats {
                path: n.path,
                ios: std::array::from_fn(|g| n.ios[g] - b.ios[g]),
                sectors: std::array::from_fn(|g| n.sectors[g] - b.sectors[g]),
            }
        })
        .collect();
    let per = if seconds > 0.0 { 1.0 / seconds } else { 1.0 };
    let total: u64 = deltas.iter().map(routed).sum();
    deltas
        .iter()
        .map(|d| {
            let f = |v: u64| v as f64 * per;
            PathRow {
                path: d.path,
                dev: devs
                    .get(d.path as usize)
                    .cloned()
                    .unwrap_or_else(|| "?".into()),
                bios: f(routed(d)),
                sectors: f(routed_sectors(d)),
                share: if total == 0 {
                    0.0
                } else {
                    routed(d) as f64 / total as f64
                },
                reads: f(d.ios[READ]),
                read_sectors: f(d.sectors[READ]),
                writes: f(d.ios[WRITE]),
                write_sectors: f(d.sectors[WRITE]),
                discards: f(d.ios[DISCARD]),
                discard_sectors: f(d.sectors[DISCARD]),
                flushes: f(d.ios[FLUSH]),
            }
        })
        .collect()
}

/// Sectors as MiB.
fn mib(sectors: f64) -> f64 {
    sectors / 2048.0
}

/// A table of `rows`, one line per path: totals (`rate` false) or rates per
/// second (`rate` true).
pub fn table(rows: &[PathRow], rate: bool) -> String {
    let (n, m) = if rate { ("/s", "MiB/s") } else { ("", "MiB") };
    let mut s = format!(
        "{:>5} {:<10} {:>12} {:>14} {:>6} {:>12} {:>10} {:>12} {:>10} {:>10} {:>9}\n",
        "PATH",
        "DEVICE",
        format!("BIOS{n}"),
        format!("SECTORS{n}"),
        "SHARE",
        format!("READS{n}"),
        format!("READ {m}"),
        format!("WRITES{n}"),
        format!("WRITE {m}"),
        format!("DISCARDS{n}"),
        format!("FLUSHES{n}"),
    );
    let prec = usize::from(rate);
    for r in rows {
        let _ = writeln!(
            s,
            "{:>5} {:<10} {:>12.prec$} {:>14.prec$} {:>5.1}% {:>12.prec$} {:>10.1} {:>12.prec$} {:>10.1} {:>10.prec$} {:>9.prec$}",
            r.path,
            r.dev,
            r.bios,
            r.sectors,
            r.share * 100.0,
            r.reads,
            mib(r.read_sectors),
            r.writes,
            mib(r.write_sectors),
            r.discards,
            r.flushes,
        );
    }
    s
}

/// The rows as a JSON array: rates as numbers with a fraction, totals
/// (`rate` false) as whole numbers.
pub fn json_rows(rows: &[PathRow], rate: bool) -> Value {
    let mut v = serde_json::to_value(rows).unwrap_or(Value::Null);
    if !rate {
        for row in v.as_array_mut().into_iter().flatten() {
            for (key, x) in row.as_object_mut().into_iter().flatten() {
                if key != "share" {
                    if let Some(f) = x.as_f64() {
                        *x = json!(f as u64);
                    }
                }
            }
        }
    }
    v
}

/// One `--watch` line for a pipe: `{"time", "interval", "name", "paths"}`,
/// the paths' rates per second over the interval.
pub fn watch_line(name: &str, unix_time: f64, interval: f64, rows: &[PathRow]) -> String {
    json!({
        "time": unix_time,
        "interval": interval,
        "name": name,
        "paths": json_rows(rows, true),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(path: u32, ios: [u64; 4], sectors: [u64; 4]) -> PathStats {
        PathStats { path, ios, sectors }
    }

    #[test]
    fn totals_and_shares() {
        let now = [
            rec(0, [3, 1, 0, 2], [24, 8, 0, 0]),
            rec(1, [0, 0, 4, 2], [0, 0, 64, 0]),
        ];
        let devs = vec!["7:0".to_string(), "7:1".to_string()];
        let r = rows(&now, None, 0.0, &devs);
        assert_eq!(r[0].bios, 4.0);
        assert_eq!(r[0].sectors, 32.0);
        assert_eq!(r[0].share, 0.5);
        assert_eq!(r[1].discards, 4.0);
        assert_eq!(r[1].discard_sectors, 64.0);
        assert_eq!(r[1].flushes, 2.0);
        assert_eq!(r[1].dev, "7:1");
        let j = json_rows(&r, false);
        assert_eq!(j[0]["bios"], json!(4));
        assert!(j[0]["bios"].is_u64() && j[0]["share"].is_f64());
        let t = table(&r, false);
        assert_eq!(t.lines().count(), 3);
        assert!(t.lines().nth(1).unwrap().contains(" 50.0%"));
    }

    /// What `--watch` prints into a pipe parses back to the rates.
    #[test]
    fn watch_lines_parse_to_rates() {
        let devs = vec!["253:1".to_string(), "253:2".to_string()];
        let t0 = [
            rec(0, [10, 10, 0, 1], [80, 80, 0, 0]),
            rec(1, [0, 0, 0, 1], [0, 0, 0, 0]),
        ];
        let t1 = [
            rec(0, [30, 10, 0, 3], [240, 80, 0, 0]),
            rec(1, [0, 60, 0, 3], [0, 480, 0, 0]),
        ];
        let line = watch_line("sw0", 1000.5, 2.0, &rows(&t1, Some(&t0), 2.0, &devs));
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["name"], "sw0");
        assert_eq!(v["interval"], 2.0);
        let p = v["paths"].as_array().unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0]["reads"], 10.0);
        assert_eq!(p[0]["read_sectors"], 80.0);
        assert_eq!(p[0]["flushes"], 1.0);
        assert_eq!(p[1]["writes"], 30.0);
        assert_eq!(p[1]["dev"], "253:2");
        assert_eq!(p[0]["share"], 0.25);
        assert_eq!(p[1]["share"], 0.75);
    }

    /// A reloaded table's counters start from zero: rates from zero, for
    /// every path, as soon as one counter went down or the path count
    /// changed.
    #[test]
    fn counters_that_restart_count_from_zero() {
        let before = [
            rec(0, [100, 0, 0, 0], [800, 0, 0, 0]),
            rec(1, [1, 0, 0, 0], [8, 0, 0, 0]),
        ];
        let now = [
            rec(0, [5, 0, 0, 0], [40, 0, 0, 0]),
            rec(1, [3, 0, 0, 0], [24, 0, 0, 0]),
        ];
        assert!(restarted(&now, &before) && !restarted(&before, &before));
        let r = rows(&now, Some(&before), 1.0, &[]);
        assert_eq!((r[0].reads, r[1].reads), (5.0, 3.0));
        assert_eq!(r[0].dev, "?");
        let grown = [before[0], before[1], rec(2, [2, 0, 0, 0], [16, 0, 0, 0])];
        assert!(restarted(&grown, &before));
        let r = rows(&grown, Some(&before), 0.5, &[]);
        assert_eq!((r[0].reads, r[2].reads), (200.0, 4.0));
        assert!(table(&r, true).contains("BIOS/s"));
    }
}
