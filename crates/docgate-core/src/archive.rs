//! ZIP documents: open them, check every entry, refuse bombs, split them when asked.
//!
//! A ZIP is only as acceptable as its least acceptable entry, so every entry is decompressed
//! just far enough to sniff it — and then to the end, with a byte budget, so a CRC error or an
//! entry that expands beyond its declared size is caught here and not at the provider.
//! Nothing is written anywhere while checking: decompressed bytes go through one small buffer
//! and are dropped, so a bomb costs at most `max_total_uncompressed` bytes of CPU work and no
//! memory or disk. The central directory's declared sizes are checked first, so the classic
//! 10 GB bomb is refused before a single byte is inflated.
//!
//! Splitting copies entries' compressed bytes unchanged into several smaller archives (no
//! recompression): used when a provider answers 413 to a multi-entry ZIP.

use std::{
    io::{self, Read, Seek},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::media::{sniff, MediaRange, SNIFF_BYTES};

/// What a ZIP may hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZipRules {
    /// Every entry's sniffed type must match one of these.
    pub entry_types: Vec<MediaRange>,
    pub max_entries: usize,
    /// The sum of all entries' uncompressed sizes.
    pub max_total_uncompressed: u64,
}

/// One checked entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZipEntry {
    pub name: String,
    pub size: u64,
    pub compressed_size: u64,
    pub media_type: String,
}

/// Why a ZIP was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the ZIP cannot be read: {0}")]
    Corrupt(String),
    #[error("the ZIP has {count} entries; at most {max} are allowed")]
    TooManyEntries { count: usize, max: usize },
    #[error("the ZIP expands to {size} bytes or more; at most {max} are allowed")]
    ExpandsTooFar { size: u64, max: u64 },
    #[error("entry `{name}` expands beyond its declared size of {declared} bytes")]
    LyingSize { name: String, declared: u64 },
    #[error("entry `{name}` is encrypted")]
    Encrypted { name: String },
    #[error("entry `{name}` is {sniffed}, which is not accepted inside a ZIP")]
    EntryType { name: String, sniffed: String },
    #[error("the ZIP has no files")]
    Empty,
    #[error("spool I/O failed: {0}")]
    Io(#[from] io::Error),
}

