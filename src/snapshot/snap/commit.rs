// SPDX-License-Identifier: GPL-2.0

//! The commit worker.

use kernel::prelude::*;
use kernel::rbtree::RBTree;
use kernel::sync::Arc;

use crate::dm::log::dm_err;
use crate::dm::params::test_hooks;
use crate::dm::sync::NoIoScope;
use crate::pure::chunk::Chunk;
use crate::pure::stats::InvalidReason;
use crate::snapshot::store::{AreaBatch, BatchWritten, SlotReservation};

use super::pending::{reason_of, CopyResult};
use super::{SnapCore, SnapState};

/// One exception of a commit batch.
struct CommitEntry {
    /// Origin chunk.
    chunk: Chunk,
    /// COW chunk.
    new: Chunk,
    /// Its copy succeeded, the store was valid and its slot is reserved;
    /// or why not.
    result: CopyResult,
}

impl SnapState {
    /// Whether the commit worker should write a batch now
    /// (`persistent_commit_exception()`'s rule): when no copy is running,
    /// or when the finished copies fill the current area. Committing every
    /// finished prefix at once would cost a flushed metadata write per few
    /// chunks during a burst of first writes.
    fn commit_due(&self) -> bool {
        let room = match self.cursor.area_room() {
            Some(room) if self.valid && self.pending.copying != 0 => room,
            _ => return true,
        };
        // Cheap test first: this runs on every copy completion.
        if self.pending.ordered.saturating_sub(self.pending.copying) < u64::from(room) {
            return false;
        }
        let mut finished = 0u32;
        for (_, chunk) in self.pending.order.iter() {
            if finished >= room {
                break;
            }
            match self.pending.map.get(chunk) {
                Some(pe) if pe.copied.is_none() => break,
                _ => finished = finished.saturating_add(1),
            }
        }
        finished >= room
    }
}

