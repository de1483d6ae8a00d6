// SPDX-License-Identifier: GPL-2.0
//! Exact numbers from upstream dm-snapshot 6.12 and the LVM2 contract.

use core::num::NonZeroU32;

use dmsnap_core::pure::alloc::{
    LoadProgress, Loader, MergeStep, NoSpace, PersistentState, StoreError, TransientState,
};
use dmsnap_core::pure::chunk::{ChunkSize, ChunkSizeError, MAX_CHUNK_SECTORS};
use dmsnap_core::pure::disk::{
    decode_header, write_entry, DiskException, DiskHeader, Geometry, HeaderError, HeaderState,
};
use dmsnap_core::pure::status::{InfoStatus, Usage};

fn cs(sectors: u32) -> ChunkSize {
    ChunkSize::new(sectors, 512, 512).expect("valid chunk size")
}

#[test]
fn chunk_size_validation_matches_upstream() {
    assert_eq!(
        ChunkSize::new(0, 512, 512),
        Err(ChunkSizeError::NotPowerOfTwo)
    );
    assert_eq!(
        ChunkSize::new(12, 512, 512),
        Err(ChunkSizeError::NotPowerOfTwo)
    );
    assert_eq!(
        ChunkSize::new(4, 4096, 512),
        Err(ChunkSizeError::NotBlockMultiple)
    );
    assert_eq!(
        ChunkSize::new(4, 512, 4096),
        Err(ChunkSizeError::NotBlockMultiple)
    );
    assert_eq!(ChunkSize::new(8, 4096, 4096).map(ChunkSize::sectors), Ok(8));
    // Power-of-two check comes first, as upstream.
    assert_eq!(
        ChunkSize::new(3, 4096, 4096),
        Err(ChunkSizeError::NotPowerOfTwo)
    );
    assert_eq!(
        ChunkSize::new(1 << 22, 512, 512),
        Err(ChunkSizeError::TooHigh)
    );
    let max = cs(1 << 21);
    assert_eq!(max.sectors(), MAX_CHUNK_SECTORS);
    assert_eq!(max.bytes(), 1 << 30);
    assert_eq!(cs(1).shift(), 0);
    assert_eq!(
        ChunkSize::new(8, 0, 512),
        Err(ChunkSizeError::NotBlockMultiple)
    );
    assert_eq!(
        ChunkSizeError::NotPowerOfTwo.message(),
        "Chunk size is not a power of 2"
    );
    assert_eq!(
        ChunkSizeError::NotBlockMultiple.message(),
        "Chunk size is not a multiple of device blocksize"
    );
    assert_eq!(ChunkSizeError::TooHigh.message(), "Chunk size is too high");
}

#[test]
fn chunk_size_defaults() {
    assert_eq!(
        ChunkSize::persistent_default(512, 512).map(ChunkSize::sectors),
        Ok(32)
    );
    assert_eq!(
        ChunkSize::persistent_default(4096, 4096).map(ChunkSize::sectors),
        Ok(32)
    );
    assert_eq!(
        ChunkSize::persistent_default(65536, 512).map(ChunkSize::sectors),
        Ok(128)
    );
}

#[test]
fn chunk_conversions() {
    let c = cs(8);
    assert_eq!(c.sector_to_chunk(17), 2);
    assert_eq!(c.offset_in_chunk(17), 1);
    assert_eq!(c.chunk_to_sector(2), Some(16));
    assert_eq!(c.chunk_to_sector(u64::MAX >> 3), Some(!7u64));
    assert_eq!(c.chunk_to_sector((u64::MAX >> 3) + 1), None);
    // get_dev_size >> chunk_shift rounds down.
    assert_eq!(c.chunks_in(200), 25);
    assert_eq!(c.chunks_in(207), 25);
    assert_eq!(c.mask(), 7);
    assert!(c.is_aligned(24));
    assert!(ChunkSize::from_shift(21).is_some());
    assert!(ChunkSize::from_shift(22).is_none());
    // start_copy(): trailing partial chunk is clipped to the device.
    assert_eq!(c.clip_extent(24, 1, 197), Some((192, 5)));
    assert_eq!(c.clip_extent(3, 4, 1000), Some((24, 32)));
    assert_eq!(c.clip_extent(25, 1, 200), None);
}

