// SPDX-License-Identifier: GPL-2.0

//! Safe wrappers over the device-mapper target API (`linux/device-mapper.h`).
//!
//! A target implements [`Target`]; [`Registration`] registers it under a name
//! and unregisters it when dropped. The `extern "C"` trampolines here are the
//! only code that touches `struct dm_target` and `struct bio` directly; they
//! know nothing about what the target does.

use crate::bindings as b;
use crate::{percpu::Slot, rcu::ReadGuard};
use core::{fmt, marker::PhantomData, ptr::NonNull};
use kernel::c_str;
use kernel::ffi::c_char;
use kernel::{bindings as kb, error::to_result, ffi, prelude::*, str::CStr, ThisModule};

/// Outcome of [`Target::map`].
pub(crate) enum MapResult {
    /// The bio was remapped: DM core submits it.
    Remapped,
}

/// Which status `dmsetup` asked for.
pub(crate) enum StatusKind {
    /// `dmsetup status`.
    Info,
    /// `dmsetup table`.
    Table,
}

/// A device-mapper target type.
pub(crate) trait Target: Sized + Send + Sync {
    /// Builds a target from its table line.
    fn new(ti: &mut TargetCtx<'_>, args: &[&CStr]) -> Result<Self, CtrError>;
    /// Routes one bio.
    fn map(&self, bio: &mut Bio) -> MapResult;
    /// Writes status or table text.
    fn status(&self, kind: StatusKind, out: &mut TextOut<'_>);
    /// Handles `dmsetup message`.
    fn message(&self, ti: TargetInfo, args: &[&CStr], out: &mut TextOut<'_>) -> Result;
    /// The table went live (`resume`).
    fn resume(&self, ti: TargetInfo);
    /// The table stopped being live (`postsuspend`).
    fn postsuspend(&self, ti: TargetInfo);
    /// The target's underlying devices, each with the sector its data starts at.
    fn devices(&self) -> impl Iterator<Item = (&TargetDevice, u64)>;
    /// Device that ioctls go to, and whether it covers the target exactly.
    fn ioctl_device(&self, ti: TargetInfo) -> (&TargetDevice, bool);
}

/// A constructor failure: the errno and the static text for `ti->error`.
pub(crate) struct CtrError {
    /// Returned to DM core.
    pub(crate) err: Error,
    /// Shown by `dmsetup`.
    pub(crate) msg: &'static CStr,
}

impl CtrError {
    /// An `EINVAL` with `msg`.
    pub(crate) const fn inval(msg: &'static CStr) -> Self {
        Self { err: EINVAL, msg }
    }
}

/// Read-only facts about the `dm_target` a callback runs for.
#[derive(Clone, Copy)]
pub(crate) struct TargetInfo {
    /// First sector of the target in the DM device.
    pub(crate) begin: u64,
    /// Length of the target in sectors.
    pub(crate) len: u64,
    /// `dev_t` of the DM device.
    pub(crate) devt: u32,
    /// Identity of the DM table the target belongs to.
    pub(crate) table: usize,
}

impl TargetInfo {
    /// # Safety
    /// `ti` must be a live `dm_target` whose table belongs to a live device.
    unsafe fn of(ti: *const b::dm_target) -> Self {
        // SAFETY: per the contract, `ti`, its table, the mapped_device and its
        // gendisk are live for the duration of the callback.
        unsafe {
            let md = b::dm_table_get_md((*ti).table);
            let disk = b::dm_disk(md);
            let major = (*disk).major as u32;
            let minor = (*disk).first_minor as u32;
            Self {
                begin: (*ti).begin,
                len: (*ti).len,
                devt: (major << 20) | minor,
                table: (*ti).table as usize,
            }
        }
    }
}

/// The `dm_target` being constructed.
pub(crate) struct TargetCtx<'a> {
    ti: NonNull<b::dm_target>,
    info: TargetInfo,
    _p: PhantomData<&'a mut b::dm_target>,
}

impl TargetCtx<'_> {
    /// Facts about the target.
    pub(crate) fn info(&self) -> TargetInfo {
        self.info
    }

    /// Opens an underlying device by path (or `major:minor`) with the table's mode.
    pub(crate) fn get_device(&mut self, path: &CStr) -> Result<TargetDevice> {
        let ti = self.ti.as_ptr();
        let mut dev: *mut b::dm_dev = core::ptr::null_mut();
        // SAFETY: `ti` is the live target under construction; `path` is a valid
        // NUL-terminated string; on success `dev` is a referenced dm_dev that
        // `TargetDevice` puts back with the same `ti`.
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
        Ok(TargetDevice {
            ti: self.ti,
            dev,
            bdev,
        })
    }

    /// Makes DM core split bios so none crosses a multiple of `sectors`.
    pub(crate) fn set_max_io_len(&mut self, sectors: u64) -> Result {
        // SAFETY: `ti` is the live target under construction.
        to_result(unsafe { b::dm_set_target_max_io_len(self.ti.as_ptr(), sectors) })
    }

    /// Sets how many clones of each empty flush, discard and write-zeroes bio
    /// the target receives.
    pub(crate) fn set_bio_counts(&mut self, flush: u32, discard: u32, write_zeroes: u32) {
        // SAFETY: `ti` is the live target under construction, exclusively ours.
        unsafe {
            let ti = self.ti.as_ptr();
            (*ti).num_flush_bios = flush;
            (*ti).num_discard_bios = discard;
            (*ti).num_write_zeroes_bios = write_zeroes;
        }
    }
}

/// An underlying device opened with `dm_get_device`, put back when dropped.
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
    fn bdev(&self) -> *mut kb::block_device {
        self.bdev
    }

