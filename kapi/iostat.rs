// SPDX-License-Identifier: GPL-2.0

//! Per-CPU I/O statistics in rows, for any number of rows: each row counts
//! I/Os (bios) and sectors by the block layer's stat groups (read, write,
//! discard, flush: `op_stat_group()`, as in `/proc/diskstats`).
//!
//! Memory: 64 bytes per row for each possible CPU (4 MiB per CPU at 65,535
//! rows), charged to the allocating task's memory cgroup.
//!
//! `alloc_percpu` stops at 32 KiB, so each possible CPU has its own zeroed
//! array of rows (kvzalloc'd whole cache lines, `include/kapi_glue.h`),
//! reached through a per-CPU pointer. A CPU writes only its own array, with
//! preemption disabled: no written cache line is shared between CPUs.
//! Readers add the CPUs' arrays up.

use crate::kapi::bindings;
use core::{marker::PhantomData, ptr::NonNull};
use kernel::{alloc::KVVec, prelude::*};

/// Stat groups, in `enum stat_group` order: read, write (write-zeroes
/// included, as in `/proc/diskstats`), discard, flush (empty flushes: no
/// sectors).
pub(crate) const GROUPS: usize = 4;

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

const _: () = assert!(
    core::mem::size_of::<IoCounts>()
        == bindings::KAPI_IOSTAT_WIDTH as usize * core::mem::size_of::<u64>()
);

/// A table of per-CPU statistics rows, freed when dropped.
///
/// # Invariants
/// `ptr` is a live `kapi_iostat_alloc(rows)` allocation owned by this value,
/// and `rows > 0`.
pub(crate) struct IoStats {
    ptr: NonNull<*mut u64>,
    rows: usize,
}

// SAFETY: the per-CPU arrays are owned by this value; each CPU writes only its
// own array with preemption disabled, and `sum` only reads. Sharing and
// sending between CPUs is therefore sound.
unsafe impl Sync for IoStats {}
// SAFETY: see above.
unsafe impl Send for IoStats {}

/// One row of an [`IoStats`], below its row count, to account a bio in
/// ([`crate::kapi::dm::Bio::remap_counted`]).
pub(crate) struct Row<'a> {
    stats: *mut *mut u64,
    index: usize,
    _stats: PhantomData<&'a IoStats>,
}

impl Row<'_> {
    /// The table's per-CPU pointer and the row's index, for the C side.
    #[inline(always)]
    pub(crate) fn as_raw(&self) -> (*mut *mut u64, usize) {
        (self.stats, self.index)
    }
}

impl IoStats {
    /// Allocates `rows` zeroed rows for every possible CPU
    /// (`rows * 64` bytes per CPU, in whole cache lines). `EINVAL` for no
    /// rows, `ENOMEM` if the memory is not there.
    pub(crate) fn new(rows: usize) -> Result<Self> {
        if rows == 0 {
            return Err(EINVAL);
        }
        // SAFETY: plain allocation; a null return is handled below.
        let p = unsafe { bindings::kapi_iostat_alloc(rows) };
        // INVARIANT: allocated just above with `rows`.
        Ok(Self {
            ptr: NonNull::new(p).ok_or(ENOMEM)?,
            rows,
        })
    }

    /// Row `index`, or row 0 if there is no such row.
    #[inline(always)]
    pub(crate) fn row_or_first(&self, index: usize) -> Row<'_> {
        Row {
            stats: self.ptr.as_ptr(),
            index: if index < self.rows { index } else { 0 },
            _stats: PhantomData,
        }
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
