// SPDX-License-Identifier: GPL-2.0

//! In-kernel unit tests (KUnit), run when the module is loaded into a
//! kernel built with `CONFIG_KUNIT`.
//!
//! 6.12 has no `#[kunit_tests]`, so [`kunit_suite!`] builds the same
//! `struct kunit_suite` the C `kunit_test_suite()` macro does and places a
//! pointer to it in the `.kunit_test_suites` section, which the module
//! loader hands to KUnit. The section entry must be `#[used(compiler)]`:
//! plain `#[used]` gives it the `SHF_GNU_RETAIN` flag, `ld -r` then keeps a
//! second `.kunit_test_suites` section, and the loader only sees the first.

/// Asserts inside a KUnit case: a failure is reported to KUnit and ends the
/// case (it does not panic).
macro_rules! kassert {
    ($cond:expr $(,)?) => {
        ::kernel::kunit_assert!("dm_snapshot_rs", "src/kunit.rs", 0, $cond)
    };
}

/// Asserts that two values are equal inside a KUnit case.
macro_rules! kassert_eq {
    ($left:expr, $right:expr $(,)?) => {
        ::kernel::kunit_assert_eq!("dm_snapshot_rs", "src/kunit.rs", 0, $left, $right)
    };
}

/// Declares a KUnit suite from plain `fn()` test cases.
///
/// `kunit_suite!(suite_ident, "suite_name", [case_a, case_b]);` where each
/// case is a function in scope taking no arguments.
macro_rules! kunit_suite {
    ($suite:ident, $name:literal, [$($case:ident),+ $(,)?]) => {
        #[allow(non_upper_case_globals, unreachable_pub)]
        mod $suite {
            use ::kernel::bindings;

            $(
                /// KUnit entry point for the test case of the same name.
                ///
                /// # Safety
                ///
                /// Called by KUnit with a valid test context.
                unsafe extern "C" fn $case(_test: *mut bindings::kunit) {
                    super::$case();
                }
            )+

            const fn case(
                name: &'static ::kernel::str::CStr,
                run: unsafe extern "C" fn(*mut bindings::kunit),
            ) -> bindings::kunit_case {
                bindings::kunit_case {
                    run_case: Some(run),
                    name: name.as_char_ptr(),
                    // SAFETY: An all-zero `kunit_case` tail (no params, no
                    // log, default status) is what `KUNIT_CASE()` produces.
                    ..unsafe { ::core::mem::zeroed() }
                }
            }

            const fn suite_name(name: &[u8]) -> [::kernel::ffi::c_char; 256] {
                let mut out = [0; 256];
                let mut i = 0;
                while i < name.len() && i < 255 {
                    out[i] = name[i];
                    i += 1;
                }
                out
            }

            const CASES_LEN: usize = [$(stringify!($case)),+].len() + 1;

            static mut CASES: [bindings::kunit_case; CASES_LEN] = [
                $(case(::kernel::c_str!(stringify!($case)), $case),)+
                // SAFETY: An all-zero case terminates the array.
                unsafe { ::core::mem::zeroed() },
            ];

            static mut SUITE: bindings::kunit_suite = bindings::kunit_suite {
                name: suite_name($name.as_bytes()),
                test_cases: ::core::ptr::addr_of_mut!(CASES).cast(),
                // SAFETY: All-zero is the state `kunit_test_suite()` leaves
                // the remaining fields in.
                ..unsafe { ::core::mem::zeroed() }
            };

            #[used(compiler)]
            #[link_section = ".kunit_test_suites"]
            static mut SUITE_ENTRY: *const bindings::kunit_suite = ::core::ptr::addr_of_mut!(SUITE);
        }
    };
}

mod dm_layer {
    use core::fmt::Write;

    use kernel::bindings;
    use kernel::c_str;
    use kernel::ffi::c_char;

    use crate::dm::args::parse_decimal;
    use crate::dm::bindings::{DMSNAP_REQ_FUA, DMSNAP_REQ_PREFLUSH};
    use crate::dm::selftest::TestBio;
    use crate::dm::{Args, BioOp, MapResult, StatusWriter};

