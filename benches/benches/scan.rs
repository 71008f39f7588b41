//! The content scanner alone, on one thread, over 64 MiB documents fed in 256 KiB blocks as
//! the ingest pipeline feeds it. Compare with the digest bench: SHA-256 ≈ 1.4 GB/s per core,
//! and the scanner shares a lane (a core) with the digests.
//!
//! - `jpeg`: a baseline JPEG whose scan is 64 MiB of entropy-coded data;
//! - `pdf_images`: a PDF of 256 KiB Flate image streams (the usual scanned document);
//! - `pdf_object_streams`: a PDF of compressed object streams holding 60 MiB of objects, all
//!   inflated and lexed (throughput counted in document bytes, a few MiB);
//! - `pdf_syntax`: 64 MiB of objects without streams, dictionaries of names, numbers and
//!   strings: every byte goes through the lexer (the worst case: nothing to skip);
//! - `pdf_random_body`: `%PDF-` then 64 MiB of random bytes (the `ingest` bench's document).

use std::io::Write;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use docgate_core::{spool::BLOCK, ContentScan};

const SIZE: usize = 64 * 1024 * 1024;

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn segment(code: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0xFF, code];
    v.extend_from_slice(
        &u16::try_from(payload.len() + 2)
            .expect("short")
            .to_be_bytes(),
    );
    v.extend_from_slice(payload);
    v
}

fn jpeg() -> Vec<u8> {
    let mut v = vec![0xFF, 0xD8];
    v.extend(segment(0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"));
    v.extend(segment(0xDB, &[1; 65]));
    v.extend(segment(0xC0, &[8, 0x10, 0, 0x10, 0, 1, 1, 0x11, 0]));
    v.extend(segment(0xDA, &[1, 1, 0, 0, 63, 0]));
    for b in random(SIZE, 0x9e37_79b9_7f4a_7c15) {
        v.push(b);
        if b == 0xFF {
            v.push(0);
        }
    }
    v.extend_from_slice(&[0xFF, 0xD9]);
    v
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(data).expect("deflate");
    z.finish().expect("deflate")
}

fn pdf_of(objects: usize, mut object: impl FnMut(usize) -> Vec<u8>) -> Vec<u8> {
    let mut v = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut n = 1;
    while v.len() < SIZE && n <= objects {
        v.extend(object(n));
        n += 1;
    }
    v.extend_from_slice(b"xref\n0 1\n0000000000 65535 f \ntrailer\n<< /Size 2 >>\n");
    v.extend_from_slice(b"startxref\n9\n%%EOF\n");
    v
}

fn stream_object(n: usize, dict: &str, data: &[u8]) -> Vec<u8> {
    let mut v = format!("{n} 0 obj\n<< {dict} /Length {} >>\nstream\n", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(b"\nendstream\nendobj\n");
    v
}

fn pdf_images() -> Vec<u8> {
    let image = deflate(&random(256 * 1024, 0x2545_f491_4f6c_dd1d));
    pdf_of(usize::MAX, |n| {
        stream_object(
            n,
            "/Type /XObject /Subtype /Image /Width 256 /Height 1024 /BitsPerComponent 8 \
             /ColorSpace /DeviceGray /Filter /FlateDecode",
            &image,
        )
    })
}

fn pdf_object_streams() -> Vec<u8> {
    let mut objects = Vec::new();
    for i in 0..2000 {
        objects.extend_from_slice(
            format!(
                "<< /Type /Annot /Subtype /Link /Rect [{i} 10 200 30] /Border [0 0 0] \
                 /A << /S /URI /URI (https://example.org/{}) >> /F 4 >>\n",
                i * 7919 % 10007
            )
            .as_bytes(),
        );
    }
    let packed = deflate(&objects);
    let streams = (60 << 20) / objects.len();
    pdf_of(streams, |n| {
        stream_object(
            n,
            "/Type /ObjStm /N 2000 /First 0 /Filter /FlateDecode",
            &packed,
        )
    })
}

fn pdf_syntax() -> Vec<u8> {
    pdf_of(usize::MAX, |n| {
        format!(
            "{n} 0 obj\n<< /Type /Annot /Subtype /Text /Rect [{n} 10 200 30] /Border [0 0 1] \
             /Contents (Reviewed by clerk {n}\\) on page 3) /C [1 0.5 0] /F 4 \
             /AP << /N {} 0 R >> /NM <0A1B2C3D> >>\nendobj\n",
            n + 1
        )
        .into_bytes()
    })
}

fn pdf_random_body() -> Vec<u8> {
    let mut v = b"%PDF-1.7\n".to_vec();
    v.extend(random(SIZE, 0x853c_49e6_748f_ea9b));
    v
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("scan_64MiB");
    g.sample_size(10);
    let documents: [(&str, &str, Vec<u8>); 5] = [
        ("jpeg", "image/jpeg", jpeg()),
        ("pdf_images", "application/pdf", pdf_images()),
        (
            "pdf_object_streams",
            "application/pdf",
            pdf_object_streams(),
        ),
        ("pdf_syntax", "application/pdf", pdf_syntax()),
        ("pdf_random_body", "application/pdf", pdf_random_body()),
    ];
    for (name, media_type, data) in &documents {
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_with_input(BenchmarkId::new("one_thread", name), data, |b, data| {
            b.iter(|| {
                let mut scan = ContentScan::for_media_type(media_type);
                for block in data.chunks(BLOCK) {
                    // A finding would end the scan early and flatter the number.
                    scan.feed(block).expect("the bench documents are clean");
                }
                scan.finish().expect("clean")
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
