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

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use kernel::bindings;
use kernel::new_mutex;
use kernel::prelude::*;
use kernel::rbtree::RBTree;
use kernel::sync::{Arc, Mutex};
use kernel::time::{ktime_ms_delta, Ktime};
use kernel::workqueue::{Work, WorkItem};
use kernel::{impl_has_work, new_work};

use crate::dm::dm_io::{DmIoClient, IoBuffer, IoCountdown};
use crate::dm::kcopyd::{CopyCallback, CopyFlags, KcopydClient, Region};
use crate::dm::log::dm_err;
use crate::dm::sync::{self as dmsync, Countdown, Exclusive, NoIoScope};
use crate::dm::bio::FullWrite;
use crate::dm::{BdevHandle, Bio, BioList, BioOp, MapResult, OwnedBio, TargetHandle};

use crate::pure::alloc::CommitSlot;
use crate::pure::merge::{pace_delay_us, runs_contain, throttle_idle_us, BatchLimit, BatchSizing, CopyPlan, MergeLoad, MergeRun};
use crate::pure::chunk::{Chunk, ChunkSize};
use crate::pure::status::{InfoStatus, Usage};

use super::registry::{OriginBio, OriginEntry, OriginOutcome};
use super::store::{Cursor, MergeBatch, MergePlanner, MetadataIo, StoreKind};
use super::table::ExceptionTable;

/// Buckets of the in-flight snapshot-read counters.
const TRACK_BUCKETS: usize = 64;

/// The counters of [`SnapCore::tracked`] that count dual writes in flight
/// (after the merge's two generations of writes to COW copies); the merge
/// never waits for them.
const DUAL_WRITES: usize = 2;

/// The first of the two generations of [`SnapCore::tracked`] that count
/// snapshot reads sent to the origin; each bucket has its own current one
/// ([`SnapCore::read_epoch`]).
const ORIGIN_READS: usize = 3;

/// One exception of a commit batch: origin chunk, COW chunk, whether its
/// copy succeeded (and the store is valid), and its slot in the area.
type CommitEntry = (Chunk, Chunk, bool, Option<CommitSlot>);

/// An exception whose copy is in flight or not yet committed.
struct Pending {
    new: Chunk,
    /// `None` while copying; then whether the copy succeeded.
    copied: Option<bool>,
    /// Snapshot writes to this chunk, already remapped to the COW chunk.
    snapshot_bios: BioList,
    /// Origin writes waiting for this copy.
    origin_bios: BioList,
    /// A full-chunk snapshot write that replaced the copy; ended when the
    /// exception is committed.
    full_write: Option<FullWrite>,
}

/// Mutable state of a snapshot, under [`SnapCore::state`].
pub(crate) struct SnapState {
    /// The target instance that owns this core (0: none; a cancelled
    /// handover). Only the owner's I/O is served.
    owner: usize,
    /// A new table's target waiting to take the core over on its resume.
    waiting: Option<usize>,
    /// The owner's target, for table events (`None` only for a core built
    /// without a target, by the KUnit tests).
    ti: Option<TargetHandle>,
    /// Length of the owner: origin writes beyond it need no copy.
    len: u64,
    /// Store type of the owner's table (`P` or `PO` may change on reload).
    kind: StoreKind,
    pub(crate) valid: bool,
    pub(crate) active: bool,
    pub(crate) overflowed: bool,
    /// Owned by a `snapshot-merge` target: origin writes do not copy into
    /// it, and the merge worker copies its chunks back.
    merging: bool,
    merge_failed: bool,
    /// A merge of this owner failed before the merge was last restarted:
    /// the status still says so (upstream's `merge_failed` stays set
    /// until the table is replaced; a resume restarts the merge anyway).
    merge_failed_before: bool,
    /// The merge worker is running (or queued).
    merge_running: bool,
    /// Asked to stop (presuspend, destructor).
    merge_stop: bool,
    /// The runs of the merge batches not yet committed (the one being
    /// copied back and, while the merge is pipelined, the one before it),
    /// sorted by origin chunk; empty when no batch is open.
    merge_window: KVec<MergeRun>,
    /// The runs of `merge_window` already copied back to the origin: a
    /// write to them goes to the chunk's COW copy, then to the origin
    /// ([`SnapCore::dual_write`]), so it need not wait for the commit.
    merge_copied: KVec<MergeRun>,
    /// The generation (0 or 1) of `SnapCore::tracked` that new tracked
    /// bios count in; each merge batch flips it as it sets its window.
    track_gen: usize,
    /// Runs whose merge commit failed, sorted: copied back and flushed to
    /// the origin, but on disk still listed or not (an area write may have
    /// landed, another not), in memory maybe still in the table. Until the
    /// next activation, writes to them go to both the COW copy and the
    /// origin, which is right whichever of the two reactivation trusts.
    merge_unsettled: KVec<MergeRun>,
    /// Some unsettled runs could not be recorded (no memory): writes to
    /// any chunk still in the table are treated as unsettled.
    merge_unsettled_lost: bool,
    /// Writes to the merge window, already pointed at the origin, waiting
    /// for the window to be merged.
    merge_queue: BioList,
    /// I/Os the merging target has mapped (wrapping): while it changes,
    /// the merge shares the disks with that I/O ([`MergeLoad::Active`]).
    merge_io: u64,
    /// Invalidated, and the header saying so is not durable yet: the commit
    /// worker writes it and raises the event (no synchronous I/O in `map`).
    /// Until then origin writes that this snapshot would have needed a
    /// copy for wait in `invalid_header_waiters`: a crash must never load
    /// the snapshot as valid with such a write in the origin
    /// (`__invalidate_snapshot()` writes the header before `map` returns).
    invalidated_pending_io: bool,
    /// Origin writes held until the invalid header is durable.
    invalid_header_waiters: BioList,
    table: ExceptionTable,
    pending: RBTree<Chunk, Pending>,
    /// Allocation order: sequence number -> chunk. Commits follow it.
    order: RBTree<u64, Chunk>,
    next_seq: u64,
    /// Pending exceptions whose copy has not finished yet.
    copying: u64,
    /// Entries in `order`.
    ordered: u64,
    pub(crate) cursor: Cursor,
}

impl SnapState {
    /// Whether the commit worker should write a batch now
    /// (`persistent_commit_exception()`'s rule): when no copy is running,
    /// or when the finished copies fill the current area. Committing every
    /// finished prefix at once would cost a flushed metadata write per few
    /// chunks during a burst of first writes.
    fn commit_due(&self) -> bool {
        let room = match &self.cursor {
            Cursor::Persistent(p) if self.valid && self.copying != 0 => {
                p.geometry().exceptions_per_area().saturating_sub(p.current_committed())
            }
            _ => return true,
        };
        // Cheap test first: this runs on every copy completion.
        if self.ordered.saturating_sub(self.copying) < u64::from(room) {
            return false;
        }
        let mut finished = 0u32;
        for (_, chunk) in self.order.iter() {
            if finished >= room {
                break;
            }
            match self.pending.get(chunk) {
                Some(pe) if pe.copied.is_none() => break,
                _ => finished += 1,
            }
        }
        finished >= room
    }
}

/// One snapshot's shared core.
///
/// # Invariants
///
/// `origin` and `cow` stay valid until [`SnapCore::shutdown`] returns: the
/// owning target (`state.owner`) holds the two devices and calls `shutdown`
/// in its destructor before releasing them. `state.ti`, if set, is the
/// owner's live target: its destructor clears it in [`SnapCore::release`]. A handover
/// moves ownership to a target holding the same two devices, and only
/// while the old owner is suspended.
#[pin_data]
pub(crate) struct SnapCore {
    chunk: ChunkSize,
    origin: BdevHandle,
    cow: BdevHandle,
    /// `discard_passdown_origin`: discard clone 1 goes to the origin.
    discard_passdown_origin: bool,
    entry: Arc<OriginEntry>,
    #[pin]
    pub(crate) state: Mutex<SnapState>,
    /// Metadata I/O, used by the commit worker (and the final shutdown).
    #[pin]
    meta: Mutex<Option<MetadataIo>>,
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
    tracked: [AtomicU32; 5 * TRACK_BUCKETS],
    /// Per bucket, which of the two [`ORIGIN_READS`] generations new
    /// snapshot reads count in (changed under the state lock, only by the
    /// commit worker, in `complete`).
    read_epoch: [AtomicU32; TRACK_BUCKETS],
    /// Exceptions allocated and not yet completed (for `shutdown`).
    in_flight: AtomicU64,
    /// Chunks being copied (`SnapState::copying`, readable without the
    /// lock): upstream's `in_progress`, which `snapshot_cow_threshold`
    /// bounds.
    copies_in_progress: AtomicU64,
}

