// SPDX-License-Identifier: GPL-2.0

//! The state of one snapshot, shared by its target, the origin writes that
//! copy into it, kcopyd completions and its commit worker.
//!
//! Life of an exception (upstream's pending exception):
//! 1. A write to an origin chunk, or to a snapshot chunk, that has no
//!    exception yet allocates a COW chunk and a [`Pending`] entry, and the
//!    write is held on it.
//! 2. kcopyd copies the origin chunk to the COW chunk ([`SnapCore::start_copy`]).
//! 3. The completion marks the copy done and kicks the commit worker.
//! 4. The worker commits finished copies in allocation order, batched: one
//!    metadata write with PREFLUSH (and FUA, or a later flush on a COW
//!    without native FUA; see [`SnapCore::commit`]) makes the data copies
//!    and the new entries durable together.
//! 5. Only then are the exceptions added to the table and the held bios
//!    released: snapshot writes go to the COW copy, origin writes are run
//!    through the origin's snapshots again and then reach the origin.
//!
//! Snapshot reads of chunks without an exception go to the origin and are
//! counted in `tracked`; a pending exception is removed only once no such
//! read is in flight for its chunk, and until then origin writes to the
//! chunk queue on it (the 2008 read/COW race).
//!
//! An invalidation (overflow, failed copy or commit) is durable before the
//! origin writes it concerns go on: they wait for the header write.

mod commit;
mod handover;
mod map;
mod merge;
mod merge_batch;
mod merge_pace;
mod origin_write;
mod pending;
mod track;
#[cfg(CONFIG_KUNIT)]
mod kunit_hooks;

pub(crate) use handover::{HandoverRefusal, Resume, TargetId};

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use kernel::new_condvar;
use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::lock::{mutex::MutexBackend, Guard};
use kernel::sync::{Arc, CondVar, Mutex};
use kernel::workqueue::{Work, WorkItem};
use kernel::{impl_has_work, new_work};

use crate::dm::clock;
use crate::dm::HeldDev;
use crate::dm::kcopyd::{HeldRegion, KcopydClient};
use crate::dm::log::dm_err;
use crate::dm::sync as dmsync;
use crate::dm::wait::WaitCounter;
use crate::dm::{BioList, TargetHandle};
use crate::pure::chunk::ChunkSize;
use crate::pure::stats::{InvalidReason, Invalidity, MergeStateName, MergeStats, SnapshotStats};
use crate::pure::status::{InfoStatus, Usage};
use crate::snapshot::copyout::CopyJob;
use crate::snapshot::registry::OriginEntry;
use crate::snapshot::store::{Cursor, MetadataIo, StoreKind};
use crate::snapshot::table::ExceptionTable;

use handover::{HandedOver, Owner, Ownership, Role};
use merge::MergeState;
use pending::PendingSet;
use track::TRACK_BUCKETS;

/// Mutable state of a snapshot, under [`SnapCore::state`].
pub(crate) struct SnapState {
    /// Which table entry is served ([`handover`]).
    ownership: Ownership,
    /// The last handover, while its old table lives.
    handed_over: Option<HandedOver>,
    /// Not invalidated (overflow, I/O error, metadata error).
    valid: bool,
    /// Why and when `valid` went false (the `stats` message).
    invalidity: Invalidity,
    /// Resumed by its owner: origin writes copy into it from now on.
    active: bool,
    /// Table entries holding this core, constructed and not yet destroyed:
    /// the owner, a waiting table, an old owner that handed it over
    /// (upstream's snapshots on the origin's list that share the COW).
    tables: u32,
    /// Full, with `PO` (overflow) semantics: writes to the snapshot fail,
    /// reads still work.
    overflowed: bool,
    /// An invalidation whose header is not durable yet ([`commit`]).
    invalidation: Invalidation,
    /// The completed exceptions.
    table: ExceptionTable,
    /// The exceptions being copied or committed ([`pending`]).
    pending: PendingSet,
    /// Where the store puts the next exception.
    cursor: Cursor,
    /// The merge ([`merge`]).
    merge: MergeState,
}

