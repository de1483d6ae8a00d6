// SPDX-License-Identifier: GPL-2.0
//! Allocation and commit bookkeeping of the persistent and transient stores.
//!
//! [`PersistentState`] holds `struct pstore`'s cursors (`next_free`,
//! `current_area`, `current_committed`) and reproduces the arithmetic of
//! dm-snap-persistent.c function by function; the I/O stays with the caller.
//! [`Loader`] is `read_exceptions()` turned inside out: the caller reads the
//! area the loader asks for and feeds it back.

use core::num::NonZeroU32;

use super::chunk::{Chunk, ChunkSize, Sector};
use super::disk::{
    check_exception, clear_entry, run_is_valid, AreaEntries, AreaError, Corruption, DiskException,
    Geometry, NUM_SNAPSHOT_HDR_CHUNKS,
};
use super::merge::{linear_tail_of_area, MergeError, MergeRun};
use super::status::Usage;

/// The COW device has no room for another chunk (upstream `-ENOSPC`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoSpace;

/// Violations of the store's own invariants (upstream `BUG_ON`s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// A commit into an area that is already full.
    AreaFull,
    /// `commit_merge(nr)` with `nr > current_committed`.
    MergeTooLarge,
    /// Stepping back from area 0, or an area index that overflows.
    NoSuchArea,
    /// Merge planning failed.
    Merge(MergeError),
    /// An area buffer was too short or an index out of range.
    Area(AreaError),
}

impl From<AreaError> for StoreError {
    fn from(e: AreaError) -> Self {
        Self::Area(e)
    }
}

impl From<MergeError> for StoreError {
    fn from(e: MergeError) -> Self {
        Self::Merge(e)
    }
}

/// What the merge must do next (`persistent_prepare_merge()`'s first half).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeStep {
    /// Nothing left: area 0 has no committed entries (return 0 upstream).
    Finished,
    /// The current area is empty: read area `area` (at chunk `location`)
    /// into the area buffer, then call [`PersistentState::enter_previous_area`].
    ReadPreviousArea {
        /// Index of the area to read.
        area: u64,
        /// Chunk of that area on the COW.
        location: Chunk,
    },
    /// The area buffer holds entries; call [`PersistentState::prepare_merge`].
    Ready,
}

/// Result of committing one exception (`persistent_commit_exception()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitSlot {
    /// Slot in the current area buffer to write the entry to.
    pub index: u32,
    /// The area is now full: the caller must zero area `current_area + 1`
    /// on disk before writing this area, then call
    /// [`PersistentState::advance_area`] and zero the area buffer.
    pub area_full: bool,
}

/// Cursor state of a persistent store (`struct pstore`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PersistentState {
    geom: Geometry,
    next_free: Chunk,
    current_area: u64,
    current_committed: u32,
}

impl PersistentState {
    /// State of a freshly initialised store: `next_free = NUM_SNAPSHOT_HDR_CHUNKS
    /// + 1` (`persistent_ctr()`), area 0, nothing committed.
    pub const fn new_store(geom: Geometry) -> Self {
        Self {
            geom,
            next_free: NUM_SNAPSHOT_HDR_CHUNKS + 1,
            current_area: 0,
            current_committed: 0,
        }
    }

    /// Rebuild a state from raw cursors (e.g. for tests or a handover).
    /// `next_free` is passed through `skip_metadata()`; `None` if
    /// `current_committed > epa` or `current_area` has no location.
    pub const fn from_parts(
        geom: Geometry,
        next_free: Chunk,
        current_area: u64,
        current_committed: u32,
    ) -> Option<Self> {
        if current_committed > geom.exceptions_per_area()
            || geom.area_location(current_area).is_none()
        {
            return None;
        }
        let mut s = Self {
            geom,
            next_free,
            current_area,
            current_committed,
        };
        s.skip_metadata();
        Some(s)
    }

    /// The geometry.
    pub const fn geometry(&self) -> Geometry {
        self.geom
    }

    /// The chunk size.
    pub const fn chunk_size(&self) -> ChunkSize {
        self.geom.chunk_size()
    }

    /// Next chunk to hand out (`ps->next_free`).
    pub const fn next_free(&self) -> Chunk {
        self.next_free
    }

    /// Area receiving commits (`ps->current_area`).
    pub const fn current_area(&self) -> u64 {
        self.current_area
    }

