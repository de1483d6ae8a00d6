// SPDX-License-Identifier: GPL-2.0
//! Sectors, chunks and the validated chunk size.
//!
//! Mirrors `dm_exception_store_set_chunk_size()` (dm-exception-store.c) and
//! the `sector_to_chunk()` / `chunk_to_sector()` helpers of dm-snap.c.

use core::fmt;

/// A 512-byte sector index or count (`sector_t`).
pub type Sector = u64;

/// A chunk index or count (`chunk_t`).
pub type Chunk = u64;

/// log2 of the sector size (`SECTOR_SHIFT`).
pub const SECTOR_SHIFT: u32 = 9;

/// Bytes per sector.
pub const SECTOR_SIZE: u32 = 1 << SECTOR_SHIFT;

/// Largest accepted chunk size in sectors.
///
/// Upstream refuses `chunk_size > INT_MAX >> SECTOR_SHIFT` (4194303). The
/// largest power of two below that is 2^21 sectors (1 GiB).
pub const MAX_CHUNK_SECTORS: u32 = 1 << 21;

/// Persistent-store default chunk size when the table passes 0
/// (`DM_CHUNK_SIZE_DEFAULT_SECTORS`, 16 KiB).
pub const DEFAULT_CHUNK_SECTORS: u32 = 32;

/// Why a chunk size was refused; each maps to upstream's error string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkSizeError {
    /// Zero or not a power of two.
    NotPowerOfTwo,
    /// Not a multiple of the COW's or the origin's logical block size.
    NotBlockMultiple,
    /// Larger than `INT_MAX >> SECTOR_SHIFT` sectors.
    TooHigh,
}

impl ChunkSizeError {
    /// The exact message upstream puts into `ti->error`.
    pub const fn message(self) -> &'static str {
        match self {
            Self::NotPowerOfTwo => "Chunk size is not a power of 2",
            Self::NotBlockMultiple => "Chunk size is not a multiple of device blocksize",
            Self::TooHigh => "Chunk size is too high",
        }
    }
}

impl fmt::Display for ChunkSizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// A validated chunk size: a power of two in `1..=MAX_CHUNK_SECTORS` sectors.
///
/// Stored as its shift so every conversion is a shift or a mask and cannot
/// overflow the representation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkSize {
    shift: u32,
}

impl ChunkSize {
    /// Validate `sectors` exactly like `dm_exception_store_set_chunk_size()`.
    ///
    /// `cow_lbs` and `origin_lbs` are the two devices' logical block sizes in
    /// bytes. Checks run in upstream order: power of two, block-size multiple,
    /// upper bound. A block size below one sector (impossible for a real
    /// device; upstream would divide by zero) is reported as
    /// [`ChunkSizeError::NotBlockMultiple`].
    pub const fn new(sectors: u32, cow_lbs: u32, origin_lbs: u32) -> Result<Self, ChunkSizeError> {
        if !sectors.is_power_of_two() {
            return Err(ChunkSizeError::NotPowerOfTwo);
        }
        let cow = cow_lbs >> SECTOR_SHIFT;
        let origin = origin_lbs >> SECTOR_SHIFT;
        // A zero block size (upstream would divide by zero) is refused too.
        // (`checked_rem` rather than `is_multiple_of`: the kernel's MSRV is
        // 1.78.)
        if !is_multiple(sectors, cow) || !is_multiple(sectors, origin) {
            return Err(ChunkSizeError::NotBlockMultiple);
        }
        if sectors > (i32::MAX as u32) >> SECTOR_SHIFT {
            return Err(ChunkSizeError::TooHigh);
        }
        Ok(Self {
            shift: sectors.trailing_zeros(),
        })
    }

    /// Chunk size used by the persistent store when the table says 0:
    /// `max(DM_CHUNK_SIZE_DEFAULT_SECTORS, cow_lbs >> 9)` (`read_header()`).
    ///
    /// Unlike upstream, the result is validated against both block sizes, so
    /// an origin with a larger block size is refused instead of silently
    /// accepted. An on-disk chunk size, if any, overrides this value anyway.
    pub const fn persistent_default(cow_lbs: u32, origin_lbs: u32) -> Result<Self, ChunkSizeError> {
        let lbs_sectors = cow_lbs >> SECTOR_SHIFT;
        let sectors = if lbs_sectors > DEFAULT_CHUNK_SECTORS {
            lbs_sectors
        } else {
            DEFAULT_CHUNK_SECTORS
        };
        Self::new(sectors, cow_lbs, origin_lbs)
    }

