//! The Finext emulator's body reader: a streaming JSON reader (`struson`) with base64 string
//! values decoded straight into files by the `base64` crate's streaming decoder.
//!
//! A Finext request is one flat JSON object, but two of its strings may be 85 MiB of base64.
//! A general JSON parser would build those strings in memory. Here the (already spooled) body
//! is read once: short fields are collected as text (with a length cap), document fields flow
//! from struson's string reader through `base64::read::DecoderReader` into a file while their
//! size, SHA-256 and first bytes (for sniffing) are taken, and unknown fields are skipped
//! without being kept. Memory stays at a few buffers whatever the body size.
//!
//! struson reads field names and numbers whole, so the bytes it may pull from the body while
//! reading one are capped (by `Guarded`, below): a 60 MiB field name is refused, not
//! buffered.
//!
//! It is strict where ambiguity could hide an attack (duplicate keys, trailing data, lone
//! surrogates, control characters in strings, more than [`MAX_FIELDS`] fields) and strict
//! about base64: the standard alphabet with padding, no line breaks, no data-URI prefix. JSON
//! escapes inside base64 (`\/`, as PHP's `json_encode` writes) are plain JSON and are
//! accepted.

use std::{
    cell::Cell,
    collections::{BTreeMap, BTreeSet},
    fs::File,
    io::{self, BufWriter, Read, Write},
    path::{Path, PathBuf},
    rc::Rc,
};

// The tests (which see this module's imports) encode with the engine's trait.
#[cfg(test)]
use base64::Engine;
use base64::{engine::general_purpose::STANDARD, read::DecoderReader, DecodeError};
use docgate_core::media::SNIFF_BYTES;
use sha2::{Digest, Sha256};
use struson::reader::{
    JsonReader, JsonReaderPosition, JsonStreamReader, JsonSyntaxError, ReaderError, ReaderSettings,
    SyntaxErrorKind, ValueType,
};

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

/// Deepest nesting accepted inside skipped values.
const MAX_DEPTH: u32 = 32;
/// Longest field name.
const MAX_KEY: usize = 256;
/// Longest number kept as text.
const MAX_NUMBER: usize = 64;
/// Most fields in the object: the set of names seen is kept to refuse duplicates.
pub const MAX_FIELDS: usize = 256;
/// Bytes struson may read beyond a capped name or number: it refills a buffer of 1 KiB, and
/// the token may start anywhere in the one it holds.
const READ_SLACK: u64 = 4096;
/// Decoded bytes handled per step (a multiple of 3, so whole base64 quads decode into it).
const DECODE_CHUNK: usize = 48 * 1024;

/// Read one JSON object from `reader`.
pub fn scan<R: Read>(reader: R, spec: &ScanSpec<'_>) -> Result<Scanned, ScanError> {
    let guard = Rc::new(GuardState::default());
    let settings = ReaderSettings {
        // Without path tracking, skipped names and strings are never kept.
        track_path: false,
        // The object itself is one level.
        max_nesting_depth: Some(MAX_DEPTH + 1),
        // Any valid JSON number is fine in a skipped field.
        restrict_number_values: false,
        ..ReaderSettings::default()
    };
    let json = JsonStreamReader::new_custom(
        Guarded {
            inner: reader,
            state: guard.clone(),
        },
        settings,
    );
    let mut r = Reader { json, guard };
    match r.json.peek() {
        Ok(ValueType::Object) => {}
        Ok(_) | Err(ReaderError::SyntaxError(_)) => {
            return Err(syntax_at(0, "expected a JSON object"))
        }
        Err(e) => return Err(r.error(e)),
    }
    r.json.begin_object().map_err(|e| r.error(e))?;
    let mut out = Scanned::default();
    let mut seen = BTreeSet::new();
    while r.json.has_next().map_err(|e| r.error(e))? {
        let key = r.name()?;
        if seen.contains(&key) {
            return Err(ScanError::DuplicateKey(key));
        }
        if seen.len() == MAX_FIELDS {
            return Err(syntax_at(
                r.position(),
                &format!("more than {MAX_FIELDS} fields"),
            ));
        }
        seen.insert(key.clone());
        r.field(key, spec, &mut out)?;
    }
    r.json.end_object().map_err(|e| r.error(e))?;
    let Reader { json, guard } = r;
    json.consume_trailing_whitespace()
        .map_err(|e| reader_error(&guard, e))?;
    Ok(out)
}

