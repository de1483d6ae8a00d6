// SPDX-License-Identifier: GPL-2.0
//! The exception table's buckets: sorted lists of packed runs (upstream's
//! hash chains of `dm_exception`s, as sorted vectors).

use super::chunk::Chunk;
use super::runs::{Run, Side};

/// Origin chunks per group of the exception table: a run never leaves an
/// aligned group of `2^GROUP_SHIFT` chunks, so a table hashing
/// `old >> GROUP_SHIFT` finds the run of any chunk it covers (upstream:
/// `DM_CHUNK_CONSECUTIVE_BITS`).
pub const GROUP_SHIFT: u32 = 8;

/// Longest [`PackedRun`]: a whole group.
pub const PACKED_MAX_LEN: u32 = 1 << GROUP_SHIFT;

/// COW chunks a [`PackedRun`] can address (56 bits). A block device has
/// fewer than 2^55 sectors (its size in bytes is an `loff_t`), so every
/// real COW chunk fits.
pub const PACKED_NEW_LIMIT: u64 = 1 << 56;

const LEN_SHIFT: u32 = 56;
const NEW_MASK: u64 = PACKED_NEW_LIMIT - 1;

/// A [`Run`] of at most [`PACKED_MAX_LEN`] chunks in 16 bytes: the length
/// minus one in the top 8 bits of the COW chunk, as upstream's
/// `struct dm_exception` does (`dm_consecutive_chunk_count()`), without its
/// list head. The element of the exception table's buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PackedRun {
    old: Chunk,
    /// `(len - 1) << 56 | new`.
    new_len: u64,
}

impl PackedRun {
    /// A placeholder (the one-chunk run `0 -> 0`) for filling buffers.
    pub const EMPTY: Self = Self { old: 0, new_len: 0 };

    /// Packs `run`; `None` if it is longer than [`PACKED_MAX_LEN`] or
    /// reaches COW chunk [`PACKED_NEW_LIMIT`].
    pub const fn pack(run: &Run) -> Option<Self> {
        if run.len > PACKED_MAX_LEN || run.last_new() >= PACKED_NEW_LIMIT {
            return None;
        }
        Some(Self {
            old: run.old,
            new_len: (run.extra() << LEN_SHIFT) | run.new,
        })
    }

    /// The run (which satisfies [`Run`]'s invariants: packing checked them).
    pub const fn unpack(&self) -> Run {
        Run {
            old: self.old,
            new: self.new_len & NEW_MASK,
            len: self.len(),
        }
    }

    /// First origin chunk.
    pub const fn old(&self) -> Chunk {
        self.old
    }

    /// Number of chunks, 1 to [`PACKED_MAX_LEN`].
    pub const fn len(&self) -> u32 {
        ((self.new_len >> LEN_SHIFT) as u32).saturating_add(1)
    }

    /// Always `false`; present for API symmetry with `len()`.
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// Last origin chunk (inclusive).
    pub const fn last_old(&self) -> Chunk {
        self.unpack().last_old()
    }

    /// COW chunk holding origin chunk `chunk`, if covered.
    pub const fn remap(&self, chunk: Chunk) -> Option<Chunk> {
        self.unpack().remap(chunk)
    }
}

/// Why a sorted-run operation refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// The origin chunk already has an exception (corrupt metadata at load).
    Duplicate,
    /// The COW chunk does not fit a [`PackedRun`] (see [`PACKED_NEW_LIMIT`]).
    Unrepresentable,
    /// The vector could not grow.
    NoMem,
}

/// How [`sorted_insert`] stored an exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// A neighbouring run grew at one end.
    Extended(Side),
    /// The exception filled the gap between two runs, which became one.
    Joined,
    /// A new one-chunk run.
    New,
}

/// A growable vector of packed runs (`KVec` in the module, `Vec` in the
/// host tests): the storage of one bucket. All allocation is the
/// implementation's.
pub trait RunVec {
    /// The runs.
    fn runs(&self) -> &[PackedRun];
    /// The runs, mutable.
    fn runs_mut(&mut self) -> &mut [PackedRun];
    /// Appends `run`; `Err(TableError::NoMem)` if the vector cannot grow.
    fn push(&mut self, run: PackedRun) -> Result<(), TableError>;
    /// Removes the last run.
    fn pop(&mut self) -> Option<PackedRun>;
}

/// Whether origin chunks `a` and `b` are in the same group.
const fn same_group(a: Chunk, b: Chunk) -> bool {
    a >> GROUP_SHIFT == b >> GROUP_SHIFT
}

