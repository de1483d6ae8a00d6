// SPDX-License-Identifier: GPL-2.0

//! Devices a target opens through dm core (`dm_get_device`/`dm_put_device`).

use core::ptr::NonNull;

use kernel::bindings;
use kernel::prelude::*;
use core::ffi::CStr;

use super::bindings as dmb;
use super::compat;

/// How a device is opened (`blk_mode_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OpenMode(pub(crate) bindings::blk_mode_t);

impl OpenMode {
    /// Read-only.
    pub(crate) const READ: Self = Self(dmb::DMSNAP_BLK_OPEN_READ);
    /// Read-write.
    pub(crate) const READ_WRITE: Self = Self(dmb::DMSNAP_BLK_OPEN_READ | dmb::DMSNAP_BLK_OPEN_WRITE);
}

/// A block device held by a target for as long as this value lives.
///
/// # Invariants
///
/// `dev` was returned by `dm_get_device(ti, ...)` and has not been put yet.
/// `ti` outlives this value: a `DmDev` is created only through
/// [`super::Setup::get_device`] and is owned by the target's private data,
/// which dm core drops in `dtr` before it frees the `dm_target`.
pub(crate) struct DmDev {
    dev: NonNull<dmb::dm_dev>,
    ti: NonNull<dmb::dm_target>,
}

// SAFETY: After `dm_get_device` returns, the `dm_dev` is immutable until
// `dm_put_device`, which only `Drop` calls; `dm_put_device` may run on any
// thread (it takes dm core's table lock).
unsafe impl Send for DmDev {}
// SAFETY: All `&self` methods only read fields that are immutable while the
// device is held.
unsafe impl Sync for DmDev {}

impl DmDev {
    /// Takes ownership of a device returned by `dm_get_device`.
    ///
    /// # Safety
    ///
    /// `dev` must come from a successful `dm_get_device(ti, ...)` not yet
    /// put, and `ti` must outlive the returned value (see the type's
    /// invariants).
    pub(super) unsafe fn from_raw(dev: NonNull<dmb::dm_dev>, ti: NonNull<dmb::dm_target>) -> Self {
        // INVARIANT: guaranteed by the caller.
        Self { dev, ti }
    }

    /// The device name dm core uses in tables: `"major:minor"`.
    pub(crate) fn name(&self) -> &str {
        self.name_cstr().to_str().unwrap_or("")
    }

    fn name_cstr(&self) -> &CStr {
        // SAFETY: By the invariant `dev` is valid; `name` is a fixed array
        // that dm core fills with a NUL-terminated `"%u:%u"`.
        let name = unsafe { &(*self.dev.as_ptr()).name };
        // SAFETY: `name` is NUL-terminated (see above) and lives as long as
        // `self`.
        unsafe { compat::cstr_from_ptr(name.as_ptr()) }
    }

    /// The underlying block device.
    pub(crate) fn bdev(&self) -> *mut bindings::block_device {
        // SAFETY: By the invariant `dev` is valid and `bdev` is immutable
        // while the device is held.
        unsafe { (*self.dev.as_ptr()).bdev }
    }

    /// The device's `dev_t`, for identity comparisons.
    pub(crate) fn devt(&self) -> bindings::dev_t {
        // SAFETY: `bdev()` is a valid, held block device.
        unsafe { (*self.bdev()).bd_dev }
    }

    /// Current size in 512-byte sectors (re-read each call: the device may
    /// have been resized).
    pub(crate) fn size_sectors(&self) -> u64 {
        // SAFETY: `bdev()` is a valid, held block device.
        unsafe { dmb::dmsnap_bdev_nr_sectors(self.bdev()) }
    }

    /// Logical block size in bytes.
    pub(crate) fn logical_block_size(&self) -> u32 {
        // SAFETY: `bdev()` is a valid, held block device.
        unsafe { dmb::dmsnap_bdev_logical_block_size(self.bdev()) }
    }

    pub(super) fn as_raw(&self) -> *mut dmb::dm_dev {
        self.dev.as_ptr()
    }
}

impl Drop for DmDev {
    fn drop(&mut self) {
        // SAFETY: By the invariants `ti` is alive and `dev` was obtained from
        // `dm_get_device(ti, ...)` and is put exactly once, here.
        unsafe { dmb::dm_put_device(self.ti.as_ptr(), self.dev.as_ptr()) };
    }
}

/// Builds an error for a failed `dm_get_device`.
pub(super) fn get_device_error(ret: i32) -> Error {
    Error::from_errno(ret)
}

