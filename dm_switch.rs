// SPDX-License-Identifier: GPL-2.0

//! dm-switch: a device-mapper target that sends each bio to one of several
//! paths according to a bit-packed page table with one entry per fixed-size
//! region, uploaded by an agent over generic netlink (`DM_SWITCH`) or set with
//! `dmsetup message ... set_region_mappings`.
//!
//! Table lines (sizes in 512-byte sectors):
//! - RFC format: `<dev_count> <page_size> <dev> <offset> [<dev> <offset>]...`;
//!   starts with an empty table (every region unmapped: path 0).
//! - Upstream format: `<num_paths> <region_size> 0 <dev> <offset>...`;
//!   starts round-robin (region r on path r mod num_paths).

mod bindings;
mod dm;
mod genl;
mod message;
mod netlink;
mod percpu;
mod ptbl;
mod rcu;
mod registry;
mod sysfs;
mod wire;

use core::{fmt::Write, num::NonZeroU64};
use dm::{
    Bio, CtrError, MapResult, StatusKind, Target, TargetCtx, TargetDevice, TargetInfo, TextOut,
};
use kernel::c_str;
use kernel::{prelude::*, str::CStr, sync::Arc};
use ptbl::{min_pte_bits, PageTable};
use registry::{Geometry, Instance, UpdateFail};

module! {
    type: SwitchModule,
    name: "dm_switch",
    author: "dm-switch-rs developers",
    description: "device-mapper switch target: region-mapped path selector",
    license: "GPL",
}

/// Target version, shown by `dmsetup targets` and `/sys/module/dm_switch/version`.
pub(crate) const VERSION: [u32; 3] = [1, 1, 0];

/// Most paths a table can have: the wire format's `dev_count` is 16 bits.
const MAX_PATHS: u32 = 65535;

/// Indices of the per-CPU counters.
const REMAPPED: usize = 0;
const UNMAPPED: usize = 1;

/// The loaded module: everything registered at init, undone in reverse.
struct SwitchModule {
    // Fields drop in declaration order: sysfs, netlink and DM first, the
    // registry they use last.
    _sysfs: sysfs::Files,
    _family: genl::Family<netlink::PageTableUpload>,
    _target: dm::Registration<Switch>,
    _registry: registry::RegistryOwner,
}

impl kernel::Module for SwitchModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let registry = registry::RegistryOwner::new()?;
        let target = dm::Registration::new(c_str!("switch"), VERSION, module)?;
        let family = genl::Family::register(module)?;
        let sysfs = sysfs::Files::create(module)?;
        Ok(Self {
            _sysfs: sysfs,
            _family: family,
            _target: target,
            _registry: registry,
        })
    }
}

/// How a sector offset becomes a region index.
enum RegionSize {
    /// Power of two: shift by this many bits.
    Shift(u32),
    /// Otherwise: divide.
    Div(NonZeroU64),
}

impl RegionSize {
    fn new(sectors: NonZeroU64) -> Self {
        if sectors.is_power_of_two() {
            Self::Shift(sectors.trailing_zeros())
        } else {
            Self::Div(sectors)
        }
    }

    /// Region index of `offset`.
    #[inline(always)]
    fn index(&self, offset: u64) -> u64 {
        match *self {
            // s < 64 (trailing zeros of a non-zero u64), so the wrapping shift
            // is the plain shift, without an overflow-check branch.
            Self::Shift(s) => offset.wrapping_shr(s),
            Self::Div(d) => offset / d,
        }
    }

    /// Sectors from `offset` to the end of its region (at least 1).
    fn left(&self, offset: u64) -> u64 {
        match *self {
            Self::Shift(s) => (1u64 << s) - (offset & ((1u64 << s) - 1)),
            Self::Div(d) => d.get() - offset % d,
        }
    }
}

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
struct Switch {
    paths: KVec<Path>,
    begin: u64,
    region: RegionSize,
    format: Format,
    instance: Arc<Instance>,
    counters: percpu::Counters<2>,
    /// Released when the target is dropped.
    _claim: registry::TableClaim,
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

impl Switch {
    /// Opens and checks the paths of a table line (`dev offset` pairs).
    fn open_paths(
        ti: &mut TargetCtx<'_>,
        pairs: &[&CStr],
        region_bytes: u64,
    ) -> Result<KVec<Path>, CtrError> {
        let len = ti.info().len;
        let mut paths = KVec::with_capacity(pairs.len() / 2, GFP_KERNEL).map_err(|_| CtrError {
            err: ENOMEM,
            msg: c_str!("Cannot allocate path list"),
        })?;
        for pair in pairs.chunks_exact(2) {
            let start =
                parse_u64(pair[1]).ok_or(CtrError::inval(c_str!("Invalid device offset")))?;
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
            paths
                .push(Path { dev, start }, GFP_KERNEL)
                .map_err(|_| CtrError {
                    err: ENOMEM,
                    msg: c_str!("Cannot allocate path list"),
                })?;
        }
        Ok(paths)
    }

