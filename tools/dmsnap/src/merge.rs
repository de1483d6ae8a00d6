// SPDX-License-Identifier: GPL-2.0
//! Offline merge: the kernel's `snapshot-merge` without the kernel.
//!
//! The state machine is the module's own ([`PersistentState`]'s merge
//! cursor), and each step follows the kernel's commit protocol:
//!
//! 1. copy the linear run at the tail of the current area, COW to origin;
//! 2. flush the origin;
//! 3. clear the run's slots in the area and write the area;
//! 4. flush the COW.
//!
//! A kill at any point leaves a COW whose list still holds every run not
//! yet flushed to the origin; the next run (of this tool or of the kernel)
//! copies those again, which is harmless because their COW chunks are
//! unchanged.

use std::io;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use dmsnap_core::pure::alloc::{MergeStep, PersistentState};
use dmsnap_core::pure::chunk::{Sector, SECTOR_SHIFT};
use dmsnap_core::pure::disk::{DiskException, DISK_EXCEPTION_SIZE};

use crate::dev::BlockIo;
use crate::scan::Cow;

/// Why a merge did not finish.
#[derive(Debug)]
pub enum MergeError {
    /// The COW or origin cannot be merged (nothing was written).
    Refused(String),
    /// An I/O error part-way; the COW is consistent, rerun to resume.
    Io(String),
}

impl std::fmt::Display for MergeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(s) => f.write_str(s),
            Self::Io(s) => write!(f, "{s} (the COW is consistent: run the merge again to resume)"),
        }
    }
}

/// Progress after each committed run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Chunks merged by this run of the tool.
    pub merged: u64,
    /// Chunks left in the COW.
    pub remaining: u64,
}

/// Options of a merge.
#[derive(Clone, Copy, Debug)]
pub struct MergeOptions {
    /// Largest run copied in one step, in chunks.
    pub max_run_chunks: NonZeroU32,
}

impl Default for MergeOptions {
    fn default() -> Self {
        Self { max_run_chunks: NonZeroU32::new(256).unwrap_or(NonZeroU32::MIN) }
    }
}

/// Check that `cow` can be merged into an origin of `origin_sectors`.
pub fn refuse_reason(cow: &Cow, origin_sectors: Sector) -> Option<String> {
    let chunk = cow.chunk;
    let past_end = |e: &DiskException| chunk.chunk_to_sector(e.old).is_none_or(|s| s >= origin_sectors);
    if let Some(last) = cow.entries().map(|(_, _, e)| e).filter(past_end).map(|e| e.old).max() {
        return Some(format!(
            "the snapshot has exceptions up to origin chunk {last}, past the end of the origin ({origin_sectors} sectors): wrong origin device?"
        ));
    }
    if !cow.is_clean() {
        return Some(format!(
            "the COW has {} problem(s); run `dmsnap check` (and `dmsnap repair`) first",
            cow.problems.len()
        ));
    }
    if !cow.header.valid {
        return Some("Snapshot is invalid: can't merge".into());
    }
    None
}

fn io_err(what: &str, e: io::Error) -> MergeError {
    MergeError::Io(format!("{what}: {e}"))
}

