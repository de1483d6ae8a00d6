// SPDX-License-Identifier: GPL-2.0
//! Reader and replayer for the on-disk log of the kernel's `dm-log-writes`
//! target (drivers/md/dm-log-writes.c, Documentation/admin-guide/
//! device-mapper/log-writes.rst).
//!
//! Log layout (all integers little-endian). `S` is the log's `sectorsize`,
//! the logical block size of the logged device (512 for virtio disks):
//!
//! ```text
//! byte 0          super block, one S-sized block:
//!                   u64 magic = 0x6a736677736872, u64 version = 1,
//!                   u64 nr_entries, u32 sectorsize
//! byte S          entry 0: one S-sized header block
//!                   u64 sector, u64 nr_sectors, u64 flags, u64 data_len
//!                   then, for a MARK, data_len bytes of mark text
//!                 followed (unless the entry is a DISCARD) by
//!                   nr_sectors * S bytes of the written data
//! ...             entry 1 right after entry 0's data, and so on
//! ```
//!
//! `sector` and `nr_sectors` count S-sized blocks of the logged device.
//! Flags: FLUSH 1, FUA 2, DISCARD 4, MARK 8, METADATA 16. A flush without
//! data and a mark have `nr_sectors == 0`. Writes are logged in the order the
//! target saw them become durable: plain writes when the next PREFLUSH
//! completes (just before the flush entry), FUA writes when they complete.
//! `nr_entries` in the super block is updated on every FUA or MARK entry and
//! when the target is removed (it logs a final "dm-log-writes-end" mark).

use std::alloc::{self, Layout};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;

pub const MAGIC: u64 = 0x006a_7366_7773_6872;
pub const VERSION: u64 = 1;
pub const FLAG_FLUSH: u64 = 1 << 0;
pub const FLAG_FUA: u64 = 1 << 1;
pub const FLAG_DISCARD: u64 = 1 << 2;
pub const FLAG_MARK: u64 = 1 << 3;
pub const FLAG_METADATA: u64 = 1 << 4;
/// Size of `struct log_write_entry`.
pub const ENTRY_HEADER_LEN: usize = 32;
/// Size of the meaningful part of `struct log_write_super` (packed).
pub const SUPER_LEN: usize = 28;

const O_DIRECT: i32 = 0o40000; // x86_64 and aarch64 Linux
const ALIGN: usize = 4096;
/// Largest piece of entry data moved per read/write.
const COPY_CHUNK: usize = 1 << 20;

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// A heap buffer aligned for O_DIRECT.
pub struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
    layout: Layout,
}

impl AlignedBuf {
    pub fn zeroed(len: usize) -> Self {
        let layout = Layout::from_size_align(len.max(1), ALIGN).expect("buffer layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, len, layout }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { alloc::dealloc(self.ptr, self.layout) }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for len bytes (initialised to zero at alloc).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and we hold &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

/// Positioned I/O on a log or a replay target.
pub trait Dev {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()>;
    fn write_all_at(&mut self, buf: &[u8], off: u64) -> io::Result<()>;
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Dev for File {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, off)
    }
    fn write_all_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, off)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.sync_all()
    }
}

/// An in-memory device (used by the tests; grows on write).
impl Dev for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let off = off as usize;
        if off + buf.len() > self.len() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past end"));
        }
        buf.copy_from_slice(&self[off..off + buf.len()]);
        Ok(())
    }
    fn write_all_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        let off = off as usize;
        if self.len() < off + buf.len() {
            self.resize(off + buf.len(), 0);
        }
        self[off..off + buf.len()].copy_from_slice(buf);
        Ok(())
    }
}

