//! Encryption at rest for spooled documents: [`EncryptedStore`] wraps any [`ObjectStore`].
//!
//! Nothing here is a new cipher mode. Each object gets a fresh random 256-bit data key,
//! wrapped (AES-256-GCM, random nonce) by the configured key-encryption key; the body is the
//! STREAM construction as RustCrypto's `aead` crate defines it (`StreamBE32`, as used by
//! `EncryptorBE32`/`DecryptorBE32`) over AES-256-GCM in 64 KiB segments. The segments are
//! sealed with ring's AES-GCM (several times faster than the portable one) under nonces laid
//! out exactly as `StreamBE32` lays them out — a test opens ring's output with RustCrypto's
//! `StreamBE32` and the reverse, so the format is the crate's, not ours. Every segment is
//! authenticated on its own, so a reader verifies as it streams and can start at any segment
//! (tus resumption and delivery retries read ranges); the last segment carries STREAM's
//! "last" flag, so cutting the object at a segment boundary is detected too.
//!
//! Object layout (all integers big-endian), [`HEADER_LEN`] bytes of header then the body:
//!
//! | bytes    | field                                                           |
//! |----------|-----------------------------------------------------------------|
//! | 0..6     | magic `DGSEAL`                                                  |
//! | 6        | format version (1)                                              |
//! | 7        | algorithm (1 = AES-256-GCM, STREAM BE32)                        |
//! | 8        | key id length (1..=32)                                          |
//! | 9..41    | key id, zero padded                                             |
//! | 41..53   | nonce of the key wrap                                           |
//! | 53..101  | wrapped data key (32 bytes + 16 tag)                            |
//! | 101..108 | STREAM nonce prefix (7 bytes, random per object)                |
//! | 108..112 | segment size (plaintext bytes per segment)                      |
//!
//! The key wrap authenticates bytes 0..41 (so the key id cannot be swapped); every segment
//! authenticates the whole header *and the object's store key*, so an object copied over
//! another key, or a header edited in place, fails instead of decrypting. All segments but
//! the last hold exactly `segment` plaintext bytes; the last holds 0..=`segment` (it is
//! empty only for an empty object).
//!
//! Failures are `io::Error`s of kind `InvalidData` carrying a [`SealError`];
//! [`is_integrity_failure`] tells the delivery a spooled object was altered, which no retry
//! will repair.

use std::{
    fmt,
    io::{self, Read, Seek},
    sync::Arc,
};

use aes_gcm::{
    aead::{Aead, KeyInit, Payload},
    Aes256Gcm, Key, Nonce,
};
use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::store::{ByteStream, ObjectInfo, ObjectStore, ObjectWriter, ReadSeek};

/// Plaintext bytes per STREAM segment.
pub const SEGMENT: usize = 64 * 1024;
/// AES-GCM tag bytes at the end of every segment.
pub const TAG: usize = 16;
/// Bytes of the object header.
pub const HEADER_LEN: usize = 112;
const MAGIC: &[u8; 6] = b"DGSEAL";
const VERSION: u8 = 1;
const ALG_AES256GCM_STREAM_BE32: u8 = 1;
/// Longest key id (it is stored in a fixed-size field, so the header length is constant and
/// a reader can seek to a segment without reading the header first).
pub const KEY_ID_MAX: usize = 32;
const WRAP_AAD: std::ops::Range<usize> = 0..41;
const STREAM_NONCE: usize = 7;
/// Segment sizes a header may claim: bounds what a damaged header can make a reader allocate.
const SEGMENT_BOUNDS: std::ops::RangeInclusive<u32> = 1024..=(4 << 20);
/// Objects up to this plaintext length are read whole, header and body at once, when read
/// from their start: the most they can be sealed into stays under the local store's
/// one-read size.
const WHOLE_AT_ONCE: u64 = 60 * 1024;
/// Ciphertext is written to the inner store in batches of about this size.
const WRITE_BATCH: usize = 128 * 1024;

/// Why a sealed object or a key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The object is not what was written: altered, truncated, extended, not encrypted, or
    /// encrypted under a different key of the same id.
    #[error("spooled object {key} failed its integrity check: {why}")]
    Integrity { key: String, why: &'static str },
    #[error("spooled object {key} is encrypted under key id `{key_id}`, which is not configured (spool_encryption.previous)")]
    UnknownKey { key: String, key_id: String },
    #[error("a spool object grew past the STREAM segment counter")]
    TooLong,
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// A key-encryption key or its id is unusable (configuration problems).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("must be 64 hexadecimal characters (32 bytes)")]
    NotHex32,
    #[error("a key id is 1 to {KEY_ID_MAX} characters of A-Z a-z 0-9 . _ -")]
    BadId,
    #[error("key id `{0}` is used twice")]
    DuplicateId(String),
}

