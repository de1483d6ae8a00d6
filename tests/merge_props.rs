// SPDX-License-Identifier: GPL-2.0
//! Merge planning against a naive model of `persistent_prepare_merge()`.

use core::num::NonZeroU32;

use dmsnap_core::pure::chunk::ChunkSize;
use dmsnap_core::pure::disk::{write_entry, DiskException, Geometry};
use dmsnap_core::pure::merge::{
    linear_tail, linear_tail_of_area, plan_batch_area, plan_tail_runs, runs_contain, CopyPlan, MergeError,
    MergeRun, TailRuns,
};
use proptest::prelude::*;

/// The C loop, with the count capped by `limit`.
fn naive(entries: &[(u64, u64)], end: usize, limit: u32) -> Option<(u64, u64, u32)> {
    if end == 0 {
        return None;
    }
    let (lo, ln) = entries[end - 1];
    let mut nr = 1u32;
    while (nr as usize) < end && nr < limit {
        let (o, n) = entries[end - 1 - nr as usize];
        if lo < u64::from(nr)
            || ln < u64::from(nr)
            || o != lo - u64::from(nr)
            || n != ln - u64::from(nr)
        {
            break;
        }
        nr += 1;
    }
    Some((lo, ln, nr))
}

/// Lists made of linear stretches so that runs actually occur.
fn entries() -> impl Strategy<Value = Vec<(u64, u64)>> {
    proptest::collection::vec((0u64..50, 1u64..50, 1usize..6), 0..20).prop_map(|segs| {
        let mut v = Vec::new();
        for (o, n, len) in segs {
            for k in 0..len as u64 {
                v.push((o + k, n + k));
            }
        }
        v
    })
}

proptest! {
    /// A batch area plan covers exactly the newest entries, in runs that
    /// partition them, within the budget; a refused run stops it.
    #[test]
    fn batch_area_plan(es in entries(), limit in 1u32..8, budget in 0u64..60, refuse_after in 0usize..10) {
        let lim = NonZeroU32::new(limit).expect("nonzero");
        let mut runs = Vec::new();
        let consumed = plan_batch_area(es.as_slice(), es.len(), lim, budget, |r| {
            if runs.len() == refuse_after { return false; }
            runs.push(r);
            true
        }).expect("ok");
        let total: u64 = runs.iter().map(|r| u64::from(r.count())).sum();
        prop_assert_eq!(total, consumed as u64);
        prop_assert!(total <= budget);
        // Newest first, contiguous from the end.
        let mut end = es.len();
        for r in &runs {
            prop_assert!(r.count() <= limit);
            for k in 0..r.count() as usize {
                let (o, n) = es[end - 1 - k];
                prop_assert_eq!(o, r.last_old() - k as u64);
                prop_assert_eq!(n, r.last_new() - k as u64);
            }
            end -= r.count() as usize;
        }
        // It stops only for the budget, the refusal or the list's start.
        prop_assert!(end == 0 || total == budget || runs.len() == refuse_after);
    }

    /// `runs_contain` agrees with a linear scan over disjoint runs.
    #[test]
    fn runs_contain_matches_scan(starts in proptest::collection::btree_set(0u64..200, 0..12), lens in proptest::collection::vec(1u32..6, 12), probe in 0u64..220) {
        let mut runs: Vec<MergeRun> = Vec::new();
        let mut next_free = 0u64;
        for (i, &s) in starts.iter().enumerate() {
            if s < next_free { continue; }
            let len = lens[i];
            // A linear list of `len` entries is one run.
            let list: Vec<(u64, u64)> = (0..u64::from(len)).map(|k| (s + k, 1000 + s + k)).collect();
            let r = linear_tail(list.as_slice(), list.len(), NonZeroU32::new(len).expect("nz")).expect("ok").expect("run");
            next_free = s + u64::from(len);
            runs.push(r);
        }
        let scan = runs.iter().any(|r| r.contains_old(probe));
        prop_assert_eq!(runs_contain(&runs, probe), scan);
    }

    #[test]
    fn tail_matches_naive(es in entries(), cut in 0usize..100, limit in 1u32..10) {
        let end = if es.is_empty() { 0 } else { cut % (es.len() + 1) };
        let lim = NonZeroU32::new(limit).expect("nonzero");
        let got = linear_tail(es.as_slice(), end, lim).expect("ok");
        prop_assert_eq!(got.map(|r| (r.last_old(), r.last_new(), r.count())), naive(&es, end, limit));
        // Same answer from the on-disk representation.
        let g = Geometry::new(ChunkSize::from_shift(3).expect("shift"));
        let mut area = vec![0u8; g.area_bytes()];
        for (i, &(o, n)) in es.iter().enumerate() {
            write_entry(g, &mut area, i as u32, DiskException { old: o, new: n }).expect("fits");
        }
        prop_assert_eq!(linear_tail_of_area(g, &area, end as u32, lim).expect("ok"), got);
    }

    /// Tail runs partition the list from the end, each exactly its entries.
    #[test]
    fn tail_runs_partition(es in entries(), limit in 1u32..8) {
        let lim = NonZeroU32::new(limit).expect("nonzero");
        let mut end = es.len();
        for r in TailRuns::new(es.as_slice(), es.len(), lim) {
            let r = r.expect("ok");
            prop_assert!(r.count() <= limit);
            let start = end - r.count() as usize;
            for (k, &(o, n)) in es[start..end].iter().enumerate() {
                prop_assert_eq!((o, n), (r.first_old() + k as u64, r.first_new() + k as u64));
                prop_assert!(r.contains_old(o));
            }
            end = start;
        }
        prop_assert_eq!(end, 0);
    }

    #[test]
    fn plan_respects_budget(es in entries(), limit in 1u32..8, budget in 0u64..40, slots in 0usize..6) {
        let lim = NonZeroU32::new(limit).expect("nonzero");
        let mut out = vec![MergeRun::single(DiskException { old: 0, new: 1 }); slots];
        let n = plan_tail_runs(es.as_slice(), es.len(), lim, budget, &mut out).expect("ok");
        prop_assert!(n <= slots);
        let total: u64 = out[..n].iter().map(|r| u64::from(r.count())).sum();
        prop_assert!(total <= budget);
        // Runs come newest first and are contiguous from the end.
        let mut end = es.len();
        for r in &out[..n] {
            let start = end - r.count() as usize;
            prop_assert_eq!(es[end - 1], (r.last_old(), r.last_new()));
            prop_assert_eq!(es[start], (r.first_old(), r.first_new()));
            end = start;
        }
        // Without a binding budget/slot limit it equals TailRuns.
        if budget >= es.len() as u64 && slots >= es.len() {
            let all: Vec<MergeRun> = TailRuns::new(es.as_slice(), es.len(), lim).map(|r| r.expect("ok")).collect();
            prop_assert_eq!(&out[..n], &all[..]);
        }
    }
}

