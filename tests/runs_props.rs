// SPDX-License-Identifier: GPL-2.0
//! Property tests for consecutive-chunk runs against a HashMap model.

use std::collections::HashMap;

use dmsnap_core::pure::chunk::ChunkSize;
use dmsnap_core::pure::runs::{Removed, Run, RunError, Side};
use proptest::prelude::*;

/// Test-only exception table: a flat list of runs, first-fit extension,
/// like `dm_insert_exception()` over one big bucket.
#[derive(Default)]
struct Table {
    runs: Vec<Run>,
    group_shift: Option<u32>,
}

impl Table {
    fn insert(&mut self, old: u64, new: u64) -> Option<Side> {
        for r in &mut self.runs {
            let grown = match self.group_shift {
                Some(s) => r.try_extend_in_group(old, new, s),
                None => r.try_extend(old, new),
            };
            if grown.is_some() {
                return grown;
            }
        }
        self.runs.push(Run::single(old, new));
        None
    }

    fn lookup(&self, chunk: u64) -> Option<u64> {
        let mut hits = self.runs.iter().filter_map(|r| r.remap(chunk));
        let first = hits.next();
        assert!(hits.next().is_none(), "chunk {chunk} covered twice");
        first
    }

    /// `__remove_single_exception_chunk()`.
    fn remove(&mut self, chunk: u64) -> Result<(), RunError> {
        let pos = self
            .runs
            .iter()
            .position(|r| r.contains(chunk))
            .ok_or(RunError::NotInRun)?;
        match self.runs[pos].remove_chunk(chunk)? {
            Removed::Emptied => {
                self.runs.swap_remove(pos);
            }
            Removed::Trimmed => {}
        }
        Ok(())
    }
}

/// Distinct old chunks in a small window, cut into blocks of consecutive
/// chunks and the blocks shuffled. COW chunks are handed out in that order,
/// like the allocator does, with random jumps to break some runs. Some
/// blocks are then inserted in reverse, so runs also grow at the front.
fn workload() -> impl Strategy<Value = Vec<(u64, u64)>> {
    (
        proptest::collection::btree_set(0u64..200, 0..120),
        proptest::collection::vec((any::<bool>(), any::<bool>(), 0u8..4), 120),
    )
        .prop_flat_map(|(set, flags)| {
            let olds: Vec<u64> = set.into_iter().collect();
            let mut blocks: Vec<Vec<u64>> = Vec::new();
            for (i, &o) in olds.iter().enumerate() {
                let (_, _, cut) = flags[i];
                match blocks.last_mut() {
                    Some(b) if cut != 0 && b.last() == Some(&(o - 1)) => b.push(o),
                    _ => blocks.push(vec![o]),
                }
            }
            (Just(blocks).prop_shuffle(), Just(flags))
        })
        .prop_map(|(blocks, flags)| {
            let mut next = 2u64;
            let mut out = Vec::new();
            for (bi, block) in blocks.into_iter().enumerate() {
                let mut b: Vec<(u64, u64)> = block
                    .into_iter()
                    .map(|old| {
                        if flags[old as usize % 120].1 && old % 7 == 0 {
                            next += 1000;
                        }
                        next += 1;
                        (old, next - 1)
                    })
                    .collect();
                if flags[bi % 120].0 {
                    b.reverse();
                }
                out.extend(b);
            }
            out
        })
}

/// Pairs in `work` that could share a run: (o, n) and (o + 1, n + 1).
fn links(work: &[(u64, u64)]) -> usize {
    let set: std::collections::HashSet<(u64, u64)> = work.iter().copied().collect();
    work.iter()
        .filter(|&&(o, n)| set.contains(&(o + 1, n + 1)))
        .count()
}

