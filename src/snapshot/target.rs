// SPDX-License-Identifier: GPL-2.0

//! The `snapshot` target:
//! `snapshot <origin> <COW> <P|PO|N> <chunksize> [<#features> [discard_zeroes_cow] [discard_passdown_origin]]`.

use core::fmt::Write;
use core::pin::Pin;

use kernel::ffi::c_int;
use kernel::prelude::*;
use core::ffi::CStr;
use kernel::sync::Arc;

use crate::dm::args::parse_decimal;
use crate::dm::kcopyd::KcopydClient;
use crate::dm::log::{dm_err, dm_warn};
use crate::dm::{Args, Bio, CtrError, DeviceVisitor, DmDev, HeldDev, MapResult, OpenMode, QueueLimits, Setup, StatusType, StatusWriter, Target, TargetOps};
use crate::pure::chunk::ChunkSize;

use super::registry::{self, Claimed, CowReservation, EntryRef, MergeTable};
use super::snap::{CoreParts, HandoverRefusal, Resume, SnapCore, StateFlags, StatsBase, TargetId};
use super::store::{self, StoreKind};

/// Optional features of the table line.
#[derive(Clone, Copy, Default)]
struct Features {
    discard_zeroes_cow: bool,
    discard_passdown_origin: bool,
}

impl Features {
    /// `parse_snapshot_features()`: `[<#args> [names...]]`, names compared
    /// case-insensitively. Arguments after the group are ignored, as
    /// upstream does.
    fn parse(args: &mut Args<'_>) -> Result<Self, CtrError> {
        let mut f = Self::default();
        if args.remaining() == 0 {
            return Ok(f);
        }
        let bad_count = c"Invalid number of feature arguments";
        let count = args
            .next_cstr()
            .and_then(|a| a.to_str().ok())
            .and_then(parse_decimal)
            .filter(|n| *n <= 2 && (*n as usize) <= args.remaining())
            .ok_or(CtrError::inval(bad_count))?;
        for _ in 0..count {
            let name = args.next_cstr().ok_or(CtrError::inval(bad_count))?;
            let name = name.to_bytes();
            if name.eq_ignore_ascii_case(b"discard_zeroes_cow") {
                f.discard_zeroes_cow = true;
            } else if name.eq_ignore_ascii_case(b"discard_passdown_origin") {
                f.discard_passdown_origin = true;
            } else {
                return Err(CtrError::inval(c"Unrecognised feature requested"));
            }
        }
        if f.discard_passdown_origin && !f.discard_zeroes_cow {
            return Err(CtrError::inval(c"discard_passdown_origin feature depends on discard_zeroes_cow"));
        }
        Ok(f)
    }

    fn count(self) -> u32 {
        u32::from(self.discard_zeroes_cow).saturating_add(u32::from(self.discard_passdown_origin))
    }
}

/// One `snapshot` table entry.
///
/// Several table entries (an old and a new table during a reload) may share
/// one [`SnapCore`]; the core serves only its current owner.
pub(crate) struct Snapshot {
    core: Arc<SnapCore>,
    id: TargetId,
    /// A `snapshot-merge` target.
    merge: bool,
    /// This table's store type (`P`/`PO`/`N`), applied on handover.
    kind: StoreKind,
    /// Counts this table among the origin's `snapshot-merge` tables.
    _merge_table: Option<MergeTable>,
    entry: EntryRef,
    features: Features,
    origin: DmDev,
    cow: DmDev,
    /// The core's totals when this table was constructed (`stats`).
    stats_base: StatsBase,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if self.merge {
            // Only a merge this table owns: dm destroys the old table after
            // the new one took the store over and started its merge.
            self.core.stop_merge(self.id);
        }
        let released = self.core.release(self.id);
        if released.cancelled {
            // Before the core leaves the origin: a constructor on this COW
            // always finds one or the other.
            registry::add_cancelled(&self.core);
        }
        if released.owned {
            // No new copies from origin writes, then wait for the ones in
            // flight; only then may `origin` and `cow` be released (after
            // this function, in field order).
            self.entry.entry().remove(&self.core);
            self.core.shutdown();
        }
        // Otherwise the store lives on in the target that took it over,
        // which holds the same devices; no worker refers to this target
        // any more (events go to `state.ti`, the new owner). In particular
        // this must not wait for the merge, which lvconvert's removal of
        // the old snapshot table would otherwise block on.
    }
}

