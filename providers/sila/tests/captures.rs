//! The emulator against traffic the real Python SDK (silasdk 1.1.3) produced: every capture
//! replayed byte for byte must be accepted, and tampered copies refused the way Sila refuses
//! them. Plus the signature vectors sent as real requests.

mod common;

use std::{collections::BTreeMap, path::PathBuf};

use common::*;
use docgate_sila::{
    emulator::{TEST_APP_PRIVATE_KEY, TEST_USER_PRIVATE_KEY},
    signing::PrivateKey,
};
use serde_json::Value;

fn captures() -> BTreeMap<String, Vec<u8>> {
    let dir: PathBuf = fixtures().join("captures");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("captures dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "raw") {
            let name = path
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .to_string();
            out.insert(name, std::fs::read(&path).expect("read capture"));
        }
    }
    out
}

fn capture(name: &str) -> Vec<u8> {
    captures()
        .remove(name)
        .unwrap_or_else(|| panic!("capture {name}"))
}

/// Replace `from` with `to` (same length) once inside `raw`.
fn tamper(raw: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len(), "tampering keeps Content-Length right");
    let pos = raw
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{:?} not in capture", String::from_utf8_lossy(from)));
    let mut out = raw.to_vec();
    out[pos..pos + to.len()].copy_from_slice(to);
    out
}

/// The big-logo capture was made for a user `u.silamoney.eth` holding the test user key;
/// register it the way a Sila app would have registered its user.
async fn emulator_for_captures() -> (docgate_sila::emulator::Emulator, tempfile::TempDir) {
    start_emulator(|o| {
        let user = PrivateKey::from_hex(TEST_USER_PRIVATE_KEY)
            .expect("key")
            .address();
        o.users.insert("u.silamoney.eth".into(), user);
    })
    .await
}

#[tokio::test]
async fn every_python_sdk_capture_is_accepted_as_is() {
    let (emu, _dir) = emulator_for_captures().await;
    let all = captures();
    assert_eq!(all.len(), 11, "py_001..py_010 and the big unicode logo");
    for (name, raw) in &all {
        let (status, _, body) = raw_exchange(emu.server.addr, raw).await;
        assert_eq!(status, 200, "{name}: {body}");
        if name.contains("getmessage") {
            let message = body["message"].as_str().expect("message key");
            assert!(message.ends_with("_msg"), "{name}: {body}");
        } else {
            assert_eq!(body["success"], true, "{name}: {body}");
            assert_eq!(body["status"], "SUCCESS", "{name}: {body}");
        }
        if name.contains("documents_") || name.contains("big_logo") {
            assert!(body["reference_id"].is_string(), "{name}: {body}");
        }
    }
    // 006, 007, big logo: one document each; 008, 009: two each.
    let stored = emu.stored();
    assert_eq!(stored.len(), 7);
    let multi: Vec<_> = stored
        .iter()
        .filter(|d| d.label.starts_with("file_"))
        .collect();
    assert_eq!(multi.len(), 4);
    let logo = stored
        .iter()
        .find(|d| d.user_handle == "u.silamoney.eth")
        .expect("big logo stored");
    assert_eq!(
        logo.name.as_deref(),
        Some("Ünïcode näme ✓"),
        "\\u escapes decoded"
    );
    assert_eq!(
        logo.size,
        std::fs::metadata(
            emu.data_dir()
                .join("documents")
                .join(format!("{}.png", logo.document_id))
        )
        .expect("stored file")
        .len()
    );
    emu.stop().await.expect("stop");
}

#[tokio::test]
async fn the_five_getmessage_templates_are_what_app_init_needs() {
    let (emu, _dir) = emulator_for_captures().await;
    let mut messages = Vec::new();
    for n in 1..=5 {
        let name = format!("py_00{n}_GET_0.2_getmessage");
        let (_, _, body) = raw_exchange(emu.server.addr, &capture(&name)).await;
        messages.push(body["message"].as_str().expect("message").to_owned());
    }
    assert_eq!(
        messages,
        [
            "header_msg",
            "entity_msg",
            "identity_msg",
            "crypto_msg",
            "link_account_msg"
        ]
    );
}