fn integrity(key: &str, why: &'static str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        SealError::Integrity {
            key: key.to_owned(),
            why,
        },
    )
}

/// Whether `e` (or an error it wraps) says a sealed object was altered or truncated: no
/// retry can succeed, and none of its bytes may be used.
pub fn is_integrity_failure(e: &io::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = e
        .get_ref()
        .map(|inner| inner as &(dyn std::error::Error + 'static));
    while let Some(err) = source {
        if matches!(
            err.downcast_ref::<SealError>(),
            Some(SealError::Integrity { .. })
        ) {
            return true;
        }
        source = err.source();
    }
    false
}

/// 64 hex characters → 32 key bytes. The input is never echoed (it is a secret).
pub fn parse_hex_key(text: &str) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let text = text.trim();
    let mut out = Zeroizing::new([0u8; 32]);
    if text.len() != 64 {
        return Err(KeyError::NotHex32);
    }
    hex::decode_to_slice(text, out.as_mut_slice()).map_err(|_| KeyError::NotHex32)?;
    Ok(out)
}

/// Checks a key id: short, printable, safe in logs and in the fixed header field.
pub fn check_key_id(id: &str) -> Result<(), KeyError> {
    let ok = !id.is_empty()
        && id.len() <= KEY_ID_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(KeyError::BadId)
    }
}

/// One key-encryption key and its id.
struct Kek {
    id: String,
    cipher: Aes256Gcm,
}

/// The key that seals new objects, and the older ones that still open objects sealed before
/// a rotation. `Debug` shows only the ids.
#[derive(Clone)]
pub struct Keyring {
    keys: Arc<Vec<Kek>>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field(
                "key_ids",
                &self.keys.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Keyring {
    /// `current` seals new objects; `previous` only open old ones.
    pub fn new(
        current: (&str, &[u8; 32]),
        previous: &[(&str, &[u8; 32])],
    ) -> Result<Keyring, KeyError> {
        let mut keys: Vec<Kek> = Vec::with_capacity(1 + previous.len());
        for (id, bytes) in std::iter::once(&current).chain(previous) {
            check_key_id(id)?;
            if keys.iter().any(|k| k.id == *id) {
                return Err(KeyError::DuplicateId((*id).to_owned()));
            }
            keys.push(Kek {
                id: (*id).to_owned(),
                cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(**bytes)),
            });
        }
        Ok(Keyring {
            keys: Arc::new(keys),
        })
    }

    /// The id new objects are sealed under.
    pub fn current_id(&self) -> &str {
        self.keys.first().map(|k| k.id.as_str()).unwrap_or("")
    }

    fn get(&self, id: &str) -> Option<&Kek> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Whether a key of this id is configured.
    pub fn has(&self, id: &str) -> bool {
        self.get(id).is_some()
    }
}

/// The parsed header of a sealed object.
struct Header {
    bytes: [u8; HEADER_LEN],
    segment: usize,
}

impl Header {
    /// A new header for an object sealed under `kek` with `data_key`.
    fn seal(kek: &Kek, data_key: &[u8; 32]) -> io::Result<Header> {
        let mut b = [0u8; HEADER_LEN];
        b[0..6].copy_from_slice(MAGIC);
        b[6] = VERSION;
        b[7] = ALG_AES256GCM_STREAM_BE32;
        let id = kek.id.as_bytes();
        // Key ids are checked when the keyring is built; the length fits a byte.
        b[8] = id.len() as u8;
        b[9..9 + id.len()].copy_from_slice(id);
        let mut rng = rand::rngs::OsRng;
        let mut wrap_nonce = [0u8; 12];
        rng.fill_bytes(&mut wrap_nonce);
        b[41..53].copy_from_slice(&wrap_nonce);
        let wrapped = kek
            .cipher
            .encrypt(
                &Nonce::from(wrap_nonce),
                Payload {
                    msg: data_key,
                    aad: &b[WRAP_AAD],
                },
            )
            .map_err(|_| io::Error::other("wrapping a data key failed"))?;
        if wrapped.len() != 48 {
            return Err(io::Error::other("unexpected wrapped key length"));
        }
        b[53..101].copy_from_slice(&wrapped);
        rng.fill_bytes(&mut b[101..108]);
        let segment = SEGMENT as u32;
        b[108..112].copy_from_slice(&segment.to_be_bytes());
        Ok(Header {
            bytes: b,
            segment: SEGMENT,
        })
    }

