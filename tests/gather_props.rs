// SPDX-License-Identifier: GPL-2.0
//! Joining gathered copy pieces keeps every sector's place on its device
//! and in the buffer, and leaves nothing joinable.

use dmsnap_core::pure::gather::{join_adjacent, Piece};
use proptest::prelude::*;

/// Every sector of the pieces as (device, device sector, buffer sector).
fn sectors(pieces: &[Piece<u8>]) -> Vec<(u8, u64, u64)> {
    let mut v = Vec::new();
    for p in pieces {
        for i in 0..p.sectors {
            v.push((p.dev, p.sector + i, p.buf + i));
        }
    }
    v.sort();
    v
}

/// Copies as the gatherer builds them: copy `j` takes `len_j` sectors at
/// buffer offset sum(len_0..j); each has a destination on every device,
/// allocated one after another per device (with an occasional skip, as at
/// a metadata area) or scattered.
fn copies() -> impl Strategy<Value = Vec<Piece<u8>>> {
    (1usize..4, prop::collection::vec((1u64..4, any::<bool>(), 0u64..1000), 1..40)).prop_map(|(devs, jobs)| {
        let mut next = vec![1000u64; devs];
        let mut buf = 0;
        let mut out = Vec::new();
        for (j, (len, skip, scatter)) in jobs.into_iter().enumerate() {
            let len = len * 8;
            for (d, n) in next.iter_mut().enumerate() {
                if skip {
                    *n += 8;
                }
                let sector = if scatter % 7 == 0 { 100_000 + j as u64 * 64 + d as u64 * 65_536 } else { *n };
                out.push(Piece { dev: d as u8, sector, sectors: len, buf });
                if sector == *n {
                    *n += len;
                }
            }
            buf += len;
        }
        out
    })
}

/// The pieces as the gatherer lists its writes: destination by
/// destination, each in copy order.
fn by_destination(v: &[Piece<u8>]) -> Vec<Piece<u8>> {
    let mut out = Vec::new();
    for d in 0..4u8 {
        out.extend(v.iter().filter(|p| p.dev == d).copied());
    }
    out
}

proptest! {
    #[test]
    fn join_keeps_every_sector_and_leaves_nothing_joinable(v in copies()) {
        let mut v = by_destination(&v);
        let before = sectors(&v);
        let n = join_adjacent(&mut v);
        let out = &v[..n];
        prop_assert!(n >= 1);
        prop_assert_eq!(sectors(out), before);
        for w in out.windows(2) {
            let joinable = w[0].dev == w[1].dev
                && w[0].sector + w[0].sectors == w[1].sector
                && w[0].buf + w[0].sectors == w[1].buf;
            prop_assert!(!joinable);
        }
    }

    #[test]
    fn consecutive_allocations_join_into_one_write_per_device(lens in prop::collection::vec(1u64..4, 1..40), devs in 1u8..4) {
        // No skip, no scatter: one write per destination device.
        let mut v = Vec::new();
        for d in 0..devs {
            let mut buf = 0;
            for len in &lens {
                v.push(Piece { dev: d, sector: 1000 * u64::from(d) + buf, sectors: len * 8, buf });
                buf += len * 8;
            }
        }
        let n = join_adjacent(&mut v);
        prop_assert_eq!(n, usize::from(devs));
    }
}

#[test]
fn one_snapshot_k_copies_one_write() {
    // 32 scattered 4 KiB sources, consecutive destinations: 32 reads stay,
    // the writes become one.
    let mut reads: Vec<Piece<u8>> =
        (0..32).map(|j| Piece { dev: 0, sector: (j * 7919 % 4096) * 8, sectors: 8, buf: j * 8 }).collect();
    let mut writes: Vec<Piece<u8>> =
        (0..32).map(|j| Piece { dev: 1, sector: 4096 + j * 8, sectors: 8, buf: j * 8 }).collect();
    assert_eq!(join_adjacent(&mut reads), 32);
    assert_eq!(join_adjacent(&mut writes), 1);
    assert_eq!(writes[0], Piece { dev: 1, sector: 4096, sectors: 256, buf: 0 });
}