/// Invalidated, and the header saying so is not durable yet: the commit
/// worker writes it and raises the event (no synchronous I/O in `map`).
/// Until then origin writes that this snapshot would have needed a copy
/// for wait in `waiters`: a crash must never load the snapshot as valid
/// with such a write in the origin (`__invalidate_snapshot()` writes the
/// header before `map` returns).
struct Invalidation {
    /// The header write is still to come.
    header_pending: bool,
    /// Origin writes held until the invalid header is durable.
    waiters: BioList,
}

/// A snapshot's state flags as one of its targets sees them.
#[derive(Clone, Copy)]
pub(crate) struct StateFlags {
    /// Valid as this target sees it (an old owner never is).
    pub(crate) valid: bool,
    /// A merge failed.
    pub(crate) merge_failed: bool,
    /// Full with overflow semantics (`PO`).
    pub(crate) overflowed: bool,
}

/// One snapshot's shared core.
///
/// # Invariants
///
/// The owner's target, if stored (`Owner::ti`), is alive: a target that
/// becomes the owner ([`SnapCore::new`], [`SnapCore::resume_as`]) releases
/// the core in its destructor ([`SnapCore::release`]), which clears it
/// under the state lock. The devices are [`HeldDev`]s: the owning target
/// keeps them open until its destructor has called [`SnapCore::shutdown`],
/// and a handover moves ownership to a target holding the same devices.
///
/// # Locks
///
/// `meta` before `state` when both are held (the commit worker, the
/// merge); `kcopyd` is never held with `state` (starting a kcopyd job may
/// wait for jobs whose completions take `state`). The origin's snapshot
/// list (`OriginEntry::snapshots`) is taken before `state`. No lock is
/// held while waiting on `state_changed` (it releases `state`) or on a
/// `tracked` counter.
#[pin_data]
pub(crate) struct SnapCore {
    /// Immutable after construction (as are `origin`, `cow`,
    /// `discard_passdown_origin` and `entry`).
    chunk: ChunkSize,
    origin: HeldDev,
    cow: HeldDev,
    /// `discard_passdown_origin`: discard clone 1 goes to the origin.
    discard_passdown_origin: bool,
    /// The origin's registry entry (its snapshots, its gatherer).
    entry: Arc<OriginEntry>,
    /// Everything that changes: ownership, validity, the exception table,
    /// the pending exceptions, the store cursor, the merge state.
    #[pin]
    state: Mutex<SnapState>,
    /// Notified under `state`'s lock when a waiter's condition may have
    /// changed: an exception completed or its copy finished (`in_flight`,
    /// `copies_in_progress`, the pending set), the invalidation header was
    /// written, the merge was asked to stop or stopped.
    #[pin]
    state_changed: CondVar,
    /// Waiters on `state_changed` (changed under the state lock): the
    /// notifiers skip the wake-up, a spinlock on every copy and every
    /// completion, while there is none.
    state_waiters: AtomicU32,
    /// Metadata I/O: the commit worker, the invalidation header, the
    /// merge's planning and commits. `None` after `shutdown` (and for a
    /// transient store).
    #[pin]
    meta: Mutex<Option<MetadataIo>>,
    /// The kcopyd client of this snapshot's copies; `None` after
    /// `shutdown`, which destroys it (waiting for its jobs).
    #[pin]
    kcopyd: Mutex<Option<KcopydClient>>,
    #[pin]
    work: Work<SnapCore>,
    #[pin]
    merge_work: Work<SnapCore, 1>,
    /// Tracked bios in flight, by generation and origin chunk bucket:
    /// `[generation * TRACK_BUCKETS + bucket]`. Generations 0 and 1
    /// (`SnapState::track_gen`): writes of the merging target to COW
    /// copies; [`DUAL_WRITES`]: dual writes; [`ORIGIN_READS`] and the one
    /// after it: snapshot reads sent to the origin, in the bucket's epoch.
    tracked: [WaitCounter; 5 * TRACK_BUCKETS],
    /// Per bucket, which of the two [`ORIGIN_READS`] generations new
    /// snapshot reads count in (changed under the state lock, only by the
    /// commit worker, in `complete`).
    read_epoch: [AtomicU32; TRACK_BUCKETS],
    /// Exceptions allocated and not yet completed (for `shutdown` and the
    /// merge's start). Changed under the state lock; readable without it.
    in_flight: AtomicU64,
    /// Chunks being copied (`SnapState::copying`, readable without the
    /// lock): upstream's `in_progress`, which `snapshot_cow_threshold`
    /// bounds.
    copies_in_progress: AtomicU64,
    /// Chunks copied out of the origin since the core was built (the
    /// `stats` message; full-chunk snapshot writes are no copies).
    copied_chunks: AtomicU64,
}

