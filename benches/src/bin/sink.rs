//! `sink`: the peer benchmark's upstream. Accepts any request, reads the body to the end,
//! discards it and answers 200 — the cheapest possible server, so that what the benchmark
//! measures in front of it is the proxy (nginx or docgate), not the sink.
//!
//! `sink [--listen ADDR]` prints `sink listening on http://ADDR` once bound (port 0 picks one).

#![forbid(unsafe_code)]

use std::{convert::Infallible, net::SocketAddr};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;

async fn discard(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut body = req.into_body();
    let mut total: u64 = 0;
    // Frame by frame: nothing is kept, so a 64 MiB body costs no memory here.
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(data) = f.data_ref() {
                    total += data.len() as u64;
                }
            }
            Err(_) => break,
        }
    }
    Ok(Response::new(Full::new(Bytes::from(format!(
        "{{\"received\":{total}}}\n"
    )))))
}

// One thread: discarding bytes is cheap, and the sink should take as little of the machine
// as it can from the servers being compared.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut listen: SocketAddr = "127.0.0.1:0".parse().context("default address")?;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args.next().context("--listen needs an address")?;
                listen = value.parse().with_context(|| format!("--listen {value}"))?;
            }
            other => anyhow::bail!("unknown argument {other} (usage: sink [--listen ADDR])"),
        }
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    println!("sink listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(discard))
                .await;
        });
    }
}
