// SPDX-License-Identifier: GPL-2.0

//! Pending exceptions: allocated, being copied, committed, completed.

use core::sync::atomic::Ordering;

use kernel::prelude::*;
use kernel::rbtree::RBTree;
use kernel::sync::Arc;

use crate::dm::BioList;
use crate::dm::bio::FullWrite;
use crate::dm::log::dm_err;
use crate::pure::chunk::{Chunk, ChunkSize};
use crate::pure::stats::InvalidReason;
use crate::snapshot::copyout::{CopyGroup, NewRun};
use crate::snapshot::store::StoreKind;

use super::{SnapCore, SnapState};

/// An exception whose copy is in flight or not yet committed.
pub(super) struct Pending {
    pub(super) new: Chunk,
    /// `None` while copying; then whether the copy succeeded, or why not.
    pub(super) copied: Option<CopyResult>,
    /// Snapshot writes to this chunk, already remapped to the COW chunk.
    pub(super) snapshot_bios: BioList,
    /// Origin writes waiting for this copy.
    pub(super) origin_bios: BioList,
    /// A full-chunk snapshot write that replaced the copy; ended when the
    /// exception is committed.
    pub(super) full_write: Option<FullWrite>,
}

/// How a copy (or the write that replaced it) ended.
pub(crate) type CopyResult = Result<(), InvalidReason>;

/// What an allocation failure of the exception table means.
pub(super) fn reason_of(e: Error) -> InvalidReason {
    if e == ENOMEM {
        InvalidReason::NoMemory
    } else {
        InvalidReason::MetadataError
    }
}

/// The pending exceptions of a snapshot, in `SnapState::pending`.
pub(super) struct PendingSet {
    /// By origin chunk.
    pub(super) map: RBTree<Chunk, Pending>,
    /// Allocation order: sequence number -> chunk. Commits follow it.
    pub(super) order: RBTree<u64, Chunk>,
    pub(super) next_seq: u64,
    /// Pending exceptions whose copy has not finished yet.
    pub(super) copying: u64,
    /// Entries in `order`.
    pub(super) ordered: u64,
}

impl PendingSet {
    pub(super) fn new() -> Self {
        Self { map: RBTree::new(), order: RBTree::new(), next_seq: 0, copying: 0, ordered: 0 }
    }
}

impl SnapCore {
    /// Allocates a new pending exception for `chunk` (caller holds the
    /// state lock). `None` if the COW is full or memory ran out, in which
    /// case the snapshot was invalidated or marked overflowed.
    pub(super) fn new_pending(self: &Arc<Self>, st: &mut SnapState, chunk: Chunk, from_snapshot_write: bool) -> Option<Chunk> {
        let new = match st.cursor.prepare(self.cow_sectors()) {
            Ok(new) => new,
            Err(_) => {
                let overflow_kind = st.ownership.owner().is_some_and(|o| o.kind == StoreKind::Persistent { overflow: true });
                if from_snapshot_write && overflow_kind {
                    if !st.overflowed {
                        dm_err!("Snapshot overflowed: Unable to allocate exception.");
                    }
                    st.overflowed = true;
                } else {
                    self.invalidate(st, InvalidReason::Overflow);
                }
                return None;
            }
        };
        let pe = Pending {
            new,
            copied: None,
            snapshot_bios: BioList::new(),
            origin_bios: BioList::new(),
            full_write: None,
        };
        let seq = st.pending.next_seq;
        if st.pending.map.try_create_and_insert(chunk, pe, GFP_KERNEL).is_err() {
            self.invalidate(st, InvalidReason::NoMemory);
            return None;
        }
        if st.pending.order.try_create_and_insert(seq, chunk, GFP_KERNEL).is_err() {
            // Undo: the exception was never started.
            st.pending.map.remove(&chunk);
            self.invalidate(st, InvalidReason::NoMemory);
            return None;
        }
        st.pending.next_seq = st.pending.next_seq.wrapping_add(1);
        st.pending.copying = st.pending.copying.saturating_add(1);
        st.pending.ordered = st.pending.ordered.saturating_add(1);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.copies_in_progress.fetch_add(1, Ordering::AcqRel);
        Some(new)
    }

    /// Whether a chunk of origin sectors `start..end` has a copy in flight,
    /// or the snapshot is invalid and its header does not say so yet: the
    /// merge must not overwrite the origin before either is durable.
    pub(crate) fn copy_pending_in(&self, start: u64, end: u64) -> bool {
        Self::copy_pending_locked(&self.state.lock(), self.chunk, start, end)
    }