/// The `STATUSTYPE_IMA` line, as upstream's `snapshot_status()` builds it
/// (`DMEMIT_TARGET_NAME_VERSION` then the snapshot fields).
pub(crate) fn write_ima(
    out: &mut StatusWriter<'_>,
    name: &CStr,
    version: [u32; 3],
    origin: &str,
    cow: &str,
    flags: StateFlags,
) {
    let yn = |b: bool| if b { 'y' } else { 'n' };
    let _ = write!(
        out,
        "target_name={},target_version={}.{}.{},snap_origin_name={},snap_cow_name={},snap_valid={},snap_merge_failed={},snapshot_overflowed={};",
        name.to_str().unwrap_or(""),
        version[0],
        version[1],
        version[2],
        origin,
        cow,
        yn(flags.valid),
        yn(flags.merge_failed),
        yn(flags.overflowed)
    );
}

/// The target settings of a snapshot or merge table entry: flush and
/// discard clones, per-bio data, and bios split at chunk boundaries.
fn configure(setup: &mut Setup<'_>, features: Features, num_flush_bios: u32, chunk: ChunkSize) -> Result {
    setup.set_num_flush_bios(num_flush_bios);
    if features.discard_zeroes_cow {
        setup.set_num_discard_bios(if features.discard_passdown_origin { 2 } else { 1 });
    }
    setup.set_per_io_data_size(crate::dm::bio::PER_BIO_DATA_SIZE as u32);
    setup.set_max_io_len(u64::from(chunk.sectors()))
}