/// Open a device or file. Block devices are opened with O_DIRECT: the log
/// was written below the page cache (by the kernel target), so a buffered
/// read could return stale cached blocks, and replayed data must reach the
/// device, not the cache of a device that dm targets will later stack on.
pub fn open_dev(path: &Path, write: bool) -> io::Result<File> {
    let is_blk = std::fs::metadata(path)?.file_type().is_block_device();
    let mut o = OpenOptions::new();
    o.read(true);
    if write {
        o.write(true);
    }
    if is_blk {
        o.custom_flags(O_DIRECT);
    }
    o.open(path)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Super {
    pub nr_entries: u64,
    pub sectorsize: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub index: u64,
    /// In `sectorsize` units of the logged device.
    pub sector: u64,
    pub nr_sectors: u64,
    pub flags: u64,
    pub data_len: u64,
    /// The mark text, for MARK entries.
    pub mark: Option<String>,
    /// Byte offset of the entry's header block in the log.
    pub header_off: u64,
}

impl Entry {
    pub fn is(&self, flag: u64) -> bool {
        self.flags & flag != 0
    }
    /// Bytes of write data stored in the log after the header block.
    pub fn logged_data_bytes(&self, sectorsize: u32) -> u64 {
        if self.is(FLAG_DISCARD) {
            0
        } else {
            self.nr_sectors * sectorsize as u64
        }
    }
}

pub struct FlagsStr(pub u64);

impl fmt::Display for FlagsStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(u64, &str); 5] = [
            (FLAG_FLUSH, "FLUSH"),
            (FLAG_FUA, "FUA"),
            (FLAG_DISCARD, "DISCARD"),
            (FLAG_MARK, "MARK"),
            (FLAG_METADATA, "METADATA"),
        ];
        let mut rest = self.0;
        let mut first = true;
        for (bit, name) in NAMES {
            if rest & bit != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
                rest &= !bit;
            }
        }
        if rest != 0 {
            if !first {
                f.write_str("|")?;
            }
            write!(f, "UNKNOWN.{rest:#x}")?;
            first = false;
        }
        if first {
            f.write_str("NONE")?;
        }
        Ok(())
    }
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Sequential reader of a log's entries.
pub struct LogReader<D: Dev> {
    dev: D,
    pub sup: Super,
    next_index: u64,
    next_off: u64,
    hdr: AlignedBuf,
}

impl<D: Dev> LogReader<D> {
    pub fn open(dev: D) -> io::Result<Self> {
        // The super block is one sectorsize block; read 512 bytes first to
        // learn the sectorsize (O_DIRECT needs whole logical blocks: 512 is
        // the smallest, and a 4K device would reject it, so retry with 4K).
        let mut buf = AlignedBuf::zeroed(ALIGN);
        if dev.read_exact_at(&mut buf[..512], 0).is_err() {
            dev.read_exact_at(&mut buf[..ALIGN], 0)?;
        }
        let magic = le64(&buf, 0);
        if magic != MAGIC {
            return Err(invalid(format!("bad log magic {magic:#x}, want {MAGIC:#x}")));
        }
        let version = le64(&buf, 8);
        if version != VERSION {
            return Err(invalid(format!("log version {version}, want {VERSION}")));
        }
        let nr_entries = le64(&buf, 16);
        let sectorsize = u32::from_le_bytes(buf[24..28].try_into().unwrap());
        if !(512..=65536).contains(&sectorsize) || !sectorsize.is_power_of_two() {
            return Err(invalid(format!("bad log sectorsize {sectorsize}")));
        }
        let sup = Super { nr_entries, sectorsize };
        Ok(LogReader {
            dev,
            sup,
            next_index: 0,
            next_off: sectorsize as u64,
            hdr: AlignedBuf::zeroed(sectorsize as usize),
        })
    }

    /// Index of the entry `next_entry` returns next.
    pub fn position(&self) -> u64 {
        self.next_index
    }

