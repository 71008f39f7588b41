//! Just enough of PDF's lexical rules to find names, keywords, `%%EOF` and stream data.
//!
//! A name inside a string `(…/JavaScript…)` or a comment is not a name, and a `stream` keyword
//! inside a string starts nothing, so strings, hex strings and comments are followed. Names
//! are decoded (`#xx` escapes), so `/J#61vaScript` is seen as `/JavaScript`. The lexer is a
//! byte state machine: a token split across two blocks continues where it stopped, and the
//! state is a few dozen bytes whatever the input.

use memchr::{memchr, memchr2, memchr3};

use super::ScanError;

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

    /// A run of regular characters; once the name is overlong nothing more can change.
    #[inline]
    pub(super) fn extend(&mut self, run: &[u8]) {
        for &b in run {
            if self.name.overlong {
                return;
            }
            self.push(b);
        }
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
pub(super) const fn is_space(b: u8) -> bool {
    matches!(b, 0 | b'\t' | b'\n' | 0x0c | b'\r' | b' ')
}

const fn is_delimiter(b: u8) -> bool {
    matches!(
        b,
        b'(' | b')' | b'<' | b'>' | b'[' | b']' | b'{' | b'}' | b'/' | b'%'
    )
}

/// Which bytes can be part of a name or keyword (a table: the lexer asks for every byte).
const REGULAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = !is_space(b as u8) && !is_delimiter(b as u8);
        b += 1;
    }
    table
};

/// A byte that can be part of a name or keyword.
#[inline]
pub(super) fn is_regular(b: u8) -> bool {
    REGULAR[usize::from(b)]
}

/// The end of the run of regular bytes starting at `data[from]`.
#[inline]
pub(super) fn regular_run_end(data: &[u8], from: usize) -> usize {
    data[from..]
        .iter()
        .position(|&b| !is_regular(b))
        .map_or(data.len(), |p| from + p)
}

/// What the lexer reports, as it finds it. Names and words are lent, not copied: most of
/// them are dismissed at a glance.
pub(super) trait Tokens {
    /// A decoded name (`None` when longer than [`NAME_MAX`]); `at` is the offset of its `/`.
    fn name(&mut self, name: Option<&[u8]>, at: u64) -> Result<(), ScanError>;
    /// A keyword or number of at most [`WORD_MAX`] bytes (longer ones are not reported).
    fn word(&mut self, word: &[u8]) -> Result<(), ScanError>;
    /// A `%%EOF` comment ended right before `data[pos]` of the data being lexed.
    fn end_of_file(&mut self, pos: usize) -> Result<(), ScanError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    Normal,
    /// A name continued from the previous block.
    Name,
    /// A word continued from the previous block.
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

    /// Lex `data[pos..]` (`at` is the offset of `data[0]`), reporting to `tokens`. Returns
    /// where stream data starts, or `None` once `data` is used up.
    pub(super) fn run(
        &mut self,
        data: &[u8],
        mut pos: usize,
        at: u64,
        tokens: &mut impl Tokens,
    ) -> Result<Option<usize>, ScanError> {
        while pos < data.len() {
            pos = match self.state {
                Lex::Normal => self.normal(data, pos, at, tokens)?,
                Lex::Name | Lex::Word => self.continued(data, pos, tokens)?,
                Lex::AfterStream | Lex::AfterStreamCr => {
                    if let Some(start) = self.stream_start(data[pos], pos) {
                        return Ok(Some(start));
                    }
                    pos + 1
                }
                Lex::Comment { .. } => self.comment(data, pos, tokens)?,
                Lex::String { depth, escaped } => self.string(data, pos, depth, escaped),
                Lex::HexString => match memchr(b'>', &data[pos..]) {
                    Some(p) => {
                        self.state = Lex::Normal;
                        pos + p + 1
                    }
                    None => data.len(),
                },
                Lex::LessThan => {
                    // `<<` opens a dictionary; anything else is a hex string (even `<>`).
                    if data[pos] == b'<' {
                        self.state = Lex::Normal;
                        pos + 1
                    } else {
                        self.state = Lex::HexString;
                        pos
                    }
                }
            };
        }
        Ok(None)
    }