#[test]
fn tail_edge_cases() {
    let one = NonZeroU32::new(1).expect("nonzero");
    let big = NonZeroU32::new(1000).expect("nonzero");
    let es: &[(u64, u64)] = &[(5, 10), (6, 11), (7, 12)];
    assert_eq!(linear_tail(es, 4, big), Err(MergeError::OutOfRange));
    assert_eq!(linear_tail(es, 0, big), Ok(None));
    let r = linear_tail(es, 3, big).expect("ok").expect("run");
    assert_eq!((r.first_old(), r.first_new(), r.count()), (5, 10, 3));
    assert_eq!(
        linear_tail(es, 3, one).expect("ok").map(|r| r.count()),
        Some(1)
    );
    // A zero new chunk at the tail would copy the header: refused.
    let z: &[(u64, u64)] = &[(1, 2), (2, 0)];
    assert_eq!(
        linear_tail(z, 2, big),
        Err(MergeError::ZeroNewChunk { index: 1 })
    );
    // No wrap below chunk 0 (upstream compares in wrapping arithmetic).
    let w: &[(u64, u64)] = &[(u64::MAX, 5), (0, 6)];
    assert_eq!(
        linear_tail(w, 2, big).expect("ok").map(|r| r.count()),
        Some(1)
    );
    // Copy plan, clipped to the origin as snapshot_merge_next_chunks() does.
    let cs = ChunkSize::from_shift(3).expect("shift");
    assert_eq!(
        r.copy_plan(cs, 1000),
        Some(CopyPlan {
            src: 80,
            dest: 40,
            sectors: 24
        })
    );
    assert_eq!(
        r.copy_plan(cs, 50),
        Some(CopyPlan {
            src: 80,
            dest: 40,
            sectors: 10
        })
    );
    assert_eq!(r.copy_plan(cs, 40), None);
}

mod batch_sizing {
    use dmsnap_core::pure::merge::{throttle_idle_us, BatchLimit, BatchSizing, MergeLoad, THROTTLE_MAX_IDLE_US};
    use proptest::prelude::*;
    use MergeLoad::{Active, Idle, Waiting};

    const S: BatchSizing = BatchSizing { min: 8, max: 4096, busy_chunks: 256, busy_runs: 8, active_runs: 16 };