#[tokio::test]
async fn a_flipped_file_byte_is_a_hash_mismatch() {
    let (emu, _dir) = emulator_for_captures().await;
    let raw = tamper(&capture("py_006_POST_0.2_documents"), b"IDATx", b"IDATy");
    let (status, _, body) = raw_exchange(emu.server.addr, &raw).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["success"], false);
    assert_eq!(body["status"], "FAILURE");
    assert_eq!(
        body["validation_details"]["hash"],
        "Uploaded file's signature does not match file_hash"
    );
    let multi = tamper(
        &capture("py_008_POST_0.2_documents"),
        b"trailer<<>>",
        b"trailer<<!>",
    );
    let (status, _, body) = raw_exchange(emu.server.addr, &multi).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["validation_details"]["file_metadata"]["file_2"]["hash"].is_string(),
        "{body}"
    );
    assert!(
        emu.stored().is_empty(),
        "nothing of a refused request is kept"
    );
}

#[tokio::test]
async fn a_flipped_data_byte_breaks_the_signatures() {
    let (emu, _dir) = emulator_for_captures().await;
    for raw in [
        tamper(
            &capture("py_006_POST_0.2_documents"),
            b"\"front side\"",
            b"\"front sidE\"",
        ),
        tamper(
            &capture("py_006_POST_0.2_documents"),
            b"\"hash\": \"b1ff",
            b"\"hash\": \"c1ff",
        ),
        tamper(
            &capture("py_009_POST_0.2_documents"),
            b"\"license front\"",
            b"\"license FRONT\"",
        ),
        tamper(
            &capture("py_010_POST_0.2_document_types"),
            b"\"created\": 1795",
            b"\"created\": 1796",
        ),
    ] {
        let (status, _, body) = raw_exchange(emu.server.addr, &raw).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["status"], "FAILURE");
        assert!(
            body["message"]
                .as_str()
                .expect("message")
                .contains("signature"),
            "{body}"
        );
    }
    assert!(emu.stored().is_empty());
}

#[tokio::test]
async fn missing_or_swapped_signature_headers_are_refused() {
    let (emu, _dir) = emulator_for_captures().await;
    let raw = capture("py_006_POST_0.2_documents");
    let text = String::from_utf8_lossy(&raw).to_string();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .expect("header line")
            .to_owned()
    };
    let (auth, user) = (value("authsignature: "), value("usersignature: "));

    let no_user = remove_header_line(&raw, &format!("usersignature: {user}"));
    let (status, _, body) = raw_exchange(emu.server.addr, &no_user).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["status"], "FAILURE");

    let swapped = swap(&raw, &auth, &user);
    let (status, _, body) = raw_exchange(emu.server.addr, &swapped).await;
    assert_eq!(status, 403, "{body}");
    assert!(emu.stored().is_empty());
}

fn remove_header_line(raw: &[u8], line: &str) -> Vec<u8> {
    let needle = format!("{line}\r\n");
    let pos = raw
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .expect("header line present");
    [&raw[..pos], &raw[pos + needle.len()..]].concat()
}

/// Swap two equally long header values without touching the (binary) body.
fn swap(raw: &[u8], a: &str, b: &str) -> Vec<u8> {
    let placeholder = vec![b'#'; a.len()];
    let first = tamper(raw, a.as_bytes(), &placeholder);
    let second = tamper(&first, b.as_bytes(), a.as_bytes());
    tamper(&second, &placeholder, b.as_bytes())
}

#[tokio::test]
async fn labels_must_match_file_metadata() {
    let (emu, _dir) = emulator_for_captures().await;
    let raw = tamper(
        &capture("py_008_POST_0.2_documents"),
        b"name=\"file_2\"; filename=\"file_2\"",
        b"name=\"file_3\"; filename=\"file_3\"",
    );
    let (status, _, body) = raw_exchange(emu.server.addr, &raw).await;
    assert_eq!(status, 400, "{body}");
    let details = &body["validation_details"];
    assert!(details["file_metadata"]["file_2"].is_string(), "{body}");
    assert!(details["files"]["file_3"].is_string(), "{body}");
}

