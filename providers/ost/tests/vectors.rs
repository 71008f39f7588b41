//! The published vectors (`shared/fixtures/ost/signature_vectors.json`) and the raw requests
//! the real `ost-kyc-sdk-python==2.0.2` sent (`captures/`), checked against our signer and
//! our server-side verifier.

mod common;

use std::time::Duration;

use docgate_ost::{signing, webhook, WebhookError};
use serde_json::{Map, Value};

fn vectors() -> Vec<Value> {
    let path = format!("{}/signature_vectors.json", common::FIXTURES);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).expect("vectors are JSON")
}

fn params_of(v: &Value) -> Map<String, Value> {
    v["params"].as_object().expect("params object").clone()
}

const KEY: &str = "a0de4b4f2b1c4d5e";
const SECRET: &str = "35f346e5ef825ed4499da98a6ac6b401";
const TS: i64 = 1_700_000_000;

#[test]
fn every_api_vector_signs_and_encodes_exactly() {
    let api: Vec<Value> = vectors()
        .into_iter()
        .filter(|v| v["method"] == "GET" || v["method"] == "POST")
        .collect();
    assert_eq!(api.len(), 5, "five API vectors are published");
    for v in api {
        let name = v["name"].as_str().expect("name");
        let endpoint = v["endpoint"].as_str().expect("endpoint");
        let secret = v["secret"].as_str().expect("secret");
        let params = params_of(&v);
        let query = signing::nested_query(&params);
        let to_sign = signing::string_to_sign(endpoint, &query);
        assert_eq!(to_sign, v["string_to_sign"], "{name}: string to sign");
        let signature = signing::hmac_hex(secret, &to_sign);
        assert_eq!(signature, v["signature"], "{name}: signature");
        assert_eq!(
            format!("{query}&signature={signature}"),
            v["wire_params"],
            "{name}: wire form"
        );
    }
}

#[test]
fn sign_request_reproduces_the_sdk_requests_from_their_own_parameters() {
    for v in vectors()
        .into_iter()
        .filter(|v| v["params"].get("api_key").is_some())
    {
        let mut params = params_of(&v);
        params.remove("api_key");
        params.remove("request_timestamp");
        let endpoint = v["endpoint"].as_str().expect("endpoint");
        let signed = signing::sign_request(endpoint, params, KEY, SECRET, TS);
        assert_eq!(signed.wire, v["wire_params"], "{}", v["name"]);
    }
}

#[test]
fn the_verifier_accepts_every_vector_and_refuses_it_changed_or_late() {
    let lookup = |k: &str| (k == KEY).then(|| SECRET.to_owned());
    for v in vectors()
        .into_iter()
        .filter(|v| v["params"].get("api_key").is_some())
    {
        let name = v["name"].as_str().expect("name");
        let endpoint = v["endpoint"].as_str().expect("endpoint");
        let wire = v["wire_params"].as_str().expect("wire");
        let ok = signing::verify_request(endpoint, "", wire, lookup, TS + 10, 10)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ok.api_key, KEY);
        // Mounted under a prefix and reached with a doubled slash: still the signed endpoint.
        let mounted = format!("/ost//{}", endpoint.trim_start_matches('/'));
        assert!(
            signing::verify_request(&mounted, "/ost", wire, lookup, TS, 10).is_ok(),
            "{name}: mounted"
        );
        assert_eq!(
            signing::verify_request(endpoint, "", wire, lookup, TS + 11, 10),
            Err(signing::AuthError::Expired {
                skew_secs: 11,
                window_secs: 10
            }),
            "{name}: 11 s late"
        );
        let changed = wire.replacen(
            "request_timestamp=1700000000",
            "request_timestamp=1700000001",
            1,
        );
        assert_eq!(
            signing::verify_request(endpoint, "", &changed, lookup, TS, 10),
            Err(signing::AuthError::BadSignature),
            "{name}: changed"
        );
    }
}

/// The raw bytes the real SDK put on the socket verify as they are.
#[test]
fn the_captured_sdk_requests_verify() {
    let lookup = |k: &str| (k == KEY).then(|| SECRET.to_owned());
    let dir = format!("{}/captures", common::FIXTURES);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("captures")
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    assert_eq!(names.len(), 5);
    for path in names {
        let raw = std::fs::read_to_string(&path).expect("capture");
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .or_else(|| raw.split_once("\n\n"))
            .expect("head/body");
        let request_line = head.lines().next().expect("request line");
        let mut parts = request_line.split(' ');
        let method = parts.next().expect("method");
        let target = parts.next().expect("target");
        let (path_part, query) = target.split_once('?').unwrap_or((target, ""));
        let params = if method == "POST" {
            body.trim_end()
        } else {
            query
        };
        let verified = signing::verify_request(path_part, "", params, lookup, TS, 10);
        assert!(verified.is_ok(), "{}: {verified:?}", path.display());
    }
}

#[test]
fn the_documented_webhook_verifies_and_one_changed_byte_or_age_does_not() {
    let v = vectors()
        .into_iter()
        .find(|v| v["name"] == "webhook-doc-example")
        .expect("webhook vector");
    let url = v["endpoint"].as_str().expect("url");
    let secret = v["secret"].as_str().expect("secret");
    let mut params = params_of(&v);
    assert_eq!(webhook::string_to_sign(url, &params), v["string_to_sign"]);
    params.insert("signature".into(), v["signature"].clone());
    let sent_at = 1_542_185_198;
    let max_age = Duration::from_secs(300);

    let event = webhook::verify(secret, url, &params, sent_at + 5, max_age).expect("valid");
    assert_eq!(
        (
            event.id.as_str(),
            event.name.as_str(),
            event.event_type.as_str()
        ),
        ("236", "user_register", "user")
    );
    assert_eq!(event.data["user"]["email"], "yogesh+13233@ost.com");

    // One byte of the body changed.
    let mut changed = params.clone();
    changed["data"]["user"]["email"] = Value::String("yogesh+13234@ost.com".into());
    assert_eq!(
        webhook::verify(secret, url, &changed, sent_at, max_age),
        Err(WebhookError::BadSignature)
    );
    // One byte of the signature changed.
    let mut bad_sig = params.clone();
    bad_sig["signature"] =
        Value::String(v["signature"].as_str().expect("sig").replacen('3', "4", 1));
    assert_eq!(
        webhook::verify(secret, url, &bad_sig, sent_at, max_age),
        Err(WebhookError::BadSignature)
    );
    // The same event, delivered too late.
    assert_eq!(
        webhook::verify(secret, url, &params, sent_at + 301, max_age),
        Err(WebhookError::Stale {
            age_secs: 301,
            max_age_secs: 300
        })
    );
}