    /// Build from a shift (log2 of the size in sectors); `None` if too large.
    pub const fn from_shift(shift: u32) -> Option<Self> {
        if shift > MAX_CHUNK_SECTORS.trailing_zeros() {
            None
        } else {
            Some(Self { shift })
        }
    }

    /// Chunk size in sectors (`store->chunk_size`).
    pub const fn sectors(self) -> u32 {
        1 << self.shift
    }

    /// log2 of the chunk size in sectors (`store->chunk_shift`).
    pub const fn shift(self) -> u32 {
        self.shift
    }

    /// Mask of the sector offset inside a chunk (`store->chunk_mask`).
    pub const fn mask(self) -> Sector {
        (1u64 << self.shift).saturating_sub(1)
    }

    /// Chunk size in bytes (at most 1 GiB, so it fits any `usize` >= 32 bits).
    pub const fn bytes(self) -> usize {
        1 << self.shift << SECTOR_SHIFT
    }

    /// Chunk containing `sector` (`sector_to_chunk()`).
    pub const fn sector_to_chunk(self, sector: Sector) -> Chunk {
        sector >> self.shift
    }

    /// First sector of `chunk` (`chunk_to_sector()`); `None` if it does not
    /// fit in 64 bits, which only a corrupt chunk number can cause.
    pub const fn chunk_to_sector(self, chunk: Chunk) -> Option<Sector> {
        if chunk > (u64::MAX >> self.shift) {
            None
        } else {
            Some(chunk << self.shift)
        }
    }

    /// Offset of `sector` within its chunk (`sector & chunk_mask`).
    pub const fn offset_in_chunk(self, sector: Sector) -> Sector {
        sector & self.mask()
    }

    /// Whether `sector` is the first sector of a chunk.
    pub const fn is_aligned(self, sector: Sector) -> bool {
        self.offset_in_chunk(sector) == 0
    }

    /// Whole chunks in a device of `dev_sectors` sectors
    /// (`get_dev_size(bdev) >> chunk_shift`, rounding down).
    pub const fn chunks_in(self, dev_sectors: Sector) -> Chunk {
        dev_sectors >> self.shift
    }

    /// Sectors of `count` chunks, saturating (used for usage reporting where
    /// upstream's product cannot overflow for sane devices).
    pub const fn chunks_to_sectors_saturating(self, count: Chunk) -> Sector {
        match self.chunk_to_sector(count) {
            Some(s) => s,
            None => u64::MAX,
        }
    }

    /// Sector extent of `nr_chunks` chunks starting at `first_chunk`, clipped
    /// to a device of `dev_sectors` sectors: returns `(start, count)`.
    ///
    /// Upstream does `min(n * chunk_size, dev_size - start)` in `start_copy()`
    /// and `snapshot_merge_next_chunks()`; the subtraction underflows there if
    /// the chunk lies past the end of the device (e.g. after an origin shrink).
    /// Here that case, and any overflow, yields `None`.
    pub const fn clip_extent(
        self,
        first_chunk: Chunk,
        nr_chunks: u64,
        dev_sectors: Sector,
    ) -> Option<(Sector, Sector)> {
        let start = match self.chunk_to_sector(first_chunk) {
            Some(s) => s,
            None => return None,
        };
        if start >= dev_sectors {
            return None;
        }
        let len = self.chunks_to_sectors_saturating(nr_chunks);
        let room = dev_sectors.saturating_sub(start);
        let count = if len < room { len } else { room };
        if count == 0 {
            return None;
        }
        Some((start, count))
    }
}

impl fmt::Display for ChunkSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.sectors())
    }
}

/// Whether `value` is a multiple of `divisor`, as `u32::is_multiple_of`
/// (zero is a multiple of everything; nothing else is a multiple of zero).
const fn is_multiple(value: u32, divisor: u32) -> bool {
    match value.checked_rem(divisor) {
        Some(rem) => rem == 0,
        None => value == 0,
    }
}
