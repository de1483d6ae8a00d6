// SPDX-License-Identifier: GPL-2.0
//! Property tests of the exception table's buckets (sorted lists of packed
//! runs, `src/pure/runs.rs`) against a BTreeMap model: incremental inserts
//! with joins, bulk loading (append, then sort and join), duplicate
//! detection and range removal. Every list must equal the canonical one:
//! the model cut into maximal runs that stay inside a 256-chunk group.

use std::collections::BTreeMap;

use dmsnap_core::pure::run_bucket::{
    sort_runs, sorted_finish, sorted_insert, sorted_lookup, sorted_remove, unsorted_push, unsorted_push_run, Inserted, PackedRun,
    RunVec, TableError, GROUP_SHIFT, PACKED_MAX_LEN, PACKED_NEW_LIMIT,
};
use dmsnap_core::pure::runs::{Run, Side};
use proptest::prelude::*;

/// A bucket backed by a `Vec`, optionally refusing to grow past `limit`.
#[derive(Default, Debug)]
struct Bucket {
    v: Vec<PackedRun>,
    limit: Option<usize>,
}

impl RunVec for Bucket {
    fn runs(&self) -> &[PackedRun] {
        &self.v
    }
    fn runs_mut(&mut self) -> &mut [PackedRun] {
        &mut self.v
    }
    fn push(&mut self, run: PackedRun) -> Result<(), TableError> {
        if self.limit.is_some_and(|l| self.v.len() >= l) {
            return Err(TableError::NoMem);
        }
        self.v.push(run);
        Ok(())
    }
    fn pop(&mut self) -> Option<PackedRun> {
        self.v.pop()
    }
}

fn triples(b: &Bucket) -> Vec<(u64, u64, u32)> {
    b.v.iter().map(|p| {
        let r = p.unpack();
        (r.old(), r.new_chunk(), r.len())
    })
    .collect()
}

/// The model as maximal in-group runs, sorted.
fn canonical(model: &BTreeMap<u64, u64>) -> Vec<(u64, u64, u32)> {
    let mut out: Vec<(u64, u64, u32)> = Vec::new();
    for (&o, &n) in model {
        if let Some(last) = out.last_mut() {
            let (lo, ln, len) = *last;
            if lo + u64::from(len) == o && ln + u64::from(len) == n && lo >> GROUP_SHIFT == o >> GROUP_SHIFT {
                last.2 += 1;
                continue;
            }
        }
        out.push((o, n, 1));
    }
    out
}

/// Distinct origin chunks over a few groups (starting just below a group
/// boundary), mapped piecewise linearly (blocks of consecutive chunks with
/// consecutive COW chunks, so gaps filled later must join runs), then
/// shuffled: the insertion order.
fn mapping() -> impl Strategy<Value = Vec<(u64, u64)>> {
    (
        0u64..4,
        proptest::collection::vec((1u64..40, 0u64..4, 0u64..3), 1..30),
    )
        .prop_map(|(base_group, blocks)| {
            let mut old = (base_group << GROUP_SHIFT) + 250;
            let mut out = Vec::new();
            let mut new_base = 10_000u64;
            for (len, gap, jump) in blocks {
                new_base += jump * 1000;
                for k in 0..len {
                    out.push((old + k, new_base + old + k));
                }
                old += len + gap;
            }
            out
        })
        .prop_shuffle()
}

/// Scratch for the O(n) sort, or none (heapsort only).
fn scratch(slots: bool) -> Vec<PackedRun> {
    vec![PackedRun::EMPTY; if slots { PACKED_MAX_LEN as usize } else { 0 }]
}

fn check_shape(b: &Bucket) -> Result<(), TestCaseError> {
    for w in b.v.windows(2) {
        prop_assert!(w[0].last_old() < w[1].old(), "unsorted or overlapping: {:?}", w);
    }
    for r in &b.v {
        prop_assert!(r.len() <= PACKED_MAX_LEN);
        prop_assert_eq!(r.old() >> GROUP_SHIFT, r.last_old() >> GROUP_SHIFT, "run leaves its group");
    }
    Ok(())
}

