//! The emulator answered directly with reqwest: every refusal, with Taler's status and code.

mod common;

use bytes::Bytes;
use common::*;
use docgate_taler::{
    crockford,
    signing::{ExternKey, PaytoHash, SigningScheme},
    wire::{ErrorDetail, HEADER_IF_NOT_MATCH, HEADER_PAYTO, HEADER_SIGNATURE},
};
use sha2::{Digest, Sha512};

const SCHEME: SigningScheme = SigningScheme {
    purpose: 65535,
    payto_hash: PaytoHash::A,
};

struct Signed {
    url: String,
    signature: String,
    if_not_match: String,
}

fn key_of(setup: &Setup) -> ExternKey {
    let config = setup.emulator.sandbox_config();
    ExternKey::parse(config.extern_key.expose()).expect("sandbox key")
}

fn sign(setup: &Setup, key: &ExternKey, body: &[u8], payto: &str) -> Signed {
    let h_body: [u8; 64] = Sha512::digest(body).into();
    Signed {
        url: format!(
            "{}/kyc-bulk/{}",
            setup.emulator.url(),
            key.public_crockford()
        ),
        signature: key.sign(&SCHEME, &h_body, payto),
        if_not_match: crockford::encode(&h_body),
    }
}

fn request(s: &Signed, payto: &str, content_type: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(&s.url)
        .header(HEADER_SIGNATURE, &s.signature)
        .header(HEADER_PAYTO, payto)
        .header(HEADER_IF_NOT_MATCH, &s.if_not_match)
        .header("Content-Type", content_type)
}

/// Send `body` as a PDF, signed as prepared for `PAYTO`.
async fn send_pdf(s: &Signed, body: impl Into<reqwest::Body>) -> reqwest::Response {
    request(s, PAYTO, "application/pdf")
        .body(body)
        .send()
        .await
        .expect("send")
}

/// Replace (not add) one header of a prepared request.
fn with(
    builder: reqwest::RequestBuilder,
    name: &'static str,
    value: &str,
) -> reqwest::RequestBuilder {
    let mut map = reqwest::header::HeaderMap::new();
    map.insert(name, value.parse().expect("header value"));
    builder.headers(map)
}

async fn error_of(response: reqwest::Response) -> (u16, ErrorDetail) {
    let status = response.status().as_u16();
    let ct = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        ct.starts_with("application/json"),
        "{status}: content-type {ct}"
    );
    let body = response.bytes().await.expect("body");
    let detail = ErrorDetail::parse(&body)
        .unwrap_or_else(|| panic!("{status}: not an ErrorDetail: {body:?}"));
    (status, detail)
}

#[tokio::test]
async fn a_correct_request_is_204_then_412() {
    let setup = start().await;
    let key = key_of(&setup);
    let body = pdf(10_000, 1);
    let s = sign(&setup, &key, &body, PAYTO);
    let first = send_pdf(&s, body.clone()).await;
    assert_eq!(first.status(), 204);
    let again = send_pdf(&s, body).await;
    assert_eq!(again.status(), 412);
    assert_eq!(setup.emulator.stored(PAYTO).expect("listing").len(), 1);
}

/// A small body is received before its hash is looked up (the commit looks it up, in one
/// trip to a blocking thread); a large one is not. Either way a stored hash answers 412,
/// ahead of anything wrong with the body sent again: here, bytes that are not the stored
/// body (so not its SHA-512), and a body of the wrong type.
#[tokio::test]
async fn a_stored_hash_is_412_before_anything_wrong_with_the_body_small_or_large() {
    let setup = start().await;
    let key = key_of(&setup);
    for (len, seed) in [(10_000, 31), (200_000, 32)] {
        let body = pdf(len, seed);
        let s = sign(&setup, &key, &body, PAYTO);
        let first = send_pdf(&s, body.clone()).await;
        assert_eq!(first.status(), 204, "{len}");
        let mut altered = body.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        let not_a_pdf = vec![b'x'; len];
        for wrong in [altered, not_a_pdf] {
            let again = send_pdf(&s, wrong).await;
            assert_eq!(again.status(), 412, "{len}");
        }
    }
    assert_eq!(setup.emulator.stored(PAYTO).expect("listing").len(), 2);
}

