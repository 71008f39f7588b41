//! `load`: N uploads of one document at concurrency C, for the peer benchmark.
//!
//! ```text
//! load --url URL [--method PUT] [--header 'K: V']… --size BYTES --count N --concurrency C
//!      [--part SLOT [--field NAME=VALUE]…] [--retry-503]
//! ```
//!
//! `--retry-503`: an upload refused with 503 (docgate's admission control: a tenant may have
//! only its share of the gateway's uploads in flight) is sent again after 100 ms, as a
//! client honouring Retry-After would; the count of such retries is reported. Latency is
//! then from the first attempt to the answer that was not a 503.
//!
//! With `--part`, the body is `multipart/form-data`: the fields, then the document as part
//! SLOT (for providers that take several documents, which only `POST /v1/uploads` accepts).
//!
//! `{n}` in the URL is replaced by the upload's number (0, 1, …): Taler uploads need a new
//! payto URI each, or the exchange answers "duplicate". The document is `%PDF-1.7` and
//! pseudo-random bytes, built once and shared by every request (no per-upload copy, so the
//! client's own cost stays small). Prints one JSON object: wall time, uploads/s, p50/p99
//! latency, and how many answers were not 2xx.

#![forbid(unsafe_code)]

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use bytes::Bytes;

#[derive(Debug)]
struct Args {
    url: String,
    method: reqwest::Method,
    headers: Vec<(String, String)>,
    size: usize,
    count: usize,
    concurrency: usize,
    /// Send the document as this multipart part, after `fields`.
    part: Option<String>,
    fields: Vec<(String, String)>,
    retry_503: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        url: String::new(),
        method: reqwest::Method::PUT,
        headers: Vec::new(),
        size: 10 * 1024,
        count: 100,
        concurrency: 1,
        part: None,
        fields: Vec::new(),
        retry_503: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value()?,
            "--method" => {
                let v = value()?;
                a.method = v.parse().with_context(|| format!("--method {v}"))?;
            }
            "--header" => {
                let v = value()?;
                let (k, val) = v
                    .split_once(':')
                    .with_context(|| format!("--header `{v}` must look like `Name: value`"))?;
                a.headers.push((k.trim().to_owned(), val.trim().to_owned()));
            }
            "--size" => a.size = value()?.parse().context("--size")?,
            "--count" => a.count = value()?.parse().context("--count")?,
            "--concurrency" => a.concurrency = value()?.parse().context("--concurrency")?,
            "--part" => a.part = Some(value()?),
            "--retry-503" => a.retry_503 = true,
            "--field" => {
                let v = value()?;
                let (k, val) = v
                    .split_once('=')
                    .with_context(|| format!("--field `{v}` must look like name=value"))?;
                a.fields.push((k.to_owned(), val.to_owned()));
            }
            other => bail!("unknown argument {other}"),
        }
    }
    if a.url.is_empty() {
        bail!("--url is required");
    }
    a.concurrency = a.concurrency.clamp(1, a.count.max(1));
    Ok(a)
}

/// `%PDF-1.7` then xorshift bytes: the gateway sniffs a PDF, and nothing compresses.
fn document(size: usize) -> Bytes {
    let mut doc = b"%PDF-1.7\n% load\n".to_vec();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while doc.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        doc.extend_from_slice(&x.to_le_bytes());
    }
    doc.truncate(size);
    Bytes::from(doc)
}

/// Boundary of the multipart bodies. The document is xorshift output: this ASCII string
/// turning up in it is as likely as guessing 25 random bytes.
const BOUNDARY: &str = "docgate-load-3f9a1c07e5b2";

/// `doc` wrapped as part `slot` of a multipart/form-data body after `fields`, built once.
fn multipart(fields: &[(String, String)], slot: &str, doc: &[u8]) -> Bytes {
    let mut body = Vec::with_capacity(doc.len() + 1024);
    for (k, v) in fields {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{slot}\"; filename=\"doc.pdf\"\r\nContent-Type: application/pdf\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(doc);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    Bytes::from(body)
}

/// The `q`-quantile of sorted samples (nearest rank).
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(parse_args()?);
    let mut headers = args.headers.clone();
    let body = match &args.part {
        None => document(args.size),
        Some(slot) => {
            headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
            headers.push((
                "Content-Type".into(),
                format!("multipart/form-data; boundary={BOUNDARY}"),
            ));
            multipart(&args.fields, slot, &document(args.size))
        }
    };
    let headers = Arc::new(headers);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .tcp_nodelay(true)
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        let (args, body, client, next) = (args.clone(), body.clone(), client.clone(), next.clone());
        let headers = headers.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors: Vec<String> = Vec::new();
            let mut retries: u64 = 0;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= args.count {
                    break;
                }
                let url = args.url.replace("{n}", &n.to_string());
                let t = Instant::now();
                let outcome = loop {
                    let mut req = client.request(args.method.clone(), &url).body(body.clone());
                    for (k, v) in headers.iter() {
                        req = req.header(k, v);
                    }
                    let res = match req.send().await {
                        Ok(res) => res,
                        Err(e) => break Err(e.to_string()),
                    };
                    let status = res.status();
                    if args.retry_503 && status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                        let _ = res.bytes().await;
                        retries += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    break {
                        match res.bytes().await {
                            Ok(_) if status.is_success() => Ok(()),
                            // The start of the answer says why (a problem+json's code).
                            Ok(b) => Err(format!(
                                "status {status}: {}",
                                String::from_utf8_lossy(&b[..b.len().min(200)])
                            )),
                            Err(e) => Err(e.to_string()),
                        }
                    };
                };
                latencies.push(t.elapsed());
                if let Err(e) = outcome {
                    errors.push(e);
                }
            }
            (latencies, errors, retries)
        }));
    }
    let mut latencies = Vec::with_capacity(args.count);
    let mut errors = Vec::new();
    let mut retries = 0;
    for w in workers {
        let (l, e, r) = w.await?;
        latencies.extend(l);
        errors.extend(e);
        retries += r;
    }
    let wall = start.elapsed();
    latencies.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let out = serde_json::json!({
        "url": args.url,
        "size": args.size,
        "count": args.count,
        "concurrency": args.concurrency,
        "errors": errors.len(),
        "retries_503": retries,
        "first_error": errors.first(),
        "wall_s": wall.as_secs_f64(),
        "uploads_per_s": args.count as f64 / wall.as_secs_f64(),
        "mib_per_s": (args.count * args.size) as f64 / 1048576.0 / wall.as_secs_f64(),
        "p50_ms": ms(quantile(&latencies, 0.50)),
        "p99_ms": ms(quantile(&latencies, 0.99)),
    });
    println!("{out}");
    Ok(())
}
