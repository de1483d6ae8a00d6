// SPDX-License-Identifier: GPL-2.0

//! The commit worker.

use kernel::prelude::*;
use kernel::rbtree::RBTree;
use kernel::sync::Arc;

use crate::dm::log::dm_err;
use crate::dm::sync::NoIoScope;
use crate::pure::alloc::CommitSlot;
use crate::pure::chunk::Chunk;
use crate::snapshot::store::Cursor;
use crate::dm::params::test_hooks;
use super::{SnapCore, SnapState};

/// One exception of a commit batch: origin chunk, COW chunk, whether its
/// copy succeeded (and the store is valid), and its slot in the area.
type CommitEntry = (Chunk, Chunk, bool, Option<CommitSlot>);

impl SnapState {
    /// Whether the commit worker should write a batch now
    /// (`persistent_commit_exception()`'s rule): when no copy is running,
    /// or when the finished copies fill the current area. Committing every
    /// finished prefix at once would cost a flushed metadata write per few
    /// chunks during a burst of first writes.
    fn commit_due(&self) -> bool {
        let room = match &self.cursor {
            Cursor::Persistent(p) if self.valid && self.pending.copying != 0 => {
                p.geometry().exceptions_per_area().saturating_sub(p.current_committed())
            }
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
                _ => finished += 1,
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
            let mut area: Option<(Chunk, Option<Chunk>)> = None;
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
                        let fold_fua = !self.cow.has_fua() || test_hooks::commit_fold();
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
        if !self.state.lock().invalidation.header_pending {
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
        self.state_changed.notify_all();
        while let Some(bio) = waiters.pop() {
            self.entry.retry(bio);
        }
        true
    }

    /// Flushes the COW; `false` (and the snapshot invalidated) on error.
    fn flush_cow(self: &Arc<Self>) -> bool {
        let meta = self.meta.lock();
        // `meta` gone: a late kick after `shutdown`, which touches no device.
        if meta.is_some() && self.cow.flush().is_ok() {
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
}

/// The first element of an ordered map, as owned values.
fn first_in_order(order: &mut RBTree<u64, Chunk>) -> Option<(u64, Chunk)> {
    let cursor = order.cursor_front()?;
    let (k, v) = cursor.current();
    Some((*k, *v))
}
