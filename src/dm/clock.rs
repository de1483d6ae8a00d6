// SPDX-License-Identifier: GPL-2.0

//! Monotonic time (`ktime_get()`), for pacing and statistics, and wall-clock
//! seconds for reports.

use kernel::bindings;

/// A point on the monotonic clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Instant {
    ns: i64,
}

impl Instant {
    /// The current time.
    pub(crate) fn now() -> Self {
        // SAFETY: `ktime_get` has no preconditions.
        Self { ns: unsafe { bindings::ktime_get() } }
    }

    /// Microseconds from `earlier` to `self`, negative if `earlier` is later.
    pub(crate) fn us_since(self, earlier: Instant) -> i64 {
        self.ns.saturating_sub(earlier.ns) / 1000
    }

    /// Milliseconds from `earlier` to `self`, negative if `earlier` is later.
    pub(crate) fn ms_since(self, earlier: Instant) -> i64 {
        self.ns.saturating_sub(earlier.ns) / 1_000_000
    }
}

/// Wall-clock time in seconds since the epoch (`ktime_get_real_seconds()`,
/// CLOCK_REALTIME), e.g. for "when" in reports.
pub(crate) fn real_seconds() -> i64 {
    // SAFETY: `ktime_get_real_seconds` has no preconditions.
    unsafe { bindings::ktime_get_real_seconds() }
}

/// Monotonic milliseconds since boot (non-negative), for rate windows.
pub(crate) fn monotonic_ms() -> u64 {
    u64::try_from(Instant::now().ms_since(Instant { ns: 0 })).unwrap_or(0)
}
