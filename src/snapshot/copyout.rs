// SPDX-License-Identifier: GPL-2.0

//! Copies of origin chunks into COWs before an origin write goes on.

use kernel::prelude::*;
use kernel::sync::Arc;

use crate::dm::kcopyd::{CopyCallback, HeldRegion};
use crate::dm::sync::NoIoScope;
use crate::pure::chunk::{Chunk, ChunkSize};
use crate::pure::stats::InvalidReason;

use super::snap::SnapCore;


/// Context of one kcopyd copy: the snapshots (and their origin chunks)
/// whose pending exceptions it fills.
pub(crate) struct CopyJob {
    /// Per destination: the snapshot, its first origin chunk and count.
    members: [Option<(Arc<SnapCore>, Chunk, u32)>; MAX_COPY_DESTS],
}

impl CopyJob {
    pub(crate) fn single(snap: Arc<SnapCore>, chunk: Chunk) -> Self {
        let mut members: [Option<(Arc<SnapCore>, Chunk, u32)>; MAX_COPY_DESTS] = Default::default();
        if let Some(slot) = members.first_mut() {
            *slot = Some((snap, chunk, 1));
        }
        Self { members }
    }
}

impl CopyCallback for CopyJob {
    fn copy_done(this: Arc<Self>, read_err: bool, write_err: u64) {
        for (i, member) in this.members.iter().enumerate() {
            if let Some((snap, chunk, count)) = member {
                // Destination `i` is member `i` (see `CopyGroup::start`).
                let result = if read_err {
                    Err(InvalidReason::CowReadError)
                } else if write_err & (1u64 << i) != 0 {
                    Err(InvalidReason::CowWriteError)
                } else {
                    Ok(())
                };
                snap.copies_done(*chunk, *count, result);
            }
        }
    }
}

/// Destinations of one kcopyd job (`DM_KCOPYD_MAX_REGIONS`).
pub(crate) const MAX_COPY_DESTS: usize = 8;

/// Runs of new exceptions one origin write makes in one snapshot.
const MAX_NEW_RUNS: usize = 8;

/// New exceptions for consecutive origin chunks `chunk ..` on consecutive
/// COW chunks `new ..`: one copy.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct NewRun {
    /// First origin chunk.
    pub(crate) chunk: Chunk,
    /// First COW chunk.
    pub(crate) new: Chunk,
    /// Chunks in the run.
    pub(crate) count: u32,
}

/// The new exceptions of one origin write in one snapshot
/// ([`SnapCore::origin_cow_range`]), at most `MAX_NEW_RUNS` runs.
pub(crate) struct NewRuns {
    runs: [NewRun; MAX_NEW_RUNS],
    len: usize,
}

impl NewRuns {
    /// No runs.
    pub(crate) fn new() -> Self {
        Self { runs: [NewRun::default(); MAX_NEW_RUNS], len: 0 }
    }

    /// The runs.
    pub(crate) fn iter(&self) -> impl Iterator<Item = NewRun> + '_ {
        self.runs.iter().take(self.len).copied()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len >= MAX_NEW_RUNS
    }

    /// If full, the first origin sector after the last run (where a
    /// further [`SnapCore::origin_cow_range`] call carries on).
    pub(crate) fn resume_sector(&self, chunk: ChunkSize) -> Option<u64> {
        if !self.is_full() {
            return None;
        }
        let last = self.runs.get(self.len.checked_sub(1)?)?;
        chunk.chunk_to_sector(last.chunk.checked_add(u64::from(last.count))?)
    }

    /// Adds `chunk -> new`, extending the last run if it continues it.
    pub(crate) fn push(&mut self, chunk: Chunk, new: Chunk) {
        if let Some(last) = self.len.checked_sub(1).and_then(|i| self.runs.get_mut(i)) {
            let k = u64::from(last.count);
            if last.chunk.checked_add(k) == Some(chunk) && last.new.checked_add(k) == Some(new) && last.count < u32::MAX {
                last.count = last.count.saturating_add(1);
                return;
            }
        }
        if let Some(slot) = self.runs.get_mut(self.len) {
            *slot = NewRun { chunk, new, count: 1 };
            self.len = self.len.saturating_add(1);
        }
    }
}

/// Copies that several snapshots of the same chunk size need of the same
/// origin chunks: the origin is read once and written to every COW in one
/// kcopyd job. Upstream starts one job, and so one origin read, per
/// snapshot and chunk.
pub(crate) struct CopyGroup {
    members: [Option<(Arc<SnapCore>, NewRun)>; MAX_COPY_DESTS],
    len: usize,
}

impl CopyGroup {
    /// An empty group.
    pub(crate) fn new() -> Self {
        Self { members: Default::default(), len: 0 }
    }

