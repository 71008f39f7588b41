use std::io::{Read, Seek, SeekFrom};

use aes_gcm::aead::stream::{DecryptorBE32, EncryptorBE32};

use super::*;
use crate::store::LocalStore;

const K1: [u8; 32] = [0x11; 32];
const K2: [u8; 32] = [0x22; 32];

fn store(
    dir: &std::path::Path,
    current: (&str, &[u8; 32]),
    previous: &[(&str, &[u8; 32])],
) -> EncryptedStore<LocalStore> {
    EncryptedStore::new(
        LocalStore::new(dir).expect("store"),
        Keyring::new(current, previous).expect("keys"),
    )
}

/// Deterministic, non-repeating test data (a repeating pattern could hide segment mix-ups).
fn data(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

async fn put(s: &EncryptedStore<LocalStore>, key: &str, bytes: &[u8]) {
    let mut w = s.put(key).await.expect("put");
    // Uneven writes, so segment boundaries fall inside blocks.
    for chunk in bytes.chunks(100_003) {
        w.write(Bytes::copy_from_slice(chunk)).await.expect("write");
    }
    w.commit().await.expect("commit");
}

async fn get<S: ObjectStore>(
    s: &EncryptedStore<S>,
    key: &str,
    from: u64,
    len: u64,
) -> io::Result<Vec<u8>> {
    let mut stream = s.get(key, from, len).await?;
    let mut out = Vec::new();
    while let Some(b) = stream.next().await {
        out.extend_from_slice(&b?);
    }
    Ok(out)
}

fn read_all(s: &EncryptedStore<LocalStore>, key: &str, len: u64) -> io::Result<Vec<u8>> {
    let mut r = s.open_blocking(key, len)?;
    let mut out = Vec::new();
    r.read_to_end(&mut out)?;
    Ok(out)
}

fn assert_integrity(r: io::Result<Vec<u8>>, what: &str) {
    match r {
        Ok(bytes) => panic!("{what}: read {} bytes instead of failing", bytes.len()),
        Err(e) => {
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{what}: {e}");
            assert!(is_integrity_failure(&e), "{what}: {e}");
        }
    }
}

#[tokio::test]
async fn round_trips_across_segment_boundaries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path(), ("k1", &K1), &[]);
    for len in [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 5 << 20] {
        let plain = data(len);
        let key = format!("uploads/{len}.file");
        put(&s, &key, &plain).await;
        let raw = std::fs::read(dir.path().join(&key)).expect("raw");
        let segments = len.div_ceil(SEGMENT).max(1);
        assert_eq!(raw.len(), HEADER_LEN + len + segments * TAG, "{len}");
        if len >= 32 {
            assert!(
                !raw.windows(32).any(|w| w == &plain[..32]),
                "{len}: plaintext visible in the stored object"
            );
        }
        assert_eq!(
            get(&s, &key, 0, len as u64).await.expect("get"),
            plain,
            "{len}"
        );
        assert_eq!(
            read_all(&s, &key, len as u64).expect("read"),
            plain,
            "{len}"
        );
    }
}

#[tokio::test]
async fn the_body_is_the_standard_stream_construction() {
    // An independent sequential DecryptorBE32 over the stored segments yields the plaintext:
    // the format is aead's STREAM, not a home-made mode.
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path(), ("k1", &K1), &[]);
    let plain = data(3 * SEGMENT + 5);
    put(&s, "a", &plain).await;
    let raw = std::fs::read(dir.path().join("a")).expect("raw");
    let header: [u8; HEADER_LEN] = raw[..HEADER_LEN].try_into().expect("header");
    let (_, data_key) = Header::open(header, &s.keys, "a").expect("open");
    let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*data_key));
    let prefix: [u8; 7] = raw[101..108].try_into().expect("prefix");
    let nonce = prefix.into();
    let mut dec = DecryptorBE32::from_aead(cipher, &nonce);
    let mut aad = header.to_vec();
    aad.extend_from_slice(b"a");
    let chunks: Vec<&[u8]> = raw[HEADER_LEN..].chunks(SEGMENT + TAG).collect();
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let payload = Payload { msg: c, aad: &aad };
        if i + 1 == chunks.len() {
            out.extend(dec.decrypt_last(payload).expect("last"));
            break;
        }
        out.extend(dec.decrypt_next(payload).expect("next"));
    }
    assert_eq!(out, plain);
}

