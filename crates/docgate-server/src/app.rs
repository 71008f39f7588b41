//! The application state shared by every request, and the router.
//!
//! Cross-cutting concerns are layers, not handler code: every request carries the gateway
//! host (for providers' routes), gets its refused body read out, and every problem answer is
//! counted by its code. Providers mount their own routes: `/v1/providers/<name>/…` (tenant
//! API) and `/v1/webhooks/<name>` (unauthenticated; bounded in size, time and concurrency).

use std::sync::Arc;

use axum::{
    extract::{DefaultBodyLimit, Request},
    middleware::{self, Next},
    response::Response,
    routing::{get, post, put},
    Extension, Router,
};
use docgate_core::{problem::ProblemCode, Host, Problem, SpoolDir};
use tokio::sync::Semaphore;

use crate::{
    admission::Admission,
    body::ReadOutOnDrop,
    config::{DeliverySettings, Limits},
    delivery::Deliverer,
    ledger::Ledger,
    metrics::Metrics,
    registry::Registry,
    routes,
    tenants::Tenants,
};

/// Everything a request handler may need.
#[derive(Debug)]
pub struct App {
    pub registry: Arc<Registry>,
    pub tenants: Arc<Tenants>,
    pub spool: SpoolDir,
    pub ledger: Arc<dyn Ledger>,
    pub deliverer: Arc<Deliverer>,
    pub limits: Limits,
    pub delivery: DeliverySettings,
    /// Upload slots (global and per tenant) and the storage reserve.
    pub admission: Admission,
    pub metrics: Arc<Metrics>,
    /// What providers' routes see of the gateway.
    pub host: Host,
    /// Documents being received in pieces (tus): their digest state between requests.
    pub assemblies: routes::tus::Assemblies,
    /// The pages and the sandbox's session minting.
    pub web: crate::web::WebSettings,
    /// `/readyz`'s last spool probe.
    pub spool_probe: routes::ops::SpoolProbeCache,
    /// The ledger's and the spool's gauges, as `/metrics` last read them.
    pub metric_gauges: routes::ops::GaugeCache,
}

pub type AppState = Arc<App>;

/// The whole HTTP API.
pub fn router(app: AppState) -> Router {
    let read_out = app.limits.read_out();
    let browser = browser_routes(&app);
    let mut router = Router::new()
        .route(
            "/v1/uploads/{key}",
            put(routes::uploads::put_raw)
                .get(routes::uploads::get_upload)
                .delete(routes::operations::erase),
        )
        .route("/v1/uploads/{id}/events", get(routes::operations::events))
        .route("/v1/uploads/{id}/retry", post(routes::operations::retry))
        .route("/v1/uploads/{id}/cancel", post(routes::operations::cancel))
        .route("/v1/providers", get(routes::ops::providers))
        .route("/healthz", get(routes::ops::healthz))
        .route("/readyz", get(routes::ops::readyz))
        .route("/metrics", get(routes::ops::metrics))
        .route("/v1/upload-sessions", post(routes::sessions::create))
        .merge(crate::web::routes(&app))
        .with_state(app.clone())
        .merge(browser);
    router = mount_provider_routes(router, &app);
    router = router
        .fallback(|| async { Problem::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            )
        })
        // Upload bodies are streamed by the handlers with their own limits; the extractor
        // limit and the pace rules guard the small JSON/form bodies of the other routes.
        .layer(middleware::from_fn_with_state(
            app.limits.body_rules(),
            crate::body::guard_small_bodies,
        ))
        .layer(DefaultBodyLimit::max(1024 * 1024))
        .layer(middleware::from_fn_with_state(app.clone(), count_problems))
        .layer(Extension(app.host.clone()))
        // Whatever a handler leaves unread is read out after its answer (see ReadOutOnDrop).
        // A client that sent `Expect: 100-continue` and got a refusal sends no body: nothing
        // to read out.
        .layer(middleware::map_request(move |req: Request| async move {
            if req.headers().contains_key(http::header::EXPECT) {
                return req;
            }
            req.map(|body| axum::body::Body::new(ReadOutOnDrop::new(body, read_out)))
        }))
        .layer(middleware::from_fn(refuse_ambiguous_heads))
        .layer(middleware::map_response(private_answers));
    if app.web.local_only {
        router = router.layer(middleware::from_fn(
            docgate_core::local_host::refuse_other_hosts,
        ));
    }
    router
}

