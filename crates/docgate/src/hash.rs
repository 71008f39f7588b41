//! `docgate hash`: the ingest pipeline's sniffing and digests, on a file.
//!
//! It uses the same [`DigestPipeline`] as uploads (blocks hashed on the hashing pool, in lanes
//! balanced by measured cost, overlapped with reading), so its speed is the pipeline's speed —
//! which is what the "within 1.0× of three concurrent openssl" target measures. Nothing is
//! spooled: the file already is. `--verbose` shows the measured costs and the lanes.

use std::path::Path;

use anyhow::Context;
use std::io::Read;

use bytes::Bytes;
use docgate_core::{media, DigestPipeline, DigestSet};
use serde_json::{json, Value};

/// Read size: big enough that per-block overhead vanishes, small enough to stay in cache.
const READ_BLOCK: usize = 1024 * 1024;

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
        let (f, block) = tokio::task::spawn_blocking(move || {
            let mut block = Vec::with_capacity(READ_BLOCK);
            let read = (&mut f).take(READ_BLOCK as u64).read_to_end(&mut block);
            read.map(|_| (f, block))
        })
        .await?
        .with_context(|| format!("reading {}", file.display()))?;
        if block.is_empty() {
            break;
        }
        if pipeline.is_empty() {
            media_type = media::sniff(&block[..block.len().min(media::SNIFF_BYTES)]);
        }
        let full = block.len() == READ_BLOCK;
        pipeline.feed(Bytes::from(block)).await?;
        if full {
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
