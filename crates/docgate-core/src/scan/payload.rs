//! Signatures of what must not ride along with a document: archives, executables, scripts.
//!
//! Two strengths. Right where a document's own format has ended (after a JPEG's EOI, a PNG's
//! IEND, a PDF's `%%EOF`) even a two-byte magic such as `MZ` or `#!` is a finding: nothing
//! legitimate starts there with it. Anywhere else — deeper in trailing data, inside a PDF
//! stream — only *validated* signatures count: a magic plus fields that must hold specific
//! values (a ZIP header's version and method, an ELF's class and version, a PE's machine), so
//! random bytes such as compressed or entropy-coded data match with a probability below 2⁻⁴⁰
//! per position, and a legitimate 100 MB video trailer is not refused by chance.

use memchr::memchr3_iter;

use super::{
    window::{Overlap, LOOKAHEAD},
    ScanError,
};

pub(super) const ZIP: &str = "a ZIP archive";
const RAR: &str = "a RAR archive";
const SEVEN_ZIP: &str = "a 7z archive";
const COMPRESSED: &str = "compressed data (gzip, bzip2 or xz)";
const ELF: &str = "an ELF executable";
const PE: &str = "a Windows executable";
const MACH_O: &str = "a Mach-O executable";
const SCRIPT: &str = "a script (#!)";
const HTML: &str = "HTML or script";
const PDF: &str = "a PDF document";

fn u16_le(b: &[u8]) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(..2)?.try_into().ok()?))
}

fn u32_le(b: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?))
}

