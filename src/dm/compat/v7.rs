// SPDX-License-Identifier: GPL-2.0

//! Linux 7.x: the interfaces as the module uses them.

use super::IoNotify;
use crate::dm::bindings as dmb;
use kernel::ffi::{c_char, c_int, c_uint, c_ulong, c_void};
use kernel::types::ForeignOwnable;
use kernel::prelude::*;

/// dm-io's completion callback for `N`.
pub(crate) fn io_notify_fn<N: IoNotify>() -> dmb::io_notify_fn {
    Some(io_notify::<N>)
}

/// # Safety
///
/// Called by dm-io once per request submitted with [`io_notify_fn::<N>`].
unsafe extern "C" fn io_notify<N: IoNotify>(error: c_ulong, unsupported: c_ulong, context: *mut c_void) {
    // SAFETY: dm-io passes the request's context, once (the caller's contract).
    unsafe { N::notify(error | unsupported, context) }
}

/// `dm_io()`: for a synchronous request, `error_bits` (if not null) receives
/// the failed regions, unsupported ones included.
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
    let mut unsupported: c_ulong = 0;
    let unsupported_out = if error_bits.is_null() { core::ptr::null_mut() } else { &raw mut unsupported };
    // SAFETY: The caller's contract; `unsupported` outlives the call.
    let ret = unsafe { dmb::dm_io(req, num_regions, regions, error_bits, unsupported_out, 0) };
    if !error_bits.is_null() {
        // SAFETY: `error_bits` is valid for writes (the caller's contract).
        unsafe { *error_bits |= unsupported };
    }
    ret
}

/// `s` as the kernel's `char *`.
pub(crate) fn cstr_ptr(s: &CStr) -> *const c_char {
    s.as_char_ptr()
}

/// The C string at `ptr`.
///
/// # Safety
///
/// `ptr` points to a NUL-terminated string that lives, unchanged, for `'a`.
pub(crate) unsafe fn cstr_from_ptr<'a>(ptr: *const c_char) -> &'a CStr {
    // SAFETY: The caller's contract.
    unsafe { CStr::from_char_ptr(ptr) }
}

/// Hands `v` to C as a `void *` (`ForeignOwnable::into_foreign`).
pub(crate) fn into_foreign<T: ForeignOwnable>(v: T) -> *mut c_void {
    v.into_foreign()
}

/// Asserts inside a KUnit case; a failure ends the case.
#[cfg(CONFIG_KUNIT)]
macro_rules! kunit_check {
    ($cond:expr) => {
        ::kernel::kunit_assert!("dm_snapshot_rs", c"src/kunit", 0, $cond)
    };
}
#[cfg(CONFIG_KUNIT)]
pub(crate) use kunit_check;

/// Declares the KUnit suite `$suite` from plain `fn()` test cases in scope,
/// with the kernel's `#[kunit_tests]`.
#[cfg(CONFIG_KUNIT)]
macro_rules! kunit_suite {
    ($suite:ident, [$($case:ident),+ $(,)?]) => {
        #[::kernel::prelude::kunit_tests($suite)]
        mod $suite {
            $(
                #[test]
                fn $case() {
                    super::$case();
                }
            )+
        }
    };
}
#[cfg(CONFIG_KUNIT)]
pub(crate) use kunit_suite;

/// The `KVec` methods 6.12 lacks, under the names [`super`] exports.
pub(crate) mod kvec {
    use kernel::prelude::*;

    /// Removes and returns the last element.
    pub(crate) fn pop<T>(v: &mut KVec<T>) -> Option<T> {
        v.pop()
    }

    /// Removes element `i`, keeping the order of the rest.
    pub(crate) fn remove<T>(v: &mut KVec<T>, i: usize) -> Option<T> {
        v.remove(i).ok()
    }

    /// Drops every element, keeping the capacity.
    pub(crate) fn clear<T>(v: &mut KVec<T>) {
        v.clear();
    }
}
