// SPDX-License-Identifier: GPL-2.0

//! The merge: the `snapshot-merge` target's I/O path and the merge worker.

use core::sync::atomic::Ordering;

use kernel::prelude::*;
use kernel::sync::Arc;

use crate::dm::{TargetBio, TargetBioList};
use crate::dm::bounce::BounceCopier;
use crate::dm::clock::{self, Instant};
use crate::dm::log::dm_err;
use crate::dm::params::{self, test_hooks};
use crate::dm::sync::{self as dmsync, NoIoScope};
use crate::dm::{Bio, BioOp, MapResult};
use crate::pure::merge::{runs_contain, throttle_idle_us, MergeRun};
use crate::pure::stats::RateWindow;
use crate::snapshot::registry::{OriginBio, OriginOutcome};
use crate::snapshot::store::{MergePlanError, MergePlanner};

use super::handover::TargetId;
use super::merge_batch::CopiedBatch;
use super::merge_pace::{MergeBudget, MergePace};
use super::track::DUAL_WRITES;
use super::{SnapCore, SnapState};

/// The merge's part of `SnapState`.
pub(super) struct MergeState {
    /// Owned by a `snapshot-merge` target: origin writes do not copy into
    /// it, and the merge worker copies its chunks back.
    pub(super) merging: bool,
    /// The merge failed (the status says `Merge failed`).
    pub(super) failed: bool,
    /// A merge of this owner failed before the merge was last restarted:
    /// the status still says so (upstream's `merge_failed` stays set
    /// until the table is replaced; a resume restarts the merge anyway).
    pub(super) failed_before: bool,
    /// The merge worker is running (or queued).
    pub(super) running: bool,
    /// Asked to stop (presuspend, destructor).
    pub(super) stop: bool,
    /// The runs of the merge batches not yet committed (the one being
    /// copied back and, while the merge is pipelined, the one before it),
    /// sorted by origin chunk; empty when no batch is open.
    pub(super) window: KVec<MergeRun>,
    /// The runs of `window` already copied back to the origin: a write to
    /// them goes to the chunk's COW copy, then to the origin
    /// ([`SnapCore::dual_write`]), so it need not wait for the commit.
    pub(super) copied: KVec<MergeRun>,
    /// The generation (0 or 1) of `SnapCore::tracked` that new tracked
    /// bios count in; each merge batch flips it as it sets its window.
    pub(super) track_gen: usize,
    /// Runs whose merge commit failed, sorted: copied back and flushed to
    /// the origin, but on disk still listed or not (an area write may have
    /// landed, another not), in memory maybe still in the table. Until the
    /// next activation, writes to them go to both the COW copy and the
    /// origin, which is right whichever of the two reactivation trusts.
    pub(super) unsettled: KVec<MergeRun>,
    /// Some unsettled runs could not be recorded (no memory): writes to
    /// any chunk still in the table are treated as unsettled.
    pub(super) unsettled_lost: bool,
    /// Writes to the merge window, already pointed at the origin, waiting
    /// for the window to be merged.
    pub(super) queue: TargetBioList,
    /// I/Os the merging target has mapped (wrapping): while it changes,
    /// the merge shares the disks with that I/O (`MergeLoad::Active`).
    pub(super) io: u64,
    /// Chunks merged (committed) since the core was built, and their
    /// recent rate (the `stats` message).
    pub(super) progress: RateWindow,
}

/// Why a merge stopped with `Merge failed` (upstream's messages).
pub(super) enum MergeFailure {
    /// A copy back to the origin failed.
    CopyBack,
    /// The origin flush after a batch's copies failed.
    OriginFlush,
    /// Writing the shortened exception list failed.
    StoreWrite,
    /// The committed list and the exception table disagree.
    Corrupt,
    /// Out of memory.
    NoMemory,
    /// The next batch could not be planned.
    Plan(MergePlanError),
}

impl MergeFailure {
    fn message(&self) -> &'static str {
        match self {
            Self::CopyBack => "Read error: shutting down merge.",
            Self::OriginFlush => "Flush after merge failed: shutting down merge",
            Self::StoreWrite => "Write error in exception store: shutting down merge",
            Self::Corrupt => "Corrupt exception store: shutting down merge",
            Self::NoMemory => "Out of memory: shutting down merge",
            Self::Plan(e) => e.message(),
        }
    }
}

