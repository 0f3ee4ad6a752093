// SPDX-License-Identifier: GPL-2.0

//! The `switch` target: table-line parsing, `map()`, status and messages.
//!
//! Table lines (sizes in 512-byte sectors):
//! - RFC format: `<dev_count> <page_size> <dev> <offset> [<dev> <offset>]...`;
//!   starts with an empty table (every region unmapped: path 0).
//! - Upstream format: `<num_paths> <region_size> 0 <dev> <offset>...`;
//!   starts round-robin (region r on path r mod num_paths).

use crate::control::registry::{Geometry, Instance, Membership, Registry, Scope, UpdateFail};
use crate::kapi::{
    dm::{
        self, Bio, CtrError, MapResult, StatusKind, TargetCtx, TargetDevice, TargetInfo, TextOut,
    },
    iostat::Group,
    percpu, rcu,
};
use crate::pure::{
    message::{self, MessageError},
    ptbl::{min_pte_bits, PageTable},
    region::RegionSize,
};
use core::{fmt::Write, num::NonZeroU64};
use kernel::{c_str, prelude::*, str::CStr, sync::Arc};

/// Target version, shown by `dmsetup targets` and `/sys/module/dm_switch/version`.
pub(crate) const VERSION: [u32; 3] = [1, 1, 0];

/// Most paths a table can have: the wire format's `dev_count` is 16 bits.
const MAX_PATHS: u32 = 65535;

/// Index of the per-CPU counter of bios to unmapped regions (the remapped
/// ones are the rest of the bios the per-path rows count).
const UNMAPPED: usize = 0;

/// Which table-line format the target was created with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Rfc,
    Upstream,
}

/// One underlying path.
struct Path {
    dev: TargetDevice,
    start: u64,
}

/// A switch target.
pub(crate) struct Switch {
    /// The target's control state and registry entries; dropped first, so
    /// the netlink side stops finding the target before its paths are put.
    membership: Membership,
    paths: KVec<Path>,
    begin: u64,
    region: RegionSize,
    format: Format,
    counters: percpu::Counters<1>,
    /// The path of each empty flush clone: the first path on each distinct
    /// device (a flush flushes the whole device, whatever the offset).
    flush_paths: KVec<u32>,
}

/// Parses a decimal `u64` (digits only).
fn parse_u64(s: &CStr) -> Option<u64> {
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |v, &c| {
        let d = char::from(c).to_digit(10)?;
        v.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// A parsed table line, before any device is opened.
struct TableLine<'a> {
    dev_count: u32,
    region_sectors: NonZeroU64,
    format: Format,
    /// `dev offset` pairs, `2 * dev_count` arguments.
    path_args: &'a [&'a CStr],
}

impl<'a> TableLine<'a> {
    /// Parses either format; tells them apart by the argument count.
    fn parse(args: &'a [&'a CStr]) -> Result<Self, CtrError> {
        let (&count, rest) = args.split_first().ok_or(CtrError::inval(c_str!(
            "Missing arguments: <dev_count> <page_size> <dev> <offset>..."
        )))?;
        let dev_count = parse_u64(count)
            .filter(|&n| n > 0)
            .ok_or(CtrError::inval(c_str!("Invalid device count")))?;
        let dev_count = u32::try_from(dev_count)
            .ok()
            .filter(|&n| n <= MAX_PATHS)
            .ok_or(CtrError::inval(c_str!("Too many devices (at most 65535)")))?;
        let pairs = 2 * dev_count as usize;
        let (size_arg, format, path_args) = match rest {
            [size, paths @ ..] if paths.len() == pairs => (*size, Format::Rfc, paths),
            [size, opt, paths @ ..] if paths.len() == pairs => {
                if parse_u64(opt) != Some(0) {
                    return Err(CtrError::inval(c_str!(
                        "Invalid number of optional arguments (only 0 is supported)"
                    )));
                }
                (*size, Format::Upstream, paths)
            }
            _ => {
                return Err(CtrError::inval(c_str!(
                    "Wrong number of arguments for the device count"
                )))
            }
        };
        let region_sectors = parse_u64(size_arg)
            .and_then(NonZeroU64::new)
            .ok_or(CtrError::inval(c_str!("Invalid page size")))?;
        if region_sectors.get() > u64::from(u32::MAX) {
            return Err(CtrError::inval(c_str!(
                "Page size too large (at most 4294967295 sectors)"
            )));
        }
        Ok(Self {
            dev_count,
            region_sectors,
            format,
            path_args,
        })
    }
}