    /// Entries committed in the current area (`ps->current_committed`).
    pub const fn current_committed(&self) -> u32 {
        self.current_committed
    }

    /// Chunk of the current area; `None` only for absurd area numbers.
    pub const fn current_area_location(&self) -> Option<Chunk> {
        self.geom.area_location(self.current_area)
    }

    /// `skip_metadata()`: if `next_free` sits on a metadata area
    /// (`next_free % (epa + 1) == NUM_SNAPSHOT_HDR_CHUNKS`), step over it.
    /// This is the CVE-2013-4299 fix, applied after load and after every
    /// allocation.
    const fn skip_metadata(&mut self) {
        if matches!(self.next_free.checked_rem(self.geom.stride()), Some(NUM_SNAPSHOT_HDR_CHUNKS)) {
            self.next_free = self.next_free.saturating_add(1);
        }
    }

    /// `persistent_prepare_exception()`: allocate the next data chunk.
    ///
    /// Fails if `cow_sectors < (next_free + 1) * chunk_size`. Pass the COW
    /// size read *now*, not a cached one: upstream re-reads it on every
    /// call, so an online-grown COW is used at once.
    pub fn prepare_exception(&mut self, cow_sectors: Sector) -> Result<Chunk, NoSpace> {
        let need = self
            .next_free
            .checked_add(1)
            .and_then(|c| self.chunk_size().chunk_to_sector(c))
            .ok_or(NoSpace)?;
        if cow_sectors < need {
            return Err(NoSpace);
        }
        let new_chunk = self.next_free;
        self.next_free = self.next_free.saturating_add(1);
        self.skip_metadata();
        Ok(new_chunk)
    }

    /// `persistent_usage()`: `next_free * chunk` / COW size /
    /// `(current_area + 1 + NUM_SNAPSHOT_HDR_CHUNKS) * chunk`.
    pub const fn usage(&self, cow_sectors: Sector) -> Usage {
        let cs = self.geom.chunk_size();
        Usage {
            sectors_allocated: cs.chunks_to_sectors_saturating(self.next_free),
            total_sectors: cow_sectors,
            metadata_sectors: cs.chunks_to_sectors_saturating(
                self.current_area
                    .saturating_add(1)
                    .saturating_add(NUM_SNAPSHOT_HDR_CHUNKS),
            ),
        }
    }

    /// Data chunks allocated so far (`next_free` minus the header and the
    /// metadata chunks before it): the exceptions the store holds,
    /// committed or not, as the status line's used count sees them.
    pub const fn data_chunks(&self) -> u64 {
        let past_header = self.next_free.saturating_sub(NUM_SNAPSHOT_HDR_CHUNKS);
        // Metadata chunks below `next_free`: one per started stride.
        let metadata = match past_header.checked_add(self.geom.stride().saturating_sub(1)) {
            Some(n) => match n.checked_div(self.geom.stride()) {
                Some(m) => m,
                None => 0,
            },
            None => 0,
        };
        past_header.saturating_sub(metadata)
    }

    /// Whether the current area holds `epa` entries.
    pub const fn area_is_full(&self) -> bool {
        self.current_committed >= self.geom.exceptions_per_area()
    }

    /// Take the next slot of the current area for a completed exception
    /// (`write_exception(ps, ps->current_committed++, ...)`).
    pub fn commit_slot(&mut self) -> Result<CommitSlot, StoreError> {
        if self.area_is_full() {
            return Err(StoreError::AreaFull);
        }
        let index = self.current_committed;
        self.current_committed = self.current_committed.saturating_add(1);
        Ok(CommitSlot {
            index,
            area_full: self.area_is_full(),
        })
    }

    /// Area to zero on disk before a full area is written
    /// (`zero_disk_area(ps, ps->current_area + 1)`), with its chunk.
    pub const fn next_area(&self) -> Option<(u64, Chunk)> {
        let Some(area) = self.current_area.checked_add(1) else {
            return None;
        };
        match self.geom.area_location(area) {
            Some(loc) => Some((area, loc)),
            None => None,
        }
    }

    /// After a full area was written: `current_committed = 0`,
    /// `current_area++`. Returns `false` (and changes nothing) if the area
    /// was not full.
    pub fn advance_area(&mut self) -> bool {
        if !self.area_is_full() || self.next_area().is_none() {
            return false;
        }
        self.current_committed = 0;
        self.current_area = self.current_area.saturating_add(1);
        true
    }

