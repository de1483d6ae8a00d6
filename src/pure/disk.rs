// SPDX-License-Identifier: GPL-2.0
//! The persistent COW on-disk format of dm-snap-persistent.c (disk version 1).
//!
//! Layout, all little-endian, addressed in chunks:
//!
//! ```text
//! chunk 0                 header  {magic, valid, version, chunk_size} (LE32 each)
//! chunk 1                 area 0  (epa entries of {old_chunk, new_chunk} LE64)
//! chunks 2 ..= epa+1      data
//! chunk epa+2             area 1  ...   (area a at 1 + a*(epa+1))
//! ```
//!
//! The list of exceptions ends at the first entry whose `new_chunk` is 0
//! (chunk 0 is the header, so it is never a legal target). Nothing here does
//! I/O: callers hand in chunk-sized byte buffers.

use core::fmt;

use super::chunk::{Chunk, ChunkSize, ChunkSizeError, SECTOR_SHIFT};

/// Header magic, "SnAp" on disk (`SNAP_MAGIC`).
pub const SNAP_MAGIC: u32 = 0x7041_6e53;

/// The only on-disk version upstream accepts (`SNAPSHOT_DISK_VERSION`).
pub const SNAPSHOT_DISK_VERSION: u32 = 1;

/// Chunks taken by the header at the start of the COW (`NUM_SNAPSHOT_HDR_CHUNKS`).
pub const NUM_SNAPSHOT_HDR_CHUNKS: Chunk = 1;

/// Size of `struct disk_header` in bytes.
pub const DISK_HEADER_SIZE: usize = 16;

/// Size of `struct disk_exception` in bytes.
pub const DISK_EXCEPTION_SIZE: usize = 16;

/// Largest `new_chunk` upstream's in-memory form can hold (it keeps a run
/// count in the top 8 bits). Only relevant when interoperating with it.
pub const UPSTREAM_MAX_NEW_CHUNK: Chunk = (1 << 56) - 1;

/// Little-endian u32 at `off`, if the buffer is long enough.
fn le32_at(buf: &[u8], off: usize) -> Option<u32> {
    let bytes = buf.get(off..off.checked_add(4)?)?;
    let arr: [u8; 4] = bytes.try_into().ok()?;
    Some(u32::from_le_bytes(arr))
}

/// Little-endian u64 at `off`, if the buffer is long enough.
fn le64_at(buf: &[u8], off: usize) -> Option<u64> {
    let bytes = buf.get(off..off.checked_add(8)?)?;
    let arr: [u8; 8] = bytes.try_into().ok()?;
    Some(u64::from_le_bytes(arr))
}

/// Errors from decoding or validating the header chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// The buffer is shorter than [`DISK_HEADER_SIZE`].
    TooShort,
    /// Magic is neither 0 nor [`SNAP_MAGIC`] (upstream: `-ENXIO`).
    BadMagic(u32),
    /// The on-disk chunk size fails validation (upstream: `-EINVAL`).
    BadChunkSize(u32, ChunkSizeError),
    /// The on-disk version is not [`SNAPSHOT_DISK_VERSION`] (upstream: `-EINVAL`).
    BadVersion(u32),
}

impl HeaderError {
    /// Upstream's message for this condition.
    pub const fn message(self) -> &'static str {
        match self {
            Self::TooShort => "Header buffer too short",
            Self::BadMagic(_) => "Invalid or corrupt snapshot",
            Self::BadChunkSize(_, e) => e.message(),
            Self::BadVersion(_) => "unable to handle snapshot disk version",
        }
    }

    /// The negative errno upstream returns for this condition.
    pub const fn errno(self) -> i32 {
        match self {
            // ENXIO
            Self::BadMagic(_) => -6,
            // EINVAL
            Self::TooShort | Self::BadChunkSize(..) | Self::BadVersion(_) => -22,
        }
    }
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadChunkSize(cs, e) => write!(f, "invalid on-disk chunk size {}: {}.", cs, e),
            Self::BadVersion(v) => write!(f, "unable to handle snapshot disk version {}", v),
            other => f.write_str(other.message()),
        }
    }
}

