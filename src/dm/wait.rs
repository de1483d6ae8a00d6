// SPDX-License-Identifier: GPL-2.0

//! Counters that process context can wait on until they drop to zero,
//! decremented from any context (bio completions): the kernel's
//! `wait_var_event()` / `wake_up_var()`.

use core::sync::atomic::{AtomicI32, Ordering};

use super::bindings as dmb;

/// A count of things in flight that a waiter needs to see reach zero.
///
/// `atomic_t` in memory, so the C shim can wait on it.
#[repr(transparent)]
pub(crate) struct WaitCounter(AtomicI32);

impl WaitCounter {
    /// A counter at zero.
    pub(crate) const fn new() -> Self {
        Self(AtomicI32::new(0))
    }

    /// The current count.
    pub(crate) fn get(&self) -> u32 {
        u32::try_from(self.0.load(Ordering::Acquire)).unwrap_or(0)
    }

    /// Counts one more.
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }

    /// Counts one less (never below zero), from any context; wakes the
    /// waiters when the count reaches zero.
    pub(crate) fn dec(&self) {
        let before = self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| Some(n.saturating_sub(1).max(0)));
        if before == Ok(1) {
            // SAFETY: `self.0` is an `atomic_t` (same layout as `AtomicI32`,
            // `repr(transparent)` above), alive for the call.
            unsafe { dmb::dmsnap_counter_wake(self.0.as_ptr().cast()) };
        }
    }

    /// Sleeps until the count is zero. Process context only; the caller
    /// holds no spinlock.
    pub(crate) fn wait_zero(&self) {
        if self.get() == 0 {
            return;
        }
        // SAFETY: As in `dec`; the counter outlives the wait (borrowed).
        unsafe { dmb::dmsnap_counter_wait_zero(self.0.as_ptr().cast()) };
    }
}