#[test]
fn header_bytes_exact() {
    // Reference example: 8 KiB chunks.
    let h = DiskHeader::new_valid(cs(16));
    assert_eq!(
        h.to_bytes(),
        [0x53, 0x6e, 0x41, 0x70, 1, 0, 0, 0, 1, 0, 0, 0, 0x10, 0, 0, 0]
    );
    assert_eq!(&h.to_bytes()[..4], b"SnAp");
    let mut buf = [0xaau8; 64];
    h.encode(&mut buf).expect("fits");
    assert_eq!(&buf[..16], &h.to_bytes());
    assert!(buf[16..].iter().all(|&b| b == 0), "rest of chunk zeroed");
    let invalid = DiskHeader { valid: false, ..h };
    assert_eq!(&invalid.to_bytes()[4..8], &[0, 0, 0, 0]);
    assert!(h.encode(&mut [0u8; 15]).is_err());
}

#[test]
fn header_decode_cases() {
    assert_eq!(decode_header(&[0u8; 512]), Ok(HeaderState::New));
    assert_eq!(decode_header(&[0u8; 15]), Err(HeaderError::TooShort));
    let mut b = [0u8; 16];
    b[0] = 1;
    assert_eq!(decode_header(&b), Err(HeaderError::BadMagic(1)));
    assert_eq!(HeaderError::BadMagic(1).errno(), -6);
    assert_eq!(
        HeaderError::BadMagic(1).message(),
        "Invalid or corrupt snapshot"
    );
    // valid: any non-zero counts.
    let raw = [0x53, 0x6e, 0x41, 0x70, 7, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0];
    let HeaderState::Existing(h) = decode_header(&raw).expect("decodes") else {
        panic!("expected existing header");
    };
    assert!(h.valid);
    assert_eq!(h.validate(512, 512), Ok(cs(8)));
    // Chunk size is validated before the version (upstream order).
    let bad = DiskHeader {
        valid: true,
        version: 2,
        chunk_size: 12,
    };
    assert_eq!(
        bad.validate(512, 512),
        Err(HeaderError::BadChunkSize(12, ChunkSizeError::NotPowerOfTwo))
    );
    let bad_ver = DiskHeader {
        valid: true,
        version: 2,
        chunk_size: 8,
    };
    assert_eq!(bad_ver.validate(512, 512), Err(HeaderError::BadVersion(2)));
    assert_eq!(
        bad_ver.validate(512, 512).map_err(HeaderError::errno),
        Err(-22)
    );
    // An on-disk chunk smaller than the device block is refused.
    assert_eq!(
        DiskHeader::new_valid(cs(4)).validate(4096, 512),
        Err(HeaderError::BadChunkSize(
            4,
            ChunkSizeError::NotBlockMultiple
        ))
    );
}