    /// First half of `persistent_prepare_merge()`.
    pub const fn merge_step(&self) -> MergeStep {
        if self.current_committed > 0 {
            return MergeStep::Ready;
        }
        if self.current_area == 0 {
            return MergeStep::Finished;
        }
        let area = self.current_area.saturating_sub(1);
        match self.geom.area_location(area) {
            Some(location) => MergeStep::ReadPreviousArea { area, location },
            // Unreachable for a state built by this module; report as done.
            None => MergeStep::Finished,
        }
    }

    /// After the previous area was read: `current_area--`,
    /// `current_committed = epa` (an earlier area is always full).
    pub fn enter_previous_area(&mut self) -> Result<(), StoreError> {
        if self.current_committed != 0 {
            return Err(StoreError::NoSuchArea);
        }
        self.current_area = self
            .current_area
            .checked_sub(1)
            .ok_or(StoreError::NoSuchArea)?;
        self.current_committed = self.geom.exceptions_per_area();
        Ok(())
    }

    /// Second half of `persistent_prepare_merge()`: the linear run at the
    /// tail of the committed entries of `area` (the current area's buffer),
    /// at most `limit` long. `Ok(None)` only if nothing is committed.
    pub fn prepare_merge(
        &self,
        area: &[u8],
        limit: NonZeroU32,
    ) -> Result<Option<MergeRun>, StoreError> {
        Ok(linear_tail_of_area(
            self.geom,
            area,
            self.current_committed,
            limit,
        )?)
    }

    /// First half of `persistent_commit_merge(nr)`: clear the last `nr`
    /// committed entries in the area buffer. The caller then writes the
    /// area with PREFLUSH|FUA and, on success, calls [`Self::commit_merge`].
    pub fn clear_merged(&self, area: &mut [u8], nr: u32) -> Result<(), StoreError> {
        let first = self
            .current_committed
            .checked_sub(nr)
            .ok_or(StoreError::MergeTooLarge)?;
        for i in first..self.current_committed {
            clear_entry(self.geom, area, i)?;
        }
        Ok(())
    }

    /// Second half of `persistent_commit_merge(nr)`: `current_committed -= nr`
    /// and `next_free = area_location(current_area) + current_committed + 1`,
    /// the value it would have if everything had been committed in order.
    /// After a complete merge this gives `next_free == 2`, so used ==
    /// metadata == 2 * chunk, which is what LVM waits for.
    pub fn commit_merge(&mut self, nr: u32) -> Result<(), StoreError> {
        let committed = self
            .current_committed
            .checked_sub(nr)
            .ok_or(StoreError::MergeTooLarge)?;
        let loc = self
            .geom
            .area_location(self.current_area)
            .ok_or(StoreError::NoSuchArea)?;
        self.current_committed = committed;
        self.next_free = loc.saturating_add(u64::from(committed)).saturating_add(1);
        Ok(())
    }
}

impl PersistentState {
    /// Commits a merge batch that may span areas: the entries after slot
    /// `committed` of area `area` and everything in later areas are gone.
    /// The cursor moves to `area` (`current_committed = committed`,
    /// `next_free` as in [`Self::commit_merge`]). Fails, changing nothing,
    /// if that is not a shrink of the current list.
    pub fn commit_merge_to(&mut self, area: u64, committed: u32) -> Result<(), StoreError> {
        let shrinks = area < self.current_area
            || (area == self.current_area && committed <= self.current_committed);
        if !shrinks || committed > self.geom.exceptions_per_area() {
            return Err(StoreError::MergeTooLarge);
        }
        let loc = self.geom.area_location(area).ok_or(StoreError::NoSuchArea)?;
        self.current_area = area;
        self.current_committed = committed;
        self.next_free = loc.saturating_add(u64::from(committed)).saturating_add(1);
        Ok(())
    }
}

/// Why loading the exceptions stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError<E> {
    /// The caller's callback (`dm_add_exception`) failed.
    Callback(E),
    /// The area buffer was unusable.
    Area(AreaError),
    /// Validation (see [`Loader::with_validation`]) found a bad entry.
    Corrupt {
        /// Area containing it.
        area: u64,
        /// Slot within the area.
        index: u32,
        /// What is wrong.
        kind: Corruption,
    },
    /// `feed` called after loading finished.
    AlreadyDone,
}

