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

    use crate::dm::args::parse_decimal;
    use crate::dm::{BioOp, MapResult, StatusWriter};

    fn status_writer_truncates_like_dmemit() {
        let mut buf = [0xffu8; 8];
        let mut w = StatusWriter::new(&mut buf);
        let _ = write!(w, "{}/{} {}", 24, 200, 16);
        // 7 bytes of text and the NUL, as scnprintf into an 8-byte buffer.
        kassert_eq!(w.len(), 7);
        kassert!(w.as_bytes() == b"24/200 ");
        let _ = write!(w, "more");
        kassert_eq!(w.len(), 7);
        kassert_eq!(buf[7], 0);
    }

    fn status_writer_fits_exactly() {
        let mut buf = [0xffu8; 6];
        let mut w = StatusWriter::new(&mut buf);
        let _ = write!(w, "254:1");
        kassert!(w.as_bytes() == b"254:1");
        kassert_eq!(buf[5], 0);
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
        kassert_eq!(one[0], 0);
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
        ]
    );
}
