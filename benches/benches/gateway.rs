//! End to end through a running gateway: `PUT /v1/uploads/taler` of an 8 MiB PDF, which the
//! gateway ingests (SHA-256 + SHA-512), spools, records in its SQLite ledger, signs and
//! streams to the in-process Taler emulator, which verifies and stores it. Each iteration
//! uploads a new document (the emulator would answer 412 to a repeat).

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use docgate_server::{sandbox, Gateway};

const SIZE: usize = 8 * 1024 * 1024;
const KEY: &str = "bench-key";

fn document(n: u64) -> Vec<u8> {
    let mut doc = format!("%PDF-1.7\n% {n}\n").into_bytes();
    let mut x: u64 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while doc.len() < SIZE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        doc.extend_from_slice(&x.to_le_bytes());
    }
    doc.truncate(SIZE);
    doc
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (gateway, _emulators) = rt.block_on(async {
        let (setup, emulators) = sandbox::setup(
            "127.0.0.1:0".parse().expect("addr"),
            dir.path(),
            Some(KEY.into()),
            docgate_providers::ALL,
        )
        .await
        .expect("sandbox");
        (Gateway::start(setup).await.expect("gateway"), emulators)
    });
    let url = format!(
        "{}/v1/uploads/taler?payto=payto://iban/DE89370400440532013000",
        gateway.url()
    );
    let client = reqwest::Client::new();
    let counter = Arc::new(AtomicU64::new(0));
    let mut g = c.benchmark_group("gateway_put_taler_8MiB");
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.sample_size(10);
    g.bench_function("delivered", |b| {
        b.to_async(&rt).iter_batched(
            || document(counter.fetch_add(1, Ordering::Relaxed)),
            |doc| {
                let req = client
                    .put(&url)
                    .bearer_auth(KEY)
                    .header("content-type", "application/pdf")
                    .body(doc);
                async move {
                    let res = req.send().await.expect("send");
                    assert_eq!(res.status(), 201);
                }
            },
            criterion::BatchSize::PerIteration,
        );
    });
    g.finish();
    rt.block_on(gateway.shutdown());
}

criterion_group!(benches, bench);
criterion_main!(benches);
