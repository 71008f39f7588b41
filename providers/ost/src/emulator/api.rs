//! The emulated OST API: HMAC-checked endpoints that answer in OST's envelope.
//!
//! Every request goes through the same steps as at OST: route (unknown → 404 `NOT_FOUND`),
//! authenticate (`api_key`, a `request_timestamp` within 10 s, the Rack-query HMAC — any
//! failure → 401 `UNAUTHORIZED`), validate (→ 400 `BAD_REQUEST` with `error_data` per
//! parameter), act. Routing is by hand rather than by axum's router because the path must be
//! normalised first: the real SDK joins `base_url + endpoint`, so a base URL with a trailing
//! slash or a mount prefix reaches us as `//api/v2/...` or `/prefix/api/v2/...`.
//!
//! The endpoints live in [`super::presign`], [`super::users`], [`super::users_kyc`],
//! [`super::kyc_detail`] and [`super::validators`].

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, SystemTime},
};

use axum::{
    body::Body,
    extract::{Request, State},
    response::{IntoResponse, Response},
    Json,
};
use http::{Method, StatusCode};
use serde_json::{Map, Value};

use super::{
    kyc_detail, presign,
    s3::Presigner,
    state::Registry,
    users, users_kyc, validators,
    webhooks::{Emitted, WebhookSender},
};
use crate::{
    envelope::{success_body, ErrorData, OstError},
    signing::{self, AuthError},
};

/// Form bodies larger than this are not KYC submissions.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// What the API handlers share.
pub(crate) struct Shared {
    pub api_key: String,
    pub api_secret: String,
    pub mount: String,
    pub timestamp_window: Duration,
    pub url_lifetime: Duration,
    pub size_range: (u64, u64),
    pub client_id: u32,
    pub required_kyc_fields: Vec<String>,
    /// The account's "send KYC data through the API" setting.
    pub kyc_details_visible: bool,
    pub presigner: Presigner,
    pub s3_root: PathBuf,
    pub bucket: String,
    pub registry: Mutex<Registry>,
    /// The next N presigned-URL answers are issued already expired (fault injection for S3).
    pub expire_next: AtomicU32,
    pub webhooks: Arc<WebhookSender>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Test credentials are still credentials: they are shown by the banner only.
        f.debug_struct("Shared")
            .field("api_key", &self.api_key)
            .field("mount", &self.mount)
            .field("bucket", &self.bucket)
            .field("s3_root", &self.s3_root)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        // A poisoned lock only means a panic elsewhere; the registry stays consistent.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the URLs of this answer are signed: now, or far enough back to be expired.
    pub fn signing_time(&self) -> SystemTime {
        let expire = self
            .expire_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let now = SystemTime::now();
        if expire {
            now.checked_sub(self.url_lifetime + Duration::from_secs(1))
                .unwrap_or(now)
        } else {
            now
        }
    }

    /// Build an event with the next event id and queue it for the webhook URL.
    pub fn emit(&self, build: impl FnOnce(u64) -> Map<String, Value>) -> Emitted {
        if self.webhooks.url().is_none() {
            return Emitted::NoUrl;
        }
        let id = self.registry().next_event_id();
        self.webhooks.emit(build(id))
    }
}

/// An OST error answer.
pub(crate) fn failure(status: StatusCode, internal_id: &str, msg: Option<String>) -> Response {
    let mut err = OstError::for_status(status, internal_id);
    if let Some(msg) = msg {
        err = err.with_msg(msg);
    }
    (status, Json(err.to_body())).into_response()
}

/// 400 `BAD_REQUEST` naming each bad parameter.
pub(crate) fn bad_request(internal_id: &str, error_data: Vec<ErrorData>) -> Response {
    let err =
        OstError::for_status(StatusCode::BAD_REQUEST, internal_id).with_error_data(error_data);
    (StatusCode::BAD_REQUEST, Json(err.to_body())).into_response()
}

/// 422 `UNPROCESSABLE_ENTITY`: understood, but not possible in the current state.
pub(crate) fn unprocessable(internal_id: &str, msg: String) -> Response {
    failure(StatusCode::UNPROCESSABLE_ENTITY, internal_id, Some(msg))
}

pub(crate) fn success(data: Value) -> Response {
    (StatusCode::OK, Json(success_body(data))).into_response()
}

