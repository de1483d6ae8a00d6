// SPDX-License-Identifier: GPL-2.0

//! Which table entry owns a snapshot's core, and handing the core over to
//! a new table (a reload, or the start of a merge).
//!
//! States ([`Ownership`]), upstream's `__find_snapshots_sharing_cow()` and
//! `__handover_exceptions()`:
//!
//! ```text
//!   Owned(o) --add_waiting(n)--> HandingOver(o, n) --resume_as(n)--> Owned(n)
//!      |                            |   \--release(n)-------------> Owned(o)
//!      |                            \--release(o)--> Cancelled(n) --release(n)--> Released
//!      \--release(o)---------------------------------------------> Released
//! ```
//!
//! Only the owner's I/O is served; a `Cancelled` or `Released` core
//! serves nobody and accepts no new waiter. While `Cancelled`, the COW
//! stays taken (the registry's record of cancelled handovers). The old
//! owner must be suspended for the handover (checked in
//! [`SnapCore::preresume_check`]).

use core::num::NonZeroUsize;
use core::sync::atomic::{AtomicUsize, Ordering};

use kernel::prelude::*;

use crate::dm::TargetHandle;
use crate::dm::log::dm_err;
use crate::snapshot::store::StoreKind;

use super::{SnapCore, SnapState};

/// Identifies one table entry (target instance) of the `snapshot` and
/// `snapshot-merge` targets, unique for the module's lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TargetId(NonZeroUsize);

impl TargetId {
    /// A fresh id.
    pub(crate) fn new_unique() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        // 2^64 constructors would wrap to 0: skip it rather than panic.
        loop {
            if let Some(id) = NonZeroUsize::new(NEXT.fetch_add(1, Ordering::Relaxed)) {
                return Self(id);
            }
        }
    }
}

/// The owning table entry and what the core needs to know of it.
#[derive(Clone, Copy)]
pub(super) struct Owner {
    pub(super) id: TargetId,
    /// Its target, for table events (`None` only for a core built
    /// without a target, by the KUnit tests).
    ///
    /// INVARIANT: while stored here the target is alive: its destructor
    /// releases the core ([`SnapCore::release`]) and a handover replaces
    /// it, both under the state lock.
    pub(super) ti: Option<TargetHandle>,
    /// Its length: origin writes beyond it need no copy.
    pub(super) len: u64,
    /// Its table's store type (`P` or `PO` may change on reload).
    pub(super) kind: StoreKind,
}

/// Who owns the core (see the module documentation).
pub(super) enum Ownership {
    /// `Owner` is served.
    Owned(Owner),
    /// `Owner` is served; `waiting` takes the core over on its resume.
    HandingOver { owner: Owner, waiting: TargetId },
    /// The owner's destructor ran while `waiting` waited: nobody is
    /// served, and the waiting table (upstream keeps it on the origin's
    /// list) still holds the COW.
    Cancelled { waiting: TargetId },
    /// The owner's destructor ran, and no table waits: nobody is served.
    Released,
}

impl Ownership {
    /// The owner, if any.
    pub(super) fn owner(&self) -> Option<&Owner> {
        match self {
            Self::Owned(owner) | Self::HandingOver { owner, .. } => Some(owner),
            Self::Cancelled { .. } | Self::Released => None,
        }
    }

    /// Whether `id` owns the core.
    pub(super) fn is(&self, id: TargetId) -> bool {
        self.owner().is_some_and(|o| o.id == id)
    }

    /// The owner's target, for table events and its per-bio data size.
    pub(super) fn target(&self) -> Option<TargetHandle> {
        self.owner().and_then(|o| o.ti)
    }
}

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

/// The last completed handover: the table entry that gave the core up,
/// and the store type of the one that took it. Upstream swaps the new
/// table's own store, never read (chunk size 0), into the old table, whose
/// table line then names it.
#[derive(Clone, Copy)]
pub(super) struct HandedOver {
    pub(super) old: TargetId,
    pub(super) fresh: StoreKind,
}

/// Which store a table entry's status and table lines describe.
pub(super) enum Role {
    /// It owns the core: the live store.
    Owner,
    /// It handed the core over: invalid, showing the store swapped in.
    Old(StoreKind),
    /// It waits to take the core over: upstream's table holds a store of
    /// its own type, never read, with chunk size 0, and is valid.
    Waiting,
    /// Any other entry: a table whose handover was cancelled (its source
    /// was destroyed), which upstream marks invalid; its store as above.
    Cancelled,
}

/// What a table entry's `resume` brings to the core ([`SnapCore::resume_as`]).
pub(crate) struct Resume {
    pub(crate) id: TargetId,
    pub(crate) ti: TargetHandle,
    pub(crate) len: u64,
    pub(crate) kind: StoreKind,
    pub(crate) merging: bool,
}

