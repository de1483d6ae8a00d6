// SPDX-License-Identifier: GPL-2.0
//! Numbers behind the `snapshot` / `snapshot-merge` INFO status line.
//!
//! `snapshot_status()` (dm-snap.c) prints the first match of `Invalid`,
//! `Merge failed`, `Overflow`, else `"%llu/%llu %llu"` from the store's
//! `usage()`. LVM parses exactly these forms (`dm_get_status_snapshot()`),
//! so upstream's `Unknown` fallback is deliberately not offered.

use core::fmt;

use super::chunk::Sector;

/// Result of a store's `usage()` callback, in sectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Sectors in use, header and metadata areas included.
    pub sectors_allocated: Sector,
    /// Current size of the COW device.
    pub total_sectors: Sector,
    /// Sectors used by the header and metadata areas (0 for transient).
    pub metadata_sectors: Sector,
}

impl Usage {
    /// LVM's "merge finished" test: allocated == metadata, which it reads as
    /// 0% (`lvconvert --merge` polls for exactly this).
    pub const fn merge_finished(&self) -> bool {
        self.sectors_allocated == self.metadata_sectors
    }

    /// A store constructed and never read: upstream's table waiting for a
    /// handover, whose chunk size is 0 until then, so either store type
    /// counts nothing.
    pub const fn unread(total_sectors: Sector) -> Self {
        Self { sectors_allocated: 0, total_sectors, metadata_sectors: 0 }
    }

    /// Whether the COW is completely used (LVM reports 100%).
    pub const fn full(&self) -> bool {
        self.sectors_allocated == self.total_sectors
    }
}

/// The INFO status of a snapshot or snapshot-merge target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InfoStatus {
    /// `Invalid`: the snapshot was invalidated.
    Invalid,
    /// `Merge failed`.
    MergeFailed,
    /// `Overflow`: a `PO` store ran out of space on a snapshot write.
    Overflow,
    /// `<allocated>/<total> <metadata>`.
    Usage(Usage),
}

impl InfoStatus {
    /// Pick the status exactly in `snapshot_status()`'s order of precedence.
    pub const fn select(valid: bool, merge_failed: bool, overflowed: bool, usage: Usage) -> Self {
        if !valid {
            Self::Invalid
        } else if merge_failed {
            Self::MergeFailed
        } else if overflowed {
            Self::Overflow
        } else {
            Self::Usage(usage)
        }
    }

    /// The fixed keyword, or `None` for the numeric form.
    pub const fn keyword(&self) -> Option<&'static str> {
        match self {
            Self::Invalid => Some("Invalid"),
            Self::MergeFailed => Some("Merge failed"),
            Self::Overflow => Some("Overflow"),
            Self::Usage(_) => None,
        }
    }
}

impl fmt::Display for InfoStatus {
    /// Formats byte-for-byte as upstream's DMEMIT calls do.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(u) => write!(
                f,
                "{}/{} {}",
                u.sectors_allocated, u.total_sectors, u.metadata_sectors
            ),
            Self::Invalid => f.write_str("Invalid"),
            Self::MergeFailed => f.write_str("Merge failed"),
            Self::Overflow => f.write_str("Overflow"),
        }
    }
}
