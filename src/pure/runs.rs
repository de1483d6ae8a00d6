// SPDX-License-Identifier: GPL-2.0
//! Consecutive-chunk runs: the element type of the completed-exception table.
//!
//! Upstream's `struct dm_exception` packs an 8-bit "additional chunks" count
//! into the top of `new_chunk`, so a run covers at most 256 chunks and never
//! leaves its 256-aligned hash group (dm-exception-store.h,
//! `dm_consecutive_chunk_count()`). A [`Run`] keeps a separate `u32` length
//! instead, so `new` can use all 64 bits and runs can be much longer.
//!
//! A run maps origin chunks `old ..= old + len - 1` to COW chunks
//! `new ..= new + len - 1`. Invariants, enforced by every constructor and
//! mutator: `len >= 1`, and neither range wraps past `u64::MAX`.

use super::chunk::{Chunk, ChunkSize, Sector};

/// Which end of a run changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The chunk was appended after the last one ("insert after").
    Back,
    /// The chunk was prepended before the first one ("insert before").
    Front,
}

/// Outcome of [`Run::remove_chunk`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removed {
    /// The run had one chunk and must be dropped from the table.
    Emptied,
    /// The run lost its first or last chunk and remains non-empty.
    Trimmed,
}

/// Why [`Run::remove_chunk`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunError {
    /// The chunk is not covered by this run.
    NotInRun,
    /// The chunk is strictly inside the run ("Attempt to merge block ... from
    /// the middle of a chunk range" upstream); use [`Run::split_around`].
    InMiddle,
}

/// One completed exception covering `len` consecutive chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Run {
    pub(super) old: Chunk,
    pub(super) new: Chunk,
    pub(super) len: u32,
}

impl Run {
    /// A one-chunk run (what `dm_add_exception()` / `pending_complete()`
    /// insert).
    pub const fn single(old: Chunk, new: Chunk) -> Self {
        Self { old, new, len: 1 }
    }

    /// A run of `len` chunks; `None` if `len == 0` or a range would wrap.
    pub const fn new(old: Chunk, new: Chunk, len: u32) -> Option<Self> {
        if len == 0 {
            return None;
        }
        let extra = (len as u64).saturating_sub(1);
        if old.checked_add(extra).is_none() || new.checked_add(extra).is_none() {
            return None;
        }
        Some(Self { old, new, len })
    }

    /// First origin chunk.
    pub const fn old(&self) -> Chunk {
        self.old
    }

    /// First COW chunk.
    pub const fn new_chunk(&self) -> Chunk {
        self.new
    }

    /// Number of chunks, at least 1.
    pub const fn len(&self) -> u32 {
        self.len
    }

    /// Always `false`; present for API symmetry with `len()`.
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// Last origin chunk (inclusive).
    pub const fn last_old(&self) -> Chunk {
        // Invariant: does not overflow.
        self.old.saturating_add(self.extra())
    }

    /// Last COW chunk (inclusive).
    pub const fn last_new(&self) -> Chunk {
        self.new.saturating_add(self.extra())
    }

    /// Chunks after the first: `len - 1`.
    pub(super) const fn extra(&self) -> u64 {
        (self.len as u64).saturating_sub(1)
    }

    /// Whether origin chunk `chunk` is covered (`dm_lookup_exception()`'s
    /// `old <= chunk <= old + count`).
    pub const fn contains(&self, chunk: Chunk) -> bool {
        match chunk.checked_sub(self.old) {
            Some(off) => off < self.len as u64,
            None => false,
        }
    }

    /// COW chunk holding origin chunk `chunk`, if covered.
    pub const fn remap(&self, chunk: Chunk) -> Option<Chunk> {
        if self.contains(chunk) {
            // Within the run, so no overflow by the invariant.
            Some(self.new.saturating_add(chunk.saturating_sub(self.old)))
        } else {
            None
        }
    }

    /// COW sector for origin `sector` (`remap_exception()`): the remapped
    /// chunk's first sector plus the offset inside the chunk.
    pub const fn remap_sector(&self, chunk_size: ChunkSize, sector: Sector) -> Option<Sector> {
        let Some(new_chunk) = self.remap(chunk_size.sector_to_chunk(sector)) else {
            return None;
        };
        match chunk_size.chunk_to_sector(new_chunk) {
            // The offset is below the chunk size and the base is chunk
            // aligned, so OR cannot carry.
            Some(base) => Some(base | chunk_size.offset_in_chunk(sector)),
            None => None,
        }
    }