/// The JSON reader and what its input guard saw.
struct Reader<R: Read> {
    json: JsonStreamReader<Guarded<R>>,
    guard: Rc<GuardState>,
}

impl<R: Read> Reader<R> {
    fn error(&self, e: ReaderError) -> ScanError {
        reader_error(&self.guard, e)
    }

    fn position(&self) -> u64 {
        offset(&self.json.current_position(false))
    }

    /// A field name, at most [`MAX_KEY`] bytes (and never more than that plus
    /// [`READ_SLACK`] read while looking for its end).
    fn name(&mut self) -> Result<String, ScanError> {
        let name = self
            .capped(MAX_KEY, |json| json.next_name_owned())
            .map_err(|e| e.or_too_long("(field name)"))?;
        if name.len() > MAX_KEY {
            return Err(ScanError::TooLong("(field name)".into(), MAX_KEY));
        }
        Ok(name)
    }

    /// Run one struson call that keeps its token whole, with the input capped meanwhile.
    fn capped<T>(
        &mut self,
        max: usize,
        read: impl FnOnce(&mut JsonStreamReader<Guarded<R>>) -> Result<T, ReaderError>,
    ) -> Result<T, ScanError> {
        self.guard.budget.set(Some(max as u64 + READ_SLACK));
        let result = read(&mut self.json);
        self.guard.budget.set(None);
        result.map_err(|e| match self.guard.over_budget.get() {
            true => ScanError::TooLong(String::new(), max),
            false => self.error(e),
        })
    }

    /// The value of field `key`: decoded, kept, or skipped.
    fn field(
        &mut self,
        key: String,
        spec: &ScanSpec<'_>,
        out: &mut Scanned,
    ) -> Result<(), ScanError> {
        let is_document = spec.documents.contains(&key.as_str());
        let is_text = spec.texts.contains(&key.as_str());
        if !is_document && !is_text {
            return self.json.skip_value().map_err(|e| self.error(e));
        }
        match self.json.peek().map_err(|e| self.error(e))? {
            ValueType::Null => self.json.next_null().map_err(|e| self.error(e)),
            ValueType::String if is_document => {
                let path = spec.out_dir.join(format!("{}-{key}.part", spec.prefix));
                let doc = self.document(path, spec.max_document_bytes)?;
                out.documents.insert(key, doc);
                Ok(())
            }
            ValueType::String => {
                let text = self.text(spec.max_text).map_err(|e| e.or_too_long(&key))?;
                out.texts.insert(key, text);
                Ok(())
            }
            ValueType::Number if is_text => {
                let number = self.number()?;
                out.texts.insert(key, number);
                Ok(())
            }
            _ => Err(ScanError::NotAString(key)),
        }
    }

    /// A string value of at most `max` bytes.
    fn text(&mut self, max: usize) -> Result<String, ScanError> {
        let mut bytes = Vec::new();
        let at = self.position();
        {
            let string = self
                .json
                .next_string_reader()
                .map_err(|e| reader_error(&self.guard, e))?;
            string
                .take(max as u64 + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| string_error(&self.guard, e, at))?;
        }
        if bytes.len() > max {
            // Nothing more is read from this body: the rest of the string stays unread.
            return Err(ScanError::TooLong(String::new(), max));
        }
        String::from_utf8(bytes).map_err(|_| syntax_at(at, "string is not valid UTF-8"))
    }

    /// A number, kept as written.
    fn number(&mut self) -> Result<String, ScanError> {
        let at = self.position();
        let number = self
            .capped(MAX_NUMBER, |json| json.next_number_as_string())
            .map_err(|e| match e {
                ScanError::TooLong(..) => syntax_at(at, "number too long"),
                other => other,
            })?;
        if number.len() > MAX_NUMBER {
            return Err(syntax_at(at, "number too long"));
        }
        Ok(number)
    }