    fn copy_pending_locked(st: &SnapState, chunk: ChunkSize, start: u64, end: u64) -> bool {
        let Some(last_sector) = end.checked_sub(1).filter(|&l| l >= start) else {
            return false;
        };
        let first = chunk.sector_to_chunk(start);
        let last = chunk.sector_to_chunk(last_sector);
        st.invalidation.header_pending || (first..=last).any(|c| st.pending.map.get(&c).is_some())
    }

    /// Waits until [`Self::copy_pending_in`] is false for `start..end`.
    pub(crate) fn wait_no_copy_in(&self, start: u64, end: u64) {
        let mut st = self.state.lock();
        while Self::copy_pending_locked(&st, self.chunk, start, end) {
            self.wait_state_change(&mut st);
        }
    }

    /// Starts copying origin chunk `chunk` to COW chunk `new`.
    pub(crate) fn start_copy(self: &Arc<Self>, chunk: Chunk, new: Chunk) {
        let mut group = CopyGroup::new();
        group.add(self, NewRun { chunk, new, count: 1 });
        group.start();
    }

    /// A copy finished: mark it and let the worker commit it in order.
    pub(super) fn copy_done(self: &Arc<Self>, chunk: Chunk, result: CopyResult) {
        self.copies_done(chunk, 1, result);
    }

    /// The copy of origin chunks `chunk .. chunk + count` finished.
    pub(crate) fn copies_done(self: &Arc<Self>, chunk: Chunk, count: u32, result: CopyResult) {
        let mut st = self.state.lock();
        let mut copied: u64 = 0;
        for c in chunk..chunk.saturating_add(u64::from(count)) {
            let mut first = false;
            if let Some(pe) = st.pending.map.get_mut(&c) {
                first = pe.copied.replace(result).is_none();
                // A full-chunk snapshot write stands in for the copy.
                if first && result.is_ok() && pe.full_write.is_none() {
                    copied = copied.saturating_add(1);
                }
            }
            if first {
                st.pending.copying = st.pending.copying.saturating_sub(1);
                let _ = self.copies_in_progress.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    Some(n.saturating_sub(1))
                });
            }
        }
        drop(st);
        self.copied_chunks.fetch_add(copied, Ordering::Relaxed);
        self.notify_state_change();
        self.kick();
    }

    /// Finishes one exception (`pending_complete()`).
    ///
    /// The completed exception goes into the table first, so new snapshot
    /// reads of the chunk go to the COW copy. The pending exception stays
    /// until the snapshot reads already sent to the origin for this chunk
    /// have finished: while it exists, origin writes to the chunk queue on
    /// it (`origin_cow_range` looks for it first), so none can overtake
    /// such a read, whatever made the exception (an origin write, a
    /// snapshot write, the merge's copy-out).
    pub(super) fn complete(self: &Arc<Self>, chunk: Chunk, new: Chunk, result: CopyResult) {
        let mut st = self.state.lock();
        let mut failure = result.err();
        if failure.is_none() && st.valid {
            if let Err(e) = st.table.insert(chunk, new) {
                failure = Some(reason_of(e));
            }
        }
        if let Some(why) = failure {
            self.invalidate(&mut st, why);
        }
        // An already invalid snapshot fails it too.
        let ok = failure.is_none() && st.valid;
        if st.pending.map.get(&chunk).is_none() {
            return;
        }
        drop(st);
        self.drain_origin_reads(chunk);

        let mut st = self.state.lock();
        let Some(mut pe) = st.pending.map.remove(&chunk) else {
            return;
        };
        let mut origin_bios = pe.origin_bios.take();
        if st.invalidation.header_pending {
            // Invalid, and not durably so yet: the held origin writes go
            // once the header is written (`finish_invalidation`).
            while let Some(bio) = origin_bios.pop() {
                st.invalidation.waiters.push(bio);
            }
        }
        // Under the lock, for the waiters on `state_changed`.
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        drop(st);
        self.notify_state_change();

        if let Some(full) = pe.full_write.take() {
            full.finish(ok);
        }
        let mut snapshot_bios = pe.snapshot_bios.take();
        while let Some(bio) = snapshot_bios.pop() {
            if ok {
                bio.submit();
            } else {
                bio.fail();
            }
        }
        while let Some(bio) = origin_bios.pop() {
            self.entry.retry(bio);
        }
    }
}