/// Progress of a [`Loader`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadProgress {
    /// The area was full: read area `area` at chunk `location` and feed it.
    NeedArea {
        /// Area index.
        area: u64,
        /// Chunk of that area on the COW.
        location: Chunk,
    },
    /// Loading finished. The last buffer fed is the current area; keep it
    /// as the store's in-memory area so later commits append to it.
    Done(PersistentState),
}

/// `read_exceptions()` as a state machine over caller-read area buffers.
#[derive(Clone, Copy, Debug)]
pub struct Loader {
    state: PersistentState,
    cow_chunks: Option<Chunk>,
    done: bool,
}

impl Loader {
    /// Load exactly as upstream does: no checks on the entries.
    pub const fn new(geom: Geometry) -> Self {
        Self {
            state: PersistentState::new_store(geom),
            cow_chunks: None,
            done: false,
        }
    }

    /// Load with [`check_exception`] applied to every entry and every area
    /// location checked against a COW of `cow_chunks` chunks.
    pub const fn with_validation(geom: Geometry, cow_chunks: Chunk) -> Self {
        Self {
            state: PersistentState::new_store(geom),
            cow_chunks: Some(cow_chunks),
            done: false,
        }
    }

    /// The area to read next: `(index, chunk)`. Area 0 first.
    pub const fn next_read(&self) -> Option<(u64, Chunk)> {
        if self.done {
            return None;
        }
        match self.state.current_area_location() {
            Some(loc) => Some((self.state.current_area, loc)),
            None => None,
        }
    }

    /// Consume area [`Self::next_read`]: call `add(old, new)` for each live
    /// entry (`insert_exceptions()`), track `next_free = max(new + 1)`, and
    /// either ask for the next area (this one was full) or finish with
    /// `current_committed` at the terminator and `skip_metadata()` applied.
    pub fn feed<E, F>(&mut self, area: &[u8], mut add: F) -> Result<LoadProgress, LoadError<E>>
    where
        F: FnMut(Chunk, Chunk) -> Result<(), E>,
    {
        if self.done {
            return Err(LoadError::AlreadyDone);
        }
        let geom = self.state.geom;
        let area_idx = self.state.current_area;
        let mut entries = AreaEntries::new(geom, area).map_err(LoadError::Area)?;
        for ex in entries.by_ref() {
            if let Some(cow_chunks) = self.cow_chunks {
                // Entries are counted only once accepted, so this is the slot.
                let index = self.state.current_committed;
                check_exception(geom, ex, cow_chunks).map_err(|kind| LoadError::Corrupt {
                    area: area_idx,
                    index,
                    kind,
                })?;
            }
            let candidate = ex.new.saturating_add(1);
            if self.state.next_free < candidate {
                self.state.next_free = candidate;
            }
            add(ex.old, ex.new).map_err(LoadError::Callback)?;
            self.state.current_committed = self.state.current_committed.saturating_add(1);
        }
        self.area_done(area_idx, entries.terminated())
    }

    /// [`Self::feed`], with the entries handed to `add_run(old, new, len)`
    /// as maximal runs of consecutive slots whose origin and COW chunks
    /// both go up by one (a sequentially filled area is one run), which
    /// stands for `add(old + i, new + i)` for every `i < len`. Validation
    /// costs one division per run; a run that fails it is checked entry by
    /// entry, so a corruption is reported at the same slot as `feed`
    /// reports it. A run is validated before it is passed on, so an error
    /// of `add_run` for an entry before a corrupt one in the same run is
    /// reported as the corruption, and the valid entries before a corrupt
    /// one are not passed on (the load fails either way).
    pub fn feed_runs<E, F>(&mut self, area: &[u8], mut add_run: F) -> Result<LoadProgress, LoadError<E>>
    where
        F: FnMut(Chunk, Chunk, u32) -> Result<(), E>,
    {
        if self.done {
            return Err(LoadError::AlreadyDone);
        }
        let area_idx = self.state.current_area;
        let mut entries = AreaEntries::new(self.state.geom, area).map_err(LoadError::Area)?;
        let mut run: Option<(DiskException, u32)> = None;
        for ex in entries.by_ref() {
            if let Some((first, len)) = run.as_mut() {
                let step = u64::from(*len);
                if first.old.checked_add(step) == Some(ex.old) && first.new.checked_add(step) == Some(ex.new) {
                    *len = len.saturating_add(1);
                    continue;
                }
                let (first, len) = (*first, *len);
                self.accept_run(area_idx, first, len, &mut add_run)?;
            }
            run = Some((ex, 1));
        }
        if let Some((first, len)) = run {
            self.accept_run(area_idx, first, len, &mut add_run)?;
        }
        self.area_done(area_idx, entries.terminated())
    }