    /// A base64 string value decoded into `path`. A base64 problem or an oversized document
    /// does not end the scan (the rest of the body is still needed to check the signature):
    /// the string is read to its end and the problem is reported with the document.
    fn document(&mut self, path: PathBuf, limit: u64) -> Result<DecodedDocument, ScanError> {
        let at = self.position();
        let mut out = DecodedFile::create(path, limit)?;
        let string = self
            .json
            .next_string_reader()
            .map_err(|e| reader_error(&self.guard, e))?;
        let mut decoder = DecoderReader::new(string, &STANDARD);
        let mut chunk = vec![0u8; DECODE_CHUNK];
        let problem = loop {
            match decoder.read(&mut chunk) {
                Ok(0) => break None,
                Ok(n) => {
                    if let Err(problem) = out.accept(&chunk[..n])? {
                        break Some(problem);
                    }
                }
                Err(e) => match base64_problem(&e) {
                    Some(problem) => break Some(problem),
                    None => return Err(string_error(&self.guard, e, at)),
                },
            }
        };
        if problem.is_some() {
            io::copy(&mut decoder.into_inner(), &mut io::sink())
                .map_err(|e| string_error(&self.guard, e, at))?;
        }
        Ok(out.finish(problem)?)
    }
}

impl ScanError {
    fn or_too_long(self, field: &str) -> ScanError {
        match self {
            ScanError::TooLong(_, n) => ScanError::TooLong(field.to_owned(), n),
            other => other,
        }
    }
}

fn syntax_at(offset: u64, what: &str) -> ScanError {
    ScanError::Syntax {
        offset,
        what: what.to_owned(),
    }
}

fn offset(position: &JsonReaderPosition) -> u64 {
    position.data_pos.unwrap_or(0)
}

/// What the input guard saw, shared with the scan: struson reports a failed read of its
/// input only as an I/O error, so whether it was the guard's cap, the body file, or (in a
/// string) invalid UTF-8 is told from here, not from the error's text.
#[derive(Debug, Default)]
struct GuardState {
    /// Bytes struson may still read (`None`: no cap).
    budget: Cell<Option<u64>>,
    over_budget: Cell<bool>,
    io_failed: Cell<bool>,
}

/// The body as struson reads it, with the cap of [`Reader::capped`].
struct Guarded<R> {
    inner: R,
    state: Rc<GuardState>,
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = match self.state.budget.get() {
            None => buf.len(),
            Some(0) => {
                self.state.over_budget.set(true);
                return Err(io::Error::other("token longer than its cap"));
            }
            Some(left) => buf.len().min(usize::try_from(left).unwrap_or(usize::MAX)),
        };
        let n = self.inner.read(&mut buf[..want]).inspect_err(|_| {
            self.state.io_failed.set(true);
        })?;
        if let Some(left) = self.state.budget.get() {
            self.state.budget.set(Some(left - n as u64));
        }
        Ok(n)
    }
}

/// A struson error as the scan reports it.
fn reader_error(guard: &GuardState, e: ReaderError) -> ScanError {
    match e {
        ReaderError::SyntaxError(e) => json_syntax(&e),
        ReaderError::MaxNestingDepthExceeded { location, .. } => {
            syntax_at(offset(&location), "nesting too deep")
        }
        ReaderError::UnsupportedNumberValue { location, .. } => {
            syntax_at(offset(&location), "invalid number")
        }
        ReaderError::IoError { error, location } => {
            if guard.io_failed.get() {
                ScanError::Io(error)
            } else {
                // struson's only other input failure: bytes that are not UTF-8.
                syntax_at(offset(&location), "the body is not valid UTF-8")
            }
        }
        other => syntax_at(0, &other.to_string()),
    }
}

/// An error from a string value's reader: a JSON syntax error inside the string, the body
/// file failing, or invalid UTF-8.
fn string_error(guard: &GuardState, e: io::Error, at: u64) -> ScanError {
    if let Some(syntax) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<JsonSyntaxError>())
    {
        return json_syntax(syntax);
    }
    if guard.io_failed.get() {
        ScanError::Io(e)
    } else {
        syntax_at(at, "string is not valid UTF-8")
    }
}