    /// Between tokens: start the next one; a token that ends within `data` is reported
    /// straight from it.
    fn normal(
        &mut self,
        data: &[u8],
        pos: usize,
        at: u64,
        tokens: &mut impl Tokens,
    ) -> Result<usize, ScanError> {
        let b = data[pos];
        if is_regular(b) {
            let end = regular_run_end(data, pos);
            if end == data.len() {
                self.word_len = 0;
                self.push_word(&data[pos..]);
                self.state = Lex::Word;
            } else {
                self.word_done(&data[pos..end], tokens)?;
            }
            return Ok(end);
        }
        let pos = pos + 1;
        match b {
            b'/' => {
                let end = regular_run_end(data, pos);
                let run = &data[pos..end];
                if end < data.len() && memchr(b'#', run).is_none() {
                    tokens.name((run.len() <= NAME_MAX).then_some(run), at + pos as u64 - 1)?;
                } else {
                    self.name = NameDecoder::new(at + pos as u64 - 1);
                    self.name.extend(run);
                    self.state = Lex::Name;
                    if end < data.len() {
                        self.state = Lex::Normal;
                        let name = self.name.finish();
                        tokens.name(name.as_bytes(), self.name.at)?;
                    }
                }
                return Ok(end);
            }
            b'%' => self.state = Lex::Comment { eof: 0 },
            b'(' => {
                self.state = Lex::String {
                    depth: 1,
                    escaped: false,
                }
            }
            b'<' => self.state = Lex::LessThan,
            _ => {}
        }
        Ok(pos)
    }

    fn push_word(&mut self, run: &[u8]) {
        for &b in run {
            if self.word_len < WORD_MAX {
                self.word[self.word_len] = b;
            }
            self.word_len = self.word_len.saturating_add(1);
        }
    }

    fn word_done(&mut self, word: &[u8], tokens: &mut impl Tokens) -> Result<(), ScanError> {
        self.state = Lex::Normal;
        if word.len() > WORD_MAX {
            return Ok(());
        }
        if !self.nested && word == b"stream" {
            self.state = Lex::AfterStream;
        }
        tokens.word(word)
    }

    /// A name or word that started in an earlier block.
    fn continued(
        &mut self,
        data: &[u8],
        pos: usize,
        tokens: &mut impl Tokens,
    ) -> Result<usize, ScanError> {
        let end = regular_run_end(data, pos);
        let run = &data[pos..end];
        if self.state == Lex::Name {
            self.name.extend(run);
            if end < data.len() {
                self.state = Lex::Normal;
                let name = self.name.finish();
                tokens.name(name.as_bytes(), self.name.at)?;
            }
        } else {
            self.push_word(run);
            if end < data.len() {
                let (word, len) = (self.word, std::mem::take(&mut self.word_len));
                if len > WORD_MAX {
                    self.state = Lex::Normal;
                } else {
                    self.word_done(&word[..len], tokens)?;
                }
            }
        }
        Ok(end)
    }

    fn comment(
        &mut self,
        data: &[u8],
        pos: usize,
        tokens: &mut impl Tokens,
    ) -> Result<usize, ScanError> {
        let Lex::Comment { eof } = self.state else {
            return Ok(pos);
        };
        if eof >= 4 {
            return Ok(match memchr2(b'\r', b'\n', &data[pos..]) {
                Some(p) => {
                    self.state = Lex::Normal;
                    pos + p + 1
                }
                None => data.len(),
            });
        }
        let b = data[pos];
        self.state = if b == b'\r' || b == b'\n' {
            Lex::Normal
        } else if b == b"%EOF"[usize::from(eof)] {
            if eof == 3 {
                self.state = Lex::Comment { eof: DEAD_COMMENT };
                if !self.nested {
                    tokens.end_of_file(pos + 1)?;
                }
                return Ok(pos + 1);
            }
            Lex::Comment { eof: eof + 1 }
        } else {
            Lex::Comment { eof: DEAD_COMMENT }
        };
        Ok(pos + 1)
    }

