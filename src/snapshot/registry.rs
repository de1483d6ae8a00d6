// SPDX-License-Identifier: GPL-2.0

//! Which snapshots belong to which origin device.
//!
//! One [`OriginEntry`] per origin block device, shared by the
//! `snapshot-origin` targets and the `snapshot` targets on it. The global
//! [`Registry`] is only touched by constructors and destructors; the I/O
//! path locks just the entry of its own origin.

use core::sync::atomic::Ordering;

use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};

use crate::dm::global::{ModuleGlobal, Published};
use crate::dm::{kvec, Bio, OwnedBio};
use crate::pure::merge::CopyPlan;

use super::copyout::{CopyGroup, NewRuns};
use super::gather::Gatherer;
use super::snap::{HandoverRefusal, SnapCore, TargetId};

/// An origin write, either still in `map` or held and being retried.
pub(crate) enum OriginBio<'a> {
    /// In `map`: deferring it means returning `DM_MAPIO_SUBMITTED`.
    Mapping(&'a Bio),
    /// Already owned by us (held on a pending exception, now retried).
    Owned(OwnedBio),
}

impl OriginBio<'_> {
    fn sector(&self) -> u64 {
        match self {
            Self::Mapping(b) => b.sector(),
            Self::Owned(b) => b.view().sector(),
        }
    }

    fn sectors(&self) -> u32 {
        match self {
            Self::Mapping(b) => b.sectors(),
            Self::Owned(b) => b.view().sectors(),
        }
    }

    /// Takes ownership (see [`Bio::defer`]).
    pub(crate) fn into_owned(self) -> OwnedBio {
        match self {
            Self::Mapping(b) => b.defer(),
            Self::Owned(b) => b,
        }
    }
}

/// What happened to an origin write.
pub(crate) enum OriginOutcome {
    /// Every snapshot already has its copy: the write may proceed. Carries
    /// the bio back if it was an owned one.
    Proceed(Option<OwnedBio>),
    /// The write waits on a pending exception and is retried when that
    /// completes.
    Queued,
}

/// The snapshots of one origin device.
#[pin_data]
pub(crate) struct OriginEntry {
    devt: u32,
    /// Resumed `snapshot-origin` targets of this origin.
    live_origins: core::sync::atomic::AtomicUsize,
    /// `snapshot-merge` table entries of this origin, from their
    /// constructor to their destructor, whether or not they own a store
    /// (upstream's `snap_merge`: any registered snapshot-merge target).
    merge_tables: core::sync::atomic::AtomicUsize,
    /// Snapshots, largest chunk size first (upstream's order).
    #[pin]
    snapshots: Mutex<KVec<Arc<SnapCore>>>,
    /// Copies out of this origin, gathered into batches.
    gather: Arc<Gatherer>,
}

impl OriginEntry {
    /// The copy-out queue of this origin.
    pub(crate) fn gatherer(&self) -> &Arc<Gatherer> {
        &self.gather
    }

    /// Registers a snapshot of this origin.
    pub(crate) fn add(&self, snap: Arc<SnapCore>) -> Result {
        let mut list = self.snapshots.lock();
        let pos = list
            .iter()
            .position(|s| s.chunk_size().sectors() < snap.chunk_size().sectors())
            .unwrap_or(list.len());
        list.push(snap, GFP_KERNEL)?;
        // Rotate the new last element into place.
        if let Some(tail) = list.get_mut(pos..) {
            tail.rotate_right(1);
        }
        Ok(())
    }

    /// Unregisters a snapshot; origin writes no longer copy into it.
    pub(crate) fn remove(&self, snap: &SnapCore) {
        let mut list = self.snapshots.lock();
        if let Some(i) = list.iter().position(|s| core::ptr::eq(&**s, snap)) {
            drop(kvec::remove(&mut list, i));
        }
    }