/// Opens and checks the paths of a table line (`dev offset` pairs).
fn open_paths(
    ti: &mut TargetCtx<'_>,
    pairs: &[&CStr],
    region_bytes: u64,
) -> Result<KVec<Path>, CtrError> {
    let len = ti.info().len;
    let nomem = |_| CtrError::nomem(c_str!("Cannot allocate path list"));
    let mut paths = KVec::with_capacity(pairs.len() / 2, GFP_KERNEL).map_err(nomem)?;
    for pair in pairs.chunks_exact(2) {
        let start = parse_u64(pair[1]).ok_or(CtrError::inval(c_str!("Invalid device offset")))?;
        let dev = ti.get_device(pair[0]).map_err(|err| CtrError {
            err,
            msg: c_str!("Device lookup failed"),
        })?;
        let end = start
            .checked_add(len)
            .ok_or(CtrError::inval(c_str!("Device offset too large")))?;
        if end > dev.sectors() {
            return Err(CtrError::inval(c_str!("Device too small for target")));
        }
        if region_bytes % u64::from(dev.logical_block_size().max(1)) != 0 {
            return Err(CtrError::inval(c_str!(
                "Page size is not a multiple of a device's logical block size"
            )));
        }
        paths.push(Path { dev, start }, GFP_KERNEL).map_err(nomem)?;
    }
    Ok(paths)
}

/// The first path on each distinct device, in path order: where the empty
/// flush clones go (one per device, however many paths share it). Takes
/// paths x distinct devices steps, as DM core's own device lookup in
/// `dm_get_device` already does for the table.
fn flush_paths(paths: &[Path]) -> Result<KVec<u32>, CtrError> {
    let mut firsts = KVec::new();
    for (index, p) in (0u32..).zip(paths) {
        let device = p.dev.identity();
        let seen = firsts.iter().any(|&f: &u32| {
            paths
                .get(f as usize)
                .is_some_and(|q| q.dev.identity() == device)
        });
        if !seen {
            firsts
                .push(index, GFP_KERNEL)
                .map_err(|_| CtrError::nomem(c_str!("Cannot allocate flush list")))?;
        }
    }
    Ok(firsts)
}

/// The table a new target starts with: none (RFC format) or round-robin
/// (upstream format).
fn initial_table(line: &TableLine<'_>, regions: u32) -> Result<Option<KBox<PageTable>>, CtrError> {
    match line.format {
        Format::Rfc => Ok(None),
        Format::Upstream => PageTable::round_robin(line.dev_count, regions)
            .map_err(|_| ())
            .and_then(|t| KBox::new(t, GFP_KERNEL).map_err(|_| ()))
            .map(Some)
            .map_err(|()| CtrError::nomem(c_str!("Cannot allocate region table"))),
    }
}

impl Switch {
    /// The target's control state.
    #[inline(always)]
    fn instance(&self) -> &Instance {
        self.membership.instance()
    }

    /// Offset of `bio` in the target; DM core only maps bios within
    /// `[begin, begin + len)`.
    #[inline(always)]
    fn offset(&self, bio: &Bio<'_>) -> u64 {
        bio.sector().wrapping_sub(self.begin)
    }

    /// Where to cut a discard or write-zeroes bio of `sectors` sectors at
    /// `offset` (DM core splits them only at target boundaries, and
    /// resubmits the rest): the sectors left in its first region, if fewer.
    #[cold]
    #[inline(never)]
    fn clip_to_region(&self, offset: u64, sectors: u32) -> Option<u32> {
        let left = self.region.left(offset);
        // left < sectors <= u32::MAX, so it fits.
        (u64::from(sectors) > left).then_some(left as u32)
    }

    /// The path at `index` (always valid: tables only hold indices <
    /// dev_count).
    #[inline(always)]
    fn path(&self, index: u32) -> &Path {
        match self.paths.get(index as usize) {
            Some(p) => p,
            // Unreachable: every stored index is below dev_count and path 0
            // exists. Fall back to path 0 rather than panic.
            None => &self.paths[0],
        }
    }

    /// Accounts `bio` in stat group `group` of row `index` (the section
    /// `guard` keeps this CPU's), ends the section and sends the bio to
    /// `path`, `offset` sectors in.
    #[inline(always)]
    fn route(
        &self,
        mut bio: Bio<'_>,
        group: Group,
        guard: rcu::ReadGuard,
        index: u32,
        path: &Path,
        offset: u64,
    ) {
        self.instance()
            .path_io
            .account(&guard, index as usize, group, bio.sectors());
        drop(guard);
        // start + offset < start + len <= the path's size, checked in ctr.
        let sector = path.start.wrapping_add(offset);
        bio.remap(&path.dev, sector);
    }

