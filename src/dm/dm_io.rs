// SPDX-License-Identifier: GPL-2.0

//! Region I/O with dm-io, used for COW metadata.
//!
//! C header: [`include/linux/dm-io.h`](srctree/include/linux/dm-io.h).
//!
//! Buffers are vmalloc-backed [`IoBuffer`]s (dm-io's `DM_IO_VMA`). An
//! asynchronous request owns its context as an `Arc<T>` that comes back to
//! [`IoCallback::io_done`] exactly once.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};

use kernel::alloc::allocator::Vmalloc;
use kernel::alloc::Vec;
use kernel::bindings;
use kernel::error::from_err_ptr;
use kernel::ffi::{c_ulong, c_void};
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::types::{ForeignOwnable, Opaque};

use super::bindings as dmb;
use super::compat;
use super::kcopyd::{HeldRegion, Region};
use super::{BdevHandle, HeldDev};

/// Which way data moves in a dm-io request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IoDir {
    /// From the device into the buffer (`REQ_OP_READ`).
    Read,
    /// From the buffer to the device (`REQ_OP_WRITE`).
    Write,
}

/// The operation and flags of a dm-io request (its `bi_opf`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IoOp {
    opf: u32,
}

impl IoOp {
    /// A plain read.
    pub(crate) const READ: Self = Self::new(IoDir::Read);
    /// A plain write.
    pub(crate) const WRITE: Self = Self::new(IoDir::Write);

    /// A request moving data `dir`, without flags.
    pub(crate) const fn new(dir: IoDir) -> Self {
        let opf = match dir {
            IoDir::Read => bindings::req_op_REQ_OP_READ,
            IoDir::Write => bindings::req_op_REQ_OP_WRITE,
        };
        Self { opf }
    }

    /// With `REQ_PREFLUSH`: the device's write cache is flushed before the
    /// write (meaningful for writes only).
    pub(crate) const fn preflush(self) -> Self {
        Self { opf: self.opf | dmb::DMSNAP_REQ_PREFLUSH }
    }

    /// With `REQ_FUA`: the write is durable when it completes (meaningful
    /// for writes only).
    pub(crate) const fn fua(self) -> Self {
        Self { opf: self.opf | dmb::DMSNAP_REQ_FUA }
    }

    /// With `REQ_SYNC`: someone waits for it.
    pub(crate) const fn sync(self) -> Self {
        Self { opf: self.opf | dmb::DMSNAP_REQ_SYNC }
    }

    /// The raw `bi_opf`, for the APIs that still take one.
    pub(crate) const fn opf(self) -> u32 {
        self.opf
    }
}

impl From<IoDir> for IoOp {
    fn from(dir: IoDir) -> Self {
        Self::new(dir)
    }
}

/// A vmalloc-backed, zero-initialised I/O buffer.
pub(crate) struct IoBuffer {
    data: Vec<u8, Vmalloc>,
}

impl IoBuffer {
    /// Allocates `len` zeroed bytes.
    pub(crate) fn new(len: usize) -> Result<Self> {
        Ok(Self { data: Vec::from_elem(0u8, len, GFP_KERNEL)? })
    }

    /// The buffer's bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.data
    }

    /// The buffer's bytes, mutably.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// dm-io memory for `bytes` bytes from byte `offset`, if they lie in
    /// the buffer.
    fn memory_at(&mut self, offset: usize, bytes: u64) -> Option<dmb::dm_io_memory> {
        let end = offset.checked_add(usize::try_from(bytes).ok()?)?;
        let slice = self.data.get_mut(offset..end)?;
        // SAFETY: All-zero is a valid `dm_io_memory` (a null union pointer);
        // every field that matters is set below.
        let mut mem: dmb::dm_io_memory = unsafe { core::mem::zeroed() };
        mem.type_ = dmb::dm_io_mem_type_DM_IO_VMA;
        // dm-io only uses `offset` for page lists; a VMA buffer starts at
        // the pointer.
        mem.offset = 0;
        mem.ptr.vma = slice.as_mut_ptr().cast();
        Some(mem)
    }
}

