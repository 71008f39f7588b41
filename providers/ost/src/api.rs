//! The signed OST API client: one call = sign, send, read a bounded answer, parse the envelope.
//!
//! Errors are sorted by what the caller can do about them: [`ApiError::is_transient`] ones
//! (network, timeouts, 5xx, 429) may succeed later unchanged; the others will not. Nothing
//! here ever puts a URL in an error: OST's carry the signature and S3's are bearer tokens.

use std::time::Duration;

use docgate_core::{upstream, FieldError, Problem, Secret};
use http::StatusCode;
use serde_json::{Map, Value};

use crate::{
    envelope::{self, OstError},
    signing,
};

/// OST's API paths (under the base URL).
pub mod endpoints {
    pub const USERS: &str = "/api/v2/users";
    pub const USERS_KYC: &str = "/api/v2/users-kyc";
    pub const USERS_KYC_DETAIL: &str = "/api/v2/users-kyc-detail";
    pub const FOR_PUT: &str = "/api/v2/users-kyc/pre-signed-urls/for-put";
    pub const FOR_POST: &str = "/api/v2/users-kyc/pre-signed-urls/for-post";
    pub const ETHEREUM_ADDRESS_VALIDATION: &str = "/api/v2/ethereum-address-validation";
}

/// The emails OST sends a user about their case, on the client's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KycEmail {
    /// Only for an approved case.
    Approve,
    /// Only for a denied case.
    Deny,
    /// Only when an admin reported an issue.
    ReportIssue,
}

impl KycEmail {
    fn path(self) -> &'static str {
        match self {
            KycEmail::Approve => "approve",
            KycEmail::Deny => "deny",
            KycEmail::ReportIssue => "report-issue",
        }
    }
}

/// Successful OST answers are small (five URLs and POST policies); more is not OST.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// Why an API call did not produce data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    #[error("OST could not be reached: {0}")]
    Transport(String),
    #[error("OST did not answer within {0:?}")]
    Timeout(Duration),
    #[error("OST answered {status} {}: {}", .err.code, .err.msg)]
    Refused {
        status: u16,
        err: OstError,
        retry_after: Option<Duration>,
    },
    #[error("OST answered {status} without its JSON envelope: {summary}")]
    NotAnEnvelope { status: u16, summary: String },
    /// OST's envelope, but an answer that cannot be used (an upload URL without TLS, a slot
    /// missing): asking again gets the same.
    #[error("OST's answer cannot be used: {0}")]
    Unusable(String),
}