impl SnapCore {
    /// Registers `me` as the table entry to take this core over when it
    /// resumes (`__validate_exception_handover()`, in upstream's order).
    /// Fails if another table already waits, an old owner that handed the
    /// core over is not destroyed yet, the owner never resumed (upstream's
    /// inactive `snap_dest`) or is gone; a `snapshot-merge` target
    /// (`merge`) also if any `snapshot-merge` table of the origin exists
    /// (`merge_tables`), or if the store is transient.
    pub(crate) fn add_waiting(&self, me: TargetId, merge: bool, merge_tables: bool) -> Result<(), HandoverRefusal> {
        let mut st = self.state.lock();
        let Ownership::Owned(owner) = st.ownership else {
            return Err(HandoverRefusal::Pairing);
        };
        if st.tables >= 2 || !st.active {
            return Err(HandoverRefusal::Pairing);
        }
        if merge {
            if merge_tables {
                return Err(HandoverRefusal::AlreadyMerging);
            }
            // The store, not the owner's table line, decides: a `P` table
            // may have taken an `N` store over.
            if !st.cursor.can_merge() {
                return Err(HandoverRefusal::NoMergeSupport);
            }
        }
        st.ownership = Ownership::HandingOver { owner, waiting: me };
        st.tables = st.tables.saturating_add(1);
        Ok(())
    }

    /// `preresume` of `me` (`snapshot_preresume()`): the owner may not
    /// resume while a handover waits, and `me` may take the core over only
    /// from a suspended owner.
    pub(crate) fn preresume_check(&self, me: TargetId) -> Result {
        let st = self.state.lock();
        let Ownership::HandingOver { owner, waiting } = &st.ownership else {
            return Ok(());
        };
        if owner.id == me {
            dm_err!("Unable to resume snapshot source until handover completes.");
            return Err(EINVAL);
        }
        if *waiting == me {
            // SAFETY: The owner's target is alive while stored (`Owner::ti`),
            // and the state lock is held.
            let running = owner.ti.is_some_and(|ti| !unsafe { ti.is_suspended() });
            if running {
                dm_err!("Unable to perform snapshot handover until source is suspended.");
                return Err(EINVAL);
            }
        }
        Ok(())
    }

    /// `resume` of a table entry: it takes the core over if it was waiting
    /// for it (`preresume_check` passed, so the old owner is suspended),
    /// then origin writes copy into the snapshot.
    ///
    /// # Safety
    ///
    /// `r.ti` is the target of `r.id`, and that target calls
    /// [`SnapCore::release`] in its destructor (type invariant).
    pub(crate) unsafe fn resume_as(&self, r: Resume) {
        let mut st = self.state.lock();
        if let Ownership::HandingOver { owner, waiting } = st.ownership {
            if waiting == r.id {
                // `__handover_exceptions()`: the table, the store and the
                // valid/overflow flags stay; only the owning target
                // changes. The merge state is the new target's own, as
                // upstream's new `dm_snapshot` starts without one: a
                // `snapshot` taking a merging store over gets copies from
                // origin writes again, and no earlier merge failure. (The
                // old owner is suspended, so its merge was stopped.)
                st.ownership = Ownership::Owned(Owner { id: r.id, ti: Some(r.ti), len: r.len, kind: r.kind });
                st.handed_over = Some(HandedOver { old: owner.id, fresh: r.kind });
                st.merge.merging = r.merging;
                st.merge.failed = false;
                st.merge.failed_before = false;
            }
        }
        if st.ownership.is(r.id) {
            if r.merging {
                st.merge.merging = true;
            }
            st.active = true;
        }
    }

    /// Which store the lines of table entry `me` describe.
    pub(super) fn role(st: &SnapState, me: TargetId) -> Role {
        if st.ownership.is(me) {
            return Role::Owner;
        }
        match (st.handed_over, &st.ownership) {
            (Some(h), _) if h.old == me => Role::Old(h.fresh),
            (_, Ownership::HandingOver { waiting, .. }) if *waiting == me => Role::Waiting,
            _ => Role::Cancelled,
        }
    }

    /// The destructor of `me`: whether it owned the core and must therefore
    /// shut it down, and whether that cancelled a handover (the core then
    /// stays [`Ownership::Cancelled`] until the waiting table is
    /// destroyed too); or `me` is withdrawn from waiting.
    pub(crate) fn release(&self, me: TargetId) -> Released {
        let mut st = self.state.lock();
        st.tables = st.tables.saturating_sub(1);
        if st.handed_over.is_some_and(|h| h.old == me) {
            st.handed_over = None;
        }
        match st.ownership {
            Ownership::Owned(owner) if owner.id == me => {
                st.ownership = Ownership::Released;
                Released { owned: true, cancelled: false }
            }
            Ownership::HandingOver { owner, waiting } if owner.id == me => {
                dm_err!("Cancelling snapshot handover.");
                st.ownership = Ownership::Cancelled { waiting };
                Released { owned: true, cancelled: true }
            }
            Ownership::HandingOver { owner, waiting } if waiting == me => {
                st.ownership = Ownership::Owned(owner);
                Released { owned: false, cancelled: false }
            }
            Ownership::Cancelled { waiting } if waiting == me => {
                st.ownership = Ownership::Released;
                Released { owned: false, cancelled: false }
            }
            _ => Released { owned: false, cancelled: false },
        }
    }

    /// Whether a table whose handover was cancelled still holds the COW.
    pub(crate) fn holds_cancelled_table(&self) -> bool {
        matches!(self.state.lock().ownership, Ownership::Cancelled { .. })
    }
}

/// What [`SnapCore::release`] found.
pub(crate) struct Released {
    /// The releasing table owned the core: it shuts the core down.
    pub(crate) owned: bool,
    /// That cancelled a handover: the waiting table still holds the COW.
    pub(crate) cancelled: bool,
}