#[tokio::test]
async fn objects_sealed_by_aead_s_own_stream_encryptor_open() {
    // The reverse direction: a body written by RustCrypto's EncryptorBE32 (as objects spooled
    // before the segments moved to ring were) reads back through the store.
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path(), ("k1", &K1), &[]);
    let plain = data(2 * SEGMENT + 77);
    put(&s, "b", &plain).await;
    let mut raw = std::fs::read(dir.path().join("b")).expect("raw");
    let header: [u8; HEADER_LEN] = raw[..HEADER_LEN].try_into().expect("header");
    let (_, data_key) = Header::open(header, &s.keys, "b").expect("open");
    let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*data_key));
    let prefix: [u8; 7] = raw[101..108].try_into().expect("prefix");
    let mut enc = EncryptorBE32::from_aead(cipher, &prefix.into());
    let mut aad = header.to_vec();
    aad.extend_from_slice(b"b");
    raw.truncate(HEADER_LEN);
    let chunks: Vec<&[u8]> = plain.chunks(SEGMENT).collect();
    for (i, c) in chunks.iter().enumerate() {
        let payload = Payload { msg: c, aad: &aad };
        if i + 1 == chunks.len() {
            raw.extend(enc.encrypt_last(payload).expect("last"));
            break;
        }
        raw.extend(enc.encrypt_next(payload).expect("next"));
    }
    std::fs::write(dir.path().join("b"), &raw).expect("rewrite");
    assert_eq!(
        get(&s, "b", 0, plain.len() as u64).await.expect("get"),
        plain
    );
}

#[tokio::test]
async fn ranged_reads_start_anywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path(), ("k1", &K1), &[]);
    let len = 3 * SEGMENT + 17;
    let plain = data(len);
    put(&s, "r", &plain).await;
    for from in [
        1,
        SEGMENT - 1,
        SEGMENT,
        SEGMENT + 1,
        2 * SEGMENT,
        3 * SEGMENT,
        len - 1,
        len,
    ] {
        let got = get(&s, "r", from as u64, len as u64).await.expect("get");
        assert_eq!(got, &plain[from..], "from {from}");
    }
    // An exact multiple of the segment size: the last segment is full.
    let exact = data(2 * SEGMENT);
    put(&s, "x", &exact).await;
    for from in [SEGMENT, 2 * SEGMENT - 1, 2 * SEGMENT] {
        let got = get(&s, "x", from as u64, exact.len() as u64)
            .await
            .expect("get");
        assert_eq!(got, &exact[from..], "from {from}");
    }
    // Blocking reads seek across segments in both directions.
    let mut r = s.open_blocking("r", len as u64).expect("open");
    for at in [2 * SEGMENT + 3, 5, SEGMENT - 2, len - 3] {
        r.seek(SeekFrom::Start(at as u64)).expect("seek");
        let mut buf = [0u8; 6];
        let n = r.read(&mut buf).expect("read");
        assert!(n > 0);
        assert_eq!(&buf[..n], &plain[at..at + n], "at {at}");
    }
    assert_eq!(r.seek(SeekFrom::End(0)).expect("end"), len as u64);
    assert_eq!(r.read(&mut [0u8; 4]).expect("eof"), 0);
}

