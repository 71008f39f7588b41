//! Active content and polyglots, found in one streaming pass.
//!
//! A file can be two things at once: a JPEG that is also a ZIP (ZIP tools read from the end,
//! image decoders from the start), a PDF with an ELF appended, a PDF that runs JavaScript.
//! Sniffing the first bytes sees only the first identity. [`ContentScan`] is fed every block
//! the ingest pipeline sees and knows where each format it understands *ends*:
//!
//! | format | end | after the end |
//! |---|---|---|
//! | JPEG | EOI of the top-level marker stream ([`jpeg`]) | another JPEG (MPF), else trailing data |
//! | PNG | CRC of the IEND chunk ([`png`]) | trailing data |
//! | PDF | each `%%EOF` ([`pdf`]) | an incremental update, else trailing data |
//!
//! Trailing data is refused when it carries an archive, executable or script signature
//! ([`payload`]); harmless trailers (padding, camera maker notes, motion-photo video) pass.
//! PDFs are also refused for JavaScript, Launch actions and embedded executables. Formats
//! whose end docgate does not track (GIF, WebP, TIFF, audio, video) are searched whole for
//! validated signatures ([`payload`]): a RAR or an ELF after a GIF's trailer is found there,
//! a few bytes of HTML after it are not. For every
//! format other than ZIP itself, a ZIP end record within the last 64 KiB — where ZIP tools
//! look for one — is refused too ([`HiddenZip`]): that catches a ZIP hidden before a JPEG's
//! end, in a segment no decoder shows.
//!
//! Memory is bounded whatever the input: state machines, a few small windows (16 bytes for
//! signatures across blocks, 1 KiB for a PDF stream's head) and one inflater (~40 KiB) for
//! PDF object streams. Nothing is buffered per document.

mod jpeg;
mod payload;
mod pdf;
mod pdf_lexer;
mod png;
mod window;

use std::io::{self, Read};

use memchr::memmem;

use crate::policy::UploadPolicy;

pub use pdf::{inflate_budget, INFLATE_BUDGET, INFLATE_PER_BYTE};

/// Why a document was refused as active content. Always the sender's fault; never retryable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("after the end of the {format}, byte {offset} starts {found}")]
    TrailingPayload {
        format: &'static str,
        found: &'static str,
        offset: u64,
    },
    #[error("the {format} carries {found} at byte {offset}")]
    CarriedPayload {
        format: &'static str,
        found: &'static str,
        offset: u64,
    },
    #[error(
        "the document hides a ZIP archive: ZIP tools would open its end record at byte {offset}"
    )]
    HiddenArchive { offset: u64 },
    #[error("the PDF contains {found} (at byte {offset})")]
    ActiveContent { found: &'static str, offset: u64 },
    #[error("the PDF stream at byte {offset} holds {found}")]
    EmbeddedPayload { found: &'static str, offset: u64 },
    #[error("the PDF cannot be checked for active content: {reason} (at byte {offset})")]
    Uncheckable { reason: &'static str, offset: u64 },
}

impl ScanError {
    /// What was found, in a few words (a problem's `found` member).
    pub fn found(&self) -> &'static str {
        match self {
            ScanError::TrailingPayload { found, .. }
            | ScanError::CarriedPayload { found, .. }
            | ScanError::ActiveContent { found, .. }
            | ScanError::EmbeddedPayload { found, .. } => found,
            ScanError::HiddenArchive { .. } => payload::ZIP,
            ScanError::Uncheckable { .. } => "content that cannot be checked",
        }
    }

    /// Where in the document (a problem's `offset` member).
    pub fn offset(&self) -> u64 {
        match self {
            ScanError::TrailingPayload { offset, .. }
            | ScanError::CarriedPayload { offset, .. }
            | ScanError::HiddenArchive { offset }
            | ScanError::ActiveContent { offset, .. }
            | ScanError::EmbeddedPayload { offset, .. }
            | ScanError::Uncheckable { offset, .. } => *offset,
        }
    }
}

#[derive(Debug)]
enum Format {
    Off,
    Jpeg(jpeg::JpegScan),
    Png(png::PngScan),
    Pdf(Box<pdf::PdfScan>),
    /// Formats whose end docgate does not track (GIF, WebP, TIFF, audio, video…): validated
    /// signatures anywhere in them, and the hidden-ZIP check.
    Other(payload::PayloadSearch),
}

/// The streaming content scanner; see the module docs.
#[derive(Debug)]
pub struct ContentScan {
    format: Format,
    hidden_zip: Option<HiddenZip>,
    offset: u64,
    failed: Option<ScanError>,
}

impl ContentScan {
    /// The scanner for a document of the sniffed `media_type` under `policy`: inert when the
    /// policy does not refuse active content.
    pub fn new(media_type: &str, policy: &UploadPolicy) -> ContentScan {
        if policy.refuse_active_content {
            ContentScan::for_media_type(media_type)
        } else {
            ContentScan::off()
        }
    }

    /// The scanner for a document of the sniffed `media_type`, whatever the policy.
    pub fn for_media_type(media_type: &str) -> ContentScan {
        let format = match media_type {
            "image/jpeg" => Format::Jpeg(jpeg::JpegScan::new()),
            "image/png" => Format::Png(png::PngScan::new()),
            "application/pdf" => Format::Pdf(Box::new(pdf::PdfScan::new())),
            // A ZIP's entries are inflated and scanned one by one (archive::inspect).
            "application/zip" => return ContentScan::off(),
            other => Format::Other(payload::PayloadSearch::new(other_format(other))),
        };
        ContentScan {
            format,
            hidden_zip: Some(HiddenZip::default()),
            offset: 0,
            failed: None,
        }
    }

    /// A scanner that accepts everything.
    pub fn off() -> ContentScan {
        ContentScan {
            format: Format::Off,
            hidden_zip: None,
            offset: 0,
            failed: None,
        }
    }

    /// Whether feeding this scanner does anything.
    pub fn is_active(&self) -> bool {
        !matches!(self.format, Format::Off)
    }

    /// Bytes fed so far.
    pub fn scanned(&self) -> u64 {
        self.offset
    }

    /// The next block of the document. Once it has failed, the scanner keeps its first error.
    pub fn feed(&mut self, block: &[u8]) -> Result<(), ScanError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let at = self.offset;
        self.offset += block.len() as u64;
        let result = self
            .feed_format(block, at)
            .and_then(|()| match &mut self.hidden_zip {
                Some(zip) => zip.feed(block, at),
                None => Ok(()),
            });
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    fn feed_format(&mut self, block: &[u8], at: u64) -> Result<(), ScanError> {
        match &mut self.format {
            Format::Off => Ok(()),
            Format::Other(search) => search.feed(block, at).map_err(carried),
            Format::Jpeg(scan) => scan.feed(block, at),
            Format::Png(scan) => scan.feed(block, at),
            Format::Pdf(scan) => scan.feed(block, at),
        }
    }

    /// The end of the document: the verdict.
    pub fn finish(mut self) -> Result<(), ScanError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        match &mut self.format {
            Format::Off => {}
            Format::Other(search) => search.finish().map_err(carried)?,
            Format::Jpeg(scan) => scan.finish()?,
            Format::Png(scan) => scan.finish()?,
            Format::Pdf(scan) => scan.finish()?,
        }
        match &mut self.hidden_zip {
            Some(zip) => zip.finish(self.offset),
            None => Ok(()),
        }
    }

    /// Scan a whole document from a blocking reader (a spooled document, a ZIP entry).
    /// The outer error is the reader's.
    pub fn scan_reader<R: Read>(
        mut self,
        mut reader: R,
    ) -> Result<Result<(), ScanError>, io::Error> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(self.finish()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if let Err(e) = self.feed(&buf[..n]) {
                return Ok(Err(e));
            }
        }
    }
}