/// Counts the asynchronous requests of one batch ([`DmIoClient::start`]);
/// the issuer waits for all of them with [`IoCountdown::wait`].
///
/// # Invariants
///
/// `count` is an initialised `atomic_t`: one for the issuer plus one per
/// request still in flight.
pub(crate) struct IoCountdown {
    count: Opaque<bindings::atomic_t>,
    failed: AtomicBool,
}

// SAFETY: The counter is only touched through the kernel's atomic
// operations (in the shim), which are safe from any thread.
unsafe impl Send for IoCountdown {}
// SAFETY: As above.
unsafe impl Sync for IoCountdown {}

impl IoCountdown {
    /// A countdown holding the issuer's count. Allocates with
    /// `GFP_KERNEL`: callers in the I/O path hold a [`NoIoScope`].
    ///
    /// [`NoIoScope`]: crate::dm::sync::NoIoScope
    pub(crate) fn new() -> Result<Arc<Self>> {
        let this = Arc::new(
            Self { count: Opaque::new(bindings::atomic_t { counter: 0 }), failed: AtomicBool::new(false) },
            GFP_KERNEL,
        )?;
        // SAFETY: `count` is valid memory owned by `this`.
        // INVARIANT: initialised to the issuer's one count.
        unsafe { dmb::dmsnap_iocount_init(this.count.get()) };
        Ok(this)
    }

    fn put(&self, ok: bool) {
        if !ok {
            self.failed.store(true, Ordering::Release);
        }
        // SAFETY: `count` is initialised (type invariant); the kernel's
        // atomics may be used from any context.
        unsafe { dmb::dmsnap_iocount_put(self.count.get()) };
    }

    /// Drops the issuer's count and waits (process context) until every
    /// request has completed; whether all of them succeeded. Consumes the
    /// issuer's handle, so no request can be started after it.
    pub(crate) fn wait(self: Arc<Self>) -> bool {
        self.put(true);
        // SAFETY: As in `put`; waiting sleeps, which callers may do.
        unsafe { dmb::dmsnap_iocount_wait(self.count.get()) };
        !self.failed.load(Ordering::Acquire)
    }
}

impl IoCallback for IoCountdown {
    fn io_done(this: Arc<Self>, error_bits: u64) {
        this.put(error_bits == 0);
    }
}

/// Receives the completion of an asynchronous dm-io request.
pub(crate) trait IoCallback: Send + Sync + 'static {
    /// Runs in dm-io's completion context (may be softirq: must not sleep).
    /// `error_bits` is non-zero if the request failed.
    fn io_done(this: Arc<Self>, error_bits: u64);
}

/// A live `dm_io_client`, destroyed when the last reference goes.
///
/// # Invariants
///
/// `client` is live from `dm_io_client_create`.
struct RawIoClient {
    client: NonNull<dmb::dm_io_client>,
}

// SAFETY: dm-io clients are safe to use from any thread.
unsafe impl Send for RawIoClient {}
// SAFETY: As above.
unsafe impl Sync for RawIoClient {}

impl Drop for RawIoClient {
    fn drop(&mut self) {
        // SAFETY: By the invariant the client is live; destroyed once. No
        // request of it is in flight: every one is waited for while a
        // reference to the client is held (the `DmIoClient` borrowed by the
        // call or by the `unsafe` `start`'s caller, or the
        // `FlushInFlight`, which keeps its own).
        unsafe { dmb::dm_io_client_destroy(self.client.as_ptr()) };
    }
}

/// A dm-io client (private mempools for metadata I/O).
///
/// The client is reference counted so that an asynchronous flush
/// ([`FlushInFlight`]) can keep it alive even if it is leaked: dm-io does
/// not wait for requests in flight when a client is destroyed.
pub(crate) struct DmIoClient {
    raw: Arc<RawIoClient>,
}

