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

/// `write_file`, readable by its owner only (docgate refuses secret files others can read).
pub fn private_file(dir: &Path, name: &str, contents: &[u8]) -> std::path::PathBuf {
    let path = write_file(dir, name, contents);
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    path
}

/// Every file under `root`, at any depth (none when `root` does not exist).
pub fn files_under(root: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

/// Every file under `root` that contains `needle`.
pub fn files_containing(root: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    files_under(root)
        .into_iter()
        .filter(|p| {
            std::fs::read(p).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

/// The PostgreSQL tests use (`DOCGATE_TEST_POSTGRES_URL`, else the local server).
pub fn postgres_base() -> String {
    std::env::var("DOCGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh schema named `<prefix>_<random>`: an admin pool, the schema's name, and a ledger
/// URL whose sessions use it.
pub async fn postgres_schema(prefix: &str) -> (sqlx::PgPool, String, String) {
    use sqlx::Executor;
    let schema = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(&postgres_base())
        .await
        .expect("PostgreSQL");
    admin
        .execute(format!("CREATE SCHEMA {schema}").as_str())
        .await
        .expect("schema");
    let ledger = format!("{}?options=-c%20search_path%3D{schema}", postgres_base());
    (admin, schema, ledger)
}

/// A browser's resumable upload as a test drives it: a Taler session minted with an API key
/// and one tus upload of a PDF in it, addressed by its path so that any replica (`base`) can
/// be asked about it.
pub struct TusUpload {
    pub session: String,
    pub token: String,
    /// `/v1/tus/<id>`.
    pub path: String,
}

impl TusUpload {
    /// Mint a session for `payto` with API key `key` on `base`, and create an upload of `len`
    /// bytes of `application/pdf` in it.
    pub async fn begin(
        client: &reqwest::Client,
        base: &str,
        key: &str,
        payto: &str,
        len: usize,
    ) -> TusUpload {
        let minted = client
            .post(format!("{base}/v1/upload-sessions"))
            .bearer_auth(key)
            .json(&serde_json::json!({"provider": "taler", "fields": {"payto": payto}}))
            .send()
            .await
            .expect("mint");
        assert_eq!(minted.status(), 201);
        let minted: serde_json::Value = minted.json().await.expect("json");
        let token = minted["token"].as_str().expect("token").to_owned();
        let created = client
            .post(format!("{base}/v1/tus/"))
            .bearer_auth(&token)
            .header("tus-resumable", "1.0.0")
            .header("upload-length", len.to_string())
            .header("upload-metadata", "filetype YXBwbGljYXRpb24vcGRm")
            .send()
            .await
            .expect("create");
        assert_eq!(created.status(), 201);
        let location = created.headers()["location"]
            .to_str()
            .expect("location")
            .to_owned();
        let path = match location.split_once("/v1/tus/") {
            Some((_, id)) => format!("/v1/tus/{id}"),
            None => location,
        };
        TusUpload {
            session: minted["id"].as_str().expect("id").to_owned(),
            token,
            path,
        }
    }

    /// `PATCH` `bytes` at `offset` through `base`.
    pub async fn patch(
        &self,
        client: &reqwest::Client,
        base: &str,
        offset: usize,
        bytes: &[u8],
    ) -> reqwest::Response {
        client
            .patch(format!("{base}{}", self.path))
            .bearer_auth(&self.token)
            .header("tus-resumable", "1.0.0")
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", offset.to_string())
            .body(bytes.to_vec())
            .send()
            .await
            .expect("patch")
    }

    /// The offset `base` reports (`HEAD`, which must answer 200).
    pub async fn offset(&self, client: &reqwest::Client, base: &str) -> usize {
        let res = client
            .head(format!("{base}{}", self.path))
            .bearer_auth(&self.token)
            .header("tus-resumable", "1.0.0")
            .send()
            .await
            .expect("head");
        assert_eq!(res.status(), 200);
        res.headers()["upload-offset"]
            .to_str()
            .expect("offset")
            .parse()
            .expect("number")
    }
}
