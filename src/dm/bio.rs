// SPDX-License-Identifier: GPL-2.0

//! A view of a `struct bio` handed to a target by dm core.
//!
//! C header: [`include/linux/bio.h`](srctree/include/linux/bio.h).

use kernel::bindings;
use kernel::types::Opaque;

use super::bindings as dmb;
use super::device::DmDev;

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

    /// Tells dm core to process only the first `sectors` of this bio now and
    /// to send the rest as a new bio (`dm_accept_partial_bio()`).
    ///
    /// Only valid from `map` on a bio that is not a flush, discard or zone
    /// operation; the caller checks that.
    #[allow(dead_code)]
    pub(crate) fn accept_partial(&self, sectors: u32) {
        // SAFETY: The bio is the clone dm core passed to `map` (the only
        // place the snapshot code calls this), as the C function requires.
        unsafe { dmb::dm_accept_partial_bio(self.raw(), sectors) };
    }
}
