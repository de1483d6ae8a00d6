// SPDX-License-Identifier: GPL-2.0

//! Merge planning of the persistent store (`prepare_merge` and
//! `commit_merge`, for batches that may span several metadata areas): the
//! next exceptions to merge, taken from the tail of the on-disk list, and
//! the area writes that remove them once merged.
//!
//! The choice of runs within an area is [`plan_batch_area`] (host-tested);
//! this file reads the areas and writes them back.

use kernel::prelude::*;

use crate::dm::dm_io::{IoBuffer, IoOp};
use crate::pure::alloc::{MergeStep, PersistentState};
use crate::pure::chunk::Chunk;
use crate::pure::disk::{self, Geometry};
use crate::pure::merge::{plan_batch_area, AreaSource, MergeError, MergeRun};

use super::persistent::MetadataIo;

/// Metadata areas one merge batch may span, the current one included.
const MERGE_BATCH_AREAS_U64: u64 = 16;

/// Entries taken from an area (at most `exceptions_per_area`, a `u32`).
fn count_u32(taken: usize) -> u32 {
    u32::try_from(taken).unwrap_or(u32::MAX)
}

/// Entries taken, as a chunk count.
fn count_u64(taken: usize) -> u64 {
    u64::try_from(taken).unwrap_or(u64::MAX)
}

/// An entry count as an index bound.
fn usize_of(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The next exceptions to merge: runs from the tail of the on-disk list,
/// newest first, possibly spanning several areas
/// ([`MetadataIo::plan_merge_batch`]).
pub(crate) struct MergeBatch {
    /// The runs, newest first.
    pub(crate) runs: KVec<MergeRun>,
    /// The areas the batch shrinks, newest first, each with its own copy
    /// of the area (so a batch planned while the previous one commits
    /// shares no buffer with it).
    areas: KVec<BatchArea>,
    /// Where the list ends once the batch is merged: (area, entries kept).
    pub(crate) end: (u64, u32),
}

/// A metadata area a merge batch shrinks.
struct BatchArea {
    location: Chunk,
    buf: IoBuffer,
    /// Entries it keeps; the rest are merged by the batch.
    keep: u32,
}

/// Where the on-disk list will end once every batch planned so far is
/// committed, and that area's contents: the merge plans batch `i + 1`
/// from here while batch `i` is still being committed. Created from the
/// committed state for each run of the merge worker
/// ([`MetadataIo::merge_planner`]).
pub(crate) struct MergePlanner {
    p: PersistentState,
    area: IoBuffer,
}

/// A copy of `buf`.
fn clone_buffer(buf: &IoBuffer) -> Result<IoBuffer, MergePlanError> {
    let mut copy = IoBuffer::new(buf.as_slice().len()).map_err(|_| MergePlanError::NoMemory)?;
    copy.as_mut_slice().copy_from_slice(buf.as_slice());
    Ok(copy)
}

/// Why a merge batch could not be planned.
pub(crate) enum MergePlanError {
    /// Reading an earlier area failed.
    Read,
    /// The entries make no sense (e.g. a COW chunk of 0).
    Corrupt,
    /// Out of memory.
    NoMemory,
}

impl MergePlanError {
    /// The message the merge stops with (upstream's wording).
    pub(crate) fn message(&self) -> &'static str {
        match self {
            Self::Read => "Read error in exception store: shutting down merge",
            Self::Corrupt => "Corrupt exception store: shutting down merge",
            Self::NoMemory => "Out of memory: shutting down merge",
        }
    }
}

impl From<MergeError> for MergePlanError {
    fn from(_: MergeError) -> Self {
        Self::Corrupt
    }
}

impl MetadataIo {
    /// A planner starting from the committed cursor `p` (the area buffer
    /// holds `p`'s current area).
    pub(crate) fn merge_planner(&self, p: PersistentState) -> Result<MergePlanner, MergePlanError> {
        Ok(MergePlanner { p, area: clone_buffer(&self.area)? })
    }

    /// Plans the next merge batch of at most `budget` chunks and `max_runs`
    /// runs from `planner`, reading the area before if the planner's is
    /// used up, and moves the planner past it. `None` when nothing is left.
    pub(crate) fn plan_merge_batch(
        &mut self,
        planner: &mut MergePlanner,
        budget: u64,
        max_runs: usize,
    ) -> Result<Option<MergeBatch>, MergePlanError> {
        loop {
            match planner.p.merge_step() {
                MergeStep::Finished => return Ok(None),
                MergeStep::ReadPreviousArea { location, .. } => {
                    let region = self.region(location).map_err(|_| MergePlanError::Corrupt)?;
                    self.io
                        .sync_io_held(&region, IoOp::READ, &mut planner.area)
                        .map_err(|_| MergePlanError::Read)?;
                    planner.p.enter_previous_area().map_err(|_| MergePlanError::Corrupt)?;
                }
                MergeStep::Ready => break,
            }
        }
        let batch = self.plan_batch_from(&planner.p, &planner.area, budget, max_runs)?;
        planner.p.commit_merge_to(batch.end.0, batch.end.1).map_err(|_| MergePlanError::Corrupt)?;
        if batch.areas.len() > 1 {
            if let Some(last) = batch.areas.last() {
                planner.area = clone_buffer(&last.buf)?;
            }
        }
        Ok(Some(batch))
    }

