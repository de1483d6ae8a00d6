// SPDX-License-Identifier: GPL-2.0

//! The pending-exception lifecycle on a real device: an origin write's
//! copy is allocated, copied by kcopyd, committed in order by the worker
//! and lands in the table, with the data in the COW chunk. A transient
//! store on the scratch disk (origin and COW regions do not overlap).

use kernel::bindings;
use kernel::sync::Arc;

use crate::dm::dm_io::{DmIoClient, IoBuffer};
use crate::dm::kcopyd::KcopydClient;
use crate::dm::selftest;
use crate::dm::HeldDev;
use crate::kunit::fill;
use crate::pure::alloc::TransientState;
use crate::pure::chunk::ChunkSize;
use crate::snapshot::copyout::{CopyGroup, NewRuns};
use crate::snapshot::snap::{CoreParts, SnapCore, TargetId};
use crate::snapshot::registry::EntryRef;
use crate::snapshot::store::{Cursor, StoreKind};
use crate::snapshot::table::ExceptionTable;

fn wait_idle(core: &SnapCore) -> bool {
    for _ in 0..500 {
        if core.in_flight() == 0 {
            return true;
        }
        selftest::sleep_ms(10);
    }
    false
}

fn pending_exception_lifecycle() {
    let Some(dev) = selftest::scratch_or_skip() else {
        return;
    };
    let (Ok(chunk), Ok(io), Ok(kc), Ok(table), Ok(entry)) = (
        ChunkSize::new(8, 512, 512),
        DmIoClient::new(),
        KcopydClient::new_throttled(),
        ExceptionTable::new(1 << 16),
        EntryRef::get(dev.devt()),
    ) else {
        kassert!(false);
        return;
    };
    // Origin chunks 1000 and 1001 hold known data.
    let Ok(mut buf) = IoBuffer::new(8192) else {
        kassert!(false);
        return;
    };
    fill(buf.as_mut_slice(), 41);
    kassert!(io.sync_io(&dev.region(8000, 16), bindings::req_op_REQ_OP_WRITE, &mut buf).is_ok());

    let parts = CoreParts {
        chunk,
        kind: StoreKind::Transient,
        // SAFETY: `ShutDown` below waits for the core's I/O before `dev`
        // (declared first, dropped last) closes the device, on every path.
        origin: unsafe { HeldDev::new(dev.handle()) },
        // SAFETY: As above.
        cow: unsafe { HeldDev::new(dev.handle()) },
        owner: TargetId::new_unique(),
        merging: false,
        ti: None,
        len: u64::MAX,
        discard_passdown_origin: false,
        entry: entry.entry().clone(),
        valid: true,
        table,
        cursor: Cursor::Transient(TransientState::new(chunk)),
        meta: None,
        kcopyd: kc,
    };
    // SAFETY: No target: `ti` is `None`.
    let Ok(core) = (unsafe { SnapCore::new(parts) }) else {
        kassert!(false);
        return;
    };
    let core = ShutDown(core);
    core.activate_for_test();

    // First write to chunk 1000: a pending exception to COW chunk 0.
    let first = core.origin_cow(8000, &mut None);
    kassert_eq!(first, Some((1000, 0)));
    // While it is pending, no second exception for the chunk.
    kassert!(core.origin_cow(8003, &mut None).is_none());
    // Chunk 1001 gets the next COW chunk; start the second copy first.
    let second = core.origin_cow(8008, &mut None);
    kassert_eq!(second, Some((1001, 1)));
    kassert_eq!(core.in_flight(), 2);
    // Two chunks are being copied: over a threshold of 1 (and of 0, one
    // at a time), not over 2 (`wait_for_in_progress()`'s `>`).
    let saved = selftest::set_cow_threshold(1);
    kassert!(core.over_cow_threshold());
    selftest::set_cow_threshold(0);
    kassert!(core.over_cow_threshold());
    selftest::set_cow_threshold(2);
    kassert!(!core.over_cow_threshold());
    if let Some((c, n)) = second {
        core.start_copy(c, n);
    }
    if let Some((c, n)) = first {
        core.start_copy(c, n);
    }
    kassert!(wait_idle(&core));
    // Copied: no longer counted, even at a threshold of 0.
    selftest::set_cow_threshold(0);
    kassert!(!core.over_cow_threshold());
    selftest::set_cow_threshold(saved);
    // Committed in allocation order; both in the table now.
    kassert_eq!(core.lookup(1000), Some(0));
    kassert_eq!(core.lookup(1001), Some(1));
    kassert!(core.origin_cow(8000, &mut None).is_none());
    // The COW chunks hold the origin data.
    let Ok(mut back) = IoBuffer::new(8192) else {
        kassert!(false);
        return;
    };
    kassert!(io.sync_io(&dev.region(0, 16), bindings::req_op_REQ_OP_READ, &mut back).is_ok());
    kassert!(back.as_slice() == buf.as_slice());

    // A write over chunks 1010..1018: one run on COW chunks 2..10,
    // copied by one job.
    let mut runs = NewRuns::new();
    core.origin_cow_range(8080, 8144, &mut None, &mut runs);
    let got: [Option<(u64, u64, u32)>; 2] = {
        let mut it = runs.iter().map(|r| (r.chunk, r.new, r.count));
        [it.next(), it.next()]
    };
    kassert_eq!(got, [Some((1010, 2, 8)), None]);
    let mut group = CopyGroup::new();
    for run in runs.iter() {
        group.add(&core, run);
    }
    group.start();
    kassert!(wait_idle(&core));
    kassert!((1010..1018u64).zip(2u64..).all(|(c, n)| core.lookup(c) == Some(n)));
    // Over 1009..1020 only the chunks without an exception are new,
    // as runs of consecutive chunks.
    let mut runs = NewRuns::new();
    core.origin_cow_range(8072, 8160, &mut None, &mut runs);
    let got: [Option<(u64, u64, u32)>; 3] = {
        let mut it = runs.iter().map(|r| (r.chunk, r.new, r.count));
        [it.next(), it.next(), it.next()]
    };
    kassert_eq!(got, [Some((1009, 10, 1)), Some((1018, 11, 2)), None]);
    let mut group = CopyGroup::new();
    for run in runs.iter() {
        group.add(&core, run);
    }
    group.start();
    kassert!(wait_idle(&core));
    kassert_eq!(core.lookup(1019), Some(12));

    // Copies of scattered chunks started back to back are gathered
    // (one buffer, the consecutive COW chunks written together): each
    // COW chunk must hold its own origin chunk.
    let Ok(mut one) = IoBuffer::new(4096) else {
        kassert!(false);
        return;
    };
    let order = [7u64, 0, 3, 6, 1, 5, 2, 4];
    // Pattern seed and origin sector of chunk `i` of `order` (i < 8).
    let seed = |i: u64| (i as u8).saturating_add(100);
    let sector = |i: u64| i.saturating_mul(3).saturating_add(2000).saturating_mul(8);
    for i in order {
        fill(one.as_mut_slice(), seed(i));
        let at = dev.region(sector(i), 8);
        kassert!(io.sync_io(&at, bindings::req_op_REQ_OP_WRITE, &mut one).is_ok());
    }
    let mut started = [(0u64, 0u64); 8];
    for (slot, i) in started.iter_mut().zip(order) {
        match core.origin_cow(sector(i), &mut None) {
            Some(pair) => *slot = pair,
            None => kassert!(false),
        }
    }
    for (c, n) in started {
        core.start_copy(c, n);
    }
    kassert!(wait_idle(&core));
    for (i, (c, n)) in order.iter().zip(started) {
        kassert_eq!(core.lookup(c), Some(n));
        fill(one.as_mut_slice(), seed(*i));
        let Ok(mut got) = IoBuffer::new(4096) else {
            kassert!(false);
            return;
        };
        kassert!(io.sync_io(&dev.region(n.saturating_mul(8), 8), bindings::req_op_REQ_OP_READ, &mut got).is_ok());
        kassert!(got.as_slice() == one.as_slice());
    }
}

/// Shuts the core down when the test ends, however it ends.
struct ShutDown(Arc<SnapCore>);

impl core::ops::Deref for ShutDown {
    type Target = Arc<SnapCore>;

    fn deref(&self) -> &Arc<SnapCore> {
        &self.0
    }
}

impl Drop for ShutDown {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

kunit_suite!(dm_snapshot_rs_pending, [pending_exception_lifecycle]);
