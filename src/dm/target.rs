// SPDX-License-Identifier: GPL-2.0

//! Target types: registration, per-target private data and the callbacks
//! dm core calls.
//!
//! A target type is a Rust type implementing [`TargetOps`]; one value of it
//! is the private data of one table entry (`ti->private`). Registering it
//! with [`Registration`] fills a `struct target_type` whose function
//! pointers are the trampolines at the bottom of this file.

use core::marker::PhantomData;
use core::pin::Pin;
use core::ptr::NonNull;

use kernel::bindings;
use kernel::error::{to_result, Error};
use kernel::ffi::{c_char, c_int, c_uint, c_void};
use kernel::prelude::*;
use core::ffi::CStr;
use kernel::types::{ForeignOwnable, Opaque};
use kernel::ThisModule;

use super::args::Args;
use super::bindings as dmb;
use super::compat;
use super::bio::Bio;
use super::device::{get_device_error, DmDev, OpenMode};
use super::status::{StatusType, StatusWriter};

/// What `map` did with a bio (`DM_MAPIO_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MapResult {
    /// The bio was redirected; dm core submits it.
    Remapped,
    /// The target took the bio and will complete or submit it later.
    Submitted,
    /// Fail the bio with an I/O error.
    Kill,
    /// Ask dm core to resubmit the bio later.
    #[allow(dead_code)] // The whole `DM_MAPIO_*` set; this module never requeues.
    Requeue,
    /// Like [`MapResult::Requeue`], after a delay.
    #[allow(dead_code)] // As above.
    DelayRequeue,
}

impl MapResult {
    /// The value dm core expects from a `map` callback.
    pub(crate) fn to_raw(self) -> c_int {
        let raw = match self {
            Self::Remapped => dmb::DM_MAPIO_REMAPPED,
            Self::Submitted => dmb::DM_MAPIO_SUBMITTED,
            Self::Kill => dmb::DM_MAPIO_KILL,
            Self::Requeue => dmb::DM_MAPIO_REQUEUE,
            Self::DelayRequeue => dmb::DM_MAPIO_DELAY_REQUEUE,
        };
        // The constants are small (0..=4): the conversion cannot fail.
        c_int::try_from(raw).unwrap_or((bindings::EIO as c_int).wrapping_neg())
    }
}

/// A constructor failure: the errno returned to dm core and the message it
/// logs (`ti->error`), e.g. `device-mapper: table: 254:3: snapshot-origin:
/// <message> (-EINVAL)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CtrError {
    /// Errno returned from `ctr`.
    pub(crate) error: Error,
    /// Message stored in `ti->error`.
    pub(crate) message: &'static CStr,
}

impl CtrError {
    /// An error with an explicit errno.
    pub(crate) fn new(error: Error, message: &'static CStr) -> Self {
        Self { error, message }
    }

    /// An `-EINVAL` error, the usual answer to a bad table line.
    pub(crate) fn inval(message: &'static CStr) -> Self {
        Self::new(EINVAL, message)
    }
}

/// A `struct dm_target` seen from a callback.
///
/// # Invariants
///
/// The wrapped `dm_target` is valid for the lifetime of the reference.
/// Shared references only read fields that dm core no longer changes once
/// the constructor has returned.
#[repr(transparent)]
pub(crate) struct Target(Opaque<dmb::dm_target>);

