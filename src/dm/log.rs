// SPDX-License-Identifier: GPL-2.0

//! Kernel log messages in device-mapper's format.
//!
//! C's `DMERR("...")` prints `device-mapper: <prefix>: ...`. The kernel
//! crate's `pr_err!` would prefix the module name instead, so these macros
//! pass `device-mapper` as the "module name" to the same printk entry point.

/// The message prefix upstream dm-snapshot uses (`DM_MSG_PREFIX`).
pub(crate) const DM_MSG_PREFIX: &str = "snapshots";

/// Like C's `DMERR`: `device-mapper: snapshots: <message>`.
macro_rules! dm_err {
    ($($arg:tt)*) => {
        $crate::dm::log::emit(&::kernel::print::format_strings::ERR, format_args!($($arg)*))
    };
}

/// Like C's `DMWARN`.
#[allow(unused_macros)]
macro_rules! dm_warn {
    ($($arg:tt)*) => {
        $crate::dm::log::emit(&::kernel::print::format_strings::WARNING, format_args!($($arg)*))
    };
}

/// Like C's `DMINFO`.
#[allow(unused_macros)]
macro_rules! dm_info {
    ($($arg:tt)*) => {
        $crate::dm::log::emit(&::kernel::print::format_strings::INFO, format_args!($($arg)*))
    };
}

#[allow(unused_imports)]
pub(crate) use {dm_err, dm_info, dm_warn};

/// Prints `device-mapper: snapshots: <args>\n` at the level of `format`.
pub(crate) fn emit(
    format: &[u8; kernel::print::format_strings::LENGTH],
    args: core::fmt::Arguments<'_>,
) {
    // SAFETY: `format` is one of `format_strings` (the only values of that
    // type the kernel crate exports), and the name is NUL-terminated.
    unsafe {
        kernel::print::call_printk(
            format,
            b"device-mapper\0",
            format_args!("{}: {}\n", DM_MSG_PREFIX, args),
        )
    };
}