pub(crate) fn not_found() -> Response {
    failure(StatusCode::NOT_FOUND, "emu_not_found", None)
}

/// The error envelope for injected faults (`/__emulator/faults`).
pub(crate) fn fault_envelope(status: StatusCode) -> Response {
    failure(status, "emu_injected_fault", None)
}

/// Parameters other than `allowed` are refused, as a typo should be.
pub(crate) fn unexpected(params: &Map<String, Value>, allowed: &[&str]) -> Vec<ErrorData> {
    params
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| ErrorData::new(k, "is not a parameter of this endpoint"))
        .collect()
}

/// The email endpoints under `/users-kyc/{user_id}/email/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EmailKind {
    Approve,
    Deny,
    ReportIssue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    PresignPut,
    PresignPost,
    AddUser,
    ListUsers,
    GetUser(String),
    ListKyc,
    SubmitKyc(String),
    GetKyc(String),
    Email(String, EmailKind),
    GetKycDetail(String),
    ValidateEthereumAddress,
}

/// OST's routes take any `[0-9a-z.-]` id and let the service refuse a non-integer one (400);
/// anything else does not match a route (404).
fn id_segment(s: &str) -> Option<String> {
    (!s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
    .then(|| s.to_owned())
}

fn route(method: &Method, endpoint: &str) -> Option<Route> {
    let segments: Vec<&str> = endpoint.trim_start_matches('/').split('/').collect();
    let rest = segments.strip_prefix(&["api", "v2"])?;
    let get = method == Method::GET;
    let post = method == Method::POST;
    match rest {
        ["users-kyc", "pre-signed-urls", "for-put"] if get => Some(Route::PresignPut),
        ["users-kyc", "pre-signed-urls", "for-post"] if get => Some(Route::PresignPost),
        ["users"] if post => Some(Route::AddUser),
        ["users"] if get => Some(Route::ListUsers),
        ["users", id] if get => id_segment(id).map(Route::GetUser),
        ["users-kyc"] if get => Some(Route::ListKyc),
        ["users-kyc", id] if post => id_segment(id).map(Route::SubmitKyc),
        ["users-kyc", id] if get => id_segment(id).map(Route::GetKyc),
        ["users-kyc", id, "email", action] if post => {
            let kind = match *action {
                "approve" => EmailKind::Approve,
                "deny" => EmailKind::Deny,
                "report-issue" => EmailKind::ReportIssue,
                _ => return None,
            };
            id_segment(id).map(|id| Route::Email(id, kind))
        }
        ["users-kyc-detail", id] if get => id_segment(id).map(Route::GetKycDetail),
        ["ethereum-address-validation"] if get => Some(Route::ValidateEthereumAddress),
        _ => None,
    }
}

/// A path id as an integer, or OST's 400 naming `parameter`.
pub(crate) fn numeric_id(raw: &str, parameter: &str) -> Result<u64, Response> {
    raw.parse::<u64>()
        .ok()
        .filter(|_| raw.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            bad_request(
                "emu_invalid_id",
                vec![ErrorData::new(parameter, "must be an integer")],
            )
        })
}

/// The one handler behind every API path.
pub(crate) async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let Some(endpoint) = signing::canonical_endpoint(&path, &shared.mount) else {
        return not_found();
    };
    let Some(route) = route(&method, &endpoint) else {
        return not_found();
    };
    let raw_params = if method == Method::POST {
        match read_form(request.into_body()).await {
            Ok(body) if body.is_empty() => query,
            Ok(body) => body,
            Err(resp) => return *resp,
        }
    } else {
        query
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let params = match authenticate(&shared, &path, &raw_params, now) {
        Ok(params) => params,
        Err(resp) => return *resp,
    };
    dispatch(&shared, route, params, now).await
}

