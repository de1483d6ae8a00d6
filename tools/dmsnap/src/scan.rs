// SPDX-License-Identifier: GPL-2.0
//! Reading a persistent COW store the way the kernel loads it, and naming
//! every problem on the way.
//!
//! The walk is `read_exceptions()`: area 0, then the next area for as long
//! as the previous one is full, ending at the first terminator. The entry
//! checks are the kernel module's ([`check_exception`]); this module adds
//! what needs the whole list (duplicates) or the origin (its size).

use std::collections::HashMap;
use std::fmt;
use std::io;

use dmsnap_core::pure::alloc::PersistentState;
use dmsnap_core::pure::chunk::{Chunk, ChunkSize, Sector, SECTOR_SHIFT};
use dmsnap_core::pure::disk::{
    check_exception, decode_header, AreaEntries, Corruption, DiskException, DiskHeader, Geometry,
    HeaderError, HeaderState, DISK_HEADER_SIZE, NUM_SNAPSHOT_HDR_CHUNKS,
};

use crate::dev::BlockIo;

/// What the caller knows about the origin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OriginInfo {
    /// Size in sectors.
    pub sectors: Sector,
    /// Logical block size in bytes.
    pub logical_block_size: u32,
}

/// One problem, located as precisely as the format allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Metadata area, when the problem is in one.
    pub area: Option<u64>,
    /// Slot within the area.
    pub slot: Option<u32>,
    /// The entry, when the problem is an entry.
    pub entry: Option<DiskException>,
    /// What is wrong.
    pub kind: ProblemKind,
}

/// Kinds of problems `check` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// An entry fails the kernel's load-time checks.
    Entry(Corruption),
    /// The entry's origin chunk lies past the end of the origin.
    OldChunkBeyondOrigin,
    /// A second entry for an origin chunk; the first is at (area, slot).
    DuplicateOld { first_area: u64, first_slot: u32 },
    /// A second entry using a COW chunk; the first is at (area, slot).
    DuplicateNew { first_area: u64, first_slot: u32 },
    /// The area chunk lies wholly past the end of the COW.
    AreaBeyondDevice { location: Chunk },
    /// The COW ends inside the area chunk.
    AreaTruncated { location: Chunk, bytes_present: u64 },
    /// Reading the area failed.
    AreaReadError { location: Chunk, error: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(a) = self.area {
            write!(f, "area {a}")?;
            if let Some(s) = self.slot {
                write!(f, " slot {s}")?;
            }
            f.write_str(": ")?;
        }
        if let Some(e) = self.entry {
            write!(f, "exception origin chunk {} -> COW chunk {}: ", e.old, e.new)?;
        }
        match &self.kind {
            ProblemKind::Entry(c) => f.write_str(c.message()),
            ProblemKind::OldChunkBeyondOrigin => f.write_str("origin chunk past the end of the origin"),
            ProblemKind::DuplicateOld { first_area, first_slot } => write!(
                f,
                "duplicate exception for one origin chunk (first at area {first_area} slot {first_slot})"
            ),
            ProblemKind::DuplicateNew { first_area, first_slot } => write!(
                f,
                "COW chunk already used by area {first_area} slot {first_slot}"
            ),
            ProblemKind::AreaBeyondDevice { location } => write!(
                f,
                "metadata area at chunk {location} lies past the end of the COW (the exception list is cut off)"
            ),
            ProblemKind::AreaTruncated { location, bytes_present } => write!(
                f,
                "metadata area at chunk {location} is truncated: the COW ends {bytes_present} bytes into it"
            ),
            ProblemKind::AreaReadError { location, error } => {
                write!(f, "reading the metadata area at chunk {location} failed: {error}")
            }
        }
    }
}

impl Problem {
    /// Whether the list is cut off here (later areas were not read).
    pub fn is_torn_area(&self) -> bool {
        matches!(
            self.kind,
            ProblemKind::AreaBeyondDevice { .. } | ProblemKind::AreaTruncated { .. } | ProblemKind::AreaReadError { .. }
        )
    }
}

/// One metadata area as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Area {
    /// Area index.
    pub index: u64,
    /// Chunk holding it.
    pub location: Chunk,
    /// The live entries, in slot order (before the terminator).
    pub entries: Vec<DiskException>,
    /// A terminator ended the list in this area (it is the last area).
    pub terminated: bool,
}