    /// Adds `snap`'s new exceptions `run` (from
    /// [`SnapCore::origin_cow_range`]). A run that cannot share the job
    /// (other chunks or chunk size, or the group is full) starts the group
    /// first.
    pub(crate) fn add(&mut self, snap: &Arc<SnapCore>, run: NewRun) {
        let fits = match self.members.first() {
            Some(Some((first, r))) => {
                first.chunk_size().sectors() == snap.chunk_size().sectors()
                    && r.chunk == run.chunk
                    && r.count == run.count
                    && self.len < MAX_COPY_DESTS
            }
            _ => true,
        };
        if !fits {
            self.start();
        }
        if let Some(slot) = self.members.get_mut(self.len) {
            *slot = Some((snap.clone(), run));
            self.len = self.len.saturating_add(1);
        } else {
            // Cannot happen: a full group was started above.
            snap.copies_done(run.chunk, run.count, Err(InvalidReason::MetadataError));
        }
    }

    /// Starts the copy (if any) and empties the group: small copies go to
    /// the origin's [`Gatherer`](super::gather::Gatherer), the rest straight to kcopyd.
    pub(crate) fn start(&mut self) {
        if self.len == 0 {
            return;
        }
        let _noio = NoIoScope::enter();
        let mut members: [Option<(Arc<SnapCore>, NewRun)>; MAX_COPY_DESTS] = Default::default();
        core::mem::swap(&mut members, &mut self.members);
        self.len = 0;
        let fail_all = |members: &[Option<(Arc<SnapCore>, NewRun)>], result: Result<(), InvalidReason>| {
            for (snap, run) in members.iter().flatten() {
                snap.copies_done(run.chunk, run.count, result);
            }
        };
        let Some(Some((first, run))) = members.first() else {
            return;
        };
        let (first, run) = (first.clone(), *run);
        let Some((src, sectors)) = first.chunk_size().clip_extent(run.chunk, u64::from(run.count), first.origin_sectors())
        else {
            // Nothing of the origin lies in these chunks: nothing to copy.
            fail_all(&members, Ok(()));
            return;
        };
        let mut dests = [first.cow().region(0, 0); MAX_COPY_DESTS];
        let mut job = CopyJob { members: Default::default() };
        let mut n = 0;
        for (snap, run) in members.iter().flatten() {
            match (snap.chunk_size().chunk_to_sector(run.new), dests.get_mut(n), job.members.get_mut(n)) {
                (Some(dst), Some(region), Some(slot)) => {
                    *region = snap.cow().region(dst, sectors);
                    *slot = Some((snap.clone(), run.chunk, run.count));
                    n = n.saturating_add(1);
                }
                // A COW chunk past what a sector number can address.
                _ => snap.copies_done(run.chunk, run.count, Err(InvalidReason::MetadataError)),
            }
        }
        if n == 0 {
            return;
        }
        let Ok(job) = Arc::new(job, GFP_KERNEL) else {
            fail_all(&members, Err(InvalidReason::NoMemory));
            return;
        };
        let copy = OriginCopy { src: first.origin().region(src, sectors), dests, ndests: n, job, first };
        let gatherer = copy.first.entry().gatherer().clone();
        gatherer.submit(copy);
    }
}

/// A copy of a run of origin chunks to up to [`MAX_COPY_DESTS`] COWs,
/// ready to start ([`CopyGroup::start`]).
pub(crate) struct OriginCopy {
    src: HeldRegion,
    dests: [HeldRegion; MAX_COPY_DESTS],
    ndests: usize,
    job: Arc<CopyJob>,
    /// The snapshot whose kcopyd client copies it if it goes to kcopyd
    /// (also the first member of `job`).
    first: Arc<SnapCore>,
}

impl OriginCopy {
    /// The origin sectors to copy.
    pub(crate) fn source(&self) -> &HeldRegion {
        &self.src
    }

    /// Where they go, one region per COW.
    pub(crate) fn dests(&self) -> &[HeldRegion] {
        self.dests.get(..self.ndests).unwrap_or(&[])
    }

    /// Copies with kcopyd, which reports errors per destination.
    pub(crate) fn start_kcopyd(self) {
        let started = self.first.kcopyd_copy(&self.src, self.dests(), self.job.clone());
        if started.is_err() {
            // Not started (no memory, or the client is gone): no I/O failed.
            for (snap, chunk, count) in self.job.members.iter().flatten() {
                snap.copies_done(*chunk, *count, Err(InvalidReason::NoMemory));
            }
        }
    }

    /// The copy was done (by the gatherer) without an error.
    pub(crate) fn finished(self) {
        CopyJob::copy_done(self.job, false, 0);
    }
}
