//! Where a JPEG ends: the EOI marker of its top-level marker stream.
//!
//! `FF D9` bytes turn up before the real end: inside an EXIF thumbnail (a whole JPEG within an
//! APP1 segment) and, as far as a naive search knows, inside entropy-coded data. So the marker
//! stream is followed properly: segments are skipped by their length (which skips embedded
//! thumbnails whole), and in entropy-coded data `FF 00` (a stuffed byte), `FF D0`–`FF D7`
//! (restart markers) and `FF FF` (fill) are data; any other `FF xx` is the next marker. The first
//! EOI reached that way is the end.
//!
//! After the end, a second JPEG starting right there is parsed the same way: phones append
//! MPF images (depth maps, HDR gain maps) after the primary image. Anything else is trailing
//! data for [`Trailer`]. Bytes that break the marker syntax (garbage between segments) are
//! treated like entropy-coded data up to the next marker, as decoders resynchronise.

use memchr::memchr;

use super::{payload::Trailer, ScanError};

const FORMAT: &str = "JPEG image";
const SOS: u8 = 0xDA;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Bytes of the first SOI (`FF D8`) seen.
    Soi(u8),
    /// Between segments: a marker's `FF` is due.
    Marker,
    /// After a marker's `FF` between segments.
    Code,
    /// A segment's two length bytes.
    Length {
        code: u8,
        high: Option<u8>,
    },
    /// The rest of a segment; entropy-coded data follows a scan header.
    Skip {
        left: u16,
        scan_follows: bool,
    },
    /// Entropy-coded data (or garbage being resynchronised).
    Entropy,
    /// An `FF` in entropy-coded data.
    EntropyFf,
    /// Right after an EOI: another image may follow.
    AfterEoi,
    /// An `FF` right after an EOI.
    AfterEoiFf,
    Trailing,
}

#[derive(Debug, Clone)]
pub(super) struct JpegScan {
    state: State,
    trailer: Option<Trailer>,
}

impl JpegScan {
    pub(super) fn new() -> JpegScan {
        JpegScan {
            state: State::Soi(0),
            trailer: None,
        }
    }

    pub(super) fn feed(&mut self, block: &[u8], at: u64) -> Result<(), ScanError> {
        let mut i = 0;
        while i < block.len() {
            if self.state == State::Trailing {
                if let Some(trailer) = &mut self.trailer {
                    trailer.feed(&block[i..], at + i as u64)?;
                }
                return Ok(());
            }
            i = self.step(block, i, at)?;
        }
        Ok(())
    }

    /// Advance over `block[i..]` by at least one byte; returns the next position.
    fn step(&mut self, block: &[u8], i: usize, at: u64) -> Result<usize, ScanError> {
        let byte = block[i];
        self.state = match self.state {
            State::Entropy => {
                return Ok(match memchr(0xFF, &block[i..]) {
                    Some(p) => {
                        self.state = State::EntropyFf;
                        i + p + 1
                    }
                    None => block.len(),
                });
            }
            State::Skip { left, scan_follows } => {
                let n = usize::from(left).min(block.len() - i);
                // n <= left, which is a u16
                let left = left - n as u16;
                self.state = if left == 0 {
                    after_segment(scan_follows)
                } else {
                    State::Skip { left, scan_follows }
                };
                return Ok(i + n);
            }
            State::Soi(0) if byte == 0xFF => State::Soi(1),
            State::Soi(1) if byte == 0xD8 => State::Marker,
            State::Soi(_) => State::Entropy,
            State::Marker if byte == 0xFF => State::Code,
            State::Marker => State::Entropy,
            State::Code => marker(byte, false),
            State::EntropyFf => marker(byte, true),
            State::Length { code, high: None } => State::Length {
                code,
                high: Some(byte),
            },
            State::Length {
                code,
                high: Some(high),
            } => match u16::from_be_bytes([high, byte]) {
                0 | 1 => State::Entropy,
                2 => after_segment(code == SOS),
                len => State::Skip {
                    left: len - 2,
                    scan_follows: code == SOS,
                },
            },
            State::AfterEoi if byte == 0xFF => State::AfterEoiFf,
            State::AfterEoi => return self.start_trailer(i, at, false),
            State::AfterEoiFf if byte == 0xD8 => State::Marker,
            State::AfterEoiFf => return self.start_trailer(i, at, true),
            State::Trailing => return Ok(block.len()),
        };
        Ok(i + 1)
    }

    /// The end was passed and no image follows: from byte `i` on (and the `FF` before it when
    /// `ff_before`), everything is trailing data.
    fn start_trailer(&mut self, i: usize, at: u64, ff_before: bool) -> Result<usize, ScanError> {
        let mut trailer = Trailer::new(FORMAT);
        if ff_before {
            trailer.feed(&[0xFF], (at + i as u64).saturating_sub(1))?;
        }
        self.trailer = Some(trailer);
        self.state = State::Trailing;
        Ok(i)
    }

    pub(super) fn finish(&mut self) -> Result<(), ScanError> {
        // A lone `FF` after the end (AfterEoiFf) cannot be a payload.
        match &mut self.trailer {
            Some(trailer) => trailer.finish(),
            None => Ok(()),
        }
    }
}

fn after_segment(scan_follows: bool) -> State {
    if scan_follows {
        State::Entropy
    } else {
        State::Marker
    }
}

/// The state after the marker code `code`, met between segments or in a scan.
fn marker(code: u8, in_scan: bool) -> State {
    match code {
        0xFF if in_scan => State::EntropyFf,
        0xFF => State::Code,
        // A stuffed zero in a scan; outside one, garbage to resynchronise over.
        0x00 => State::Entropy,
        0xD0..=0xD7 if in_scan => State::Entropy,
        0xD0..=0xD7 | 0x01 | 0xD8 => State::Marker,
        0xD9 => State::AfterEoi,
        code => State::Length { code, high: None },
    }
}