impl MergeState {
    pub(super) fn new(merging: bool) -> Self {
        Self {
            merging,
            failed: false,
            failed_before: false,
            running: false,
            stop: false,
            window: KVec::new(),
            copied: KVec::new(),
            track_gen: 0,
            unsettled: KVec::new(),
            unsettled_lost: false,
            queue: TargetBioList::new(),
            io: 0,
            progress: RateWindow::new(),
        }
    }
}

impl SnapCore {
    /// `map` of the `snapshot-merge` target (`snapshot_merge_map()`).
    pub(crate) fn merge_map(self: &Arc<Self>, me: TargetId, ti: &crate::dm::Target, bio: &Bio) -> MapResult {
        if let Some(slot) = bio.per_bio_u64(ti) {
            slot.store(0, Ordering::Relaxed);
        }
        if bio.is_preflush() {
            // Two flush clones: #0 for the origin, #1 for the COW.
            bio.set_held_dev(if bio.target_bio_nr() == 0 { self.origin } else { self.cow });
            return MapResult::Remapped;
        }
        if bio.op() == BioOp::Discard {
            // Once merging, discards no longer change anything.
            bio.defer().complete();
            return MapResult::Submitted;
        }
        let sector = bio.sector();
        let chunk = self.chunk.sector_to_chunk(sector);
        let write = bio.is_write();
        let _noio = NoIoScope::enter();
        let mut st = self.state.lock();
        // A target that does not own the store is upstream's invalid
        // snapshot-merge (its handover was cancelled, or it handed the
        // store over): everything goes to the origin.
        let owner = st.ownership.is(me);
        if owner {
            st.merge.io = st.merge.io.wrapping_add(1);
        }
        if owner && st.valid {
            if let Some(new) = st.table.lookup(chunk) {
                let Some(cow_sector) = self.cow_sector(new, sector) else {
                    return MapResult::Kill;
                };
                if write && (st.merge.unsettled_lost || runs_contain(&st.merge.unsettled, chunk)) {
                    // Its commit failed: write both copies, or nothing.
                    if !bio.dual_writable_for(ti) {
                        dm_err!("merge commit failed: only plain writes to its chunks are possible until reactivation");
                        return MapResult::Kill;
                    }
                    while self.dual_write_in_flight(chunk) {
                        // One at a time per chunk (bucket): the one in
                        // flight ends on its own (the merge is stopped).
                        drop(st);
                        self.wait_dual_writes(chunk);
                        st = self.state.lock();
                    }
                    if !st.ownership.is(me) || !st.valid || st.table.lookup(chunk) != Some(new) {
                        // Changed while it waited (a handover): rare.
                        return MapResult::Kill;
                    }
                    self.track(bio, bio.per_bio_u64(ti), chunk, DUAL_WRITES);
                    drop(st);
                    bio.set_held_dev(self.origin);
                    self.dual_write(TargetBio::defer(ti, bio), cow_sector);
                    return MapResult::Submitted;
                }
                let in_window = runs_contain(&st.merge.window, chunk);
                if write && in_window {
                    bio.set_held_dev(self.origin);
                    let dual_writable = bio.dual_writable_for(ti);
                    if runs_contain(&st.merge.copied, chunk) && dual_writable && !self.dual_write_in_flight(chunk) {
                        // Back in the origin, not committed yet: write both.
                        self.track(bio, bio.per_bio_u64(ti), chunk, DUAL_WRITES);
                        drop(st);
                        self.dual_write(TargetBio::defer(ti, bio), cow_sector);
                        return MapResult::Submitted;
                    }
                    // Wait until this chunk is back in the origin (or, if
                    // a dual write to it is in flight, until the commit).
                    st.merge.queue.push(TargetBio::defer(ti, bio));
                    return MapResult::Submitted;
                }
                if write {
                    // The merge waits for writes to chunks it copies.
                    self.track(bio, bio.per_bio_u64(ti), chunk, st.merge.track_gen);
                }
                drop(st);
                self.remap_to_cow(bio, cow_sector);
                return MapResult::Remapped;
            }
        }
        drop(st);
        // Not (or no longer) in the snapshot: the origin holds the data.
        // A target that is not the owner holds the same origin device
        // itself (same device number: `entry`).
        bio.set_held_dev(self.origin);
        if !write {
            return MapResult::Remapped;
        }
        // Other snapshots of the origin get their copies first.
        match self.entry.write(OriginBio::Mapping(bio)) {
            OriginOutcome::Proceed(_) => MapResult::Remapped,
            OriginOutcome::Queued => MapResult::Submitted,
        }
    }

