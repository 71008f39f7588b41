//! `load`: N uploads of one document at concurrency C, for the peer benchmark.
//!
//! ```text
//! load --url URL [--method PUT] [--header 'K: V']… --size BYTES --count N --concurrency C
//!      [--part SLOT [--field NAME=VALUE]…] [--retry-503]
//!      [--taler-key-file SEED_FILE --taler-payto TEMPLATE]
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
//!
//! `--taler-key-file`: upload straight to a Taler exchange (the emulator) as docgate would,
//! signed with the Ed25519 seed in the file (the emulator's `sandbox-extern-key`): `POST
//! URL/kyc-bulk/$EXTERN_PUB` with the signature, `If-Not-Match` and the payto (`{n}` in the
//! template as in the URL), purpose 65535 and payto hash A (the emulator's defaults). The
//! body's SHA-512 — which a client must compute before it sends a byte — is computed once,
//! timed apart (the median of 5 passes, OpenSSL's SHA-512: the fastest on the machine) and
//! reported as `sha512_ms`; the latencies are the uploads alone. This is the "direct" side of
//! the 16 MiB target: docgate ≤ 1.15 × (direct + one SHA-512 pass).

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
    taler: Option<Taler>,
}

/// `--taler-key-file` and `--taler-payto`.
#[derive(Debug)]
struct Taler {
    key: docgate_taler::signing::ExternKey,
    payto: String,
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
        taler: None,
    };
    let mut taler_key = None;
    let mut taler_payto = None;
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
            "--taler-key-file" => {
                let path = value()?;
                let text =
                    std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
                let key = docgate_taler::signing::ExternKey::parse(&text)
                    .with_context(|| format!("the seed in {path}"))?;
                taler_key = Some(key);
            }
            "--taler-payto" => taler_payto = Some(value()?),
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
    a.taler = match (taler_key, taler_payto) {
        (Some(key), Some(payto)) => Some(Taler { key, payto }),
        (None, None) => None,
        _ => bail!("--taler-key-file and --taler-payto go together"),
    };
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

/// SHA-512 of `body` and the median time of 5 passes, in ms.
fn timed_sha512(body: &[u8]) -> anyhow::Result<([u8; 64], f64)> {
    let mut times = Vec::new();
    let mut digest = [0u8; 64];
    for _ in 0..5 {
        let t = Instant::now();
        let out = openssl::hash::hash(openssl::hash::MessageDigest::sha512(), body)?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        digest.copy_from_slice(&out);
    }
    times.sort_by(f64::total_cmp);
    Ok((digest, times[2]))
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
    let mut sha512_ms = None;
    let mut url_base = args.url.clone();
    let mut h_body = [0u8; 64];
    if let Some(taler) = &args.taler {
        let (digest, ms) = timed_sha512(&body)?;
        h_body = digest;
        sha512_ms = Some(ms);
        url_base = format!(
            "{}/{}/{}",
            args.url.trim_end_matches('/'),
            docgate_taler::wire::PATH_PREFIX,
            taler.key.public_crockford()
        );
        headers.push((
            docgate_taler::wire::HEADER_IF_NOT_MATCH.into(),
            docgate_taler::signing::if_not_match(&h_body),
        ));
    }
    let url_base = Arc::new(url_base);
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
        let (headers, url_base) = (headers.clone(), url_base.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors: Vec<String> = Vec::new();
            let mut retries: u64 = 0;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= args.count {
                    break;
                }
                let url = url_base.replace("{n}", &n.to_string());
                // Signed before the clock starts: the signature is the client's, not the
                // server's, and costs microseconds.
                let signed = args.taler.as_ref().map(|taler| {
                    let payto = taler.payto.replace("{n}", &n.to_string());
                    let scheme = docgate_taler::signing::SigningScheme {
                        purpose: 65535,
                        payto_hash: docgate_taler::PaytoHash::A,
                    };
                    (taler.key.sign(&scheme, &h_body, &payto), payto)
                });
                let t = Instant::now();
                let outcome = loop {
                    let mut req = client.request(args.method.clone(), &url).body(body.clone());
                    for (k, v) in headers.iter() {
                        req = req.header(k, v);
                    }
                    if let Some((signature, payto)) = &signed {
                        req = req
                            .header(docgate_taler::wire::HEADER_SIGNATURE, signature)
                            .header(docgate_taler::wire::HEADER_PAYTO, payto);
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
        "sha512_ms": sha512_ms,
    });
    println!("{out}");
    Ok(())
}
