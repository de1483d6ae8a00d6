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

// `pin_init!` of `SnapCore` (many fields) needs more than the default 128.
#![recursion_limit = "256"]
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, clippy::arithmetic_side_effects)]

mod dm;
mod origin;
pub mod pure;
mod snapshot;

#[cfg(CONFIG_KUNIT)]
mod kunit;

use kernel::prelude::*;

module! {
    type: DmSnapshotModule,
    name: "dm_snapshot_rs",
    description: "device-mapper snapshot targets (snapshot, snapshot-origin, snapshot-merge) in Rust",
    license: "GPL",
    alias: ["dm-snapshot", "dm-snapshot-origin", "dm-snapshot-merge"],
}

/// Module state. Fields drop in order: the targets are unregistered first
/// (no instance can exist by then), then the work queue and the registry.
struct DmSnapshotModule {
    _merge: dm::Registration<snapshot::target::SnapshotMerge>,
    _snapshot: dm::Registration<snapshot::target::Snapshot>,
    _origin: dm::Registration<origin::Origin>,
    _workqueue: dm::sync::ModuleWorkqueue,
    _registry: snapshot::registry::RegistryHandle,
}

impl kernel::Module for DmSnapshotModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let registry = snapshot::registry::RegistryHandle::create()?;
        let workqueue = dm::sync::ModuleWorkqueue::create()?;
        let origin = dm::Registration::<origin::Origin>::register(module).inspect_err(|e| {
            dm::log::dm_err!("Origin target register failed {}", e.to_errno());
        })?;
        let snapshot = dm::Registration::<snapshot::target::Snapshot>::register(module).inspect_err(|e| {
            dm::log::dm_err!("snapshot target register failed {}", e.to_errno());
        })?;
        let merge = dm::Registration::<snapshot::target::SnapshotMerge>::register(module).inspect_err(|e| {
            dm::log::dm_err!("Merge target register failed {}", e.to_errno());
        })?;
        Ok(Self { _merge: merge, _snapshot: snapshot, _origin: origin, _workqueue: workqueue, _registry: registry })
    }
}
