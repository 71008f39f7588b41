//! Active content in PDFs, and what hides after their end.
//!
//! **Actions.** A JavaScript action is `<< /S /JavaScript /JS … >>`, a document-level script
//! sits in a `/JavaScript` name tree, a launch action is `/S /Launch`: so the names
//! `/JavaScript`, `/JS`, `/Launch` and `/RichMedia` (Flash) are refused, however they are
//! spelled (`#xx` escapes are decoded). `/OpenAction` alone is not: it usually just opens a
//! page; when it runs a script, the script's `/JavaScript` is found.
//! Objects can also sit compressed inside object streams (`/Type /ObjStm`): those are
//! inflated and lexed the same way, within [`inflate_budget`]: the work stays proportional
//! to the upload, and an object stream bomb is refused as uncheckable.
//!
//! **Streams.** Stream data is not PDF syntax; a short name like `/JS` would turn up in
//! compressed bytes by chance (about once per 100 MB), so inside streams only the long names
//! are searched, as a safety net should a crafted file make the stream boundaries ambiguous.
//! A stream ends at `endstream`, `endobj` or `%%EOF`, whichever comes first, or after its
//! `/Length` when that is a direct number. The first KiB of every stream (inflated when it
//! is `/FlateDecode`) is checked for executables and archives: strictly for embedded files
//! (`/Type /EmbeddedFile`), by validated signatures for the others (see [`super::payload`]).
//! An object or embedded-file stream encoded in a way docgate cannot decode is refused as
//! uncheckable.
//!
//! **The end.** Incremental updates append after `%%EOF`, so a PDF has one `%%EOF` per
//! revision. After every `%%EOF` the first significant bytes must not be a payload (an update
//! starts with an object, `xref` or a comment), and from the first `%%EOF` on everything is
//! searched for validated signatures.
//!
//! **Not covered.** Encrypted PDFs: their streams cannot be inflated without decrypting, so
//! object streams and embedded files in them are not checked (names outside streams are
//! never encrypted and still are). XFA forms (scripts in XML) are not looked into.

use flate2::{Decompress, FlushDecompress, Status};
use memchr::{memchr, memmem};

use super::{
    payload::{self, PayloadSearch, StartCheck},
    pdf_lexer::{regular_run_end, Lexer, NameDecoder, Tokens},
    ScanError,
};

const FORMAT: &str = "PDF";
/// Inflated bytes of object streams any PDF may make docgate lex ...
pub const INFLATE_BUDGET: u64 = 64 * 1024 * 1024;
/// ... plus this many per byte of the document up to the object stream being inflated.
pub const INFLATE_PER_BYTE: u64 = 8;

/// How many inflated bytes of object streams a PDF may make docgate lex once `scanned` bytes
/// of it were seen. Real object streams inflate 3–10×, and hold a fraction of a document.
pub fn inflate_budget(scanned: u64) -> u64 {
    INFLATE_BUDGET.saturating_add(scanned.saturating_mul(INFLATE_PER_BYTE))
}
/// Bytes of a stream's (inflated) start checked for payloads.
const HEAD: usize = 1024;

/// What a name means to the scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meaning {
    /// Active content; `short` names are only trusted outside stream data.
    Active {
        found: &'static str,
        short: bool,
    },
    ObjStm,
    EmbeddedFile,
    Flate,
    OtherFilter,
    DecodeParms,
    Length,
    Other,
}

fn meaning(name: Option<&[u8]>) -> Meaning {
    let Some(bytes) = name else {
        return Meaning::Other;
    };
    let active = |found, short| Meaning::Active { found, short };
    match bytes {
        b"JavaScript" => active("JavaScript", false),
        b"JS" => active("JavaScript", true),
        b"Launch" => active("a Launch action", false),
        b"RichMedia" => active("rich media (Flash)", false),
        b"ObjStm" => Meaning::ObjStm,
        b"EmbeddedFile" => Meaning::EmbeddedFile,
        b"FlateDecode" | b"Fl" => Meaning::Flate,
        b"ASCIIHexDecode" | b"AHx" | b"ASCII85Decode" | b"A85" | b"LZWDecode" | b"LZW"
        | b"RunLengthDecode" | b"RL" | b"CCITTFaxDecode" | b"CCF" | b"JBIG2Decode"
        | b"DCTDecode" | b"DCT" | b"JPXDecode" | b"Crypt" => Meaning::OtherFilter,
        b"DecodeParms" | b"DP" => Meaning::DecodeParms,
        b"Length" => Meaning::Length,
        _ => Meaning::Other,
    }
}

