// SPDX-License-Identifier: GPL-2.0

//! The transient store (`N`, upstream's `dm-snap-transient.c`): chunks are
//! handed out from the start of the COW, exceptions live in memory only.
//!
//! Its cursor is [`TransientState`] (in [`crate::pure::alloc`]): prepare
//! and usage are there; commit needs no I/O and there is no merge and no
//! `drop_snapshot`, as upstream.

use kernel::prelude::*;

use crate::dm::{CtrError, DmDev};
use crate::pure::alloc::TransientState;
use crate::pure::chunk::ChunkSize;

use super::{chunk_error, new_table, origin_merging, Cursor, Loaded};

/// Creates a transient store on `cow` with the table's chunk size
/// `table_chunk` (which must be set: there is no header to read it from).
/// With `refuse_new` it is refused: no new snapshot of an origin that is
/// being merged into.
pub(super) fn load(cow: &DmDev, origin: &DmDev, table_chunk: u32, refuse_new: bool) -> Result<Loaded, CtrError> {
    if refuse_new {
        return Err(origin_merging());
    }
    if table_chunk == 0 {
        return Err(CtrError::inval(c"Chunk size not set"));
    }
    let chunk = ChunkSize::new(table_chunk, cow.logical_block_size(), origin.logical_block_size())
        .map_err(chunk_error)?;
    let table = new_table(chunk, cow.size_sectors())?;
    Ok(Loaded { chunk, cursor: Cursor::Transient(TransientState::new(chunk)), valid: true, table, meta: None })
}
