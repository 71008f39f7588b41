//! Encryption at rest, end to end with the real binary: what docgate stores never shows a
//! document's bytes, keys rotate without stranding spooled uploads, an altered spooled
//! document fails its delivery instead of being sent, and key problems stop the start.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::*;
use docgate_emulator::FaultPlan;

const KEY: &str = "encryption-test-key";
const MARKER: &[u8] = b"DOCGATE-MARKER-7f3a";
const K1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const K2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

async fn taler(dir: &Path) -> docgate_taler::emulator::Emulator {
    docgate_taler::emulator::start(docgate_taler::emulator::EmulatorOptions::new(
        "127.0.0.1:0".parse().expect("addr"),
        dir.join("taler"),
    ))
    .await
    .expect("taler emulator")
}

/// A docgate.toml for `emulator` on SQLite under `dir/gateway`, with `encryption` as its
/// top-level `spool_encryption` line (or none).
fn config(dir: &Path, emulator: &docgate_taler::emulator::Emulator, encryption: &str) -> PathBuf {
    let c = emulator.sandbox_config();
    let key_file = private_file(dir, "taler.key", c.extern_key.expose().as_bytes());
    let codes = &c.error_codes;
    let text = format!(
        r#"
listen = "127.0.0.1:0"
{encryption}

[delivery]
poll_interval = "100ms"
initial_backoff = "100ms"
max_backoff = "300ms"
max_attempts = 100000

[[tenants]]
name = "acme"
api_key = {{ env = "ENCRYPTION_TEST_KEY" }}
providers = ["taler"]

[providers.taler]
base_url = "{url}"
extern_key = {{ file = "{key}" }}
purpose = {purpose}
error_codes = {{ signature_invalid = {si}, third_party_unknown = {tu} }}
"#,
        url = c.base_url,
        key = key_file.display(),
        purpose = c.purpose,
        si = codes.signature_invalid.unwrap_or(0),
        tu = codes.third_party_unknown.unwrap_or(0),
    );
    write_file(
        dir,
        &format!("docgate-{}.toml", uuid::Uuid::new_v4().simple()),
        text.as_bytes(),
    )
}

fn data_dir(dir: &Path) -> PathBuf {
    dir.join("gateway")
}

fn serve(config: &Path, dir: &Path) -> Proc {
    Proc::spawn(
        &[
            "serve",
            "--config",
            &config.to_string_lossy(),
            "--data-dir",
            &data_dir(dir).to_string_lossy(),
        ],
        &[("ENCRYPTION_TEST_KEY", KEY)],
    )
}