fn json_syntax(e: &JsonSyntaxError) -> ScanError {
    let what = match e.kind {
        SyntaxErrorKind::NotEscapedControlCharacter => "control character in a string",
        SyntaxErrorKind::UnpairedSurrogatePairEscapeSequence => "lone surrogate in \\u escape",
        SyntaxErrorKind::UnknownEscapeSequence | SyntaxErrorKind::MalformedEscapeSequence => {
            "invalid escape"
        }
        SyntaxErrorKind::MalformedNumber | SyntaxErrorKind::TrailingDataAfterNumber => {
            "invalid number"
        }
        SyntaxErrorKind::InvalidLiteral | SyntaxErrorKind::TrailingDataAfterLiteral => {
            "invalid literal"
        }
        SyntaxErrorKind::MissingColon => "expected `:`",
        SyntaxErrorKind::ExpectingMemberNameOrObjectEnd => "expected a field name",
        SyntaxErrorKind::MissingComma
        | SyntaxErrorKind::UnexpectedComma
        | SyntaxErrorKind::UnexpectedColon
        | SyntaxErrorKind::UnexpectedClosingBracket
        | SyntaxErrorKind::TrailingCommaNotEnabled => "expected `,` or `}`",
        SyntaxErrorKind::IncompleteDocument => "the body ends early: expected a value, `,` or `}`",
        SyntaxErrorKind::TrailingData => "unexpected data after the JSON object",
        SyntaxErrorKind::CommentsNotEnabled
        | SyntaxErrorKind::IncompleteComment
        | SyntaxErrorKind::BlockCommentNotClosed => "comments are not JSON",
        _ => "expected a value",
    };
    syntax_at(offset(&e.location), what)
}

/// The document problem a decoding error stands for, if it is one.
fn base64_problem(e: &io::Error) -> Option<DocumentProblem> {
    let decode = e.get_ref()?.downcast_ref::<DecodeError>()?;
    // Positions count base64 characters from the start of the string value.
    let what = match *decode {
        DecodeError::InvalidByte(at, byte) => {
            format!("invalid character {:?} at character {at}", byte as char)
        }
        DecodeError::InvalidLastSymbol(at, _) => {
            format!("non-canonical final character at character {at}")
        }
        DecodeError::InvalidLength(len) => {
            format!("the text ends at character {len} inside a 4-character group (data truncated)")
        }
        DecodeError::InvalidPadding => "padding missing or wrong at the end of the text".to_owned(),
    };
    Some(DocumentProblem::Base64(what))
}

/// Where a decoded document goes, with its size, digest and head taken on the way.
struct DecodedFile {
    out: BufWriter<File>,
    path: PathBuf,
    size: u64,
    limit: u64,
    sha: Sha256,
    head: Vec<u8>,
}

impl DecodedFile {
    fn create(path: PathBuf, limit: u64) -> io::Result<DecodedFile> {
        let file = File::create(&path)?;
        Ok(DecodedFile {
            out: BufWriter::with_capacity(256 * 1024, file),
            path,
            size: 0,
            limit,
            sha: Sha256::new(),
            head: Vec::new(),
        })
    }

    /// Take decoded bytes; past the limit they are refused (and nothing more is written).
    fn accept(&mut self, decoded: &[u8]) -> io::Result<Result<(), DocumentProblem>> {
        self.size += decoded.len() as u64;
        if self.size > self.limit {
            return Ok(Err(DocumentProblem::TooLarge { limit: self.limit }));
        }
        if self.head.len() < SNIFF_BYTES {
            let take = (SNIFF_BYTES - self.head.len()).min(decoded.len());
            self.head.extend_from_slice(&decoded[..take]);
        }
        self.sha.update(decoded);
        self.out.write_all(decoded).map(Ok)
    }

    fn finish(mut self, problem: Option<DocumentProblem>) -> io::Result<DecodedDocument> {
        self.out.flush()?;
        Ok(DecodedDocument {
            path: self.path,
            size: self.size,
            sha256: self.sha.finalize().into(),
            head: self.head,
            problem,
        })
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

#[cfg(test)]
mod bounds {
    use super::*;

    fn spec(dir: &Path) -> ScanSpec<'_> {
        ScanSpec {
            documents: &["doc"],
            texts: &["a", "timestamp"],
            max_text: 32,
            max_document_bytes: 1 << 20,
            out_dir: dir,
            prefix: "b",
        }
    }

    /// A body that counts how many of its bytes were read.
    struct Counted<'a> {
        body: &'a [u8],
        read: Rc<Cell<usize>>,
    }