impl_has_work! {
    impl HasWork<Self> for SnapCore { self.work }
    impl HasWork<Self, 1> for SnapCore { self.merge_work }
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

/// What a constructor hands to [`SnapCore::new`].
pub(crate) struct CoreParts {
    pub(crate) chunk: ChunkSize,
    pub(crate) kind: StoreKind,
    pub(crate) origin: BdevHandle,
    pub(crate) cow: BdevHandle,
    pub(crate) owner: usize,
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
    /// Builds the core.
    ///
    /// The caller must uphold the type invariants for `parts.origin`,
    /// `parts.cow` and `parts.ti` (see [`SnapCore`]).
    pub(crate) fn new(parts: CoreParts) -> Result<Arc<Self>> {
        let state = SnapState {
            owner: parts.owner,
            waiting: None,
            ti: parts.ti,
            len: parts.len,
            kind: parts.kind,
            valid: parts.valid,
            active: false,
            overflowed: false,
            merging: parts.merging,
            merge_failed: false,
            merge_failed_before: false,
            merge_running: false,
            merge_stop: false,
            merge_window: KVec::new(),
            merge_copied: KVec::new(),
            merge_unsettled: KVec::new(),
            merge_unsettled_lost: false,
            track_gen: 0,
            merge_queue: BioList::new(),
            merge_io: 0,
            invalidated_pending_io: false,
            invalid_header_waiters: BioList::new(),
            table: parts.table,
            pending: RBTree::new(),
            order: RBTree::new(),
            next_seq: 0,
            copying: 0,
            ordered: 0,
            cursor: parts.cursor,
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
                tracked: core::array::from_fn(|_| AtomicU32::new(0)),
                read_epoch: core::array::from_fn(|_| AtomicU32::new(0)),
                in_flight: AtomicU64::new(0),
                copies_in_progress: AtomicU64::new(0),
            }),
            GFP_KERNEL,
        )
    }

    /// The chunk size.
    pub(crate) fn chunk_size(&self) -> ChunkSize {
        self.chunk
    }

    /// The COW device.
    pub(crate) fn cow(&self) -> BdevHandle {
        self.cow
    }

    fn cow_sectors(&self) -> u64 {
        // SAFETY: By the type invariant the COW device is held.
        unsafe { self.cow.size_sectors() }
    }

    fn origin_sectors(&self) -> u64 {
        // SAFETY: By the type invariant the origin device is held.
        unsafe { self.origin.size_sectors() }
    }

    fn track_bucket(chunk: Chunk) -> usize {
        (chunk as usize) % TRACK_BUCKETS
    }

    /// Waits (process context) until no tracked bio of generation `gen`
    /// in the buckets of `buckets` (a bit per bucket) is in flight.
    fn wait_tracked(&self, gen: usize, buckets: u64) {
        let Some(counters) = self.tracked.get(gen * TRACK_BUCKETS..(gen + 1) * TRACK_BUCKETS) else {
            return;
        };
        // The bios waited for are in flight already: poll briefly first,
        // then back off to 1 ms.
        let mut us = 50;
        for (b, counter) in counters.iter().enumerate() {
            if buckets & (1u64 << b) != 0 {
                while counter.load(Ordering::Acquire) != 0 {
                    dmsync::sleep_us(us);
                    us = (us * 2).min(1000);
                }
            }
        }
    }

    /// The generation a snapshot read of `chunk` sent to the origin counts
    /// in (caller holds the state lock).
    fn origin_read_gen(&self, chunk: Chunk) -> usize {
        let epoch = self.read_epoch.get(Self::track_bucket(chunk)).map_or(0, |e| e.load(Ordering::Acquire));
        ORIGIN_READS + (epoch as usize & 1)
    }

    /// Waits (commit worker) until the snapshot reads of `chunk` sent to
    /// the origin before its exception went into the table have finished
    /// (`__check_for_conflicting_io()`). Reads of other chunks of the same
    /// bucket cannot hold it up for long: the reads of the bucket's other
    /// epoch, older still, drain first (none join them), then new reads
    /// are switched to that epoch and the current one drains.
    fn drain_origin_reads(&self, chunk: Chunk) {
        let b = Self::track_bucket(chunk);
        let Some(epoch) = self.read_epoch.get(b) else {
            return;
        };
        let current = epoch.load(Ordering::Acquire) & 1;
        let bucket = 1u64 << b;
        self.wait_tracked(ORIGIN_READS + (1 - current as usize), bucket);
        {
            let _st = self.state.lock();
            epoch.store(1 - current, Ordering::Release);
        }
        self.wait_tracked(ORIGIN_READS + current as usize, bucket);
    }

    /// Marks the snapshot invalid (`__invalidate_snapshot()`); the worker
    /// rewrites the header and raises the table event.
    fn invalidate(self: &Arc<Self>, st: &mut SnapState, why: &str) {
        if !st.valid {
            return;
        }
        dm_err!("Invalidating snapshot: {}.", why);
        st.valid = false;
        st.invalidated_pending_io = true;
        self.kick();
    }

    fn kick(self: &Arc<Self>) {
        // Already queued is fine: the worker drains everything it finds.
        let _ = dmsync::queue().enqueue::<Arc<Self>, 0>(self.clone());
    }

    /// Allocates a new pending exception for `chunk` (caller holds the
    /// state lock). `None` if the COW is full or memory ran out, in which
    /// case the snapshot was invalidated or marked overflowed.
    fn new_pending(self: &Arc<Self>, st: &mut SnapState, chunk: Chunk, from_snapshot_write: bool) -> Option<Chunk> {
        let new = match st.cursor.prepare(self.cow_sectors()) {
            Ok(new) => new,
            Err(_) => {
                if from_snapshot_write && st.kind == (StoreKind::Persistent { overflow: true }) {
                    if !st.overflowed {
                        dm_err!("Snapshot overflowed: Unable to allocate exception.");
                    }
                    st.overflowed = true;
                } else {
                    self.invalidate(st, "Unable to allocate exception");
                }
                return None;
            }
        };
        let pe = Pending {
            new,
            copied: None,
            snapshot_bios: BioList::new(),
            origin_bios: BioList::new(),
            full_write: None,
        };
        let seq = st.next_seq;
        if st.pending.try_create_and_insert(chunk, pe, GFP_KERNEL).is_err() {
            self.invalidate(st, "Unable to allocate exception");
            return None;
        }
        if st.order.try_create_and_insert(seq, chunk, GFP_KERNEL).is_err() {
            // Undo: the exception was never started.
            st.pending.remove(&chunk);
            self.invalidate(st, "Unable to allocate exception");
            return None;
        }
        st.next_seq += 1;
        st.copying += 1;
        st.ordered += 1;
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.copies_in_progress.fetch_add(1, Ordering::AcqRel);
        Some(new)
    }

    /// Whether this snapshot has more than `snapshot_cow_threshold` chunks
    /// being copied (`wait_for_in_progress()`'s test: with 0, a write that
    /// needs a copy waits until none is). As upstream's `in_progress`, a
    /// chunk counts until its copy is done, not until its commit.
    pub(crate) fn over_cow_threshold(&self) -> bool {
        // SAFETY: Reads a module parameter; no preconditions.
        let limit = unsafe { crate::dm::bindings::dmsnap_param_cow_threshold() };
        self.copies_in_progress.load(Ordering::Acquire) > u64::from(limit)
    }

    /// Sleeps while the snapshot is over its copy threshold. Holds no lock
    /// while sleeping (upstream's 2019 deadlock was a writer waiting for
    /// this bound with `_origins_lock` held).
    pub(crate) fn throttle(&self) {
        while self.over_cow_threshold() {
            dmsync::sleep_ms(1);
        }
    }

    /// `map` of the snapshot target (`snapshot_map()`).
    pub(crate) fn snapshot_map(self: &Arc<Self>, me: usize, ti: &crate::dm::Target, bio: &Bio) -> MapResult {
        let slot = bio.per_bio_u64(ti);
        if let Some(slot) = slot {
            slot.store(0, Ordering::Relaxed);
        }
        if bio.is_preflush() {
            // Snapshot writes never touch the origin: flush the COW only.
            // SAFETY: By the type invariant the COW device is held.
            unsafe { bio.set_bdev(self.cow) };
            return MapResult::Remapped;
        }
        let sector = bio.sector();
        let chunk = self.chunk.sector_to_chunk(sector);
        let write = bio.is_write();
        if write {
            self.throttle();
        }

        let _noio = NoIoScope::enter();
        let mut st = self.state.lock();
        if st.owner != me || !st.valid || (write && st.overflowed) {
            return MapResult::Kill;
        }
        let discard = bio.op() == BioOp::Discard;
        if discard && self.discard_passdown_origin && bio.target_bio_nr() != 0 {
            // The second discard clone frees space in the origin, without
            // copying anything out first (that would defeat its purpose).
            self.track(bio, slot, chunk, self.origin_read_gen(chunk));
            drop(st);
            // SAFETY: By the type invariant the origin device is held.
            unsafe { bio.set_bdev(self.origin) };
            return MapResult::Remapped;
        }
        if let Some(new) = st.table.lookup(chunk) {
            drop(st);
            self.remap_to_cow(bio, new, sector);
            if discard && u64::from(bio.sectors()) == u64::from(self.chunk.sectors()) {
                // A whole exception chunk: zero it rather than discard it
                // (the exception stays; the COW space is not given back).
                self.zero_cow_chunk(new, bio.defer());
                return MapResult::Submitted;
            }
            return MapResult::Remapped;
        }
        if discard {
            // No exception: nothing to discard, and no copy-out for it.
            drop(st);
            bio.defer().complete();
            return MapResult::Submitted;
        }
        if !write {
            // The origin still holds this chunk's snapshot data: any origin
            // write to it is held until this read is done (see `complete`).
            self.track(bio, slot, chunk, self.origin_read_gen(chunk));
            drop(st);
            // SAFETY: By the type invariant the origin device is held.
            unsafe { bio.set_bdev(self.origin) };
            return MapResult::Remapped;
        }

        let (new, start) = match st.pending.get(&chunk) {
            Some(pe) => (pe.new, false),
            None => match self.new_pending(&mut st, chunk, true) {
                Some(new) => (new, true),
                None => return MapResult::Kill,
            },
        };
        self.remap_to_cow(bio, new, sector);
        if start
            && bio.op() == BioOp::Write
            && bio.sectors() == self.chunk.sectors()
            && self.chunk.is_aligned(sector)
        {
            // The write covers the whole chunk: it is the copy.
            drop(st);
            self.start_full_write(ti, chunk, bio);
            return MapResult::Submitted;
        }
        let Some(pe) = st.pending.get_mut(&chunk) else {
            return MapResult::Kill;
        };
        pe.snapshot_bios.push(bio.defer());
        drop(st);
        if start {
            self.start_copy(chunk, new);
        }
        MapResult::Submitted
    }

    /// Sends a full-chunk snapshot write to the COW in place of the copy
    /// (`start_full_bio()`); it completes like a copy and is ended after
    /// the commit. The pending exception exists and was not started.
    fn start_full_write(self: &Arc<Self>, ti: &crate::dm::Target, chunk: Chunk, bio: &Bio) {
        let owned = bio.defer();
        let prepared = Arc::new(CopyJob::single(self.clone(), chunk), GFP_KERNEL)
            .map_err(|_| ENOMEM)
            .and_then(|job| match self.kcopyd.lock().as_ref() {
                // Not under the state lock: this may wait for kcopyd jobs,
                // whose completions take it.
                Some(kc) => kc.prepare_callback(job),
                None => Err(ENODEV),
            });
        let callback = match prepared {
            Ok(cb) => cb,
            Err(_) => {
                // Fall back to failing the write with the exception.
                if let Some(pe) = self.state.lock().pending.get_mut(&chunk) {
                    pe.snapshot_bios.push(owned);
                }
                self.copy_done(chunk, false);
                return;
            }
        };
        // On failure the bio was failed and the callback fired as an error.
        let Some((full, submit)) = owned.into_full_write(ti, callback) else {
            return;
        };
        match self.state.lock().pending.get_mut(&chunk) {
            Some(pe) => pe.full_write = Some(full),
            // Cannot happen: the exception waits for this write's callback.
            None => {
                drop(submit);
                full.finish(false);
                return;
            }
        }
        submit.submit();
    }

    /// Counts `bio` as in flight against origin chunk `chunk`, in
    /// generation `gen` (the current one: the caller holds the state
    /// lock), until `end_io` (`track_chunk()`).
    fn track(&self, _bio: &Bio, slot: Option<&AtomicU64>, chunk: Chunk, gen: usize) {
        let b = gen * TRACK_BUCKETS + Self::track_bucket(chunk);
        if let (Some(slot), Some(counter)) = (slot, self.tracked.get(b)) {
            counter.fetch_add(1, Ordering::AcqRel);
            slot.store(b as u64 + 1, Ordering::Relaxed);
        }
    }

    /// Zeroes COW chunk `new` with kcopyd, then completes `bio`.
    fn zero_cow_chunk(&self, new: Chunk, bio: OwnedBio) {
        let Some(start) = self.chunk.chunk_to_sector(new) else {
            bio.fail();
            return;
        };
        let job = match Arc::new(ZeroJob { bio: Exclusive::new(Some(bio)) }, GFP_KERNEL) {
            Ok(job) => job,
            Err(_) => return, // dropping the job fails the bio
        };
        let kc = self.kcopyd.lock();
        if let Some(kc) = kc.as_ref() {
            // SAFETY: By the type invariant the COW device stays open until
            // `shutdown` destroys this client, which waits for the job.
            let _ = unsafe { kc.zero(&[Region::new(self.cow, start, u64::from(self.chunk.sectors()))], job) };
        }
        // On error the job (and so the bio, failed) was dropped.
    }

    fn remap_to_cow(&self, bio: &Bio, new: Chunk, sector: u64) {
        // SAFETY: By the type invariant the COW device is held.
        unsafe { bio.set_bdev(self.cow) };
        bio.set_sector(self.cow_sector(new, sector));
    }

    /// The COW sector holding origin `sector`, whose chunk is in COW chunk
    /// `new`.
    fn cow_sector(&self, new: Chunk, sector: u64) -> u64 {
        let base = self.chunk.chunk_to_sector(new).unwrap_or(0);
        base | self.chunk.offset_in_chunk(sector)
    }

    /// `end_io` of the snapshot target: ends read tracking.
    pub(crate) fn snapshot_end_io(&self, ti: &crate::dm::Target, bio: &Bio) {
        if let Some(slot) = bio.per_bio_u64(ti) {
            let b = slot.swap(0, Ordering::Relaxed);
            if b != 0 {
                if let Some(counter) = self.tracked.get((b - 1) as usize) {
                    counter.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }

    /// One snapshot's part of an origin write of the chunk at `sector`:
    /// [`Self::origin_cow_range`] for that chunk alone. Returns the new
    /// exception (origin chunk, COW chunk) for the caller to start.
    #[cfg_attr(not(CONFIG_KUNIT), allow(dead_code))]
    pub(crate) fn origin_cow(self: &Arc<Self>, sector: u64, bio: &mut Option<OriginBio<'_>>) -> Option<(Chunk, Chunk)> {
        let mut runs = NewRuns::new();
        self.origin_cow_range(sector, sector.saturating_add(1), bio, &mut runs);
        let first = runs.iter().next().map(|r| (r.chunk, r.new));
        first
    }

    /// One snapshot's part of an origin write of sectors `start..end`
    /// (`__origin_write()` for every chunk the write touches): allocates an
    /// exception for each chunk that needs a copy and records it in `runs`
    /// for the caller to start (outside this snapshot's lock); holds `bio`
    /// on the first pending exception met. Stops early when `runs` is full;
    /// the held bio comes back through here when that exception completes,
    /// so the rest is done then.
    pub(crate) fn origin_cow_range(
        self: &Arc<Self>,
        start: u64,
        end: u64,
        bio: &mut Option<OriginBio<'_>>,
        runs: &mut NewRuns,
    ) {
        let _noio = NoIoScope::enter();
        let mut st = self.state.lock();
        if !st.valid {
            Self::hold_until_invalid_header(&mut st, bio);
            return;
        }
        // A merging snapshot never gets new exceptions: its data is what
        // the origin is becoming.
        if !st.active || st.merging || st.owner == 0 {
            return;
        }
        let end = end.min(st.len);
        if start >= end {
            return;
        }
        let first = self.chunk.sector_to_chunk(start);
        let last = self.chunk.sector_to_chunk(end - 1);
        for chunk in first..=last {
            if let Some(pe) = st.pending.get_mut(&chunk) {
                if let Some(b) = bio.take() {
                    pe.origin_bios.push(b.into_owned());
                }
                continue;
            }
            if st.table.lookup(chunk).is_some() {
                continue;
            }
            if runs.is_full() {
                break;
            }
            // `None`: the store is full and the snapshot now invalid.
            let Some(new) = self.new_pending(&mut st, chunk, false) else {
                Self::hold_until_invalid_header(&mut st, bio);
                break;
            };
            if let Some(b) = bio.take() {
                if let Some(pe) = st.pending.get_mut(&chunk) {
                    pe.origin_bios.push(b.into_owned());
                }
            }
            runs.push(chunk, new);
        }
    }

    /// Holds an origin write (if not held yet) while the header that says
    /// this snapshot is invalid is not durable: the origin chunk it writes
    /// may be one the snapshot still needs (an overflow, a failed copy).
    fn hold_until_invalid_header(st: &mut SnapState, bio: &mut Option<OriginBio<'_>>) {
        if st.invalidated_pending_io {
            if let Some(b) = bio.take() {
                st.invalid_header_waiters.push(b.into_owned());
            }
        }
    }

    /// Activates a core built without a target (KUnit).
    #[cfg(CONFIG_KUNIT)]
    pub(crate) fn activate_for_test(&self) {
        self.state.lock().active = true;
    }

    /// Number of exceptions allocated and not yet completed.
    #[cfg_attr(not(CONFIG_KUNIT), allow(dead_code))]
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// The COW chunk of origin chunk `chunk`, if its exception is complete.
    #[cfg_attr(not(CONFIG_KUNIT), allow(dead_code))]
    pub(crate) fn lookup(&self, chunk: Chunk) -> Option<Chunk> {
        self.state.lock().table.lookup(chunk)
    }

    /// Whether a chunk of origin sectors `start..end` has a copy in flight,
    /// or the snapshot is invalid and its header does not say so yet: the
    /// merge must not overwrite the origin before either is durable.
    pub(crate) fn copy_pending_in(&self, start: u64, end: u64) -> bool {
        if start >= end {
            return false;
        }
        let first = self.chunk.sector_to_chunk(start);
        let last = self.chunk.sector_to_chunk(end - 1);
        let st = self.state.lock();
        st.invalidated_pending_io || (first..=last).any(|c| st.pending.get(&c).is_some())
    }

    /// Starts copying origin chunk `chunk` to COW chunk `new`.
    pub(crate) fn start_copy(self: &Arc<Self>, chunk: Chunk, new: Chunk) {
        let mut group = CopyGroup::new();
        group.add(self, NewRun { chunk, new, count: 1 });
        group.start();
    }

    /// A copy finished: mark it and let the worker commit it in order.
    fn copy_done(self: &Arc<Self>, chunk: Chunk, ok: bool) {
        self.copies_done(chunk, 1, ok);
    }

    /// The copy of origin chunks `chunk .. chunk + count` finished.
    fn copies_done(self: &Arc<Self>, chunk: Chunk, count: u32, ok: bool) {
        let mut st = self.state.lock();
        for c in chunk..chunk.saturating_add(u64::from(count)) {
            let mut first = false;
            if let Some(pe) = st.pending.get_mut(&c) {
                first = pe.copied.replace(ok).is_none();
            }
            if first {
                st.copying = st.copying.saturating_sub(1);
                let _ = self.copies_in_progress.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    Some(n.saturating_sub(1))
                });
            }
        }
        drop(st);
        self.kick();
    }

    /// Status line (`snapshot_status()` for `STATUSTYPE_INFO`) as target
    /// `me` sees it: a target that handed its store over is invalid.
    pub(crate) fn info_status(&self, me: usize) -> InfoStatus {
        let st = self.state.lock();
        let usage: Usage = st.cursor.usage(self.cow_sectors());
        let merge_failed = st.merge_failed || st.merge_failed_before;
        InfoStatus::select(st.valid && st.owner == me, merge_failed, st.overflowed, usage)
    }

    /// Whether this snapshot is being merged.
    pub(crate) fn is_merging(&self) -> bool {
        self.state.lock().merging
    }

    /// Whether a merge failed (for the IMA line).
    pub(crate) fn merge_failed(&self) -> bool {
        let st = self.state.lock();
        st.merge_failed || st.merge_failed_before
    }

    /// Whether the snapshot is valid (for target `me`) and whether it
    /// overflowed.
    pub(crate) fn flags(&self, me: usize) -> (bool, bool) {
        let st = self.state.lock();
        (st.valid && st.owner == me, st.overflowed)
    }

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

    /// Waits for all in-flight work on this snapshot and releases its
    /// kcopyd and dm-io clients. Called from the target's destructor, after
    /// the snapshot was removed from its origin; afterwards nothing uses the
    /// devices or the target any more.
    pub(crate) fn shutdown(self: &Arc<Self>) {
        // dm core suspended the device, so no snapshot bio is outstanding;
        // copies started by origin writes before removal still finish.
        while self.in_flight.load(Ordering::Acquire) != 0 {
            dmsync::sleep_ms(1);
        }
        // The commit worker may still be finishing the last batch (or a
        // header write): wait for it, and only for it (not for a merge of
        // another snapshot running on the same queue).
        dmsync::flush_work(&self.work);
        drop(self.kcopyd.lock().take());
        drop(self.meta.lock().take());
    }

    /// The commit worker: commits finished copies in allocation order, in
    /// batches, then completes them.
    ///
    /// Each batch's area is written with PREFLUSH, which makes the data
    /// copies durable before it. On a COW without native FUA (the block
    /// layer would follow a FUA write with a flush of its own) the area is
    /// written without FUA and the batch completes after the next flush: the
    /// PREFLUSH of the batch that follows in the same run, or one explicit
    /// flush at the end of the run. Batches found due one after another (a
    /// stream of copy-outs filling areas) then cost one flush each, not two;
    /// a lone batch costs the same two as before. No exception completes
    /// (releasing the origin writes held on it) before its area is durable.
    fn commit(self: &Arc<Self>) {
        let _noio = NoIoScope::enter();
        // The last batch written, awaiting the flush that makes it durable.
        let mut unflushed: Option<KVec<CommitEntry>> = None;
        'batches: loop {
            // Invalidation side effects first: header, then the event.
            let invalidated = self.finish_invalidation();

            let mut batch: KVec<CommitEntry> = KVec::new();
            let mut area: Option<(Chunk, Option<Chunk>)> = None;
            {
                let mut st = self.state.lock();
                if !st.commit_due() {
                    // The last copy to finish kicks the worker again.
                    break 'batches;
                }
                while let Some((seq, chunk)) = first(&mut st.order) {
                    let Some(pe) = st.pending.get(&chunk) else {
                        st.order.remove(&seq);
                        st.ordered = st.ordered.saturating_sub(1);
                        continue;
                    };
                    let Some(copied) = pe.copied else { break };
                    let new = pe.new;
                    st.order.remove(&seq);
                    st.ordered = st.ordered.saturating_sub(1);
                    let mut ok = copied && st.valid;
                    let mut slot = None;
                    if ok {
                        if let Cursor::Persistent(p) = &mut st.cursor {
                            let location = p.current_area_location();
                            match p.commit_slot() {
                                Ok(s) => {
                                    if s.area_full {
                                        area = location.map(|l| (l, p.next_area().map(|(_, c)| c)));
                                    } else if area.is_none() {
                                        area = location.map(|l| (l, None));
                                    }
                                    slot = Some(s);
                                }
                                // Cannot happen (the area is advanced when
                                // full); fail the exception rather than
                                // pretend it is durable.
                                Err(_) => ok = false,
                            }
                        }
                    }
                    let full = slot.is_some_and(|s| s.area_full);
                    if batch.push((chunk, new, ok, slot), GFP_KERNEL).is_err() {
                        // Could not record it: fail it rather than lose it.
                        drop(st);
                        self.complete(chunk, new, false);
                        st = self.state.lock();
                        continue;
                    }
                    if full {
                        break;
                    }
                }
            }
            if batch.is_empty() && !invalidated {
                break 'batches;
            }

            // Write the batch's area (see above for when it is durable).
            let mut durable = true;
            let mut awaits_flush = false;
            if let Some((location, zero_next)) = area {
                let mut meta = self.meta.lock();
                match meta.as_mut() {
                    Some(meta) => {
                        // Asked here, with `meta` present: a worker run
                        // after `shutdown` (a late kick) finds it gone and
                        // touches no device.
                        // SAFETY: `meta` is only dropped by `shutdown`, while
                        // the COW is still held (type invariant).
                        let fold_fua = !unsafe { self.cow.has_fua() }
                            // SAFETY: Reads a module parameter; no preconditions.
                            || unsafe { crate::dm::bindings::dmsnap_test_commit_fold() };
                        for (chunk, new, ok, slot) in batch.iter() {
                            if let (true, Some(slot)) = (*ok, slot) {
                                if meta.set_entry(slot.index, *chunk, *new).is_err() {
                                    durable = false;
                                }
                            }
                        }
                        if durable && meta.write_area(location, zero_next, !fold_fua).is_err() {
                            durable = false;
                        }
                        awaits_flush = durable && fold_fua;
                        if zero_next.is_some() {
                            if let Cursor::Persistent(p) = &mut self.state.lock().cursor {
                                p.advance_area();
                            }
                            meta.next_area();
                        }
                    }
                    None => durable = false,
                }
                drop(meta);
                if !durable {
                    let mut st = self.state.lock();
                    self.invalidate(&mut st, "Error reading/writing");
                }
            }

            // The previous batch is durable once this area write (its
            // PREFLUSH) succeeded; otherwise flush for it now.
            if let Some(prev) = unflushed.take() {
                let flushed = awaits_flush || self.flush_cow();
                self.complete_batch(prev, flushed);
            }
            if awaits_flush {
                unflushed = Some(batch);
            } else {
                self.complete_batch(batch, durable);
            }
        }
        if let Some(last) = unflushed.take() {
            let flushed = self.flush_cow();
            self.complete_batch(last, flushed);
        }
        // An invalidation by the last completions: its waiters go now.
        self.finish_invalidation();
    }

    /// Makes a pending invalidation durable: writes the header (valid = 0),
    /// then releases the origin writes held for it, then raises the table
    /// event. Whether there was one.
    fn finish_invalidation(self: &Arc<Self>) -> bool {
        if !self.state.lock().invalidated_pending_io {
            return false;
        }
        // The flag stays set during the write, so origin writes arriving
        // meanwhile are held too.
        if let Some(meta) = self.meta.lock().as_mut() {
            if meta.write_header(false).is_err() {
                // As upstream: the snapshot stays invalid in memory (a
                // failing COW cannot be made to say more).
                dm_err!("write header failed");
            }
        }
        let mut st = self.state.lock();
        st.invalidated_pending_io = false;
        let mut waiters = st.invalid_header_waiters.take();
        // The event goes to the owner at this moment, under the state
        // lock: a handover replaces `ti` and an owner's destructor clears
        // it (`release`) under the same lock.
        if let Some(ti) = st.ti {
            // SAFETY: `ti` is the owner's target, alive while it is stored
            // here (see above and the type invariant).
            unsafe { ti.table_event() };
        }
        drop(st);
        while let Some(bio) = waiters.pop() {
            self.entry.retry(bio);
        }
        true
    }

    /// Flushes the COW; `false` (and the snapshot invalidated) on error.
    fn flush_cow(self: &Arc<Self>) -> bool {
        let meta = self.meta.lock();
        // SAFETY: `meta` is only dropped by `shutdown`, while the COW is
        // still held (type invariant); held here, it keeps the COW open.
        if meta.is_some() && unsafe { self.cow.flush() }.is_ok() {
            return true;
        }
        drop(meta);
        let mut st = self.state.lock();
        self.invalidate(&mut st, "Error reading/writing");
        false
    }

    /// Completes a committed batch; `durable`: its area write is durable.
    fn complete_batch(self: &Arc<Self>, batch: KVec<CommitEntry>, durable: bool) {
        for (chunk, new, ok, _) in batch.into_iter() {
            self.complete(chunk, new, ok && durable);
        }
    }

    /// Finishes one exception (`pending_complete()`).
    ///
    /// The completed exception goes into the table first, so new snapshot
    /// reads of the chunk go to the COW copy. The pending exception stays
    /// until the snapshot reads already sent to the origin for this chunk
    /// have finished: while it exists, origin writes to the chunk queue on
    /// it (`origin_cow_range` looks for it first), so none can overtake
    /// such a read, whatever made the exception (an origin write, a
    /// snapshot write, the merge's copy-out).
    fn complete(self: &Arc<Self>, chunk: Chunk, new: Chunk, ok: bool) {
        let mut st = self.state.lock();
        let mut ok = ok && st.valid;
        if ok && st.table.insert(chunk, new).is_err() {
            self.invalidate(&mut st, "Unable to allocate exception");
            ok = false;
        }
        if !ok {
            self.invalidate(&mut st, "Error reading/writing");
        }
        if st.pending.get(&chunk).is_none() {
            return;
        }
        drop(st);
        self.drain_origin_reads(chunk);

        let mut st = self.state.lock();
        let Some(mut pe) = st.pending.remove(&chunk) else {
            return;
        };
        let mut origin_bios = pe.origin_bios.take();
        if st.invalidated_pending_io {
            // Invalid, and not durably so yet: the held origin writes go
            // once the header is written (`finish_invalidation`).
            while let Some(bio) = origin_bios.pop() {
                st.invalid_header_waiters.push(bio);
            }
        }
        drop(st);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);

        if let Some(full) = pe.full_write.take() {
            full.finish(ok);
        }
        let mut snapshot_bios = pe.snapshot_bios.take();
        while let Some(bio) = snapshot_bios.pop() {
            if ok {
                bio.submit();
            } else {
                bio.fail();
            }
        }
        while let Some(bio) = origin_bios.pop() {
            self.entry.retry(bio);
        }
    }
}

