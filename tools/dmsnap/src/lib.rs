// SPDX-License-Identifier: GPL-2.0
//! `dmsnap`: offline tools for device-mapper snapshot COW stores.
//!
//! Everything about the on-disk format comes from the kernel module's pure
//! core (`dmsnap_core::pure`), compiled into this crate unchanged: the tool
//! and the kernel share one definition of the format.
//!
//! - [`dev`]: block devices, image files and in-memory images.
//! - [`scan`]: reading a COW the way the kernel loads it; `check`'s problems.
//! - [`dump`]: `dump` and `restore`.
//! - [`report`]: `changed` and `usage`.
//! - [`repair`]: salvaging a corrupt COW into a new one.
//! - [`merge`]: the offline merge.
//! - [`image`]: COW images built in memory as the kernel writes them (tests).
#![forbid(unsafe_code)]

pub mod dev;
pub mod dump;
pub mod image;
pub mod merge;
pub mod repair;
pub mod report;
pub mod scan;

/// Exit statuses, in the style of thin_check (documented in
/// Documentation/dmsnap.md).
pub mod exit {
    /// Clean, or the subcommand did what it was asked.
    pub const OK: i32 = 0;
    /// The metadata is corrupt, or the subcommand failed.
    pub const CORRUPT: i32 = 1;
    /// The metadata is consistent, but the snapshot was invalidated
    /// (overflow or an I/O error while it was active).
    pub const INVALID_SNAPSHOT: i32 = 2;
    /// The device does not hold a snapshot COW store.
    pub const NOT_A_COW: i32 = 3;
    /// A device could not be opened, read or written.
    pub const IO_ERROR: i32 = 4;
    /// Bad command line (EX_USAGE).
    pub const USAGE: i32 = 64;
}
