// SPDX-License-Identifier: GPL-2.0

//! Registration of a target type with DM core, and the `extern "C"`
//! trampolines its `struct target_type` points at.

use super::{
    bio::Bio,
    device::TargetCtx,
    text::{args, TextOut},
    CtrError, MapResult, StatusKind, Target, TargetInfo,
};
use crate::kapi::bindings as b;
use core::ptr::NonNull;
use kernel::c_str;
use kernel::ffi::{self, c_char};
use kernel::{bindings as kb, error::to_result, prelude::*, types::Opaque, ThisModule};

/// `Some(callback)` if the target implements it (`HAS_*` of `#[vtable]`).
macro_rules! callback {
    ($has:expr, $f:expr) => {
        if $has {
            Some($f)
        } else {
            None
        }
    };
}

/// The registered `target_type` and the type's shared state, in one pinned
/// allocation.
///
/// # Invariants
/// `tt` is the first field (`repr(C)`), so a pointer to it (DM's `ti->type`)
/// is a pointer to the whole value.
#[repr(C)]
struct TypeData<T: Target> {
    tt: Opaque<b::target_type>,
    shared: T::Shared,
}

/// A registered target type; unregistered when dropped.
///
/// # Invariants
/// `data.tt` is registered with DM core for as long as this value lives.
pub(crate) struct Registration<T: Target> {
    data: Pin<KBox<TypeData<T>>>,
}

// SAFETY: after registration DM core only reads the target_type (and links
// it in its list under its own lock); `shared` is `Send + Sync`.
unsafe impl<T: Target> Send for Registration<T> {}
// SAFETY: `&Registration` gives access to nothing but `&T::Shared`, which is
// `Sync`.
unsafe impl<T: Target> Sync for Registration<T> {}

impl<T: Target> Registration<T> {
    /// The `struct target_type` of `T`: only the callbacks `T` implements.
    const TYPE: b::target_type = {
        // SAFETY: all-zero is a valid target_type (null pointers, no callbacks).
        let mut tt: b::target_type = unsafe { core::mem::zeroed() };
        tt.name = T::NAME.as_char_ptr();
        tt.version = T::VERSION;
        tt.features = if T::NOWAIT {
            b::DM_TARGET_NOWAIT as u64
        } else {
            0
        };
        tt.ctr = Some(Self::ctr);
        tt.dtr = Some(Self::dtr);
        tt.map = Some(Self::map);
        tt.status = callback!(T::HAS_STATUS, Self::status);
        tt.message = callback!(T::HAS_MESSAGE, Self::message);
        tt.postsuspend = callback!(T::HAS_POSTSUSPEND, Self::postsuspend);
        tt.preresume = callback!(T::HAS_PRERESUME, Self::preresume);
        tt.resume = callback!(T::HAS_RESUME, Self::resume);
        tt.iterate_devices = callback!(T::HAS_DEVICES, Self::iterate_devices);
        tt.prepare_ioctl = callback!(T::HAS_IOCTL_DEVICE, Self::prepare_ioctl);
        tt
    };