    /// Offset of `bio` in the target; DM core only maps bios within
    /// `[begin, begin + len)`.
    #[inline(always)]
    fn offset(&self, bio: &Bio) -> u64 {
        bio.sector().wrapping_sub(self.begin)
    }

    /// Cuts a discard or write-zeroes bio at the end of its first region (DM
    /// core splits them only at target boundaries); DM core resubmits the rest.
    #[cold]
    #[inline(never)]
    fn clip_to_region(&self, bio: &mut Bio) {
        let left = self.region.left(self.offset(bio));
        if u64::from(bio.sectors()) > left {
            // left < sectors <= u32::MAX, so it fits.
            bio.accept_partial(left as u32);
        }
    }

    /// The path at `index` (always valid: tables only hold indices < dev_count).
    #[inline(always)]
    fn path(&self, index: u32) -> &Path {
        match self.paths.get(index as usize) {
            Some(p) => p,
            // Unreachable: every stored index is below dev_count and path 0
            // exists. Fall back to path 0 rather than panic.
            None => &self.paths[0],
        }
    }
}

impl Target for Switch {
    fn new(ti: &mut TargetCtx<'_>, args: &[&CStr]) -> Result<Self, CtrError> {
        let info = ti.info();
        let (&count, rest) = args.split_first().ok_or(CtrError::inval(c_str!(
            "Missing arguments: <dev_count> <page_size> <dev> <offset>..."
        )))?;
        let dev_count = parse_u64(count)
            .filter(|&n| n > 0)
            .ok_or(CtrError::inval(c_str!("Invalid device count")))?;
        if dev_count > u64::from(MAX_PATHS) {
            return Err(CtrError::inval(c_str!("Too many devices (at most 65535)")));
        }
        let dev_count = dev_count as u32;
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
        let regions = u32::try_from(info.len.div_ceil(region_sectors.get()))
            .map_err(|_| CtrError::inval(c_str!("Too many regions (at most 4294967295)")))?;
        let paths = Self::open_paths(ti, path_args, region_sectors.get() * 512)?;
        ti.set_max_io_len(region_sectors.get())
            .map_err(|err| CtrError {
                err,
                msg: c_str!("Cannot set the maximum I/O length"),
            })?;

        let table = match format {
            Format::Rfc => None,
            Format::Upstream => Some(
                PageTable::round_robin(dev_count, regions)
                    .map_err(|_| ())
                    .and_then(|t| KBox::new(t, GFP_KERNEL).map_err(|_| ()))
                    .map_err(|()| CtrError {
                        err: ENOMEM,
                        msg: c_str!("Cannot allocate region table"),
                    })?,
            ),
        };
        let geometry = Geometry {
            dev_count,
            region_sectors: region_sectors.get(),
            len: info.len,
            regions,
        };
        let nomem = |msg| move |_| CtrError { err: ENOMEM, msg };
        let instance = Instance::new(geometry, table)
            .map_err(nomem(c_str!("Cannot allocate switch context")))?;
        let counters =
            percpu::Counters::new().map_err(nomem(c_str!("Cannot allocate counters")))?;
        let claim = match registry::claim_table(info.table) {
            Ok(Some(claim)) => claim,
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
        // An empty flush goes to every path; discards and write-zeroes arrive
        // once and are split at region boundaries in map().
        ti.set_bio_counts(dev_count, 1, 1);
        Ok(Self {
            paths,
            begin: info.begin,
            region: RegionSize::new(region_sectors),
            format,
            instance,
            counters,
            _claim: claim,
        })
    }

    #[inline]
    fn map(&self, bio: &mut Bio) -> MapResult {
        if !bio.is_plain_rw() {
            if bio.is_empty_flush() {
                let path = self.path(bio.clone_index());
                bio.remap(&path.dev, path.start);
                return MapResult::Remapped;
            }
            // Before the RCU section, so only `self` and `bio` live across calls.
            if bio.is_range_op() {
                self.clip_to_region(bio);
            }
        }
        let guard = rcu::ReadGuard::new();
        let offset = self.offset(bio);
        let region = self.region.index(offset);
        let entry = self
            .instance
            .table
            .read(&guard)
            .and_then(|t| t.lookup(region));
        let (index, counter) = match entry {
            Some(index) => (index, self.counters.slot::<REMAPPED>()),
            None => (0, self.counters.slot::<UNMAPPED>()),
        };
        let path = self.path(index);
        // start + offset < start + len, checked against the path size in ctr.
        bio.remap_counted(&path.dev, path.start + offset, counter, guard);
        MapResult::Remapped
    }

    fn status(&self, kind: StatusKind, out: &mut TextOut<'_>) {
        let _ = self.write_status(kind, out);
    }

    fn message(&self, ti: TargetInfo, args: &[&CStr], _out: &mut TextOut<'_>) -> Result {
        let Some((cmd, rest)) = args.split_first() else {
            pr_warn!("{}:{}: empty message\n", ti.devt >> 20, ti.devt & 0xfffff);
            return Err(EINVAL);
        };
        if !cmd.as_bytes().eq_ignore_ascii_case(b"set_region_mappings") {
            pr_warn!(
                "{}:{}: unrecognised message\n",
                ti.devt >> 20,
                ti.devt & 0xfffff
            );
            return Err(EINVAL);
        }
        let g = self.instance.geometry;
        let result = self.instance.update(false, |current| {
            let (total, bits) = current.map_or((g.regions, min_pte_bits(g.dev_count)), |t| {
                (t.page_total(), t.pte_bits())
            });
            let mut table = PageTable::derive(current, g.dev_count, total, bits)
                .map_err(|_| message::MessageError::NoMemory)?;
            let mut editor = table.edit();
            message::apply(&mut editor, rest.iter().map(|a| a.as_bytes()))?;
            editor
                .finish()
                .map_err(|_| message::MessageError::NoMemory)?;
            KBox::new(table, GFP_KERNEL).map_err(|_| message::MessageError::NoMemory)
        });
        match result {
            Ok(()) => Ok(()),
            Err(UpdateFail::Update(e)) => {
                pr_warn!("{}:{}: {}\n", ti.devt >> 20, ti.devt & 0xfffff, e);
                Err(if e == message::MessageError::NoMemory {
                    ENOMEM
                } else {
                    EINVAL
                })
            }
            Err(UpdateFail::NotLive) => Err(ENODEV),
        }
    }

    fn resume(&self, ti: TargetInfo) {
        if registry::activate(ti.devt, &self.instance).is_err() {
            pr_warn!(
                "{}:{}: cannot register for netlink uploads\n",
                ti.devt >> 20,
                ti.devt & 0xfffff
            );
        }
    }

    fn postsuspend(&self, _ti: TargetInfo) {
        registry::deactivate(&self.instance);
    }

    fn devices(&self) -> impl Iterator<Item = (&TargetDevice, u64)> {
        self.paths.iter().map(|p| (&p.dev, p.start))
    }

    fn ioctl_device(&self, ti: TargetInfo) -> (&TargetDevice, bool) {
        let guard = rcu::ReadGuard::new();
        let index = self
            .instance
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

impl Drop for Switch {
    /// The target is being destroyed (or its constructor failed late): it is
    /// no device's live target any more.
    fn drop(&mut self) {
        registry::remove(&self.instance);
    }
}

impl Switch {
    fn write_status(&self, kind: StatusKind, out: &mut TextOut<'_>) -> core::fmt::Result {
        let g = self.instance.geometry;
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
                    .instance
                    .table
                    .read(&guard)
                    .map_or([0, 0], |t| t.userland());
                drop(guard);
                write!(
                    out,
                    " {u0:08x} {u1:08x} {} {}",
                    self.counters.sum(REMAPPED),
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