    /// Maps any bio: empty flushes (to the first path of each device),
    /// discards and write-zeroes (cut at region boundaries), every region
    /// size, tables with unallocated chunks (unmapped regions go to path 0).
    #[inline(never)]
    fn map_any(&self, mut bio: Bio<'_>) -> MapResult {
        if bio.is_empty_flush() {
            let index = self.flush_paths.get(bio.clone_index() as usize);
            let index = index.copied().unwrap_or(0);
            // A flush flushes the whole device: the path's start will do.
            let guard = rcu::ReadGuard::new();
            self.route(bio, Group::Flush, guard, index, self.path(index), 0);
            return MapResult::Remapped;
        }
        if bio.is_range_op() {
            if let Some(sectors) = self.clip_to_region(self.offset(&bio), bio.sectors()) {
                bio.accept_partial(sectors);
            }
        }
        let offset = self.offset(&bio);
        let region = self.region.index(offset);
        let guard = rcu::ReadGuard::new();
        let entry = self
            .instance()
            .table
            .read(&guard)
            .and_then(|t| t.lookup(region));
        let index = entry.unwrap_or_else(|| {
            self.counters.slot::<UNMAPPED>().increment();
            0
        });
        let group = bio.stat_group();
        self.route(bio, group, guard, index, self.path(index), offset);
        MapResult::Remapped
    }

    /// Bios routed to mapped regions since the table was loaded: every bio
    /// the paths' rows count but empty flushes, less those to unmapped
    /// regions (which go to path 0 and count in its row too).
    fn remapped(&self) -> u64 {
        let routed =
            self.instance()
                .path_io
                .total_ios(&[Group::Read, Group::Write, Group::Discard]);
        routed.saturating_sub(self.counters.sum(UNMAPPED))
    }

    /// Applies a `set_region_mappings` message to a copy of the table and
    /// publishes it.
    fn set_region_mappings(&self, args: &[&CStr]) -> Result<(), UpdateFail<MessageError>> {
        let g = self.instance().geometry;
        self.instance().update(Scope::Any, |current| {
            let (total, bits) = current.map_or((g.regions, min_pte_bits(g.dev_count)), |t| {
                (t.page_total(), t.pte_bits())
            });
            let mut table = PageTable::derive(current, g.dev_count, total, bits)
                .map_err(|_| MessageError::NoMemory)?;
            let mut editor = table.edit();
            message::apply(&mut editor, args.iter().map(|a| a.as_bytes()))?;
            editor.finish().map_err(|_| MessageError::NoMemory)?;
            KBox::new(table, GFP_KERNEL).map_err(|_| MessageError::NoMemory)
        })
    }

    fn write_status(&self, kind: StatusKind, out: &mut TextOut<'_>) -> core::fmt::Result {
        let g = self.instance().geometry;
        match kind {
            StatusKind::Info => {
                write!(out, "{}", g.dev_count)?;
                for p in self.paths.iter() {
                    write!(out, " {}", p.dev.name())?;
                }
                out.write_str(" 5 ")?;
                for _ in self.paths.iter() {
                    out.write_char('A')?;
                }
                let guard = rcu::ReadGuard::new();
                let [u0, u1] = self
                    .instance()
                    .table
                    .read(&guard)
                    .map_or([0, 0], |t| t.userland());
                drop(guard);
                write!(
                    out,
                    " {u0:08x} {u1:08x} {} {}",
                    self.remapped(),
                    self.counters.sum(UNMAPPED)
                )
            }
            StatusKind::Table => {
                write!(out, "{} {}", g.dev_count, g.region_sectors)?;
                if self.format == Format::Upstream {
                    out.write_str(" 0")?;
                }
                for p in self.paths.iter() {
                    write!(out, " {} {}", p.dev.name(), p.start)?;
                }
                Ok(())
            }
        }
    }
}

#[vtable]
impl dm::Target for Switch {
    type Shared = Arc<Registry>;
    const NAME: &'static CStr = c_str!("switch");
    const VERSION: [u32; 3] = VERSION;
    const NOWAIT: bool = true;

