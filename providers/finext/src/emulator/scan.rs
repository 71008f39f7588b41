//! A small streaming JSON reader that decodes base64 string values straight into files.
//!
//! A Finext request is one flat JSON object, but two of its strings may be 85 MiB of base64.
//! A general JSON parser would build those strings in memory. This reader walks the (already
//! spooled) body once through a buffered reader: short fields are collected as text (with a
//! length cap), document fields are unescaped and base64-decoded on the fly into a file
//! while their size, SHA-256 and first bytes (for sniffing) are taken, and unknown fields are
//! skipped. Memory stays at a few buffers whatever the body size.
//!
//! It is strict where ambiguity could hide an attack (duplicate keys, trailing data, lone
//! surrogates, control characters in strings) and strict about base64: the standard alphabet
//! with padding, no line breaks, no data-URI prefix. JSON escapes inside base64 (`\/`, as
//! PHP's `json_encode` writes) are plain JSON and are accepted.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    io::{self, BufRead, BufWriter, Write},
    path::{Path, PathBuf},
};

use base64::{engine::general_purpose::STANDARD, DecodeError, DecodeSliceError, Engine};
use docgate_core::media::SNIFF_BYTES;
use sha2::{Digest, Sha256};

/// What to look for in the body.
#[derive(Debug, Clone)]
pub struct ScanSpec<'a> {
    /// Fields whose string value is base64 to decode into a file.
    pub documents: &'a [&'a str],
    /// Fields kept as text (string or number values).
    pub texts: &'a [&'a str],
    /// Longest accepted text value, in bytes.
    pub max_text: usize,
    /// Largest decoded document, in bytes.
    pub max_document_bytes: u64,
    /// Where decoded documents are written (`<prefix>-<field>.part`).
    pub out_dir: &'a Path,
    pub prefix: &'a str,
}

/// The body, read.
#[derive(Debug, Default)]
pub struct Scanned {
    /// Text fields that were present and not `null`.
    pub texts: BTreeMap<String, String>,
    pub documents: BTreeMap<String, DecodedDocument>,
}

