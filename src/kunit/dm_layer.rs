// SPDX-License-Identifier: GPL-2.0

//! The `src/dm` wrappers that need no device: the status writer against
//! `DMEMIT`'s truncation (and its flag, for message results), map results and bio flags against the kernel's
//! values, a bio view over a test bio, argument parsing against
//! `kstrtoull`, and the IMA line against upstream's format.

use core::fmt::Write;

use kernel::bindings;
use kernel::ffi::c_char;

use crate::dm::args::parse_decimal;
use crate::dm::bindings::{DMSNAP_REQ_FUA, DMSNAP_REQ_PREFLUSH};
use crate::dm::compat::cstr_ptr;
use crate::dm::selftest::TestBio;
use crate::dm::{Args, BioOp, MapResult, StatusWriter};

fn status_writer_truncates_like_dmemit() {
    let mut buf = [0xffu8; 8];
    let mut w = StatusWriter::new(&mut buf);
    let _ = write!(w, "{}/{} {}", 24, 200, 16);
    // 7 bytes of text and the NUL, as scnprintf into an 8-byte buffer.
    kassert_eq!(w.len(), 7);
    kassert!(w.as_bytes() == b"24/200 ");
    kassert!(w.truncated());
    let _ = write!(w, "more");
    kassert_eq!(w.len(), 7);
    kassert_eq!(buf.get(7), Some(&0));
}

fn status_writer_fits_exactly() {
    let mut buf = [0xffu8; 6];
    let mut w = StatusWriter::new(&mut buf);
    let _ = write!(w, "254:1");
    kassert!(w.as_bytes() == b"254:1");
    // Full, but nothing was dropped (the message callback returns 1).
    kassert!(!w.truncated());
    kassert_eq!(buf.get(5), Some(&0));
}

fn status_writer_empty_buffer() {
    let mut buf = [0u8; 0];
    let mut w = StatusWriter::new(&mut buf);
    let _ = write!(w, "x");
    kassert_eq!(w.len(), 0);
    kassert!(w.truncated());
    let mut one = [0xffu8; 1];
    let mut w = StatusWriter::new(&mut one);
    let _ = write!(w, "Invalid");
    kassert_eq!(w.len(), 0);
    kassert_eq!(one.first(), Some(&0));
}

fn map_result_matches_dm_mapio() {
    kassert_eq!(MapResult::Submitted.to_raw(), 0);
    kassert_eq!(MapResult::Remapped.to_raw(), 1);
    kassert_eq!(MapResult::Requeue.to_raw(), 2);
    kassert_eq!(MapResult::DelayRequeue.to_raw(), 3);
    kassert_eq!(MapResult::Kill.to_raw(), 4);
}

fn bio_op_decodes_opf() {
    kassert!(BioOp::from_opf(0) == BioOp::Read);
    kassert!(BioOp::from_opf(1) == BioOp::Write);
    // REQ_OP_WRITE with REQ_PREFLUSH | REQ_FUA set is still a write.
    let flags = crate::dm::bindings::DMSNAP_REQ_PREFLUSH | crate::dm::bindings::DMSNAP_REQ_FUA;
    kassert!(BioOp::from_opf(1 | flags) == BioOp::Write);
    kassert!(BioOp::from_opf(3) == BioOp::Discard);
    kassert!(BioOp::from_opf(9) == BioOp::WriteZeroes);
}

fn parse_decimal_like_kstrtoull() {
    kassert_eq!(parse_decimal("16"), Some(16));
    kassert_eq!(parse_decimal("+8"), Some(8));
    kassert_eq!(parse_decimal("8\n"), Some(8));
    kassert_eq!(parse_decimal(""), None);
    kassert_eq!(parse_decimal("-8"), None);
    kassert_eq!(parse_decimal("8k"), None);
    kassert_eq!(parse_decimal(" 8"), None);
    kassert_eq!(parse_decimal("18446744073709551615"), Some(u64::MAX));
    kassert_eq!(parse_decimal("18446744073709551616"), None);
}

