//! `docgate upload`: post documents to a gateway, streaming them from disk.

use std::{
    io::IsTerminal,
    path::PathBuf,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use anyhow::{bail, Context};
use clap::Args;
use tokio::io::{AsyncRead, ReadBuf};

/// A file as it is read for sending, counting its bytes. The request body is streamed with
/// back-pressure, so what was read is what was sent, give or take a buffer.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counting<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            let n = buf.filled().len().saturating_sub(before) as u64;
            self.read.fetch_add(n, Ordering::Relaxed);
        }
        polled
    }
}

/// One progress line on stderr, redrawn in place; only on a terminal (a log or a pipe gets
/// nothing). After the last byte it says the gateway is delivering, which may take a while.
fn show_progress(read: Arc<AtomicU64>, total: u64) -> Option<tokio::task::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() || total == 0 {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            let sent = read.load(Ordering::Relaxed).min(total);
            let percent = sent as f64 * 100.0 / total as f64;
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            let note = if sent >= total {
                "  waiting for delivery…"
            } else {
                ""
            };
            eprint!(
                "\r\x1b[Ksending {percent:5.1} %  {:.1}/{:.1} MiB{note}",
                mib(sent),
                mib(total)
            );
        }
    }))
}

#[derive(Args, Debug)]
pub struct UploadArgs {
    /// The gateway's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Which provider to deliver to.
    #[arg(long)]
    provider: String,
    /// A metadata field, `name=value` (repeatable).
    #[arg(long = "field", value_name = "NAME=VALUE")]
    fields: Vec<String>,
    /// Sent as Idempotency-Key: repeating the command then never uploads twice.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Answer 202 at once instead of waiting for delivery.
    #[arg(long = "async")]
    respond_async: bool,
    /// Documents, `slot=path` (e.g. `file=passport.pdf`).
    #[arg(required = true, value_name = "SLOT=PATH")]
    documents: Vec<String>,
}

fn split_pair(s: &str, what: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => bail!("{what} `{s}` must look like name=value"),
    }
}

pub async fn run(args: UploadArgs) -> anyhow::Result<()> {
    let key =
        std::env::var("DOCGATE_API_KEY").context("set DOCGATE_API_KEY to the tenant's API key")?;
    let read = Arc::new(AtomicU64::new(0));
    let mut total = 0u64;
    let mut form = reqwest::multipart::Form::new().text("provider", args.provider.clone());
    for f in &args.fields {
        let (k, v) = split_pair(f, "field")?;
        form = form.text(k, v);
    }
    for d in &args.documents {
        let (slot, path) = split_pair(d, "document")?;
        let path = PathBuf::from(path);
        let file = tokio::fs::File::open(&path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let len = file.metadata().await?.len();
        total = total.saturating_add(len);
        let counted = Counting {
            inner: file,
            read: read.clone(),
        };
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
            counted,
            256 * 1024,
        ));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| slot.clone());
        form = form.part(
            slot,
            reqwest::multipart::Part::stream_with_length(body, len).file_name(name),
        );
    }
    let mut req = reqwest::Client::new()
        .post(format!("{}/v1/uploads", args.url.trim_end_matches('/')))
        .bearer_auth(key)
        .multipart(form);
    if let Some(k) = &args.idempotency_key {
        req = req.header("Idempotency-Key", k);
    }
    if args.respond_async {
        req = req.header("Prefer", "respond-async");
    }
    let progress = show_progress(read, total);
    let sent = req.send().await;
    if let Some(progress) = progress {
        progress.abort();
        eprint!("\r\x1b[K");
    }
    let res = sent.context("sending the upload")?;
    let status = res.status();
    let body = res.text().await.unwrap_or_default();
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(v) => println!("{}", serde_json::to_string_pretty(&v)?),
        Err(_) => println!("{body}"),
    }
    if status.is_client_error() || status.is_server_error() {
        bail!("the gateway answered {status}");
    }
    Ok(())
}
