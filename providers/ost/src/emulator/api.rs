//! The emulated OST API: HMAC-checked endpoints that answer in OST's envelope.
//!
//! Every request goes through the same steps as at OST: route (unknown → 404 `NOT_FOUND`),
//! authenticate (`api_key`, a `request_timestamp` within 10 s, the Rack-query HMAC — any
//! failure → 401 `UNAUTHORIZED`), validate (→ 400 `BAD_REQUEST` with `error_data` per
//! parameter), act. Routing is by hand rather than by axum's router because the path must be
//! normalised first: the real SDK joins `base_url + endpoint`, so a base URL with a trailing
//! slash or a mount prefix reaches us as `//api/v2/...` or `/prefix/api/v2/...`.

use std::{
    collections::BTreeMap,
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
use serde_json::{json, Map, Value};

use super::{
    s3::{object_path, Presigner},
    state::Registry,
    webhooks,
};
use crate::{
    envelope::{success_body, ErrorData, OstError},
    kyc,
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
    pub presigner: Presigner,
    pub s3_root: std::path::PathBuf,
    pub bucket: String,
    pub registry: Mutex<Registry>,
    /// The next N presigned-URL answers are issued already expired (fault injection for S3).
    pub expire_next: AtomicU32,
    pub webhook_secret: String,
    pub webhook_url: Mutex<Option<String>>,
    pub http: reqwest::Client,
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

    pub fn webhook_url(&self) -> Option<String> {
        self.webhook_url
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// When the URLs of this answer are signed: now, or far enough back to be expired.
    fn signing_time(&self) -> SystemTime {
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
}

/// An OST error answer.
pub(crate) fn failure(status: StatusCode, internal_id: &str, msg: Option<String>) -> Response {
    let mut err = OstError::for_status(status, internal_id);
    if let Some(msg) = msg {
        err = err.with_msg(msg);
    }
    (status, Json(err.to_body())).into_response()
}

fn bad_request(internal_id: &str, error_data: Vec<ErrorData>) -> Response {
    let err =
        OstError::for_status(StatusCode::BAD_REQUEST, internal_id).with_error_data(error_data);
    (StatusCode::BAD_REQUEST, Json(err.to_body())).into_response()
}

fn success(data: Value) -> Response {
    (StatusCode::OK, Json(success_body(data))).into_response()
}

fn not_found() -> Response {
    failure(StatusCode::NOT_FOUND, "emu_not_found", None)
}

/// The error envelope for injected faults (`/__emulator/faults`).
pub(crate) fn fault_envelope(status: StatusCode) -> Response {
    failure(status, "emu_injected_fault", None)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    PresignPut,
    PresignPost,
    SubmitKyc(u64),
    GetKyc(u64),
    AddUser,
    GetUser(u64),
}

fn route(method: &Method, endpoint: &str) -> Option<Route> {
    let segments: Vec<&str> = endpoint.trim_start_matches('/').split('/').collect();
    let id = |s: &str| {
        s.parse::<u64>()
            .ok()
            .filter(|_| s.bytes().all(|b| b.is_ascii_digit()))
    };
    match (method, segments.as_slice()) {
        (&Method::GET, ["api", "v2", "users-kyc", "pre-signed-urls", "for-put"]) => {
            Some(Route::PresignPut)
        }
        (&Method::GET, ["api", "v2", "users-kyc", "pre-signed-urls", "for-post"]) => {
            Some(Route::PresignPost)
        }
        (&Method::POST, ["api", "v2", "users-kyc", user]) => id(user).map(Route::SubmitKyc),
        (&Method::GET, ["api", "v2", "users-kyc", user]) => id(user).map(Route::GetKyc),
        (&Method::POST, ["api", "v2", "users"]) => Some(Route::AddUser),
        (&Method::GET, ["api", "v2", "users", user]) => id(user).map(Route::GetUser),
        _ => None,
    }
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
    let window = i64::try_from(shared.timestamp_window.as_secs()).unwrap_or(i64::MAX);
    let verified = signing::verify_request(
        &path,
        &shared.mount,
        &raw_params,
        |key| (key == shared.api_key).then(|| shared.api_secret.clone()),
        now,
        window,
    );
    let params = match verified {
        Ok(v) => v.params,
        Err(AuthError::Malformed(e)) => {
            return bad_request(
                "emu_malformed_params",
                vec![ErrorData::new("params", e.to_string())],
            )
        }
        Err(e) => {
            tracing::info!(%endpoint, "OST emulator refused a request: {e}");
            return failure(
                StatusCode::UNAUTHORIZED,
                auth_internal_id(&e),
                Some(format!(
                    "{} ({e})",
                    crate::envelope::message_for_status(StatusCode::UNAUTHORIZED)
                )),
            );
        }
    };
    match route {
        Route::PresignPut => presign(&shared, params, Kind::Put).await,
        Route::PresignPost => presign(&shared, params, Kind::Post).await,
        Route::SubmitKyc(user) => submit_kyc(&shared, user, params, now),
        Route::GetKyc(user) => match shared.registry().kyc(user) {
            Some(k) => success(json!({"result_type": "user_kyc", "user_kyc": k.to_json()})),
            None => not_found(),
        },
        Route::AddUser => add_user(&shared, params, now),
        Route::GetUser(user) => match shared.registry().user(user) {
            Some(u) => success(json!({"result_type": "user", "user": u.to_json()})),
            None => not_found(),
        },
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Put,
    Post,
}

/// Parameters other than `allowed` are refused, as a typo should be.
fn unexpected(params: &Map<String, Value>, allowed: &[&str]) -> Vec<ErrorData> {
    params
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| ErrorData::new(k, "is not a parameter of this endpoint"))
        .collect()
}

async fn presign(shared: &Shared, params: Map<String, Value>, kind: Kind) -> Response {
    let mut errors = unexpected(&params, &["files"]);
    let files: BTreeMap<String, String> = match params.get("files") {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(slot, ct)| (slot.clone(), ct.as_str().unwrap_or("").to_owned()))
            .collect(),
        Some(_) => {
            errors.push(ErrorData::new(
                "files",
                "must be an object of slot → content type",
            ));
            BTreeMap::new()
        }
        None => BTreeMap::new(),
    };
    if errors.is_empty() {
        errors = kyc::check_files(&files);
    }
    if !errors.is_empty() {
        return bad_request("emu_presign_invalid_files", errors);
    }
    let start = shared.signing_time();
    let mut answer = Map::new();
    for (slot, content_type) in &files {
        let kind_dir = if content_type.starts_with("image/") {
            "i"
        } else {
            "d"
        };
        let key = format!(
            "{}/{kind_dir}/{}",
            shared.client_id,
            uuid::Uuid::new_v4().simple()
        );
        let entry = match kind {
            Kind::Put => match shared
                .presigner
                .put_url(&key, content_type, start, shared.url_lifetime)
                .await
            {
                Ok(url) => json!({"url": url, "fields": {"key": key}}),
                Err(e) => {
                    tracing::error!("OST emulator could not presign: {e}");
                    return failure(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "emu_presign_failed",
                        None,
                    );
                }
            },
            Kind::Post => shared.presigner.post_form(
                &key,
                content_type,
                start,
                shared.url_lifetime,
                shared.size_range,
            ),
        };
        answer.insert(slot.clone(), entry);
    }
    let (result_type, member) = match kind {
        Kind::Put => ("file_upload_put", "file_upload_put"),
        Kind::Post => ("file_upload_post", "file_upload_post"),
    };
    success(json!({"result_type": result_type, member: answer}))
}

fn submit_kyc(
    shared: &Arc<Shared>,
    user_id: u64,
    params: Map<String, Value>,
    now: i64,
) -> Response {
    if shared.registry().user(user_id).is_none() {
        return not_found();
    }
    let fields: BTreeMap<String, Value> = params.clone().into_iter().collect();
    let mut errors = kyc::check_kyc_fields(&fields);
    for required in &shared.required_kyc_fields {
        if !fields.contains_key(required) {
            errors.push(ErrorData::new(required, "is required"));
        }
    }
    let invalid: Vec<&str> = errors.iter().map(|e| e.parameter.as_str()).collect();
    let mut missing_files = Vec::new();
    for (name, value) in &fields {
        if invalid.contains(&name.as_str()) {
            continue;
        }
        let keys: Vec<&str> = match value {
            Value::String(s) if name.ends_with("_file_path") => vec![s.trim()],
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        for key in keys {
            let stored = object_path(&shared.s3_root, &shared.bucket, key)
                .map(|p| p.is_file())
                .unwrap_or(false);
            if !stored {
                missing_files.push(ErrorData::new(name, format!("no uploaded file at `{key}`")));
            }
        }
    }
    errors.extend(missing_files);
    if !errors.is_empty() {
        return bad_request("emu_kyc_invalid", errors);
    }
    let record = shared.registry().submit(user_id, params, now);
    if let Some(url) = shared.webhook_url() {
        let event_id = shared.registry().next_event_id();
        let event = webhooks::kyc_submit_event(event_id, &record, now);
        let (http, secret) = (shared.http.clone(), shared.webhook_secret.clone());
        tokio::spawn(async move {
            match webhooks::send(&http, &secret, &url, event).await {
                Ok(d) => tracing::info!(status = d.status, "OST emulator sent kyc_submit"),
                Err(e) => tracing::warn!("OST emulator could not send kyc_submit: {e}"),
            }
        });
    }
    success(json!({"result_type": "user_kyc", "user_kyc": record.to_json()}))
}

fn add_user(shared: &Shared, params: Map<String, Value>, now: i64) -> Response {
    let mut errors = unexpected(&params, &["email"]);
    let email = params
        .get("email")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim();
    let plausible = email
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.contains(char::is_whitespace);
    if !plausible {
        errors.push(ErrorData::new("email", "must be a valid email address"));
    }
    if !errors.is_empty() {
        return bad_request("emu_user_invalid", errors);
    }
    match shared.registry().add_user(email, now) {
        Some(user) => success(json!({"result_type": "user", "user": user.to_json()})),
        None => bad_request(
            "emu_user_duplicate",
            vec![ErrorData::new("email", "is already registered")],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_numeric_ids_and_the_right_method() {
        assert_eq!(
            route(&Method::POST, "/api/v2/users-kyc/11035"),
            Some(Route::SubmitKyc(11035))
        );
        assert_eq!(
            route(&Method::GET, "/api/v2/users-kyc/pre-signed-urls/for-put"),
            Some(Route::PresignPut)
        );
        assert_eq!(
            route(&Method::POST, "/api/v2/users-kyc/pre-signed-urls/for-put"),
            None
        );
        assert_eq!(route(&Method::GET, "/api/v2/users-kyc/+1"), None);
        assert_eq!(route(&Method::DELETE, "/api/v2/users/1"), None);
    }
}
