//! docgate's benches live in `benches/`: run them with `cargo bench -p docgate-benches`.
//!
//! - `digest`: the digest pipeline alone (SHA-256 only; SHA-256 + SHA-512 + MD5).
//! - `ingest`: a 64 MiB document through the whole ingest pipeline into a file spool.
//! - `gateway`: a document PUT through a running gateway to the Taler emulator.
//! - `scan`: the content scanner alone (JPEG, PDFs of images, object streams, random bytes).
//!
//! Throughput is reported in bytes/s; compare with `../shared/notes/performance.md`.
