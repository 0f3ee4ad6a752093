// SPDX-License-Identifier: GPL-2.0

//! Per-CPU event counters: each CPU increments its own copy (no atomics, no
//! shared cache line on the I/O path); readers add the copies up.

use crate::kapi::{bindings, preempt};
use core::{marker::PhantomData, ptr::NonNull};
use kernel::prelude::*;

/// One counter of a [`Counters`], borrowed for as long as the counters live.
pub(crate) struct Slot<'a> {
    ptr: *mut u64,
    _counters: PhantomData<&'a ()>,
}

impl Slot<'_> {
    /// Adds one to this CPU's copy (`this_cpu_inc()`): no atomic, no shared
    /// cache line, safe against preemption and interrupts.
    #[inline(always)]
    pub(crate) fn increment(&self) {
        // SAFETY: `ptr` is the per-CPU address of a counter of a live
        // `Counters` (borrowed for the slot's lifetime).
        unsafe { preempt::this_cpu_inc(self.ptr) };
    }
}

/// `N` per-CPU `u64` counters.
pub(crate) struct Counters<const N: usize> {
    ptr: NonNull<u64>,
}

// SAFETY: the per-CPU area is owned by this value; a `Slot` increment touches
// only this CPU's copy (this_cpu_inc: preemption- and irq-safe) and `sum` only
// reads, so sharing and sending between CPUs is sound.
unsafe impl<const N: usize> Sync for Counters<N> {}
// SAFETY: see above.
unsafe impl<const N: usize> Send for Counters<N> {}

impl<const N: usize> Counters<N> {
    /// Allocates `N` zeroed counters per possible CPU.
    pub(crate) fn new() -> Result<Self> {
        let n = u32::try_from(N).map_err(|_| EINVAL)?;
        // SAFETY: plain allocation; a null return is handled below.
        let p = unsafe { bindings::kapi_percpu_u64_alloc(n) };
        Ok(Self {
            ptr: NonNull::new(p).ok_or(ENOMEM)?,
        })
    }

    /// Counter `I`, to be incremented on the I/O path.
    #[inline(always)]
    pub(crate) fn slot<const I: usize>(&self) -> Slot<'_> {
        const { assert!(I < N) };
        Slot {
            // A per-CPU address is an offset, not dereferenceable memory:
            // wrapping arithmetic on it is what the C side does too.
            ptr: self.ptr.as_ptr().wrapping_add(I),
            _counters: PhantomData,
        }
    }

    /// Counter `idx` summed over all CPUs (racy but monotonic per CPU).
    pub(crate) fn sum(&self, idx: usize) -> u64 {
        if idx >= N {
            return 0;
        }
        // SAFETY: `ptr` is a live per-CPU allocation of `N` u64s and `idx < N`;
        // summing only reads each CPU's copy.
        unsafe { bindings::kapi_percpu_u64_sum(self.ptr.as_ptr(), idx as u32) }
    }
}

impl<const N: usize> Drop for Counters<N> {
    fn drop(&mut self) {
        // SAFETY: allocated by kapi_percpu_u64_alloc and freed only here.
        unsafe { bindings::kapi_percpu_u64_free(self.ptr.as_ptr()) };
    }
}