    fn string(&mut self, data: &[u8], pos: usize, depth: u32, escaped: bool) -> usize {
        if escaped {
            self.state = Lex::String {
                depth,
                escaped: false,
            };
            return pos + 1;
        }
        let Some(p) = memchr3(b'(', b')', b'\\', &data[pos..]) else {
            return data.len();
        };
        let pos = pos + p + 1;
        self.state = match data[pos - 1] {
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
        pos
    }

    /// After `stream`: spaces (tolerated), then CR LF, LF or a lone CR, then the data. Returns
    /// where the data starts once that is known.
    fn stream_start(&mut self, b: u8, pos: usize) -> Option<usize> {
        match (self.state, b) {
            (Lex::AfterStream, b' ' | b'\t') => return None,
            (Lex::AfterStream, b'\r') => {
                self.state = Lex::AfterStreamCr;
                return None;
            }
            _ => {}
        }
        self.state = Lex::Normal;
        Some(if b == b'\n' { pos + 1 } else { pos })
    }

    /// The end of the document: a name still being read is complete.
    pub(super) fn finish(&mut self) -> Option<(Name, u64)> {
        let state = std::mem::replace(&mut self.state, Lex::Normal);
        (state == Lex::Name).then(|| (self.name.finish(), self.name.at))
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

    #[derive(Default)]
    struct Collect {
        names: Vec<Vec<u8>>,
        words: Vec<Vec<u8>>,
    }

    impl Tokens for Collect {
        fn name(&mut self, name: Option<&[u8]>, _at: u64) -> Result<(), ScanError> {
            self.names.push(name.unwrap_or(b"<long>").to_vec());
            Ok(())
        }
        fn word(&mut self, word: &[u8]) -> Result<(), ScanError> {
            self.words.push(word.to_vec());
            Ok(())
        }
        fn end_of_file(&mut self, _pos: usize) -> Result<(), ScanError> {
            self.words.push(b"%%EOF".to_vec());
            Ok(())
        }
    }

    fn lex(data: &[u8], split: usize) -> Collect {
        let mut lexer = Lexer::new(true);
        let mut out = Collect::default();
        let mut at = 0u64;
        for block in data.chunks(split) {
            assert_eq!(lexer.run(block, 0, at, &mut out), Ok(None));
            at += block.len() as u64;
        }
        if let Some((name, _)) = lexer.finish() {
            out.names
                .push(name.as_bytes().unwrap_or(b"<long>").to_vec());
        }
        out
    }

    #[test]
    fn names_are_decoded_whatever_the_split_and_strings_hide_them() {
        let data = b"<< /S /J#61va#53cript (not /JS here \\) nor (/JS)) % /JS\n/JS>>/A#2";
        for split in [1, 2, 3, 7, data.len()] {
            assert_eq!(
                lex(data, split).names,
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

    #[test]
    fn words_and_long_tokens_whatever_the_split() {
        let data = b"12 0 obj <</Length 345>> endobj averyveryverylongword /ThisNameIsFarTooLongToMatter x\n";
        for split in [1, 2, 5, 11, data.len()] {
            let out = lex(data, split);
            assert_eq!(
                out.words,
                vec![
                    b"12".to_vec(),
                    b"0".to_vec(),
                    b"obj".to_vec(),
                    b"345".to_vec(),
                    b"endobj".to_vec(),
                    b"x".to_vec()
                ],
                "split {split}"
            );
            assert_eq!(
                out.names,
                vec![b"Length".to_vec(), b"<long>".to_vec()],
                "split {split}"
            );
        }
    }
}
