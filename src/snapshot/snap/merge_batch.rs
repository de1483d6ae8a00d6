// SPDX-License-Identifier: GPL-2.0

//! One merge batch: planned, copied back, committed.

use kernel::prelude::*;

use crate::dm::{BioList, TargetBio, TargetBioList};
use crate::dm::bounce::{BOUNCE_MIN_SECTORS, BounceCopier};
use crate::dm::clock;
use crate::dm::dm_io::{DmIoClient, FlushInFlight};
use crate::dm::log::dm_err;
use crate::dm::params::test_hooks;
use crate::dm::sync::{self as dmsync, Countdown};
use crate::pure::merge::{runs_contain, CopyPlan, MergeRun};
use crate::snapshot::store::{MergeBatch, MergePlanner};

use super::SnapCore;
use super::merge::MergeFailure;
use super::merge_pace::MergeBudget;
use super::track::DUAL_WRITES;

impl SnapCore {
    /// Plans the next batch and makes writes to its chunks wait: `None`
    /// when the merge is done or stopped, the message it fails with if it
    /// cannot go on. `copied`, the batch copied before (not yet
    /// committed), keeps its chunks in the window.
    pub(super) fn open_merge_batch(
        &self,
        planner: &mut MergePlanner,
        budget: &MergeBudget,
        copied: Option<&CopiedBatch>,
    ) -> Result<Option<OpenBatch>, MergeFailure> {
        {
            let st = self.state.lock();
            if st.merge.stop || st.merge.failed {
                return Ok(None);
            }
            if !st.valid {
                drop(st);
                dm_err!("Snapshot is invalid: can't merge");
                return Ok(None);
            }
        }
        let planned = match (*self.meta.lock()).as_mut() {
            Some(meta) => {
                let max_runs = budget.limit.runs.map_or(usize::MAX, |r| r as usize);
                meta.plan_merge_batch(planner, budget.limit.chunks, max_runs)
            }
            None => return Ok(None),
        };
        let batch = match planned {
            Ok(Some(batch)) => batch,
            Ok(None) => return Ok(None),
            Err(e) => return Err(MergeFailure::Plan(e)),
        };

        // The copies, and the window they cover (sorted for lookups); with
        // a copied batch still in the window, the union of both.
        let origin_sectors = self.origin_sectors();
        let mut plans: KVec<CopyPlan> = KVec::new();
        let mut window: KVec<MergeRun> = KVec::new();
        let mut union: KVec<MergeRun> = KVec::new();
        let mut ok = true;
        for run in batch.runs.iter() {
            let planned = match run.copy_plan(self.chunk, origin_sectors) {
                Some(plan) => plans.push(plan, GFP_KERNEL).is_ok(),
                None => true,
            };
            ok &= window.push(*run, GFP_KERNEL).is_ok() && planned;
        }
        if let Some(prev) = copied {
            for run in Iterator::chain(prev.open.batch.runs.iter(), batch.runs.iter()) {
                ok &= union.push(*run, GFP_KERNEL).is_ok();
            }
        }
        if !ok {
            return Err(MergeFailure::NoMemory);
        }
        window.sort_unstable_by_key(|r| r.first_old());
        union.sort_unstable_by_key(|r| r.first_old());

        // Other snapshots copy these origin chunks out first (nothing to do
        // without copies).
        self.entry.prepare_extents(&plans);
        let buckets = Self::window_buckets(&window);
        // Writes to the COW copies tracked in the other generation were
        // sent before the previous batch set its window; none are added.
        let gen = self.state.lock().merge.track_gen;
        self.wait_tracked(gen ^ 1, u64::MAX);
        // From now on writes to the window wait, and the others count in
        // the other generation: `gen`'s counters only go down.
        let window = {
            let mut st = self.state.lock();
            st.merge.track_gen = gen ^ 1;
            if copied.is_some() {
                st.merge.window = union;
                Some(window)
            } else {
                st.merge.window = window;
                None
            }
        };
        if !plans.is_empty() {
            // Writes already sent to the COW copies of the window finish
            // (upstream's `__check_for_conflicting_io()`): only those
            // sent before the window was set, so a steady stream of writes
            // elsewhere cannot hold the merge up.
            self.wait_tracked(gen, buckets);
        }
        Ok(Some(OpenBatch { batch, plans, window, writes_waited: false }))
    }

    /// Starts, with `io`, the origin flush that must precede `open`'s
    /// commit (if it cannot start, the commit flushes synchronously).
    pub(super) fn start_origin_flush(&self, open: OpenBatch, io: Option<&DmIoClient>) -> CopiedBatch {
        let flush = match io {
            Some(io) if !open.plans.is_empty() => io.start_flush_held(self.origin).ok(),
            _ => None,
        };
        CopiedBatch { open, flush }
    }