proptest! {
    #[test]
    fn incremental_inserts_are_canonical(work in mapping()) {
        let mut b = Bucket::default();
        let mut model = BTreeMap::new();
        for &(old, new) in &work {
            let before = b.v.len();
            let how = sorted_insert(&mut b, old, new).unwrap();
            model.insert(old, new);
            match how {
                Inserted::New => prop_assert_eq!(b.v.len(), before + 1),
                Inserted::Extended(_) => prop_assert_eq!(b.v.len(), before),
                Inserted::Joined => prop_assert_eq!(b.v.len() + 1, before),
            }
        }
        check_shape(&b)?;
        prop_assert_eq!(triples(&b), canonical(&model));
        let hi = model.keys().last().copied().unwrap_or(0) + 300;
        for c in 0..hi {
            prop_assert_eq!(sorted_lookup(&b.v, c), model.get(&c).copied(), "chunk {}", c);
        }
        // Every chunk again: refused, list unchanged.
        let snapshot = b.v.clone();
        for &(old, new) in &work {
            prop_assert_eq!(sorted_insert(&mut b, old, new.wrapping_add(7)), Err(TableError::Duplicate));
        }
        prop_assert_eq!(&b.v, &snapshot);
    }

    #[test]
    fn bulk_load_equals_incremental(work in mapping(), slots: bool) {
        let mut bulk = Bucket::default();
        let mut inc = Bucket::default();
        for &(old, new) in &work {
            unsorted_push(&mut bulk, old, new).unwrap();
            sorted_insert(&mut inc, old, new).unwrap();
        }
        sorted_finish(&mut bulk, &mut scratch(slots)).unwrap();
        check_shape(&bulk)?;
        prop_assert_eq!(&bulk.v, &inc.v);
    }

    /// Pushing whole runs (the loader's path) gives the same finished
    /// bucket as pushing their entries one by one, in any order of the
    /// runs, and finds the same duplicates.
    #[test]
    fn bulk_run_push_equals_entry_push(
        runs in proptest::collection::vec((0u64..1500, 0u32..700, 1u64..100_000), 0..12),
        slots: bool,
    ) {
        let mut by_run = Bucket::default();
        let mut by_entry = Bucket::default();
        for &(old, len, new) in &runs {
            unsorted_push_run(&mut by_run, old, new, len).unwrap();
            for k in 0..u64::from(len) {
                unsorted_push(&mut by_entry, old + k, new + k).unwrap();
            }
        }
        // Whole groups cost one run each, not one per entry.
        let pieces: u64 = runs.iter().filter(|r| r.1 > 0)
            .map(|&(old, len, _)| ((old + u64::from(len) - 1) >> GROUP_SHIFT) - (old >> GROUP_SHIFT) + 1).sum();
        prop_assert!(by_run.v.len() as u64 <= pieces);
        let a = sorted_finish(&mut by_run, &mut scratch(slots));
        let b = sorted_finish(&mut by_entry, &mut scratch(slots));
        prop_assert_eq!(a, b);
        if a.is_ok() {
            check_shape(&by_run)?;
            prop_assert_eq!(&by_run.v, &by_entry.v);
        }
    }

    #[test]
    fn bulk_load_in_order_needs_one_run_per_group(len in 1u64..2000, start in 0u64..600) {
        let mut b = Bucket::default();
        for k in 0..len {
            unsorted_push(&mut b, start + k, 5 + k).unwrap();
        }
        // Appending in order only ever grows the last run.
        let groups = ((start + len - 1) >> GROUP_SHIFT) - (start >> GROUP_SHIFT) + 1;
        prop_assert_eq!(b.v.len() as u64, groups);
        sorted_finish(&mut b, &mut scratch(true)).unwrap();
        prop_assert_eq!(b.v.len() as u64, groups);
    }

    #[test]
    fn bulk_load_finds_duplicates(work in mapping(), pick in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), slots: bool) {
        let dup = work[pick.index(work.len())];
        let mut w = work.clone();
        // The same origin chunk again, anywhere, to any COW chunk.
        w.insert(at.index(w.len() + 1), (dup.0, dup.1 + (pick.index(3) as u64)));
        let mut b = Bucket::default();
        for &(old, new) in &w {
            unsorted_push(&mut b, old, new).unwrap();
        }
        prop_assert_eq!(sorted_finish(&mut b, &mut scratch(slots)), Err(TableError::Duplicate));
    }

    #[test]
    fn removal_matches_model(work in mapping(), cuts in proptest::collection::vec((0u64..1500, 0u64..300), 1..8)) {
        let mut b = Bucket::default();
        let mut model = BTreeMap::new();
        for &(old, new) in &work {
            sorted_insert(&mut b, old, new).unwrap();
            model.insert(old, new);
        }
        for (first, count) in cuts {
            let end = first + count;
            let gone = sorted_remove(&mut b, first, end).unwrap();
            let want: Vec<u64> = model.range(first..end).map(|(&k, _)| k).collect();
            prop_assert_eq!(gone, want.len() as u64);
            for k in want {
                model.remove(&k);
            }
            check_shape(&b)?;
            prop_assert_eq!(triples(&b), canonical(&model));
        }
        // What is left still takes inserts (the removed chunks again).
        for &(old, new) in &work {
            if let std::collections::btree_map::Entry::Vacant(e) = model.entry(old) {
                e.insert(new);
                sorted_insert(&mut b, old, new).unwrap();
            }
        }
        prop_assert_eq!(triples(&b), canonical(&model));
    }

    #[test]
    fn failed_growth_changes_nothing(work in mapping(), limit in 0usize..20) {
        let mut b = Bucket { limit: Some(limit), ..Bucket::default() };
        let mut model = BTreeMap::new();
        for &(old, new) in &work {
            let snapshot = b.v.clone();
            match sorted_insert(&mut b, old, new) {
                Ok(_) => {
                    model.insert(old, new);
                }
                Err(e) => {
                    prop_assert_eq!(e, TableError::NoMem);
                    prop_assert_eq!(&b.v, &snapshot);
                }
            }
        }
        prop_assert_eq!(triples(&b), canonical(&model));
    }

    /// Both sorts against std's, on runs of one group (the slot sort) or
    /// several (the heapsort), with or without repeated starts.
    #[test]
    fn sort_runs_sorts(starts in proptest::collection::vec(0u64..600, 0..400), one_group: bool, slots: bool) {
        let mut runs: Vec<PackedRun> = starts
            .iter()
            .enumerate()
            .map(|(i, &o)| {
                let old = if one_group { 256 * 7 + o % 256 } else { o };
                PackedRun::pack(&Run::new(old, i as u64, 1 + (o % 3) as u32).unwrap()).unwrap()
            })
            .collect();
        let mut want: Vec<u64> = runs.iter().map(|r| r.old()).collect();
        want.sort_unstable();
        let mut all: Vec<PackedRun> = runs.clone();
        sort_runs(&mut runs, &mut scratch(slots));
        prop_assert_eq!(runs.iter().map(|r| r.old()).collect::<Vec<_>>(), want);
        // A permutation: the same runs.
        all.sort_by_key(|r| (r.old(), r.unpack().new_chunk()));
        runs.sort_by_key(|r| (r.old(), r.unpack().new_chunk()));
        prop_assert_eq!(runs, all);
    }

    #[test]
    fn pack_round_trips(old in any::<u64>(), new in 0..PACKED_NEW_LIMIT, len in 1u32..=PACKED_MAX_LEN) {
        match Run::new(old, new, len) {
            Some(run) => match PackedRun::pack(&run) {
                Some(p) => {
                    prop_assert_eq!(p.unpack(), run);
                    prop_assert_eq!(p.len(), len);
                    prop_assert_eq!(p.old(), old);
                    prop_assert_eq!(p.last_old(), run.last_old());
                }
                None => prop_assert!(run.last_new() >= PACKED_NEW_LIMIT),
            },
            None => prop_assert!(old.checked_add(u64::from(len) - 1).is_none()),
        }
    }
}

