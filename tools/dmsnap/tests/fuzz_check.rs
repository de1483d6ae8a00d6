// SPDX-License-Identifier: GPL-2.0
//! A bounded mutation fuzzer for `check` (and what runs on its result).
//!
//! Starts from COW images built the way the kernel writes them and mutates
//! them: random bytes, entry-sized words, copied entries, zeroed sectors,
//! header fields, truncation. For every image: reading it never panics;
//! when it reads, `dump` round-trips, `usage`/`changed` run, and `repair`
//! produces a COW that checks clean. Runs for `DMSNAP_FUZZ_SECS` seconds
//! (default 5; the suite uses 30) from seed `DMSNAP_FUZZ_SEED` (default:
//! the clock, printed so a failure can be replayed).

use std::time::{Duration, Instant};

use dmsnap::dev::{BlockIo, MemDev};
use dmsnap::dump::Dump;
use dmsnap::image;
use dmsnap::repair;
use dmsnap::report::{self, Unit};
use dmsnap::scan::{Cow, OriginInfo};

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

fn seed_image(rng: &mut Rng) -> MemDev {
    let cs = [1u32, 2, 8, 16][rng.below(4) as usize];
    let origin_chunks = 1 + rng.below(500);
    let n = rng.below(300);
    let olds: Vec<u64> = (0..n)
        .map(|i| if rng.below(3) == 0 { i % origin_chunks } else { rng.below(origin_chunks) })
        .collect();
    let epa = u64::from(cs) * 32;
    let cow_chunks = 4 + n + n / epa + rng.below(8);
    image::build(cs, cow_chunks, &olds, rng.below(8) != 0).map(|(img, _)| img).unwrap_or_default()
}

fn mutate(rng: &mut Rng, img: &mut MemDev) {
    let len = img.data.len() as u64;
    if len == 0 {
        return;
    }
    for _ in 0..1 + rng.below(6) {
        let len = img.data.len() as u64;
        if len == 0 {
            return;
        }
        match rng.below(7) {
            0 => {
                let i = rng.below(len) as usize;
                img.data[i] ^= (rng.next() as u8) | 1;
            }
            1 => {
                // An entry-aligned word in the first 64 KiB (header, area 0, data).
                let i = (rng.below(len.min(65536)) & !7) as usize;
                let w = match rng.below(4) {
                    0 => rng.below(64),
                    1 => u64::MAX - rng.below(4),
                    2 => rng.below(len / 512 + 4),
                    _ => rng.next(),
                };
                if i + 8 <= img.data.len() {
                    img.data[i..i + 8].copy_from_slice(&w.to_le_bytes());
                }
            }
            2 => {
                let (a, b) = ((rng.below(len) & !15) as usize, (rng.below(len) & !15) as usize);
                if a + 16 <= img.data.len() && b + 16 <= img.data.len() {
                    let e = img.data[a..a + 16].to_vec();
                    img.data[b..b + 16].copy_from_slice(&e);
                }
            }
            3 => {
                let s = (rng.below(len) & !511) as usize;
                let e = (s + 512).min(img.data.len());
                img.data[s..e].fill(0);
            }
            4 => {
                // A header field: valid, version or chunk size.
                let field = 4 + 4 * rng.below(3) as usize;
                let v = [0u32, 1, 2, 3, 7, 64, 1 << 22, u32::MAX][rng.below(8) as usize];
                if field + 4 <= img.data.len() {
                    img.data[field..field + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
            5 => {
                let keep = rng.below(len + 1) as usize;
                img.data.truncate(keep);
            }
            _ => {
                let extra = rng.below(8192) as usize;
                img.data.extend(std::iter::repeat_n(0u8, extra));
            }
        }
    }
}

fn exercise(img: &MemDev, origin: Option<OriginInfo>) {
    let Ok(cow) = Cow::read(img, origin) else { return };
    let d = Dump::of(&cow);
    assert_eq!(Dump::parse(&d.to_xml()).as_ref(), Ok(&d), "XML dump does not round-trip");
    assert_eq!(Dump::parse(&d.to_json()).as_ref(), Ok(&d), "JSON dump does not round-trip");
    let _ = report::changed(&cow, Unit::Sectors, origin.map(|o| o.sectors));
    if cow.is_clean() {
        assert!(report::usage(&cow).is_some(), "usage of a clean COW failed");
    }
    let cb = cow.chunk.bytes();
    let mut out = MemDev::new(vec![0u8; img.data.len()]);
    let plan = repair::plan(&cow, out.len_bytes() / cb as u64);
    if repair::write(&cow, img, &plan, &mut out).is_ok() {
        let fixed = Cow::read(&out, origin).expect("a repaired COW reads");
        assert!(fixed.is_clean(), "a repaired COW has problems: {:?}", fixed.problems);
        assert_eq!(fixed.exception_count(), plan.kept.len() as u64);
    } else {
        assert!(img.data.len() < 2 * cb, "repair failed on an output that fits");
    }
}

#[test]
fn fuzz_check() {
    let secs: u64 = std::env::var("DMSNAP_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let seed: u64 = std::env::var("DMSNAP_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64));
    println!("fuzz_check: seed {seed}, {secs} s (replay with DMSNAP_FUZZ_SEED={seed})");
    let mut rng = Rng(seed | 1);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut runs = 0u64;
    while Instant::now() < deadline {
        let mut img = seed_image(&mut rng);
        mutate(&mut rng, &mut img);
        let origin = match rng.below(3) {
            0 => None,
            _ => Some(OriginInfo { sectors: rng.below(8192) + 1, logical_block_size: [512, 4096][rng.below(2) as usize] }),
        };
        exercise(&img, origin);
        runs += 1;
    }
    println!("fuzz_check: {runs} images");
    assert!(runs > 0);
}
