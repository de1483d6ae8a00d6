// SPDX-License-Identifier: GPL-2.0

//! Asynchronous copies between block devices with kcopyd.
//!
//! C header: [`include/linux/dm-kcopyd.h`](srctree/include/linux/dm-kcopyd.h).
//!
//! A job's completion arrives in kcopyd's worker thread. The caller's
//! context travels as an `Arc<T>` through the C `void *context` and comes
//! back to [`CopyCallback::copy_done`], so a completion can never outlive or
//! double-free its context.

use core::ptr::NonNull;

use kernel::bindings;
use kernel::error::from_err_ptr;
use kernel::ffi::{c_int, c_uint, c_ulong, c_void};
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::types::ForeignOwnable;

use super::bindings as dmb;
use super::compat;
use super::device::{BdevHandle, HeldDev};

/// A range of sectors on a device (`struct dm_io_region`).
#[derive(Clone, Copy)]
pub(crate) struct Region {
    pub(super) raw: dmb::dm_io_region,
}

// SAFETY: A region is a device pointer and two numbers, like `BdevHandle`:
// every use that submits I/O through it is `unsafe` and requires the device
// to be open.
unsafe impl Send for Region {}
// SAFETY: As above.
unsafe impl Sync for Region {}

impl Region {
    /// `count` sectors of the device behind `dev`, starting at `sector`.
    pub(crate) fn new(dev: BdevHandle, sector: u64, count: u64) -> Self {
        Self::from_bdev(dev.0, sector, count)
    }

    pub(super) fn from_bdev(bdev: *mut bindings::block_device, sector: u64, count: u64) -> Self {
        Self { raw: dmb::dm_io_region { bdev, sector, count } }
    }

    /// First sector.
    pub(crate) fn sector(&self) -> u64 {
        self.raw.sector
    }

    /// Length in sectors.
    pub(crate) fn count(&self) -> u64 {
        self.raw.count
    }
}

/// A range of sectors on a [`HeldDev`], so of an open device: what the safe
/// kcopyd and dm-io requests take. Built only by [`HeldDev::region`].
///
/// # Invariants
///
/// The region's device is the block device of a [`HeldDev`], so it stays
/// open until every I/O started on the region has completed (the
/// `HeldDev` invariant).
#[derive(Clone, Copy)]
pub(crate) struct HeldRegion {
    dev: HeldDev,
    region: Region,
}

impl HeldRegion {
    /// `count` sectors of `dev` from `sector`.
    pub(super) fn new(dev: HeldDev, sector: u64, count: u64) -> Self {
        // INVARIANT: the device is `dev`'s.
        Self { dev, region: Region::from_bdev(dev.bdev(), sector, count) }
    }

    /// The device.
    pub(crate) fn dev(&self) -> HeldDev {
        self.dev
    }

    /// First sector.
    pub(crate) fn sector(&self) -> u64 {
        self.region.sector()
    }

    /// Length in sectors.
    pub(crate) fn count(&self) -> u64 {
        self.region.count()
    }

    pub(super) fn raw(&self) -> &Region {
        &self.region
    }
}

/// Options of a copy (`DM_KCOPYD_*`): none are used (the copies of this
/// module stop at the first error and write their destinations in
/// parallel). The safe [`KcopydClient::copy_held`] takes none.
#[cfg_attr(not(CONFIG_KUNIT), allow(dead_code))] // used by the KUnit cases only
#[derive(Clone, Copy, Default)]
pub(crate) struct CopyFlags {
    _none: (),
}

/// Receives the completion of a copy or zeroing job.
pub(crate) trait CopyCallback: Send + Sync + 'static {
    /// Runs in kcopyd's worker thread (may sleep, must not block on
    /// kcopyd itself). `read_err` is set if the source could not be read;
    /// bit `i` of `write_err` is set if destination `i` failed.
    fn copy_done(this: Arc<Self>, read_err: bool, write_err: u64);
}

/// A kcopyd client. Dropping it waits for all of its jobs to finish.
///
/// # Invariants
///
/// `kc` is a live client from `dm_kcopyd_client_create`.
pub(crate) struct KcopydClient {
    kc: NonNull<dmb::dm_kcopyd_client>,
}

