// SPDX-License-Identifier: GPL-2.0

//! A value the module publishes from init to exit, read by target code.

use core::pin::Pin;
use core::sync::atomic::{AtomicPtr, Ordering};

use kernel::prelude::*;

/// A slot for one value that lives from module init to module exit.
pub(crate) struct ModuleGlobal<T: 'static> {
    ptr: AtomicPtr<T>,
}

impl<T: Sync + 'static> ModuleGlobal<T> {
    /// An empty slot.
    pub(crate) const fn new() -> Self {
        Self { ptr: AtomicPtr::new(core::ptr::null_mut()) }
    }

    /// Publishes `value` until the returned guard is dropped (module exit).
    pub(crate) fn publish(&'static self, value: Pin<KBox<T>>) -> Published<T> {
        self.ptr.store(core::ptr::from_ref::<T>(&value).cast_mut(), Ordering::Release);
        // INVARIANT: published above, cleared in `drop` before `value` goes.
        Published { slot: self, value }
    }

    /// The published value; `None` outside module init .. exit. Only target
    /// code calls this, which dm core never runs after module exit (it
    /// holds a module reference for every target instance).
    pub(crate) fn get(&'static self) -> Option<&'static T> {
        let ptr = self.ptr.load(Ordering::Acquire);
        // SAFETY: By the `Published` invariant the pointer is null or points
        // to the live value, which outlives every caller (see above).
        unsafe { ptr.as_ref() }
    }
}

/// Keeps a [`ModuleGlobal`]'s value alive and published.
///
/// # Invariants
///
/// While this value exists, `slot` points to `value`.
pub(crate) struct Published<T: 'static> {
    slot: &'static ModuleGlobal<T>,
    value: Pin<KBox<T>>,
}

impl<T: 'static> Drop for Published<T> {
    fn drop(&mut self) {
        self.slot.ptr.store(core::ptr::null_mut(), Ordering::Release);
        let _ = &self.value;
    }
}
