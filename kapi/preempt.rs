// SPDX-License-Identifier: GPL-2.0

//! The preemption count and this-CPU operations, without a call into C on
//! the I/O path.
//!
//! C code gets `preempt_disable()`, `preempt_enable()`, `this_cpu_inc()` and
//! `this_cpu_read()` as static inline functions or macros
//! (`arch/x86/include/asm/preempt.h`, `asm/percpu.h`); Rust cannot inline
//! them. On x86-64 with a preemptible build (`CONFIG_PREEMPT_DYNAMIC`, as
//! Debian's and our kernels are), this module emits the same instructions as
//! those inlines: `incl`/`decl` of `pcpu_hot.preempt_count` through `%gs`,
//! the call to the `preempt_schedule` static-call trampoline when the count
//! drops to zero with a reschedule pending, `incq` of a per-CPU `u64` and a
//! `%gs`-relative load of a per-CPU pointer. Other configurations call the C
//! glue instead. The inline forms skip what the debugging variants of the C
//! functions add (lockdep's RCU-sched annotation, preemption tracing); none
//! of our code asks lockdep whether an RCU-sched section is held.

#[cfg(all(target_arch = "x86_64", CONFIG_PREEMPT_DYNAMIC))]
mod imp {
    use core::{arch::asm, mem::offset_of};
    use kernel::bindings as kb;

    /// Offset of `preempt_count` in `struct pcpu_hot` (whose anonymous union
    /// and struct start at its offset 0).
    const PREEMPT_COUNT: usize =
        offset_of!(kb::pcpu_hot__bindgen_ty_1__bindgen_ty_1, preempt_count);
    const _: () = assert!(offset_of!(kb::pcpu_hot, __bindgen_anon_1) == 0);
    const _: () = assert!(offset_of!(kb::pcpu_hot__bindgen_ty_1, __bindgen_anon_1) == 0);

    extern "C" {
        /// `preempt_schedule`'s static-call trampoline (exported with
        /// `EXPORT_STATIC_CALL_TRAMP`): it jumps to `preempt_schedule_thunk`,
        /// which saves every register, or returns when the boot-time
        /// preemption model is not full preemption.
        #[link_name = "__SCT__preempt_schedule"]
        fn preempt_schedule_trampoline();
    }

    #[inline(always)]
    pub(super) fn disable() {
        // No `nomem` option: the block is a compiler barrier, like the C
        // `barrier()` of `preempt_disable()`.
        // SAFETY: increments this CPU's preemption count, as
        // `__preempt_count_add(1)` does, in one unsplittable instruction.
        unsafe {
            asm!(
                "incl %gs:{hot}+{off}(%rip)",
                hot = sym kb::pcpu_hot,
                off = const PREEMPT_COUNT,
                options(att_syntax, nostack),
            )
        };
    }

    /// # Safety
    /// Pairs with an earlier [`disable`] on this CPU.
    #[inline(always)]
    pub(super) unsafe fn enable() {
        // `preempt_enable()`: the count reaches zero only with no other
        // disabling and a reschedule pending (the inverted
        // PREEMPT_NEED_RESCHED bit). The block may call, so it is not
        // `nostack`.
        // SAFETY: paired with `disable` (caller's contract); the trampoline's
        // target preserves every register, so nothing else is clobbered.
        unsafe {
            asm!(
                "decl %gs:{hot}+{off}(%rip)",
                "jnz 2f",
                "call {schedule}",
                "2:",
                hot = sym kb::pcpu_hot,
                off = const PREEMPT_COUNT,
                schedule = sym preempt_schedule_trampoline,
                options(att_syntax),
            )
        };
    }

