// SPDX-License-Identifier: GPL-2.0

//! Cached, prefetching block reads with dm-bufio (used to load exception
//! areas quickly at activation, as upstream's `read_exceptions()` does).
//!
//! C header: [`include/linux/dm-bufio.h`](srctree/include/linux/dm-bufio.h).

use core::ptr::NonNull;

use kernel::error::from_err_ptr;
use kernel::prelude::*;

use super::bindings as dmb;
use super::device::HeldDev;

/// A dm-bufio client over one device, in blocks of a fixed size.
///
/// # Invariants
///
/// `c` is a live client on `_dev`; `block_bytes` is its block size.
pub(crate) struct BufioClient {
    c: NonNull<dmb::dm_bufio_client>,
    block_bytes: usize,
    /// Keeps the device open while the client lives (`HeldDev` invariant:
    /// until every copy is gone); dropping the client ends its I/O first.
    _dev: HeldDev,
}

impl BufioClient {
    /// Creates a client reading `dev` in blocks of `block_bytes` (a power of
    /// two, at least 512), keeping at least `min_buffers` in memory.
    pub(crate) fn new(dev: HeldDev, block_bytes: usize, min_buffers: u32) -> Result<Self> {
        let size = u32::try_from(block_bytes).map_err(|_| EINVAL)?;
        // SAFETY: The device is open while the client keeps `dev` (`HeldDev`
        // invariant); no callbacks, no aux data.
        let c = from_err_ptr(unsafe { dmb::dm_bufio_client_create(dev.bdev(), size, 1, 0, None, None, 0) })?;
        let c = NonNull::new(c).ok_or(ENOMEM)?;
        // SAFETY: `c` was just created.
        unsafe { dmb::dm_bufio_set_minimum_buffers(c.as_ptr(), min_buffers) };
        // INVARIANT: a live client with that block size.
        Ok(Self { c, block_bytes, _dev: dev })
    }

    /// Starts reading `block` in the background.
    pub(crate) fn prefetch(&self, block: u64) {
        // SAFETY: By the invariant the client is live.
        unsafe { dmb::dm_bufio_prefetch(self.c.as_ptr(), block, 1) };
    }

    /// Starts reading every block of `blocks` in the background, submitted
    /// under one block plug so the device sees them as one batch.
    pub(crate) fn prefetch_batch(&self, blocks: impl Iterator<Item = u64>) {
        let mut plug = core::mem::MaybeUninit::<kernel::bindings::blk_plug>::uninit();
        // SAFETY: `plug` lives on this stack frame, does not move, and is
        // finished below before the frame goes; blk_start_plug initialises it.
        unsafe { kernel::bindings::blk_start_plug(plug.as_mut_ptr()) };
        for block in blocks {
            self.prefetch(block);
        }
        // SAFETY: The plug started above, on this task.
        unsafe { kernel::bindings::blk_finish_plug(plug.as_mut_ptr()) };
    }

    /// Reads `block` (waiting for it) and passes its contents to `f`.
    pub(crate) fn read<R>(&self, block: u64, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let mut buffer: *mut dmb::dm_buffer = core::ptr::null_mut();
        // SAFETY: The client is live; `buffer` is a valid out-pointer.
        let data = from_err_ptr(unsafe { dmb::dm_bufio_read(self.c.as_ptr(), block, &mut buffer) })?;
        if data.is_null() || buffer.is_null() {
            return Err(EIO);
        }
        // SAFETY: dm-bufio returned `block_bytes` readable bytes that stay
        // valid until the buffer is released below.
        let bytes = unsafe { core::slice::from_raw_parts(data.cast::<u8>(), self.block_bytes) };
        let r = f(bytes);
        // SAFETY: `buffer` is the held buffer from the read; released once.
        unsafe { dmb::dm_bufio_release(buffer) };
        Ok(r)
    }

    /// Drops `block` from the cache if it is there and unused
    /// (`dm_bufio_forget()`): a block read once frees its memory at once
    /// instead of when the client goes.
    pub(crate) fn forget(&self, block: u64) {
        // SAFETY: By the invariant the client is live; no buffer of this
        // client is held here (`read` releases before returning).
        unsafe { dmb::dm_bufio_forget(self.c.as_ptr(), block) };
    }
}

impl Drop for BufioClient {
    fn drop(&mut self) {
        // SAFETY: By the invariant the client is live; destroyed once, with
        // no buffer held (`read` releases before returning).
        unsafe { dmb::dm_bufio_client_destroy(self.c.as_ptr()) };
    }
}
