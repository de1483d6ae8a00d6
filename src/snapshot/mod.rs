// SPDX-License-Identifier: GPL-2.0

//! The snapshot logic: the `snapshot` target, the per-origin registry, the
//! exception table, pending exceptions and the exception stores.

pub(crate) mod copyout;
pub(crate) mod gather;
pub(crate) mod snap;
pub(crate) mod registry;
pub(crate) mod store;
pub(crate) mod table;
pub(crate) mod target;