/// The running totals a table's `stats` counts from: their values when
/// the table was constructed.
#[derive(Clone, Copy, Default)]
pub(crate) struct StatsBase {
    copied: u64,
    merged: u64,
}

impl_has_work! {
    impl HasWork<Self> for SnapCore { self.work }
    impl HasWork<Self, 1> for SnapCore { self.merge_work }
}

/// What a constructor hands to [`SnapCore::new`].
pub(crate) struct CoreParts {
    pub(crate) chunk: ChunkSize,
    pub(crate) kind: StoreKind,
    pub(crate) origin: HeldDev,
    pub(crate) cow: HeldDev,
    pub(crate) owner: TargetId,
    pub(crate) merging: bool,
    pub(crate) ti: Option<TargetHandle>,
    pub(crate) len: u64,
    pub(crate) discard_passdown_origin: bool,
    pub(crate) entry: Arc<OriginEntry>,
    pub(crate) valid: bool,
    pub(crate) table: ExceptionTable,
    pub(crate) cursor: Cursor,
    pub(crate) meta: Option<MetadataIo>,
    pub(crate) kcopyd: KcopydClient,
}

impl SnapCore {
    /// Builds the core, owned by `parts.owner`.
    ///
    /// # Safety
    ///
    /// `parts.ti`, if set, is the target of `parts.owner`, and that target
    /// calls [`SnapCore::release`] in its destructor (type invariant).
    pub(crate) unsafe fn new(parts: CoreParts) -> Result<Arc<Self>> {
        let owner = Owner { id: parts.owner, ti: parts.ti, len: parts.len, kind: parts.kind };
        // Invalid on disk: invalidated in an earlier activation.
        let invalidity = if parts.valid {
            Invalidity::default()
        } else {
            Invalidity { reason: Some(InvalidReason::OnDisk), at: None }
        };
        let state = SnapState {
            ownership: Ownership::Owned(owner),
            handed_over: None,
            valid: parts.valid,
            invalidity,
            active: false,
            tables: 1,
            overflowed: false,
            invalidation: Invalidation { header_pending: false, waiters: BioList::new() },
            table: parts.table,
            pending: PendingSet::new(),
            cursor: parts.cursor,
            merge: MergeState::new(parts.merging),
        };
        Arc::pin_init(
            pin_init!(Self {
                chunk: parts.chunk,
                origin: parts.origin,
                cow: parts.cow,
                discard_passdown_origin: parts.discard_passdown_origin,
                entry: parts.entry,
                state <- new_mutex!(state, "dm_snapshot_rs:state"),
                meta <- new_mutex!(parts.meta, "dm_snapshot_rs:meta"),
                kcopyd <- new_mutex!(Some(parts.kcopyd), "dm_snapshot_rs:kcopyd"),
                work <- new_work!("dm_snapshot_rs:commit"),
                merge_work <- new_work!("dm_snapshot_rs:merge"),
                tracked: core::array::from_fn(|_| WaitCounter::new()),
                state_changed <- new_condvar!("dm_snapshot_rs:state_changed"),
                state_waiters: AtomicU32::new(0),
                read_epoch: core::array::from_fn(|_| AtomicU32::new(0)),
                in_flight: AtomicU64::new(0),
                copies_in_progress: AtomicU64::new(0),
                copied_chunks: AtomicU64::new(0),
            }),
            GFP_KERNEL,
        )
    }

