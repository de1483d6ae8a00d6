// SPDX-License-Identifier: GPL-2.0

//! Which target owns the core, and handing it over to a new table.

use kernel::prelude::*;

use crate::dm::TargetHandle;
use crate::dm::log::dm_err;
use crate::snapshot::store::{Cursor, StoreKind};

use super::SnapCore;

/// Why a table may not take a live store over ([`SnapCore::add_waiting`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HandoverRefusal {
    /// Another table already waits for the store, or its owner is gone.
    Pairing,
    /// A `snapshot-merge` table of the origin exists.
    AlreadyMerging,
    /// A `snapshot-merge` table for a transient store.
    NoMergeSupport,
}

impl SnapCore {
    /// Registers target `me` as the one to take this core over when it
    /// resumes (`__validate_exception_handover()`, in upstream's order).
    /// Fails if another one already waits or the handover was cancelled;
    /// a `snapshot-merge` target (`merge`) also if any `snapshot-merge`
    /// table of the origin exists (`merge_tables`), or if the store is
    /// transient.
    pub(crate) fn add_waiting(&self, me: usize, merge: bool, merge_tables: bool) -> Result<(), HandoverRefusal> {
        let mut st = self.state.lock();
        if st.waiting.is_some() || st.owner == 0 {
            return Err(HandoverRefusal::Pairing);
        }
        if merge {
            if merge_tables {
                return Err(HandoverRefusal::AlreadyMerging);
            }
            // The store, not the owner's table line, decides: a `P` table
            // may have taken an `N` store over.
            if matches!(st.cursor, Cursor::Transient(_)) {
                return Err(HandoverRefusal::NoMergeSupport);
            }
        }
        st.waiting = Some(me);
        Ok(())
    }

    /// The owner and the waiting target, and the owner's target handle.
    pub(crate) fn handover_state(&self) -> (usize, Option<usize>, Option<TargetHandle>) {
        let st = self.state.lock();
        (st.owner, st.waiting, st.ti)
    }

    /// `resume` of target `me`: takes the core over if `me` was waiting
    /// for it (the caller checked in `preresume` that the old owner is
    /// suspended), then origin writes copy into the snapshot.
    pub(crate) fn resume_as(&self, me: usize, ti: TargetHandle, len: u64, kind: StoreKind, merging: bool) {
        let mut st = self.state.lock();
        if st.waiting == Some(me) && st.owner != 0 {
            // `__handover_exceptions()`: the table, the store and the
            // valid/overflow flags stay; only the owning target changes.
            // The merge state is the new target's own, as upstream's new
            // `dm_snapshot` starts without one: a `snapshot` taking a
            // merging store over gets copies from origin writes again, and
            // no earlier merge failure. (The old owner is suspended, so its
            // merge was stopped.)
            st.waiting = None;
            st.owner = me;
            st.ti = Some(ti);
            st.len = len;
            st.kind = kind;
            st.merging = merging;
            st.merge_failed = false;
            st.merge_failed_before = false;
        }
        if st.owner == me && merging {
            st.merging = true;
        }
        if st.owner == me {
            st.active = true;
        }
    }

    /// The destructor of target `me`. Returns whether it owned the core and
    /// must therefore shut it down; cancels a handover waiting for it, or
    /// withdraws `me` from waiting.
    pub(crate) fn release(&self, me: usize) -> bool {
        let mut st = self.state.lock();
        if st.owner == me {
            if st.waiting.take().is_some() {
                dm_err!("Cancelling snapshot handover.");
            }
            st.owner = 0;
            st.ti = None;
            return true;
        }
        if st.waiting == Some(me) {
            st.waiting = None;
        }
        false
    }
}