    /// The next entry's header, or None after `nr_entries` entries. The
    /// reader then points past the entry's data.
    pub fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        if self.next_index >= self.sup.nr_entries {
            return Ok(None);
        }
        let ss = self.sup.sectorsize as u64;
        let off = self.next_off;
        self.dev.read_exact_at(&mut self.hdr, off).map_err(|e| {
            io::Error::new(e.kind(), format!("entry {} header at byte {off}: {e}", self.next_index))
        })?;
        let h = &self.hdr;
        let sector = le64(h, 0);
        let nr_sectors = le64(h, 8);
        let flags = le64(h, 16);
        let data_len = le64(h, 24);
        let mark = if flags & FLAG_MARK != 0 {
            let max = ss as usize - ENTRY_HEADER_LEN;
            if data_len as usize > max {
                return Err(invalid(format!(
                    "entry {}: mark length {data_len} exceeds {max}",
                    self.next_index
                )));
            }
            let text = &h[ENTRY_HEADER_LEN..ENTRY_HEADER_LEN + data_len as usize];
            Some(String::from_utf8_lossy(text).into_owned())
        } else {
            None
        };
        let e = Entry { index: self.next_index, sector, nr_sectors, flags, data_len, mark, header_off: off };
        let data = if flags & FLAG_DISCARD != 0 {
            0
        } else {
            nr_sectors
                .checked_mul(ss)
                .ok_or_else(|| invalid(format!("entry {}: size overflow", e.index)))?
        };
        self.next_off = off + ss + data;
        self.next_index += 1;
        Ok(Some(e))
    }

    /// Skip entries until `next_entry` would return entry `index`.
    pub fn seek_entry(&mut self, index: u64) -> io::Result<()> {
        if index > self.sup.nr_entries {
            return Err(invalid(format!(
                "entry {index} is beyond the log's {} entries",
                self.sup.nr_entries
            )));
        }
        if index < self.next_index {
            self.next_index = 0;
            self.next_off = self.sup.sectorsize as u64;
        }
        while self.next_index < index {
            self.next_entry()?;
        }
        Ok(())
    }

    /// Apply entry `e` (just returned by `next_entry`) to `target`. Writes
    /// copy the logged data; discards write zeros unless `discard` is false
    /// (the replay must be deterministic, and a discard on the replay device
    /// need not zero). Flushes and marks change nothing. Returns the number
    /// of bytes written.
    pub fn apply(&self, e: &Entry, target: &mut dyn Dev, discard: bool) -> io::Result<u64> {
        let ss = self.sup.sectorsize as u64;
        let len = e.nr_sectors * ss;
        if len == 0 || e.is(FLAG_MARK) {
            return Ok(0);
        }
        let dst = e.sector * ss;
        let mut buf = AlignedBuf::zeroed(COPY_CHUNK.min(len as usize));
        let mut done = 0u64;
        if e.is(FLAG_DISCARD) {
            if !discard {
                return Ok(0);
            }
            while done < len {
                let n = (len - done).min(buf.len() as u64) as usize;
                target.write_all_at(&buf[..n], dst + done)?;
                done += n as u64;
            }
            return Ok(len);
        }
        let src = e.header_off + ss;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            self.dev.read_exact_at(&mut buf[..n], src + done).map_err(|err| {
                io::Error::new(err.kind(), format!("entry {} data: {err}", e.index))
            })?;
            target.write_all_at(&buf[..n], dst + done).map_err(|err| {
                io::Error::new(err.kind(), format!("entry {}: write at byte {}: {err}", e.index, dst + done))
            })?;
            done += n as u64;
        }
        Ok(len)
    }
}

/// Where a replay stops (inclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Replay everything.
    End,
    /// Replay this many entries (counted from the start entry), like the
    /// reference replay-log's `--limit`.
    Limit(u64),
    /// Replay up to and including the first mark with this text.
    Mark(String),
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayStats {
    pub first: u64,
    /// Entries applied (flush and mark entries included).
    pub entries: u64,
    pub bytes: u64,
}

