//! What docgate serves to people rather than programs: the upload page at `/`, the operator
//! console at `/console`, their scripts and styles under `/assets/`, and the OpenAPI
//! document at `/openapi.json`.
//!
//! Everything is compiled into the binary: a page that loads nothing from elsewhere works
//! offline, behind strict egress rules, and cannot be changed by a third-party CDN. The pages
//! are plain HTML, CSS and JavaScript modules (no build step), and speak the same public
//! API as any other client: the upload page with a session's token (tus for the bytes), the
//! console with an API key the operator types in and the page keeps in memory only.
//!
//! The pages are on in the sandbox and off unless `[web] pages = true` in production.
//! `/sandbox/…` exists only in the sandbox: it lets the page start a session with the
//! sandbox's API key, which stays on the server.

use axum::{
    body::Bytes,
    extract::{Path, State},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use docgate_core::Problem;
use http::{header, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::{app::AppState, http::json_response};

/// `[web]` in the configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSettings {
    /// Serve the upload page and the console.
    pub pages: bool,
    /// The tenant the sandbox page mints sessions for (set by the sandbox, never by a file).
    #[serde(skip)]
    pub sandbox_tenant: Option<String>,
    /// Answer only requests addressed to this machine (the sandbox on loopback: its session
    /// route takes no key). Set by the sandbox, never by a file.
    #[serde(skip)]
    pub local_only: bool,
}

/// The OpenAPI document, kept beside the code and checked against the router by the tests.
pub const OPENAPI: &str = include_str!("../web/openapi.json");

/// The embedded files: (name, content type, contents).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "tus.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/tus.js"),
    ),
    (
        "upload.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/upload.js"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/console.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../web/style.css"),
    ),
];
const UPLOAD_PAGE: &str = include_str!("../web/index.html");
const CONSOLE_PAGE: &str = include_str!("../web/console.html");

/// Pages may load and call only this origin, and may not be framed.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
    frame-ancestors 'none'";

/// The routes of this module for `app`'s settings.
pub fn routes(app: &AppState) -> Router<AppState> {
    let mut router = Router::new().route("/openapi.json", get(openapi));
    if app.web.pages {
        router = router
            .route("/", get(|| async { page(UPLOAD_PAGE) }))
            .route("/console", get(|| async { page(CONSOLE_PAGE) }))
            .route("/assets/{name}", get(asset));
    }
    if app.web.sandbox_tenant.is_some() {
        router = router
            .route("/sandbox", get(sandbox_info))
            .route("/sandbox/upload-sessions", post(sandbox_session));
    }
    router
}

fn with_headers(mut res: Response, content_type: &'static str) -> Response {
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Small files, compiled in: revalidating costs nothing and a new binary shows at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

fn page(html: &'static str) -> Response {
    let mut res = with_headers(html.into_response(), "text/html; charset=utf-8");
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    // The session token travels in the fragment, which browsers never send; no referrer
    // either, so the page's address does not leak to anything it links to.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // `frame-ancestors 'none'` for browsers that predate it: no page may frame these.
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => with_headers(body.into_response(), content_type),
        None => Problem::not_found(format!("no asset `{name}`")).into_response(),
    }
}

async fn openapi() -> Response {
    with_headers(OPENAPI.into_response(), "application/json")
}

/// The sandbox tenant, when this is the sandbox.
fn sandbox_tenant(app: &AppState) -> Result<crate::tenants::Tenant, Problem> {
    app.web
        .sandbox_tenant
        .as_deref()
        .and_then(|name| app.tenants.by_name(name))
        .cloned()
        .ok_or_else(|| Problem::not_found("this is not the sandbox"))
}

async fn sandbox_info(State(app): State<AppState>) -> Result<Response, Problem> {
    let tenant = sandbox_tenant(&app)?;
    let providers: Vec<serde_json::Value> = app
        .registry
        .all()
        .filter(|p| tenant.may_use(p.name()))
        .map(|p| json!({ "name": p.name(), "slots": p.policy().slots }))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "providers": providers }),
    ))
}

/// The sandbox's session route takes no key, so it must not take a request another site's
/// page can make: a JSON body only (any other page needs a CORS preflight for that, which
/// the sandbox never grants), and a browser's `Origin`, when sent, must be the sandbox's own.
/// Without these, any page open in the operator's browser could mint sessions with fields
/// of its choosing (a `text/plain` POST needs no preflight).
async fn sandbox_session(
    State(app): State<AppState>,
    headers: http::HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let tenant = sandbox_tenant(&app)?;
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let declared = docgate_core::media::normalize_declared(declared);
    if declared.as_deref() != Some("application/json") {
        return Err(Problem::unsupported_media_type(
            declared.as_deref().unwrap_or("not declared"),
            &["application/json".to_owned()],
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let own = origin
            .to_str()
            .is_ok_and(|o| crate::sessions::same_origin(&headers, o));
        if !own {
            return Err(crate::sessions::origin_not_allowed(
                "only the sandbox's own page may start a sandbox session",
            ));
        }
    }
    crate::routes::sessions::mint(&app, &tenant, &body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    // The pages show receipts and take an API key: nothing may frame them (clickjacking),
    // run script they did not ship, or learn their address from a link.
    #[test]
    fn the_pages_may_not_be_framed_nor_run_foreign_script() {
        for html in [UPLOAD_PAGE, CONSOLE_PAGE] {
            let res = page(html);
            let h = res.headers();
            let policy = h[header::CONTENT_SECURITY_POLICY].to_str().expect("ascii");
            assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
            assert!(policy.contains("script-src 'self'"), "{policy}");
            assert!(!policy.contains("unsafe-inline"), "{policy}");
            assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
            assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
    }
}
