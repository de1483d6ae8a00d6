// SPDX-License-Identifier: GPL-2.0

//! Loading a persistent store (`persistent_read_metadata()`): the header,
//! then the exception areas through dm-bufio with read-ahead, into the
//! exception table.

use kernel::prelude::*;

use crate::dm::bufio::BufioClient;
use crate::dm::dm_io::DmIoClient;
use crate::dm::log::{dm_err, dm_warn};
use crate::dm::{CtrError, DmDev, HeldDev};
use crate::pure::alloc::{LoadError, LoadProgress, Loader, PersistentState};
use crate::pure::chunk::{Chunk, ChunkSize};
use crate::pure::disk::{self, decode_header, Geometry, HeaderError, HeaderState, DISK_EXCEPTION_SIZE};
use crate::snapshot::table::{BuildError, TableBuilder};

use super::persistent::MetadataIo;
use super::{chunk_error, new_table, origin_merging, Cursor, Loaded};

/// The constructor's error for unreadable or unusable metadata.
fn read_failed(e: Error) -> CtrError {
    CtrError::new(e, c"Failed to read snapshot metadata")
}

/// Loads (or, for a zeroed header, initialises) the persistent store on
/// `cow`; see [`super::load()`].
pub(super) fn load_persistent(
    cow: &DmDev,
    held_cow: HeldDev,
    origin: &DmDev,
    table_chunk: u32,
    refuse_new: bool,
) -> Result<Loaded, CtrError> {
    let cow_lbs = cow.logical_block_size();
    let origin_lbs = origin.logical_block_size();
    let cow_sectors = cow.size_sectors();

    let supplied = table_chunk != 0;
    let mut chunk = if supplied {
        ChunkSize::new(table_chunk, cow_lbs, origin_lbs).map_err(chunk_error)?
    } else {
        ChunkSize::persistent_default(cow_lbs, origin_lbs).map_err(chunk_error)?
    };

    let io = DmIoClient::new().map_err(read_failed)?;
    let mut meta = MetadataIo::new(io, held_cow, chunk).map_err(read_failed)?;
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
        HeaderState::New if refuse_new => return Err(origin_merging()),
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
            let table = new_table(chunk, cow_sectors)?;
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
        meta = meta.with_chunk(chunk).map_err(read_failed)?;
    }
    if header.version != disk::SNAPSHOT_DISK_VERSION {
        dm_warn!("unable to handle snapshot disk version {}", header.version);
        return Err(read_failed(EINVAL));
    }

    let geom = Geometry::new(chunk);
    let table = new_table(chunk, cow_sectors)?;
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
    let bufio = BufioClient::new(held_cow, chunk.bytes(), window.saturating_add(1)).map_err(read_failed)?;
    let mut area: u64 = 0;
    let mut prefetched: u64 = 0;
    let state = loop {
        let location = geom.area_location(area).ok_or(read_failed(EINVAL))?;
        // Areas before `prefetched` have been submitted; top the window up
        // once `batch` of them have been consumed.
        if prefetched <= area.saturating_add(u64::from(window.saturating_sub(batch))) {
            let upto = area.saturating_add(u64::from(window));
            let from = prefetched;
            prefetched = upto.saturating_add(1);
            bufio.prefetch_batch(
                (from..=upto).filter_map(|a| geom.area_location(a)).filter(|l| *l < cow_chunks),
            );
        }
        let progress = bufio
            .read(location, |bytes| {
                // Exceptions arrive as runs (a sequentially filled area is
                // one), so each costs a few instructions, not a table push.
                let progress = loader.feed_runs(bytes, |old, new, len| {
                    if used.test_and_set_range(new, len) == Claimed::Before {
                        return Err(LoadFailure::SharedCowChunk);
                    }
                    builder.add_run(old, new, len).map_err(LoadFailure::from)
                });
                // Keep the last area: commits append to it. Past the end
                // of the list it is zeroed: a torn area write can leave
                // live-looking entries there, and upstream, which keeps
                // them, makes them part of the list again with the commit
                // that reaches their slot, pointing at reused chunks.
                if let Ok(LoadProgress::Done(state)) = progress {
                    if let Some(dst) = meta.area.as_mut_slice().get_mut(..bytes.len()) {
                        dst.copy_from_slice(bytes);
                    }
                    let end = (state.current_committed() as usize).saturating_mul(DISK_EXCEPTION_SIZE);
                    if let Some(tail) = meta.area.as_mut_slice().get_mut(end..) {
                        tail.fill(0);
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
            Err(LoadError::Callback(LoadFailure::DuplicateOrigin)) => {
                dm_err!("Corrupt snapshot metadata: duplicate exception for one origin chunk");
                return Err(read_failed(EINVAL));
            }
            Err(LoadError::Callback(LoadFailure::SharedCowChunk)) => {
                dm_err!("Corrupt snapshot metadata: two exceptions share one COW chunk");
                return Err(read_failed(EINVAL));
            }
            Err(LoadError::Callback(LoadFailure::NoMemory)) => return Err(read_failed(ENOMEM)),
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

/// Why the load callback refused a run of exceptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LoadFailure {
    /// Two exceptions for one origin chunk.
    DuplicateOrigin,
    /// Two exceptions sharing one COW chunk.
    SharedCowChunk,
    /// The table could not grow.
    NoMemory,
}

impl From<BuildError> for LoadFailure {
    fn from(e: BuildError) -> Self {
        match e {
            BuildError::Duplicate => Self::DuplicateOrigin,
            BuildError::NoMem => Self::NoMemory,
        }
    }
}

/// Exception areas read ahead while loading. Upstream keeps 12
/// (`DM_PREFETCH_CHUNKS`) whatever the chunk size; small areas are cheap,
/// so up to [`PREFETCH_BYTES`] of them (at most 64) are kept in flight.
/// With 4 KiB chunks (256 exceptions an area) that is 64 areas.
const PREFETCH_MIN_AREAS: u32 = 12;
const PREFETCH_MAX_AREAS: u32 = 64;
const PREFETCH_BYTES: usize = 256 << 10;

fn prefetch_window(chunk_bytes: usize) -> u32 {
    let areas = PREFETCH_BYTES.checked_div(chunk_bytes).unwrap_or(PREFETCH_BYTES);
    u32::try_from(areas).unwrap_or(PREFETCH_MAX_AREAS).clamp(PREFETCH_MIN_AREAS, PREFETCH_MAX_AREAS)
}

/// Whether a COW chunk was claimed by an earlier entry
/// ([`ChunkBitmap::test_and_set_range`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Claimed {
    /// Every chunk of the range is new (or untracked).
    Now,
    /// Some chunk of the range was claimed before.
    Before,
}

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

    /// Sets the bits of chunks `first .. first + len`, and says whether any
    /// was already set. Chunks past the bitmap are not tracked.
    fn test_and_set_range(&mut self, first: Chunk, len: u32) -> Claimed {
        let Some(words) = self.words.as_mut() else {
            return Claimed::Now;
        };
        let mut was = false;
        let (mut chunk, mut left) = (first, u64::from(len));
        while left > 0 {
            let Some(word) = usize::try_from(chunk / 64).ok().and_then(|i| words.get_mut(i)) else {
                break;
            };
            let bit = chunk % 64;
            // 1 <= n <= 64 - bit, as bit < 64 and left > 0.
            let n = left.min(64_u64.saturating_sub(bit));
            let shift = 64_u32.saturating_sub(u32::try_from(n).unwrap_or(64));
            let mask = u64::MAX.checked_shr(shift).unwrap_or(0) << bit;
            was |= *word & mask != 0;
            *word |= mask;
            left = left.saturating_sub(n);
            chunk = chunk.saturating_add(n);
        }
        if was {
            Claimed::Before
        } else {
            Claimed::Now
        }
    }
}