proptest! {
    #[test]
    fn table_remaps_like_hashmap(work in workload(), grouped: bool) {
        let mut t = Table { group_shift: if grouped { Some(3) } else { None }, ..Table::default() };
        let mut model = HashMap::new();
        for &(old, new) in &work {
            t.insert(old, new);
            model.insert(old, new);
        }
        for c in 0..210u64 {
            prop_assert_eq!(t.lookup(c), model.get(&c).copied(), "chunk {}", c);
        }
        prop_assert_eq!(t.runs.iter().map(|r| u64::from(r.len())).sum::<u64>(), work.len() as u64);
        if !grouped && links(&work) > 0 {
            // Some adjacent pair exists, so some extension must have happened.
            prop_assert!(t.runs.len() < work.len(), "no run formed");
        }
        if grouped {
            for r in &t.runs {
                prop_assert_eq!(r.old() >> 3, r.last_old() >> 3);
            }
        }
    }

    /// Merge removes chunks in reverse insertion order; that always hits an
    /// end of a run, as upstream relies on.
    #[test]
    fn reverse_removal_never_hits_middle(work in workload()) {
        let mut t = Table::default();
        let mut model = HashMap::new();
        for &(old, new) in &work {
            t.insert(old, new);
            model.insert(old, new);
        }
        for &(old, _) in work.iter().rev() {
            prop_assert_eq!(t.remove(old), Ok(()));
            model.remove(&old);
            prop_assert_eq!(t.lookup(old), None);
            if old > 0 {
                prop_assert_eq!(t.lookup(old - 1), model.get(&(old - 1)).copied());
            }
            prop_assert_eq!(t.lookup(old + 1), model.get(&(old + 1)).copied());
        }
        prop_assert!(t.runs.is_empty());
    }

    #[test]
    fn subtract_matches_model(old in 0u64..100, new in 2u64..1000, len in 1u32..50, first in 0u64..160, count in 0u64..60) {
        let r = Run::new(old, new, len).expect("valid");
        let (left, right) = r.subtract(first, count);
        for c in 0..200u64 {
            let removed = c >= first && c < first + count;
            let want = if removed { None } else { r.remap(c) };
            let got_l = left.and_then(|x| x.remap(c));
            let got_r = right.and_then(|x| x.remap(c));
            prop_assert!(got_l.is_none() || got_r.is_none());
            prop_assert_eq!(got_l.or(got_r), want, "chunk {}", c);
        }
        if let (Some(l), Some(rr)) = (left, right) {
            prop_assert!(l.last_old() < rr.old());
        }
    }

    #[test]
    fn remove_chunk_semantics(old in 0u64..100, new in 2u64..1000, len in 1u32..10, off in 0u64..12) {
        let mut r = Run::new(old, new, len).expect("valid");
        let before = r;
        let c = old + off;
        let res = r.remove_chunk(c);
        if off >= u64::from(len) {
            prop_assert_eq!(res, Err(RunError::NotInRun));
            prop_assert_eq!(r, before);
        } else if len == 1 {
            prop_assert_eq!(res, Ok(Removed::Emptied));
        } else if off == 0 {
            prop_assert_eq!(res, Ok(Removed::Trimmed));
            prop_assert_eq!((r.old(), r.new_chunk(), r.len()), (old + 1, new + 1, len - 1));
        } else if off == u64::from(len) - 1 {
            prop_assert_eq!(res, Ok(Removed::Trimmed));
            prop_assert_eq!((r.old(), r.new_chunk(), r.len()), (old, new, len - 1));
        } else {
            prop_assert_eq!(res, Err(RunError::InMiddle));
            prop_assert_eq!(r, before);
            let (l, rr) = before.split_around(c).expect("covered");
            prop_assert_eq!(l.map(|x| x.len()), Some(off as u32));
            prop_assert_eq!(rr.map(|x| x.old()), Some(c + 1));
        }
    }

    #[test]
    fn split_and_coalesce_roundtrip(old in 0u64..1000, new in 0u64..1000, len in 2u32..100, n in 1u32..100) {
        let r = Run::new(old, new, len).expect("valid");
        match r.split_at(n) {
            Some((mut a, b)) => {
                prop_assert!(n < len);
                prop_assert_eq!(a.len() + b.len(), len);
                prop_assert!(a.try_coalesce(&b));
                prop_assert_eq!(a, r);
            }
            None => prop_assert!(n >= len),
        }
    }

    #[test]
    fn remap_sector_matches_formula(shift in 0u32..8, old in 0u64..1000, new in 0u64..1000, len in 1u32..20, sector in 0u64..(1u64 << 20)) {
        let cs = ChunkSize::from_shift(shift).expect("shift");
        let r = Run::new(old, new, len).expect("valid");
        let chunk = sector >> shift;
        let want = if chunk >= old && chunk < old + u64::from(len) {
            // remap_exception(): (new + (chunk - old)) << shift | (sector & mask)
            Some(((new + (chunk - old)) << shift) | (sector & ((1 << shift) - 1)))
        } else {
            None
        };
        prop_assert_eq!(r.remap_sector(cs, sector), want);
    }
}

#[test]
fn extension_edges() {
    let mut r = Run::single(5, 10);
    assert_eq!(r.try_extend(6, 11), Some(Side::Back));
    assert_eq!(r.try_extend(4, 9), Some(Side::Front));
    assert_eq!((r.old(), r.new_chunk(), r.len()), (4, 9, 3));
    assert_eq!(r.try_extend(8, 12), None);
    assert_eq!(r.try_extend(7, 13), None);
    // No wrap below zero or above u64::MAX.
    let mut z = Run::single(0, 0);
    assert_eq!(z.try_extend(u64::MAX, u64::MAX), None);
    let mut top = Run::single(u64::MAX, u64::MAX);
    assert_eq!(top.try_extend(0, 0), None);
    assert_eq!(top.last_old(), u64::MAX);
    assert!(Run::new(u64::MAX, 0, 2).is_none());
    assert!(Run::new(0, 0, 0).is_none());
    // Length cap.
    let mut big = Run::new(0, 0, u32::MAX).expect("fits");
    assert_eq!(
        big.try_extend(u64::from(u32::MAX), u64::from(u32::MAX)),
        None
    );
    // Group limit as upstream's hash_shift 8: 255 -> 256 crosses a group.
    let mut g = Run::single(255, 1000);
    assert_eq!(g.try_extend_in_group(256, 1001, 8), None);
    assert_eq!(g.try_extend_in_group(254, 999, 8), Some(Side::Front));
    assert_eq!(g.try_extend_in_group(256, 1001, 64), Some(Side::Back));
}

/// The workload generator must exercise both directions of extension.
#[test]
fn workload_covers_both_sides() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut back, mut front, mut total) = (0usize, 0usize, 0usize);
    for _ in 0..200 {
        let work = workload().new_tree(&mut runner).expect("tree").current();
        let mut t = Table::default();
        for &(o, n) in &work {
            match t.insert(o, n) {
                Some(Side::Back) => back += 1,
                Some(Side::Front) => front += 1,
                None => {}
            }
        }
        total += work.len();
    }
    assert!(back > total / 10, "back {back} of {total}");
    assert!(front > total / 20, "front {front} of {total}");
}