fn bio_view_reads_and_remaps() {
    let Some(bio) = TestBio::new(bindings::req_op_REQ_OP_WRITE | DMSNAP_REQ_FUA, 2048, 8192) else {
        kassert!(false);
        return;
    };
    let v = bio.view();
    kassert!(v.op() == BioOp::Write);
    kassert!(v.is_write());
    kassert!(v.is_fua());
    kassert!(!v.is_preflush());
    kassert_eq!(v.sector(), 2048);
    kassert_eq!(v.size_bytes(), 8192);
    kassert_eq!(v.sectors(), 16);
    v.set_sector(4096 + 7);
    kassert_eq!(v.sector(), 4103);

    let Some(flush) = TestBio::new(bindings::req_op_REQ_OP_WRITE | DMSNAP_REQ_PREFLUSH, 0, 0) else {
        kassert!(false);
        return;
    };
    kassert!(flush.view().is_preflush());
    kassert_eq!(flush.view().sectors(), 0);
    let Some(read) = TestBio::new(bindings::req_op_REQ_OP_READ, 8, 512) else {
        kassert!(false);
        return;
    };
    kassert!(read.view().op() == BioOp::Read);
    kassert!(!read.view().is_write());
}

static ARG_P: &core::ffi::CStr = c"P";
static ARG_16: &core::ffi::CStr = c"16";
static ARG_BAD: &core::ffi::CStr = c"16x";

fn args_consume_in_order() {
    let argv: [*mut c_char; 3] = [
        cstr_ptr(ARG_P).cast_mut(),
        cstr_ptr(ARG_16).cast_mut(),
        cstr_ptr(ARG_BAD).cast_mut(),
    ];
    // The strings are 'static; the array lives for this function.
    let argv: &[*mut c_char] = &argv;
    // SAFETY: three valid NUL-terminated strings that outlive `args`.
    let mut args = unsafe { Args::from_raw(3, argv.as_ptr().cast_mut()) };
    kassert_eq!(args.remaining(), 3);
    kassert!(args.next_str(c"missing").is_ok_and(|s| s == "P"));
    kassert!(args.next_u64(1 << 21, c"bad").is_ok_and(|v| v == 16));
    // "16x" is not a number: the error carries the caller's message.
    kassert!(args.next_u64(1 << 21, c"bad").is_err_and(|e| e.message.to_bytes() == b"bad"));
    kassert_eq!(args.remaining(), 0);
    kassert!(args.next_cstr().is_none());
    kassert!(args.next_str(c"missing").is_err());
}

fn ima_line_matches_upstream_format() {
    use crate::snapshot::snap::StateFlags;
    use crate::snapshot::target::write_ima;
    let mut buf = [0u8; 256];
    let mut w = StatusWriter::new(&mut buf);
    let flags = StateFlags { valid: true, merge_failed: false, overflowed: true };
    write_ima(&mut w, c"snapshot", [1, 16, 0], "253:0", "253:1", flags);
    // upstream: DMEMIT_TARGET_NAME_VERSION, then ",snap_origin_name=%s",
    // ",snap_cow_name=%s", ",snap_valid=%c", ",snap_merge_failed=%c",
    // ",snapshot_overflowed=%c", ";".
    kassert!(
        w.as_bytes()
            == &b"target_name=snapshot,target_version=1.16.0,snap_origin_name=253:0,snap_cow_name=253:1,snap_valid=y,snap_merge_failed=n,snapshot_overflowed=y;"[..]
    );
}

kunit_suite!(
    dm_snapshot_rs_dm_layer,
    [
        status_writer_truncates_like_dmemit,
        status_writer_fits_exactly,
        status_writer_empty_buffer,
        map_result_matches_dm_mapio,
        bio_op_decodes_opf,
        parse_decimal_like_kstrtoull,
        bio_view_reads_and_remaps,
        args_consume_in_order,
        ima_line_matches_upstream_format,
    ]
);
