// SPDX-License-Identifier: GPL-2.0
//! Block devices, image files and in-memory images behind one trait.
//!
//! Block devices are opened with `O_DIRECT`: the kernel's targets read the
//! COW with bios, not through the page cache, so a write this tool leaves in
//! the cache (say, when it is killed) could otherwise be written back over
//! the kernel's own metadata later. Writers also open block devices with
//! `O_EXCL`, which fails while the device is mounted or held by
//! device-mapper; image files opened for writing are refused while a loop
//! device is backed by them (a table on that loop device would race us).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Random access to a COW or origin.
pub trait BlockIo {
    /// Size in bytes.
    fn len_bytes(&self) -> u64;
    /// Logical block size in bytes (512 for files).
    fn logical_block_size(&self) -> u32;
    /// Fill `buf` from byte `offset`; an error if the device ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Write `buf` at byte `offset`.
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Make every completed write durable (a cache flush).
    fn flush(&mut self) -> io::Result<()>;
}

/// An image held in memory (tests, fuzzing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemDev {
    /// The bytes.
    pub data: Vec<u8>,
    /// Flushes so far.
    pub flushes: u64,
}

impl MemDev {
    /// An image of the given bytes.
    pub fn new(data: Vec<u8>) -> Self {
        Self { data, flushes: 0 }
    }
}

fn past_end() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "past the end of the device")
}

impl BlockIo for MemDev {
    fn len_bytes(&self) -> u64 {
        self.data.len() as u64
    }
    fn logical_block_size(&self) -> u32 {
        512
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| past_end())?;
        let end = start.checked_add(buf.len()).ok_or_else(past_end)?;
        buf.copy_from_slice(self.data.get(start..end).ok_or_else(past_end)?);
        Ok(())
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| past_end())?;
        let end = start.checked_add(buf.len()).ok_or_else(past_end)?;
        self.data.get_mut(start..end).ok_or_else(past_end)?.copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.flushes += 1;
        Ok(())
    }
}

/// How to open a [`Device`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read-only.
    Read,
    /// Read and write an existing device or file.
    Write,
    /// Read and write; create a regular file of at least this many bytes
    /// if the path does not exist.
    CreateFile(u64),
}

/// A block device or a regular (image) file.
#[derive(Debug)]
pub struct Device {
    path: PathBuf,
    file: File,
    len: u64,
    lbs: u32,
    direct: bool,
}

/// Alignment of `O_DIRECT` buffers (covers any logical block size).
const DIRECT_ALIGN: usize = 4096;

/// A zeroed buffer of `len` bytes aligned for `O_DIRECT`, without `unsafe`:
/// an over-sized vector and the aligned window into it.
struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> Self {
        let storage = vec![0u8; len + DIRECT_ALIGN];
        let misalign = storage.as_ptr() as usize % DIRECT_ALIGN;
        let start = (DIRECT_ALIGN - misalign) % DIRECT_ALIGN;
        Self { storage, start, len }
    }
    fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

impl Device {
    /// Open `path`. Block devices get `O_DIRECT`, and `O_EXCL` when
    /// writing; regular files are used through the page cache.
    pub fn open(path: &Path, access: Access) -> io::Result<Self> {
        let meta = std::fs::metadata(path);
        let is_block = matches!(&meta, Ok(m) if m.file_type().is_block_device());
        let mut opts = OpenOptions::new();
        opts.read(true);
        let mut flags = 0;
        match access {
            Access::Read => {}
            Access::Write => {
                opts.write(true);
            }
            Access::CreateFile(_) => {
                opts.write(true);
                if !is_block {
                    opts.create(true);
                }
            }
        }
        if is_block {
            flags |= libc::O_DIRECT;
            if access != Access::Read {
                flags |= libc::O_EXCL;
            }
        }
        opts.custom_flags(flags);
        let file = opts.open(path).map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                io::Error::new(
                    e.kind(),
                    format!("{}: device is in use (mounted, or held by device-mapper)", path.display()),
                )
            } else {
                io::Error::new(e.kind(), format!("{}: {}", path.display(), e))
            }
        })?;
        let meta = file.metadata()?;
        let ft = meta.file_type();
        if !is_block && !ft.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a block device or regular file", path.display()),
            ));
        }
        if access != Access::Read && !is_block {
            if let Some(loop_dev) = loop_device_backed_by(&meta) {
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    format!("{}: device is in use (the backing file of {loop_dev})", path.display()),
                ));
            }
        }
        if let Access::CreateFile(min) = access {
            if !is_block && meta.len() < min {
                file.set_len(min)?;
            }
        }
        let len = if is_block { block_device_size(&file)? } else { file.metadata()?.len() };
        let lbs = if is_block { logical_block_size(meta.rdev()).unwrap_or(512) } else { 512 };
        Ok(Self { path: path.to_path_buf(), file, len, lbs, direct: is_block })
    }

    /// The path it was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Identity for "same device" checks: `(st_dev, st_ino)` of a file,
    /// `(0, st_rdev)` of a block device.
    pub fn identity(&self) -> io::Result<(u64, u64)> {
        let m = self.file.metadata()?;
        Ok(if m.file_type().is_block_device() { (0, m.rdev()) } else { (m.dev(), m.ino()) })
    }
}

/// The loop device (`/dev/loopN`) whose backing file is `file`, if any.
fn loop_device_backed_by(file: &std::fs::Metadata) -> Option<String> {
    for entry in std::fs::read_dir("/sys/block").ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file")) else { continue };
        let backing = backing.trim_end().trim_end_matches(" (deleted)");
        if let Ok(m) = std::fs::metadata(backing) {
            if m.dev() == file.dev() && m.ino() == file.ino() {
                return Some(format!("/dev/{name}"));
            }
        }
    }
    None
}

fn block_device_size(file: &File) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = file;
    let len = f.seek(SeekFrom::End(0))?;
    f.seek(SeekFrom::Start(0))?;
    Ok(len)
}

/// `queue/logical_block_size` of a block device from sysfs.
fn logical_block_size(rdev: u64) -> Option<u32> {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let text = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/queue/logical_block_size")).ok()?;
    text.trim().parse().ok()
}

impl BlockIo for Device {
    fn len_bytes(&self) -> u64 {
        self.len
    }
    fn logical_block_size(&self) -> u32 {
        self.lbs
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).ok_or_else(past_end)?;
        if end > self.len {
            return Err(past_end());
        }
        if self.direct {
            let mut tmp = AlignedBuf::new(buf.len());
            self.file.read_exact_at(tmp.as_mut_slice(), offset)?;
            buf.copy_from_slice(tmp.as_slice());
            Ok(())
        } else {
            self.file.read_exact_at(buf, offset)
        }
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).ok_or_else(past_end)?;
        if end > self.len {
            return Err(past_end());
        }
        if self.direct {
            let mut tmp = AlignedBuf::new(buf.len());
            tmp.as_mut_slice().copy_from_slice(buf);
            self.file.write_all_at(tmp.as_slice(), offset)
        } else {
            self.file.write_all_at(buf, offset)
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}