    /// Registers target type `T` of `module`, owning `shared` until dropped.
    pub(crate) fn new(module: &'static ThisModule, shared: T::Shared) -> Result<Self> {
        let mut tt = Self::TYPE;
        tt.module = module.as_ptr().cast();
        let data = KBox::pin(
            TypeData {
                tt: Opaque::new(tt),
                shared,
            },
            GFP_KERNEL,
        )?;
        // SAFETY: `tt` is fully initialized and pinned in memory we own until
        // `drop` unregisters it, which DM requires of a registered type.
        to_result(unsafe { b::dm_register_target(data.tt.get()) })?;
        // INVARIANT: registered just above.
        Ok(Self { data })
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
    /// contract guarantees (a live target of this type under construction).
    unsafe extern "C" fn ctr(
        ti: *mut b::dm_target,
        argc: ffi::c_uint,
        argv: *mut *mut c_char,
    ) -> ffi::c_int {
        let Some(ti) = NonNull::new(ti) else {
            return EINVAL.to_errno();
        };
        // SAFETY: a live target under construction, ours until ctr returns;
        // `argv` holds `argc` strings that live through the call; `ti->type`
        // is the first field of our TypeData, live while any target exists.
        let (mut ctx, args, shared) = unsafe {
            (
                TargetCtx::new(ti),
                args(argc, argv),
                &(*(*ti.as_ptr()).type_.cast::<TypeData<T>>()).shared,
            )
        };
        let result = match args {
            Ok(args) => T::new(&mut ctx, &args, shared),
            Err(err) => Err(CtrError {
                err,
                msg: c_str!("Cannot allocate argument list"),
            }),
        };
        let boxed = result.and_then(|t| {
            KBox::new(t, GFP_KERNEL)
                .map_err(|_| CtrError::nomem(c_str!("Cannot allocate target context")))
        });
        match boxed {
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
    /// Only DM core calls this, once, as the last callback of a target whose
    /// `ctr` succeeded.
    unsafe extern "C" fn dtr(ti: *mut b::dm_target) {
        // SAFETY: `private` is the box leaked by ctr, used by no other
        // callback any more.
        drop(unsafe { KBox::from_raw((*ti).private.cast::<T>()) });
    }

    /// # Safety
    /// Only DM core calls this, for a constructed target and a bio it owns.
    unsafe extern "C" fn map(ti: *mut b::dm_target, bio: *mut kb::bio) -> ffi::c_int {
        // SAFETY: map runs for a live, constructed target; DM core owns `bio`
        // (never null) through the call.
        let (t, bio) = unsafe { (Self::target(ti), Bio::from_raw(NonNull::new_unchecked(bio))) };
        match t.map(bio) {
            MapResult::Remapped => b::DM_MAPIO_REMAPPED as ffi::c_int,
        }
    }

    /// # Safety
    /// Only DM core calls this, for a constructed target, with a result
    /// buffer of `maxlen` bytes.
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
    /// Only DM core calls this, for a constructed target of a live device,
    /// with `argc` strings in `argv` and a result buffer of `maxlen` bytes.
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
    /// Only DM core calls this, for a constructed target of a live device.
    unsafe extern "C" fn postsuspend(ti: *mut b::dm_target) {
        // SAFETY: live target of a live device.
        let (t, info) = unsafe { (Self::target(ti), TargetInfo::of(ti)) };
        t.postsuspend(info);
    }

    /// # Safety
    /// Only DM core calls this, for a constructed target of a live device.
    unsafe extern "C" fn preresume(ti: *mut b::dm_target) -> ffi::c_int {
        // SAFETY: live target of a live device.
        let (t, info) = unsafe { (Self::target(ti), TargetInfo::of(ti)) };
        match t.preresume(info) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    /// Only DM core calls this, for a constructed target of a live device.
    unsafe extern "C" fn resume(ti: *mut b::dm_target) {
        // SAFETY: live target of a live device.
        let (t, info) = unsafe { (Self::target(ti), TargetInfo::of(ti)) };
        t.resume(info);
    }

    /// # Safety
    /// Only DM core calls this, for a constructed target, with a callout that
    /// takes `data`.
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
            let r = unsafe { callout(ti, dev.as_raw(), start, len, data) };
            if r != 0 {
                return r;
            }
        }
        0
    }

    /// # Safety
    /// Only DM core calls this, for a constructed target of a live device,
    /// with an out pointer for the bdev.
    unsafe extern "C" fn prepare_ioctl(
        ti: *mut b::dm_target,
        bdev: *mut *mut kb::block_device,
    ) -> ffi::c_int {
        // SAFETY: live target of a live device.
        let (t, info) = unsafe { (Self::target(ti), TargetInfo::of(ti)) };
        let (dev, exact) = t.ioctl_device(info);
        // SAFETY: `bdev` is a valid out pointer; the bdev stays referenced
        // for the target's lifetime.
        unsafe { *bdev = dev.bdev().cast() };
        i32::from(!exact)
    }
}

impl<T: Target> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: registered (type invariant); DM holds no table of this type
        // any more (each holds a module reference, so the module cannot be
        // unloading while one exists).
        unsafe { b::dm_unregister_target(self.data.tt.get()) };
    }
}
