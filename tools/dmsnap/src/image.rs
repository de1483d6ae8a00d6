// SPDX-License-Identifier: GPL-2.0
//! COW images built in memory the way the kernel writes them, for tests and
//! the fuzz target.
//!
//! [`build`] replays the persistent store's allocation and commit sequence
//! ([`PersistentState`]): one data chunk per exception in allocation order,
//! each committed into the current area, a full area zeroing the next.

use dmsnap_core::pure::alloc::PersistentState;
use dmsnap_core::pure::chunk::{Chunk, ChunkSize};
use dmsnap_core::pure::disk::{write_entry, DiskException, DiskHeader, Geometry};

use crate::dev::MemDev;

/// The byte every data chunk for origin chunk `old` is filled with in
/// [`build`]'s images, mixed with the offset so a misplaced sector shows.
pub fn data_byte(old: Chunk, offset: usize) -> u8 {
    (old.wrapping_mul(131).wrapping_add(offset as u64 / 512 * 7) % 251) as u8
}

/// A COW of `cow_chunks` chunks of `chunk_sectors` sectors holding one
/// exception per element of `olds` (in that order; repeats are skipped,
/// as the kernel makes one exception per chunk), with each data chunk
/// filled by [`data_byte`]. `None` if the COW is too small for them.
pub fn build(chunk_sectors: u32, cow_chunks: u64, olds: &[Chunk], valid: bool) -> Option<(MemDev, Vec<DiskException>)> {
    let chunk = ChunkSize::new(chunk_sectors, 512, 512).ok()?;
    let geom = Geometry::new(chunk);
    let cb = chunk.bytes();
    let mut img = vec![0u8; cb.checked_mul(usize::try_from(cow_chunks).ok()?)?];
    DiskHeader { valid, ..DiskHeader::new_valid(chunk) }.encode(img.get_mut(..cb)?).ok()?;
    let mut st = PersistentState::new_store(geom);
    let mut area = vec![0u8; cb];
    let cow_sectors = u64::from(chunk.sectors()) * cow_chunks;
    let mut seen = std::collections::HashSet::new();
    let mut list = Vec::new();
    for &old in olds {
        if !seen.insert(old) {
            continue;
        }
        let new = st.prepare_exception(cow_sectors).ok()?;
        let off = usize::try_from(new).ok()? * cb;
        for (i, b) in img.get_mut(off..off + cb)?.iter_mut().enumerate() {
            *b = data_byte(old, i);
        }
        let slot = st.commit_slot().ok()?;
        let ex = DiskException { old, new };
        write_entry(geom, &mut area, slot.index, ex).ok()?;
        let loc = usize::try_from(st.current_area_location()?).ok()? * cb;
        img.get_mut(loc..loc + cb)?.copy_from_slice(&area);
        if slot.area_full {
            let (_, next) = st.next_area()?;
            let n = usize::try_from(next).ok()? * cb;
            img.get_mut(n..n + cb)?.fill(0);
            st.advance_area();
            area.fill(0);
        }
        list.push(ex);
    }
    Some((MemDev::new(img), list))
}
