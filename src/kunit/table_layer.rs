// SPDX-License-Identifier: GPL-2.0

//! The completed-exception table against a simple model.

use kernel::prelude::*;

use crate::snapshot::table::{BuildError, ExceptionTable, TableBuilder, GROUP_SHIFT};

fn sequential_exceptions_compress_into_runs() {
    let Ok(mut t) = ExceptionTable::new(1 << 20) else {
        kassert!(false);
        return;
    };
    // 1000 consecutive chunks copied in order: one run per 256-chunk
    // group they touch.
    for (old, new) in (5000..6000u64).zip(2u64..) {
        kassert!(t.insert(old, new).is_ok());
    }
    kassert_eq!(t.chunks(), 1000);
    let groups = ((5000 + 999) >> GROUP_SHIFT) - (5000 >> GROUP_SHIFT) + 1;
    kassert_eq!(t.runs() as u64, groups);
    for (old, new) in (5000..6000u64).zip(2u64..) {
        kassert_eq!(t.lookup(old), Some(new));
    }
    kassert_eq!(t.lookup(4999), None);
    kassert_eq!(t.lookup(6000), None);
}

fn scattered_exceptions_match_model() {
    let Ok(mut t) = ExceptionTable::new(4096) else {
        kassert!(false);
        return;
    };
    // A deterministic permutation of origin chunks, allocated COW chunks
    // in order; remember the model in a plain array.
    let mut model = [u64::MAX; 512];
    let mut x: u64 = 12345;
    let mut next_new = 2u64;
    for _ in 0..400 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let old = (x >> 33) % 512;
        let Some(slot) = model.get_mut(old as usize) else { continue };
        if *slot != u64::MAX {
            continue;
        }
        *slot = next_new;
        kassert!(t.insert(old, next_new).is_ok());
        next_new = next_new.saturating_add(1);
    }
    for (old, want) in model.iter().enumerate() {
        let got = t.lookup(old as u64);
        if *want == u64::MAX {
            kassert!(got.is_none());
        } else {
            kassert_eq!(got, Some(*want));
        }
    }
    // Backwards-adjacent inserts extend a run at its front.
    let Ok(mut t) = ExceptionTable::new(4096) else {
        kassert!(false);
        return;
    };
    kassert!(t.insert(101, 51).is_ok());
    kassert!(t.insert(100, 50).is_ok());
    kassert_eq!(t.runs(), 1);
    kassert_eq!(t.lookup(100), Some(50));
    kassert_eq!(t.lookup(101), Some(51));
}

fn runs_never_cross_a_group() {
    let Ok(mut t) = ExceptionTable::new(4096) else {
        kassert!(false);
        return;
    };
    let edge = 1u64 << GROUP_SHIFT;
    kassert!(t.insert(edge - 1, 10).is_ok());
    kassert!(t.insert(edge, 11).is_ok());
    kassert_eq!(t.runs(), 2);
    kassert_eq!(t.lookup(edge - 1), Some(10));
    kassert_eq!(t.lookup(edge), Some(11));
}

/// Origin chunks of the model tests: 16 groups.
const SPAN: u64 = 16 << GROUP_SHIFT;
const NONE: u64 = u64::MAX;

/// A deterministic shuffle of `0..SPAN` (LCG, Fisher-Yates).
fn shuffled(seed: u64) -> Option<KVec<u64>> {
    let mut v = KVec::with_capacity(SPAN as usize, GFP_KERNEL).ok()?;
    for i in 0..SPAN {
        v.push(i, GFP_KERNEL).ok()?;
    }
    let mut x = seed;
    for i in (1..v.len()).rev() {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        // i + 1 >= 2, so the remainder always exists.
        let j = ((x >> 33) as usize).checked_rem(i.saturating_add(1)).unwrap_or(0);
        if let (Some(&a), Some(&b)) = (v.get(i), v.get(j)) {
            if let Some(slot) = v.get_mut(i) {
                *slot = b;
            }
            if let Some(slot) = v.get_mut(j) {
                *slot = a;
            }
        }
    }
    Some(v)
}

/// COW chunk of `old` in the model mappings: linear in blocks of 37
/// chunks, so a scattered insertion order fills gaps between runs and
/// must join them.
fn mapped(old: u64) -> u64 {
    1000u64.saturating_add(old).saturating_add((old / 37).saturating_mul(5))
}

