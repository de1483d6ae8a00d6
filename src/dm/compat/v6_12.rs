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
macro_rules! kunit_check {
    ($cond:expr) => {
        ::kernel::kunit_assert!("dm_snapshot_rs", "src/kunit", 0, $cond)
    };
}
pub(crate) use kunit_check;

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
