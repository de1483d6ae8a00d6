// SPDX-License-Identifier: GPL-2.0
//! Property tests of the dmsnap tool against the kernel's own codec.

mod common;

use std::cell::Cell;
use std::collections::BTreeSet;
use std::rc::Rc;

use proptest::prelude::*;

use common::{merged_origin, origin_image, AlignedDev, CrashDev};
use dmsnap::dev::{BlockIo, MemDev};
use dmsnap::dump::{self, Dump};
use dmsnap::image;
use dmsnap::merge::{self, MergeOptions};
use dmsnap::repair;
use dmsnap::report::{self, Unit};
use dmsnap::scan::{Cow, OriginInfo};
use dmsnap_core::pure::alloc::{LoadProgress, Loader};
use dmsnap_core::pure::chunk::ChunkSize;
use dmsnap_core::pure::disk::{DiskException, Geometry};

/// A COW as the kernel writes it: chunk size, origin size in chunks, the
/// exceptions' origin chunks in the order they were made, spare chunks.
fn cow_case() -> impl Strategy<Value = (u32, u64, Vec<u64>, u64)> {
    (prop_oneof![Just(1u32), Just(2), Just(8)], 1u64..300).prop_flat_map(|(cs, origin_chunks)| {
        (Just(cs), Just(origin_chunks), prop::collection::vec(0..origin_chunks, 0..200), 0u64..6)
    })
}

/// Build the case: (cow image, its exception list, chunk bytes).
fn build(cs: u32, olds: &[u64], spare: u64) -> (MemDev, Vec<DiskException>, usize) {
    let epa = u64::from(cs) * 32;
    let n = olds.len() as u64;
    let cow_chunks = 2 + n + n / epa + 2 + spare;
    let (img, list) = image::build(cs, cow_chunks, olds, true).expect("image fits");
    (img, list, cs as usize * 512)
}

