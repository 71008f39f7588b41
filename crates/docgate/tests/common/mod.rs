//! Running the real `docgate` binary in tests.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use futures_util::StreamExt;

pub const PAYTO: &str = "payto://iban/DE89370400440532013000";

/// A running `docgate` process; killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub url: String,
    /// Every stdout line printed up to the "listening" line.
    pub banner: Vec<String>,
}

impl Proc {
    /// Start `docgate <args>` and wait for its `… listening on http://ADDR` line.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_docgate"));
        cmd.args(args)
            .stdout(Stdio::piped())
            .env("DOCGATE_LOG", "warn");
        // To see why a test failed, DOCGATE_TEST_LOGS=<file> appends every child's log there.
        match std::env::var_os("DOCGATE_TEST_LOGS").map(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
        }) {
            Some(Ok(file)) => cmd.stderr(file),
            _ => cmd.stderr(Stdio::null()),
        };
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn docgate");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut banner = Vec::new();
        loop {
            let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("docgate did not print its listening line within 60 s");
            };
            if let Some((_, url)) = line.split_once(" listening on ") {
                let url = url.trim().to_owned();
                banner.push(line);
                // keep draining stdout so the child never blocks on a full pipe
                std::thread::spawn(move || while rx.recv().is_ok() {});
                return Proc { child, url, banner };
            }
            banner.push(line);
        }
    }

    /// `docgate serve` without a config (the sandbox) on a free port, with API key `key`.
    pub fn sandbox(data_dir: &Path, key: &str) -> Proc {
        Proc::spawn(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                &data_dir.to_string_lossy(),
            ],
            &[("DOCGATE_SANDBOX_KEY", key)],
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown, no cleanup — a crash.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait: a graceful shutdown.
    pub fn terminate(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident set size now and at its peak (kB), from /proc.
pub fn rss_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A PDF of `len` bytes, different for each `seed`, generated as a stream of 64 KiB chunks
/// (the test never holds it whole either).
pub fn pdf_stream(len: u64, seed: u64) -> reqwest::Body {
    let header = format!("%PDF-1.7\n% docgate seed {seed}\n").into_bytes();
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut sent: u64 = 0;
    let stream = futures_util::stream::iter(std::iter::from_fn(move || {
        if sent >= len {
            return None;
        }
        let n = (len - sent).min(64 * 1024) as usize;
        let mut chunk = Vec::with_capacity(n);
        if sent == 0 {
            chunk.extend_from_slice(&header[..header.len().min(n)]);
        }
        while chunk.len() < n {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.extend_from_slice(&state.to_le_bytes()[..(n - chunk.len()).min(8)]);
        }
        sent += n as u64;
        Some(Ok::<_, std::io::Error>(chunk))
    }));
    reqwest::Body::wrap_stream(stream.boxed())
}

/// The same bytes as `pdf_stream`, in memory (for small documents and comparisons).
pub async fn pdf_bytes(len: u64, seed: u64) -> Vec<u8> {
    let body = pdf_stream(len, seed);
    let mut out = Vec::new();
    let mut s = http_body_util::BodyDataStream::new(body);
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    out
}

pub fn write_file(dir: &Path, name: &str, contents: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).expect("write file");
    p
}

/// Poll `GET /v1/uploads/{id}` until the status is final; returns the receipt.
pub async fn wait_final(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    id: &str,
    limit: Duration,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Ok(res) = client
            .get(format!("{base}/v1/uploads/{id}"))
            .bearer_auth(key)
            .send()
            .await
        {
            if let Ok(r) = res.json::<serde_json::Value>().await {
                if ["delivered", "duplicate", "rejected", "failed"]
                    .contains(&r["status"].as_str().unwrap_or(""))
                {
                    return r;
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "upload {id} not final within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The repository's root (fixtures of the repository itself: the OpenAPI document, the
/// Schemathesis settings, the interop clients).
pub fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// `interop/node` with its npm modules installed (by `scripts/test.sh`).
pub fn node_dir() -> std::path::PathBuf {
    std::env::var("DOCGATE_INTEROP_NODE_DIR")
        .expect("DOCGATE_INTEROP_NODE_DIR names interop/node with its modules installed: run ./scripts/test.sh")
        .into()
}