/// The runs a table of the model must hold: maximal, inside a group.
fn canonical_runs(model: &[u64]) -> usize {
    let mut runs = 0usize;
    let mut prev: Option<(u64, u64)> = None;
    for (old, &new) in model.iter().enumerate() {
        let old = old as u64;
        if new == NONE {
            prev = None;
            continue;
        }
        let joins = matches!(prev, Some((po, pn))
            if po.checked_add(1) == Some(old)
                && pn.checked_add(1) == Some(new)
                && po >> GROUP_SHIFT == old >> GROUP_SHIFT);
        if !joins {
            runs = runs.saturating_add(1);
        }
        prev = Some((old, new));
    }
    runs
}

fn matches_model(t: &ExceptionTable, model: &[u64]) -> bool {
    let mut ok = true;
    for (old, &new) in model.iter().enumerate() {
        let want = if new == NONE { None } else { Some(new) };
        ok &= t.lookup(old as u64) == want;
    }
    ok && t.lookup(SPAN).is_none() && t.runs() == canonical_runs(model)
}

fn random_inserts_match_model() {
    let (Ok(mut t), Some(order), Ok(mut model)) =
        (ExceptionTable::new(1 << 16), shuffled(7), KVec::from_elem(NONE, SPAN as usize, GFP_KERNEL))
    else {
        kassert!(false);
        return;
    };
    // Three quarters of the chunks, in scattered order.
    for &old in order.iter().take((SPAN * 3 / 4) as usize) {
        kassert!(t.insert(old, mapped(old)).is_ok());
        if let Some(slot) = model.get_mut(old as usize) {
            *slot = mapped(old);
        }
    }
    kassert_eq!(t.chunks(), SPAN * 3 / 4);
    kassert!(matches_model(&t, &model));
    // The rest: every gap fills, and each group ends as a few runs.
    for &old in order.iter().skip((SPAN * 3 / 4) as usize) {
        kassert!(t.insert(old, mapped(old)).is_ok());
        if let Some(slot) = model.get_mut(old as usize) {
            *slot = mapped(old);
        }
    }
    kassert!(matches_model(&t, &model));
    kassert!(t.runs() < 16 * 10);
}

fn gap_fill_joins_runs() {
    let Ok(mut t) = ExceptionTable::new(4096) else {
        kassert!(false);
        return;
    };
    kassert!(t.insert(10, 100).is_ok());
    kassert!(t.insert(12, 102).is_ok());
    kassert!(t.insert(14, 104).is_ok());
    kassert_eq!(t.runs(), 3);
    kassert!(t.insert(11, 101).is_ok());
    kassert_eq!(t.runs(), 2);
    kassert!(t.insert(13, 103).is_ok());
    kassert_eq!(t.runs(), 1);
    for (old, new) in (10..15u64).zip(100u64..) {
        kassert_eq!(t.lookup(old), Some(new));
    }
    // The right chunk with the wrong COW chunk joins nothing.
    kassert!(t.insert(16, 106).is_ok());
    kassert!(t.insert(15, 300).is_ok());
    kassert_eq!(t.runs(), 3);
    kassert_eq!(t.lookup(15), Some(300));
}

fn remove_range_splits_joined_runs() {
    let Ok(mut t) = ExceptionTable::new(4096) else {
        kassert!(false);
        return;
    };
    // 250..262 maps linearly but crosses a group at 256: two runs,
    // each joined from scattered inserts.
    for k in [0u64, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11] {
        kassert!(t.insert(k.saturating_add(250), k.saturating_add(500)).is_ok());
    }
    kassert_eq!(t.runs(), 2);
    kassert_eq!(t.chunks(), 12);
    // A hole in the middle of the first run splits it.
    kassert!(t.remove_range(252, 2).is_ok());
    kassert_eq!(t.runs(), 3);
    kassert_eq!(t.chunks(), 10);
    kassert_eq!(t.lookup(251), Some(501));
    kassert_eq!(t.lookup(252), None);
    kassert_eq!(t.lookup(253), None);
    kassert_eq!(t.lookup(254), Some(504));
    // Across the group boundary: trims both sides.
    kassert!(t.remove_range(255, 3).is_ok());
    kassert_eq!(t.chunks(), 7);
    kassert_eq!(t.lookup(254), Some(504));
    kassert_eq!(t.lookup(255), None);
    kassert_eq!(t.lookup(257), None);
    kassert_eq!(t.lookup(258), Some(508));
    // Refill the hole: joined again.
    kassert!(t.insert(252, 502).is_ok());
    kassert!(t.insert(253, 503).is_ok());
    kassert_eq!(t.lookup(253), Some(503));
    kassert_eq!(t.runs(), 2);
    kassert!(t.remove_range(0, 1 << 20).is_ok());
    kassert_eq!(t.runs(), 0);
    kassert_eq!(t.chunks(), 0);
    kassert_eq!(t.lookup(250), None);
}

