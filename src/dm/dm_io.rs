// SPDX-License-Identifier: GPL-2.0

//! Region I/O with dm-io, used for COW metadata.
//!
//! C header: [`include/linux/dm-io.h`](srctree/include/linux/dm-io.h).
//!
//! Buffers are vmalloc-backed [`IoBuffer`]s (dm-io's `DM_IO_VMA`). An
//! asynchronous request owns its context as an `Arc<T>` that comes back to
//! [`IoCallback::io_done`] exactly once.

use core::ptr::NonNull;

use kernel::alloc::allocator::Vmalloc;
use kernel::alloc::Vec;
use kernel::error::from_err_ptr;
use kernel::ffi::{c_ulong, c_void};
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::types::ForeignOwnable;

use super::bindings as dmb;
use super::kcopyd::Region;

/// A vmalloc-backed, zero-initialised I/O buffer.
pub(crate) struct IoBuffer {
    data: Vec<u8, Vmalloc>,
}

impl IoBuffer {
    /// Allocates `len` zeroed bytes.
    pub(crate) fn new(len: usize) -> Result<Self> {
        Ok(Self { data: Vec::from_elem(0u8, len, GFP_KERNEL)? })
    }

    /// The buffer's bytes.
    #[allow(dead_code)]
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.data
    }

    /// The buffer's bytes, mutably.
    #[allow(dead_code)]
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.data
    }

    fn memory(&mut self) -> dmb::dm_io_memory {
        // SAFETY: All-zero is a valid `dm_io_memory` (a null union pointer);
        // every field that matters is set below.
        let mut mem: dmb::dm_io_memory = unsafe { core::mem::zeroed() };
        mem.type_ = dmb::dm_io_mem_type_DM_IO_VMA;
        mem.offset = 0;
        mem.ptr.vma = self.data.as_mut_ptr().cast();
        mem
    }
}

/// Receives the completion of an asynchronous dm-io request.
pub(crate) trait IoCallback: Send + Sync + 'static {
    /// Runs in dm-io's completion context (may be softirq: must not sleep).
    /// `error_bits` is non-zero if the request failed.
    fn io_done(this: Arc<Self>, error_bits: u64);
}

/// A dm-io client (private mempools for metadata I/O).
///
/// # Invariants
///
/// `client` is live from `dm_io_client_create`.
pub(crate) struct DmIoClient {
    client: NonNull<dmb::dm_io_client>,
}

// SAFETY: dm-io clients are safe to use from any thread.
unsafe impl Send for DmIoClient {}
// SAFETY: As above.
unsafe impl Sync for DmIoClient {}

impl DmIoClient {
    /// Creates a client. May sleep.
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: No preconditions.
        let client = from_err_ptr(unsafe { dmb::dm_io_client_create() })?;
        let client = NonNull::new(client).ok_or(ENOMEM)?;
        // INVARIANT: successfully created.
        Ok(Self { client })
    }

    fn request(&self, opf: u32, mem: dmb::dm_io_memory, notify: dmb::dm_io_notify) -> dmb::dm_io_request {
        dmb::dm_io_request { bi_opf: opf, mem, notify, client: self.client.as_ptr() }
    }

    /// Reads or writes `buf` at `region` and waits (`opf` is a `REQ_OP_*`
    /// with flags such as `REQ_PREFLUSH | REQ_FUA`). Sleeps: never call it
    /// from `map`.
    ///
    /// The region's device must stay open during the call, which holding the
    /// `DmDev` the region was built from guarantees.
    pub(crate) fn sync_io(&self, region: &Region, opf: u32, buf: &mut IoBuffer) -> Result {
        let bytes = region.raw.count.checked_mul(512).ok_or(EINVAL)?;
        if bytes > buf.data.len() as u64 {
            return Err(EINVAL);
        }
        let mut req = self.request(opf, buf.memory(), dmb::dm_io_notify::default());
        let mut region = region.raw;
        let mut error_bits: c_ulong = 0;
        // SAFETY: `req` has no callback, so dm-io completes it before
        // returning; the buffer is large enough for the region (checked) and
        // borrowed for the call; the region's device is open (see above).
        let ret = unsafe { dmb::dm_io(&mut req, 1, &mut region, &mut error_bits, 0) };
        if ret != 0 {
            return Err(Error::from_errno(ret));
        }
        if error_bits != 0 {
            return Err(EIO);
        }
        Ok(())
    }

    /// Starts reading or writing `buf` at `region`; `T::io_done` runs when
    /// it completes.
    ///
    /// # Safety
    ///
    /// The memory of `buf` must stay valid and untouched until the callback
    /// runs (keep the buffer in `context`), and the region's device must stay
    /// open until then.
    #[allow(dead_code)]
    pub(crate) unsafe fn async_io<T: IoCallback>(
        &self,
        region: &Region,
        opf: u32,
        buf: &mut IoBuffer,
        context: Arc<T>,
    ) -> Result {
        let bytes = region.raw.count.checked_mul(512).ok_or(EINVAL)?;
        if bytes > buf.data.len() as u64 {
            return Err(EINVAL);
        }
        let ctx = context.into_foreign() as *mut c_void;
        let notify = dmb::dm_io_notify { fn_: Some(io_notify::<T>), context: ctx };
        let mut req = self.request(opf, buf.memory(), notify);
        let mut region = region.raw;
        // SAFETY: `req` is fully initialised; buffer and device validity until
        // completion are the caller's guarantees; `ctx` is released exactly
        // once, by `io_notify::<T>` or below if submission fails.
        let ret = unsafe { dmb::dm_io(&mut req, 1, &mut region, core::ptr::null_mut(), 0) };
        if ret != 0 {
            // dm_io() fails before queueing anything (bad request), so the
            // callback will not run: take the context back.
            // SAFETY: `ctx` came from `into_foreign` above and was not consumed.
            drop(unsafe { <Arc<T> as ForeignOwnable>::from_foreign(ctx) });
            return Err(Error::from_errno(ret));
        }
        Ok(())
    }
}

impl Drop for DmIoClient {
    fn drop(&mut self) {
        // SAFETY: By the invariant the client is live; destroyed once.
        unsafe { dmb::dm_io_client_destroy(self.client.as_ptr()) };
    }
}

/// # Safety
///
/// Called by dm-io exactly once per asynchronous request submitted by
/// [`DmIoClient::async_io`].
unsafe extern "C" fn io_notify<T: IoCallback>(error: c_ulong, context: *mut c_void) {
    // SAFETY: `context` came from `Arc::<T>::into_foreign`; this is the only
    // completion of that request.
    let this = unsafe { <Arc<T> as ForeignOwnable>::from_foreign(context) };
    T::io_done(this, error as u64);
}
