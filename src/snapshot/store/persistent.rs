// SPDX-License-Identifier: GPL-2.0

//! The persistent store (`P`, `PO`; upstream's `dm-snap-persistent.c`):
//! the metadata I/O ([`MetadataIo`]: header, areas, zeroed areas) and the
//! commit bookkeeping of the current area ([`reserve_slot`],
//! [`AreaBatch`], [`MetadataIo::write_batch`], [`batch_written`]).
//!
//! Loading is in [`super::load::load_persistent`], merging in [`super::merge_plan`]; the
//! cursor arithmetic (`struct pstore`) is [`PersistentState`].

use kernel::prelude::*;

use crate::dm::HeldDev;
use crate::dm::dm_io::{DmIoClient, IoBuffer, IoOp};
use crate::dm::kcopyd::HeldRegion;
use crate::pure::alloc::PersistentState;
use crate::pure::chunk::{Chunk, ChunkSize};
use crate::pure::disk::{self, DiskException, DiskHeader, Geometry};

/// Metadata I/O of a persistent store. Used by the constructor, then only
/// by the snapshot's commit and merge workers (one at a time, under the
/// snapshot's metadata lock).
pub(crate) struct MetadataIo {
    pub(super) io: DmIoClient,
    cow: HeldDev,
    pub(super) chunk: ChunkSize,
    /// The current metadata area (one chunk), as it is on disk plus the
    /// entries committed since.
    pub(super) area: IoBuffer,
    /// Zeroes or the header, for writes of whole chunks.
    scratch: IoBuffer,
}

impl MetadataIo {
    pub(super) fn new(io: DmIoClient, cow: HeldDev, chunk: ChunkSize) -> Result<Self> {
        let area = IoBuffer::new(chunk.bytes())?;
        let scratch = IoBuffer::new(chunk.bytes())?;
        Ok(Self { io, cow, chunk, area, scratch })
    }

    /// The same I/O client and COW with another chunk size (the on-disk
    /// one overriding the table's); the buffers are allocated afresh.
    pub(super) fn with_chunk(self, chunk: ChunkSize) -> Result<Self> {
        Self::new(self.io, self.cow, chunk)
    }

    /// The COW region of chunk `chunk`.
    pub(super) fn region(&self, chunk: Chunk) -> Result<HeldRegion> {
        let sector = self.chunk.chunk_to_sector(chunk).ok_or(EINVAL)?;
        Ok(self.cow.region(sector, u64::from(self.chunk.sectors())))
    }

    /// Reads one chunk of the COW into the area buffer.
    pub(crate) fn read_chunk(&mut self, chunk: Chunk) -> Result {
        let region = self.region(chunk)?;
        self.io.sync_io_held(&region, IoOp::READ, &mut self.area)
    }

    /// Zeroes the area buffer.
    pub(super) fn clear_area(&mut self) {
        self.area.as_mut_slice().fill(0);
    }

    /// Writes zeroes over COW chunk `chunk` (`zero_disk_area()`).
    pub(super) fn write_zero_chunk(&mut self, chunk: Chunk) -> Result {
        self.scratch.as_mut_slice().fill(0);
        let region = self.region(chunk)?;
        self.io.sync_io_held(&region, IoOp::WRITE, &mut self.scratch)
    }

    /// Writes the header chunk (`write_header()`), marking the snapshot
    /// valid or invalid. FUA, so an invalidation survives a crash.
    pub(crate) fn write_header(&mut self, valid: bool) -> Result {
        let mut header = DiskHeader::new_valid(self.chunk);
        header.valid = valid;
        header.encode(self.scratch.as_mut_slice()).map_err(|_| EINVAL)?;
        let region = self.region(0)?;
        self.io.sync_io_held(&region, IoOp::WRITE.fua(), &mut self.scratch)
    }

    /// `drop_snapshot` (`persistent_drop_snapshot()`): marks the snapshot
    /// invalid on disk, durably.
    pub(crate) fn drop_snapshot(&mut self) -> Result {
        self.write_header(false)
    }

    /// Records a committed exception in slot `index` of the area buffer.
    fn set_entry(&mut self, index: u32, old: Chunk, new: Chunk) -> Result {
        let geom = Geometry::new(self.chunk);
        disk::write_entry(geom, self.area.as_mut_slice(), index, DiskException { old, new }).map_err(|_| EINVAL)
    }

    /// Writes the area buffer at `location` with PREFLUSH (`area_io()`):
    /// the flush makes the COW data copied before it durable first. With
    /// `fua` the area itself is durable on return; without, only after the
    /// next flush of the COW (the caller's business). If the area is full,
    /// `zero_next` names the next area, which is zeroed first so a reader
    /// finds its terminator.
    fn write_area(&mut self, location: Chunk, zero_next: Option<Chunk>, fua: bool) -> Result {
        if let Some(next) = zero_next {
            self.write_zero_chunk(next)?;
        }
        let region = self.region(location)?;
        let op = IoOp::WRITE.preflush().sync();
        self.io.sync_io_held(&region, if fua { op.fua() } else { op }, &mut self.area)
    }