/// Error when an output buffer is too small.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferTooSmall;

/// Decoded `struct disk_header`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskHeader {
    /// Snapshot still valid. On read any non-zero value counts as valid; on
    /// write upstream only ever stores 0 or 1.
    pub valid: bool,
    /// On-disk format version.
    pub version: u32,
    /// Chunk size in sectors, not yet validated.
    pub chunk_size: u32,
}

/// What chunk 0 of the COW holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderState {
    /// `magic == 0`: a fresh COW; the store must write a header and zero area 0.
    New,
    /// A "SnAp" header. Still run [`DiskHeader::validate`] on it.
    Existing(DiskHeader),
}

/// Decode the header at the start of chunk 0 (`read_header()`).
///
/// Only the magic is judged here, exactly as upstream does before it loads
/// the other fields. Never panics.
pub fn decode_header(buf: &[u8]) -> Result<HeaderState, HeaderError> {
    let (Some(magic), Some(valid), Some(version), Some(chunk_size)) = (
        le32_at(buf, 0),
        le32_at(buf, 4),
        le32_at(buf, 8),
        le32_at(buf, 12),
    ) else {
        return Err(HeaderError::TooShort);
    };
    if magic == 0 {
        return Ok(HeaderState::New);
    }
    if magic != SNAP_MAGIC {
        return Err(HeaderError::BadMagic(magic));
    }
    Ok(HeaderState::Existing(DiskHeader {
        valid: valid != 0,
        version,
        chunk_size,
    }))
}

impl DiskHeader {
    /// Header of a newly initialised, valid store.
    pub const fn new_valid(chunk: ChunkSize) -> Self {
        Self {
            valid: true,
            version: SNAPSHOT_DISK_VERSION,
            chunk_size: chunk.sectors(),
        }
    }

    /// The 16 header bytes as upstream writes them.
    pub const fn to_bytes(&self) -> [u8; DISK_HEADER_SIZE] {
        // Destructuring instead of indexing: nothing here can panic.
        let [m0, m1, m2, m3] = SNAP_MAGIC.to_le_bytes();
        let [v0, v1, v2, v3] = (self.valid as u32).to_le_bytes();
        let [r0, r1, r2, r3] = self.version.to_le_bytes();
        let [c0, c1, c2, c3] = self.chunk_size.to_le_bytes();
        [
            m0, m1, m2, m3, v0, v1, v2, v3, r0, r1, r2, r3, c0, c1, c2, c3,
        ]
    }

    /// Write the header into `buf` and zero the rest of it, like
    /// `write_header()` (which memsets the whole chunk first).
    pub fn encode(&self, buf: &mut [u8]) -> Result<(), BufferTooSmall> {
        // (`split_at_mut_checked` needs rustc 1.80; the kernel's MSRV is 1.78.)
        if buf.len() < DISK_HEADER_SIZE {
            return Err(BufferTooSmall);
        }
        let (head, tail) = buf.split_at_mut(DISK_HEADER_SIZE);
        head.copy_from_slice(&self.to_bytes());
        tail.fill(0);
        Ok(())
    }

    /// Validate an existing header in upstream order: the chunk size first
    /// (`read_header()` re-runs `dm_exception_store_set_chunk_size()`), then
    /// the version (`persistent_read_metadata()`).
    ///
    /// The on-disk chunk size wins over the table's. `valid == false` is not
    /// an error here: upstream loads the target with the snapshot marked
    /// invalid and does not read the exceptions.
    pub fn validate(&self, cow_lbs: u32, origin_lbs: u32) -> Result<ChunkSize, HeaderError> {
        let cs = ChunkSize::new(self.chunk_size, cow_lbs, origin_lbs)
            .map_err(|e| HeaderError::BadChunkSize(self.chunk_size, e))?;
        if self.version != SNAPSHOT_DISK_VERSION {
            return Err(HeaderError::BadVersion(self.version));
        }
        Ok(cs)
    }
}