    /// Plans a batch from the tail of the list whose cursor is `p`; `area`
    /// holds `p`'s current area, which has committed entries. Runs never
    /// cross an area (the COW chunks skip the metadata chunk between
    /// areas), but a batch takes the earlier areas too while it has
    /// budget, so a sequentially filled COW merges in large copies with
    /// one commit per batch.
    fn plan_batch_from(
        &mut self,
        p: &PersistentState,
        area: &IoBuffer,
        budget: u64,
        max_runs: usize,
    ) -> Result<MergeBatch, MergePlanError> {
        let max_runs = max_runs.max(1);
        let geom = p.geometry();
        let limit = core::num::NonZeroU32::new(u32::try_from(budget).unwrap_or(u32::MAX).max(1))
            .unwrap_or(core::num::NonZeroU32::MIN);
        let mut runs = KVec::new();
        // A refused run (no memory) just ends the batch early.
        let mut oom = false;
        let committed = p.current_committed();
        let src = AreaSource::new(geom, area.as_slice());
        let taken = plan_batch_area(&src, usize_of(committed), limit, budget, |run| take_run(&mut runs, &mut oom, max_runs, run))?;
        let current_keep = committed.saturating_sub(count_u32(taken));
        let mut budget = budget.saturating_sub(count_u64(taken));
        let mut end = (p.current_area(), current_keep);
        let mut areas: KVec<BatchArea> = KVec::new();
        let location = p.current_area_location().ok_or(MergePlanError::Corrupt)?;
        areas.push(BatchArea { location, buf: clone_buffer(area)?, keep: current_keep }, GFP_KERNEL)
            .map_err(|_| MergePlanError::NoMemory)?;
        let epa = geom.exceptions_per_area();
        // Earlier areas are full, each with `epa` entries: read as many as
        // the budget may reach, all at once, if this one is used up.
        let wanted = if end.1 == 0 && runs.len() < max_runs && !oom {
            budget.div_ceil(u64::from(epa.max(1))).min(end.0).min(MERGE_BATCH_AREAS_U64.saturating_sub(1))
        } else {
            0
        };
        let mut read = self.read_earlier_areas(end.0, wanted)?.into_iter();
        // Go on while the area before is used up.
        while end.1 == 0 && budget > 0 && runs.len() < max_runs && !oom {
            let Some((area, location, buf)) = read.next() else {
                break;
            };
            let src = AreaSource::new(geom, buf.as_slice());
            let taken = plan_batch_area(&src, usize_of(epa), limit, budget, |run| take_run(&mut runs, &mut oom, max_runs, run))?;
            if taken == 0 {
                break;
            }
            let keep = epa.saturating_sub(count_u32(taken));
            areas.push(BatchArea { location, buf, keep }, GFP_KERNEL).map_err(|_| MergePlanError::NoMemory)?;
            budget = budget.saturating_sub(count_u64(taken));
            end = (area, keep);
        }
        if runs.is_empty() {
            return Err(if oom { MergePlanError::NoMemory } else { MergePlanError::Corrupt });
        }
        Ok(MergeBatch { runs, areas, end })
    }

    /// Reads the `count` areas before area `before`, newest first, all at
    /// once: (area, location, contents).
    fn read_earlier_areas(&mut self, before: u64, count: u64) -> Result<KVec<(u64, Chunk, IoBuffer)>, MergePlanError> {
        let geom = Geometry::new(self.chunk);
        let mut areas = KVec::new();
        for area in (before.saturating_sub(count)..before).rev() {
            let location = geom.area_location(area).ok_or(MergePlanError::Corrupt)?;
            let buf = IoBuffer::new(self.chunk.bytes()).map_err(|_| MergePlanError::NoMemory)?;
            areas.push((area, location, buf), GFP_KERNEL).map_err(|_| MergePlanError::NoMemory)?;
        }
        if areas.is_empty() {
            return Ok(areas);
        }
        let reads = areas.iter_mut().map(|(_, location, buf)| self.region(*location).map(|region| (region, buf)));
        self.io.io_buffers(IoOp::READ, reads).map_err(|_| MergePlanError::Read)?;
        Ok(areas)
    }

    /// Removes the batch's entries on disk (`persistent_commit_merge()`
    /// for several areas): every area the batch shrinks, written with its
    /// entries from `keep` on cleared (beyond the list's end they are
    /// zero already). Plain writes, all at once; the caller flushes the
    /// COW before anything may depend on them. Afterwards the area buffer
    /// holds the area the list now ends in. The caller flushed the origin
    /// first, so whichever of these writes survive a crash, every entry
    /// missing from the list has its data in the origin.
    pub(crate) fn commit_merge_batch(&mut self, batch: &mut MergeBatch) -> Result {
        let geom = Geometry::new(self.chunk);
        let epa = geom.exceptions_per_area();
        for area in batch.areas.iter_mut() {
            for i in area.keep..epa {
                disk::clear_entry(geom, area.buf.as_mut_slice(), i).map_err(|_| EINVAL)?;
            }
        }
        let writes = batch.areas.iter_mut().map(|area| self.region(area.location).map(|region| (region, &mut area.buf)));
        self.io.io_buffers(IoOp::WRITE.sync(), writes)?;
        if let Some(last) = batch.areas.last_mut() {
            core::mem::swap(&mut self.area, &mut last.buf);
        }
        Ok(())
    }
}

/// Adds `run` to a batch's `runs` unless it holds `max_runs` already or
/// memory runs out (which sets `oom`); whether it was added.
fn take_run(runs: &mut KVec<MergeRun>, oom: &mut bool, max_runs: usize, run: MergeRun) -> bool {
    if runs.len() >= max_runs {
        return false;
    }
    let ok = runs.push(run, GFP_KERNEL).is_ok();
    *oom |= !ok;
    ok
}