/// In a list sorted by origin chunk with disjoint runs: `Ok(i)` if run `i`
/// covers `chunk`, else `Err(i)` with `i` the index of the first run after
/// it (where a run starting at `chunk` would go). A binary search.
pub fn sorted_find(runs: &[PackedRun], chunk: Chunk) -> Result<usize, usize> {
    let i = runs.partition_point(|r| r.old <= chunk);
    match i.checked_sub(1) {
        Some(p) if runs.get(p).is_some_and(|r| r.unpack().contains(chunk)) => Ok(p),
        _ => Err(i),
    }
}

/// The COW chunk for origin chunk `chunk` in a sorted list.
pub fn sorted_lookup(runs: &[PackedRun], chunk: Chunk) -> Option<Chunk> {
    let i = sorted_find(runs, chunk).ok()?;
    runs.get(i)?.remap(chunk)
}

/// Replaces `v[at..]` by `v[at..]` rotated so that the last element moves
/// to `at`: with a push first, an insertion at `at`.
fn move_last_to<V: RunVec + ?Sized>(v: &mut V, at: usize) {
    if let Some(tail) = v.runs_mut().get_mut(at..) {
        tail.rotate_right(1);
    }
}

/// Removes `count` runs starting at `at`, keeping the order of the rest.
fn remove_at<V: RunVec + ?Sized>(v: &mut V, at: usize, count: usize) {
    if count == 0 {
        return;
    }
    if let Some(tail) = v.runs_mut().get_mut(at..) {
        let count = count.min(tail.len());
        tail.rotate_left(count);
        for _ in 0..count {
            let _ = v.pop();
        }
    }
}

/// Adds the exception `old -> new` to a sorted list, keeping it sorted and
/// every run maximal within its group: the exception extends the run that
/// ends just before it or starts just after it, and when it fills the gap
/// between both they are joined. An exception for a chunk that already has
/// one is refused (`Duplicate`) and leaves the list unchanged. O(log n)
/// comparisons, plus one element move of the tail for a new run.
pub fn sorted_insert<V: RunVec + ?Sized>(v: &mut V, old: Chunk, new: Chunk) -> Result<Inserted, TableError> {
    let single = PackedRun::pack(&Run::single(old, new)).ok_or(TableError::Unrepresentable)?;
    let i = match sorted_find(v.runs(), old) {
        Ok(_) => return Err(TableError::Duplicate),
        Err(i) => i,
    };
    let prev_at = i.wrapping_sub(1);
    let prev = v.runs().get(prev_at).map(PackedRun::unpack);
    let next = v.runs().get(i).map(PackedRun::unpack);
    // The run before, grown at its back by `old -> new`.
    let back = prev.and_then(|mut p| {
        (same_group(p.old, old) && p.try_extend(old, new) == Some(Side::Back)).then_some(p)
    });
    // The run after, grown at its front.
    let front = next.and_then(|mut n| {
        (same_group(n.old, old) && n.try_extend(old, new) == Some(Side::Front)).then_some(n)
    });
    if let (Some(mut joined), Some(_), Some(n)) = (back, front, next) {
        if joined.try_coalesce(&n) {
            let packed = PackedRun::pack(&joined).ok_or(TableError::Unrepresentable)?;
            if let Some(slot) = v.runs_mut().get_mut(prev_at) {
                *slot = packed;
            }
            remove_at(v, i, 1);
            return Ok(Inserted::Joined);
        }
    }
    match (back, front) {
        (Some(grown), _) => {
            let packed = PackedRun::pack(&grown).ok_or(TableError::Unrepresentable)?;
            if let Some(slot) = v.runs_mut().get_mut(prev_at) {
                *slot = packed;
            }
            Ok(Inserted::Extended(Side::Back))
        }
        (None, Some(grown)) => {
            let packed = PackedRun::pack(&grown).ok_or(TableError::Unrepresentable)?;
            if let Some(slot) = v.runs_mut().get_mut(i) {
                *slot = packed;
            }
            Ok(Inserted::Extended(Side::Front))
        }
        (None, None) => {
            v.push(single)?;
            move_last_to(v, i);
            Ok(Inserted::New)
        }
    }
}

/// Bulk loading, step 1: appends the exception `old -> new` in any order,
/// growing the last run when it continues it (a sequentially filled COW
/// then needs one run per group). Duplicates are found by
/// [`sorted_finish`]. O(1).
pub fn unsorted_push<V: RunVec + ?Sized>(v: &mut V, old: Chunk, new: Chunk) -> Result<(), TableError> {
    if let Some(last) = v.runs_mut().last_mut() {
        let mut run = last.unpack();
        if same_group(run.old, old) && run.try_extend(old, new).is_some() {
            if let Some(packed) = PackedRun::pack(&run) {
                *last = packed;
                return Ok(());
            }
        }
    }
    let single = PackedRun::pack(&Run::single(old, new)).ok_or(TableError::Unrepresentable)?;
    v.push(single)
}