    /// Smallest chunk size among the origin's snapshots, for the merge
    /// target's `max_io_len`.
    pub(crate) fn origin_min_chunk(&self) -> u32 {
        self.entry.min_chunk_sectors().unwrap_or(self.chunk.sectors())
    }

    /// Starts (or restarts) the merge of target `me` (`start_merge()`, on
    /// every resume). A merge that failed starts again (the store may work
    /// again), but the status keeps saying `Merge failed`, as upstream's.
    pub(crate) fn start_merge(self: &Arc<Self>, me: TargetId) {
        let mut st = self.state.lock();
        if !st.ownership.is(me) {
            // Upstream's invalid snapshot-merge (see `merge_map`).
            drop(st);
            dm_err!("Snapshot is invalid: can't merge");
            return;
        }
        if !st.merge.merging || st.merge.running {
            return;
        }
        if !st.merge.unsettled.is_empty() || st.merge.unsettled_lost {
            // A commit failed after the copy-back: the on-disk list is no
            // longer what the planner would read. Only a new activation,
            // which loads it again, may merge on.
            drop(st);
            dm_err!("Merge commit failed earlier: reactivate to merge on");
            return;
        }
        st.merge.failed_before |= st.merge.failed;
        st.merge.failed = false;
        st.merge.running = true;
        st.merge.stop = false;
        // The rate counts from this start.
        st.merge.progress.restart(clock::monotonic_ms());
        drop(st);
        if let Err(this) = dmsync::merge_queue().enqueue::<Arc<Self>, 1>(self.clone()) {
            // Cannot be queued already (merge_running was clear); be safe.
            this.state.lock().merge.running = false;
            this.notify_state_change();
        }
    }

    /// Stops the merge of target `me` and waits until the current step is
    /// done (`stop_merge()`). A merge `me` does not own (it handed the
    /// store over) is not its to stop.
    pub(crate) fn stop_merge(&self, me: TargetId) {
        {
            let mut st = self.state.lock();
            if !st.ownership.is(me) {
                return;
            }
            st.merge.stop = true;
        }
        self.notify_state_change();
        let mut st = self.state.lock();
        while st.merge.running {
            self.wait_state_change(&mut st);
        }
    }

    /// The merge failed (`why`); writes waiting for it fail.
    pub(super) fn fail_merge(&self, why: MergeFailure) {
        self.fail_merge_unsettled(why, &[]);
    }

    /// The merge failed while committing `unsettled`, runs copied back to
    /// the origin whose on-disk and in-memory state is now unknown.
    pub(super) fn fail_merge_unsettled(&self, why: MergeFailure, unsettled: &[MergeRun]) {
        dm_err!("{}", why.message());
        let mut st = self.state.lock();
        Self::record_unsettled(&mut st, unsettled);
        st.merge.failed = true;
        st.merge.window = KVec::new();
        st.merge.copied = KVec::new();
        let mut queued = st.merge.queue.take();
        drop(st);
        while let Some(bio) = queued.pop() {
            bio.into_owned().fail();
        }
    }

    /// Adds `runs` to the unsettled runs (see `SnapState::merge_unsettled`).
    pub(super) fn record_unsettled(st: &mut SnapState, runs: &[MergeRun]) {
        for run in runs {
            if st.merge.unsettled.push(*run, GFP_KERNEL).is_err() {
                st.merge.unsettled_lost = true;
            }
        }
        st.merge.unsettled.sort_unstable_by_key(|r| r.first_old());
    }