fn corrupt(e: zip::result::ZipError) -> ArchiveError {
    match e {
        zip::result::ZipError::Io(io) => ArchiveError::Io(io),
        other => ArchiveError::Corrupt(other.to_string()),
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
fn read_directory<R: Read + Seek>(reader: &mut R) -> Result<Directory, ArchiveError> {
    let len = reader.seek(io::SeekFrom::End(0))?;
    let tail_len = len.min(22 + 65_535);
    reader.seek(io::SeekFrom::Start(len - tail_len))?;
    let mut tail = vec![0u8; tail_len as usize];
    reader.read_exact(&mut tail)?;
    let eocd = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .ok_or_else(|| ArchiveError::Corrupt("no end of central directory record".into()))?;
    let bad = || ArchiveError::Corrupt("truncated end of central directory record".into());
    let entries = u16_at(&tail, eocd + 10).ok_or_else(bad)?;
    let size = u32_at(&tail, eocd + 12).ok_or_else(bad)?;
    if entries != 0xFFFF && size != 0xFFFF_FFFF {
        return Ok(Directory { entries, size });
    }
    // ZIP64: the locator sits just before the classic record and points at the ZIP64 record.
    let locator = eocd.checked_sub(20).ok_or_else(bad)?;
    if tail[locator..locator + 4] != [0x50, 0x4b, 0x06, 0x07] {
        return Ok(Directory { entries, size });
    }
    let record_at = u64_at(&tail, locator + 8).ok_or_else(bad)?;
    let mut record = [0u8; 56];
    reader.seek(io::SeekFrom::Start(record_at))?;
    reader.read_exact(&mut record).map_err(|_| bad())?;
    if record[..4] != [0x50, 0x4b, 0x06, 0x06] {
        return Err(ArchiveError::Corrupt(
            "bad ZIP64 end of central directory record".into(),
        ));
    }
    Ok(Directory {
        entries: u64_at(&record, 32).ok_or_else(bad)?,
        size: u64_at(&record, 40).ok_or_else(bad)?,
    })
}

/// Check every entry of the ZIP in `reader` against `rules`. Blocking: run it off the reactor.
pub fn inspect<R: Read + Seek>(
    mut reader: R,
    rules: &ZipRules,
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
    reader.seek(io::SeekFrom::Start(0))?;
    let mut archive = zip::ZipArchive::new(reader).map_err(corrupt)?;
    if archive.len() > rules.max_entries {
        return Err(ArchiveError::TooManyEntries {
            count: archive.len(),
            max: rules.max_entries,
        });
    }
    // Pass 1: declared sizes only (cheap, and enough for honest bombs).
    let mut declared_total: u64 = 0;
    for i in 0..archive.len() {
        let file = archive.by_index_raw(i).map_err(corrupt)?;
        declared_total = declared_total.saturating_add(file.size());
        if declared_total > rules.max_total_uncompressed {
            return Err(ArchiveError::ExpandsTooFar {
                size: declared_total,
                max: rules.max_total_uncompressed,
            });
        }
    }
    // Pass 2: inflate each entry within its declared size, sniff its head.
    let mut entries = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    for i in 0..archive.len() {
        let raw_name = archive.name_for_index(i).unwrap_or("?").to_owned();
        let mut file = match archive.by_index(i) {
            Ok(f) => f,
            Err(zip::result::ZipError::UnsupportedArchive(msg)) if msg.contains("assword") => {
                return Err(ArchiveError::Encrypted { name: raw_name });
            }
            Err(e) => return Err(corrupt(e)),
        };
        if file.is_dir() {
            // A "directory" is only a name ending in '/': one that carries data could hide
            // anything, so it must be empty.
            if file.size() != 0 || file.compressed_size() > 2 {
                return Err(ArchiveError::Corrupt(format!(
                    "directory entry `{}` carries data",
                    file.name()
                )));
            }
            continue;
        }
        let name = file.name().to_owned();
        if file.encrypted() {
            return Err(ArchiveError::Encrypted { name });
        }
        let declared = file.size();
        let compressed = file.compressed_size();
        let mut head: Vec<u8> = Vec::with_capacity(SNIFF_BYTES);
        let mut seen: u64 = 0;
        loop {
            let n = file.read(&mut buf).map_err(|e| {
                if e.kind() == io::ErrorKind::InvalidData || e.kind() == io::ErrorKind::Other {
                    ArchiveError::Corrupt(format!("entry `{name}`: {e}"))
                } else {
                    ArchiveError::Io(e)
                }
            })?;
            if n == 0 {
                break;
            }
            if head.len() < SNIFF_BYTES {
                let take = n.min(SNIFF_BYTES - head.len());
                head.extend_from_slice(&buf[..take]);
            }
            seen += n as u64;
            if seen > declared {
                return Err(ArchiveError::LyingSize { name, declared });
            }
        }
        if seen != declared {
            return Err(ArchiveError::Corrupt(format!(
                "entry `{name}` has {seen} bytes, {declared} declared"
            )));
        }
        let media_type = sniff(&head).unwrap_or("unknown").to_owned();
        if !rules.entry_types.iter().any(|r| r.matches(&media_type)) {
            return Err(ArchiveError::EntryType {
                name,
                sniffed: media_type,
            });
        }
        entries.push(ZipEntry {
            name,
            size: declared,
            compressed_size: compressed,
            media_type,
        });
    }
    if entries.is_empty() {
        return Err(ArchiveError::Empty);
    }
    Ok(entries)
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
    std::fs::create_dir_all(out_dir)?;
    let mut parts = Vec::new();
    for (n, group) in groups.iter().enumerate() {
        let path = out_dir.join(format!("part-{}.zip", n + 1));
        let file = std::fs::File::create(&path)?;
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
        }
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
