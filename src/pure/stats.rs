// SPDX-License-Identifier: GPL-2.0
//! The `stats` message: its two lines, the merge rate and the ETA.
//!
//! Documentation/stats.md is the user-facing description. Keys are only
//! ever appended to these lines, never renamed or removed.

use core::fmt;

/// Why a snapshot became invalid (the `invalid=` key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidReason {
    /// The on-disk header said invalid when the table loaded: it was
    /// invalidated in an earlier activation (no time known).
    OnDisk,
    /// The COW is full: no room for a new exception.
    Overflow,
    /// A copy-out failed to read the origin (kcopyd's read error, or the
    /// copy could not be started).
    CowReadError,
    /// A write to the COW failed: a copy-out's or full-chunk write's data,
    /// a metadata area (the commit) or a COW flush.
    CowWriteError,
    /// The store's bookkeeping failed: no metadata slot could be reserved
    /// for a finished copy, or an exception lies outside the COW.
    MetadataError,
    /// A kernel memory allocation for an exception failed.
    NoMemory,
}

impl InvalidReason {
    /// The value of the `invalid=` key.
    pub const fn name(self) -> &'static str {
        match self {
            Self::OnDisk => "on_disk",
            Self::Overflow => "overflow",
            Self::CowReadError => "cow_read_error",
            Self::CowWriteError => "cow_write_error",
            Self::MetadataError => "metadata_error",
            Self::NoMemory => "no_memory",
        }
    }
}

/// When and why a snapshot became invalid, if it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Invalidity {
    /// `None`: valid.
    pub reason: Option<InvalidReason>,
    /// CLOCK_REALTIME seconds when it happened; `None` if not known.
    pub at: Option<i64>,
}

/// The `snapshot` target's stats line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SnapshotStats {
    /// Data chunks the store holds, committed or not (the status line's
    /// used count without the metadata).
    pub allocated_exceptions: u64,
    /// Exceptions allocated whose copy or commit has not finished.
    pub copies_in_flight: u64,
    /// Chunks copied out of the origin since the table was constructed.
    pub copied_chunks: u64,
    /// The chunk size in sectors.
    pub chunk_sectors: u32,
    /// Why and when it became invalid.
    pub invalid: Invalidity,
}

impl fmt::Display for SnapshotStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "allocated_exceptions={} copies_in_flight={} copied_chunks={} chunk_sectors={} invalid={} invalid_at=",
            self.allocated_exceptions,
            self.copies_in_flight,
            self.copied_chunks,
            self.chunk_sectors,
            self.invalid.reason.map_or("none", InvalidReason::name),
        )?;
        match self.invalid.at {
            Some(at) => write!(f, "{}", at),
            None => f.write_str("-"),
        }
    }
}

/// What the merge is doing (the `state=` key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeStateName {
    /// The merge worker is running (or queued).
    Merging,
    /// Not running, exceptions left: suspended, or not resumed yet.
    Stopped,
    /// The merge failed (the status line says `Merge failed`).
    Failed,
    /// No exception left in the store.
    Done,
    /// The snapshot is invalid, or this table does not own the store:
    /// nothing is merged.
    Invalid,
}

impl MergeStateName {
    /// Picks the state; the first that applies wins, in the order
    /// invalid, failed, done, merging, stopped.
    pub const fn select(valid_owner: bool, failed: bool, remaining: u64, running: bool) -> Self {
        if !valid_owner {
            Self::Invalid
        } else if failed {
            Self::Failed
        } else if remaining == 0 {
            Self::Done
        } else if running {
            Self::Merging
        } else {
            Self::Stopped
        }
    }

    /// The value of the `state=` key.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Merging => "merging",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
            Self::Done => "done",
            Self::Invalid => "invalid",
        }
    }
}

/// The `snapshot-merge` target's stats line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MergeStats {
    /// Chunks merged back (committed) since the table was constructed.
    pub merged_chunks: u64,
    /// Exceptions still in the store.
    pub remaining_chunks: u64,
    /// Chunks merged per second over the recent window.
    pub rate_chunks_per_sec: u64,
    /// The chunk size in sectors.
    pub chunk_sectors: u32,
    /// What the merge is doing.
    pub state: MergeStateName,
}

impl MergeStats {
    /// Seconds left at the current rate: `Some(0)` when nothing remains,
    /// `None` when the rate is 0, else `ceil(remaining / rate)`.
    pub const fn eta_sec(&self) -> Option<u64> {
        eta_sec(self.remaining_chunks, self.rate_chunks_per_sec)
    }
}

