// SPDX-License-Identifier: GPL-2.0

//! kcopyd and dm-io wrappers against a real block device (the
//! `kunit_scratch_dev` module parameter; skipped without one).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kernel::bindings;
use kernel::prelude::*;
use kernel::sync::Arc;

use crate::dm::bindings::DMSNAP_REQ_FUA;
use crate::dm::dm_io::{DmIoClient, IoBuffer, IoCountdown};
use crate::dm::kcopyd::{CopyCallback, CopyFlags, KcopydClient, Region};
use crate::dm::selftest;
use crate::kunit::{fill, matches};

const SECTORS: u64 = 128;
const BYTES: usize = 128 * 512;
const READ: u32 = bindings::req_op_REQ_OP_READ;
const WRITE: u32 = bindings::req_op_REQ_OP_WRITE;

/// Completion record shared with a kcopyd or dm-io callback. Atomics
/// only: dm-io completions may run in interrupt context.
struct Done {
    done: AtomicBool,
    read_err: AtomicBool,
    errors: AtomicU64,
}

impl Done {
    fn new() -> Option<Arc<Self>> {
        let done = Self {
            done: AtomicBool::new(false),
            read_err: AtomicBool::new(false),
            errors: AtomicU64::new(0),
        };
        Arc::new(done, GFP_KERNEL).ok()
    }

    /// Waits up to 30 s for the callback; `None` on timeout.
    fn wait(&self) -> Option<(bool, u64)> {
        for _ in 0..3000 {
            if self.done.load(Ordering::Acquire) {
                return Some((self.read_err.load(Ordering::Relaxed), self.errors.load(Ordering::Relaxed)));
            }
            selftest::sleep_ms(10);
        }
        None
    }
}

impl CopyCallback for Done {
    fn copy_done(this: Arc<Self>, read_err: bool, write_err: u64) {
        this.read_err.store(read_err, Ordering::Relaxed);
        this.errors.store(write_err, Ordering::Relaxed);
        this.done.store(true, Ordering::Release);
    }
}

fn read_back(io: &DmIoClient, region: &Region) -> Option<IoBuffer> {
    let mut buf = IoBuffer::new(BYTES).ok()?;
    io.sync_io(region, READ, &mut buf).ok()?;
    Some(buf)
}

fn kcopyd_and_dm_io_move_data() {
    let Some(dev) = selftest::scratch_or_skip() else {
        return;
    };
    let (Ok(io), Ok(kc)) = (DmIoClient::new(), KcopydClient::new_throttled()) else {
        kassert!(false);
        return;
    };
    let Ok(mut buf) = IoBuffer::new(BYTES) else {
        kassert!(false);
        return;
    };

    // dm-io: synchronous FUA write of a pattern.
    fill(buf.as_mut_slice(), 7);
    kassert!(io.sync_io(&dev.region(0, SECTORS), WRITE | DMSNAP_REQ_FUA, &mut buf).is_ok());

    // kcopyd: one source, two destinations, then read both back.
    let dests = [dev.region(1024, SECTORS), dev.region(4096, SECTORS)];
    let Some(done) = Done::new() else {
        kassert!(false);
        return;
    };
    // SAFETY: `dev` outlives `kc`: locals drop in reverse order, and
    // dropping `kc` waits for the job anyway; we also wait below.
    let r = unsafe { kc.copy(&dev.region(0, SECTORS), &dests, CopyFlags::default(), done.clone()) };
    kassert!(r.is_ok());
    kassert_eq!(done.wait(), Some((false, 0)));
    for region in &dests {
        let back = read_back(&io, region);
        kassert!(back.as_ref().is_some_and(|b| matches(b.as_slice(), 7)));
    }

    // Too many destinations is refused up front, not a BUG in kcopyd.
    let many = [dev.region(1024, 8); 9];
    let Some(unused) = Done::new() else {
        kassert!(false);
        return;
    };
    // SAFETY: As above; the call fails before any job is queued.
    let r = unsafe { kc.copy(&dev.region(0, 8), &many, CopyFlags::default(), unused) };
    kassert!(r.is_err());

    // dm-io: asynchronous writes from two offsets of one buffer, in
    // flight together and counted by an `IoCountdown`: the buffer's
    // halves land swapped.
    fill(buf.as_mut_slice(), 99);
    let half = SECTORS / 2;
    let half_bytes = (half * 512) as usize;
    let Ok(count) = IoCountdown::new() else {
        kassert!(false);
        return;
    };
    // SAFETY: `buf` and `dev` outlive the requests: we wait for them
    // below before touching or dropping either.
    let r1 = unsafe { io.start(&dev.region(8192, half), WRITE, &mut buf, half_bytes, &count) };
    // SAFETY: As above.
    let r2 = unsafe { io.start(&dev.region(8192 + half, half), WRITE, &mut buf, 0, &count) };
    kassert!(r1.is_ok() && r2.is_ok());
    kassert!(count.wait());
    let back = read_back(&io, &dev.region(8192, SECTORS));
    let b = back.as_ref().map(|b| b.as_slice());
    let src = buf.as_slice();
    let end = half_bytes.saturating_mul(2);
    kassert!(b.is_some_and(|b| b.get(..half_bytes) == src.get(half_bytes..end)
        && b.get(half_bytes..end) == src.get(..half_bytes)));
    // A request past the end of the buffer is refused and counts as a
    // failure.
    let Ok(count) = IoCountdown::new() else {
        kassert!(false);
        return;
    };
    // SAFETY: As above (and nothing is submitted).
    let r = unsafe { io.start(&dev.region(8192, SECTORS), WRITE, &mut buf, 512, &count) };
    kassert!(r.is_err());
    kassert!(!count.wait());

    // kcopyd: zeroing.
    let Some(done) = Done::new() else {
        kassert!(false);
        return;
    };
    // SAFETY: As for the copy above.
    let r = unsafe { kc.zero(&[dev.region(1024, SECTORS)], done.clone()) };
    kassert!(r.is_ok());
    kassert_eq!(done.wait(), Some((false, 0)));
    let back = read_back(&io, &dev.region(1024, SECTORS));
    kassert!(back.as_ref().is_some_and(|b| b.as_slice().iter().all(|x| *x == 0)));
}

kunit_suite!(dm_snapshot_rs_io_layer, [kcopyd_and_dm_io_move_data]);
