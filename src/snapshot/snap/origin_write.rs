// SPDX-License-Identifier: GPL-2.0

//! One snapshot's part of an origin write.

use kernel::sync::Arc;

use crate::dm::sync::NoIoScope;
use crate::snapshot::copyout::NewRuns;
use crate::snapshot::registry::OriginBio;

use super::{SnapCore, SnapState};

impl SnapCore {
    /// One snapshot's part of an origin write of sectors `start..end`
    /// (`__origin_write()` for every chunk the write touches): allocates an
    /// exception for each chunk that needs a copy and records it in `runs`
    /// for the caller to start (outside this snapshot's lock); holds `bio`
    /// on the first pending exception met. Stops early when `runs` is full;
    /// the held bio comes back through here when that exception completes,
    /// so the rest is done then.
    pub(crate) fn origin_cow_range(
        self: &Arc<Self>,
        start: u64,
        end: u64,
        bio: &mut Option<OriginBio<'_>>,
        runs: &mut NewRuns,
    ) {
        let _noio = NoIoScope::enter();
        let mut st = self.state.lock();
        if !st.valid {
            Self::hold_until_invalid_header(&mut st, bio);
            return;
        }
        // A merging snapshot never gets new exceptions: its data is what
        // the origin is becoming.
        let Some(owner) = st.ownership.owner() else {
            return;
        };
        let end = end.min(owner.len);
        if !st.active || st.merge.merging {
            return;
        }
        if start >= end {
            return;
        }
        let first = self.chunk.sector_to_chunk(start);
        let last = self.chunk.sector_to_chunk(end.saturating_sub(1));
        for chunk in first..=last {
            if let Some(pe) = st.pending.map.get_mut(&chunk) {
                if let Some(b) = bio.take() {
                    pe.origin_bios.push(b.into_owned());
                }
                continue;
            }
            if st.table.lookup(chunk).is_some() {
                continue;
            }
            if runs.is_full() {
                break;
            }
            // `None`: the store is full and the snapshot now invalid.
            let Some(new) = self.new_pending(&mut st, chunk, false) else {
                Self::hold_until_invalid_header(&mut st, bio);
                break;
            };
            if let Some(b) = bio.take() {
                if let Some(pe) = st.pending.map.get_mut(&chunk) {
                    pe.origin_bios.push(b.into_owned());
                }
            }
            runs.push(chunk, new);
        }
    }

    /// Holds an origin write (if not held yet) while the header that says
    /// this snapshot is invalid is not durable: the origin chunk it writes
    /// may be one the snapshot still needs (an overflow, a failed copy).
    fn hold_until_invalid_header(st: &mut SnapState, bio: &mut Option<OriginBio<'_>>) {
        if st.invalidation.header_pending {
            if let Some(b) = bio.take() {
                st.invalidation.waiters.push(b.into_owned());
            }
        }
    }
}