/// A document field after decoding (or after decoding failed).
#[derive(Debug)]
pub struct DecodedDocument {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: [u8; 32],
    /// The first bytes, for sniffing.
    pub head: Vec<u8>,
    pub problem: Option<DocumentProblem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentProblem {
    Base64(String),
    TooLarge { limit: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("reading the body failed: {0}")]
    Io(#[from] io::Error),
    #[error("{what} at byte {offset}")]
    Syntax { offset: u64, what: String },
    #[error("field `{0}` appears twice")]
    DuplicateKey(String),
    #[error("field `{0}` must be a string")]
    NotAString(String),
    #[error("field `{0}` is longer than {1} bytes")]
    TooLong(String, usize),
}

const MAX_DEPTH: usize = 32;
const MAX_KEY: usize = 256;

/// Read one JSON object from `reader`.
pub fn scan<R: BufRead>(reader: R, spec: &ScanSpec<'_>) -> Result<Scanned, ScanError> {
    let mut c = Cursor {
        r: reader,
        offset: 0,
    };
    let mut out = Scanned::default();
    let mut seen = BTreeSet::new();
    c.skip_ws()?;
    c.eat(b'{', "expected a JSON object")?;
    c.skip_ws()?;
    if c.peek()? == Some(b'}') {
        c.bump();
    } else {
        loop {
            c.skip_ws()?;
            c.eat(b'"', "expected a field name")?;
            let mut key = TextSink::new(MAX_KEY);
            c.string(&mut key)
                .map_err(|e| e.or_too_long("(field name)"))?;
            let key = key.finish(&c)?;
            if !seen.insert(key.clone()) {
                return Err(ScanError::DuplicateKey(key));
            }
            c.skip_ws()?;
            c.eat(b':', "expected `:`")?;
            c.skip_ws()?;
            let next = c.peek()?;
            if spec.documents.contains(&key.as_str()) {
                match next {
                    Some(b'"') => {
                        c.bump();
                        let path = spec.out_dir.join(format!("{}-{key}.part", spec.prefix));
                        let mut sink = Base64Sink::create(path, spec.max_document_bytes)?;
                        c.string(&mut sink)?;
                        out.documents.insert(key, sink.finish()?);
                    }
                    Some(b'n') => c.literal(b"null")?,
                    other => return Err(c.wrong_type(other, key)),
                }
            } else if spec.texts.contains(&key.as_str()) {
                match next {
                    Some(b'"') => {
                        c.bump();
                        let mut sink = TextSink::new(spec.max_text);
                        c.string(&mut sink).map_err(|e| e.or_too_long(&key))?;
                        let text = sink.finish(&c)?;
                        out.texts.insert(key, text);
                    }
                    Some(b'-' | b'0'..=b'9') => {
                        let n = c.number()?;
                        out.texts.insert(key, n);
                    }
                    Some(b'n') => c.literal(b"null")?,
                    other => return Err(c.wrong_type(other, key)),
                }
            } else {
                c.skip_value(0)?;
            }
            c.skip_ws()?;
            match c.next()? {
                Some(b',') => continue,
                Some(b'}') => break,
                _ => return Err(c.syntax("expected `,` or `}`")),
            }
        }
    }
    c.skip_ws()?;
    if c.peek()?.is_some() {
        return Err(c.syntax("unexpected data after the JSON object"));
    }
    Ok(out)
}

impl ScanError {
    fn or_too_long(self, field: &str) -> ScanError {
        match self {
            ScanError::TooLong(_, n) => ScanError::TooLong(field.to_owned(), n),
            other => other,
        }
    }
}

/// Receives a string's contents: runs of raw bytes and unescaped characters.
trait StringSink {
    fn bytes(&mut self, run: &[u8]) -> Result<(), ScanError>;
    fn char(&mut self, c: char) -> Result<(), ScanError>;
}

struct Cursor<R> {
    r: R,
    offset: u64,
}

impl<R: BufRead> Cursor<R> {
    fn syntax(&self, what: &str) -> ScanError {
        ScanError::Syntax {
            offset: self.offset,
            what: what.to_owned(),
        }
    }

    /// A value of the wrong JSON type where a string belongs — or no value at all.
    fn wrong_type(&self, first: Option<u8>, key: String) -> ScanError {
        match first {
            Some(b'{' | b'[' | b't' | b'f' | b'-' | b'0'..=b'9') => ScanError::NotAString(key),
            _ => self.syntax("expected a value"),
        }
    }

    fn peek(&mut self) -> Result<Option<u8>, ScanError> {
        Ok(self.r.fill_buf()?.first().copied())
    }

    /// Consume the byte `peek` just returned.
    fn bump(&mut self) {
        self.r.consume(1);
        self.offset += 1;
    }

    fn next(&mut self) -> Result<Option<u8>, ScanError> {
        let b = self.peek()?;
        if b.is_some() {
            self.bump();
        }
        Ok(b)
    }

    /// Consume the byte `want`, or fail saying `what` was expected.
    fn eat(&mut self, want: u8, what: &str) -> Result<(), ScanError> {
        match self.next()? {
            Some(b) if b == want => Ok(()),
            _ => Err(self.syntax(what)),
        }
    }

    fn skip_ws(&mut self) -> Result<(), ScanError> {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek()? {
            self.bump();
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), ScanError> {
        for &want in word {
            if self.next()? != Some(want) {
                return Err(self.syntax("invalid literal"));
            }
        }
        Ok(())
    }

    fn number(&mut self) -> Result<String, ScanError> {
        let mut text = String::new();
        while let Some(b @ (b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')) = self.peek()? {
            if text.len() >= 64 {
                return Err(self.syntax("number too long"));
            }
            text.push(b as char);
            self.bump();
        }
        if serde_json::from_str::<serde_json::Number>(&text).is_err() {
            return Err(self.syntax("invalid number"));
        }
        Ok(text)
    }

    /// The contents of a string whose opening quote was consumed, through its closing quote.
    fn string(&mut self, sink: &mut dyn StringSink) -> Result<(), ScanError> {
        loop {
            let (run, special) = {
                let buf = self.r.fill_buf()?;
                if buf.is_empty() {
                    return Err(self.syntax("unterminated string"));
                }
                let run = buf
                    .iter()
                    .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                    .unwrap_or(buf.len());
                sink.bytes(&buf[..run])?;
                (run, buf.get(run).copied())
            };
            self.r.consume(run);
            self.offset += run as u64;
            match special {
                None => continue,
                Some(b'"') => {
                    self.bump();
                    return Ok(());
                }
                Some(b'\\') => {
                    self.bump();
                    let c = self.escape()?;
                    sink.char(c)?;
                }
                Some(_) => return Err(self.syntax("control character in a string")),
            }
        }
    }

    fn escape(&mut self) -> Result<char, ScanError> {
        let c = match self.next()? {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                let first = self.hex4()?;
                let code = if (0xD800..0xDC00).contains(&first) {
                    if self.next()? != Some(b'\\') || self.next()? != Some(b'u') {
                        return Err(self.syntax("lone surrogate in \\u escape"));
                    }
                    let second = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&second) {
                        return Err(self.syntax("lone surrogate in \\u escape"));
                    }
                    0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                } else {
                    first
                };
                return char::from_u32(code)
                    .ok_or_else(|| self.syntax("lone surrogate in \\u escape"));
            }
            _ => return Err(self.syntax("invalid escape")),
        };
        Ok(c)
    }

    fn hex4(&mut self) -> Result<u32, ScanError> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = self
                .next()?
                .and_then(|b| (b as char).to_digit(16))
                .ok_or_else(|| self.syntax("invalid \\u escape"))?;
            v = v * 16 + d;
        }
        Ok(v)
    }

