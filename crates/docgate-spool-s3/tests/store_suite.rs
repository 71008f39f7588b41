//! One suite for every spool backend: the local directory and S3 (a real S3 server, s3s +
//! s3s-fs, checking real SigV4), each with encryption off and on. Whatever the spool promises
//! (committed objects read back exactly, from any offset, blocking and streaming; uncommitted
//! writers leave nothing; listing by prefix; missing objects are `NotFound`; a flipped byte
//! never reads back as a document) must hold for all four.

use std::{
    io::{Read, Seek, SeekFrom},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use docgate_core::{
    seal::{EncryptedStore, Keyring},
    store::ObjectStore,
    LocalStore, Secret,
};
use docgate_ost::emulator::{S3Server, S3Settings as ServerSettings};
use docgate_spool_s3::{S3Location, S3Settings, S3Store, PART_SIZE};
use futures_util::StreamExt;

const BUCKET: &str = "docgate-spool";
const ACCESS: &str = "AKIASPOOLTEST";
const SECRET: &str = "spool-test-secret-key";
const MARKER: &[u8] = b"PASSPORT-NUMBER-X1234567";

/// A backend under test, with where its bytes end up on disk (to look for plaintext and to
/// damage an object).
struct Backend {
    name: &'static str,
    store: Arc<dyn ObjectStore>,
    /// The directory the objects' bytes live under, and the key prefix added on disk.
    disk: PathBuf,
    _server: Option<S3Server>,
    _dir: tempfile::TempDir,
}

fn keyring() -> Keyring {
    Keyring::new(("k1", &[7u8; 32]), &[]).expect("keyring")
}

async fn s3(dir: &tempfile::TempDir) -> (S3Server, S3Store, PathBuf) {
    let root = dir.path().join("s3");
    let server = S3Server::start(&ServerSettings {
        listen: "127.0.0.1:0".parse().expect("addr"),
        root: root.clone(),
        bucket: BUCKET.into(),
        access_key: ACCESS.into(),
        secret_key: SECRET.into(),
        max_post_bytes: 1 << 20,
        max_url_lifetime: Duration::from_secs(900),
    })
    .await
    .expect("s3 server");
    let mut settings = S3Settings::new(
        S3Location::parse(&format!("s3://{BUCKET}/spool/prefix")).expect("location"),
        "us-east-1",
    );
    settings.endpoint = Some(server.url.clone());
    settings.path_style = true;
    settings.access_key_id = Some(Secret::new(ACCESS));
    settings.secret_access_key = Some(Secret::new(SECRET));
    let store = S3Store::new(&settings).expect("store");
    store.probe().await.expect("the bucket answers");
    (server, store, root.join(BUCKET).join("spool/prefix"))
}

async fn backends() -> Vec<Backend> {
    let mut all = Vec::new();
    for sealed in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let local = LocalStore::new(dir.path().join("spool")).expect("local");
        let store: Arc<dyn ObjectStore> = if sealed {
            Arc::new(EncryptedStore::new(local, keyring()))
        } else {
            Arc::new(local)
        };
        all.push(Backend {
            name: if sealed { "local, sealed" } else { "local" },
            store,
            disk: dir.path().join("spool"),
            _server: None,
            _dir: dir,
        });

        let dir = tempfile::tempdir().expect("tempdir");
        let (server, s3, disk) = s3(&dir).await;
        let store: Arc<dyn ObjectStore> = if sealed {
            Arc::new(EncryptedStore::new(s3, keyring()))
        } else {
            Arc::new(s3)
        };
        all.push(Backend {
            name: if sealed { "s3, sealed" } else { "s3" },
            store,
            disk,
            _server: Some(server),
            _dir: dir,
        });
    }
    all
}

/// `len` bytes, different at every offset, with the marker near the start.
fn document(len: usize) -> Vec<u8> {
    let mut doc: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    doc[100..100 + MARKER.len()].copy_from_slice(MARKER);
    doc
}

async fn put(store: &dyn ObjectStore, key: &str, data: &[u8]) {
    let mut w = store.put(key).await.expect("put");
    // Odd-sized blocks, so part boundaries and segment boundaries fall mid-block.
    for block in data.chunks(300_007) {
        w.write(Bytes::copy_from_slice(block)).await.expect("write");
    }
    w.commit().await.expect("commit");
}