    fn status_writer_truncates_like_dmemit() {
        let mut buf = [0xffu8; 8];
        let mut w = StatusWriter::new(&mut buf);
        let _ = write!(w, "{}/{} {}", 24, 200, 16);
        // 7 bytes of text and the NUL, as scnprintf into an 8-byte buffer.
        kassert_eq!(w.len(), 7);
        kassert!(w.as_bytes() == b"24/200 ");
        let _ = write!(w, "more");
        kassert_eq!(w.len(), 7);
        kassert_eq!(buf.get(7), Some(&0));
    }

    fn status_writer_fits_exactly() {
        let mut buf = [0xffu8; 6];
        let mut w = StatusWriter::new(&mut buf);
        let _ = write!(w, "254:1");
        kassert!(w.as_bytes() == b"254:1");
        kassert_eq!(buf.get(5), Some(&0));
    }

    fn status_writer_empty_buffer() {
        let mut buf = [0u8; 0];
        let mut w = StatusWriter::new(&mut buf);
        let _ = write!(w, "x");
        kassert_eq!(w.len(), 0);
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

    static ARG_P: &kernel::str::CStr = c_str!("P");
    static ARG_16: &kernel::str::CStr = c_str!("16");
    static ARG_BAD: &kernel::str::CStr = c_str!("16x");

    fn args_consume_in_order() {
        let argv: [*mut c_char; 3] = [
            ARG_P.as_char_ptr() as *mut c_char,
            ARG_16.as_char_ptr() as *mut c_char,
            ARG_BAD.as_char_ptr() as *mut c_char,
        ];
        // The strings are 'static; the array lives for this function.
        let argv: &[*mut c_char] = &argv;
        // SAFETY: three valid NUL-terminated strings that outlive `args`.
        let mut args = unsafe { Args::from_raw(3, argv.as_ptr() as *mut *mut c_char) };
        kassert_eq!(args.remaining(), 3);
        kassert!(args.next_str(c_str!("missing")).is_ok_and(|s| s == "P"));
        kassert!(args.next_u64(1 << 21, c_str!("bad")).is_ok_and(|v| v == 16));
        // "16x" is not a number: the error carries the caller's message.
        kassert!(args.next_u64(1 << 21, c_str!("bad")).is_err_and(|e| e.message.as_bytes() == b"bad"));
        kassert_eq!(args.remaining(), 0);
        kassert!(args.next_cstr().is_none());
        kassert!(args.next_str(c_str!("missing")).is_err());
    }

    fn ima_line_matches_upstream_format() {
        use crate::snapshot::target::{write_ima, ImaFlags};
        let mut buf = [0u8; 256];
        let mut w = StatusWriter::new(&mut buf);
        let flags = ImaFlags { valid: true, merge_failed: false, overflowed: true };
        write_ima(&mut w, c_str!("snapshot"), [1, 16, 0], c_str!("253:0"), c_str!("253:1"), flags);
        // upstream: DMEMIT_TARGET_NAME_VERSION, then ",snap_origin_name=%s",
        // ",snap_cow_name=%s", ",snap_valid=%c", ",snap_merge_failed=%c",
        // ",snapshot_overflowed=%c", ";".
        kassert!(
            w.as_bytes()
                == &b"target_name=snapshot,target_version=1.16.0,snap_origin_name=253:0,snap_cow_name=253:1,snap_valid=y,snap_merge_failed=n,snapshot_overflowed=y;"[..]
        );
    }

    kunit_suite!(
        dm_layer_suite,
        "dm_snapshot_rs_dm_layer",
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
}

/// kcopyd and dm-io wrappers against a real block device (the
/// `kunit_scratch_dev` module parameter; skipped without one).
mod io_layer {
    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use kernel::bindings;
    use kernel::prelude::*;
    use kernel::sync::Arc;

    use crate::dm::bindings::DMSNAP_REQ_FUA;
    use crate::dm::dm_io::{DmIoClient, IoBuffer, IoCountdown};
    use crate::dm::kcopyd::{CopyCallback, CopyFlags, KcopydClient, Region};
    use crate::dm::selftest;

    const SECTORS: u64 = 128;
    const BYTES: usize = 128 * 512;
    const READ: u32 = bindings::req_op_REQ_OP_READ;
    const WRITE: u32 = bindings::req_op_REQ_OP_WRITE;

    /// Completion record shared with a kcopyd or dm-io callback. Atomics
    /// only: dm-io completions may run in interrupt context.
    struct Done {
        done: AtomicBool,
        read_err: AtomicBool,
        errors: AtomicU64,
    }

    impl Done {
        fn new() -> Option<Arc<Self>> {
            let done = Self {
                done: AtomicBool::new(false),
                read_err: AtomicBool::new(false),
                errors: AtomicU64::new(0),
            };
            Arc::new(done, GFP_KERNEL).ok()
        }

        /// Waits up to 30 s for the callback; `None` on timeout.
        fn wait(&self) -> Option<(bool, u64)> {
            for _ in 0..3000 {
                if self.done.load(Ordering::Acquire) {
                    return Some((self.read_err.load(Ordering::Relaxed), self.errors.load(Ordering::Relaxed)));
                }
                selftest::sleep_ms(10);
            }
            None
        }
    }

    impl CopyCallback for Done {
        fn copy_done(this: Arc<Self>, read_err: bool, write_err: u64) {
            this.read_err.store(read_err, Ordering::Relaxed);
            this.errors.store(write_err, Ordering::Relaxed);
            this.done.store(true, Ordering::Release);
        }
    }

    fn fill(buf: &mut [u8], seed: u8) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 9) as u8);
        }
    }

    fn matches(buf: &[u8], seed: u8) -> bool {
        buf.iter()
            .enumerate()
            .all(|(i, b)| *b == (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 9) as u8))
    }

    fn read_back(io: &DmIoClient, region: &Region) -> Option<IoBuffer> {
        let mut buf = IoBuffer::new(BYTES).ok()?;
        io.sync_io(region, READ, &mut buf).ok()?;
        Some(buf)
    }

    fn kcopyd_and_dm_io_move_data() {
        let Some(dev) = selftest::scratch_or_skip() else {
            return;
        };
        let (Ok(io), Ok(kc)) = (DmIoClient::new(), KcopydClient::new_throttled()) else {
            kassert!(false);
            return;
        };
        let Ok(mut buf) = IoBuffer::new(BYTES) else {
            kassert!(false);
            return;
        };

        // dm-io: synchronous FUA write of a pattern.
        fill(buf.as_mut_slice(), 7);
        kassert!(io.sync_io(&dev.region(0, SECTORS), WRITE | DMSNAP_REQ_FUA, &mut buf).is_ok());

        // kcopyd: one source, two destinations, then read both back.
        let dests = [dev.region(1024, SECTORS), dev.region(4096, SECTORS)];
        let Some(done) = Done::new() else {
            kassert!(false);
            return;
        };
        // SAFETY: `dev` outlives `kc`: locals drop in reverse order, and
        // dropping `kc` waits for the job anyway; we also wait below.
        let r = unsafe { kc.copy(&dev.region(0, SECTORS), &dests, CopyFlags::default(), done.clone()) };
        kassert!(r.is_ok());
        kassert_eq!(done.wait(), Some((false, 0)));
        for region in &dests {
            let back = read_back(&io, region);
            kassert!(back.as_ref().is_some_and(|b| matches(b.as_slice(), 7)));
        }

        // Too many destinations is refused up front, not a BUG in kcopyd.
        let many = [dev.region(1024, 8); 9];
        let Some(unused) = Done::new() else {
            kassert!(false);
            return;
        };
        // SAFETY: As above; the call fails before any job is queued.
        let r = unsafe { kc.copy(&dev.region(0, 8), &many, CopyFlags::default(), unused) };
        kassert!(r.is_err());

        // dm-io: asynchronous writes from two offsets of one buffer, in
        // flight together and counted by an `IoCountdown`: the buffer's
        // halves land swapped.
        fill(buf.as_mut_slice(), 99);
        let half = SECTORS / 2;
        let half_bytes = (half * 512) as usize;
        let Ok(count) = IoCountdown::new() else {
            kassert!(false);
            return;
        };
        // SAFETY: `buf` and `dev` outlive the requests: we wait for them
        // below before touching or dropping either.
        let r1 = unsafe { io.start(&dev.region(8192, half), WRITE, &mut buf, half_bytes, &count) };
        // SAFETY: As above.
        let r2 = unsafe { io.start(&dev.region(8192 + half, half), WRITE, &mut buf, 0, &count) };
        kassert!(r1.is_ok() && r2.is_ok());
        kassert!(count.wait());
        let back = read_back(&io, &dev.region(8192, SECTORS));
        let b = back.as_ref().map(|b| b.as_slice());
        let src = buf.as_slice();
        kassert!(b.is_some_and(|b| b.get(..half_bytes) == src.get(half_bytes..half_bytes * 2)
            && b.get(half_bytes..half_bytes * 2) == src.get(..half_bytes)));
        // A request past the end of the buffer is refused and counts as a
        // failure.
        let Ok(count) = IoCountdown::new() else {
            kassert!(false);
            return;
        };
        // SAFETY: As above (and nothing is submitted).
        let r = unsafe { io.start(&dev.region(8192, SECTORS), WRITE, &mut buf, 512, &count) };
        kassert!(r.is_err());
        kassert!(!count.wait());

        // kcopyd: zeroing.
        let Some(done) = Done::new() else {
            kassert!(false);
            return;
        };
        // SAFETY: As for the copy above.
        let r = unsafe { kc.zero(&[dev.region(1024, SECTORS)], done.clone()) };
        kassert!(r.is_ok());
        kassert_eq!(done.wait(), Some((false, 0)));
        let back = read_back(&io, &dev.region(1024, SECTORS));
        kassert!(back.as_ref().is_some_and(|b| b.as_slice().iter().all(|x| *x == 0)));
    }

    kunit_suite!(io_layer_suite, "dm_snapshot_rs_io_layer", [kcopyd_and_dm_io_move_data]);
}

