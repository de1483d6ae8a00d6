// SPDX-License-Identifier: GPL-2.0

//! Linux 6.12 LTS: the older forms of what [`super`] lists.

use super::IoNotify;
use crate::dm::bindings as dmb;
use core::ffi::CStr;
use kernel::ffi::{c_char, c_int, c_uint, c_ulong, c_void};
use kernel::types::ForeignOwnable;

/// dm-io's completion callback for `N`.
pub(crate) fn io_notify_fn<N: IoNotify>() -> dmb::io_notify_fn {
    Some(io_notify::<N>)
}

/// # Safety
///
/// Called by dm-io once per request submitted with [`io_notify_fn::<N>`].
unsafe extern "C" fn io_notify<N: IoNotify>(error: c_ulong, context: *mut c_void) {
    // SAFETY: dm-io passes the request's context, once (the caller's contract).
    unsafe { N::notify(error, context) }
}

/// `dm_io()` (6.12 reports unsupported regions as failed ones).
///
/// # Safety
///
/// As `dm_io()`: `req` and `regions` valid for `num_regions`, and the
/// memory and devices they name valid until the request completes.
pub(crate) unsafe fn dm_io(
    req: *mut dmb::dm_io_request,
    num_regions: c_uint,
    regions: *mut dmb::dm_io_region,
    error_bits: *mut c_ulong,
) -> c_int {
    // SAFETY: The caller's contract.
    unsafe { dmb::dm_io(req, num_regions, regions, error_bits, 0) }
}

/// `s` as the kernel's `char *` (unsigned in the kernel, unlike `core`'s).
pub(crate) fn cstr_ptr(s: &CStr) -> *const c_char {
    s.as_ptr().cast()
}

/// The C string at `ptr`.
///
/// # Safety
///
/// `ptr` points to a NUL-terminated string that lives, unchanged, for `'a`.
pub(crate) unsafe fn cstr_from_ptr<'a>(ptr: *const c_char) -> &'a CStr {
    // SAFETY: The caller's contract.
    unsafe { CStr::from_ptr(ptr.cast()) }
}

/// Hands `v` to C as a `void *` (`ForeignOwnable::into_foreign`).
pub(crate) fn into_foreign<T: ForeignOwnable>(v: T) -> *mut c_void {
    v.into_foreign().cast_mut()
}

/// Asserts inside a KUnit case; a failure ends the case.
#[cfg(CONFIG_KUNIT)]
macro_rules! kunit_check {
    ($cond:expr) => {
        ::kernel::kunit_assert!("dm_snapshot_rs", "src/kunit", 0, $cond)
    };
}
#[cfg(CONFIG_KUNIT)]
pub(crate) use kunit_check;

/// Declares the KUnit suite `$suite` from plain `fn()` test cases in scope.
///
/// 6.12 has no `#[kunit_tests]`: this builds the same `struct kunit_suite`
/// the C `kunit_test_suite()` macro does and places a pointer to it in the
/// `.kunit_test_suites` section, which the module loader hands to KUnit. The
/// section entry must be `#[used(compiler)]`: plain `#[used]` gives it the
/// `SHF_GNU_RETAIN` flag, `ld -r` then keeps a second `.kunit_test_suites`
/// section, and the loader only sees the first.
#[cfg(CONFIG_KUNIT)]
macro_rules! kunit_suite {
    ($suite:ident, [$($case:ident),+ $(,)?]) => {
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
                name: suite_name(stringify!($suite).as_bytes()),
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
#[cfg(CONFIG_KUNIT)]
pub(crate) use kunit_suite;

/// `KVec` methods 6.12 lacks (7.x has them as methods).
pub(crate) mod kvec {
    use kernel::prelude::*;

    /// Removes and returns the last element.
    pub(crate) fn pop<T>(v: &mut KVec<T>) -> Option<T> {
        let new_len = v.len().checked_sub(1)?;
        // SAFETY: `new_len < len`, so the element is initialised. Shrinking
        // the length first means the vector no longer owns it, and it is
        // moved out exactly once, below.
        unsafe {
            v.set_len(new_len);
            Some(core::ptr::read(v.as_ptr().add(new_len)))
        }
    }

    /// Removes element `i`, keeping the order of the rest.
    pub(crate) fn remove<T>(v: &mut KVec<T>, i: usize) -> Option<T> {
        v.as_mut_slice().get_mut(i..)?.rotate_left(1);
        pop(v)
    }

    /// Drops every element, keeping the capacity.
    pub(crate) fn clear<T>(v: &mut KVec<T>) {
        while pop(v).is_some() {}
    }
}