fn refuse_name(name: Option<&[u8]>, at: u64, in_stream_data: bool) -> Result<(), ScanError> {
    match meaning(name) {
        Meaning::Active { found, short } if !(short && in_stream_data) => {
            Err(ScanError::ActiveContent { found, offset: at })
        }
        _ => Ok(()),
    }
}

/// What the current object's dictionary said, as far as its stream is concerned.
#[derive(Debug, Clone, Copy, Default)]
struct ObjectFlags {
    objstm: bool,
    embedded: bool,
    flate: u8,
    other_filter: bool,
    parms: bool,
    length: LengthState,
}

/// `/Length 1234` (direct, usable) versus `/Length 12 0 R` (indirect, unknown here).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum LengthState {
    #[default]
    None,
    AfterName,
    Value(u64),
    Generation(u64),
    Direct(u64),
}

fn number(word: &[u8]) -> Option<u64> {
    if word.is_empty() {
        return None;
    }
    word.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

impl ObjectFlags {
    fn name(&mut self, meaning: Meaning) {
        self.length = match self.length {
            LengthState::Value(n) => LengthState::Direct(n),
            LengthState::Generation(_) => LengthState::None,
            other => other,
        };
        match meaning {
            Meaning::ObjStm => self.objstm = true,
            Meaning::EmbeddedFile => self.embedded = true,
            Meaning::Flate => self.flate = self.flate.saturating_add(1),
            Meaning::OtherFilter => self.other_filter = true,
            Meaning::DecodeParms => self.parms = true,
            Meaning::Length => self.length = LengthState::AfterName,
            Meaning::Active { .. } | Meaning::Other => {}
        }
    }

    fn word(&mut self, word: &[u8]) {
        self.length = match (self.length, number(word)) {
            (LengthState::AfterName, Some(n)) => LengthState::Value(n),
            (LengthState::Value(n), Some(_)) => LengthState::Generation(n),
            (LengthState::Value(n), None) => LengthState::Direct(n),
            (LengthState::Direct(n), _) => LengthState::Direct(n),
            _ => LengthState::None,
        };
    }

    fn direct_length(&self) -> Option<u64> {
        match self.length {
            LengthState::Value(n) | LengthState::Direct(n) => Some(n),
            _ => None,
        }
    }

    /// Only `/FlateDecode` once, without predictors, can be decoded here.
    fn decodable(&self) -> Option<bool> {
        (!self.other_filter && !self.parms && self.flate <= 1).then_some(self.flate == 1)
    }
}

/// What to do with a stream's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Treatment {
    /// Lex the (inflated) contents for names.
    ObjectStream { flate: bool },
    /// Check the (inflated) first bytes for payloads.
    Head { flate: bool, embedded: bool },
    /// Encoded in a way that cannot be checked here (images, fonts): only the long names.
    Opaque,
}

fn treatment(flags: &ObjectFlags, at: u64) -> Result<Treatment, ScanError> {
    let uncheckable = |reason| ScanError::Uncheckable { reason, offset: at };
    Ok(match (flags.decodable(), flags.objstm, flags.embedded) {
        (Some(flate), true, _) => Treatment::ObjectStream { flate },
        (None, true, _) => {
            return Err(uncheckable(
                "an object stream is encoded with filters docgate cannot decode",
            ))
        }
        (Some(flate), false, embedded) => Treatment::Head { flate, embedded },
        (None, false, true) => {
            return Err(uncheckable(
                "an embedded file is encoded with filters docgate cannot decode",
            ))
        }
        (None, false, false) => Treatment::Opaque,
    })
}

/// `endstream`, `endobj` and `%%EOF`, found across block boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Terminator {
    Stream,
    Object,
    File,
}

const TERMINATORS: [(&[u8], Terminator); 3] = [
    (b"endstream", Terminator::Stream),
    (b"endobj", Terminator::Object),
    (b"%%EOF", Terminator::File),
];
const TAIL: usize = 8;

