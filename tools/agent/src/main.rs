//! `dm-switch`: the userland agent of the dm-switch device-mapper target.
//!
//! `upload` sends a region table to the kernel module over generic netlink;
//! `dump` reads the live table back; `status` shows the target's `dmsetup
//! status` and the I/O sent to each path, in words or JSON, or their rates
//! (`--watch`); `activate`, `deactivate` and `check-config`
//! manage the switch devices of a configuration file. Exit codes:
//! 0 success, 1 usage or user error, 2 the kernel refused.

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use dm_switch::activate;
use dm_switch::cli::{
    Cli, Command, ConfigArg, DumpArgs, DumpFormat, Selection, SourceArgs, StatusArgs, UploadArgs,
};
use dm_switch::config::{self, Config, SwitchSpec};
use dm_switch::device::{self, Device};
use dm_switch::iostats;
use dm_switch::mapping::{self, Mapping, PackedTable};
use dm_switch::netlink;
use dm_switch::plan::{Params, Source, UploadPlan};
use dm_switch::readback;
use dm_switch::transfer::{self, KernelRefusal};
use dm_switch::wire;

/// Uploads at least this large get a progress bar (on a terminal).
const PROGRESS_MIN_REGIONS: u64 = 1 << 20;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        Command::Upload(a) => upload(a),
        Command::Dump(a) => dump(a),
        Command::Status(a) => status(a),
        Command::Activate(a) => for_each_switch(&a.config, &a.which, "activate", |s, c| {
            activate::activate(s, c.path_timeout)
        }),
        Command::Deactivate(a) => for_each_switch(&a.config, &a.which, "deactivate", |s, _| {
            activate::deactivate(&s.name, a.force)
        }),
        Command::CheckConfig(a) => check_config(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dm-switch: {e:#}");
            if e.is::<KernelRefusal>() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// A resolved device and what to send to it.
struct Prepared {
    dev: Device,
    plan: UploadPlan,
}

fn prepare_upload(a: &UploadArgs) -> Result<Prepared> {
    let dev = device::resolve(&a.dev)?;
    let table = device::parse_table(&device::live_targets(&dev, device::Query::Table)?)
        .with_context(|| format!("device {}", dev.name))?;
    let params = Params::resolve(&table, a.page_total, a.pte_bits)
        .with_context(|| format!("device {}", dev.name))?;
    let header = params.header(&dev, a.userland.unwrap_or([0, 0]));
    let plan = match a.source.free_chunk {
        Some(chunk) => UploadPlan::free(header, chunk)?,
        None => {
            let src = build_mapping(&a.source, &params, table.dev_count)?;
            UploadPlan::for_source(header, src, a.pte_bits.is_some(), a.userland.is_some())?
        }
    };
    Ok(Prepared { dev, plan })
}

fn build_mapping(src: &SourceArgs, params: &Params, dev_count: u32) -> Result<Source> {
    let (page_total, pte_bits) = (params.page_total, params.pte_bits);
    if src.round_robin {
        return Ok(Source::entries(Mapping::RoundRobin { dev_count }));
    }
    if let Some(spec) = &src.region_mappings {
        let mut t =
            PackedTable::new(u64::from(page_total), pte_bits).map_err(anyhow::Error::msg)?;
        mapping::apply_region_mappings(spec, &mut t, dev_count).map_err(anyhow::Error::msg)?;
        return Ok(Source::entries(Mapping::Table(t)));
    }
    let Some(path) = &src.file else {
        bail!("no mapping source given");
    };
    let file = if path.as_os_str() == "-" {
        let stdin = io::stdin().lock();
        mapping::read_mapping_file(stdin, "<stdin>", page_total, dev_count, pte_bits)?
    } else {
        mapping::open_mapping_file(path, page_total, dev_count, pte_bits)?
    };
    Ok(Source::file(file))
}

fn plural(n: u64, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

fn describe(p: &Prepared) -> String {
    let h = &p.plan.header;
    format!(
        "{} ({}:{}): {}, page_total {}, pte_bits {}, userland {:#010x} {:#010x}",
        p.dev.name,
        p.dev.major,
        p.dev.minor,
        plural(u64::from(h.dev_count), "path"),
        h.page_total,
        h.pte_bits,
        h.userland[0],
        h.userland[1]
    )
}

fn dump(a: DumpArgs) -> Result<()> {
    let dev = device::resolve(&a.dev)?;
    let img = transfer::read_back(&mut netlink::Channel::open()?, &dev)?;
    let text = match a.format {
        DumpFormat::File => {
            img.to_mapping_file(&format!("{} ({}:{})", dev.name, dev.major, dev.minor))
        }
        DumpFormat::RegionMappings => {
            let (tokens, unallocated) = img.to_region_mappings();
            if unallocated > 0 {
                eprintln!(
                    "dm-switch: {} in unallocated chunks cannot be expressed as set_region_mappings",
                    plural(unallocated, "region")
                );
            }
            tokens + "\n"
        }
        DumpFormat::Json => {
            let mut v = img.to_json();
            v["name"] = dev.name.clone().into();
            v["major"] = dev.major.into();
            v["minor"] = dev.minor.into();
            serde_json::to_string_pretty(&v)? + "\n"
        }
    };
    io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("cannot write output")?;
    Ok(())
}

fn upload(a: UploadArgs) -> Result<()> {
    let mut p = prepare_upload(&a)?;
    let mut out = io::stdout().lock();
    let mut ch = None;
    let planned = p.plan.windows.len();
    if a.diff {
        let c = ch.insert(netlink::Channel::open()?);
        match readback::changed_windows(&p.plan, &transfer::read_back(c, &p.dev)?) {
            Some(changed) => p.plan.windows = changed,
            None if !a.quiet => writeln!(
                out,
                "diff: the live table's page_total, paths or pte_bits differ: sending everything"
            )
            .context("cannot write output")?,
            None => {}
        }
    }
    let regions = p.plan.regions();
    if a.diff && p.plan.windows.is_empty() {
        if !a.quiet {
            writeln!(
                out,
                "{} ({}:{}): the live table already matches; nothing sent",
                p.dev.name, p.dev.major, p.dev.minor
            )
            .context("cannot write output")?;
        }
        return Ok(());
    }
    if a.dry_run {
        let mut text = format!("dry run: {}\n", describe(&p));
        for (i, w) in p.plan.windows.iter().enumerate() {
            let bytes = p.plan.payload(w)?.len();
            text += &format!(
                "window {i}: offset {} count {} ({} bytes)\n",
                w.offset, w.count, bytes
            );
        }
        text += &format!(
            "would send {} ({}); nothing sent\n",
            plural(p.plan.windows.len() as u64, "window"),
            plural(regions, "region")
        );
        if !a.quiet {
            out.write_all(text.as_bytes())
                .context("cannot write output")?;
        }
        return Ok(());
    }

    let mut ch = match ch {
        Some(c) => c,
        None => netlink::Channel::open()?,
    };
    let bar = (!a.quiet && regions >= PROGRESS_MIN_REGIONS && out.is_terminal()).then(|| {
        let bar = ProgressBar::with_draw_target(Some(regions), ProgressDrawTarget::stdout());
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} regions {per_sec} eta {eta}")
        {
            bar.set_style(style);
        }
        bar
    });
    let start = Instant::now();
    let sent = transfer::send_windows(&mut ch, &p.plan, |w| {
        if let Some(b) = &bar {
            b.inc(u64::from(w.count));
        }
    });
    if let Err(e) = sent {
        if let Some(b) = &bar {
            b.abandon();
        }
        return Err(e);
    }
    let secs = start.elapsed().as_secs_f64();
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if a.quiet {
        return Ok(());
    }
    let line = match a.source.free_chunk {
        Some(chunk) => {
            let first = u64::from(chunk) * u64::from(wire::CHUNK_PTE_COUNT);
            let last = (first + u64::from(wire::CHUNK_PTE_COUNT) - 1)
                .min(u64::from(p.plan.header.page_total) - 1);
            format!(
                "freed chunk {chunk} (regions {first}..={last}) of {} ({}:{}) in {secs:.3} s\n",
                p.dev.name, p.dev.major, p.dev.minor
            )
        }
        None => format!(
            "uploaded {} to {} ({}:{}) in {}{}, {secs:.3} s, {:.0} regions/s\n",
            plural(regions, "region"),
            p.dev.name,
            p.dev.major,
            p.dev.minor,
            plural(p.plan.windows.len() as u64, "window"),
            if a.diff {
                format!(" of {planned} (the others already matched)")
            } else {
                String::new()
            },
            regions as f64 / secs.max(1e-9)
        ),
    };
    out.write_all(line.as_bytes())
        .context("cannot write output")?;
    Ok(())
}

fn load_config(c: &ConfigArg) -> Result<Config> {
    config::load(&c.config).map_err(|errors| {
        for e in &errors {
            eprintln!("{e}");
        }
        anyhow::anyhow!(
            "{} has {}",
            c.config.display(),
            plural(errors.len() as u64, "error")
        )
    })
}

fn check_config(c: &ConfigArg) -> Result<()> {
    let cfg = load_config(c)?;
    println!(
        "{}: {} ({}), path_timeout {} s",
        c.config.display(),
        plural(cfg.switches.len() as u64, "switch device"),
        cfg.switches
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        cfg.path_timeout.as_secs()
    );
    Ok(())
}

/// Runs `op` on each selected switch of the configuration, printing its
/// line (or its error) and going on; fails if any failed (a kernel refusal
/// among them makes it one).
fn for_each_switch(
    c: &ConfigArg,
    which: &Selection,
    verb: &str,
    op: impl Fn(&SwitchSpec, &Config) -> Result<String>,
) -> Result<()> {
    let cfg = load_config(c)?;
    let chosen = cfg.select(&which.names).map_err(anyhow::Error::msg)?;
    let mut failed = Vec::new();
    let mut refused = false;
    for s in chosen {
        match op(s, &cfg) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("dm-switch: {}: {e:#}", s.name);
                refused |= e.is::<KernelRefusal>();
                failed.push(s.name.as_str());
            }
        }
    }
    match (failed.is_empty(), refused) {
        (true, _) => Ok(()),
        (false, false) => bail!("could not {verb} {}", failed.join(", ")),
        (false, true) => {
            Err(KernelRefusal(format!("could not {verb} {}", failed.join(", "))).into())
        }
    }
}

