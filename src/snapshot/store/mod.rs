// SPDX-License-Identifier: GPL-2.0

//! Exception stores: persistent (`P`, `PO`; on-disk format of upstream's
//! `dm-snap-persistent.c`) and transient (`N`, memory only), behind one
//! seam, as C's `struct dm_exception_store_type`.
//!
//! The on-disk arithmetic lives in [`crate::pure`]; these files do the
//! metadata I/O: loading a COW at construction, the commit worker's area,
//! zero-area and header writes, and the merge's batches.
//!
//! # The seam
//!
//! | `dm_exception_store_type` | here |
//! |---|---|
//! | `ctr` + `read_metadata` | [`load()`] (dispatches on [`StoreKind`]) |
//! | `prepare_exception` | [`Cursor::prepare`] |
//! | `commit_exception` | [`Cursor::reserve_slot`] into an [`AreaBatch`], [`MetadataIo::write_batch`], [`Cursor::batch_written`] |
//! | `prepare_merge` | [`Cursor::merge_start`], [`MetadataIo::merge_planner`], [`MetadataIo::plan_merge_batch`] |
//! | `commit_merge` | [`MetadataIo::commit_merge_batch`], then [`Cursor::commit_merge`] |
//! | `drop_snapshot` | [`MetadataIo::drop_snapshot`] (the transient store has none, as upstream's) |
//! | `usage` | [`Cursor::usage`] |
//!
//! The seam is an enum, [`Cursor`], with one variant per store, not a
//! trait: there are exactly two stores, both known here, so a `match`
//! dispatches statically, without `dyn` (and without the boxing a trait
//! object would need in the kernel); the core already matched on the
//! variant to refuse merging a transient store. Each store keeps its own
//! code in its own file ([`persistent`], [`transient`]); the `match` arms
//! here only forward.
//!
//! Each store is split in two halves because the snapshot keeps them under
//! two locks: the allocation cursor ([`Cursor`]) sits in the snapshot's
//! state, under the state lock, where `map` allocates chunks; the
//! persistent store's metadata I/O ([`MetadataIo`]) sits under its own
//! lock, which the commit and merge workers hold across synchronous I/O
//! without blocking `map`. The lock order is metadata, then state. A
//! transient store has no metadata half (`None`).

use kernel::prelude::*;

use crate::dm::log::dm_err;
use crate::dm::{CtrError, DmDev, HeldDev};
use crate::pure::alloc::{NoSpace, PersistentState, TransientState};
use crate::pure::chunk::{Chunk, ChunkSize, Sector};
use crate::pure::status::Usage;

use super::table::ExceptionTable;

mod load;
mod merge_plan;
mod persistent;
mod transient;

pub(crate) use merge_plan::{MergeBatch, MergePlanError, MergePlanner};
pub(crate) use persistent::{AreaBatch, BatchWritten, SlotReservation};
pub(crate) use persistent::MetadataIo;

/// The store type from the table line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StoreKind {
    /// `P` (`overflow == false`) or `PO`.
    Persistent {
        /// `PO`: a full COW marks the snapshot overflowed instead of invalid.
        overflow: bool,
    },
    /// `N`.
    Transient,
}

impl StoreKind {
    /// Parses the store argument like upstream: the first letter, any case,
    /// decides the type; for `P` the rest may start with `O`.
    pub(crate) fn parse(arg: &[u8]) -> Result<Self, CtrError> {
        match arg.first().map(u8::to_ascii_uppercase) {
            Some(b'P') => match arg.get(1).map(u8::to_ascii_uppercase) {
                None => Ok(Self::Persistent { overflow: false }),
                Some(b'O') => Ok(Self::Persistent { overflow: true }),
                Some(_) => {
                    dm_err!("Unsupported persistent store option: {}", Bytes(arg.get(1..).unwrap_or(&[])));
                    Err(CtrError::inval(c"Couldn't create exception store"))
                }
            },
            // Upstream's transient constructor ignores the rest.
            Some(b'N') => Ok(Self::Transient),
            _ => {
                dm_err!("Exception store type is not P or N");
                Err(CtrError::inval(c"Couldn't create exception store"))
            }
        }
    }

    /// The type a table line shows when a table that asked for `self`
    /// serves a store that is `persistent` or not: the store's own type
    /// (upstream swaps the live store into the new table on a handover),
    /// with the table's overflow flag for a persistent one.
    pub(crate) fn shown_over(self, persistent: bool) -> Self {
        match (self, persistent) {
            (_, false) => Self::Transient,
            (Self::Transient, true) => Self::Persistent { overflow: false },
            (asked, true) => asked,
        }
    }

    /// The table-line spelling.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Persistent { overflow: false } => "P",
            Self::Persistent { overflow: true } => "PO",
            Self::Transient => "N",
        }
    }
}

/// Prints bytes as text, replacing anything non-printable.
struct Bytes<'a>(&'a [u8]);

impl core::fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for &b in self.0 {
            let c = if b.is_ascii_graphic() { b as char } else { '?' };
            core::fmt::Write::write_char(f, c)?;
        }
        Ok(())
    }
}

/// Allocation and accounting state, kept under the snapshot's state lock:
/// the seam's per-store half that `map` and the workers share.
pub(crate) enum Cursor {
    /// `P`/`PO`.
    Persistent(PersistentState),
    /// `N`.
    Transient(TransientState),
}

impl Cursor {
    /// `prepare_exception`: allocates a COW chunk for a new exception,
    /// given the COW's current size.
    pub(crate) fn prepare(&mut self, cow_sectors: Sector) -> Result<Chunk, NoSpace> {
        match self {
            Self::Persistent(p) => p.prepare_exception(cow_sectors),
            Self::Transient(t) => t.prepare_exception(cow_sectors),
        }
    }

