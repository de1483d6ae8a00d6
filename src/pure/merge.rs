// SPDX-License-Identifier: GPL-2.0
//! Merge planning: which exceptions to copy back to the origin next.
//!
//! Upstream (`persistent_prepare_merge()`) always merges from the tail of the
//! on-disk list: it takes the last committed entry of the current area and
//! walks backwards while both `old` and `new` decrease by exactly one, so a
//! whole linear run goes out as one copy. [`linear_tail`] is that scan.
//! [`TailRuns`] / [`plan_tail_runs`] continue it past the first run so a
//! pipelined merge can keep several copies in flight.

use core::num::NonZeroU32;

use super::chunk::{Chunk, ChunkSize, Sector};
use super::disk::{read_entry, AreaError, DiskException, Geometry};

/// Errors from merge planning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeError {
    /// An entry in the committed range has `new_chunk == 0`; merging it would
    /// copy the header over the origin. Upstream does not check this.
    ZeroNewChunk {
        /// Slot index of the bad entry.
        index: usize,
    },
    /// The committed range reaches past the entries the source holds.
    OutOfRange,
    /// Reading the area buffer failed.
    Area(AreaError),
}

impl From<AreaError> for MergeError {
    fn from(e: AreaError) -> Self {
        Self::Area(e)
    }
}

/// Indexed, read-only access to a list of exceptions in slot order.
pub trait ExceptionSource {
    /// Number of addressable entries.
    fn entry_count(&self) -> usize;
    /// Entry at `index`, or `None` past the end.
    fn entry(&self, index: usize) -> Option<DiskException>;
}

impl ExceptionSource for [DiskException] {
    fn entry_count(&self) -> usize {
        self.len()
    }
    fn entry(&self, index: usize) -> Option<DiskException> {
        self.get(index).copied()
    }
}

impl ExceptionSource for [(Chunk, Chunk)] {
    fn entry_count(&self) -> usize {
        self.len()
    }
    fn entry(&self, index: usize) -> Option<DiskException> {
        self.get(index).map(|&p| DiskException::from(p))
    }
}

/// An on-disk area buffer viewed as an [`ExceptionSource`] of `epa` slots.
#[derive(Clone, Copy, Debug)]
pub struct AreaSource<'a> {
    geom: Geometry,
    area: &'a [u8],
}

impl<'a> AreaSource<'a> {
    /// View `area` (one chunk) with the given geometry.
    pub const fn new(geom: Geometry, area: &'a [u8]) -> Self {
        Self { geom, area }
    }
}

impl ExceptionSource for AreaSource<'_> {
    fn entry_count(&self) -> usize {
        self.geom.exceptions_per_area() as usize
    }
    fn entry(&self, index: usize) -> Option<DiskException> {
        let index = u32::try_from(index).ok()?;
        read_entry(self.geom, self.area, index).ok()
    }
}

/// A linear run: `count` entries whose old and new chunks both step by one,
/// identified (as upstream does) by its last entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MergeRun {
    last_old: Chunk,
    last_new: Chunk,
    count: u32,
}

impl MergeRun {
    /// A run of one entry.
    pub const fn single(ex: DiskException) -> Self {
        Self {
            last_old: ex.old,
            last_new: ex.new,
            count: 1,
        }
    }

    /// Old chunk of the last (newest) entry (`*last_old_chunk`).
    pub const fn last_old(&self) -> Chunk {
        self.last_old
    }

    /// New chunk of the last (newest) entry (`*last_new_chunk`).
    pub const fn last_new(&self) -> Chunk {
        self.last_new
    }

    /// Entries in the run (`nr_consecutive`), at least 1.
    pub const fn count(&self) -> u32 {
        self.count
    }

    /// First origin chunk of the run (`old_chunk + 1 - linear_chunks`).
    /// Cannot underflow: the run was only grown while `last_old >= count - 1`.
    // Plain `-` on purpose: with a key that cannot panic, the code of core's
    // `sort_unstable_by_key(first_old)` in `snapshot/snap/merge_batch.rs`
    // ends in a call of `panic_on_ord_violation`, which 6.12's objtool does
    // not know as noreturn ("falls through" build warning). Make this
    // `saturating_sub` once those sorts are replaced.
    #[allow(clippy::arithmetic_side_effects)]
    pub const fn first_old(&self) -> Chunk {
        self.last_old - (self.count as u64 - 1)
    }

