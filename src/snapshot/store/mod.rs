// SPDX-License-Identifier: GPL-2.0

//! Exception stores: persistent (`P`, `PO`; on-disk format of upstream's
//! `dm-snap-persistent.c`) and transient (`N`, memory only).
//!
//! The on-disk arithmetic lives in [`crate::pure`]; this file does the
//! metadata I/O: loading a COW at construction, and the commit worker's
//! area, zero-area and header writes.

use kernel::bindings;
use kernel::c_str;
use kernel::prelude::*;

use crate::dm::bindings::{DMSNAP_REQ_FUA, DMSNAP_REQ_PREFLUSH, DMSNAP_REQ_SYNC};
use crate::dm::bufio::BufioClient;
use crate::dm::dm_io::{DmIoClient, IoBuffer, IoCountdown};
use crate::dm::kcopyd::Region;
use crate::dm::log::{dm_err, dm_warn};
use crate::dm::{BdevHandle, CtrError, DmDev};
use crate::pure::alloc::{LoadError, LoadProgress, Loader, MergeStep, NoSpace, PersistentState, TransientState};
use crate::pure::chunk::{Chunk, ChunkSize, ChunkSizeError, Sector};
use crate::pure::disk::{self, decode_header, DiskException, DiskHeader, Geometry, HeaderError, HeaderState};
use crate::pure::merge::{plan_batch_area, AreaSource, MergeError, MergeRun};
use crate::pure::status::Usage;

use super::table::{BuildError, ExceptionTable, TableBuilder};

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
                    Err(CtrError::inval(c_str!("Couldn't create exception store")))
                }
            },
            // Upstream's transient constructor ignores the rest.
            Some(b'N') => Ok(Self::Transient),
            _ => {
                dm_err!("Exception store type is not P or N");
                Err(CtrError::inval(c_str!("Couldn't create exception store")))
            }
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

/// Allocation and accounting state, kept under the snapshot's state lock.
pub(crate) enum Cursor {
    /// `P`/`PO`.
    Persistent(PersistentState),
    /// `N`.
    Transient(TransientState),
}

impl Cursor {
    /// Allocates a COW chunk for a new exception, given the COW's current
    /// size.
    pub(crate) fn prepare(&mut self, cow_sectors: Sector) -> Result<Chunk, NoSpace> {
        match self {
            Self::Persistent(p) => p.prepare_exception(cow_sectors),
            Self::Transient(t) => t.prepare_exception(cow_sectors),
        }
    }

