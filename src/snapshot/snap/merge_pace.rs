// SPDX-License-Identifier: GPL-2.0

//! How fast the merge goes: batch sizes, pacing and the copy throttle.


use crate::dm::clock::Instant;

use crate::dm::sync as dmsync;
use crate::pure::chunk::ChunkSize;
use crate::pure::merge::{pace_delay_us, BatchLimit, BatchSizing, MergeLoad};

use super::SnapCore;

impl SnapCore {
    /// Idles `us` microseconds between batches for the copy throttle
    /// (`snapshot_copy_throttle`: the merge's copies, kcopyd's and the
    /// bounce copier's, keep the disks busy at most that share of the
    /// time). Holds no window, so no write waits for it; cut short once
    /// the merge is asked to stop (a suspend waits for it).
    pub(super) fn throttle_idle(&self, mut us: u64) {
        while us != 0 && !self.state.lock().merge.stop {
            let slice = us.min(THROTTLE_SLICE_US);
            let slice_u32 = u32::try_from(slice).unwrap_or(u32::MAX);
            dmsync::sleep_range_us(slice_u32, slice_u32.saturating_add(500));
            us = us.saturating_sub(slice);
        }
    }
}

/// The copy throttle's idle time is slept in slices of at most this long,
/// checking for a stop in between.
const THROTTLE_SLICE_US: u64 = 20_000;

/// Most data merged per batch: one origin flush and one commit per batch.
const MERGE_BATCH_BYTES: usize = 16 << 20;
/// The first batch's size: what writes wait for at most while they wait
/// for batches. The first origin flush syncs whatever the origin had
/// cached; the next batch is copied meanwhile.
const MERGE_BATCH_START_BYTES: usize = MERGE_BUSY_BYTES;
/// Least data merged per batch (one chunk if chunks are larger).
const MERGE_BATCH_MIN_BYTES: usize = 32 << 10;
/// Largest batch while writes wait for batches (they wait for its copy
/// only; the size was chosen by measurement: NOTES.md, "Merge batch
/// sizes").
const MERGE_BUSY_BYTES: usize = 4 << 20;
/// Most runs in a batch while writes wait for batches.
const MERGE_BUSY_RUNS: u32 = 8;
/// Most runs in a batch while the merging device serves other I/O.
const MERGE_ACTIVE_RUNS: u32 = 16;
/// Batches grow again only once no write waited for this long, and have
/// any number of runs once the device has had no I/O for this long.
const MERGE_CALM_MS: i64 = 1000;
/// While the merging device serves other I/O, the merge starts batches at
/// most one run per this many microseconds apart on average (at most
/// 1000 copies a second). Each batch costs the disks two cache flushes,
/// and each run one read and one write: a randomly filled COW, merged in
/// batches of single-chunk runs as fast as the disks go, crowds out the
/// device's own I/O. A sequentially filled COW's runs are long, and its
/// batches take longer than this anyway.
const MERGE_RUN_INTERVAL_US: i64 = 1000;

/// Paces merge batches while the merging device serves other I/O
/// ([`MERGE_RUN_INTERVAL_US`]).
#[derive(Default)]
pub(super) struct MergePace {
    /// When the last batch started, and its number of runs.
    pub(super) last: Option<(Instant, usize)>,
}

impl MergePace {
    /// A batch of `runs` runs starts now.
    pub(super) fn started(&mut self, runs: usize) {
        self.last = Some((Instant::now(), runs));
    }

    /// Microseconds until the next batch may start.
    pub(super) fn due_in_us(&self) -> i64 {
        let Some((start, runs)) = self.last else {
            return 0;
        };
        let elapsed_us = Instant::now().us_since(start);
        pace_delay_us(runs, MERGE_RUN_INTERVAL_US, elapsed_us)
    }

    /// Sleeps until the next batch may start.
    pub(super) fn wait(&self) {
        let left = u32::try_from(self.due_in_us()).unwrap_or(u32::MAX);
        if left > 0 {
            dmsync::sleep_range_us(left, left.saturating_add(left / 8));
        }
    }
}

/// The limits of the next merge batch ([`BatchSizing`]): batches grow
/// while no write waits for them; once one does, they stay at
/// `MERGE_BUSY_BYTES` and `MERGE_BUSY_RUNS` until no write has waited for
/// `MERGE_CALM_MS`. Meanwhile, while the merging device serves I/O,
/// batches have at most `MERGE_ACTIVE_RUNS` runs.
pub(super) struct MergeBudget {
    pub(super) limit: BatchLimit,
    pub(super) load: MergeLoad,
    pub(super) sizing: BatchSizing,
    pub(super) last_wait: Option<Instant>,
    pub(super) last_io: Option<Instant>,
    /// `SnapState::merge_io` when the last batch was committed.
    pub(super) io_seen: u64,
}

impl MergeBudget {
    pub(super) fn new(chunk: ChunkSize, io_seen: u64) -> Self {
        let per = chunk.bytes().max(1);
        let min = MERGE_BATCH_MIN_BYTES.checked_div(per).unwrap_or(1).max(1) as u64;
        let max = MERGE_BATCH_BYTES.checked_div(per).unwrap_or(1).max(1) as u64;
        let start = MERGE_BATCH_START_BYTES.checked_div(per).unwrap_or(1).max(1) as u64;
        let busy_chunks = MERGE_BUSY_BYTES.checked_div(per).unwrap_or(1).max(1) as u64;
        let sizing =
            BatchSizing { min, max, busy_chunks, busy_runs: MERGE_BUSY_RUNS, active_runs: MERGE_ACTIVE_RUNS };
        // The first batch is run-limited as on an active device: on a
        // randomly filled COW, 4 MiB would be 1024 copies in flight before
        // the merge can tell whether writes wait for it.
        let limit = BatchLimit { chunks: start.clamp(min, max), runs: Some(MERGE_ACTIVE_RUNS) };
        Self { limit, load: MergeLoad::Idle, sizing, last_wait: None, last_io: None, io_seen }
    }

    /// The batch of `chunks` chunks is done: `waited` if writes were held
    /// back by it; `io` is `SnapState::merge_io` now.
    pub(super) fn adapt(&mut self, chunks: u64, waited: bool, io: u64) {
        let now = Instant::now();
        if waited {
            self.last_wait = Some(now);
        }
        if io != self.io_seen {
            self.io_seen = io;
            self.last_io = Some(now);
        }
        let ago = |t: Option<Instant>| t.map(|t| now.ms_since(t));
        self.load = MergeLoad::from_recent(ago(self.last_wait), ago(self.last_io), MERGE_CALM_MS);
        // A batch cut short (end of the list, run limit) does not shrink
        // the next one.
        self.limit = self.sizing.next(chunks.max(self.limit.chunks), self.load);
    }
}