/// The switch status of `dev` (`dmsetup status`) and its paths' names.
fn switch_status(dev: &Device) -> Result<(device::SwitchStatus, Vec<String>)> {
    let st = device::parse_status(&device::live_targets(dev, device::Query::Status)?)
        .with_context(|| format!("device {}", dev.name))?;
    let devs = st.paths.iter().map(|p| p.dev.clone()).collect();
    Ok((st, devs))
}

fn status(a: StatusArgs) -> Result<()> {
    let dev = device::resolve(&a.dev)?;
    let (st, devs) = switch_status(&dev)?;
    if let Some(interval) = a.watch {
        return watch(
            &mut netlink::Channel::open()?,
            &dev,
            devs,
            interval,
            a.count,
        );
    }
    // Without the per-path counters (a module without the command, no
    // permission) the status is still worth printing.
    let rows = netlink::Channel::open()
        .and_then(|mut ch| transfer::read_path_stats(&mut ch, &dev))
        .map(|stats| iostats::rows(&stats, None, 0.0, &devs))
        .map_err(|e| format!("{e:#}"));
    if let Err(e) = &rows {
        eprintln!("dm-switch: per-path statistics unavailable: {e}");
    }
    let text = if a.json {
        let mut paths = match &rows {
            Ok(rows) => iostats::json_rows(rows, false),
            Err(_) => serde_json::json!(st.paths),
        };
        for (p, s) in paths.as_array_mut().into_iter().flatten().zip(&st.paths) {
            p["state"] = s.state.clone().into();
        }
        let mut v = serde_json::json!({
            "name": dev.name,
            "major": dev.major,
            "minor": dev.minor,
            "dev_count": st.dev_count,
            "paths": paths,
            "userland": st.userland,
            "remapped": st.remapped,
            "unmapped": st.unmapped,
        });
        if let Err(e) = &rows {
            v["path_stats_error"] = e.clone().into();
        }
        serde_json::to_string_pretty(&v)? + "\n"
    } else {
        let mut s = format!(
            "{} ({}:{}): switch, {}\n",
            dev.name,
            dev.major,
            dev.minor,
            plural(u64::from(st.dev_count), "path")
        );
        for (i, p) in st.paths.iter().enumerate() {
            s += &format!("  path {i}: {} {}\n", p.dev, p.state);
        }
        s += &format!(
            "userland: {:#010x} {:#010x}\nremapped I/Os: {}\nunmapped I/Os: {}\n",
            st.userland[0], st.userland[1], st.remapped, st.unmapped
        );
        match &rows {
            Ok(rows) => {
                s + "I/O sent to each path since the table was loaded:\n"
                    + &iostats::table(rows, false)
            }
            Err(_) => s + "I/O sent to each path: unavailable\n",
        }
    };
    io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("cannot write output")?;
    Ok(())
}