    /// Parse `b` and unwrap its data key with the matching key of `keys`.
    fn open(
        b: [u8; HEADER_LEN],
        keys: &Keyring,
        object: &str,
    ) -> io::Result<(Header, Zeroizing<[u8; 32]>)> {
        if &b[0..6] != MAGIC {
            return Err(integrity(object, "not an encrypted spool object"));
        }
        if b[6] != VERSION || b[7] != ALG_AES256GCM_STREAM_BE32 {
            return Err(integrity(object, "unknown format version or algorithm"));
        }
        let id_len = usize::from(b[8]);
        if id_len == 0 || id_len > KEY_ID_MAX {
            return Err(integrity(object, "malformed header"));
        }
        let id = std::str::from_utf8(&b[9..9 + id_len])
            .map_err(|_| integrity(object, "malformed header"))?;
        let Some(kek) = keys.get(id) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                SealError::UnknownKey {
                    key: object.to_owned(),
                    key_id: id.to_owned(),
                },
            ));
        };
        let mut wrap_nonce = [0u8; 12];
        wrap_nonce.copy_from_slice(&b[41..53]);
        let plain = kek
            .cipher
            .decrypt(
                &Nonce::from(wrap_nonce),
                Payload {
                    msg: &b[53..101],
                    aad: &b[WRAP_AAD],
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| {
                integrity(
                    object,
                    "the data key does not unwrap (altered header or wrong key)",
                )
            })?;
        let mut data_key = Zeroizing::new([0u8; 32]);
        if plain.len() != 32 {
            return Err(integrity(object, "malformed header"));
        }
        data_key.copy_from_slice(&plain);
        let mut seg = [0u8; 4];
        seg.copy_from_slice(&b[108..112]);
        let segment = u32::from_be_bytes(seg);
        if !SEGMENT_BOUNDS.contains(&segment) {
            return Err(integrity(object, "malformed header"));
        }
        Ok((
            Header {
                bytes: b,
                segment: segment as usize,
            },
            data_key,
        ))
    }

    /// The STREAM over this object's body, and the associated data of every segment.
    fn stream(&self, data_key: &[u8; 32], object: &str) -> Sealer {
        let mut prefix = [0u8; STREAM_NONCE];
        prefix.copy_from_slice(&self.bytes[101..101 + STREAM_NONCE]);
        let mut aad = Vec::with_capacity(HEADER_LEN + object.len());
        aad.extend_from_slice(&self.bytes);
        aad.extend_from_slice(object.as_bytes());
        Sealer {
            key: Arc::new(segment_key(data_key)),
            prefix,
            aad: aad.into(),
            segment: self.segment,
            object: object.into(),
        }
    }
}

/// ring's AES-256-GCM under `data_key` (32 bytes: always a valid key).
fn segment_key(data_key: &[u8; 32]) -> ring::aead::LessSafeKey {
    let unbound = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, data_key)
        .unwrap_or_else(|_| unreachable!("AES-256 takes any 32-byte key"));
    ring::aead::LessSafeKey::new(unbound)
}

/// STREAM's nonce for segment `position` (`StreamBE32`): the object's 7-byte prefix, the
/// position as a big-endian u32, then 1 for the last segment, else 0. Unique per segment of
/// an object, and every object has its own data key.
fn stream_nonce(prefix: &[u8; STREAM_NONCE], position: u32, last: bool) -> ring::aead::Nonce {
    let mut n = [0u8; 12];
    n[..STREAM_NONCE].copy_from_slice(prefix);
    n[STREAM_NONCE..11].copy_from_slice(&position.to_be_bytes());
    n[11] = u8::from(last);
    ring::aead::Nonce::assume_unique_for_key(n)
}

/// Everything needed to seal or open the segments of one object.
#[derive(Clone)]
struct Sealer {
    key: Arc<ring::aead::LessSafeKey>,
    prefix: [u8; STREAM_NONCE],
    aad: Arc<[u8]>,
    segment: usize,
    object: Arc<str>,
}

