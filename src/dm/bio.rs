// SPDX-License-Identifier: GPL-2.0

//! A view of a `struct bio` handed to a target by dm core.
//!
//! C header: [`include/linux/bio.h`](srctree/include/linux/bio.h).

use core::ptr::NonNull;
use core::sync::atomic::AtomicU64;

use kernel::bindings;
use kernel::types::Opaque;

use super::bindings as dmb;
use super::device::{DmDev, HeldDev};

/// The operation of a bio (`bio_op()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BioOp {
    /// `REQ_OP_READ`.
    Read,
    /// `REQ_OP_WRITE`.
    Write,
    /// `REQ_OP_FLUSH`.
    Flush,
    /// `REQ_OP_DISCARD`.
    Discard,
    /// `REQ_OP_WRITE_ZEROES`.
    WriteZeroes,
    /// Anything else (secure erase, zone operations, driver ops).
    Other(u32),
}

impl BioOp {
    /// Decodes the operation bits of `bi_opf`.
    pub(crate) fn from_opf(opf: u32) -> Self {
        match opf & dmb::DMSNAP_REQ_OP_MASK {
            bindings::req_op_REQ_OP_READ => Self::Read,
            bindings::req_op_REQ_OP_WRITE => Self::Write,
            bindings::req_op_REQ_OP_FLUSH => Self::Flush,
            bindings::req_op_REQ_OP_DISCARD => Self::Discard,
            bindings::req_op_REQ_OP_WRITE_ZEROES => Self::WriteZeroes,
            other => Self::Other(other),
        }
    }
}

/// A bio that dm core passed to a target callback.
///
/// Only references are handed out, and only for the duration of the
/// callback; the target owns the bio (dm core's clone) until it returns a
/// result saying otherwise.
///
/// # Invariants
///
/// The wrapped `struct bio` is valid for the lifetime of the reference, and
/// no other thread modifies it meanwhile.
#[repr(transparent)]
pub(crate) struct Bio(Opaque<bindings::bio>);

