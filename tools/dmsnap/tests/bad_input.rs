// SPDX-License-Identifier: GPL-2.0
//! Bad input: every case is an error with a message, and nothing is written.

use dmsnap::dev::MemDev;
use dmsnap::dump::{self, Dump};
use dmsnap::image;
use dmsnap::merge::{self, MergeError, MergeOptions};
use dmsnap::scan::{Cow, ScanError};

fn sample() -> (MemDev, Dump) {
    // chunk 1: 32 exceptions per area, so 40 exceptions span two areas.
    let olds: Vec<u64> = (0..40).map(|i| (i * 7) % 97).collect();
    let (img, _) = image::build(1, 200, &olds, true).unwrap();
    let d = Dump::of(&Cow::read(&img, None).unwrap());
    (img, d)
}

/// `restore` of `d` onto a copy of `img` fails with a message containing
/// `want`, and the copy is unchanged.
fn restore_refused(img: &MemDev, d: &Dump, want: &str) {
    let mut out = img.clone();
    let err = dump::restore(d, &mut out, true).unwrap_err();
    assert!(err.contains(want), "error '{err}' lacks '{want}'");
    assert_eq!(out, *img, "a refused restore wrote");
}

#[test]
fn inconsistent_dumps_are_refused_before_writing() {
    let (img, d) = sample();
    assert_eq!(d.areas.len(), 2);
    let mut x = d.clone();
    x.exceptions += 1;
    restore_refused(&img, &x, "exceptions listed");
    let mut x = d.clone();
    x.areas[0].runs.pop();
    x.areas[0].entries = x.areas[0].runs.iter().map(|r| r.length).sum();
    x.exceptions = x.areas.iter().map(|a| a.entries).sum();
    restore_refused(&img, &x, "only the last area may be short");
    let mut x = d.clone();
    x.areas[1].location += 1;
    restore_refused(&img, &x, "does not match chunk size");
    let mut x = d.clone();
    x.areas.swap(0, 1);
    restore_refused(&img, &x, "is listed where area 0 belongs");
    let mut x = d.clone();
    x.header.chunk_sectors = 3;
    restore_refused(&img, &x, "chunk size 3");
    let mut x = d.clone();
    x.header.version = 2;
    restore_refused(&img, &x, "on-disk version 2");
    let mut x = d.clone();
    x.areas[1].runs[0].cow = 0;
    restore_refused(&img, &x, "COW chunk 0 would end the list");
    let mut x = d.clone();
    x.areas[1].runs[0].length = 0;
    restore_refused(&img, &x, "run of length 0");
    let mut x = d.clone();
    x.areas.pop();
    x.exceptions = x.areas.iter().map(|a| a.entries).sum();
    restore_refused(&img, &x, "the last area of the dump is full");
    // Too small an output.
    let small = MemDev::new(vec![0u8; 512 * 10]);
    let mut out = small.clone();
    let err = dump::restore(&d, &mut out, true).unwrap_err();
    assert!(err.contains("the output holds"), "{err}");
    assert_eq!(out, small);
}

#[test]
fn malformed_text_is_refused() {
    let (_, d) = sample();
    let xml = d.to_xml();
    let json = d.to_json();
    for bad in [
        String::new(),
        "<".to_string(),
        xml[..xml.len() / 2].to_string(),
        xml.replace("</dmsnap_dump>", ""),
        xml.replace("origin=", "orig="),
        xml.replace("length=\"", "length=\"x"),
        xml.replace("<run", "<bogus"),
        xml.clone() + "<area index=\"9\">",
        json[..json.len() / 2].to_string(),
        json.replace("\"runs\"", "\"rns\""),
        "{\"dmsnap_dump\": 1}".to_string(),
    ] {
        assert!(Dump::parse(&bad).is_err(), "accepted: {bad:.80}");
    }
    let mut x = d.clone();
    x.dmsnap_dump = 2;
    assert!(x.encode().unwrap_err().contains("dump format version 2"));
}