    /// Validates and passes on one run of [`Self::feed_runs`], whose first
    /// entry is slot `current_committed` of area `area_idx`.
    fn accept_run<E, F>(&mut self, area_idx: u64, first: DiskException, len: u32, add_run: &mut F) -> Result<(), LoadError<E>>
    where
        F: FnMut(Chunk, Chunk, u32) -> Result<(), E>,
    {
        let geom = self.state.geom;
        if let Some(cow_chunks) = self.cow_chunks {
            if !run_is_valid(geom, first, len, cow_chunks) {
                let mut index = self.state.current_committed;
                for i in 0..u64::from(len) {
                    let ex = DiskException {
                        old: first.old.wrapping_add(i),
                        new: first.new.wrapping_add(i),
                    };
                    check_exception(geom, ex, cow_chunks).map_err(|kind| LoadError::Corrupt {
                        area: area_idx,
                        index,
                        kind,
                    })?;
                    index = index.saturating_add(1);
                }
            }
        }
        // The slots of one area are consecutive, so `new + len - 1` is a
        // chunk of the area's entries and does not overflow (and saturates
        // if it did).
        let candidate = first.new.saturating_add(u64::from(len));
        if self.state.next_free < candidate {
            self.state.next_free = candidate;
        }
        add_run(first.old, first.new, len).map_err(LoadError::Callback)?;
        self.state.current_committed = self.state.current_committed.saturating_add(len);
        Ok(())
    }

    /// After the entries of area `area_idx`: finish at its terminator, or
    /// move on to the next area.
    fn area_done<E>(&mut self, area_idx: u64, terminated: bool) -> Result<LoadProgress, LoadError<E>> {
        if terminated {
            self.done = true;
            self.state.skip_metadata();
            return Ok(LoadProgress::Done(self.state));
        }
        // Full area: the list continues in the next one.
        let bad = |kind| LoadError::Corrupt {
            area: area_idx.saturating_add(1),
            index: 0,
            kind,
        };
        let (next, location) = self
            .state
            .next_area()
            .ok_or(bad(Corruption::AreaBeyondDevice))?;
        if let Some(cow_chunks) = self.cow_chunks {
            if location >= cow_chunks {
                return Err(bad(Corruption::AreaBeyondDevice));
            }
        }
        self.state.current_area = next;
        self.state.current_committed = 0;
        Ok(LoadProgress::NeedArea {
            area: next,
            location,
        })
    }
}

/// Cursor state of the transient store (`struct transient_c`).
///
/// `next_free` counts sectors from 0: there is no header, so chunk 0 is
/// data, and metadata usage is reported as 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransientState {
    chunk: ChunkSize,
    next_free: Sector,
}

impl TransientState {
    /// Empty transient store.
    pub const fn new(chunk: ChunkSize) -> Self {
        Self {
            chunk,
            next_free: 0,
        }
    }

    /// Next free sector (`tc->next_free`).
    pub const fn next_free(&self) -> Sector {
        self.next_free
    }

    /// `transient_prepare_exception()`: fails if
    /// `cow_sectors < next_free + chunk_size`.
    pub fn prepare_exception(&mut self, cow_sectors: Sector) -> Result<Chunk, NoSpace> {
        let end = self
            .next_free
            .checked_add(u64::from(self.chunk.sectors()))
            .ok_or(NoSpace)?;
        if cow_sectors < end {
            return Err(NoSpace);
        }
        let chunk = self.chunk.sector_to_chunk(self.next_free);
        self.next_free = end;
        Ok(chunk)
    }

    /// Chunks allocated so far (the transient store has no metadata).
    pub const fn data_chunks(&self) -> u64 {
        self.chunk.sector_to_chunk(self.next_free)
    }

    /// `transient_usage()`: `next_free` / COW size / 0.
    pub const fn usage(&self, cow_sectors: Sector) -> Usage {
        Usage {
            sectors_allocated: self.next_free,
            total_sectors: cow_sectors,
            metadata_sectors: 0,
        }
    }
}