/// The pure layer (`src/pure`) as compiled into the kernel: chunk math, the
/// on-disk header and the persistent store's accounting, against upstream's
/// numbers. (The host runs the same code under `cargo test` with property
/// tests; this checks the kernel build of it.)
mod pure_layer {
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
        pure_layer_suite,
        "dm_snapshot_rs_pure",
        [chunk_size_rules_match_upstream, header_bytes_are_upstreams, usage_matches_lvm_worked_example]
    );
}

/// The completed-exception table against a simple model.
mod table_layer {
    use kernel::prelude::*;

    use crate::snapshot::table::{BuildError, ExceptionTable, TableBuilder, GROUP_SHIFT};

    fn sequential_exceptions_compress_into_runs() {
        let Ok(mut t) = ExceptionTable::new(1 << 20) else {
            kassert!(false);
            return;
        };
        // 1000 consecutive chunks copied in order: one run per 256-chunk
        // group they touch.
        for i in 0..1000u64 {
            kassert!(t.insert(5000 + i, 2 + i).is_ok());
        }
        kassert_eq!(t.chunks(), 1000);
        let groups = ((5000 + 999) >> GROUP_SHIFT) - (5000 >> GROUP_SHIFT) + 1;
        kassert_eq!(t.runs() as u64, groups);
        for i in 0..1000u64 {
            kassert_eq!(t.lookup(5000 + i), Some(2 + i));
        }
        kassert_eq!(t.lookup(4999), None);
        kassert_eq!(t.lookup(6000), None);
    }

