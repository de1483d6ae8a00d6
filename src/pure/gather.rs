// SPDX-License-Identifier: GPL-2.0

//! Gathered copies: several small copies share one buffer, and the pieces
//! that lie next to each other both on a device and in the buffer become
//! one request.
//!
//! Concurrent 4 KiB origin writes each need a one-chunk copy per snapshot.
//! Their sources are scattered, but each snapshot allocates its COW chunks
//! one after another, so the destinations of one snapshot are consecutive.
//! Reading every source into consecutive buffer slots and joining the
//! destination pieces, listed destination by destination in copy order,
//! turns k * N chunk writes into about N writes.

/// A piece of a gathered copy: `sectors` sectors at `sector` of device
/// `dev`, held at sector offset `buf` of the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece<D> {
    /// The device.
    pub dev: D,
    /// First sector on the device.
    pub sector: u64,
    /// Length in sectors.
    pub sectors: u64,
    /// First sector in the buffer.
    pub buf: u64,
}

impl<D: Copy + Eq> Piece<D> {
    /// Whether `next` starts where this piece ends, on the device and in
    /// the buffer.
    fn joins(&self, next: &Self) -> bool {
        self.dev == next.dev
            && self.sector.checked_add(self.sectors) == Some(next.sector)
            && self.buf.checked_add(self.sectors) == Some(next.buf)
    }
}

/// Joins every piece into the one before it where they are contiguous
/// (see [`Piece`]), keeping the order. The joined pieces are moved to the
/// front of `pieces`; returns how many there are.
pub fn join_adjacent<D: Copy + Eq>(pieces: &mut [Piece<D>]) -> usize {
    let mut len = 0usize;
    for i in 0..pieces.len() {
        let Some(&piece) = pieces.get(i) else {
            break;
        };
        if let Some(last) = len.checked_sub(1).and_then(|l| pieces.get_mut(l)) {
            if last.joins(&piece) {
                last.sectors = last.sectors.saturating_add(piece.sectors);
                continue;
            }
        }
        if let Some(slot) = pieces.get_mut(len) {
            *slot = piece;
        }
        len = len.saturating_add(1);
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(dev: u8, sector: u64, sectors: u64, buf: u64) -> Piece<u8> {
        Piece { dev, sector, sectors, buf }
    }

    #[test]
    fn consecutive_destinations_become_one_write() {
        // Three 4 KiB copies, two snapshots (devices 1 and 2), listed
        // snapshot by snapshot: the COW chunks of each snapshot follow each
        // other, as do the buffer slots.
        let mut v = [
            p(1, 800, 8, 0),
            p(1, 808, 8, 8),
            p(1, 816, 8, 16),
            p(2, 64, 8, 0),
            p(2, 72, 8, 8),
            p(2, 80, 8, 16),
        ];
        let n = join_adjacent(&mut v);
        assert_eq!(v.get(..n), Some(&[p(1, 800, 24, 0), p(2, 64, 24, 0)][..]));
    }

    #[test]
    fn a_gap_on_the_device_or_in_the_buffer_splits() {
        // Buffer gap between the first two, device gap before the last.
        let mut v = [p(1, 0, 8, 0), p(1, 8, 8, 16), p(1, 16, 8, 24), p(1, 32, 8, 32)];
        let n = join_adjacent(&mut v);
        assert_eq!(v.get(..n), Some(&[p(1, 0, 8, 0), p(1, 8, 16, 16), p(1, 32, 8, 32)][..]));
    }
}
