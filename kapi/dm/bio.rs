// SPDX-License-Identifier: GPL-2.0

//! The bio a target's `map()` receives: a DM clone, owned by DM core for the
//! duration of the call.

use super::TargetDevice;
use crate::kapi::{bindings as b, iostat::Row, percpu::Slot, rcu::ReadGuard};
use core::ptr::NonNull;
use kernel::bindings as kb;

/// A bio handed to [`super::Target::map`].
///
/// # Invariants
/// The pointer is a live DM clone that DM core owns for as long as this value
/// lives (values are made only by the `map` trampoline, for one call).
pub(crate) struct Bio(NonNull<kb::bio>);

const REQ_OP_MASK: u32 = (1 << kb::REQ_OP_BITS) - 1;
const REQ_PREFLUSH: u32 = 1 << kb::req_flag_bits___REQ_PREFLUSH;

impl Bio {
    /// # Safety
    /// `bio` must be a DM clone being mapped, owned by DM core, that outlives
    /// the returned value.
    pub(super) unsafe fn from_raw(bio: NonNull<kb::bio>) -> Self {
        // INVARIANT: per the contract.
        Self(bio)
    }

    fn raw(&self) -> &kb::bio {
        // SAFETY: by the type invariant the bio is live; we only read it.
        unsafe { self.0.as_ref() }
    }

    /// First sector (512-byte units).
    #[inline(always)]
    pub(crate) fn sector(&self) -> u64 {
        self.raw().bi_iter.bi_sector
    }

    /// Length in sectors.
    #[inline(always)]
    pub(crate) fn sectors(&self) -> u32 {
        self.raw().bi_iter.bi_size >> 9
    }

    /// A read or write without a preflush (one test on the hot path: every
    /// other bio may be an empty flush or a range operation).
    #[inline(always)]
    pub(crate) fn is_plain_rw(&self) -> bool {
        // READ and WRITE are the only ops without a bit above bit 0.
        const _: () = assert!(kb::req_op_REQ_OP_READ == 0 && kb::req_op_REQ_OP_WRITE == 1);
        const NOT_PLAIN: u32 = REQ_PREFLUSH | (REQ_OP_MASK & !1);
        self.raw().bi_opf & NOT_PLAIN == 0
    }

    /// An empty flush (one of the `num_flush_bios` clones).
    #[inline(always)]
    pub(crate) fn is_empty_flush(&self) -> bool {
        let r = self.raw();
        r.bi_opf & REQ_PREFLUSH != 0 && r.bi_iter.bi_size == 0
    }

    /// A discard or write-zeroes bio, which DM core splits only at target
    /// boundaries, not at `max_io_len`.
    #[inline(always)]
    pub(crate) fn is_range_op(&self) -> bool {
        let op = self.raw().bi_opf & REQ_OP_MASK;
        op == kb::req_op_REQ_OP_DISCARD || op == kb::req_op_REQ_OP_WRITE_ZEROES
    }

    /// Which clone of a multi-clone bio this is, 0-based
    /// (`dm_bio_get_target_bio_nr`).
    pub(crate) fn clone_index(&self) -> u32 {
        // SAFETY: by the type invariant, a DM clone inside map().
        unsafe { b::dm_bio_get_target_bio_nr(self.0.as_ptr().cast()) }
    }

    /// Keeps only the first `sectors` sectors; DM core resubmits the rest
    /// (`dm_accept_partial_bio`). Callers pass `0 < sectors < self.sectors()`,
    /// and only for bios DM sent as a single clone.
    pub(crate) fn accept_partial(&mut self, sectors: u32) {
        // SAFETY: by the type invariant, a DM clone inside map(); the length
        // bound is the caller's (checked) contract.
        unsafe { b::dm_accept_partial_bio(self.0.as_ptr().cast(), sectors) };
    }

    /// Accounts the bio in `row` (one I/O and its sectors in its stat
    /// group), ends the RCU read-side section `guard`, adds one to `counter`
    /// on this CPU and sends the bio to `dev` at `sector`: one call into C
    /// for the last steps of a typical `map()`.
    #[inline(always)]
    pub(crate) fn remap_counted(
        &mut self,
        dev: &TargetDevice,
        sector: u64,
        counter: Slot<'_>,
        row: Row<'_>,
        guard: ReadGuard,
    ) {
        let (stats, index) = row.as_raw();
        // SAFETY: DM core owns the bio (type invariant); `dev`'s bdev, the
        // per-CPU `counter` and the statistics `row` outlive the bio; `guard`
        // proves the RCU-sched section (preemption disabled) the call ends.
        unsafe {
            b::kapi_rcu_unlock_count_remap(
                self.0.as_ptr().cast(),
                dev.bdev().cast(),
                sector,
                counter.as_percpu_ptr(),
                stats,
                index,
            )
        };
        // Ended by the C function: dropping the guard would unlock twice.
        core::mem::forget(guard);
    }

    /// Accounts an empty flush clone in `row` and sends it to `dev` at
    /// `sector`.
    pub(crate) fn remap_flush_counted(&mut self, dev: &TargetDevice, sector: u64, row: Row<'_>) {
        let (stats, index) = row.as_raw();
        // SAFETY: by the type invariant DM core owns the bio in map(); `dev`'s
        // bdev is referenced for the target's lifetime, which outlasts its
        // bios; `row` is an existing row of live statistics.
        unsafe {
            b::kapi_count_flush_remap(
                self.0.as_ptr().cast(),
                dev.bdev().cast(),
                sector,
                stats,
                index,
            )
        };
    }
}
