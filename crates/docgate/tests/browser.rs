//! docgate's own pages in a real browser: Debian's Chromium, driven by playwright-core
//! (npm; it downloads nothing) from `interop/node/browser_e2e.mjs`, against the sandbox
//! binary. Screenshots land in `target/browser/`; a failure names the step that failed.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use common::{node_dir, pdf_bytes, Proc, PAYTO};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const KEY: &str = "browser-key";
const TEN_MIB: u64 = 10 << 20;

fn chromium() -> String {
    let path = std::env::var("DOCGATE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&path).exists(),
        "no Chromium at {path}: install the Debian package `chromium` (or set DOCGATE_CHROMIUM)"
    );
    path
}

/// `target/browser/<name>`: where screenshots are kept after the run.
fn artefacts(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/browser")
        .join(name);
    // A previous run's screenshots would mislead.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("artefact directory");
    dir
}

/// A JPEG of exactly `len` bytes: a JFIF header, then noise that carries no other format's
/// signature.
fn jpeg(len: usize, seed: u32) -> Vec<u8> {
    let mut v = vec![
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0x01,
    ];
    let mut x = seed | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        // Letters only: noise that never spells another format's magic bytes.
        v.push(b'a' + ((x >> 8) % 26) as u8);
    }
    v
}

/// Values the sandbox's emulators accept for each provider's fields.
fn fields_for(provider: &str) -> Value {
    match provider {
        "taler" => json!({ "payto": PAYTO }),
        "sila" => {
            json!({ "user_handle": "test_user.silamoney.eth", "document_type": "id_drivers_license" })
        }
        "finext" => json!({
            "kind": "address", "username": "lili111", "address_type": "Utility Bill",
            "address_issued_by": "City Power", "address_issued_date": "2026-11-01",
            "address_language": "English"
        }),
        _ => json!({}),
    }
}

/// Run the browser on `plan`; the script's JSON verdict.
fn run_browser(plan: &Value, dir: &Path) -> Value {
    let plan_path = dir.join("plan.json");
    std::fs::write(&plan_path, serde_json::to_vec(plan).expect("plan")).expect("write plan");
    let out = Command::new("node")
        .arg(node_dir().join("browser_e2e.mjs"))
        .arg(&plan_path)
        .current_dir(node_dir())
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let verdict: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "no verdict from the browser script:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(
        out.status.success() && verdict["ok"] == true,
        "the browser test failed at step `{}`: {}\n(screenshots in {})\n{}",
        verdict["step"],
        verdict["error"],
        plan["out_dir"],
        String::from_utf8_lossy(&out.stderr)
    );
    verdict
}