    /// Starts a fresh, empty area buffer (after a full area was written).
    pub(crate) fn next_area(&mut self) {
        self.clear_area();
    }
}

/// What [`reserve_slot`] did with an exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotReservation {
    /// A transient store: committed in memory, nothing to write.
    InMemory,
    /// Recorded in the batch; the area has room for more.
    Reserved,
    /// Recorded in the batch, in the area's last slot: the batch is
    /// complete and must be written before anything else is reserved.
    FillsArea,
}

/// One entry of an [`AreaBatch`]: slot `index` of the area maps `old` to
/// `new`.
#[derive(Clone, Copy)]
struct SlotEntry {
    index: u32,
    old: Chunk,
    new: Chunk,
}

/// The exceptions one metadata-area write commits: slots of the current
/// area reserved by [`reserve_slot`] (under the state lock), written by
/// [`MetadataIo::write_batch`] (under the metadata lock). A batch never
/// spans two areas: the slot that fills an area ends it.
pub(crate) struct AreaBatch {
    entries: KVec<SlotEntry>,
    /// The area the slots are in; `None` while nothing is reserved.
    location: Option<Chunk>,
    /// Set by the slot that filled the area: the next area, zeroed on
    /// disk before this one is written.
    zero_next: Option<Chunk>,
}

impl AreaBatch {
    /// An empty batch (allocates nothing).
    pub(crate) const fn new() -> Self {
        Self { entries: KVec::new(), location: None, zero_next: None }
    }

    /// Whether no slot is reserved (nothing to write).
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the batch filled its area (no further slot may be added).
    pub(crate) fn fills_area(&self) -> bool {
        self.zero_next.is_some()
    }
}

/// `commit_exception`, first half (`persistent_commit_exception()` up to
/// the write): takes the next slot of the current area for `old -> new`
/// and records it in `batch`. Fails, changing nothing, if the entry
/// cannot be recorded (no memory), if `batch` already filled its area or
/// holds another area's slots, or if the cursor is absurd; the caller
/// then fails the exception, and no slot is left empty mid-area (which a
/// reader would take for the end of the list).
pub(super) fn reserve_slot(
    p: &mut PersistentState,
    batch: &mut AreaBatch,
    old: Chunk,
    new: Chunk,
) -> Result<SlotReservation> {
    let location = p.current_area_location().ok_or(EINVAL)?;
    if batch.fills_area() || batch.location.is_some_and(|l| l != location) {
        return Err(EINVAL);
    }
    // The slot that fills the area needs the next one to zero.
    let fills = p.current_committed().checked_add(1) == Some(p.geometry().exceptions_per_area());
    let zero_next = if fills { Some(p.next_area().ok_or(EINVAL)?.1) } else { None };
    // Room first, so that recording the entry below cannot fail after the
    // slot is taken.
    batch.entries.reserve(1, GFP_KERNEL)?;
    let slot = p.commit_slot().map_err(|_| EINVAL)?;
    batch.entries.push(SlotEntry { index: slot.index, old, new }, GFP_KERNEL)?;
    batch.location = Some(location);
    if slot.area_full {
        batch.zero_next = zero_next;
        return Ok(SlotReservation::FillsArea);
    }
    Ok(SlotReservation::Reserved)
}

/// `commit_exception`, last step: after [`MetadataIo::write_batch`]
/// returned, whether or not it succeeded, the cursor moves on to the next
/// area if `batch` filled the current one (the area buffer was started
/// afresh by `write_batch`).
pub(super) fn batch_written(p: &mut PersistentState, batch: &AreaBatch) {
    if batch.fills_area() {
        p.advance_area();
    }
}

/// How far a written [`AreaBatch`] is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BatchWritten {
    /// Durable on return (written with FUA, or nothing to write).
    Durable,
    /// Durable after the next flush of the COW (the PREFLUSH of the next
    /// area write, or an explicit flush): the caller completes its
    /// exceptions only then.
    AwaitsFlush,
}

impl MetadataIo {
    /// `commit_exception`, the write: records `batch`'s entries in the area
    /// buffer and writes the area with PREFLUSH (which makes the COW data
    /// copied before durable first), with FUA if `fua`. If the batch filled
    /// the area, the next area is zeroed on disk first, and the area buffer
    /// is started afresh whatever the outcome; the caller then calls
    /// [`super::Cursor::batch_written`]. An empty batch writes nothing.
    pub(crate) fn write_batch(&mut self, batch: &AreaBatch, fua: bool) -> Result<BatchWritten> {
        let Some(location) = batch.location else {
            return Ok(BatchWritten::Durable);
        };
        let written = self.record_and_write(batch, location, fua);
        if batch.fills_area() {
            self.next_area();
        }
        written?;
        Ok(if fua { BatchWritten::Durable } else { BatchWritten::AwaitsFlush })
    }

    /// [`Self::write_batch`] up to the write.
    fn record_and_write(&mut self, batch: &AreaBatch, location: Chunk, fua: bool) -> Result {
        for e in batch.entries.iter() {
            self.set_entry(e.index, e.old, e.new)?;
        }
        self.write_area(location, batch.zero_next, fua)
    }
}