fn u32_be(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

/// A ZIP local file header: a version ZIP tools know and a registered compression method.
fn zip_local(w: &[u8]) -> bool {
    let (Some(version), Some(method)) = (u16_le(&w[4..]), w.get(8..).and_then(u16_le)) else {
        return false;
    };
    version <= 63 && matches!(method, 0 | 8 | 9 | 12 | 14 | 93 | 95 | 98 | 99)
}

/// An end-of-central-directory record of a single-disk archive (the only kind ZIP tools
/// open): both disk numbers zero, both entry counts equal.
pub(super) fn zip_end(w: &[u8]) -> bool {
    matches!(w.get(4..12), Some(f) if f[..4] == [0; 4] && f[4..6] == f[6..8])
}

fn pe_machine(w: &[u8]) -> bool {
    matches!(
        u16_le(&w[4..]),
        Some(0x014c | 0x8664 | 0xaa64 | 0x01c4 | 0x0200)
    )
}

const CPU_TYPES: [u32; 6] = [7, 12, 18, 0x0100_0007, 0x0100_000c, 0x0100_0012];

fn mach_o(w: &[u8]) -> bool {
    let cpu = match w.get(..4) {
        Some([0xcf | 0xce, 0xfa, 0xed, 0xfe]) => u32_le(&w[4..]),
        Some([0xfe, 0xed, 0xfa, 0xce | 0xcf]) => u32_be(&w[4..]),
        // A universal binary: a handful of architectures, the first one a known CPU. (Java
        // class files share the magic; their version numbers fail the count.)
        Some([0xca, 0xfe, 0xba, 0xbe]) => match u32_be(&w[4..]) {
            Some(1..=8) => w.get(8..).and_then(u32_be),
            _ => None,
        },
        _ => None,
    };
    cpu.is_some_and(|c| CPU_TYPES.contains(&c))
}

fn starts_with_ignore_case(w: &[u8], prefix: &[u8]) -> bool {
    w.len() >= prefix.len() && w[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// `<script` followed by a space or `>`: the one HTML tag worth finding anywhere.
fn script_tag(w: &[u8]) -> bool {
    starts_with_ignore_case(w, b"<script")
        && matches!(w.get(7), Some(b' ' | b'\t' | b'\n' | b'\r' | b'>'))
}

/// A validated signature starting at `w[0]`; `w` holds the bytes from there on.
pub(super) fn strong_at(w: &[u8]) -> Option<&'static str> {
    let found = match w.get(..4)? {
        b"PK\x03\x04" => zip_local(w).then_some(ZIP),
        b"PK\x05\x06" => zip_end(w).then_some(ZIP),
        b"PE\0\0" => pe_machine(w).then_some(PE),
        b"Rar!" => matches!(w.get(4..7), Some([0x1a, 0x07, 0x00]))
            .then_some(RAR)
            .or_else(|| matches!(w.get(4..8), Some([0x1a, 0x07, 0x01, 0x00])).then_some(RAR)),
        [b'7', b'z', 0xbc, 0xaf] => {
            matches!(w.get(4..7), Some([0x27, 0x1c, 0x00])).then_some(SEVEN_ZIP)
        }
        [0x7f, b'E', b'L', b'F'] => matches!(w.get(4..7), Some([1 | 2, 1 | 2, 1])).then_some(ELF),
        [b'<', ..] => script_tag(w).then_some(HTML),
        _ => mach_o(w).then_some(MACH_O),
    };
    found
}

/// Spaces, line ends and NUL padding: what may separate a document's end from what follows.
pub(super) fn is_padding(b: u8) -> bool {
    matches!(b, 0 | b'\t' | b'\n' | 0x0c | b'\r' | b' ')
}

const HTML_STARTS: [&[u8]; 8] = [
    b"<!doctype html",
    b"<html",
    b"<script",
    b"<svg",
    b"<?php",
    b"<iframe",
    b"<body",
    b"<head",
];

fn html_start(w: &[u8]) -> bool {
    let w = w.strip_prefix(b"\xef\xbb\xbf").unwrap_or(w);
    HTML_STARTS.iter().any(|p| starts_with_ignore_case(w, p))
}

/// What the first significant bytes after a document's end are, if they are a payload.
pub(super) fn at_start(w: &[u8]) -> Option<&'static str> {
    if let Some(found) = strong_at(w) {
        return Some(found);
    }
    let weak: &[(&[u8], &'static str)] = &[
        (b"PK\x03\x04", ZIP),
        (b"PK\x05\x06", ZIP),
        (b"PK\x07\x08", ZIP),
        (b"Rar!", RAR),
        (b"7z\xbc\xaf", SEVEN_ZIP),
        (b"\x1f\x8b", COMPRESSED),
        (b"BZh", COMPRESSED),
        (b"\xfd7zXZ", COMPRESSED),
        (b"\x7fELF", ELF),
        (b"MZ", PE),
        (b"#!", SCRIPT),
        (b"%PDF-", PDF),
    ];
    if let Some((_, found)) = weak.iter().find(|(magic, _)| w.starts_with(magic)) {
        return Some(found);
    }
    if [
        &[0xcf, 0xfa, 0xed, 0xfe][..],
        &[0xce, 0xfa, 0xed, 0xfe],
        &[0xfe, 0xed, 0xfa, 0xce],
    ]
    .iter()
    .any(|m| w.starts_with(m))
    {
        return Some(MACH_O);
    }
    html_start(w).then_some(HTML)
}

/// A DOS header whose `e_lfanew` points at a PE header within `head`.
fn pe_image(head: &[u8]) -> bool {
    if !head.starts_with(b"MZ") {
        return false;
    }
    let Some(lfanew) = head.get(0x3c..).and_then(u32_le) else {
        return false;
    };
    usize::try_from(lfanew)
        .ok()
        .and_then(|at| head.get(at..))
        .is_some_and(|pe| pe.starts_with(b"PE\0\0") && pe_machine(pe))
}

/// What the first bytes of a PDF stream are, if they are a payload. `embedded` streams (an
/// attached file) are judged like trailing data; other streams (page content, images, fonts)
/// only by validated signatures, so image data cannot be mistaken for an executable.
pub(super) fn in_stream(head: &[u8], embedded: bool) -> Option<&'static str> {
    if embedded {
        return at_start(head);
    }
    if let Some(found) = strong_at(head) {
        return Some(found);
    }
    if pe_image(head) {
        return Some(PE);
    }
    if head.starts_with(b"#!/") {
        return Some(SCRIPT);
    }
    let text = &head[head
        .iter()
        .position(|&b| !is_padding(b))
        .unwrap_or(head.len())..];
    html_start(text).then_some(HTML)
}

/// How many bytes [`at_start`] wants to see.
const START_BYTES: usize = 16;

/// Checks the first significant bytes after a document's end (or after each `%%EOF` of a PDF).
#[derive(Debug, Clone)]
pub(super) struct StartCheck {
    format: &'static str,
    state: Start,
    buf: [u8; START_BYTES],
    len: usize,
    /// Offset of the first significant byte.
    first_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Idle,
    Padding,
    Collecting,
}

impl StartCheck {
    pub(super) fn new(format: &'static str) -> StartCheck {
        StartCheck {
            format,
            state: Start::Idle,
            buf: [0; START_BYTES],
            len: 0,
            first_at: 0,
        }
    }

    /// A new end of the document was seen: judge what comes next. A check still collecting
    /// is judged on what it has.
    pub(super) fn begin(&mut self) -> Result<(), ScanError> {
        self.finish()?;
        self.state = Start::Padding;
        Ok(())
    }

    /// Feed the bytes after the end; returns once the check is decided or `data` is used up.
    pub(super) fn feed(&mut self, data: &[u8], at: u64) -> Result<(), ScanError> {
        let mut i = 0;
        if self.state == Start::Padding {
            match data.iter().position(|&b| !is_padding(b)) {
                Some(p) => {
                    i = p;
                    self.state = Start::Collecting;
                    self.first_at = at + p as u64;
                    self.len = 0;
                }
                None => return Ok(()),
            }
        }
        if self.state == Start::Collecting {
            let take = (START_BYTES - self.len).min(data.len() - i);
            self.buf[self.len..self.len + take].copy_from_slice(&data[i..i + take]);
            self.len += take;
            if self.len == START_BYTES {
                return self.finish();
            }
        }
        Ok(())
    }

    pub(super) fn finish(&mut self) -> Result<(), ScanError> {
        let collected = self.state == Start::Collecting;
        self.state = Start::Idle;
        match collected.then(|| at_start(&self.buf[..self.len])).flatten() {
            Some(found) => Err(ScanError::TrailingPayload {
                format: self.format,
                found,
                offset: self.first_at,
            }),
            None => Ok(()),
        }
    }
}

/// Looks for validated signatures anywhere in the bytes it is fed.
#[derive(Debug, Clone)]
pub(super) struct PayloadSearch {
    format: &'static str,
    window: Overlap,
}

/// The first bytes of every validated signature, in groups for `memchr`.
fn candidates(hay: &[u8]) -> impl Iterator<Item = usize> + '_ {
    memchr3_iter(b'P', b'R', b'7', hay)
        .chain(memchr3_iter(0x7f, b'<', 0xca, hay))
        .chain(memchr3_iter(0xcf, 0xce, 0xfe, hay))
}