/// One stream being read.
#[derive(Debug)]
struct Stream {
    start: u64,
    treatment: Treatment,
    /// The document offset where a direct `/Length` ends the data.
    end_by_length: Option<u64>,
    /// The last bytes of data seen, for terminators straddling blocks.
    tail: [u8; TAIL],
    tail_len: usize,
    head: [u8; HEAD],
    head_len: usize,
    head_done: bool,
    /// Inflating: the first two bytes decide zlib or raw deflate; `None` once it failed.
    inflating: Option<InflateState>,
    /// A long name being read in the raw data.
    raw_name: Option<NameDecoder>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InflateState {
    Header([u8; 2], usize),
    Running,
    Ended,
}

impl Stream {
    fn new(start: u64, treatment: Treatment, end_by_length: Option<u64>) -> Stream {
        let flate = matches!(
            treatment,
            Treatment::ObjectStream { flate: true } | Treatment::Head { flate: true, .. }
        );
        Stream {
            start,
            treatment,
            end_by_length,
            tail: [0; TAIL],
            tail_len: 0,
            head: [0; HEAD],
            head_len: 0,
            head_done: false,
            inflating: flate.then_some(InflateState::Header([0; 2], 0)),
            raw_name: None,
        }
    }

    /// How much of `rest` (starting at document offset `at`) is this stream's data, and what
    /// ends it there, if anything does.
    fn end_in(&self, rest: &[u8], at: u64) -> (usize, Option<End>) {
        let mut best: Option<(usize, End)> = self.end_by_length.and_then(|end| {
            let left = end.saturating_sub(at);
            (left <= rest.len() as u64).then_some((left as usize, End::Length))
        });
        let mut consider = |end: usize, which: Terminator| {
            if best.is_none_or(|(b, _)| end < b) {
                best = Some((end, End::Terminator(which)));
            }
        };
        if self.tail_len > 0 {
            let take = rest.len().min(TAIL);
            let mut joint = [0u8; 2 * TAIL];
            joint[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
            joint[self.tail_len..self.tail_len + take].copy_from_slice(&rest[..take]);
            let joint = &joint[..self.tail_len + take];
            if let Some((end, which)) = earliest(joint, self.tail_len) {
                if end > self.tail_len {
                    consider(end - self.tail_len, which);
                }
            }
        }
        if let Some((end, which)) = earliest(rest, rest.len()) {
            consider(end, which);
        }
        match best {
            Some((len, end)) => (len, Some(end)),
            None => (rest.len(), None),
        }
    }

    fn remember_tail(&mut self, data: &[u8]) {
        if data.len() >= TAIL {
            self.tail.copy_from_slice(&data[data.len() - TAIL..]);
            self.tail_len = TAIL;
            return;
        }
        let keep = (TAIL - data.len()).min(self.tail_len);
        self.tail
            .copy_within(self.tail_len - keep..self.tail_len, 0);
        self.tail[keep..keep + data.len()].copy_from_slice(data);
        self.tail_len = keep + data.len();
    }

    /// Scan raw stream data for long active names (see the module docs).
    fn raw_names(&mut self, data: &[u8], at: u64) -> Result<(), ScanError> {
        let mut i = 0;
        loop {
            if let Some(mut name) = self.raw_name.take() {
                let end = regular_run_end(data, i);
                name.extend(&data[i..end]);
                i = end;
                if i == data.len() {
                    self.raw_name = Some(name);
                    return Ok(());
                }
                refuse_name(name.finish().as_bytes(), name.at, true)?;
            }
            let Some(p) = memchr(b'/', &data[i..]) else {
                return Ok(());
            };
            // Every long active name starts with J, L or R, or an escape: in compressed
            // data almost every `/` is dismissed on the byte after it.
            let slash = i + p;
            i = slash + 1;
            if !matches!(data.get(i), Some(b'J' | b'L' | b'R' | b'#') | None) {
                continue;
            }
            self.raw_name = Some(NameDecoder::new(at + slash as u64));
        }
    }

    fn check_head(&mut self) -> Result<(), ScanError> {
        if self.head_done {
            return Ok(());
        }
        self.head_done = true;
        let Treatment::Head { embedded, .. } = self.treatment else {
            return Ok(());
        };
        match payload::in_stream(&self.head[..self.head_len], embedded) {
            Some(found) => Err(ScanError::EmbeddedPayload {
                found,
                offset: self.start,
            }),
            None => Ok(()),
        }
    }

    /// Collect raw bytes into the head; checks it once full.
    fn collect_head(&mut self, data: &[u8]) -> Result<(), ScanError> {
        let take = (HEAD - self.head_len).min(data.len());
        self.head[self.head_len..self.head_len + take].copy_from_slice(&data[..take]);
        self.head_len += take;
        if self.head_len == HEAD {
            self.check_head()?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Length,
    Terminator(Terminator),
}

/// The earliest terminator starting in `hay[..starts]`, as (end position, which). Each later
/// needle is only searched up to the best end so far, so many small streams in one block
/// cost time linear in the block.
fn earliest(hay: &[u8], starts: usize) -> Option<(usize, Terminator)> {
    let mut best: Option<(usize, Terminator)> = None;
    for (needle, which) in TERMINATORS {
        let limit = best.map_or(hay.len(), |(end, _)| end.min(hay.len()));
        if let Some(p) = memmem::find(&hay[..limit], needle) {
            let end = p + needle.len();
            if p < starts && best.is_none_or(|(b, _)| end < b) {
                best = Some((end, which));
            }
        }
    }
    best
}

/// Inflate `input`, handing each produced chunk to `sink` (which answers whether it wants
/// more). Returns whether the stream wants more input: false once it ended, was corrupt
/// (encrypted PDFs look corrupt), or `sink` had enough.
fn inflate(
    d: &mut Decompress,
    mut input: &[u8],
    step: usize,
    sink: &mut dyn FnMut(&[u8]) -> Result<bool, ScanError>,
) -> Result<bool, ScanError> {
    let mut out = [0u8; 8192];
    loop {
        let (before_in, before_out) = (d.total_in(), d.total_out());
        let piece = &input[..input.len().min(step)];
        let Ok(status) = d.decompress(piece, &mut out, FlushDecompress::None) else {
            return Ok(false);
        };
        // Both deltas are bounded by the slices just passed in.
        let used = (d.total_in() - before_in) as usize;
        let made = (d.total_out() - before_out) as usize;
        input = &input[used..];
        if made > 0 && !sink(&out[..made])? {
            return Ok(false);
        }
        if status == Status::StreamEnd {
            return Ok(false);
        }
        if used == 0 && made == 0 {
            return Ok(true);
        }
    }
}

/// Input given to the inflater at a time when only a stream's head is wanted: the inflater
/// decodes ahead into its 32 KiB window as far as its input allows, so feeding a whole
/// block would inflate 32 KiB to look at 1.
const HEAD_STEP: usize = 256;

/// zlib (RFC 1950) or, as some writers produce, raw deflate: the first two bytes tell.
fn zlib_header(first: [u8; 2]) -> bool {
    first[0] & 0x0f == 8 && u16::from_be_bytes(first).is_multiple_of(31)
}

#[derive(Debug)]
pub(super) struct PdfScan {
    lexer: Lexer,
    object: ObjectFlags,
    stream: Option<Box<Stream>>,
    /// Lexes the contents of object streams.
    inner: Lexer,
    inflater: Option<Box<Decompress>>,
    inflated: u64,
    ends: Ends,
}

impl PdfScan {
    pub(super) fn new() -> PdfScan {
        PdfScan {
            lexer: Lexer::new(false),
            object: ObjectFlags::default(),
            stream: None,
            inner: Lexer::new(true),
            inflater: None,
            inflated: 0,
            ends: Ends::default(),
        }
    }

    pub(super) fn feed(&mut self, block: &[u8], at: u64) -> Result<(), ScanError> {
        let searching = self.ends.trailer.is_some();
        if let Some((start, _)) = &mut self.ends.trailer {
            start.feed(block, at)?;
        }
        let mut i = 0;
        while i < block.len() {
            i = if self.stream.is_some() {
                self.stream_data(block, i, at)?
            } else {
                self.body(block, i, at)?
            };
        }
        let from = if searching {
            0
        } else {
            self.ends.search_from.take().unwrap_or(block.len())
        };
        if let Some((_, search)) = &mut self.ends.trailer {
            search.feed(&block[from..], at + from as u64)?;
        }
        Ok(())
    }

    /// Lex PDF syntax from `block[i..]` until stream data starts or the block ends.
    fn body(&mut self, block: &[u8], i: usize, at: u64) -> Result<usize, ScanError> {
        let mut tokens = Body {
            object: &mut self.object,
            ends: &mut self.ends,
            block,
            at,
        };
        match self.lexer.run(block, i, at, &mut tokens)? {
            Some(start) => {
                self.open_stream(at + start as u64)?;
                Ok(start)
            }
            None => Ok(block.len()),
        }
    }

    fn open_stream(&mut self, start: u64) -> Result<(), ScanError> {
        let flags = std::mem::take(&mut self.object);
        let treatment = treatment(&flags, start)?;
        if let Treatment::ObjectStream { .. } = treatment {
            self.inner.reset();
        }
        let end_by_length = flags.direct_length().map(|n| start.saturating_add(n));
        self.stream = Some(Box::new(Stream::new(start, treatment, end_by_length)));
        Ok(())
    }

    /// Stream data from `block[i..]`, up to the stream's end or the block's.
    fn stream_data(&mut self, block: &[u8], i: usize, at: u64) -> Result<usize, ScanError> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(i);
        };
        let rest = &block[i..];
        let offset = at + i as u64;
        let (len, end) = stream.end_in(rest, offset);
        let data = &rest[..len];
        stream.remember_tail(data);
        self.consume(data, offset)?;
        let Some(end) = end else {
            return Ok(block.len());
        };
        self.close_stream()?;
        match end {
            End::Terminator(Terminator::Object) => self.object = ObjectFlags::default(),
            End::Terminator(Terminator::File) => self.ends.end_of_file(block, i + len, at)?,
            End::Terminator(Terminator::Stream) | End::Length => {}
        }
        Ok(i + len)
    }

    fn consume(&mut self, data: &[u8], at: u64) -> Result<(), ScanError> {
        let PdfScan {
            stream,
            inner,
            inflater,
            inflated,
            ..
        } = self;
        let Some(stream) = stream.as_mut() else {
            return Ok(());
        };
        match stream.treatment {
            Treatment::ObjectStream { flate: false } => {
                return lex_object_stream(inner, data, stream.start);
            }
            Treatment::ObjectStream { flate: true } => {
                let start = stream.start;
                inflate_stream(stream, inflater, data, &mut |chunk| {
                    *inflated += chunk.len() as u64;
                    if *inflated > inflate_budget(at) {
                        return Err(ScanError::Uncheckable {
                            reason: "object streams expand beyond 64 MiB plus 8 bytes per byte of the PDF",
                            offset: start,
                        });
                    }
                    lex_object_stream(inner, chunk, start)?;
                    Ok(true)
                })?;
            }
            Treatment::Head { flate: false, .. } if !stream.head_done => {
                stream.collect_head(data)?;
            }
            Treatment::Head { flate: true, .. } if !stream.head_done => {
                let mut head = std::mem::take(&mut stream.head_len);
                let mut buf = [0u8; HEAD];
                buf[..head].copy_from_slice(&stream.head[..head]);
                inflate_stream(stream, inflater, data, &mut |chunk| {
                    let take = (HEAD - head).min(chunk.len());
                    buf[head..head + take].copy_from_slice(&chunk[..take]);
                    head += take;
                    Ok(head < HEAD)
                })?;
                stream.head[..head].copy_from_slice(&buf[..head]);
                stream.head_len = head;
                if head == HEAD {
                    stream.check_head()?;
                }
            }
            Treatment::Head { .. } | Treatment::Opaque => {}
        }
        stream.raw_names(data, at)
    }

    fn close_stream(&mut self) -> Result<(), ScanError> {
        let Some(mut stream) = self.stream.take() else {
            return Ok(());
        };
        stream.check_head()?;
        if let Some(name) = stream.raw_name.take() {
            refuse_name(name.finish().as_bytes(), name.at, true)?;
        }
        if let Treatment::ObjectStream { .. } = stream.treatment {
            if let Some((name, _)) = self.inner.finish() {
                refuse_name(name.as_bytes(), stream.start, false)?;
            }
        }
        Ok(())
    }

    pub(super) fn finish(&mut self) -> Result<(), ScanError> {
        self.close_stream()?;
        if let Some((name, offset)) = self.lexer.finish() {
            refuse_name(name.as_bytes(), offset, false)?;
        }
        if let Some((start, search)) = &mut self.ends.trailer {
            start.finish()?;
            search.finish()?;
        }
        Ok(())
    }
}

/// Names in the contents of an object stream are names like any other (short ones too).
fn lex_object_stream(inner: &mut Lexer, data: &[u8], stream_at: u64) -> Result<(), ScanError> {
    inner.run(data, 0, stream_at, &mut ObjectStreamTokens { stream_at })?;
    Ok(())
}

/// Names in object streams are reported at the stream's offset (the objects have none).
struct ObjectStreamTokens {
    stream_at: u64,
}

impl Tokens for ObjectStreamTokens {
    fn name(&mut self, name: Option<&[u8]>, _at: u64) -> Result<(), ScanError> {
        refuse_name(name, self.stream_at, false)
    }