    /// First COW chunk of the run.
    pub const fn first_new(&self) -> Chunk {
        self.last_new.saturating_sub((self.count as u64).saturating_sub(1))
    }

    /// Whether origin chunk `chunk` is merged by this run.
    pub const fn contains_old(&self, chunk: Chunk) -> bool {
        chunk >= self.first_old() && chunk <= self.last_old
    }

    /// Grow by the entry just before the run, if it continues the line.
    fn try_prepend(&mut self, ex: DiskException) -> bool {
        let k = u64::from(self.count);
        // Upstream compares with `last - nr` in wrapping arithmetic; a run
        // never wraps past chunk 0 here.
        let (Some(want_old), Some(want_new)) =
            (self.last_old.checked_sub(k), self.last_new.checked_sub(k))
        else {
            return false;
        };
        if ex.old != want_old || ex.new != want_new || ex.new == 0 {
            return false;
        }
        match self.count.checked_add(1) {
            Some(c) => {
                self.count = c;
                true
            }
            None => false,
        }
    }

    /// The copy `snapshot_merge_next_chunks()` issues for this run: COW
    /// `[first_new, +count)` to origin `[first_old, +count)` in chunks,
    /// clipped to the origin size. `None` if the run starts past the end of
    /// the origin (upstream would underflow) or does not fit in 64 bits; the
    /// caller can then commit the merge without copying.
    pub const fn copy_plan(&self, chunk: ChunkSize, origin_sectors: Sector) -> Option<CopyPlan> {
        let (dest, sectors) =
            match chunk.clip_extent(self.first_old(), self.count as u64, origin_sectors) {
                Some(x) => x,
                None => return None,
            };
        match chunk.chunk_to_sector(self.first_new()) {
            Some(src) => Some(CopyPlan { src, dest, sectors }),
            None => None,
        }
    }
}

/// One COW-to-origin copy, in sectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyPlan {
    /// First sector on the COW device.
    pub src: Sector,
    /// First sector on the origin device.
    pub dest: Sector,
    /// Length of the copy.
    pub sectors: Sector,
}

/// The linear run ending at entry `end - 1`, at most `limit` entries long
/// (`persistent_prepare_merge()` with `end == current_committed`).
///
/// Returns `Ok(None)` when `end == 0`. Entries are taken literally; an entry
/// with `new_chunk == 0` at the tail is an error, inside the scan it ends the
/// run.
pub fn linear_tail<S: ExceptionSource + ?Sized>(
    src: &S,
    end: usize,
    limit: NonZeroU32,
) -> Result<Option<MergeRun>, MergeError> {
    let Some(last_idx) = end.checked_sub(1) else {
        return Ok(None);
    };
    if end > src.entry_count() {
        return Err(MergeError::OutOfRange);
    }
    let last = src.entry(last_idx).ok_or(MergeError::OutOfRange)?;
    if last.new == 0 {
        return Err(MergeError::ZeroNewChunk { index: last_idx });
    }
    let mut run = MergeRun::single(last);
    let mut idx = last_idx;
    while run.count < limit.get() {
        let Some(prev) = idx.checked_sub(1) else {
            break;
        };
        let ex = src.entry(prev).ok_or(MergeError::OutOfRange)?;
        if !run.try_prepend(ex) {
            break;
        }
        idx = prev;
    }
    Ok(Some(run))
}

/// [`linear_tail`] over the first `committed` slots of an area buffer.
pub fn linear_tail_of_area(
    geom: Geometry,
    area: &[u8],
    committed: u32,
    limit: NonZeroU32,
) -> Result<Option<MergeRun>, MergeError> {
    linear_tail(&AreaSource::new(geom, area), committed as usize, limit)
}

