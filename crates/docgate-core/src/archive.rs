//! ZIP documents: open them, check every entry, refuse bombs, split them when asked.
//!
//! A ZIP is only as acceptable as its least acceptable entry, so every entry is decompressed
//! to the end — with a byte budget, so a CRC error or an entry that expands beyond its declared
//! size is caught here and not at the provider — its head sniffed, and (when the policy asks)
//! its content scanned like a document of its own ([`crate::scan`]). Nothing is written
//! anywhere while checking: decompressed bytes go through one small buffer and are dropped, so
//! a bomb costs at most `max_total_uncompressed` bytes of CPU work and no memory or disk.
//!
//! The checks run cheapest first:
//! 1. the end records: entry count and directory size, before the directory is read;
//! 2. the central directory: declared sizes against `max_total_uncompressed` and
//!    `max_compression_ratio` (the classic 10 GB bomb is refused before a byte is inflated);
//! 3. every entry's name, in the central directory *and* its local header (they must agree:
//!    tools that stream a ZIP read the local one) — no `..`, absolute or drive paths,
//!    backslashes, NUL or control characters, since whoever unpacks the archive later writes
//!    files by those names;
//! 4. inflating: actual bytes against declared ones, and the actual expansion against the
//!    compressed bytes the inflater really consumed, so a directory that lies about
//!    compressed sizes does not get a bomb past the ratio.
//!
//! Splitting copies entries' compressed bytes unchanged into several smaller archives (no
//! recompression): used when a provider answers 413 to a multi-entry ZIP.

use std::{
    io::{self, Read, Seek},
    path::{Path, PathBuf},
};

use flate2::{Decompress, FlushDecompress, Status};
use serde::{Deserialize, Serialize};

use crate::{
    media::{sniff, MediaRange, SNIFF_BYTES},
    scan::{ContentScan, ScanError},
};

/// The default for [`ZipRules::max_compression_ratio`].
pub const DEFAULT_MAX_COMPRESSION_RATIO: u32 = 100;

/// Expansions up to this many bytes are never refused for their ratio. A 10-byte entry that
/// compresses to 1 byte, or a 300 KiB blank form that deflates to 2 KiB, is not a bomb:
/// inflating 1 MiB costs about a millisecond and amplifies nothing worth defending against,
/// while `max_total_uncompressed` still bounds the sum. Above it, the ratio applies in full.
pub const RATIO_FLOOR_BYTES: u64 = 1 << 20;

fn default_max_compression_ratio() -> u32 {
    DEFAULT_MAX_COMPRESSION_RATIO
}

/// What a ZIP may hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZipRules {
    /// Every entry's sniffed type must match one of these.
    pub entry_types: Vec<MediaRange>,
    pub max_entries: usize,
    /// The sum of all entries' uncompressed sizes.
    pub max_total_uncompressed: u64,
    /// The largest expansion, uncompressed : compressed, of any entry and of the whole archive
    /// (against its length), once beyond [`RATIO_FLOOR_BYTES`].
    #[serde(default = "default_max_compression_ratio")]
    pub max_compression_ratio: u32,
}

/// Whether `uncompressed` bytes from `compressed` exceed the ratio (see [`RATIO_FLOOR_BYTES`]).
pub fn ratio_exceeded(uncompressed: u64, compressed: u64, max_ratio: u32) -> bool {
    uncompressed > RATIO_FLOOR_BYTES
        && uncompressed > compressed.saturating_mul(u64::from(max_ratio))
}

/// One checked entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZipEntry {
    pub name: String,
    pub size: u64,
    pub compressed_size: u64,
    pub media_type: String,
}

/// Why a ZIP was refused. Entry names in here are already made safe for messages
/// ([`display_name`]).
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the ZIP cannot be read: {0}")]
    Corrupt(String),
    #[error("the ZIP has {count} entries; at most {max} are allowed")]
    TooManyEntries { count: usize, max: usize },
    #[error("the ZIP expands to {size} bytes or more; at most {max} are allowed")]
    ExpandsTooFar { size: u64, max: u64 },
    #[error("entry `{name}` expands {compressed} bytes to {uncompressed}, more than {max}:1")]
    EntryRatio {
        name: String,
        uncompressed: u64,
        compressed: u64,
        max: u32,
    },
    #[error("the ZIP ({compressed} bytes) expands to {uncompressed} bytes, more than {max}:1")]
    ArchiveRatio {
        uncompressed: u64,
        compressed: u64,
        max: u32,
    },
    #[error("entry `{name}` expands beyond its declared size of {declared} bytes")]
    LyingSize { name: String, declared: u64 },
    #[error("entry `{name}` is encrypted")]
    Encrypted { name: String },
    #[error("entry `{name}` is {sniffed}, which is not accepted inside a ZIP")]
    EntryType { name: String, sniffed: String },
    #[error("entry `{name}` has an unsafe name: {reason}")]
    UnsafeName { name: String, reason: &'static str },
    #[error("entry `{central}` is named `{local}` in its local header")]
    NameMismatch { central: String, local: String },
    #[error("the ZIP lists {listed} entries under only {distinct} distinct names")]
    DuplicateNames { listed: u64, distinct: usize },
    #[error("entry `{name}`: {source}")]
    ActiveContent {
        name: String,
        #[source]
        source: ScanError,
    },
    #[error("the ZIP has no files")]
    Empty,
    #[error("spool I/O failed: {0}")]
    Io(#[from] io::Error),
}

/// A zip crate error as ours: the reader's I/O failing is the store's trouble (worth
/// another try), anything else the archive's.
pub fn corrupt(e: zip::result::ZipError) -> ArchiveError {
    match e {
        zip::result::ZipError::Io(io) => ArchiveError::Io(io),
        other => ArchiveError::Corrupt(other.to_string()),
    }
}

/// A read past the end of the archive is the archive's fault, not the spool's.
fn read_failed(e: io::Error, what: &str) -> ArchiveError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        ArchiveError::Corrupt(format!("{what} is cut short"))
    } else {
        ArchiveError::Io(e)
    }
}

/// How an entry name may appear in messages and problem documents: invalid UTF-8 replaced,
/// control characters escaped, at most [`NAME_SHOWN`] characters (then `…`).
pub fn display_name(raw: &[u8]) -> String {
    let mut out = String::new();
    let mut shown = 0;
    for c in String::from_utf8_lossy(raw).chars() {
        let piece: String = if c.is_control() {
            c.escape_default().collect()
        } else {
            c.to_string()
        };
        let len = piece.chars().count();
        if shown + len > NAME_SHOWN {
            out.push('…');
            break;
        }
        out.push_str(&piece);
        shown += len;
    }
    out
}

/// Characters of an entry name shown in errors.
pub const NAME_SHOWN: usize = 128;

/// Why an entry name would be unsafe to unpack, if it is. Names are checked as bytes: a
/// separator is a separator in every encoding a ZIP may declare.
pub fn unsafe_name(raw: &[u8]) -> Option<&'static str> {
    if raw.is_empty() {
        return Some("it is empty");
    }
    if raw.contains(&0) {
        return Some("it contains a NUL byte");
    }
    if raw.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Some("it contains control characters");
    }
    if raw.contains(&b'\\') {
        return Some("it contains a backslash (a Windows path separator)");
    }
    if raw[0] == b'/' {
        return Some("it is an absolute path");
    }
    if raw.len() >= 2 && raw[0].is_ascii_alphabetic() && raw[1] == b':' {
        return Some("it starts with a drive letter");
    }
    if raw.split(|&b| b == b'/').any(|segment| segment == b"..") {
        return Some("it leads out of the extraction directory (`..`)");
    }
    None
}

fn check_name(raw: &[u8]) -> Result<(), ArchiveError> {
    match unsafe_name(raw) {
        Some(reason) => Err(ArchiveError::UnsafeName {
            name: display_name(raw),
            reason,
        }),
        None => Ok(()),
    }
}
/// Bytes of central directory allowed per entry: the fixed record (46) plus generous room for
/// a name and extra fields. A directory larger than this per entry is not a document archive.
const DIRECTORY_BYTES_PER_ENTRY: u64 = 4096;