#[tokio::test]
async fn a_chunked_body_without_content_length_is_411() {
    let setup = start().await;
    let key = key_of(&setup);
    let body = pdf(10_000, 2);
    let s = sign(&setup, &key, &body, PAYTO);
    let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(body))]);
    let response = send_pdf(&s, reqwest::Body::wrap_stream(stream)).await;
    let (status, detail) = error_of(response).await;
    assert_eq!((status, detail.code), (411, 25));
    assert!(setup.emulator.stored(PAYTO).expect("listing").is_empty());
}

#[tokio::test]
async fn an_oversized_content_length_is_413_before_any_body_byte_is_read() {
    let setup = start().await;
    let key = key_of(&setup);
    let s = sign(&setup, &key, b"irrelevant", PAYTO);
    // The body never produces a byte: the answer can only come from the headers.
    let never = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        request(&s, PAYTO, "application/pdf")
            .header("Content-Length", (17 * 1024 * 1024).to_string()) // the only one: a stream has none
            .body(reqwest::Body::wrap_stream(never))
            .send(),
    )
    .await
    .expect("answered without waiting for the body")
    .expect("send");
    let (status, detail) = error_of(response).await;
    assert_eq!((status, detail.code), (413, 32));
    assert!(detail.detail.unwrap_or_default().contains("16777216"));
}

#[tokio::test]
async fn if_not_match_must_be_present_well_formed_and_the_body_s_hash() {
    let setup = start().await;
    let key = key_of(&setup);
    let body = pdf(5_000, 3);
    let s = sign(&setup, &key, &body, PAYTO);
    // Missing.
    let response = reqwest::Client::new()
        .post(&s.url)
        .header(HEADER_SIGNATURE, &s.signature)
        .header(HEADER_PAYTO, PAYTO)
        .header("Content-Type", "application/pdf")
        .body(body.clone())
        .send()
        .await
        .expect("send");
    let (status, detail) = error_of(response).await;
    assert_eq!((status, detail.code), (400, 25));
    assert_eq!(detail.detail.as_deref(), Some(HEADER_IF_NOT_MATCH));
    // Malformed (one character short; and the hex spelling).
    for bad in [&s.if_not_match[..102], &hex::encode(Sha512::digest(&body))] {
        let response = with(
            request(&s, PAYTO, "application/pdf"),
            HEADER_IF_NOT_MATCH,
            bad,
        )
        .body(body.clone())
        .send()
        .await
        .expect("send");
        let (status, detail) = error_of(response).await;
        assert_eq!((status, detail.code), (400, 26), "{bad}");
    }
    // The signature covers the claimed hash, but the body is different: 400, nothing stored.
    let mut tampered = body.clone();
    tampered[4000] ^= 0xff;
    let response = send_pdf(&s, tampered.clone()).await;
    let (status, detail) = error_of(response).await;
    assert_eq!((status, detail.code), (400, 26));
    assert!(detail.hint.unwrap_or_default().contains("If-Not-Match"));
    assert!(setup.emulator.stored(PAYTO).expect("listing").is_empty());
    // The body's true hash as If-Not-Match, but the original signature: 403.
    let response = with(
        request(&s, PAYTO, "application/pdf"),
        HEADER_IF_NOT_MATCH,
        &crockford::encode(&Sha512::digest(&tampered)),
    )
    .body(tampered)
    .send()
    .await
    .expect("send");
    let (status, detail) = error_of(response).await;
    assert_eq!(status, 403);
    assert_eq!(
        detail.code,
        docgate_taler::emulator::PLACEHOLDER_SIGNATURE_INVALID
    );
    assert!(setup.emulator.stored(PAYTO).expect("listing").is_empty());
}