/// Successive linear runs taken from the end of a list, newest first: the
/// first item is what [`linear_tail`] returns, the next one ends just before
/// it, and so on. Each run is at most `limit` entries long. Stops after the
/// first error.
#[derive(Clone, Debug)]
pub struct TailRuns<'a, S: ExceptionSource + ?Sized> {
    src: &'a S,
    end: usize,
    limit: NonZeroU32,
    failed: bool,
}

impl<'a, S: ExceptionSource + ?Sized> TailRuns<'a, S> {
    /// Runs over entries `0..end` of `src`.
    pub fn new(src: &'a S, end: usize, limit: NonZeroU32) -> Self {
        Self {
            src,
            end,
            limit,
            failed: false,
        }
    }

    /// Entries not yet covered by a returned run.
    pub fn remaining(&self) -> usize {
        self.end
    }
}

impl<S: ExceptionSource + ?Sized> Iterator for TailRuns<'_, S> {
    type Item = Result<MergeRun, MergeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match linear_tail(self.src, self.end, self.limit) {
            Ok(Some(run)) => {
                self.end = self.end.saturating_sub(run.count() as usize);
                Some(Ok(run))
            }
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Fill `out` with tail runs of entries `0..end`, newest first, stopping
/// when `out` is full or `max_chunks` chunks are planned (the last run is
/// shortened to its newest entries to fit). Returns the number of runs
/// written. Each run is at most `limit` entries.
///
/// Runs must be committed (removed from the list) in the order returned,
/// since the on-disk list only shrinks from its tail.
pub fn plan_tail_runs<S: ExceptionSource + ?Sized>(
    src: &S,
    end: usize,
    limit: NonZeroU32,
    max_chunks: u64,
    out: &mut [MergeRun],
) -> Result<usize, MergeError> {
    let mut written = 0usize;
    let mut end = end;
    let mut budget = max_chunks;
    for slot in out.iter_mut() {
        // Fits in u32: bounded by `limit`.
        let cap = budget.min(u64::from(limit.get())) as u32;
        let Some(cap) = NonZeroU32::new(cap) else {
            break;
        };
        let Some(run) = linear_tail(src, end, cap)? else {
            break;
        };
        *slot = run;
        written = written.saturating_add(1);
        end = end.saturating_sub(run.count() as usize);
        budget = budget.saturating_sub(u64::from(run.count()));
    }
    Ok(written)
}

/// Plans one area's share of a merge batch: tail runs of entries `0..end`
/// of `src`, newest first, each at most `limit` entries, until `budget`
/// chunks are planned or `take` refuses a run (the last run is shortened
/// to fit the budget). Returns how many entries the planned runs cover;
/// they are the last ones of `0..end`.
pub fn plan_batch_area<S, F>(
    src: &S,
    end: usize,
    limit: NonZeroU32,
    budget: u64,
    mut take: F,
) -> Result<usize, MergeError>
where
    S: ExceptionSource + ?Sized,
    F: FnMut(MergeRun) -> bool,
{
    let mut left = end;
    let mut budget = budget;
    loop {
        // Fits in u32: bounded by `limit`.
        let cap = budget.min(u64::from(limit.get())) as u32;
        let Some(cap) = NonZeroU32::new(cap) else {
            break;
        };
        let Some(run) = linear_tail(src, left, cap)? else {
            break;
        };
        if !take(run) {
            break;
        }
        left = left.saturating_sub(run.count() as usize);
        budget = budget.saturating_sub(u64::from(run.count()));
    }
    Ok(end.saturating_sub(left))
}

/// Whether origin chunk `chunk` is merged by one of `runs`, which must be
/// sorted by [`MergeRun::first_old`] and not overlap (the runs of one
/// batch: every origin chunk has at most one exception).
pub fn runs_contain(runs: &[MergeRun], chunk: Chunk) -> bool {
    // The last run starting at or before `chunk`.
    let after = runs.partition_point(|r| r.first_old() <= chunk);
    match after.checked_sub(1).and_then(|i| runs.get(i)) {
        Some(run) => run.contains_old(chunk),
        None => false,
    }
}

/// How the merging device has been used lately, as the merge sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeLoad {
    /// No I/O.
    Idle,
    /// It serves I/O, but no write waited for a batch.
    Active,
    /// Writes waited for batches.
    Waiting,
}

