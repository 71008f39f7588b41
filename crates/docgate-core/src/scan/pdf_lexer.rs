//! Just enough of PDF's lexical rules to find names, keywords, `%%EOF` and stream data.
//!
//! A name inside a string `(…/JavaScript…)` or a comment is not a name, and a `stream` keyword
//! inside a string starts nothing, so strings, hex strings and comments are followed. Names
//! are decoded (`#xx` escapes), so `/J#61vaScript` is seen as `/JavaScript`. The lexer is a
//! byte state machine: a token split across two blocks continues where it stopped, and the
//! state is a few dozen bytes whatever the input.

use memchr::{memchr, memchr2, memchr3};

/// Names longer than this (decoded) are reported as overlong: nothing docgate looks for is.
pub(super) const NAME_MAX: usize = 16;
/// Keywords and numbers longer than this are not reported.
const WORD_MAX: usize = 10;

/// A decoded name of at most [`NAME_MAX`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Name {
    bytes: [u8; NAME_MAX],
    len: usize,
    overlong: bool,
}

impl Name {
    pub(super) fn as_bytes(&self) -> Option<&[u8]> {
        (!self.overlong).then(|| &self.bytes[..self.len])
    }
}

/// A name being decoded: `#` escapes may straddle blocks too.
#[derive(Debug, Clone, Copy)]
pub(super) struct NameDecoder {
    name: Name,
    escape: Escape,
    /// Offset of the `/`.
    pub(super) at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    Hash,
    Digit(u8),
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl NameDecoder {
    pub(super) fn new(at: u64) -> NameDecoder {
        NameDecoder {
            name: Name {
                bytes: [0; NAME_MAX],
                len: 0,
                overlong: false,
            },
            escape: Escape::None,
            at,
        }
    }

    fn put(&mut self, b: u8) {
        if self.name.len == NAME_MAX {
            self.name.overlong = true;
        } else {
            self.name.bytes[self.name.len] = b;
            self.name.len += 1;
        }
    }

    /// One regular character of the name. A `#` not followed by two hex digits is kept as
    /// written (what lenient readers do).
    pub(super) fn push(&mut self, b: u8) {
        self.escape = match self.escape {
            Escape::None if b == b'#' => Escape::Hash,
            Escape::None => {
                self.put(b);
                Escape::None
            }
            Escape::Hash => match hex_value(b) {
                Some(_) => Escape::Digit(b),
                None => {
                    self.put(b'#');
                    self.put(b);
                    Escape::None
                }
            },
            Escape::Digit(first) => {
                match (hex_value(first), hex_value(b)) {
                    (Some(h), Some(l)) => self.put(h << 4 | l),
                    _ => {
                        self.put(b'#');
                        self.put(first);
                        self.put(b);
                    }
                }
                Escape::None
            }
        };
    }

    pub(super) fn finish(mut self) -> Name {
        match self.escape {
            Escape::None => {}
            Escape::Hash => self.put(b'#'),
            Escape::Digit(first) => {
                self.put(b'#');
                self.put(first);
            }
        }
        self.name
    }
}

/// PDF white-space characters.
pub(super) fn is_space(b: u8) -> bool {
    matches!(b, 0 | b'\t' | b'\n' | 0x0c | b'\r' | b' ')
}

fn is_delimiter(b: u8) -> bool {
    matches!(
        b,
        b'(' | b')' | b'<' | b'>' | b'[' | b']' | b'{' | b'}' | b'/' | b'%'
    )
}

/// A byte that can be part of a name or keyword.
pub(super) fn is_regular(b: u8) -> bool {
    !is_space(b) && !is_delimiter(b)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Event {
    Name(Name, u64),
    /// A keyword or number of at most [`WORD_MAX`] bytes.
    Word([u8; WORD_MAX], usize),
    /// A `%%EOF` comment; the event is returned with the position right after it.
    EndOfFile,
    /// Stream data starts at the position the event is returned with.
    StreamData,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    Normal,
    Name,
    Word,
    /// In a comment; `eof` counts the bytes of `%EOF` matched after the first `%`.
    Comment {
        eof: u8,
    },
    String {
        depth: u32,
        escaped: bool,
    },
    HexString,
    LessThan,
    /// After the `stream` keyword: spaces, then an end of line, then data.
    AfterStream,
    AfterStreamCr,
}

/// The lexer. `nested` lexers (for the contents of object streams) never report stream data.
#[derive(Debug, Clone)]
pub(super) struct Lexer {
    state: Lex,
    name: NameDecoder,
    word: [u8; WORD_MAX],
    word_len: usize,
    nested: bool,
}

const DEAD_COMMENT: u8 = 5;

impl Lexer {
    pub(super) fn new(nested: bool) -> Lexer {
        Lexer {
            state: Lex::Normal,
            name: NameDecoder::new(0),
            word: [0; WORD_MAX],
            word_len: 0,
            nested,
        }
    }

    /// Run over `data[*pos..]` until the next event (returned, with `*pos` just after what
    /// produced it) or the end of `data` (`None`). `at` is the offset of `data[0]`.
    pub(super) fn next(&mut self, data: &[u8], pos: &mut usize, at: u64) -> Option<Event> {
        while *pos < data.len() {
            let b = data[*pos];
            match self.state {
                Lex::Normal => {
                    *pos += 1;
                    self.state = match b {
                        b'/' => {
                            self.name = NameDecoder::new(at + *pos as u64 - 1);
                            Lex::Name
                        }
                        b'%' => Lex::Comment { eof: 0 },
                        b'(' => Lex::String {
                            depth: 1,
                            escaped: false,
                        },
                        b'<' => Lex::LessThan,
                        b if is_regular(b) => {
                            self.word[0] = b;
                            self.word_len = 1;
                            Lex::Word
                        }
                        _ => Lex::Normal,
                    };
                }
                Lex::Name if is_regular(b) => {
                    self.name.push(b);
                    *pos += 1;
                }
                Lex::Name => {
                    self.state = Lex::Normal;
                    return Some(Event::Name(self.name.finish(), self.name.at));
                }
                Lex::Word if is_regular(b) => {
                    if self.word_len < WORD_MAX {
                        self.word[self.word_len] = b;
                    }
                    self.word_len = self.word_len.saturating_add(1);
                    *pos += 1;
                }
                Lex::Word => return self.end_word(),
                _ => {
                    if let Some(event) = self.other(data, pos) {
                        return Some(event);
                    }
                }
            }
        }
        None
    }

    fn end_word(&mut self) -> Option<Event> {
        self.state = Lex::Normal;
        if self.word_len > WORD_MAX {
            return None;
        }
        if !self.nested && &self.word[..self.word_len] == b"stream" {
            self.state = Lex::AfterStream;
        }
        Some(Event::Word(self.word, self.word_len))
    }

    /// Comments, strings and what follows `stream`.
    fn other(&mut self, data: &[u8], pos: &mut usize) -> Option<Event> {
        let rest = &data[*pos..];
        match self.state {
            Lex::Comment { eof } if eof < 4 => {
                *pos += 1;
                self.state = match rest[0] {
                    b'\r' | b'\n' => Lex::Normal,
                    b if b == b"%EOF"[usize::from(eof)] && eof == 3 => {
                        self.state = Lex::Comment { eof: DEAD_COMMENT };
                        return (!self.nested).then_some(Event::EndOfFile);
                    }
                    b if b == b"%EOF"[usize::from(eof)] => Lex::Comment { eof: eof + 1 },
                    _ => Lex::Comment { eof: DEAD_COMMENT },
                };
            }
            Lex::Comment { .. } => match memchr2(b'\r', b'\n', rest) {
                Some(p) => {
                    *pos += p + 1;
                    self.state = Lex::Normal;
                }
                None => *pos = data.len(),
            },
            Lex::String { depth, escaped } => self.string(data, pos, depth, escaped),
            Lex::HexString => match memchr(b'>', rest) {
                Some(p) => {
                    *pos += p + 1;
                    self.state = Lex::Normal;
                }
                None => *pos = data.len(),
            },
            Lex::LessThan => {
                // `<<` opens a dictionary; anything else is a hex string (even `<>`).
                if rest[0] == b'<' {
                    *pos += 1;
                    self.state = Lex::Normal;
                } else {
                    self.state = Lex::HexString;
                }
            }
            Lex::AfterStream | Lex::AfterStreamCr => return self.stream_start(rest[0], pos),
            Lex::Normal | Lex::Name | Lex::Word => {}
        }
        None
    }

    fn string(&mut self, data: &[u8], pos: &mut usize, depth: u32, escaped: bool) {
        if escaped {
            *pos += 1;
            self.state = Lex::String {
                depth,
                escaped: false,
            };
            return;
        }
        let Some(p) = memchr3(b'(', b')', b'\\', &data[*pos..]) else {
            *pos = data.len();
            return;
        };
        *pos += p + 1;
        self.state = match data[*pos - 1] {
            b'\\' => Lex::String {
                depth,
                escaped: true,
            },
            b'(' => Lex::String {
                depth: depth.saturating_add(1),
                escaped: false,
            },
            _ if depth <= 1 => Lex::Normal,
            _ => Lex::String {
                depth: depth - 1,
                escaped: false,
            },
        };
    }

    /// After `stream`: spaces (tolerated), then CR LF, LF or a lone CR, then the data.
    fn stream_start(&mut self, b: u8, pos: &mut usize) -> Option<Event> {
        match (self.state, b) {
            (Lex::AfterStream, b' ' | b'\t') => {
                *pos += 1;
                return None;
            }
            (Lex::AfterStream, b'\r') => {
                *pos += 1;
                self.state = Lex::AfterStreamCr;
                return None;
            }
            (_, b'\n') => *pos += 1,
            _ => {}
        }
        self.state = Lex::Normal;
        Some(Event::StreamData)
    }

    /// The end of the document: a name still being read is complete.
    pub(super) fn finish(&mut self) -> Option<Event> {
        let state = std::mem::replace(&mut self.state, Lex::Normal);
        match state {
            Lex::Name => Some(Event::Name(self.name.finish(), self.name.at)),
            _ => None,
        }
    }

    /// Forget any token in progress (a new object stream starts).
    pub(super) fn reset(&mut self) {
        self.state = Lex::Normal;
        self.word_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(data: &[u8], split: usize) -> Vec<Vec<u8>> {
        let mut lexer = Lexer::new(true);
        let mut out = Vec::new();
        let mut at = 0u64;
        for block in data.chunks(split) {
            let mut pos = 0;
            while let Some(ev) = lexer.next(block, &mut pos, at) {
                if let Event::Name(name, _) = ev {
                    out.push(name.as_bytes().unwrap_or(b"<long>").to_vec());
                }
            }
            at += block.len() as u64;
        }
        if let Some(Event::Name(name, _)) = lexer.finish() {
            out.push(name.as_bytes().unwrap_or(b"<long>").to_vec());
        }
        out
    }

    #[test]
    fn names_are_decoded_whatever_the_split_and_strings_hide_them() {
        let data = b"<< /S /J#61va#53cript (not /JS here \\) nor (/JS)) % /JS\n/JS>>/A#2";
        for split in [1, 2, 3, 7, data.len()] {
            assert_eq!(
                names(data, split),
                vec![
                    b"S".to_vec(),
                    b"JavaScript".to_vec(),
                    b"JS".to_vec(),
                    b"A#2".to_vec()
                ],
                "split {split}"
            );
        }
    }
}
