//! Turning a [`Problem`] into an `application/problem+json` response.

use axum::response::{IntoResponse, Response};
use docgate_core::{problem::retry_after_secs, Problem};
use http::{header, HeaderValue};

/// A handler error: always answered as problem+json.
#[derive(Debug)]
pub struct ApiError(pub Problem);

impl From<Problem> for ApiError {
    fn from(p: Problem) -> ApiError {
        ApiError(p)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        problem_response(&self.0)
    }
}

pub fn problem_response(p: &Problem) -> Response {
    let body = serde_json::to_vec(&p.to_json()).unwrap_or_else(|_| b"{}".to_vec());
    let mut res = (p.status, body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if let Some(after) = p.retry_after {
        if let Ok(v) = HeaderValue::from_str(&retry_after_secs(after).to_string()) {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    res
}

/// JSON body with a status.
pub fn json_response(status: http::StatusCode, value: &serde_json::Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut res = (status, body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}
