//! A 64 MiB document through `ingest` (count, sniff, digests, content scan, spool to a file), arriving in
//! 64 KiB chunks as hyper delivers them. Compare with the digest bench: the difference is
//! the cost of moving bytes and writing the spool.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use docgate_core::{ingest, DigestSet, IngestRequest, MediaRange, Slots, SpoolDir, UploadPolicy};
use std::{convert::Infallible, time::Duration};

const SIZE: usize = 64 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

fn random(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `%PDF-1.7` and random bytes: every byte goes through the PDF lexer.
fn random_pdf() -> Vec<u8> {
    let mut doc = b"%PDF-1.7\n".to_vec();
    doc.extend(random(SIZE - doc.len()));
    doc
}

/// A PDF of 256 KiB Flate image streams, as scanners write them.
fn image_pdf() -> Vec<u8> {
    use std::io::Write;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(&random(256 * 1024)).expect("deflate");
    let image = z.finish().expect("deflate");
    let mut doc = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    for n in 1.. {
        let dict = format!(
            "{n} 0 obj\n<< /Type /XObject /Subtype /Image /Filter /FlateDecode /Length {} >>\nstream\n",
            image.len()
        );
        if doc.len() + dict.len() + image.len() + 64 > SIZE {
            break;
        }
        doc.extend_from_slice(dict.as_bytes());
        doc.extend_from_slice(&image);
        doc.extend_from_slice(b"\nendstream\nendobj\n");
    }
    let trailer = b"trailer\n<< /Size 2 >>\n%%EOF\n";
    doc.resize(SIZE - trailer.len(), b' ');
    doc.extend_from_slice(trailer);
    doc
}

fn document(doc: Vec<u8>) -> Vec<Bytes> {
    assert_eq!(doc.len(), SIZE);
    let all = Bytes::from(doc);
    (0..SIZE)
        .step_by(CHUNK)
        .map(|i| all.slice(i..(i + CHUNK).min(SIZE)))
        .collect()
}

fn policy(digests: DigestSet, refuse_active_content: bool) -> UploadPolicy {
    UploadPolicy {
        min_document_bytes: 1,
        max_document_bytes: 128 * 1024 * 1024,
        max_request_bytes: 128 * 1024 * 1024,
        accepted: vec![MediaRange::parse("application/pdf").expect("range")],
        digests,
        slots: Slots::Free { max: 1 },
        zip: None,
        refuse_active_content,
    }
}

fn bench(c: &mut Criterion) {
    let random = document(random_pdf());
    let images = document(image_pdf());
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
    // The content scanner rides in the digest lanes; `unscanned` shows what it costs. The
    // random "PDF" is lexed byte for byte; a PDF of image streams is mostly skipped.
    for (name, set, scanned, chunks) in [
        ("sha256", DigestSet::SHA256, true, &random),
        ("sha256 unscanned", DigestSet::SHA256, false, &random),
        ("sha256 image-pdf", DigestSet::SHA256, true, &images),
        (
            "sha256 image-pdf unscanned",
            DigestSet::SHA256,
            false,
            &images,
        ),
        (
            "sha256+sha512",
            DigestSet {
                sha512: true,
                md5: false,
            },
            true,
            &random,
        ),
        ("all", DigestSet::ALL, true, &random),
        ("all unscanned", DigestSet::ALL, false, &random),
        ("all image-pdf", DigestSet::ALL, true, &images),
    ] {
        let p = policy(set, scanned);
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