    fn word(&mut self, _word: &[u8]) -> Result<(), ScanError> {
        Ok(())
    }

    fn end_of_file(&mut self, _pos: usize) -> Result<(), ScanError> {
        Ok(())
    }
}

/// The `%%EOF`s seen so far and what judges the bytes after them.
#[derive(Debug, Default)]
struct Ends {
    trailer: Option<(StartCheck, PayloadSearch)>,
    /// Where in the current block the trailer search starts (the first `%%EOF`).
    search_from: Option<usize>,
}

impl Ends {
    /// A `%%EOF` ends at `block[pos]`: judge what follows, and search from here on.
    fn end_of_file(&mut self, block: &[u8], pos: usize, at: u64) -> Result<(), ScanError> {
        if self.trailer.is_none() {
            self.search_from = Some(pos);
        }
        let (start, _) = self
            .trailer
            .get_or_insert_with(|| (StartCheck::new(FORMAT), PayloadSearch::new(FORMAT)));
        start.begin()?;
        start.feed(&block[pos..], at + pos as u64)
    }
}

/// What the body lexer finds: active names refused, the object's dictionary noted.
struct Body<'a> {
    object: &'a mut ObjectFlags,
    ends: &'a mut Ends,
    block: &'a [u8],
    at: u64,
}

impl Tokens for Body<'_> {
    fn name(&mut self, name: Option<&[u8]>, at: u64) -> Result<(), ScanError> {
        refuse_name(name, at, false)?;
        self.object.name(meaning(name));
        Ok(())
    }