impl Bio {
    /// Borrows a bio from a raw pointer.
    ///
    /// # Safety
    ///
    /// `ptr` must be a valid bio that the caller owns for `'a` (a dm target
    /// owns the clone passed to `map` and `end_io` during the call).
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut bindings::bio) -> &'a Self {
        // SAFETY: `Bio` is `repr(transparent)` over `Opaque<bio>`, which has
        // the layout of `bio`; validity for `'a` is the caller's guarantee.
        // INVARIANT: see above.
        unsafe { &*ptr.cast() }
    }

    fn raw(&self) -> *mut bindings::bio {
        self.0.get()
    }

    /// The raw `bi_opf` (operation and flags).
    pub(crate) fn opf(&self) -> u32 {
        // SAFETY: By the type invariant the bio is valid.
        unsafe { (*self.raw()).bi_opf }
    }

    /// The operation (`bio_op()`).
    pub(crate) fn op(&self) -> BioOp {
        BioOp::from_opf(self.opf())
    }

    /// Whether data moves to the device (`op_is_write()`: odd op codes).
    pub(crate) fn is_write(&self) -> bool {
        self.opf() & 1 != 0
    }

    /// Whether the bio carries `REQ_PREFLUSH`.
    pub(crate) fn is_preflush(&self) -> bool {
        self.opf() & dmb::DMSNAP_REQ_PREFLUSH != 0
    }

    /// Whether the bio carries `REQ_FUA`.
    #[cfg_attr(not(CONFIG_KUNIT), allow(dead_code))] // used by the KUnit cases only
    pub(crate) fn is_fua(&self) -> bool {
        self.opf() & dmb::DMSNAP_REQ_FUA != 0
    }

    /// First sector (`bi_iter.bi_sector`).
    pub(crate) fn sector(&self) -> u64 {
        // SAFETY: By the type invariant the bio is valid.
        unsafe { (*self.raw()).bi_iter.bi_sector }
    }

    /// Points the bio at another sector of its (new) device.
    pub(crate) fn set_sector(&self, sector: u64) {
        // SAFETY: By the type invariant the bio is valid and owned by us.
        unsafe { (*self.raw()).bi_iter.bi_sector = sector };
    }

    /// Size in bytes (`bi_iter.bi_size`).
    pub(crate) fn size_bytes(&self) -> u32 {
        // SAFETY: By the type invariant the bio is valid.
        unsafe { (*self.raw()).bi_iter.bi_size }
    }

    /// Size in sectors (`bio_sectors()`).
    pub(crate) fn sectors(&self) -> u32 {
        self.size_bytes() >> 9
    }

    /// Redirects the bio to `dev` (`bio_set_dev()`); the sector is kept.
    pub(crate) fn set_dev(&self, dev: &DmDev) {
        // SAFETY: The bio is valid and owned by us; `dev.bdev()` is a held
        // block device.
        unsafe { dmb::dmsnap_bio_set_dev(self.raw(), dev.bdev()) };
    }

    /// Which of the clones dm core made for this target this is
    /// (`dm_bio_get_target_bio_nr()`; see `num_discard_bios`).
    pub(crate) fn target_bio_nr(&self) -> u32 {
        // SAFETY: The bio is a valid dm clone.
        unsafe { dmb::dm_bio_get_target_bio_nr(self.raw()) }
    }

    /// Redirects the bio to `dev` (`bio_set_dev()`); the sector is kept.
    /// The bio's I/O is then I/O started through `dev` (see [`HeldDev`]).
    pub(crate) fn set_held_dev(&self, dev: HeldDev) {
        // SAFETY: The bio is valid and owned by us (type invariant); by the
        // `HeldDev` invariant the device stays open until the bio, sent to
        // it from now on, has completed.
        unsafe { dmb::dmsnap_bio_set_dev(self.raw(), dev.bdev()) };
    }

    /// Tells dm core to process only the first `sectors` of this bio now and
    /// to send the rest as a new bio (`dm_accept_partial_bio()`).
    ///
    /// Only valid from `map` on a bio that is not a flush, discard or zone
    /// operation; the caller checks that.
    pub(crate) fn accept_partial(&self, sectors: u32) {
        // SAFETY: The bio is the clone dm core passed to `map` (the only
        // place the snapshot code calls this), as the C function requires.
        unsafe { dmb::dm_accept_partial_bio(self.raw(), sectors) };
    }
}

/// Per-bio data a target using [`Bio::per_bio_u64`],
/// [`OwnedBio::into_full_write`] and [`OwnedBio::dual_write`] must reserve:
/// a counter slot, then the saved state of a full write or of a dual write
/// (a bio is only ever one of them).
pub(crate) const PER_BIO_DATA_SIZE: usize = SAVED_STATE_OFFSET + max(
    core::mem::size_of::<dmb::dmsnap_full_write>(),
    core::mem::size_of::<dmb::dmsnap_dual_write>(),
);

/// Where the saved full-write or dual-write state starts in the per-bio
/// data: after the counter slot.
const SAVED_STATE_OFFSET: usize = 8;

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

impl Bio {
    /// Takes ownership of the bio from dm core.
    ///
    /// The caller must then return [`super::MapResult::Submitted`] from
    /// `map`: dm core leaves the bio to the target, which later submits or
    /// ends it through the returned [`OwnedBio`].
    pub(crate) fn defer(&self) -> OwnedBio {
        // INVARIANT: dm core gave the target this bio in `map`; with the
        // `Submitted` result it is the target's until submitted or ended.
        OwnedBio(NonNull::from(&self.0).cast())
    }

    /// The target's per-bio data (`dm_per_bio_data()`), if it reserved at
    /// least [`PER_BIO_DATA_SIZE`] bytes.
    fn per_bio_data(&self, ti: &super::Target) -> Option<*mut u8> {
        // SAFETY: `ti` is the target of this bio (callers map or complete
        // it for `ti`), and it reserved what it says.
        unsafe { self.per_bio_data_sized(ti.per_io_data_size()) }
    }

