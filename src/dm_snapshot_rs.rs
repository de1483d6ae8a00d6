// SPDX-License-Identifier: GPL-2.0

//! dm-snapshot-rs: device-mapper's snapshot targets in Rust.
//!
//! A drop-in for the kernel's C `dm-snapshot` module: the same target names,
//! versions, table and status lines, module parameters and on-disk COW
//! format.
//!
//! Layers, bottom up:
//! - [`dm`]: safe wrappers over device-mapper, bios, kcopyd and dm-io (most
//!   of the `unsafe`), plus the C shim in `src/dm/shim.c`;
//! - [`origin`]: the `snapshot-origin` target;
//! - [`pure`]: code without kernel dependencies (on-disk codec, chunk math),
//!   shared with the host crate so `cargo test` covers it.

mod dm;
mod origin;
pub mod pure;

#[cfg(CONFIG_KUNIT)]
mod kunit;

use kernel::prelude::*;

module! {
    type: DmSnapshotModule,
    name: "dm_snapshot_rs",
    author: "dm-snapshot-rs developers",
    description: "device-mapper snapshot targets (snapshot-origin) in Rust",
    license: "GPL",
    alias: ["dm-snapshot-origin"],
}

struct DmSnapshotModule {
    _origin: dm::Registration<origin::Origin>,
}

impl kernel::Module for DmSnapshotModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let origin = dm::Registration::<origin::Origin>::register(module).inspect_err(|e| {
            dm::log::dm_err!("Origin target register failed {}", e.to_errno());
        })?;
        Ok(Self { _origin: origin })
    }
}
