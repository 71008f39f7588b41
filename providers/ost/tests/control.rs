//! The control API: status changes and user events over HTTP, each sending the webhook event
//! OST documents, signed so that the crate's own verifier accepts it; and the sender's bounds
//! (retries with fresh signatures, no redirects, a bounded queue, a timeout per attempt).

mod common;

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use docgate_ost::{
    emulator::{Emitted, Emulator},
    OstProvider, WebhookEvent,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use common::*;

/// What the receiver answers next (200 once the script runs out), and what it saw.
#[derive(Clone)]
struct Receiver {
    script: Arc<Mutex<VecDeque<u16>>>,
    seen: mpsc::UnboundedSender<(String, Vec<u8>)>,
}

async fn answer(State(r): State<Receiver>, uri: axum::http::Uri, body: Bytes) -> Response {
    let _ = r.seen.send((uri.path().to_owned(), body.to_vec()));
    if uri.path() == "/slow" {
        // Never answers in time: the sender's timeout is what ends this.
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    let status = r.script.lock().expect("script").pop_front().unwrap_or(200);
    let status = StatusCode::from_u16(status).expect("status");
    if status.is_redirection() {
        return (status, [(header::LOCATION, "/elsewhere")], "moved").into_response();
    }
    (status, "answer").into_response()
}

async fn receiver(
    script: &[u16],
) -> (
    docgate_emulator::RunningServer,
    mpsc::UnboundedReceiver<(String, Vec<u8>)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Receiver {
        script: Arc::new(Mutex::new(script.iter().copied().collect())),
        seen: tx,
    };
    let app = Router::new()
        .route("/hooks/ost", post(answer))
        .route("/elsewhere", post(answer))
        .route("/slow", post(answer))
        .with_state(state);
    let server = docgate_emulator::serve(app, loopback())
        .await
        .expect("receiver");
    (server, rx)
}

/// The next body the receiver got, within 10 s.
async fn next_body(rx: &mut mpsc::UnboundedReceiver<(String, Vec<u8>)>) -> (String, Vec<u8>) {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a webhook within 10 s")
        .expect("receiver running")
}

/// The next event, verified by the crate's verifier (the gateway's code path).
async fn next_event(
    provider: &OstProvider,
    rx: &mut mpsc::UnboundedReceiver<(String, Vec<u8>)>,
) -> WebhookEvent {
    let (_, body) = next_body(rx).await;
    let params =
        docgate_ost::webhook::params_from_body(Some("application/json"), &body).expect("params");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    provider
        .verify_webhook(&params, now)
        .expect("the emulator's signature verifies")
}

async fn control(emu: &Emulator, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .request(method, format!("{}{path}", emu.url()))
        .json(&body)
        .send()
        .await
        .expect("control request");
    (r.status().as_u16(), r.json().await.expect("JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_changes_over_http_send_the_documented_signed_events() {
    let (hooks, mut rx) = receiver(&[]).await;
    let hook_url = format!("{}/hooks/ost", hooks.url());
    let (emu, _dir) = start_emulator(|o| o.webhook_url = Some(hook_url.clone())).await;
    let provider = OstProvider::new(emu.sandbox_config()).expect("config");

    submit_valid(&emu, 11001).await;
    let e = next_event(&provider, &mut rx).await;
    assert_eq!(
        (e.name.as_str(), e.event_type.as_str(), e.source.as_str()),
        ("kyc_submit", "user_kyc", "api")
    );

    let post = reqwest::Method::POST;
    let (status, body) = control(
        &emu,
        post.clone(),
        "/__emulator/users/11001/kyc/approve",
        json!({"admin": "Grace"}),
    )
    .await;
    assert_eq!(
        (status, &body["webhook"]),
        (200, &json!("queued")),
        "{body}"
    );
    assert_eq!(body["user_kyc"]["kyc_status"], "approved");
    let e = next_event(&provider, &mut rx).await;
    assert_eq!(
        (e.name.as_str(), e.source.as_str()),
        ("kyc_status_update", "web")
    );
    let case = &e.data["user_kyc"];
    assert_eq!(
        (
            &case["kyc_status"],
            &case["admin_status"],
            &case["aml_status"],
            &case["last_acted_by"],
            &case["user_id"]
        ),
        (
            &json!("approved"),
            &json!("qualified"),
            &json!("cleared"),
            &json!("Grace"),
            &json!("11001")
        )
    );
    assert_eq!(e.data["result_type"], "user_kyc");

    control(
        &emu,
        post.clone(),
        "/__emulator/users/11001/kyc/whitelist",
        json!({"status": "done"}),
    )
    .await;
    let e = next_event(&provider, &mut rx).await;
    assert_eq!(
        (e.name.as_str(), e.source.as_str()),
        ("kyc_status_update", "kyc_system")
    );
    assert_eq!(e.data["user_kyc"]["whitelist_status"], "done");

    // Not possible on an approved case: 409, and no event.
    let (status, body) = control(
        &emu,
        post.clone(),
        "/__emulator/users/11001/kyc/deny",
        json!({}),
    )
    .await;
    assert_eq!(status, 409, "{body}");

    control(
        &emu,
        post.clone(),
        "/__emulator/users/11001/kyc/reopen",
        json!({}),
    )
    .await;
    let e = next_event(&provider, &mut rx).await;
    assert_eq!(e.name, "kyc_reopen");
    assert_eq!(e.data["user_kyc"]["kyc_status"], "pending");

    control(
        &emu,
        post.clone(),
        "/__emulator/users/11001/kyc/report-issue",
        json!({"types": ["document_issue"]}),
    )
    .await;
    let e = next_event(&provider, &mut rx).await;
    assert_eq!(
        e.data["user_kyc"]["admin_action_types"],
        json!(["document_issue"])
    );

    let address = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359";
    control(
        &emu,
        post.clone(),
        "/__emulator/users/11001/kyc/ethereum-address",
        json!({"ethereum_address": address}),
    )
    .await;
    let e = next_event(&provider, &mut rx).await;
    assert_eq!(e.name, "update_ethereum_address");
    assert_eq!(
        emu.kyc(11001).expect("case").details["ethereum_address"],
        address
    );

    control(
        &emu,
        post.clone(),
        "/__emulator/users/11001/kyc/aml",
        json!({"status": "rejected"}),
    )
    .await;
    let e = next_event(&provider, &mut rx).await;
    assert_eq!(
        e.data["user_kyc"]["kyc_status"], "denied",
        "an AML rejection denies"
    );

    for (path, body, expected) in [
        ("/__emulator/users/424242/kyc/approve", json!({}), 404),
        ("/__emulator/users/11002/kyc/approve", json!({}), 404),
        ("/__emulator/users/11001/kyc/promote", json!({}), 400),
        (
            "/__emulator/users/11001/kyc/aml",
            json!({"status": "green"}),
            400,
        ),
        (
            "/__emulator/users/11001/kyc/approve",
            json!({"admn": "typo"}),
            400,
        ),
    ] {
        let (status, answer) = control(&emu, post.clone(), path, body).await;
        assert_eq!(status, expected, "{path}: {answer}");
    }
    assert!(rx.try_recv().is_err(), "refused changes send nothing");
    emu.stop().await.expect("stop");
    hooks.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_events_register_opt_in_and_delete() {
    let (hooks, mut rx) = receiver(&[]).await;
    let (emu, _dir) = start_emulator(|_| {}).await;
    // Configured at run time, as the gateway's sandbox does.
    let (status, _) = control(
        &emu,
        reqwest::Method::PUT,
        "/__emulator/webhooks/url",
        json!({"url": format!("{}/hooks/ost", hooks.url())}),
    )
    .await;
    assert_eq!(status, 200);
    let provider = OstProvider::new(emu.sandbox_config()).expect("config");

    let (status, body) = control(
        &emu,
        reqwest::Method::POST,
        "/__emulator/users",
        json!({"email": "new@example.com"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let id = body["user"]["id"].as_u64().expect("id");
    let e = next_event(&provider, &mut rx).await;
    assert_eq!(
        (e.name.as_str(), e.event_type.as_str(), e.source.as_str()),
        ("user_register", "user", "web")
    );
    assert_eq!(e.data["user"]["email"], "new@example.com");

    control(
        &emu,
        reqwest::Method::POST,
        &format!("/__emulator/users/{id}/double-opt-in"),
        json!({}),
    )
    .await;
    let e = next_event(&provider, &mut rx).await;
    assert_eq!(e.name, "user_dopt_in");
    assert_eq!(
        e.data["user"]["properties"],
        json!(["doptin_mail_sent", "doptin_done"])
    );

    // Through the API, a new user is `user_register` from `api`.
    ost_api(&emu)
        .create_user("api@example.com")
        .await
        .expect("created");
    let e = next_event(&provider, &mut rx).await;
    assert_eq!(
        (e.name.as_str(), e.source.as_str()),
        ("user_register", "api")
    );

    let (status, _) = control(
        &emu,
        reqwest::Method::DELETE,
        &format!("/__emulator/users/{id}"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let e = next_event(&provider, &mut rx).await;
    assert_eq!(e.name, "user_deleted");
    let (status, ..) = refusal(ost_api(&emu).user(id).await.expect_err("deleted"));
    assert_eq!(status, 404);
    let (status, _) = control(
        &emu,
        reqwest::Method::DELETE,
        &format!("/__emulator/users/{id}"),
        json!({}),
    )
    .await;
    assert_eq!(status, 404);
    emu.stop().await.expect("stop");
    hooks.stop().await.expect("stop");
}

/// The sender's finished delivery for `event_id`, waiting up to 10 s.
async fn finished(emu: &Emulator, event_id: &str) -> docgate_ost::emulator::DeliveryRecord {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(d) = emu
            .webhook_deliveries()
            .into_iter()
            .find(|d| d.event_id == event_id)
        {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery of {event_id} did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_retried_each_freshly_signed_then_given_up() {
    let (hooks, mut rx) = receiver(&[500, 503, 200, 500, 500, 500]).await;
    let (emu, _dir) = start_emulator(|o| {
        o.webhook_url = Some(format!("{}/hooks/ost", hooks.url()));
        o.webhook_retries = 2;
        o.webhook_retry_base = Duration::from_millis(50);
    })
    .await;
    let provider = OstProvider::new(emu.sandbox_config()).expect("config");

    let (_, emitted) = emu.double_opt_in(11001).expect("user");
    assert_eq!(emitted, Emitted::Queued);
    let first = next_event(&provider, &mut rx).await;
    for _ in 0..2 {
        let again = next_event(&provider, &mut rx).await;
        assert_eq!(again.id, first.id, "the same event, retried");
    }
    let record = finished(&emu, &first.id).await;
    assert_eq!(
        (record.attempts, record.status, record.delivered),
        (3, Some(200), true)
    );

    // Three refusals with two retries: given up, nothing more is sent.
    emu.double_opt_in(11002).expect("user");
    let e = next_event(&provider, &mut rx).await;
    let record = finished(&emu, &e.id).await;
    assert_eq!(
        (record.attempts, record.status, record.delivered),
        (3, Some(500), false)
    );
    for _ in 0..2 {
        next_body(&mut rx).await;
    }
    assert!(rx.try_recv().is_err());
    emu.stop().await.expect("stop");
    hooks.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_a_failed_delivery_not_followed() {
    let (hooks, mut rx) = receiver(&[302]).await;
    let (emu, _dir) = start_emulator(|o| {
        o.webhook_url = Some(format!("{}/hooks/ost", hooks.url()));
        o.webhook_retries = 0;
    })
    .await;
    emu.double_opt_in(11001).expect("user");
    let (path, body) = next_body(&mut rx).await;
    assert_eq!(path, "/hooks/ost");
    let id = serde_json::from_slice::<Value>(&body).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let record = finished(&emu, &id).await;
    assert_eq!((record.status, record.delivered), (Some(302), false));
    assert!(rx.try_recv().is_err(), "/elsewhere was never called");
    emu.stop().await.expect("stop");
    hooks.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_is_bounded_and_each_attempt_times_out() {
    let (hooks, mut rx) = receiver(&[]).await;
    let (emu, _dir) = start_emulator(|o| {
        o.webhook_url = Some(format!("{}/slow", hooks.url()));
        o.webhook_retries = 0;
        o.webhook_capacity = 1;
        o.webhook_timeout = Duration::from_millis(300);
    })
    .await;
    let (_, first) = emu.double_opt_in(11001).expect("user");
    let (_, second) = emu.double_opt_in(11002).expect("user");
    assert_eq!((first, second), (Emitted::Queued, Emitted::QueueFull));
    let (_, body) = control(
        &emu,
        reqwest::Method::GET,
        "/__emulator/webhooks",
        Value::Null,
    )
    .await;
    assert_eq!(body["dropped"], 1);

    let (_, sent) = next_body(&mut rx).await;
    let id = serde_json::from_slice::<Value>(&sent).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let record = finished(&emu, &id).await;
    assert!(!record.delivered && record.status.is_none(), "{record:?}");
    assert!(record.error.is_some(), "the timeout is reported");
    // The slot is free again.
    let (_, third) = emu.double_opt_in(11003).expect("user");
    assert_eq!(third, Emitted::Queued);
    emu.stop().await.expect("stop");
    drop(hooks);
}
