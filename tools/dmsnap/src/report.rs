// SPDX-License-Identifier: GPL-2.0
//! `changed` and `usage`: what a COW says about the origin and itself.

use serde::Serialize;

use dmsnap_core::pure::chunk::{Chunk, Sector};
use dmsnap_core::pure::status::InfoStatus;

use crate::scan::{slot_runs, Cow};

/// A range of origin chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Extent {
    /// First unit.
    pub start: u64,
    /// Units in the extent.
    pub length: u64,
}

/// Unit of [`changed`]'s extents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// 512-byte sectors.
    Sectors,
    /// Bytes.
    Bytes,
    /// Snapshot chunks.
    Chunks,
}

/// The origin chunks that have an exception, as sorted, joined extents of
/// chunks. These are the chunks where origin and snapshot may differ: an
/// exception is made when the origin is written (or the snapshot is).
pub fn changed_chunks(cow: &Cow) -> Vec<Extent> {
    let mut olds: Vec<Chunk> = cow.entries().map(|(_, _, e)| e.old).collect();
    olds.sort_unstable();
    olds.dedup();
    let mut out: Vec<Extent> = Vec::new();
    for c in olds {
        match out.last_mut() {
            Some(e) if e.start + e.length == c => e.length += 1,
            _ => out.push(Extent { start: c, length: 1 }),
        }
    }
    out
}

/// [`changed_chunks`] in `unit`, clipped to an origin of `origin_sectors`.
pub fn changed(cow: &Cow, unit: Unit, origin_sectors: Option<Sector>) -> Vec<Extent> {
    let shift = cow.chunk.shift();
    changed_chunks(cow)
        .into_iter()
        .filter_map(|e| {
            let (mut s, mut len) = (e.start << shift, e.length << shift);
            if let Some(limit) = origin_sectors {
                if s >= limit {
                    return None;
                }
                len = len.min(limit - s);
            }
            match unit {
                Unit::Sectors => {}
                Unit::Bytes => {
                    s <<= 9;
                    len <<= 9;
                }
                Unit::Chunks => {
                    s >>= shift;
                    len = len.div_ceil(1 << shift);
                }
            }
            Some(Extent { start: s, length: len })
        })
        .collect()
}

/// `usage`'s numbers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Usage {
    /// What `dmsetup status` prints for this COW as a fresh activation
    /// would load it: `<allocated>/<total> <metadata>` or `Invalid`.
    pub status: String,
    /// Chunk size in sectors.
    pub chunk_sectors: u32,
    /// Sectors in use, header and areas included.
    pub allocated_sectors: Sector,
    /// COW size in sectors.
    pub total_sectors: Sector,
    /// Sectors of header and metadata areas.
    pub metadata_sectors: Sector,
    /// What LVM shows as Data% (`_snap_target_percent()`): 0 when only
    /// metadata is used, else allocated / total.
    pub lvm_data_percent: f64,
    /// Live exceptions.
    pub exceptions: u64,
    /// Metadata areas in the list.
    pub areas: u64,
    /// Runs of consecutive chunks (each is one copy for a merge).
    pub runs: u64,
    /// `exceptions / runs`: 1.0 is fully fragmented.
    pub exceptions_per_run: f64,
    /// Chunks a merge still has to copy back (all exceptions).
    pub merge_chunks_left: u64,
    /// Sectors a merge still has to copy back.
    pub merge_sectors_left: Sector,
    /// Chunks more the COW can hold before it overflows.
    pub free_chunks: u64,
}

/// `usage` for a COW read without problems. `None` if its list is cut off.
pub fn usage(cow: &Cow) -> Option<Usage> {
    let state = cow.cursor()?;
    let u = state.usage(cow.cow_sectors());
    let status = InfoStatus::select(cow.header.valid, false, false, u).to_string();
    let exceptions = cow.exception_count();
    let runs: u64 = cow.areas.iter().map(|a| slot_runs(&a.entries).len() as u64).sum();
    let shift = cow.chunk.shift();
    Some(Usage {
        status,
        chunk_sectors: cow.chunk.sectors(),
        allocated_sectors: u.sectors_allocated,
        total_sectors: u.total_sectors,
        metadata_sectors: u.metadata_sectors,
        lvm_data_percent: if u.merge_finished() || u.total_sectors == 0 {
            0.0
        } else {
            100.0 * u.sectors_allocated as f64 / u.total_sectors as f64
        },
        exceptions,
        areas: cow.areas.len() as u64,
        runs,
        exceptions_per_run: if runs > 0 { exceptions as f64 / runs as f64 } else { 0.0 },
        merge_chunks_left: exceptions,
        merge_sectors_left: exceptions << shift,
        free_chunks: (u.total_sectors >> shift).saturating_sub(state.next_free()),
    })
}
