// SPDX-License-Identifier: GPL-2.0
//! The `stats` message's pure parts: line formats, ETA, the merge rate
//! window and the stores' allocated-chunk counts.

use dmsnap_core::pure::alloc::{PersistentState, TransientState};
use dmsnap_core::pure::chunk::ChunkSize;
use dmsnap_core::pure::disk::Geometry;
use dmsnap_core::pure::stats::{
    eta_sec, InvalidReason, Invalidity, MergeStateName, MergeStats, RateWindow, SnapshotStats, RATE_WINDOW_MS,
};
use proptest::prelude::*;

#[test]
fn snapshot_line_format() {
    let mut s = SnapshotStats {
        allocated_exceptions: 12,
        copies_in_flight: 1,
        copied_chunks: 10,
        chunk_sectors: 16,
        invalid: Invalidity::default(),
    };
    assert_eq!(
        s.to_string(),
        "allocated_exceptions=12 copies_in_flight=1 copied_chunks=10 chunk_sectors=16 invalid=none invalid_at=-"
    );
    s.invalid = Invalidity { reason: Some(InvalidReason::Overflow), at: Some(1_700_000_000) };
    assert!(s.to_string().ends_with(" invalid=overflow invalid_at=1700000000"));
    s.invalid = Invalidity { reason: Some(InvalidReason::OnDisk), at: None };
    assert!(s.to_string().ends_with(" invalid=on_disk invalid_at=-"));
}

#[test]
fn reason_names() {
    let all = [
        (InvalidReason::OnDisk, "on_disk"),
        (InvalidReason::Overflow, "overflow"),
        (InvalidReason::CowReadError, "cow_read_error"),
        (InvalidReason::CowWriteError, "cow_write_error"),
        (InvalidReason::MetadataError, "metadata_error"),
        (InvalidReason::NoMemory, "no_memory"),
    ];
    for (r, name) in all {
        assert_eq!(r.name(), name);
    }
}

#[test]
fn merge_line_format() {
    let mut m = MergeStats {
        merged_chunks: 30,
        remaining_chunks: 70,
        rate_chunks_per_sec: 20,
        chunk_sectors: 8,
        state: MergeStateName::Merging,
    };
    assert_eq!(
        m.to_string(),
        "merged_chunks=30 remaining_chunks=70 rate_chunks_per_sec=20 eta_sec=4 chunk_sectors=8 state=merging"
    );
    m.rate_chunks_per_sec = 0;
    assert!(m.to_string().contains(" eta_sec=- "));
    m.remaining_chunks = 0;
    m.state = MergeStateName::Done;
    assert!(m.to_string().contains(" eta_sec=0 "));
    assert!(m.to_string().ends_with(" state=done"));
}

#[test]
fn merge_state_precedence() {
    use MergeStateName::*;
    assert_eq!(MergeStateName::select(false, true, 0, true), Invalid);
    assert_eq!(MergeStateName::select(true, true, 0, true), Failed);
    assert_eq!(MergeStateName::select(true, false, 0, true), Done);
    assert_eq!(MergeStateName::select(true, false, 5, true), Merging);
    assert_eq!(MergeStateName::select(true, false, 5, false), Stopped);
}

#[test]
fn rate_window_basics() {
    let mut w = RateWindow::new();
    assert_eq!(w.rate_per_sec(0), 0);
    w.restart(1000);
    assert_eq!(w.rate_per_sec(1000), 0);
    assert_eq!(w.rate_per_sec(5000), 0);
    // 100 chunks in the first 2 s.
    w.add(3000, 100);
    assert_eq!(w.rate_per_sec(3000), 50);
    // Steady 10 chunks every 500 ms for a minute: 20/s.
    let mut t = 3000;
    for _ in 0..120 {
        t += 500;
        w.add(t, 10);
    }
    assert_eq!(w.total(), 1300);
    let r = w.rate_per_sec(t);
    assert!((19..=21).contains(&r), "rate {r}");
    // A stall longer than the window: 0.
    assert_eq!(w.rate_per_sec(t + RATE_WINDOW_MS + 1000), 0);
}

proptest! {
    /// ceil(remaining / rate), 0 when nothing remains, none at rate 0.
    #[test]
    fn eta_is_ceiling(remaining in 0u64..1_000_000, rate in 0u64..10_000) {
        let eta = eta_sec(remaining, rate);
        if remaining == 0 {
            prop_assert_eq!(eta, Some(0));
        } else if rate == 0 {
            prop_assert_eq!(eta, None);
        } else {
            let e = eta.unwrap();
            prop_assert!(e * rate >= remaining);
            prop_assert!((e - 1) * rate < remaining);
        }
    }

    /// A constant rate is measured within the checkpoint granularity, and
    /// the rate never exceeds what a steady stream could have done.
    #[test]
    fn steady_rate(per_step in 1u64..500, step_ms in 50u64..3000, steps in 1usize..200) {
        let mut w = RateWindow::new();
        let mut t = 0;
        w.restart(t);
        for _ in 0..steps {
            t += step_ms;
            w.add(t, per_step);
        }
        let exact = per_step * 1000 / step_ms;
        let r = w.rate_per_sec(t);
        // The base checkpoint is one where an add happened, so the measured
        // span covers whole steps: the rate is exact up to rounding.
        prop_assert!(r <= exact + 1, "r {} exact {}", r, exact);
        prop_assert!(r + 1 >= exact, "r {} exact {}", r, exact);
        prop_assert_eq!(w.total(), per_step * steps as u64);
    }

    /// The persistent store's data chunks are the chunks it handed out.
    #[test]
    fn persistent_data_chunks(shift in 0u32..3, n in 0u64..3000) {
        let cs = ChunkSize::from_shift(shift).unwrap();
        let mut st = PersistentState::new_store(Geometry::new(cs));
        prop_assert_eq!(st.data_chunks(), 0);
        for i in 0..n {
            st.prepare_exception(u64::MAX / 2).unwrap();
            prop_assert_eq!(st.data_chunks(), i + 1);
        }
    }

    #[test]
    fn transient_data_chunks(shift in 0u32..4, n in 0u64..500) {
        let cs = ChunkSize::from_shift(shift).unwrap();
        let mut st = TransientState::new(cs);
        for _ in 0..n {
            st.prepare_exception(u64::MAX / 2).unwrap();
        }
        prop_assert_eq!(st.data_chunks(), n);
    }
}
