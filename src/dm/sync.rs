// SPDX-License-Identifier: GPL-2.0

//! Small helpers around scheduling and memory allocation context, and the
//! module's work queue.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, Ordering};

use kernel::bindings;
use kernel::prelude::*;
use kernel::workqueue::Queue;

use super::bindings as dmb;

/// While alive, allocations on this thread behave as `GFP_NOIO`
/// (`memalloc_noio_save()`), so a `GFP_KERNEL` allocation cannot recurse
/// into I/O on the devices we are servicing. The kernel crate of 6.12 has
/// no `GFP_NOIO` flag; this is the scoped equivalent the kernel recommends.
pub(crate) struct NoIoScope {
    saved: u32,
}

impl NoIoScope {
    /// Enters a NOIO scope.
    pub(crate) fn enter() -> Self {
        // SAFETY: No preconditions; paired with the restore in `drop`.
        Self { saved: unsafe { dmb::dmsnap_memalloc_noio_save() } }
    }
}

impl Drop for NoIoScope {
    fn drop(&mut self) {
        // SAFETY: `saved` came from the matching save on this thread (the
        // guard is neither `Send` nor leaked across scopes by design).
        unsafe { dmb::dmsnap_memalloc_noio_restore(self.saved) };
    }
}

/// Sleeps for about `ms` milliseconds. Must not be called in atomic context.
pub(crate) fn sleep_ms(ms: u32) {
    // SAFETY: Callers are in process context (documented requirement).
    unsafe { bindings::msleep(ms) };
}

/// Sleeps for `min` to `max` microseconds (an hrtimer). Must not be called
/// in atomic context.
pub(crate) fn sleep_range_us(min: u32, max: u32) {
    let (min, max) = (min as kernel::ffi::c_ulong, max.max(min) as kernel::ffi::c_ulong);
    // SAFETY: Callers are in process context (documented requirement).
    unsafe { bindings::usleep_range_state(min, max, bindings::TASK_UNINTERRUPTIBLE) };
}

static WORKQUEUE: AtomicPtr<bindings::workqueue_struct> = AtomicPtr::new(core::ptr::null_mut());
static MERGE_WORKQUEUE: AtomicPtr<bindings::workqueue_struct> = AtomicPtr::new(core::ptr::null_mut());

/// The module's `WQ_MEM_RECLAIM` work queues, created by
/// [`ModuleWorkqueue::create`] in module init: [`queue`] (upstream's
/// `ksnapd`: commits, copy-out gathering, dual-write second halves) and
/// [`merge_queue`] (merge workers, which wait for work on the first).
///
/// # Invariants
///
/// While a `ModuleWorkqueue` exists, `WORKQUEUE` and `MERGE_WORKQUEUE`
/// point to live queues.
pub(crate) struct ModuleWorkqueue {
    wq: NonNull<bindings::workqueue_struct>,
    merge_wq: NonNull<bindings::workqueue_struct>,
}

// SAFETY: A workqueue may be used and destroyed from any thread.
unsafe impl Send for ModuleWorkqueue {}
// SAFETY: As above.
unsafe impl Sync for ModuleWorkqueue {}

impl ModuleWorkqueue {
    /// Creates the queues and publishes them to [`queue`] and
    /// [`merge_queue`].
    pub(crate) fn create() -> Result<Self> {
        // SAFETY: No preconditions.
        let wq = NonNull::new(unsafe { dmb::dmsnap_workqueue_create() }).ok_or(ENOMEM)?;
        // SAFETY: No preconditions.
        let Some(merge_wq) = NonNull::new(unsafe { dmb::dmsnap_merge_workqueue_create() }) else {
            // SAFETY: Created above, not published, destroyed once.
            unsafe { dmb::dmsnap_workqueue_destroy(wq.as_ptr()) };
            return Err(ENOMEM);
        };
        WORKQUEUE.store(wq.as_ptr(), Ordering::Release);
        MERGE_WORKQUEUE.store(merge_wq.as_ptr(), Ordering::Release);
        // INVARIANT: published above; cleared in `drop` before destruction.
        Ok(Self { wq, merge_wq })
    }
}

impl Drop for ModuleWorkqueue {
    fn drop(&mut self) {
        MERGE_WORKQUEUE.store(core::ptr::null_mut(), Ordering::Release);
        WORKQUEUE.store(core::ptr::null_mut(), Ordering::Release);
        // SAFETY: The queues are live and destroyed once. No target
        // instance remains (module unload), so nothing queues work any more.
        unsafe {
            dmb::dmsnap_workqueue_destroy(self.merge_wq.as_ptr());
            dmb::dmsnap_workqueue_destroy(self.wq.as_ptr());
        }
    }
}