/// Bulk loading, step 1 for a run: what [`unsorted_push`] of
/// `old + i -> new + i` for every `i < len`, in that order, would give
/// once [`sorted_finish`] has run (the runs are cut at group boundaries
/// and the last one grows when the run continues it). O(1 + len / 256).
pub fn unsorted_push_run<V: RunVec + ?Sized>(v: &mut V, old: Chunk, new: Chunk, len: u32) -> Result<(), TableError> {
    let Some(run) = Run::new(old, new, len) else {
        return if len == 0 { Ok(()) } else { Err(TableError::Unrepresentable) };
    };
    for part in group_parts(run) {
        if let Some(last) = v.runs_mut().last_mut() {
            let mut prev = last.unpack();
            if same_group(prev.old, part.old) && prev.try_coalesce(&part) {
                if let Some(packed) = PackedRun::pack(&prev) {
                    *last = packed;
                    continue;
                }
            }
        }
        v.push(PackedRun::pack(&part).ok_or(TableError::Unrepresentable)?)?;
    }
    Ok(())
}

/// The parts of `run` that lie in each aligned group of [`PACKED_MAX_LEN`]
/// origin chunks, in order (a run never leaves its group in the table).
pub fn group_parts(run: Run) -> impl Iterator<Item = Run> {
    let mut rest = Some(run);
    core::iter::from_fn(move || {
        let run = rest?;
        let room = PACKED_MAX_LEN.saturating_sub((run.old & u64::from(PACKED_MAX_LEN - 1)) as u32);
        let take = run.len.min(room);
        // Within the run, so no overflow (Run's invariant).
        rest = (take < run.len).then(|| Run {
            old: run.old.saturating_add(u64::from(take)),
            new: run.new.saturating_add(u64::from(take)),
            len: run.len.saturating_sub(take),
        });
        Some(Run { old: run.old, new: run.new, len: take })
    })
}

/// Sorts runs by origin chunk. When they all lie in one group (the usual
/// bucket) and `scratch` holds [`PACKED_MAX_LEN`] runs, each run goes to
/// the slot of its offset in the group: O(n). Otherwise (runs of several
/// groups share the bucket, or two runs start at one chunk) a heapsort.
pub fn sort_runs(runs: &mut [PackedRun], scratch: &mut [PackedRun]) {
    if !slot_sort(runs, scratch) {
        sort_by_old(runs);
    }
}

/// The O(n) case of [`sort_runs`]; `false` (and `runs` unchanged) when it
/// does not apply.
fn slot_sort(runs: &mut [PackedRun], scratch: &mut [PackedRun]) -> bool {
    let Some(first) = runs.first() else {
        return true;
    };
    let group = first.old >> GROUP_SHIFT;
    if scratch.len() < PACKED_MAX_LEN as usize || runs.iter().any(|r| r.old >> GROUP_SHIFT != group) {
        return false;
    }
    // One bit per chunk of the group: which slots hold a run.
    let mut present = [0u64; (PACKED_MAX_LEN / 64) as usize];
    for r in runs.iter() {
        let off = (r.old & u64::from(PACKED_MAX_LEN - 1)) as usize;
        let (Some(word), Some(slot)) = (present.get_mut(off / 64), scratch.get_mut(off)) else {
            return false;
        };
        let bit = 1u64 << (off % 64);
        if *word & bit != 0 {
            // Two runs start at one chunk: corrupt, and the heapsort
            // leaves them next to each other for the overlap check.
            return false;
        }
        *word |= bit;
        *slot = *r;
    }
    let mut out = runs.iter_mut();
    for (w, &word) in present.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            let off = w.saturating_mul(64).saturating_add(bits.trailing_zeros() as usize);
            bits &= bits.saturating_sub(1);
            if let (Some(dst), Some(src)) = (out.next(), scratch.get(off)) {
                *dst = *src;
            }
        }
    }
    true
}

/// Heapsort by origin chunk: in place, O(n log n) even for a bucket of
/// thousands of runs, and without core's sort (whose panic on an
/// inconsistent order the kernel's objtool does not know as noreturn).
fn sort_by_old(runs: &mut [PackedRun]) {
    let n = runs.len();
    let mut start = n / 2;
    while start > 0 {
        start = start.saturating_sub(1);
        sift_down(runs, start, n);
    }
    let mut end = n;
    while end > 1 {
        end = end.saturating_sub(1);
        swap(runs, 0, end);
        sift_down(runs, 0, end);
    }
}

