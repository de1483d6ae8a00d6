// SPDX-License-Identifier: GPL-2.0
//! `repair`: write a new COW holding what is consistent in an old one.
//!
//! Every entry that `check` flags is dropped (the first of two duplicates
//! is kept), the list is cut at an area that cannot be read, and the kept
//! entries are packed into areas 0, 1, ... in their old order. The new COW
//! gets the old header, the packed areas and the data chunks of the kept
//! entries at their old places, so every kept exception still finds its
//! data. The old COW is only read.

use std::collections::HashSet;

use dmsnap_core::pure::disk::{write_entry, DiskException, Geometry};

use crate::dev::BlockIo;
use crate::scan::{Cow, Problem};

/// One decision, for the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// An entry was dropped for this problem.
    Dropped(Problem),
    /// The list was cut here; entries after it (if any) were never read.
    Truncated(Problem),
    /// The last kept entry was dropped because the area after a full area
    /// (which must hold the terminator) lies past the end of the COW.
    DroppedForTerminator { entry: DiskException },
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dropped(p) => write!(f, "dropped: {p}"),
            Self::Truncated(p) => write!(f, "truncated the list: {p}"),
            Self::DroppedForTerminator { entry } => write!(
                f,
                "dropped: exception origin chunk {} -> COW chunk {}: no room for the area that must end the list",
                entry.old, entry.new
            ),
        }
    }
}

/// What repair kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Kept entries, in list order.
    pub kept: Vec<DiskException>,
    /// Every decision made.
    pub decisions: Vec<Decision>,
    /// Entries read from the old COW.
    pub read: u64,
}

/// Decide what to keep. `cow_chunks` is the size of the new COW.
pub fn plan(cow: &Cow, cow_chunks: u64) -> Plan {
    let geom = cow.geometry();
    let mut bad: HashSet<(u64, u32)> = HashSet::new();
    let mut decisions = Vec::new();
    for p in &cow.problems {
        match (p.area, p.slot) {
            (Some(a), Some(s)) if !p.is_torn_area() => {
                if bad.insert((a, s)) {
                    decisions.push(Decision::Dropped(p.clone()));
                }
            }
            _ => decisions.push(Decision::Truncated(p.clone())),
        }
    }
    let mut kept: Vec<DiskException> = cow
        .entries()
        .filter(|(a, s, _)| !bad.contains(&(*a, *s)))
        .map(|(_, _, e)| e)
        .collect();
    // The new COW may be smaller than the old: entries whose data does not
    // fit are out of range there.
    kept.retain(|e| {
        let fits = e.new < cow_chunks;
        if !fits {
            decisions.push(Decision::Dropped(Problem {
                area: None,
                slot: None,
                entry: Some(*e),
                kind: crate::scan::ProblemKind::Entry(dmsnap_core::pure::disk::Corruption::NewChunkBeyondDevice),
            }));
        }
        fits
    });
    let epa = u64::from(geom.exceptions_per_area());
    while !kept.is_empty() && (kept.len() as u64) % epa == 0 {
        let next_area = kept.len() as u64 / epa;
        match geom.area_location(next_area) {
            Some(loc) if loc < cow_chunks => break,
            _ => {
                if let Some(entry) = kept.pop() {
                    decisions.push(Decision::DroppedForTerminator { entry });
                }
            }
        }
    }
    Plan { kept, decisions, read: cow.exception_count() }
}

/// The area chunks holding `entries` packed from area 0, plus the area
/// holding the terminator: `(location, bytes)`.
pub fn pack_areas(geom: Geometry, entries: &[DiskException]) -> Vec<(u64, Vec<u8>)> {
    let epa = geom.exceptions_per_area() as usize;
    let bytes = geom.area_bytes();
    let mut areas = Vec::new();
    let mut index = 0u64;
    let mut chunks = entries.chunks(epa);
    loop {
        let mut buf = vec![0u8; bytes];
        let part = chunks.next().unwrap_or(&[]);
        for (slot, e) in part.iter().enumerate() {
            let _ = write_entry(geom, &mut buf, slot as u32, *e);
        }
        let Some(loc) = geom.area_location(index) else { break };
        areas.push((loc, buf));
        if part.len() < epa {
            break;
        }
        index += 1;
    }
    areas
}

/// Write the new COW: header, packed areas, and the kept entries' data.
pub fn write(old: &Cow, old_dev: &dyn BlockIo, plan: &Plan, new_dev: &mut dyn BlockIo) -> std::io::Result<()> {
    let geom = old.geometry();
    let chunk_bytes = geom.area_bytes() as u64;
    if new_dev.len_bytes() < 2 * chunk_bytes {
        return Err(std::io::Error::other(format!(
            "the output holds {} bytes, too small for a COW with {}-byte chunks (header and one area)",
            new_dev.len_bytes(),
            chunk_bytes
        )));
    }
    let mut buf = vec![0u8; geom.area_bytes()];
    // Data first, in runs of the old list's order.
    let mut sorted: Vec<u64> = plan.kept.iter().map(|e| e.new).collect();
    sorted.sort_unstable();
    let max_run = (8u64 << 20) / chunk_bytes;
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut len = 1u64;
        while i + (len as usize) < sorted.len() && sorted[i + len as usize] == start + len && len < max_run.max(1) {
            len += 1;
        }
        let mut data = vec![0u8; (len * chunk_bytes) as usize];
        old_dev.read_exact_at(&mut data, start * chunk_bytes)?;
        new_dev.write_all_at(&data, start * chunk_bytes)?;
        i += len as usize;
    }
    for (loc, area) in pack_areas(geom, &plan.kept) {
        new_dev.write_all_at(&area, loc * chunk_bytes)?;
    }
    new_dev.flush()?;
    old.header.encode(&mut buf).map_err(|_| std::io::Error::other("chunk too small"))?;
    new_dev.write_all_at(&buf, 0)?;
    new_dev.flush()
}