impl Target {
    /// Borrows a target from a raw pointer.
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for `'a`, as it is for the duration of every
    /// target callback.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut dmb::dm_target) -> &'a Self {
        // SAFETY: `Target` is `repr(transparent)` over `Opaque<dm_target>`;
        // validity for `'a` is the caller's guarantee.
        // INVARIANT: see above.
        unsafe { &*ptr.cast() }
    }

    fn raw(&self) -> *mut dmb::dm_target {
        self.0.get()
    }

    /// Length of this table entry in sectors (`ti->len`).
    pub(crate) fn len(&self) -> u64 {
        // SAFETY: By the invariant the target is valid; `len` is set before
        // `ctr` and never changes.
        unsafe { (*self.raw()).len }
    }

    /// Per-bio data bytes reserved for this target (`per_io_data_size`).
    pub(crate) fn per_io_data_size(&self) -> u32 {
        // SAFETY: As for `len`; set in `ctr` only.
        unsafe { (*self.raw()).per_io_data_size }
    }

    /// Mode of the table being loaded (`dm_table_get_mode()`).
    pub(crate) fn table_mode(&self) -> OpenMode {
        // SAFETY: The target is valid and belongs to a table.
        OpenMode(unsafe { dmb::dmsnap_table_mode(self.raw()) })
    }

    /// Sets `max_io_len` from `resume` (as upstream's merge target does;
    /// the device is suspended, so no bio is being split meanwhile).
    pub(crate) fn set_max_io_len_on_resume(&self, sectors: u32) {
        // SAFETY: The target is valid; during `resume` dm core does not read
        // `max_io_len` concurrently (no I/O is mapped while suspended).
        unsafe { (*self.raw()).max_io_len = sectors };
    }

    /// A handle for raising table events from outside the callbacks.
    pub(crate) fn handle(&self) -> TargetHandle {
        TargetHandle(self.raw())
    }
}

/// A copyable reference to a target for work done outside its callbacks
/// (raising a table event from the commit worker).
#[derive(Clone, Copy)]
pub(crate) struct TargetHandle(*mut dmb::dm_target);

// SAFETY: A plain pointer; the `unsafe` use requires the target to be alive.
unsafe impl Send for TargetHandle {}
// SAFETY: As above.
unsafe impl Sync for TargetHandle {}

impl TargetHandle {

    /// Raises a table event (`dm_table_event()`). May sleep.
    ///
    /// # Safety
    ///
    /// The target's destructor must not have run yet.
    pub(crate) unsafe fn table_event(self) {
        // SAFETY: The caller guarantees the target (and its table) is alive.
        unsafe { dmb::dm_table_event((*self.0).table) };
    }

    /// Whether the target's device is suspended (`dm_suspended()`).
    ///
    /// # Safety
    ///
    /// The target's destructor must not have run yet.
    pub(crate) unsafe fn is_suspended(self) -> bool {
        // SAFETY: The caller guarantees the target is alive.
        unsafe { dmb::dm_suspended(self.0) != 0 }
    }
}

/// The target while its constructor runs: the only time its settings may be
/// changed.
///
/// # Invariants
///
/// Exists only inside `ctr`, when dm core does not yet use the target
/// concurrently.
pub(crate) struct Setup<'a> {
    ti: &'a Target,
}

impl Setup<'_> {
    fn raw(&self) -> *mut dmb::dm_target {
        self.ti.raw()
    }

    /// The target being constructed.
    pub(crate) fn target(&self) -> &Target {
        self.ti
    }

    /// Opens a device named in the table (`dm_get_device()`).
    pub(crate) fn get_device(&self, path: &CStr, mode: OpenMode) -> Result<DmDev> {
        let mut dev: *mut dmb::dm_dev = core::ptr::null_mut();
        // SAFETY: The target is valid during `ctr`; `path` is NUL-terminated;
        // `dev` is a valid out-pointer.
        let ret = unsafe { dmb::dm_get_device(self.raw(), compat::cstr_ptr(path), mode.0, &mut dev) };
        if ret != 0 {
            return Err(get_device_error(ret));
        }
        let dev = NonNull::new(dev).ok_or(ENODEV)?;
        // `self.raw()` is non-null: it came from a reference.
        let ti = NonNull::new(self.raw()).ok_or(EINVAL)?;
        // SAFETY: `dev` comes from a successful `dm_get_device(ti, ...)`. The
        // device ends up in the target's private data (the only place a
        // `Setup` can put it), which is dropped in `dtr` before `ti` is freed.
        Ok(unsafe { DmDev::from_raw(dev, ti) })
    }

    /// Number of empty flush bios dm core sends to this target.
    pub(crate) fn set_num_flush_bios(&mut self, n: u32) {
        // SAFETY: By the invariant nothing else accesses the target now.
        unsafe { (*self.raw()).num_flush_bios = n };
    }

    /// Number of discard bios dm core sends to this target (0: unsupported).
    pub(crate) fn set_num_discard_bios(&mut self, n: u32) {
        // SAFETY: As above.
        unsafe { (*self.raw()).num_discard_bios = n };
    }

    /// Bytes of per-bio data dm core reserves for this target.
    pub(crate) fn set_per_io_data_size(&mut self, bytes: u32) {
        // SAFETY: As above.
        unsafe { (*self.raw()).per_io_data_size = bytes };
    }

    /// Makes dm core split bios so that none crosses a multiple of `sectors`
    /// (`dm_set_target_max_io_len()`).
    pub(crate) fn set_max_io_len(&mut self, sectors: u64) -> Result {
        // SAFETY: As above.
        to_result(unsafe { dmb::dm_set_target_max_io_len(self.raw(), sectors) })
    }
}