    /// Size in sectors.
    pub(crate) fn sectors(&self) -> u64 {
        // SAFETY: the bdev of a referenced dm_dev is live.
        unsafe { b::dm_switch_bdev_sectors(self.bdev().cast()) }
    }

    /// Logical block size in bytes.
    pub(crate) fn logical_block_size(&self) -> u32 {
        // SAFETY: the bdev of a referenced dm_dev is live.
        unsafe { b::dm_switch_bdev_logical_block_size(self.bdev().cast()) }
    }

    /// `major:minor` name DM gave the device.
    pub(crate) fn name(&self) -> &CStr {
        // SAFETY: `name` is a NUL-terminated array inside the live dm_dev.
        unsafe { CStr::from_char_ptr((*self.dev.as_ptr()).name.as_ptr()) }
    }
}

impl Drop for TargetDevice {
    fn drop(&mut self) {
        // SAFETY: `dev` was obtained from dm_get_device with this `ti`, which
        // is still live (devices are dropped from dtr or a failed ctr).
        unsafe { b::dm_put_device(self.ti.as_ptr(), self.dev.as_ptr()) };
    }
}

/// A bio handed to [`Target::map`].
pub(crate) struct Bio(NonNull<kb::bio>);

const REQ_OP_MASK: u32 = (1 << kb::REQ_OP_BITS) - 1;

impl Bio {
    fn raw(&self) -> &kb::bio {
        // SAFETY: DM core owns the bio for the duration of map(); we only read.
        unsafe { self.0.as_ref() }
    }

    /// First sector.
    #[inline(always)]
    pub(crate) fn sector(&self) -> u64 {
        self.raw().bi_iter.bi_sector
    }

    /// Length in sectors.
    #[inline(always)]
    pub(crate) fn sectors(&self) -> u32 {
        self.raw().bi_iter.bi_size >> 9
    }

    /// A read or write without a preflush: every bio map() routes without
    /// further checks (the others may be empty flushes or range operations).
    #[inline(always)]
    pub(crate) fn is_plain_rw(&self) -> bool {
        // One test: READ and WRITE are the only ops without a bit above bit 0.
        const _: () = assert!(kb::req_op_REQ_OP_READ == 0 && kb::req_op_REQ_OP_WRITE == 1);
        const NOT_PLAIN: u32 = (1 << kb::req_flag_bits___REQ_PREFLUSH) | (REQ_OP_MASK & !1);
        self.raw().bi_opf & NOT_PLAIN == 0
    }

    /// An empty flush (one of the `num_flush_bios` clones).
    #[inline(always)]
    pub(crate) fn is_empty_flush(&self) -> bool {
        let r = self.raw();
        r.bi_opf & (1 << kb::req_flag_bits___REQ_PREFLUSH) != 0 && r.bi_iter.bi_size == 0
    }

    /// A discard or write-zeroes bio, which DM core does not split by region.
    #[inline(always)]
    pub(crate) fn is_range_op(&self) -> bool {
        let op = self.raw().bi_opf & REQ_OP_MASK;
        op == kb::req_op_REQ_OP_DISCARD || op == kb::req_op_REQ_OP_WRITE_ZEROES
    }