    /// Absorb the single exception `old -> new` if it continues this run at
    /// either end (`dm_insert_exception()`'s two cases, checked in the same
    /// order). Returns the side that grew, or `None` (run unchanged) if it
    /// is not adjacent or the run is at its maximum length.
    pub fn try_extend(&mut self, old: Chunk, new: Chunk) -> Option<Side> {
        let len = self.len.checked_add(1)?;
        // Insert after: old == e.old + count + 1 && new == e.new + count + 1.
        if self.last_old().checked_add(1) == Some(old)
            && self.last_new().checked_add(1) == Some(new)
        {
            self.len = len;
            return Some(Side::Back);
        }
        // Insert before: old == e.old - 1 && new == e.new - 1.
        if old.checked_add(1) == Some(self.old) && new.checked_add(1) == Some(self.new) {
            self.old = old;
            self.new = new;
            self.len = len;
            return Some(Side::Front);
        }
        None
    }

    /// [`Self::try_extend`], but only while the run stays inside one
    /// `2^group_shift`-aligned group of origin chunks. A table that hashes
    /// `old >> group_shift` (upstream: 8) needs this so a lookup of any
    /// covered chunk lands in the run's bucket. `group_shift >= 64` means a
    /// single group.
    pub fn try_extend_in_group(
        &mut self,
        old: Chunk,
        new: Chunk,
        group_shift: u32,
    ) -> Option<Side> {
        let same = match (
            old.checked_shr(group_shift),
            self.old.checked_shr(group_shift),
        ) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        if same {
            self.try_extend(old, new)
        } else {
            None
        }
    }

    /// Join `next` onto the end of this run if it continues it exactly
    /// (both ranges adjacent) and the combined length fits in `u32`.
    pub fn try_coalesce(&mut self, next: &Run) -> bool {
        let Some(len) = self.len.checked_add(next.len) else {
            return false;
        };
        if self.last_old().checked_add(1) == Some(next.old)
            && self.last_new().checked_add(1) == Some(next.new)
        {
            self.len = len;
            true
        } else {
            false
        }
    }

    /// Remove origin chunk `chunk` from either end, exactly like
    /// `__remove_single_exception_chunk()`: a one-chunk run is emptied, the
    /// first chunk bumps the start, the last one shortens the run, and a
    /// chunk in the middle is refused.
    pub fn remove_chunk(&mut self, chunk: Chunk) -> Result<Removed, RunError> {
        if !self.contains(chunk) {
            return Err(RunError::NotInRun);
        }
        if self.len == 1 {
            return Ok(Removed::Emptied);
        }
        if chunk == self.old {
            // len >= 2, so old + 1 and new + 1 are still inside the ranges.
            self.old = self.old.saturating_add(1);
            self.new = self.new.saturating_add(1);
        } else if chunk != self.last_old() {
            return Err(RunError::InMiddle);
        }
        self.len = self.len.saturating_sub(1);
        Ok(Removed::Trimmed)
    }

    /// Remove origin chunks `first .. first + count` (which may cover all,
    /// part or none of this run) and return what is left on each side. Any
    /// chunk, including one in the middle, can be cut out this way.
    pub const fn subtract(&self, first: Chunk, count: u64) -> (Option<Run>, Option<Run>) {
        if count == 0 {
            return (Some(*self), None);
        }
        // Inclusive end of the removed range, saturating at u64::MAX.
        let last = match first.checked_add(count.saturating_sub(1)) {
            Some(l) => l,
            None => u64::MAX,
        };
        let run_last = self.last_old();
        if last < self.old || first > run_last {
            // Disjoint: everything stays. Report it on the side it lies.
            return if run_last < first {
                (Some(*self), None)
            } else {
                (None, Some(*self))
            };
        }
        let left = if first > self.old {
            // first - old < len, so it fits in u32.
            Some(Run {
                old: self.old,
                new: self.new,
                len: first.saturating_sub(self.old) as u32,
            })
        } else {
            None
        };
        let right = if last < run_last {
            // old <= last < run_last, so none of these overflows.
            let next = last.saturating_add(1);
            Some(Run {
                old: next,
                new: self.new.saturating_add(next.saturating_sub(self.old)),
                len: run_last.saturating_sub(last) as u32,
            })
        } else {
            None
        };
        (left, right)
    }

    /// Remove one origin chunk anywhere in the run; `None` if not covered.
    pub const fn split_around(&self, chunk: Chunk) -> Option<(Option<Run>, Option<Run>)> {
        if self.contains(chunk) {
            Some(self.subtract(chunk, 1))
        } else {
            None
        }
    }

    /// Split into the first `n` chunks and the rest; `None` unless
    /// `0 < n < len`.
    pub const fn split_at(&self, n: u32) -> Option<(Run, Run)> {
        if n == 0 || n >= self.len {
            return None;
        }
        Some((
            Run {
                old: self.old,
                new: self.new,
                len: n,
            },
            Run {
                old: self.old.saturating_add(n as u64),
                new: self.new.saturating_add(n as u64),
                len: self.len.saturating_sub(n),
            },
        ))
    }
}
