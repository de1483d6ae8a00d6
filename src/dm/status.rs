// SPDX-License-Identifier: GPL-2.0

//! Status output written straight into dm core's buffer.
//!
//! C targets use `DMEMIT`, which appends with `scnprintf` and stops once the
//! buffer is full; dm core then sees a full buffer and retries with a larger
//! one. [`StatusWriter`] keeps exactly those semantics and never allocates.

use core::fmt;

/// Which status dm core asks for (`status_type_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatusType {
    /// `dmsetup status`.
    Info,
    /// `dmsetup table`: must echo the constructor arguments.
    Table,
    /// IMA measurement string.
    Ima,
}

impl StatusType {
    /// Converts dm core's `status_type_t`; `None` for an unknown value.
    pub(crate) fn from_raw(raw: u32) -> Option<Self> {
        use super::bindings as b;
        match raw {
            b::status_type_t_STATUSTYPE_INFO => Some(Self::Info),
            b::status_type_t_STATUSTYPE_TABLE => Some(Self::Table),
            b::status_type_t_STATUSTYPE_IMA => Some(Self::Ima),
            _ => None,
        }
    }
}

/// A `fmt::Write` over dm core's status buffer with `DMEMIT` semantics.
///
/// # Invariants
///
/// If `buf` is not empty, `len < buf.len()` and `buf[len] == 0`: the
/// content is always NUL-terminated, as `scnprintf` leaves it.
pub(crate) struct StatusWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
    /// Some text did not fit and was dropped.
    truncated: bool,
}

impl<'a> StatusWriter<'a> {
    /// Starts an empty status string in `buf` (writes the terminating NUL).
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        if let Some(first) = buf.first_mut() {
            *first = 0;
        }
        // INVARIANT: `len == 0` and `buf[0] == 0` when `buf` is not empty.
        Self { buf, len: 0, truncated: false }
    }

    /// Bytes written so far, excluding the NUL (`sz` in `DMEMIT`).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether some text was dropped because the buffer was full.
    pub(crate) fn truncated(&self) -> bool {
        self.truncated
    }

    /// The text written so far.
    #[cfg_attr(not(CONFIG_KUNIT), allow(dead_code))]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

impl fmt::Write for StatusWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Room for text, keeping one byte for the NUL.
        let room = self.buf.len().saturating_sub(self.len.saturating_add(1));
        let n = s.len().min(room);
        if n < s.len() {
            self.truncated = true;
        }
        if n == 0 {
            // Like DMEMIT, a full buffer silently drops the rest; dm core
            // detects the full buffer and retries with a bigger one.
            return Ok(());
        }
        // `checked_add` (not saturating) lets the compiler see `dst.len() == n`.
        let Some(end) = self.len.checked_add(n) else {
            return Ok(());
        };
        let (Some(dst), Some(src)) = (self.buf.get_mut(self.len..end), s.as_bytes().get(..n)) else {
            return Ok(());
        };
        dst.copy_from_slice(src);
        self.len = end;
        if let Some(nul) = self.buf.get_mut(self.len) {
            *nul = 0;
        }
        // INVARIANT: `n <= room` keeps `len < buf.len()`, and the NUL was
        // just written at `len`.
        Ok(())
    }
}