async fn read(store: &dyn ObjectStore, key: &str, from: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut stream = store.get(key, from, len).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_objects_read_back_exactly_whole_from_an_offset_and_blocking() {
    // Past two S3 parts, so the multipart path and its last short part are both used.
    let doc = document(2 * PART_SIZE + 123_457);
    for b in backends().await {
        let store = b.store.as_ref();
        put(store, "uploads/u1/front", &doc).await;
        let whole = read(store, "uploads/u1/front", 0, doc.len() as u64)
            .await
            .expect("read");
        assert!(whole == doc, "{}: read back whole", b.name);
        let from = PART_SIZE as u64 - 10;
        let tail = read(store, "uploads/u1/front", from, doc.len() as u64)
            .await
            .expect("read from an offset");
        assert!(
            tail[..] == doc[from as usize..],
            "{}: from an offset just before a part boundary",
            b.name
        );

        let blocking_store = b.store.clone();
        let len = doc.len() as u64;
        let expected = doc.clone();
        let name = b.name;
        tokio::task::spawn_blocking(move || {
            let mut r = blocking_store
                .open_blocking("uploads/u1/front", len)
                .expect("open");
            r.seek(SeekFrom::End(-1000)).expect("seek");
            let mut end = Vec::new();
            r.read_to_end(&mut end).expect("read");
            assert!(end[..] == expected[expected.len() - 1000..], "{name}: end");
            r.seek(SeekFrom::Start(50)).expect("seek");
            let mut some = [0u8; 5000];
            r.read_exact(&mut some).expect("read");
            assert!(some[..] == expected[50..5050], "{name}: after a seek back");
        })
        .await
        .expect("blocking reader");

        let small = document(1000);
        put(store, "uploads/u1/back", &small).await;
        put(store, "uploads/u2/front", b"").await;
        assert_eq!(
            read(store, "uploads/u2/front", 0, 0).await.expect("empty"),
            b"",
            "{}",
            b.name
        );
        let mut listed: Vec<String> = store
            .list("uploads/u1/")
            .await
            .expect("list")
            .into_iter()
            .map(|o| o.key)
            .collect();
        listed.sort();
        assert_eq!(
            listed,
            ["uploads/u1/back", "uploads/u1/front"],
            "{}: listing by prefix names keys as written",
            b.name
        );

        store.delete("uploads/u1/back").await.expect("delete");
        store
            .delete("uploads/u1/back")
            .await
            .expect("deleting a missing object is not an error");
        let gone = read(store, "uploads/u1/back", 0, 1000)
            .await
            .expect_err("deleted");
        assert_eq!(
            gone.kind(),
            std::io::ErrorKind::NotFound,
            "{}: {gone}",
            b.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncommitted_writer_leaves_nothing_to_list_or_read() {
    let doc = document(PART_SIZE + 1000);
    for b in backends().await {
        let store = b.store.as_ref();
        {
            let mut w = store.put("uploads/u3/front").await.expect("put");
            w.write(Bytes::from(doc.clone())).await.expect("write");
            // dropped: the client went away before the body ended
        }
        assert!(
            store.list("uploads/u3/").await.expect("list").is_empty(),
            "{}: nothing listed",
            b.name
        );
        assert!(read(store, "uploads/u3/front", 0, 10).await.is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_or_altered_object_never_reads_back_as_the_document() {
    let doc = document(700_000);
    for b in backends().await {
        let store = b.store.as_ref();
        put(store, "uploads/u4/front", &doc).await;
        // Asking for more than is stored (a record that outlived a truncation) fails.
        let stored = store.list("uploads/u4/").await.expect("list")[0].size;
        let short = read(store, "uploads/u4/front", 0, doc.len() as u64 + 10).await;
        assert!(
            short.is_err() || short.is_ok_and(|r| r.len() != doc.len() + 10),
            "{}: a read past the end never yields the recorded length",
            b.name
        );

        let sealed = b.name.ends_with("sealed");
        let on_disk = files_under(&b.disk);
        let plaintext_seen = on_disk.iter().any(|p| {
            std::fs::read(p)
                .map(|bytes| bytes.windows(MARKER.len()).any(|w| w == MARKER))
                .unwrap_or(false)
        });
        assert_eq!(
            plaintext_seen, !sealed,
            "{}: the marker is on disk exactly when the spool is not sealed",
            b.name
        );
        if sealed {
            assert!(stored > doc.len() as u64, "sealing adds tags and a header");
            let file = on_disk
                .iter()
                .find(|p| p.ends_with("uploads/u4/front"))
                .expect("the object's file");
            let mut bytes = std::fs::read(file).expect("read");
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x01;
            std::fs::write(file, bytes).expect("write");
            let altered = read(store, "uploads/u4/front", 0, doc.len() as u64).await;
            assert!(
                altered.is_err_and(|e| docgate_core::seal::is_integrity_failure(&e)),
                "{}: a flipped byte is an integrity failure",
                b.name
            );
        }
    }
}