impl Snapshot {
    /// The constructor shared by `snapshot` and `snapshot-merge`
    /// (`snapshot_ctr()`).
    fn construct(setup: &mut Setup<'_>, args: &mut Args<'_>, merge: bool) -> Result<Pin<KBox<Self>>, CtrError> {
        if args.remaining() < 4 {
            return Err(CtrError::inval(c"requires 4 or more arguments"));
        }
        let missing = c"requires 4 or more arguments";
        let origin_path = args.next_cstr().ok_or(CtrError::inval(missing))?;
        let cow_path = args.next_cstr().ok_or(CtrError::inval(missing))?;
        let store_arg = args.next_cstr().ok_or(CtrError::inval(missing))?;
        let chunk_arg = args.next_cstr().ok_or(CtrError::inval(missing))?;
        // Upstream parses the features before opening any device.
        let features = Features::parse(args)?;

        // The merge writes to the origin.
        let origin_mode = if merge { OpenMode::READ_WRITE } else { OpenMode::READ };
        let origin = setup
            .get_device(origin_path, origin_mode)
            .map_err(|e| CtrError::new(e, c"Cannot get origin device"))?;
        let cow = setup
            .get_device(cow_path, setup.target().table_mode())
            .map_err(|e| CtrError::new(e, c"Cannot get COW device"))?;
        if cow.handle().same(origin.handle()) {
            return Err(CtrError::inval(c"COW device cannot be the same as origin device"));
        }

        let kind = StoreKind::parse(store_arg.to_bytes())?;
        if merge && kind == StoreKind::Transient {
            return Err(CtrError::inval(c"Snapshot exception store does not support snapshot-merge."));
        }
        let num_flush_bios = if merge { 2 } else { 1 };
        let table_chunk = chunk_arg
            .to_str()
            .ok()
            .and_then(parse_decimal)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                dm_warn!("Invalid chunk size");
                CtrError::inval(c"Couldn't create exception store")
            })?;

        store::check_table_chunk(table_chunk, &cow, &origin)?;

        let entry = EntryRef::get(origin.devt())
            .map_err(|e| CtrError::new(e, c"Snapshot origin struct allocation failed"))?;
        let id = TargetId::new_unique();
        let pairing = c"Snapshot cow pairing for exception table handover failed";
        let already_merging = c"A snapshot is already merging.";
        // Held until this constructor returns, after its registration.
        let _reservation = CowReservation::new(cow.handle()).map_err(|e| {
            if e == EBUSY {
                CtrError::inval(pairing)
            } else {
                CtrError::new(e, c"Snapshot origin struct allocation failed")
            }
        })?;
        let claimed = entry.entry().claim_cow(cow.handle(), id, merge).map_err(|r| {
            CtrError::inval(match r {
                HandoverRefusal::Pairing => pairing,
                HandoverRefusal::AlreadyMerging => already_merging,
                HandoverRefusal::NoMergeSupport => c"Snapshot exception store does not support snapshot-merge.",
            })
        })?;
        if let Some(Claimed { core: live, merge_table }) = claimed {
            // A live snapshot of this origin uses this COW: this table will
            // take its store over when it resumes (a reload, or the start
            // of a merge). The store is not read again.
            let chunk = live.chunk_size();
            let stats_base = live.stats_base();
            let this = Snapshot {
                stats_base,
                core: live.clone(),
                id,
                merge,
                kind,
                _merge_table: merge_table,
                entry,
                features,
                origin,
                cow,
            };
            // On failure the value is dropped, and its destructor releases
            // the core.
            let this = KBox::pin(this, GFP_KERNEL)
                .map_err(|_| CtrError::new(ENOMEM, c"Cannot allocate private snapshot structure"))?;
            // On failure, dropping `this` withdraws it from waiting.
            configure(setup, features, num_flush_bios, chunk)
                .map_err(|e| CtrError::new(e, c"Cannot allocate private snapshot structure"))?;
            return Ok(this);
        }
        if registry::cow_in_use(cow.handle()) {
            // The COW belongs to a snapshot of another origin, or to a
            // table whose handover was cancelled.
            return Err(CtrError::inval(pairing));
        }
        // Stricter than upstream, which refuses a second merging snapshot
        // only when it takes a live store over (above).
        if merge && entry.entry().merging_other_than(cow.handle()) {
            return Err(CtrError::inval(already_merging));
        }

        // While a snapshot of this origin merges, existing snapshots may be
        // activated (they stay stable), but no new one may be created.
        let refuse_new = !merge && entry.entry().has_merging();
        // SAFETY: `origin` and `cow` move into the `Snapshot` below, whose
        // destructor shuts the core down (waiting for all of its I/O, and
        // dropping the store's metadata client) before they are released
        // (field order); a table that takes the core over holds the same
        // devices. If this constructor fails first, the store's clients
        // and the core are dropped (their I/O done) before `cow`/`origin`.
        let (held_origin, held_cow) = unsafe { (HeldDev::new(origin.handle()), HeldDev::new(cow.handle())) };
        let loaded = store::load(kind, &cow, held_cow, &origin, table_chunk, refuse_new)?;
        if !loaded.valid {
            dm_warn!("Snapshot is marked invalid.");
        }
        let kcopyd = KcopydClient::new_throttled()
            .map_err(|e| CtrError::new(e, c"Could not create kcopyd client"))?;
        let chunk = loaded.chunk;
        let parts = CoreParts {
            chunk,
            kind,
            origin: held_origin,
            cow: held_cow,
            owner: id,
            merging: merge,
            ti: Some(setup.target().handle()),
            len: setup.target().len(),
            discard_passdown_origin: features.discard_passdown_origin,
            entry: entry.entry().clone(),
            valid: loaded.valid,
            table: loaded.table,
            cursor: loaded.cursor,
            meta: loaded.meta,
            kcopyd,
        };
        // SAFETY: `parts.ti` is this target's, and `Snapshot::drop`
        // releases the core (also if the constructor fails below, once
        // `this` exists; before that nothing else holds the core).
        let core = unsafe { SnapCore::new(parts) }
            .map_err(|e| CtrError::new(e, c"Cannot allocate private snapshot structure"))?;

        configure(setup, features, num_flush_bios, chunk)
            .map_err(|e| CtrError::new(e, c"Failed to read snapshot metadata"))?;

        let merge_table = merge.then(|| MergeTable::new(entry.entry().clone()));
        let stats_base = core.stats_base();
        let this = Snapshot {
            core: core.clone(),
            id,
            merge,
            kind,
            _merge_table: merge_table,
            entry,
            features,
            origin,
            cow,
            stats_base,
        };
        let this = KBox::pin(this, GFP_KERNEL)
            .map_err(|_| CtrError::new(ENOMEM, c"Cannot allocate private snapshot structure"))?;
        // Registered last: from here on origin writes may copy into it
        // (once it is resumed).
        this.entry
            .entry()
            .add(core)
            .map_err(|e| CtrError::new(e, c"Snapshot origin struct allocation failed"))?;
        Ok(this)
    }

    fn io_hints_common(&self, limits: &mut QueueLimits<'_>) {
        if self.features.discard_zeroes_cow {
            limits.set_discard_chunk(self.core.chunk_size().sectors());
        }
    }

    fn preresume_common(&self) -> Result {
        self.core.preresume_check(self.id)
    }

    fn resume_common(&self, ti: &Target) {
        let resume = Resume { id: self.id, ti: ti.handle(), len: ti.len(), kind: self.kind, merging: self.merge };
        // SAFETY: `ti` is this target's, and `Snapshot::drop` releases the
        // core.
        unsafe { self.core.resume_as(resume) };
    }

    fn status_common(&self, name: &CStr, version: [u32; 3], kind: StatusType, out: &mut StatusWriter<'_>) {
        match kind {
            StatusType::Info => {
                let _ = write!(out, "{}", self.core.info_status(self.id));
            }
            StatusType::Table => {
                let (store_kind, chunk) = self.core.shown_store(self.id, self.kind);
                let _ = write!(out, "{} {} {} {}", self.origin.name(), self.cow.name(), store_kind.name(), chunk);
                let n = self.features.count();
                if n > 0 {
                    let _ = write!(out, " {}", n);
                    if self.features.discard_zeroes_cow {
                        let _ = write!(out, " discard_zeroes_cow");
                    }
                    if self.features.discard_passdown_origin {
                        let _ = write!(out, " discard_passdown_origin");
                    }
                }
            }
            StatusType::Ima => {
                let flags = self.core.state_flags(self.id);
                write_ima(out, name, version, self.origin.name(), self.cow.name(), flags);
            }
        }
    }

    /// `dmsetup message <dev> 0 stats`: one line of counters
    /// (Documentation/stats.md); anything else is refused with `-EINVAL`.
    fn message_common(&self, args: &mut Args<'_>, out: &mut StatusWriter<'_>) -> Result {
        let Some(command) = args.next_cstr() else {
            return Err(EINVAL);
        };
        let text = command.to_str().unwrap_or("<not UTF-8>");
        if !command.to_bytes().eq_ignore_ascii_case(b"stats") {
            dm_warn!("Unrecognised message received: {}", text);
            return Err(EINVAL);
        }
        if args.remaining() != 0 {
            dm_warn!("Incorrect number of arguments for '{}' message: {}", text, args.remaining());
            return Err(EINVAL);
        }
        let _ = if self.merge {
            write!(out, "{}", self.core.merge_stats(self.id, self.stats_base))
        } else {
            write!(out, "{}", self.core.snapshot_stats(self.stats_base))
        };
        Ok(())
    }

    fn iterate_devices_common(&self, ti: &Target, visitor: &mut DeviceVisitor) -> c_int {
        let r = visitor.visit(&self.origin, 0, ti.len());
        if r != 0 {
            return r;
        }
        visitor.visit(&self.cow, 0, self.cow.size_sectors())
    }
}