/// One `struct disk_exception`: origin chunk `old` lives in COW chunk `new`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DiskException {
    /// Origin chunk.
    pub old: Chunk,
    /// Absolute COW chunk (header and area chunks counted); 0 terminates.
    pub new: Chunk,
}

impl From<(Chunk, Chunk)> for DiskException {
    fn from((old, new): (Chunk, Chunk)) -> Self {
        Self { old, new }
    }
}

impl DiskException {
    /// The 16 on-disk bytes (`write_exception()`).
    pub const fn to_bytes(&self) -> [u8; DISK_EXCEPTION_SIZE] {
        let [o0, o1, o2, o3, o4, o5, o6, o7] = self.old.to_le_bytes();
        let [n0, n1, n2, n3, n4, n5, n6, n7] = self.new.to_le_bytes();
        [
            o0, o1, o2, o3, o4, o5, o6, o7, n0, n1, n2, n3, n4, n5, n6, n7,
        ]
    }

    /// Decode 16 on-disk bytes (`read_exception()`); `None` if too short.
    pub fn from_bytes(buf: &[u8]) -> Option<Self> {
        Some(Self {
            old: le64_at(buf, 0)?,
            new: le64_at(buf, 8)?,
        })
    }

    /// Whether this entry is the end-of-list marker (`new_chunk == 0`).
    pub const fn is_terminator(&self) -> bool {
        self.new == 0
    }
}

/// Placement of header, metadata areas and data chunks for one chunk size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    chunk: ChunkSize,
}

impl Geometry {
    /// Geometry for a validated chunk size.
    pub const fn new(chunk: ChunkSize) -> Self {
        Self { chunk }
    }

    /// The chunk size.
    pub const fn chunk_size(self) -> ChunkSize {
        self.chunk
    }

    /// Bytes in one area buffer (one chunk).
    pub const fn area_bytes(self) -> usize {
        self.chunk.bytes()
    }

    /// `exceptions_per_area = chunk_size * 512 / sizeof(struct disk_exception)`.
    /// At most 2^26, at least 32.
    pub const fn exceptions_per_area(self) -> u32 {
        // sectors << 9 >> 4 == sectors << 5; cannot overflow for <= 2^21.
        self.chunk.sectors() << (SECTOR_SHIFT - 4)
    }

    /// Distance in chunks between two areas: `epa + 1`.
    pub const fn stride(self) -> u64 {
        (self.exceptions_per_area() as u64).saturating_add(1)
    }

    /// Chunk holding metadata area `area` (`area_location()`):
    /// `NUM_SNAPSHOT_HDR_CHUNKS + (epa + 1) * area`. `None` on overflow.
    pub const fn area_location(self, area: u64) -> Option<Chunk> {
        match self.stride().checked_mul(area) {
            Some(off) => off.checked_add(NUM_SNAPSHOT_HDR_CHUNKS),
            None => None,
        }
    }

    /// Whether `chunk` is the header or a metadata area, i.e. never data.
    pub const fn is_metadata_chunk(self, chunk: Chunk) -> bool {
        chunk < NUM_SNAPSHOT_HDR_CHUNKS || matches!(chunk.checked_rem(self.stride()), Some(NUM_SNAPSHOT_HDR_CHUNKS))
    }

    /// Area whose data region holds `chunk` when written in order (chunk
    /// `area_location(a) + 1 ..= area_location(a) + epa` belongs to `a`).
    /// `None` for header and metadata chunks.
    pub const fn area_of_data_chunk(self, chunk: Chunk) -> Option<u64> {
        if self.is_metadata_chunk(chunk) {
            None
        } else {
            // Not metadata, so `chunk >= NUM_SNAPSHOT_HDR_CHUNKS`; the stride is never 0.
            chunk.saturating_sub(NUM_SNAPSHOT_HDR_CHUNKS).checked_div(self.stride())
        }
    }
}

/// Error from area buffer access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AreaError {
    /// The buffer is shorter than one area (`epa * 16` bytes).
    ShortBuffer,
    /// Entry index is `>= exceptions_per_area` (upstream `BUG_ON`).
    IndexOutOfRange,
}