/// What the end-of-central-directory record (or its ZIP64 form) declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Directory {
    entries: u64,
    size: u64,
    /// Where the central directory starts, as declared.
    offset: u64,
    /// Where the end records start (the ZIP64 record if there is one): the directory must
    /// run right up to here.
    end_at: u64,
    /// The archive's length in bytes.
    len: u64,
}

fn u16_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from(u16::from_le_bytes(
        b.get(at..at + 2)?.try_into().ok()?,
    )))
}

fn u32_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from(u32::from_le_bytes(
        b.get(at..at + 4)?.try_into().ok()?,
    )))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Read the archive's declared entry count and directory size from its end records, without
/// reading the directory itself.
///
/// ZIP tools find the end record by searching backwards from the end of the file, and they
/// do not all stop at the same one: one skips a record that claims several disks or a
/// comment running past the end, another takes the last signature it sees. So the archive
/// must leave no room for choice: the last record is the one, on disk 0, and its comment
/// ends exactly where the file does. An archive hiding a second archive in its comment
/// fails here.
fn read_directory<R: Read + Seek>(reader: &mut R) -> Result<Directory, ArchiveError> {
    let len = reader.seek(io::SeekFrom::End(0))?;
    let tail_len = len.min(22 + 65_535);
    let tail_start = len - tail_len;
    reader.seek(io::SeekFrom::Start(tail_start))?;
    let mut tail = vec![0u8; tail_len as usize];
    reader.read_exact(&mut tail)?;
    let eocd = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .ok_or_else(|| ArchiveError::Corrupt("no end of central directory record".into()))?;
    let bad = || ArchiveError::Corrupt("truncated end of central directory record".into());
    let disks = (u16_at(&tail, eocd + 4), u16_at(&tail, eocd + 6));
    let on_disk = u16_at(&tail, eocd + 8).ok_or_else(bad)?;
    let entries = u16_at(&tail, eocd + 10).ok_or_else(bad)?;
    let size = u32_at(&tail, eocd + 12).ok_or_else(bad)?;
    let offset = u32_at(&tail, eocd + 16).ok_or_else(bad)?;
    let comment = u16_at(&tail, eocd + 20).ok_or_else(bad)?;
    if disks != (Some(0), Some(0)) || on_disk != entries {
        return Err(ArchiveError::Corrupt(
            "the end of central directory record claims several disks".into(),
        ));
    }
    let eocd_at = tail_start + eocd as u64;
    // After the comment only zeros may follow: tools that write to a pipe pad to a block
    // (bsdtar: 10240 bytes), and zeros hide nothing.
    let padding = (eocd + 22)
        .checked_add(comment as usize)
        .and_then(|end| tail.get(end..));
    if !padding.is_some_and(|rest| rest.iter().all(|&b| b == 0)) {
        return Err(ArchiveError::Corrupt(format!(
            "the archive comment declares {comment} bytes but {} follow the end record",
            len - eocd_at - 22
        )));
    }
    let classic = Directory {
        entries,
        size,
        offset,
        end_at: eocd_at,
        len,
    };
    // ZIP64: the locator sits just before the classic record and points at the ZIP64 record.
    // Some writers (Info-ZIP from a pipe) add one even when the classic fields hold the real
    // values; readers that know ZIP64 then read it, so it must agree with them.
    let Some(locator) = eocd.checked_sub(20) else {
        return Ok(classic);
    };
    if tail[locator..locator + 4] != [0x50, 0x4b, 0x06, 0x07] {
        return Ok(classic);
    }
    let record_at = u64_at(&tail, locator + 8).ok_or_else(bad)?;
    let mut record = [0u8; 56];
    reader.seek(io::SeekFrom::Start(record_at))?;
    reader.read_exact(&mut record).map_err(|_| bad())?;
    let record_len = u64_at(&record, 4).ok_or_else(bad)?;
    let locator_at = eocd_at - 20;
    if record[..4] != [0x50, 0x4b, 0x06, 0x06]
        || record_at
            .checked_add(12)
            .and_then(|at| at.checked_add(record_len))
            != Some(locator_at)
    {
        return Err(ArchiveError::Corrupt(
            "bad ZIP64 end of central directory record".into(),
        ));
    }
    let zip64 = Directory {
        entries: u64_at(&record, 32).ok_or_else(bad)?,
        size: u64_at(&record, 40).ok_or_else(bad)?,
        offset: u64_at(&record, 48).ok_or_else(bad)?,
        end_at: record_at,
        len,
    };
    let agrees = |classic: u64, saturated: u64, wide: u64| classic == saturated || classic == wide;
    if !(agrees(entries, 0xFFFF, zip64.entries)
        && agrees(size, 0xFFFF_FFFF, zip64.size)
        && agrees(offset, 0xFFFF_FFFF, zip64.offset))
    {
        return Err(ArchiveError::Corrupt(
            "the ZIP64 end record disagrees with the classic one".into(),
        ));
    }
    Ok(zip64)
}

/// What opening an archive may read beyond its central directory (twice): the end records,
/// a comment, the crate's look-ahead windows.
const OPEN_READ_SLACK: u64 = 1 << 20;

/// Walk the central directory where the end record puts it: exactly `entries` records,
/// each a directory record, filling exactly `size` bytes up to the end records. Reads one
/// fixed header per entry (entries are bounded before this runs).
fn walk_directory<R: Read + Seek>(reader: &mut R, dir: &Directory) -> Result<(), ArchiveError> {
    if dir.offset.checked_add(dir.size) != Some(dir.end_at) {
        return Err(ArchiveError::Corrupt(
            "the central directory does not end where the end records begin".into(),
        ));
    }
    let mut at = dir.offset;
    for _ in 0..dir.entries {
        let record = read_exact_at(reader, at, 46, "a central directory record")?;
        if record[..4] != [0x50, 0x4b, 0x01, 0x02] {
            return Err(unaccounted(at, "a directory record"));
        }
        let variable: u64 = [28, 30, 32]
            .iter()
            .map(|&field| u16_at(&record, field).unwrap_or(0))
            .sum();
        at = at.saturating_add(46).saturating_add(variable);
        if at > dir.end_at {
            return Err(ArchiveError::Corrupt(
                "a central directory record runs past the directory".into(),
            ));
        }
    }
    if at != dir.end_at {
        return Err(unaccounted(at, "a directory record"));
    }
    Ok(())
}

/// A reader that fails once it has read `left` bytes, until lifted.
#[derive(Debug)]
struct ReadBudget<R> {
    inner: R,
    left: std::rc::Rc<std::cell::Cell<Option<u64>>>,
    exhausted: std::rc::Rc<std::cell::Cell<bool>>,
}

impl<R> ReadBudget<R> {
    fn new(inner: R, budget: u64) -> ReadBudget<R> {
        ReadBudget {
            inner,
            left: std::rc::Rc::new(std::cell::Cell::new(Some(budget))),
            exhausted: Default::default(),
        }
    }

    /// Tells whether the budget refused a read, and lifts it.
    fn handle(&self) -> BudgetHandle {
        BudgetHandle {
            left: self.left.clone(),
            exhausted: self.exhausted.clone(),
        }
    }
}

#[derive(Debug)]
struct BudgetHandle {
    left: std::rc::Rc<std::cell::Cell<Option<u64>>>,
    exhausted: std::rc::Rc<std::cell::Cell<bool>>,
}

impl BudgetHandle {
    fn spent(&self) -> bool {
        self.exhausted.get()
    }

    fn lift(&self) {
        self.left.set(None);
    }
}

impl<R: Read> Read for ReadBudget<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(left) = self.left.get() else {
            return self.inner.read(buf);
        };
        if left == 0 {
            self.exhausted.set(true);
            return Err(io::Error::other("read budget spent"));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left.set(Some(left - n as u64));
        Ok(n)
    }
}

impl<R: Seek> Seek for ReadBudget<R> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

/// Check every entry of the ZIP in `reader` against `rules`. Blocking: run it off the reactor.
pub fn inspect<R: Read + Seek>(reader: R, rules: &ZipRules) -> Result<Vec<ZipEntry>, ArchiveError> {
    inspect_with(reader, rules, false)
}

