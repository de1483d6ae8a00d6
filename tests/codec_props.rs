// SPDX-License-Identifier: GPL-2.0
//! Property tests for the on-disk codecs: round trips, agreement with a
//! simple model, and no panics on arbitrary bytes.

use core::num::NonZeroU32;

use dmsnap_core::pure::alloc::{LoadError, LoadProgress, Loader};
use dmsnap_core::pure::chunk::ChunkSize;
use dmsnap_core::pure::disk::{
    check_exception, decode_header, first_adjacent_duplicate, read_entry, run_is_valid, scan_area, write_entry,
    AreaEntries, AreaError, Corruption, DiskException, DiskHeader, Geometry, HeaderState,
    SNAP_MAGIC,
};
use dmsnap_core::pure::merge::{linear_tail_of_area, AreaSource, TailRuns};
use proptest::prelude::*;

fn geom(shift: u32) -> Geometry {
    Geometry::new(ChunkSize::from_shift(shift).expect("small shift"))
}

/// Runs of consecutive entries `(old, new, len, twist)`, some with a
/// broken step (twist 1 or 2) or a metadata chunk (twist 3) in them.
fn twisted_runs(g: Geometry, pieces: &[(u64, u64, u32, u8)]) -> Vec<DiskException> {
    let mut entries = Vec::new();
    for &(old, new, len, twist) in pieces {
        for k in 0..u64::from(len) {
            let mut e = DiskException { old: old + k, new: new + k };
            if k == 2 && twist == 1 {
                e.new += 5;
            }
            if k == 3 && twist == 2 {
                e.old += 9;
            }
            if k == 1 && twist == 3 {
                e.new = 1 + g.stride();
            }
            entries.push(e);
        }
    }
    entries
}