#[tokio::test]
async fn truncation_extension_and_flipped_bytes_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path(), ("k1", &K1), &[]);
    let len = 3 * SEGMENT + 100;
    let plain = data(len);
    put(&s, "orig", &plain).await;
    let raw = std::fs::read(dir.path().join("orig")).expect("raw");
    let boundary = HEADER_LEN + 2 * (SEGMENT + TAG);
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("cut at a segment boundary", raw[..boundary].to_vec()),
        ("cut mid-segment", raw[..boundary + 500].to_vec()),
        ("cut inside the header", raw[..50].to_vec()),
        ("one byte appended", [raw.as_slice(), b"x"].concat()),
        ("empty", Vec::new()),
    ];
    for at in [
        3,
        60,
        104,
        110,
        HEADER_LEN + 10,
        boundary + 7,
        raw.len() - 1,
    ] {
        let mut flipped = raw.clone();
        flipped[at] ^= 0x01;
        cases.push(("flipped", flipped));
    }
    // Segments swapped: each authenticates alone, but not at the other's position.
    let mut swapped = raw.clone();
    let (a, b) = (HEADER_LEN, HEADER_LEN + SEGMENT + TAG);
    let first = raw[a..b].to_vec();
    swapped[a..b].copy_from_slice(&raw[b..b + SEGMENT + TAG]);
    swapped[b..b + SEGMENT + TAG].copy_from_slice(&first);
    cases.push(("segments swapped", swapped));
    for (what, bytes) in cases {
        std::fs::write(dir.path().join("bad"), &bytes).expect("write");
        assert_integrity(get(&s, "bad", 0, len as u64).await, what);
        assert_integrity(read_all(&s, "bad", len as u64), what);
    }
    // The intact object under another key (copied over it) does not open either: each
    // segment authenticates the key it was written under.
    std::fs::write(dir.path().join("bad"), &raw).expect("write");
    assert_integrity(get(&s, "bad", 0, len as u64).await, "copied");
    // And a length other than the recorded one is refused.
    assert_integrity(get(&s, "orig", 0, len as u64 - 1).await, "shorter record");
    assert_integrity(get(&s, "orig", 0, len as u64 + 1).await, "longer record");
    assert_integrity(read_all(&s, "orig", len as u64 + 1), "longer record");
}

#[tokio::test]
async fn a_ranged_read_of_an_altered_tail_fails_without_yielding_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path(), ("k1", &K1), &[]);
    let len = 2 * SEGMENT + 9;
    put(&s, "t", &data(len)).await;
    let path = dir.path().join("t");
    let mut raw = std::fs::read(&path).expect("raw");
    let last = raw.len() - 3;
    raw[last] ^= 0x80;
    std::fs::write(&path, &raw).expect("write");
    // The first segment still opens; the stream then fails before yielding the last.
    let mut stream = s.get("t", 0, len as u64).await.expect("get");
    let mut ok = 0;
    let mut failed = false;
    while let Some(b) = stream.next().await {
        match b {
            Ok(b) => ok += b.len(),
            Err(e) => {
                assert!(is_integrity_failure(&e), "{e}");
                failed = true;
                break;
            }
        }
    }
    assert!(failed && ok <= 2 * SEGMENT, "{ok}");
}

#[tokio::test]
async fn keys_rotate_and_a_wrong_key_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = store(dir.path(), ("k1", &K1), &[]);
    let plain = data(SEGMENT + 3);
    put(&old, "a", &plain).await;
    // k2 current, k1 previous: old objects open, new ones are sealed with k2.
    let rotated = store(dir.path(), ("k2", &K2), &[("k1", &K1)]);
    assert_eq!(
        get(&rotated, "a", 0, plain.len() as u64)
            .await
            .expect("old"),
        plain
    );
    put(&rotated, "b", &plain).await;
    assert_eq!(rotated.key_id_of("b").await.expect("id"), "k2");
    assert_eq!(rotated.key_id_of("a").await.expect("id"), "k1");
    // Without k1 the old object names the missing key (and is not an integrity failure).
    let only_new = store(dir.path(), ("k2", &K2), &[]);
    let e = get(&only_new, "a", 0, plain.len() as u64)
        .await
        .expect_err("unknown");
    assert!(!is_integrity_failure(&e));
    assert!(e.to_string().contains("`k1`"), "{e}");
    assert_eq!(
        get(&only_new, "b", 0, plain.len() as u64)
            .await
            .expect("new"),
        plain
    );
    // The right id with the wrong bytes: the data key does not unwrap.
    let wrong = store(dir.path(), ("k1", &K2), &[]);
    assert_integrity(get(&wrong, "a", 0, plain.len() as u64).await, "wrong key");
    assert_integrity(read_all(&wrong, "a", plain.len() as u64), "wrong key");
}