impl SnapCore {
    /// `map` of the `snapshot-merge` target (`snapshot_merge_map()`).
    pub(crate) fn merge_map(self: &Arc<Self>, me: usize, ti: &crate::dm::Target, bio: &Bio) -> MapResult {
        if let Some(slot) = bio.per_bio_u64(ti) {
            slot.store(0, Ordering::Relaxed);
        }
        if bio.is_preflush() {
            // Two flush clones: #0 for the origin, #1 for the COW.
            let dev = if bio.target_bio_nr() == 0 { self.origin } else { self.cow };
            // SAFETY: By the type invariant both devices are held.
            unsafe { bio.set_bdev(dev) };
            return MapResult::Remapped;
        }
        if bio.op() == BioOp::Discard {
            // Once merging, discards no longer change anything.
            bio.defer().complete();
            return MapResult::Submitted;
        }
        let sector = bio.sector();
        let chunk = self.chunk.sector_to_chunk(sector);
        let write = bio.is_write();
        let _noio = NoIoScope::enter();
        let mut st = self.state.lock();
        // A target that does not own the store is upstream's invalid
        // snapshot-merge (its handover was cancelled, or it handed the
        // store over): everything goes to the origin.
        let owner = st.owner == me;
        if owner {
            st.merge_io = st.merge_io.wrapping_add(1);
        }
        if owner && st.valid {
            if let Some(new) = st.table.lookup(chunk) {
                if write && (st.merge_unsettled_lost || runs_contain(&st.merge_unsettled, chunk)) {
                    // Its commit failed: write both copies, or nothing.
                    let size = ti.per_io_data_size();
                    // SAFETY: `bio` is this target's clone; it reserved `size`.
                    if !unsafe { bio.dual_writable(size) } {
                        dm_err!("merge commit failed: only plain writes to its chunks are possible until reactivation");
                        return MapResult::Kill;
                    }
                    while self.dual_write_in_flight(chunk) {
                        // One at a time per chunk (bucket): the one in
                        // flight ends on its own (the merge is stopped).
                        drop(st);
                        dmsync::sleep_us(100);
                        st = self.state.lock();
                    }
                    if st.owner != me || !st.valid || st.table.lookup(chunk) != Some(new) {
                        // Changed while it waited (a handover): rare.
                        return MapResult::Kill;
                    }
                    self.track(bio, bio.per_bio_u64(ti), chunk, DUAL_WRITES);
                    drop(st);
                    // SAFETY: By the type invariant the origin is held.
                    unsafe { bio.set_bdev(self.origin) };
                    self.dual_write(bio.defer(), size, self.cow_sector(new, sector));
                    return MapResult::Submitted;
                }
                let in_window = runs_contain(&st.merge_window, chunk);
                if write && in_window {
                    // SAFETY: By the type invariant the origin is held.
                    unsafe { bio.set_bdev(self.origin) };
                    let size = ti.per_io_data_size();
                    // SAFETY: `bio` is this target's clone; it reserved `size`.
                    let dual_writable = unsafe { bio.dual_writable(size) };
                    if runs_contain(&st.merge_copied, chunk) && dual_writable && !self.dual_write_in_flight(chunk) {
                        // Back in the origin, not committed yet: write both.
                        self.track(bio, bio.per_bio_u64(ti), chunk, DUAL_WRITES);
                        drop(st);
                        self.dual_write(bio.defer(), size, self.cow_sector(new, sector));
                        return MapResult::Submitted;
                    }
                    // Wait until this chunk is back in the origin (or, if
                    // a dual write to it is in flight, until the commit).
                    st.merge_queue.push(bio.defer());
                    return MapResult::Submitted;
                }
                if write {
                    // The merge waits for writes to chunks it copies.
                    self.track(bio, bio.per_bio_u64(ti), chunk, st.track_gen);
                }
                drop(st);
                self.remap_to_cow(bio, new, sector);
                return MapResult::Remapped;
            }
        }
        drop(st);
        // Not (or no longer) in the snapshot: the origin holds the data.
        // SAFETY: By the type invariant the origin is held while the core
        // has an owner; a target that is not the owner holds the same
        // origin device itself (same device number: `entry`).
        unsafe { bio.set_bdev(self.origin) };
        if !write {
            return MapResult::Remapped;
        }
        // Other snapshots of the origin get their copies first.
        match self.entry.write(OriginBio::Mapping(bio)) {
            OriginOutcome::Proceed(_) => MapResult::Remapped,
            OriginOutcome::Queued => MapResult::Submitted,
        }
    }

