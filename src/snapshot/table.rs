// SPDX-License-Identifier: GPL-2.0

//! The table of completed exceptions: origin chunk -> COW chunk.
//!
//! Consecutive exceptions are compressed into runs. Like upstream's
//! `dm_exception_table`, a run never leaves an aligned group of
//! `2^GROUP_SHIFT` origin chunks, so hashing `old >> GROUP_SHIFT` finds the
//! run for any chunk it covers. Each bucket is a vector of 16-byte
//! [`PackedRun`]s sorted by origin chunk (a binary search, not a list
//! walk), and its runs are kept maximal: an exception that fills the gap
//! between two runs joins them. The list logic is pure
//! ([`crate::pure::runs`] and [`crate::pure::run_bucket`], host-tested); this file holds the vectors.
//!
//! A persistent store is loaded with a [`TableBuilder`]: exceptions are
//! appended in any order, and each bucket is sorted and joined once at the
//! end, which also finds duplicate origin chunks.

use kernel::prelude::*;

use crate::dm::kvec;
use crate::pure::chunk::Chunk;
use crate::pure::run_bucket::{self as runs, PackedRun, RunVec, TableError};
use crate::pure::runs::Run;

/// Origin chunks per hash group (upstream: `DM_CHUNK_CONSECUTIVE_BITS`).
pub(crate) const GROUP_SHIFT: u32 = runs::GROUP_SHIFT;

const MIN_BUCKETS: usize = 64;
const MAX_BUCKETS: usize = 1 << 16;

/// One bucket: runs sorted by origin chunk.
struct Bucket(KVec<PackedRun>);

impl RunVec for Bucket {
    fn runs(&self) -> &[PackedRun] {
        self.0.as_slice()
    }

    fn runs_mut(&mut self) -> &mut [PackedRun] {
        self.0.as_mut_slice()
    }

    fn push(&mut self, run: PackedRun) -> Result<(), TableError> {
        // Callers on I/O paths are inside a NOIO scope.
        self.0.push(run, GFP_KERNEL).map_err(|_| TableError::NoMem)
    }

    fn pop(&mut self) -> Option<PackedRun> {
        kvec::pop(&mut self.0)
    }
}

/// A bucket being bulk loaded. A group filled in order needs one run, so
/// the first allocation is exact; a second run means scattered exceptions,
/// and the vector jumps to 16 runs, then grows 4x at a time (a full group
/// of 256 scattered exceptions: four allocations, not nine). Each
/// allocation costs far more than the copy under a slow (emulated) CPU.
/// [`Bucket::shrink`] trims the slack when the load is finished.
struct LoadBucket<'a>(&'a mut Bucket);

impl RunVec for LoadBucket<'_> {
    fn runs(&self) -> &[PackedRun] {
        self.0.runs()
    }

    fn runs_mut(&mut self) -> &mut [PackedRun] {
        self.0.runs_mut()
    }

    fn push(&mut self, run: PackedRun) -> Result<(), TableError> {
        let v = &mut self.0 .0;
        let cap = v.capacity();
        if v.len() == cap {
            let target = match cap {
                0 => 1,
                1 => 16,
                c => c.saturating_mul(4),
            };
            // len == cap, so this reserves exactly `target`.
            v.reserve(target.saturating_sub(cap), GFP_KERNEL).map_err(|_| TableError::NoMem)?;
        }
        self.0.push(run)
    }

    fn pop(&mut self) -> Option<PackedRun> {
        self.0.pop()
    }
}

impl Bucket {
    /// Gives back capacity the runs do not need (the slack of 4x growth, or
    /// runs joined at the end of a bulk load): the vector is copied into
    /// one of its exact size when that at least halves it. On allocation
    /// failure it stays as it is.
    fn shrink(&mut self) {
        let len = self.0.len();
        if len > self.0.capacity() / 2 {
            return;
        }
        if len == 0 {
            self.0 = KVec::new();
            return;
        }
        let Ok(mut exact) = KVec::with_capacity(len, GFP_KERNEL) else {
            return;
        };
        if exact.extend_from_slice(self.0.as_slice(), GFP_KERNEL).is_ok() {
            self.0 = exact;
        }
    }
}

fn table_errno(e: TableError) -> Error {
    match e {
        TableError::Duplicate => EEXIST,
        TableError::NoMem => ENOMEM,
        TableError::Unrepresentable => EINVAL,
    }
}