#[test]
fn keys_and_ids_are_checked_and_never_echoed() {
    assert!(parse_hex_key(&"ab".repeat(32)).is_ok());
    assert!(parse_hex_key(&format!("  {}\n", "AB".repeat(32))).is_ok());
    for bad in [
        "",
        "ab",
        &"ab".repeat(31),
        &"ab".repeat(33),
        &"zz".repeat(32),
    ] {
        assert_eq!(parse_hex_key(bad).err(), Some(KeyError::NotHex32), "{bad}");
    }
    for bad in ["", "k 1", "k/1", &"k".repeat(33)] {
        assert_eq!(check_key_id(bad), Err(KeyError::BadId), "{bad}");
    }
    assert!(matches!(
        Keyring::new(("k1", &K1), &[("k1", &K2)]),
        Err(KeyError::DuplicateId(_))
    ));
    let ring = Keyring::new(("k2", &K2), &[("k1", &K1)]).expect("ring");
    let shown = format!("{ring:?}");
    assert!(shown.contains("k2") && !shown.contains("34"), "{shown}");
}

#[tokio::test]
async fn a_spooled_document_remembers_an_integrity_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sealed = Arc::new(store(dir.path(), ("k1", &K1), &[]));
    let spool = crate::spool::SpoolDir::with_store(sealed.clone(), 0);
    let plain = data(SEGMENT * 2);
    let mut pieces = Vec::new();
    for (i, part) in plain.chunks(SEGMENT + 7).enumerate() {
        let key = format!("p{i}");
        put(&sealed, &key, part).await;
        pieces.push(crate::spool::Piece {
            key,
            len: part.len() as u64,
        });
    }
    let doc = spool.pieces(pieces);
    let mut read = Vec::new();
    let mut s = doc.stream();
    while let Some(b) = s.next().await {
        read.extend_from_slice(&b.expect("intact"));
    }
    assert_eq!(read, plain);
    assert!(!doc.failed_integrity());
    // Alter the second piece: the stream fails, and so does the blocking reader.
    let path = dir.path().join("p1");
    let mut raw = std::fs::read(&path).expect("raw");
    raw[HEADER_LEN + 1] ^= 1;
    std::fs::write(&path, raw).expect("write");
    let mut s = doc.stream_from(10);
    let mut failed = false;
    while let Some(b) = s.next().await {
        if b.is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed && doc.failed_integrity());
    let fresh = spool.pieces(doc.pieces_list().expect("pieces"));
    let mut r = fresh.blocking_reader().expect("open first piece");
    assert!(r.read_to_end(&mut Vec::new()).is_err());
    assert!(fresh.failed_integrity());
}

/// A store that counts the reads made of it.
#[derive(Debug)]
struct CountingReads {
    inner: LocalStore,
    reads: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl ObjectStore for CountingReads {
    async fn put(&self, key: &str) -> io::Result<Box<dyn ObjectWriter>> {
        self.inner.put(key).await
    }

    async fn get(&self, key: &str, from: u64, len: u64) -> io::Result<ByteStream> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.get(key, from, len).await
    }

    fn open_blocking(&self, key: &str, len: u64) -> io::Result<Box<dyn ReadSeek>> {
        self.inner.open_blocking(key, len)
    }