    /// Usage figures for the status line.
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

fn chunk_error(e: ChunkSizeError) -> CtrError {
    dm_err!("{}", e.message());
    CtrError::inval(c_str!("Couldn't create exception store"))
}

fn read_failed(e: Error) -> CtrError {
    CtrError::new(e, c_str!("Failed to read snapshot metadata"))
}

/// Loads (or, for a zeroed header, initialises) the store on `cow`.
/// `table_chunk` is the table's chunk size in sectors (0: use the on-disk
/// value, or the default for a new persistent store).
///
/// With `refuse_new`, a COW that would be initialised (a zeroed header) is
/// refused before anything is written: no new snapshot of an origin that
/// is being merged into.
pub(crate) fn load(
    kind: StoreKind,
    cow: &DmDev,
    origin: &DmDev,
    table_chunk: u32,
    refuse_new: bool,
) -> Result<Loaded, CtrError> {
    let cow_lbs = cow.logical_block_size();
    let origin_lbs = origin.logical_block_size();
    let cow_sectors = cow.size_sectors();

    if kind == StoreKind::Transient {
        if refuse_new {
            dm_err!("Cannot create a snapshot of an origin that is being merged into");
            return Err(CtrError::new(EBUSY, c_str!("Snapshot origin is merging")));
        }
        if table_chunk == 0 {
            return Err(CtrError::inval(c_str!("Chunk size not set")));
        }
        let chunk = ChunkSize::new(table_chunk, cow_lbs, origin_lbs).map_err(chunk_error)?;
        let table = ExceptionTable::new(chunk.chunks_in(cow_sectors))
            .map_err(|e| CtrError::new(e, c_str!("Unable to allocate hash table space")))?;
        return Ok(Loaded { chunk, cursor: Cursor::Transient(TransientState::new(chunk)), valid: true, table, meta: None });
    }

    let supplied = table_chunk != 0;
    let mut chunk = if supplied {
        ChunkSize::new(table_chunk, cow_lbs, origin_lbs).map_err(chunk_error)?
    } else {
        ChunkSize::persistent_default(cow_lbs, origin_lbs).map_err(chunk_error)?
    };

    let io = DmIoClient::new().map_err(read_failed)?;
    let mut meta = MetadataIo::new(io, cow.handle(), chunk).map_err(read_failed)?;
    meta.read_chunk(0).map_err(read_failed)?;
    let header = match decode_header(meta.area.as_slice()) {
        Ok(h) => h,
        Err(HeaderError::BadMagic(_)) | Err(HeaderError::TooShort) => {
            dm_warn!("Invalid or corrupt snapshot");
            return Err(read_failed(ENXIO));
        }
        Err(e) => {
            dm_err!("{}", e.message());
            return Err(read_failed(EINVAL));
        }
    };

    let header = match header {
        HeaderState::New if refuse_new => {
            dm_err!("Cannot create a snapshot of an origin that is being merged into");
            return Err(CtrError::new(EBUSY, c_str!("Snapshot origin is merging")));
        }
        HeaderState::New => {
            // LVM zeroes only the first 4 KiB: write our header and zero our
            // first area; the rest of the COW may hold anything.
            meta.write_header(true).map_err(|e| {
                dm_warn!("write_header failed");
                read_failed(e)
            })?;
            meta.clear_area();
            let geom = Geometry::new(chunk);
            let area0 = geom.area_location(0).ok_or(read_failed(EINVAL))?;
            meta.write_zero_chunk(area0).map_err(|e| {
                dm_warn!("zero_disk_area(0) failed");
                read_failed(e)
            })?;
            let table = ExceptionTable::new(chunk.chunks_in(cow_sectors))
                .map_err(|e| CtrError::new(e, c_str!("Unable to allocate hash table space")))?;
            let cursor = Cursor::Persistent(PersistentState::new_store(geom));
            return Ok(Loaded { chunk, cursor, valid: true, table, meta: Some(meta) });
        }
        HeaderState::Existing(h) => h,
    };

    if header.chunk_size != chunk.sectors() {
        if supplied {
            dm_warn!(
                "chunk size {} in device metadata overrides table chunk size of {}.",
                header.chunk_size,
                chunk.sectors()
            );
        }
        chunk = match header.validate(cow_lbs, origin_lbs) {
            Ok(c) => c,
            Err(HeaderError::BadChunkSize(n, e)) => {
                dm_err!("invalid on-disk chunk size {}: {}.", n, e.message());
                return Err(read_failed(EINVAL));
            }
            Err(HeaderError::BadVersion(v)) => {
                dm_warn!("unable to handle snapshot disk version {}", v);
                return Err(read_failed(EINVAL));
            }
            Err(e) => {
                dm_err!("{}", e.message());
                return Err(read_failed(EINVAL));
            }
        };
        meta = MetadataIo::new(meta.io, cow.handle(), chunk).map_err(read_failed)?;
    }
    if header.version != disk::SNAPSHOT_DISK_VERSION {
        dm_warn!("unable to handle snapshot disk version {}", header.version);
        return Err(read_failed(EINVAL));
    }

    let geom = Geometry::new(chunk);
    let table = ExceptionTable::new(chunk.chunks_in(cow_sectors))
        .map_err(|e| CtrError::new(e, c_str!("Unable to allocate hash table space")))?;
    if !header.valid {
        // As upstream: load the table with the snapshot invalid, without
        // reading the exceptions.
        let cursor = Cursor::Persistent(PersistentState::new_store(geom));
        return Ok(Loaded { chunk, cursor, valid: false, table, meta: Some(meta) });
    }

    let cow_chunks = chunk.chunks_in(cow_sectors);
    let mut loader = Loader::with_validation(geom, cow_chunks);
    // COW chunks already claimed by an entry: two entries sharing one would
    // let one snapshot chunk overwrite another. One bit per COW chunk, only
    // while loading (entries past the device are rejected before this).
    let mut used = ChunkBitmap::new(cow_chunks);
    // Exceptions are appended in disk order and sorted per bucket once all
    // are read (a duplicate origin chunk is found then).
    let mut builder = TableBuilder::new(table);
    // Areas are read through dm-bufio, the next `window` areas in flight
    // (submitted in batches), so loading a large store is not one
    // synchronous read after another.
    let window = prefetch_window(chunk.bytes());
    let batch = (window / 4).max(1);
    // SAFETY: `cow` is held for the whole constructor; the client is
    // dropped before this function returns.
    let bufio = unsafe { BufioClient::new(cow.handle(), chunk.bytes(), window + 1) }.map_err(read_failed)?;
    let mut area: u64 = 0;
    let mut prefetched: u64 = 0;
    let state = loop {
        let location = geom.area_location(area).ok_or(read_failed(EINVAL))?;
        // Areas before `prefetched` have been submitted; top the window up
        // once `batch` of them have been consumed.
        if prefetched <= area + u64::from(window.saturating_sub(batch)) {
            let upto = area + u64::from(window);
            let from = prefetched;
            prefetched = upto + 1;
            bufio.prefetch_batch(
                (from..=upto).filter_map(|a| geom.area_location(a)).filter(|l| *l < cow_chunks),
            );
        }
        let progress = bufio
            .read(location, |bytes| {
                // Exceptions arrive as runs (a sequentially filled area is
                // one), so each costs a few instructions, not a table push.
                let progress = loader.feed_runs(bytes, |old, new, len| {
                    if used.test_and_set_range(new, len) {
                        return Err(EUCLEAN_SHARED);
                    }
                    builder.add_run(old, new, len).map_err(|e| match e {
                        BuildError::Duplicate => EUCLEAN_DUPLICATE,
                        BuildError::NoMem => ENOMEM_MARK,
                    })
                });
                // Keep the last area: commits append to it.
                if let Ok(LoadProgress::Done(_)) = progress {
                    if let Some(dst) = meta.area.as_mut_slice().get_mut(..bytes.len()) {
                        dst.copy_from_slice(bytes);
                    }
                }
                progress
            })
            .map_err(read_failed)?;
        // Read once: free the buffer now (as upstream), so the load never
        // holds more than the prefetch window and the pages are reused.
        bufio.forget(location);
        match progress {
            Ok(LoadProgress::NeedArea { area: next, .. }) => area = next,
            Ok(LoadProgress::Done(state)) => break state,
            Err(LoadError::Callback(e)) if e == EUCLEAN_DUPLICATE => {
                dm_err!("Corrupt snapshot metadata: duplicate exception for one origin chunk");
                return Err(read_failed(EINVAL));
            }
            Err(LoadError::Callback(e)) if e == EUCLEAN_SHARED => {
                dm_err!("Corrupt snapshot metadata: two exceptions share one COW chunk");
                return Err(read_failed(EINVAL));
            }
            Err(LoadError::Callback(_)) => return Err(read_failed(ENOMEM)),
            Err(LoadError::Corrupt { area, index, kind }) => {
                dm_err!("Corrupt snapshot metadata in area {} slot {}: {}", area, index, kind.message());
                return Err(read_failed(EINVAL));
            }
            Err(_) => {
                dm_err!("Corrupt snapshot metadata: unreadable area");
                return Err(read_failed(EINVAL));
            }
        }
    };
    drop(used);
    drop(bufio);
    let table = match builder.finish() {
        Ok(t) => t,
        Err(BuildError::Duplicate) => {
            dm_err!("Corrupt snapshot metadata: duplicate exception for one origin chunk");
            return Err(read_failed(EINVAL));
        }
        Err(BuildError::NoMem) => return Err(read_failed(ENOMEM)),
    };
    // The last area read is the current one: commits append to it.
    Ok(Loaded { chunk, cursor: Cursor::Persistent(state), valid: true, table, meta: Some(meta) })
}

/// Exception areas read ahead while loading. Upstream keeps 12
/// (`DM_PREFETCH_CHUNKS`) whatever the chunk size; small areas are cheap,
/// so up to [`PREFETCH_BYTES`] of them (at most 64) are kept in flight.
/// With 4 KiB chunks (256 exceptions an area) that is 64 areas.
const PREFETCH_MIN_AREAS: u32 = 12;
const PREFETCH_MAX_AREAS: u32 = 64;
const PREFETCH_BYTES: usize = 256 << 10;

fn prefetch_window(chunk_bytes: usize) -> u32 {
    let areas = PREFETCH_BYTES / chunk_bytes.max(1);
    u32::try_from(areas).unwrap_or(PREFETCH_MAX_AREAS).clamp(PREFETCH_MIN_AREAS, PREFETCH_MAX_AREAS)
}

/// Marker errors of the load callback.
const EUCLEAN_DUPLICATE: u8 = 1;
const ENOMEM_MARK: u8 = 2;
const EUCLEAN_SHARED: u8 = 3;

/// One bit per COW chunk, vmalloc'ed. Above 64 MiB of bitmap (a COW of
/// 2^29 chunks) the check is skipped rather than risk the allocation.
struct ChunkBitmap {
    words: Option<kernel::alloc::VVec<u64>>,
}

impl ChunkBitmap {
    fn new(chunks: u64) -> Self {
        let n = chunks.div_ceil(64);
        let words = usize::try_from(n)
            .ok()
            .filter(|n| *n <= (64 << 20) / 8)
            .and_then(|n| kernel::alloc::VVec::from_elem(0u64, n, GFP_KERNEL).ok());
        Self { words }
    }

