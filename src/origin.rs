// SPDX-License-Identifier: GPL-2.0

//! The `snapshot-origin` target: `snapshot-origin <dev>`.
//!
//! Maps the origin device one to one. Reads pass straight through. A write
//! is cut at 256 chunks of the smallest chunk size among the origin's
//! snapshots, then every snapshot gets its copy of those chunks before the
//! write may reach the origin (see [`crate::snapshot::registry::OriginEntry::write`]).

use core::fmt::Write;
use core::pin::Pin;

use kernel::ffi::c_int;
use kernel::prelude::*;
use core::ffi::CStr;

use crate::dm::{Args, Bio, CtrError, DeviceVisitor, DmDev, MapResult, Setup, StatusType, StatusWriter, Target, TargetOps};
use crate::snapshot::registry::{EntryRef, OriginBio, OriginOutcome};

/// Chunks (of the smallest size among the snapshots) one mapped origin
/// write may span.
const ORIGIN_WRITE_CHUNKS: u64 = 256;

/// One `snapshot-origin` table entry.
pub(crate) struct Origin {
    entry: EntryRef,
    dev: DmDev,
}

#[vtable]
impl TargetOps for Origin {
    const NAME: &'static CStr = c"snapshot-origin";
    const VERSION: [u32; 3] = [1, 9, 0];

    fn new(setup: &mut Setup<'_>, args: &mut Args<'_>) -> Result<Pin<KBox<Self>>, CtrError> {
        // Same messages as upstream's origin_ctr().
        if args.remaining() != 1 {
            return Err(CtrError::inval(c"origin: incorrect number of arguments"));
        }
        let path = args
            .next_cstr()
            .ok_or(CtrError::inval(c"origin: incorrect number of arguments"))?;
        let mode = setup.target().table_mode();
        let dev = setup
            .get_device(path, mode)
            .map_err(|e| CtrError::new(e, c"Cannot get target device"))?;
        let entry = EntryRef::get(dev.devt())
            .map_err(|e| CtrError::new(e, c"Cannot allocate private origin structure"))?;
        setup.set_num_flush_bios(1);
        KBox::pin(Origin { entry, dev }, GFP_KERNEL)
            .map_err(|_| CtrError::new(ENOMEM, c"Cannot allocate private origin structure"))
    }

    fn map(&self, _ti: &Target, bio: &Bio) -> MapResult {
        // As upstream: the sector is not offset; an origin maps its device
        // from sector 0.
        bio.set_dev(&self.dev);
        if bio.is_preflush() || !bio.is_write() {
            return MapResult::Remapped;
        }
        let entry = self.entry.entry();
        if let Some(min) = entry.throttle_min_chunk() {
            // Upstream cuts every write at the smallest chunk size, so a
            // 1 MiB write becomes 256 separate 4 KiB copy-outs. Here a write
            // spans up to ORIGIN_WRITE_CHUNKS chunks, copied out in runs.
            let span = u64::from(min).max(1).saturating_mul(ORIGIN_WRITE_CHUNKS);
            // `span >= 1`: the remainder exists and is below `span`.
            let available = span.saturating_sub(bio.sector().checked_rem(span).unwrap_or(0));
            if u64::from(bio.sectors()) > available {
                bio.accept_partial(available as u32);
            }
        }
        match entry.write(OriginBio::Mapping(bio)) {
            OriginOutcome::Proceed(_) => MapResult::Remapped,
            OriginOutcome::Queued => MapResult::Submitted,
        }
    }

    fn resume(&self, _ti: &Target) {
        self.entry.entry().origin_live(true);
    }

    fn postsuspend(&self, _ti: &Target) {
        self.entry.entry().origin_live(false);
    }

    fn status(&self, _ti: &Target, kind: StatusType, _flags: u32, out: &mut StatusWriter<'_>) {
        match kind {
            // Upstream prints nothing for INFO and IMA.
            StatusType::Info | StatusType::Ima => {}
            StatusType::Table => {
                let _ = write!(out, "{}", self.dev.name());
            }
        }
    }

    fn iterate_devices(&self, ti: &Target, visitor: &mut DeviceVisitor) -> c_int {
        visitor.visit(&self.dev, 0, ti.len())
    }
}