    fn scattered_exceptions_match_model() {
        let Ok(mut t) = ExceptionTable::new(4096) else {
            kassert!(false);
            return;
        };
        // A deterministic permutation of origin chunks, allocated COW chunks
        // in order; remember the model in a plain array.
        let mut model = [u64::MAX; 512];
        let mut x: u64 = 12345;
        let mut next_new = 2u64;
        for _ in 0..400 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let old = (x >> 33) % 512;
            let Some(slot) = model.get_mut(old as usize) else { continue };
            if *slot != u64::MAX {
                continue;
            }
            *slot = next_new;
            kassert!(t.insert(old, next_new).is_ok());
            next_new += 1;
        }
        for (old, want) in model.iter().enumerate() {
            let got = t.lookup(old as u64);
            if *want == u64::MAX {
                kassert!(got.is_none());
            } else {
                kassert_eq!(got, Some(*want));
            }
        }
        // Backwards-adjacent inserts extend a run at its front.
        let Ok(mut t) = ExceptionTable::new(4096) else {
            kassert!(false);
            return;
        };
        kassert!(t.insert(101, 51).is_ok());
        kassert!(t.insert(100, 50).is_ok());
        kassert_eq!(t.runs(), 1);
        kassert_eq!(t.lookup(100), Some(50));
        kassert_eq!(t.lookup(101), Some(51));
    }

    fn runs_never_cross_a_group() {
        let Ok(mut t) = ExceptionTable::new(4096) else {
            kassert!(false);
            return;
        };
        let edge = 1u64 << GROUP_SHIFT;
        kassert!(t.insert(edge - 1, 10).is_ok());
        kassert!(t.insert(edge, 11).is_ok());
        kassert_eq!(t.runs(), 2);
        kassert_eq!(t.lookup(edge - 1), Some(10));
        kassert_eq!(t.lookup(edge), Some(11));
    }

    /// Origin chunks of the model tests: 16 groups.
    const SPAN: u64 = 16 << GROUP_SHIFT;
    const NONE: u64 = u64::MAX;

    /// A deterministic shuffle of `0..SPAN` (LCG, Fisher-Yates).
    fn shuffled(seed: u64) -> Option<KVec<u64>> {
        let mut v = KVec::with_capacity(SPAN as usize, GFP_KERNEL).ok()?;
        for i in 0..SPAN {
            v.push(i, GFP_KERNEL).ok()?;
        }
        let mut x = seed;
        for i in (1..v.len()).rev() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let j = (x >> 33) as usize % (i + 1);
            if let (Some(&a), Some(&b)) = (v.get(i), v.get(j)) {
                if let Some(slot) = v.get_mut(i) {
                    *slot = b;
                }
                if let Some(slot) = v.get_mut(j) {
                    *slot = a;
                }
            }
        }
        Some(v)
    }

    /// COW chunk of `old` in the model mappings: linear in blocks of 37
    /// chunks, so a scattered insertion order fills gaps between runs and
    /// must join them.
    fn mapped(old: u64) -> u64 {
        1000 + old + (old / 37) * 5
    }

    /// The runs a table of the model must hold: maximal, inside a group.
    fn canonical_runs(model: &[u64]) -> usize {
        let mut runs = 0;
        let mut prev: Option<(u64, u64)> = None;
        for (old, &new) in model.iter().enumerate() {
            let old = old as u64;
            if new == NONE {
                prev = None;
                continue;
            }
            let joins = matches!(prev, Some((po, pn))
                if po + 1 == old && pn + 1 == new && po >> GROUP_SHIFT == old >> GROUP_SHIFT);
            if !joins {
                runs += 1;
            }
            prev = Some((old, new));
        }
        runs
    }

    fn matches_model(t: &ExceptionTable, model: &[u64]) -> bool {
        let mut ok = true;
        for (old, &new) in model.iter().enumerate() {
            let want = if new == NONE { None } else { Some(new) };
            ok &= t.lookup(old as u64) == want;
        }
        ok && t.lookup(SPAN).is_none() && t.runs() == canonical_runs(model)
    }

    fn random_inserts_match_model() {
        let (Ok(mut t), Some(order), Ok(mut model)) =
            (ExceptionTable::new(1 << 16), shuffled(7), KVec::from_elem(NONE, SPAN as usize, GFP_KERNEL))
        else {
            kassert!(false);
            return;
        };
        // Three quarters of the chunks, in scattered order.
        for &old in order.iter().take((SPAN * 3 / 4) as usize) {
            kassert!(t.insert(old, mapped(old)).is_ok());
            if let Some(slot) = model.get_mut(old as usize) {
                *slot = mapped(old);
            }
        }
        kassert_eq!(t.chunks(), SPAN * 3 / 4);
        kassert!(matches_model(&t, &model));
        // The rest: every gap fills, and each group ends as a few runs.
        for &old in order.iter().skip((SPAN * 3 / 4) as usize) {
            kassert!(t.insert(old, mapped(old)).is_ok());
            if let Some(slot) = model.get_mut(old as usize) {
                *slot = mapped(old);
            }
        }
        kassert!(matches_model(&t, &model));
        kassert!(t.runs() < 16 * 10);
    }

    fn gap_fill_joins_runs() {
        let Ok(mut t) = ExceptionTable::new(4096) else {
            kassert!(false);
            return;
        };
        kassert!(t.insert(10, 100).is_ok());
        kassert!(t.insert(12, 102).is_ok());
        kassert!(t.insert(14, 104).is_ok());
        kassert_eq!(t.runs(), 3);
        kassert!(t.insert(11, 101).is_ok());
        kassert_eq!(t.runs(), 2);
        kassert!(t.insert(13, 103).is_ok());
        kassert_eq!(t.runs(), 1);
        for i in 10..15u64 {
            kassert_eq!(t.lookup(i), Some(90 + i));
        }
        // The right chunk with the wrong COW chunk joins nothing.
        kassert!(t.insert(16, 106).is_ok());
        kassert!(t.insert(15, 300).is_ok());
        kassert_eq!(t.runs(), 3);
        kassert_eq!(t.lookup(15), Some(300));
    }

    fn remove_range_splits_joined_runs() {
        let Ok(mut t) = ExceptionTable::new(4096) else {
            kassert!(false);
            return;
        };
        // 250..262 maps linearly but crosses a group at 256: two runs,
        // each joined from scattered inserts.
        for k in [0u64, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11] {
            kassert!(t.insert(250 + k, 500 + k).is_ok());
        }
        kassert_eq!(t.runs(), 2);
        kassert_eq!(t.chunks(), 12);
        // A hole in the middle of the first run splits it.
        kassert!(t.remove_range(252, 2).is_ok());
        kassert_eq!(t.runs(), 3);
        kassert_eq!(t.chunks(), 10);
        kassert_eq!(t.lookup(251), Some(501));
        kassert_eq!(t.lookup(252), None);
        kassert_eq!(t.lookup(253), None);
        kassert_eq!(t.lookup(254), Some(504));
        // Across the group boundary: trims both sides.
        kassert!(t.remove_range(255, 3).is_ok());
        kassert_eq!(t.chunks(), 7);
        kassert_eq!(t.lookup(254), Some(504));
        kassert_eq!(t.lookup(255), None);
        kassert_eq!(t.lookup(257), None);
        kassert_eq!(t.lookup(258), Some(508));
        // Refill the hole: joined again.
        kassert!(t.insert(252, 502).is_ok());
        kassert!(t.insert(253, 503).is_ok());
        kassert_eq!(t.lookup(253), Some(503));
        kassert_eq!(t.runs(), 2);
        kassert!(t.remove_range(0, 1 << 20).is_ok());
        kassert_eq!(t.runs(), 0);
        kassert_eq!(t.chunks(), 0);
        kassert_eq!(t.lookup(250), None);
    }

    fn duplicates_are_refused() {
        let Ok(mut t) = ExceptionTable::new(4096) else {
            kassert!(false);
            return;
        };
        kassert!(t.insert(5, 7).is_ok());
        kassert!(t.insert(6, 8).is_ok());
        kassert_eq!(t.insert(5, 9), Err(EEXIST));
        kassert_eq!(t.insert(6, 8), Err(EEXIST));
        kassert_eq!(t.lookup(5), Some(7));
        kassert_eq!(t.chunks(), 2);
        kassert_eq!(t.runs(), 1);
        // Bulk loading finds them when it finishes.
        let Ok(t) = ExceptionTable::new(4096) else {
            kassert!(false);
            return;
        };
        let mut b = TableBuilder::new(t);
        kassert!(b.add_run(5, 7, 1).is_ok());
        kassert!(b.add_run(900, 20, 1).is_ok());
        kassert!(b.add_run(6, 8, 1).is_ok());
        kassert!(b.add_run(6, 30, 1).is_ok());
        kassert!(matches!(b.finish(), Err(BuildError::Duplicate)));
    }

    fn bulk_load_matches_model() {
        let (Ok(t), Some(order), Ok(mut model)) =
            (ExceptionTable::new(1 << 16), shuffled(99), KVec::from_elem(NONE, SPAN as usize, GFP_KERNEL))
        else {
            kassert!(false);
            return;
        };
        let mut b = TableBuilder::new(t);
        for &old in order.iter().take((SPAN / 2) as usize) {
            kassert!(b.add_run(old, mapped(old), 1).is_ok());
            if let Some(slot) = model.get_mut(old as usize) {
                *slot = mapped(old);
            }
        }
        // Runs too, as a sequentially filled COW gives: the free stretches
        // of every other block of 37 (some cross a group boundary).
        let mut old = 0;
        while old < SPAN {
            let mut len = 0u32;
            while (old / 37) % 2 == 0
                && old + u64::from(len) < SPAN
                && model.get((old + u64::from(len)) as usize) == Some(&NONE)
                && mapped(old + u64::from(len)) == mapped(old) + u64::from(len)
            {
                len += 1;
            }
            if len == 0 {
                old += 1;
                continue;
            }
            kassert!(b.add_run(old, mapped(old), len).is_ok());
            for k in old..old + u64::from(len) {
                if let Some(slot) = model.get_mut(k as usize) {
                    *slot = mapped(k);
                }
            }
            old += u64::from(len);
        }
        let Ok(mut t) = b.finish() else {
            kassert!(false);
            return;
        };
        kassert!(matches_model(&t, &model));
        // The loaded table takes commits like any other.
        for old in 0..SPAN {
            if model.get(old as usize) == Some(&NONE) {
                kassert!(t.insert(old, mapped(old)).is_ok());
                if let Some(slot) = model.get_mut(old as usize) {
                    *slot = mapped(old);
                }
            }
        }
        kassert!(matches_model(&t, &model));
        kassert_eq!(t.chunks(), SPAN);
    }

    kunit_suite!(
        table_suite,
        "dm_snapshot_rs_exception_table",
        [
            sequential_exceptions_compress_into_runs,
            scattered_exceptions_match_model,
            runs_never_cross_a_group,
            random_inserts_match_model,
            gap_fill_joins_runs,
            remove_range_splits_joined_runs,
            duplicates_are_refused,
            bulk_load_matches_model,
        ]
    );
}

