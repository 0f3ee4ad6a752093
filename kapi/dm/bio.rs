// SPDX-License-Identifier: GPL-2.0

//! The bio a target's `map()` receives: a DM clone, owned by DM core for the
//! duration of the call.

use super::TargetDevice;
use crate::kapi::{bindings as b, iostat::Group};
use core::{marker::PhantomData, ptr::NonNull};
use kernel::bindings as kb;

/// A bio handed to [`super::Target::map`], lent for the call (`'a`).
///
/// # Invariants
/// The pointer is a live DM clone that DM core owns and lends to the holder
/// alone for `'a` (values are made only by the `map` trampoline, for one
/// call).
pub(crate) struct Bio<'a>(NonNull<kb::bio>, PhantomData<&'a mut kb::bio>);

const REQ_OP_MASK: u32 = (1 << kb::REQ_OP_BITS) - 1;
const REQ_PREFLUSH: u32 = 1 << kb::req_flag_bits___REQ_PREFLUSH;
// `bi_flags` is 16 bits wide.
const _: () = assert!(kb::BIO_REMAPPED < 16 && kb::BIO_BPS_THROTTLED < 16);
const BIO_REMAPPED: u16 = 1 << kb::BIO_REMAPPED;
const BIO_BPS_THROTTLED: u16 = 1 << kb::BIO_BPS_THROTTLED;

impl Bio<'_> {
    /// # Safety
    /// `bio` must be a DM clone being mapped, owned by DM core, that outlives
    /// the returned value.
    pub(super) unsafe fn from_raw(bio: NonNull<kb::bio>) -> Self {
        // INVARIANT: per the contract.
        Self(bio, PhantomData)
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

    /// The stat group of a read or write without a preflush (the same test
    /// as [`Self::is_plain_rw`]), `None` for any other bio.
    #[inline(always)]
    pub(crate) fn rw_group(&self) -> Option<Group> {
        let opf = self.raw().bi_opf;
        match (self.is_plain_rw(), opf & 1) {
            (false, _) => None,
            (true, 0) => Some(Group::Read),
            (true, _) => Some(Group::Write),
        }
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

    /// The stat group the bio counts in (`op_stat_group()`): discards,
    /// then writes (every op with bit 0 set, write-zeroes included), then
    /// reads. Empty flushes are told apart by the caller.
    #[inline(always)]
    pub(crate) fn stat_group(&self) -> Group {
        let op = self.raw().bi_opf & REQ_OP_MASK;
        if op == kb::req_op_REQ_OP_DISCARD {
            Group::Discard
        } else if op & 1 != 0 {
            Group::Write
        } else {
            Group::Read
        }
    }

    /// Sends the bio to `dev` at `sector`: `bi_sector` and `bio_set_dev()`
    /// (include/linux/bio.h), written out here because C's static inline
    /// cannot be called; its one call, `bio_associate_blkg()`, is exported.
    #[inline(always)]
    pub(crate) fn remap(&mut self, dev: &TargetDevice, sector: u64) {
        let bdev = dev.bdev();
        // SAFETY: by the type invariant DM core owns the bio in map() and
        // lends it to us alone for the call.
        let bio = unsafe { self.0.as_mut() };
        bio.bi_iter.bi_sector = sector;
        let mut flags = bio.bi_flags & !BIO_REMAPPED;
        if bio.bi_bdev != bdev {
            flags &= !BIO_BPS_THROTTLED;
        }
        bio.bi_flags = flags;
        bio.bi_bdev = bdev;
        #[cfg(CONFIG_BLK_CGROUP)]
        // SAFETY: the bio is ours in map() and now names `dev`'s bdev, which
        // is referenced for the target's lifetime, longer than its bios.
        unsafe {
            kb::bio_associate_blkg(bio)
        };
    }
}
