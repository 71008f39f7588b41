//! Spool encryption at rest: sealing (AES-256-GCM STREAM, 64 KiB segments) and opening
//! 64 MiB through `EncryptedStore`, over an in-memory store so only the crypto and the
//! buffering are measured, next to the same store unencrypted.
//! Run: `cargo bench -p docgate-benches --bench seal`; results in docs/encryption.md.

use std::{
    collections::HashMap,
    io,
    sync::{Arc, Mutex},
};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use docgate_core::{
    seal::{EncryptedStore, Keyring},
    spool::BLOCK,
    store::{ByteStream, ObjectInfo, ObjectStore, ObjectWriter, ReadSeek},
};
use futures_util::StreamExt;

const SIZE: usize = 64 * 1024 * 1024;

/// Objects in memory: the baseline costs a copy, nothing more.
#[derive(Debug, Default, Clone)]
struct MemStore(Arc<Mutex<HashMap<String, Bytes>>>);

struct MemWriter {
    store: MemStore,
    key: String,
    buf: BytesMut,
}

#[async_trait::async_trait]
impl ObjectWriter for MemWriter {
    async fn write(&mut self, block: Bytes) -> io::Result<()> {
        self.buf.extend_from_slice(&block);
        Ok(())
    }
    async fn commit(self: Box<Self>) -> io::Result<()> {
        let mut map = self
            .store
            .0
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        map.insert(self.key, self.buf.freeze());
        Ok(())
    }
}

impl MemStore {
    fn object(&self, key: &str) -> io::Result<Bytes> {
        let map = self.0.lock().map_err(|_| io::Error::other("poisoned"))?;
        map.get(key)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
}

#[async_trait::async_trait]
impl ObjectStore for MemStore {
    async fn put(&self, key: &str) -> io::Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(MemWriter {
            store: self.clone(),
            key: key.to_owned(),
            buf: BytesMut::with_capacity(SIZE + SIZE / 100),
        }))
    }
    async fn get(&self, key: &str, from: u64, len: u64) -> io::Result<ByteStream> {
        let all = self.object(key)?;
        let start = (from as usize).min(all.len());
        let end = (len as usize).saturating_add(1).min(all.len());
        let bytes = all.slice(start..end.max(start));
        let blocks: Vec<io::Result<Bytes>> = (0..bytes.len())
            .step_by(BLOCK)
            .map(|s| Ok(bytes.slice(s..bytes.len().min(s + BLOCK))))
            .collect();
        Ok(Box::pin(futures_util::stream::iter(blocks)))
    }
    fn open_blocking(&self, key: &str, _len: u64) -> io::Result<Box<dyn ReadSeek>> {
        Ok(Box::new(io::Cursor::new(self.object(key)?)))
    }
    async fn delete(&self, key: &str) -> io::Result<()> {
        let mut map = self.0.lock().map_err(|_| io::Error::other("poisoned"))?;
        map.remove(key);
        Ok(())
    }
    async fn list(&self, _prefix: &str) -> io::Result<Vec<ObjectInfo>> {
        Ok(Vec::new())
    }
}

fn data() -> Vec<Bytes> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let buf: Vec<u8> = (0..SIZE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let all = Bytes::from(buf);
    (0..SIZE)
        .step_by(BLOCK)
        .map(|i| all.slice(i..(i + BLOCK).min(SIZE)))
        .collect()
}

async fn write(store: &dyn ObjectStore, blocks: &[Bytes]) {
    let mut w = store.put("doc").await.expect("put");
    for block in blocks {
        w.write(block.clone()).await.expect("write");
    }
    w.commit().await.expect("commit");
}

async fn read(store: &dyn ObjectStore) -> usize {
    let mut s = store.get("doc", 0, SIZE as u64).await.expect("get");
    let mut n = 0;
    while let Some(b) = s.next().await {
        n += b.expect("read").len();
    }
    assert_eq!(n, SIZE);
    n
}

fn bench(c: &mut Criterion) {
    let blocks = data();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let plain = MemStore::default();
    let keys = Keyring::new(("bench", &[7u8; 32]), &[]).expect("keys");
    let sealed = EncryptedStore::new(MemStore::default(), keys);
    rt.block_on(write(&plain, &blocks));
    rt.block_on(write(&sealed, &blocks));
    let mut g = c.benchmark_group("spool_64MiB");
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.sample_size(10);
    g.bench_function("plain/write", |b| {
        b.to_async(&rt).iter(|| write(&plain, &blocks))
    });
    g.bench_function("plain/read", |b| b.to_async(&rt).iter(|| read(&plain)));
    g.bench_function("sealed/write (encrypt)", |b| {
        b.to_async(&rt).iter(|| write(&sealed, &blocks))
    });
    g.bench_function("sealed/read (decrypt)", |b| {
        b.to_async(&rt).iter(|| read(&sealed))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