    /// A `snapshot-origin` of this origin resumed (`true`) or suspended.
    pub(crate) fn origin_live(&self, live: bool) {
        use core::sync::atomic::Ordering;
        if live {
            self.live_origins.fetch_add(1, Ordering::AcqRel);
        } else {
            let _ = self
                .live_origins
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }

    /// Number of resumed `snapshot-origin` targets of this origin.
    pub(crate) fn live_origins(&self) -> usize {
        self.live_origins.load(core::sync::atomic::Ordering::Acquire)
    }

    /// Whether any snapshot of this origin is merging.
    pub(crate) fn has_merging(&self) -> bool {
        self.snapshots.lock().iter().any(|s| s.is_merging())
    }

    /// Whether a snapshot other than the one on `cow` is merging.
    pub(crate) fn merging_other_than(&self, cow: crate::dm::BdevHandle) -> bool {
        self.snapshots.lock().iter().any(|s| s.is_merging() && !s.cow().handle().same(cow))
    }

    /// Makes target `id` (a `snapshot-merge` one if `merge`) the handover
    /// destination of the registered snapshot using `cow`, if there is one
    /// (`__validate_exception_handover()`). A merge target is counted as
    /// one of the origin's `snapshot-merge` tables from here on, in the
    /// returned [`MergeTable`].
    pub(crate) fn claim_cow(
        self: &Arc<Self>,
        cow: crate::dm::BdevHandle,
        id: TargetId,
        merge: bool,
    ) -> Result<Option<Claimed>, HandoverRefusal> {
        // Under the list lock: another constructor's check and count are
        // not interleaved with these.
        let list = self.snapshots.lock();
        let Some(live) = list.iter().find(|s| s.cow().handle().same(cow)).cloned() else {
            return Ok(None);
        };
        let tables = self.merge_tables.load(Ordering::Acquire) != 0;
        live.add_waiting(id, merge, tables)?;
        let merge_table = merge.then(|| MergeTable::new(self.clone()));
        drop(list);
        Ok(Some(Claimed { core: live, merge_table }))
    }

    /// The smallest chunk size among the active snapshots, in sectors
    /// (origin writes are split at it), if there is any.
    pub(crate) fn min_chunk_sectors(&self) -> Option<u32> {
        self.snapshots.lock().iter().map(|s| s.chunk_size().sectors()).min()
    }

    /// Waits while any snapshot of this origin has too many copies in
    /// flight (`do_origin()` with `limit`), then returns the smallest chunk
    /// size among the snapshots, in sectors (origin writes are split at
    /// it), if there is any. The entry lock is dropped while sleeping.
    pub(crate) fn throttle_min_chunk(&self) -> Option<u32> {
        loop {
            let list = self.snapshots.lock();
            let Some(busy) = list.iter().find(|s| s.over_cow_threshold()).cloned() else {
                return list.iter().map(|s| s.chunk_size().sectors()).min();
            };
            drop(list);
            busy.throttle();
        }
    }

    /// Makes sure every snapshot of the origin holds its copy of every
    /// chunk `bio` writes before the write reaches the origin
    /// (`do_origin()`, for a write that may span several chunks).
    ///
    /// New copies start at once, one copy per run of consecutive chunks,
    /// shared by the snapshots that need the same run (gathered with other
    /// small copies, see [`Gatherer`]); the bio
    /// waits on (at most) one pending exception and is passed here again
    /// when that one completes.
    pub(crate) fn write(&self, bio: OriginBio<'_>) -> OriginOutcome {
        let start = bio.sector();
        let end = start.saturating_add(u64::from(bio.sectors()).max(1));
        let mut bio = Some(bio);
        self.copy_out(start, end, &mut bio);
        match bio {
            Some(OriginBio::Owned(b)) => OriginOutcome::Proceed(Some(b)),
            Some(OriginBio::Mapping(_)) => OriginOutcome::Proceed(None),
            None => OriginOutcome::Queued,
        }
    }

    /// Starts the copies every snapshot needs before sectors `start..end`
    /// of the origin change, holding `bio` (if any) on a pending exception.
    /// Returns whether anything is still being copied for that range.
    fn copy_out(&self, start: u64, end: u64, bio: &mut Option<OriginBio<'_>>) -> bool {
        let mut busy = false;
        let list = self.snapshots.lock();
        let mut group = CopyGroup::new();
        for snap in list.iter() {
            // More runs than one `NewRuns` holds: go on with the rest.
            let mut from = start;
            loop {
                let mut runs = NewRuns::new();
                let held = bio.is_some();
                snap.origin_cow_range(from, end, bio, &mut runs);
                busy |= held && bio.is_none();
                for run in runs.iter() {
                    group.add(snap, run);
                    busy = true;
                }
                match runs.resume_sector(snap.chunk_size()) {
                    Some(next) if next > from && next < end => from = next,
                    _ => break,
                }
            }
        }
        group.start();
        drop(list);
        busy
    }

    /// Makes every snapshot of the origin copy out the chunks of the
    /// origin `extents` (sector ranges), and waits until they have
    /// (`origin_write_extent()`, used by the merge before it overwrites the
    /// origin). All copies are started before the first wait.
    pub(crate) fn prepare_extents(&self, extents: &[CopyPlan]) {
        loop {
            // Start every copy first, then wait for one snapshot at a time.
            let mut started = false;
            for extent in extents {
                started |= self.copy_out(extent.dest, extent.dest.saturating_add(extent.sectors), &mut None);
            }
            let mut waited = false;
            for extent in extents {
                let end = extent.dest.saturating_add(extent.sectors);
                let list = self.snapshots.lock();
                let busy = list.iter().find(|s| s.copy_pending_in(extent.dest, end)).cloned();
                drop(list);
                if let Some(snap) = busy {
                    snap.wait_no_copy_in(extent.dest, end);
                    waited = true;
                }
            }
            if !started && !waited {
                return;
            }
        }
    }

    /// Runs a held origin write through [`Self::write`] again and submits
    /// it if nothing is left to copy.
    pub(crate) fn retry(&self, bio: OwnedBio) {
        if let OriginOutcome::Proceed(Some(bio)) = self.write(OriginBio::Owned(bio)) {
            bio.submit();
        }
    }
}

/// A live store a new table waits to take over ([`OriginEntry::claim_cow`]).
pub(crate) struct Claimed {
    pub(crate) core: Arc<SnapCore>,
    /// The new table's count as a `snapshot-merge` table, if it is one.
    pub(crate) merge_table: Option<MergeTable>,
}

/// One `snapshot-merge` table entry of an origin, counted in
/// `OriginEntry::merge_tables` until dropped.
pub(crate) struct MergeTable {
    entry: Arc<OriginEntry>,
}

impl MergeTable {
    /// Counts a `snapshot-merge` table of `entry`'s origin.
    pub(crate) fn new(entry: Arc<OriginEntry>) -> Self {
        entry.merge_tables.fetch_add(1, Ordering::AcqRel);
        Self { entry }
    }
}

impl Drop for MergeTable {
    fn drop(&mut self) {
        let _ = self
            .entry
            .merge_tables
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

/// All origin entries. One per loaded module.
#[pin_data]
pub(crate) struct Registry {
    #[pin]
    entries: Mutex<KVec<(Arc<OriginEntry>, usize)>>,
    /// COW devices whose snapshot constructor is between its checks and its
    /// registration ([`CowReservation`]).
    #[pin]
    constructing: Mutex<KVec<crate::dm::BdevHandle>>,
    /// Cores whose handover was cancelled (the source table was destroyed
    /// first): while the waiting table lives ([`SnapCore::holds_cancelled_table`]),
    /// upstream keeps it on the origin's list, so no other table may use
    /// the COW. Records whose table is gone are dropped as found.
    #[pin]
    cancelled: Mutex<KVec<Arc<SnapCore>>>,
}

static REGISTRY: ModuleGlobal<Registry> = ModuleGlobal::new();

/// Keeps the registry alive and published while the module is loaded.
pub(crate) struct RegistryHandle {
    _published: Published<Registry>,
}

impl RegistryHandle {
    /// Creates and publishes the registry (module init).
    pub(crate) fn create() -> Result<Self> {
        let registry = KBox::pin_init(
            pin_init!(Registry {
                entries <- new_mutex!(KVec::new()),
                constructing <- new_mutex!(KVec::new()),
                cancelled <- new_mutex!(KVec::new()),
            }),
            GFP_KERNEL,
        )?;
        Ok(Self { _published: REGISTRY.publish(registry) })
    }
}

/// The module's registry; `ENODEV` only if called outside the module's
/// lifetime, which target callbacks never are.
fn registry() -> Result<&'static Registry> {
    REGISTRY.get().ok_or(ENODEV)
}

/// A COW device held by one snapshot constructor from its checks (a live
/// store to take over, a COW of another origin) to its registration.
/// Upstream checks and registers under one lock (`register_snapshot()`) and
/// reads the metadata after; here the metadata is read in between, so a
/// second constructor on the same COW is refused meanwhile, as upstream
/// refuses it once the first is registered. Released on drop.
pub(crate) struct CowReservation {
    cow: crate::dm::BdevHandle,
}

impl CowReservation {
    /// Reserves `cow`: `EBUSY` if another constructor holds it.
    pub(crate) fn new(cow: crate::dm::BdevHandle) -> Result<Self> {
        let registry = registry()?;
        let mut constructing = registry.constructing.lock();
        if constructing.iter().any(|c| c.same(cow)) {
            return Err(EBUSY);
        }
        constructing.push(cow, GFP_KERNEL)?;
        Ok(Self { cow })
    }
}

impl Drop for CowReservation {
    fn drop(&mut self) {
        let Ok(registry) = registry() else {
            return;
        };
        let mut constructing = registry.constructing.lock();
        if let Some(i) = constructing.iter().position(|c| c.same(self.cow)) {
            let _ = kvec::remove(&mut constructing, i);
        }
    }
}

/// Whether a registered snapshot, or a table whose handover was
/// cancelled, already uses `cow` as its COW device.
pub(crate) fn cow_in_use(cow: crate::dm::BdevHandle) -> bool {
    let Ok(registry) = registry() else {
        return false;
    };
    {
        let mut cancelled = registry.cancelled.lock();
        prune_cancelled(&mut cancelled);
        if cancelled.iter().any(|core| core.cow().handle().same(cow)) {
            return true;
        }
    }
    let entries = registry.entries.lock();
    entries
        .iter()
        .any(|(entry, _)| entry.snapshots.lock().iter().any(|s| s.cow().handle().same(cow)))
}

/// Drops the records of cancelled handovers whose waiting table is gone.
fn prune_cancelled(cancelled: &mut KVec<Arc<SnapCore>>) {
    let mut i = 0;
    while let Some(core) = cancelled.get(i) {
        if core.holds_cancelled_table() {
            i = i.saturating_add(1);
        } else {
            let _ = kvec::remove(cancelled, i);
        }
    }
}

/// Records `core`, whose handover was just cancelled. Without memory the
/// record is skipped: the waiting table serves nothing either way, and
/// only a later table on the COW is then accepted.
pub(crate) fn add_cancelled(core: &Arc<SnapCore>) {
    if let Ok(registry) = registry() {
        let mut cancelled = registry.cancelled.lock();
        prune_cancelled(&mut cancelled);
        let _ = cancelled.push(core.clone(), GFP_KERNEL);
    }
}

/// A reference to the entry of one origin device; released on drop.
pub(crate) struct EntryRef {
    entry: Arc<OriginEntry>,
}

impl EntryRef {
    /// Finds or creates the entry for origin device `devt`.
    pub(crate) fn get(devt: u32) -> Result<Self> {
        let registry = registry()?;
        let mut entries = registry.entries.lock();
        for (entry, users) in entries.iter_mut() {
            if entry.devt == devt {
                *users = users.saturating_add(1);
                return Ok(Self { entry: entry.clone() });
            }
        }
        let gather = Gatherer::new()?;
        let entry = Arc::pin_init(
            pin_init!(OriginEntry {
                devt,
                live_origins: core::sync::atomic::AtomicUsize::new(0),
                merge_tables: core::sync::atomic::AtomicUsize::new(0),
                snapshots <- new_mutex!(KVec::new()),
                gather,
            }),
            GFP_KERNEL,
        )?;
        entries.push((entry.clone(), 1), GFP_KERNEL)?;
        Ok(Self { entry })
    }

    /// The entry.
    pub(crate) fn entry(&self) -> &Arc<OriginEntry> {
        &self.entry
    }
}

impl Drop for EntryRef {
    fn drop(&mut self) {
        let Ok(registry) = registry() else {
            return;
        };
        let mut entries = registry.entries.lock();
        if let Some(i) = entries.iter().position(|(e, _)| Arc::ptr_eq(e, &self.entry)) {
            let last = match entries.get_mut(i) {
                Some((_, users)) => {
                    *users = users.saturating_sub(1);
                    *users == 0
                }
                None => false,
            };
            if last {
                drop(kvec::remove(&mut entries, i));
            }
        }
    }
}
