// SPDX-License-Identifier: GPL-2.0

//! The `snapshot` target's I/O path.

use core::sync::atomic::Ordering;

use kernel::prelude::*;
use kernel::sync::Arc;

use crate::dm::kcopyd::CopyCallback;
use crate::dm::params;
use crate::dm::sync::{Exclusive, NoIoScope};
use crate::dm::{Bio, BioOp, MapResult, OwnedBio};
use crate::pure::chunk::Chunk;
use crate::pure::stats::InvalidReason;
use crate::snapshot::copyout::CopyJob;

use super::SnapCore;
use super::handover::TargetId;

impl SnapCore {
    /// Whether this snapshot has more than `snapshot_cow_threshold` chunks
    /// being copied (`wait_for_in_progress()`'s test: with 0, a write that
    /// needs a copy waits until none is). As upstream's `in_progress`, a
    /// chunk counts until its copy is done, not until its commit.
    pub(crate) fn over_cow_threshold(&self) -> bool {
        let limit = params::cow_threshold();
        self.copies_in_progress.load(Ordering::Acquire) > u64::from(limit)
    }

    /// Sleeps while the snapshot is over its copy threshold. Holds no lock
    /// while sleeping (upstream's 2019 deadlock was a writer waiting for
    /// this bound with `_origins_lock` held).
    pub(crate) fn throttle(&self) {
        if !self.over_cow_threshold() {
            return;
        }
        let mut st = self.state.lock();
        while self.over_cow_threshold() {
            self.wait_state_change(&mut st);
        }
    }

    /// `map` of the snapshot target (`snapshot_map()`).
    pub(crate) fn snapshot_map(self: &Arc<Self>, me: TargetId, ti: &crate::dm::Target, bio: &Bio) -> MapResult {
        let slot = bio.per_bio_u64(ti);
        if let Some(slot) = slot {
            slot.store(0, Ordering::Relaxed);
        }
        if bio.is_preflush() {
            // Snapshot writes never touch the origin: flush the COW only.
            bio.set_held_dev(self.cow);
            return MapResult::Remapped;
        }
        let sector = bio.sector();
        let chunk = self.chunk.sector_to_chunk(sector);
        let write = bio.is_write();
        if write {
            self.throttle();
        }

        let _noio = NoIoScope::enter();
        let mut st = self.state.lock();
        if !st.ownership.is(me) || !st.valid || (write && st.overflowed) {
            return MapResult::Kill;
        }
        let discard = bio.op() == BioOp::Discard;
        if discard && self.discard_passdown_origin && bio.target_bio_nr() != 0 {
            // The second discard clone frees space in the origin, without
            // copying anything out first (that would defeat its purpose).
            self.track(bio, slot, chunk, self.origin_read_gen(chunk));
            drop(st);
            bio.set_held_dev(self.origin);
            return MapResult::Remapped;
        }
        if let Some(new) = st.table.lookup(chunk) {
            drop(st);
            let Some(cow_sector) = self.cow_sector(new, sector) else {
                return MapResult::Kill;
            };
            self.remap_to_cow(bio, cow_sector);
            if discard && u64::from(bio.sectors()) == u64::from(self.chunk.sectors()) {
                // A whole exception chunk: zero it rather than discard it
                // (the exception stays; the COW space is not given back).
                self.zero_cow_chunk(new, bio.defer());
                return MapResult::Submitted;
            }
            return MapResult::Remapped;
        }
        if discard {
            // No exception: nothing to discard, and no copy-out for it.
            drop(st);
            bio.defer().complete();
            return MapResult::Submitted;
        }
        if !write {
            // The origin still holds this chunk's snapshot data: any origin
            // write to it is held until this read is done (see `complete`).
            self.track(bio, slot, chunk, self.origin_read_gen(chunk));
            drop(st);
            bio.set_held_dev(self.origin);
            return MapResult::Remapped;
        }

        let (new, start) = match st.pending.map.get(&chunk) {
            Some(pe) => (pe.new, false),
            None => match self.new_pending(&mut st, chunk, true) {
                Some(new) => (new, true),
                None => return MapResult::Kill,
            },
        };
        let Some(cow_sector) = self.cow_sector(new, sector) else {
            drop(st);
            if start {
                // Fails the exception (and invalidates the snapshot): the
                // COW chunk lies outside the COW.
                self.copy_done(chunk, Err(InvalidReason::MetadataError));
            }
            return MapResult::Kill;
        };
        self.remap_to_cow(bio, cow_sector);
        if start
            && bio.op() == BioOp::Write
            && bio.sectors() == self.chunk.sectors()
            && self.chunk.is_aligned(sector)
        {
            // The write covers the whole chunk: it is the copy.
            drop(st);
            self.start_full_write(ti, chunk, bio);
            return MapResult::Submitted;
        }
        let Some(pe) = st.pending.map.get_mut(&chunk) else {
            return MapResult::Kill;
        };
        pe.snapshot_bios.push(bio.defer());
        drop(st);
        if start {
            self.start_copy(chunk, new);
        }
        MapResult::Submitted
    }