#[tokio::test]
async fn a_signature_for_another_payto_or_a_malformed_one_is_refused() {
    let setup = start().await;
    let key = key_of(&setup);
    let body = pdf(5_000, 4);
    let s = sign(&setup, &key, &body, PAYTO);
    let other = "payto://iban/GB82WEST12345698765432";
    let response = request(&s, other, "application/pdf")
        .body(body.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(error_of(response).await.0, 403);
    let response = with(
        request(&s, PAYTO, "application/pdf"),
        HEADER_SIGNATURE,
        &s.signature[..100],
    )
    .body(body)
    .send()
    .await
    .expect("send");
    let (status, detail) = error_of(response).await;
    assert_eq!((status, detail.code), (400, 26));
    assert_eq!(detail.detail.as_deref(), Some(HEADER_SIGNATURE));
}

#[tokio::test]
async fn unknown_malformed_keys_and_unknown_paths_get_taler_s_404_and_400() {
    let setup = start().await;
    let body = pdf(1_000, 5);
    let stranger = ExternKey::from_seed([42u8; 32]);
    let s = sign(&setup, &stranger, &body, PAYTO);
    let response = send_pdf(&s, body.clone()).await;
    let (status, detail) = error_of(response).await;
    assert_eq!(
        (status, detail.code),
        (
            404,
            docgate_taler::emulator::PLACEHOLDER_THIRD_PARTY_UNKNOWN
        )
    );
    // Registered at run time, the same request goes through.
    setup
        .emulator
        .register_key(stranger.public_crockford())
        .expect("register");
    let response = send_pdf(&s, body.clone()).await;
    assert_eq!(response.status(), 204);

    let malformed = format!("{}/kyc-bulk/not-a-key", setup.emulator.url());
    let response = reqwest::Client::new()
        .post(malformed)
        .body("x")
        .send()
        .await
        .expect("send");
    assert_eq!(error_of(response).await.1.code, 26);

    let response = reqwest::Client::new()
        .get(format!("{}/nothing-here", setup.emulator.url()))
        .send()
        .await
        .expect("send");
    let (status, detail) = error_of(response).await;
    assert_eq!((status, detail.code), (404, 21));
    let response = reqwest::Client::new()
        .get(&s.url)
        .send()
        .await
        .expect("send");
    let (status, detail) = error_of(response).await;
    assert_eq!((status, detail.code), (405, 20));
}

#[tokio::test]
async fn content_type_must_be_accepted_and_true_to_the_body() {
    let setup = start().await;
    let key = key_of(&setup);
    let body = pdf(3_000, 6);
    let s = sign(&setup, &key, &body, PAYTO);
    for declared in ["text/plain", "application/octet-stream", "image/png"] {
        let response = request(&s, PAYTO, declared)
            .body(body.clone())
            .send()
            .await
            .expect("send");
        let (status, detail) = error_of(response).await;
        assert_eq!((status, detail.code), (400, 26), "{declared}");
    }
    // A Windows executable declared as a PDF.
    let mut exe = b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0".to_vec();
    exe.resize(4_000, 0);
    let s = sign(&setup, &key, &exe, PAYTO);
    let response = send_pdf(&s, exe).await;
    let (status, detail) = error_of(response).await;
    assert_eq!((status, detail.code), (400, 26));
    assert!(detail.detail.unwrap_or_default().contains("executable"));
    assert!(setup.emulator.stored(PAYTO).expect("listing").is_empty());
}

#[tokio::test]
async fn zip_entries_are_inspected() {
    let setup = start().await;
    let key = key_of(&setup);
    let mut exe = b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0".to_vec();
    exe.resize(4_000, 0);
    let bad = zip_of(&[("a.pdf", pdf(2_000, 7)), ("invoice.pdf", exe)]);
    let s = sign(&setup, &key, &bad, PAYTO);
    let response = request(&s, PAYTO, "application/zip")
        .body(bad)
        .send()
        .await
        .expect("send");
    let (status, detail) = error_of(response).await;
    assert_eq!((status, detail.code), (400, 26));
    assert!(detail.detail.unwrap_or_default().contains("invoice.pdf"));

    let good = zip_of(&[("a.pdf", pdf(2_000, 8)), ("b.png", PNG.to_vec())]);
    let s = sign(&setup, &key, &good, PAYTO);
    let response = request(&s, PAYTO, "application/zip")
        .body(good)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 204);
}