    async fn delete(&self, key: &str) -> io::Result<()> {
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> io::Result<Vec<crate::store::ObjectInfo>> {
        self.inner.list(prefix).await
    }
}

/// A small document (most KYC uploads) is read back header and body at once — one read of
/// the store, not two — and that read is as strict as a streamed one: a cut, an extension
/// (by a byte or by far more than the read asks for), a flipped bit or a wrong recorded
/// length all fail.
#[tokio::test]
async fn a_small_object_is_read_in_one_go_and_checked_as_strictly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = EncryptedStore::new(
        CountingReads {
            inner: LocalStore::new(dir.path()).expect("store"),
            reads: Default::default(),
        },
        Keyring::new(("k1", &K1), &[]).expect("keys"),
    );
    let reads = |s: &EncryptedStore<CountingReads>| {
        s.inner.reads.load(std::sync::atomic::Ordering::Relaxed)
    };
    for len in [0, 1, 10_240, WHOLE_AT_ONCE as usize] {
        let plain = data(len);
        let key = format!("small-{len}");
        let mut w = s.put(&key).await.expect("put");
        w.write(Bytes::copy_from_slice(&plain))
            .await
            .expect("write");
        w.commit().await.expect("commit");
        let before = reads(&s);
        assert_eq!(
            get(&s, &key, 0, len as u64).await.expect("get"),
            plain,
            "{len}"
        );
        assert_eq!(reads(&s) - before, 1, "{len}: reads of the store");
    }
    let len = 10_240;
    let raw = std::fs::read(dir.path().join(format!("small-{len}"))).expect("raw");
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("cut inside the header", raw[..50].to_vec()),
        ("cut after the header", raw[..HEADER_LEN].to_vec()),
        ("cut mid-body", raw[..HEADER_LEN + 500].to_vec()),
        ("last byte cut", raw[..raw.len() - 1].to_vec()),
        ("one byte appended", [raw.as_slice(), b"x"].concat()),
        (
            "far more appended",
            [raw.as_slice(), &[7u8; 100_000][..]].concat(),
        ),
        ("empty", Vec::new()),
    ];
    for at in [3, 60, 110, HEADER_LEN + 10, raw.len() - 1] {
        let mut flipped = raw.clone();
        flipped[at] ^= 0x01;
        cases.push(("flipped", flipped));
    }
    for (what, bytes) in cases {
        std::fs::write(dir.path().join("bad"), &bytes).expect("write");
        assert_integrity(get(&s, "bad", 0, len as u64).await, what);
    }
    let key = format!("small-{len}");
    assert_integrity(get(&s, &key, 0, len as u64 - 1).await, "shorter record");
    assert_integrity(get(&s, &key, 0, len as u64 + 1).await, "longer record");
}

/// A store that records the length of every write made to it.
#[derive(Debug, Default)]
struct RecordingWrites {
    lens: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
}

struct RecordingWriter {
    lens: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
}

#[async_trait]
impl ObjectWriter for RecordingWriter {
    async fn write(&mut self, block: Bytes) -> io::Result<()> {
        self.lens.lock().expect("lens").push(block.len());
        Ok(())
    }

    async fn commit(self: Box<Self>) -> io::Result<()> {
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for RecordingWrites {
    async fn put(&self, _key: &str) -> io::Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(RecordingWriter {
            lens: self.lens.clone(),
        }))
    }

    async fn get(&self, _key: &str, _from: u64, _len: u64) -> io::Result<ByteStream> {
        Err(io::Error::other("write-only"))
    }

    fn open_blocking(&self, _key: &str, _len: u64) -> io::Result<Box<dyn ReadSeek>> {
        Err(io::Error::other("write-only"))
    }

    async fn delete(&self, _key: &str) -> io::Result<()> {
        Ok(())
    }

    async fn list(&self, _prefix: &str) -> io::Result<Vec<crate::store::ObjectInfo>> {
        Ok(Vec::new())
    }
}