/// A signature found by searching a whole document of a format without end tracking: not
/// after its end, just in it.
fn carried(e: ScanError) -> ScanError {
    match e {
        ScanError::TrailingPayload {
            format,
            found,
            offset,
        } => ScanError::CarriedPayload {
            format,
            found,
            offset,
        },
        other => other,
    }
}

/// How a format without end tracking is named in refusals.
fn other_format(media_type: &str) -> &'static str {
    match media_type.split('/').next() {
        Some("image") => "image",
        Some("audio") => "audio file",
        Some("video") => "video",
        _ => "document",
    }
}

/// How far from the end ZIP tools look for the end-of-central-directory record: its own
/// 22 bytes plus the longest archive comment.
const ZIP_END_REACH: u64 = 22 + 65_535;

/// The last plausible ZIP end record in the document; refused when ZIP tools would find it.
///
/// Plausible means a record that leads somewhere: a central directory record signature
/// somewhere before it, or (an archive of no entries is harmless, so this only catches
/// what the first misses) the fields of a well-formed single-disk record. ZIP tools do not
/// agree on which fields they check (Python's `zipfile` and `unzip` ignore the disk numbers
/// and entry counts), so a record is not excused by odd values there.
#[derive(Debug, Default)]
struct HiddenZip {
    window: window::Overlap,
    /// Where the first central directory record signature is.
    central: Option<u64>,
    last: Option<u64>,
}

impl HiddenZip {
    fn feed(&mut self, block: &[u8], at: u64) -> Result<(), ScanError> {
        let HiddenZip {
            window,
            central,
            last,
        } = self;
        window.feed(block, at, &mut |hay: &[u8], starts, at| {
            note_zip_records(hay, starts, at, central, last);
            Ok(())
        })
    }

    fn finish(&mut self, len: u64) -> Result<(), ScanError> {
        let HiddenZip {
            window,
            central,
            last,
        } = self;
        window.finish(&mut |hay: &[u8], starts, at| -> Result<(), ScanError> {
            note_zip_records(hay, starts, at, central, last);
            Ok(())
        })?;
        match self.last {
            Some(offset) if len - offset <= ZIP_END_REACH => {
                Err(ScanError::HiddenArchive { offset })
            }
            _ => Ok(()),
        }
    }
}

fn note_zip_records(
    hay: &[u8],
    starts: usize,
    at: u64,
    central: &mut Option<u64>,
    last: &mut Option<u64>,
) {
    let searched = &hay[..(starts + 3).min(hay.len())];
    for p in memmem::find_iter(searched, b"PK") {
        if p >= starts {
            break;
        }
        match hay.get(p + 2..p + 4) {
            Some([1, 2]) => {
                central.get_or_insert(at + p as u64);
            }
            Some([5, 6]) if central.is_some() || payload::zip_end(&hay[p..]) => {
                *last = Some(at + p as u64);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
