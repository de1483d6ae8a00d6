// SPDX-License-Identifier: GPL-2.0

//! The module parameters (declared in `shim.c`: the `module!` macro of
//! 6.12 has no parameter support), read through safe getters. Each getter
//! reads the current value once (`READ_ONCE`): an administrator may change
//! it at any time through `/sys/module/<module>/parameters/`.

use super::bindings as dmb;

/// The `snapshot_cow_threshold` module parameter: the most chunks a
/// snapshot may have being copied on write before writes that need a copy
/// wait (upstream's default, 2048).
pub(crate) fn cow_threshold() -> u32 {
    // SAFETY: No preconditions; reads the parameter once.
    unsafe { dmb::dmsnap_param_cow_threshold() }
}

/// The `snapshot_copy_throttle` module parameter: the percentage of time
/// kcopyd may spend copying (100, the default, means no limit).
pub(crate) fn copy_throttle_pct() -> u32 {
    // SAFETY: No preconditions; reads the parameter once.
    unsafe { dmb::dmsnap_copy_throttle_pct() }
}

/// Test hooks: module parameters that exist only in kernels built with
/// `CONFIG_KUNIT`, where the test scenarios set them to steer the commit
/// and merge paths. In every other kernel there is no such parameter and
/// the getters return `false` or 0 (the production behaviour), so callers
/// need no `cfg`.
pub(crate) mod test_hooks {
    use super::dmb;

    /// `test_commit_fold`: commit as on a COW without native FUA even where
    /// the COW has it (a later flush instead of FUA area writes).
    pub(crate) fn commit_fold() -> bool {
        // SAFETY: No preconditions; reads the parameter once.
        unsafe { dmb::dmsnap_test_commit_fold() }
    }

    /// `test_merge_pipeline`: never commit a merge batch before the next
    /// one is copied.
    pub(crate) fn merge_pipeline() -> bool {
        // SAFETY: No preconditions; reads the parameter once.
        unsafe { dmb::dmsnap_test_merge_pipeline() }
    }

    /// `test_merge_commit_delay_ms`: milliseconds to wait before each merge
    /// commit (capped at 10 s by the shim).
    pub(crate) fn merge_commit_delay_ms() -> u32 {
        // SAFETY: No preconditions; reads the parameter once.
        unsafe { dmb::dmsnap_test_merge_commit_delay_ms() }
    }
}
