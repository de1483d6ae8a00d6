// SPDX-License-Identifier: GPL-2.0
//! Pure core of dm-snapshot-rs: no I/O, no allocation, no `unsafe`, no panics.
//!
//! Everything here works on integers and caller-provided byte buffers, so it
//! builds both into the kernel module (`#![no_std]`, `core` only) and into
//! the host crate `dmsnap_core`, where it is tested with `cargo test`.
//! Where behaviour is on-disk or user-visible it matches Linux 6.12's
//! dm-snapshot bit for bit; the upstream function each piece mirrors is named
//! in its documentation.
//!
//! - [`chunk`]: sector/chunk arithmetic and chunk-size validation.
//! - [`disk`]: header and metadata-area encoding of the persistent store.
//! - [`alloc`]: the persistent/transient stores' allocation, commit, load and
//!   merge cursors.
//! - [`runs`]: consecutive-chunk runs for the exception table.
//! - [`run_bucket`]: one bucket of the exception table (sorted packed runs).
//! - [`merge`]: choosing the next linear run(s) to merge.
//! - [`gather`]: joining the pieces of gathered copies into large requests.
//! - [`status`]: the INFO status values.
//! - [`stats`]: the `stats` message lines, merge rate and ETA.

// The module must not panic (see above): no unchecked arithmetic, no
// indexing, no unwrap/expect/panic, in the kernel and the host build.
#![warn(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

pub mod alloc;
pub mod chunk;
pub mod disk;
pub mod gather;
pub mod merge;
pub mod run_bucket;
pub mod runs;
pub mod stats;
pub mod status;
