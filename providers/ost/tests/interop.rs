//! The real OST SDK (`ost-kyc-sdk-python==2.0.2` from PyPI) against `docgate emulate ost`.
//!
//! Needs `DOCGATE_INTEROP_PYTHON`: a Python with `providers/ost/interop/requirements.txt`
//! installed (the repository's test script creates that venv). Without it this test fails:
//! skipping silently would let the one check made by a client nobody here wrote go missing.

mod common;

use std::{process::Stdio, time::Duration};

use docgate_ost::emulator::KycStatus;
use serde_json::Value;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_python_sdk_calls_every_service_method_against_the_emulator() {
    let python = std::env::var("DOCGATE_INTEROP_PYTHON").unwrap_or_else(|_| {
        panic!(
            "DOCGATE_INTEROP_PYTHON is not set: point it at a python with \
             providers/ost/interop/requirements.txt installed, e.g.\n  \
             python3.11 -m venv /tmp/venv-ost && /tmp/venv-ost/bin/pip install -r \
             providers/ost/interop/requirements.txt && \
             DOCGATE_INTEROP_PYTHON=/tmp/venv-ost/bin/python cargo test -p docgate-ost"
        )
    });
    let (emu, dir) = start_emulator(|_| {}).await;
    let jpeg_file = dir.path().join("id.jpg");
    let pdf_file = dir.path().join("residence.pdf");
    let jpeg_bytes = jpeg(230 * 1024);
    let pdf_bytes = pdf(240 * 1024);
    std::fs::write(&jpeg_file, &jpeg_bytes).expect("write jpeg");
    std::fs::write(&pdf_file, &pdf_bytes).expect("write pdf");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/ost_sdk_interop.py");

    let child = tokio::process::Command::new(&python)
        .arg(script)
        .arg(emu.url())
        .arg(emu.api_key())
        .arg(emu.api_secret())
        .arg(&jpeg_file)
        .arg(&pdf_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the SDK script finishes within 2 minutes")
        .expect("the SDK script runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the SDK script failed ({}):\n{stderr}\n{stdout}",
        output.status
    );
    // Shown with --nocapture: what the SDK saw.
    println!("{stdout}");
    let result: Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("last line is the JSON summary ({e}):\n{stdout}"));

    // What the SDK's upload left in S3 is byte for byte what it sent.
    for (slot, expected) in [
        ("document_id", &jpeg_bytes),
        ("selfie", &jpeg_bytes),
        ("residence_proof", &pdf_bytes),
    ] {
        let key = result["keys"][slot].as_str().expect("key");
        let stored = std::fs::read(emu.object_path(key).expect("path")).expect("stored");
        assert!(stored == *expected, "{slot}: bytes differ");
    }
    let post_key = result["post_key"].as_str().expect("post key");
    let stored = std::fs::read(emu.object_path(post_key).expect("path")).expect("posted");
    assert!(stored == pdf_bytes, "the form upload's bytes differ");

    // The submission the SDK made is on record with the SDK's keys, decided as the script
    // asked through the control API.
    let user_id = result["user_id"].as_u64().expect("user id");
    let kyc = emu.kyc(user_id).expect("submission recorded");
    assert_eq!(kyc.details["selfie_file_path"], result["keys"]["selfie"]);
    assert_eq!(result["submission_count"], 1);
    assert_eq!(kyc.state.kyc_status(), KycStatus::Approved);
    assert_eq!(kyc.state.last_acted_by, "Interop Admin");
    assert_eq!(result["detail_selfie_bytes"], jpeg_bytes.len());
    assert_eq!(
        result["statuses"],
        serde_json::json!({user_id.to_string(): "approved", "11002": "denied", "11003": "pending"})
    );

    // The three emails the SDK asked for, and only those (the refused ones sent nothing).
    let sent: Vec<(u64, String)> = emu
        .sent_emails()
        .into_iter()
        .map(|e| (e.user_id, e.template))
        .collect();
    assert_eq!(
        sent,
        vec![
            (user_id, "kyc_approved".to_string()),
            (11002, "kyc_denied".to_string()),
            (11003, "kyc_issue".to_string())
        ]
    );
    assert_eq!(emu.sent_emails()[0].template_vars["name"], "Aniket");
    emu.stop().await.expect("stop");
}
