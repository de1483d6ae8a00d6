// SPDX-License-Identifier: GPL-2.0

//! Lists of bios a target holds: [`BioList`] (C's `bio_list`) and
//! [`TargetBioList`] of [`TargetBio`]s, deferred bios whose per-bio data
//! the target still needs.

use core::ptr::NonNull;
use core::sync::atomic::AtomicU64;

use kernel::bindings;

use super::bio::{Bio, OwnedBio};
use super::device::HeldDev;

/// A FIFO of owned bios, linked through `bi_next` like C's `bio_list`
/// (no allocation). Dropping a non-empty list fails its bios.
///
/// # Invariants
///
/// `head..tail` is a `bi_next`-linked chain of bios owned by the list,
/// `tail` is its last element, and both are null iff the list is empty.
pub(crate) struct BioList {
    head: *mut bindings::bio,
    tail: *mut bindings::bio,
}

// SAFETY: The list owns its bios, which may move between threads.
unsafe impl Send for BioList {}

impl BioList {
    /// An empty list.
    pub(crate) const fn new() -> Self {
        Self { head: core::ptr::null_mut(), tail: core::ptr::null_mut() }
    }

    /// Whether the list is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// Appends a bio.
    pub(crate) fn push(&mut self, bio: OwnedBio) {
        let bio = bio.into_raw();
        // SAFETY: We own `bio` now; clearing its link is ours to do.
        unsafe { (*bio).bi_next = core::ptr::null_mut() };
        if self.tail.is_null() {
            self.head = bio;
        } else {
            // SAFETY: By the invariant `tail` is an owned bio in the chain.
            unsafe { (*self.tail).bi_next = bio };
        }
        // INVARIANT: `bio` is the new last element.
        self.tail = bio;
    }

    /// Removes the first bio.
    pub(crate) fn pop(&mut self) -> Option<OwnedBio> {
        let bio = NonNull::new(self.head)?;
        // SAFETY: By the invariant `head` is an owned bio in the chain.
        self.head = unsafe { (*bio.as_ptr()).bi_next };
        if self.head.is_null() {
            self.tail = core::ptr::null_mut();
        }
        // SAFETY: `bio` was unlinked above; clear its link.
        unsafe { (*bio.as_ptr()).bi_next = core::ptr::null_mut() };
        // INVARIANT: ownership moves from the list to the returned value.
        Some(OwnedBio(bio))
    }

    /// Moves all bios out into a new list, leaving this one empty.
    pub(crate) fn take(&mut self) -> Self {
        core::mem::replace(self, Self::new())
    }
}

impl Drop for BioList {
    fn drop(&mut self) {
        while let Some(bio) = self.pop() {
            bio.fail();
        }
    }
}

/// A bio deferred by a target's `map`, with that target's per-bio data
/// size, so its per-bio data stays reachable after `map` returned.
///
/// # Invariants
///
/// `size` is the per-bio data size of the target whose `map` was given
/// `bio` (the same assumption [`Bio::per_bio_u64`] makes).
pub(crate) struct TargetBio {
    bio: OwnedBio,
    size: u32,
}

impl TargetBio {
    /// Defers `bio`, which `ti`'s `map` was given.
    pub(crate) fn defer(ti: &super::Target, bio: &Bio) -> Self {
        // INVARIANT: `bio` is `ti`'s (see above).
        Self { bio: bio.defer(), size: ti.per_io_data_size() }
    }

    /// The bio.
    pub(crate) fn view(&self) -> &Bio {
        self.bio.view()
    }

    /// Whether [`Self::dual_write`] takes it.
    pub(crate) fn dual_writable(&self) -> bool {
        // SAFETY: `size` is its target's per-bio size (type invariant).
        unsafe { self.bio.view().dual_writable(self.size) }
    }

    /// [`Bio::per_bio_u64`].
    pub(crate) fn per_bio_u64(&self) -> Option<&AtomicU64> {
        // SAFETY: `size` is its target's per-bio size (type invariant).
        unsafe { self.bio.view().per_bio_u64_sized(self.size) }
    }

    /// [`OwnedBio::dual_write`] with the first write to `first`.
    pub(crate) fn dual_write(self, first: HeldDev, first_sector: u64) -> Result<(), OwnedBio> {
        // SAFETY: `size` is its target's per-bio size (type invariant).
        unsafe { self.bio.dual_write_held(self.size, first, first_sector) }
    }

    /// The bio, no longer needing its per-bio data.
    pub(crate) fn into_owned(self) -> OwnedBio {
        self.bio
    }
}

/// A [`BioList`] of [`TargetBio`]s of targets with one per-bio data size
/// (the owners of one snapshot: all `snapshot-merge` targets).
pub(crate) struct TargetBioList {
    list: BioList,
    /// The per-bio data size of every bio in `list` (when not empty).
    size: u32,
}

impl TargetBioList {
    /// An empty list.
    pub(crate) const fn new() -> Self {
        Self { list: BioList::new(), size: 0 }
    }

    /// Whether the list is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Appends `bio`; fails it if its per-bio size differs from the
    /// other bios' (cannot happen for one target type).
    pub(crate) fn push(&mut self, bio: TargetBio) {
        if !self.list.is_empty() && bio.size != self.size {
            bio.into_owned().fail();
            return;
        }
        self.size = bio.size;
        self.list.push(bio.bio);
    }

    /// Removes the first bio.
    pub(crate) fn pop(&mut self) -> Option<TargetBio> {
        // INVARIANT: every bio in the list has per-bio size `size`.
        self.list.pop().map(|bio| TargetBio { bio, size: self.size })
    }

    /// Moves all bios out into a new list, leaving this one empty.
    pub(crate) fn take(&mut self) -> Self {
        core::mem::replace(self, Self::new())
    }
}
