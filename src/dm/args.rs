// SPDX-License-Identifier: GPL-2.0

//! Table-line arguments, as handed to a target constructor.

use kernel::ffi::{c_char, c_uint};
use core::ffi::CStr;

use super::compat;
use super::target::CtrError;

/// The remaining arguments of a table line (`argc`/`argv` of a `ctr`).
///
/// # Invariants
///
/// Every pointer in `argv` points to a NUL-terminated string that lives at
/// least for `'a`.
pub(crate) struct Args<'a> {
    argv: &'a [*mut c_char],
    pos: usize,
}

impl<'a> Args<'a> {
    /// Wraps the arguments dm core passes to `ctr`.
    ///
    /// # Safety
    ///
    /// `argv` must point to `argc` valid pointers to NUL-terminated strings,
    /// all of which stay valid and unmodified for `'a`. `argv` may be null
    /// only if `argc` is zero.
    pub(crate) unsafe fn from_raw(argc: c_uint, argv: *mut *mut c_char) -> Self {
        let argv = if argc == 0 || argv.is_null() {
            &[][..]
        } else {
            // SAFETY: The caller guarantees `argv` points to `argc` valid
            // pointers for `'a`.
            unsafe { core::slice::from_raw_parts(argv, argc as usize) }
        };
        // INVARIANT: guaranteed by the caller.
        Self { argv, pos: 0 }
    }

    /// Number of arguments not consumed yet.
    pub(crate) fn remaining(&self) -> usize {
        self.argv.len().saturating_sub(self.pos)
    }

    /// Consumes and returns the next argument.
    pub(crate) fn next_cstr(&mut self) -> Option<&'a CStr> {
        let ptr = *self.argv.get(self.pos)?;
        // `pos < argv.len()`, so this cannot overflow.
        self.pos = self.pos.saturating_add(1);
        if ptr.is_null() {
            return None;
        }
        // SAFETY: By the type invariant, `ptr` is a valid NUL-terminated
        // string living for `'a`.
        Some(unsafe { compat::cstr_from_ptr(ptr) })
    }

    /// Consumes the next argument as UTF-8 text, or fails with `missing`.
    #[cfg_attr(not(CONFIG_KUNIT), allow(dead_code))] // used by the KUnit cases only
    pub(crate) fn next_str(&mut self, missing: &'static CStr) -> Result<&'a str, CtrError> {
        let arg = self.next_cstr().ok_or(CtrError::inval(missing))?;
        arg.to_str().map_err(|_| CtrError::inval(missing))
    }

    /// Consumes the next argument as a decimal number in `0..=max`.
    ///
    /// Like the kernel's `kstrtouint`: no sign, no whitespace, no trailing
    /// garbage; a leading `+` is accepted.
    #[cfg_attr(not(CONFIG_KUNIT), allow(dead_code))] // used by the KUnit cases only
    pub(crate) fn next_u64(&mut self, max: u64, bad: &'static CStr) -> Result<u64, CtrError> {
        let text = self.next_str(bad)?;
        parse_decimal(text)
            .filter(|v| *v <= max)
            .ok_or(CtrError::inval(bad))
    }
}

/// Parses a decimal number the way `kstrtoull(s, 10, ...)` does: an optional
/// `+`, then digits only, and an optional single trailing newline.
pub(crate) fn parse_decimal(text: &str) -> Option<u64> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    let digits = text.strip_prefix('+').unwrap_or(text);
    if digits.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for b in digits.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b.saturating_sub(b'0')))?;
    }
    Some(value)
}