impl Sealer {
    fn seal(&self, position: u32, last: bool, buf: &mut Vec<u8>) -> io::Result<()> {
        let nonce = stream_nonce(&self.prefix, position, last);
        self.key
            .seal_in_place_append_tag(nonce, ring::aead::Aad::from(&self.aad[..]), buf)
            .map_err(|_| io::Error::other("segment encryption failed"))
    }

    /// Decrypt segment `index` in place; `Err` (integrity) unless it is authentic.
    fn open(&self, index: u64, last: bool, buf: &mut Vec<u8>) -> io::Result<()> {
        let position =
            u32::try_from(index).map_err(|_| integrity(&self.object, "too many segments"))?;
        let nonce = stream_nonce(&self.prefix, position, last);
        let plain = self
            .key
            .open_in_place(nonce, ring::aead::Aad::from(&self.aad[..]), buf)
            .map_err(|_| integrity(&self.object, "a segment does not authenticate"))?
            .len();
        buf.truncate(plain);
        Ok(())
    }

    /// The geometry of an object of `len` plaintext bytes.
    fn segments(&self, len: u64) -> u64 {
        len.div_ceil(self.segment as u64).max(1)
    }

    fn sealed_len(&self, len: u64) -> u64 {
        HEADER_LEN as u64 + len + self.segments(len) * TAG as u64
    }

    fn segment_offset(&self, index: u64) -> u64 {
        HEADER_LEN as u64 + index * (self.segment + TAG) as u64
    }
}

/// The first bytes of stored object `key`: its header if it is sealed (fewer bytes when the
/// object is shorter than a header). Read once, for [`sealed_key_id`] and [`opens`].
pub async fn read_head<S: ObjectStore + ?Sized>(store: &S, key: &str) -> io::Result<Vec<u8>> {
    let mut stream = store.get(key, 0, HEADER_LEN as u64).await?;
    let mut head = Vec::with_capacity(HEADER_LEN);
    while head.len() < HEADER_LEN {
        match stream.next().await {
            Some(chunk) => {
                let chunk = chunk?;
                let n = chunk.len().min(HEADER_LEN - head.len());
                head.extend_from_slice(&chunk[..n]);
            }
            None => break,
        }
    }
    Ok(head)
}

/// The header bytes of stored object `key`.
async fn read_header<S: ObjectStore + ?Sized>(
    store: &S,
    key: &str,
) -> io::Result<[u8; HEADER_LEN]> {
    read_head(store, key)
        .await?
        .try_into()
        .map_err(|_| integrity(key, "shorter than its header"))
}

/// Whether `keys` open the header `head` of stored (sealed) object `key`: its data key
/// unwraps.
pub fn opens(head: &[u8], keys: &Keyring, key: &str) -> io::Result<()> {
    let header: [u8; HEADER_LEN] = head
        .try_into()
        .map_err(|_| integrity(key, "shorter than its header"))?;
    Header::open(header, keys, key).map(|_| ())
}

/// The key id a stored object's first bytes (`head`) say it is sealed under, read without
/// any key, or `None` when it is not a sealed object (a spool written before encryption was
/// turned on). For start-up checks: which keys the spool needs, whatever keys a replica was
/// given.
pub fn sealed_key_id(head: &[u8]) -> Option<String> {
    if head.len() < 9 || &head[0..6] != MAGIC {
        return None;
    }
    let id_len = usize::from(head[8]);
    head.get(9..9 + id_len)
        .filter(|_| (1..=KEY_ID_MAX).contains(&id_len))
        .map(|id| String::from_utf8_lossy(id).into_owned())
}

/// An [`ObjectStore`] whose objects are sealed (see the module docs). Listing sizes are the
/// stored (sealed) sizes; `len` arguments are plaintext lengths, as recorded by the ledger.
#[derive(Debug)]
pub struct EncryptedStore<S: ObjectStore> {
    inner: S,
    keys: Keyring,
}