    /// Which clone of a multi-clone bio this is (0-based).
    pub(crate) fn clone_index(&self) -> u32 {
        // SAFETY: the bio is a DM clone inside map().
        unsafe { b::dm_bio_get_target_bio_nr(self.0.as_ptr().cast()) }
    }

    /// Keeps only the first `sectors` sectors; DM core resubmits the rest.
    /// Callers pass `0 < sectors < self.sectors()`, and only for bios DM sent
    /// as a single clone (discards and write-zeroes with one clone).
    pub(crate) fn accept_partial(&mut self, sectors: u32) {
        // SAFETY: a DM clone inside map(), not a duplicate; the length bound
        // is the caller's (checked) contract.
        unsafe { b::dm_accept_partial_bio(self.0.as_ptr().cast(), sectors) };
    }

    /// Ends the RCU read-side critical section `guard`, adds one to `counter`
    /// and sends the bio to `dev` at `sector`: map()'s last call into C.
    #[inline(always)]
    pub(crate) fn remap_counted(
        &mut self,
        dev: &TargetDevice,
        sector: u64,
        counter: Slot<'_>,
        guard: ReadGuard,
    ) {
        // SAFETY: DM core owns the bio in map(); `dev`'s bdev lives as long as
        // the target; `counter` borrows live per-CPU memory; `guard` proves the
        // RCU-sched section the call ends.
        unsafe {
            b::dm_switch_unlock_count_remap(
                self.0.as_ptr().cast(),
                dev.bdev().cast(),
                sector,
                counter.as_percpu_ptr(),
            )
        };
        // Ended by the C function: dropping the guard would unlock twice.
        core::mem::forget(guard);
    }

    /// Sends the bio to `dev` at `sector`.
    #[inline(always)]
    pub(crate) fn remap(&mut self, dev: &TargetDevice, sector: u64) {
        // SAFETY: the bio is owned by DM core during map() and `dev`'s bdev is
        // referenced for the target's lifetime, which outlasts its bios.
        unsafe { b::dm_switch_bio_remap(self.0.as_ptr().cast(), dev.bdev().cast(), sector) };
    }
}

/// Bounded text output into a DM result buffer (truncates like `DMEMIT`).
pub(crate) struct TextOut<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl fmt::Write for TextOut<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Keep one byte for the NUL.
        let room = self.buf.len().saturating_sub(self.len + 1);
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if let Some(nul) = self.buf.get_mut(self.len) {
            *nul = 0;
        }
        Ok(())
    }
}

impl TextOut<'_> {
    /// # Safety
    /// `buf` must be valid for writes of `len` bytes for `'a`.
    unsafe fn new<'a>(buf: *mut c_char, len: u32) -> TextOut<'a> {
        let buf: &mut [u8] = if buf.is_null() || len == 0 {
            &mut []
        } else {
            // SAFETY: per the contract.
            unsafe { core::slice::from_raw_parts_mut(buf.cast(), len as usize) }
        };
        if let Some(first) = buf.first_mut() {
            *first = 0;
        }
        TextOut { buf, len: 0 }
    }
}

/// Collects the NUL-terminated argument strings DM passes (`argc`, `argv`).
///
/// # Safety
/// `argv` must point to `argc` valid C strings that outlive `'a`.
unsafe fn args<'a>(argc: u32, argv: *mut *mut c_char) -> Result<KVec<&'a CStr>> {
    let mut v = KVec::with_capacity(argc as usize, GFP_KERNEL)?;
    for i in 0..argc as usize {
        // SAFETY: per the contract, `argv[i]` for `i < argc` is a valid C string.
        v.push(unsafe { CStr::from_char_ptr(*argv.add(i)) }, GFP_KERNEL)?;
    }
    Ok(v)
}

/// A registered target type; unregistered on drop.
pub(crate) struct Registration<T: Target> {
    tt: Pin<KBox<b::target_type>>,
    _t: PhantomData<T>,
}

// SAFETY: after registration the target_type is only read by DM core, and
// unregistering may happen from any task.
unsafe impl<T: Target> Send for Registration<T> {}
// SAFETY: `&Registration` gives no access to the target_type.
unsafe impl<T: Target> Sync for Registration<T> {}