#[vtable]
impl TargetOps for Snapshot {
    const NAME: &'static CStr = c"snapshot";
    const VERSION: [u32; 3] = [1, 16, 0];

    fn new(setup: &mut Setup<'_>, args: &mut Args<'_>) -> Result<Pin<KBox<Self>>, CtrError> {
        Self::construct(setup, args, false)
    }

    fn map(&self, ti: &Target, bio: &Bio) -> MapResult {
        self.core.snapshot_map(self.id, ti, bio)
    }

    fn end_io(&self, ti: &Target, bio: &Bio, _error: &mut u8) {
        self.core.snapshot_end_io(ti, bio);
    }

    fn io_hints(&self, _ti: &Target, limits: &mut QueueLimits<'_>) {
        self.io_hints_common(limits);
    }

    fn preresume(&self, _ti: &Target) -> Result {
        self.preresume_common()
    }

    fn resume(&self, ti: &Target) {
        self.resume_common(ti);
    }

    fn status(&self, _ti: &Target, kind: StatusType, _flags: u32, out: &mut StatusWriter<'_>) {
        self.status_common(Self::NAME, Self::VERSION, kind, out);
    }

    fn message(&self, _ti: &Target, args: &mut Args<'_>, out: &mut StatusWriter<'_>) -> Result {
        self.message_common(args, out)
    }

