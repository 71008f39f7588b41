//! Response helpers: JSON bodies, and problem+json for every error the framework itself
//! produces.

use axum::response::{IntoResponse, Response};
use docgate_core::{problem::ProblemCode, Problem};
use http::{header, HeaderValue, StatusCode};
use http_body_util::BodyExt;

/// JSON body with a status.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut res = (status, body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// The stable code for an error status the framework answered on its own.
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "body_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

/// An error response that is not problem+json yet (axum's extractor rejections answer in
/// plain text) becomes one, keeping its status and, as the detail, its short message.
pub async fn as_problem(res: Response) -> Response {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error())
        || res.extensions().get::<ProblemCode>().is_some()
    {
        return res;
    }
    let (parts, body) = res.into_parts();
    // Framework messages are a line or two; never read more than a little.
    let limited = http_body_util::Limited::new(body, 4096);
    let detail = match limited.collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes())
            .trim()
            .to_owned(),
        Err(_) => String::new(),
    };
    let title = status.canonical_reason().unwrap_or("Error");
    let mut problem = Problem::new(status, code_for(status), title);
    if !detail.is_empty() {
        problem = problem.with_detail(detail);
    }
    let mut converted = problem.into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            converted.headers_mut().insert(name.clone(), value.clone());
        }
    }
    converted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plain_text_errors_become_problems_and_others_pass_through() {
        let plain = (StatusCode::PAYLOAD_TOO_LARGE, "length limit exceeded").into_response();
        let converted = as_problem(plain).await;
        assert_eq!(converted.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            converted.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body = converted
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["code"], "payload_too_large");
        assert_eq!(json["detail"], "length limit exceeded");

        let ok = as_problem((StatusCode::OK, "fine").into_response()).await;
        assert_eq!(ok.status(), StatusCode::OK);
    }
}