fn duplicates_are_refused() {
    let Ok(mut t) = ExceptionTable::new(4096) else {
        kassert!(false);
        return;
    };
    kassert!(t.insert(5, 7).is_ok());
    kassert!(t.insert(6, 8).is_ok());
    kassert_eq!(t.insert(5, 9), Err(EEXIST));
    kassert_eq!(t.insert(6, 8), Err(EEXIST));
    kassert_eq!(t.lookup(5), Some(7));
    kassert_eq!(t.chunks(), 2);
    kassert_eq!(t.runs(), 1);
    // Bulk loading finds them when it finishes.
    let Ok(t) = ExceptionTable::new(4096) else {
        kassert!(false);
        return;
    };
    let mut b = TableBuilder::new(t);
    kassert!(b.add_run(5, 7, 1).is_ok());
    kassert!(b.add_run(900, 20, 1).is_ok());
    kassert!(b.add_run(6, 8, 1).is_ok());
    kassert!(b.add_run(6, 30, 1).is_ok());
    kassert!(matches!(b.finish(), Err(BuildError::Duplicate)));
}

fn bulk_load_matches_model() {
    let (Ok(t), Some(order), Ok(mut model)) =
        (ExceptionTable::new(1 << 16), shuffled(99), KVec::from_elem(NONE, SPAN as usize, GFP_KERNEL))
    else {
        kassert!(false);
        return;
    };
    let mut b = TableBuilder::new(t);
    for &old in order.iter().take((SPAN / 2) as usize) {
        kassert!(b.add_run(old, mapped(old), 1).is_ok());
        if let Some(slot) = model.get_mut(old as usize) {
            *slot = mapped(old);
        }
    }
    // Runs too, as a sequentially filled COW gives: the free stretches
    // of every other block of 37 (some cross a group boundary).
    let mut old = 0;
    while old < SPAN {
        // `old + len`; every chunk here is below SPAN.
        let at = |len: u32| old.saturating_add(u64::from(len));
        let mut len = 0u32;
        while (old / 37) % 2 == 0
            && at(len) < SPAN
            && model.get(at(len) as usize) == Some(&NONE)
            && mapped(at(len)) == mapped(old).saturating_add(u64::from(len))
        {
            len = len.saturating_add(1);
        }
        if len == 0 {
            old = at(1);
            continue;
        }
        kassert!(b.add_run(old, mapped(old), len).is_ok());
        for k in old..at(len) {
            if let Some(slot) = model.get_mut(k as usize) {
                *slot = mapped(k);
            }
        }
        old = at(len);
    }
    let Ok(mut t) = b.finish() else {
        kassert!(false);
        return;
    };
    kassert!(matches_model(&t, &model));
    // The loaded table takes commits like any other.
    for old in 0..SPAN {
        if model.get(old as usize) == Some(&NONE) {
            kassert!(t.insert(old, mapped(old)).is_ok());
            if let Some(slot) = model.get_mut(old as usize) {
                *slot = mapped(old);
            }
        }
    }
    kassert!(matches_model(&t, &model));
    kassert_eq!(t.chunks(), SPAN);
}

kunit_suite!(
    dm_snapshot_rs_exception_table,
    [
        sequential_exceptions_compress_into_runs,
        scattered_exceptions_match_model,
        runs_never_cross_a_group,
        random_inserts_match_model,
        gap_fill_joins_runs,
        remove_range_splits_joined_runs,
        duplicates_are_refused,
        bulk_load_matches_model,
    ]
);