/// The earliest validated signature starting in `hay[..starts]`.
pub(super) fn first_strong(hay: &[u8], starts: usize, at: u64) -> Option<(&'static str, u64)> {
    candidates(&hay[..starts])
        .filter_map(|i| strong_at(&hay[i..]).map(|found| (found, at + i as u64)))
        .min_by_key(|&(_, offset)| offset)
}

impl PayloadSearch {
    pub(super) fn new(format: &'static str) -> PayloadSearch {
        PayloadSearch {
            format,
            window: Overlap::default(),
        }
    }

    pub(super) fn feed(&mut self, data: &[u8], at: u64) -> Result<(), ScanError> {
        let format = self.format;
        self.window.feed(data, at, &mut |hay: &[u8], starts, at| {
            refuse_strong(format, hay, starts, at)
        })
    }

    pub(super) fn finish(&mut self) -> Result<(), ScanError> {
        let format = self.format;
        self.window
            .finish(&mut |hay: &[u8], starts, at| refuse_strong(format, hay, starts, at))
    }
}

fn refuse_strong(
    format: &'static str,
    hay: &[u8],
    starts: usize,
    at: u64,
) -> Result<(), ScanError> {
    match first_strong(hay, starts, at) {
        Some((found, offset)) => Err(ScanError::TrailingPayload {
            format,
            found,
            offset,
        }),
        None => Ok(()),
    }
}

/// Everything after the end of a JPEG or PNG: its start judged strictly, all of it searched.
#[derive(Debug, Clone)]
pub(super) struct Trailer {
    start: StartCheck,
    search: PayloadSearch,
}