/// Index one past the last entry a replay from `start` to `stop` applies.
/// Fails if the mark does not exist or the limit runs past the log, so that
/// nothing is written for a replay that cannot be done as asked.
pub fn resolve_stop<D: Dev>(log: &mut LogReader<D>, start: u64, stop: &Stop) -> io::Result<u64> {
    let n = log.sup.nr_entries;
    match stop {
        Stop::End => Ok(n),
        Stop::Limit(k) => {
            let end = start
                .checked_add(*k)
                .filter(|&e| e <= n)
                .ok_or_else(|| invalid(format!("--limit {k} from entry {start} runs past the log's {n} entries")))?;
            Ok(end)
        }
        Stop::Mark(m) => {
            log.seek_entry(start)?;
            while let Some(e) = log.next_entry()? {
                if e.mark.as_deref() == Some(m.as_str()) {
                    return Ok(e.index + 1);
                }
            }
            Err(invalid(format!("mark {m:?} not found after entry {start}")))
        }
    }
}

/// Replay entries `[start, stop)` of `log` onto `target`.
pub fn replay<D: Dev>(
    log: &mut LogReader<D>,
    target: &mut dyn Dev,
    start: u64,
    stop: &Stop,
    discard: bool,
) -> io::Result<ReplayStats> {
    let end = resolve_stop(log, start, stop)?;
    log.seek_entry(start)?;
    let mut st = ReplayStats { first: start, ..Default::default() };
    while log.position() < end {
        let e = log.next_entry()?.expect("entry below nr_entries");
        st.bytes += log.apply(&e, target, discard)?;
        st.entries += 1;
    }
    target.sync()?;
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a log the way dm-log-writes lays it out.
    struct Builder {
        ss: usize,
        log: Vec<u8>,
        n: u64,
    }

    impl Builder {
        fn new(ss: usize) -> Self {
            Builder { ss, log: vec![0; ss], n: 0 }
        }
        fn entry(&mut self, sector: u64, nr: u64, flags: u64, data: &[u8], mark: &str) -> &mut Self {
            let mut h = vec![0u8; self.ss];
            h[0..8].copy_from_slice(&sector.to_le_bytes());
            h[8..16].copy_from_slice(&nr.to_le_bytes());
            h[16..24].copy_from_slice(&flags.to_le_bytes());
            h[24..32].copy_from_slice(&(mark.len() as u64).to_le_bytes());
            h[32..32 + mark.len()].copy_from_slice(mark.as_bytes());
            self.log.extend_from_slice(&h);
            self.log.extend_from_slice(data);
            self.n += 1;
            self
        }
        fn write(&mut self, sector: u64, data: &[u8], flags: u64) -> &mut Self {
            assert_eq!(data.len() % self.ss, 0);
            self.entry(sector, (data.len() / self.ss) as u64, flags, data, "")
        }
        fn flush(&mut self) -> &mut Self {
            self.entry(0, 0, FLAG_FLUSH, &[], "")
        }
        fn mark(&mut self, m: &str) -> &mut Self {
            self.entry(0, 0, FLAG_MARK, &[], m)
        }
        /// A discard of `nr` blocks: no data in the log.
        fn discard(&mut self, sector: u64, nr: u64) -> &mut Self {
            self.entry(sector, nr, FLAG_DISCARD, &[], "")
        }
        fn finish(&self) -> Vec<u8> {
            let mut l = self.log.clone();
            l[0..8].copy_from_slice(&MAGIC.to_le_bytes());
            l[8..16].copy_from_slice(&VERSION.to_le_bytes());
            l[16..24].copy_from_slice(&self.n.to_le_bytes());
            l[24..28].copy_from_slice(&(self.ss as u32).to_le_bytes());
            l
        }
    }

    fn blocks(ss: usize, n: usize, fill: u8) -> Vec<u8> {
        (0..ss * n).map(|i| fill.wrapping_add((i / ss) as u8)).collect()
    }

    fn sample(ss: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
        // Returns the log and the expected image after each entry.
        let mut b = Builder::new(ss);
        let mut img = vec![0u8; 16 * ss];
        let mut states = Vec::new();
        let w = |img: &mut Vec<u8>, s: usize, d: &[u8]| img[s * ss..s * ss + d.len()].copy_from_slice(d);
        let d1 = blocks(ss, 2, 10);
        b.write(3, &d1, 0);
        w(&mut img, 3, &d1);
        states.push(img.clone());
        let d2 = blocks(ss, 1, 50);
        b.write(4, &d2, 0);
        w(&mut img, 4, &d2);
        states.push(img.clone());
        b.flush();
        states.push(img.clone());
        b.mark("one");
        states.push(img.clone());
        let d3 = blocks(ss, 3, 90);
        b.write(0, &d3, FLAG_FUA | FLAG_FLUSH);
        w(&mut img, 0, &d3);
        states.push(img.clone());
        b.discard(1, 2);
        w(&mut img, 1, &vec![0u8; 2 * ss]);
        states.push(img.clone());
        let d4 = blocks(ss, 1, 200);
        b.write(15, &d4, FLAG_FUA);
        w(&mut img, 15, &d4);
        states.push(img.clone());
        b.mark("dm-log-writes-end");
        states.push(img.clone());
        (b.finish(), states)
    }

    fn replay_onto(log: &[u8], start: u64, stop: Stop, base: Vec<u8>, discard: bool) -> io::Result<(Vec<u8>, ReplayStats)> {
        let mut r = LogReader::open(log.to_vec())?;
        let mut t = base;
        let st = replay(&mut r, &mut t, start, &stop, discard)?;
        Ok((t, st))
    }

    #[test]
    fn parses_super_and_entries() {
        for ss in [512usize, 4096] {
            let (log, _) = sample(ss);
            let mut r = LogReader::open(log).unwrap();
            assert_eq!(r.sup, Super { nr_entries: 8, sectorsize: ss as u32 });
            let mut all = Vec::new();
            while let Some(e) = r.next_entry().unwrap() {
                all.push(e);
            }
            assert_eq!(all.len(), 8);
            let got: Vec<(u64, u64, u64)> = all.iter().map(|e| (e.sector, e.nr_sectors, e.flags)).collect();
            assert_eq!(
                got,
                vec![
                    (3, 2, 0),
                    (4, 1, 0),
                    (0, 0, FLAG_FLUSH),
                    (0, 0, FLAG_MARK),
                    (0, 3, FLAG_FUA | FLAG_FLUSH),
                    (1, 2, FLAG_DISCARD),
                    (15, 1, FLAG_FUA),
                    (0, 0, FLAG_MARK),
                ]
            );
            assert_eq!(all[3].mark.as_deref(), Some("one"));
            assert_eq!(all[7].mark.as_deref(), Some("dm-log-writes-end"));
            assert_eq!(all[0].header_off, ss as u64);
            // entry 1 follows entry 0's header and 2 data blocks
            assert_eq!(all[1].header_off, (1 + 1 + 2) as u64 * ss as u64);
            // a discard has no data in the log
            assert_eq!(all[6].header_off, all[5].header_off + ss as u64);
            assert_eq!(FlagsStr(all[4].flags).to_string(), "FLUSH|FUA");
            assert_eq!(FlagsStr(0).to_string(), "NONE");
            assert_eq!(FlagsStr(FLAG_MARK | 0x40).to_string(), "MARK|UNKNOWN.0x40");
        }
    }

    #[test]
    fn every_prefix_replays_to_its_model() {
        for ss in [512usize, 4096] {
            let (log, states) = sample(ss);
            for k in 1..=states.len() {
                let (img, st) = replay_onto(&log, 0, Stop::Limit(k as u64), vec![0; 16 * ss], true).unwrap();
                assert_eq!(img, states[k - 1], "ss {ss} limit {k}");
                assert_eq!(st.entries, k as u64);
            }
            let (img, _) = replay_onto(&log, 0, Stop::End, vec![0; 16 * ss], true).unwrap();
            assert_eq!(&img, states.last().unwrap());
        }
    }

    #[test]
    fn incremental_replay_equals_full_replay() {
        let ss = 512;
        let (log, states) = sample(ss);
        let mut t = vec![0u8; 16 * ss];
        let mut r = LogReader::open(log.clone()).unwrap();
        let mut pos = 0;
        for step in [2u64, 1, 3, 2] {
            replay(&mut r, &mut t, pos, &Stop::Limit(step), true).unwrap();
            pos += step;
            assert_eq!(t, states[pos as usize - 1]);
        }
    }

    #[test]
    fn end_mark() {
        let ss = 512;
        let (log, states) = sample(ss);
        let (img, st) = replay_onto(&log, 0, Stop::Mark("one".into()), vec![0; 16 * ss], true).unwrap();
        assert_eq!(st.entries, 4);
        assert_eq!(img, states[3]);
        // A missing mark writes nothing and fails.
        let base = vec![7u8; 16 * ss];
        let mut r = LogReader::open(log.clone()).unwrap();
        let mut t = base.clone();
        assert!(replay(&mut r, &mut t, 0, &Stop::Mark("nope".into()), true).is_err());
        assert_eq!(t, base);
        // The mark is searched from the start entry on.
        assert!(replay_onto(&log, 4, Stop::Mark("one".into()), vec![0; 16 * ss], true).is_err());
    }

    #[test]
    fn discard_zeroes_or_is_skipped() {
        let ss = 512;
        let (log, _) = sample(ss);
        let base = vec![0xffu8; 16 * ss];
        let (img, _) = replay_onto(&log, 5, Stop::Limit(1), base.clone(), true).unwrap();
        assert!(img[ss..3 * ss].iter().all(|&b| b == 0));
        assert!(img[3 * ss..].iter().all(|&b| b == 0xff) && img[..ss].iter().all(|&b| b == 0xff));
        let (img, st) = replay_onto(&log, 5, Stop::Limit(1), base.clone(), false).unwrap();
        assert_eq!(img, base);
        assert_eq!(st.bytes, 0);
    }

    #[test]
    fn limit_past_end_fails_without_writing() {
        let (log, _) = sample(512);
        let base = vec![1u8; 8192];
        let mut r = LogReader::open(log).unwrap();
        let mut t = base.clone();
        assert!(replay(&mut r, &mut t, 3, &Stop::Limit(6), true).is_err());
        assert_eq!(t, base);
        assert!(r.seek_entry(9).is_err());
    }

    #[test]
    fn rejects_bad_super() {
        let (log, _) = sample(512);
        let mut bad = log.clone();
        bad[0] ^= 1;
        assert!(LogReader::open(bad).is_err());
        let mut bad = log.clone();
        bad[8] = 2;
        assert!(LogReader::open(bad).is_err());
        let mut bad = log.clone();
        bad[24..28].copy_from_slice(&1000u32.to_le_bytes());
        assert!(LogReader::open(bad).is_err());
        assert!(LogReader::open(vec![0u8; 100]).is_err());
    }

    #[test]
    fn truncated_log_is_an_error() {
        let (log, _) = sample(512);
        // Cut inside entry 4's data: entries 0..3 still read, 4's data fails.
        let cut = log.len() - 512 * 6;
        let short = log[..cut].to_vec();
        let mut r = LogReader::open(short).unwrap();
        let mut t = vec![0u8; 8192];
        assert!(replay(&mut r, &mut t, 0, &Stop::End, true).is_err());
        // nr_entries larger than the log: reading the missing header fails.
        let mut more = log.clone();
        more[16..24].copy_from_slice(&9u64.to_le_bytes());
        let mut r = LogReader::open(more).unwrap();
        for _ in 0..8 {
            r.next_entry().unwrap().unwrap();
        }
        assert!(r.next_entry().is_err());
    }

    #[test]
    fn overlong_mark_is_rejected() {
        let mut b = Builder::new(512);
        b.mark("x");
        let mut log = b.finish();
        log[512 + 24..512 + 32].copy_from_slice(&600u64.to_le_bytes());
        let mut r = LogReader::open(log).unwrap();
        assert!(r.next_entry().is_err());
    }
}