impl<S: ObjectStore> EncryptedStore<S> {
    pub fn new(inner: S, keys: Keyring) -> EncryptedStore<S> {
        EncryptedStore { inner, keys }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Read and open the header of `key`.
    async fn header(&self, key: &str) -> io::Result<(Header, Zeroizing<[u8; 32]>)> {
        Header::open(read_header(&self.inner, key).await?, &self.keys, key)
    }

    /// A small object read from its start: header and body in one read of the inner store
    /// (one trip to a blocking thread, or one ranged GET), instead of one for each. The read
    /// asks for as much as any header could make the object (the smallest segments carry the
    /// most tags); what comes back is opened and checked exactly as a streamed read is: a
    /// longer, shorter or altered object fails to authenticate or to match `len`.
    async fn get_whole(&self, key: &str, len: u64) -> io::Result<ByteStream> {
        let smallest = u64::from(*SEGMENT_BOUNDS.start());
        let most = HEADER_LEN as u64 + len + len.div_ceil(smallest).max(1) * TAG as u64;
        let mut stream = self.inner.get(key, 0, most).await?;
        let mut whole = BytesMut::new();
        while let Some(chunk) = stream.next().await {
            whole.extend_from_slice(&chunk?);
            // The inner store reads one byte past the end asked for; a store that sent more
            // is not believed either.
            if whole.len() as u64 > most + 1 {
                return Err(integrity(key, "longer than the recorded length"));
            }
        }
        let Some(head) = whole.get(..HEADER_LEN) else {
            return Err(integrity(key, "shorter than its header"));
        };
        let mut b = [0u8; HEADER_LEN];
        b.copy_from_slice(head);
        let (header, data_key) = Header::open(b, &self.keys, key)?;
        let sealer = header.stream(&data_key, key);
        let body = whole.freeze().slice(HEADER_LEN..);
        let body = Box::pin(futures_util::stream::once(async move { Ok(body) }));
        Ok(opened(Opening::at(body, sealer, 0, 0, len)))
    }

    /// The key id an object is sealed under, read from its header without unwrapping
    /// anything (start-up checks, operator tools).
    pub async fn key_id_of(&self, key: &str) -> io::Result<String> {
        match self.header(key).await {
            Ok((h, _)) => {
                Ok(String::from_utf8_lossy(&h.bytes[9..9 + usize::from(h.bytes[8])]).into_owned())
            }
            Err(e) => match e.get_ref().and_then(|i| i.downcast_ref::<SealError>()) {
                Some(SealError::UnknownKey { key_id, .. }) => Ok(key_id.clone()),
                _ => Err(e),
            },
        }
    }
}

struct SealWriter {
    inner: Box<dyn ObjectWriter>,
    sealer: Sealer,
    /// Plaintext of the segment being filled (sealed once more data shows it is not last):
    /// a pooled buffer, as a fresh 64 KiB per upload was handed back to the system at every
    /// small upload's end and faulted in again at the next (see `blocks`).
    pending: Vec<u8>,
    /// Sealed bytes not yet handed to the inner writer (a pooled buffer: see `blocks`).
    out: Vec<u8>,
    position: u32,
}

/// Room for one write batch of sealed segments (a batch ends after the segment that
/// crosses `WRITE_BATCH`): a pooled block, which holds a batch of segments up to 128 KiB.
fn out_buffer(segment: usize) -> Vec<u8> {
    let mut out = crate::blocks::take();
    out.reserve(WRITE_BATCH + segment + TAG);
    out
}

impl SealWriter {
    fn seal_pending(&mut self, last: bool) -> io::Result<()> {
        // The segment's buffer is sealed in place, copied out and kept for the next one.
        let mut seg = std::mem::take(&mut self.pending);
        self.sealer.seal(self.position, last, &mut seg)?;
        self.out.extend_from_slice(&seg);
        if !last {
            self.position = self
                .position
                .checked_add(1)
                .ok_or_else(|| io::Error::other(SealError::TooLong))?;
        }
        seg.clear();
        self.pending = seg;
        Ok(())
    }