/// The module's work queue as a raw pointer, for C code that queues work
/// itself; null outside module init .. exit (see [`queue`]).
pub(crate) fn queue_raw() -> *mut bindings::workqueue_struct {
    WORKQUEUE.load(Ordering::Acquire)
}

/// The queue behind `ptr`, or the system queue if it is not set up. Only
/// called from target code, which cannot run before module init or after
/// module exit.
fn queue_or_system(ptr: &AtomicPtr<bindings::workqueue_struct>) -> &'static Queue {
    let wq = ptr.load(Ordering::Acquire);
    if wq.is_null() {
        return kernel::workqueue::system_long();
    }
    // SAFETY: By the `ModuleWorkqueue` invariant the queue is live until the
    // module unloads, after every target is gone.
    unsafe { Queue::from_raw(wq) }
}

/// The module's work queue (`ksnapd_rs`). Its work items never wait for
/// one another, so its rescuer alone drains it.
pub(crate) fn queue() -> &'static Queue {
    queue_or_system(&WORKQUEUE)
}

/// The merge workers' queue (`ksnapd_rs_merge`).
pub(crate) fn merge_queue() -> &'static Queue {
    queue_or_system(&MERGE_WORKQUEUE)
}

/// Waits until the last queued run of `work` has finished (`flush_work()`),
/// without waiting for anything else on its queue. Process context only.
pub(crate) fn flush_work<T: ?Sized, const ID: u64>(work: &kernel::workqueue::Work<T, ID>) {
    // SAFETY: `work` is borrowed, so it points to a live, initialised item.
    let raw = unsafe { kernel::workqueue::Work::raw_get(work) };
    // SAFETY: `raw` is an initialised `work_struct`, valid for the call;
    // callers are in process context.
    unsafe { bindings::flush_work(raw) };
}

/// Makes a `Send` value `Sync` by allowing access only through `&mut self`
/// (like the standard library's unstable `Exclusive`): a shared reference
/// gives no access at all, so sharing one is harmless.
pub(crate) struct Exclusive<T>(T);

// SAFETY: `&Exclusive<T>` exposes nothing of `T`; all access needs `&mut`,
// which implies exclusive access on one thread.
unsafe impl<T: Send> Sync for Exclusive<T> {}

impl<T> Exclusive<T> {
    /// Wraps a value.
    pub(crate) const fn new(value: T) -> Self {
        Self(value)
    }

    /// Exclusive access.
    pub(crate) fn get_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// Waits for a number of completions that is only known once they have all
/// been started: the issuer holds one count itself, adds one per job
/// ([`Countdown::add`]), then drops its own with [`Countdown::done`] and
/// waits. The result is whether every completion succeeded.
#[pin_data]
pub(crate) struct Countdown {
    /// Outstanding completions and whether all so far succeeded.
    #[pin]
    state: kernel::sync::Mutex<(usize, bool)>,
    #[pin]
    cv: kernel::sync::CondVar,
}

impl Countdown {
    /// A countdown holding the issuer's count.
    pub(crate) fn new() -> Result<kernel::sync::Arc<Self>> {
        kernel::sync::Arc::pin_init(
            pin_init!(Self {
                state <- kernel::new_mutex!((1, true), "dm_snapshot_rs:countdown"),
                cv <- kernel::new_condvar!("dm_snapshot_rs:countdown"),
            }),
            GFP_KERNEL,
        )
    }

    /// One more completion to wait for; call before starting its job.
    pub(crate) fn add(&self) {
        let mut st = self.state.lock();
        st.0 = st.0.saturating_add(1);
    }

    /// One completion arrived. Process context only.
    pub(crate) fn done(&self, ok: bool) {
        let mut st = self.state.lock();
        st.0 = st.0.saturating_sub(1);
        st.1 &= ok;
        if st.0 == 0 {
            self.cv.notify_all();
        }
    }

    /// Waits until every completion (and the issuer's own `done`) arrived.
    pub(crate) fn wait(&self) -> bool {
        let mut guard = self.state.lock();
        while guard.0 != 0 {
            self.cv.wait(&mut guard);
        }
        guard.1
    }
}

impl super::kcopyd::CopyCallback for Countdown {
    fn copy_done(this: kernel::sync::Arc<Self>, read_err: bool, write_err: u64) {
        this.done(!read_err && write_err == 0);
    }
}
