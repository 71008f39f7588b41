//! What docgate's client puts on the wire, seen by a recording peer: the signed API call and
//! a streamed PUT with an exact Content-Length (never chunked), the signed Content-Type and
//! Content-MD5.

mod common;

use std::sync::{Arc, Mutex};

use axum::{
    extract::{Request, State},
    response::IntoResponse,
    routing::{get, put},
    Json, Router,
};
use docgate_core::{Outcome, Secret, SpoolDir};
use docgate_ost::{signing, OstConfig, OstProvider};
use futures_util::StreamExt;
use serde_json::{json, Value};

use common::*;

#[derive(Debug, Default)]
struct Seen {
    api_params: Vec<serde_json::Map<String, Value>>,
    puts: Vec<(http::HeaderMap, usize)>,
}

type Shared = (Arc<Mutex<Seen>>, String);

async fn for_put(State((seen, base)): State<Shared>, req: Request) -> impl IntoResponse {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let verified = signing::verify_request(
        &path,
        "",
        &query,
        |k| (k == "wire-key").then(|| "wire-secret".to_owned()),
        now,
        10,
    )
    .expect("the client's request verifies");
    let files = verified.params["files"].as_object().expect("files").clone();
    seen.lock().expect("lock").api_params.push(verified.params);
    let answer: serde_json::Map<String, Value> = files
        .keys()
        .map(|slot| {
            let key = format!("4/i/{}", uuid::Uuid::new_v4().simple());
            (slot.clone(), json!({"url": format!("{base}/bucket/{key}?X-Amz-Signature=abc"), "fields": {"key": key}}))
        })
        .collect();
    Json(
        json!({"success": true, "data": {"result_type": "file_upload_put", "file_upload_put": answer}}),
    )
}

async fn record_put(State((seen, _)): State<Shared>, req: Request) -> impl IntoResponse {
    let headers = req.headers().clone();
    let mut body = req.into_body().into_data_stream();
    let mut len = 0;
    while let Some(chunk) = body.next().await {
        len += chunk.expect("body chunk").len();
    }
    seen.lock().expect("lock").puts.push((headers, len));
    "ok"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_put_streams_with_exact_length_type_and_md5() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let app = Router::new()
        .route("/api/v2/users-kyc/pre-signed-urls/for-put", get(for_put))
        .route("/bucket/{*key}", put(record_put))
        .with_state((seen.clone(), base.clone()));
    let server = docgate_emulator::serve_on(app, listener).expect("serve");

    let provider = OstProvider::new(OstConfig::new(base, "wire-key", Secret::new("wire-secret")))
        .expect("config");
    let dir = tempfile::tempdir().expect("tempdir");
    // Threshold 0: the document is read back from a spool file, block by block.
    let spool = SpoolDir::new(dir.path(), 0).expect("spool");
    let data = pdf(2 * 1024 * 1024 + 3);
    let doc = ingest_as(&provider, &spool, "residence_proof", None, &data)
        .await
        .expect("doc");
    assert!(!doc.spool.is_in_memory());
    let md5 = doc.meta.digests.md5.clone().expect("md5");

    let outcome =
        docgate_core::Provider::deliver(&provider, &ctx(dir.path()), &prepared(), &[doc]).await;
    assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");

    server.stop().await.expect("stop");
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.api_params.len(), 1);
    assert_eq!(
        seen.api_params[0]["files"]["residence_proof"],
        "application/pdf"
    );
    let (headers, len) = &seen.puts[0];
    assert_eq!(*len, data.len());
    assert_eq!(
        headers[http::header::CONTENT_LENGTH],
        data.len().to_string().as_str()
    );
    assert!(
        headers.get(http::header::TRANSFER_ENCODING).is_none(),
        "not chunked"
    );
    assert_eq!(headers[http::header::CONTENT_TYPE], "application/pdf");
    let sent_md5 = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        headers["content-md5"].as_bytes(),
    )
    .expect("base64");
    assert_eq!(hex::encode(sent_md5), md5);
}