    /// The merge worker: copies the exceptions back to the origin, newest
    /// first, a batch at a time, until the store is empty
    /// (`snapshot_merge_next_chunks()` and `merge_callback()`).
    ///
    /// Pipelined: batch `i + 1` is planned and copied while the origin
    /// flush of batch `i` runs, and batch `i` is committed right after.
    /// Writes to a batch's chunks wait only while it is copied back; from
    /// then until its commit they go to both copies (`dual_write`).
    pub(super) fn merge(self: &Arc<Self>) {
        let _noio = NoIoScope::enter();
        // Copies started before the snapshot became merging still commit
        // into the store: let them finish before the list starts to shrink.
        let mut st = self.state.lock();
        while self.in_flight.load(Ordering::Acquire) != 0 && !st.merge.stop {
            self.wait_state_change(&mut st);
        }
        drop(st);
        // Large runs are copied through one bounce buffer with big dm-io
        // requests; without it (no memory) kcopyd copies everything.
        let mut copier = BounceCopier::new().ok();
        if let Some(mut planner) = self.merge_planner() {
            self.merge_batches(&mut planner, copier.as_mut());
        }
        drop(copier);
        self.merge_stopped();
    }

    /// Merges batch after batch until done, stopped or failed.
    fn merge_batches(&self, planner: &mut MergePlanner, mut copier: Option<&mut BounceCopier>) {
        let mut budget = MergeBudget::new(self.chunk, self.state.lock().merge.io);
        let mut pace = MergePace::default();
        // The batch copied last, not committed yet (its flush, if any, is
        // waited for before this returns: `FlushInFlight`).
        let mut copied: Option<CopiedBatch> = None;
        let mut failed = None;
        let always = test_hooks::merge_pipeline();
        // Idle time `snapshot_copy_throttle` asks for after the last copy.
        let mut throttle_us = 0;
        loop {
            // Writes wait for the copied batch: commit it before planning
            // (with the busy limits) rather than keep them waiting through
            // the next one too. Likewise before a pause (`MergePace`, the
            // copy throttle): no window is held while the merge idles.
            let pause = (budget.limit.runs.is_some() && pace.due_in_us() > 0) || throttle_us != 0;
            if copied.is_some() && !always && (pause || !self.state.lock().merge.queue.is_empty()) {
                if let Some(prev) = copied.take() {
                    if self.finish_merge_batch(prev, None, &mut budget).is_err() {
                        return;
                    }
                }
            }
            self.throttle_idle(core::mem::take(&mut throttle_us));
            if budget.limit.runs.is_some() {
                pace.wait();
            }
            let mut next = match self.open_merge_batch(planner, &budget, copied.as_ref()) {
                Ok(Some(next)) => {
                    pace.started(next.batch.runs.len());
                    next
                }
                Ok(None) => break,
                Err(why) => {
                    failed = Some(why);
                    break;
                }
            };
            let copy_start = Instant::now();
            let copy_ok = next.plans.is_empty() || self.copy_back(&next.plans, copier.as_deref_mut()).is_ok();
            let copy_us = u64::try_from(Instant::now().us_since(copy_start)).unwrap_or(0);
            throttle_us = throttle_idle_us(copy_us, params::copy_throttle_pct());
            if copy_ok {
                self.batch_copied(&mut next, copied.as_ref());
            }
            if let Some(prev) = copied.take() {
                if self.finish_merge_batch(prev, next.window.take(), &mut budget).is_err() {
                    // Failed: the writes held for `next` were failed too.
                    return;
                }
            }
            if !copy_ok {
                self.fail_merge(MergeFailure::CopyBack);
                return;
            }
            // Writes to it no longer wait for its commit (`batch_copied`):
            // it is committed after the next one is copied.
            copied = Some(self.start_origin_flush(next, copier.as_deref().map(|c| c.io())));
        }
        // The writes held for the last copied batch go (even if the next
        // one could not be planned).
        if let Some(prev) = copied.take() {
            // A failure was reported by it.
            let _ = self.finish_merge_batch(prev, None, &mut budget);
        }
        if let Some(why) = failed {
            self.fail_merge(why);
        }
    }

    /// The merge worker is done (it may be queued again).
    fn merge_stopped(&self) {
        self.state.lock().merge.running = false;
        self.notify_state_change();
    }

    /// A planner from the committed state; `None` if there is nothing to
    /// plan (a transient store, no metadata client) or it failed.
    pub(super) fn merge_planner(&self) -> Option<MergePlanner> {
        let meta_guard = self.meta.lock();
        let meta = meta_guard.as_ref()?;
        let p = self.state.lock().cursor.merge_start()?;
        match meta.merge_planner(p) {
            Ok(planner) => Some(planner),
            Err(e) => {
                drop(meta_guard);
                self.fail_merge(MergeFailure::Plan(e));
                None
            }
        }
    }
}