/// Answers carry personal data (a session's fields, receipts, events): no cache keeps them
/// (a shared computer's browser, a proxy) unless a route says otherwise (the pages), and no
/// browser reads them as anything but their declared type.
async fn private_answers(mut res: Response) -> Response {
    let h = res.headers_mut();
    if !h.contains_key(http::header::CACHE_CONTROL) {
        h.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
    }
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    res
}

/// Request heads hyper lets through that RFC 9112 says a server must not guess at: two
/// `Host` headers (which one did the client mean? `same_origin` reads the first), and a
/// transfer coding other than `chunked` (`gzip, chunked` would store the compressed bytes
/// as the document).
async fn refuse_ambiguous_heads(
    req: Request,
    next: middleware::Next,
) -> Result<axum::response::Response, Problem> {
    let headers = req.headers();
    let mut hosts = headers.get_all(http::header::HOST).iter();
    if hosts
        .next()
        .is_some_and(|h| h.as_bytes().iter().any(u8::is_ascii_whitespace))
    {
        return Err(Problem::bad_request("the Host header is not a host"));
    }
    if hosts.next().is_some() {
        return Err(Problem::bad_request(
            "the request has more than one Host header",
        ));
    }
    let codings = headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .map(str::trim);
    let mut chunked = 0;
    for coding in codings {
        if coding.eq_ignore_ascii_case("chunked") {
            chunked += 1;
            if chunked > 1 {
                return Err(Problem::bad_request("`chunked` is applied more than once"));
            }
        } else {
            return Err(Problem::new(
                http::StatusCode::NOT_IMPLEMENTED,
                "transfer_coding_unsupported",
                "Transfer coding not supported",
            )
            .with_detail(
                "the gateway takes a body as it is or `chunked`, no other transfer coding",
            ));
        }
    }
    Ok(next.run(req).await)
}

/// The routes a browser uses with an upload-session token, with CORS for them alone.
fn browser_routes(app: &AppState) -> Router {
    use routes::{sessions, tus, uploads};
    let origins: std::collections::HashSet<String> = app
        .tenants
        .all()
        .flat_map(|t| t.cors_origins.iter().cloned())
        .collect();
    Router::new()
        // The listing shares the path but takes only an API key (see `operations`); CORS
        // on it is harmless, the extractor refuses session tokens.
        .route(
            "/v1/uploads",
            post(uploads::post_multipart).get(routes::operations::list),
        )
        .route(
            "/v1/upload-sessions/{id}",
            get(sessions::get).delete(sessions::revoke),
        )
        .route(
            "/v1/upload-sessions/{id}/complete",
            post(sessions::complete),
        )
        .route("/v1/tus/", post(tus::create).options(tus::options))
        .route("/v1/tus", post(tus::create).options(tus::options))
        .route(
            "/v1/tus/{id}",
            axum::routing::head(tus::head)
                .patch(tus::patch)
                .delete(tus::terminate)
                .options(tus::options),
        )
        .with_state(app.clone())
        .layer(middleware::from_fn_with_state(
            crate::cors::Origins(Arc::new(origins)),
            crate::cors::cors,
        ))
}

/// Every provider's own routes, under its name.
fn mount_provider_routes(mut router: Router, app: &AppState) -> Router {
    let webhooks = Arc::new(Semaphore::new(app.limits.webhook_concurrency.max(1)));
    let body_limit = usize::try_from(app.limits.webhook_body_limit).unwrap_or(usize::MAX);
    let reading = Arc::new(Semaphore::new(
        WEBHOOK_READ_BUDGET
            .max(body_limit.saturating_mul(4))
            .min(Semaphore::MAX_PERMITS),
    ));
    for provider in app.registry.all() {
        let routes = provider.clone().routes();
        let name = provider.name();
        if let Some(api) = routes.api {
            router = router.nest(&format!("/v1/providers/{name}"), api);
        }
        if let Some(webhook) = routes.webhook {
            let bounded = webhook
                .layer(middleware::from_fn_with_state(
                    WebhookBounds {
                        permits: webhooks.clone(),
                        timeout: app.limits.webhook_timeout,
                        body_limit,
                        reading: reading.clone(),
                    },
                    bound_webhook,
                ))
                .layer(DefaultBodyLimit::max(body_limit));
            router = router.nest(&format!("/v1/webhooks/{name}"), bounded);
        }
    }
    router
}