/// `docgate serve` expected to refuse to start: its stderr.
fn refused_start(config: &Path, dir: &Path, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_docgate"));
    cmd.args([
        "serve",
        "--config",
        &config.to_string_lossy(),
        "--data-dir",
        &data_dir(dir).to_string_lossy(),
    ])
    .env("ENCRYPTION_TEST_KEY", KEY)
    .env("DOCGATE_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("run docgate");
    // A start that is not refused would serve forever: give it 30 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "started anyway: {stderr}");
    stderr
}

/// A PDF of `len` bytes with the marker written in several places (start, a segment
/// boundary, the end).
async fn marked_pdf(len: u64, seed: u64) -> Vec<u8> {
    let mut doc = pdf_bytes(len, seed).await;
    for at in [40, 64 * 1024 - 5, doc.len() - MARKER.len() - 1] {
        if at + MARKER.len() < doc.len() {
            doc[at..at + MARKER.len()].copy_from_slice(MARKER);
        }
    }
    doc
}

/// Accepted asynchronously (202): the upload id.
async fn put(client: &reqwest::Client, base: &str, doc: Vec<u8>) -> String {
    let res = client
        .put(format!("{base}/v1/uploads/taler?payto={PAYTO}"))
        .bearer_auth(KEY)
        .header("Prefer", "respond-async")
        .header("Content-Type", "application/pdf")
        .body(doc)
        .send()
        .await
        .expect("upload");
    let status = res.status();
    let receipt: serde_json::Value = res.json().await.expect("receipt");
    assert_eq!(status, 202, "{receipt}");
    receipt["id"].as_str().expect("id").to_owned()
}

/// Wait until the upload has had at least one (failed) attempt.
async fn wait_attempted(client: &reqwest::Client, base: &str, id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r: serde_json::Value = client
            .get(format!("{base}/v1/uploads/{id}"))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if r["attempts"].as_u64().unwrap_or(0) >= 1 {
            assert!(
                !["delivered", "duplicate", "rejected", "failed"]
                    .contains(&r["status"].as_str().unwrap_or("")),
                "still spooled: {r}"
            );
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "no attempt: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spooled_objects(dir: &Path) -> Vec<PathBuf> {
    files_under(&data_dir(dir).join("spool").join("uploads"))
}

fn outage() -> FaultPlan {
    FaultPlan {
        fail_for_ms: 600_000,
        fail_status: 503,
        ..FaultPlan::default()
    }
}

/// The marker appears nowhere docgate stores data while the upload waits in the spool; the
/// keys then rotate (k1 → previous, k2 current) across a restart and the upload spooled
/// under k1 is delivered, byte for byte, as is one spooled under k2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_documents_are_unreadable_on_disk_and_survive_a_key_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let emulator = taler(dir.path()).await;
    let k1 = private_file(dir.path(), "k1.hex", K1.as_bytes());
    let k2 = private_file(dir.path(), "k2.hex", K2.as_bytes());
    let first = config(
        dir.path(),
        &emulator,
        &format!(
            "spool_encryption = {{ key = {{ file = \"{}\" }}, key_id = \"k1\" }}",
            k1.display()
        ),
    );
    emulator.faults.set(outage());
    let gateway = serve(&first, dir.path());
    let client = reqwest::Client::new();
    // One document larger than the in-memory threshold (streamed into the store), one
    // small (kept in memory until accepted, then written out).
    let big = marked_pdf(700_000, 1).await;
    let small = marked_pdf(20_000, 2).await;
    let big_id = put(&client, &gateway.url, big.clone()).await;
    let small_id = put(&client, &gateway.url, small.clone()).await;
    wait_attempted(&client, &gateway.url, &big_id).await;
    wait_attempted(&client, &gateway.url, &small_id).await;
    assert_eq!(spooled_objects(dir.path()).len(), 2);
    let leaks = files_containing(&data_dir(dir.path()), MARKER);
    assert!(leaks.is_empty(), "the marker is stored in {leaks:?}");
    gateway.terminate();

    // Rotate: k2 seals new documents, k1 still opens the old ones.
    let rotated = config(
        dir.path(),
        &emulator,
        &format!(
            "spool_encryption = {{ key = {{ file = \"{}\" }}, key_id = \"k2\", previous = [{{ key = {{ file = \"{}\" }}, key_id = \"k1\" }}] }}",
            k2.display(),
            k1.display()
        ),
    );
    let gateway = serve(&rotated, dir.path());
    let third = marked_pdf(300_000, 3).await;
    let third_id = put(&client, &gateway.url, third.clone()).await;
    wait_attempted(&client, &gateway.url, &third_id).await;
    let leaks = files_containing(&data_dir(dir.path()), MARKER);
    assert!(leaks.is_empty(), "the marker is stored in {leaks:?}");
    emulator.faults.set(FaultPlan::default());
    for id in [&big_id, &small_id, &third_id] {
        let r = wait_final(&client, &gateway.url, KEY, id, Duration::from_secs(60)).await;
        assert_eq!(r["status"], "delivered", "{r}");
    }
    let mut stored: Vec<Vec<u8>> = emulator
        .stored(PAYTO)
        .expect("stored")
        .iter()
        .map(|b| std::fs::read(&b.path).expect("stored body"))
        .collect();
    stored.sort();
    let mut sent = vec![big, small, third];
    sent.sort();
    assert_eq!(stored, sent, "the provider got the plaintext, unaltered");
}

/// A flipped byte in a spooled document: the upload fails with a reason naming the
/// integrity check, and the provider stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_spooled_document_fails_its_delivery_and_nothing_is_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let emulator = taler(dir.path()).await;
    let cfg = config(
        dir.path(),
        &emulator,
        "spool_encryption = { key = { env = \"SPOOL_KEY\" }, key_id = \"k1\" }",
    );
    emulator.faults.set(outage());
    let gateway = Proc::spawn(
        &[
            "serve",
            "--config",
            &cfg.to_string_lossy(),
            "--data-dir",
            &data_dir(dir.path()).to_string_lossy(),
        ],
        &[("ENCRYPTION_TEST_KEY", KEY), ("SPOOL_KEY", K1)],
    );
    let client = reqwest::Client::new();
    let id = put(&client, &gateway.url, marked_pdf(400_000, 4).await).await;
    wait_attempted(&client, &gateway.url, &id).await;
    let objects = spooled_objects(dir.path());
    assert_eq!(objects.len(), 1);
    let mut raw = std::fs::read(&objects[0]).expect("spooled");
    let at = raw.len() / 2;
    raw[at] ^= 0x01;
    std::fs::write(&objects[0], &raw).expect("alter");
    emulator.faults.set(FaultPlan::default());
    let r = wait_final(&client, &gateway.url, KEY, &id, Duration::from_secs(60)).await;
    assert_eq!(r["status"], "failed", "{r}");
    assert!(
        r.to_string().contains("integrity check"),
        "the reason names the integrity check: {r}"
    );
    assert!(
        emulator.stored(PAYTO).expect("stored").is_empty(),
        "nothing was delivered"
    );
}