/// Regression: a 256 KiB block is four segments, and all four were sealed before the batch
/// was checked, so every batch outgrew its pooled buffer (a reallocation and a copy per
/// block, and fresh memory each time: the burst's peak and most of its page faults). Each
/// batch now goes out once it crosses `WRITE_BATCH`, whatever the blocks' size.
#[tokio::test]
async fn sealed_batches_fit_their_pooled_buffer_whatever_the_block_size() {
    for block in [crate::spool::BLOCK, 3 * SEGMENT + 5, 1000] {
        let s = EncryptedStore::new(
            RecordingWrites::default(),
            Keyring::new(("k1", &K1), &[]).expect("keys"),
        );
        let plain = data(2 * 1024 * 1024 + 77);
        let mut w = s.put("doc").await.expect("put");
        for chunk in plain.chunks(block) {
            w.write(Bytes::copy_from_slice(chunk)).await.expect("write");
        }
        w.commit().await.expect("commit");
        let lens = s.inner.lens.lock().expect("lens").clone();
        let total: usize = lens.iter().sum();
        assert!(
            total > plain.len(),
            "{block}: everything sealed and written"
        );
        assert_eq!(lens[0], HEADER_LEN, "{block}: the header goes first");
        let (last, batches) = lens[1..].split_last().expect("writes");
        assert!(*last <= WRITE_BATCH + SEGMENT + TAG, "{block}: last {last}");
        for len in batches {
            assert!(
                (WRITE_BATCH..=WRITE_BATCH + SEGMENT + TAG).contains(len),
                "{block}: a batch of {len}"
            );
            assert!(*len <= crate::blocks::CAPACITY, "{block}: {len}");
        }
    }
}

/// A store that hands its bytes over in pieces of awkward sizes (1 byte, a segment and a tag
/// and one more, …), as a network store may.
#[derive(Debug)]
struct RaggedReads(LocalStore);

#[async_trait]
impl ObjectStore for RaggedReads {
    async fn put(&self, key: &str) -> io::Result<Box<dyn ObjectWriter>> {
        self.0.put(key).await
    }

    async fn get(&self, key: &str, from: u64, len: u64) -> io::Result<ByteStream> {
        let mut whole = Vec::new();
        let mut s = self.0.get(key, from, len).await?;
        while let Some(b) = s.next().await {
            whole.extend_from_slice(&b?);
        }
        let sizes = [1, 7, SEGMENT + TAG + 1, 3, 200_000, SEGMENT - 1];
        let mut pieces = Vec::new();
        let mut rest = Bytes::from(whole);
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            pieces.push(Ok(rest.split_to((*size).min(rest.len()))));
        }
        Ok(Box::pin(futures_util::stream::iter(pieces)))
    }

    fn open_blocking(&self, key: &str, len: u64) -> io::Result<Box<dyn ReadSeek>> {
        self.0.open_blocking(key, len)
    }

    async fn delete(&self, key: &str) -> io::Result<()> {
        self.0.delete(key).await
    }

    async fn list(&self, prefix: &str) -> io::Result<Vec<crate::store::ObjectInfo>> {
        self.0.list(prefix).await
    }
}

/// Segments are gathered across the pieces a store hands over, whatever their sizes; a cut
/// is still noticed.
#[tokio::test]
async fn segments_are_gathered_across_ragged_pieces() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = EncryptedStore::new(
        RaggedReads(LocalStore::new(dir.path()).expect("store")),
        Keyring::new(("k1", &K1), &[]).expect("keys"),
    );
    let len = 3 * SEGMENT + 12_345;
    let plain = data(len);
    let mut w = s.put("ragged").await.expect("put");
    w.write(Bytes::copy_from_slice(&plain))
        .await
        .expect("write");
    w.commit().await.expect("commit");
    assert_eq!(get(&s, "ragged", 0, len as u64).await.expect("get"), plain);
    let from = SEGMENT as u64 + 3;
    assert_eq!(
        get(&s, "ragged", from, len as u64).await.expect("ranged"),
        &plain[from as usize..]
    );
    let path = dir.path().join("ragged");
    let raw = std::fs::read(&path).expect("raw");
    std::fs::write(&path, &raw[..raw.len() - 1]).expect("cut");
    assert_integrity(get(&s, "ragged", 0, len as u64).await, "cut by a byte");
}