    /// # Safety
    /// `counter` is the per-CPU address of a live per-CPU `u64`.
    #[inline(always)]
    pub(super) unsafe fn this_cpu_inc(counter: *mut u64) {
        // SAFETY: `this_cpu_inc()`: one `incq` relative to this CPU's per-CPU
        // base, atomic against preemption and interrupts on this CPU; the
        // address is a live per-CPU allocation (caller's contract).
        unsafe {
            asm!(
                "incq %gs:({counter})",
                counter = in(reg) counter,
                options(att_syntax, nostack),
            )
        };
    }

    /// # Safety
    /// `ptr` is the per-CPU address of a live per-CPU pointer.
    #[inline(always)]
    pub(super) unsafe fn this_cpu_read_ptr<T>(ptr: *mut *mut T) -> *mut T {
        let value: *mut T;
        // SAFETY: `this_cpu_read()`: one load relative to this CPU's per-CPU
        // base, from a live per-CPU allocation (caller's contract).
        unsafe {
            asm!(
                "movq %gs:({ptr}), {value}",
                ptr = in(reg) ptr,
                value = lateout(reg) value,
                options(att_syntax, nostack, readonly, preserves_flags),
            )
        };
        value
    }
}

#[cfg(not(all(target_arch = "x86_64", CONFIG_PREEMPT_DYNAMIC)))]
mod imp {
    use crate::kapi::bindings;

    #[inline(always)]
    pub(super) fn disable() {
        // SAFETY: preempt_disable() has no preconditions.
        unsafe { bindings::kapi_preempt_disable() };
    }

    /// # Safety
    /// Pairs with an earlier [`disable`] on this CPU.
    #[inline(always)]
    pub(super) unsafe fn enable() {
        // SAFETY: paired with `disable` (caller's contract).
        unsafe { bindings::kapi_preempt_enable() };
    }

    /// # Safety
    /// `counter` is the per-CPU address of a live per-CPU `u64`.
    #[inline(always)]
    pub(super) unsafe fn this_cpu_inc(counter: *mut u64) {
        // SAFETY: a live per-CPU `u64` (caller's contract).
        unsafe { bindings::kapi_this_cpu_inc(counter) };
    }

    /// # Safety
    /// `ptr` is the per-CPU address of a live per-CPU pointer.
    #[inline(always)]
    pub(super) unsafe fn this_cpu_read_ptr<T>(ptr: *mut *mut T) -> *mut T {
        // SAFETY: a live per-CPU pointer (caller's contract).
        unsafe { bindings::kapi_this_cpu_read_ptr(ptr.cast()).cast() }
    }
}

/// Disables preemption on this CPU (`preempt_disable()`); undone by
/// [`enable`]. Nested sections are counted.
#[inline(always)]
pub(crate) fn disable() {
    imp::disable();
}

/// Enables preemption again (`preempt_enable()`), rescheduling if one is due.
///
/// # Safety
/// Pairs with an earlier [`disable`] on this CPU.
#[inline(always)]
pub(crate) unsafe fn enable() {
    // SAFETY: the caller's contract is the one `imp::enable` needs.
    unsafe { imp::enable() };
}

/// Adds one to this CPU's copy of a per-CPU `u64` (`this_cpu_inc()`).
///
/// # Safety
/// `counter` is the per-CPU address of a live per-CPU `u64`.
#[inline(always)]
pub(crate) unsafe fn this_cpu_inc(counter: *mut u64) {
    // SAFETY: the caller's contract is the one `imp::this_cpu_inc` needs.
    unsafe { imp::this_cpu_inc(counter) };
}

/// This CPU's copy of a per-CPU pointer (`this_cpu_read()`). Which CPU that
/// is can change as soon as preemption is enabled.
///
/// # Safety
/// `ptr` is the per-CPU address of a live per-CPU pointer.
#[inline(always)]
pub(crate) unsafe fn this_cpu_read_ptr<T>(ptr: *mut *mut T) -> *mut T {
    // SAFETY: the caller's contract is the one `imp::this_cpu_read_ptr` needs.
    unsafe { imp::this_cpu_read_ptr(ptr) }
}