    /// Smallest chunk size among the origin's snapshots, for the merge
    /// target's `max_io_len`.
    pub(crate) fn origin_min_chunk(&self) -> u32 {
        self.entry.min_chunk_sectors().unwrap_or(self.chunk.sectors())
    }

    /// Starts (or restarts) the merge of target `me` (`start_merge()`, on
    /// every resume). A merge that failed starts again (the store may work
    /// again), but the status keeps saying `Merge failed`, as upstream's.
    pub(crate) fn start_merge(self: &Arc<Self>, me: usize) {
        let mut st = self.state.lock();
        if st.owner != me {
            // Upstream's invalid snapshot-merge (see `merge_map`).
            drop(st);
            dm_err!("Snapshot is invalid: can't merge");
            return;
        }
        if !st.merging || st.merge_running {
            return;
        }
        if !st.merge_unsettled.is_empty() || st.merge_unsettled_lost {
            // A commit failed after the copy-back: the on-disk list is no
            // longer what the planner would read. Only a new activation,
            // which loads it again, may merge on.
            drop(st);
            dm_err!("Merge commit failed earlier: reactivate to merge on");
            return;
        }
        st.merge_failed_before |= st.merge_failed;
        st.merge_failed = false;
        st.merge_running = true;
        st.merge_stop = false;
        drop(st);
        if let Err(this) = dmsync::merge_queue().enqueue::<Arc<Self>, 1>(self.clone()) {
            // Cannot be queued already (merge_running was clear); be safe.
            this.state.lock().merge_running = false;
        }
    }