    /// The per-bio data of a target that reserved `size` bytes, if that is
    /// at least [`PER_BIO_DATA_SIZE`].
    ///
    /// # Safety
    ///
    /// The bio must be a dm clone of a target that reserved exactly `size`
    /// bytes of per-bio data.
    unsafe fn per_bio_data_sized(&self, size: u32) -> Option<*mut u8> {
        if (size as usize) < PER_BIO_DATA_SIZE {
            return None;
        }
        // SAFETY: By the caller's guarantee the bio is a dm clone of a
        // target that reserved `size` bytes of per-bio data.
        let data = unsafe { dmb::dm_per_bio_data(self.raw(), size as usize) };
        (!data.is_null()).then_some(data.cast())
    }

    /// Whether [`OwnedBio::dual_write`] takes this bio: a plain data write
    /// of a target that reserved `size` bytes of per-bio data.
    ///
    /// # Safety
    ///
    /// As for `per_bio_data_sized`.
    pub(crate) unsafe fn dual_writable(&self, size: u32) -> bool {
        // SAFETY: As guaranteed by the caller.
        unsafe { self.dual_write_area(size) }.is_some()
    }

    /// The per-bio area [`OwnedBio::dual_write`] saves the bio's state in,
    /// if the bio is a plain data write and the area is there.
    ///
    /// # Safety
    ///
    /// As for `per_bio_data_sized`.
    unsafe fn dual_write_area(&self, size: u32) -> Option<*mut dmb::dmsnap_dual_write> {
        // SAFETY: The bio is valid for the call.
        if !unsafe { dmb::dmsnap_dual_write_ok(self.raw()) } {
            return None;
        }
        // SAFETY: As guaranteed by the caller.
        let area = unsafe { self.per_bio_data_sized(size) }?.wrapping_add(SAVED_STATE_OFFSET);
        (area.align_offset(core::mem::align_of::<dmb::dmsnap_dual_write>()) == 0).then_some(area.cast())
    }

    /// [`Self::dual_writable`] of a bio `ti` was given (in `map`), as
    /// [`Self::per_bio_u64`] assumes: whether [`OwnedBio::dual_write_for`]
    /// with the same `ti` takes it.
    pub(crate) fn dual_writable_for(&self, ti: &super::Target) -> bool {
        // SAFETY: `ti` is the target of this bio (callers map it for `ti`),
        // and it reserved what it says.
        unsafe { self.dual_writable(ti.per_io_data_size()) }
    }

    /// The 8-byte per-bio counter slot (first field of the per-bio data).
    pub(crate) fn per_bio_u64(&self, ti: &super::Target) -> Option<&AtomicU64> {
        Self::counter_slot(self.per_bio_data(ti)?)
    }

    /// [`Self::per_bio_u64`] of a bio the target holds, whose target
    /// reserved `size` bytes of per-bio data.
    ///
    /// # Safety
    ///
    /// As for `per_bio_data_sized`.
    pub(crate) unsafe fn per_bio_u64_sized(&self, size: u32) -> Option<&AtomicU64> {
        // SAFETY: As guaranteed by the caller.
        Self::counter_slot(unsafe { self.per_bio_data_sized(size) }?)
    }

    fn counter_slot<'a>(data: *mut u8) -> Option<&'a AtomicU64> {
        if data.is_null() || data.align_offset(core::mem::align_of::<AtomicU64>()) != 0 {
            return None;
        }
        // SAFETY: `data` is the start of a bio's per-bio data (callers): 8
        // suitably aligned bytes that live as long as the bio, and only its
        // target uses them.
        Some(unsafe { &*data.cast::<AtomicU64>() })
    }
}

/// A bio the target took from dm core with [`Bio::defer`]. It must be
/// submitted or ended; dropping it ends it with an I/O error (and a log
/// message), so a bug can never leave a bio hanging.
///
/// # Invariants
///
/// Points to a bio that this value owns.
pub(crate) struct OwnedBio(pub(super) NonNull<bindings::bio>);

