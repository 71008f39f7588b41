//! How fast the emulator's body scanner reads a large Finext request, and how much memory it
//! needs: a JSON body with a 50 MiB document (≈ 67 MiB of base64) is written to a temporary
//! file, then scanned the way the emulator's handler scans it (a 256 KiB `BufReader`).
//!
//! ```sh
//! cargo run --release -p docgate-finext --example scan_throughput [-- MIB]
//! ```
//!
//! Prints the body size, the best of three scan times, throughput over the JSON body, and the
//! process's peak RSS before and after scanning (Linux `VmHWM`, reset after the body is
//! written).

use std::{
    fs::File,
    io::{BufReader, BufWriter, Write},
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::STANDARD, Engine};
use docgate_finext::emulator::scan::{scan, ScanSpec};

const CHUNK: usize = 3 * 256 * 1024;

/// Reset the peak RSS to the current RSS (Linux ≥ 4.0), so writing the body does not count.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Write `{"username": …, "address_proof_front": "<base64 of `size` bytes>", …}` without
/// holding the document: the base64 is produced chunk by chunk (chunks are multiples of 3).
fn write_body(path: &std::path::Path, size: usize) -> std::io::Result<u64> {
    let mut out = BufWriter::new(File::create(path)?);
    out.write_all(br#"{"api_key": "k", "username": "lili111", "address_proof_front": ""#)?;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut left = size;
    let mut chunk = Vec::with_capacity(CHUNK);
    while left > 0 {
        chunk.clear();
        while chunk.len() < CHUNK.min(left) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.extend_from_slice(&state.to_le_bytes());
        }
        chunk.truncate(CHUNK.min(left));
        out.write_all(STANDARD.encode(&chunk).as_bytes())?;
        left -= chunk.len();
    }
    out.write_all(br#"", "address_type": "Utility Bill", "timestamp": 1682073075988}"#)?;
    out.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(50);
    let dir = tempfile::tempdir()?;
    let body = dir.path().join("body.json");
    let body_len = write_body(&body, mib << 20)?;
    let spec = ScanSpec {
        documents: &["address_proof_front", "address_proof_back"],
        texts: &["api_key", "username", "address_type", "timestamp"],
        max_text: 4096,
        max_document_bytes: 100 << 20,
        out_dir: dir.path(),
        prefix: "bench",
    };
    let reset = reset_peak_rss();
    let rss_before = peak_rss_kib();
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let scanned = scan(
            BufReader::with_capacity(256 * 1024, File::open(&body)?),
            &spec,
        )?;
        best = best.min(started.elapsed());
        let doc = &scanned.documents["address_proof_front"];
        assert_eq!(doc.size, (mib << 20) as u64);
        assert!(doc.problem.is_none(), "{:?}", doc.problem);
        assert_eq!(scanned.texts["timestamp"], "1682073075988");
    }
    let rss_after = peak_rss_kib();
    println!(
        "body {:.1} MiB (document {mib} MiB): best of 3 scans {:.3} s = {:.0} MiB/s of JSON",
        body_len as f64 / (1 << 20) as f64,
        best.as_secs_f64(),
        body_len as f64 / (1 << 20) as f64 / best.as_secs_f64()
    );
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        println!(
            "peak RSS: {} KiB before scanning{}, {} KiB after (+{} KiB)",
            before,
            if reset { " (peak reset)" } else { "" },
            after,
            after.saturating_sub(before)
        );
    }
    Ok(())
}
