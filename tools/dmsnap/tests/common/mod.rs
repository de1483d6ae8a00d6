// SPDX-License-Identifier: GPL-2.0
//! Shared test fixtures: crashing devices and expected merge results.
#![allow(dead_code)]

use std::cell::Cell;
use std::io;
use std::rc::Rc;

use dmsnap::dev::{BlockIo, MemDev};
use dmsnap_core::pure::disk::DiskException;

/// A device whose writes stay volatile until a flush, and which "loses
/// power" after a shared budget of writes: from then on every write and
/// flush fails, and [`CrashDev::after_crash`] keeps the flushed state plus
/// the unflushed writes picked by a mask (a power cut keeps any subset).
pub struct CrashDev {
    pub durable: MemDev,
    pending: Vec<(u64, Vec<u8>)>,
    budget: Rc<Cell<u64>>,
}

impl CrashDev {
    pub fn new(dev: MemDev, budget: Rc<Cell<u64>>) -> Self {
        Self { durable: dev, pending: Vec::new(), budget }
    }

    /// The device after the crash: flushed data plus the pending writes
    /// whose bit in `keep` is set (bit i for the i-th pending write).
    pub fn after_crash(mut self, keep: u64) -> MemDev {
        for (i, (off, data)) in self.pending.drain(..).enumerate() {
            if i >= 64 || keep >> i & 1 == 1 {
                let _ = self.durable.write_all_at(&data, off);
            }
        }
        self.durable
    }

    /// A power cut that tears writes: every 512-byte sector of every
    /// pending write survives or not by the bits of `seed`.
    pub fn after_torn_crash(mut self, mut seed: u64) -> MemDev {
        for (off, data) in self.pending.drain(..) {
            for (i, sector) in data.chunks(512).enumerate() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                if seed & 1 == 1 {
                    let _ = self.durable.write_all_at(sector, off + 512 * i as u64);
                }
            }
        }
        self.durable
    }

    fn spend(&self) -> io::Result<()> {
        let b = self.budget.get();
        if b == 0 {
            return Err(io::Error::other("power cut"));
        }
        self.budget.set(b - 1);
        Ok(())
    }
}

impl BlockIo for CrashDev {
    fn len_bytes(&self) -> u64 {
        self.durable.len_bytes()
    }
    fn logical_block_size(&self) -> u32 {
        512
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.durable.read_exact_at(buf, offset)?;
        // Later writes win: overlay the pending writes in order.
        let end = offset + buf.len() as u64;
        for (off, data) in &self.pending {
            let wend = off + data.len() as u64;
            let (s, e) = (offset.max(*off), end.min(wend));
            if s < e {
                buf[(s - offset) as usize..(e - offset) as usize]
                    .copy_from_slice(&data[(s - off) as usize..(e - off) as usize]);
            }
        }
        Ok(())
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.spend()?;
        if offset + buf.len() as u64 > self.len_bytes() {
            return Err(io::Error::other("past the end"));
        }
        self.pending.push((offset, buf.to_vec()));
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.spend()?;
        for (off, data) in self.pending.drain(..) {
            self.durable.write_all_at(&data, off)?;
        }
        Ok(())
    }
}

/// An origin image of `chunks` chunks with a recognisable pattern.
pub fn origin_image(chunk_bytes: usize, chunks: u64) -> MemDev {
    let mut v = vec![0u8; chunk_bytes * chunks as usize];
    for (i, b) in v.iter_mut().enumerate() {
        *b = (i / 512 % 241) as u8 ^ 0x5a;
    }
    MemDev::new(v)
}

/// The origin a complete merge of `list` (data from `cow`) must produce.
pub fn merged_origin(origin: &MemDev, cow: &MemDev, list: &[DiskException], chunk_bytes: usize) -> Vec<u8> {
    let mut out = origin.data.clone();
    for e in list {
        let (o, n) = (e.old as usize * chunk_bytes, e.new as usize * chunk_bytes);
        if o >= out.len() {
            continue;
        }
        let len = chunk_bytes.min(out.len() - o);
        out[o..o + len].copy_from_slice(&cow.data[n..n + len]);
    }
    out
}

/// A memory device that, like O_DIRECT, refuses I/O not aligned to its
/// logical block size.
pub struct AlignedDev {
    pub dev: MemDev,
    pub lbs: u32,
}

impl AlignedDev {
    fn check(&self, len: usize, offset: u64) -> io::Result<()> {
        let lbs = u64::from(self.lbs);
        if offset % lbs != 0 || len as u64 % lbs != 0 {
            return Err(io::Error::from_raw_os_error(22));
        }
        Ok(())
    }
}

impl BlockIo for AlignedDev {
    fn len_bytes(&self) -> u64 {
        self.dev.len_bytes()
    }
    fn logical_block_size(&self) -> u32 {
        self.lbs
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check(buf.len(), offset)?;
        self.dev.read_exact_at(buf, offset)
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check(buf.len(), offset)?;
        self.dev.write_all_at(buf, offset)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.dev.flush()
    }
}
