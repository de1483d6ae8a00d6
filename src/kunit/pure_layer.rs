// SPDX-License-Identifier: GPL-2.0

//! The pure layer (`src/pure`) as compiled into the kernel: chunk math, the
//! on-disk header and the persistent store's accounting, against upstream's
//! numbers. (The host runs the same code under `cargo test` with property
//! tests; this checks the kernel build of it.)

use core::fmt::Write;

use crate::dm::StatusWriter;
use crate::pure::alloc::PersistentState;
use crate::pure::chunk::{ChunkSize, ChunkSizeError};
use crate::pure::disk::{decode_header, DiskHeader, Geometry, HeaderState};
use crate::pure::status::InfoStatus;

fn chunk_size_rules_match_upstream() {
    kassert!(ChunkSize::new(8, 512, 512).is_ok());
    kassert!(ChunkSize::new(12, 512, 512) == Err(ChunkSizeError::NotPowerOfTwo));
    kassert!(ChunkSize::new(4, 4096, 512) == Err(ChunkSizeError::NotBlockMultiple));
    kassert!(ChunkSize::new(1 << 21, 512, 512).is_ok());
    kassert!(ChunkSize::new(1 << 22, 512, 512) == Err(ChunkSizeError::TooHigh));
    let Ok(cs) = ChunkSize::new(16, 512, 512) else {
        kassert!(false);
        return;
    };
    kassert_eq!(cs.sector_to_chunk(33), 2);
    kassert_eq!(cs.chunk_to_sector(3), Some(48));
    kassert_eq!(cs.chunks_in(100), 6);
}

fn header_bytes_are_upstreams() {
    let Ok(cs) = ChunkSize::new(8, 512, 512) else {
        kassert!(false);
        return;
    };
    let bytes = DiskHeader::new_valid(cs).to_bytes();
    kassert!(bytes == [0x53, 0x6e, 0x41, 0x70, 1, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0]);
    kassert!(matches!(decode_header(&[0u8; 16]), Ok(HeaderState::New)));
    kassert!(matches!(decode_header(&bytes), Ok(HeaderState::Existing(h)) if h.chunk_size == 8));
    kassert!(decode_header(b"NotASnapshotHdr!").is_err());
}

fn usage_matches_lvm_worked_example() {
    // 100 KiB COW, 4 KiB chunks, one exception: "24/200 16" (12.00%).
    let Ok(cs) = ChunkSize::new(8, 512, 512) else {
        kassert!(false);
        return;
    };
    let mut store = PersistentState::new_store(Geometry::new(cs));
    let fresh = store.usage(200);
    kassert_eq!(fresh.sectors_allocated, 16);
    kassert_eq!(fresh.metadata_sectors, 16);
    kassert!(store.prepare_exception(200).is_ok());
    let mut buf = [0u8; 32];
    let mut w = StatusWriter::new(&mut buf);
    let _ = write!(w, "{}", InfoStatus::select(true, false, false, store.usage(200)));
    kassert!(w.as_bytes() == b"24/200 16");
}

kunit_suite!(
    dm_snapshot_rs_pure,
    [chunk_size_rules_match_upstream, header_bytes_are_upstreams, usage_matches_lvm_worked_example]
);