/// Key problems stop the start with a clear message: a missing key, a key that is not 64
/// hex characters (never echoed), a rotation that dropped the key spooled documents need,
/// and the wrong key for what is spooled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_malformed_or_wrong_keys_stop_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let emulator = taler(dir.path()).await;
    let by_env = config(
        dir.path(),
        &emulator,
        "spool_encryption = { key = { env = \"SPOOL_KEY\" }, key_id = \"k1\" }",
    );
    let missing = refused_start(&by_env, dir.path(), &[]);
    assert!(
        missing.contains("spool_encryption.key") && missing.contains("SPOOL_KEY"),
        "{missing}"
    );
    let malformed = refused_start(&by_env, dir.path(), &[("SPOOL_KEY", "not-a-key-0123")]);
    assert!(
        malformed.contains("spool_encryption.key") && malformed.contains("64 hexadecimal"),
        "{malformed}"
    );
    assert!(!malformed.contains("not-a-key-0123"), "{malformed}");

    // Spool one document under k1.
    emulator.faults.set(outage());
    let gateway = Proc::spawn(
        &[
            "serve",
            "--config",
            &by_env.to_string_lossy(),
            "--data-dir",
            &data_dir(dir.path()).to_string_lossy(),
        ],
        &[("ENCRYPTION_TEST_KEY", KEY), ("SPOOL_KEY", K1)],
    );
    let client = reqwest::Client::new();
    let id = put(&client, &gateway.url, marked_pdf(100_000, 5).await).await;
    wait_attempted(&client, &gateway.url, &id).await;
    gateway.terminate();

    // k1 rotated out without being kept in `previous`.
    let dropped = config(
        dir.path(),
        &emulator,
        "spool_encryption = { key = { env = \"SPOOL_KEY\" }, key_id = \"k2\" }",
    );
    let lost = refused_start(&dropped, dir.path(), &[("SPOOL_KEY", K2)]);
    assert!(lost.contains("`k1`") && lost.contains("previous"), "{lost}");
    // The id k1 with other bytes: the key is wrong.
    let wrong = refused_start(&by_env, dir.path(), &[("SPOOL_KEY", K2)]);
    assert!(wrong.contains("wrong key"), "{wrong}");
    assert!(!wrong.contains(K2) && !wrong.contains(K1), "{wrong}");
}

/// The sandbox generates its spool key once, keeps it private, and seals with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_keeps_a_private_spool_key_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = Proc::sandbox(dir.path(), KEY);
    let key_file = dir.path().join("spool-key");
    let meta = std::fs::metadata(&key_file).expect("spool-key");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    let first = std::fs::read_to_string(&key_file).expect("key");
    assert_eq!(first.trim().len(), 64);
    gateway.terminate();
    let _gateway = Proc::sandbox(dir.path(), KEY);
    assert_eq!(std::fs::read_to_string(&key_file).expect("key"), first);
}

/// The emulators start before the gateway and made the data dir (0755) before it could be
/// made private: the sandbox's ledger was readable by every local user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_the_sandbox_data_dir_is_private_although_its_emulators_start_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("fresh").join("data");
    let _gateway = Proc::sandbox(&data, KEY);
    let meta = std::fs::metadata(&data).expect("data dir");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o700
    );
}