impl<T: Target> Registration<T> {
    /// Registers target type `name` (a static string) with `version`.
    pub(crate) fn new(
        name: &'static CStr,
        version: [u32; 3],
        module: &'static ThisModule,
    ) -> Result<Self> {
        // SAFETY: all-zero is a valid target_type (null pointers, no callbacks).
        let mut tt: b::target_type = unsafe { core::mem::zeroed() };
        tt.name = name.as_char_ptr();
        tt.module = module.as_ptr().cast();
        tt.version = version;
        tt.features = u64::from(b::DM_TARGET_NOWAIT);
        tt.ctr = Some(Self::ctr);
        tt.dtr = Some(Self::dtr);
        tt.map = Some(Self::map);
        tt.status = Some(Self::status);
        tt.message = Some(Self::message);
        tt.postsuspend = Some(Self::postsuspend);
        tt.resume = Some(Self::resume);
        tt.iterate_devices = Some(Self::iterate_devices);
        tt.prepare_ioctl = Some(Self::prepare_ioctl);
        let mut tt = KBox::pin(tt, GFP_KERNEL)?;
        // SAFETY: `tt` is fully initialized and pinned in memory we own until
        // `drop` unregisters it, which DM requires of a registered type.
        to_result(unsafe { b::dm_register_target(tt.as_mut().get_unchecked_mut()) })?;
        Ok(Self {
            tt,
            _t: PhantomData,
        })
    }

    /// # Safety
    /// `ti` must be a live target whose `private` is ours (set by `ctr`).
    unsafe fn target<'a>(ti: *mut b::dm_target) -> &'a T {
        // SAFETY: per the contract, `private` is a `KBox<T>` leaked by `ctr`
        // and reclaimed only in `dtr`, after every other callback.
        unsafe { &*(*ti).private.cast::<T>() }
    }

    /// # Safety
    /// Only DM core calls this, with the arguments its `target_type` callback
    /// contract guarantees (a live target; for all but `ctr`, one `ctr` built).
    unsafe extern "C" fn ctr(
        ti: *mut b::dm_target,
        argc: ffi::c_uint,
        argv: *mut *mut c_char,
    ) -> ffi::c_int {
        let Some(ti) = NonNull::new(ti) else {
            return EINVAL.to_errno();
        };
        // SAFETY: DM core calls ctr with a live target of a live table, and
        // `argv` holding `argc` strings that live through the call.
        let (info, args) = unsafe { (TargetInfo::of(ti.as_ptr()), args(argc, argv)) };
        let mut ctx = TargetCtx {
            ti,
            info,
            _p: PhantomData,
        };
        let result = match args {
            Ok(args) => T::new(&mut ctx, &args),
            Err(e) => Err(CtrError {
                err: e,
                msg: c_str!("Cannot allocate argument list"),
            }),
        };
        match result.and_then(|t| {
            KBox::new(t, GFP_KERNEL).map_err(|_| CtrError {
                err: ENOMEM,
                msg: c_str!("Cannot allocate target context"),
            })
        }) {
            Ok(t) => {
                // SAFETY: the target is exclusively ours during ctr; `private`
                // owns the box until dtr.
                unsafe { (*ti.as_ptr()).private = KBox::into_raw(t).cast() };
                0
            }
            Err(e) => {
                // SAFETY: `error` takes a static string DM never frees.
                unsafe { (*ti.as_ptr()).error = e.msg.as_char_ptr().cast_mut() };
                e.err.to_errno()
            }
        }
    }

    /// # Safety
    /// Only DM core calls this, with the arguments its `target_type` callback
    /// contract guarantees (a live target; for all but `ctr`, one `ctr` built).
    unsafe extern "C" fn dtr(ti: *mut b::dm_target) {
        // SAFETY: dtr is the last callback for a target whose ctr succeeded;
        // `private` is the box leaked by ctr.
        drop(unsafe { KBox::from_raw((*ti).private.cast::<T>()) });
    }

    /// # Safety
    /// Only DM core calls this, with the arguments its `target_type` callback
    /// contract guarantees (a live target; for all but `ctr`, one `ctr` built).
    unsafe extern "C" fn map(ti: *mut b::dm_target, bio: *mut kb::bio) -> ffi::c_int {
        // SAFETY: map runs for a live, constructed target; DM core owns `bio`.
        let t = unsafe { Self::target(ti) };
        // SAFETY: DM core maps a bio it owns: never null.
        let bio = unsafe { NonNull::new_unchecked(bio.cast::<kb::bio>()) };
        match t.map(&mut Bio(bio)) {
            MapResult::Remapped => b::DM_MAPIO_REMAPPED as ffi::c_int,
        }
    }