    fn skip_value(&mut self, depth: usize) -> Result<(), ScanError> {
        if depth > MAX_DEPTH {
            return Err(self.syntax("nesting too deep"));
        }
        match self.peek()? {
            Some(b'"') => {
                self.bump();
                self.string(&mut SkipSink)
            }
            Some(b'-' | b'0'..=b'9') => self.number().map(drop),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(open @ (b'{' | b'[')) => {
                self.bump();
                let close = if open == b'{' { b'}' } else { b']' };
                self.skip_ws()?;
                if self.peek()? == Some(close) {
                    self.bump();
                    return Ok(());
                }
                loop {
                    self.skip_ws()?;
                    if open == b'{' {
                        self.eat(b'"', "expected a field name")?;
                        self.string(&mut SkipSink)?;
                        self.skip_ws()?;
                        self.eat(b':', "expected `:`")?;
                        self.skip_ws()?;
                    }
                    self.skip_value(depth + 1)?;
                    self.skip_ws()?;
                    match self.next()? {
                        Some(b',') => continue,
                        Some(b) if b == close => return Ok(()),
                        _ => return Err(self.syntax("expected `,` or the end of the value")),
                    }
                }
            }
            _ => Err(self.syntax("expected a value")),
        }
    }
}

struct SkipSink;

impl StringSink for SkipSink {
    fn bytes(&mut self, _: &[u8]) -> Result<(), ScanError> {
        Ok(())
    }
    fn char(&mut self, _: char) -> Result<(), ScanError> {
        Ok(())
    }
}

struct TextSink {
    bytes: Vec<u8>,
    max: usize,
}

impl TextSink {
    fn new(max: usize) -> TextSink {
        TextSink {
            bytes: Vec::new(),
            max,
        }
    }

    fn finish<R>(self, at: &Cursor<R>) -> Result<String, ScanError> {
        String::from_utf8(self.bytes).map_err(|_| ScanError::Syntax {
            offset: at.offset,
            what: "string is not valid UTF-8".into(),
        })
    }
}

impl StringSink for TextSink {
    fn bytes(&mut self, run: &[u8]) -> Result<(), ScanError> {
        if self.bytes.len() + run.len() > self.max {
            return Err(ScanError::TooLong(String::new(), self.max));
        }
        self.bytes.extend_from_slice(run);
        Ok(())
    }

    fn char(&mut self, c: char) -> Result<(), ScanError> {
        let mut buf = [0u8; 4];
        self.bytes(c.encode_utf8(&mut buf).as_bytes())
    }
}

/// Base64 characters in, decoded bytes out to a file. Errors do not stop the scan (the rest
/// of the body must still be read to check the signature); they are reported afterwards.
struct Base64Sink {
    out: BufWriter<File>,
    path: PathBuf,
    quad: [u8; 4],
    quad_len: usize,
    /// Base64 characters consumed so far (for error positions).
    chars: u64,
    padded: bool,
    size: u64,
    limit: u64,
    sha: Sha256,
    head: Vec<u8>,
    scratch: Vec<u8>,
    problem: Option<DocumentProblem>,
}

/// Base64 is decoded in slices of this many characters (a multiple of 4).
const DECODE_SLICE: usize = 64 * 1024;