// SAFETY: kcopyd clients are used from any context that may sleep; kcopyd
// serialises its internal state with its own locks.
unsafe impl Send for KcopydClient {}
// SAFETY: As above; submitting jobs concurrently is supported.
unsafe impl Sync for KcopydClient {}

impl KcopydClient {
    /// Creates a client, throttled by the module's `snapshot_copy_throttle`
    /// group throttle (shared by all clients, as upstream does).
    pub(crate) fn new_throttled() -> Result<Self> {
        // SAFETY: The shim returns a pointer to a static throttle struct.
        let throttle = unsafe { dmb::dmsnap_kcopyd_throttle() };
        // SAFETY: `throttle` is valid for the module's lifetime, which
        // outlives every client.
        let kc = from_err_ptr(unsafe { dmb::dm_kcopyd_client_create(throttle) })?;
        let kc = NonNull::new(kc).ok_or(ENOMEM)?;
        // INVARIANT: a successfully created client.
        Ok(Self { kc })
    }

    /// Copies `from` to each of `to` (at most 8 destinations) and calls
    /// `T::copy_done(context, ...)` when done.
    ///
    /// May sleep to allocate the job (kcopyd uses `GFP_NOIO` mempools).
    ///
    /// # Safety
    ///
    /// The block devices of `from` and `to` must stay open until the
    /// callback has run. Holding the `DmDev`s in a structure that drops this
    /// client first (dropping waits for all jobs) satisfies this.
    #[cfg_attr(not(CONFIG_KUNIT), allow(dead_code))] // used by the KUnit cases only
    pub(crate) unsafe fn copy<T: CopyCallback>(
        &self,
        from: &Region,
        to: &[Region],
        _flags: CopyFlags,
        context: Arc<T>,
    ) -> Result {
        // SAFETY: The caller's guarantee is passed on.
        unsafe { self.submit(Some(from), to.iter(), context) }
    }

    /// Writes zeroes to each of `to` (at most 8 regions).
    ///
    /// # Safety
    ///
    /// As for [`KcopydClient::copy`].
    #[cfg_attr(not(CONFIG_KUNIT), allow(dead_code))] // used by the KUnit cases only
    pub(crate) unsafe fn zero<T: CopyCallback>(&self, to: &[Region], context: Arc<T>) -> Result {
        // SAFETY: The caller's guarantee is passed on.
        unsafe { self.submit(None, to.iter(), context) }
    }

    /// [`KcopydClient::copy`] between regions of held devices: copies
    /// `from` to each of `to` (at most 8 destinations), stopping at the
    /// first error, and calls `T::copy_done(context, ...)` when done. May
    /// sleep to allocate the job (kcopyd uses `GFP_NOIO` mempools).
    ///
    /// The client outlives the job: kcopyd keeps the job on the client,
    /// and dropping the client (`dm_kcopyd_client_destroy()`) waits for
    /// all of its jobs, including their callbacks. On error the callback
    /// does not run and `context` is dropped.
    pub(crate) fn copy_held<T: CopyCallback>(&self, from: &HeldRegion, to: &[HeldRegion], context: Arc<T>) -> Result {
        // SAFETY: By the `HeldRegion` invariant every device stays open
        // until the job, started here, has completed.
        unsafe { self.submit(Some(from.raw()), to.iter().map(HeldRegion::raw), context) }
    }

    /// [`KcopydClient::zero`] on regions of held devices: writes zeroes to
    /// each of `to` (at most 8 regions). As for [`KcopydClient::copy_held`].
    pub(crate) fn zero_held<T: CopyCallback>(&self, to: &[HeldRegion], context: Arc<T>) -> Result {
        // SAFETY: As in `copy_held`.
        unsafe { self.submit(None, to.iter().map(HeldRegion::raw), context) }
    }