    /// The chunk size.
    pub(crate) fn chunk_size(&self) -> ChunkSize {
        self.chunk
    }

    /// The origin device.
    pub(crate) fn origin(&self) -> HeldDev {
        self.origin
    }

    /// The origin's registry entry.
    pub(crate) fn entry(&self) -> &Arc<OriginEntry> {
        &self.entry
    }

    /// Starts a kcopyd copy of origin sectors `src` to `dests`, COW regions
    /// of snapshots whose exceptions `job` completes.
    pub(crate) fn kcopyd_copy(&self, src: &HeldRegion, dests: &[HeldRegion], job: Arc<CopyJob>) -> Result {
        match self.kcopyd.lock().as_ref() {
            Some(kc) => kc.copy_held(src, dests, job),
            None => Err(ENODEV),
        }
    }

    /// The COW device.
    pub(crate) fn cow(&self) -> HeldDev {
        self.cow
    }

    fn cow_sectors(&self) -> u64 {
        self.cow.size_sectors()
    }

    pub(crate) fn origin_sectors(&self) -> u64 {
        self.origin.size_sectors()
    }

    /// Marks the snapshot invalid (`__invalidate_snapshot()`); the worker
    /// rewrites the header and raises the table event. The first reason
    /// is the one kept.
    fn invalidate(self: &Arc<Self>, st: &mut SnapState, why: InvalidReason) {
        if !st.valid {
            return;
        }
        // Upstream's two messages.
        let message = match why {
            InvalidReason::Overflow | InvalidReason::NoMemory => "Unable to allocate exception",
            _ => "Error reading/writing",
        };
        dm_err!("Invalidating snapshot: {}.", message);
        st.valid = false;
        st.invalidity = Invalidity { reason: Some(why), at: Some(clock::real_seconds()) };
        st.invalidation.header_pending = true;
        self.kick();
    }

    /// Sleeps until `state_changed` is notified, releasing `st` meanwhile;
    /// the caller checks its condition again.
    fn wait_state_change(&self, st: &mut Guard<'_, SnapState, MutexBackend>) {
        // Under the state lock: a notifier that changes the state after
        // this (under the lock) sees the count.
        self.state_waiters.fetch_add(1, Ordering::Relaxed);
        self.state_changed.wait(st);
        self.state_waiters.fetch_sub(1, Ordering::Relaxed);
    }

    /// Wakes the waiters on `state_changed`; call after changing, under
    /// the state lock, what they wait for.
    fn notify_state_change(&self) {
        if self.state_waiters.load(Ordering::Acquire) != 0 {
            self.state_changed.notify_all();
        }
    }

    fn kick(self: &Arc<Self>) {
        // Already queued is fine: the worker drains everything it finds.
        let _ = dmsync::queue().enqueue::<Arc<Self>, 0>(self.clone());
    }

    /// The store type and chunk size the table line of table entry `me`,
    /// which asked for `asked`, shows. The owner shows the live store,
    /// which upstream swaps into the new table on a handover: its type
    /// ([`StoreKind::shown_over`]) and chunk size. Other entries show the
    /// never read store upstream gives them ([`Role`]), chunk size 0.
    pub(crate) fn shown_store(&self, me: TargetId, asked: StoreKind) -> (StoreKind, u32) {
        let st = self.state.lock();
        match Self::role(&st, me) {
            Role::Owner => (asked.shown_over(st.cursor.can_merge()), self.chunk.sectors()),
            Role::Old(fresh) => (fresh, 0),
            Role::Waiting | Role::Cancelled => (asked, 0),
        }
    }

    /// Status line (`snapshot_status()` for `STATUSTYPE_INFO`) of table
    /// entry `me`: a target that handed its store over, or whose handover
    /// was cancelled, is invalid; a waiting one reports its own store, not
    /// read.
    pub(crate) fn info_status(&self, me: TargetId) -> InfoStatus {
        let st = self.state.lock();
        match Self::role(&st, me) {
            Role::Owner => {
                let usage: Usage = st.cursor.usage(self.cow_sectors());
                let merge_failed = st.merge.failed || st.merge.failed_before;
                InfoStatus::select(st.valid, merge_failed, st.overflowed, usage)
            }
            Role::Old(_) | Role::Cancelled => InfoStatus::Invalid,
            Role::Waiting => InfoStatus::Usage(Usage::unread(self.cow_sectors())),
        }
    }