/// The kernel's loader over the same image: entries and final cursor.
fn kernel_load(img: &MemDev, cs: u32) -> (Vec<DiskException>, dmsnap_core::pure::alloc::PersistentState) {
    let chunk = ChunkSize::new(cs, 512, 512).unwrap();
    let geom = Geometry::new(chunk);
    let cb = chunk.bytes();
    let mut loader = Loader::with_validation(geom, img.data.len() as u64 / cb as u64);
    let mut got = Vec::new();
    let mut at = geom.area_location(0).unwrap();
    loop {
        let area = &img.data[at as usize * cb..(at as usize + 1) * cb];
        match loader.feed(area, |old, new| {
            got.push(DiskException { old, new });
            Ok::<(), ()>(())
        }) {
            Ok(LoadProgress::Done(st)) => return (got, st),
            Ok(LoadProgress::NeedArea { location, .. }) => at = location,
            Err(e) => panic!("kernel loader refused a kernel-written image: {e:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// The tool reads exactly what the kernel's loader reads, and `usage`
    /// reports the status line the kernel would print after that load.
    #[test]
    fn scan_matches_kernel_loader((cs, _oc, olds, spare) in cow_case()) {
        let (img, list, _) = build(cs, &olds, spare);
        let cow = Cow::read(&img, None).unwrap();
        prop_assert!(cow.is_clean(), "{:?}", cow.problems);
        let mine: Vec<DiskException> = cow.entries().map(|(_, _, e)| e).collect();
        let (kernel, st) = kernel_load(&img, cs);
        prop_assert_eq!(&mine, &kernel);
        prop_assert_eq!(cow.cursor(), Some(st), "the tool's cursor differs from the kernel loader's");
        prop_assert_eq!(&mine, &list);
        let u = report::usage(&cow).unwrap();
        prop_assert_eq!(u.status, st.usage(img.data.len() as u64 / 512).to_string_status());
        let uniq: BTreeSet<u64> = olds.iter().copied().collect();
        let changed: BTreeSet<u64> = report::changed(&cow, Unit::Chunks, None)
            .iter()
            .flat_map(|e| e.start..e.start + e.length)
            .collect();
        prop_assert_eq!(changed, uniq);
    }

    /// `restore` of a `dump` (both forms) gives back the header and every
    /// area byte for byte.
    #[test]
    fn dump_restore_round_trip((cs, _oc, olds, spare) in cow_case(), json in any::<bool>()) {
        let (img, _, cb) = build(cs, &olds, spare);
        let cow = Cow::read(&img, None).unwrap();
        let d = Dump::of(&cow);
        let text = if json { d.to_json() } else { d.to_xml() };
        let parsed = Dump::parse(&text).unwrap();
        prop_assert_eq!(&parsed, &d);
        let mut out = MemDev::new(vec![0xa5; img.data.len()]);
        dump::restore(&parsed, &mut out, false).unwrap();
        prop_assert_eq!(&out.data[..cb], &img.data[..cb]);
        for a in &cow.areas {
            let r = a.location as usize * cb..(a.location as usize + 1) * cb;
            prop_assert_eq!(&out.data[r.clone()], &img.data[r]);
        }
        let again = Cow::read(&out, None).unwrap();
        prop_assert_eq!(again.areas, cow.areas);
    }

    /// `repair` of a randomly damaged COW never panics, its output passes
    /// `check`, and every exception it keeps still finds its data.
    #[test]
    fn repair_output_checks_clean(
        (cs, _oc, olds, spare) in cow_case(),
        damage in prop::collection::vec((any::<u64>(), any::<u64>(), 0u8..4), 0..8),
        truncate in prop::option::of(0u64..4096),
    ) {
        let (mut img, _, cb) = build(cs, &olds, spare);
        let geom = Geometry::new(ChunkSize::new(cs, 512, 512).unwrap());
        let len = img.data.len() as u64;
        for (at, val, kind) in damage {
            match kind {
                // A random byte anywhere in an area chunk.
                0 => {
                    let area = at % (len / cb as u64 / geom.stride() + 1);
                    let off = geom.area_location(area).unwrap() * cb as u64 + val % cb as u64;
                    if off < len { img.data[off as usize] ^= (val >> 32) as u8 | 1; }
                }
                // A random 8-byte word in area 0.
                1 => {
                    let off = cb as u64 + (at % (cb as u64 / 8)) * 8;
                    if off + 8 <= len { img.data[off as usize..off as usize + 8].copy_from_slice(&val.to_le_bytes()); }
                }
                // Copy one entry of area 0 over another (duplicates).
                2 => {
                    let n = cb as u64 / 16;
                    let (a, b) = (cb as u64 + (at % n) * 16, cb as u64 + (val % n) * 16);
                    let e = img.data[a as usize..a as usize + 16].to_vec();
                    if e.iter().any(|x| *x != 0) { img.data[b as usize..b as usize + 16].copy_from_slice(&e); }
                }
                // A random sector of some area zeroed (torn write).
                _ => {
                    let area = at % (len / cb as u64 / geom.stride() + 1);
                    let off = geom.area_location(area).unwrap() * cb as u64 + (val % cs as u64) * 512;
                    if off + 512 <= len { img.data[off as usize..off as usize + 512].fill(0); }
                }
            }
        }
        if let Some(t) = truncate {
            let keep = len.saturating_sub(t * 256).max(512);
            img.data.truncate(keep as usize);
        }
        let Ok(cow) = Cow::read(&img, None) else { return Ok(()) };
        let mut out = MemDev::new(vec![0u8; img.data.len()]);
        let plan = repair::plan(&cow, out.len_bytes() / cb as u64);
        let written = repair::write(&cow, &img, &plan, &mut out);
        if img.data.len() < 2 * cb {
            prop_assert!(written.is_err(), "repair wrote a COW too small for its header and area 0");
            return Ok(());
        }
        written.unwrap();
        let fixed = Cow::read(&out, None).unwrap();
        prop_assert!(fixed.is_clean(), "repair left problems: {:?}", fixed.problems);
        let kept: Vec<DiskException> = fixed.entries().map(|(_, _, e)| e).collect();
        prop_assert_eq!(&kept, &plan.kept);
        for e in &kept {
            let r = e.new as usize * cb..(e.new as usize + 1) * cb;
            prop_assert_eq!(&out.data[r.clone()], &img.data[r]);
        }
        // Every entry read is either kept or named in a decision.
        let dropped = plan.decisions.iter().filter(|d| !matches!(d, repair::Decision::Truncated(_))).count() as u64;
        prop_assert!(plan.kept.len() as u64 + dropped >= plan.read);
    }

    /// An offline merge gives the origin the model says, leaves an empty
    /// list (the status the kernel reports after a finished merge), and
    /// clips at the origin's end.
    #[test]
    fn merge_gives_model_origin((cs, oc, olds, spare) in cow_case(), run in 1u32..40, cut_last in 0u64..511) {
        let (mut img, list, cb) = build(cs, &olds, spare);
        let origin_bytes = (oc * cb as u64).saturating_sub(cut_last % cb as u64).max(512) & !511;
        let mut origin = origin_image(cb, oc);
        origin.data.truncate(origin_bytes as usize);
        // Exceptions past a shortened origin would be refused; keep the case valid.
        prop_assume!(list.iter().all(|e| e.old * (cs as u64) < origin_bytes / 512));
        let want = merged_origin(&origin, &img, &list, cb);
        let cow = Cow::read(&img, Some(OriginInfo { sectors: origin_bytes / 512, logical_block_size: 512 })).unwrap();
        let opts = MergeOptions { max_run_chunks: std::num::NonZeroU32::new(run).unwrap() };
        let done = merge::merge(&cow, &mut img, &mut origin, opts, |_| {}).unwrap();
        prop_assert_eq!(done.merged, list.len() as u64);
        prop_assert!(origin.data == want, "origin differs from the model");
        let after = Cow::read(&img, None).unwrap();
        prop_assert_eq!(after.exception_count(), 0);
        let u = report::usage(&after).unwrap();
        prop_assert_eq!(u.allocated_sectors, u.metadata_sectors);
    }

    /// A merge cut by a power cut that tears writes sector by sector, then
    /// resumed, ends with the model's origin and with every metadata area
    /// all zeros (no stale entry left behind a terminator for a later plain
    /// activation to revive).
    #[test]
    fn merge_resumes_after_torn_cut(cs in prop_oneof![Just(2u32), Just(8)], spans in prop::collection::vec((0u64..250, 1u64..50), 1..8), run_no in 0u64..15, phase in prop_oneof![3 => Just(3u64), 1 => 0u64..4], seed in 1u64..u64::MAX) {
        // Each run does four counted operations (origin write and flush,
        // area write, COW flush); phase 3 cuts between the area write and
        // the COW flush, where a torn area is possible.
        let budget = run_no * 4 + phase;
        // Long runs, so that one area write spans several sectors.
        let olds: Vec<u64> = spans.iter().flat_map(|&(s, l)| s..s + l).collect();
        let (img, list, cb) = build(cs, &olds, 2);
        let origin = origin_image(cb, 300);
        let want = merged_origin(&origin, &img, &list, cb);
        let info = Some(OriginInfo { sectors: origin.len_bytes() / 512, logical_block_size: 512 });
        let cow = Cow::read(&img, info).unwrap();
        let shared = Rc::new(Cell::new(budget));
        let (mut cd, mut od) = (CrashDev::new(img, shared.clone()), CrashDev::new(origin, shared));
        let opts = MergeOptions { max_run_chunks: std::num::NonZeroU32::new(48).unwrap() };
        let _ = merge::merge(&cow, &mut cd, &mut od, opts, |_| {});
        let (mut img, mut origin) = (cd.after_torn_crash(seed), od.after_torn_crash(seed.rotate_left(17)));
        let mid = Cow::read(&img, info).unwrap();
        prop_assert!(mid.is_clean(), "torn cut left a COW the kernel would refuse: {:?}", mid.problems);
        merge::merge(&mid, &mut img, &mut origin, opts, |_| {}).unwrap();
        prop_assert!(origin.data == want, "origin differs from the model after a torn cut");
        for a in &cow.areas {
            let r = a.location as usize * cb..(a.location as usize + 1) * cb;
            prop_assert!(img.data[r].iter().all(|b| *b == 0), "area {} keeps stale bytes after the merge", a.index);
        }
    }

    /// A merge cut off after any number of writes (a kill or a power cut:
    /// any subset of the unflushed writes survives) and then run again
    /// ends with the model's origin, and the COW in between is always
    /// one the kernel loads.
    #[test]
    fn merge_resumes_after_any_cut((cs, oc, olds, spare) in cow_case(), budget in 0u64..200, keep_cow in any::<u64>(), keep_origin in any::<u64>()) {
        let (img, list, cb) = build(cs, &olds, spare);
        let origin = origin_image(cb, oc);
        let want = merged_origin(&origin, &img, &list, cb);
        let info = Some(OriginInfo { sectors: origin.len_bytes() / 512, logical_block_size: 512 });
        let cow = Cow::read(&img, info).unwrap();
        let shared = Rc::new(Cell::new(budget));
        let mut cd = CrashDev::new(img, shared.clone());
        let mut od = CrashDev::new(origin, shared);
        let opts = MergeOptions { max_run_chunks: std::num::NonZeroU32::new(7).unwrap() };
        let first = merge::merge(&cow, &mut cd, &mut od, opts, |_| {});
        let (mut img, mut origin) = (cd.after_crash(keep_cow), od.after_crash(keep_origin));
        let mid = Cow::read(&img, info).unwrap();
        prop_assert!(mid.is_clean(), "cut left a COW the kernel would refuse: {:?}", mid.problems);
        let (_, _) = kernel_load(&img, cs);
        if first.is_ok() {
            prop_assert_eq!(mid.exception_count(), 0);
        }
        merge::merge(&mid, &mut img, &mut origin, opts, |_| {}).unwrap();
        prop_assert!(origin.data == want, "origin differs from the model after a resumed merge");
    }
}

/// Helper: the status text of a usage, as the kernel prints it.
trait StatusText {
    fn to_string_status(&self) -> String;
}

impl StatusText for dmsnap_core::pure::status::Usage {
    fn to_string_status(&self) -> String {
        dmsnap_core::pure::status::InfoStatus::Usage(*self).to_string()
    }
}

/// Every cut point of one offline merge, exhaustively: a COW of three
/// areas with runs of several lengths, cut after each of its writes and
/// flushes, keeping every unflushed write (SIGKILL), losing them all
/// (power cut), or keeping them on one device only (a power cut where one
/// disk wrote its cache back and the other did not); after each, half the
/// time the tool resumes and
/// half the time the kernel's loader must accept the COW and the tool
/// finishes. Always the model's origin.
#[test]
fn merge_every_cut_point() {
    let cs = 1u32; // 32 exceptions per area
    let mut olds: Vec<u64> = Vec::new();
    for base in [5u64, 60, 200, 90] {
        olds.extend(base..base + 13);
    }
    olds.extend([300, 2, 301, 4, 150]);
    let (img, list, cb) = build(cs, &olds, 1);
    let origin = origin_image(cb, 400);
    let want = merged_origin(&origin, &img, &list, cb);
    let info = Some(OriginInfo { sectors: origin.len_bytes() / 512, logical_block_size: 512 });
    let opts = MergeOptions { max_run_chunks: std::num::NonZeroU32::new(4).unwrap() };
    // Count the I/O operations of an uncut merge.
    let counter = Rc::new(Cell::new(u64::MAX));
    let (mut c, mut o) = (CrashDev::new(img.clone(), counter.clone()), CrashDev::new(origin.clone(), counter.clone()));
    merge::merge(&Cow::read(&img, info).unwrap(), &mut c, &mut o, opts, |_| {}).unwrap();
    let ops = u64::MAX - counter.get();
    assert!(ops > 40, "only {ops} operations: the case does not span enough runs");
    let mut cuts = 0;
    for budget in 0..=ops {
        for (keep_cow, keep_origin) in [(u64::MAX, u64::MAX), (0, 0), (u64::MAX, 0), (0, u64::MAX)] {
            let keep = format!("cow {}, origin {}", keep_cow != 0, keep_origin != 0);
            let shared = Rc::new(Cell::new(budget));
            let (mut c, mut o) = (CrashDev::new(img.clone(), shared.clone()), CrashDev::new(origin.clone(), shared));
            let _ = merge::merge(&Cow::read(&img, info).unwrap(), &mut c, &mut o, opts, |_| {});
            let (mut c, mut o) = (c.after_crash(keep_cow), o.after_crash(keep_origin));
            let mid = Cow::read(&c, info).unwrap();
            assert!(mid.is_clean(), "cut {budget} ({keep}): {:?}", mid.problems);
            if budget % 2 == 1 {
                kernel_load(&c, cs);
            }
            merge::merge(&mid, &mut c, &mut o, opts, |_| {}).unwrap();
            assert!(o.data == want, "cut after {budget} operations (unflushed writes kept: {keep}): origin differs from the model");
            assert_eq!(Cow::read(&c, info).unwrap().exception_count(), 0);
            cuts += 1;
        }
    }
    println!("merge_every_cut_point: {cuts} cuts over {ops} operations, all resumed to the model origin");
}

/// A COW with 4 KiB logical blocks (every I/O must be aligned, as with
/// O_DIRECT) merged into an origin of 512-byte blocks whose size is not a
/// multiple of the chunk: the clipped last copy still works.
#[test]
fn merge_with_4k_cow_blocks_and_odd_origin() {
    let cs = 8u32; // one 4 KiB chunk
    let olds: Vec<u64> = (0..126).rev().collect();
    let (img, list, cb) = build(cs, &olds, 1);
    let origin_sectors = 1001u64; // chunk 125 is cut after one sector
    let mut origin = origin_image(cb, 126);
    origin.data.truncate(origin_sectors as usize * 512);
    let want = merged_origin(&origin, &img, &list, cb);
    let mut cow = AlignedDev { dev: img, lbs: 4096 };
    let mut odev = AlignedDev { dev: origin, lbs: 512 };
    let c = Cow::read(&cow, Some(OriginInfo { sectors: origin_sectors, logical_block_size: 512 })).unwrap();
    assert!(c.is_clean(), "{:?}", c.problems);
    merge::merge(&c, &mut cow, &mut odev, MergeOptions::default(), |_| {}).unwrap();
    assert!(odev.dev.data == want, "origin differs from the model");
}