impl fmt::Display for MergeStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "merged_chunks={} remaining_chunks={} rate_chunks_per_sec={} eta_sec=",
            self.merged_chunks, self.remaining_chunks, self.rate_chunks_per_sec
        )?;
        match self.eta_sec() {
            Some(eta) => write!(f, "{}", eta)?,
            None => f.write_str("-")?,
        }
        write!(f, " chunk_sectors={} state={}", self.chunk_sectors, self.state.name())
    }
}

/// `ceil(remaining / rate)`; `Some(0)` if nothing remains, `None` if the
/// rate is 0.
pub const fn eta_sec(remaining: u64, rate: u64) -> Option<u64> {
    if remaining == 0 {
        return Some(0);
    }
    match remaining.checked_div(rate) {
        None => None,
        Some(q) => match remaining.checked_rem(rate) {
            Some(0) | None => Some(q),
            Some(_) => Some(q.saturating_add(1)),
        },
    }
}

/// Progress checkpoints kept by [`RateWindow`].
pub const RATE_CHECKPOINTS: usize = 16;
/// Minimum time between two checkpoints.
pub const RATE_CHECKPOINT_MS: u64 = 1000;
/// The window the rate is measured over.
pub const RATE_WINDOW_MS: u64 = 10_000;

/// A running total (chunks merged) and its rate over about the last
/// [`RATE_WINDOW_MS`]. Times are milliseconds on a monotonic clock.
///
/// Checkpoints `(time, total)` are taken at most every
/// [`RATE_CHECKPOINT_MS`]; the rate at `now` is the progress since the
/// newest checkpoint at least a window old (or the oldest one, early on)
/// divided by the time since it. No progress for a whole window reads as 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateWindow {
    /// Ring of checkpoints; `len` valid ones ending at `newest`.
    points: [(u64, u64); RATE_CHECKPOINTS],
    len: usize,
    newest: usize,
    total: u64,
}

impl Default for RateWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl RateWindow {
    /// No checkpoint, a total of 0.
    pub const fn new() -> Self {
        Self { points: [(0, 0); RATE_CHECKPOINTS], len: 0, newest: 0, total: 0 }
    }

    /// The total so far.
    pub const fn total(&self) -> u64 {
        self.total
    }

    /// Starts measuring at `now_ms` (a merge starts): earlier checkpoints
    /// are dropped, the total is kept.
    pub fn restart(&mut self, now_ms: u64) {
        self.len = 0;
        self.push(now_ms);
    }

    /// Adds `n` to the total at `now_ms`.
    pub fn add(&mut self, now_ms: u64, n: u64) {
        self.total = self.total.saturating_add(n);
        let due = match self.newest_point() {
            Some((t, _)) => now_ms.saturating_sub(t) >= RATE_CHECKPOINT_MS,
            None => true,
        };
        if due {
            self.push(now_ms);
        }
    }

    fn push(&mut self, now_ms: u64) {
        let slot = if self.len == 0 { 0 } else { self.newest.saturating_add(1).checked_rem(RATE_CHECKPOINTS).unwrap_or(0) };
        if let Some(p) = self.points.get_mut(slot) {
            *p = (now_ms, self.total);
            self.newest = slot;
            self.len = self.len.saturating_add(1).min(RATE_CHECKPOINTS);
        }
    }

    fn newest_point(&self) -> Option<(u64, u64)> {
        if self.len == 0 {
            None
        } else {
            self.points.get(self.newest).copied()
        }
    }

    /// Checkpoint `age` steps back from the newest (0: the newest).
    fn point_back(&self, age: usize) -> Option<(u64, u64)> {
        if age >= self.len {
            return None;
        }
        let idx = self.newest.checked_add(RATE_CHECKPOINTS)?.checked_sub(age)?.checked_rem(RATE_CHECKPOINTS)?;
        self.points.get(idx).copied()
    }

    /// Chunks per second at `now_ms`, rounded down; 0 before any progress.
    pub fn rate_per_sec(&self, now_ms: u64) -> u64 {
        let edge = now_ms.saturating_sub(RATE_WINDOW_MS);
        // The newest checkpoint at or before the window's edge, else the
        // oldest one.
        let mut base = None;
        for age in 0..self.len {
            let Some(p) = self.point_back(age) else { break };
            base = Some(p);
            if p.0 <= edge {
                break;
            }
        }
        let Some((t, total_then)) = base else { return 0 };
        let elapsed_ms = now_ms.saturating_sub(t);
        let done = self.total.saturating_sub(total_then);
        // No u128 (no 128-bit division in the kernel); saturates only past
        // 1.8e16 chunks. No time elapsed: 0.
        done.saturating_mul(1000).checked_div(elapsed_ms).unwrap_or(0)
    }
}