#[tokio::test]
async fn part_filenames_and_content_types_are_ignored() {
    let (emu, _dir) = emulator_for_captures().await;
    // py_009 labels its parts image/png and application/pdf with real names; lie about all.
    let raw = capture("py_009_POST_0.2_documents");
    let raw = tamper(&raw, b"filename=\"tiny.pdf\"", b"filename=\"evil.exe\"");
    let raw = tamper(
        &raw,
        b"Content-Type: application/pdf",
        b"Content-Type: image/gif;q=123",
    );
    let raw = tamper(&raw, b"Content-Type: image/png", b"Content-Type: text/html");
    let (status, _, body) = raw_exchange(emu.server.addr, &raw).await;
    assert_eq!(status, 200, "{body}");
}

/// The signature vectors as real requests: the SDK-style signatures are accepted, the
/// EIP-191-prefixed one is refused with 403.
#[tokio::test]
async fn signature_vectors_work_on_the_wire_and_eip191_is_refused() {
    let (emu, _dir) = start_emulator(|_| {}).await;
    let vectors: Value =
        serde_json::from_slice(&fixture("signature_vectors.json")).expect("vectors");
    let png = fixture("red1x1.png");
    for style in ["py_style_documents", "node_style_documents"] {
        let v = &vectors[style];
        let data = v["message"].as_str().expect("message").as_bytes();
        let file = || {
            vec![RawFile {
                label: "file",
                content_type: "image/png",
                bytes: png.clone(),
            }]
        };
        let sig = |k: &str| v[k].as_str().expect("sig").to_owned();
        let (status, body) = signed_upload(
            &emu.url(),
            data,
            file(),
            &[
                ("authsignature", sig("app_signature")),
                ("usersignature", sig("user_signature")),
            ],
        )
        .await;
        assert_eq!(status, 200, "{style}: {body}");
        assert_eq!(body["reference_id"], "00000000-0000-4000-8000-000000000000");

        let (status, body) = signed_upload(
            &emu.url(),
            data,
            file(),
            &[
                (
                    "authsignature",
                    sig("app_signature_if_EIP191_prefixed(WRONG)"),
                ),
                ("usersignature", sig("user_signature")),
            ],
        )
        .await;
        assert_eq!(status, 403, "{style}: {body}");
        assert_eq!(body["message"], "Failed to authenticate app signature.");
    }
    // Sanity: the keys in the vectors are the emulator's built-in test keys.
    assert_eq!(
        PrivateKey::from_hex(TEST_APP_PRIVATE_KEY)
            .expect("key")
            .address()
            .to_string(),
        vectors["hello"]["app_address"]
            .as_str()
            .expect("addr")
            .to_lowercase()
    );
}

#[tokio::test]
async fn a_freshness_check_can_be_switched_on() {
    let (emu, _dir) =
        start_emulator(|o| o.max_clock_skew = Some(std::time::Duration::from_secs(300))).await;
    let vectors: Value =
        serde_json::from_slice(&fixture("signature_vectors.json")).expect("vectors");
    let v = &vectors["node_style_documents"];
    let (status, body) = signed_upload(
        &emu.url(),
        v["message"].as_str().expect("m").as_bytes(),
        vec![RawFile {
            label: "file",
            content_type: "image/png",
            bytes: fixture("red1x1.png"),
        }],
        &[
            (
                "authsignature",
                v["app_signature"].as_str().expect("s").into(),
            ),
            (
                "usersignature",
                v["user_signature"].as_str().expect("s").into(),
            ),
        ],
    )
    .await;
    assert_eq!(status, 400, "created 1700000000 is stale: {body}");
    assert!(
        body["validation_details"]["header"]["created"].is_string(),
        "{body}"
    );
}
