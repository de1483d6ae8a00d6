// SPDX-License-Identifier: GPL-2.0
//! `dump` and `restore`: the COW's header and exception areas as text, and
//! back. The format is documented in Documentation/dmsnap.md.
//!
//! Each area lists its entries in slot order as runs of consecutive chunks,
//! so `restore` writes back the same bytes: the 16-byte header followed by
//! zeros, and in every area the entries followed by zeros (which is all the
//! kernel ever writes there). Data chunks are not part of a dump.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use dmsnap_core::pure::chunk::{ChunkSize, Sector, SECTOR_SHIFT};
use std::collections::HashSet;

use dmsnap_core::pure::disk::{
    check_exception, decode_header, write_entry, DiskException, DiskHeader, Geometry, HeaderState,
    SNAPSHOT_DISK_VERSION,
};

use crate::dev::BlockIo;
use crate::scan::{slot_runs, Cow, SlotRun};

/// Version of the dump format (bumped only for incompatible changes).
pub const DUMP_FORMAT_VERSION: u32 = 1;

/// One area of a dump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpArea {
    /// Area index.
    pub index: u64,
    /// Chunk holding it (informational; restore checks it).
    pub location: u64,
    /// Live entries in the area.
    pub entries: u64,
    /// The entries, as runs in slot order.
    pub runs: Vec<SlotRun>,
}

/// The header fields of a dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpHeader {
    /// The snapshot is valid.
    pub valid: bool,
    /// On-disk format version (1).
    pub version: u32,
    /// Chunk size in sectors.
    pub chunk_sectors: u32,
}

/// A whole dump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dump {
    /// [`DUMP_FORMAT_VERSION`].
    pub dmsnap_dump: u32,
    /// Size of the COW it was taken from, in sectors.
    pub cow_sectors: Sector,
    /// The header.
    pub header: DumpHeader,
    /// `chunk_sectors * 32` (informational).
    pub exceptions_per_area: u32,
    /// Entries in all areas (informational; restore checks it).
    pub exceptions: u64,
    /// Every area read, the last one holding the terminator.
    pub areas: Vec<DumpArea>,
}

impl Dump {
    /// The dump of a COW as read (corrupt entries included, as they are on
    /// disk; a cut-off list ends at the last readable area).
    pub fn of(cow: &Cow) -> Self {
        Self {
            dmsnap_dump: DUMP_FORMAT_VERSION,
            cow_sectors: cow.cow_sectors(),
            header: DumpHeader {
                valid: cow.header.valid,
                version: cow.header.version,
                chunk_sectors: cow.header.chunk_size,
            },
            exceptions_per_area: cow.geometry().exceptions_per_area(),
            exceptions: cow.exception_count(),
            areas: cow
                .areas
                .iter()
                .map(|a| DumpArea {
                    index: a.index,
                    location: a.location,
                    entries: a.entries.len() as u64,
                    runs: slot_runs(&a.entries),
                })
                .collect(),
        }
    }

    /// JSON, pretty-printed, one run per line.
    pub fn to_json(&self) -> String {
        // serde_json cannot fail on these plain types.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// XML.
    pub fn to_xml(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "<dmsnap_dump version=\"{}\" cow_sectors=\"{}\" valid=\"{}\" disk_version=\"{}\" chunk_sectors=\"{}\" exceptions_per_area=\"{}\" exceptions=\"{}\">",
            self.dmsnap_dump,
            self.cow_sectors,
            u8::from(self.header.valid),
            self.header.version,
            self.header.chunk_sectors,
            self.exceptions_per_area,
            self.exceptions
        );
        for a in &self.areas {
            let _ = writeln!(s, "  <area index=\"{}\" location=\"{}\" entries=\"{}\">", a.index, a.location, a.entries);
            for r in &a.runs {
                let _ = writeln!(s, "    <run origin=\"{}\" cow=\"{}\" length=\"{}\"/>", r.origin, r.cow, r.length);
            }
            let _ = writeln!(s, "  </area>");
        }
        s.push_str("</dmsnap_dump>\n");
        s
    }