    /// The totals a new table's `stats` count from.
    pub(crate) fn stats_base(&self) -> StatsBase {
        let merged = self.state.lock().merge.progress.total();
        StatsBase { copied: self.copied_chunks.load(Ordering::Relaxed), merged }
    }

    /// The `snapshot` target's `stats` (the state lock is held briefly).
    pub(crate) fn snapshot_stats(&self, base: StatsBase) -> SnapshotStats {
        let st = self.state.lock();
        let allocated_exceptions = st.cursor.data_chunks();
        let invalid = st.invalidity;
        drop(st);
        SnapshotStats {
            allocated_exceptions,
            copies_in_flight: self.in_flight.load(Ordering::Acquire),
            copied_chunks: self.copied_chunks.load(Ordering::Relaxed).saturating_sub(base.copied),
            chunk_sectors: self.chunk.sectors(),
            invalid,
        }
    }

    /// The `snapshot-merge` target's `stats` as target `me` sees them.
    pub(crate) fn merge_stats(&self, me: TargetId, base: StatsBase) -> MergeStats {
        let now_ms = clock::monotonic_ms();
        let st = self.state.lock();
        let remaining_chunks = st.cursor.data_chunks();
        let state = MergeStateName::select(
            st.valid && st.ownership.is(me),
            st.merge.failed,
            remaining_chunks,
            st.merge.running,
        );
        MergeStats {
            merged_chunks: st.merge.progress.total().saturating_sub(base.merged),
            remaining_chunks,
            rate_chunks_per_sec: st.merge.progress.rate_per_sec(now_ms),
            chunk_sectors: self.chunk.sectors(),
            state,
        }
    }

    /// Whether this snapshot is being merged.
    pub(crate) fn is_merging(&self) -> bool {
        self.state.lock().merge.merging
    }

    /// The state flags as target `me` sees them (for the IMA line): a
    /// waiting table's are its own, fresh ones.
    pub(crate) fn state_flags(&self, me: TargetId) -> StateFlags {
        let st = self.state.lock();
        let merge_failed = st.merge.failed || st.merge.failed_before;
        match Self::role(&st, me) {
            Role::Owner => StateFlags { valid: st.valid, merge_failed, overflowed: st.overflowed },
            Role::Old(_) => StateFlags { valid: false, merge_failed, overflowed: st.overflowed },
            Role::Waiting => StateFlags { valid: true, merge_failed: false, overflowed: false },
            Role::Cancelled => StateFlags { valid: false, merge_failed: false, overflowed: false },
        }
    }

    /// Waits for all in-flight work on this snapshot and releases its
    /// kcopyd and dm-io clients. Called from the target's destructor, after
    /// the snapshot was removed from its origin; afterwards nothing uses the
    /// devices or the target any more.
    pub(crate) fn shutdown(self: &Arc<Self>) {
        // dm core suspended the device, so no snapshot bio is outstanding;
        // copies started by origin writes before removal still finish.
        let mut st = self.state.lock();
        while self.in_flight.load(Ordering::Acquire) != 0 {
            self.wait_state_change(&mut st);
        }
        drop(st);
        // The commit worker may still be finishing the last batch (or a
        // header write): wait for it, and only for it (not for a merge of
        // another snapshot running on the same queue).
        dmsync::flush_work(&self.work);
        drop(self.kcopyd.lock().take());
        drop(self.meta.lock().take());
    }
}

impl WorkItem<1> for SnapCore {
    type Pointer = Arc<SnapCore>;

    fn run(this: Arc<SnapCore>) {
        this.merge();
    }
}

impl WorkItem for SnapCore {
    type Pointer = Arc<SnapCore>;

    fn run(this: Arc<SnapCore>) {
        this.commit();
    }
}