proptest! {
    #[test]
    fn header_roundtrip(valid: bool, version: u32, chunk_size: u32, tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let h = DiskHeader { valid, version, chunk_size };
        let mut buf = h.to_bytes().to_vec();
        buf.extend_from_slice(&tail);
        prop_assert_eq!(decode_header(&buf), Ok(HeaderState::Existing(h)));
        // encode() zeroes everything past the 16 header bytes.
        let mut chunk = vec![0xffu8; 16 + tail.len()];
        h.encode(&mut chunk).expect("fits");
        prop_assert_eq!(&chunk[..16], &h.to_bytes()[..]);
        prop_assert!(chunk[16..].iter().all(|&b| b == 0));
    }

    #[test]
    fn header_decode_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        let r = decode_header(&bytes);
        if bytes.len() < 16 {
            prop_assert!(r.is_err());
        } else {
            let magic = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            match r {
                Ok(HeaderState::New) => prop_assert_eq!(magic, 0),
                Ok(HeaderState::Existing(h)) => {
                    prop_assert_eq!(magic, SNAP_MAGIC);
                    prop_assert_eq!(h.chunk_size, u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]));
                    // validate never panics either.
                    let _ = h.validate(512, 4096);
                }
                Err(_) => prop_assert!(magic != 0 && magic != SNAP_MAGIC),
            }
        }
    }

    #[test]
    fn exception_roundtrip(old: u64, new: u64) {
        let e = DiskException { old, new };
        prop_assert_eq!(DiskException::from_bytes(&e.to_bytes()), Some(e));
    }

    /// Entries written into a zeroed area parse back as the same list.
    #[test]
    fn area_matches_model(
        shift in 0u32..3,
        raw in proptest::collection::vec((any::<u64>(), 1u64..=u64::MAX), 0..130),
    ) {
        let g = geom(shift);
        let epa = g.exceptions_per_area() as usize;
        let model: Vec<DiskException> = raw.into_iter().take(epa)
            .map(|(old, new)| DiskException { old, new }).collect();
        let mut area = vec![0u8; g.area_bytes()];
        for (i, e) in model.iter().enumerate() {
            write_entry(g, &mut area, i as u32, *e).expect("in range");
        }
        let parsed: Vec<DiskException> = AreaEntries::new(g, &area).expect("long enough").collect();
        prop_assert_eq!(&parsed, &model);
        let scan = scan_area(g, &area).expect("scan");
        prop_assert_eq!(scan.committed as usize, model.len());
        prop_assert_eq!(scan.full, model.len() == epa);
        let hint = model.iter().map(|e| e.new.saturating_add(1)).max().unwrap_or(0);
        prop_assert_eq!(scan.next_free_hint, hint);
        for (i, e) in model.iter().enumerate() {
            prop_assert_eq!(read_entry(g, &area, i as u32), Ok(*e));
        }
        prop_assert_eq!(read_entry(g, &area, epa as u32), Err(AreaError::IndexOutOfRange));
    }

    /// A terminator in the middle hides everything after it.
    #[test]
    fn terminator_stops_list(n in 0usize..32, junk in 1u64..1000) {
        let g = geom(0);
        let mut area = vec![0u8; g.area_bytes()];
        for i in 0..32u32 {
            let new = if i as usize == n { 0 } else { junk + u64::from(i) };
            write_entry(g, &mut area, i, DiskException { old: u64::from(i), new }).expect("write");
        }
        let scan = scan_area(g, &area).expect("scan");
        prop_assert_eq!(scan.committed as usize, n);
        prop_assert!(!scan.full);
    }

    /// Arbitrary bytes into every decoder: no panics, bounded results.
    #[test]
    fn decoders_never_panic(
        shift in 0u32..3,
        bytes in proptest::collection::vec(any::<u8>(), 0..2200),
        idx: u32,
        committed: u32,
        limit in 1u32..100,
        cow_chunks: u64,
    ) {
        let g = geom(shift);
        let epa = g.exceptions_per_area();
        let _ = read_entry(g, &bytes, idx);
        if let Ok(scan) = scan_area(g, &bytes) {
            prop_assert!(scan.committed <= epa);
        } else {
            prop_assert!(bytes.len() < g.area_bytes());
        }
        if let Ok(it) = AreaEntries::new(g, &bytes) {
            for e in it {
                prop_assert!(e.new != 0);
                let _ = check_exception(g, e, cow_chunks);
            }
        }
        let lim = NonZeroU32::new(limit).expect("nonzero");
        if let Ok(Some(run)) = linear_tail_of_area(g, &bytes, committed % (epa + 2), lim) {
            prop_assert!(run.count() >= 1 && run.count() <= limit);
            prop_assert!(run.first_old() <= run.last_old());
        }
        let src = AreaSource::new(g, &bytes);
        let mut total = 0usize;
        for r in TailRuns::new(&src, (committed % (epa + 2)) as usize, lim).take(200) {
            match r {
                Ok(run) => total += run.count() as usize,
                Err(_) => break,
            }
        }
        prop_assert!(total <= epa as usize);
        let mut loader = Loader::with_validation(g, cow_chunks);
        let mut n = 0u32;
        let _ = loader.feed::<(), _>(&bytes, |_, _| { n += 1; Ok(()) });
        prop_assert!(n <= epa);
        let mut loader = Loader::new(g);
        let _ = loader.feed::<(), _>(&bytes, |_, _| Ok(()));
    }

    /// The per-run check agrees with checking every entry.
    #[test]
    fn run_is_valid_matches_entries(shift in 0u32..3, new in 0u64..3000, old in prop_oneof![0u64..100, (u64::MAX - 600)..=u64::MAX, ((u64::MAX >> 1) - 600)..=((u64::MAX >> 1) + 10), ((u64::MAX >> 2) - 600)..=((u64::MAX >> 2) + 10)], len in 0u32..600, cow_chunks in 0u64..3000) {
        let g = geom(shift);
        let each = len > 0 && (0..u64::from(len)).all(|i| {
            match (old.checked_add(i), new.checked_add(i)) {
                (Some(o), Some(n)) => check_exception(g, DiskException { old: o, new: n }, cow_chunks).is_ok(),
                _ => false,
            }
        });
        prop_assert_eq!(run_is_valid(g, DiskException { old, new }, len, cow_chunks), each);
    }

    /// `feed_runs` hands over the same entries as `feed`, as runs, with
    /// the same progress and the same corruption reports.
    #[test]
    fn feed_runs_equals_feed(
        shift in 0u32..2,
        pieces in proptest::collection::vec((0u64..5000, 1u64..2000, 1u32..40, 0u8..8), 0..20),
        cut in 0usize..300,
        cow_chunks in 100u64..4000,
        validate: bool,
    ) {
        let g = geom(shift);
        let epa = g.exceptions_per_area() as usize;
        let mut entries = twisted_runs(g, &pieces);
        entries.truncate(epa);
        if cut < entries.len() {
            entries[cut].new = 0;
        }
        let mut area = vec![0u8; g.area_bytes()];
        for (i, e) in entries.iter().enumerate() {
            area[i * 16..i * 16 + 16].copy_from_slice(&e.to_bytes());
        }
        let (mut a, mut b) = if validate {
            (Loader::with_validation(g, cow_chunks), Loader::with_validation(g, cow_chunks))
        } else {
            (Loader::new(g), Loader::new(g))
        };
        let mut one = Vec::new();
        let ra = a.feed::<(), _>(&area, |o, n| { one.push((o, n)); Ok(()) });
        let mut runs = Vec::new();
        let rb = b.feed_runs::<(), _>(&area, |o, n, len| { runs.push((o, n, len)); Ok(()) });
        prop_assert_eq!(ra, rb);
        if ra.is_ok() {
            let expanded: Vec<_> = runs.iter().flat_map(|&(o, n, len)| (0..u64::from(len)).map(move |i| (o + i, n + i))).collect();
            prop_assert_eq!(&expanded, &one);
            for w in runs.windows(2) {
                prop_assert!(!(w[0].0 + u64::from(w[0].2) == w[1].0 && w[0].1 + u64::from(w[0].2) == w[1].1), "runs not maximal: {:?}", w);
            }
        }
    }

    /// `feed_runs` against `feed` over a list of several areas, with an
    /// `add` callback that fails at entry `fail_at` (counted over the whole
    /// list): the same progress area by area, the same entries handed over
    /// up to the failure, and the error order `feed_runs` documents (its
    /// run is validated before it is handed over, so a corrupt entry in the
    /// failing entry's run is reported instead of the callback's error).
    #[test]
    fn feed_runs_equals_feed_across_areas(
        pieces in proptest::collection::vec((0u64..5000, 2u64..2000, 1u32..40, 0u8..10), 0..30),
        areas in 1usize..4,
        fail_at in 0usize..140,
        cow_chunks in 100u64..4000,
        validate: bool,
    ) {
        let g = geom(0);
        let epa = g.exceptions_per_area() as usize;
        let mut entries = twisted_runs(g, &pieces);
        // All areas but the last are full; the last ends at a terminator
        // unless it is full too (then the list runs past the areas given).
        entries.truncate(areas * epa);
        let bufs: Vec<Vec<u8>> = (0..areas)
            .map(|a| {
                let mut area = vec![0u8; g.area_bytes()];
                for (i, e) in entries.iter().skip(a * epa).take(epa).enumerate() {
                    area[i * 16..i * 16 + 16].copy_from_slice(&e.to_bytes());
                }
                area
            })
            .collect();
        let new_loader = || if validate { Loader::with_validation(g, cow_chunks) } else { Loader::new(g) };

        // Reference: entry by entry.
        let mut a = new_loader();
        let mut one = Vec::new();
        let mut ra = Vec::new();
        for buf in &bufs {
            let r = a.feed::<usize, _>(buf, |o, n| {
                if one.len() == fail_at { return Err(fail_at); }
                one.push((o, n));
                Ok(())
            });
            let go_on = matches!(r, Ok(LoadProgress::NeedArea { .. }));
            ra.push(r);
            if !go_on { break; }
        }
        // Runs, the callback failing for the run that holds entry `fail_at`.
        let mut b = new_loader();
        let mut handed = Vec::new();
        let mut rb = Vec::new();
        for buf in &bufs {
            let r = b.feed_runs::<usize, _>(buf, |o, n, len| {
                if (handed.len()..handed.len() + len as usize).contains(&fail_at) { return Err(fail_at); }
                handed.extend((0..u64::from(len)).map(|i| (o + i, n + i)));
                Ok(())
            });
            let go_on = matches!(r, Ok(LoadProgress::NeedArea { .. }));
            rb.push(r);
            if !go_on { break; }
        }
        prop_assert_eq!(ra.len(), rb.len(), "areas fed: {:?} against {:?}", ra, rb);
        let last = ra.len() - 1;
        prop_assert_eq!(&ra[..last], &rb[..last]);
        // Whatever `feed_runs` handed over, `feed` handed over too, in order.
        prop_assert!(handed.len() <= one.len() && one[..handed.len()] == handed[..]);
        match (ra[last], rb[last]) {
            (Err(LoadError::Callback(_)), Err(LoadError::Corrupt { area, index, .. })) => {
                // Only a corruption in the failing entry's run comes first.
                let slot = area as usize * epa + index as usize;
                prop_assert!(slot > fail_at && handed.len() <= fail_at, "corrupt slot {} for failure at {}", slot, fail_at);
                let run_end = (handed.len()..slot).all(|i| {
                    entries[i + 1].old == entries[i].old + 1 && entries[i + 1].new == entries[i].new + 1
                });
                prop_assert!(run_end, "corruption at {} is not in the run of entry {}", slot, fail_at);
            }
            (x, y) => {
                prop_assert_eq!(x, y);
                if x.is_ok() {
                    prop_assert_eq!(&handed, &one);
                }
            }
        }
    }

    #[test]
    fn check_exception_rules(shift in 0u32..4, new in 0u64..5000, old: u64, cow_chunks in 0u64..5000) {
        let g = geom(shift);
        let r = check_exception(g, DiskException { old, new }, cow_chunks);
        let stride = u64::from(g.exceptions_per_area()) + 1;
        let expect = if new == 0 || new % stride == 1 {
            Err(Corruption::NewChunkIsMetadata)
        } else if new >= cow_chunks {
            Err(Corruption::NewChunkBeyondDevice)
        } else if old > (u64::MAX >> shift) {
            Err(Corruption::OldChunkUnaddressable)
        } else {
            Ok(())
        };
        prop_assert_eq!(r, expect);
    }

    #[test]
    fn duplicates_found(mut v in proptest::collection::vec(0u64..50, 0..20)) {
        v.sort_unstable();
        let mut d = v.clone();
        d.dedup();
        prop_assert_eq!(first_adjacent_duplicate(&v).is_some(), d.len() != v.len());
    }
}