    /// Hand the batch to the inner writer as soon as it crosses `WRITE_BATCH`, segment by
    /// segment: a block of several segments sealed before the check grew the batch past
    /// its pooled buffer (a reallocation and a copy per block, and fresh pages each time,
    /// as the grown buffer no longer went back to the pool).
    async fn write_batch(&mut self) -> io::Result<()> {
        // A fresh buffer of the batch's size, not the rest of this one: a split-off buffer
        // would grow by doubling and keep the written batch's allocation alive.
        let batch = std::mem::replace(&mut self.out, out_buffer(self.sealer.segment));
        self.inner.write(crate::blocks::freeze(batch)).await
    }
}

#[async_trait]
impl ObjectWriter for SealWriter {
    async fn write(&mut self, block: Bytes) -> io::Result<()> {
        let mut data = &block[..];
        while !data.is_empty() {
            // A full segment is sealed only when more data follows: the last one must carry
            // the "last" flag, and only commit knows which one that is.
            if self.pending.len() == self.sealer.segment {
                self.seal_pending(false)?;
                if self.out.len() >= WRITE_BATCH {
                    self.write_batch().await?;
                }
            }
            let take = (self.sealer.segment - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> io::Result<()> {
        self.seal_pending(true)?;
        // Back to the pool before the write and its sync, which take longer than the rest.
        crate::blocks::SEGMENTS.give_back(std::mem::take(&mut self.pending));
        let rest = std::mem::take(&mut self.out);
        self.inner.write(crate::blocks::freeze(rest)).await?;
        self.inner.commit().await
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for EncryptedStore<S> {
    async fn put(&self, key: &str) -> io::Result<Box<dyn ObjectWriter>> {
        let kek = self
            .keys
            .keys
            .first()
            .ok_or_else(|| io::Error::other("no spool encryption key"))?;
        let mut data_key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(data_key.as_mut_slice());
        let header = Header::seal(kek, &data_key)?;
        let sealer = header.stream(&data_key, key);
        let mut inner = self.inner.put(key).await?;
        inner.write(Bytes::copy_from_slice(&header.bytes)).await?;
        let segment = sealer.segment;
        Ok(Box::new(SealWriter {
            inner,
            sealer,
            pending: crate::blocks::SEGMENTS.take(),
            out: out_buffer(segment),
            position: 0,
        }))
    }

    async fn get(&self, key: &str, from: u64, len: u64) -> io::Result<ByteStream> {
        if from == 0 && len <= WHOLE_AT_ONCE {
            return self.get_whole(key, len).await;
        }
        let (header, data_key) = self.header(key).await?;
        let sealer = header.stream(&data_key, key);
        let segments = sealer.segments(len);
        let first = (from / sealer.segment as u64).min(segments - 1);
        let start = sealer.segment_offset(first);
        // The inner store reads one byte past the expected end, so an object longer than
        // `len` implies shows up as a last segment that does not authenticate.
        let body = self.inner.get(key, start, sealer.sealed_len(len)).await?;
        let skip = from.saturating_sub(first * header.segment as u64);
        Ok(opened(Opening::at(body, sealer, first, skip, len)))
    }

    fn open_blocking(&self, key: &str, len: u64) -> io::Result<Box<dyn ReadSeek>> {
        let mut inner = self.inner.open_blocking(key, len)?;
        let mut b = [0u8; HEADER_LEN];
        inner.read_exact(&mut b).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => integrity(key, "shorter than its header"),
            _ => e,
        })?;
        let (header, data_key) = Header::open(b, &self.keys, key)?;
        let sealer = header.stream(&data_key, key);
        let actual = inner.seek(io::SeekFrom::End(0))?;
        if actual != sealer.sealed_len(len) {
            return Err(integrity(key, "its size is not the recorded length's"));
        }
        Ok(Box::new(SealedReader {
            inner,
            sealer,
            len,
            pos: 0,
            cached: None,
        }))
    }

    async fn delete(&self, key: &str) -> io::Result<()> {
        self.inner.delete(key).await
    }

    async fn evict_cached(&self, key: &str) -> io::Result<()> {
        self.inner.evict_cached(key).await
    }

    async fn list(&self, prefix: &str) -> io::Result<Vec<ObjectInfo>> {
        self.inner.list(prefix).await
    }

    fn local_root(&self) -> Option<&std::path::Path> {
        self.inner.local_root()
    }
}

/// The state of one streaming read.
struct Opening {
    body: ByteStream,
    /// Sealed bytes read and not opened yet, as the store handed them over: a segment is
    /// copied out of them once, into the buffer it is opened in.
    pending: std::collections::VecDeque<Bytes>,
    pending_len: usize,
    sealer: Sealer,
    /// The segment to open next.
    index: u64,
    /// Plaintext bytes still to drop before `from`.
    skip: u64,
    /// Plaintext offset of the end of what was opened so far.
    plain_end: u64,
    len: u64,
    done: bool,
}

/// The plaintext of an object being opened, segment by segment; an error ends it.
fn opened(state: Opening) -> ByteStream {
    Box::pin(futures_util::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        match s.next_segment().await {
            Ok(Some(bytes)) => Some((Ok(bytes), s)),
            Ok(None) => None,
            Err(e) => {
                s.done = true;
                Some((Err(e), s))
            }
        }
    }))
}

impl Opening {
    /// Move the first `n` pending bytes (there are at least `n`) to the end of `out`.
    fn move_pending(&mut self, n: usize, out: &mut Vec<u8>) {
        let mut left = n;
        while left > 0 {
            let Some(front) = self.pending.front_mut() else {
                break;
            };
            let step = left.min(front.len());
            out.extend_from_slice(&front[..step]);
            front.advance(step);
            if front.is_empty() {
                self.pending.pop_front();
            }
            left -= step;
        }
        self.pending_len -= n - left;
    }