    /// Stops the merge of target `me` and waits until the current step is
    /// done (`stop_merge()`). A merge `me` does not own (it handed the
    /// store over) is not its to stop.
    pub(crate) fn stop_merge(&self, me: usize) {
        {
            let mut st = self.state.lock();
            if st.owner != me {
                return;
            }
            st.merge_stop = true;
        }
        while self.state.lock().merge_running {
            dmsync::sleep_ms(1);
        }
    }

    fn merge_failed_now(&self, why: &str) {
        self.merge_failed_with(why, &[]);
    }

    /// The merge failed while committing `unsettled`, runs copied back to
    /// the origin whose on-disk and in-memory state is now unknown.
    fn merge_failed_with(&self, why: &str, unsettled: &[MergeRun]) {
        dm_err!("{}", why);
        let mut st = self.state.lock();
        Self::record_unsettled(&mut st, unsettled);
        st.merge_failed = true;
        st.merge_window = KVec::new();
        st.merge_copied = KVec::new();
        let mut queued = st.merge_queue.take();
        drop(st);
        while let Some(bio) = queued.pop() {
            bio.fail();
        }
    }

    /// Adds `runs` to the unsettled runs (see `SnapState::merge_unsettled`).
    fn record_unsettled(st: &mut SnapState, runs: &[MergeRun]) {
        for run in runs {
            if st.merge_unsettled.push(*run, GFP_KERNEL).is_err() {
                st.merge_unsettled_lost = true;
            }
        }
        st.merge_unsettled.sort_unstable_by_key(|r| r.first_old());
    }

    /// The merge worker: copies the exceptions back to the origin, newest
    /// first, a batch at a time, until the store is empty
    /// (`snapshot_merge_next_chunks()` and `merge_callback()`).
    ///
    /// Pipelined: batch `i + 1` is planned and copied while the origin
    /// flush of batch `i` runs, and batch `i` is committed right after.
    /// Writes to a batch's chunks wait only while it is copied back; from
    /// then until its commit they go to both copies (`dual_write`).
    fn merge(self: &Arc<Self>) {
        let _noio = NoIoScope::enter();
        // Copies started before the snapshot became merging still commit
        // into the store: let them finish before the list starts to shrink.
        while self.in_flight.load(Ordering::Acquire) != 0 && !self.state.lock().merge_stop {
            dmsync::sleep_ms(1);
        }
        // Large runs are copied through one bounce buffer with big dm-io
        // requests; without it (no memory) kcopyd copies everything.
        let mut copier = BounceCopier::new().ok();
        if let Some(mut planner) = self.merge_planner() {
            self.merge_batches(&mut planner, copier.as_mut());
        }
        drop(copier);
        self.merge_stopped();
    }

    /// Merges batch after batch until done, stopped or failed.
    fn merge_batches(&self, planner: &mut MergePlanner, mut copier: Option<&mut BounceCopier>) {
        let mut budget = MergeBudget::new(self.chunk, self.state.lock().merge_io);
        let mut pace = MergePace::default();
        // The batch copied last, not committed yet (its flush, if any, is
        // waited for before this returns: `PendingFlush`).
        let mut copied: Option<CopiedBatch> = None;
        let mut failed = None;
        // SAFETY: Reads a module parameter.
        let always = unsafe { crate::dm::bindings::dmsnap_test_merge_pipeline() };
        loop {
            // Writes wait for the copied batch: commit it before planning
            // (with the busy limits) rather than keep them waiting through
            // the next one too. Likewise before a pause (`MergePace`).
            let pause = budget.limit.runs.is_some() && pace.due_in_us() > 0;
            if copied.is_some() && !always && (pause || !self.state.lock().merge_queue.is_empty()) {
                if let Some(prev) = copied.take() {
                    if !self.finish_merge_batch(prev, None, &mut budget) {
                        return;
                    }
                }
            }
            if budget.limit.runs.is_some() {
                pace.wait();
            }
            let mut next = match self.open_merge_batch(planner, &budget, copied.as_ref()) {
                Ok(Some(next)) => {
                    pace.started(next.batch.runs.len());
                    next
                }
                Ok(None) => break,
                Err(why) => {
                    failed = Some(why);
                    break;
                }
            };
            let copy_ok = next.plans.is_empty() || self.copy_back(&next.plans, copier.as_deref_mut());
            if copy_ok {
                next.held = self.batch_copied(&next, copied.as_ref());
            }
            if let Some(prev) = copied.take() {
                if !self.finish_merge_batch(prev, next.window.take(), &mut budget) {
                    // Failed: the writes held for `next` were failed too.
                    return;
                }
            }
            if !copy_ok {
                self.merge_failed_now("Read error: shutting down merge.");
                return;
            }
            // Writes to it no longer wait for its commit (`batch_copied`):
            // it is committed after the next one is copied.
            copied = Some(self.start_origin_flush(next, copier.as_deref().map(|c| &c.io)));
        }
        // The writes held for the last copied batch go (even if the next
        // one could not be planned).
        if let Some(prev) = copied.take() {
            self.finish_merge_batch(prev, None, &mut budget);
        }
        if let Some(why) = failed {
            self.merge_failed_now(why);
        }
    }

    /// The merge worker is done (it may be queued again).
    fn merge_stopped(&self) {
        self.state.lock().merge_running = false;
    }

    /// A planner from the committed state; `None` if there is nothing to
    /// plan (a transient store, no metadata client) or it failed.
    fn merge_planner(&self) -> Option<MergePlanner> {
        let meta_guard = self.meta.lock();
        let meta = meta_guard.as_ref()?;
        let p = match &self.state.lock().cursor {
            Cursor::Persistent(p) => *p,
            Cursor::Transient(_) => return None,
        };
        match meta.merge_planner(p) {
            Ok(planner) => Some(planner),
            Err(e) => {
                drop(meta_guard);
                self.merge_failed_now(e.message());
                None
            }
        }
    }

    /// Plans the next batch and makes writes to its chunks wait: `None`
    /// when the merge is done or stopped, the message it fails with if it
    /// cannot go on. `copied`, the batch copied before (not yet
    /// committed), keeps its chunks in the window.
    fn open_merge_batch(
        &self,
        planner: &mut MergePlanner,
        budget: &MergeBudget,
        copied: Option<&CopiedBatch>,
    ) -> Result<Option<OpenBatch>, &'static str> {
        {
            let st = self.state.lock();
            if st.merge_stop || st.merge_failed {
                return Ok(None);
            }
            if !st.valid {
                drop(st);
                dm_err!("Snapshot is invalid: can't merge");
                return Ok(None);
            }
        }
        let planned = match self.meta.lock().as_mut() {
            Some(meta) => {
                let max_runs = budget.limit.runs.map_or(usize::MAX, |r| r as usize);
                meta.plan_merge_batch(planner, budget.limit.chunks, max_runs)
            }
            None => return Ok(None),
        };
        let batch = match planned {
            Ok(Some(batch)) => batch,
            Ok(None) => return Ok(None),
            Err(e) => return Err(e.message()),
        };

        // The copies, and the window they cover (sorted for lookups); with
        // a copied batch still in the window, the union of both.
        let origin_sectors = self.origin_sectors();
        let mut plans: KVec<CopyPlan> = KVec::new();
        let mut window: KVec<MergeRun> = KVec::new();
        let mut union: KVec<MergeRun> = KVec::new();
        let mut ok = true;
        for run in batch.runs.iter() {
            ok &= window.push(*run, GFP_KERNEL).is_ok()
                && run.copy_plan(self.chunk, origin_sectors).map_or(true, |p| plans.push(p, GFP_KERNEL).is_ok());
        }
        if let Some(prev) = copied {
            for run in Iterator::chain(prev.open.batch.runs.iter(), batch.runs.iter()) {
                ok &= union.push(*run, GFP_KERNEL).is_ok();
            }
        }
        if !ok {
            return Err("Out of memory: shutting down merge");
        }
        window.sort_unstable_by_key(|r| r.first_old());
        union.sort_unstable_by_key(|r| r.first_old());