/// The pending-exception lifecycle on a real device: an origin write's
/// copy is allocated, copied by kcopyd, committed in order by the worker
/// and lands in the table, with the data in the COW chunk. A transient
/// store on the scratch disk (origin and COW regions do not overlap).
mod pending_layer {
    use kernel::bindings;
    
    use crate::dm::dm_io::{DmIoClient, IoBuffer};
    use crate::dm::kcopyd::KcopydClient;
    use crate::dm::selftest;
    use crate::pure::alloc::TransientState;
    use crate::pure::chunk::ChunkSize;
    use crate::snapshot::core::{CopyGroup, CoreParts, NewRuns, SnapCore};
    use crate::snapshot::registry::EntryRef;
    use crate::snapshot::store::{Cursor, StoreKind};
    use crate::snapshot::table::ExceptionTable;

    fn fill(buf: &mut [u8], seed: u8) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(13).wrapping_add(seed);
        }
    }

    fn wait_idle(core: &SnapCore) -> bool {
        for _ in 0..500 {
            if core.in_flight() == 0 {
                return true;
            }
            selftest::sleep_ms(10);
        }
        false
    }

    fn pending_exception_lifecycle() {
        let Some(dev) = selftest::scratch_or_skip() else {
            return;
        };
        let (Ok(chunk), Ok(io), Ok(kc), Ok(table), Ok(entry)) = (
            ChunkSize::new(8, 512, 512),
            DmIoClient::new(),
            KcopydClient::new_throttled(),
            ExceptionTable::new(1 << 16),
            EntryRef::get(dev.devt()),
        ) else {
            kassert!(false);
            return;
        };
        // Origin chunks 1000 and 1001 hold known data.
        let Ok(mut buf) = IoBuffer::new(8192) else {
            kassert!(false);
            return;
        };
        fill(buf.as_mut_slice(), 41);
        kassert!(io.sync_io(&dev.region(8000, 16), bindings::req_op_REQ_OP_WRITE, &mut buf).is_ok());

        let parts = CoreParts {
            chunk,
            kind: StoreKind::Transient,
            origin: dev.handle(),
            cow: dev.handle(),
            owner: 1,
            merging: false,
            ti: None,
            len: u64::MAX,
            discard_passdown_origin: false,
            entry: entry.entry().clone(),
            valid: true,
            table,
            cursor: Cursor::Transient(TransientState::new(chunk)),
            meta: None,
            kcopyd: kc,
        };
        let Ok(core) = SnapCore::new(parts) else {
            kassert!(false);
            return;
        };
        core.activate_for_test();

        // First write to chunk 1000: a pending exception to COW chunk 0.
        let first = core.origin_cow(8000, &mut None);
        kassert_eq!(first, Some((1000, 0)));
        // While it is pending, no second exception for the chunk.
        kassert!(core.origin_cow(8003, &mut None).is_none());
        // Chunk 1001 gets the next COW chunk; start the second copy first.
        let second = core.origin_cow(8008, &mut None);
        kassert_eq!(second, Some((1001, 1)));
        kassert_eq!(core.in_flight(), 2);
        // Two chunks are being copied: over a threshold of 1 (and of 0, one
        // at a time), not over 2 (`wait_for_in_progress()`'s `>`).
        let saved = selftest::set_cow_threshold(1);
        kassert!(core.over_cow_threshold());
        selftest::set_cow_threshold(0);
        kassert!(core.over_cow_threshold());
        selftest::set_cow_threshold(2);
        kassert!(!core.over_cow_threshold());
        if let Some((c, n)) = second {
            core.start_copy(c, n);
        }
        if let Some((c, n)) = first {
            core.start_copy(c, n);
        }
        kassert!(wait_idle(&core));
        // Copied: no longer counted, even at a threshold of 0.
        selftest::set_cow_threshold(0);
        kassert!(!core.over_cow_threshold());
        selftest::set_cow_threshold(saved);
        // Committed in allocation order; both in the table now.
        kassert_eq!(core.lookup(1000), Some(0));
        kassert_eq!(core.lookup(1001), Some(1));
        kassert!(core.origin_cow(8000, &mut None).is_none());
        // The COW chunks hold the origin data.
        let Ok(mut back) = IoBuffer::new(8192) else {
            kassert!(false);
            return;
        };
        kassert!(io.sync_io(&dev.region(0, 16), bindings::req_op_REQ_OP_READ, &mut back).is_ok());
        kassert!(back.as_slice() == buf.as_slice());

        // A write over chunks 1010..1018: one run on COW chunks 2..10,
        // copied by one job.
        let mut runs = NewRuns::new();
        core.origin_cow_range(8080, 8144, &mut None, &mut runs);
        let got: [Option<(u64, u64, u32)>; 2] = {
            let mut it = runs.iter().map(|r| (r.chunk, r.new, r.count));
            [it.next(), it.next()]
        };
        kassert_eq!(got, [Some((1010, 2, 8)), None]);
        let mut group = CopyGroup::new();
        for run in runs.iter() {
            group.add(&core, run);
        }
        group.start();
        kassert!(wait_idle(&core));
        kassert!((1010..1018).all(|c| core.lookup(c) == Some(2 + c - 1010)));
        // Over 1009..1020 only the chunks without an exception are new,
        // as runs of consecutive chunks.
        let mut runs = NewRuns::new();
        core.origin_cow_range(8072, 8160, &mut None, &mut runs);
        let got: [Option<(u64, u64, u32)>; 3] = {
            let mut it = runs.iter().map(|r| (r.chunk, r.new, r.count));
            [it.next(), it.next(), it.next()]
        };
        kassert_eq!(got, [Some((1009, 10, 1)), Some((1018, 11, 2)), None]);
        let mut group = CopyGroup::new();
        for run in runs.iter() {
            group.add(&core, run);
        }
        group.start();
        kassert!(wait_idle(&core));
        kassert_eq!(core.lookup(1019), Some(12));

        // Copies of scattered chunks started back to back are gathered
        // (one buffer, the consecutive COW chunks written together): each
        // COW chunk must hold its own origin chunk.
        let Ok(mut one) = IoBuffer::new(4096) else {
            kassert!(false);
            return;
        };
        let order = [7u64, 0, 3, 6, 1, 5, 2, 4];
        for i in order {
            fill(one.as_mut_slice(), 100 + i as u8);
            let at = dev.region((2000 + 3 * i) * 8, 8);
            kassert!(io.sync_io(&at, bindings::req_op_REQ_OP_WRITE, &mut one).is_ok());
        }
        let mut started = [(0u64, 0u64); 8];
        for (slot, i) in started.iter_mut().zip(order) {
            match core.origin_cow((2000 + 3 * i) * 8, &mut None) {
                Some(pair) => *slot = pair,
                None => kassert!(false),
            }
        }
        for (c, n) in started {
            core.start_copy(c, n);
        }
        kassert!(wait_idle(&core));
        for (i, (c, n)) in order.iter().zip(started) {
            kassert_eq!(core.lookup(c), Some(n));
            fill(one.as_mut_slice(), 100 + *i as u8);
            let Ok(mut got) = IoBuffer::new(4096) else {
                kassert!(false);
                return;
            };
            kassert!(io.sync_io(&dev.region(n * 8, 8), bindings::req_op_REQ_OP_READ, &mut got).is_ok());
            kassert!(got.as_slice() == one.as_slice());
        }
        core.shutdown();
    }

    kunit_suite!(pending_suite, "dm_snapshot_rs_pending", [pending_exception_lifecycle]);
}
