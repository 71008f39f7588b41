//! Real tus clients we did not write — tus-js-client (npm, under Node) and tuspy (PyPI) —
//! against the sandbox binary, with upload-session tokens; and a `kill -9` between two
//! PATCHes.

mod common;

use std::{path::Path, process::Command, time::Duration};

use common::{node_dir, pdf_bytes, Proc, PAYTO};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const KEY: &str = "tus-clients-key";

/// Mint a session with the API key: (id, token).
async fn mint(client: &reqwest::Client, gw: &str, body: Value) -> (String, String) {
    let res = client
        .post(format!("{gw}/v1/upload-sessions"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .expect("mint");
    assert_eq!(res.status(), 201);
    let v: Value = res.json().await.expect("json");
    (
        v["id"].as_str().expect("id").to_owned(),
        v["token"].as_str().expect("token").to_owned(),
    )
}

/// Run a client and parse the one JSON line it prints.
fn run_json(mut cmd: Command) -> Value {
    let out = cmd.output().expect("the client runs");
    assert!(
        out.status.success(),
        "client failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().expect("one line of output");
    serde_json::from_str(line).expect("JSON")
}

fn python() -> String {
    std::env::var("DOCGATE_INTEROP_PYTHON")
        .expect("DOCGATE_INTEROP_PYTHON names the interop venv's python: run ./scripts/test.sh")
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tus_js_client_uploads_15_mib_with_a_cut_and_a_resume_then_completes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Proc::sandbox(&dir.path().join("data"), KEY);
    let client = reqwest::Client::new();
    let (id, token) = mint(
        &client,
        &gw.url,
        json!({"provider": "taler", "fields": {"payto": PAYTO}}),
    )
    .await;
    let doc = pdf_bytes(15 << 20, 7).await;
    let file = common::write_file(dir.path(), "passport.pdf", &doc);
    let mut cmd = Command::new("node");
    cmd.arg(Path::new(&node_dir()).join("tus_upload.mjs"))
        .args([&gw.url, &id, &token])
        .arg(&file)
        .arg((1 << 20).to_string())
        .current_dir(node_dir());
    let out = run_json(cmd);
    let cut = out["server_offset_after_cut"].as_u64().expect("offset");
    assert!(
        cut > 0 && cut < doc.len() as u64,
        "the first run was cut mid-way: {out}"
    );
    assert_eq!(
        cut % (1 << 20),
        0,
        "the server kept whole 1 MiB chunks: {out}"
    );
    assert_eq!(out["finished"], true, "{out}");
    assert_eq!(out["complete_status"], 201, "{out}");
    assert_eq!(out["receipt"]["status"], "delivered", "{out}");
    assert_eq!(out["receipt"]["documents"][0]["sha256"], sha256_hex(&doc));
    assert_eq!(out["receipt"]["documents"][0]["size"], doc.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuspy_uploads_with_sha1_checksums_and_terminates_an_upload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Proc::sandbox(&dir.path().join("data"), KEY);
    let client = reqwest::Client::new();
    let (id, token) = mint(
        &client,
        &gw.url,
        json!({
            "provider": "sila",
            "fields": {"user_handle": "test_user.silamoney.eth", "document_type": "id_drivers_license"},
            "slots": ["statement", "spare"],
        }),
    )
    .await;
    let doc = pdf_bytes(1_300_000, 8).await;
    let file = common::write_file(dir.path(), "statement.pdf", &doc);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/python/tus_interop.py");
    let mut cmd = Command::new(python());
    cmd.arg(script).args([&gw.url, &token]).arg(&file);
    let out = run_json(cmd);
    assert_eq!(out["offset"], doc.len(), "{out}");
    assert_eq!(out["length"], doc.len(), "{out}");
    assert_eq!(out["terminated_status"], 204, "{out}");
    assert_eq!(out["head_after_termination"], 410, "{out}");

    let res = client
        .post(format!("{}/v1/upload-sessions/{id}/complete", gw.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("complete");
    let receipt: Value = res.json().await.expect("json");
    assert_eq!(receipt["status"], "delivered", "{receipt}");
    let docs = receipt["documents"].as_array().expect("documents");
    assert_eq!(
        docs.len(),
        1,
        "the terminated upload is not part of it: {receipt}"
    );
    assert_eq!(docs[0]["slot"], "statement");
    assert_eq!(docs[0]["sha256"], sha256_hex(&doc));
}

/// PATCH a part, `kill -9` the gateway, start it again on the same data: HEAD gives the last
/// durable offset, and the upload completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_kill_9_between_patches_resumes_from_the_last_durable_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let gw = Proc::sandbox(&data, KEY);
    let client = reqwest::Client::new();
    let (id, token) = mint(
        &client,
        &gw.url,
        json!({"provider": "taler", "fields": {"payto": PAYTO}}),
    )
    .await;
    let doc = pdf_bytes(3 << 20, 9).await;
    let tus = |gw: &str, method: reqwest::Method, path: &str| {
        client
            .request(method, format!("{gw}{path}"))
            .bearer_auth(&token)
            .header("tus-resumable", "1.0.0")
    };
    let created = tus(&gw.url, reqwest::Method::POST, "/v1/tus/")
        .header("upload-length", doc.len().to_string())
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"]
        .to_str()
        .expect("loc")
        .to_owned();
    let first = tus(&gw.url, reqwest::Method::PATCH, &location)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "0")
        .body(doc[..1 << 20].to_vec())
        .send()
        .await
        .expect("patch");
    assert_eq!(first.status(), 204);
    gw.kill9();

    let gw = Proc::sandbox(&data, KEY);
    let head = tus(&gw.url, reqwest::Method::HEAD, &location)
        .send()
        .await
        .expect("head");
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["upload-offset"], (1u64 << 20).to_string());
    let rest = tus(&gw.url, reqwest::Method::PATCH, &location)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", (1u64 << 20).to_string())
        .body(doc[1 << 20..].to_vec())
        .send()
        .await
        .expect("patch");
    assert_eq!(rest.status(), 204);
    let res = client
        .post(format!("{}/v1/upload-sessions/{id}/complete", gw.url))
        .bearer_auth(&token)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("complete");
    assert_eq!(res.status(), 201);
    let receipt: Value = res.json().await.expect("json");
    assert_eq!(
        receipt["documents"][0]["sha256"],
        sha256_hex(&doc),
        "{receipt}"
    );
}