    impl Read for Counted<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.body.read(buf)?;
            self.read.set(self.read.get() + n);
            Ok(n)
        }
    }

    /// Scan `body`; the error and how many bytes were read before it.
    fn refused(body: &[u8]) -> (ScanError, usize) {
        let dir = tempfile::tempdir().expect("tempdir");
        let read = Rc::new(Cell::new(0));
        let reader = Counted {
            body,
            read: read.clone(),
        };
        let err = scan(reader, &spec(dir.path())).expect_err("refused");
        (err, read.get())
    }

    #[test]
    fn a_huge_field_name_is_refused_while_reading_it() {
        let body = format!(r#"{{"{}":1}}"#, "k".repeat(8 << 20));
        let (err, read) = refused(body.as_bytes());
        assert!(
            matches!(err, ScanError::TooLong(ref field, MAX_KEY) if field == "(field name)"),
            "{err}"
        );
        assert!(read < 16 * 1024, "read {read} bytes of an 8 MiB name");
    }

    #[test]
    fn a_huge_number_in_a_text_field_is_refused_while_reading_it() {
        let body = format!(r#"{{"timestamp":{}}}"#, "9".repeat(8 << 20));
        let (err, read) = refused(body.as_bytes());
        assert!(err.to_string().contains("number too long"), "{err}");
        assert!(read < 16 * 1024, "read {read} bytes of an 8 MiB number");
    }

    #[test]
    fn a_long_text_is_refused_after_reading_just_past_its_cap() {
        let body = format!(r#"{{"a":"{}"}}"#, "t".repeat(8 << 20));
        let (err, read) = refused(body.as_bytes());
        assert!(err.to_string().contains("longer than 32"), "{err}");
        assert!(read < 16 * 1024, "read {read} bytes of an 8 MiB text");
    }

    #[test]
    fn huge_unknown_values_are_skipped_and_numbers_in_them_are_any_json_number() {
        let dir = tempfile::tempdir().expect("tempdir");
        let body = format!(
            r#"{{"skip":"{}","n":1e999,"a":"kept"}}"#,
            "x".repeat(8 << 20)
        );
        let scanned = scan(body.as_bytes(), &spec(dir.path())).expect("scans");
        assert_eq!(scanned.texts["a"], "kept");
    }

    #[test]
    fn more_than_max_fields_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fields: Vec<String> = (0..=MAX_FIELDS).map(|i| format!(r#""f{i}":0"#)).collect();
        let body = format!("{{{}}}", fields.join(","));
        let err = scan(body.as_bytes(), &spec(dir.path())).expect_err("refused");
        assert!(err.to_string().contains("more than 256 fields"), "{err}");
        let fields: Vec<String> = (0..MAX_FIELDS).map(|i| format!(r#""f{i}":0"#)).collect();
        let body = format!("{{{}}}", fields.join(","));
        scan(body.as_bytes(), &spec(dir.path())).expect("exactly the maximum is fine");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_a_json_error_even_inside_a_document() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut body = br#"{"doc":"aGVs"#.to_vec();
        body.push(0xff);
        body.extend_from_slice(br#"bG8="}"#);
        let err = scan(body.as_slice(), &spec(dir.path())).expect_err("refused");
        assert!(
            matches!(err, ScanError::Syntax { ref what, .. } if what.contains("UTF-8")),
            "{err}"
        );
    }

    #[test]
    fn a_failing_body_file_is_an_io_error_not_a_syntax_error() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk gone"))
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let err = scan(Broken, &spec(dir.path())).expect_err("refused");
        assert!(matches!(err, ScanError::Io(_)), "{err}");
        let broken_mid_document = io::Read::chain(&br#"{"doc":"aGVs"#[..], Broken);
        let err = scan(broken_mid_document, &spec(dir.path())).expect_err("refused");
        assert!(matches!(err, ScanError::Io(_)), "{err}");
    }
}
