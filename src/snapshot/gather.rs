// SPDX-License-Identifier: GPL-2.0

//! Gathered copy-out: the small copies that concurrent origin writes need
//! are queued per origin and done in batches by one worker.
//!
//! A batch reads every source into one buffer (consecutive slots), then
//! writes each destination range that is contiguous both on its COW and in
//! the buffer with one request. A snapshot allocates its COW chunks one
//! after another, so the copies of k concurrent 4 KiB writes to an origin
//! with N snapshots take k reads and about N writes; upstream issues k * N
//! kcopyd jobs (k * N reads and k * N writes).
//!
//! Copies with one destination go straight to kcopyd: a gathered batch
//! reads every source before it writes anything, while kcopyd writes each
//! copy as soon as its read is done; with one destination that outweighs
//! the joined COW writes (measured: NOTES.md, "Gather"). So do copies larger than [`GATHER_MAX_SECTORS`] (sequential
//! writes, already copied in runs), and everything while
//! `snapshot_copy_throttle` is set (kcopyd implements the throttle) or if
//! the buffer cannot be allocated. If any request of a batch fails, its
//! copies are redone one by one with kcopyd, which tells which snapshot
//! failed: the origin chunks cannot change meanwhile, as the writes that
//! need the copies are held until they complete.

use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};
use kernel::workqueue::{Work, WorkItem};
use kernel::{impl_has_work, new_work};

use crate::dm::HeldDev;
use crate::dm::dm_io::{DmIoClient, IoBuffer, IoOp};
use crate::dm::kvec;
use crate::dm::params::copy_throttle_pct;
use crate::dm::sync::{self as dmsync, NoIoScope};
use crate::pure::gather::{join_adjacent, Piece};

use super::copyout::{OriginCopy, MAX_COPY_DESTS};

/// Size of a batch's buffer (one per origin with snapshots, allocated on
/// first use).
const GATHER_BYTES: usize = 1 << 20;
/// Largest copy that is gathered (64 KiB): larger runs go to kcopyd.
const GATHER_MAX_SECTORS: u64 = 128;
/// Copies per batch at most.
const GATHER_MAX_COPIES: usize = 256;
/// Most copies waiting for the worker; more go to kcopyd (bounds the
/// queue's allocation on the map path).
const GATHER_MAX_QUEUED: usize = 4 * GATHER_MAX_COPIES;

/// Copies waiting for the worker.
struct Queue {
    copies: KVec<Option<OriginCopy>>,
    /// The worker is queued or running; it clears this when it finds the
    /// queue empty.
    running: bool,
}

/// What only the worker touches.
struct Batches {
    /// The copies taken from the queue (swapped with it, so both keep
    /// their capacity).
    taken: KVec<Option<OriginCopy>>,
    reads: KVec<Piece<HeldDev>>,
    writes: KVec<Piece<HeldDev>>,
    buf: Option<IoBuffer>,
}

/// The copy-out queue and worker of one origin device.
#[pin_data]
pub(crate) struct Gatherer {
    #[pin]
    queue: Mutex<Queue>,
    #[pin]
    batches: Mutex<Batches>,
    io: DmIoClient,
    #[pin]
    work: Work<Gatherer>,
}

impl_has_work! {
    impl HasWork<Self> for Gatherer { self.work }
}

impl Gatherer {
    /// Creates the gatherer of a new origin entry. May sleep.
    pub(crate) fn new() -> Result<Arc<Self>> {
        let batches = Batches { taken: KVec::new(), reads: KVec::new(), writes: KVec::new(), buf: None };
        let io = DmIoClient::new()?;
        Arc::pin_init(
            pin_init!(Self {
                queue <- new_mutex!(Queue { copies: KVec::new(), running: false }, "dm_snapshot_rs:gather_queue"),
                batches <- new_mutex!(batches, "dm_snapshot_rs:gather"),
                io,
                work <- new_work!("dm_snapshot_rs:gather"),
            }),
            GFP_KERNEL,
        )
    }

    /// Queues `copy` for the worker, or starts it with kcopyd if it is not
    /// to be gathered (see the module documentation). Called from `map`
    /// and from workers, always in a [`NoIoScope`] (so `GFP_KERNEL` here
    /// means `GFP_NOIO`); never waits for I/O, but kcopyd may wait for its
    /// mempool.
    pub(crate) fn submit(self: &Arc<Self>, copy: OriginCopy) {
        if copy.dests().len() < 2 || copy.source().count() > GATHER_MAX_SECTORS || copy_throttle_pct() < 100 {
            copy.start_kcopyd();
            return;
        }
        let mut q = self.queue.lock();
        if q.copies.len() >= GATHER_MAX_QUEUED || q.copies.reserve(1, GFP_KERNEL).is_err() {
            drop(q);
            copy.start_kcopyd();
            return;
        }
        // Cannot fail: room was reserved.
        let _ = q.copies.push(Some(copy), GFP_KERNEL);
        if !q.running {
            q.running = true;
            drop(q);
            // Not queued (`running` was clear), so this cannot fail.
            let _ = dmsync::queue().enqueue(self.clone());
        }
    }