// SAFETY: An owned bio may be submitted or completed from any thread.
unsafe impl Send for OwnedBio {}

impl OwnedBio {
    pub(super) fn into_raw(self) -> *mut bindings::bio {
        let ptr = self.0.as_ptr();
        core::mem::forget(self);
        ptr
    }

    /// The bio.
    pub(crate) fn view(&self) -> &Bio {
        // SAFETY: By the invariant the bio is valid and ours while `self`
        // lives, which bounds the reference.
        unsafe { Bio::from_raw(self.0.as_ptr()) }
    }

    /// Submits the bio, already pointed at its device and sector
    /// (`dm_submit_bio_remap()`).
    pub(crate) fn submit(self) {
        let bio = self.into_raw();
        // SAFETY: We own the bio, a dm clone whose target returned
        // `DM_MAPIO_SUBMITTED`; ownership passes to the block layer.
        unsafe { dmb::dm_submit_bio_remap(bio, core::ptr::null_mut()) };
    }

    /// Completes the bio with an I/O error.
    pub(crate) fn fail(self) {
        let bio = self.into_raw();
        // SAFETY: We own the bio; ending it gives it back to dm core.
        unsafe { dmb::dmsnap_bio_io_error(bio) };
    }

    /// Completes the bio successfully without doing any I/O.
    pub(crate) fn complete(self) {
        let bio = self.into_raw();
        // SAFETY: As in `fail`.
        unsafe { dmb::dmsnap_bio_endio_ok(bio) };
    }
}

impl OwnedBio {
    /// Turns a remapped write into "the copy": once submitted (see
    /// [`FullWriteSubmit`]), its completion fires `callback` instead of
    /// ending the bio, and [`FullWrite::finish`] ends it later.
    /// `None` (and the bio failed) if the target has no room for the saved
    /// completion in its per-bio data.
    pub(crate) fn into_full_write(
        self,
        ti: &super::Target,
        callback: super::kcopyd::PreparedCallback,
    ) -> Option<(FullWrite, FullWriteSubmit)> {
        let Some(data) = self.view().per_bio_data(ti) else {
            // Firing the callback as failed releases its context.
            // SAFETY: The job is prepared and fired exactly once here.
            unsafe { dmb::dm_kcopyd_do_callback(callback.job.as_ptr(), 1, 0) };
            self.fail();
            return None;
        };
        // The saved completion lives right after the counter slot.
        let fw = data.wrapping_add(SAVED_STATE_OFFSET).cast::<dmb::dmsnap_full_write>();
        let bio = self.into_raw();
        let bio = NonNull::new(bio)?;
        let fw = NonNull::new(fw)?;
        // INVARIANT: both handles refer to the bio we own, not yet sent.
        Some((FullWrite { bio, fw }, FullWriteSubmit { bio, fw, job: callback }))
    }
}

impl OwnedBio {
    /// Writes the bio to `first` at `first_sector`, then to the device and
    /// sector it is set to now, and only then completes it; an error of the
    /// first write fails it without the second. Gives the bio back if it
    /// cannot be written twice (not a plain data write, or no room in the
    /// per-bio data).
    ///
    /// # Safety
    ///
    /// The bio must be a dm clone of a target that reserved exactly `size`
    /// bytes of per-bio data; `first` must stay open until it completes.
    pub(crate) unsafe fn dual_write(self, size: u32, first: super::BdevHandle, first_sector: u64) -> Result<(), Self> {
        let wq = super::sync::queue_raw();
        // SAFETY: As guaranteed by the caller.
        let area = unsafe { self.view().dual_write_area(size) };
        let Some(dw) = area.filter(|_| !wq.is_null()) else {
            return Err(self);
        };
        let bio = self.into_raw();
        // SAFETY: The bio is ours, a dm clone whose target returned (or will
        // return) `DM_MAPIO_SUBMITTED`; `dw` is its per-bio area, unused by
        // anything else for a bio of the merge target; the module's queue
        // outlives every bio of its targets; the caller keeps `first` open.
        unsafe { dmb::dmsnap_dual_write_start(bio, dw, wq, first.0, first_sector) };
        Ok(())
    }
}