/// Byte range of entry `index` in an area, if it is a valid slot.
fn entry_range(geom: Geometry, index: u32) -> Result<(usize, usize), AreaError> {
    if index >= geom.exceptions_per_area() {
        return Err(AreaError::IndexOutOfRange);
    }
    // index < 2^26, so this cannot overflow usize (>= 32 bits).
    let start = (index as usize).saturating_mul(DISK_EXCEPTION_SIZE);
    Ok((start, start.saturating_add(DISK_EXCEPTION_SIZE)))
}

/// Read entry `index` of an area buffer (`read_exception()`).
pub fn read_entry(geom: Geometry, area: &[u8], index: u32) -> Result<DiskException, AreaError> {
    let (s, e) = entry_range(geom, index)?;
    area.get(s..e)
        .and_then(DiskException::from_bytes)
        .ok_or(AreaError::ShortBuffer)
}

/// Write entry `index` of an area buffer (`write_exception()`).
pub fn write_entry(
    geom: Geometry,
    area: &mut [u8],
    index: u32,
    ex: DiskException,
) -> Result<(), AreaError> {
    let (s, e) = entry_range(geom, index)?;
    let slot = area.get_mut(s..e).ok_or(AreaError::ShortBuffer)?;
    slot.copy_from_slice(&ex.to_bytes());
    Ok(())
}

/// Zero entry `index` of an area buffer (`clear_exception()`).
pub fn clear_entry(geom: Geometry, area: &mut [u8], index: u32) -> Result<(), AreaError> {
    write_entry(geom, area, index, DiskException { old: 0, new: 0 })
}

/// Iterator over the live entries of one area, in slot order, ending before
/// the first terminator or after `epa` entries (`insert_exceptions()`).
#[derive(Clone, Debug)]
pub struct AreaEntries<'a> {
    entries: core::slice::ChunksExact<'a, u8>,
    index: u32,
    epa: u32,
    terminated: bool,
}

impl<'a> AreaEntries<'a> {
    /// Iterate over `area`, which must hold at least one whole area.
    pub fn new(geom: Geometry, area: &'a [u8]) -> Result<Self, AreaError> {
        let epa = geom.exceptions_per_area();
        // epa * 16 == chunk bytes, at most 2^30.
        let need = (epa as usize).saturating_mul(DISK_EXCEPTION_SIZE);
        let body = area.get(..need).ok_or(AreaError::ShortBuffer)?;
        Ok(Self {
            entries: body.chunks_exact(DISK_EXCEPTION_SIZE),
            index: 0,
            epa,
            terminated: false,
        })
    }

    /// Slot index of the next entry to be returned.
    pub fn position(&self) -> u32 {
        self.index
    }

    /// After exhaustion: `true` if a terminator was found (area not full).
    pub fn terminated(&self) -> bool {
        self.terminated
    }
}

impl Iterator for AreaEntries<'_> {
    type Item = DiskException;

    fn next(&mut self) -> Option<DiskException> {
        if self.terminated || self.index >= self.epa {
            return None;
        }
        let ex = self.entries.next().and_then(DiskException::from_bytes)?;
        if ex.is_terminator() {
            self.terminated = true;
            return None;
        }
        self.index = self.index.saturating_add(1);
        Some(ex)
    }
}

/// Summary of one area: how many entries are live and whether it is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AreaScan {
    /// Live entries before the terminator (`current_committed` if this is
    /// the last area), or `epa` when full.
    pub committed: u32,
    /// No terminator: the next area must be read too.
    pub full: bool,
    /// `max(new_chunk) + 1` over the live entries, saturating; 0 if none.
    pub next_free_hint: Chunk,
}

/// Scan one area buffer the way `insert_exceptions()` does.
pub fn scan_area(geom: Geometry, area: &[u8]) -> Result<AreaScan, AreaError> {
    let mut it = AreaEntries::new(geom, area)?;
    let mut next_free_hint: Chunk = 0;
    for ex in it.by_ref() {
        let candidate = ex.new.saturating_add(1);
        if candidate > next_free_hint {
            next_free_hint = candidate;
        }
    }
    Ok(AreaScan {
        committed: it.position(),
        full: !it.terminated(),
        next_free_hint,
    })
}

