//! `docgate emulate taler --purpose … --payto-hash … --extern-pub …`: an emulator configured
//! from its command-line flags verifies exactly that configuration — a request signed for it
//! is stored, one signed for the defaults is refused — using the published test vectors'
//! key, body and payto.

use std::path::PathBuf;

use clap::Parser;
use docgate_taler::{
    crockford,
    emulator::{self, EmulatorArgs, PLACEHOLDER_SIGNATURE_INVALID},
    signing::{self, ExternKey, PaytoHash, SigningScheme},
    wire::{ErrorDetail, HEADER_IF_NOT_MATCH, HEADER_PAYTO, HEADER_SIGNATURE},
};
use serde_json::Value;
use sha2::{Digest, Sha512};

#[derive(Debug, Parser)]
struct EmulateTaler {
    #[command(flatten)]
    emulator: EmulatorArgs,
}

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/taler"
    ))
}

struct Vectors {
    json: Value,
    key: ExternKey,
    body: Vec<u8>,
    payto: String,
}

fn vectors() -> Vectors {
    let text = std::fs::read_to_string(fixtures().join("vectors.json")).expect("vectors.json");
    let json: Value = serde_json::from_str(&text).expect("vectors are JSON");
    let seed_hex = json["inputs"]["seed_hex"].as_str().expect("seed");
    let key = ExternKey::parse(seed_hex).expect("seed parses");
    assert_eq!(key.public_crockford(), json["extern_pub"], "vector key");
    let body = hex::decode(json["inputs"]["body_hex"].as_str().expect("body")).expect("hex");
    assert_eq!(
        std::fs::read(fixtures().join("body.bin")).expect("body.bin"),
        body
    );
    let payto = json["inputs"]["payto"].as_str().expect("payto").to_owned();
    Vectors {
        json,
        key,
        body,
        payto,
    }
}

async fn post(base: &str, v: &Vectors, signature: &str) -> reqwest::Response {
    let h_body: [u8; 64] = Sha512::digest(&v.body).into();
    reqwest::Client::new()
        .post(format!("{base}/kyc-bulk/{}", v.key.public_crockford()))
        .header(HEADER_SIGNATURE, signature)
        .header(HEADER_PAYTO, &v.payto)
        .header(HEADER_IF_NOT_MATCH, crockford::encode(&h_body))
        .header("Content-Type", "application/pdf")
        .body(v.body.clone())
        .send()
        .await
        .expect("send")
}

async fn refused_as_signature_invalid(response: reqwest::Response) {
    assert_eq!(response.status(), 403);
    let body = response.bytes().await.expect("body");
    let detail = ErrorDetail::parse(&body).expect("Taler's ErrorDetail");
    assert_eq!(detail.code, PLACEHOLDER_SIGNATURE_INVALID, "{detail:?}");
}

#[tokio::test]
async fn flags_set_purpose_payto_hash_and_registered_keys() {
    let v = vectors();
    let extern_pub = v.key.public_crockford().to_owned();
    let args = EmulateTaler::try_parse_from([
        "emulate-taler",
        "--purpose",
        "1234",
        "--payto-hash",
        "B",
        "--extern-pub",
        &extern_pub,
        "--upload-limit",
        "4096",
    ])
    .expect("flags parse")
    .emulator;
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = emulator::start(args.into_options(
        "127.0.0.1:0".parse().expect("addr"),
        dir.path().join("emulator"),
    ))
    .await
    .expect("emulator starts");
    let base = emu.url();
    let h_body: [u8; 64] = Sha512::digest(&v.body).into();
    let banner = emu.banner().join("\n");
    assert!(
        banner.contains(&format!("{base}/kyc-bulk/{extern_pub}")),
        "{banner}"
    );
    assert!(
        banner.contains("purpose 1234, payto hash variant B, upload limit 4096"),
        "{banner}"
    );

    // Signed for the defaults: the published variant-A signature (purpose 65535).
    let default_signature = v.json["variants"]["A"]["signature"]
        .as_str()
        .expect("signature");
    let default_scheme = SigningScheme {
        purpose: emulator::PLACEHOLDER_PURPOSE,
        payto_hash: PaytoHash::A,
    };
    assert!(
        signing::verify(
            &v.key.verifying_key(),
            &default_scheme,
            &h_body,
            &v.payto,
            default_signature
        )
        .is_ok(),
        "the vector is a valid signature for the default configuration"
    );
    refused_as_signature_invalid(post(&base, &v, default_signature).await).await;
    // Variant B but the placeholder purpose: the published variant-B signature.
    let b_signature = v.json["variants"]["B"]["signature"]
        .as_str()
        .expect("signature");
    refused_as_signature_invalid(post(&base, &v, b_signature).await).await;
    assert!(emu.stored(&v.payto).expect("listing").is_empty());

    // Signed for purpose 1234 and variant B with the crate's own signing code: stored.
    let configured = SigningScheme {
        purpose: 1234,
        payto_hash: PaytoHash::B,
    };
    let signature = v.key.sign(&configured, &h_body, &v.payto);
    let stored = post(&base, &v, &signature).await;
    assert_eq!(stored.status(), 204);
    let bodies = emu.stored(&v.payto).expect("listing");
    assert_eq!(bodies.len(), 1, "{bodies:?}");

    // The upload limit came from the flags too: 4097 declared bytes are refused from the
    // headers alone.
    let big = vec![b'%'; 4097];
    let response = reqwest::Client::new()
        .post(format!("{base}/kyc-bulk/{extern_pub}"))
        .header(HEADER_SIGNATURE, &signature)
        .header(HEADER_PAYTO, &v.payto)
        .header(HEADER_IF_NOT_MATCH, crockford::encode(&h_body))
        .header("Content-Type", "application/pdf")
        .body(big)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 413);
    emu.stop().await.expect("stop");
}

#[tokio::test]
async fn without_the_extern_pub_flag_the_vector_key_is_unknown() {
    let v = vectors();
    let args = EmulateTaler::try_parse_from(["emulate-taler", "--payto-hash", "b"])
        .expect("flags parse")
        .emulator;
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = emulator::start(args.into_options(
        "127.0.0.1:0".parse().expect("addr"),
        dir.path().join("emulator"),
    ))
    .await
    .expect("emulator starts");
    let signature = v.json["variants"]["B"]["signature"]
        .as_str()
        .expect("signature");
    let response = post(&emu.url(), &v, signature).await;
    assert_eq!(response.status(), 404, "an unregistered EXTERN_PUB");
    emu.stop().await.expect("stop");
}