impl DmIoClient {
    /// Creates a client. May sleep.
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: No preconditions.
        let client = from_err_ptr(unsafe { dmb::dm_io_client_create() })?;
        let client = NonNull::new(client).ok_or(ENOMEM)?;
        // INVARIANT: successfully created; on an allocation error the
        // `RawIoClient` is dropped, destroying it.
        let raw = Arc::new(RawIoClient { client }, GFP_KERNEL)?;
        Ok(Self { raw })
    }

    fn request(&self, opf: u32, mem: dmb::dm_io_memory, notify: dmb::dm_io_notify) -> dmb::dm_io_request {
        dmb::dm_io_request { bi_opf: opf, mem, notify, client: self.raw.client.as_ptr() }
    }

    /// Reads or writes `buf` at `region` and waits (`opf` is a `REQ_OP_*`
    /// with flags such as `REQ_PREFLUSH | REQ_FUA`). Sleeps: never call it
    /// from `map`.
    ///
    /// The region's device must stay open during the call, which holding the
    /// `DmDev` the region was built from guarantees.
    pub(crate) fn sync_io(&self, region: &Region, opf: u32, buf: &mut IoBuffer) -> Result {
        let bytes = region.raw.count.checked_mul(512).ok_or(EINVAL)?;
        let mem = buf.memory_at(0, bytes).ok_or(EINVAL)?;
        let mut req = self.request(opf, mem, dmb::dm_io_notify::default());
        let mut region = region.raw;
        let mut error_bits: c_ulong = 0;
        // SAFETY: `req` has no callback, so dm-io completes it before
        // returning; the buffer is large enough for the region (checked) and
        // borrowed for the call; the region's device is open (see above).
        let ret = unsafe { compat::dm_io(&mut req, 1, &mut region, &mut error_bits) };
        if ret != 0 {
            return Err(Error::from_errno(ret));
        }
        if error_bits != 0 {
            return Err(EIO);
        }
        Ok(())
    }

    /// Starts reading or writing `region` from or to `buf`, from byte
    /// `offset` of the buffer, counted in `countdown` (which the request
    /// drops when it completes; a request that cannot start counts as
    /// failed).
    ///
    /// # Safety
    ///
    /// The bytes of `buf` the request uses must stay valid and untouched
    /// until it completes (wait for `countdown`), the region's device must
    /// stay open and this client must not be dropped until then.
    pub(crate) unsafe fn start(
        &self,
        region: &Region,
        opf: u32,
        buf: &mut IoBuffer,
        offset: usize,
        countdown: &Arc<IoCountdown>,
    ) -> Result {
        // SAFETY: `countdown` is initialised (type invariant).
        unsafe { dmb::dmsnap_iocount_get(countdown.count.get()) };
        // SAFETY: The caller's guarantees are passed on.
        let r = unsafe { self.async_io(region, opf, buf, offset, countdown.clone()) };
        if r.is_err() {
            countdown.put(false);
        }
        r
    }

    /// Starts an empty flush (`REQ_PREFLUSH`) of `dev`, counted in
    /// `countdown`: once it completes, every write to `dev` that completed
    /// before the call is durable.
    ///
    /// # Safety
    ///
    /// `dev` must stay open and this client must not be dropped until the
    /// flush completes (wait for `countdown`).
    pub(crate) unsafe fn start_flush(&self, dev: BdevHandle, countdown: &Arc<IoCountdown>) -> Result {
        // SAFETY: All-zero is a valid `dm_io_memory`: kernel memory at a
        // null address, which dm-io never touches for an empty region.
        let mut mem: dmb::dm_io_memory = unsafe { core::mem::zeroed() };
        mem.type_ = dmb::dm_io_mem_type_DM_IO_KMEM;
        let opf = bindings::req_op_REQ_OP_WRITE | dmb::DMSNAP_REQ_PREFLUSH | dmb::DMSNAP_REQ_SYNC;
        // SAFETY: `countdown` is initialised (type invariant).
        unsafe { dmb::dmsnap_iocount_get(countdown.count.get()) };
        // SAFETY: No memory is used; the device stays open (caller).
        let r = unsafe { self.async_io_mem(&Region::new(dev, 0, 0), opf, mem, countdown.clone()) };
        if r.is_err() {
            countdown.put(false);
        }
        r
    }

    /// Reads or writes `buf` at `region` and waits. Sleeps: never call it
    /// from `map`.
    pub(crate) fn sync_io_held(&self, region: &HeldRegion, op: IoOp, buf: &mut IoBuffer) -> Result {
        // The region's device is open (`HeldRegion` invariant) and the
        // request completes before this returns.
        self.sync_io(region.raw(), op.opf(), buf)
    }

    /// Reads or writes every piece `(region, offset)`: `region` from or to
    /// `buf` at byte `offset`, all requests in flight together, and waits
    /// for all of them. Stops starting requests at the first that cannot
    /// start (its error is returned, after the started ones completed);
    /// `EIO` if any failed. Sleeps.
    pub(crate) fn io_pieces(
        &self,
        op: IoOp,
        buf: &mut IoBuffer,
        pieces: impl IntoIterator<Item = (HeldRegion, usize)>,
    ) -> Result {
        let countdown = IoCountdown::new()?;
        let mut started = Ok(());
        for (region, offset) in pieces {
            // SAFETY: `countdown.wait()` below returns only once every
            // request completed, while `buf` and `self` are still borrowed
            // by this call; the device is open (`HeldRegion` invariant).
            started = unsafe { self.start(region.raw(), op.opf(), buf, offset, &countdown) };
            if started.is_err() {
                break;
            }
        }
        Self::await_started(countdown, started)
    }

    /// Reads or writes each `(region, buffer)` (the whole region from or to
    /// the start of its buffer), all in flight together, and waits for all
    /// of them. An `Err` item, or a request that cannot start, stops the
    /// starting; that error is returned once the started requests
    /// completed; `EIO` if any failed. Sleeps.
    pub(crate) fn io_buffers<'b>(
        &self,
        op: IoOp,
        items: impl IntoIterator<Item = Result<(HeldRegion, &'b mut IoBuffer)>>,
    ) -> Result {
        let countdown = IoCountdown::new()?;
        let mut started = Ok(());
        for item in items {
            let (region, buf) = match item {
                Ok(item) => item,
                Err(e) => {
                    started = Err(e);
                    break;
                }
            };
            // SAFETY: Each buffer is borrowed for `'b`, which outlasts this
            // call, and `countdown.wait()` below returns only once every
            // request completed; `self` is borrowed by the call; the device
            // is open (`HeldRegion` invariant).
            started = unsafe { self.start(region.raw(), op.opf(), buf, 0, &countdown) };
            if started.is_err() {
                break;
            }
        }
        Self::await_started(countdown, started)
    }

    /// Waits for every request counted in `countdown`, then returns the
    /// error that stopped the starting, if any, or `EIO` if a request
    /// failed.
    fn await_started(countdown: Arc<IoCountdown>, started: Result) -> Result {
        let ok = countdown.wait();
        started?;
        if ok {
            Ok(())
        } else {
            Err(EIO)
        }
    }

    /// Starts an empty flush (`REQ_PREFLUSH`) of `dev`: once it completes,
    /// every write to `dev` that completed before the call is durable. The
    /// result waits for it ([`FlushInFlight::wait`], or when dropped) and
    /// keeps this client alive meanwhile, even if it is leaked.
    pub(crate) fn start_flush_held(&self, dev: HeldDev) -> Result<FlushInFlight> {
        let countdown = IoCountdown::new()?;
        // SAFETY: The device stays open until the flush completed (`HeldDev`
        // invariant); the client too: the returned value holds a reference
        // to it and waits for the flush before dropping it, and if it is
        // leaked the reference is leaked with it.
        let r = unsafe { self.start_flush(dev.handle(), &countdown) };
        if let Err(e) = r {
            // Not started: nothing to wait for but the issuer's count.
            let _ = countdown.wait();
            return Err(e);
        }
        // INVARIANT: the flush was started, counted in `countdown`.
        Ok(FlushInFlight { countdown: Some(countdown), _client: self.raw.clone() })
    }

    /// Starts reading or writing `region` from byte `offset` of `buf`;
    /// `T::io_done` runs when it completes.
    ///
    /// # Safety
    ///
    /// The bytes of `buf` the request uses must stay valid and untouched
    /// until the callback runs, and the region's device must stay open
    /// until then.
    unsafe fn async_io<T: IoCallback>(
        &self,
        region: &Region,
        opf: u32,
        buf: &mut IoBuffer,
        offset: usize,
        context: Arc<T>,
    ) -> Result {
        let bytes = region.raw.count.checked_mul(512).ok_or(EINVAL)?;
        let mem = buf.memory_at(offset, bytes).ok_or(EINVAL)?;
        // SAFETY: The caller's guarantees are passed on; `mem` covers
        // `region` (checked above).
        unsafe { self.async_io_mem(region, opf, mem, context) }
    }

    /// Starts the request for `region` with memory `mem`; `T::io_done`
    /// runs when it completes.
    ///
    /// # Safety
    ///
    /// `mem` must describe at least `region`'s bytes, valid and untouched
    /// until the callback runs, and the region's device must stay open
    /// until then.
    unsafe fn async_io_mem<T: IoCallback>(
        &self,
        region: &Region,
        opf: u32,
        mem: dmb::dm_io_memory,
        context: Arc<T>,
    ) -> Result {
        let ctx = compat::into_foreign(context);
        let notify = dmb::dm_io_notify { fn_: compat::io_notify_fn::<IoDone<T>>(), context: ctx };
        let mut req = self.request(opf, mem, notify);
        let mut region = region.raw;
        // SAFETY: `req` is fully initialised; buffer and device validity until
        // completion are the caller's guarantees; `ctx` is released exactly
        // once, by `io_notify::<T>` or below if submission fails.
        let ret = unsafe { compat::dm_io(&mut req, 1, &mut region, core::ptr::null_mut()) };
        if ret != 0 {
            // dm_io() fails before queueing anything (bad request), so the
            // callback will not run: take the context back.
            // SAFETY: `ctx` came from `into_foreign` above and was not consumed.
            drop(unsafe { <Arc<T> as ForeignOwnable>::from_foreign(ctx) });
            return Err(Error::from_errno(ret));
        }
        Ok(())
    }
}

