// SPDX-License-Identifier: GPL-2.0

//! The context of a target's constructor, and the underlying devices it opens.

use super::{TableId, TargetInfo};
use crate::kapi::{bindings as b, block::DevT};
use core::{marker::PhantomData, ptr::NonNull};
use kernel::{bindings as kb, error::to_result, prelude::*, str::CStr};

impl TargetInfo {
    /// # Safety
    /// `ti` must be a live `dm_target` whose table belongs to a live device.
    pub(super) unsafe fn of(ti: *const b::dm_target) -> Self {
        // SAFETY: per the contract, `ti`, its table, the mapped_device and
        // its gendisk are live for the duration of the callback.
        let (begin, len, table, major, minor) = unsafe {
            let disk = b::dm_disk(b::dm_table_get_md((*ti).table));
            let t = &*ti;
            (t.begin, t.len, t.table, (*disk).major, (*disk).first_minor)
        };
        Self {
            begin,
            len,
            // The disk's numbers (what disk_devt() returns) are set when DM
            // allocates the disk, so they are valid before add_disk(), i.e.
            // also in the first table's constructor, and always in range.
            devt: DevT::new(major as u32, minor as u32).unwrap_or_default(),
            table: TableId(table as usize),
        }
    }
}

/// The `dm_target` being constructed.
///
/// # Invariants
/// `ti` is the live target under construction, exclusively ours for `'a`.
pub(crate) struct TargetCtx<'a> {
    ti: NonNull<b::dm_target>,
    info: TargetInfo,
    _p: PhantomData<&'a mut b::dm_target>,
}

impl TargetCtx<'_> {
    /// # Safety
    /// `ti` must be a target DM core is constructing, live and exclusively the
    /// caller's for the returned value's lifetime.
    pub(super) unsafe fn new(ti: NonNull<b::dm_target>) -> Self {
        // SAFETY: per the contract, a live target of a live table.
        let info = unsafe { TargetInfo::of(ti.as_ptr()) };
        // INVARIANT: per the contract.
        Self {
            ti,
            info,
            _p: PhantomData,
        }
    }

    /// Facts about the target.
    pub(crate) fn info(&self) -> TargetInfo {
        self.info
    }

    /// Opens an underlying device by path (or `major:minor`) with the table's
    /// mode (`dm_get_device`); put back when the returned value is dropped.
    pub(crate) fn get_device(&mut self, path: &CStr) -> Result<TargetDevice> {
        let ti = self.ti.as_ptr();
        let mut dev: *mut b::dm_dev = core::ptr::null_mut();
        // SAFETY: by the type invariant `ti` is live and ours; `path` is a
        // valid NUL-terminated string; on success `dev` is a referenced dm_dev.
        to_result(unsafe {
            b::dm_get_device(
                ti,
                path.as_char_ptr(),
                b::dm_table_get_mode((*ti).table),
                &mut dev,
            )
        })?;
        let dev = NonNull::new(dev).ok_or(ENODEV)?;
        // SAFETY: `dev` is the referenced dm_dev just returned; its bdev is
        // set by dm_get_device and never changes while it is referenced.
        let bdev = unsafe { (*dev.as_ptr()).bdev }.cast();
        // INVARIANT: `dev` was taken with `ti`, which DM keeps until the dtr
        // (or the failed ctr) that drops every TargetDevice of the target.
        Ok(TargetDevice {
            ti: self.ti,
            dev,
            bdev,
        })
    }

    /// Makes DM core split bios so none crosses a multiple of `sectors` from
    /// the target's start (`dm_set_target_max_io_len`).
    pub(crate) fn set_max_io_len(&mut self, sectors: u64) -> Result {
        // SAFETY: by the type invariant `ti` is live and ours.
        to_result(unsafe { b::dm_set_target_max_io_len(self.ti.as_ptr(), sectors) })
    }

    /// Sets how many clones of each empty flush, discard and write-zeroes bio
    /// the target receives (`num_*_bios`).
    pub(crate) fn set_bio_counts(&mut self, flush: u32, discard: u32, write_zeroes: u32) {
        // SAFETY: by the type invariant `ti` is live and exclusively ours.
        unsafe {
            let ti = self.ti.as_ptr();
            (*ti).num_flush_bios = flush;
            (*ti).num_discard_bios = discard;
            (*ti).num_write_zeroes_bios = write_zeroes;
        }
    }
}

/// An underlying device opened with `dm_get_device`, put back when dropped.
///
/// # Invariants
/// `dev` is a dm_dev referenced through the live target `ti`, and `bdev` is
/// its `bdev`, for as long as this value lives.
pub(crate) struct TargetDevice {
    ti: NonNull<b::dm_target>,
    dev: NonNull<b::dm_dev>,
    /// `dev->bdev`, kept here to save map() a load.
    bdev: *mut kb::block_device,
}

// SAFETY: a dm_dev reference may be used and put from any task; the `ti` it
// was taken with outlives every TargetDevice (they are dropped in dtr).
unsafe impl Send for TargetDevice {}
// SAFETY: shared access only reads the immutable bdev pointer and name.
unsafe impl Sync for TargetDevice {}

impl TargetDevice {
    /// The block device.
    #[inline(always)]
    pub(super) fn bdev(&self) -> *mut kb::block_device {
        self.bdev
    }

    /// The referenced `dm_dev`.
    pub(super) fn as_raw(&self) -> *mut b::dm_dev {
        self.dev.as_ptr()
    }

    /// Size in 512-byte sectors.
    pub(crate) fn sectors(&self) -> u64 {
        // SAFETY: by the type invariant the bdev is live.
        unsafe { b::kapi_bdev_sectors(self.bdev().cast()) }
    }

    /// Logical block size in bytes.
    pub(crate) fn logical_block_size(&self) -> u32 {
        // SAFETY: by the type invariant the bdev is live.
        unsafe { b::kapi_bdev_logical_block_size(self.bdev().cast()) }
    }

    /// An identity of the underlying block device: equal for two
    /// `TargetDevice`s exactly when they are the same device.
    pub(crate) fn identity(&self) -> usize {
        self.bdev as usize
    }

    /// `major:minor` name DM gave the device.
    pub(crate) fn name(&self) -> &CStr {
        // SAFETY: by the type invariant the dm_dev is live; `name` is a
        // NUL-terminated array inside it.
        unsafe { CStr::from_char_ptr((*self.dev.as_ptr()).name.as_ptr()) }
    }
}

impl Drop for TargetDevice {
    fn drop(&mut self) {
        // SAFETY: by the type invariant `dev` was obtained from dm_get_device
        // with this `ti`, which is still live.
        unsafe { b::dm_put_device(self.ti.as_ptr(), self.dev.as_ptr()) };
    }
}