        // Other snapshots copy these origin chunks out first (nothing to do
        // without copies).
        self.entry.prepare_extents(&plans);
        let buckets = Self::window_buckets(&window);
        // Writes to the COW copies tracked in the other generation were
        // sent before the previous batch set its window; none are added.
        let gen = self.state.lock().track_gen;
        self.wait_tracked(1 - gen, u64::MAX);
        // From now on writes to the window wait, and the others count in
        // the other generation: `gen`'s counters only go down.
        let window = {
            let mut st = self.state.lock();
            st.track_gen = 1 - gen;
            if copied.is_some() {
                st.merge_window = union;
                Some(window)
            } else {
                st.merge_window = window;
                None
            }
        };
        if !plans.is_empty() {
            // Writes already sent to the COW copies of the window finish
            // (upstream's `__check_for_conflicting_io()`): only those
            // sent before the window was set, so a steady stream of writes
            // elsewhere cannot hold the merge up.
            self.wait_tracked(gen, buckets);
        }
        Ok(Some(OpenBatch { batch, plans, window, held: false }))
    }

    /// Starts, with `io`, the origin flush that must precede `open`'s
    /// commit. `io` must outlive the returned batch.
    fn start_origin_flush(&self, open: OpenBatch, io: Option<&DmIoClient>) -> CopiedBatch {
        let mut flush = None;
        if let (false, Some(io), Ok(countdown)) = (open.plans.is_empty(), io, IoCountdown::new()) {
            // SAFETY: By the type invariant the origin stays open until
            // `shutdown`, which stops the merge first; the flush is waited
            // for before the batch is gone (`PendingFlush`).
            if unsafe { io.start_flush(self.origin, &countdown) }.is_ok() {
                flush = Some(PendingFlush(Some(countdown)));
            } else {
                // Not started: the commit flushes synchronously.
                let _ = countdown.wait();
            }
        }
        CopiedBatch { open, flush }
    }

    /// Commits a copied batch: waits for its origin flush, shrinks the
    /// on-disk list and makes that durable before any write to its chunks
    /// reaches the origin (an entry that came back after a crash would
    /// merge its old data over such a write), then releases the writes
    /// held for it. `next_window`, the window of the batch copied after
    /// it, stays in place. `false` if the merge failed.
    fn finish_merge_batch(&self, copied: CopiedBatch, next_window: Option<KVec<MergeRun>>, budget: &mut MergeBudget) -> bool {
        // SAFETY: Reads a module parameter (0 outside KUnit kernels).
        let delay = unsafe { crate::dm::bindings::dmsnap_test_merge_commit_delay_ms() };
        if delay != 0 {
            dmsync::sleep_ms(delay);
        }
        let CopiedBatch { open, flush } = copied;
        let mut batch = open.batch;
        if !open.plans.is_empty() {
            // The origin must hold the data before the exceptions go (the
            // 2021 merge data-loss fix). A failed flush is not retried: the
            // data it should have made durable may be gone, and a second
            // flush would not say so.
            let flushed = match flush {
                Some(flush) => flush.wait(),
                // SAFETY: By the type invariant the origin is held.
                None => unsafe { self.origin.flush() }.is_ok(),
            };
            if !flushed {
                self.merge_failed_now("Flush after merge failed: shutting down merge");
                return false;
            }
        }

        let mut meta_guard = self.meta.lock();
        let Some(meta) = meta_guard.as_mut() else {
            return false;
        };
        let written = meta.commit_merge_batch(&mut batch).is_ok()
            // SAFETY: By the type invariant the COW is held.
            && unsafe { self.cow.flush() }.is_ok();
        drop(meta_guard);
        if !written {
            self.merge_failed_with("Write error in exception store: shutting down merge", &batch.runs);
            return false;
        }
        let mut st = self.state.lock();
        let io = st.merge_io;
        let committed = match &mut st.cursor {
            Cursor::Persistent(p) => p.commit_merge_to(batch.end.0, batch.end.1).is_ok(),
            Cursor::Transient(_) => false,
        };
        let mut removed = true;
        for run in batch.runs.iter() {
            removed &= st.table.remove_range(run.first_old(), u64::from(run.count())).is_ok();
        }
        if !committed || !removed {
            // Before the lock drops: no write may reach a COW copy only.
            Self::record_unsettled(&mut st, &batch.runs);
        }
        st.merge_window = next_window.unwrap_or_default();
        // The runs still copied are those of the next batch, if it was.
        let mut still: KVec<MergeRun> = KVec::new();
        let mut ok = true;
        for run in st.merge_copied.iter() {
            if runs_contain(&st.merge_window, run.first_old()) {
                ok &= still.push(*run, GFP_KERNEL).is_ok();
            }
        }
        // Without memory, writes to the next batch wait for its commit.
        st.merge_copied = if ok { still } else { KVec::new() };
        // Writes held for this batch go; those for the next one stay.
        let mut queued = st.merge_queue.take();
        let mut released = BioList::new();
        while let Some(bio) = queued.pop() {
            let chunk = self.chunk.sector_to_chunk(bio.view().sector());
            if runs_contain(&st.merge_window, chunk) {
                st.merge_queue.push(bio);
            } else {
                released.push(bio);
            }
        }
        drop(st);
        if !committed || !removed {
            // As upstream's merge_callback: the writes held for the batch
            // fail (they would go to the origin only, while the table may
            // still send reads of their chunks to the COW copies).
            while let Some(bio) = released.pop() {
                bio.fail();
            }
            self.merge_failed_now("Corrupt exception store: shutting down merge");
        }
        let merged = batch.runs.iter().map(|r| u64::from(r.count())).sum();
        budget.adapt(merged, open.held || !released.is_empty(), io);
        // These writes target merged chunks: the origin holds them now, and
        // the other snapshots already have their copies.
        while let Some(bio) = released.pop() {
            bio.submit();
        }
        committed && removed
    }

    /// Writes `bio`, pointed at a chunk of the origin that is copied back
    /// but not committed, to that chunk's COW copy at `cow_sector` first,
    /// then to the origin. Until the commit a crash merges the COW copy
    /// again, so it must have the write too; afterwards the origin is the
    /// chunk. Writes that are not plain data writes wait for the commit
    /// (callers check [`Bio::dual_writable`] with the same `size`).
    fn dual_write(&self, bio: OwnedBio, size: u32, cow_sector: u64) {
        // SAFETY: `bio` is a clone of the merge target, which reserved
        // `size` bytes; by the type invariant the COW stays open until
        // `shutdown`, after dm core has waited for the target's bios.
        if let Err(bio) = unsafe { bio.dual_write(size, self.cow, cow_sector) } {
            // Cannot happen (checked by the caller); never write one copy.
            dm_err!("internal error: merge write could not go to both copies; failing it");
            bio.fail();
        }
    }

    /// The runs of `open` (and of `prev`, copied before it and not yet
    /// committed) are back in the origin: from now on writes to them go to
    /// both copies, and those held while they were copied go now. Returns
    /// whether any write was held.
    fn batch_copied(&self, open: &OpenBatch, prev: Option<&CopiedBatch>) -> bool {
        let prev_runs = prev.map_or(&[][..], |p| &p.open.batch.runs[..]);
        let mut copied: KVec<MergeRun> = KVec::new();
        let mut ok = true;
        for run in Iterator::chain(prev_runs.iter(), open.batch.runs.iter()) {
            ok &= copied.push(*run, GFP_KERNEL).is_ok();
        }
        copied.sort_unstable_by_key(|r| r.first_old());
        let mut st = self.state.lock();
        let held = !st.merge_queue.is_empty();
        // SAFETY: The owner's target is alive while stored in `ti`.
        let size = st.ti.map_or(0, |ti| unsafe { ti.per_io_data_size() });
        if !ok || size == 0 {
            // The held writes wait for the commit, as before.
            return held;
        }
        st.merge_copied = copied;
        let mut queued = st.merge_queue.take();
        let mut release = BioList::new();
        while let Some(bio) = queued.pop() {
            let chunk = self.chunk.sector_to_chunk(bio.view().sector());
            // SAFETY: Queued bios are clones of the owner's target (the
            // owner cannot change while the merge runs).
            let dual_writable = unsafe { bio.view().dual_writable(size) };
            if runs_contain(&st.merge_copied, chunk) && dual_writable && !self.dual_write_in_flight(chunk) {
                // SAFETY: As above.
                self.track(bio.view(), unsafe { bio.view().per_bio_u64_sized(size) }, chunk, DUAL_WRITES);
                release.push(bio);
            } else {
                st.merge_queue.push(bio);
            }
        }
        drop(st);
        while let Some(bio) = release.pop() {
            let sector = bio.view().sector();
            // Only this worker's commit removes the exceptions of the window.
            let new = self.state.lock().table.lookup(self.chunk.sector_to_chunk(sector));
            match new {
                Some(new) => self.dual_write(bio, size, self.cow_sector(new, sector)),
                None => {
                    dm_err!("internal error: merging chunk without exception; failing the write");
                    bio.fail();
                }
            }
        }
        held
    }

    /// Whether a dual write to a chunk of `chunk`'s bucket is in flight
    /// (caller holds the state lock, under which dual writes start). Dual
    /// writes to one chunk must not overlap: two could land in different
    /// orders on the COW copy and the origin, and a read would then change
    /// at the commit. A write that meets one waits for the commit.
    fn dual_write_in_flight(&self, chunk: Chunk) -> bool {
        self.tracked
            .get(DUAL_WRITES * TRACK_BUCKETS + Self::track_bucket(chunk))
            .is_some_and(|c| c.load(Ordering::Acquire) != 0)
    }

    /// The tracked-write buckets the origin chunks of `window` hash to.
    fn window_buckets(window: &[MergeRun]) -> u64 {
        let mut buckets = 0u64;
        for run in window {
            if u64::from(run.count()) >= TRACK_BUCKETS as u64 {
                return u64::MAX;
            }
            for c in run.first_old()..=run.last_old() {
                buckets |= 1u64 << Self::track_bucket(c);
            }
        }
        buckets
    }

    /// Copies the batch back to the origin; whether every copy succeeded.
    ///
    /// Small runs (a randomly filled COW) all go to kcopyd at once. Large
    /// ones (a sequentially filled COW) go through `copier`, which moves up
    /// to `BOUNCE_BYTES` per dm-io request while kcopyd's jobs run: kcopyd
    /// splits every job into 64 KiB reads and writes, which caps the merge
    /// far below the disks' copy bandwidth.
    fn copy_back(&self, plans: &[CopyPlan], mut copier: Option<&mut BounceCopier>) -> bool {
        let Ok(done) = Countdown::new() else {
            return false;
        };
        let bounce = |p: &CopyPlan| p.sectors >= BOUNCE_MIN_SECTORS;
        let mut ok = true;
        let kc = self.kcopyd.lock();
        for plan in plans {
            if copier.is_some() && bounce(plan) {
                continue;
            }
            let Some(kc) = kc.as_ref() else {
                ok = false;
                break;
            };
            done.add();
            // SAFETY: By the type invariant both devices stay open until
            // `shutdown`, which stops the merge first.
            let r = unsafe {
                kc.copy(
                    &Region::new(self.cow, plan.src, plan.sectors),
                    &[Region::new(self.origin, plan.dest, plan.sectors)],
                    CopyFlags::default(),
                    done.clone(),
                )
            };
            if r.is_err() {
                done.done(false);
                ok = false;
                break;
            }
        }
        drop(kc);
        if let Some(copier) = copier.as_mut() {
            if ok {
                let total = plans.iter().filter(|p| bounce(p)).map(|p| p.sectors).sum();
                let stopping = || self.state.lock().merge_stop;
                ok = copier.copy(self.cow, self.origin, total, plans.iter().filter(|p| bounce(p)), &stopping).is_ok();
            }
        }
        done.done(ok);
        done.wait()
    }
}