    fn new(
        ti: &mut TargetCtx<'_>,
        args: &[&CStr],
        registry: &Arc<Registry>,
    ) -> Result<Self, CtrError> {
        let info = ti.info();
        let line = TableLine::parse(args)?;
        let regions = u32::try_from(info.len.div_ceil(line.region_sectors.get()))
            .map_err(|_| CtrError::inval(c_str!("Too many regions (at most 4294967295)")))?;
        // region_sectors <= u32::MAX, so the byte count fits.
        let paths = open_paths(ti, line.path_args, line.region_sectors.get() * 512)?;
        let flush_paths = flush_paths(&paths)?;
        ti.set_max_io_len(line.region_sectors.get())
            .map_err(|err| CtrError {
                err,
                msg: c_str!("Cannot set the maximum I/O length"),
            })?;
        let geometry = Geometry {
            dev_count: line.dev_count,
            region_sectors: line.region_sectors.get(),
            len: info.len,
            regions,
        };
        let instance = Instance::new(geometry, initial_table(&line, regions)?)
            .map_err(|_| CtrError::nomem(c_str!("Cannot allocate switch context")))?;
        let counters = percpu::Counters::new()
            .map_err(|_| CtrError::nomem(c_str!("Cannot allocate counters")))?;
        let membership = match registry.claim(info.table, instance) {
            Ok(Some(membership)) => membership,
            Ok(None) => {
                return Err(CtrError::inval(c_str!(
                    "Only one switch target per device is supported"
                )))
            }
            Err(err) => {
                return Err(CtrError {
                    err,
                    msg: c_str!("Cannot register switch target"),
                })
            }
        };
        // An empty flush goes to every device once; discards and
        // write-zeroes arrive once and are split at region boundaries in map().
        // At most dev_count (<= 65535) flush clones.
        ti.set_bio_counts(flush_paths.len() as u32, 1, 1);
        Ok(Self {
            membership,
            paths,
            begin: info.begin,
            region: RegionSize::new(line.region_sectors, info.len.saturating_sub(1)),
            format: line.format,
            counters,
            flush_paths,
        })
    }

    /// The common case, with no call but the one `bio_set_dev()` makes: a
    /// read or write, a region size that needs no divide (a power of two,
    /// or below 2^32 sectors in a target below 2^62), a complete table (every
    /// chunk allocated). Any other bio goes to [`Self::map_any`], called
    /// last, so that no value here lives across a call.
    #[inline]
    fn map(&self, bio: Bio<'_>) -> MapResult {
        let offset = self.offset(&bio);
        let (Some(group), Some(region)) =
            (bio.rw_group(), self.region.index_without_divide(offset))
        else {
            return self.map_any(bio);
        };
        let guard = rcu::ReadGuard::new();
        let entry = self
            .instance()
            .table
            .read(&guard)
            .and_then(|t| t.lookup_complete(region));
        match entry.and_then(|index| Some((index, self.paths.get(index as usize)?))) {
            Some((index, path)) => {
                self.route(bio, group, guard, index, path, offset);
                MapResult::Remapped
            }
            None => {
                drop(guard);
                self.map_any(bio)
            }
        }
    }

    fn status(&self, kind: StatusKind, out: &mut TextOut<'_>) {
        let _ = self.write_status(kind, out);
    }

    fn message(&self, ti: TargetInfo, args: &[&CStr], _out: &mut TextOut<'_>) -> Result {
        let Some((cmd, rest)) = args.split_first() else {
            pr_warn!("{}: empty message\n", ti.devt);
            return Err(EINVAL);
        };
        if !cmd.as_bytes().eq_ignore_ascii_case(b"set_region_mappings") {
            pr_warn!("{}: unrecognised message\n", ti.devt);
            return Err(EINVAL);
        }
        match self.set_region_mappings(rest) {
            Ok(()) => Ok(()),
            Err(UpdateFail::Update(e)) => {
                pr_warn!("{}: {}\n", ti.devt, e);
                Err(if e == MessageError::NoMemory {
                    ENOMEM
                } else {
                    EINVAL
                })
            }
            Err(UpdateFail::NotLive) => Err(ENODEV),
        }
    }

    fn preresume(&self, ti: TargetInfo) -> Result {
        self.membership.prepare(ti.devt).inspect_err(|_| {
            pr_warn!("{}: cannot resize the inherited region table\n", ti.devt);
        })
    }

    fn resume(&self, ti: TargetInfo) {
        if self.membership.activate(ti.devt).is_err() {
            pr_warn!("{}: cannot register for netlink uploads\n", ti.devt);
        }
    }

    fn postsuspend(&self, _ti: TargetInfo) {
        self.membership.deactivate();
    }

    fn devices(&self) -> impl Iterator<Item = (&TargetDevice, u64)> {
        self.paths.iter().map(|p| (&p.dev, p.start))
    }

    fn ioctl_device(&self, ti: TargetInfo) -> (&TargetDevice, bool) {
        let guard = rcu::ReadGuard::new();
        let index = self
            .instance()
            .table
            .read(&guard)
            .and_then(|t| t.lookup(0))
            .unwrap_or(0);
        drop(guard);
        let path = self.path(index);
        (
            &path.dev,
            ti.len.checked_add(path.start) == Some(path.dev.sectors()),
        )
    }
}