impl Trailer {
    pub(super) fn new(format: &'static str) -> Trailer {
        let mut start = StartCheck::new(format);
        start.state = Start::Padding;
        Trailer {
            start,
            search: PayloadSearch::new(format),
        }
    }

    pub(super) fn feed(&mut self, data: &[u8], at: u64) -> Result<(), ScanError> {
        self.start.feed(data, at)?;
        self.search.feed(data, at)
    }

    pub(super) fn finish(&mut self) -> Result<(), ScanError> {
        self.start.finish()?;
        self.search.finish()
    }
}

/// Only used to keep [`LOOKAHEAD`] large enough for every validated signature.
const _: () = assert!(LOOKAHEAD >= 12);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validated_signatures_need_more_than_their_magic() {
        assert_eq!(strong_at(b"PK\x03\x04\x14\0\0\0\x08\0rest"), Some(ZIP));
        assert_eq!(strong_at(b"PK\x03\x04\xff\xff\0\0\x08\0rest"), None);
        assert_eq!(strong_at(b"PK\x05\x06\0\0\0\0\x01\0\x01\0"), Some(ZIP));
        assert_eq!(strong_at(b"PK\x05\x06\0\0\0\0\x01\0\x02\0"), None);
        assert_eq!(strong_at(b"\x7fELF\x02\x01\x01\0"), Some(ELF));
        assert_eq!(strong_at(b"\x7fELF\x09\x01\x01\0"), None);
        assert_eq!(strong_at(b"PE\0\0\x64\x86"), Some(PE));
        assert_eq!(strong_at(b"PE\0\0\x12\x34"), None);
        assert_eq!(strong_at(b"\xcf\xfa\xed\xfe\x0c\0\0\x01"), Some(MACH_O));
        // A Java class file shares the universal-binary magic but not its fields.
        assert_eq!(strong_at(b"\xca\xfe\xba\xbe\0\0\0\x34\0\0\0\0"), None);
        assert_eq!(strong_at(b"Rar!\x1a\x07\x01\0"), Some(RAR));
        assert_eq!(strong_at(b"<SCRIPT>alert(1)"), Some(HTML));
        assert_eq!(strong_at(b"<scripted"), None);
        assert_eq!(
            strong_at(b"MZ\x90\0"),
            None,
            "MZ alone is too weak anywhere"
        );
    }

    #[test]
    fn right_after_the_end_weak_magics_count_too() {
        assert_eq!(at_start(b"MZ\x90\0\x03\0"), Some(PE));
        assert_eq!(at_start(b"#!/bin/sh\n"), Some(SCRIPT));
        assert_eq!(at_start(b"\x1f\x8b\x08\0"), Some(COMPRESSED));
        assert_eq!(at_start(b"<!DOCTYPE html>"), Some(HTML));
        assert_eq!(
            at_start(b"SEFHxxxx"),
            None,
            "a camera trailer is not a payload"
        );
        assert_eq!(at_start(b"12 0 obj"), None);
    }

    #[test]
    fn stream_heads_are_judged_by_validated_signatures_unless_embedded() {
        let mut exe = b"MZ".to_vec();
        exe.resize(0x3c, 0);
        exe.extend_from_slice(&0x40u32.to_le_bytes());
        exe.extend_from_slice(b"PE\0\0\x4c\x01");
        assert_eq!(in_stream(&exe, false), Some(PE));
        assert_eq!(in_stream(b"MZ\0\0random", false), None);
        assert_eq!(in_stream(b"MZ\0\0random", true), Some(PE));
        assert_eq!(in_stream(b"q 1 0 0 1 0 0 cm", false), None);
    }

    #[test]
    fn the_start_check_skips_padding_across_blocks() {
        let mut check = StartCheck::new("JPEG image");
        check.begin().expect("idle");
        check.feed(b"\0\0\r\n", 100).expect("padding");
        check.feed(b"  M", 104).expect("one byte");
        match check.feed(b"Z\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0\xb8", 107) {
            Err(ScanError::TrailingPayload { found, offset, .. }) => {
                assert_eq!((found, offset), (PE, 106));
            }
            other => panic!("expected a trailing payload, got {other:?}"),
        }
    }
}