impl MergeLoad {
    /// The load given how many milliseconds ago a write last waited for a
    /// batch and the device last served I/O (`None`: not since the merge
    /// started); either counts for `calm_ms`.
    pub fn from_recent(waited_ms_ago: Option<i64>, io_ms_ago: Option<i64>, calm_ms: i64) -> Self {
        let recent = |ago: Option<i64>| ago.is_some_and(|ms| ms < calm_ms);
        if recent(waited_ms_ago) {
            Self::Waiting
        } else if recent(io_ms_ago) {
            Self::Active
        } else {
            Self::Idle
        }
    }
}

/// How many microseconds the merge still waits before its next batch,
/// `elapsed_us` after the start of the last one, which had `runs` runs:
/// while paced, batches start at most one run per `per_run_us` apart on
/// average.
pub fn pace_delay_us(runs: usize, per_run_us: i64, elapsed_us: i64) -> i64 {
    let runs = i64::try_from(runs).unwrap_or(i64::MAX);
    runs.saturating_mul(per_run_us).saturating_sub(elapsed_us).max(0)
}

/// Longest idle time the copy throttle adds after one copy step, in
/// microseconds (upstream's kcopyd sleeps at most 10 x 100 ms per job).
pub const THROTTLE_MAX_IDLE_US: u64 = 1_000_000;

/// How long the merge idles after a batch's copy that kept the disks busy for
/// `busy_us`, so that its copies take at most `pct` percent of the time
/// (`snapshot_copy_throttle`, as kcopyd's throttle applies it to its own
/// jobs): `busy * (100 - pct) / pct`, capped at [`THROTTLE_MAX_IDLE_US`];
/// 100 or more is no throttle, 0 the longest idle.
pub fn throttle_idle_us(busy_us: u64, pct: u32) -> u64 {
    if pct >= 100 {
        return 0;
    }
    // `None` only for pct == 0.
    let Some(idle) = busy_us.saturating_mul(u64::from(100u32.saturating_sub(pct))).checked_div(u64::from(pct)) else {
        return THROTTLE_MAX_IDLE_US;
    };
    idle.min(THROTTLE_MAX_IDLE_US)
}

/// Merge batch sizing. Writes to a batch's chunks wait for the whole
/// batch, so its size trades merge throughput for the latency of those
/// writes; its number of runs (separate copies, all in flight at once) is
/// the queue depth the merge puts on the disks next to the device's own
/// I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSizing {
    /// Smallest batch, in chunks.
    pub min: u64,
    /// Largest batch, in chunks.
    pub max: u64,
    /// Largest batch while writes wait for batches, in chunks.
    pub busy_chunks: u64,
    /// Most runs of consecutive chunks in a batch while writes wait for
    /// batches (upstream merges one run at a time).
    pub busy_runs: u32,
    /// Most runs in a batch while the device serves other I/O.
    pub active_runs: u32,
}

/// The limits of the next batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimit {
    /// Chunks at most.
    pub chunks: u64,
    /// Runs at most, if limited.
    pub runs: Option<u32>,
}

impl BatchSizing {
    /// The next batch's limits after one of `last_chunks` chunks: unless
    /// writes waited for batches, twice as many chunks, and any number of
    /// runs on an idle device or at most `active_runs` on an active one;
    /// while writes wait, at most `busy_chunks` and `busy_runs`. Chunks
    /// always within `min..=max` (`min` wins if they cross).
    pub fn next(&self, last_chunks: u64, load: MergeLoad) -> BatchLimit {
        let (chunks, runs) = match load {
            MergeLoad::Idle => (last_chunks.saturating_mul(2), None),
            MergeLoad::Active => (last_chunks.saturating_mul(2), Some(self.active_runs.max(1))),
            MergeLoad::Waiting => (self.busy_chunks, Some(self.busy_runs.max(1))),
        };
        BatchLimit { chunks: chunks.min(self.max).max(self.min), runs }
    }
}
