// SPDX-License-Identifier: GPL-2.0

//! Counting bios in flight per origin chunk bucket, for the waits of the
//! commit worker and the merge.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::dm::Bio;
use crate::pure::chunk::Chunk;
use crate::pure::merge::MergeRun;

use super::SnapCore;

/// Buckets of the in-flight snapshot-read counters.
pub(super) const TRACK_BUCKETS: usize = 64;

/// The counters of [`SnapCore::tracked`] that count dual writes in flight
/// (after the merge's two generations of writes to COW copies); the merge
/// never waits for them.
pub(super) const DUAL_WRITES: usize = 2;

/// The first of the two generations of [`SnapCore::tracked`] that count
/// snapshot reads sent to the origin; each bucket has its own current one
/// ([`SnapCore::read_epoch`]).
const ORIGIN_READS: usize = 3;

impl SnapCore {
    fn track_bucket(chunk: Chunk) -> usize {
        (chunk as usize) & (TRACK_BUCKETS - 1)
    }

    /// The generation of [`SnapCore::tracked`] that snapshot reads sent to
    /// the origin count in during read epoch `epoch` (of a bucket): one of
    /// the two from [`ORIGIN_READS`].
    fn origin_read_generation(epoch: u32) -> usize {
        ORIGIN_READS.saturating_add(epoch as usize & 1)
    }

    /// The index in `tracked` of generation `gen`'s counter of `bucket`.
    fn counter_index(gen: usize, bucket: usize) -> usize {
        gen.saturating_mul(TRACK_BUCKETS).saturating_add(bucket)
    }

    /// Waits (process context) until no tracked bio of generation `gen`
    /// in the buckets of `buckets` (a bit per bucket) is in flight.
    pub(super) fn wait_tracked(&self, gen: usize, buckets: u64) {
        let Some(counters) = self.tracked.get(Self::counter_index(gen, 0)..Self::counter_index(gen.saturating_add(1), 0)) else {
            return;
        };
        for (b, counter) in counters.iter().enumerate() {
            if buckets & (1u64 << b) != 0 {
                counter.wait_zero();
            }
        }
    }

    /// The generation a snapshot read of `chunk` sent to the origin counts
    /// in (caller holds the state lock).
    pub(super) fn origin_read_gen(&self, chunk: Chunk) -> usize {
        let epoch = self.read_epoch.get(Self::track_bucket(chunk)).map_or(0, |e| e.load(Ordering::Acquire));
        Self::origin_read_generation(epoch)
    }

    /// Waits (commit worker) until the snapshot reads of `chunk` sent to
    /// the origin before its exception went into the table have finished
    /// (`__check_for_conflicting_io()`). Reads of other chunks of the same
    /// bucket cannot hold it up for long: the reads of the bucket's other
    /// epoch, older still, drain first (none join them), then new reads
    /// are switched to that epoch and the current one drains.
    pub(super) fn drain_origin_reads(&self, chunk: Chunk) {
        let b = Self::track_bucket(chunk);
        let Some(epoch) = self.read_epoch.get(b) else {
            return;
        };
        let current = epoch.load(Ordering::Acquire) & 1;
        let bucket = 1u64 << b;
        self.wait_tracked(Self::origin_read_generation(current ^ 1), bucket);
        {
            let _st = self.state.lock();
            epoch.store(current ^ 1, Ordering::Release);
        }
        self.wait_tracked(Self::origin_read_generation(current), bucket);
    }

    /// Counts `bio` as in flight against origin chunk `chunk`, in
    /// generation `gen` (the current one: the caller holds the state
    /// lock), until `end_io` (`track_chunk()`).
    pub(super) fn track(&self, _bio: &Bio, slot: Option<&AtomicU64>, chunk: Chunk, gen: usize) {
        let b = Self::counter_index(gen, Self::track_bucket(chunk));
        if let (Some(slot), Some(counter)) = (slot, self.tracked.get(b)) {
            counter.inc();
            slot.store((b as u64).saturating_add(1), Ordering::Relaxed);
        }
    }

    /// Whether a dual write to a chunk of `chunk`'s bucket is in flight
    /// (caller holds the state lock, under which dual writes start). Dual
    /// writes to one chunk must not overlap: two could land in different
    /// orders on the COW copy and the origin, and a read would then change
    /// at the commit. A write that meets one waits for the commit.
    pub(super) fn dual_write_in_flight(&self, chunk: Chunk) -> bool {
        self.tracked
            .get(Self::counter_index(DUAL_WRITES, Self::track_bucket(chunk)))
            .is_some_and(|c| c.get() != 0)
    }

    /// Waits (process context, no lock held) until no dual write to a chunk
    /// of `chunk`'s bucket is in flight.
    pub(super) fn wait_dual_writes(&self, chunk: Chunk) {
        if let Some(c) = self.tracked.get(Self::counter_index(DUAL_WRITES, Self::track_bucket(chunk))) {
            c.wait_zero();
        }
    }

    /// The tracked-write buckets the origin chunks of `window` hash to.
    pub(super) fn window_buckets(window: &[MergeRun]) -> u64 {
        let mut buckets = 0u64;
        for run in window {
            if u64::from(run.count()) >= TRACK_BUCKETS as u64 {
                return u64::MAX;
            }
            for c in run.first_old()..=run.last_old() {
                buckets |= 1u64 << Self::track_bucket(c);
            }
        }
        buckets
    }
}