/// Merge `cow` (as read from `cow_dev`) into `origin`. `progress` is called
/// after every committed run.
pub fn merge(
    cow: &Cow,
    cow_dev: &mut dyn BlockIo,
    origin: &mut dyn BlockIo,
    opts: MergeOptions,
    mut progress: impl FnMut(Progress),
) -> Result<Progress, MergeError> {
    let origin_sectors = origin.len_bytes() >> SECTOR_SHIFT;
    if let Some(why) = refuse_reason(cow, origin_sectors) {
        return Err(MergeError::Refused(why));
    }
    let geom = cow.geometry();
    let chunk = cow.chunk;
    let chunk_bytes = chunk.bytes() as u64;
    // A run's buffer stays within 64 MiB.
    let cap = u32::try_from((64u64 << 20) / chunk_bytes).unwrap_or(u32::MAX).max(1);
    let opts = MergeOptions { max_run_chunks: opts.max_run_chunks.min(NonZeroU32::new(cap).unwrap_or(NonZeroU32::MIN)) };
    if u64::from(origin.logical_block_size()) > chunk_bytes {
        return Err(MergeError::Refused("the origin's logical block size exceeds the chunk size".into()));
    }
    // The kernel's cursor after loading this list, and its current area.
    let mut state = cow.cursor().ok_or_else(|| MergeError::Refused("the exception list does not end".into()))?;
    let mut area = vec![0u8; geom.area_bytes()];
    let current = state.current_area_location().ok_or_else(|| MergeError::Io("area out of range".into()))?;
    cow_dev.read_exact_at(&mut area, current * chunk_bytes).map_err(|e| io_err("reading an area", e))?;
    // Scrub the current area past the end of the list first: a torn area
    // write (of this tool or of a kernel merge) can leave live-looking
    // entries there, which commits after a later plain activation would
    // make part of the list again, pointing at reused chunks.
    if zero_past_list(&mut area, state.current_committed()) {
        write_area(cow_dev, &state, &area, chunk_bytes)?;
    }
    let mut done = Progress { merged: 0, remaining: cow.exception_count() };
    loop {
        match state.merge_step() {
            MergeStep::Finished => break,
            MergeStep::ReadPreviousArea { location, .. } => {
                cow_dev.read_exact_at(&mut area, location * chunk_bytes).map_err(|e| io_err("reading an area", e))?;
                state.enter_previous_area().map_err(|e| MergeError::Io(format!("{e:?}")))?;
            }
            MergeStep::Ready => {
                let Some(run) = state
                    .prepare_merge(&area, opts.max_run_chunks)
                    .map_err(|e| MergeError::Io(format!("planning: {e:?}")))?
                else {
                    break;
                };
                // 1. Copy (clipped to the origin's end, as the kernel does).
                if let Some(plan) = run.copy_plan(chunk, origin_sectors) {
                    // Whole chunks from the COW (its block size divides the
                    // chunk), the clipped length to the origin (which ends
                    // on one of its own blocks).
                    let mut data = vec![0u8; u64::from(run.count()) as usize * chunk.bytes()];
                    cow_dev.read_exact_at(&mut data, plan.src << SECTOR_SHIFT).map_err(|e| io_err("reading the COW", e))?;
                    let len = ((plan.sectors << SECTOR_SHIFT) as usize).min(data.len());
                    origin
                        .write_all_at(&data[..len], plan.dest << SECTOR_SHIFT)
                        .map_err(|e| io_err("writing the origin", e))?;
                }
                // 2. The origin holds the data durably before it leaves the list.
                origin.flush().map_err(|e| io_err("flushing the origin", e))?;
                // 3. Shorten the list in the area buffer.
                state.clear_merged(&mut area, run.count()).map_err(|e| MergeError::Io(format!("{e:?}")))?;
                // Everything after the new end of the list is zeroed too
                // (see the scrub above).
                zero_past_list(&mut area, state.current_committed() - run.count());
                // 3, 4. Write the area, flush the COW: durable before the next run.
                write_area(cow_dev, &state, &area, chunk_bytes)?;
                state.commit_merge(run.count()).map_err(|e| MergeError::Io(format!("{e:?}")))?;
                done.merged += u64::from(run.count());
                done.remaining = done.remaining.saturating_sub(u64::from(run.count()));
                progress(done);
            }
        }
    }
    Ok(done)
}

/// Zero the slots of `area` from `committed` on; whether any byte there
/// was not zero.
fn zero_past_list(area: &mut [u8], committed: u32) -> bool {
    let tail = area.get_mut(committed as usize * DISK_EXCEPTION_SIZE..).unwrap_or_default();
    let dirty = tail.iter().any(|b| *b != 0);
    tail.fill(0);
    dirty
}

/// Write `area` as the cursor's current area and flush the COW.
fn write_area(cow_dev: &mut dyn BlockIo, state: &PersistentState, area: &[u8], chunk_bytes: u64) -> Result<(), MergeError> {
    let loc = state.current_area_location().ok_or_else(|| MergeError::Io("area out of range".into()))?;
    cow_dev.write_all_at(area, loc * chunk_bytes).map_err(|e| io_err("writing the area", e))?;
    cow_dev.flush().map_err(|e| io_err("flushing the COW", e))
}

/// Prints progress lines to stderr at most once a second.
pub struct ProgressPrinter {
    start: Instant,
    last: Option<Instant>,
    total: u64,
}

impl ProgressPrinter {
    /// For a merge of `total` chunks.
    pub fn new(total: u64) -> Self {
        Self { start: Instant::now(), last: None, total }
    }

    /// The line for `p`.
    pub fn line(&self, p: Progress) -> String {
        let secs = self.start.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { p.merged as f64 / secs } else { 0.0 };
        let eta = if p.remaining == 0 {
            "0s".to_string()
        } else if rate > 0.0 {
            format!("{:.0}s", p.remaining as f64 / rate)
        } else {
            "-".to_string()
        };
        let pct = if self.total > 0 { 100.0 * (self.total - p.remaining) as f64 / self.total as f64 } else { 100.0 };
        format!(
            "merge: {}/{} chunks ({pct:.1}%), {} left, {rate:.0} chunks/s, eta {eta}",
            self.total - p.remaining,
            self.total,
            p.remaining
        )
    }

    /// Print `p` if a second has passed (always when it is the last).
    pub fn report(&mut self, p: Progress) {
        let now = Instant::now();
        if p.remaining == 0 || self.last.is_none_or(|l| now - l >= Duration::from_secs(1)) {
            self.last = Some(now);
            eprintln!("{}", self.line(p));
        }
    }
}