/// Completed exceptions of one snapshot.
pub(crate) struct ExceptionTable {
    buckets: KVec<Bucket>,
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
            buckets.push(Bucket(KVec::new()), GFP_KERNEL)?;
        }
        Ok(Self { buckets, mask: n.saturating_sub(1), runs: 0, chunks: 0 })
    }

    fn bucket_index(&self, chunk: Chunk) -> usize {
        // Truncation is the hash.
        ((chunk >> GROUP_SHIFT) as usize) & self.mask
    }

    /// The COW chunk holding origin chunk `chunk`, if it has an exception.
    pub(crate) fn lookup(&self, chunk: Chunk) -> Option<Chunk> {
        let bucket = self.buckets.get(self.bucket_index(chunk))?;
        runs::sorted_lookup(bucket.runs(), chunk)
    }

    /// Adds the exception `old -> new`, extending a neighbouring run or
    /// joining two. `EEXIST` if `old` already has an exception (the table
    /// is then unchanged). Allocates with `GFP_KERNEL`: call inside a NOIO
    /// scope on I/O paths.
    pub(crate) fn insert(&mut self, old: Chunk, new: Chunk) -> Result {
        let index = self.bucket_index(old);
        let bucket = self.buckets.get_mut(index).ok_or(EINVAL)?;
        match runs::sorted_insert(bucket, old, new).map_err(table_errno)? {
            runs::Inserted::New => self.runs = self.runs.saturating_add(1),
            runs::Inserted::Joined => self.runs = self.runs.saturating_sub(1),
            runs::Inserted::Extended(_) => {}
        }
        self.chunks = self.chunks.saturating_add(1);
        Ok(())
    }

    /// Removes the exceptions of origin chunks `first .. first + count`
    /// (merge). Runs are trimmed or split; a split allocates.
    pub(crate) fn remove_range(&mut self, first: Chunk, count: u64) -> Result {
        let end = first.checked_add(count).ok_or(EINVAL)?;
        let mut chunk = first;
        while chunk < end {
            // One hash group at a time: runs never cross a group.
            let group_end = (chunk >> GROUP_SHIFT).saturating_add(1) << GROUP_SHIFT;
            let stop = if group_end == 0 { end } else { end.min(group_end) };
            let index = self.bucket_index(chunk);
            let bucket = self.buckets.get_mut(index).ok_or(EINVAL)?;
            let before = bucket.runs().len();
            let removed = runs::sorted_remove(bucket, chunk, stop).map_err(table_errno)?;
            let after = bucket.runs().len();
            self.runs = self.runs.saturating_add(after).saturating_sub(before);
            self.chunks = self.chunks.saturating_sub(removed);
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

/// Why [`TableBuilder`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BuildError {
    /// Two exceptions for one origin chunk.
    Duplicate,
    /// Out of memory (or a COW chunk no table can hold).
    NoMem,
}

impl From<TableError> for BuildError {
    fn from(e: TableError) -> Self {
        match e {
            TableError::Duplicate => Self::Duplicate,
            _ => Self::NoMem,
        }
    }
}

/// Builds a table from many exceptions in any order (loading a persistent
/// store): O(1) per exception, then one sort per bucket in
/// [`Self::finish`]. Nothing can be looked up until then.
pub(crate) struct TableBuilder {
    table: ExceptionTable,
}

impl TableBuilder {
    /// Starts from an empty `table`.
    pub(crate) fn new(table: ExceptionTable) -> Self {
        Self { table }
    }

    /// Adds the exceptions `old + i -> new + i` for every `i < len`, one
    /// bucket push per group of origin chunks the run touches. A duplicate
    /// `old` is only found by [`Self::finish`].
    pub(crate) fn add_run(&mut self, old: Chunk, new: Chunk, len: u32) -> Result<(), BuildError> {
        if len == 0 {
            return Ok(());
        }
        // The loader checked that the run does not wrap.
        let run = Run::new(old, new, len).ok_or(BuildError::NoMem)?;
        for part in runs::group_parts(run) {
            let index = self.table.bucket_index(part.old());
            let bucket = self.table.buckets.get_mut(index).ok_or(BuildError::NoMem)?;
            runs::unsorted_push_run(&mut LoadBucket(bucket), part.old(), part.new_chunk(), part.len())?;
            self.table.chunks = self.table.chunks.saturating_add(u64::from(part.len()));
        }
        Ok(())
    }

    /// Sorts and joins every bucket (the same runs as inserting the
    /// exceptions one by one would give) and trims spare capacity.
    pub(crate) fn finish(mut self) -> Result<ExceptionTable, BuildError> {
        // Room for one group's runs, for the O(n) sort (without it, each
        // bucket is heapsorted).
        let mut scratch = KVec::new();
        let _ = scratch.extend_with(runs::PACKED_MAX_LEN as usize, PackedRun::EMPTY, GFP_KERNEL);
        let mut total = 0usize;
        for bucket in self.table.buckets.iter_mut() {
            runs::sorted_finish(bucket, scratch.as_mut_slice())?;
            bucket.shrink();
            total = total.saturating_add(bucket.runs().len());
        }
        self.table.runs = total;
        Ok(self.table)
    }
}