/// The queue limits dm core is stacking for the mapped device.
pub(crate) struct QueueLimits<'a> {
    limits: &'a mut bindings::queue_limits,
}

impl QueueLimits<'_> {
    /// Discards are split at `sectors` and advertised with that
    /// granularity. (Upstream's snapshot target sets `discard_granularity`
    /// to a sector count although the field is in bytes; this sets bytes.)
    pub(crate) fn set_discard_chunk(&mut self, sectors: u32) {
        self.limits.max_hw_discard_sectors = sectors;
        self.limits.discard_granularity = sectors.saturating_mul(512);
    }
}

/// Calls a function for each underlying device (`iterate_devices`).
pub(crate) struct DeviceVisitor {
    ti: *mut dmb::dm_target,
    callout: dmb::iterate_devices_callout_fn,
    data: *mut c_void,
}

impl DeviceVisitor {
    /// Reports that this target uses `len` sectors of `dev` from `start`.
    /// A non-zero return stops the iteration and must be returned as is.
    pub(crate) fn visit(&mut self, dev: &DmDev, start: u64, len: u64) -> c_int {
        match self.callout {
            // SAFETY: `ti`, `callout` and `data` are what dm core passed to
            // `iterate_devices`, valid during the call; `dev` is held.
            Some(f) => unsafe { f(self.ti, dev.as_raw(), start, len, self.data) },
            None => 0,
        }
    }
}