    /// Open `body`, the sealed object from segment `first` on, dropping the first `skip`
    /// bytes of plaintext.
    fn at(body: ByteStream, sealer: Sealer, first: u64, skip: u64, len: u64) -> Opening {
        let plain_end = first * sealer.segment as u64;
        Opening {
            body,
            pending: std::collections::VecDeque::new(),
            pending_len: 0,
            sealer,
            index: first,
            skip,
            plain_end,
            len,
            done: false,
        }
    }

    async fn next_segment(&mut self) -> io::Result<Option<Bytes>> {
        let full = self.sealer.segment + TAG;
        // Read until a whole segment and one more byte are buffered (then it is not the
        // last), or the body ends (then what is buffered is the last).
        let mut ended = false;
        while self.pending_len <= full {
            match self.body.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    self.pending_len += chunk.len();
                    self.pending.push_back(chunk);
                }
                None => {
                    ended = true;
                    break;
                }
            }
        }
        let last = ended;
        let take = if last { self.pending_len } else { full };
        if take < TAG {
            return Err(integrity(&self.sealer.object, "truncated"));
        }
        // Opened in a pooled buffer (see `blocks`), back in the pool once sent.
        let mut seg = crate::blocks::SEGMENTS.take();
        self.move_pending(take, &mut seg);
        self.sealer.open(self.index, last, &mut seg)?;
        self.index += 1;
        self.plain_end += seg.len() as u64;
        if last {
            self.done = true;
            if self.plain_end != self.len {
                return Err(integrity(
                    &self.sealer.object,
                    "its length is not the recorded length",
                ));
            }
        } else if self.plain_end > self.len {
            return Err(integrity(
                &self.sealer.object,
                "longer than the recorded length",
            ));
        }
        let mut bytes = crate::blocks::SEGMENTS.freeze(seg);
        let drop = usize::try_from(self.skip)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        self.skip -= drop as u64;
        bytes = bytes.slice(drop..);
        Ok(Some(bytes))
    }
}

/// `Read + Seek` over a sealed object's plaintext: a segment is opened (verified) when a
/// read needs it; the last one opened is kept.
struct SealedReader {
    inner: Box<dyn ReadSeek>,
    sealer: Sealer,
    len: u64,
    pos: u64,
    cached: Option<(u64, Vec<u8>)>,
}

impl io::Read for SealedReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || out.is_empty() {
            return Ok(0);
        }
        let seg = self.sealer.segment as u64;
        let index = self.pos / seg;
        if self.cached.as_ref().map(|(i, _)| *i) != Some(index) {
            let segments = self.sealer.segments(self.len);
            let last = index + 1 == segments;
            let plain = if last { self.len - index * seg } else { seg };
            let sealed = usize::try_from(plain).map_err(io::Error::other)? + TAG;
            self.inner
                .seek(io::SeekFrom::Start(self.sealer.segment_offset(index)))?;
            let mut buf = vec![0u8; sealed];
            self.inner
                .read_exact(&mut buf)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => integrity(&self.sealer.object, "truncated"),
                    _ => e,
                })?;
            // Drop the old segment first: a failed open must leave nothing usable cached.
            self.cached = None;
            self.sealer.open(index, last, &mut buf)?;
            self.cached = Some((index, buf));
        }
        let Some((_, plain)) = &self.cached else {
            return Ok(0);
        };
        let at = usize::try_from(self.pos - index * seg).map_err(io::Error::other)?;
        let n = (plain.len() - at.min(plain.len())).min(out.len());
        out[..n].copy_from_slice(&plain[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl io::Seek for SealedReader {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        let target = match to {
            io::SeekFrom::Start(p) => Some(p),
            io::SeekFrom::End(d) => self.len.checked_add_signed(d),
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        self.pos = target;
        Ok(target)
    }
}

#[cfg(test)]
mod tests;
