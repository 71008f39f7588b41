//! Interop: an independent Python client (libsodium via PyNaCl, GNU Taler's taler-util,
//! requests) against docgate's Taler emulator, for every payto-hash variant — and the same
//! client recomputing the published vectors.
//!
//! Needs `DOCGATE_INTEROP_PYTHON`: a python with `interop/requirements.txt` installed (the
//! repository's test script creates that venv). Without it this test fails, on purpose:
//! a silently skipped interop test proves nothing.

mod common;

use std::{path::PathBuf, process::Stdio, time::Duration};

use common::*;
use docgate_core::Secret;
use docgate_taler::PaytoHash;

const SEED_HEX: &str = "5c2cf7c1a9a4e0b1f8d3e6a7b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6";

fn python() -> String {
    std::env::var("DOCGATE_INTEROP_PYTHON").unwrap_or_else(|_| {
        panic!(
            "DOCGATE_INTEROP_PYTHON is not set: point it at a python with \
             providers/taler/interop/requirements.txt installed, e.g.\n  \
             python3 -m venv /tmp/venv-taler && /tmp/venv-taler/bin/pip install -r \
             providers/taler/interop/requirements.txt\n  \
             DOCGATE_INTEROP_PYTHON=/tmp/venv-taler/bin/python cargo test -p docgate-taler"
        )
    })
}

fn script() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/interop/taler_interop.py"
    ))
}

async fn run(args: &[&str], env: &[(&str, String)]) -> serde_json::Value {
    let mut command = tokio::process::Command::new(python());
    command
        .arg(script())
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the interop script finishes within 2 minutes")
        .expect("the interop python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "interop script {args:?} failed ({}):\n{stderr}\n{stdout}",
        output.status
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_python_client_reproduces_the_published_vectors() {
    let vectors = fixture("vectors.json");
    let body = fixture("body.bin");
    let result = run(
        &[
            "vectors",
            vectors.to_str().expect("utf-8 path"),
            body.to_str().expect("utf-8 path"),
        ],
        &[],
    )
    .await;
    assert_eq!(result["variants"], serde_json::json!(["A", "B", "C"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_python_client_is_served_like_by_the_exchange_in_every_variant() {
    for variant in [PaytoHash::A, PaytoHash::B, PaytoHash::C] {
        let setup = start_with(|o| {
            o.payto_hash = variant;
            o.upload_limit = 2 * 1024 * 1024;
            o.sandbox_key = Some(Secret::new(SEED_HEX));
        })
        .await;
        let config = setup.emulator.sandbox_config();
        let payto = "payto://iban/DE89370400440532013000?receiver-name=Max%20Mustermann";
        let env = [
            ("TALER_INTEROP_SEED", SEED_HEX.to_string()),
            ("TALER_INTEROP_PURPOSE", config.purpose.to_string()),
            ("TALER_INTEROP_VARIANT", variant.to_string()),
            ("TALER_INTEROP_PAYTO", payto.to_string()),
            (
                "TALER_INTEROP_SIGNATURE_INVALID",
                config
                    .error_codes
                    .signature_invalid
                    .expect("set")
                    .to_string(),
            ),
            (
                "TALER_INTEROP_THIRD_PARTY_UNKNOWN",
                config
                    .error_codes
                    .third_party_unknown
                    .expect("set")
                    .to_string(),
            ),
            ("TALER_INTEROP_LIMIT", config.upload_limit.to_string()),
        ];
        let result = run(&["exchange", &setup.emulator.url()], &env).await;
        assert_eq!(result["variant"], variant.to_string());
        assert_eq!(
            result["checked"].as_array().map(Vec::len),
            Some(9),
            "{result}"
        );
        // What the Python client stored is what the Rust side sees, for this customer only.
        assert_eq!(setup.emulator.stored(payto).expect("listing").len(), 2);
        setup.emulator.stop().await.expect("stop");
    }
}