    /// The worker: takes everything queued and copies it in batches until
    /// the queue stays empty.
    fn drain(&self) {
        let _noio = NoIoScope::enter();
        let mut guard = self.batches.lock();
        let b = &mut *guard;
        loop {
            {
                let mut q = self.queue.lock();
                if q.copies.is_empty() {
                    q.running = false;
                    return;
                }
                core::mem::swap(&mut q.copies, &mut b.taken);
            }
            if b.buf.is_none() {
                b.buf = IoBuffer::new(GATHER_BYTES).ok();
            }
            let mut from = 0;
            while from < b.taken.len() {
                let to = batch_end(b.taken.as_slice(), from);
                let (taken, reads, writes) = (&mut b.taken, &mut b.reads, &mut b.writes);
                let Some(batch) = taken.as_mut_slice().get_mut(from..to) else {
                    break;
                };
                let copied = match b.buf.as_mut() {
                    Some(buf) => self.copy_batch(batch, reads, writes, buf),
                    None => false,
                };
                for copy in batch.iter_mut().filter_map(Option::take) {
                    if copied {
                        copy.finished();
                    } else {
                        // No buffer, or an error: kcopyd, copy by copy.
                        copy.start_kcopyd();
                    }
                }
                from = to;
            }
            kvec::clear(&mut b.taken);
        }
    }

    /// Reads every source of `batch` into `buf`, then writes every
    /// destination, joined where contiguous. `false` on any error (or if
    /// the piece lists cannot grow); the copies are then still to be done.
    fn copy_batch(
        &self,
        batch: &[Option<OriginCopy>],
        reads: &mut KVec<Piece<HeldDev>>,
        writes: &mut KVec<Piece<HeldDev>>,
        buf: &mut IoBuffer,
    ) -> bool {
        kvec::clear(reads);
        kvec::clear(writes);
        // Reads in copy order; writes destination by destination, each in
        // copy order, which is the order of every snapshot's COW chunks.
        let mut at = 0u64;
        for copy in batch.iter().flatten() {
            let src = copy.source();
            let piece = Piece { dev: src.dev(), sector: src.sector(), sectors: src.count(), buf: at };
            if reads.push(piece, GFP_KERNEL).is_err() {
                return false;
            }
            at = at.saturating_add(src.count());
        }
        for i in 0..MAX_COPY_DESTS {
            let mut at = 0u64;
            for copy in batch.iter().flatten() {
                let len = copy.source().count();
                if let Some(dest) = copy.dests().get(i) {
                    let piece = Piece { dev: dest.dev(), sector: dest.sector(), sectors: len, buf: at };
                    if writes.push(piece, GFP_KERNEL).is_err() {
                        return false;
                    }
                }
                at = at.saturating_add(len);
            }
        }
        let n = join_adjacent(reads.as_mut_slice());
        if !self.run(reads.as_slice().get(..n).unwrap_or(&[]), IoOp::READ, buf) {
            return false;
        }
        let n = join_adjacent(writes.as_mut_slice());
        self.run(writes.as_slice().get(..n).unwrap_or(&[]), IoOp::WRITE, buf)
    }

    /// Issues one request per piece, all in flight together, and waits for
    /// them; whether all succeeded.
    fn run(&self, pieces: &[Piece<HeldDev>], op: IoOp, buf: &mut IoBuffer) -> bool {
        let requests = pieces.iter().map(|p| {
            let offset = usize::try_from(p.buf.saturating_mul(512)).unwrap_or(usize::MAX);
            (p.dev.region(p.sector, p.sectors), offset)
        });
        self.io.io_pieces(op, buf, requests).is_ok()
    }
}

/// The end of the batch starting at `from`: as many copies as fit the
/// buffer, at most [`GATHER_MAX_COPIES`] (always at least one).
fn batch_end(copies: &[Option<OriginCopy>], from: usize) -> usize {
    let limit = (GATHER_BYTES / 512) as u64;
    let mut sectors = 0u64;
    let mut end = from;
    for copy in copies.iter().skip(from).take(GATHER_MAX_COPIES) {
        let len = copy.as_ref().map_or(0, |c| c.source().count());
        if end > from && sectors.saturating_add(len) > limit {
            break;
        }
        sectors = sectors.saturating_add(len);
        end = end.saturating_add(1);
    }
    end.max(from.saturating_add(1)).min(copies.len())
}

impl WorkItem for Gatherer {
    type Pointer = Arc<Gatherer>;

    fn run(this: Arc<Gatherer>) {
        this.drain();
    }
}