    fn word(&mut self, word: &[u8]) -> Result<(), ScanError> {
        match word {
            b"obj" | b"endobj" => *self.object = ObjectFlags::default(),
            word => self.object.word(word),
        }
        Ok(())
    }

    fn end_of_file(&mut self, pos: usize) -> Result<(), ScanError> {
        self.ends.end_of_file(self.block, pos, self.at)
    }
}

/// Feed stream data to the inflater (set up on the first two bytes), output to `sink`.
fn inflate_stream(
    stream: &mut Stream,
    inflater: &mut Option<Box<Decompress>>,
    mut data: &[u8],
    sink: &mut dyn FnMut(&[u8]) -> Result<bool, ScanError>,
) -> Result<(), ScanError> {
    let step = match stream.treatment {
        Treatment::Head { .. } => HEAD_STEP,
        Treatment::ObjectStream { .. } | Treatment::Opaque => usize::MAX,
    };
    if let Some(InflateState::Header(mut first, mut seen)) = stream.inflating {
        let take = (2 - seen).min(data.len());
        first[seen..seen + take].copy_from_slice(&data[..take]);
        seen += take;
        data = &data[take..];
        if seen < 2 {
            stream.inflating = Some(InflateState::Header(first, seen));
            return Ok(());
        }
        let d = inflater.get_or_insert_with(|| Box::new(Decompress::new(true)));
        d.reset(zlib_header(first));
        stream.inflating = Some(InflateState::Running);
        if !inflate(d, &first, step, sink)? {
            stream.inflating = Some(InflateState::Ended);
            return Ok(());
        }
    }
    if stream.inflating != Some(InflateState::Running) {
        return Ok(());
    }
    let Some(d) = inflater.as_mut() else {
        return Ok(());
    };
    if !inflate(d, data, step, sink)? {
        stream.inflating = Some(InflateState::Ended);
    }
    Ok(())
}