/// A flush started by [`DmIoClient::start_flush_held`]. Dropping it waits
/// for the flush.
///
/// It owns a reference to its client rather than borrowing it: a borrow
/// would end if the value were leaked (`mem::forget`), and the client could
/// then be destroyed under the flush. Owning one also lets the merge keep
/// the flush in flight while it uses the client's owner mutably.
///
/// # Invariants
///
/// `countdown`, until taken by `wait` or `drop`, counts one flush of the
/// client `_client` that was started.
pub(crate) struct FlushInFlight {
    countdown: Option<Arc<IoCountdown>>,
    _client: Arc<RawIoClient>,
}

impl FlushInFlight {
    /// Waits for the flush; whether it succeeded.
    pub(crate) fn wait(mut self) -> bool {
        self.countdown.take().is_some_and(IoCountdown::wait)
    }
}

impl Drop for FlushInFlight {
    fn drop(&mut self) {
        if let Some(countdown) = self.countdown.take() {
            let _ = countdown.wait();
        }
    }
}

/// The completion of a request started by [`DmIoClient::async_io`] for `T`.
struct IoDone<T>(core::marker::PhantomData<T>);

// SAFETY: `async_io_mem` submits every request with an `Arc<T>` from
// `into_foreign` as its context, and dm-io completes each request once.
unsafe impl<T: IoCallback> compat::IoNotify for IoDone<T> {
    unsafe fn notify(error_bits: c_ulong, context: *mut c_void) {
        // SAFETY: `context` came from `Arc::<T>::into_foreign`; this is the
        // only completion of that request.
        let this = unsafe { <Arc<T> as ForeignOwnable>::from_foreign(context) };
        T::io_done(this, error_bits as u64);
    }
}