/// A planned merge batch whose chunks are in the window.
struct OpenBatch {
    batch: MergeBatch,
    /// Its copies (runs past the origin's end have none).
    plans: KVec<CopyPlan>,
    /// Its own window, sorted, while the window holds the union with the
    /// batch before it (installed when that one is committed).
    window: Option<KVec<MergeRun>>,
    /// Writes waited for its copy.
    held: bool,
}

/// A merge batch copied back to the origin, not yet committed.
struct CopiedBatch {
    open: OpenBatch,
    /// The origin flush started after the copies (`None`: flush
    /// synchronously at the commit).
    flush: Option<PendingFlush>,
}

/// A flush in flight. Dropping it waits for it: the device and the dm-io
/// client it uses must outlive it.
struct PendingFlush(Option<Arc<IoCountdown>>);

impl PendingFlush {
    /// Waits; whether the flush succeeded.
    fn wait(mut self) -> bool {
        self.0.take().is_some_and(IoCountdown::wait)
    }
}

impl Drop for PendingFlush {
    fn drop(&mut self) {
        if let Some(countdown) = self.0.take() {
            let _ = countdown.wait();
        }
    }
}

/// Copies through two bounce buffers with large dm-io requests (dm-io
/// splits each into bios of up to 1 MiB, all in flight together): step
/// `i + 1` is read into one buffer while step `i` is written from the
/// other, so a copy moves at about the slower device's speed rather than
/// at half of it (read, then write).
struct BounceCopier {
    io: DmIoClient,
    bufs: [IoBuffer; 2],
}

/// Bytes of one step (each of the two buffers).
const BOUNCE_BYTES: usize = 2 << 20;
/// Runs of at least this many sectors (256 KiB) use the bounce copier.
const BOUNCE_MIN_SECTORS: u64 = 512;

impl BounceCopier {
    fn new() -> Result<Self> {
        Ok(Self { io: DmIoClient::new()?, bufs: [IoBuffer::new(BOUNCE_BYTES)?, IoBuffer::new(BOUNCE_BYTES)?] })
    }

    /// Copies every plan, `total` sectors in all, from `from` to `to`.
    /// The devices must stay open during the call (the merge worker's
    /// caller holds them).
    fn copy<'a>(
        &mut self,
        from: BdevHandle,
        to: BdevHandle,
        total: u64,
        plans: impl Iterator<Item = &'a CopyPlan>,
        stopping: &dyn Fn() -> bool,
    ) -> Result {
        // At least four steps (of 256 KiB or more) when there is little to
        // copy, so that reads and writes still overlap: a batch held short
        // because writes wait for it is often a single 1 MiB run.
        let step = (total / 4).clamp(BOUNCE_MIN_SECTORS, (BOUNCE_BYTES / 512) as u64);
        let [b0, b1] = &mut self.bufs;
        // The step read last (its destination and the buffer holding it).
        let mut pending: Option<(Region, bool)> = None;
        let mut into_b1 = false;
        for plan in plans {
            let mut done = 0;
            while done < plan.sectors {
                let n = (plan.sectors - done).min(step);
                let started = Ktime::ktime_get();
                let countdown = IoCountdown::new()?;
                let (read_buf, write_buf) = if into_b1 { (&mut *b1, &mut *b0) } else { (&mut *b0, &mut *b1) };
                // SAFETY: `countdown.wait()` below returns once both
                // requests completed, so both buffers (borrowed here)
                // outlive them; the devices are held (see above).
                let mut r = unsafe {
                    self.io.start(&Region::new(from, plan.src + done, n), bindings::req_op_REQ_OP_READ, read_buf, 0, &countdown)
                };
                if let Some((dest, _)) = pending.take() {
                    // SAFETY: As above; the previous step's buffer is the
                    // one not being read into.
                    let w = unsafe { self.io.start(&dest, bindings::req_op_REQ_OP_WRITE, write_buf, 0, &countdown) };
                    r = r.and(w);
                }
                let ok = countdown.wait();
                r?;
                if !ok {
                    return Err(EIO);
                }
                throttle_after(started, stopping);
                pending = Some((Region::new(to, plan.dest + done, n), into_b1));
                into_b1 = !into_b1;
                done += n;
            }
        }
        if let Some((dest, in_b1)) = pending {
            let buf = if in_b1 { b1 } else { b0 };
            self.io.sync_io(&dest, bindings::req_op_REQ_OP_WRITE, buf)?;
        }
        Ok(())
    }
}

/// Idles after a bounce copy step begun at `started`, so that the merge's
/// copies keep to `snapshot_copy_throttle` percent of the time, as its
/// kcopyd copies do (kcopyd throttles only its own jobs). Cut short once
/// `stopping` says the merge is asked to stop (a suspend waits for it).
fn throttle_after(started: Ktime, stopping: &dyn Fn() -> bool) {
    let busy_us = u64::try_from((Ktime::ktime_get() - started).to_ns() / 1000).unwrap_or(0);
    let mut idle_us = throttle_idle_us(busy_us, crate::dm::kcopyd::copy_throttle_pct());
    while idle_us != 0 && !stopping() {
        let slice = idle_us.min(THROTTLE_SLICE_US);
        // `slice` fits: at most THROTTLE_SLICE_US.
        let slice_u32 = u32::try_from(slice).unwrap_or(u32::MAX);
        dmsync::sleep_range_us(slice_u32, slice_u32.saturating_add(500));
        idle_us -= slice;
    }
}

/// The copy throttle's idle time is slept in slices of at most this long,
/// checking for a stop in between.
const THROTTLE_SLICE_US: u64 = 20_000;

/// Most data merged per batch: one origin flush and one commit per batch.
const MERGE_BATCH_BYTES: usize = 16 << 20;
/// The first batch's size: what writes wait for at most while they wait
/// for batches. The first origin flush syncs whatever the origin had
/// cached; the next batch is copied meanwhile.
const MERGE_BATCH_START_BYTES: usize = MERGE_BUSY_BYTES;
/// Least data merged per batch (one chunk if chunks are larger).
const MERGE_BATCH_MIN_BYTES: usize = 32 << 10;
/// Largest batch while writes wait for batches (they wait for its copy
/// only; 1 MiB and 2 MiB merged a sequential COW under fio at 1.0x and
/// 1.5x upstream, 4 MiB at 2.4x, with fio at 0.9x, 0.9x and 0.7x).
const MERGE_BUSY_BYTES: usize = 4 << 20;
/// Most runs in a batch while writes wait for batches.
const MERGE_BUSY_RUNS: u32 = 8;
/// Most runs in a batch while the merging device serves other I/O.
const MERGE_ACTIVE_RUNS: u32 = 16;
/// Batches grow again only once no write waited for this long, and have
/// any number of runs once the device has had no I/O for this long.
const MERGE_CALM_MS: i64 = 1000;
/// While the merging device serves other I/O, the merge starts batches at
/// most one run per this many microseconds apart on average (at most
/// 1000 copies a second). Each batch costs the disks two cache flushes,
/// and each run one read and one write: a randomly filled COW, merged in
/// batches of single-chunk runs as fast as the disks go, crowds out the
/// device's own I/O. A sequentially filled COW's runs are long, and its
/// batches take longer than this anyway.
const MERGE_RUN_INTERVAL_US: i64 = 1000;

/// Paces merge batches while the merging device serves other I/O
/// ([`MERGE_RUN_INTERVAL_US`]).
#[derive(Default)]
struct MergePace {
    /// When the last batch started, and its number of runs.
    last: Option<(Ktime, usize)>,
}

impl MergePace {
    /// A batch of `runs` runs starts now.
    fn started(&mut self, runs: usize) {
        self.last = Some((Ktime::ktime_get(), runs));
    }

    /// Microseconds until the next batch may start.
    fn due_in_us(&self) -> i64 {
        let Some((start, runs)) = self.last else {
            return 0;
        };
        let elapsed_us = (Ktime::ktime_get() - start).to_ns() / 1000;
        pace_delay_us(runs, MERGE_RUN_INTERVAL_US, elapsed_us)
    }

    /// Sleeps until the next batch may start.
    fn wait(&self) {
        let left = u32::try_from(self.due_in_us()).unwrap_or(u32::MAX);
        if left > 0 {
            dmsync::sleep_range_us(left, left.saturating_add(left / 8));
        }
    }
}

/// The limits of the next merge batch ([`BatchSizing`]): batches grow
/// while no write waits for them; once one does, they stay at
/// `MERGE_BUSY_BYTES` and `MERGE_BUSY_RUNS` until no write has waited for
/// `MERGE_CALM_MS`. Meanwhile, while the merging device serves I/O,
/// batches have at most `MERGE_ACTIVE_RUNS` runs.
struct MergeBudget {
    limit: BatchLimit,
    load: MergeLoad,
    sizing: BatchSizing,
    last_wait: Option<Ktime>,
    last_io: Option<Ktime>,
    /// `SnapState::merge_io` when the last batch was committed.
    io_seen: u64,
}

impl MergeBudget {
    fn new(chunk: ChunkSize, io_seen: u64) -> Self {
        let per = chunk.bytes().max(1);
        let min = (MERGE_BATCH_MIN_BYTES / per).max(1) as u64;
        let max = (MERGE_BATCH_BYTES / per).max(1) as u64;
        let start = (MERGE_BATCH_START_BYTES / per).max(1) as u64;
        let busy_chunks = (MERGE_BUSY_BYTES / per).max(1) as u64;
        let sizing =
            BatchSizing { min, max, busy_chunks, busy_runs: MERGE_BUSY_RUNS, active_runs: MERGE_ACTIVE_RUNS };
        // The first batch is run-limited as on an active device: on a
        // randomly filled COW, 4 MiB would be 1024 copies in flight before
        // the merge can tell whether writes wait for it.
        let limit = BatchLimit { chunks: start.clamp(min, max), runs: Some(MERGE_ACTIVE_RUNS) };
        Self { limit, load: MergeLoad::Idle, sizing, last_wait: None, last_io: None, io_seen }
    }

