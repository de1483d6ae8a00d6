// SPDX-License-Identifier: GPL-2.0

//! What differs between the kernels this module supports, in one place.
//!
//! The rest of the module is written against the current kernel (7.x); this
//! module adapts the few interfaces that changed since 6.12 LTS. Kbuild picks
//! the implementation from the kernel version: `--cfg dmsnap_kernel_6_12` on
//! 6.12, nothing on 7.x.
//!
//! | interface | 7.x | 6.12 |
//! |---|---|---|
//! | dm-io completion callback | `fn(error, unsupported, context)` | `fn(error, context)` |
//! | `dm_io()` | also reports unsupported regions | error bits only |
//! | KUnit assertions | file name as a C string | as `&str` |
//! | `ForeignOwnable::into_foreign` | `*mut c_void` | `*const c_void` |
//! | C strings | `core::ffi::CStr` with `CStrExt` | `CStr` casts (kernel `char` is unsigned) |
//! | `KVec::pop`, `remove`, `clear` | methods | `kvec` implements them |

#[cfg(dmsnap_kernel_6_12)]
mod v6_12;
#[cfg(dmsnap_kernel_6_12)]
pub(crate) use v6_12::*;

#[cfg(not(dmsnap_kernel_6_12))]
mod v7;
#[cfg(not(dmsnap_kernel_6_12))]
pub(crate) use v7::*;

use kernel::ffi::{c_ulong, c_void};

/// The completion of an asynchronous dm-io request.
///
/// # Safety
///
/// `notify` is only called by dm-io, once per request, with the `context`
/// the request was submitted with.
pub(crate) unsafe trait IoNotify {
    /// Called once the request completed; `error_bits` has a bit set for
    /// every region that failed (unsupported regions count as failed).
    ///
    /// # Safety
    ///
    /// `context` is the request's context; this is its only completion.
    unsafe fn notify(error_bits: c_ulong, context: *mut c_void);
}
