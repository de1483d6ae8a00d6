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
//! 6.12 has no `#[kunit_tests]`, so [`kunit_suite!`] builds the same
//! `struct kunit_suite` the C `kunit_test_suite()` macro does and places a
//! pointer to it in the `.kunit_test_suites` section, which the module
//! loader hands to KUnit. The section entry must be `#[used(compiler)]`:
//! plain `#[used]` gives it the `SHF_GNU_RETAIN` flag, `ld -r` then keeps a
//! second `.kunit_test_suites` section, and the loader only sees the first.

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

/// Declares a KUnit suite from plain `fn()` test cases.
///
/// `kunit_suite!(suite_ident, "suite_name", [case_a, case_b]);` where each
/// case is a function in scope taking no arguments.
macro_rules! kunit_suite {
    ($suite:ident, $name:literal, [$($case:ident),+ $(,)?]) => {
        #[allow(non_upper_case_globals, unreachable_pub)]
        mod $suite {
            use ::kernel::bindings;

            $(
                /// KUnit entry point for the test case of the same name.
                ///
                /// # Safety
                ///
                /// Called by KUnit with a valid test context.
                unsafe extern "C" fn $case(_test: *mut bindings::kunit) {
                    super::$case();
                }
            )+

            const fn case(
                name: &'static str,
                run: unsafe extern "C" fn(*mut bindings::kunit),
            ) -> bindings::kunit_case {
                bindings::kunit_case {
                    run_case: Some(run),
                    name: name.as_ptr().cast(),
                    // SAFETY: An all-zero `kunit_case` tail (no params, no
                    // log, default status) is what `KUNIT_CASE()` produces.
                    ..unsafe { ::core::mem::zeroed() }
                }
            }

            // Only evaluated at build time (static initializer), where an
            // out-of-range index or overflow is a build error; `i < 255`
            // rules both out anyway.
            #[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
            const fn suite_name(name: &[u8]) -> [::kernel::ffi::c_char; 256] {
                let mut out = [0; 256];
                let mut i = 0;
                while i < name.len() && i < 255 {
                    out[i] = name[i];
                    i += 1;
                }
                out
            }

            const CASES_LEN: usize = [$(stringify!($case)),+].len() + 1;

            static mut CASES: [bindings::kunit_case; CASES_LEN] = [
                $(case(concat!(stringify!($case), "\0"), $case),)+
                // SAFETY: An all-zero case terminates the array.
                unsafe { ::core::mem::zeroed() },
            ];

            static mut SUITE: bindings::kunit_suite = bindings::kunit_suite {
                name: suite_name($name.as_bytes()),
                test_cases: ::core::ptr::addr_of_mut!(CASES).cast(),
                // SAFETY: All-zero is the state `kunit_test_suite()` leaves
                // the remaining fields in.
                ..unsafe { ::core::mem::zeroed() }
            };

            #[used(compiler)]
            #[link_section = ".kunit_test_suites"]
            static mut SUITE_ENTRY: *const bindings::kunit_suite = ::core::ptr::addr_of_mut!(SUITE);
        }
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