/// A COW store as the kernel would load it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cow {
    /// The decoded header.
    pub header: DiskHeader,
    /// Its validated chunk size.
    pub chunk: ChunkSize,
    /// COW size in bytes.
    pub cow_bytes: u64,
    /// The areas read, in order. The last one is the current area unless
    /// the walk was cut off.
    pub areas: Vec<Area>,
    /// Everything wrong, in the order found.
    pub problems: Vec<Problem>,
}

/// Why a device cannot be read as a COW store at all.
#[derive(Debug)]
pub enum ScanError {
    /// Reading failed.
    Io(io::Error),
    /// Too small for a header, or no "SnAp" magic: not a COW store.
    NotCow(String),
    /// A "SnAp" header the kernel refuses (chunk size, version).
    BadHeader(HeaderError),
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "I/O error: {e}"),
            Self::NotCow(why) => write!(f, "not a snapshot COW store: {why}"),
            Self::BadHeader(e) => write!(f, "corrupt header: {e}"),
        }
    }
}

impl From<io::Error> for ScanError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Read and judge the header (`read_header()` and the version check of
/// `persistent_read_metadata()`).
pub fn read_header(cow: &dyn BlockIo, origin_lbs: u32) -> Result<(DiskHeader, ChunkSize), ScanError> {
    let len = cow.len_bytes();
    if len < 512 {
        return Err(ScanError::NotCow(format!(
            "{len} bytes is smaller than one sector, so it holds no header"
        )));
    }
    // One logical block: O_DIRECT reads must be whole blocks.
    let block = u64::from(cow.logical_block_size().max(512)).min(len);
    let mut buf = vec![0u8; block as usize];
    cow.read_exact_at(&mut buf, 0)?;
    let state = decode_header(&buf[..DISK_HEADER_SIZE]).map_err(|e| match e {
        HeaderError::BadMagic(m) => ScanError::NotCow(format!(
            "magic {m:#010x}, want {:#010x} (\"SnAp\")",
            dmsnap_core::pure::disk::SNAP_MAGIC
        )),
        other => ScanError::BadHeader(other),
    })?;
    let header = match state {
        HeaderState::New => {
            return Err(ScanError::NotCow(
                "magic is 0: a new store the kernel has not initialised yet (no exceptions)".into(),
            ))
        }
        HeaderState::Existing(h) => h,
    };
    let chunk = header
        .validate(cow.logical_block_size(), origin_lbs)
        .map_err(ScanError::BadHeader)?;
    Ok((header, chunk))
}

impl Cow {
    /// Geometry of the store.
    pub fn geometry(&self) -> Geometry {
        Geometry::new(self.chunk)
    }

    /// COW size in whole chunks.
    pub fn cow_chunks(&self) -> Chunk {
        self.cow_bytes >> (self.chunk.shift() + SECTOR_SHIFT)
    }

    /// COW size in sectors.
    pub fn cow_sectors(&self) -> Sector {
        self.cow_bytes >> SECTOR_SHIFT
    }

    /// All live entries in list order with their (area, slot).
    pub fn entries(&self) -> impl Iterator<Item = (u64, u32, DiskException)> + '_ {
        self.areas.iter().flat_map(|a| {
            a.entries.iter().enumerate().map(move |(s, e)| (a.index, s as u32, *e))
        })
    }

    /// Number of live entries.
    pub fn exception_count(&self) -> u64 {
        self.areas.iter().map(|a| a.entries.len() as u64).sum()
    }

    /// Whether the walk reached a terminator (nothing cut off).
    pub fn complete(&self) -> bool {
        !self.problems.iter().any(Problem::is_torn_area)
    }

    /// The store's cursor as the kernel's loader leaves it (`next_free`
    /// past the highest COW chunk used, skipping metadata; the last area
    /// current). `None` if the list is cut off.
    pub fn cursor(&self) -> Option<PersistentState> {
        if !self.complete() {
            return None;
        }
        let last = self.areas.last()?;
        let next_free = self.entries().map(|(_, _, e)| e.new.saturating_add(1)).max().unwrap_or(0);
        PersistentState::from_parts(
            self.geometry(),
            next_free.max(NUM_SNAPSHOT_HDR_CHUNKS + 1),
            last.index,
            u32::try_from(last.entries.len()).ok()?,
        )
    }

    /// Whether nothing at all is wrong (the valid flag aside).
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// Read a COW store. `origin`, when known, adds the origin's checks.
    ///
    /// Fails only when there is no usable header; everything wrong past the
    /// header is collected in [`Cow::problems`]. Exceptions are read even
    /// when the header says the snapshot is invalid (the kernel skips them
    /// then), so their consistency can still be judged.
    pub fn read(cow: &dyn BlockIo, origin: Option<OriginInfo>) -> Result<Self, ScanError> {
        let origin_lbs = origin.map_or(512, |o| o.logical_block_size);
        let (header, chunk) = read_header(cow, origin_lbs)?;
        let geom = Geometry::new(chunk);
        let cow_bytes = cow.len_bytes();
        let mut me = Self { header, chunk, cow_bytes, areas: Vec::new(), problems: Vec::new() };
        let cow_chunks = me.cow_chunks();
        let chunk_bytes = chunk.bytes() as u64;
        let mut buf = vec![0u8; chunk.bytes()];
        let mut first_old: HashMap<Chunk, (u64, u32)> = HashMap::new();
        let mut first_new: HashMap<Chunk, (u64, u32)> = HashMap::new();
        let mut index = 0u64;
        loop {
            let Some(location) = geom.area_location(index) else {
                me.problems.push(Problem {
                    area: Some(index),
                    slot: None,
                    entry: None,
                    kind: ProblemKind::AreaBeyondDevice { location: u64::MAX },
                });
                break;
            };
            let start = location.saturating_mul(chunk_bytes);
            if start >= cow_bytes || location >= u64::MAX / chunk_bytes {
                me.problems.push(Problem {
                    area: Some(index),
                    slot: None,
                    entry: None,
                    kind: ProblemKind::AreaBeyondDevice { location },
                });
                break;
            }
            if start + chunk_bytes > cow_bytes {
                me.problems.push(Problem {
                    area: Some(index),
                    slot: None,
                    entry: None,
                    kind: ProblemKind::AreaTruncated { location, bytes_present: cow_bytes - start },
                });
                break;
            }
            if let Err(e) = cow.read_exact_at(&mut buf, start) {
                me.problems.push(Problem {
                    area: Some(index),
                    slot: None,
                    entry: None,
                    kind: ProblemKind::AreaReadError { location, error: e.to_string() },
                });
                break;
            }
            let mut it = AreaEntries::new(geom, &buf).map_err(|_| {
                ScanError::Io(io::Error::new(io::ErrorKind::InvalidData, "area buffer too short"))
            })?;
            let mut entries = Vec::new();
            for (slot, ex) in it.by_ref().enumerate() {
                let slot = slot as u32;
                let mut problem = |kind| {
                    me.problems.push(Problem { area: Some(index), slot: Some(slot), entry: Some(ex), kind });
                };
                if let Err(c) = check_exception(geom, ex, cow_chunks) {
                    problem(ProblemKind::Entry(c));
                } else if let Some(o) = origin {
                    if chunk.chunk_to_sector(ex.old).is_none_or(|s| s >= o.sectors) {
                        problem(ProblemKind::OldChunkBeyondOrigin);
                    }
                }
                if let Some(&(first_area, first_slot)) = first_old.get(&ex.old) {
                    problem(ProblemKind::DuplicateOld { first_area, first_slot });
                } else {
                    first_old.insert(ex.old, (index, slot));
                }
                if let Some(&(first_area, first_slot)) = first_new.get(&ex.new) {
                    problem(ProblemKind::DuplicateNew { first_area, first_slot });
                } else {
                    first_new.insert(ex.new, (index, slot));
                }
                entries.push(ex);
            }
            let terminated = it.terminated();
            me.areas.push(Area { index, location, entries, terminated });
            if terminated {
                break;
            }
            index += 1;
        }
        Ok(me)
    }
}

/// A run of consecutive slots whose origin and COW chunks both go up by
/// one: the unit of `dump` and of the merge's copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SlotRun {
    /// Origin chunk of the first entry.
    pub origin: Chunk,
    /// COW chunk of the first entry.
    pub cow: Chunk,
    /// Entries in the run.
    pub length: u64,
}

/// Join the entries of one area into runs, in slot order.
pub fn slot_runs(entries: &[DiskException]) -> Vec<SlotRun> {
    let mut runs: Vec<SlotRun> = Vec::new();
    for e in entries {
        if let Some(r) = runs.last_mut() {
            if r.origin.checked_add(r.length) == Some(e.old) && r.cow.checked_add(r.length) == Some(e.new) {
                r.length += 1;
                continue;
            }
        }
        runs.push(SlotRun { origin: e.old, cow: e.new, length: 1 });
    }
    runs
}