/// Kinds of corruption an entry can show. Upstream checks none of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// `new_chunk` is the header or a metadata area chunk.
    NewChunkIsMetadata,
    /// `new_chunk` lies at or beyond the end of the COW device.
    NewChunkBeyondDevice,
    /// `old_chunk`'s first sector does not fit in 64 bits.
    OldChunkUnaddressable,
    /// Two entries map the same origin chunk.
    DuplicateOldChunk,
    /// Two entries point at the same COW chunk.
    DuplicateNewChunk,
    /// A metadata area lies past the end of the COW device.
    AreaBeyondDevice,
}

impl Corruption {
    /// Human-readable reason, for logging.
    pub const fn message(self) -> &'static str {
        match self {
            Self::NewChunkIsMetadata => "exception points into snapshot metadata",
            Self::NewChunkBeyondDevice => "exception points past the end of the COW device",
            Self::OldChunkUnaddressable => "exception origin chunk out of range",
            Self::DuplicateOldChunk => "duplicate exception for one origin chunk",
            Self::DuplicateNewChunk => "two exceptions share one COW chunk",
            Self::AreaBeyondDevice => "metadata area past the end of the COW device",
        }
    }
}

/// Check one loaded entry against the geometry and the COW size in chunks.
///
/// Duplicates cannot be seen entry by entry: the caller detects them when
/// inserting into its table, or with [`first_adjacent_duplicate`] over a
/// sorted copy.
pub fn check_exception(
    geom: Geometry,
    ex: DiskException,
    cow_chunks: Chunk,
) -> Result<(), Corruption> {
    if geom.is_metadata_chunk(ex.new) {
        return Err(Corruption::NewChunkIsMetadata);
    }
    if ex.new >= cow_chunks {
        return Err(Corruption::NewChunkBeyondDevice);
    }
    if geom.chunk_size().chunk_to_sector(ex.old).is_none() {
        return Err(Corruption::OldChunkUnaddressable);
    }
    Ok(())
}

/// Whether every entry of the run `first.old + i -> first.new + i`,
/// `i < len`, passes [`check_exception`], with one division for the run.
/// `false` also when a chunk of the run would overflow or `len` is 0.
pub fn run_is_valid(geom: Geometry, first: DiskException, len: u32, cow_chunks: Chunk) -> bool {
    let Some(extra) = u64::from(len).checked_sub(1) else {
        return false;
    };
    let (Some(last_old), Some(last_new)) = (first.old.checked_add(extra), first.new.checked_add(extra)) else {
        return false;
    };
    if first.new < NUM_SNAPSHOT_HDR_CHUNKS || last_new >= cow_chunks {
        return false;
    }
    // The next metadata chunk at or after `first.new` (those are the
    // chunks equal to NUM_SNAPSHOT_HDR_CHUNKS modulo the stride) must lie
    // past the run.
    let stride = geom.stride();
    let Some(rem) = first.new.checked_rem(stride) else {
        return false;
    };
    // (NUM_SNAPSHOT_HDR_CHUNKS - rem) mod stride; rem < stride and
    // NUM_SNAPSHOT_HDR_CHUNKS < stride.
    let to_metadata = if rem <= NUM_SNAPSHOT_HDR_CHUNKS {
        NUM_SNAPSHOT_HDR_CHUNKS.saturating_sub(rem)
    } else {
        stride.saturating_sub(rem).saturating_add(NUM_SNAPSHOT_HDR_CHUNKS)
    };
    to_metadata > extra && geom.chunk_size().chunk_to_sector(last_old).is_some()
}

/// First value that occurs twice in a sorted slice (use for old or new
/// chunks of all loaded exceptions). `None` if all values are distinct.
pub fn first_adjacent_duplicate(sorted: &[Chunk]) -> Option<Chunk> {
    sorted.windows(2).find_map(|w| match w {
        [a, b] if a == b => Some(*a),
        _ => None,
    })
}