/// [`inspect`], and with `scan_content` every entry's bytes also go through the content
/// scanner for its sniffed type (polyglots and active content inside the ZIP). Blocking.
pub fn inspect_with<R: Read + Seek>(
    mut reader: R,
    rules: &ZipRules,
    scan_content: bool,
) -> Result<Vec<ZipEntry>, ArchiveError> {
    // The zip crate reads the whole central directory into memory on open; a directory of a
    // million empty entries fits in 16 MiB. So check what the end record declares first.
    let dir = read_directory(&mut reader)?;
    if dir.entries > rules.max_entries as u64 {
        return Err(ArchiveError::TooManyEntries {
            count: dir.entries as usize,
            max: rules.max_entries,
        });
    }
    if dir.size > (rules.max_entries as u64).saturating_mul(DIRECTORY_BYTES_PER_ENTRY) {
        return Err(ArchiveError::Corrupt(format!(
            "a central directory of {} bytes is implausible",
            dir.size
        )));
    }
    walk_directory(&mut reader, &dir)?;
    reader.seek(io::SeekFrom::Start(0))?;
    // With the directory sound where the last end record says, the zip crate reads it there
    // and no further. Should it still fall back to earlier end-record signatures — it tries
    // each one it finds in the file, and for each searches forward for a directory — the
    // budget ends that: a crafted 16 MiB file could otherwise cost hours of reading.
    let budget = ReadBudget::new(
        reader,
        dir.size.saturating_mul(2).saturating_add(OPEN_READ_SLACK),
    );
    let handle = budget.handle();
    let opened = zip::ZipArchive::new(budget);
    let mut archive = match opened {
        Ok(archive) => archive,
        Err(_) if handle.spent() => {
            return Err(ArchiveError::Corrupt(
                "the central directory cannot be read where the end record says".into(),
            ))
        }
        Err(e) => return Err(corrupt(e)),
    };
    // Open: what follows reads entries at offsets already checked, and bounds its own work
    // (the inflate budgets).
    handle.lift();
    if archive.len() > rules.max_entries {
        return Err(ArchiveError::TooManyEntries {
            count: archive.len(),
            max: rules.max_entries,
        });
    }
    // The zip crate keys entries by name: a second entry of the same name hides the first,
    // which another tool would unpack.
    if (archive.len() as u64) < dir.entries {
        return Err(ArchiveError::DuplicateNames {
            listed: dir.entries,
            distinct: archive.len(),
        });
    }
    let metas = declared_entries(&mut archive, rules, dir.len)?;
    let mut reader = archive.into_inner();
    let mut places = Vec::with_capacity(metas.len());
    for meta in &metas {
        places.push(check_names(&mut reader, meta)?);
    }
    check_layout(&metas, &places, &dir)?;
    let mut buffers = Buffers::default();
    let mut entries = Vec::new();
    for (meta, place) in metas.iter().zip(&places) {
        if !meta.is_dir {
            reader.seek(io::SeekFrom::Start(place.data_at))?;
            let raw = (&mut reader).take(meta.compressed);
            entries.push(inflate_entry(raw, meta, rules, scan_content, &mut buffers)?);
        }
    }
    let inflated: u64 = entries.iter().map(|e| e.size).sum();
    if ratio_exceeded(inflated, dir.len, rules.max_compression_ratio) {
        return Err(ArchiveError::ArchiveRatio {
            uncompressed: inflated,
            compressed: dir.len,
            max: rules.max_compression_ratio,
        });
    }
    if entries.is_empty() {
        return Err(ArchiveError::Empty);
    }
    Ok(entries)
}

/// What the central directory says about one entry.
#[derive(Debug)]
struct EntryMeta {
    /// The name as the zip crate decoded it (an Info-ZIP Unicode path field overrides the
    /// raw name there).
    name: String,
    decoded_raw: Vec<u8>,
    central_at: u64,
    local_at: u64,
    compressed: u64,
    size: u64,
    crc: u32,
    method: zip::CompressionMethod,
    is_dir: bool,
}

/// Pass 1, declared sizes only: cheap, and enough for honest bombs.
fn declared_entries<R: Read + Seek>(
    archive: &mut zip::ZipArchive<R>,
    rules: &ZipRules,
    archive_len: u64,
) -> Result<Vec<EntryMeta>, ArchiveError> {
    let mut metas = Vec::with_capacity(archive.len());
    let mut declared_total: u64 = 0;
    for i in 0..archive.len() {
        let file = archive.by_index_raw(i).map_err(corrupt)?;
        let name = display_name(file.name_raw());
        if file.encrypted() {
            return Err(ArchiveError::Encrypted { name });
        }
        declared_total = declared_total.saturating_add(file.size());
        if declared_total > rules.max_total_uncompressed {
            return Err(ArchiveError::ExpandsTooFar {
                size: declared_total,
                max: rules.max_total_uncompressed,
            });
        }
        if file.compressed_size() > archive_len {
            return Err(ArchiveError::Corrupt(format!(
                "entry `{name}` claims more compressed bytes than the archive holds"
            )));
        }
        if ratio_exceeded(
            file.size(),
            file.compressed_size(),
            rules.max_compression_ratio,
        ) {
            return Err(ArchiveError::EntryRatio {
                name,
                uncompressed: file.size(),
                compressed: file.compressed_size(),
                max: rules.max_compression_ratio,
            });
        }
        metas.push(EntryMeta {
            name: file.name().to_owned(),
            decoded_raw: file.name_raw().to_vec(),
            central_at: file.central_header_start(),
            local_at: file.header_start(),
            compressed: file.compressed_size(),
            size: file.size(),
            crc: file.crc32(),
            method: file.compression(),
            is_dir: file.is_dir(),
        });
    }
    if ratio_exceeded(declared_total, archive_len, rules.max_compression_ratio) {
        return Err(ArchiveError::ArchiveRatio {
            uncompressed: declared_total,
            compressed: archive_len,
            max: rules.max_compression_ratio,
        });
    }
    Ok(metas)
}

/// Read `len` bytes at `at`: a header field, at most 64 KiB.
fn read_exact_at<R: Read + Seek>(
    reader: &mut R,
    at: u64,
    len: usize,
    what: &str,
) -> Result<Vec<u8>, ArchiveError> {
    reader.seek(io::SeekFrom::Start(at))?;
    let mut buf = vec![0u8; len];
    reader
        .read_exact(&mut buf)
        .map_err(|e| read_failed(e, what))?;
    Ok(buf)
}