    /// Sets the bits of chunks `first .. first + len`; returns whether any
    /// was already set. Chunks past the bitmap are not tracked.
    fn test_and_set_range(&mut self, first: Chunk, len: u32) -> bool {
        let Some(words) = self.words.as_mut() else {
            return false;
        };
        let mut was = false;
        let (mut chunk, mut left) = (first, u64::from(len));
        while left > 0 {
            let Some(word) = usize::try_from(chunk / 64).ok().and_then(|i| words.get_mut(i)) else {
                return was;
            };
            let bit = chunk % 64;
            let n = left.min(64 - bit);
            // `n` bits from `bit` up: n <= 64 - bit.
            let mask = (u64::MAX >> (64 - n)) << bit;
            was |= *word & mask != 0;
            *word |= mask;
            left -= n;
            chunk = chunk.saturating_add(n);
        }
        was
    }
}

/// Metadata I/O of a persistent store. Used by the constructor, then only
/// by the snapshot's commit worker (one at a time).
pub(crate) struct MetadataIo {
    io: DmIoClient,
    cow: BdevHandle,
    chunk: ChunkSize,
    /// The current metadata area (one chunk), as it is on disk plus the
    /// entries committed since.
    area: IoBuffer,
    /// Zeroes or the header, for writes of whole chunks.
    scratch: IoBuffer,
}

impl MetadataIo {
    fn new(io: DmIoClient, cow: BdevHandle, chunk: ChunkSize) -> Result<Self> {
        let area = IoBuffer::new(chunk.bytes())?;
        let scratch = IoBuffer::new(chunk.bytes())?;
        Ok(Self { io, cow, chunk, area, scratch })
    }