    fn iterate_devices(&self, ti: &Target, visitor: &mut DeviceVisitor) -> c_int {
        self.iterate_devices_common(ti, visitor)
    }
}

/// One `snapshot-merge` table entry: a snapshot whose chunks are being
/// copied back into its origin, standing in for the origin's
/// `snapshot-origin`.
pub(crate) struct SnapshotMerge(Snapshot);

#[vtable]
impl TargetOps for SnapshotMerge {
    const NAME: &'static CStr = c"snapshot-merge";
    const VERSION: [u32; 3] = [1, 5, 0];

    fn new(setup: &mut Setup<'_>, args: &mut Args<'_>) -> Result<Pin<KBox<Self>>, CtrError> {
        // `Snapshot` is `Unpin`, so its box may be unpinned and moved.
        let inner = Pin::into_inner(Snapshot::construct(setup, args, true)?);
        KBox::pin(SnapshotMerge(KBox::into_inner(inner)), GFP_KERNEL)
            .map_err(|_| CtrError::new(ENOMEM, c"Cannot allocate private snapshot structure"))
    }

    fn map(&self, ti: &Target, bio: &Bio) -> MapResult {
        self.0.core.merge_map(self.0.id, ti, bio)
    }

    fn end_io(&self, ti: &Target, bio: &Bio, _error: &mut u8) {
        self.0.core.snapshot_end_io(ti, bio);
    }

    fn io_hints(&self, _ti: &Target, limits: &mut QueueLimits<'_>) {
        self.0.io_hints_common(limits);
    }

    fn presuspend(&self, _ti: &Target) {
        self.0.core.stop_merge(self.0.id);
    }

    fn preresume(&self, _ti: &Target) -> Result {
        if self.0.entry.entry().live_origins() > 0 {
            dm_err!("snapshot-merge: a snapshot-origin of this origin is still live");
            return Err(EINVAL);
        }
        self.0.preresume_common()
    }

    fn resume(&self, ti: &Target) {
        self.0.resume_common(ti);
        // Writes are cut at the smallest chunk of the origin's snapshots.
        ti.set_max_io_len_on_resume(self.0.core.origin_min_chunk());
        self.0.core.start_merge(self.0.id);
    }

    fn status(&self, _ti: &Target, kind: StatusType, _flags: u32, out: &mut StatusWriter<'_>) {
        self.0.status_common(Self::NAME, Self::VERSION, kind, out);
    }

    fn message(&self, _ti: &Target, args: &mut Args<'_>, out: &mut StatusWriter<'_>) -> Result {
        self.0.message_common(args, out)
    }

    fn iterate_devices(&self, ti: &Target, visitor: &mut DeviceVisitor) -> c_int {
        self.0.iterate_devices_common(ti, visitor)
    }
}