impl Base64Sink {
    fn create(path: PathBuf, limit: u64) -> io::Result<Base64Sink> {
        let file = File::create(&path)?;
        Ok(Base64Sink {
            out: BufWriter::with_capacity(256 * 1024, file),
            path,
            quad: [0; 4],
            quad_len: 0,
            chars: 0,
            padded: false,
            size: 0,
            limit,
            sha: Sha256::new(),
            head: Vec::new(),
            scratch: vec![0; DECODE_SLICE / 4 * 3],
            problem: None,
        })
    }

    fn fail(&mut self, problem: DocumentProblem) {
        self.problem.get_or_insert(problem);
    }

    /// Decode whole quads (`chars.len()` is a multiple of 4).
    fn decode(&mut self, chars: &[u8]) -> io::Result<()> {
        if self.problem.is_some() || chars.is_empty() {
            return Ok(());
        }
        if self.padded {
            self.fail(DocumentProblem::Base64(format!(
                "data after the padding at character {}",
                self.chars
            )));
            return Ok(());
        }
        let n = match STANDARD.decode_slice(chars, &mut self.scratch) {
            Ok(n) => n,
            Err(e) => {
                let what = match e {
                    DecodeSliceError::DecodeError(DecodeError::InvalidByte(at, byte)) => format!(
                        "invalid character {:?} at character {}",
                        byte as char,
                        self.chars + at as u64
                    ),
                    DecodeSliceError::DecodeError(DecodeError::InvalidLastSymbol(at, _)) => {
                        format!(
                            "non-canonical final character at character {}",
                            self.chars + at as u64
                        )
                    }
                    other => other.to_string(),
                };
                self.fail(DocumentProblem::Base64(what));
                return Ok(());
            }
        };
        self.chars += chars.len() as u64;
        self.padded = chars.last() == Some(&b'=');
        self.size += n as u64;
        if self.size > self.limit {
            self.fail(DocumentProblem::TooLarge { limit: self.limit });
            return Ok(());
        }
        let decoded = &self.scratch[..n];
        if self.head.len() < SNIFF_BYTES {
            let take = (SNIFF_BYTES - self.head.len()).min(decoded.len());
            self.head.extend_from_slice(&decoded[..take]);
        }
        self.sha.update(decoded);
        self.out.write_all(decoded)
    }

    fn feed(&mut self, mut run: &[u8]) -> io::Result<()> {
        if self.problem.is_some() {
            return Ok(());
        }
        if self.quad_len > 0 {
            let take = (4 - self.quad_len).min(run.len());
            self.quad[self.quad_len..self.quad_len + take].copy_from_slice(&run[..take]);
            self.quad_len += take;
            run = &run[take..];
            if self.quad_len < 4 {
                return Ok(());
            }
            let quad = self.quad;
            self.quad_len = 0;
            self.decode(&quad)?;
        }
        let whole = run.len() / 4 * 4;
        for slice in run[..whole].chunks(DECODE_SLICE) {
            self.decode(slice)?;
        }
        let tail = &run[whole..];
        self.quad[..tail.len()].copy_from_slice(tail);
        self.quad_len = tail.len();
        Ok(())
    }

    fn finish(mut self) -> io::Result<DecodedDocument> {
        if self.quad_len != 0 {
            let at = self.chars;
            self.fail(DocumentProblem::Base64(format!(
                "the text ends at character {} inside a 4-character group (padding missing or data truncated)",
                at + self.quad_len as u64
            )));
        }
        self.out.flush()?;
        Ok(DecodedDocument {
            path: self.path,
            size: self.size,
            sha256: self.sha.finalize().into(),
            head: self.head,
            problem: self.problem,
        })
    }
}

impl StringSink for Base64Sink {
    fn bytes(&mut self, run: &[u8]) -> Result<(), ScanError> {
        Ok(self.feed(run)?)
    }

    fn char(&mut self, c: char) -> Result<(), ScanError> {
        if c.is_ascii() {
            Ok(self.feed(&[c as u8])?)
        } else {
            let at = self.chars + self.quad_len as u64;
            self.fail(DocumentProblem::Base64(format!(
                "invalid character {c:?} at character {at}"
            )));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                dir: tempfile::tempdir().expect("tempdir"),
            }
        }

