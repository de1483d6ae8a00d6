// SPDX-License-Identifier: GPL-2.0

//! Large copies between held devices through bounce buffers and dm-io
//! (the merge's copy-back of long runs).

use kernel::prelude::*;

use super::dm_io::{DmIoClient, IoBuffer, IoCountdown, IoDir, IoOp};
use super::kcopyd::HeldRegion;
use super::HeldDev;

/// Bytes of one step (each of the two buffers).
pub(crate) const BOUNCE_BYTES: usize = 2 << 20;
/// Runs of at least this many sectors (256 KiB) use the bounce copier.
pub(crate) const BOUNCE_MIN_SECTORS: u64 = 512;

/// Copies through two bounce buffers with large dm-io requests (dm-io
/// splits each into bios of up to 1 MiB, all in flight together): step
/// `i + 1` is read into one buffer while step `i` is written from the
/// other, so a copy moves at about the slower device's speed rather than
/// at half of it (read, then write).
pub(crate) struct BounceCopier {
    io: DmIoClient,
    bufs: [IoBuffer; 2],
}

impl BounceCopier {
    /// A copier with its own dm-io client and two buffers of
    /// [`BOUNCE_BYTES`].
    pub(crate) fn new() -> Result<Self> {
        Ok(Self { io: DmIoClient::new()?, bufs: [IoBuffer::new(BOUNCE_BYTES)?, IoBuffer::new(BOUNCE_BYTES)?] })
    }

    /// The copier's dm-io client (e.g. for the flush of the destination
    /// that must follow the copy: [`DmIoClient::start_flush_held`]).
    pub(crate) fn io(&self) -> &DmIoClient {
        &self.io
    }

    /// Copies every step `(src_sector, dest_sector, sectors)`, `total`
    /// sectors in all, from `from` to `to`. Sleeps; every request has
    /// completed when it returns.
    pub(crate) fn copy(
        &mut self,
        from: HeldDev,
        to: HeldDev,
        total: u64,
        steps: impl Iterator<Item = (u64, u64, u64)>,
    ) -> Result {
        // At least four steps (of 256 KiB or more) when there is little to
        // copy, so that reads and writes still overlap: a batch held short
        // because writes wait for it is often a single 1 MiB run.
        let step = (total / 4).clamp(BOUNCE_MIN_SECTORS, (BOUNCE_BYTES / 512) as u64);
        let [b0, b1] = &mut self.bufs;
        let read = IoOp::new(IoDir::Read).opf();
        let write = IoOp::new(IoDir::Write).opf();
        // The step read last (its destination and the buffer holding it).
        let mut pending: Option<(HeldRegion, bool)> = None;
        let mut into_b1 = false;
        for (src, dest, sectors) in steps {
            let mut done = 0;
            while done < sectors {
                let n = sectors.saturating_sub(done).min(step);
                let src_start = src.checked_add(done).ok_or(EINVAL)?;
                let dest_start = dest.checked_add(done).ok_or(EINVAL)?;
                let countdown = IoCountdown::new()?;
                let (read_buf, write_buf) = if into_b1 { (&mut *b1, &mut *b0) } else { (&mut *b0, &mut *b1) };
                let source = from.region(src_start, n);
                // SAFETY: `countdown.wait()` below returns once both
                // requests completed, so both buffers (borrowed here) and
                // the client (borrowed by this call) outlive them; the
                // devices stay open (`HeldRegion` invariant).
                let mut r = unsafe { self.io.start(source.raw(), read, read_buf, 0, &countdown) };
                if let Some((dest, _)) = pending.take() {
                    // SAFETY: As above; the previous step's buffer is the
                    // one not being read into.
                    let w = unsafe { self.io.start(dest.raw(), write, write_buf, 0, &countdown) };
                    r = r.and(w);
                }
                let ok = countdown.wait();
                r?;
                if !ok {
                    return Err(EIO);
                }
                pending = Some((to.region(dest_start, n), into_b1));
                into_b1 = !into_b1;
                done = done.saturating_add(n);
            }
        }
        if let Some((dest, in_b1)) = pending {
            let buf = if in_b1 { b1 } else { b0 };
            self.io.sync_io_held(&dest, IoOp::WRITE, buf)?;
        }
        Ok(())
    }
}