/// A large random permutation (a full scattered COW), bulk loaded.
#[test]
fn bulk_load_of_a_permutation() {
    let n = 20_000u64;
    let mut olds: Vec<u64> = (0..n).collect();
    // A fixed LCG shuffle.
    let mut x = 1u64;
    for i in (1..olds.len()).rev() {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        olds.swap(i, (x >> 33) as usize % (i + 1));
    }
    // 16 buckets: several groups per bucket (heapsort); 128: one (slots).
    for (nb, slots) in [(16u64, false), (16, true), (128, false), (128, true)] {
        let mut buckets: Vec<Bucket> = (0..nb).map(|_| Bucket::default()).collect();
        let at = |o: u64| ((o >> GROUP_SHIFT) % nb) as usize;
        let mut model = BTreeMap::new();
        for (k, &o) in olds.iter().enumerate() {
            let new = 2 + k as u64;
            unsorted_push(&mut buckets[at(o)], o, new).unwrap();
            model.insert(o, new);
        }
        for b in &mut buckets {
            sorted_finish(b, &mut scratch(slots)).unwrap();
            check_shape(b).unwrap();
        }
        for (&o, &n) in &model {
            assert_eq!(sorted_lookup(&buckets[at(o)].v, o), Some(n));
        }
        assert_eq!(buckets.iter().map(|b| b.v.len()).sum::<usize>(), canonical(&model).len());
    }
}