/// `status --watch`: per-path rates every `interval` seconds, a table
/// redrawn on a terminal or a JSON line each into a pipe; stops after
/// `count` intervals, or when the reader of the pipe goes away. `devs`
/// names the paths (read again after a reload).
fn watch(
    ch: &mut netlink::Channel,
    dev: &Device,
    mut devs: Vec<String>,
    interval: f64,
    count: Option<u64>,
) -> Result<()> {
    let terminal = io::stdout().is_terminal();
    let mut before = transfer::read_path_stats(ch, dev)?;
    let mut since = Instant::now();
    for n in 1.. {
        std::thread::sleep(Duration::from_secs_f64(interval));
        let now = transfer::read_path_stats(ch, dev)?;
        let at = Instant::now();
        let seconds = at.duration_since(since).as_secs_f64();
        if iostats::restarted(&now, &before) {
            // The table was reloaded: its paths may have changed.
            devs = switch_status(dev)?.1;
        }
        let rows = iostats::rows(&now, Some(&before), seconds, &devs);
        let text = if terminal {
            format!(
                "\x1b[H\x1b[2J{} ({}:{}): per-path rates over {seconds:.1} s (Ctrl-C stops)\n{}",
                dev.name,
                dev.major,
                dev.minor,
                iostats::table(&rows, true)
            )
        } else {
            let unix = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            iostats::watch_line(&dev.name, unix, seconds, &rows) + "\n"
        };
        let mut out = io::stdout().lock();
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e).context("cannot write output"),
        }
        if count == Some(n) {
            break;
        }
        (before, since) = (now, at);
    }
    Ok(())
}