impl SnapCore {
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
    pub(super) fn commit(self: &Arc<Self>) {
        let _noio = NoIoScope::enter();
        // The last batch written, awaiting the flush that makes it durable.
        let mut unflushed: Option<KVec<CommitEntry>> = None;
        'batches: loop {
            // Invalidation side effects first: header, then the event.
            let invalidated = self.finish_invalidation();

            let mut batch: KVec<CommitEntry> = KVec::new();
            let mut area = AreaBatch::new();
            {
                let mut st = self.state.lock();
                if !st.commit_due() {
                    // The last copy to finish kicks the worker again.
                    break 'batches;
                }
                while let Some((seq, chunk)) = first_in_order(&mut st.pending.order) {
                    let Some(pe) = st.pending.map.get(&chunk) else {
                        st.pending.order.remove(&seq);
                        st.pending.ordered = st.pending.ordered.saturating_sub(1);
                        continue;
                    };
                    let Some(copied) = pe.copied else { break };
                    let new = pe.new;
                    st.pending.order.remove(&seq);
                    st.pending.ordered = st.pending.ordered.saturating_sub(1);
                    if batch.push(CommitEntry { chunk, new, result: Err(InvalidReason::NoMemory) }, GFP_KERNEL).is_err() {
                        // Could not record it: fail it rather than lose it.
                        drop(st);
                        self.complete(chunk, new, Err(InvalidReason::NoMemory));
                        st = self.state.lock();
                        continue;
                    }
                    let mut full = false;
                    // An invalid store fails it too (`complete` sees that).
                    let mut result = copied;
                    if result.is_ok() && st.valid {
                        match st.cursor.reserve_slot(&mut area, chunk, new) {
                            Ok(reserved) => full = reserved == SlotReservation::FillsArea,
                            // Nothing reserved: fail the exception rather
                            // than pretend it is durable.
                            Err(e) => result = Err(reason_of(e)),
                        }
                    }
                    if let Some(last) = batch.last_mut() {
                        last.result = result;
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
            if !area.is_empty() {
                let mut meta = self.meta.lock();
                match (*meta).as_mut() {
                    Some(meta) => {
                        // Asked here, with `meta` present: a worker run
                        // after `shutdown` (a late kick) finds it gone and
                        // touches no device.
                        let fold_fua = !self.cow.has_fua() || test_hooks::commit_fold();
                        match meta.write_batch(&area, !fold_fua) {
                            Ok(BatchWritten::Durable) => {}
                            Ok(BatchWritten::AwaitsFlush) => awaits_flush = true,
                            Err(_) => durable = false,
                        }
                        self.state.lock().cursor.batch_written(&area);
                    }
                    None => durable = false,
                }
                drop(meta);
                if !durable {
                    let mut st = self.state.lock();
                    self.invalidate(&mut st, InvalidReason::CowWriteError);
                }
            }

            // The previous batch is durable once this area write (its
            // PREFLUSH) succeeded; otherwise flush for it now.
            if let Some(prev) = unflushed.take() {
                let flushed = awaits_flush || self.flush_cow().is_ok();
                self.complete_batch(prev, flushed);
            }
            if awaits_flush {
                unflushed = Some(batch);
            } else {
                self.complete_batch(batch, durable);
            }
        }
        if let Some(last) = unflushed.take() {
            let flushed = self.flush_cow().is_ok();
            self.complete_batch(last, flushed);
        }
        // An invalidation by the last completions: its waiters go now.
        self.finish_invalidation();
    }

    /// Makes a pending invalidation durable: writes the header (valid = 0),
    /// then releases the origin writes held for it, then raises the table
    /// event. Whether there was one.
    fn finish_invalidation(self: &Arc<Self>) -> bool {
        if !self.state.lock().invalidation.header_pending {
            return false;
        }
        // The flag stays set during the write, so origin writes arriving
        // meanwhile are held too.
        if let Some(meta) = (*self.meta.lock()).as_mut() {
            if meta.drop_snapshot().is_err() {
                // As upstream: the snapshot stays invalid in memory (a
                // failing COW cannot be made to say more).
                dm_err!("write header failed");
            }
        }
        let mut st = self.state.lock();
        st.invalidation.header_pending = false;
        let mut waiters = st.invalidation.waiters.take();
        // The event goes to the owner at this moment, under the state
        // lock: a handover replaces `ti` and an owner's destructor clears
        // it (`release`) under the same lock.
        if let Some(ti) = st.ownership.target() {
            // SAFETY: `ti` is the owner's target, alive while it is stored
            // here (see above and the type invariant).
            unsafe { ti.table_event() };
        }
        drop(st);
        self.notify_state_change();
        while let Some(bio) = waiters.pop() {
            self.entry.retry(bio);
        }
        true
    }

    /// Flushes the COW; on error the snapshot is invalidated.
    fn flush_cow(self: &Arc<Self>) -> Result {
        let meta = self.meta.lock();
        // `meta` gone: a late kick after `shutdown`, which touches no device.
        let flushed = if meta.is_some() { self.cow.flush() } else { Err(ENODEV) };
        drop(meta);
        if flushed.is_err() {
            let mut st = self.state.lock();
            self.invalidate(&mut st, InvalidReason::CowWriteError);
        }
        flushed
    }

    /// Completes a committed batch; `durable`: its area write is durable.
    fn complete_batch(self: &Arc<Self>, batch: KVec<CommitEntry>, durable: bool) {
        for e in batch.into_iter() {
            let result = if durable { e.result } else { e.result.and(Err(InvalidReason::CowWriteError)) };
            self.complete(e.chunk, e.new, result);
        }
    }
}

/// The first element of an ordered map, as owned values.
fn first_in_order(order: &mut RBTree<u64, Chunk>) -> Option<(u64, Chunk)> {
    let cursor = order.cursor_front()?;
    let (k, v) = cursor.current();
    Some((*k, *v))
}