#[test]
fn packed_run_is_16_bytes() {
    assert_eq!(std::mem::size_of::<PackedRun>(), 16);
}

#[test]
fn pack_limits() {
    let too_long = Run::new(0, 0, PACKED_MAX_LEN + 1).unwrap();
    assert_eq!(PackedRun::pack(&too_long), None);
    let edge = Run::new(7, PACKED_NEW_LIMIT - 3, 3).unwrap();
    assert_eq!(PackedRun::pack(&edge).map(|p| p.unpack()), Some(edge));
    let past = Run::new(7, PACKED_NEW_LIMIT - 3, 4).unwrap();
    assert_eq!(PackedRun::pack(&past), None);
    let mut b = Bucket::default();
    assert_eq!(sorted_insert(&mut b, 1, PACKED_NEW_LIMIT), Err(TableError::Unrepresentable));
    assert_eq!(unsorted_push(&mut b, 1, u64::MAX), Err(TableError::Unrepresentable));
    assert!(b.v.is_empty());
    // The top origin chunk is fine.
    assert_eq!(sorted_insert(&mut b, u64::MAX, 3), Ok(Inserted::New));
    assert_eq!(sorted_insert(&mut b, u64::MAX - 1, 2), Ok(Inserted::Extended(Side::Front)));
    assert_eq!(sorted_lookup(&b.v, u64::MAX), Some(3));
    assert_eq!(sorted_remove(&mut b, u64::MAX - 1, u64::MAX), Ok(1));
    assert_eq!(triples(&b), vec![(u64::MAX, 3, 1)]);
}

#[test]
fn gap_filled_joins_two_runs() {
    let mut b = Bucket::default();
    assert_eq!(sorted_insert(&mut b, 10, 100), Ok(Inserted::New));
    assert_eq!(sorted_insert(&mut b, 12, 102), Ok(Inserted::New));
    assert_eq!(sorted_insert(&mut b, 13, 103), Ok(Inserted::Extended(Side::Back)));
    assert_eq!(sorted_insert(&mut b, 9, 99), Ok(Inserted::Extended(Side::Front)));
    assert_eq!(sorted_insert(&mut b, 11, 101), Ok(Inserted::Joined));
    assert_eq!(triples(&b), vec![(9, 99, 5)]);
    // A gap filled with the wrong COW chunk joins nothing.
    let mut b = Bucket::default();
    sorted_insert(&mut b, 10, 100).unwrap();
    sorted_insert(&mut b, 12, 102).unwrap();
    assert_eq!(sorted_insert(&mut b, 11, 500), Ok(Inserted::New));
    assert_eq!(b.v.len(), 3);
    // Never across a group boundary.
    let g = 1u64 << GROUP_SHIFT;
    let mut b = Bucket::default();
    sorted_insert(&mut b, g - 2, 1).unwrap();
    sorted_insert(&mut b, g, 3).unwrap();
    assert_eq!(sorted_insert(&mut b, g - 1, 2), Ok(Inserted::Extended(Side::Back)));
    assert_eq!(triples(&b), vec![(g - 2, 1, 2), (g, 3, 1)]);
}

#[test]
fn removal_splits_a_joined_run() {
    let mut b = Bucket::default();
    for k in [0u64, 2, 4, 1, 3] {
        sorted_insert(&mut b, 20 + k, 40 + k).unwrap();
    }
    assert_eq!(triples(&b), vec![(20, 40, 5)]);
    assert_eq!(sorted_remove(&mut b, 22, 23), Ok(1));
    assert_eq!(triples(&b), vec![(20, 40, 2), (23, 43, 2)]);
    // Across both pieces, trimming each.
    assert_eq!(sorted_remove(&mut b, 21, 24), Ok(2));
    assert_eq!(triples(&b), vec![(20, 40, 1), (24, 44, 1)]);
    // A split that cannot grow the list changes nothing.
    let mut one = Bucket { v: vec![], limit: None };
    sorted_insert(&mut one, 30, 60).unwrap();
    sorted_insert(&mut one, 31, 61).unwrap();
    sorted_insert(&mut one, 32, 62).unwrap();
    one.limit = Some(1);
    assert_eq!(sorted_remove(&mut one, 31, 32), Err(TableError::NoMem));
    assert_eq!(triples(&one), vec![(30, 60, 3)]);
    assert_eq!(sorted_remove(&mut b, 0, 100), Ok(2));
    assert!(b.v.is_empty());
    assert_eq!(sorted_remove(&mut b, 0, 100), Ok(0));
    assert_eq!(sorted_remove(&mut b, 5, 5), Ok(0));
}
