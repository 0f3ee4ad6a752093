// SPDX-License-Identifier: GPL-2.0

//! Per-CPU event counters: each CPU increments its own copy (no atomics, no
//! shared cache line on the I/O path); readers add the copies up.

use crate::bindings;
use core::ptr::NonNull;
use kernel::prelude::*;

/// `N` per-CPU `u64` counters.
pub(crate) struct Counters<const N: usize> {
    ptr: NonNull<u64>,
}

// SAFETY: the per-CPU area is owned by this value; `inc` touches only the
// current CPU's copy (this_cpu_inc is safe against preemption and interrupts)
// and `sum` only reads, so sharing and sending between CPUs is sound.
unsafe impl<const N: usize> Sync for Counters<N> {}
// SAFETY: see above.
unsafe impl<const N: usize> Send for Counters<N> {}

impl<const N: usize> Counters<N> {
    /// Allocates `N` zeroed counters per possible CPU.
    pub(crate) fn new() -> Result<Self> {
        let n = u32::try_from(N).map_err(|_| EINVAL)?;
        // SAFETY: plain allocation; a null return is handled below.
        let p = unsafe { bindings::dm_switch_counters_alloc(n) };
        Ok(Self {
            ptr: NonNull::new(p).ok_or(ENOMEM)?,
        })
    }

    /// Adds one to counter `idx` on the current CPU.
    #[inline(always)]
    pub(crate) fn inc(&self, idx: usize) {
        if idx < N {
            // SAFETY: `ptr` is a live per-CPU allocation of `N` u64s and
            // `idx < N` (a compile-time constant at every call site).
            unsafe { bindings::dm_switch_counter_inc(self.ptr.as_ptr(), idx as u32) };
        }
    }

    /// Counter `idx` summed over all CPUs (racy but monotonic per CPU).
    pub(crate) fn sum(&self, idx: usize) -> u64 {
        if idx >= N {
            return 0;
        }
        // SAFETY: as in `inc`; summing only reads each CPU's copy.
        unsafe { bindings::dm_switch_counter_sum(self.ptr.as_ptr(), idx as u32) }
    }
}

impl<const N: usize> Drop for Counters<N> {
    fn drop(&mut self) {
        // SAFETY: allocated by dm_switch_counters_alloc and freed only here.
        unsafe { bindings::dm_switch_counters_free(self.ptr.as_ptr()) };
    }
}
