//! OST's JSON envelope: every answer, success or failure, has this shape.
//!
//! ```json
//! {"success": true,  "data": {...}}
//! {"success": false, "err": {"code": "BAD_REQUEST", "msg": "...", "internal_id": "...",
//!                            "error_data": [{"parameter": "files", "msg": "..."}]}}
//! ```
//! The real SDKs ignore the HTTP status and only read this body, so the emulator answers with
//! it everywhere (injected faults included) and the client trusts `success` over the status.
//! The codes per status are OST's published ones.

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// One parameter-level complaint in `err.error_data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorData {
    pub parameter: String,
    pub msg: String,
}

impl ErrorData {
    pub fn new(parameter: impl Into<String>, msg: impl Into<String>) -> ErrorData {
        ErrorData {
            parameter: parameter.into(),
            msg: msg.into(),
        }
    }
}

/// The `err` member of a failed answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OstError {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub internal_id: String,
    #[serde(default)]
    pub error_data: Vec<ErrorData>,
}

/// OST's string code for an HTTP status (its documented table; 5xx are the emulator's words).
pub fn code_for_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "BAD_REQUEST",
        401 => "UNAUTHORIZED",
        403 => "FORBIDDEN",
        404 => "NOT_FOUND",
        422 => "UNPROCESSABLE_ENTITY",
        429 => "TOO_MANY_REQUESTS",
        503 => "SERVICE_UNAVAILABLE",
        _ if status.is_server_error() => "INTERNAL_SERVER_ERROR",
        _ => "BAD_REQUEST",
    }
}

/// OST's message for a status code (documented wording where there is one).
pub fn message_for_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "At least one parameter is invalid or missing. See \"err.error_data\" array for more details.",
        401 => "We could not authenticate the request. Please review your credentials and authentication method.",
        403 => "Access to the resource is not permitted.",
        404 => "The requested resource could not be located.",
        422 => "An error occurred while processing the request.",
        429 => "Too many requests received.",
        _ => "Something went wrong.",
    }
}

impl OstError {
    pub fn for_status(status: StatusCode, internal_id: &str) -> OstError {
        OstError {
            code: code_for_status(status).to_owned(),
            msg: message_for_status(status).to_owned(),
            internal_id: internal_id.to_owned(),
            error_data: Vec::new(),
        }
    }

    pub fn with_msg(mut self, msg: impl Into<String>) -> OstError {
        self.msg = msg.into();
        self
    }

    pub fn with_error_data(mut self, error_data: Vec<ErrorData>) -> OstError {
        self.error_data = error_data;
        self
    }

    /// The failure body.
    pub fn to_body(&self) -> Value {
        json!({"success": false, "err": self})
    }
}

/// The success body.
pub fn success_body(data: Value) -> Value {
    json!({"success": true, "data": data})
}

/// A parsed answer: `Ok(data)` or `Err(err)`.
pub fn parse(body: &Value) -> Option<Result<Value, OstError>> {
    let obj = body.as_object()?;
    // The docs show `"success": "true"` once; accept both spellings.
    let success = match obj.get("success")? {
        Value::Bool(b) => *b,
        Value::String(s) => s == "true",
        _ => return None,
    };
    if success {
        Some(Ok(obj.get("data").cloned().unwrap_or(Value::Null)))
    } else {
        let err = obj
            .get("err")
            .and_then(|e| serde_json::from_value::<OstError>(e.clone()).ok())
            .unwrap_or(OstError {
                code: String::new(),
                msg: String::new(),
                internal_id: String::new(),
                error_data: Vec::new(),
            });
        Some(Err(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_of_success_parse_and_errors_keep_their_details() {
        assert_eq!(
            parse(&json!({"success": "true", "data": {"a": 1}})),
            Some(Ok(json!({"a": 1})))
        );
        let err = OstError::for_status(StatusCode::BAD_REQUEST, "x_1")
            .with_error_data(vec![ErrorData::new("files", "is required")]);
        assert_eq!(parse(&err.to_body()), Some(Err(err)));
        assert_eq!(parse(&json!({"data": 1})), None);
    }

    #[test]
    fn statuses_map_to_the_documented_codes() {
        assert_eq!(code_for_status(StatusCode::UNAUTHORIZED), "UNAUTHORIZED");
        assert_eq!(code_for_status(StatusCode::NOT_FOUND), "NOT_FOUND");
        assert_eq!(
            code_for_status(StatusCode::BAD_GATEWAY),
            "INTERNAL_SERVER_ERROR"
        );
    }
}
