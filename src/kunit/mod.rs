// SPDX-License-Identifier: GPL-2.0

//! In-kernel unit tests (KUnit), run when the module is loaded into a
//! kernel built with `CONFIG_KUNIT`.
//!
//! One file per suite (KUnit suite name in parentheses):
//! - [`dm_layer`] (`dm_snapshot_rs_dm_layer`): the `src/dm` wrappers that
//!   need no device: status lines, map results, bio flags and views,
//!   argument parsing, the IMA line;
//! - [`io_layer`] (`dm_snapshot_rs_io_layer`): kcopyd and dm-io against the
//!   scratch device;
//! - [`pure_layer`] (`dm_snapshot_rs_pure`): `src/pure` as built into the
//!   kernel;
//! - [`table_layer`] (`dm_snapshot_rs_exception_table`): the
//!   completed-exception table against a model;
//! - [`pending_layer`] (`dm_snapshot_rs_pending`): the pending-exception
//!   lifecycle on the scratch device.
//!
//! This file holds what they share: the [`kassert!`], [`kassert_eq!`] and
//! [`kunit_suite!`] macros (declared before the suite modules, so they are in
//! scope there) and the data pattern helpers [`fill`] and [`matches`].
//!
//! On 7.x [`kunit_suite!`] expands to the kernel's `#[kunit_tests]`; 6.12
//! has none, so there it builds the same `struct kunit_suite` by hand (see
//! `src/dm/compat/v6_12.rs`).

/// Asserts inside a KUnit case: a failure is reported to KUnit and ends the
/// case (it does not panic).
macro_rules! kassert {
    ($cond:expr $(,)?) => {
        $crate::dm::compat::kunit_check!($cond)
    };
}

/// Asserts that two values are equal inside a KUnit case.
macro_rules! kassert_eq {
    ($left:expr, $right:expr $(,)?) => {
        $crate::dm::compat::kunit_check!($left == $right)
    };
}

/// Declares the KUnit suite `$suite` from plain `fn()` test cases in scope:
/// `kunit_suite!(suite_name, [case_a, case_b]);` (see
/// [`crate::dm::compat`]: `#[kunit_tests]` where the kernel has it).
macro_rules! kunit_suite {
    ($($body:tt)*) => {
        $crate::dm::compat::kunit_suite!($($body)*);
    };
}

/// Byte `i` of the test pattern for `seed`: varies within a sector and, by
/// the `i >> 9` term, from one 512-byte sector to the next.
fn pattern(i: usize, seed: u8) -> u8 {
    (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 9) as u8)
}

/// Fills `buf` with the test pattern for `seed`.
fn fill(buf: &mut [u8], seed: u8) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern(i, seed);
    }
}

/// Whether `buf` holds the test pattern for `seed`, as [`fill`] leaves it.
fn matches(buf: &[u8], seed: u8) -> bool {
    buf.iter().enumerate().all(|(i, b)| *b == pattern(i, seed))
}

mod dm_layer;
mod io_layer;
mod pending_layer;
mod pure_layer;
mod table_layer;
