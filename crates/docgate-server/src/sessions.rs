//! Upload sessions: the credential a browser may hold.
//!
//! A tenant's backend mints a session with its API key (`POST /v1/upload-sessions`): the
//! provider, the fields it already knows (checked now, fixed from then on), the slots, a
//! size cap, a lifetime and optionally the one browser origin allowed to use it. The browser
//! gets only the session's token — 256 random bits, shown once and stored as a SHA-256
//! hash — which works on the session's own upload routes and nowhere else: it is not an API
//! key, so every other route answers 401. It expires, it can be revoked, and it is spent
//! once the session's upload is accepted (then it can still read the session's receipt).
//!
//! [`Uploader`] is the extractor for routes that take either credential.

use std::sync::{Arc, Mutex};

use axum::extract::FromRequestParts;
use base64::Engine as _;
use docgate_core::Problem;
use http::{header, request::Parts, HeaderMap, StatusCode};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::{
    app::AppState,
    host::ledger_problem,
    ledger::{now_ms, SessionRecord, SessionState},
    tenants::Tenant,
};

/// Every session token starts with this, so a token pasted where an API key belongs (or the
/// reverse) is recognised as such.
pub const TOKEN_PREFIX: &str = "dgs_";

/// A fresh token: 256 random bits, base64url.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// How a token is stored (and looked up).
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The bearer credential of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, credential) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credential.trim())
        .filter(|c| !c.is_empty())
}

fn session_problem(status: StatusCode, code: &'static str, detail: &str) -> Problem {
    Problem::new(status, code, "Upload session refused").with_detail(detail)
}

/// A session token that cannot be used now, as the client is told.
pub fn check_usable(session: &SessionRecord, now: i64) -> Result<(), Problem> {
    match session.state {
        SessionState::Revoked => Err(session_problem(
            StatusCode::UNAUTHORIZED,
            "session_revoked",
            "this upload session was revoked",
        )),
        SessionState::Expired => Err(expired()),
        _ if now >= session.expires_at => Err(expired()),
        SessionState::Accepted => Err(session_problem(
            StatusCode::CONFLICT,
            "session_spent",
            "this upload session's upload was already accepted; its token is spent",
        )),
        SessionState::Completing => Err(being_accepted()),
        SessionState::Open => Ok(()),
    }
}

/// 409: the session's upload is being accepted right now (it takes no new document, nor
/// bytes, until that ends).
pub fn being_accepted() -> Problem {
    session_problem(
        StatusCode::CONFLICT,
        "session_busy",
        "this upload session's upload is being accepted right now",
    )
    .with_retry_after(std::time::Duration::from_secs(1))
}

/// A session token that cannot even read its session now: revoked or expired. (A spent or
/// busy session may still be read, to follow its upload.)
pub fn check_readable(session: &SessionRecord, now: i64) -> Result<(), Problem> {
    match session.state {
        SessionState::Revoked | SessionState::Expired => check_usable(session, now),
        _ if now >= session.expires_at => Err(expired()),
        _ => Ok(()),
    }
}

fn expired() -> Problem {
    session_problem(
        StatusCode::UNAUTHORIZED,
        "session_expired",
        "this upload session has expired",
    )
}

/// Who is calling a route that takes either credential.
#[derive(Debug, Clone)]
pub enum Uploader {
    /// A tenant's backend, by its API key.
    ApiKey(Tenant),
    /// A browser, by a session token: the session as stored (in any state — each route
    /// decides which states it serves) and its tenant.
    Session(Tenant, SessionRecord),
}

impl Uploader {
    pub fn tenant(&self) -> &Tenant {
        match self {
            Uploader::ApiKey(t) | Uploader::Session(t, _) => t,
        }
    }

    /// The session, or 403 for an API key on a session-only route.
    pub fn session(&self) -> Result<&SessionRecord, Problem> {
        match self {
            Uploader::Session(_, s) => Ok(s),
            Uploader::ApiKey(_) => Err(Problem::forbidden(
                "this route takes an upload-session token, not an API key",
            )),
        }
    }
}

/// The CORS verdict of a request, filled in by authentication (see `crate::cors`).
#[derive(Debug, Clone, Default)]
pub struct CorsGrant(Arc<Mutex<CorsVerdict>>);

/// What authentication found out about a request's token and origin.
#[derive(Debug, Clone, Default)]
pub enum CorsVerdict {
    /// No session was found (no token, or an unknown or malformed one).
    #[default]
    Unjudged,
    /// A session token of this tenant, from an origin it may be used from.
    Granted(Tenant),
    /// A real session token from an origin it may not be used from: the page there learns
    /// nothing, not even that the token is real.
    Refused,
}

impl CorsGrant {
    fn set(&self, verdict: CorsVerdict) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = verdict;
    }

    pub fn verdict(&self) -> CorsVerdict {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A browser origin must be one the tenant allows, or the gateway's own (its upload page),
/// and the session's own when it has one.
fn check_origin(parts: &Parts, tenant: &Tenant, session: &SessionRecord) -> Result<(), Problem> {
    let Some(origin) = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
    else {
        return Ok(());
    };
    let listed = tenant.cors_origins.iter().any(|o| o == origin);
    let allowed = (listed || same_origin(&parts.headers, origin))
        && session.origin.as_deref().is_none_or(|o| o == origin);
    if allowed {
        Ok(())
    } else {
        Err(origin_not_allowed(
            "this upload session may not be used from this origin",
        ))
    }
}

/// 403 for a request from a browser origin that may not use what it asks for.
pub fn origin_not_allowed(detail: &str) -> Problem {
    session_problem(StatusCode::FORBIDDEN, "origin_not_allowed", detail)
}

/// The request comes from a page the gateway served: its `Origin` names the host the
/// request was sent to (the scheme is not compared: TLS may end at a proxy in front). A
/// page elsewhere cannot make a browser send another site's host with its own origin.
pub fn same_origin(headers: &HeaderMap, origin: &str) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
}

impl FromRequestParts<AppState> for Uploader {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Problem> {
        let credential = bearer(&parts.headers).ok_or_else(Problem::unauthorized)?;
        if !credential.starts_with(TOKEN_PREFIX) {
            let tenant = app.tenants.authenticate(&parts.headers)?.clone();
            return Ok(Uploader::ApiKey(tenant));
        }
        let session = app
            .ledger
            .session_by_token(&token_hash(credential))
            .await
            .map_err(|e| ledger_problem(&e))?
            .ok_or_else(|| Problem::unauthorized().with_detail("unknown upload-session token"))?;
        let tenant = app
            .tenants
            .by_name(&session.tenant)
            .cloned()
            .ok_or_else(|| Problem::unauthorized().with_detail("the session's tenant is gone"))?;
        let grant = parts.extensions.get::<CorsGrant>();
        if let Err(refused) = check_origin(parts, &tenant, &session) {
            grant.inspect(|g| g.set(CorsVerdict::Refused));
            return Err(refused);
        }
        grant.inspect(|g| g.set(CorsVerdict::Granted(tenant.clone())));
        let _ = now_ms;
        Ok(Uploader::Session(tenant, session))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_recognisable() {
        let a = new_token();
        let b = new_token();
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_ne!(a, b);
        assert!(a.len() >= TOKEN_PREFIX.len() + 43, "256 bits in base64url");
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), token_hash(&b));
        assert!(!token_hash(&a).contains(&a[4..]));
    }
}
