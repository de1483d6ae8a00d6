// SPDX-License-Identifier: GPL-2.0

//! Safe abstractions over device-mapper, bios, kcopyd and dm-io.
//!
//! C headers: [`include/linux/device-mapper.h`](srctree/include/linux/device-mapper.h),
//! [`include/linux/dm-kcopyd.h`](srctree/include/linux/dm-kcopyd.h),
//! [`include/linux/dm-io.h`](srctree/include/linux/dm-io.h).
//!
//! Nearly all of the module's `unsafe` lives in this directory. The snapshot
//! logic above it works with [`Target`], [`Bio`], [`DmDev`], [`HeldDev`],
//! [`Args`] and [`StatusWriter`] and implements [`TargetOps`]; it never
//! touches raw bindings.

pub(crate) mod args;
pub(crate) mod bindings;
pub(crate) mod bio;
pub(crate) mod bio_list;
pub(crate) mod bounce;
pub(crate) mod bufio;
pub(crate) mod clock;
pub(crate) mod compat;
pub(crate) mod device;
pub(crate) mod dm_io;
pub(crate) mod global;
pub(crate) mod kcopyd;
pub(crate) mod log;
pub(crate) mod params;
#[cfg(CONFIG_KUNIT)]
pub(crate) mod selftest;
pub(crate) mod status;
pub(crate) mod sync;
pub(crate) mod target;
pub(crate) mod wait;

pub(crate) use args::Args;
pub(crate) use compat::kvec;
pub(crate) use bio::{Bio, BioOp, OwnedBio};
pub(crate) use bio_list::{BioList, TargetBio, TargetBioList};
pub(crate) use device::{BdevHandle, DmDev, HeldDev, OpenMode};
pub(crate) use status::{StatusType, StatusWriter};
pub(crate) use target::{CtrError, DeviceVisitor, MapResult, QueueLimits, Registration, Setup, Target, TargetHandle, TargetOps};