impl ApiError {
    /// Whether a later call may work. An answer without OST's envelope was not OST answering
    /// (a proxy's or CDN's page, a cut body), whatever its status: it is retried.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Transport(_) | ApiError::Timeout(_) | ApiError::NotAnEnvelope { .. } => true,
            ApiError::Refused { status, .. } => matches!(status, 408 | 429 | 500..=599),
            ApiError::Unusable(_) => false,
        }
    }

    pub fn upstream_status(&self) -> Option<u16> {
        match self {
            ApiError::Refused { status, .. } | ApiError::NotAnEnvelope { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Refused { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The problem the gateway shows its frontend for this failure.
    pub fn to_problem(&self) -> Problem {
        match self {
            ApiError::Timeout(_) => Problem::timeout(self.to_string()),
            _ if self.is_transient() => Problem::provider_unavailable(
                self.retry_after().unwrap_or(Duration::from_secs(5)),
                self.to_string(),
            )
            .with_extra("upstream_status", self.upstream_status()),
            ApiError::Refused { status, err, .. } => {
                let mut p = Problem::provider_rejected(Some(*status), self.to_string())
                    .with_extra("ost_code", err.code.as_str())
                    .with_extra("ost_internal_id", err.internal_id.as_str());
                p.errors = err
                    .error_data
                    .iter()
                    .map(|e| FieldError::invalid(e.parameter.as_str(), e.msg.as_str()))
                    .collect();
                p
            }
            _ => Problem::provider_rejected(self.upstream_status(), self.to_string()),
        }
    }
}

/// A client for OST's `/api/v2` endpoints.
#[derive(Debug, Clone)]
pub struct OstApi {
    http: reqwest::Client,
    base_url: String,
    api_key: String,
    api_secret: Secret,
    timeout: Duration,
}

impl OstApi {
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        api_key: &str,
        api_secret: Secret,
        timeout: Duration,
    ) -> OstApi {
        OstApi {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key: api_key.to_owned(),
            api_secret,
            timeout,
        }
    }

    /// The API's origin (and path prefix), as configured.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn sign(&self, endpoint: &str, params: Map<String, Value>) -> signing::SignedParams {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        signing::sign_request(
            endpoint,
            params,
            &self.api_key,
            self.api_secret.expose(),
            now,
        )
    }

    /// `GET endpoint?params…&signature=…` → `data`.
    pub async fn get(&self, endpoint: &str, params: Map<String, Value>) -> Result<Value, ApiError> {
        let signed = self.sign(endpoint, params);
        let url = format!("{}{endpoint}?{}", self.base_url, signed.wire);
        self.send(self.http.get(url)).await
    }

    /// `POST endpoint` with the signed parameters as a form body → `data`.
    pub async fn post(
        &self,
        endpoint: &str,
        params: Map<String, Value>,
    ) -> Result<Value, ApiError> {
        let signed = self.sign(endpoint, params);
        let url = format!("{}{endpoint}", self.base_url);
        let request = self
            .http
            .post(url)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(signed.wire);
        self.send(request).await
    }

    /// `POST /users` (`users.create`): a user for `email` → `{"result_type": "user", "user"}`.
    pub async fn create_user(&self, email: &str) -> Result<Value, ApiError> {
        let mut params = Map::new();
        params.insert("email".into(), Value::String(email.to_owned()));
        self.post(endpoints::USERS, params).await
    }

    /// `GET /users/{id}` (`users.get`).
    pub async fn user(&self, id: u64) -> Result<Value, ApiError> {
        self.get(&format!("{}/{id}", endpoints::USERS), Map::new())
            .await
    }

    /// `GET /users` (`users.list`): `params` are `filters`, `page_number`, `order`, `limit`
    /// (a previous answer's `meta.next_page_payload` fits as is).
    pub async fn users(&self, params: Map<String, Value>) -> Result<Value, ApiError> {
        self.get(endpoints::USERS, params).await
    }

    /// `POST /users-kyc/{user_id}` (`users_kyc.submit_kyc`) with the KYC fields.
    pub async fn submit_kyc(
        &self,
        user_id: u64,
        fields: Map<String, Value>,
    ) -> Result<Value, ApiError> {
        self.post(&format!("{}/{user_id}", endpoints::USERS_KYC), fields)
            .await
    }

    /// `GET /users-kyc/{user_id}` (`users_kyc.get`): the status of the user's last
    /// submission → `{"result_type": "user_kyc", "user_kyc": {kyc_status, admin_status, …}}`.
    pub async fn user_kyc(&self, user_id: u64) -> Result<Value, ApiError> {
        self.get(&format!("{}/{user_id}", endpoints::USERS_KYC), Map::new())
            .await
    }

    /// `GET /users-kyc` (`users_kyc.list`), with the list parameters of [`OstApi::users`].
    pub async fn users_kyc(&self, params: Map<String, Value>) -> Result<Value, ApiError> {
        self.get(endpoints::USERS_KYC, params).await
    }

    /// `GET /users-kyc-detail/{user_id}` (`users_kyc_details.get`): the submitted details
    /// (files as short-lived URLs), if the OST account shares them through the API.
    pub async fn user_kyc_detail(&self, user_id: u64) -> Result<Value, ApiError> {
        self.get(
            &format!("{}/{user_id}", endpoints::USERS_KYC_DETAIL),
            Map::new(),
        )
        .await
    }

    /// `POST /users-kyc/{user_id}/email/{approve|deny|report-issue}`
    /// (`users_kyc.email_approve` …): OST emails the user about their case.
    pub async fn email_user(
        &self,
        user_id: u64,
        email: KycEmail,
        template_vars: Map<String, Value>,
    ) -> Result<Value, ApiError> {
        let mut params = Map::new();
        if !template_vars.is_empty() {
            params.insert("template_vars".into(), Value::Object(template_vars));
        }
        let endpoint = format!("{}/{user_id}/email/{}", endpoints::USERS_KYC, email.path());
        self.post(&endpoint, params).await
    }

    /// `GET /ethereum-address-validation` (`validators.verify_ethereum_address`).
    pub async fn verify_ethereum_address(&self, address: &str) -> Result<Value, ApiError> {
        let mut params = Map::new();
        params.insert("ethereum_address".into(), Value::String(address.to_owned()));
        self.get(endpoints::ETHEREUM_ADDRESS_VALIDATION, params)
            .await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, ApiError> {
        let response = request
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let retry_after = upstream::retry_after(response.headers());
        let body = upstream::read_bounded(response.bytes_stream(), MAX_ANSWER_BYTES)
            .await
            .map_err(|e| self.transport_error(e))?;
        let parsed = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| envelope::parse(&v));
        match parsed {
            Some(Ok(data)) if status.is_success() => Ok(data),
            // `success:true` with an error status is not something OST says; trust neither.
            Some(Ok(_)) => Err(ApiError::NotAnEnvelope {
                status: status.as_u16(),
                summary: upstream::summarize_body(&body),
            }),
            Some(Err(err)) => Err(ApiError::Refused {
                status: effective_status(status, &err),
                err,
                retry_after,
            }),
            None => Err(ApiError::NotAnEnvelope {
                status: status.as_u16(),
                summary: upstream::summarize_body(&body),
            }),
        }
    }

    fn transport_error(&self, e: reqwest::Error) -> ApiError {
        if e.is_timeout() {
            ApiError::Timeout(self.timeout)
        } else {
            ApiError::Transport(describe(e))
        }
    }
}

/// OST sometimes answers an error envelope with 200; its code then says what it is.
fn effective_status(status: StatusCode, err: &OstError) -> u16 {
    if !status.is_success() {
        return status.as_u16();
    }
    match err.code.as_str() {
        "BAD_REQUEST" => 400,
        "UNAUTHORIZED" => 401,
        "FORBIDDEN" => 403,
        "NOT_FOUND" => 404,
        "UNPROCESSABLE_ENTITY" => 422,
        "TOO_MANY_REQUESTS" => 429,
        "SERVICE_UNAVAILABLE" => 503,
        _ => 500,
    }
}

/// A reqwest error as text, without the URL (it may carry a signature or a presigned token).
pub(crate) fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