fn field_u16(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Where an entry's records and data lie, as its headers say.
#[derive(Debug, Clone, Copy)]
struct Place {
    /// The first byte of its data, after the local header.
    data_at: u64,
    /// Its local header announces a data descriptor after the data (flag bit 3).
    descriptor: bool,
    /// The length of its central directory record.
    central_len: u64,
}

/// The longest data descriptor: signature, CRC and two 8-byte ZIP64 sizes.
const MAX_DESCRIPTOR: u64 = 24;

/// Pass 2b: every byte of the archive belongs to a listed entry, the central directory or
/// the end records, in that order and without gaps or overlaps. Streaming tools (Java's
/// `ZipInputStream`, `unzip` on a pipe) read local headers one after the other, and tools
/// disagree on a directory that lists fewer records than it spans; so an entry that only
/// the local headers show, two entries sharing bytes (the overlapping-entries bomb), or
/// data before the first entry are refused, not guessed at.
fn check_layout(
    metas: &[EntryMeta],
    places: &[Place],
    dir: &Directory,
) -> Result<(), ArchiveError> {
    let entries = metas.iter().zip(places).map(|(meta, place)| {
        let len = place.data_at.saturating_add(meta.compressed) - meta.local_at;
        // A descriptor's length depends on its optional signature and ZIP64 sizes; at most
        // 24 bytes, too few to hide a local header (30 bytes) in.
        let slack = if place.descriptor { MAX_DESCRIPTOR } else { 0 };
        (meta.local_at, len, slack)
    });
    tile(entries.collect(), 0, dir.offset, "data")?;
    let records = metas
        .iter()
        .zip(places)
        .map(|(meta, place)| (meta.central_at, place.central_len, 0));
    tile(
        records.collect(),
        dir.offset,
        dir.end_at,
        "a directory record",
    )?;
    if dir.offset.saturating_add(dir.size) != dir.end_at {
        return Err(unaccounted(
            dir.end_at.min(dir.offset + dir.size),
            "a directory record",
        ));
    }
    Ok(())
}

fn unaccounted(at: u64, what: &str) -> ArchiveError {
    ArchiveError::Corrupt(format!(
        "byte {at} starts {what} that the central directory does not account for"
    ))
}

/// Regions `(start, length, slack)` must follow each other from `from` up to `to`, each
/// starting where the one before ended or up to its `slack` bytes later.
fn tile(
    mut regions: Vec<(u64, u64, u64)>,
    from: u64,
    to: u64,
    what: &str,
) -> Result<(), ArchiveError> {
    regions.sort_unstable();
    let (mut end, mut slack) = (from, 0);
    for (start, len, next_slack) in regions.into_iter().chain([(to, 0, 0)]) {
        if start < end || start - end > slack {
            return Err(unaccounted(end.min(start), what));
        }
        (end, slack) = (start.saturating_add(len), next_slack);
    }
    Ok(())
}

/// Pass 2: the entry's names (central directory, local header, decoded) are safe and agree.
/// Returns where its data starts. Reads at most two fixed headers and two names (< 64 KiB each).
fn check_names<R: Read + Seek>(reader: &mut R, meta: &EntryMeta) -> Result<Place, ArchiveError> {
    let central = read_exact_at(reader, meta.central_at, 46, "a central directory record")?;
    if central[..4] != *b"PK\x01\x02" {
        return Err(ArchiveError::Corrupt("bad central directory record".into()));
    }
    let central_name = read_exact_at(
        reader,
        meta.central_at + 46,
        field_u16(&central, 28),
        "an entry name",
    )?;
    check_name(&central_name)?;
    if meta.decoded_raw != central_name {
        check_name(&meta.decoded_raw)?;
    }
    let local = read_exact_at(reader, meta.local_at, 30, "a local file header")?;
    if local[..4] != *b"PK\x03\x04" {
        return Err(ArchiveError::Corrupt(format!(
            "entry `{}` has no local file header",
            display_name(&central_name)
        )));
    }
    let (name_len, extra_len) = (field_u16(&local, 26), field_u16(&local, 28));
    let local_name = read_exact_at(reader, meta.local_at + 30, name_len, "a local file name")?;
    if local_name != central_name {
        return Err(ArchiveError::NameMismatch {
            central: display_name(&central_name),
            local: display_name(&local_name),
        });
    }
    if meta.is_dir && (meta.size != 0 || meta.compressed > 2) {
        // A "directory" is only a name ending in '/': one that carries data could hide
        // anything, so it must be empty.
        return Err(ArchiveError::Corrupt(format!(
            "directory entry `{}` carries data",
            display_name(&central_name)
        )));
    }
    let central_len =
        46 + (field_u16(&central, 28) + field_u16(&central, 30) + field_u16(&central, 32)) as u64;
    Ok(Place {
        data_at: meta.local_at + 30 + (name_len + extra_len) as u64,
        descriptor: field_u16(&local, 6) & 0x08 != 0,
        central_len,
    })
}

/// The two buffers inflating goes through, shared by all entries.
struct Buffers {
    input: Vec<u8>,
    output: Vec<u8>,
}

impl Default for Buffers {
    fn default() -> Buffers {
        Buffers {
            input: vec![0u8; 64 * 1024],
            output: vec![0u8; 64 * 1024],
        }
    }
}

/// Pass 3 for one entry: inflate `raw` (its compressed bytes) through the checks.
fn inflate_entry(
    mut raw: impl Read,
    meta: &EntryMeta,
    rules: &ZipRules,
    scan_content: bool,
    buffers: &mut Buffers,
) -> Result<ZipEntry, ArchiveError> {
    let mut sink = EntrySink::new(meta, rules, scan_content);
    let consumed = match meta.method {
        zip::CompressionMethod::Stored => copy_stored(&mut raw, &mut sink, buffers)?,
        zip::CompressionMethod::Deflated => inflate_deflated(&mut raw, &mut sink, buffers)?,
        other => {
            return Err(ArchiveError::Corrupt(format!(
                "entry `{}` uses compression method {other}, which docgate does not read",
                display_name(&meta.decoded_raw)
            )))
        }
    };
    sink.finish(consumed)
}

fn read_some(raw: &mut impl Read, buf: &mut [u8]) -> Result<usize, ArchiveError> {
    loop {
        match raw.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_failed(e, "an entry's data")),
        }
    }
}

/// A stored entry; returns the compressed (= raw) bytes read.
fn copy_stored(
    raw: &mut impl Read,
    sink: &mut EntrySink<'_>,
    buffers: &mut Buffers,
) -> Result<u64, ArchiveError> {
    let mut consumed = 0u64;
    loop {
        let n = read_some(raw, &mut buffers.output)?;
        if n == 0 {
            return Ok(consumed);
        }
        consumed += n as u64;
        sink.feed(&buffers.output[..n])?;
    }
}

/// A deflated entry; returns the compressed bytes the inflater really consumed (which can be
/// fewer than the directory declares).
fn inflate_deflated(
    raw: &mut impl Read,
    sink: &mut EntrySink<'_>,
    buffers: &mut Buffers,
) -> Result<u64, ArchiveError> {
    let name = display_name(&sink.meta.decoded_raw);
    let bad = |what: String| ArchiveError::Corrupt(format!("entry `{name}`: {what}"));
    let mut inflater = Decompress::new(false);
    let (mut pos, mut filled, mut eof) = (0usize, 0usize, false);
    loop {
        if pos == filled && !eof {
            filled = read_some(raw, &mut buffers.input)?;
            pos = 0;
            eof = filled == 0;
        }
        let (before_in, before_out) = (inflater.total_in(), inflater.total_out());
        let flush = if eof {
            FlushDecompress::Finish
        } else {
            FlushDecompress::None
        };
        let status = inflater
            .decompress(&buffers.input[pos..filled], &mut buffers.output, flush)
            .map_err(|e| bad(e.to_string()))?;
        // Both deltas are bounded by the buffers just passed in.
        let used = (inflater.total_in() - before_in) as usize;
        let made = (inflater.total_out() - before_out) as usize;
        pos += used;
        sink.feed(&buffers.output[..made])?;
        if status == Status::StreamEnd {
            return Ok(inflater.total_in());
        }
        if used == 0 && made == 0 && (eof || pos < filled) {
            return Err(bad("the compressed data ends early".into()));
        }
    }
}

/// Where an entry's inflated bytes go: counted, CRC'd, sniffed, scanned, then dropped.
struct EntrySink<'a> {
    meta: &'a EntryMeta,
    rules: &'a ZipRules,
    seen: u64,
    crc: crc32fast::Hasher,
    head: Vec<u8>,
    media_type: Option<&'static str>,
    /// Set once the head shows a type the rules refuse: reported after the entry proved
    /// itself intact (a corrupt or lying entry is refused as such first, as it always was).
    refused_type: bool,
    scan_content: bool,
    scan: Option<ContentScan>,
}