    /// Commits a copied batch: waits for its origin flush, shrinks the
    /// on-disk list and makes that durable before any write to its chunks
    /// reaches the origin (an entry that came back after a crash would
    /// merge its old data over such a write), then releases the writes
    /// held for it. `next_window`, the window of the batch copied after
    /// it, stays in place. `false` if the merge failed.
    pub(super) fn finish_merge_batch(&self, copied: CopiedBatch, next_window: Option<KVec<MergeRun>>, budget: &mut MergeBudget) -> Result {
        let delay = test_hooks::merge_commit_delay_ms();
        if delay != 0 {
            dmsync::sleep_ms(delay);
        }
        let CopiedBatch { open, flush } = copied;
        let mut batch = open.batch;
        if !open.plans.is_empty() {
            // The origin must hold the data before the exceptions go (the
            // 2021 merge data-loss fix). A failed flush is not retried: the
            // data it should have made durable may be gone, and a second
            // flush would not say so.
            let flushed = match flush {
                Some(flush) => flush.wait(),
                None => self.origin.flush().is_ok(),
            };
            if !flushed {
                self.fail_merge(MergeFailure::OriginFlush);
                return Err(EIO);
            }
        }

        let mut meta_guard = self.meta.lock();
        let Some(meta) = (*meta_guard).as_mut() else {
            return Err(ENODEV);
        };
        let written = meta.commit_merge_batch(&mut batch).is_ok()
            && self.cow.flush().is_ok();
        drop(meta_guard);
        if !written {
            self.fail_merge_unsettled(MergeFailure::StoreWrite, &batch.runs);
            return Err(EIO);
        }
        let merged = batch.runs.iter().map(|r| u64::from(r.count())).fold(0u64, u64::saturating_add);
        let now_ms = clock::monotonic_ms();
        let mut st = self.state.lock();
        let io = st.merge.io;
        let committed = st.cursor.commit_merge(&batch).is_ok();
        let mut removed = true;
        for run in batch.runs.iter() {
            removed &= st.table.remove_range(run.first_old(), u64::from(run.count())).is_ok();
        }
        if committed && removed {
            st.merge.progress.add(now_ms, merged);
        }
        if !committed || !removed {
            // Before the lock drops: no write may reach a COW copy only.
            Self::record_unsettled(&mut st, &batch.runs);
        }
        st.merge.window = next_window.unwrap_or_default();
        // The runs still copied are those of the next batch, if it was.
        let mut still: KVec<MergeRun> = KVec::new();
        let mut ok = true;
        for run in st.merge.copied.iter() {
            if runs_contain(&st.merge.window, run.first_old()) {
                ok &= still.push(*run, GFP_KERNEL).is_ok();
            }
        }
        // Without memory, writes to the next batch wait for its commit.
        st.merge.copied = if ok { still } else { KVec::new() };
        // Writes held for this batch go; those for the next one stay.
        let mut queued = st.merge.queue.take();
        let mut released = BioList::new();
        while let Some(bio) = queued.pop() {
            let chunk = self.chunk.sector_to_chunk(bio.view().sector());
            if runs_contain(&st.merge.window, chunk) {
                st.merge.queue.push(bio);
            } else {
                released.push(bio.into_owned());
            }
        }
        drop(st);
        if !committed || !removed {
            // As upstream's merge_callback: the writes held for the batch
            // fail (they would go to the origin only, while the table may
            // still send reads of their chunks to the COW copies).
            while let Some(bio) = released.pop() {
                bio.fail();
            }
            self.fail_merge(MergeFailure::Corrupt);
        }
        budget.adapt(merged, open.writes_waited || !released.is_empty(), io);
        // These writes target merged chunks: the origin holds them now, and
        // the other snapshots already have their copies.
        while let Some(bio) = released.pop() {
            bio.submit();
        }
        if committed && removed {
            Ok(())
        } else {
            Err(EIO)
        }
    }

    /// Writes `bio`, pointed at a chunk of the origin that is copied back
    /// but not committed, to that chunk's COW copy at `cow_sector` first,
    /// then to the origin. Until the commit a crash merges the COW copy
    /// again, so it must have the write too; afterwards the origin is the
    /// chunk. Writes that are not plain data writes wait for the commit
    /// (callers check [`TargetBio::dual_writable`]).
    pub(super) fn dual_write(&self, bio: TargetBio, cow_sector: u64) {
        if let Err(bio) = bio.dual_write(self.cow, cow_sector) {
            // Cannot happen (checked by the caller); never write one copy.
            dm_err!("internal error: merge write could not go to both copies; failing it");
            bio.fail();
        }
    }

