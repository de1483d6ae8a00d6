// SPDX-License-Identifier: GPL-2.0

//! The `snapshot-origin` target: `snapshot-origin <dev>`.
//!
//! Maps the whole origin device one to one. Reads always pass straight
//! through; writes will first trigger copy-on-write into every snapshot of
//! the origin (snapshot support arrives with the `snapshot` target). An
//! origin without snapshots behaves like upstream's: pure pass-through.

use core::fmt::Write;
use core::pin::Pin;

use kernel::c_str;
use kernel::ffi::c_int;
use kernel::prelude::*;
use kernel::str::CStr;

use crate::dm::{Args, Bio, CtrError, DeviceVisitor, DmDev, MapResult, Setup, StatusType, StatusWriter, Target, TargetOps};

/// One `snapshot-origin` table entry.
pub(crate) struct Origin {
    dev: DmDev,
}

#[vtable]
impl TargetOps for Origin {
    const NAME: &'static CStr = c_str!("snapshot-origin");
    const VERSION: [u32; 3] = [1, 9, 0];

    fn new(setup: &mut Setup<'_>, args: &mut Args<'_>) -> Result<Pin<KBox<Self>>, CtrError> {
        // Same messages as upstream's origin_ctr().
        if args.remaining() != 1 {
            return Err(CtrError::inval(c_str!("origin: incorrect number of arguments")));
        }
        let path = args
            .next_cstr()
            .ok_or(CtrError::inval(c_str!("origin: incorrect number of arguments")))?;
        let mode = setup.target().table_mode();
        let dev = setup
            .get_device(path, mode)
            .map_err(|e| CtrError::new(e, c_str!("Cannot get target device")))?;
        setup.set_num_flush_bios(1);
        KBox::pin(Origin { dev }, GFP_KERNEL)
            .map_err(|_| CtrError::new(ENOMEM, c_str!("Cannot allocate private origin structure")))
    }

    fn map(&self, _ti: &Target, bio: &Bio) -> MapResult {
        // As upstream: the sector is not offset; an origin maps its device
        // from sector 0.
        bio.set_dev(&self.dev);
        if bio.is_preflush() || !bio.is_write() {
            return MapResult::Remapped;
        }
        // A write: every snapshot of this origin must get its copy of the
        // chunk first. No snapshot can be registered yet, so the write passes.
        MapResult::Remapped
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