    /// Sends a full-chunk snapshot write to the COW in place of the copy
    /// (`start_full_bio()`); it completes like a copy and is ended after
    /// the commit. The pending exception exists and was not started.
    fn start_full_write(self: &Arc<Self>, ti: &crate::dm::Target, chunk: Chunk, bio: &Bio) {
        let owned = bio.defer();
        let prepared = Arc::new(CopyJob::single(self.clone(), chunk), GFP_KERNEL)
            .map_err(|_| ENOMEM)
            .and_then(|job| match self.kcopyd.lock().as_ref() {
                // Not under the state lock: this may wait for kcopyd jobs,
                // whose completions take it.
                Some(kc) => kc.prepare_callback(job),
                None => Err(ENODEV),
            });
        let callback = match prepared {
            Ok(cb) => cb,
            Err(_) => {
                // Fall back to failing the write with the exception.
                if let Some(pe) = self.state.lock().pending.map.get_mut(&chunk) {
                    pe.snapshot_bios.push(owned);
                }
                self.copy_done(chunk, Err(InvalidReason::NoMemory));
                return;
            }
        };
        // On failure the bio was failed and the callback fired as an error.
        let Some((full, submit)) = owned.into_full_write(ti, callback) else {
            return;
        };
        match self.state.lock().pending.map.get_mut(&chunk) {
            Some(pe) => pe.full_write = Some(full),
            // Cannot happen: the exception waits for this write's callback.
            None => {
                drop(submit);
                full.finish(false);
                return;
            }
        }
        submit.submit();
    }

    /// Zeroes COW chunk `new` with kcopyd, then completes `bio`.
    fn zero_cow_chunk(&self, new: Chunk, bio: OwnedBio) {
        let Some(start) = self.chunk.chunk_to_sector(new) else {
            bio.fail();
            return;
        };
        let job = match Arc::new(ZeroJob { bio: Exclusive::new(Some(bio)) }, GFP_KERNEL) {
            Ok(job) => job,
            Err(_) => return, // dropping the job fails the bio
        };
        if let Some(kc) = self.kcopyd.lock().as_ref() {
            let _ = kc.zero_held(&[self.cow.region(start, u64::from(self.chunk.sectors()))], job);
        }
        // On error the job (and so the bio, failed) was dropped.
    }

    /// Points `bio` at `cow_sector` of the COW ([`Self::cow_sector`]).
    pub(super) fn remap_to_cow(&self, bio: &Bio, cow_sector: u64) {
        bio.set_held_dev(self.cow);
        bio.set_sector(cow_sector);
    }

    /// The COW sector holding origin `sector`, whose chunk is in COW chunk
    /// `new`. Never `None` in practice: COW chunks lie inside the COW
    /// device (the store allocates them there and rejects loaded entries
    /// past it); the callers fail the bio rather than remap it elsewhere.
    pub(super) fn cow_sector(&self, new: Chunk, sector: u64) -> Option<u64> {
        Some(self.chunk.chunk_to_sector(new)? | self.chunk.offset_in_chunk(sector))
    }

    /// `end_io` of the snapshot target: ends read tracking.
    pub(crate) fn snapshot_end_io(&self, ti: &crate::dm::Target, bio: &Bio) {
        if let Some(slot) = bio.per_bio_u64(ti) {
            let b = slot.swap(0, Ordering::Relaxed);
            if b != 0 {
                if let Some(counter) = self.tracked.get(usize::try_from(b.saturating_sub(1)).unwrap_or(usize::MAX)) {
                    counter.dec();
                }
            }
        }
    }
}

/// A discard waiting for the zeroing of its COW chunk.
struct ZeroJob {
    pub(super) bio: Exclusive<Option<OwnedBio>>,
}

impl CopyCallback for ZeroJob {
    fn copy_done(this: Arc<Self>, read_err: bool, write_err: u64) {
        // kcopyd hands back the only reference.
        let Some(mut job) = Arc::into_unique_or_drop(this) else {
            return;
        };
        if let Some(bio) = job.as_mut().get_mut().bio.get_mut().take() {
            if read_err || write_err != 0 {
                bio.fail();
            } else {
                bio.complete();
            }
        }
    }
}
