// SPDX-License-Identifier: GPL-2.0

//! Support for the KUnit I/O self-tests: a scratch block device.
//!
//! The device is named by the `kunit_scratch_dev` module parameter (only in
//! `CONFIG_KUNIT` kernels); without it the I/O tests are skipped.

use core::ptr::NonNull;

use kernel::bindings;
use kernel::prelude::*;
use core::ffi::CStr;

use super::bindings as dmb;
use super::kcopyd::Region;

/// An open scratch block device, closed on drop.
///
/// # Invariants
///
/// `file` is an open block-device file from `bdev_file_open_by_path`.
pub(crate) struct ScratchDev {
    file: NonNull<bindings::file>,
}

impl ScratchDev {
    /// Opens the scratch device; `Ok(None)` if none was configured.
    pub(crate) fn open() -> Result<Option<Self>> {
        // SAFETY: No preconditions; returns NULL, an ERR_PTR or a file.
        let file = unsafe { dmb::dmsnap_kunit_open_scratch() };
        let Some(file) = NonNull::new(kernel::error::from_err_ptr(file)?) else {
            return Ok(None);
        };
        // INVARIANT: a successfully opened block-device file.
        Ok(Some(Self { file }))
    }

    /// A handle to the device, for code that takes one. Valid while `self`
    /// lives.
    pub(crate) fn handle(&self) -> super::BdevHandle {
        // SAFETY: By the invariant `file` is an open block-device file.
        super::BdevHandle(unsafe { dmb::dmsnap_file_bdev(self.file.as_ptr()) })
    }

    /// The device's `dev_t`.
    pub(crate) fn devt(&self) -> u32 {
        // SAFETY: The handle's device is open (see above).
        unsafe { (*self.handle().0).bd_dev }
    }

    /// A region of the device. Valid while `self` lives.
    pub(crate) fn region(&self, sector: u64, count: u64) -> Region {
        // SAFETY: By the invariant `file` is an open block-device file.
        let bdev = unsafe { dmb::dmsnap_file_bdev(self.file.as_ptr()) };
        Region::from_bdev(bdev, sector, count)
    }
}

impl Drop for ScratchDev {
    fn drop(&mut self) {
        // SAFETY: By the invariant the file is open; it is closed once.
        unsafe { dmb::dmsnap_kunit_close_scratch(self.file.as_ptr()) };
    }
}

/// The scratch device for an I/O test case, or `None` after marking the
/// case skipped (no device configured) or failed (it could not be opened).
pub(crate) fn scratch_or_skip() -> Option<ScratchDev> {
    match ScratchDev::open() {
        Ok(Some(dev)) => Some(dev),
        Ok(None) => {
            skip(c"no kunit_scratch_dev given");
            None
        }
        Err(e) => {
            super::log::dm_err!("kunit: cannot open kunit_scratch_dev: error {}", e.to_errno());
            super::compat::kunit_check!(false);
            None
        }
    }
}

/// Marks the running KUnit case as skipped.
pub(crate) fn skip(reason: &CStr) {
    // SAFETY: `reason` is NUL-terminated; the shim checks for a current test.
    unsafe { dmb::dmsnap_kunit_skip(super::compat::cstr_ptr(reason)) };
}

/// Sets the `snapshot_cow_threshold` module parameter; returns the old value.
pub(crate) fn set_cow_threshold(limit: u32) -> u32 {
    // SAFETY: Writes a module parameter (atomically); no preconditions.
    unsafe { dmb::dmsnap_kunit_set_cow_threshold(limit) }
}

/// Sleeps for `ms` milliseconds.
pub(crate) fn sleep_ms(ms: u32) {
    // SAFETY: Called from a KUnit case thread, which may sleep.
    unsafe { bindings::msleep(ms) };
}

/// A bare bio (never submitted) for testing [`super::Bio`]; freed on drop.
///
/// # Invariants
///
/// `bio` was allocated by `dmsnap_kunit_bio_alloc` and is owned by this value.
pub(crate) struct TestBio {
    bio: NonNull<bindings::bio>,
}

impl TestBio {
    /// Allocates a bio with the given `bi_opf`, first sector and size.
    pub(crate) fn new(opf: u32, sector: u64, bytes: u32) -> Option<Self> {
        // SAFETY: No preconditions; returns NULL or an initialised bio.
        let bio = NonNull::new(unsafe { dmb::dmsnap_kunit_bio_alloc(opf, sector, bytes) })?;
        // INVARIANT: freshly allocated and owned.
        Some(Self { bio })
    }

    /// The bio as a target callback would see it.
    pub(crate) fn view(&self) -> &super::Bio {
        // SAFETY: By the invariant the bio is valid and ours while `self`
        // lives, which bounds the returned reference.
        unsafe { super::Bio::from_raw(self.bio.as_ptr()) }
    }
}

impl Drop for TestBio {
    fn drop(&mut self) {
        // SAFETY: By the invariant the bio is ours; freed once.
        unsafe { dmb::dmsnap_kunit_bio_free(self.bio.as_ptr()) };
    }
}
