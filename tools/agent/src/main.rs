//! `dm-switch`: the userland agent of the dm-switch device-mapper target.
//!
//! `upload` sends a region table to the kernel module over generic netlink;
//! `dump` reads the live table back; `status` shows the target's `dmsetup
//! status` in words or JSON. Exit codes:
//! 0 success, 1 usage or user error, 2 the kernel refused.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use dm_switch::cli::{Cli, Command, DumpArgs, DumpFormat, SourceArgs, StatusArgs, UploadArgs};
use dm_switch::device::{self, Device};
use dm_switch::mapping::{self, Mapping, PackedTable};
use dm_switch::netlink::{self, Outcome};
use dm_switch::plan::{Params, UploadPlan, Window};
use dm_switch::readback::{self, TableImage};
use dm_switch::wire;

/// Uploads at least this large get a progress bar (on a terminal).
const PROGRESS_MIN_REGIONS: u64 = 1 << 20;

/// The kernel (module or genetlink core) said no: exit code 2.
#[derive(Debug)]
struct KernelRefusal(String);

impl fmt::Display for KernelRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KernelRefusal {}

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
    let mut params = Params::resolve(&table, a.page_total, a.pte_bits)
        .with_context(|| format!("device {}", dev.name))?;
    let mut header = wire::PgTableHeader {
        userland: a.userland.unwrap_or([0, 0]),
        dev_major: dev.major,
        dev_minor: dev.minor,
        page_total: params.page_total,
        page_offset: 0,
        page_count: 0,
        dev_count: params.dev_count,
        pte_bits: params.pte_bits,
    };
    let plan = match a.source.free_chunk {
        Some(chunk) => UploadPlan::free(header, chunk)?,
        None => {
            let mut src = build_mapping(
                &a.source,
                params.page_total,
                table.dev_count,
                params.pte_bits,
            )?;
            if !src.unallocated.is_empty() && 32 % u32::from(params.pte_bits) != 0 {
                // Chunk frees need windows aligned to chunk starts.
                if a.pte_bits.is_some() {
                    bail!(
                        "unallocated chunks need a pte_bits that divides 32 (--pte-bits {} does not)",
                        params.pte_bits
                    );
                }
                params.pte_bits = params.pte_bits.next_power_of_two();
                src.mapping = src.mapping.repacked(params.pte_bits)?;
            }
            header.pte_bits = params.pte_bits;
            if a.userland.is_none() {
                header.userland = src.userland.unwrap_or([0, 0]);
            }
            UploadPlan::full(header, src.mapping).with_frees(&src.unallocated)
        }
    };
    Ok(Prepared { dev, plan })
}

/// What an upload's entries come from, and what else the source sets.
struct Source {
    mapping: Mapping,
    /// Chunks to leave unallocated (mapping files only).
    unallocated: Vec<u32>,
    /// Userland words (mapping files only).
    userland: Option<[u32; 2]>,
}

fn build_mapping(
    src: &SourceArgs,
    page_total: u32,
    dev_count: u32,
    pte_bits: u8,
) -> Result<Source> {
    let plain = |mapping| Source {
        mapping,
        unallocated: Vec::new(),
        userland: None,
    };
    if src.round_robin {
        return Ok(plain(Mapping::RoundRobin { dev_count }));
    }
    if let Some(spec) = &src.region_mappings {
        let mut t =
            PackedTable::new(u64::from(page_total), pte_bits).map_err(anyhow::Error::msg)?;
        mapping::apply_region_mappings(spec, &mut t, dev_count).map_err(anyhow::Error::msg)?;
        return Ok(plain(Mapping::Table(t)));
    }
    let Some(path) = &src.file else {
        bail!("no mapping source given");
    };
    let file = if path.as_os_str() == "-" {
        let stdin = io::stdin().lock();
        mapping::read_mapping_file(stdin, "<stdin>", page_total, dev_count, pte_bits)?
    } else {
        let name = path.display().to_string();
        let f = File::open(path).with_context(|| format!("cannot open mapping file {name}"))?;
        mapping::read_mapping_file(BufReader::new(f), &name, page_total, dev_count, pte_bits)?
    };
    Ok(Source {
        mapping: Mapping::Table(file.table),
        unallocated: file.unallocated,
        userland: file.userland,
    })
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

fn strerror(errno: i32) -> String {
    let s = io::Error::from_raw_os_error(errno).to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn refusal(w: &Window, reason: &str, errno: i32) -> anyhow::Error {
    let hint = match errno {
        libc::EPERM | libc::EACCES => "; run as root (needs CAP_SYS_ADMIN and CAP_NET_ADMIN)",
        libc::EOPNOTSUPP => "; does the loaded dm_switch module speak this ABI?",
        _ => "",
    };
    KernelRefusal(format!(
        "kernel refused window at region {}: {reason} ({}){hint}",
        w.offset,
        netlink::errno_name(errno)
    ))
    .into()
}

/// Reads the live table of `dev` back.
fn read_back(ch: &mut netlink::Channel, dev: &Device) -> Result<TableImage> {
    match ch.dump(dev.major, dev.minor)? {
        Ok(windows) => TableImage::from_windows(&windows)
            .map_err(|e| anyhow::anyhow!("{} ({}:{}): {e}", dev.name, dev.major, dev.minor)),
        Err((errno, text)) => Err(KernelRefusal(format!(
            "kernel refused to read {} back: {} ({})",
            dev.name,
            text.unwrap_or_else(|| strerror(errno)),
            netlink::errno_name(errno)
        ))
        .into()),
    }
}

fn dump(a: DumpArgs) -> Result<()> {
    let dev = device::resolve(&a.dev)?;
    let img = read_back(&mut netlink::Channel::open()?, &dev)?;
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
        match readback::changed_windows(&p.plan, &read_back(c, &p.dev)?) {
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
    for w in &p.plan.windows {
        let payload = p.plan.payload(w)?;
        let outcome = ch.send_window(payload);
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                if let Some(b) = &bar {
                    b.abandon();
                }
                return Err(e.context(format!("window at region {}", w.offset)));
            }
        };
        let refused = match outcome {
            Outcome::Response(r) if r.status == 0 => None,
            Outcome::Response(r) => {
                let errno = i32::try_from(r.status).unwrap_or(i32::MAX);
                let reason = if r.err_str.is_empty() {
                    strerror(errno)
                } else {
                    r.err_str
                };
                Some(refusal(w, &reason, errno))
            }
            Outcome::CoreError(errno, text) => {
                let reason = text.unwrap_or_else(|| strerror(errno));
                Some(refusal(w, &reason, errno))
            }
        };
        if let Some(err) = refused {
            if let Some(b) = &bar {
                b.abandon();
            }
            return Err(err);
        }
        if let Some(b) = &bar {
            b.inc(u64::from(w.count));
        }
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

fn status(a: StatusArgs) -> Result<()> {
    let dev = device::resolve(&a.dev)?;
    let st = device::parse_status(&device::live_targets(&dev, device::Query::Status)?)
        .with_context(|| format!("device {}", dev.name))?;
    let text = if a.json {
        let v = serde_json::json!({
            "name": dev.name,
            "major": dev.major,
            "minor": dev.minor,
            "dev_count": st.dev_count,
            "paths": st.paths,
            "userland": st.userland,
            "remapped": st.remapped,
            "unmapped": st.unmapped,
        });
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
        s
    };
    io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("cannot write output")?;
    Ok(())
}