    /// Parse either form (XML if the text starts with `<`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim_start();
        if t.starts_with('<') {
            parse_xml(t)
        } else {
            serde_json::from_str(t).map_err(|e| format!("bad JSON dump: {e}"))
        }
    }

    /// Check the dump and build the header chunk and the area chunks.
    pub fn encode(&self) -> Result<Encoded, String> {
        if self.dmsnap_dump != DUMP_FORMAT_VERSION {
            return Err(format!("dump format version {} is not supported (want {DUMP_FORMAT_VERSION})", self.dmsnap_dump));
        }
        if self.header.version != SNAPSHOT_DISK_VERSION {
            return Err(format!("on-disk version {} is not supported", self.header.version));
        }
        let chunk = ChunkSize::new(self.header.chunk_sectors, 512, 512)
            .map_err(|e| format!("chunk size {}: {e}", self.header.chunk_sectors))?;
        let geom = Geometry::new(chunk);
        let epa = u64::from(geom.exceptions_per_area());
        let header = DiskHeader { valid: self.header.valid, version: self.header.version, chunk_size: self.header.chunk_sectors };
        let mut header_chunk = vec![0u8; chunk.bytes()];
        header.encode(&mut header_chunk).map_err(|_| "chunk too small".to_string())?;
        if self.areas.is_empty() {
            return Err("a dump needs at least area 0".into());
        }
        let cow_chunks = self.cow_sectors >> chunk.shift();
        let (mut olds, mut news) = (HashSet::new(), HashSet::new());
        let mut total = 0u64;
        let mut areas = Vec::new();
        let last = self.areas.len() - 1;
        for (i, a) in self.areas.iter().enumerate() {
            if a.index != i as u64 {
                return Err(format!("area {} is listed where area {i} belongs", a.index));
            }
            let location = geom.area_location(a.index).ok_or("area index out of range")?;
            if a.location != location {
                return Err(format!("area {}: location {} does not match chunk size (want {location})", a.index, a.location));
            }
            let mut buf = vec![0u8; chunk.bytes()];
            let mut slot = 0u64;
            for r in &a.runs {
                if r.length == 0 {
                    return Err(format!("area {}: a run of length 0", a.index));
                }
                for k in 0..r.length {
                    let ex = DiskException {
                        old: r.origin.checked_add(k).ok_or("origin chunk overflows")?,
                        new: r.cow.checked_add(k).ok_or("COW chunk overflows")?,
                    };
                    if ex.new == 0 {
                        return Err(format!("area {} slot {slot}: COW chunk 0 would end the list", a.index));
                    }
                    if slot >= epa {
                        return Err(format!("area {}: more than {epa} entries", a.index));
                    }
                    // The checks of `dmsnap check`: a dump that would make a
                    // corrupt COW is refused.
                    check_exception(geom, ex, cow_chunks).map_err(|c| {
                        format!("area {} slot {slot}: exception {} -> {}: {}", a.index, ex.old, ex.new, c.message())
                    })?;
                    if !olds.insert(ex.old) || !news.insert(ex.new) {
                        return Err(format!(
                            "area {} slot {slot}: exception {} -> {}: a second exception for that origin or COW chunk",
                            a.index, ex.old, ex.new
                        ));
                    }
                    write_entry(geom, &mut buf, slot as u32, ex).map_err(|e| format!("{e:?}"))?;
                    slot += 1;
                }
            }
            if slot != a.entries {
                return Err(format!("area {}: {} entries listed, runs hold {slot}", a.index, a.entries));
            }
            if i < last && slot != epa {
                return Err(format!("area {} has {slot} entries, but only the last area may be short of {epa}", a.index));
            }
            total += slot;
            areas.push((location, buf));
        }
        if total != self.exceptions {
            return Err(format!("{} exceptions listed, areas hold {total}", self.exceptions));
        }
        Ok(Encoded { chunk, header_chunk, areas, last_area_full: self.areas.last().map(|a| a.entries) == Some(epa) })
    }
}

/// The chunks a restore writes.
#[derive(Clone, Debug)]
pub struct Encoded {
    /// The chunk size.
    pub chunk: ChunkSize,
    /// Chunk 0.
    pub header_chunk: Vec<u8>,
    /// `(location, bytes)` of each area.
    pub areas: Vec<(u64, Vec<u8>)>,
    /// The last area is full: the list would continue past it (a cut-off
    /// dump); restore refuses it.
    pub last_area_full: bool,
}