async fn dispatch(
    shared: &Arc<Shared>,
    route: Route,
    params: Map<String, Value>,
    now: i64,
) -> Response {
    let with_id = |raw: &str, parameter: &str| numeric_id(raw, parameter);
    let result = match route {
        Route::PresignPut => Ok(presign::presign(shared, params, presign::Kind::Put).await),
        Route::PresignPost => Ok(presign::presign(shared, params, presign::Kind::Post).await),
        Route::AddUser => Ok(users::add(shared, params, now)),
        Route::ListUsers => Ok(users::list(shared, &params)),
        Route::GetUser(id) => with_id(&id, "id").map(|id| users::get(shared, id, &params)),
        Route::ListKyc => Ok(users_kyc::list(shared, &params)),
        Route::SubmitKyc(id) => {
            with_id(&id, "user_id").map(|id| users_kyc::submit(shared, id, params, now))
        }
        Route::GetKyc(id) => with_id(&id, "user_id").map(|id| users_kyc::get(shared, id, &params)),
        Route::Email(id, kind) => {
            with_id(&id, "user_id").map(|id| users_kyc::email(shared, id, kind, params, now))
        }
        Route::GetKycDetail(id) => match with_id(&id, "user_id") {
            Ok(id) => Ok(kyc_detail::get(shared, id, &params).await),
            Err(e) => Err(e),
        },
        Route::ValidateEthereumAddress => Ok(validators::ethereum_address(&params)),
    };
    result.unwrap_or_else(|refusal| refusal)
}

/// Check the signature and timestamp; the parameters without the authentication ones.
fn authenticate(
    shared: &Shared,
    path: &str,
    raw_params: &str,
    now: i64,
) -> Result<Map<String, Value>, Box<Response>> {
    let window = i64::try_from(shared.timestamp_window.as_secs()).unwrap_or(i64::MAX);
    let verified = signing::verify_request(
        path,
        &shared.mount,
        raw_params,
        |key| (key == shared.api_key).then(|| shared.api_secret.clone()),
        now,
        window,
    );
    match verified {
        Ok(v) => Ok(v.params),
        Err(AuthError::Malformed(e)) => Err(Box::new(bad_request(
            "emu_malformed_params",
            vec![ErrorData::new("params", e.to_string())],
        ))),
        Err(e) => {
            tracing::info!(%path, "OST emulator refused a request: {e}");
            Err(Box::new(failure(
                StatusCode::UNAUTHORIZED,
                auth_internal_id(&e),
                Some(format!(
                    "{} ({e})",
                    crate::envelope::message_for_status(StatusCode::UNAUTHORIZED)
                )),
            )))
        }
    }
}

fn auth_internal_id(e: &AuthError) -> &'static str {
    match e {
        AuthError::Missing(_) => "emu_auth_missing_parameter",
        AuthError::UnknownKey => "emu_auth_unknown_api_key",
        AuthError::BadTimestamp | AuthError::Expired { .. } => "emu_auth_request_expired",
        AuthError::BadSignature => "emu_auth_bad_signature",
        AuthError::Malformed(_) | AuthError::NotAnApiPath(_) => "emu_auth_malformed",
    }
}

async fn read_form(body: Body) -> Result<String, Box<Response>> {
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| {
            Box::new(bad_request(
                "emu_body_too_large",
                vec![ErrorData::new(
                    "body",
                    format!("a form body is at most {MAX_FORM_BYTES} bytes"),
                )],
            ))
        })?;
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        Box::new(bad_request(
            "emu_body_not_utf8",
            vec![ErrorData::new("body", "not UTF-8")],
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_right_method_and_id_shape() {
        assert_eq!(
            route(&Method::POST, "/api/v2/users-kyc/11035"),
            Some(Route::SubmitKyc("11035".into()))
        );
        assert_eq!(
            route(&Method::GET, "/api/v2/users-kyc/pre-signed-urls/for-put"),
            Some(Route::PresignPut)
        );
        assert_eq!(
            route(&Method::POST, "/api/v2/users-kyc/pre-signed-urls/for-put"),
            None
        );
        assert_eq!(
            route(&Method::POST, "/api/v2/users-kyc/7/email/report-issue"),
            Some(Route::Email("7".into(), EmailKind::ReportIssue))
        );
        assert_eq!(
            route(&Method::GET, "/api/v2/users-kyc/abc"),
            Some(Route::GetKyc("abc".into())),
            "OST's service refuses it, not its router"
        );
        assert_eq!(route(&Method::GET, "/api/v2/users-kyc/+1"), None);
        assert_eq!(route(&Method::DELETE, "/api/v2/users/1"), None);
        assert_eq!(
            route(&Method::POST, "/api/v2/users-kyc/7/email/other"),
            None
        );
    }
}