#[test]
fn exception_bytes_exact() {
    let e = DiskException {
        old: 0x0102_0304_0506_0708,
        new: 0x1122,
    };
    assert_eq!(
        e.to_bytes(),
        [8, 7, 6, 5, 4, 3, 2, 1, 0x22, 0x11, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(DiskException::from_bytes(&e.to_bytes()), Some(e));
    assert_eq!(DiskException::from_bytes(&[0u8; 15]), None);
}

#[test]
fn area_geometry_exact() {
    // 4 KiB chunks: epa 256, areas at 1, 258, 515 (bytes 4096, 1056768).
    let g = Geometry::new(cs(8));
    assert_eq!(g.exceptions_per_area(), 256);
    assert_eq!(g.area_location(0), Some(1));
    assert_eq!(g.area_location(1), Some(258));
    assert_eq!(g.area_location(2), Some(515));
    assert_eq!(g.area_location(1).map(|c| c * 4096), Some(1_056_768));
    assert_eq!(g.area_location(u64::MAX), None);
    assert_eq!(Geometry::new(cs(32)).exceptions_per_area(), 1024);
    assert_eq!(Geometry::new(cs(128)).exceptions_per_area(), 4096);
    assert_eq!(Geometry::new(cs(1)).exceptions_per_area(), 32);
    assert!(g.is_metadata_chunk(0));
    assert!(g.is_metadata_chunk(1));
    assert!(!g.is_metadata_chunk(2));
    assert!(!g.is_metadata_chunk(257));
    assert!(g.is_metadata_chunk(258));
    assert_eq!(g.area_of_data_chunk(2), Some(0));
    assert_eq!(g.area_of_data_chunk(257), Some(0));
    assert_eq!(g.area_of_data_chunk(259), Some(1));
    assert_eq!(g.area_of_data_chunk(258), None);
}

#[test]
fn lvm_usage_worked_examples() {
    let g = Geometry::new(cs(8));
    // Fresh snapshot: 16/... 16 (0%).
    let mut st = PersistentState::new_store(g);
    assert_eq!(
        st.usage(200),
        Usage {
            sectors_allocated: 16,
            total_sectors: 200,
            metadata_sectors: 16
        }
    );
    assert!(st.usage(200).merge_finished());
    // 100K COW (200 sectors), 4K chunks, one write: 24/200 16.
    assert_eq!(st.prepare_exception(200), Ok(2));
    let u = st.usage(200);
    assert_eq!(
        (u.sectors_allocated, u.total_sectors, u.metadata_sectors),
        (24, 200, 16)
    );
    assert_eq!(
        InfoStatus::select(true, false, false, u).to_string(),
        "24/200 16"
    );

    // 3-chunk COW + one write: 100%.
    let mut small = PersistentState::new_store(g);
    assert_eq!(small.prepare_exception(24), Ok(2));
    assert!(small.usage(24).full());
    assert_eq!(small.prepare_exception(24), Err(NoSpace));
    // Growing the COW online is seen on the next allocation.
    assert_eq!(small.prepare_exception(32), Ok(3));
}

#[test]
fn allocation_skips_metadata_and_fills_exactly() {
    // chunk 1 sector: epa 32, stride 33, areas at 1, 34, 67.
    let g = Geometry::new(cs(1));
    let mut st = PersistentState::new_store(g);
    let cow = 100; // 100 chunks
    let mut got = Vec::new();
    while let Ok(c) = st.prepare_exception(cow) {
        got.push(c);
    }
    let want: Vec<u64> = (2..100).filter(|&c| c != 34 && c != 67).collect();
    assert_eq!(got, want);
    // Chunk 100 would be area 3: skip_metadata moves past it, so upstream
    // reports more sectors allocated than the COW has (101 vs 100 chunks).
    assert_eq!(st.next_free(), 101);
    assert_eq!(st.usage(100).sectors_allocated, 101);
}

#[test]
fn merge_accounting_ends_at_two_chunks() {
    let g = Geometry::new(cs(8));
    let epa = g.exceptions_per_area();
    let mut st = PersistentState::new_store(g);
    let mut area = vec![0u8; g.area_bytes()];
    // Commit 3 exceptions into area 0.
    for old in [10u64, 11, 12] {
        let new = st.prepare_exception(1 << 30).expect("space");
        let slot = st.commit_slot().expect("slot");
        assert!(!slot.area_full);
        write_entry(g, &mut area, slot.index, DiskException { old, new }).expect("write");
    }
    assert_eq!(st.usage(1 << 30).sectors_allocated, 5 * 8);
    let limit = NonZeroU32::new(u32::MAX).expect("nonzero");
    assert_eq!(st.merge_step(), MergeStep::Ready);
    let run = st.prepare_merge(&area, limit).expect("ok").expect("run");
    assert_eq!((run.last_old(), run.last_new(), run.count()), (12, 4, 3));
    assert_eq!((run.first_old(), run.first_new()), (10, 2));
    assert_eq!(st.commit_merge(4), Err(StoreError::MergeTooLarge));
    st.clear_merged(&mut area, 3).expect("clear");
    assert!(area.iter().all(|&b| b == 0));
    st.commit_merge(3).expect("commit");
    let u = st.usage(1 << 30);
    assert_eq!((u.sectors_allocated, u.metadata_sectors), (16, 16));
    assert!(u.merge_finished());
    assert_eq!(st.merge_step(), MergeStep::Finished);

    // A state with area 1 empty steps back to area 0 (read from disk, full).
    let mut st = PersistentState::from_parts(g, 300, 1, 0).expect("state");
    assert_eq!(
        st.merge_step(),
        MergeStep::ReadPreviousArea {
            area: 0,
            location: 1
        }
    );
    st.enter_previous_area().expect("back");
    assert_eq!((st.current_area(), st.current_committed()), (0, epa));
    assert!(st.enter_previous_area().is_err());
    // commit_merge(1) from a full area 0: next_free = 1 + 255 + 1.
    st.commit_merge(1).expect("commit");
    assert_eq!(st.next_free(), 257);
}

#[test]
fn loader_full_area_then_empty() {
    // epa 32; area 0 full with new chunks 2..=33, area 1 empty.
    let g = Geometry::new(cs(1));
    let mut a0 = vec![0u8; 512];
    for i in 0..32u32 {
        write_entry(
            g,
            &mut a0,
            i,
            DiskException {
                old: 100 + u64::from(i),
                new: 2 + u64::from(i),
            },
        )
        .expect("write");
    }
    let a1 = vec![0u8; 512];
    let mut l = Loader::new(g);
    assert_eq!(l.next_read(), Some((0, 1)));
    let mut seen = Vec::new();
    let p = l.feed::<(), _>(&a0, |o, n| {
        seen.push((o, n));
        Ok(())
    });
    assert_eq!(
        p,
        Ok(LoadProgress::NeedArea {
            area: 1,
            location: 34
        })
    );
    let p = l.feed::<(), _>(&a1, |_, _| panic!("no entries"));
    let Ok(LoadProgress::Done(st)) = p else {
        panic!("not done: {p:?}")
    };
    assert_eq!(seen.len(), 32);
    // next_free = 34 lands on area 1's metadata chunk: skip_metadata -> 35.
    assert_eq!(
        (st.next_free(), st.current_area(), st.current_committed()),
        (35, 1, 0)
    );
    assert_eq!(
        l.feed::<(), _>(&a1, |_, _| Ok(())),
        Err(dmsnap_core::pure::alloc::LoadError::AlreadyDone)
    );
}

#[test]
fn transient_store() {
    let mut t = TransientState::new(cs(8));
    assert_eq!(t.prepare_exception(16), Ok(0));
    assert_eq!(t.prepare_exception(16), Ok(1));
    assert_eq!(t.prepare_exception(16), Err(NoSpace));
    assert_eq!(
        t.usage(16),
        Usage {
            sectors_allocated: 16,
            total_sectors: 16,
            metadata_sectors: 0
        }
    );
}

#[test]
fn status_strings() {
    let u = Usage {
        sectors_allocated: 16,
        total_sectors: 2_097_152,
        metadata_sectors: 16,
    };
    assert_eq!(
        InfoStatus::select(true, false, false, u).to_string(),
        "16/2097152 16"
    );
    assert_eq!(
        InfoStatus::select(false, true, true, u).to_string(),
        "Invalid"
    );
    assert_eq!(
        InfoStatus::select(true, true, true, u).to_string(),
        "Merge failed"
    );
    assert_eq!(
        InfoStatus::select(true, false, true, u).to_string(),
        "Overflow"
    );
    assert_eq!(
        InfoStatus::select(true, false, true, u).keyword(),
        Some("Overflow")
    );
}

#[test]
fn merge_batch_across_areas_moves_the_cursor_back() {
    let g = Geometry::new(cs(8));
    let epa = g.exceptions_per_area();
    let mut st = PersistentState::new_store(g);
    // Fill area 0 and 3 entries of area 1.
    for _ in 0..epa + 3 {
        st.prepare_exception(1 << 30).expect("space");
        let slot = st.commit_slot().expect("slot");
        if slot.area_full {
            assert!(st.advance_area());
        }
    }
    assert_eq!((st.current_area(), st.current_committed()), (1, 3));
    let before = st;
    // Growing the list, or a slot past the area, is refused.
    assert_eq!(st.commit_merge_to(1, 4), Err(StoreError::MergeTooLarge));
    assert_eq!(st.commit_merge_to(0, epa + 1), Err(StoreError::MergeTooLarge));
    assert_eq!(st, before);
    // Merging all of area 1 and 10 entries of area 0 keeps epa - 10.
    st.commit_merge_to(0, epa - 10).expect("commit");
    assert_eq!((st.current_area(), st.current_committed()), (0, epa - 10));
    // next_free as if the kept entries had been allocated in order.
    assert_eq!(st.next_free(), 1 + u64::from(epa - 10) + 1);
    assert_eq!(st.merge_step(), MergeStep::Ready);
    // Everything merged: used == metadata == 2 chunks, what LVM waits for.
    st.commit_merge_to(0, 0).expect("commit");
    assert_eq!(st.merge_step(), MergeStep::Finished);
    assert_eq!(st.usage(1 << 30).sectors_allocated, 2 * 8);
}
