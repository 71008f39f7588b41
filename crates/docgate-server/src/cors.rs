//! CORS for the routes a browser uses with an upload-session token — and only for them.
//!
//! A tenant lists the origins its pages are served from (`cors_origins`); a session may be
//! bound to one of them. A preflight from an origin some tenant allows is answered with the
//! methods and headers tus and the upload routes need; an actual request gets
//! `Access-Control-Allow-Origin` only when it was authenticated by a session token whose
//! tenant allows that origin (the token identifies the tenant; the preflight carries no
//! token, so it can only be judged by origin). A request authenticated by an API key never
//! gets CORS headers: API keys do not belong in browsers. Other origins get none at all.

use std::{collections::HashSet, sync::Arc};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{header, HeaderValue, Method, StatusCode};

use crate::sessions::{CorsGrant, CorsVerdict};

/// What browsers may send and read. Only what the routes act on: a client told it may send
/// `Upload-Concat` or `X-HTTP-Method-Override` would find them ignored (tus concatenation and
/// method overrides are not served).
const ALLOW_HEADERS: &str = "Authorization, Content-Type, Idempotency-Key, Prefer, Tus-Resumable, \
    Upload-Length, Upload-Offset, Upload-Metadata, Upload-Checksum, Upload-Defer-Length, \
    X-Requested-With";
const EXPOSE_HEADERS: &str = "Location, Upload-Offset, Upload-Length, Upload-Expires, \
    Upload-Metadata, Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, \
    Tus-Checksum-Algorithm, Retry-After, Idempotent-Replayed";
const ALLOW_METHODS: &str = "GET, HEAD, POST, PATCH, DELETE, OPTIONS";

/// The origins any tenant allows (the preflight's question).
#[derive(Debug, Clone, Default)]
pub struct Origins(pub Arc<HashSet<String>>);

fn origin_of(req: &Request) -> Option<String> {
    req.headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn allow(res: &mut Response, origin: &str) {
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// The layer's function: preflights answered here, actual requests marked after the fact.
pub async fn cors(State(origins): State<Origins>, mut req: Request, next: Next) -> Response {
    let origin = origin_of(&req);
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        return preflight_answer(origin.as_deref(), &origins);
    }
    let by_token = crate::sessions::bearer(req.headers())
        .is_some_and(|c| c.starts_with(crate::sessions::TOKEN_PREFIX));
    let grant = CorsGrant::default();
    req.extensions_mut().insert(grant.clone());
    let mut res = next.run(req).await;
    let Some(origin) = origin else {
        return res;
    };
    match grant.verdict() {
        // Authenticated by a session token of a tenant that allows this origin.
        CorsVerdict::Granted(tenant) if tenant.cors_origins.contains(&origin) => {
            allow(&mut res, &origin);
            res.headers_mut().insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSE_HEADERS),
            );
        }
        CorsVerdict::Granted(_) | CorsVerdict::Refused => {}
        // A token refused before its session was found (unknown, malformed): an allowed
        // origin may read why. Never for an API key (or no credential at all).
        CorsVerdict::Unjudged if origins.0.contains(&origin) && by_token => {
            allow(&mut res, &origin)
        }
        CorsVerdict::Unjudged => {}
    }
    res
}

fn preflight_answer(origin: Option<&str>, origins: &Origins) -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    let Some(origin) = origin.filter(|o| origins.0.contains(*o)) else {
        return res;
    };
    allow(&mut res, origin);
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    res
}
