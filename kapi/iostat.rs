// SPDX-License-Identifier: GPL-2.0

//! Per-CPU I/O statistics in rows, for any number of rows: each row counts
//! I/Os (bios) and sectors by the block layer's stat groups (read, write,
//! discard, flush: `op_stat_group()`, as in `/proc/diskstats`).
//!
//! Memory: 64 bytes per row for each possible CPU, the rows rounded up to a
//! power of two (4 MiB per CPU at 65,535 rows), charged to the allocating
//! task's memory cgroup.
//!
//! `alloc_percpu` stops at 32 KiB, so each possible CPU has its own zeroed
//! array of rows (kvzalloc'd whole cache lines, `include/kapi_glue.h`),
//! reached through a per-CPU pointer. A CPU writes only its own array, with
//! preemption disabled: no written cache line is shared between CPUs.
//! Accounting a bio is inline Rust (no call into C); readers add the CPUs'
//! arrays up in C.

use crate::kapi::{bindings, preempt, rcu::ReadGuard};
use core::{
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};
use kernel::{alloc::KVVec, prelude::*};

/// Stat groups, in `enum stat_group` order: read, write (write-zeroes
/// included, as in `/proc/diskstats`), discard, flush (empty flushes: no
/// sectors).
pub(crate) const GROUPS: usize = 4;

/// A stat group (`enum stat_group`): the column of a row a bio counts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Group {
    /// Reads.
    Read = 0,
    /// Writes and write-zeroes.
    Write = 1,
    /// Discards.
    Discard = 2,
    /// Empty flushes.
    Flush = 3,
}

/// One row summed over the CPUs; the layout of a row in C (`KAPI_IOSTAT_WIDTH`
/// `u64`s).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct IoCounts {
    /// I/Os (bios) accounted, by stat group.
    pub(crate) ios: [u64; GROUPS],
    /// 512-byte sectors by stat group.
    pub(crate) sectors: [u64; GROUPS],
}

/// Counters in a row.
const WIDTH: usize = bindings::KAPI_IOSTAT_WIDTH as usize;

const _: () = assert!(core::mem::size_of::<IoCounts>() == WIDTH * core::mem::size_of::<u64>());

/// A table of per-CPU statistics rows, freed when dropped.
///
/// # Invariants
/// `ptr` is a live `kapi_iostat_alloc(mask + 1)` allocation owned by this
/// value, `0 < rows <= mask + 1`, and `mask + 1` is a power of two.
pub(crate) struct IoStats {
    ptr: NonNull<*mut u64>,
    rows: usize,
    /// The rows allocated, less one: a masked index is always in them.
    mask: usize,
}

// SAFETY: the per-CPU arrays are owned by this value; each CPU writes only its
// own array with preemption disabled, and `sum` only reads. Sharing and
// sending between CPUs is therefore sound.
unsafe impl Sync for IoStats {}
// SAFETY: see above.
unsafe impl Send for IoStats {}

impl IoStats {
    /// Allocates `rows` zeroed rows for every possible CPU, rounded up to a
    /// power of two so that the I/O path masks a row index rather than
    /// checking it (64 bytes per row per CPU, in whole cache lines: 4 MiB
    /// per CPU at 65,535 rows). `EINVAL` for no rows, `ENOMEM` if the memory
    /// is not there.
    pub(crate) fn new(rows: usize) -> Result<Self> {
        if rows == 0 {
            return Err(EINVAL);
        }
        let allocated = rows.checked_next_power_of_two().ok_or(EINVAL)?;
        // SAFETY: plain allocation; a null return is handled below.
        let p = unsafe { bindings::kapi_iostat_alloc(allocated) };
        // INVARIANT: allocated just above with `mask + 1`, a power of two
        // and at least `rows`.
        Ok(Self {
            ptr: NonNull::new(p).ok_or(ENOMEM)?,
            rows,
            mask: allocated - 1,
        })
    }

    /// Counts one I/O of `sectors` sectors in stat group `group` of row
    /// `index`, in this CPU's array: a load of the array's address and two
    /// adds. `index` must be below the row count; any other is counted in
    /// some row (the index is masked, not checked). `_section` keeps
    /// preemption disabled, so the array stays this CPU's and no other CPU
    /// writes it.
    #[inline(always)]
    pub(crate) fn account(&self, _section: &ReadGuard, index: usize, group: Group, sectors: u32) {
        // At most mask * WIDTH + GROUPS - 1: no overflow (allocated).
        let column = (index & self.mask) * WIDTH + group as usize;
        // SAFETY: `ptr` is a live per-CPU pointer (type invariant).
        let array = unsafe { preempt::this_cpu_read_ptr(self.ptr.as_ptr()) };
        // Readers only load these counters and only this CPU stores to them,
        // with preemption disabled (`_section`), so a relaxed load and store
        // is the whole update (`addq` to memory, no `lock`).
        // SAFETY: the array holds `(mask + 1) * WIDTH` live, aligned
        // counters; the masked index is at most `mask`, `group + GROUPS < WIDTH`.
        let (ios, sectors_done) = unsafe {
            (
                AtomicU64::from_ptr(array.add(column)),
                AtomicU64::from_ptr(array.add(column + GROUPS)),
            )
        };
        ios.store(
            ios.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
        sectors_done.store(
            sectors_done
                .load(Ordering::Relaxed)
                .wrapping_add(u64::from(sectors)),
            Ordering::Relaxed,
        );
    }

    /// I/Os of the stat groups `groups`, summed over every row and CPU;
    /// each counter is read once, while writers go on.
    pub(crate) fn total_ios(&self, groups: &[Group]) -> u64 {
        groups.iter().fold(0u64, |sum, &group| {
            // SAFETY: `ptr` is a live allocation of `rows` rows (type
            // invariant) and `group < WIDTH`.
            let column = unsafe {
                bindings::kapi_iostat_column_sum(self.ptr.as_ptr(), self.rows, group as u32)
            };
            sum.wrapping_add(column)
        })
    }

    /// Every row summed over the CPUs. Each counter is read once, while
    /// writers go on. May sleep.
    pub(crate) fn sum(&self) -> Result<KVVec<IoCounts>> {
        let mut out = KVVec::from_elem(IoCounts::default(), self.rows, GFP_KERNEL)?;
        // SAFETY: `ptr` is a live allocation of `rows` rows (type invariant);
        // `out` holds `rows` rows of the same layout (checked above).
        unsafe { bindings::kapi_iostat_sum(self.ptr.as_ptr(), self.rows, out.as_mut_ptr().cast()) };
        Ok(out)
    }
}

impl Drop for IoStats {
    fn drop(&mut self) {
        // SAFETY: allocated by kapi_iostat_alloc (type invariant), freed only
        // here; no bio is accounted after its owner is dropped.
        unsafe { bindings::kapi_iostat_free(self.ptr.as_ptr()) };
    }
}