        fn spec(&self) -> ScanSpec<'_> {
            ScanSpec {
                documents: &["doc", "other_doc"],
                texts: &["a", "b", "timestamp"],
                max_text: 32,
                max_document_bytes: 1 << 20,
                out_dir: self.dir.path(),
                prefix: "t",
            }
        }

        /// Scan through a tiny buffer so every token straddles buffer boundaries.
        fn scan(&self, body: &str) -> Result<Scanned, ScanError> {
            let reader = BufReader::with_capacity(3, body.as_bytes());
            scan(reader, &self.spec())
        }
    }

    fn decoded(doc: &DecodedDocument) -> Vec<u8> {
        std::fs::read(&doc.path).expect("read")
    }

    #[test]
    fn texts_documents_and_unknown_fields() {
        let f = Fixture::new();
        let body = r#" { "a" : "x\"y\u00e9\ud83d\ude00", "timestamp": 1682073075988,
            "skip": {"n": [1, 2.5e3, true, null, {"deep": "\u0041"}]},
            "doc": "aGVs\/\/\/\/", "b": null } "#;
        let s = f.scan(body).expect("scans");
        assert_eq!(s.texts["a"], "x\"yé😀");
        assert_eq!(s.texts["timestamp"], "1682073075988");
        assert!(!s.texts.contains_key("b"), "null is absent");
        let doc = &s.documents["doc"];
        assert_eq!(doc.problem, None);
        // "aGVs////" with every slash JSON-escaped
        assert_eq!(decoded(doc), STANDARD.decode("aGVs////").expect("valid"));
        assert_eq!(doc.size, 6);
        assert_eq!(doc.sha256, <[u8; 32]>::from(Sha256::digest(decoded(doc))));
    }

    #[test]
    fn documents_of_every_length_mod_3_decode_exactly() {
        let f = Fixture::new();
        for len in [0usize, 1, 2, 3, 4, 5, 1000, 1001, 1002] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 256) as u8).collect();
            let body = format!(r#"{{"doc":"{}"}}"#, STANDARD.encode(&data));
            let s = f.scan(&body).expect("scans");
            let doc = &s.documents["doc"];
            assert_eq!(doc.problem, None, "len {len}");
            assert_eq!(decoded(doc), data);
            assert_eq!(doc.head, data[..len.min(SNIFF_BYTES)]);
        }
    }

    #[test]
    fn bad_base64_is_reported_per_document_without_stopping_the_scan() {
        let f = Fixture::new();
        for bad in [
            "aGVsbG8",
            "aGV sbG8=",
            "aGVsbG8=aGVs",
            "aGVsbG9=",
            "data:image/png;base64,aGVs",
            "aGVs\\nbG8=",
        ] {
            let body = format!(r#"{{"doc":"{bad}","a":"after"}}"#);
            let s = f.scan(&body).expect("the JSON itself is fine");
            assert!(
                matches!(s.documents["doc"].problem, Some(DocumentProblem::Base64(_))),
                "{bad}: {:?}",
                s.documents["doc"].problem
            );
            assert_eq!(s.texts["a"], "after", "scanning went on after {bad}");
        }
    }

    #[test]
    fn oversized_documents_are_flagged() {
        let f = Fixture::new();
        let mut spec = f.spec();
        spec.max_document_bytes = 4;
        let body = format!(r#"{{"doc":"{}"}}"#, STANDARD.encode(b"12345"));
        let s = scan(body.as_bytes(), &spec).expect("scans");
        assert_eq!(
            s.documents["doc"].problem,
            Some(DocumentProblem::TooLarge { limit: 4 })
        );
    }

    #[test]
    fn structural_problems_are_errors() {
        let f = Fixture::new();
        let cases = [
            ("[]", "object"),
            (r#"{"a":"x","a":"y"}"#, "twice"),
            (r#"{"a":"x"} {}"#, "after the JSON"),
            (r#"{"a":"x""#, "expected"),
            (
                r#"{"a":"x
"}"#,
                "control character",
            ),
            (r#"{"a":"\ud800"}"#, "surrogate"),
            (r#"{"a":true}"#, "must be a string"),
            (r#"{"doc":{"x":1}}"#, "must be a string"),
            (
                r#"{"a":"this text is far longer than thirty-two bytes"}"#,
                "longer than 32",
            ),
            (r#"{"a":01x}"#, "number"),
            (r#"{"a":"#, "expected a value"),
            (r#"{"doc":x}"#, "expected a value"),
            ("", "object"),
        ];
        for (body, want) in cases {
            let err = f.scan(body).expect_err(body).to_string();
            assert!(err.contains(want), "{body}: {err}");
        }
        let deep = format!(r#"{{"skip":{}{}}}"#, "[".repeat(40), "]".repeat(40));
        assert!(f
            .scan(&deep)
            .expect_err("deep")
            .to_string()
            .contains("deep"));
    }
}
