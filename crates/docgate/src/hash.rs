//! `docgate hash`: the ingest pipeline's sniffing and digests, on a file.
//!
//! It uses the same [`DigestPipeline`] as uploads (blocks hashed on the hashing pool, in lanes
//! balanced by measured cost, overlapped with reading), so its speed is the pipeline's speed —
//! which is what the "within 1.0× of three concurrent openssl" target measures. Nothing is
//! spooled: the file already is. `--verbose` shows the measured costs and the lanes.

use std::{io::Read, path::Path};

use anyhow::Context;
use docgate_core::{blocks::Pool, media, DigestPipeline, DigestSet};
use serde_json::{json, Value};

/// Read size: big enough that per-block overhead vanishes, small enough to stay in cache.
const READ_BLOCK: usize = 1024 * 1024;

/// Read buffers, back in the pool once the digests are done with them. A fresh 1 MiB buffer
/// per block cost a page fault per 4 KiB (the allocator hands freed blocks of that size back
/// to the kernel): 65 000 faults and more system time than hashing for a 256 MiB file. The
/// pipeline holds a few blocks at most (`LANE_DEPTH` per lane), so a handful go round.
static READS: Pool = Pool::new(READ_BLOCK, 8);

pub async fn run(digests: &str, file: &Path, verbose: bool) -> anyhow::Result<()> {
    let set = DigestSet::parse_list(digests).map_err(anyhow::Error::msg)?;
    if verbose {
        // Measured here (once per process) and reused by the pipeline below.
        eprintln!("{}", docgate_core::digest::lane_plan(set)?);
    }
    let out = hash_file(file, set).await?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

pub async fn hash_file(file: &Path, set: DigestSet) -> anyhow::Result<Value> {
    let opened =
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut reader = Some(opened);
    let mut pipeline = DigestPipeline::new(set);
    let mut media_type: Option<&'static str> = None;
    loop {
        // Read straight into the block on a blocking thread (tokio's File would copy twice).
        let Some(mut f) = reader.take() else { break };
        let mut block = READS.take();
        let (f, block, filled) = tokio::task::spawn_blocking(move || {
            block.resize(READ_BLOCK, 0);
            let filled = fill(&mut f, &mut block);
            (f, block, filled)
        })
        .await?;
        let filled = filled.with_context(|| format!("reading {}", file.display()))?;
        if filled == 0 {
            break;
        }
        let mut block = block;
        block.truncate(filled);
        if pipeline.is_empty() {
            media_type = media::sniff(&block[..filled.min(media::SNIFF_BYTES)]);
        }
        pipeline.feed(READS.freeze(block)).await?;
        if filled == READ_BLOCK {
            reader = Some(f);
        }
    }
    let size = pipeline.len();
    let digests = pipeline.finish().await?.to_hex();
    let mut out = json!({
        "file": file.display().to_string(),
        "size": size,
        "media_type": media_type.unwrap_or("application/octet-stream"),
        "sha256": digests.sha256,
    });
    if let Some(obj) = out.as_object_mut() {
        if let Some(h) = digests.sha512 {
            obj.insert("sha512".into(), Value::String(h));
        }
        if let Some(h) = digests.md5 {
            obj.insert("md5".into(), Value::String(h));
        }
    }
    Ok(out)
}

/// Read until `block` is full or the file ends; the bytes read.
fn fill(f: &mut std::fs::File, block: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < block.len() {
        match f.read(&mut block[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