/// A copyable reference to the block device behind a [`DmDev`], for code
/// that runs outside the target's callbacks (kcopyd jobs, the commit
/// worker).
///
/// Building one is safe; every use that submits I/O through it is `unsafe`
/// and requires that the `DmDev` it came from is still held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BdevHandle(pub(super) *mut bindings::block_device);

impl BdevHandle {
    /// Whether both handles name the same block device.
    pub(crate) fn same(self, other: BdevHandle) -> bool {
        self.0 == other.0
    }
}

// SAFETY: The handle is a plain pointer; users promise (at the `unsafe` use
// sites) that the device is open.
unsafe impl Send for BdevHandle {}
// SAFETY: As above.
unsafe impl Sync for BdevHandle {}

impl DmDev {
    /// A handle to this device; see [`BdevHandle`].
    pub(crate) fn handle(&self) -> BdevHandle {
        BdevHandle(self.bdev())
    }
}

/// A block device that is open for as long as this value, or any copy of
/// it, exists, and until every I/O started through it has completed: the
/// handle the snapshot logic keeps for devices its target holds, usable
/// without `unsafe`.
///
/// Everything that submits I/O to a device from safe code takes a
/// `HeldDev` (or a [`HeldRegion`] only it can build):
/// [`super::Bio::set_held_dev`], [`super::OwnedBio::dual_write_for`],
/// [`super::kcopyd::KcopydClient::copy_held`] and `zero_held`, the dm-io
/// requests of [`super::dm_io::DmIoClient`] on `HeldRegion`s and
/// [`super::bounce::BounceCopier`].
///
/// [`HeldRegion`]: super::kcopyd::HeldRegion
///
/// # Invariants
///
/// The wrapped handle names an open block device, and it stays open until
/// every copy of this value is gone and every I/O started through it (bios
/// redirected to it, kcopyd jobs and dm-io requests on its regions) has
/// completed. Only [`HeldDev::new`] creates one, whose caller promises
/// this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeldDev(BdevHandle);

impl HeldDev {
    /// Vouches that `dev` stays open long enough (see the type's
    /// invariants).
    ///
    /// # Safety
    ///
    /// The block device behind `dev` (e.g. the `DmDev` it came from) must
    /// stay open until this value and all its copies are gone, and until
    /// every I/O started through any of them (a bio redirected to it with
    /// [`super::Bio::set_held_dev`] or [`super::OwnedBio::dual_write_for`],
    /// a kcopyd job or a dm-io request on one of its [`HeldRegion`]s) has
    /// completed. A kcopyd job has completed once its client was dropped
    /// (dropping waits for its jobs); the dm-io requests of the safe API
    /// complete before the call that starts them returns, except a flush,
    /// which completes before its [`FlushInFlight`] is gone (or never
    /// completes from the caller's point of view if that is leaked: keep
    /// the device open then).
    ///
    /// [`HeldRegion`]: super::kcopyd::HeldRegion
    /// [`FlushInFlight`]: super::dm_io::FlushInFlight
    pub(crate) unsafe fn new(dev: BdevHandle) -> Self {
        // INVARIANT: guaranteed by the caller.
        Self(dev)
    }

    /// The plain handle (for identity comparisons and registries).
    pub(crate) fn handle(self) -> BdevHandle {
        self.0
    }

    /// The block device, open by the type invariant.
    pub(super) fn bdev(self) -> *mut bindings::block_device {
        self.0 .0
    }

    /// Current size in 512-byte sectors (re-read each call: the device may
    /// have been resized).
    pub(crate) fn size_sectors(self) -> u64 {
        // SAFETY: By the type invariant the device is open.
        unsafe { dmb::dmsnap_bdev_nr_sectors(self.bdev()) }
    }

    /// Flushes the device's volatile write cache (`blkdev_issue_flush()`).
    /// Sleeps.
    pub(crate) fn flush(self) -> Result {
        // SAFETY: By the type invariant the device is open; the flush is
        // synchronous, so it completes before this returns.
        kernel::error::to_result(unsafe { dmb::dmsnap_bdev_flush(self.bdev()) })
    }

    /// Whether the device advertises FUA (`bdev_fua()`); see
    /// [`BdevHandle::has_fua`].
    pub(crate) fn has_fua(self) -> bool {
        // SAFETY: By the type invariant the device is open.
        unsafe { dmb::dmsnap_bdev_fua(self.bdev()) }
    }

    /// `count` sectors of this device from `sector`, for kcopyd and dm-io.
    pub(crate) fn region(self, sector: u64, count: u64) -> super::kcopyd::HeldRegion {
        super::kcopyd::HeldRegion::new(self, sector, count)
    }
}