impl<'a> EntrySink<'a> {
    fn new(meta: &'a EntryMeta, rules: &'a ZipRules, scan_content: bool) -> EntrySink<'a> {
        EntrySink {
            meta,
            rules,
            seen: 0,
            crc: crc32fast::Hasher::new(),
            head: Vec::with_capacity(SNIFF_BYTES),
            media_type: None,
            refused_type: false,
            scan_content,
            scan: None,
        }
    }

    fn name(&self) -> String {
        display_name(&self.meta.decoded_raw)
    }

    fn feed(&mut self, data: &[u8]) -> Result<(), ArchiveError> {
        self.seen += data.len() as u64;
        if self.seen > self.meta.size {
            return Err(ArchiveError::LyingSize {
                name: self.name(),
                declared: self.meta.size,
            });
        }
        self.crc.update(data);
        let mut data = data;
        if self.media_type.is_none() {
            let take = (SNIFF_BYTES - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.head.len() < SNIFF_BYTES {
                return Ok(());
            }
            self.settle_type()?;
        }
        self.scan_more(data)
    }

    /// The head is complete: judge the type, and start scanning with the head.
    fn settle_type(&mut self) -> Result<(), ArchiveError> {
        let media_type = sniff(&self.head).unwrap_or("unknown");
        self.media_type = Some(media_type);
        if !self.rules.entry_types.iter().any(|r| r.matches(media_type)) {
            self.refused_type = true;
            self.head = Vec::new();
            return Ok(());
        }
        if self.scan_content {
            self.scan = Some(ContentScan::for_media_type(media_type));
        }
        let head = std::mem::take(&mut self.head);
        self.scan_more(&head)
    }

    fn scan_more(&mut self, data: &[u8]) -> Result<(), ArchiveError> {
        match &mut self.scan {
            Some(scan) => scan
                .feed(data)
                .map_err(|source| ArchiveError::ActiveContent {
                    name: display_name(&self.meta.decoded_raw),
                    source,
                }),
            None => Ok(()),
        }
    }

    fn finish(mut self, consumed: u64) -> Result<ZipEntry, ArchiveError> {
        if self.media_type.is_none() {
            self.settle_type()?;
        }
        let name = self.name();
        if self.seen != self.meta.size {
            return Err(ArchiveError::Corrupt(format!(
                "entry `{name}` has {} bytes, {} declared",
                self.seen, self.meta.size
            )));
        }
        if self.crc.finalize() != self.meta.crc {
            return Err(ArchiveError::Corrupt(format!(
                "entry `{name}` fails its CRC"
            )));
        }
        let media_type = self.media_type.unwrap_or("unknown");
        if self.refused_type {
            return Err(ArchiveError::EntryType {
                name,
                sniffed: media_type.to_owned(),
            });
        }
        if let Some(scan) = self.scan.take() {
            scan.finish()
                .map_err(|source| ArchiveError::ActiveContent {
                    name: name.clone(),
                    source,
                })?;
        }
        if ratio_exceeded(self.seen, consumed, self.rules.max_compression_ratio) {
            return Err(ArchiveError::EntryRatio {
                name,
                uncompressed: self.seen,
                compressed: consumed,
                max: self.rules.max_compression_ratio,
            });
        }
        if consumed != self.meta.compressed {
            // Bytes inside the declared size that the entry's data does not use: a streaming
            // reader goes on after the data, and could find another entry there.
            return Err(ArchiveError::Corrupt(format!(
                "entry `{name}` declares {} compressed bytes but its data ends after {consumed}",
                self.meta.compressed
            )));
        }
        Ok(ZipEntry {
            name: self.meta.name.clone(),
            size: self.seen,
            compressed_size: self.meta.compressed,
            media_type: media_type.to_owned(),
        })
    }
}

/// A rough upper bound of what one entry adds to an archive: the local header, the data
/// (+ descriptor) and the central directory record, each with the name and some extra fields.
fn entry_footprint(name_len: u64, compressed: u64) -> u64 {
    30 + 16 + 46 + 2 * (name_len + 64) + compressed
}

const END_RECORDS: u64 = 22 + 56 + 20;