#[test]
fn not_a_cow() {
    for (bytes, want) in [
        (vec![0u8; 100], "smaller than one sector"),
        (vec![0u8; 4096], "magic is 0"),
        (vec![0x55u8; 4096], "magic 0x55555555"),
    ] {
        match Cow::read(&MemDev::new(bytes), None) {
            Err(e @ ScanError::NotCow(_)) => assert!(e.to_string().contains(want), "{e}"),
            other => panic!("want NotCow({want}), got {other:?}"),
        }
    }
    // A SnAp header with a bad chunk size or version is a corrupt header.
    let (mut img, _) = sample();
    img.data[12..16].copy_from_slice(&3u32.to_le_bytes());
    assert!(matches!(Cow::read(&img, None), Err(ScanError::BadHeader(_))));
    let (mut img, _) = sample();
    img.data[8..12].copy_from_slice(&2u32.to_le_bytes());
    assert!(matches!(Cow::read(&img, None), Err(ScanError::BadHeader(_))));
}

/// `merge` of `img` into `origin` is refused with a reason containing
/// `want`, and neither device changes.
fn merge_refused(img: &MemDev, origin: &MemDev, want: &str) {
    let cow = Cow::read(img, None).unwrap();
    let (mut c, mut o) = (img.clone(), origin.clone());
    match merge::merge(&cow, &mut c, &mut o, MergeOptions::default(), |_| {}) {
        Err(MergeError::Refused(why)) => assert!(why.contains(want), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!((&c, &o), (img, origin), "a refused merge wrote");
}

#[test]
fn merge_refusals_write_nothing() {
    let (img, _) = sample();
    // Origin too small for the exceptions (they reach chunk 96).
    merge_refused(&img, &MemDev::new(vec![7u8; 512 * 50]), "wrong origin device");
    // An invalidated snapshot.
    let olds: Vec<u64> = (0..10).collect();
    let (inv, _) = image::build(1, 200, &olds, false).unwrap();
    merge_refused(&inv, &MemDev::new(vec![7u8; 512 * 100]), "Snapshot is invalid");
}

#[test]
fn restore_over_an_existing_store_needs_force() {
    let (img, d) = sample();
    // The store changes after the dump: restoring the old dump would drop
    // the new exceptions silently.
    let olds: Vec<u64> = (0..45).map(|i| (i * 7) % 97).collect();
    let (newer, _) = image::build(1, 200, &olds, true).unwrap();
    let mut out = newer.clone();
    let err = dump::restore(&d, &mut out, false).unwrap_err();
    assert!(err.contains("already holds a COW store"), "{err}");
    assert_eq!(out, newer);
    dump::restore(&d, &mut out, true).unwrap();
    assert_eq!(Dump::of(&Cow::read(&out, None).unwrap()), d);
    let _ = img;
}

#[test]
fn restore_refuses_entries_check_would_flag() {
    let (img, d) = sample();
    let mut blank = img.clone();
    blank.data[..512].fill(0);
    // An entry on area 1's chunk (1 + 33 with 1-sector chunks).
    let mut x = d.clone();
    x.areas[1].runs[0].cow = 34;
    x.areas[1].runs[0].length = 1;
    let rest: u64 = x.areas[1].runs.iter().map(|r| r.length).sum();
    x.areas[1].entries = rest;
    x.exceptions = x.areas.iter().map(|a| a.entries).sum();
    restore_refused_blank(&blank, &x, "points into snapshot metadata");
    // Past the end of the COW.
    let mut x = d.clone();
    x.areas[0].runs[0].cow = (1 << 40) + 5;
    restore_refused_blank(&blank, &x, "past the end of the COW");
    // Two entries for one origin chunk.
    let mut x = d.clone();
    let first = x.areas[0].runs[0];
    x.areas[1].runs[0].origin = first.origin;
    restore_refused_blank(&blank, &x, "a second exception");
}

fn restore_refused_blank(blank: &MemDev, d: &Dump, want: &str) {
    let mut out = blank.clone();
    let err = dump::restore(d, &mut out, false).unwrap_err();
    assert!(err.contains(want), "error '{err}' lacks '{want}'");
    assert_eq!(out, *blank, "a refused restore wrote");
}