    fn region(&self, chunk: Chunk) -> Result<Region> {
        let sector = self.chunk.chunk_to_sector(chunk).ok_or(EINVAL)?;
        Ok(Region::new(self.cow, sector, u64::from(self.chunk.sectors())))
    }

    /// Reads one chunk of the COW into the area buffer.
    pub(crate) fn read_chunk(&mut self, chunk: Chunk) -> Result {
        let region = self.region(chunk)?;
        self.io.sync_io(&region, bindings::req_op_REQ_OP_READ, &mut self.area)
    }

    fn clear_area(&mut self) {
        self.area.as_mut_slice().fill(0);
    }

    fn write_zero_chunk(&mut self, chunk: Chunk) -> Result {
        self.scratch.as_mut_slice().fill(0);
        let region = self.region(chunk)?;
        self.io.sync_io(&region, bindings::req_op_REQ_OP_WRITE, &mut self.scratch)
    }

    /// Writes the header chunk (`write_header()`), marking the snapshot
    /// valid or invalid. FUA, so an invalidation survives a crash.
    pub(crate) fn write_header(&mut self, valid: bool) -> Result {
        let mut header = DiskHeader::new_valid(self.chunk);
        header.valid = valid;
        header.encode(self.scratch.as_mut_slice()).map_err(|_| EINVAL)?;
        let region = self.region(0)?;
        self.io.sync_io(&region, bindings::req_op_REQ_OP_WRITE | DMSNAP_REQ_FUA, &mut self.scratch)
    }

    /// Records a committed exception in slot `index` of the area buffer.
    pub(crate) fn set_entry(&mut self, index: u32, old: Chunk, new: Chunk) -> Result {
        let geom = Geometry::new(self.chunk);
        disk::write_entry(geom, self.area.as_mut_slice(), index, DiskException { old, new }).map_err(|_| EINVAL)
    }

