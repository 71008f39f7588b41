//! A 64 MiB document through `ingest` (count, sniff, digests, spool to a file), arriving in
//! 64 KiB chunks as hyper delivers them. Compare with the digest bench: the difference is
//! the cost of moving bytes and writing the spool.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use docgate_core::{ingest, DigestSet, IngestRequest, MediaRange, Slots, SpoolDir, UploadPolicy};
use std::{convert::Infallible, time::Duration};

const SIZE: usize = 64 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

fn document() -> Vec<Bytes> {
    let mut doc = b"%PDF-1.7\n".to_vec();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    while doc.len() < SIZE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        doc.extend_from_slice(&x.to_le_bytes());
    }
    doc.truncate(SIZE);
    let all = Bytes::from(doc);
    (0..SIZE)
        .step_by(CHUNK)
        .map(|i| all.slice(i..(i + CHUNK).min(SIZE)))
        .collect()
}

fn policy(digests: DigestSet) -> UploadPolicy {
    UploadPolicy {
        min_document_bytes: 1,
        max_document_bytes: 128 * 1024 * 1024,
        max_request_bytes: 128 * 1024 * 1024,
        accepted: vec![MediaRange::parse("application/pdf").expect("range")],
        digests,
        slots: Slots::Free { max: 1 },
        zip: None,
        refuse_active_content: true,
    }
}

fn bench(c: &mut Criterion) {
    let chunks = document();
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = SpoolDir::new(dir.path(), 256 * 1024).expect("spool");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("ingest_64MiB_to_file_spool");
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(15));
    for (name, set) in [
        ("sha256", DigestSet::SHA256),
        (
            "sha256+sha512",
            DigestSet {
                sha512: true,
                md5: false,
            },
        ),
        ("all", DigestSet::ALL),
    ] {
        let p = policy(set);
        g.bench_with_input(BenchmarkId::from_parameter(name), &p, |b, p| {
            b.to_async(&rt).iter(|| async {
                let body =
                    futures_util::stream::iter(chunks.iter().cloned().map(Ok::<_, Infallible>));
                let req = IngestRequest {
                    slot: "file".into(),
                    filename: None,
                    declared_type: Some("application/pdf".into()),
                    policy: p,
                    max_bytes: p.max_document_bytes,
                    idle_timeout: Duration::from_secs(30),
                };
                let doc = ingest(body, req, &spool).await.expect("ingest");
                assert_eq!(doc.meta.size, SIZE as u64);
                doc // dropped here: the spool file is removed
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