#[tokio::test]
async fn bad_payto_headers_and_missing_headers_are_400() {
    let setup = start().await;
    let key = key_of(&setup);
    let body = pdf(1_000, 9);
    let bad_payto = "payto://iban/DE89370400440532013001";
    let s = sign(&setup, &key, &body, bad_payto);
    let response = request(&s, bad_payto, "application/pdf")
        .body(body.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(error_of(response).await.1.code, 26);
    let s = sign(&setup, &key, &body, PAYTO);
    let response = reqwest::Client::new()
        .post(&s.url)
        .header(HEADER_IF_NOT_MATCH, &s.if_not_match)
        .header(HEADER_PAYTO, PAYTO)
        .header("Content-Type", "application/pdf")
        .body(body)
        .send()
        .await
        .expect("send");
    let (status, detail) = error_of(response).await;
    assert_eq!((status, detail.code), (400, 25));
    assert_eq!(detail.detail.as_deref(), Some(HEADER_SIGNATURE));
}

#[tokio::test]
async fn injected_faults_use_taler_s_envelope_and_the_stored_listing_is_served() {
    let setup = start().await;
    let client = reqwest::Client::new();
    let set = client
        .put(format!("{}/__emulator/faults", setup.emulator.url()))
        .json(&serde_json::json!({"fail_next": 1, "fail_status": 500}))
        .send()
        .await
        .expect("control");
    assert_eq!(set.status(), 200);
    let key = key_of(&setup);
    let body = pdf(1_000, 10);
    let s = sign(&setup, &key, &body, PAYTO);
    let response = send_pdf(&s, body.clone()).await;
    let (status, detail) = error_of(response).await;
    assert_eq!((status, detail.code), (500, 52));
    let response = send_pdf(&s, body).await;
    assert_eq!(response.status(), 204);

    let listing: serde_json::Value = client
        .get(format!("{}/__emulator/taler/stored", setup.emulator.url()))
        .query(&[("payto", PAYTO)])
        .send()
        .await
        .expect("listing")
        .json()
        .await
        .expect("json");
    assert_eq!(listing["count"], 1);
    assert_eq!(listing["bodies"][0]["h_body"], s.if_not_match);
}

#[tokio::test]
async fn a_header_sent_twice_is_refused_as_ambiguous() {
    let setup = start().await;
    let key = key_of(&setup);
    let body = pdf(1_000, 12);
    let s = sign(&setup, &key, &body, PAYTO);
    let other = "payto://iban/GB82WEST12345698765432";
    let response = request(&s, PAYTO, "application/pdf")
        .header(HEADER_PAYTO, other)
        .body(body)
        .send()
        .await
        .expect("send");
    let (status, detail) = error_of(response).await;
    assert_eq!((status, detail.code), (400, 26));
    assert_eq!(detail.detail.as_deref(), Some(HEADER_PAYTO));
}

#[tokio::test]
async fn concurrent_identical_uploads_store_the_body_once() {
    let setup = start().await;
    let key = key_of(&setup);
    let body = pdf(400_000, 11);
    let s = sign(&setup, &key, &body, PAYTO);
    let sends = (0..6).map(|_| {
        request(&s, PAYTO, "application/pdf")
            .body(body.clone())
            .send()
    });
    let statuses: Vec<u16> = futures_util::future::join_all(sends)
        .await
        .into_iter()
        .map(|r| r.expect("send").status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 204).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 204 || *s == 412),
        "{statuses:?}"
    );
    assert_eq!(setup.emulator.stored(PAYTO).expect("listing").len(), 1);
}
