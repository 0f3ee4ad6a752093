// SPDX-License-Identifier: GPL-2.0

//! RCU: a read-side guard and a pointer cell published with release semantics.
//!
//! 6.12's `kernel` crate has no RCU abstraction. Readers use RCU-sched
//! sections (`rcu_read_lock_sched()`: preemption disabled), which
//! `synchronize_rcu()` waits for since v5.0: one per-CPU increment and
//! decrement, emitted inline ([`super::preempt`]), where preemptible RCU's
//! `rcu_read_unlock()` is an out-of-line call. Readers never sleep. The
//! inline form skips what the debugging variant of `rcu_read_lock_sched()`
//! adds (lockdep's annotation); nothing here asks lockdep about RCU-sched.

use crate::kapi::preempt;
use core::{
    marker::PhantomData,
    ptr,
    sync::atomic::{AtomicPtr, Ordering},
};
use kernel::alloc::KBox;

/// An RCU(-sched) read-side critical section, ended when dropped. Must not
/// sleep. Preemption is disabled while it lives, so it also proves that
/// this-CPU data stays this CPU's ([`super::iostat::IoStats::account`]).
///
/// Not `Send`: it must end on the CPU/task that started it.
pub(crate) struct ReadGuard(PhantomData<*mut ()>);

impl ReadGuard {
    /// Enters a read-side critical section.
    #[inline(always)]
    pub(crate) fn new() -> Self {
        // The guard's Drop pairs it.
        preempt::disable();
        Self(PhantomData)
    }
}

impl Drop for ReadGuard {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: paired with the disable in `new`, on the same task
        // (preemption is disabled in between, so also on the same CPU).
        unsafe { preempt::enable() };
    }
}

/// Waits for every RCU read-side critical section in progress to end.
pub(crate) fn synchronize() {
    // SAFETY: may sleep; every caller runs in process context without locks
    // held that RCU readers could need.
    unsafe { kernel::bindings::synchronize_rcu() };
}

/// An owned, optional `T` that RCU readers can read while a writer replaces it.
///
/// Readers get `&T` for the lifetime of a [`ReadGuard`]; writers (serialized by
/// the caller) publish a new value with one release store and get the old one
/// back as [`Retired`], which frees it only after a grace period.
pub(crate) struct RcuBox<T> {
    ptr: AtomicPtr<T>,
}

// SAFETY: the cell owns a `KBox<T>`; readers share `&T` across CPUs (needs
// `T: Sync`) and the value may be dropped on another CPU (needs `T: Send`).
unsafe impl<T: Send + Sync> Sync for RcuBox<T> {}
// SAFETY: as above, ownership of the boxed `T` moves with the cell.
unsafe impl<T: Send + Sync> Send for RcuBox<T> {}

impl<T> RcuBox<T> {
    /// A cell holding `value` (not yet visible to any reader).
    pub(crate) fn new(value: Option<KBox<T>>) -> Self {
        Self {
            ptr: AtomicPtr::new(value.map_or(ptr::null_mut(), KBox::into_raw)),
        }
    }

    /// The current value, valid while `_guard` lives.
    #[inline(always)]
    pub(crate) fn read<'a>(&'a self, _guard: &'a ReadGuard) -> Option<&'a T> {
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: non-null pointers come from `KBox::into_raw`; a replaced value
        // is freed only after a grace period (`Retired`), which cannot end while
        // the read-side section `_guard` proves is open, so it outlives `'a`.
        unsafe { p.as_ref() }
    }

    /// Publishes `new` (or empties the cell) and returns the previous value.
    ///
    /// Callers must serialize writers (the per-device writer mutex does).
    pub(crate) fn replace(&self, new: Option<KBox<T>>) -> Retired<T> {
        let new = new.map_or(ptr::null_mut(), KBox::into_raw);
        Retired(self.ptr.swap(new, Ordering::AcqRel))
    }

    /// Unpublishes the value (the cell becomes empty); it stays readable by
    /// readers that already loaded it until the returned handle is freed or
    /// republished with [`RcuBox::publish`].
    pub(crate) fn take(&self) -> Retired<T> {
        Retired(self.ptr.swap(ptr::null_mut(), Ordering::AcqRel))
    }

    /// Publishes a value unpublished from another cell (no copy, no grace
    /// period needed: it is not freed) and returns the value it replaces.
    pub(crate) fn publish(&self, value: Retired<T>) -> Retired<T> {
        let p = core::mem::ManuallyDrop::new(value).0;
        Retired(self.ptr.swap(p, Ordering::AcqRel))
    }

    /// The current value, for the writer side (callers serialize writers, so
    /// nobody can retire it while the returned reference lives).
    pub(crate) fn writer_view(&self) -> Option<&T> {
        // SAFETY: see `read`; writers are serialized by the caller and only a
        // writer retires values, so the value lives as long as `&self` here.
        unsafe { self.ptr.load(Ordering::Acquire).as_ref() }
    }
}

impl<T> Drop for RcuBox<T> {
    fn drop(&mut self) {
        let p = *self.ptr.get_mut();
        if !p.is_null() {
            // SAFETY: `p` came from `KBox::into_raw`; `&mut self` proves no
            // reader holds the cell any more (its owner is being dropped after
            // its last reader, see the callers).
            drop(unsafe { KBox::from_raw(p) });
        }
    }
}

/// A value unpublished from an [`RcuBox`]: freed after a grace period.
pub(crate) struct Retired<T>(*mut T);

impl<T> Retired<T> {
    /// Waits for readers that may still see the value, then frees it.
    pub(crate) fn free(self) {
        drop(self);
    }
}

impl<T> Drop for Retired<T> {
    fn drop(&mut self) {
        if self.0.is_null() {
            return;
        }
        synchronize();
        // SAFETY: the pointer came from `KBox::into_raw`, is no longer
        // reachable from the cell, and the grace period above ended every
        // read-side section that could have loaded it.
        drop(unsafe { KBox::from_raw(self.0) });
    }
}