/// The callbacks of a device-mapper target type.
///
/// The implementing type is the private data of one table entry. Optional
/// callbacks left out are not installed in the `target_type`, so dm core
/// never calls them.
#[vtable]
pub(crate) trait TargetOps: Sized + Send + Sync + 'static {
    /// Target name, as in table lines.
    const NAME: &'static CStr;
    /// Version reported by `dmsetup targets`.
    const VERSION: [u32; 3];
    /// `DM_TARGET_*` feature flags.
    const FEATURES: u64 = 0;

    /// Constructs the target from its table arguments (`ctr`).
    fn new(setup: &mut Setup<'_>, args: &mut Args<'_>) -> Result<Pin<KBox<Self>>, CtrError>;

    /// Maps a bio (`map`).
    fn map(&self, ti: &Target, bio: &Bio) -> MapResult;

    /// Writes status text (`status`).
    fn status(&self, ti: &Target, kind: StatusType, flags: u32, out: &mut StatusWriter<'_>);

    /// Reports the underlying devices (`iterate_devices`).
    fn iterate_devices(&self, ti: &Target, visitor: &mut DeviceVisitor) -> c_int;

    /// Adjusts the queue limits of the mapped device (`io_hints`).
    fn io_hints(&self, _ti: &Target, _limits: &mut QueueLimits<'_>) {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Called when a bio the target remapped completes (`end_io`); may run
    /// in interrupt context. Returns `DM_ENDIO_DONE` semantics only.
    fn end_io(&self, _ti: &Target, _bio: &Bio, _error: &mut u8) {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Called before the device suspends (`presuspend`).
    fn presuspend(&self, _ti: &Target) {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Called once the device is suspended (`postsuspend`).
    fn postsuspend(&self, _ti: &Target) {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Called before resuming; may refuse the resume (`preresume`).
    fn preresume(&self, _ti: &Target) -> Result {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Called when the device resumes (`resume`).
    fn resume(&self, _ti: &Target) {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Handles `dmsetup message <dev> <sector> <args...>` (`message`), in
    /// process context (it may sleep, but should not block I/O for long).
    /// `args` holds at least one argument; text written to `out` is
    /// returned to userspace (truncated, NUL-terminated, at its size: dm
    /// core then retries with a larger buffer). Only installed if the type
    /// implements it; without it dm core answers "Target type does not
    /// support messages". The default refuses every message.
    fn message(&self, _ti: &Target, _args: &mut Args<'_>, _out: &mut StatusWriter<'_>) -> Result {
        Err(EINVAL)
    }
}

/// A registered target type; unregistered on drop.
///
/// # Invariants
///
/// `tt` was registered with `dm_register_target` and stays registered until
/// `drop`. It is heap-allocated and never moved (dm core links it into a
/// list through `tt.list`).
pub(crate) struct Registration<T: TargetOps> {
    tt: Pin<KBox<Opaque<dmb::target_type>>>,
    _ops: PhantomData<T>,
}

// SAFETY: After registration dm core owns all access to the `target_type`
// (under its own lock); this value only keeps it alive and unregisters it.
unsafe impl<T: TargetOps> Send for Registration<T> {}
// SAFETY: As above: `&Registration` gives no access to the `target_type`.
unsafe impl<T: TargetOps> Sync for Registration<T> {}

impl<T: TargetOps> Registration<T> {
    /// Registers target type `T` with dm core.
    pub(crate) fn register(module: &'static ThisModule) -> Result<Self> {
        let tt = dmb::target_type {
            features: T::FEATURES,
            name: compat::cstr_ptr(T::NAME),
            module: module.as_ptr(),
            version: T::VERSION,
            ctr: Some(ctr_callback::<T>),
            dtr: Some(dtr_callback::<T>),
            map: Some(map_callback::<T>),
            status: Some(status_callback::<T>),
            iterate_devices: Some(iterate_devices_callback::<T>),
            presuspend: if T::HAS_PRESUSPEND { Some(presuspend_callback::<T>) } else { None },
            postsuspend: if T::HAS_POSTSUSPEND { Some(postsuspend_callback::<T>) } else { None },
            preresume: if T::HAS_PRERESUME { Some(preresume_callback::<T>) } else { None },
            resume: if T::HAS_RESUME { Some(resume_callback::<T>) } else { None },
            end_io: if T::HAS_END_IO { Some(end_io_callback::<T>) } else { None },
            io_hints: if T::HAS_IO_HINTS { Some(io_hints_callback::<T>) } else { None },
            message: if T::HAS_MESSAGE { Some(message_callback::<T>) } else { None },
            ..Default::default()
        };
        let tt = KBox::pin(Opaque::new(tt), GFP_KERNEL)?;
        // SAFETY: `tt` is a fully initialised `target_type` at a stable heap
        // address that outlives the registration (it is unregistered in
        // `drop` before being freed).
        to_result(unsafe { dmb::dm_register_target(tt.get()) })?;
        // INVARIANT: registered just above; the box is never moved from.
        Ok(Self { tt, _ops: PhantomData })
    }
}

impl<T: TargetOps> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: By the invariant `tt` is registered. dm core holds a module
        // reference for every live table entry, so no instance remains when
        // the module unloads and this runs.
        unsafe { dmb::dm_unregister_target(self.tt.get()) };
    }
}

/// Borrows the private data of a constructed target.
///
/// # Safety
///
/// `ti` must be a valid target of type `T` whose `ctr` succeeded and whose
/// `dtr` has not run, for `'a`.
unsafe fn private<'a, T: TargetOps>(ti: *mut dmb::dm_target) -> Pin<&'a T> {
    // SAFETY: `ti` is valid (caller).
    let ptr = unsafe { (*ti).private };
    // SAFETY: `ctr_callback` stored a `Pin<KBox<T>>::into_foreign` pointer
    // there, and `dtr_callback` (which takes it back) has not run yet.
    unsafe { <Pin<KBox<T>> as ForeignOwnable>::borrow(ptr) }
}

/// # Safety
///
/// Called by dm core with a valid target being constructed and `argc`
/// valid argument strings.
unsafe extern "C" fn ctr_callback<T: TargetOps>(
    ti: *mut dmb::dm_target,
    argc: c_uint,
    argv: *mut *mut c_char,
) -> c_int {
    // SAFETY: dm core passes a valid target, exclusively ours during `ctr`.
    let target = unsafe { Target::from_raw(ti) };
    // INVARIANT: we are inside `ctr`.
    let mut setup = Setup { ti: target };
    // SAFETY: dm core passes `argc` valid strings that outlive this call.
    let mut args = unsafe { Args::from_raw(argc, argv) };
    match T::new(&mut setup, &mut args) {
        Ok(private) => {
            // SAFETY: The target is valid and not yet used concurrently.
            unsafe { (*ti).private = compat::into_foreign(private) };
            0
        }
        Err(e) => {
            // dm core only reads `ti->error`; it never frees or writes it.
            // SAFETY: As above.
            unsafe { (*ti).error = compat::cstr_ptr(e.message).cast_mut() };
            e.error.to_errno()
        }
    }
}

/// # Safety
///
/// Called by dm core once per successfully constructed target.
unsafe extern "C" fn dtr_callback<T: TargetOps>(ti: *mut dmb::dm_target) {
    // SAFETY: `ti` is valid; `private` was set by a successful `ctr`.
    let ptr = unsafe { (*ti).private };
    // SAFETY: `ptr` came from `into_foreign` in `ctr_callback`, and dm core
    // calls `dtr` once, after every other callback has returned.
    drop(unsafe { <Pin<KBox<T>> as ForeignOwnable>::from_foreign(ptr) });
}

/// # Safety
///
/// Called by dm core with a constructed target and a bio it owns.
unsafe extern "C" fn map_callback<T: TargetOps>(ti: *mut dmb::dm_target, bio: *mut bindings::bio) -> c_int {
    // SAFETY: `ti` is a constructed target of type `T`.
    let this = unsafe { private::<T>(ti) };
    // SAFETY: `ti` is valid for the call.
    let target = unsafe { Target::from_raw(ti) };
    // SAFETY: dm core hands the target its clone for the call.
    let bio = unsafe { Bio::from_raw(bio) };
    this.map(target, bio).to_raw()
}

/// # Safety
///
/// Called by dm core with a constructed target and a `maxlen`-byte buffer.
unsafe extern "C" fn status_callback<T: TargetOps>(
    ti: *mut dmb::dm_target,
    kind: dmb::status_type_t,
    flags: c_uint,
    result: *mut c_char,
    maxlen: c_uint,
) {
    if result.is_null() {
        return;
    }
    // SAFETY: dm core passes a buffer of `maxlen` writable bytes.
    let buf = unsafe { core::slice::from_raw_parts_mut(result.cast::<u8>(), maxlen as usize) };
    let mut out = StatusWriter::new(buf);
    let Some(kind) = StatusType::from_raw(kind) else {
        return;
    };
    // SAFETY: `ti` is a constructed target of type `T`.
    let this = unsafe { private::<T>(ti) };
    // SAFETY: `ti` is valid for the call.
    let target = unsafe { Target::from_raw(ti) };
    this.status(target, kind, flags, &mut out);
}

/// # Safety
///
/// Called by dm core with a constructed target, `argc` valid argument
/// strings and a `maxlen`-byte result buffer.
unsafe extern "C" fn message_callback<T: TargetOps>(
    ti: *mut dmb::dm_target,
    argc: c_uint,
    argv: *mut *mut c_char,
    result: *mut c_char,
    maxlen: c_uint,
) -> c_int {
    // SAFETY: `ti` is a constructed target of type `T`, valid for the call.
    let (this, target) = unsafe { (private::<T>(ti), Target::from_raw(ti)) };
    // SAFETY: dm core passes `argc` valid strings (split from the message)
    // that outlive this call.
    let mut args = unsafe { Args::from_raw(argc, argv) };
    let buf: &mut [u8] = if result.is_null() {
        &mut []
    } else {
        // SAFETY: dm core passes a buffer of `maxlen` writable bytes, ours
        // for the call.
        unsafe { core::slice::from_raw_parts_mut(result.cast::<u8>(), maxlen as usize) }
    };
    let mut out = StatusWriter::new(buf);
    match this.message(target, &mut args, &mut out) {
        // 1: dm core returns the result text (and flags a full buffer).
        Ok(()) if out.len() > 0 || out.truncated() => 1,
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// Called by dm core with a constructed target and its callout.
unsafe extern "C" fn iterate_devices_callback<T: TargetOps>(
    ti: *mut dmb::dm_target,
    callout: dmb::iterate_devices_callout_fn,
    data: *mut c_void,
) -> c_int {
    // SAFETY: `ti` is a constructed target of type `T`.
    let this = unsafe { private::<T>(ti) };
    // SAFETY: `ti` is valid for the call.
    let target = unsafe { Target::from_raw(ti) };
    let mut visitor = DeviceVisitor { ti, callout, data };
    this.iterate_devices(target, &mut visitor)
}

/// # Safety
///
/// Called by dm core with a constructed target.
unsafe extern "C" fn presuspend_callback<T: TargetOps>(ti: *mut dmb::dm_target) {
    // SAFETY: `ti` is a constructed target of type `T`, valid for the call.
    let (this, target) = unsafe { (private::<T>(ti), Target::from_raw(ti)) };
    this.presuspend(target);
}

/// # Safety
///
/// Called by dm core with a constructed target.
unsafe extern "C" fn postsuspend_callback<T: TargetOps>(ti: *mut dmb::dm_target) {
    // SAFETY: `ti` is a constructed target of type `T`, valid for the call.
    let (this, target) = unsafe { (private::<T>(ti), Target::from_raw(ti)) };
    this.postsuspend(target);
}

/// # Safety
///
/// Called by dm core with a constructed target.
unsafe extern "C" fn preresume_callback<T: TargetOps>(ti: *mut dmb::dm_target) -> c_int {
    // SAFETY: `ti` is a constructed target of type `T`, valid for the call.
    let (this, target) = unsafe { (private::<T>(ti), Target::from_raw(ti)) };
    match this.preresume(target) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// Called by dm core with a constructed target.
unsafe extern "C" fn resume_callback<T: TargetOps>(ti: *mut dmb::dm_target) {
    // SAFETY: `ti` is a constructed target of type `T`, valid for the call.
    let (this, target) = unsafe { (private::<T>(ti), Target::from_raw(ti)) };
    this.resume(target);
}

/// # Safety
///
/// Called by dm core with a constructed target, a bio of this target and a
/// valid status pointer.
unsafe extern "C" fn end_io_callback<T: TargetOps>(
    ti: *mut dmb::dm_target,
    bio: *mut bindings::bio,
    error: *mut bindings::blk_status_t,
) -> c_int {
    // SAFETY: `ti` is a constructed target of type `T`, valid for the call.
    let (this, target) = unsafe { (private::<T>(ti), Target::from_raw(ti)) };
    // SAFETY: dm core passes the completing clone, ours for the call.
    let bio = unsafe { Bio::from_raw(bio) };
    if error.is_null() {
        let mut status = 0u8;
        this.end_io(target, bio, &mut status);
    } else {
        // SAFETY: `error` points to the bio's status for the call.
        this.end_io(target, bio, unsafe { &mut *error });
    }
    dmb::DM_ENDIO_DONE as c_int
}

/// # Safety
///
/// Called by dm core with a constructed target and valid limits.
unsafe extern "C" fn io_hints_callback<T: TargetOps>(ti: *mut dmb::dm_target, limits: *mut bindings::queue_limits) {
    // SAFETY: `ti` is a constructed target of type `T`, valid for the call.
    let (this, target) = unsafe { (private::<T>(ti), Target::from_raw(ti)) };
    // SAFETY: dm core passes the limits it is building, ours for the call.
    let Some(limits) = (unsafe { limits.as_mut() }) else {
        return;
    };
    this.io_hints(target, &mut QueueLimits { limits });
}