    /// The batch of `chunks` chunks is done: `waited` if writes were held
    /// back by it; `io` is `SnapState::merge_io` now.
    fn adapt(&mut self, chunks: u64, waited: bool, io: u64) {
        let now = Ktime::ktime_get();
        if waited {
            self.last_wait = Some(now);
        }
        if io != self.io_seen {
            self.io_seen = io;
            self.last_io = Some(now);
        }
        let ago = |t: Option<Ktime>| t.map(|t| ktime_ms_delta(now, t));
        self.load = MergeLoad::from_recent(ago(self.last_wait), ago(self.last_io), MERGE_CALM_MS);
        // A batch cut short (end of the list, run limit) does not shrink
        // the next one.
        self.limit = self.sizing.next(chunks.max(self.limit.chunks), self.load);
    }
}

impl WorkItem<1> for SnapCore {
    type Pointer = Arc<SnapCore>;

    fn run(this: Arc<SnapCore>) {
        this.merge();
    }
}

/// The first element of an ordered map, as owned values.
fn first(order: &mut RBTree<u64, Chunk>) -> Option<(u64, Chunk)> {
    let cursor = order.cursor_front()?;
    let (k, v) = cursor.current();
    Some((*k, *v))
}

impl WorkItem for SnapCore {
    type Pointer = Arc<SnapCore>;

    fn run(this: Arc<SnapCore>) {
        this.commit();
    }
}

/// A discard waiting for the zeroing of its COW chunk.
struct ZeroJob {
    bio: Exclusive<Option<OwnedBio>>,
}

impl CopyCallback for ZeroJob {
    fn copy_done(this: Arc<Self>, read_err: bool, write_err: u64) {
        // kcopyd hands back the only reference.
        let Some(mut job) = Arc::into_unique_or_drop(this) else {
            return;
        };
        if let Some(bio) = job.as_mut().get_mut().bio.get_mut().take() {
            if read_err || write_err != 0 {
                bio.fail();
            } else {
                bio.complete();
            }
        }
    }
}

/// Context of one kcopyd copy: the snapshots (and their origin chunks)
/// whose pending exceptions it fills.
struct CopyJob {
    /// Per destination: the snapshot, its first origin chunk and count.
    members: [Option<(Arc<SnapCore>, Chunk, u32)>; MAX_COPY_DESTS],
}

impl CopyJob {
    fn single(snap: Arc<SnapCore>, chunk: Chunk) -> Self {
        let mut members: [Option<(Arc<SnapCore>, Chunk, u32)>; MAX_COPY_DESTS] = Default::default();
        if let Some(slot) = members.first_mut() {
            *slot = Some((snap, chunk, 1));
        }
        Self { members }
    }
}

impl CopyCallback for CopyJob {
    fn copy_done(this: Arc<Self>, read_err: bool, write_err: u64) {
        for (i, member) in this.members.iter().enumerate() {
            if let Some((snap, chunk, count)) = member {
                // Destination `i` is member `i` (see `CopyGroup::start`).
                let ok = !read_err && write_err & (1u64 << i) == 0;
                snap.copies_done(*chunk, *count, ok);
            }
        }
    }
}

/// Destinations of one kcopyd job (`DM_KCOPYD_MAX_REGIONS`).
pub(crate) const MAX_COPY_DESTS: usize = 8;

/// Runs of new exceptions one origin write makes in one snapshot.
const MAX_NEW_RUNS: usize = 8;

/// New exceptions for consecutive origin chunks `chunk ..` on consecutive
/// COW chunks `new ..`: one copy.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct NewRun {
    /// First origin chunk.
    pub(crate) chunk: Chunk,
    /// First COW chunk.
    pub(crate) new: Chunk,
    /// Chunks in the run.
    pub(crate) count: u32,
}

/// The new exceptions of one origin write in one snapshot
/// ([`SnapCore::origin_cow_range`]), at most `MAX_NEW_RUNS` runs.
pub(crate) struct NewRuns {
    runs: [NewRun; MAX_NEW_RUNS],
    len: usize,
}

impl NewRuns {
    /// No runs.
    pub(crate) fn new() -> Self {
        Self { runs: [NewRun::default(); MAX_NEW_RUNS], len: 0 }
    }

    /// The runs.
    pub(crate) fn iter(&self) -> impl Iterator<Item = NewRun> + '_ {
        self.runs.iter().take(self.len).copied()
    }

    fn is_full(&self) -> bool {
        self.len >= MAX_NEW_RUNS
    }

    /// If full, the first origin sector after the last run (where a
    /// further [`SnapCore::origin_cow_range`] call carries on).
    pub(crate) fn resume_sector(&self, chunk: ChunkSize) -> Option<u64> {
        if !self.is_full() {
            return None;
        }
        let last = self.runs.get(self.len.checked_sub(1)?)?;
        chunk.chunk_to_sector(last.chunk.checked_add(u64::from(last.count))?)
    }

    /// Adds `chunk -> new`, extending the last run if it continues it.
    fn push(&mut self, chunk: Chunk, new: Chunk) {
        if let Some(last) = self.len.checked_sub(1).and_then(|i| self.runs.get_mut(i)) {
            let k = u64::from(last.count);
            if last.chunk + k == chunk && last.new + k == new && last.count < u32::MAX {
                last.count += 1;
                return;
            }
        }
        if let Some(slot) = self.runs.get_mut(self.len) {
            *slot = NewRun { chunk, new, count: 1 };
            self.len += 1;
        }
    }
}

/// Copies that several snapshots of the same chunk size need of the same
/// origin chunks: the origin is read once and written to every COW in one
/// kcopyd job. Upstream starts one job, and so one origin read, per
/// snapshot and chunk.
pub(crate) struct CopyGroup {
    members: [Option<(Arc<SnapCore>, NewRun)>; MAX_COPY_DESTS],
    len: usize,
}

impl CopyGroup {
    /// An empty group.
    pub(crate) fn new() -> Self {
        Self { members: Default::default(), len: 0 }
    }

    /// Adds `snap`'s new exceptions `run` (from
    /// [`SnapCore::origin_cow_range`]). A run that cannot share the job
    /// (other chunks or chunk size, or the group is full) starts the group
    /// first.
    pub(crate) fn add(&mut self, snap: &Arc<SnapCore>, run: NewRun) {
        let fits = match self.members.first() {
            Some(Some((first, r))) => {
                first.chunk.sectors() == snap.chunk.sectors()
                    && r.chunk == run.chunk
                    && r.count == run.count
                    && self.len < MAX_COPY_DESTS
            }
            _ => true,
        };
        if !fits {
            self.start();
        }
        if let Some(slot) = self.members.get_mut(self.len) {
            *slot = Some((snap.clone(), run));
            self.len += 1;
        } else {
            // Cannot happen: a full group was started above.
            snap.copies_done(run.chunk, run.count, false);
        }
    }

    /// Starts the copy (if any) and empties the group: small copies go to
    /// the origin's [`Gatherer`](super::gather::Gatherer), the rest straight to kcopyd.
    pub(crate) fn start(&mut self) {
        if self.len == 0 {
            return;
        }
        let _noio = NoIoScope::enter();
        let mut members: [Option<(Arc<SnapCore>, NewRun)>; MAX_COPY_DESTS] = Default::default();
        core::mem::swap(&mut members, &mut self.members);
        self.len = 0;
        let fail_all = |members: &[Option<(Arc<SnapCore>, NewRun)>], ok: bool| {
            for (snap, run) in members.iter().flatten() {
                snap.copies_done(run.chunk, run.count, ok);
            }
        };
        let Some(Some((first, run))) = members.first() else {
            return;
        };
        let (first, run) = (first.clone(), *run);
        let Some((src, sectors)) = first.chunk.clip_extent(run.chunk, u64::from(run.count), first.origin_sectors())
        else {
            // Nothing of the origin lies in these chunks: nothing to copy.
            fail_all(&members, true);
            return;
        };
        let mut dests = [Region::new(first.cow, 0, 0); MAX_COPY_DESTS];
        let mut job = CopyJob { members: Default::default() };
        let mut n = 0;
        for (snap, run) in members.iter().flatten() {
            match (snap.chunk.chunk_to_sector(run.new), dests.get_mut(n), job.members.get_mut(n)) {
                (Some(dst), Some(region), Some(slot)) => {
                    *region = Region::new(snap.cow, dst, sectors);
                    *slot = Some((snap.clone(), run.chunk, run.count));
                    n += 1;
                }
                _ => snap.copies_done(run.chunk, run.count, false),
            }
        }
        if n == 0 {
            return;
        }
        let Ok(job) = Arc::new(job, GFP_KERNEL) else {
            fail_all(&members, false);
            return;
        };
        let copy = OriginCopy { src: Region::new(first.origin, src, sectors), dests, ndests: n, job, first };
        let gatherer = copy.first.entry.gatherer().clone();
        gatherer.submit(copy);
    }
}

/// A copy of a run of origin chunks to up to [`MAX_COPY_DESTS`] COWs,
/// ready to start ([`CopyGroup::start`]).
pub(crate) struct OriginCopy {
    src: Region,
    dests: [Region; MAX_COPY_DESTS],
    ndests: usize,
    job: Arc<CopyJob>,
    /// The snapshot whose kcopyd client copies it if it goes to kcopyd
    /// (also the first member of `job`).
    first: Arc<SnapCore>,
}

impl OriginCopy {
    /// The origin sectors to copy.
    pub(crate) fn source(&self) -> &Region {
        &self.src
    }

    /// Where they go, one region per COW.
    pub(crate) fn dests(&self) -> &[Region] {
        self.dests.get(..self.ndests).unwrap_or(&[])
    }

    /// Copies with kcopyd, which reports errors per destination.
    pub(crate) fn start_kcopyd(self) {
        let kc = self.first.kcopyd.lock();
        let started = match kc.as_ref() {
            // SAFETY: The origin and every destination COW stay open until
            // the job's callback ran: each member's `shutdown` waits for its
            // exceptions (completed by that callback), and the client's owner
            // `first` destroys the client (waiting for the job) in its own
            // `shutdown` (type invariant of `SnapCore`).
            Some(kc) => unsafe { kc.copy(&self.src, self.dests(), CopyFlags::default(), self.job.clone()) },
            None => Err(ENODEV),
        };
        drop(kc);
        if started.is_err() {
            CopyJob::copy_done(self.job, true, 0);
        }
    }

    /// The copy was done (by the gatherer) without an error.
    pub(crate) fn finished(self) {
        CopyJob::copy_done(self.job, false, 0);
    }
}
