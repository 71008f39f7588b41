//! The emulator refuses what Finext would refuse, each with its documented code. Requests are
//! made by hand here (not by the provider) so each can be broken in exactly one way.

mod common;

use base64::{engine::general_purpose::STANDARD, Engine};
use common::*;
use docgate_finext::{
    emulator::{self, EmulatorOptions, SANDBOX_AUTHORIZATION},
    sign::{request_id, timestamp_ms},
};
use serde_json::{json, Value};

fn address_extra() -> Value {
    json!({
        "address_type": "Utility Bill",
        "address_issued_by": "aaa",
        "address_issued_date": days_ago(3),
        "address_language": "English",
        "address_proof_front": STANDARD.encode(jpeg(2000, 9)),
        "address_proof_front_extension": "jpeg",
    })
}

fn valid_address() -> Value {
    signed("lili111", &request_id(), &timestamp_ms(), address_extra())
}

/// A valid body with one field changed and signed again (so only that field is wrong).
fn address_with(key: &str, value: Value) -> Value {
    let mut extra = address_extra();
    extra[key] = value;
    signed("lili111", &request_id(), &timestamp_ms(), extra)
}

async fn code_of(url: &str, endpoint: &str, body: &Value) -> (u16, u64, String) {
    let (status, answer) = post(url, endpoint, body).await;
    (
        status,
        answer["code"].as_u64().expect("code"),
        answer["msg"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test]
async fn a_valid_request_is_accepted_then_each_single_fault_gets_its_code() {
    let h = Harness::start().await;
    let url = h.emulator.url();
    assert_eq!(
        code_of(&url, "addAddressProof", &valid_address()).await.1,
        10200
    );

    let now: i64 = timestamp_ms().parse().expect("number");
    let cases: Vec<(&str, Value, u64)> = vec![
        (
            "wrong sign",
            {
                let mut b = valid_address();
                b["sign"] = json!("aeb294ad0e59e34dfae4885b26b848ee");
                b
            },
            10401,
        ),
        (
            "sign in upper case",
            {
                let mut b = valid_address();
                b["sign"] = json!(b["sign"].as_str().expect("sign").to_ascii_uppercase());
                b
            },
            10401,
        ),
        (
            "username changed after signing",
            {
                let mut b = valid_address();
                b["username"] = json!("mallory");
                b
            },
            10401,
        ),
        (
            "stale timestamp",
            signed(
                "lili111",
                &request_id(),
                &(now - 31_000).to_string(),
                address_extra(),
            ),
            10402,
        ),
        (
            "future timestamp",
            signed(
                "lili111",
                &request_id(),
                &(now + 31_000).to_string(),
                address_extra(),
            ),
            10402,
        ),
        (
            "seconds, not milliseconds",
            signed(
                "lili111",
                &request_id(),
                &(now / 1000).to_string(),
                address_extra(),
            ),
            10402,
        ),
        (
            "short request_id",
            signed(
                "lili111",
                "0123456789abcdefghi",
                &timestamp_ms(),
                address_extra(),
            ),
            10408,
        ),
        (
            "long request_id",
            signed("lili111", &"a".repeat(65), &timestamp_ms(), address_extra()),
            10408,
        ),
        (
            "unknown api_key",
            {
                let mut b = valid_address();
                b["api_key"] = json!("00000000000000000000000000000000");
                b
            },
            10407,
        ),
        (
            "sign missing",
            {
                let mut b = valid_address();
                b.as_object_mut().expect("object").remove("sign");
                b
            },
            10422,
        ),
        (
            "bad base64",
            address_with("address_proof_front", json!("aGVsbG8")),
            10416,
        ),
        (
            "base64 with line breaks",
            address_with(
                "address_proof_front",
                json!(format!("{}\n", STANDARD.encode(jpeg(60, 1)))),
            ),
            10416,
        ),
        (
            "data URI",
            address_with(
                "address_proof_front",
                json!(format!(
                    "data:image/jpeg;base64,{}",
                    STANDARD.encode(jpeg(60, 1))
                )),
            ),
            10416,
        ),
        (
            "png bytes with a jpeg extension",
            address_with(
                "address_proof_front",
                json!(STANDARD.encode(fixture("sila/red1x1.png"))),
            ),
            10415,
        ),
        (
            "unsupported extension",
            address_with("address_proof_front_extension", json!("gif")),
            10415,
        ),
        (
            "unrecognisable bytes",
            address_with(
                "address_proof_front",
                json!(STANDARD.encode(b"just some text, no image at all")),
            ),
            10415,
        ),
        (
            "empty document",
            address_with("address_proof_front", json!("")),
            10422,
        ),
        (
            "bad enum",
            address_with("address_type", json!("Phone Bill")),
            10422,
        ),
        (
            "enum in the wrong case",
            address_with("address_language", json!("english")),
            10422,
        ),
        (
            "91-day-old date",
            address_with("address_issued_date", json!(days_ago(91))),
            10422,
        ),
        (
            "future date",
            address_with("address_issued_date", json!(days_ago(-1))),
            10422,
        ),
        (
            "back without its extension",
            address_with("address_proof_back", json!(STANDARD.encode(jpeg(100, 2)))),
            10422,
        ),
        (
            "an array where a string belongs",
            address_with("address_type", json!(["Utility Bill"])),
            10422,
        ),
    ];
    for (name, body, want) in cases {
        let (status, code, msg) = code_of(&url, "addAddressProof", &body).await;
        assert_eq!((status, code), (200, want), "{name}: {msg}");
        assert!(!msg.is_empty(), "{name}: every refusal explains itself");
    }
    // A 90-day-old document is still fine.
    assert_eq!(
        code_of(
            &url,
            "addAddressProof",
            &address_with("address_issued_date", json!(days_ago(90)))
        )
        .await
        .1,
        10200
    );
    assert_eq!(
        h.emulator.submissions().len(),
        2,
        "no refused request was stored"
    );
    let stored_files = walk(&h.emulator.data_dir().join("documents"));
    assert_eq!(stored_files, 2, "two accepted single-document submissions");
    assert_eq!(
        walk(&h.emulator.data_dir().join("tmp")),
        0,
        "refusals leave no temporary files"
    );
}

fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_replayed_request_is_refused_even_after_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let opts = EmulatorOptions::new("127.0.0.1:0".parse().expect("addr"), tmp.path().to_owned());
    let em = emulator::start(opts.clone()).await.expect("start");
    let body = valid_address();
    assert_eq!(code_of(&em.url(), "addAddressProof", &body).await.1, 10200);
    let (status, code, msg) = code_of(&em.url(), "addAddressProof", &body).await;
    assert_eq!(
        (status, code, msg.as_str()),
        (200, 10403, "request_id already used")
    );
    // The same id with a fresh timestamp and a correct signature is still a reuse.
    let again = signed(
        "lili111",
        body["request_id"].as_str().expect("id"),
        &timestamp_ms(),
        address_extra(),
    );
    assert_eq!(code_of(&em.url(), "addAddressProof", &again).await.1, 10403);
    em.stop().await.expect("stop");

    let em = emulator::start(opts).await.expect("restart");
    assert_eq!(
        code_of(&em.url(), "addAddressProof", &body).await.1,
        10403,
        "remembered across restarts"
    );
    assert_eq!(em.submissions().len(), 1, "the journal survived too");
    assert_eq!(kyc_status(&em.url(), "lili111").await, 1);
}

#[tokio::test]
async fn id_proof_rules() {
    let h = Harness::start().await;
    let url = h.emulator.url();
    let extra = |id_type: &str, back: bool, dates: bool| {
        let mut e = json!({
            "id_type": id_type,
            "id_number": "X123",
            "issued_by": "DE",
            "language": "German",
            "id_front": STANDARD.encode(jpeg(500, 1)),
            "id_front_extension": "jpg",
        });
        if dates {
            e["issued_date"] = json!(days_ago(100));
            e["expiration_date"] = json!(days_ago(-100));
        }
        if back {
            e["id_back"] = json!(STANDARD.encode(fixture("sila/red1x1.png")));
            e["id_back_extension"] = json!("png");
        }
        e
    };
    let send = |e: Value| signed("lili111", &request_id(), &timestamp_ms(), e);
    assert_eq!(
        code_of(&url, "addIDProof", &send(extra("Passport", false, true)))
            .await
            .1,
        10200
    );
    assert_eq!(
        code_of(
            &url,
            "addIDProof",
            &send(extra("Driver License", false, true))
        )
        .await
        .1,
        10422
    );
    assert_eq!(
        code_of(
            &url,
            "addIDProof",
            &send(extra("Driver License", true, true))
        )
        .await
        .1,
        10200
    );
    assert_eq!(
        code_of(&url, "addIDProof", &send(extra("National Id", true, false)))
            .await
            .1,
        10200
    );
    assert_eq!(
        code_of(&url, "addIDProof", &send(extra("Passport", false, false)))
            .await
            .1,
        10422
    );
    assert_eq!(
        code_of(&url, "addIDProof", &send(extra("passport", false, true)))
            .await
            .1,
        10422
    );
    let mut e = extra("Passport", false, true);
    e["issued_by"] = json!("XK");
    assert_eq!(code_of(&url, "addIDProof", &send(e)).await.1, 10422);
    let mut e = extra("Passport", false, true);
    e["expiration_date"] = json!(days_ago(0));
    assert_eq!(code_of(&url, "addIDProof", &send(e)).await.1, 10422);
    let stored = h.emulator.submissions();
    assert_eq!(stored.len(), 3);
    assert_eq!(stored[1].documents.len(), 2);
    assert_eq!(
        std::fs::read(&stored[1].documents[1].path).expect("stored"),
        fixture("sila/red1x1.png")
    );
}

#[tokio::test]
async fn transport_level_refusals() {
    let h = Harness::start_with(|o| o.max_document_bytes = 10_000).await;
    let url = h.emulator.url();
    let body = valid_address().to_string();

    let (status, answer) = post_raw(&url, "addAddressProof", "Bearer wrong", body.clone()).await;
    assert_eq!((status, answer["code"].as_u64()), (200, Some(10406)));

    let (status, answer) = post_raw(
        &url,
        "addAddressProof",
        SANDBOX_AUTHORIZATION,
        "{\"api_key\":".into(),
    )
    .await;
    assert_eq!(
        (status, answer["code"].as_u64()),
        (200, Some(10400)),
        "{answer}"
    );

    let r = reqwest::Client::new()
        .post(format!("{url}/api/v1/account/addAddressProof"))
        .header("authorization", SANDBOX_AUTHORIZATION)
        .header("content-type", "text/plain")
        .body(body.clone())
        .send()
        .await
        .expect("answer");
    assert_eq!(r.json::<Value>().await.expect("json")["code"], 10400);

    let big = address_with(
        "address_proof_front",
        json!(STANDARD.encode(jpeg(10_001, 1))),
    );
    let (status, code, _) = code_of(&url, "addAddressProof", &big).await;
    assert_eq!(
        (status, code),
        (413, 10413),
        "a decoded document over the limit"
    );

    let (status, answer) = post(&url, "addPassport", &json!({})).await;
    assert_eq!((status, answer["code"].as_u64()), (404, Some(10404)));

    let r = reqwest::get(format!("{url}/api/v1/account/addAddressProof"))
        .await
        .expect("answer");
    assert_eq!(r.status(), 405);
    assert_eq!(r.json::<Value>().await.expect("json")["code"], 10405);

    h.emulator.faults.fail_next(1, 500);
    let (status, answer) = post(&url, "addAddressProof", &valid_address()).await;
    assert_eq!(
        (status, answer["code"].as_u64()),
        (500, Some(10500)),
        "injected faults use the envelope"
    );
    assert_eq!(
        code_of(&url, "addAddressProof", &valid_address()).await.1,
        10200
    );
}

#[tokio::test]
async fn json_escaped_slashes_in_base64_are_plain_json() {
    // PHP's json_encode writes every `/` as `\/`; that is JSON, not a base64 error.
    let h = Harness::start().await;
    let doc = jpeg(3000, 11);
    let encoded = STANDARD.encode(&doc);
    assert!(encoded.contains('/'), "the sample must contain slashes");
    let body = address_with("address_proof_front", json!(encoded))
        .to_string()
        .replace('/', "\\/");
    let (status, answer) = post_raw(
        &h.emulator.url(),
        "addAddressProof",
        SANDBOX_AUTHORIZATION,
        body,
    )
    .await;
    assert_eq!(
        (status, answer["code"].as_u64()),
        (200, Some(10200)),
        "{answer}"
    );
    let sub = h.emulator.submissions().pop().expect("stored");
    assert_eq!(std::fs::read(&sub.documents[0].path).expect("stored"), doc);
}

#[tokio::test]
async fn the_docs_example_signature_is_what_the_emulator_computes() {
    // The sandbox uses the docs' example credentials, so the docs' example request is valid
    // except for its (long past) timestamp: the emulator must name the timestamp, not the sign.
    let h = Harness::start().await;
    let mut body = json!({
        "api_key": "fd01a53d7834b06c080cd1024ae9c60a",
        "request_id": "45242f41f20b456092d1b48caa76ce13",
        "timestamp": "1682073075988",
        "username": "lili111",
        "sign": "aeb294ad0e59e34dfae4885b26b848ee",
    });
    let (_, code, msg) = code_of(&h.emulator.url(), "addAddressProof", &body).await;
    assert_eq!(code, 10402, "{msg}");
    body["sign"] = json!("aeb294ad0e59e34dfae4885b26b848ef");
    assert_eq!(
        code_of(&h.emulator.url(), "addAddressProof", &body).await.1,
        10402,
        "the window is checked first"
    );
}

/// Send a request head (and maybe part of a body) on a raw socket, then read the answer.
async fn raw_exchange(url: &str, head: &str, body_part: &[u8]) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("head");
    s.write_all(body_part).await.expect("body");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // The emulator answers and closes without waiting for the rest of the body.
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
        if let Some(end) = find(&answer, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if answer.len() >= end + 4 + len {
                let status = head[9..12].parse().expect("status");
                let body = serde_json::from_slice(&answer[end + 4..end + 4 + len]).expect("json");
                return (status, body);
            }
        }
    }
    panic!("no complete answer: {}", String::from_utf8_lossy(&answer));
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn oversized_bodies_are_refused_before_or_while_reading() {
    let h = Harness::start().await;
    let url = h.emulator.url();
    // Announced too large: refused from the headers alone, no body byte needed.
    let head = format!(
        "POST /api/v1/account/getAddressKycStatus HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: {SANDBOX_AUTHORIZATION}\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n"
    );
    assert_eq!(raw_exchange(&url, &head, b"").await.0, 413);
    // Chunked: refused as soon as the count passes the limit (64 KiB for the status call).
    let head = format!(
        "POST /api/v1/account/getAddressKycStatus HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: {SANDBOX_AUTHORIZATION}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    let mut chunk = format!("{:x}\r\n", 70_000).into_bytes();
    chunk.extend(std::iter::repeat_n(b' ', 70_000));
    chunk.extend_from_slice(b"\r\n");
    let (status, answer) = raw_exchange(&url, &head, &chunk).await;
    assert_eq!((status, answer["code"].as_u64()), (413, Some(10413)));
}
