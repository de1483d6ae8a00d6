// SPDX-License-Identifier: GPL-2.0
//! Host build of the dm-snapshot-rs pure core.
//!
//! The code lives in [`pure`] and is compiled unchanged into the kernel module
//! (as `pub mod pure;`) and here, so it can be tested with `cargo test`.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub, rust_2018_idioms)]

pub mod pure;
