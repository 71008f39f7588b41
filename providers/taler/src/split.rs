//! Splitting a refused ZIP into parts the exchange accepts (blocking; run off the reactor).
//!
//! The spec allows it: on 413 "if the uploaded resource is a ZIP file with multiple files in
//! it the client MAY try to break up the upload into multiple smaller POST requests". The
//! exchange does not say its limit, only that the body was too large, so a refused body of
//! `n` bytes is split with a target of half its size (at most the configured limit): few
//! requests when the limit is far below `n`. When that is impossible because one entry is
//! larger than the half, a target just below `n` is tried, which peels off what it can; a part
//! that is refused again is split the same way. Entries are copied raw
//! (`docgate_core::archive::split`), so a part is a deterministic function of the document:
//! a repeated delivery produces byte-identical parts, and the exchange answers 412 for those
//! it already has.

use std::{
    fs::File,
    io::{self, BufReader, Read, Seek},
    path::{Path, PathBuf},
};

use docgate_core::archive::{self, ArchiveError};
use sha2::{Digest, Sha512};

/// One part written to the scratch directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// `part-2`, or `part-2.1` for a part of a part.
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    pub sha512: [u8; 64],
    /// The entry names inside, in order.
    pub entries: Vec<String>,
}

/// The targets tried for a refused body of `refused_size` bytes, smallest first.
pub fn targets(refused_size: u64, upload_limit: u64) -> Vec<u64> {
    let half = (refused_size / 2).min(upload_limit);
    let just_below = refused_size.saturating_sub(1).min(upload_limit);
    let mut out = vec![half];
    if just_below > half {
        out.push(just_below);
    }
    out
}

/// Split the ZIP that `open` reads, refused at `refused_size` bytes, into parts under
/// `out_dir` named `{prefix}N`. `Ok(None)` when no split into two or more parts exists (a
/// single entry is too large on its own).
pub fn split_refused<R, F>(
    open: F,
    refused_size: u64,
    upload_limit: u64,
    out_dir: &Path,
    prefix: &str,
) -> Result<Option<Vec<Part>>, ArchiveError>
where
    R: Read + Seek,
    F: Fn() -> io::Result<R>,
{
    for target in targets(refused_size, upload_limit) {
        if out_dir.exists() {
            std::fs::remove_dir_all(out_dir)?;
        }
        let Some(paths) = archive::split(open()?, target, out_dir)? else {
            continue;
        };
        if paths.len() < 2 {
            continue;
        }
        let mut parts = Vec::with_capacity(paths.len());
        for (i, path) in paths.into_iter().enumerate() {
            parts.push(describe(format!("{prefix}{}", i + 1), path)?);
        }
        return Ok(Some(parts));
    }
    Ok(None)
}

/// Size, SHA-512 and entry names of a part file, read in one streaming pass plus the
/// central directory.
pub fn describe(name: String, path: PathBuf) -> Result<Part, ArchiveError> {
    let mut file = BufReader::with_capacity(64 * 1024, File::open(&path)?);
    let mut hasher = Sha512::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    file.rewind()?;
    let entries = entry_names(file)?;
    Ok(Part {
        name,
        path,
        size,
        sha512: hasher.finalize().into(),
        entries,
    })
}

/// The names of a ZIP's file entries (directories skipped), from its central directory.
pub fn entry_names<R: Read + Seek>(reader: R) -> Result<Vec<String>, ArchiveError> {
    // A part is a file we just wrote: failing to read it back is our disk's trouble.
    let mut zip = zip::ZipArchive::new(reader).map_err(archive::corrupt)?;
    let mut names = Vec::with_capacity(zip.len());
    for i in 0..zip.len() {
        let entry = zip.by_index_raw(i).map_err(archive::corrupt)?;
        if !entry.is_dir() {
            names.push(entry.name().to_owned());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    fn zip_of(entries: &[(&str, usize)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, len) in entries {
            w.start_file(*name, opts).expect("start");
            let mut data = b"%PDF-1.4\n".to_vec();
            data.resize(*len, b'x');
            w.write_all(&data).expect("write");
        }
        w.finish().expect("finish").into_inner()
    }

    #[test]
    fn targets_halve_first_then_peel() {
        assert_eq!(targets(1000, 10_000), vec![500, 999]);
        assert_eq!(targets(1000, 300), vec![300]);
        assert_eq!(targets(1, 10), vec![0]);
    }

    #[test]
    fn splits_into_described_parts_that_hold_every_entry_once() {
        let z = zip_of(&[("a.pdf", 3000), ("b.pdf", 3000), ("c.pdf", 3000)]);
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("parts");
        let parts = split_refused(
            || Ok(Cursor::new(z.clone())),
            z.len() as u64,
            1 << 20,
            &out,
            "part-",
        )
        .expect("split")
        .expect("possible");
        assert_eq!(parts.len(), 3, "{parts:?}");
        let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["part-1", "part-2", "part-3"]);
        let all: Vec<String> = parts.iter().flat_map(|p| p.entries.clone()).collect();
        assert_eq!(all, ["a.pdf", "b.pdf", "c.pdf"]);
        for p in &parts {
            let bytes = std::fs::read(&p.path).expect("read part");
            assert_eq!(bytes.len() as u64, p.size);
            assert_eq!(p.sha512.to_vec(), Sha512::digest(&bytes).to_vec());
            assert!(p.size < z.len() as u64 / 2 + 1);
        }
        // Deterministic: splitting again gives byte-identical parts.
        let again = split_refused(
            || Ok(Cursor::new(z.clone())),
            z.len() as u64,
            1 << 20,
            &out,
            "part-",
        )
        .expect("split")
        .expect("possible");
        assert_eq!(
            again.iter().map(|p| p.sha512).collect::<Vec<_>>(),
            parts.iter().map(|p| p.sha512).collect::<Vec<_>>()
        );
    }

    #[test]
    fn one_large_entry_beside_small_ones_is_peeled_off() {
        // The half of the whole is smaller than the big entry: the second target still splits.
        let z = zip_of(&[("big.pdf", 9000), ("small.pdf", 500)]);
        let dir = tempfile::tempdir().expect("tempdir");
        let parts = split_refused(
            || Ok(Cursor::new(z.clone())),
            z.len() as u64,
            1 << 20,
            &dir.path().join("p"),
            "part-",
        )
        .expect("split")
        .expect("possible");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].entries, ["big.pdf"]);
    }

    #[test]
    fn a_single_entry_cannot_be_split() {
        let z = zip_of(&[("only.pdf", 9000)]);
        let dir = tempfile::tempdir().expect("tempdir");
        let parts = split_refused(
            || Ok(Cursor::new(z.clone())),
            z.len() as u64,
            1 << 20,
            &dir.path().join("p"),
            "part-",
        )
        .expect("split");
        assert_eq!(parts, None);
    }
}