    #[test]
    fn grows_unless_writes_wait_and_limits_runs_while_the_device_is_in_use() {
        assert_eq!(S.next(64, Idle), BatchLimit { chunks: 128, runs: None });
        assert_eq!(S.next(4096, Idle), BatchLimit { chunks: 4096, runs: None });
        assert_eq!(S.next(4096, Waiting), BatchLimit { chunks: 256, runs: Some(8) });
        // No write waits any more: grows from the busy size.
        assert_eq!(S.next(256, Idle), BatchLimit { chunks: 512, runs: None });
        assert_eq!(S.next(256, Active), BatchLimit { chunks: 512, runs: Some(16) });
        assert_eq!(S.next(4096, Active), BatchLimit { chunks: 4096, runs: Some(16) });
        assert_eq!(S.next(0, Idle).chunks, 8);
    }

    #[test]
    fn load_from_recent_waits_and_io() {
        assert_eq!(MergeLoad::from_recent(None, None, 1000), Idle);
        assert_eq!(MergeLoad::from_recent(None, Some(999), 1000), Active);
        assert_eq!(MergeLoad::from_recent(None, Some(1000), 1000), Idle);
        assert_eq!(MergeLoad::from_recent(Some(0), None, 1000), Waiting);
        assert_eq!(MergeLoad::from_recent(Some(5), Some(0), 1000), Waiting);
        assert_eq!(MergeLoad::from_recent(Some(1000), Some(3), 1000), Active);
        assert_eq!(MergeLoad::from_recent(Some(4000), Some(2000), 1000), Idle);
    }

    #[test]
    fn pace_delay() {
        use dmsnap_core::pure::merge::pace_delay_us;
        // 16 runs at 1 ms each: the next batch starts 16 ms after this one.
        assert_eq!(pace_delay_us(16, 1000, 0), 16_000);
        assert_eq!(pace_delay_us(16, 1000, 10_000), 6_000);
        assert_eq!(pace_delay_us(16, 1000, 16_000), 0);
        // A batch that took longer than its runs' share: no pause.
        assert_eq!(pace_delay_us(1, 1000, 12_000), 0);
        assert_eq!(pace_delay_us(0, 1000, 0), 0);
        assert_eq!(pace_delay_us(usize::MAX, i64::MAX, -5), i64::MAX);
    }

    #[test]
    fn throttle_idle() {
        // 100 (the default) and above: never idle.
        assert_eq!(throttle_idle_us(5_000, 100), 0);
        assert_eq!(throttle_idle_us(u64::MAX, 250), 0);
        // 50: as long idle as busy; 10: nine times as long; 75: a third.
        assert_eq!(throttle_idle_us(20_000, 50), 20_000);
        assert_eq!(throttle_idle_us(20_000, 10), 180_000);
        assert_eq!(throttle_idle_us(30_000, 75), 10_000);
        // Capped, and 0 is the longest idle.
        assert_eq!(throttle_idle_us(500_000, 10), THROTTLE_MAX_IDLE_US);
        assert_eq!(throttle_idle_us(u64::MAX, 1), THROTTLE_MAX_IDLE_US);
        assert_eq!(throttle_idle_us(0, 0), THROTTLE_MAX_IDLE_US);
        assert_eq!(throttle_idle_us(0, 10), 0);
    }

    proptest! {
        #[test]
        fn throttle_keeps_the_duty_cycle(busy in 1u64..100_000, pct in 1u32..100) {
            let idle = throttle_idle_us(busy, pct);
            // The copy's share of busy + idle is at most pct percent (up to
            // rounding), unless the cap cut the idle time.
            if idle < THROTTLE_MAX_IDLE_US {
                prop_assert!(busy * 100 <= u64::from(pct) * (busy + idle) + 100);
            }
            // Monotonic: a lower percentage never idles less.
            prop_assert!(throttle_idle_us(busy, pct.saturating_sub(1).max(1)) >= idle);
        }
    }

    fn load() -> impl Strategy<Value = MergeLoad> {
        prop_oneof![Just(Idle), Just(Active), Just(Waiting)]
    }

    proptest! {
        #[test]
        fn always_within_bounds(last in 0u64..1 << 40, load in load()) {
            let n = S.next(last, load);
            prop_assert!((S.min..=S.max).contains(&n.chunks));
            prop_assert_eq!(n.runs.is_some(), load != Idle);
            prop_assert!(n.runs.map_or(true, |r| r >= 1 && r <= S.active_runs.max(S.busy_runs)));
            if load != Waiting && (S.min..=S.max).contains(&last) {
                prop_assert!(n.chunks >= last);
            }
        }
    }
}
