//! `/0.2/list_documents` and `/0.2/get_document` on the emulator, answered directly: signed
//! exactly as Sila's SDKs sign them, with the refusals Sila gives.

mod common;

use common::*;
use docgate_sila::{
    emulator::{
        TEST_APP_HANDLE, TEST_APP_PRIVATE_KEY, TEST_BEARER_TOKEN, TEST_USER_HANDLE,
        TEST_USER_PRIVATE_KEY,
    },
    signing::PrivateKey,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A second registered user, with a key of its own.
const OTHER_USER_HANDLE: &str = "other_user.silamoney.eth";
const OTHER_USER_KEY: &str = "0x2222222222222222222222222222222222222222222222222222222222222222";
/// A valid key nobody registered.
const STRANGER_KEY: &str = "0x1111111111111111111111111111111111111111111111111111111111111111";

fn key(hex: &str) -> PrivateKey {
    PrivateKey::from_hex(hex).expect("test key")
}

async fn emulator() -> (docgate_sila::emulator::Emulator, tempfile::TempDir) {
    start_emulator(|opts| {
        opts.users
            .insert(OTHER_USER_HANDLE.into(), key(OTHER_USER_KEY).address());
    })
    .await
}

fn header(user: &str) -> Value {
    json!({
        "created": 1700000000,
        "app_handle": TEST_APP_HANDLE,
        "user_handle": user,
        "version": "0.2",
        "reference": uuid::Uuid::new_v4().to_string(),
    })
}

/// Upload one document for `user` (signed with `user_key`) and return its id.
async fn upload(
    base: &str,
    user: &str,
    user_key: &str,
    meta: Value,
    bytes: Vec<u8>,
    mime: &str,
) -> String {
    let mut message = json!({"header": header(user), "message": "header_msg"});
    let fields = message.as_object_mut().expect("object");
    fields.extend(meta.as_object().expect("object").clone());
    fields.insert("hash".into(), hex::encode(Sha256::digest(&bytes)).into());
    fields.insert("mime_type".into(), mime.into());
    let data = serde_json::to_vec(&message).expect("json");
    let (status, body) = signed_upload(
        base,
        &data,
        vec![RawFile {
            label: "file",
            content_type: mime,
            bytes,
        }],
        &[
            (
                "authsignature",
                key(TEST_APP_PRIVATE_KEY).sign(&data).expect("sign"),
            ),
            ("usersignature", key(user_key).sign(&data).expect("sign")),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["document_id"].as_str().expect("id").to_owned()
}

fn png_meta(filename: &str, name: Option<&str>, doc_type: &str) -> Value {
    let mut meta = json!({"filename": filename, "document_type": doc_type});
    if let Some(name) = name {
        meta["name"] = name.into();
    }
    meta
}

/// POST a JSON body to `path`, signed by the app and by `user_key` (if any).
async fn post_signed(
    base: &str,
    path: &str,
    body: &Value,
    user_key: Option<&str>,
) -> reqwest::Response {
    let raw = serde_json::to_vec(body).expect("json");
    let mut req = reqwest::Client::new().post(format!("{base}{path}")).header(
        "authsignature",
        key(TEST_APP_PRIVATE_KEY).sign(&raw).expect("sign"),
    );
    if let Some(user_key) = user_key {
        req = req.header("usersignature", key(user_key).sign(&raw).expect("sign"));
    }
    req.body(raw).send().await.expect("send")
}

async fn json_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON envelope"))
}

async fn list(base: &str, query: &str, filters: Value) -> (u16, Value) {
    let mut body = json!({"header": header(TEST_USER_HANDLE), "message": "header_msg"});
    body.as_object_mut()
        .expect("object")
        .extend(filters.as_object().expect("object").clone());
    json_of(
        post_signed(
            base,
            &format!("/0.2/list_documents{query}"),
            &body,
            Some(TEST_USER_PRIVATE_KEY),
        )
        .await,
    )
    .await
}

fn names(body: &Value) -> Vec<String> {
    body["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .map(|d| d["filename"].as_str().expect("filename").to_owned())
        .collect()
}

fn assert_failure(body: &Value) {
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["status"], "FAILURE", "{body}");
    assert!(body["message"].is_string(), "{body}");
}

/// Three PNGs for the test user (b, a, c in that order; one passport) and one for another
/// user.
async fn seeded() -> (
    docgate_sila::emulator::Emulator,
    tempfile::TempDir,
    Vec<String>,
) {
    let (emu, dir) = emulator().await;
    let base = emu.url();
    let png = fixture("red1x1.png");
    let mut ids = Vec::new();
    for (filename, name, doc_type) in [
        ("scan_b", Some("B license"), "id_drivers_license"),
        ("scan_a", None, "id_passport"),
        ("scan_c", Some("C license"), "id_drivers_license"),
    ] {
        ids.push(
            upload(
                &base,
                TEST_USER_HANDLE,
                TEST_USER_PRIVATE_KEY,
                png_meta(filename, name, doc_type),
                png.clone(),
                "image/png",
            )
            .await,
        );
    }
    upload(
        &base,
        OTHER_USER_HANDLE,
        OTHER_USER_KEY,
        png_meta("not_yours", None, "id_passport"),
        png,
        "image/png",
    )
    .await;
    (emu, dir, ids)
}

#[tokio::test]
async fn list_documents_shows_only_the_signing_users_documents_in_silas_shape() {
    let (emu, _dir, ids) = seeded().await;
    let (status, body) = list(&emu.url(), "", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["status"], "SUCCESS");
    assert!(body["reference"].is_string() && body["sila_reference_id"].is_string());
    assert_eq!(names(&body), ["scan_b", "scan_a", "scan_c"], "upload order");
    assert_eq!(
        body["pagination"],
        json!({"returned_count": 3, "total_count": 3, "current_page": 1, "total_pages": 1})
    );
    let first = &body["documents"][0];
    let png = fixture("red1x1.png");
    assert_eq!(first["document_id"], ids[0].as_str());
    assert_eq!(first["user_handle"], TEST_USER_HANDLE);
    assert_eq!(first["name"], "B license");
    assert_eq!(first["type"], "id_drivers_license");
    assert_eq!(first["hash"], hex::encode(Sha256::digest(&png)));
    assert_eq!(first["size"], png.len().to_string(), "size is a string");
    let created = first["created"].as_str().expect("created");
    assert!(
        time::PrimitiveDateTime::parse(
            created,
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]")
        )
        .is_ok(),
        "{created}"
    );
    emu.stop().await.expect("stop");
}

#[tokio::test]
async fn list_documents_filters_by_type_search_and_date() {
    let (emu, _dir, _) = seeded().await;
    let base = emu.url();
    let (_, body) = list(&base, "", json!({"doc_types": ["id_passport"]})).await;
    assert_eq!(names(&body), ["scan_a"]);
    let (_, body) = list(&base, "", json!({"search": "LICENSE"})).await;
    assert_eq!(names(&body), ["scan_b", "scan_c"], "name matches, any case");
    let (_, body) = list(&base, "", json!({"search": "scan_"})).await;
    assert_eq!(body["pagination"]["total_count"], 3, "filename matches");
    let (_, body) = list(&base, "", json!({"search": "not_yours"})).await;
    assert_eq!(body["pagination"]["total_count"], 0, "never another user's");

    let today = time::OffsetDateTime::now_utc().date();
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let day = |d: time::Date| d.format(fmt).expect("date");
    let yesterday = today.previous_day().expect("date");
    let (_, body) = list(
        &base,
        "",
        json!({"start_date": day(today), "end_date": day(today)}),
    )
    .await;
    assert_eq!(body["pagination"]["total_count"], 3);
    let (_, body) = list(&base, "", json!({"end_date": day(yesterday)})).await;
    assert_eq!(body["pagination"]["total_count"], 0);
    let (_, body) = list(
        &base,
        "",
        json!({"start_date": day(today.next_day().expect("date"))}),
    )
    .await;
    assert_eq!(body["pagination"]["total_count"], 0);
    emu.stop().await.expect("stop");
}

#[tokio::test]
async fn list_documents_sorts_and_pages() {
    let (emu, _dir, _) = seeded().await;
    let base = emu.url();
    // By name; a document without `name` is known by its filename. The keys are
    // "B license", "scan_a" and "C license", compared byte for byte.
    let (_, body) = list(&base, "", json!({"sort_by": "name"})).await;
    assert_eq!(names(&body), ["scan_b", "scan_c", "scan_a"]);
    let (_, body) = list(&base, "?order=desc", json!({"sort_by": "name"})).await;
    assert_eq!(names(&body), ["scan_a", "scan_c", "scan_b"]);
    let (_, body) = list(&base, "?&order=desc", json!({"sort_by": "date"})).await;
    assert_eq!(names(&body), ["scan_c", "scan_a", "scan_b"]);

    let (status, body) = list(&base, "?&page=2&per_page=2", json!({"sort_by": "name"})).await;
    assert_eq!(status, 200);
    assert_eq!(names(&body), ["scan_a"]);
    assert_eq!(
        body["pagination"],
        json!({"returned_count": 1, "total_count": 3, "current_page": 2, "total_pages": 2})
    );
    let (_, body) = list(&base, "?page=5&per_page=2", json!({})).await;
    assert_eq!(body["pagination"]["returned_count"], 0);
    emu.stop().await.expect("stop");
}

#[tokio::test]
async fn list_documents_names_every_invalid_parameter() {
    let (emu, _dir) = emulator().await;
    let (status, body) = list(
        &emu.url(),
        "?per_page=101&order=newest",
        json!({"sort_by": "size", "doc_types": ["Passport"], "start_date": "2020-13-01"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_failure(&body);
    assert_eq!(body["message"], "Bad request.");
    for key in ["per_page", "order", "sort_by", "doc_types", "start_date"] {
        assert!(body["validation_details"][key].is_string(), "{key}: {body}");
    }
    assert!(
        body["reference"].is_string(),
        "the caller's reference is echoed"
    );
    emu.stop().await.expect("stop");
}

#[tokio::test]
async fn list_documents_checks_signatures_like_an_upload() {
    let (emu, _dir, _) = seeded().await;
    let base = emu.url();
    let body = json!({"header": header(TEST_USER_HANDLE)});
    let (status, answer) =
        json_of(post_signed(&base, "/0.2/list_documents", &body, Some(STRANGER_KEY)).await).await;
    assert_eq!(status, 403, "{answer}");
    assert_failure(&answer);
    let (status, answer) =
        json_of(post_signed(&base, "/0.2/list_documents", &body, None).await).await;
    assert_eq!(status, 401, "the user signature is required: {answer}");
    assert_failure(&answer);

    // Signed over other bytes than those sent: the same JSON re-serialised.
    let raw = serde_json::to_vec(&body).expect("json");
    let respaced = serde_json::to_vec_pretty(&body).expect("json");
    let resp = reqwest::Client::new()
        .post(format!("{base}/0.2/list_documents"))
        .header(
            "authsignature",
            key(TEST_APP_PRIVATE_KEY).sign(&raw).expect("sign"),
        )
        .header(
            "usersignature",
            key(TEST_USER_PRIVATE_KEY).sign(&raw).expect("sign"),
        )
        .body(respaced)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 403);

    // OAuth2: the bearer token replaces both signatures.
    let resp = reqwest::Client::new()
        .post(format!("{base}/0.2/list_documents"))
        .bearer_auth(TEST_BEARER_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("send");
    let (status, answer) = json_of(resp).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["pagination"]["total_count"], 3);
    emu.stop().await.expect("stop");
}

async fn get(base: &str, user: &str, user_key: &str, document_id: Value) -> reqwest::Response {
    let body = json!({"header": header(user), "document_id": document_id});
    post_signed(base, "/0.2/get_document", &body, Some(user_key)).await
}

#[tokio::test]
async fn get_document_streams_the_stored_bytes_with_silas_headers() {
    let (emu, _dir) = emulator().await;
    let base = emu.url();
    // Several read chunks' worth, so the body really streams.
    let mut pdf = b"%PDF-1.4\n".to_vec();
    pdf.extend((0..600_000u32).map(|i| (i % 251) as u8));
    let id = upload(
        &base,
        TEST_USER_HANDLE,
        TEST_USER_PRIVATE_KEY,
        json!({"filename": "Führerschein", "document_type": "id_drivers_license"}),
        pdf.clone(),
        "application/pdf",
    )
    .await;

    let resp = get(&base, TEST_USER_HANDLE, TEST_USER_PRIVATE_KEY, id.into()).await;
    assert_eq!(resp.status().as_u16(), 200);
    let headers = resp.headers().clone();
    assert_eq!(headers["content-type"], "application/pdf");
    assert_eq!(headers["content-length"], pdf.len().to_string().as_str());
    assert!(
        headers.get("transfer-encoding").is_none(),
        "sent with its length, not chunked"
    );
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"F_hrerschein.pdf\"; filename*=UTF-8''F%C3%BChrerschein.pdf"
    );
    let bytes = resp.bytes().await.expect("body");
    assert!(bytes.as_ref() == pdf.as_slice(), "byte-identical");
    emu.stop().await.expect("stop");
}

#[tokio::test]
async fn get_document_refuses_bad_signatures_unknown_ids_and_other_users_documents() {
    let (emu, _dir, ids) = seeded().await;
    let base = emu.url();

    let (status, body) =
        json_of(get(&base, TEST_USER_HANDLE, STRANGER_KEY, ids[0].clone().into()).await).await;
    assert_eq!(status, 403, "{body}");
    assert_failure(&body);

    let unknown = uuid::Uuid::new_v4().to_string();
    let (status, body) = json_of(
        get(
            &base,
            TEST_USER_HANDLE,
            TEST_USER_PRIVATE_KEY,
            unknown.into(),
        )
        .await,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_failure(&body);
    assert_eq!(body["message"], "Document not found.");
    let not_found = body;

    // The other user, correctly signed, asks for the test user's document: the same answer
    // as for an id that does not exist.
    let (status, body) = json_of(
        get(
            &base,
            OTHER_USER_HANDLE,
            OTHER_USER_KEY,
            ids[0].clone().into(),
        )
        .await,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["message"], not_found["message"]);

    for bad in [json!("../../registry.json"), json!(42), Value::Null] {
        let (status, body) =
            json_of(get(&base, TEST_USER_HANDLE, TEST_USER_PRIVATE_KEY, bad.clone()).await).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["validation_details"]["document_id"].is_string(),
            "{body}"
        );
    }
    emu.stop().await.expect("stop");
}