    /// Writes the area buffer at `location` with PREFLUSH (`area_io()`):
    /// the flush makes the COW data copied before it durable first. With
    /// `fua` the area itself is durable on return; without, only after the
    /// next flush of the COW (the caller's business). If the area is full,
    /// `zero_next` names the next area, which is zeroed first so a reader
    /// finds its terminator.
    pub(crate) fn write_area(&mut self, location: Chunk, zero_next: Option<Chunk>, fua: bool) -> Result {
        if let Some(next) = zero_next {
            self.write_zero_chunk(next)?;
        }
        let region = self.region(location)?;
        let mut op = bindings::req_op_REQ_OP_WRITE | DMSNAP_REQ_PREFLUSH | DMSNAP_REQ_SYNC;
        if fua {
            op |= DMSNAP_REQ_FUA;
        }
        self.io.sync_io(&region, op, &mut self.area)
    }

    /// Starts a fresh, empty area buffer (after a full area was written).
    pub(crate) fn next_area(&mut self) {
        self.clear_area();
    }
}

/// Metadata areas one merge batch may span, the current one included.
const MERGE_BATCH_AREAS: usize = 16;

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
                        .sync_io(&region, bindings::req_op_REQ_OP_READ, &mut planner.area)
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
        let taken = plan_batch_area(&src, committed as usize, limit, budget, |run| {
            if runs.len() >= max_runs {
                return false;
            }
            let ok = runs.push(run, GFP_KERNEL).is_ok();
            oom |= !ok;
            ok
        })?;
        let current_keep = committed.saturating_sub(taken as u32);
        let mut budget = budget.saturating_sub(taken as u64);
        let mut end = (p.current_area(), current_keep);
        let mut areas: KVec<BatchArea> = KVec::new();
        let location = p.current_area_location().ok_or(MergePlanError::Corrupt)?;
        areas.push(BatchArea { location, buf: clone_buffer(area)?, keep: current_keep }, GFP_KERNEL)
            .map_err(|_| MergePlanError::NoMemory)?;
        let epa = geom.exceptions_per_area();
        // Earlier areas are full, each with `epa` entries: read as many as
        // the budget may reach, all at once, if this one is used up.
        let wanted = if end.1 == 0 && runs.len() < max_runs && !oom {
            budget.div_ceil(u64::from(epa.max(1))).min(end.0).min(MERGE_BATCH_AREAS as u64 - 1)
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
            let taken = plan_batch_area(&src, epa as usize, limit, budget, |run| {
                if runs.len() >= max_runs {
                    return false;
                }
                let ok = runs.push(run, GFP_KERNEL).is_ok();
                oom |= !ok;
                ok
            })?;
            if taken == 0 {
                break;
            }
            let keep = epa.saturating_sub(taken as u32);
            areas.push(BatchArea { location, buf, keep }, GFP_KERNEL).map_err(|_| MergePlanError::NoMemory)?;
            budget = budget.saturating_sub(taken as u64);
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
        let countdown = IoCountdown::new().map_err(|_| MergePlanError::NoMemory)?;
        let mut started = Ok(());
        for (_, location, buf) in areas.iter_mut() {
            started = self.region(*location).and_then(|region| {
                // SAFETY: `countdown.wait()` below returns once every read
                // completed; until then the buffers are borrowed here (the
                // vector does not grow), and the COW stays open (held by
                // the caller's core until its merge stopped).
                unsafe { self.io.start(&region, bindings::req_op_REQ_OP_READ, buf, 0, &countdown) }
            });
            if started.is_err() {
                break;
            }
        }
        let ok = countdown.wait();
        if started.is_err() || !ok {
            return Err(MergePlanError::Read);
        }
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
        let op = bindings::req_op_REQ_OP_WRITE | DMSNAP_REQ_SYNC;
        let countdown = IoCountdown::new()?;
        let mut started = Ok(());
        for area in batch.areas.iter_mut() {
            started = self.region(area.location).and_then(|region| {
                // SAFETY: `countdown.wait()` below returns once every
                // request completed; until then the buffers are borrowed
                // here (the vector does not change), and the COW stays
                // open (held by the caller's core until its merge stopped).
                unsafe { self.io.start(&region, op, &mut area.buf, 0, &countdown) }
            });
            if started.is_err() {
                break;
            }
        }
        let ok = countdown.wait();
        started?;
        if !ok {
            return Err(EIO);
        }
        if let Some(last) = batch.areas.last_mut() {
            core::mem::swap(&mut self.area, &mut last.buf);
        }
        Ok(())
    }
}