impl OwnedBio {

    /// [`Self::dual_write`] whose first write goes to the held device
    /// `first`.
    ///
    /// # Safety
    ///
    /// The bio must be a dm clone of a target that reserved exactly `size`
    /// bytes of per-bio data.
    pub(crate) unsafe fn dual_write_held(self, size: u32, first: HeldDev, first_sector: u64) -> Result<(), Self> {
        // SAFETY: The size is the caller's guarantee; by the `HeldDev`
        // invariant `first` stays open until the write sent to it completed.
        unsafe { self.dual_write(size, first.handle(), first_sector) }
    }
}

/// A full-chunk write acting as a copy; ended by [`FullWrite::finish`]
/// once the exception is committed (or failed). Dropping it fails the bio.
///
/// # Invariants
///
/// `bio` is owned by us; `fw` is its per-bio full-write area. Once the
/// matching [`FullWriteSubmit`] ran and the callback fired, the bio is
/// complete at the device and waits for `finish`.
pub(crate) struct FullWrite {
    bio: NonNull<bindings::bio>,
    fw: NonNull<dmb::dmsnap_full_write>,
}

// SAFETY: Ending the bio may happen on any thread.
unsafe impl Send for FullWrite {}

impl FullWrite {
    /// Ends the bio, successfully or with an I/O error. Call only after
    /// its callback fired (the write finished at the device).
    pub(crate) fn finish(self, ok: bool) {
        let (bio, fw) = (self.bio.as_ptr(), self.fw.as_ptr());
        core::mem::forget(self);
        // SAFETY: By the invariant the bio is ours, its write is done, and
        // `fw` holds the completion saved by `dmsnap_full_write_start`.
        unsafe { dmb::dmsnap_full_write_finish(bio, fw, ok) };
    }
}

impl Drop for FullWrite {
    fn drop(&mut self) {
        super::log::dm_err!("internal error: full-chunk write dropped; failing it");
        // SAFETY: As in `finish`.
        unsafe { dmb::dmsnap_full_write_finish(self.bio.as_ptr(), self.fw.as_ptr(), false) };
    }
}

/// Sends a [`FullWrite`]'s bio to its (already set) device.
pub(crate) struct FullWriteSubmit {
    bio: NonNull<bindings::bio>,
    fw: NonNull<dmb::dmsnap_full_write>,
    job: super::kcopyd::PreparedCallback,
}

// SAFETY: Submitting may happen on any thread.
unsafe impl Send for FullWriteSubmit {}

impl FullWriteSubmit {
    /// Submits the write; its completion fires the prepared callback.
    pub(crate) fn submit(self) {
        let (bio, fw, job) = (self.bio.as_ptr(), self.fw.as_ptr(), self.job.job.as_ptr());
        core::mem::forget(self);
        // SAFETY: The bio is ours and remapped; `fw` is its per-bio area;
        // the job is prepared and fired once, by the bio's completion.
        unsafe { dmb::dmsnap_full_write_start(bio, fw, job) };
    }
}

impl Drop for FullWriteSubmit {
    /// Not submitted: fire the callback as a failed copy, so its context is
    /// released and the kcopyd client does not wait for it forever.
    fn drop(&mut self) {
        // SAFETY: The job is prepared and not fired yet (`submit` forgets
        // `self`); it is fired exactly once, here.
        unsafe { dmb::dm_kcopyd_do_callback(self.job.job.as_ptr(), 1, 0) };
    }
}

impl Drop for OwnedBio {
    fn drop(&mut self) {
        super::log::dm_err!("internal error: bio dropped without completion; failing it");
        // SAFETY: We own the bio and end it exactly once (we are dropping).
        unsafe { dmb::dmsnap_bio_io_error(self.0.as_ptr()) };
    }
}