/// Split the ZIP in `reader` into archives of at most `target` bytes each, written as
/// `part-N.zip` into `out_dir`. Entries are copied raw (compressed bytes unchanged). Returns
/// the parts in order, or `None` when a single entry alone is larger than `target` (splitting
/// cannot help). Blocking.
pub fn split<R: Read + Seek>(
    reader: R,
    target: u64,
    out_dir: &Path,
) -> Result<Option<Vec<PathBuf>>, ArchiveError> {
    let mut archive = zip::ZipArchive::new(reader).map_err(corrupt)?;
    // Greedy grouping by footprint, in archive order.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut current_size = END_RECORDS;
    for i in 0..archive.len() {
        let file = archive.by_index_raw(i).map_err(corrupt)?;
        let footprint = entry_footprint(file.name().len() as u64, file.compressed_size());
        if footprint + END_RECORDS > target {
            return Ok(None);
        }
        if current_size + footprint > target && !current.is_empty() {
            groups.push(std::mem::take(&mut current));
            current_size = END_RECORDS;
        }
        current.push(i);
        current_size += footprint;
    }
    if !current.is_empty() {
        groups.push(current);
    }
    // The parts are the documents in clear, whether or not the spool is sealed.
    crate::private_fs::create_dir_all(out_dir)?;
    let mut parts = Vec::new();
    for (n, group) in groups.iter().enumerate() {
        let path = out_dir.join(format!("part-{}.zip", n + 1));
        let file = crate::private_fs::create_file(&path)?;
        let mut writer = zip::ZipWriter::new(io::BufWriter::new(file));
        for &i in group {
            let entry = archive.by_index_raw(i).map_err(corrupt)?;
            writer.raw_copy_file(entry).map_err(corrupt)?;
        }
        let mut inner = writer.finish().map_err(corrupt)?;
        io::Write::flush(&mut inner)?;
        inner.get_ref().sync_all()?;
        parts.push(path);
    }
    Ok(Some(parts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0";

    fn rules() -> ZipRules {
        ZipRules {
            entry_types: ["application/pdf", "image/*", "audio/*", "video/*"]
                .iter()
                .map(|s| MediaRange::parse(s).expect("valid"))
                .collect(),
            max_entries: 10,
            max_total_uncompressed: 1 << 20,
            max_compression_ratio: DEFAULT_MAX_COMPRESSION_RATIO,
        }
    }

    /// Counts what is read through it.
    struct Counted<R> {
        inner: R,
        read: u64,
    }

    impl<R: Read> Read for Counted<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n as u64;
            Ok(n)
        }
    }

    impl<R: Seek> Seek for Counted<R> {
        fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
            self.inner.seek(pos)
        }
    }

    /// Regression: the checks read only the last end record; the zip crate, failing to find
    /// the directory it names, went back to every earlier end-record signature in the file and
    /// searched forward for a directory from each — a 16 MiB upload of a local header, zeros
    /// and 380 000 end records cost hours of one core (here: 20 000, still minutes). The
    /// directory is walked where the last record says first, and opening has a read budget.
    #[test]
    fn regression_a_file_of_end_records_is_refused_after_reading_it_about_once() {
        let mut bomb = b"PK\x03\x04".to_vec();
        bomb.resize(2 << 20, 0);
        let mut end = b"PK\x05\x06".to_vec();
        for field in [0u16, 0, 1, 1] {
            end.extend_from_slice(&field.to_le_bytes());
        }
        end.extend_from_slice(&46u32.to_le_bytes());
        end.extend_from_slice(&0u32.to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        for _ in 0..20_000 {
            bomb.extend_from_slice(&end);
        }
        let len = bomb.len() as u64;
        let mut reader = Counted {
            inner: Cursor::new(bomb),
            read: 0,
        };
        let result = inspect(&mut reader, &rules());
        assert!(
            matches!(result, Err(ArchiveError::Corrupt(_))),
            "{result:?}"
        );
        assert!(reader.read <= len, "read {} of {len} bytes", reader.read);
    }

    #[test]
    fn a_read_budget_refuses_past_its_bytes_until_lifted() {
        let mut budget = ReadBudget::new(Cursor::new(vec![7u8; 100]), 10);
        let handle = budget.handle();
        let mut buf = [0u8; 64];
        assert_eq!(budget.read(&mut buf).expect("within"), 10);
        assert!(budget.read(&mut buf).is_err());
        assert!(handle.spent());
        handle.lift();
        assert_eq!(budget.read(&mut buf).expect("lifted"), 64);
    }

    /// Rules with room for a few MiB, so the ratio is what refuses.
    fn roomy_rules() -> ZipRules {
        ZipRules {
            max_total_uncompressed: 64 << 20,
            ..rules()
        }
    }

    /// A stored ZIP of `entries`, then every occurrence of each `(placeholder, name)` pair's
    /// placeholder replaced by the name (same length): names the writer would not write.
    fn zip_renamed(entries: &[(&str, Vec<u8>)], renames: &[(&str, &[u8])]) -> Vec<u8> {
        let mut z = make_zip(entries, zip::CompressionMethod::Stored);
        for (placeholder, name) in renames {
            assert_eq!(placeholder.len(), name.len(), "same length");
            let mut at = 0;
            while let Some(p) = z[at..]
                .windows(placeholder.len())
                .position(|w| w == placeholder.as_bytes())
            {
                z[at + p..at + p + name.len()].copy_from_slice(name);
                at += p + name.len();
            }
        }
        z
    }

    /// One deflated entry built by hand: `compressed` is written as the entry's data (it may
    /// carry padding after the deflate stream) and declared as its compressed size.
    fn handmade_zip(name: &str, plain: &[u8], compressed: &[u8]) -> Vec<u8> {
        let crc = crc32fast::hash(plain);
        let size = u32::try_from(plain.len()).expect("small");
        let csize = u32::try_from(compressed.len()).expect("small");
        let name_len = u16::try_from(name.len()).expect("short");
        let mut common = Vec::new();
        common.extend_from_slice(&20u16.to_le_bytes()); // version needed
        common.extend_from_slice(&0u16.to_le_bytes()); // flags
        common.extend_from_slice(&8u16.to_le_bytes()); // deflate
        common.extend_from_slice(&[0, 0, 0x21, 0]); // time, date
        common.extend_from_slice(&crc.to_le_bytes());
        common.extend_from_slice(&csize.to_le_bytes());
        common.extend_from_slice(&size.to_le_bytes());
        common.extend_from_slice(&name_len.to_le_bytes());
        common.extend_from_slice(&0u16.to_le_bytes()); // extra
        let mut z = b"PK\x03\x04".to_vec();
        z.extend_from_slice(&common);
        z.extend_from_slice(name.as_bytes());
        z.extend_from_slice(compressed);
        let central_at = u32::try_from(z.len()).expect("small");
        z.extend_from_slice(b"PK\x01\x02\x14\0");
        z.extend_from_slice(&common);
        z.extend_from_slice(&[0; 14]); // comment len, disk, attributes, local offset 0
        z.extend_from_slice(name.as_bytes());
        let central_len = u32::try_from(z.len()).expect("small") - central_at;
        z.extend_from_slice(b"PK\x05\x06\0\0\0\0\x01\0\x01\0");
        z.extend_from_slice(&central_len.to_le_bytes());
        z.extend_from_slice(&central_at.to_le_bytes());
        z.extend_from_slice(&0u16.to_le_bytes());
        z
    }

    fn deflate_raw(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).expect("deflate");
        e.finish().expect("deflate")
    }

    #[test]
    fn zip_slip_names_are_refused_in_every_spelling() {
        let cases: &[(&[u8], &str)] = &[
            (b"../../../etc/cron.d/evil.pdf", "`..`"),
            (b"docs/../../../../tmp/evil.pdf", "`..`"),
            (b"/abs/x.pdf", "absolute"),
            (b"C:\\x.pdf", "backslash"),
            (b"C:x.pdf", "drive letter"),
            (b"..\\..\\evil.pdf", "backslash"),
            (b"a\0b.pdf", "NUL"),
            (b"a\x1b[2Jb.pdf", "control"),
        ];
        for (name, reason) in cases {
            let placeholder = "Q".repeat(name.len());
            let z = zip_renamed(
                &[(placeholder.as_str(), pdf(100))],
                &[(placeholder.as_str(), name)],
            );
            match inspect(Cursor::new(z), &rules()) {
                Err(ArchiveError::UnsafeName {
                    name: shown,
                    reason: why,
                }) => {
                    assert!(why.contains(reason), "{why} for {shown}");
                    assert!(!shown.chars().any(char::is_control), "{shown:?} is escaped");
                }
                other => panic!(
                    "{}: expected UnsafeName, got {other:?}",
                    String::from_utf8_lossy(name)
                ),
            }
        }
    }

    #[test]
    fn a_local_header_name_that_differs_from_the_directory_is_refused() {
        let mut z = make_zip(&[("good.pdf", pdf(100))], zip::CompressionMethod::Stored);
        // The local header comes first: rename only that one.
        let p = z.windows(8).position(|w| w == b"good.pdf").expect("name");
        z[p..p + 8].copy_from_slice(b"evil.exe");
        match inspect(Cursor::new(z), &rules()) {
            Err(ArchiveError::NameMismatch { central, local }) => {
                assert_eq!((central.as_str(), local.as_str()), ("good.pdf", "evil.exe"));
            }
            other => panic!("expected NameMismatch, got {other:?}"),
        }
    }

    #[test]
    fn two_entries_of_the_same_name_are_refused() {
        let exe = b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0".to_vec();
        let z = zip_renamed(
            &[("a1.pdf", exe), ("a2.pdf", pdf(100))],
            &[("a2.pdf", b"a1.pdf")],
        );
        assert!(matches!(
            inspect(Cursor::new(z), &rules()),
            Err(ArchiveError::DuplicateNames {
                listed: 2,
                distinct: 1
            })
        ));
    }

    #[test]
    fn an_entry_expanding_a_thousandfold_is_refused_by_its_declared_sizes() {
        let z = make_zip(
            &[("zeros.pdf", pdf(4 << 20))],
            zip::CompressionMethod::Deflated,
        );
        match inspect(Cursor::new(z), &roomy_rules()) {
            Err(ArchiveError::EntryRatio {
                name,
                uncompressed,
                compressed,
                max,
            }) => {
                assert_eq!(
                    (name.as_str(), uncompressed, max),
                    ("zeros.pdf", 4 << 20, 100)
                );
                assert!(
                    uncompressed / compressed > 500,
                    "{uncompressed}:{compressed}"
                );
            }
            other => panic!("expected EntryRatio, got {other:?}"),
        }
    }

    #[test]
    fn a_directory_lying_about_compressed_sizes_is_caught_while_inflating() {
        let plain = pdf(4 << 20);
        let mut compressed = deflate_raw(&plain);
        let stream_len = compressed.len() as u64;
        // Padding after the deflate stream makes the declared ratio look like 60:1.
        compressed.resize((4 << 20) / 60, 0);
        let z = handmade_zip("bomb.pdf", &plain, &compressed);
        match inspect(Cursor::new(z), &roomy_rules()) {
            Err(ArchiveError::EntryRatio { compressed, .. }) => assert_eq!(compressed, stream_len),
            other => panic!("expected EntryRatio from the actual bytes, got {other:?}"),
        }
        // The same padding with honest content passes: the ratio is what refused it.
        let noise: Vec<u8> = (0..(4u32 << 20))
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let mut plain = b"%PDF-1.4\n".to_vec();
        plain.extend_from_slice(&noise[9..]);
        let z = handmade_zip("noise.pdf", &plain, &deflate_raw(&plain));
        assert_eq!(
            inspect(Cursor::new(z), &roomy_rules()).expect("ok").len(),
            1
        );
    }

    #[test]
    fn small_entries_are_not_judged_by_their_ratio() {
        // 10 bytes from 1 (well, a few), and 512 KiB of zeros from ~500 bytes: under the floor.
        let z = make_zip(
            &[("tiny.pdf", pdf(10)), ("blank.pdf", pdf(512 << 10))],
            zip::CompressionMethod::Deflated,
        );
        assert_eq!(
            inspect(Cursor::new(z), &roomy_rules()).expect("ok").len(),
            2
        );
    }

    #[test]
    fn a_pdf_with_javascript_inside_a_zip_is_refused_when_scanning() {
        let mut js =
            b"%PDF-1.7\n1 0 obj << /S /JavaScript /JS (app.alert\\(1\\)) >> endobj\n".to_vec();
        js.extend_from_slice(b"trailer << /Root 1 0 R >>\n%%EOF\n");
        let z = make_zip(
            &[("a.pdf", pdf(100)), ("b.pdf", js)],
            zip::CompressionMethod::Deflated,
        );
        assert_eq!(
            inspect(Cursor::new(z.clone()), &rules())
                .expect("not scanned")
                .len(),
            2
        );
        match inspect_with(Cursor::new(z), &rules(), true) {
            Err(ArchiveError::ActiveContent { name, source }) => {
                assert_eq!((name.as_str(), source.found()), ("b.pdf", "JavaScript"));
            }
            other => panic!("expected ActiveContent, got {other:?}"),
        }
    }

    #[test]
    fn shown_names_are_escaped_and_cut() {
        assert_eq!(display_name(b"a\x1b[31mb"), "a\\u{1b}[31mb");
        assert_eq!(display_name(b"\xff.pdf"), "\u{fffd}.pdf");
        let long = display_name("x".repeat(1000).as_bytes());
        assert_eq!(long.chars().count(), NAME_SHOWN + 1);
        assert!(long.ends_with('…'));
        // Found by fuzz/zip_entry_names: escapes count towards the limit too.
        let escapes = display_name(&[0x1b; 200]);
        assert!(escapes.chars().count() <= NAME_SHOWN + 1, "{escapes}");
    }

    fn make_zip(entries: &[(&str, Vec<u8>)], method: zip::CompressionMethod) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default().compression_method(method);
        for (name, data) in entries {
            w.start_file(*name, opts).expect("start");
            w.write_all(data).expect("write");
        }
        w.finish().expect("finish").into_inner()
    }

    fn pdf(n: usize) -> Vec<u8> {
        let mut v = b"%PDF-1.4\n".to_vec();
        v.resize(n, b'x');
        v
    }

    #[test]
    fn accepts_pdfs_and_images() {
        let z = make_zip(
            &[("a.pdf", pdf(1000)), ("b.png", PNG.to_vec())],
            zip::CompressionMethod::Deflated,
        );
        let entries = inspect(Cursor::new(z), &rules()).expect("ok");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].media_type, "application/pdf");
        assert_eq!(entries[1].media_type, "image/png");
    }

    #[test]
    fn refuses_an_executable_entry_by_its_bytes() {
        let exe = b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0".to_vec();
        let z = make_zip(
            &[("a.pdf", pdf(100)), ("invoice.pdf", exe)],
            zip::CompressionMethod::Stored,
        );
        match inspect(Cursor::new(z), &rules()) {
            Err(ArchiveError::EntryType { name, sniffed }) => {
                assert_eq!(name, "invoice.pdf");
                assert!(sniffed.contains("executable"), "{sniffed}");
            }
            other => panic!("expected EntryType, got {other:?}"),
        }
    }

    #[test]
    fn refuses_nested_zips() {
        let inner = make_zip(&[("a.pdf", pdf(100))], zip::CompressionMethod::Stored);
        let z = make_zip(&[("inner.zip", inner)], zip::CompressionMethod::Stored);
        assert!(matches!(
            inspect(Cursor::new(z), &rules()),
            Err(ArchiveError::EntryType { .. })
        ));
    }

    #[test]
    fn refuses_declared_expansion_beyond_the_limit_without_inflating() {
        let z = make_zip(
            &[("big.pdf", pdf(2 << 20))],
            zip::CompressionMethod::Deflated,
        );
        assert!(matches!(
            inspect(Cursor::new(z), &rules()),
            Err(ArchiveError::ExpandsTooFar { .. })
        ));
    }

    #[test]
    fn refuses_too_many_entries() {
        let entries: Vec<(String, Vec<u8>)> =
            (0..11).map(|i| (format!("{i}.pdf"), pdf(20))).collect();
        let refs: Vec<(&str, Vec<u8>)> = entries
            .iter()
            .map(|(n, d)| (n.as_str(), d.clone()))
            .collect();
        let z = make_zip(&refs, zip::CompressionMethod::Stored);
        assert!(matches!(
            inspect(Cursor::new(z), &rules()),
            Err(ArchiveError::TooManyEntries { count: 11, max: 10 })
        ));
    }

    #[test]
    fn refuses_a_huge_directory_before_reading_it() {
        // 20 000 empty entries: the end record alone says "too many".
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for i in 0..20_000 {
            w.start_file(format!("{i}.pdf"), opts).expect("start");
        }
        let z = w.finish().expect("finish").into_inner();
        let dir = read_directory(&mut Cursor::new(z.clone())).expect("end record");
        assert_eq!(dir.entries, 20_000);
        assert!(matches!(
            inspect(Cursor::new(z), &rules()),
            Err(ArchiveError::TooManyEntries {
                count: 20_000,
                max: 10
            })
        ));
    }

    #[test]
    fn a_directory_entry_carrying_data_is_refused() {
        let exe = b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0".to_vec();
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        w.start_file("a.pdf", opts).expect("start");
        w.write_all(&pdf(100)).expect("write");
        // The writer takes the name as given: a "directory" with an executable inside.
        w.start_file("setup.exe/", opts).expect("start");
        w.write_all(&exe).expect("write");
        let z = w.finish().expect("finish").into_inner();
        match inspect(Cursor::new(z), &rules()) {
            Err(ArchiveError::Corrupt(msg)) => assert!(msg.contains("carries data"), "{msg}"),
            other => panic!("expected a refused directory entry, got {other:?}"),
        }
    }

    /// Where a comment-less archive's central directory starts, and how long it is.
    fn directory_of(z: &[u8]) -> (usize, usize) {
        let eocd = &z[z.len() - 22..];
        assert_eq!(&eocd[..4], b"PK\x05\x06", "no comment");
        let size = u32::from_le_bytes(eocd[12..16].try_into().expect("4 bytes"));
        let offset = u32::from_le_bytes(eocd[16..20].try_into().expect("4 bytes"));
        (offset as usize, size as usize)
    }

    /// `z` with its first central directory record dropped (the entry's local header and
    /// data stay where they are).
    fn without_first_directory_record(z: &[u8]) -> Vec<u8> {
        let (offset, size) = directory_of(z);
        let record = &z[offset..];
        let len = 46
            + [28, 30, 32]
                .iter()
                .map(|&at| usize::from(u16::from_le_bytes([record[at], record[at + 1]])))
                .sum::<usize>();
        let mut out = z[..offset].to_vec();
        out.extend_from_slice(&z[offset + len..]);
        let eocd = out.len() - 22;
        let entries = u16::from_le_bytes([out[eocd + 10], out[eocd + 11]]) - 1;
        out[eocd + 8..eocd + 10].copy_from_slice(&entries.to_le_bytes());
        out[eocd + 10..eocd + 12].copy_from_slice(&entries.to_le_bytes());
        let size = u32::try_from(size - len).expect("small");
        out[eocd + 12..eocd + 16].copy_from_slice(&size.to_le_bytes());
        out
    }

    /// `outer` with `inner` as its archive comment.
    fn with_comment(outer: &[u8], inner: &[u8]) -> Vec<u8> {
        let mut z = outer.to_vec();
        let n = z.len();
        let comment = u16::try_from(inner.len()).expect("short");
        z[n - 2..].copy_from_slice(&comment.to_le_bytes());
        z.extend_from_slice(inner);
        z
    }

    #[test]
    fn regression_a_second_archive_hidden_in_the_comment_is_refused() {
        let outer = make_zip(&[("a.png", PNG.to_vec())], zip::CompressionMethod::Stored);
        let inner = make_zip(&[("b.png", PNG.to_vec())], zip::CompressionMethod::Stored);
        let n = inner.len();
        // Python's zipfile and unzip take the last end record; the zip crate skipped a last
        // one whose comment runs past the end of the file, or that claims a second disk.
        let mut past_the_end = inner.clone();
        past_the_end[n - 2..].copy_from_slice(&100u16.to_le_bytes());
        let mut second_disk = inner.clone();
        second_disk[n - 18..n - 16].copy_from_slice(&1u16.to_le_bytes());
        for (what, inner) in [
            ("comment past the end", past_the_end),
            ("second disk", second_disk),
            ("consistent", inner),
        ] {
            let z = with_comment(&outer, &inner);
            assert!(
                matches!(
                    inspect(Cursor::new(z), &rules()),
                    Err(ArchiveError::Corrupt(_))
                ),
                "{what}"
            );
        }
        // A comment with no archive in it is fine.
        let z = with_comment(&outer, b"made by a scanner");
        assert_eq!(inspect(Cursor::new(z), &rules()).expect("ok").len(), 1);
        // Bytes after the end record that the comment does not declare are not…
        let mut z = outer.clone();
        z.extend_from_slice(b"trailing");
        assert!(matches!(
            inspect(Cursor::new(z), &rules()),
            Err(ArchiveError::Corrupt(_))
        ));
        // …but zeros are: bsdtar pads what it writes to a pipe to a 10240-byte block.
        let mut padded = outer.clone();
        padded.resize(padded.len().div_ceil(10240) * 10240, 0);
        assert_eq!(inspect(Cursor::new(padded), &rules()).expect("ok").len(), 1);
    }

    #[test]
    fn regression_an_entry_only_the_local_headers_show_is_refused() {
        let two = make_zip(
            &[
                ("evil.sh", b"#!/bin/sh\n".to_vec()),
                ("a.png", PNG.to_vec()),
            ],
            zip::CompressionMethod::Stored,
        );
        let hidden_first = without_first_directory_record(&two);
        match inspect(Cursor::new(hidden_first), &rules()) {
            Err(ArchiveError::Corrupt(m)) => assert!(m.contains("does not account for"), "{m}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        let two = make_zip(
            &[
                ("a.png", PNG.to_vec()),
                ("evil.sh", b"#!/bin/sh\n".to_vec()),
            ],
            zip::CompressionMethod::Stored,
        );
        // The second record dropped: evil.sh's local header sits between a.png and the
        // directory.
        let (offset, _) = directory_of(&two);
        let first_len = 46 + "a.png".len();
        let mut z = two[..offset + first_len].to_vec();
        z.extend_from_slice(&two[two.len() - 22..]);
        let eocd = z.len() - 22;
        z[eocd + 8..eocd + 12].copy_from_slice(&[1, 0, 1, 0]);
        z[eocd + 12..eocd + 16].copy_from_slice(&(first_len as u32).to_le_bytes());
        assert!(matches!(
            inspect(Cursor::new(z), &rules()),
            Err(ArchiveError::Corrupt(_))
        ));
        // Data before the first entry (a self-extractor's stub, a polyglot's head).
        let one = make_zip(&[("a.png", PNG.to_vec())], zip::CompressionMethod::Stored);
        let mut prefixed = b"%PDF-1.4 a head that no entry owns\n".to_vec();
        prefixed.extend_from_slice(&one);
        assert!(matches!(
            inspect(Cursor::new(prefixed), &rules()),
            Err(ArchiveError::Corrupt(_))
        ));
    }

    /// `z` (no comment) with ZIP64 end records before its classic one, as Info-ZIP writes
    /// from a pipe: the classic record keeps the real values.
    fn with_zip64_end(z: &[u8]) -> Vec<u8> {
        let (offset, size) = directory_of(z);
        let eocd = &z[z.len() - 22..];
        let entries = u64::from(u16::from_le_bytes([eocd[10], eocd[11]]));
        let mut out = z[..z.len() - 22].to_vec();
        let record_at = out.len() as u64;
        out.extend_from_slice(b"PK\x06\x06");
        out.extend_from_slice(&44u64.to_le_bytes());
        out.extend_from_slice(&[45, 0, 45, 0]);
        out.extend_from_slice(&[0; 8]); // disk numbers
        out.extend_from_slice(&entries.to_le_bytes());
        out.extend_from_slice(&entries.to_le_bytes());
        out.extend_from_slice(&(size as u64).to_le_bytes());
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        out.extend_from_slice(b"PK\x06\x07\0\0\0\0");
        out.extend_from_slice(&record_at.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(eocd);
        out
    }

    #[test]
    fn a_zip64_end_record_beside_real_classic_values_is_accounted_for() {
        let z = make_zip(&[("a.png", PNG.to_vec())], zip::CompressionMethod::Stored);
        let piped = with_zip64_end(&z);
        assert_eq!(
            inspect(Cursor::new(piped.clone()), &rules())
                .expect("ok")
                .len(),
            1
        );
        // The two records must agree: a reader of either must see the same directory.
        let mut disagreeing = piped;
        let at = disagreeing.len() - 22 - 20 - 56 + 32;
        disagreeing[at] = 7;
        assert!(matches!(
            inspect(Cursor::new(disagreeing), &rules()),
            Err(ArchiveError::Corrupt(_))
        ));
    }

    #[test]
    fn regression_bytes_after_an_entry_s_deflate_stream_within_its_size_are_refused() {
        // A streaming reader stops where the deflate stream does (then reads a descriptor)
        // and takes the next local header it finds: one hidden inside the declared size.
        let plain: Vec<u8> = (0..20_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let mut plain_pdf = b"%PDF-1.4\n".to_vec();
        plain_pdf.extend_from_slice(&plain);
        let mut compressed = deflate_raw(&plain_pdf);
        let hidden = make_zip(
            &[("evil.sh", b"#!/bin/sh\n".to_vec())],
            zip::CompressionMethod::Stored,
        );
        let (hidden_cd, _) = directory_of(&hidden);
        compressed.extend_from_slice(&hidden[..hidden_cd]);
        let z = handmade_zip("doc.pdf", &plain_pdf, &compressed);
        match inspect(Cursor::new(z), &roomy_rules()) {
            Err(ArchiveError::Corrupt(m)) => assert!(m.contains("its data ends after"), "{m}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn entries_followed_by_data_descriptors_are_accounted_for() {
        // One stored entry written as a streaming writer does: flag bit 3, sizes after the
        // data in a descriptor with its optional signature.
        let data = PNG;
        let crc = crc32fast::hash(data);
        let size = u32::try_from(data.len()).expect("small");
        let name = b"a.png";
        let mut z = b"PK\x03\x04\x14\0\x08\0\0\0\0\0\x21\0".to_vec();
        z.extend_from_slice(&[0; 12]); // CRC and sizes: in the descriptor
        z.extend_from_slice(&(name.len() as u16).to_le_bytes());
        z.extend_from_slice(&0u16.to_le_bytes());
        z.extend_from_slice(name);
        z.extend_from_slice(data);
        z.extend_from_slice(b"PK\x07\x08");
        z.extend_from_slice(&crc.to_le_bytes());
        z.extend_from_slice(&size.to_le_bytes());
        z.extend_from_slice(&size.to_le_bytes());
        let central_at = u32::try_from(z.len()).expect("small");
        z.extend_from_slice(b"PK\x01\x02\x14\0\x14\0\x08\0\0\0\0\0\x21\0");
        z.extend_from_slice(&crc.to_le_bytes());
        z.extend_from_slice(&size.to_le_bytes());
        z.extend_from_slice(&size.to_le_bytes());
        z.extend_from_slice(&(name.len() as u16).to_le_bytes());
        z.extend_from_slice(&[0; 16]); // extra, comment, disk, attributes, local offset 0
        z.extend_from_slice(name);
        let central_len = u32::try_from(z.len()).expect("small") - central_at;
        z.extend_from_slice(b"PK\x05\x06\0\0\0\0\x01\0\x01\0");
        z.extend_from_slice(&central_len.to_le_bytes());
        z.extend_from_slice(&central_at.to_le_bytes());
        z.extend_from_slice(&0u16.to_le_bytes());
        let entries = inspect(Cursor::new(z), &rules()).expect("a descriptor is accounted for");
        assert_eq!(entries[0].name, "a.png");
    }

    #[test]
    fn refuses_garbage() {
        assert!(matches!(
            inspect(Cursor::new(b"PK\x03\x04garbage".to_vec()), &rules()),
            Err(ArchiveError::Corrupt(_))
        ));
    }

    #[test]
    fn split_copies_entries_unchanged_into_parts_under_the_target() {
        let entries: Vec<(String, Vec<u8>)> = (0..5)
            .map(|i| (format!("{i}.pdf"), pdf(3000 + i)))
            .collect();
        let refs: Vec<(&str, Vec<u8>)> = entries
            .iter()
            .map(|(n, d)| (n.as_str(), d.clone()))
            .collect();
        let z = make_zip(&refs, zip::CompressionMethod::Stored);
        let dir = tempfile::tempdir().expect("tempdir");
        let parts = split(Cursor::new(z), 7000, dir.path())
            .expect("split")
            .expect("possible");
        assert!(parts.len() >= 3, "{} parts", parts.len());
        let mut seen = Vec::new();
        for p in &parts {
            let bytes = std::fs::read(p).expect("read");
            assert!(
                bytes.len() as u64 <= 7000,
                "part {} is {} bytes",
                p.display(),
                bytes.len()
            );
            let mut a = zip::ZipArchive::new(Cursor::new(bytes)).expect("valid zip");
            for i in 0..a.len() {
                let mut f = a.by_index(i).expect("entry");
                let mut data = Vec::new();
                f.read_to_end(&mut data).expect("inflate");
                seen.push((f.name().to_owned(), data));
            }
        }
        assert_eq!(seen, entries);
        assert!(split(
            Cursor::new(make_zip(&refs, zip::CompressionMethod::Stored)),
            1000,
            dir.path()
        )
        .expect("split")
        .is_none());
    }
}
