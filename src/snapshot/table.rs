// SPDX-License-Identifier: GPL-2.0

//! The table of completed exceptions: origin chunk -> COW chunk.
//!
//! Consecutive exceptions are compressed into [`Run`]s. Like upstream's
//! `dm_exception_table`, a run never leaves an aligned group of
//! `2^GROUP_SHIFT` origin chunks, so hashing `old >> GROUP_SHIFT` finds the
//! run for any chunk it covers. Unlike upstream, a run's length is a `u32`,
//! not packed into the top 8 bits of the COW chunk number, so runs are only
//! bounded by the group size.

use kernel::prelude::*;

use crate::dm::kvec;
use crate::pure::chunk::Chunk;
use crate::pure::runs::Run;

/// Origin chunks per hash group (upstream: `DM_CHUNK_CONSECUTIVE_BITS`).
pub(crate) const GROUP_SHIFT: u32 = 8;

const MIN_BUCKETS: usize = 64;
const MAX_BUCKETS: usize = 1 << 16;

/// Completed exceptions of one snapshot.
pub(crate) struct ExceptionTable {
    buckets: KVec<KVec<Run>>,
    /// `buckets.len() - 1`; the length is a power of two.
    mask: usize,
    runs: usize,
    chunks: u64,
}

impl ExceptionTable {
    /// A table sized for an origin of `origin_chunks` chunks.
    pub(crate) fn new(origin_chunks: u64) -> Result<Self> {
        let groups = usize::try_from(origin_chunks >> GROUP_SHIFT).unwrap_or(MAX_BUCKETS);
        let n = groups
            .saturating_add(1)
            .checked_next_power_of_two()
            .unwrap_or(MAX_BUCKETS)
            .clamp(MIN_BUCKETS, MAX_BUCKETS);
        let mut buckets = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            buckets.push(KVec::new(), GFP_KERNEL)?;
        }
        Ok(Self { buckets, mask: n - 1, runs: 0, chunks: 0 })
    }

    fn bucket_index(&self, chunk: Chunk) -> usize {
        // Truncation is the hash.
        ((chunk >> GROUP_SHIFT) as usize) & self.mask
    }

    /// The COW chunk holding origin chunk `chunk`, if it has an exception.
    pub(crate) fn lookup(&self, chunk: Chunk) -> Option<Chunk> {
        let bucket = self.buckets.get(self.bucket_index(chunk))?;
        bucket.iter().find_map(|run| run.remap(chunk))
    }

    /// Adds the exception `old -> new`, extending a run when it continues
    /// one. Allocates with `GFP_KERNEL`: call inside a NOIO scope on I/O
    /// paths.
    pub(crate) fn insert(&mut self, old: Chunk, new: Chunk) -> Result {
        let index = self.bucket_index(old);
        let bucket = self.buckets.get_mut(index).ok_or(EINVAL)?;
        for run in bucket.iter_mut() {
            if run.try_extend_in_group(old, new, GROUP_SHIFT).is_some() {
                self.chunks += 1;
                return Ok(());
            }
        }
        bucket.push(Run::single(old, new), GFP_KERNEL)?;
        self.runs += 1;
        self.chunks += 1;
        Ok(())
    }

    /// Removes the exceptions of origin chunks `first .. first + count`
    /// (merge). Runs are trimmed or split; a split allocates.
    pub(crate) fn remove_range(&mut self, first: Chunk, count: u64) -> Result {
        let end = first.checked_add(count).ok_or(EINVAL)?;
        let mut chunk = first;
        while chunk < end {
            // One hash group at a time: runs never cross a group.
            let group_end = ((chunk >> GROUP_SHIFT) + 1) << GROUP_SHIFT;
            let stop = end.min(group_end);
            let index = self.bucket_index(chunk);
            let bucket = self.buckets.get_mut(index).ok_or(EINVAL)?;
            let mut i = 0;
            while let Some(run) = bucket.get(i).copied() {
                let (left, right) = run.subtract(chunk, stop - chunk);
                let removed = u64::from(run.len())
                    - left.map_or(0, |r| u64::from(r.len()))
                    - right.map_or(0, |r| u64::from(r.len()));
                self.chunks = self.chunks.saturating_sub(removed);
                match (left, right) {
                    (None, None) => {
                        let _ = kvec::remove(bucket, i);
                        self.runs = self.runs.saturating_sub(1);
                        continue;
                    }
                    (Some(keep), None) | (None, Some(keep)) => {
                        if let Some(slot) = bucket.get_mut(i) {
                            *slot = keep;
                        }
                    }
                    (Some(l), Some(r)) => {
                        if let Some(slot) = bucket.get_mut(i) {
                            *slot = l;
                        }
                        bucket.push(r, GFP_KERNEL)?;
                        self.runs += 1;
                    }
                }
                i += 1;
            }
            chunk = stop;
        }
        Ok(())
    }

    /// Number of runs stored (memory use is proportional to this).
    #[cfg_attr(not(CONFIG_KUNIT), allow(dead_code))]
    pub(crate) fn runs(&self) -> usize {
        self.runs
    }

    /// Number of chunks with an exception.
    #[cfg_attr(not(CONFIG_KUNIT), allow(dead_code))]
    pub(crate) fn chunks(&self) -> u64 {
        self.chunks
    }
}
