// SPDX-License-Identifier: GPL-2.0

//! What 6.12's `KVec` lacks.

use kernel::prelude::*;

/// Removes and returns the last element (`Vec::pop`).
pub(crate) fn pop<T>(v: &mut KVec<T>) -> Option<T> {
    let new_len = v.len().checked_sub(1)?;
    // SAFETY: `new_len < len`, so the element is initialised. Shrinking the
    // length first means the vector no longer owns it, and it is moved out
    // exactly once, below.
    unsafe {
        v.set_len(new_len);
        Some(core::ptr::read(v.as_ptr().add(new_len)))
    }
}

/// Removes element `i`, keeping the order of the rest (`Vec::remove`).
pub(crate) fn remove<T>(v: &mut KVec<T>, i: usize) -> Option<T> {
    v.as_mut_slice().get_mut(i..)?.rotate_left(1);
    pop(v)
}

/// Drops every element, keeping the capacity (`Vec::clear`).
pub(crate) fn clear<T>(v: &mut KVec<T>) {
    while pop(v).is_some() {}
}
