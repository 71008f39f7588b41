//! Where a PNG ends: after the CRC of its IEND chunk.
//!
//! A PNG is a signature and a chain of chunks, each `length, type, data, CRC`; the chain is
//! followed by the lengths, so nothing inside a chunk (compressed image data, text) can look
//! like the end. A length beyond the format's 2³¹−1 breaks the chain: the rest is then judged
//! as trailing data, which is the conservative reading.

use super::{payload::Trailer, ScanError};

const FORMAT: &str = "PNG image";
const SIGNATURE_LEN: u8 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Bytes of the 8-byte signature seen (sniffing already checked them).
    Signature(u8),
    /// A chunk's length and type.
    Header {
        buf: [u8; 8],
        len: u8,
    },
    /// A chunk's data and CRC.
    Body {
        left: u64,
        last: bool,
    },
    Trailing,
}

#[derive(Debug, Clone)]
pub(super) struct PngScan {
    state: State,
    trailer: Option<Trailer>,
}

impl PngScan {
    pub(super) fn new() -> PngScan {
        PngScan {
            state: State::Signature(0),
            trailer: None,
        }
    }

    pub(super) fn feed(&mut self, block: &[u8], at: u64) -> Result<(), ScanError> {
        let mut i = 0;
        while i < block.len() {
            if self.state == State::Trailing {
                let trailer = self.trailer.get_or_insert_with(|| Trailer::new(FORMAT));
                return trailer.feed(&block[i..], at + i as u64);
            }
            i = self.step(block, i);
        }
        Ok(())
    }

    fn step(&mut self, block: &[u8], i: usize) -> usize {
        let rest = &block[i..];
        match self.state {
            State::Signature(seen) => {
                let n = usize::from(SIGNATURE_LEN - seen).min(rest.len());
                // n <= 8
                let seen = seen + n as u8;
                self.state = if seen == SIGNATURE_LEN {
                    State::Header {
                        buf: [0; 8],
                        len: 0,
                    }
                } else {
                    State::Signature(seen)
                };
                i + n
            }
            State::Header { mut buf, len } => {
                let have = usize::from(len);
                let n = (8 - have).min(rest.len());
                buf[have..have + n].copy_from_slice(&rest[..n]);
                self.state = if have + n < 8 {
                    // have + n < 8
                    State::Header {
                        buf,
                        len: (have + n) as u8,
                    }
                } else {
                    chunk(buf)
                };
                i + n
            }
            State::Body { left, last } => {
                let n = left.min(rest.len() as u64);
                let left = left - n;
                self.state = match (left, last) {
                    (0, true) => State::Trailing,
                    (0, false) => State::Header {
                        buf: [0; 8],
                        len: 0,
                    },
                    _ => State::Body { left, last },
                };
                // n <= rest.len()
                i + n as usize
            }
            State::Trailing => block.len(),
        }
    }

    pub(super) fn finish(&mut self) -> Result<(), ScanError> {
        match &mut self.trailer {
            Some(trailer) => trailer.finish(),
            None => Ok(()),
        }
    }
}

/// The state after a chunk header: its data and CRC, or trailing data for a broken length.
fn chunk(header: [u8; 8]) -> State {
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if len > 0x7fff_ffff {
        return State::Trailing;
    }
    State::Body {
        left: u64::from(len) + 4,
        last: &header[4..] == b"IEND",
    }
}