    /// `commit_exception`, first half: reserves the store's record of the
    /// finished exception `old -> new` in `batch` (for the persistent
    /// store, the next slot of the current metadata area). The exception
    /// is committed once `batch` is written ([`MetadataIo::write_batch`]);
    /// a transient store commits it in memory, with nothing to write.
    /// Fails, reserving nothing, if no slot could be recorded.
    pub(crate) fn reserve_slot(&mut self, batch: &mut AreaBatch, old: Chunk, new: Chunk) -> Result<SlotReservation> {
        match self {
            Self::Persistent(p) => persistent::reserve_slot(p, batch, old, new),
            Self::Transient(_) => Ok(SlotReservation::InMemory),
        }
    }

    /// `commit_exception`, second half: after [`MetadataIo::write_batch`]
    /// returned (whether or not it succeeded), moves the cursor on to the
    /// next area if `batch` filled the current one.
    pub(crate) fn batch_written(&mut self, batch: &AreaBatch) {
        if let Self::Persistent(p) = self {
            persistent::batch_written(p, batch);
        }
    }

    /// Free slots in the current metadata area (`None`: a transient store,
    /// which has no areas).
    pub(crate) fn area_room(&self) -> Option<u32> {
        match self {
            Self::Persistent(p) => Some(p.geometry().exceptions_per_area().saturating_sub(p.current_committed())),
            Self::Transient(_) => None,
        }
    }

    /// Whether the store can be merged (only a persistent one can).
    pub(crate) fn can_merge(&self) -> bool {
        matches!(self, Self::Persistent(_))
    }

    /// `prepare_merge`, start: the committed state a merge plans from
    /// ([`MetadataIo::merge_planner`]); `None` for a transient store.
    pub(crate) fn merge_start(&self) -> Option<PersistentState> {
        match self {
            Self::Persistent(p) => Some(*p),
            Self::Transient(_) => None,
        }
    }

    /// `commit_merge`, in memory: after [`MetadataIo::commit_merge_batch`]
    /// wrote `batch`, the list ends where the batch says. Fails, changing
    /// nothing, for a transient store or if that is not a shrink.
    pub(crate) fn commit_merge(&mut self, batch: &MergeBatch) -> Result {
        match self {
            Self::Persistent(p) => p.commit_merge_to(batch.end.0, batch.end.1).map_err(|_| EINVAL),
            Self::Transient(_) => Err(EINVAL),
        }
    }

    /// The exceptions the store holds (allocated data chunks), committed
    /// or not: the status line's used count without the metadata.
    pub(crate) fn data_chunks(&self) -> u64 {
        match self {
            Self::Persistent(p) => p.data_chunks(),
            Self::Transient(t) => t.data_chunks(),
        }
    }

    /// `usage`: the figures for the status line.
    pub(crate) fn usage(&self, cow_sectors: Sector) -> Usage {
        match self {
            Self::Persistent(p) => p.usage(cow_sectors),
            Self::Transient(t) => t.usage(cow_sectors),
        }
    }
}

/// A store as loaded by the constructor.
pub(crate) struct Loaded {
    pub(crate) chunk: ChunkSize,
    pub(crate) cursor: Cursor,
    /// The on-disk header says the snapshot was invalidated.
    pub(crate) valid: bool,
    pub(crate) table: ExceptionTable,
    /// Metadata I/O state; `None` for transient stores.
    pub(crate) meta: Option<MetadataIo>,
}

/// Checks a table's chunk size against both devices as upstream's store
/// constructor does, before any handover check (0: taken from the store).
pub(crate) fn check_table_chunk(table_chunk: u32, cow: &DmDev, origin: &DmDev) -> Result<(), CtrError> {
    if table_chunk != 0 {
        ChunkSize::new(table_chunk, cow.logical_block_size(), origin.logical_block_size()).map_err(chunk_error)?;
    }
    Ok(())
}

/// The constructor's error for a chunk size the devices refuse.
fn chunk_error(e: crate::pure::chunk::ChunkSizeError) -> CtrError {
    dm_err!("{}", e.message());
    CtrError::inval(c"Couldn't create exception store")
}

/// The constructor's error for a refused new snapshot of a merging origin.
fn origin_merging() -> CtrError {
    dm_err!("Cannot create a snapshot of an origin that is being merged into");
    CtrError::new(EBUSY, c"Snapshot origin is merging")
}

/// An exception table for a COW of `cow_sectors`.
fn new_table(chunk: ChunkSize, cow_sectors: Sector) -> Result<ExceptionTable, CtrError> {
    ExceptionTable::new(chunk.chunks_in(cow_sectors))
        .map_err(|e| CtrError::new(e, c"Unable to allocate hash table space"))
}

/// `ctr` + `read_metadata`: loads (or, for a zeroed header, initialises)
/// the store on `cow`. `table_chunk` is the table's chunk size in sectors
/// (0: use the on-disk value, or the default for a new persistent store).
///
/// With `refuse_new`, a COW that would be initialised (a zeroed header, or
/// any transient store) is refused before anything is written: no new
/// snapshot of an origin that is being merged into.
pub(crate) fn load(
    kind: StoreKind,
    cow: &DmDev,
    held_cow: HeldDev,
    origin: &DmDev,
    table_chunk: u32,
    refuse_new: bool,
) -> Result<Loaded, CtrError> {
    match kind {
        StoreKind::Transient => transient::load(cow, origin, table_chunk, refuse_new),
        StoreKind::Persistent { .. } => load::load_persistent(cow, held_cow, origin, table_chunk, refuse_new),
    }
}