    /// Copies `from` (zeroes without it) to the destinations `to`.
    ///
    /// # Safety
    ///
    /// As for [`KcopydClient::copy`].
    unsafe fn submit<'a, T: CopyCallback>(
        &self,
        from: Option<&Region>,
        to: impl ExactSizeIterator<Item = &'a Region>,
        context: Arc<T>,
    ) -> Result {
        let mut dests = [dmb::dm_io_region::default(); dmb::DM_KCOPYD_MAX_REGIONS as usize];
        let n = to.len();
        if n == 0 || n > dests.len() {
            return Err(EINVAL);
        }
        for (slot, region) in dests.iter_mut().zip(to) {
            *slot = region.raw;
        }
        let n = c_uint::try_from(n).map_err(|_| EINVAL)?;
        let ctx = compat::into_foreign(context);
        match from {
            Some(from) => {
                let mut src = from.raw;
                // SAFETY: `kc` is live; `src` and `dests` are valid for the
                // call (kcopyd copies them into the job); the devices stay
                // open (caller); `ctx` is released exactly once by
                // `copy_notify::<T>`.
                unsafe {
                    dmb::dm_kcopyd_copy(
                        self.kc.as_ptr(),
                        &mut src,
                        n,
                        dests.as_mut_ptr(),
                        0,
                        Some(copy_notify::<T>),
                        ctx,
                    )
                };
            }
            None => {
                // SAFETY: As above.
                unsafe {
                    dmb::dm_kcopyd_zero(self.kc.as_ptr(), n, dests.as_mut_ptr(), 0, Some(copy_notify::<T>), ctx)
                };
            }
        }
        Ok(())
    }
}

/// A kcopyd completion prepared in advance (`dm_kcopyd_prepare_callback()`),
/// to be fired from any context, including interrupts, by the C shim (see
/// [`super::bio::OwnedBio::into_full_write`]).
///
/// # Invariants
///
/// `job` is a prepared, not yet fired callback whose context is an
/// `Arc<T>` released by `copy_notify::<T>` when it fires.
pub(crate) struct PreparedCallback {
    pub(super) job: NonNull<c_void>,
}

// SAFETY: The job may be fired from any thread.
unsafe impl Send for PreparedCallback {}

impl KcopydClient {
    /// Prepares a completion that calls `T::copy_done(context, ...)` in
    /// kcopyd's thread when fired. May sleep: never call it with a lock
    /// held that a kcopyd completion takes.
    ///
    /// The result must be fired: kcopyd has no way to cancel it (a client
    /// being destroyed waits for it).
    pub(crate) fn prepare_callback<T: CopyCallback>(&self, context: Arc<T>) -> Result<PreparedCallback> {
        let ctx = compat::into_foreign(context);
        // SAFETY: `kc` is live; `ctx` is released by `copy_notify::<T>`.
        let job = unsafe { dmb::dm_kcopyd_prepare_callback(self.kc.as_ptr(), Some(copy_notify::<T>), ctx) };
        match NonNull::new(job) {
            // INVARIANT: a prepared job carrying `ctx`.
            Some(job) => Ok(PreparedCallback { job }),
            None => {
                // SAFETY: Not consumed: the callback was not prepared.
                drop(unsafe { <Arc<T> as ForeignOwnable>::from_foreign(ctx) });
                Err(ENOMEM)
            }
        }
    }
}

impl Drop for KcopydClient {
    fn drop(&mut self) {
        // SAFETY: By the invariant `kc` is live; destroy waits for all jobs
        // (and so all callbacks) to finish, and is called once.
        unsafe { dmb::dm_kcopyd_client_destroy(self.kc.as_ptr()) };
    }
}

/// # Safety
///
/// Called by kcopyd exactly once per job, with the context passed to
/// `dm_kcopyd_copy`/`dm_kcopyd_zero` by [`KcopydClient`].
unsafe extern "C" fn copy_notify<T: CopyCallback>(read_err: c_int, write_err: c_ulong, context: *mut c_void) {
    // SAFETY: `context` came from `Arc::<T>::into_foreign` and this is the
    // only completion of that job.
    let this = unsafe { <Arc<T> as ForeignOwnable>::from_foreign(context) };
    T::copy_done(this, read_err != 0, write_err as u64);
}