/// An upload session minted with the tenant's key, as its backend would.
async fn mint_session(gateway: &str, request: Value) -> Value {
    reqwest::Client::new()
        .post(format!("{gateway}/v1/upload-sessions"))
        .bearer_auth(KEY)
        .json(&request)
        .send()
        .await
        .expect("mint")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upload_page_delivers_for_every_provider_resumes_after_a_cut_and_refuses_a_wrong_type()
{
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Proc::sandbox(&dir.path().join("data"), KEY);
    let providers: Value = reqwest::Client::new()
        .get(format!("{}/v1/providers", gw.url))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("providers")
        .json()
        .await
        .expect("json");
    let mut scenarios = Vec::new();
    let mut expected = Vec::new();
    for (n, p) in providers["providers"]
        .as_array()
        .expect("list")
        .iter()
        .enumerate()
    {
        let name = p["name"].as_str().expect("name");
        let policy = &p["policy"];
        // The required slots; where none is required (OST), the person ticks the first two.
        let (slots, ticked): (Vec<String>, Vec<String>) = match policy["slots"]["kind"].as_str() {
            Some("named") => {
                let named = policy["slots"]["slots"].as_array().expect("slots");
                let required: Vec<String> = named
                    .iter()
                    .filter(|s| s["required"] == true)
                    .map(|s| s["name"].as_str().expect("slot").to_owned())
                    .collect();
                if required.is_empty() {
                    let two: Vec<String> = named
                        .iter()
                        .take(2)
                        .map(|s| s["name"].as_str().expect("slot").to_owned())
                        .collect();
                    (two.clone(), two)
                } else {
                    (required, Vec::new())
                }
            }
            _ => (vec!["file".to_owned()], Vec::new()),
        };
        let per_doc = TEN_MIB
            .min(policy["max_document_bytes"].as_u64().expect("max"))
            .min(policy["max_request_bytes"].as_u64().expect("max") / slots.len() as u64 - 4096);
        let accepts = |t: &str| {
            policy["accepted"]
                .as_array()
                .expect("accepted")
                .iter()
                .any(|a| {
                    a == t
                        || a.as_str().is_some_and(|a| {
                            a.ends_with("/*") && t.starts_with(a.trim_end_matches('*'))
                        })
                })
        };
        let mut files = serde_json::Map::new();
        let mut sums = Vec::new();
        for (i, slot) in slots.iter().enumerate() {
            let seed = (n * 10 + i + 1) as u32;
            let (bytes, file) = if accepts("application/pdf") {
                (
                    pdf_bytes(per_doc, u64::from(seed)).await,
                    format!("{name}-{slot}.pdf"),
                )
            } else {
                (jpeg(per_doc as usize, seed), format!("{name}-{slot}.jpg"))
            };
            sums.push(hex::encode(Sha256::digest(&bytes)));
            let path = common::write_file(dir.path(), &file, &bytes);
            files.insert(slot.clone(), json!(path));
        }
        expected.push((format!("{name}-desktop"), sums));
        scenarios.push(json!({
            "name": name, "provider": name, "fields": fields_for(name), "files": files,
            "slots": ticked,
        }));
    }
    // A phone whose connection drops after the first 2 MiB chunk.
    let doc = pdf_bytes(TEN_MIB, 99).await;
    let cut = common::write_file(dir.path(), "cut.pdf", &doc);
    expected.push(("cut-phone".into(), vec![hex::encode(Sha256::digest(&doc))]));
    scenarios.push(json!({
        "name": "cut", "viewport": "phone", "provider": "taler", "fields": fields_for("taler"),
        "files": { "file": cut }, "cut_after_patches": 1,
    }));
    // A file of a type Taler does not take: refused before a byte is sent.
    let text = common::write_file(dir.path(), "notes.txt", b"just some text\n");
    scenarios.push(json!({
        "name": "wrong-type", "provider": "taler", "fields": fields_for("taler"),
        "files": { "file": text }, "expect_refusal": true,
    }));

    // A session link from a tenant's backend; the token must leave the address at once.
    let session = mint_session(
        &gw.url,
        json!({ "provider": "taler", "fields": fields_for("taler") }),
    )
    .await;
    let token = session["token"].as_str().expect("token");
    scenarios.push(json!({
        "name": "link", "link": true, "session": session["id"], "token": token,
    }));

    let out_dir = artefacts("upload-page");
    let verdict = run_browser(
        &json!({
            "base": gw.url, "chromium": chromium(), "out_dir": out_dir, "scenarios": scenarios,
        }),
        dir.path(),
    );
    let results = verdict["results"].as_array().expect("results");
    for (name, sums) in &expected {
        let r = results
            .iter()
            .find(|r| r["name"] == name.as_str())
            .unwrap_or_else(|| panic!("no result for {name}"));
        assert_eq!(r["status"], "delivered", "{name}: {r}");
        let shown: Vec<&str> = r["sha256"]
            .as_array()
            .expect("sha256 list")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            shown, *sums,
            "{name}: the page shows the documents' SHA-256"
        );
    }
    let cut = results
        .iter()
        .find(|r| r["name"] == "cut-phone")
        .expect("cut");
    assert_eq!(cut["aborted"], 1, "the network was cut once: {cut}");
    assert!(
        cut["heads"].as_u64() >= Some(1),
        "the page asked where to resume: {cut}"
    );
    let refused = results
        .iter()
        .find(|r| r["name"] == "wrong-type-desktop")
        .expect("refusal");
    assert_eq!(
        refused["patches"], 0,
        "no byte of a refused file is sent: {refused}"
    );
    // The token stayed in the address, so in the browser's history, readable by anyone at
    // that computer until the session expired.
    let link = results.iter().find(|r| r["name"] == "link").expect("link");
    let address = link["address"].as_str().expect("address");
    assert!(
        !address.contains(token) && !address.contains("#"),
        "the token left the address: {address}"
    );
    assert_eq!(link["reopened"], true, "a reload finds the session: {link}");
    let text = refused["refusal"].as_str().expect("refusal text");
    assert!(
        text.contains("text/plain") && text.contains("application/pdf"),
        "the gateway's own message names the type and what is accepted: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_finds_a_rejected_upload_retries_it_to_delivered_and_erases_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Proc::sandbox(&dir.path().join("data"), KEY);
    let taler = gw
        .banner
        .iter()
        .find_map(|l| l.trim().strip_prefix("taler   emulator at "))
        .expect("the taler emulator's URL in the banner")
        .trim()
        .to_owned();
    let client = reqwest::Client::new();
    let faults = |body: Value| {
        let client = client.clone();
        let url = format!("{taler}/__emulator/faults");
        async move {
            let res = client.put(url).json(&body).send().await.expect("faults");
            assert!(res.status().is_success(), "{}", res.status());
        }
    };
    // The exchange refuses the next request: the upload ends `rejected`.
    faults(json!({"fail_next": 1, "fail_status": 400})).await;
    let doc = pdf_bytes(300_000, 5).await;
    let form = reqwest::multipart::Form::new()
        .text("provider", "taler")
        .text("payto", PAYTO)
        .part(
            "file",
            reqwest::multipart::Part::bytes(doc).file_name("statement.pdf"),
        );
    let res = client
        .post(format!("{}/v1/uploads", gw.url))
        .bearer_auth(KEY)
        .header("prefer", "respond-async")
        .multipart(form)
        .send()
        .await
        .expect("upload");
    let receipt: Value = res.json().await.expect("json");
    let id = receipt["id"].as_str().expect("id").to_owned();
    let settled = common::wait_final(
        &client,
        &gw.url,
        KEY,
        &id,
        std::time::Duration::from_secs(30),
    )
    .await;
    assert_eq!(settled["status"], "rejected", "{settled}");
    faults(json!({})).await;

    let verdict = run_browser(
        &json!({
            "base": gw.url, "chromium": chromium(), "out_dir": artefacts("console"),
            "scenarios": [{ "name": "console", "console": true, "key": KEY,
                            "status": "rejected", "upload": id }],
        }),
        dir.path(),
    );
    let result = &verdict["results"][0];
    assert_eq!(result["erased"], true, "{result}");
    let history: Vec<&str> = result["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        history.contains(&"retried"),
        "the retry is in the history: {history:?}"
    );
    // After the erasure, the receipt is a tombstone: no filename, still the digest.
    let tomb: Value = client
        .get(format!("{}/v1/uploads/{id}", gw.url))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert!(tomb["erased_at"].is_string(), "{tomb}");
    assert!(!tomb.to_string().contains("statement.pdf"), "{tomb}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uppy_example_uploads_to_a_session_unchanged() {
    let uppy = std::env::var("DOCGATE_UPPY_DIR")
        .expect("DOCGATE_UPPY_DIR names examples/uppy, installed and built: run ./scripts/test.sh");
    // The browser script serves the example on this loopback port (picked free now; the
    // gateway must know the origin when it starts).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let origin = format!("http://127.0.0.1:{port}");
    let origin = origin.as_str();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let gw = Proc::spawn(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data.to_string_lossy(),
        ],
        &[
            ("DOCGATE_SANDBOX_KEY", KEY),
            ("DOCGATE_SANDBOX_ORIGINS", origin),
        ],
    );
    let client = reqwest::Client::new();
    let session = mint_session(
        &gw.url,
        json!({"provider": "taler", "fields": {"payto": PAYTO}, "origin": origin}),
    )
    .await;
    let token = session["token"].as_str().expect("token");
    let doc = pdf_bytes(3 << 20, 17).await;
    let file = common::write_file(dir.path(), "passport.pdf", &doc);
    run_browser(
        &json!({
            "base": gw.url, "chromium": chromium(), "out_dir": artefacts("uppy"),
            "scenarios": [{
                "name": "uppy", "uppy": true, "dir": uppy, "file": file, "port": port,
                "page": format!("{origin}/index.html#gateway={}&token={token}", gw.url),
            }],
        }),
        dir.path(),
    );
    let id = session["upload_id"].as_str().expect("upload id");
    let receipt = common::wait_final(
        &client,
        &gw.url,
        KEY,
        id,
        std::time::Duration::from_secs(60),
    )
    .await;
    assert_eq!(receipt["status"], "delivered", "{receipt}");
    assert_eq!(
        receipt["documents"][0]["sha256"],
        hex::encode(Sha256::digest(&doc)),
        "{receipt}"
    );
}