    /// # Safety
    /// Only DM core calls this, with the arguments its `target_type` callback
    /// contract guarantees (a live target; for all but `ctr`, one `ctr` built).
    unsafe extern "C" fn status(
        ti: *mut b::dm_target,
        kind: b::status_type_t,
        _flags: ffi::c_uint,
        result: *mut c_char,
        maxlen: ffi::c_uint,
    ) {
        // SAFETY: live target; `result` holds `maxlen` bytes.
        let (t, mut out) = unsafe { (Self::target(ti), TextOut::new(result, maxlen)) };
        let kind = match kind {
            b::status_type_t_STATUSTYPE_INFO => StatusKind::Info,
            b::status_type_t_STATUSTYPE_TABLE => StatusKind::Table,
            _ => return,
        };
        t.status(kind, &mut out);
    }

    /// # Safety
    /// Only DM core calls this, with the arguments its `target_type` callback
    /// contract guarantees (a live target; for all but `ctr`, one `ctr` built).
    unsafe extern "C" fn message(
        ti: *mut b::dm_target,
        argc: ffi::c_uint,
        argv: *mut *mut c_char,
        result: *mut c_char,
        maxlen: ffi::c_uint,
    ) -> ffi::c_int {
        // SAFETY: live target of a live device; argv/result as DM passes them.
        let (t, info, args, mut out) = unsafe {
            (
                Self::target(ti),
                TargetInfo::of(ti),
                args(argc, argv),
                TextOut::new(result, maxlen),
            )
        };
        match args.and_then(|a| t.message(info, &a, &mut out)) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    /// Only DM core calls this, with the arguments its `target_type` callback
    /// contract guarantees (a live target; for all but `ctr`, one `ctr` built).
    unsafe extern "C" fn postsuspend(ti: *mut b::dm_target) {
        // SAFETY: live target of a live device.
        let (t, info) = unsafe { (Self::target(ti), TargetInfo::of(ti)) };
        t.postsuspend(info);
    }

    /// # Safety
    /// Only DM core calls this, with the arguments its `target_type` callback
    /// contract guarantees (a live target; for all but `ctr`, one `ctr` built).
    unsafe extern "C" fn resume(ti: *mut b::dm_target) {
        // SAFETY: live target of a live device.
        let (t, info) = unsafe { (Self::target(ti), TargetInfo::of(ti)) };
        t.resume(info);
    }

    /// # Safety
    /// Only DM core calls this, with the arguments its `target_type` callback
    /// contract guarantees (a live target; for all but `ctr`, one `ctr` built).
    unsafe extern "C" fn iterate_devices(
        ti: *mut b::dm_target,
        callout: b::iterate_devices_callout_fn,
        data: *mut ffi::c_void,
    ) -> ffi::c_int {
        let Some(callout) = callout else { return 0 };
        // SAFETY: live target.
        let (t, len) = unsafe { (Self::target(ti), (*ti).len) };
        for (dev, start) in t.devices() {
            // SAFETY: DM's callout takes the target, a referenced dm_dev, the
            // start sector and the length used on it, and `data` unchanged.
            let r = unsafe { callout(ti, dev.dev.as_ptr(), start, len, data) };
            if r != 0 {
                return r;
            }
        }
        0
    }

    /// # Safety
    /// Only DM core calls this, with the arguments its `target_type` callback
    /// contract guarantees (a live target; for all but `ctr`, one `ctr` built).
    unsafe extern "C" fn prepare_ioctl(
        ti: *mut b::dm_target,
        bdev: *mut *mut kb::block_device,
    ) -> ffi::c_int {
        // SAFETY: live target of a live device; `bdev` is DM's out pointer.
        let (t, info) = unsafe { (Self::target(ti), TargetInfo::of(ti)) };
        let (dev, exact) = t.ioctl_device(info);
        // SAFETY: `bdev` is a valid out pointer; the bdev stays referenced.
        unsafe { *bdev = dev.bdev().cast() };
        i32::from(!exact)
    }
}

impl<T: Target> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: registered in `new`; DM holds no table of this type any more
        // (each holds a module reference, so the module cannot be unloading).
        unsafe { b::dm_unregister_target(self.tt.as_mut().get_unchecked_mut()) };
    }
}