/// Webhooks are unauthenticated until their signature is checked, so anyone can send them:
/// at most `webhook_concurrency` handled at once (503 past it) and each done within the
/// timeout. The body is read before a permit is taken, so clients that trickle theirs (cut by
/// the pace rules and the timeout) never hold the permits OST's own webhooks need.
async fn bound_webhook(
    axum::extract::State(bounds): axum::extract::State<WebhookBounds>,
    req: Request,
    next: Next,
) -> Response {
    use axum::response::IntoResponse;
    let timed_out = || {
        Problem::new(
            http::StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "Request timeout",
        )
        .with_detail("the webhook was not received and handled in time")
        .into_response()
    };
    let started = tokio::time::Instant::now();
    let (parts, body) = req.into_parts();
    // The bytes being read are held against one budget shared by every webhook request: a
    // crowd of senders cannot make the gateway buffer `max_connections` bodies at once, and
    // one that trickles its body holds only the little it has sent.
    let (body, _held) =
        match tokio::time::timeout(bounds.timeout, read_webhook(body, &bounds)).await {
            Err(_) => return timed_out(),
            Ok(Err(refused)) => return refused.into_response(),
            Ok(Ok(read)) => read,
        };
    let Ok(_permit) = bounds.permits.try_acquire() else {
        return too_many_webhooks().into_response();
    };
    let req = Request::from_parts(parts, axum::body::Body::from(body));
    let left = bounds.timeout.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, next.run(req)).await {
        Ok(res) => res,
        Err(_) => timed_out(),
    }
}

/// What bounds the unauthenticated webhook routes.
#[derive(Debug, Clone)]
struct WebhookBounds {
    permits: Arc<Semaphore>,
    timeout: std::time::Duration,
    body_limit: usize,
    /// Bytes of webhook bodies being read, all requests together.
    reading: Arc<Semaphore>,
}

/// What all webhook bodies being read may hold together.
const WEBHOOK_READ_BUDGET: usize = 16 * 1024 * 1024;

/// The longest a webhook's body may pause.
const WEBHOOK_BODY_IDLE: std::time::Duration = std::time::Duration::from_secs(2);

/// A webhook's whole body, and its bytes' share of the read budget (held until it is
/// handled); 413 past the body limit, 503 when the budget is spent.
async fn read_webhook(
    body: axum::body::Body,
    bounds: &WebhookBounds,
) -> Result<(bytes::Bytes, Option<tokio::sync::OwnedSemaphorePermit>), Problem> {
    use futures_util::StreamExt;
    // A webhook arrives at once (OST sends a few KiB); a body that stalls holds its share of
    // the budget, so it is cut soon: filling the budget with stalled bodies then takes sending
    // them again every couple of seconds.
    let rules = crate::body::BodyRules {
        idle: WEBHOOK_BODY_IDLE,
        min_rate: 0,
        window: WEBHOOK_BODY_IDLE,
        deadline: bounds.timeout,
    };
    let mut body = crate::body::GuardedBody::new(body.into_data_stream(), rules);
    let mut buf = bytes::BytesMut::new();
    let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;
    while let Some(data) = body.next().await {
        let data = data.map_err(|fault| fault.to_problem())?;
        if buf.len() + data.len() > bounds.body_limit {
            return Err(Problem::payload_too_large(
                u64::try_from(bounds.body_limit).unwrap_or(u64::MAX),
                "a webhook's body",
            ));
        }
        let share = u32::try_from(data.len())
            .ok()
            .and_then(|n| bounds.reading.clone().try_acquire_many_owned(n).ok());
        let Some(share) = share else {
            return Err(too_many_webhooks());
        };
        match &mut held {
            Some(h) => h.merge(share),
            None => held = Some(share),
        }
        buf.extend_from_slice(&data);
    }
    Ok((buf.freeze(), held))
}

fn too_many_webhooks() -> Problem {
    Problem::new(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "too_many_webhooks",
        "Too many webhooks",
    )
    .with_retry_after(std::time::Duration::from_secs(1))
}

/// Count every problem answer by its code (`docgate_rejections_total{code}`), and turn the
/// framework's own plain-text refusals (an oversized JSON body, a bad path parameter) into
/// problem+json.
async fn count_problems(
    axum::extract::State(app): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let res = crate::http::as_problem(next.run(req).await).await;
    if let Some(code) = res.extensions().get::<ProblemCode>() {
        app.metrics.rejected(&code.0);
    }
    res
}