    /// The runs of `open` (and of `prev`, copied before it and not yet
    /// committed) are back in the origin: from now on writes to them go to
    /// both copies, and those held while they were copied go now. Records
    /// in `open` whether any write waited for it.
    pub(super) fn batch_copied(&self, open: &mut OpenBatch, prev: Option<&CopiedBatch>) {
        let prev_runs = prev.map_or(&[][..], |p| &p.open.batch.runs[..]);
        let mut copied: KVec<MergeRun> = KVec::new();
        let mut ok = true;
        for run in Iterator::chain(prev_runs.iter(), open.batch.runs.iter()) {
            ok &= copied.push(*run, GFP_KERNEL).is_ok();
        }
        copied.sort_unstable_by_key(|r| r.first_old());
        let mut st = self.state.lock();
        open.writes_waited = !st.merge.queue.is_empty();
        if !ok {
            // The held writes wait for the commit, as before.
            return;
        }
        st.merge.copied = copied;
        let mut queued = st.merge.queue.take();
        let mut release = TargetBioList::new();
        while let Some(bio) = queued.pop() {
            let chunk = self.chunk.sector_to_chunk(bio.view().sector());
            if runs_contain(&st.merge.copied, chunk) && bio.dual_writable() && !self.dual_write_in_flight(chunk) {
                self.track(bio.view(), bio.per_bio_u64(), chunk, DUAL_WRITES);
                release.push(bio);
            } else {
                st.merge.queue.push(bio);
            }
        }
        drop(st);
        while let Some(bio) = release.pop() {
            let sector = bio.view().sector();
            // Only this worker's commit removes the exceptions of the window.
            let new = self.state.lock().table.lookup(self.chunk.sector_to_chunk(sector));
            match new.and_then(|new| self.cow_sector(new, sector)) {
                Some(cow_sector) => self.dual_write(bio, cow_sector),
                None => {
                    dm_err!("internal error: merging chunk without exception; failing the write");
                    bio.into_owned().fail();
                }
            }
        }
    }

    /// Copies the batch back to the origin; an error if any copy failed.
    ///
    /// Small runs (a randomly filled COW) all go to kcopyd at once. Large
    /// ones (a sequentially filled COW) go through `copier`, which moves up
    /// to `BOUNCE_BYTES` per dm-io request while kcopyd's jobs run: kcopyd
    /// splits every job into 64 KiB reads and writes, which caps the merge
    /// far below the disks' copy bandwidth.
    pub(super) fn copy_back(&self, plans: &[CopyPlan], mut copier: Option<&mut BounceCopier>) -> Result {
        let done = Countdown::new()?;
        let bounce = |p: &CopyPlan| p.sectors >= BOUNCE_MIN_SECTORS;
        let mut ok = true;
        let kc = self.kcopyd.lock();
        for plan in plans {
            if copier.is_some() && bounce(plan) {
                continue;
            }
            let Some(kc) = kc.as_ref() else {
                ok = false;
                break;
            };
            done.add();
            let r = kc.copy_held(
                &self.cow.region(plan.src, plan.sectors),
                &[self.origin.region(plan.dest, plan.sectors)],
                done.clone(),
            );
            if r.is_err() {
                done.done(false);
                ok = false;
                break;
            }
        }
        drop(kc);
        if let Some(copier) = copier.as_mut() {
            if ok {
                let total = plans.iter().filter(|p| bounce(p)).map(|p| p.sectors).sum();
                let steps = plans.iter().filter(|p| bounce(p)).map(|p| (p.src, p.dest, p.sectors));
                ok = copier.copy(self.cow, self.origin, total, steps).is_ok();
            }
        }
        done.done(ok);
        if done.wait() {
            Ok(())
        } else {
            Err(EIO)
        }
    }
}

/// A planned merge batch whose chunks are in the window.
pub(super) struct OpenBatch {
    pub(super) batch: MergeBatch,
    /// Its copies (runs past the origin's end have none).
    pub(super) plans: KVec<CopyPlan>,
    /// Its own window, sorted, while the window holds the union with the
    /// batch before it (installed when that one is committed).
    pub(super) window: Option<KVec<MergeRun>>,
    /// Writes waited for its copy.
    pub(super) writes_waited: bool,
}

/// A merge batch copied back to the origin, not yet committed.
pub(super) struct CopiedBatch {
    pub(super) open: OpenBatch,
    /// The origin flush started after the copies (`None`: flush
    /// synchronously at the commit).
    pub(super) flush: Option<FlushInFlight>,
}
