//! The spool's write path: a 1 MiB document streamed to disk in pipeline blocks and made
//! durable (file fsync, then the batched directory sync), as every upload past the memory
//! threshold is before it is acknowledged.
//!
//! - `write_sync_1MiB`: one document at a time (the fsync latency dominates).
//! - `write_sync_1MiB_x16_concurrent`: 16 at once, as under load: what the batched directory
//!   syncs and parallel file syncs buy.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use docgate_core::{spool::BLOCK, SpoolDir};

const SIZE: usize = 1024 * 1024;

async fn write_one(spool: &SpoolDir, n: u64, blocks: &[Bytes]) {
    let mut w = spool.writer(format!("bench-{n}"));
    for b in blocks {
        w.write(b.clone()).await.expect("write");
    }
    // Dropped at once: a temporary document is deleted with its last handle, so the bench
    // leaves nothing behind (the delete is part of what is measured, as for a refused
    // upload; an accepted one is persisted instead, which costs no more I/O).
    let spooled = w.finish().await.expect("finish");
    assert_eq!(spooled.len(), SIZE as u64);
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    // Threshold 0: every document goes to disk.
    let spool = SpoolDir::new(dir.path(), 0).expect("spool");
    let doc = Bytes::from(vec![0x5au8; SIZE]);
    let blocks: Vec<Bytes> = (0..SIZE)
        .step_by(BLOCK)
        .map(|at| doc.slice(at..(at + BLOCK).min(SIZE)))
        .collect();
    let n = AtomicU64::new(0);
    let mut g = c.benchmark_group("spool");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.bench_function("write_sync_1MiB", |b| {
        b.to_async(&rt)
            .iter(|| write_one(&spool, n.fetch_add(1, Ordering::Relaxed), &blocks));
    });
    g.throughput(Throughput::Bytes(16 * SIZE as u64));
    g.bench_function("write_sync_1MiB_x16_concurrent", |b| {
        b.to_async(&rt).iter(|| {
            let all =
                (0..16).map(|_| write_one(&spool, n.fetch_add(1, Ordering::Relaxed), &blocks));
            futures_util::future::join_all(all)
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