/// Write a dump onto a COW: the header chunk and every area chunk, then a
/// flush. Fails before writing anything if the dump is inconsistent, the
/// COW is too small, or (unless `force`) the COW already holds a store:
/// metadata from another time or another COW would map its data chunks
/// wrongly, silently.
pub fn restore(dump: &Dump, cow: &mut dyn BlockIo, force: bool) -> Result<(), String> {
    let enc = dump.encode()?;
    if !force && cow.len_bytes() >= 512 {
        let mut first = vec![0u8; cow.logical_block_size().max(512) as usize];
        if cow.read_exact_at(&mut first, 0).is_ok() && matches!(decode_header(&first), Ok(HeaderState::Existing(_))) {
            return Err("the output already holds a COW store (a \"SnAp\" header); restoring another list over it \
                        maps its data chunks wrongly unless the dump was taken from this very COW after its last change: \
                        use --force to overwrite its header and areas"
                .into());
        }
    }
    if enc.last_area_full {
        return Err("the last area of the dump is full, so the list continues past the dump (a dump of a cut-off COW)".into());
    }
    let chunk_bytes = enc.chunk.bytes() as u64;
    let need = enc.areas.iter().map(|(loc, _)| (loc + 1) * chunk_bytes).max().unwrap_or(chunk_bytes);
    let need = need.max(dump.cow_sectors << SECTOR_SHIFT);
    if cow.len_bytes() < need {
        return Err(format!("the output holds {} bytes, the dump needs {need}", cow.len_bytes()));
    }
    if cow.logical_block_size() as u64 > chunk_bytes {
        return Err("the output's logical block size exceeds the chunk size".into());
    }
    for (loc, buf) in &enc.areas {
        cow.write_all_at(buf, loc * chunk_bytes).map_err(|e| format!("writing area at chunk {loc}: {e}"))?;
    }
    cow.flush().map_err(|e| format!("flush: {e}"))?;
    // The header last: until it is written, a fresh COW still reads as new.
    cow.write_all_at(&enc.header_chunk, 0).map_err(|e| format!("writing the header: {e}"))?;
    cow.flush().map_err(|e| format!("flush: {e}"))?;
    Ok(())
}

/// The attributes of one XML start tag, in order.
fn xml_attrs(tag: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = tag;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() || rest == "/" {
            return Ok(out);
        }
        let eq = rest.find('=').ok_or_else(|| format!("bad attribute in <{tag}>"))?;
        let name = rest[..eq].trim().to_string();
        let after = rest[eq + 1..].trim_start();
        let after = after.strip_prefix('"').ok_or_else(|| format!("unquoted attribute {name}"))?;
        let close = after.find('"').ok_or_else(|| format!("unterminated attribute {name}"))?;
        out.push((name, after[..close].to_string()));
        rest = &after[close + 1..];
    }
}

fn attr<T: std::str::FromStr>(attrs: &[(String, String)], name: &str, tag: &str) -> Result<T, String> {
    let v = attrs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .ok_or_else(|| format!("<{tag}> lacks {name}"))?;
    v.parse().map_err(|_| format!("<{tag}>: {name}=\"{v}\" is not a number"))
}

/// Parse the XML form written by [`Dump::to_xml`] (any whitespace between
/// tags; no other elements).
fn parse_xml(text: &str) -> Result<Dump, String> {
    let mut dump: Option<Dump> = None;
    let mut area: Option<DumpArea> = None;
    let mut closed = false;
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        if !rest[..open].trim().is_empty() {
            return Err(format!("unexpected text: {}", rest[..open].trim()));
        }
        let end = rest[open..].find('>').ok_or("unterminated tag")? + open;
        let tag = &rest[open + 1..end];
        rest = &rest[end + 1..];
        let (name, body) = tag.split_once(char::is_whitespace).unwrap_or((tag, ""));
        match name {
            "dmsnap_dump" if dump.is_none() => {
                let a = xml_attrs(body)?;
                let valid: u8 = attr(&a, "valid", name)?;
                dump = Some(Dump {
                    dmsnap_dump: attr(&a, "version", name)?,
                    cow_sectors: attr(&a, "cow_sectors", name)?,
                    header: DumpHeader {
                        valid: valid != 0,
                        version: attr(&a, "disk_version", name)?,
                        chunk_sectors: attr(&a, "chunk_sectors", name)?,
                    },
                    exceptions_per_area: attr(&a, "exceptions_per_area", name)?,
                    exceptions: attr(&a, "exceptions", name)?,
                    areas: Vec::new(),
                });
            }
            "area" if dump.is_some() && area.is_none() => {
                let a = xml_attrs(body)?;
                area = Some(DumpArea {
                    index: attr(&a, "index", name)?,
                    location: attr(&a, "location", name)?,
                    entries: attr(&a, "entries", name)?,
                    runs: Vec::new(),
                });
            }
            "run" if area.is_some() => {
                let a = xml_attrs(body)?;
                if let Some(ar) = area.as_mut() {
                    ar.runs.push(SlotRun {
                        origin: attr(&a, "origin", name)?,
                        cow: attr(&a, "cow", name)?,
                        length: attr(&a, "length", name)?,
                    });
                }
            }
            "/area" => {
                let ar = area.take().ok_or("</area> without <area>")?;
                if let Some(d) = dump.as_mut() {
                    d.areas.push(ar);
                }
            }
            "/dmsnap_dump" if area.is_none() && dump.is_some() => closed = true,
            _ => return Err(format!("unexpected <{tag}>")),
        }
        if closed {
            break;
        }
    }
    if !closed || !rest.trim().is_empty() {
        return Err("the dump does not end with </dmsnap_dump>".into());
    }
    dump.ok_or_else(|| "no <dmsnap_dump> element".into())
}