/// Restores the max-heap property below `root` in `runs[..end]`.
fn sift_down(runs: &mut [PackedRun], mut root: usize, end: usize) {
    let key = |runs: &[PackedRun], i: usize| runs.get(i).map_or(0, |r| r.old);
    loop {
        let mut child = root.saturating_mul(2).saturating_add(1);
        if child >= end {
            return;
        }
        let right = child.saturating_add(1);
        if right < end && key(runs, child) < key(runs, right) {
            child = right;
        }
        if key(runs, root) >= key(runs, child) {
            return;
        }
        swap(runs, root, child);
        root = child;
    }
}

/// Swaps two runs (nothing if either index is out of range).
fn swap(runs: &mut [PackedRun], a: usize, b: usize) {
    if let (Some(&x), Some(&y)) = (runs.get(a), runs.get(b)) {
        if let Some(slot) = runs.get_mut(a) {
            *slot = y;
        }
        if let Some(slot) = runs.get_mut(b) {
            *slot = x;
        }
    }
}

/// Bulk loading, step 2: sorts the runs appended by [`unsorted_push`] and
/// joins adjacent ones of the same group, which gives the same list as
/// [`sorted_insert`] of the same exceptions in any order. Two runs that
/// cover one origin chunk give `Duplicate` (the list is then left in an
/// unspecified order: drop it). In place; `scratch` is as for
/// [`sort_runs`] (may be empty).
pub fn sorted_finish<V: RunVec + ?Sized>(v: &mut V, scratch: &mut [PackedRun]) -> Result<(), TableError> {
    let runs = v.runs_mut();
    sort_runs(runs, scratch);
    let mut kept = 0usize;
    for read in 0..runs.len() {
        let Some(cur) = runs.get(read).copied() else { break };
        let Some(top) = kept.checked_sub(1).and_then(|k| runs.get_mut(k)) else {
            // The first run.
            if let Some(slot) = runs.get_mut(kept) {
                *slot = cur;
            }
            kept = kept.saturating_add(1);
            continue;
        };
        if cur.old <= top.last_old() {
            return Err(TableError::Duplicate);
        }
        let mut run = top.unpack();
        let joined = same_group(run.old, cur.last_old()) && run.try_coalesce(&cur.unpack());
        match (joined, PackedRun::pack(&run)) {
            (true, Some(packed)) => *top = packed,
            _ => {
                if let Some(slot) = runs.get_mut(kept) {
                    *slot = cur;
                }
                kept = kept.saturating_add(1);
            }
        }
    }
    let extra = v.runs().len().saturating_sub(kept);
    for _ in 0..extra {
        let _ = v.pop();
    }
    Ok(())
}

/// Removes the exceptions of origin chunks `first .. end` from a sorted
/// list (merge): runs inside are dropped, runs across an end are trimmed,
/// and a run across both is split in two (the only case that grows the
/// list). Returns the number of chunks removed.
pub fn sorted_remove<V: RunVec + ?Sized>(v: &mut V, first: Chunk, end: Chunk) -> Result<u64, TableError> {
    if end <= first {
        return Ok(0);
    }
    let count = end.saturating_sub(first);
    let runs = v.runs();
    // Sorted and disjoint, so last_old() is increasing as well.
    let i = runs.partition_point(|r| r.last_old() < first);
    let j = runs.partition_point(|r| r.old < end);
    let (Some(head), Some(tail)) = (runs.get(i), j.checked_sub(1).and_then(|t| runs.get(t))) else {
        return Ok(0);
    };
    if j <= i {
        return Ok(0);
    }
    let covered: u64 = runs.get(i..j).map_or(0, |s| s.iter().map(|r| u64::from(r.len())).sum());
    let left = head.unpack().subtract(first, count).0;
    let right = tail.unpack().subtract(first, count).1;
    let kept = left.map_or(0, |r| u64::from(r.len)).saturating_add(right.map_or(0, |r| u64::from(r.len)));
    let pack = |r: Option<Run>| r.and_then(|r| PackedRun::pack(&r));
    let (left, right) = (pack(left), pack(right));
    let removed = covered.saturating_sub(kept);
    match (left, right) {
        (Some(l), Some(r)) if j == i.saturating_add(1) => {
            // One run split in two: grow first, so a failure changes nothing.
            v.push(r)?;
            if let Some(slot) = v.runs_mut().get_mut(i) {
                *slot = l;
            }
            move_last_to(v, i.saturating_add(1));
        }
        _ => {
            let mut at = i;
            for piece in [left, right].into_iter().flatten() {
                if let Some(slot) = v.runs_mut().get_mut(at) {
                    *slot = piece;
                }
                at = at.saturating_add(1);
            }
            remove_at(v, at, j.saturating_sub(at));
        }
    }
    Ok(removed)
}
