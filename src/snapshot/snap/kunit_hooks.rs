// SPDX-License-Identifier: GPL-2.0

//! Test-only entry points of [`SnapCore`], for the KUnit suites
//! (`src/kunit/pending_layer.rs`); built only with `CONFIG_KUNIT`. The
//! module parameters that only KUnit kernels have are in
//! `src/dm/params.rs` (`test_hooks`).

use core::sync::atomic::Ordering;

use kernel::sync::Arc;

use crate::pure::chunk::Chunk;
use crate::snapshot::copyout::NewRuns;
use crate::snapshot::registry::OriginBio;

use super::SnapCore;


impl SnapCore {
    /// Activates a core built without a target (KUnit).
    pub(crate) fn activate_for_test(&self) {
        self.state.lock().active = true;
    }

    /// Number of exceptions allocated and not yet completed.
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// The COW chunk of origin chunk `chunk`, if its exception is complete.
    pub(crate) fn lookup(&self, chunk: Chunk) -> Option<Chunk> {
        self.state.lock().table.lookup(chunk)
    }

    /// One snapshot's part of an origin write of the chunk at `sector`:
    /// [`Self::origin_cow_range`] for that chunk alone. Returns the new
    /// exception (origin chunk, COW chunk) for the caller to start.
    pub(crate) fn origin_cow(self: &Arc<Self>, sector: u64, bio: &mut Option<OriginBio<'_>>) -> Option<(Chunk, Chunk)> {
        let mut runs = NewRuns::new();
        self.origin_cow_range(sector, sector.saturating_add(1), bio, &mut runs);
        // Bound first: the iterator borrows `runs`.
        let first = runs.iter().next().map(|r| (r.chunk, r.new));
        first
    }
}
