//! Sila's answer to `/0.2/documents`, mapped onto docgate's four outcomes.
//!
//! Sila always answers JSON in one envelope — `success`, `status` (`SUCCESS`/`FAILURE`),
//! `message`, and per endpoint `document_id`, `reference_id`, `validation_details`. The
//! mapping follows from what retrying can change:
//!
//! | answer | outcome |
//! |---|---|
//! | 2xx, `success: true` | `Delivered`; reference = `{document_id, reference_id}` (`document_id` is an array for several documents) |
//! | 2xx with `unsuccessful_uploads` | `Rejected` (some files were refused; the ids of the others are kept in the problem) |
//! | 400 | `Rejected`, carrying `validation_details` |
//! | 401 / 403 | `Rejected` (credentials or signature; a retry signs the same way) — but with OAuth2, 401 is `RetryLater`: the token file is read again at each attempt, and a token that expired before its rotation must not cost the document |
//! | other 4xx | `Rejected` |
//! | 408, 429, 5xx | `RetryLater` (with `Retry-After` when sent) |
//! | not JSON (a proxy's error page, a cut body) | `RetryLater`: that was not Sila answering |
//! | timeout, connection error | `RetryLater` |

use std::time::Duration;

use docgate_core::{
    upstream::{read_bounded, summarize_body, MAX_ERROR_BODY},
    Outcome, OwnedRef, Problem,
};
use serde_json::{json, Value};

/// What was read of Sila's answer (the body bounded by `MAX_ERROR_BODY`).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
    /// The body was longer than the bound and was cut.
    pub truncated: bool,
}

/// Read status, `Retry-After` and at most `MAX_ERROR_BODY` bytes of the body.
pub async fn read(response: reqwest::Response) -> Result<Answer, reqwest::Error> {
    let status = response.status().as_u16();
    let retry_after = docgate_core::upstream::retry_after(response.headers());
    // One byte past the bound tells a body that was cut from one that fits exactly.
    let mut body = read_bounded(response.bytes_stream(), MAX_ERROR_BODY + 1).await?;
    let truncated = body.len() > MAX_ERROR_BODY;
    body.truncate(MAX_ERROR_BODY);
    Ok(Answer {
        status,
        retry_after,
        body,
        truncated,
    })
}

/// Map an answer to an outcome; `documents` is how many documents were sent.
pub fn outcome(answer: &Answer) -> Outcome {
    let status = answer.status;
    let parsed = if answer.truncated {
        None
    } else {
        serde_json::from_slice::<Value>(&answer.body)
            .ok()
            .filter(Value::is_object)
    };
    let Some(body) = parsed else {
        return Outcome::RetryLater {
            after: answer.retry_after,
            reason: format!(
                "Sila answered {status} without its JSON envelope: {}",
                summarize_body(&answer.body)
            ),
            upstream_status: Some(status),
        };
    };
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("(no message)")
        .to_owned();
    let success = body.get("success").and_then(Value::as_bool) == Some(true);

    match status {
        200..=299 if success => delivered(status, &body),
        408 | 429 | 500..=599 => Outcome::RetryLater {
            after: answer.retry_after,
            reason: format!("Sila answered {status}: {message}"),
            upstream_status: Some(status),
        },
        _ => Outcome::rejected(rejected(status, &message, &body), Some(status)),
    }
}

/// With OAuth2 a 401 says the bearer token is not (or no longer) valid. The next attempt sends
/// whatever the token file holds then, so the upload waits for a rotation instead of ending
/// `rejected` with its document removed; the engine's `max_attempts` and `max_age` still end
/// it if the token is never fixed.
pub fn bearer_refusal_retried(outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Rejected {
            problem,
            upstream_status: Some(401),
        } => Outcome::RetryLater {
            after: None,
            reason: format!(
                "Sila refused the OAuth2 token (401): {}; the token file is read again at the next attempt",
                problem.detail.as_deref().unwrap_or(&problem.title)
            ),
            upstream_status: Some(401),
        },
        other => other,
    }
}

fn delivered(status: u16, body: &Value) -> Outcome {
    let document_id = body.get("document_id").cloned().unwrap_or(Value::Null);
    let reference_id = body.get("reference_id").cloned().unwrap_or(Value::Null);
    let failed = body
        .get("unsuccessful_uploads")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty());
    if let Some(failed) = failed {
        // Part of the upload was stored: retrying would store those documents twice, so
        // the upload fails as a whole and the problem keeps both lists for the operator.
        let problem = Problem::provider_rejected(
            Some(status),
            format!("Sila refused {} of the documents", failed.len()),
        )
        .with_extra("unsuccessful_uploads", Value::Array(failed.clone()))
        .with_extra("document_id", document_id)
        .with_extra("reference_id", reference_id);
        return Outcome::rejected(problem, Some(status));
    }
    if document_id.is_null() {
        tracing::warn!("Sila reported success without a document_id");
    }
    // Sila's document ids belong to the tenant whose upload created them.
    let owned = ids_of(&document_id)
        .map(|id| OwnedRef::new(DOCUMENT_REF, id))
        .collect();
    Outcome::Delivered {
        reference: json!({ "document_id": document_id, "reference_id": reference_id }),
        owned,
        upstream_status: Some(status),
    }
}

/// The kind of [`OwnedRef`] a Sila document id is recorded as.
pub const DOCUMENT_REF: &str = "document";

/// One id or an array of ids (multi-document uploads).
fn ids_of(value: &Value) -> impl Iterator<Item = String> + '_ {
    let many = value.as_array().map(|a| a.iter()).into_iter().flatten();
    std::iter::once(value)
        .filter(|v| v.is_string())
        .chain(many)
        .filter_map(|v| v.as_str().map(str::to_owned))
}

fn rejected(status: u16, message: &str, body: &Value) -> Problem {
    let mut summary = format!("Sila answered {status}: {message}");
    let details = body.get("validation_details").filter(|v| !v.is_null());
    if let Some(details) = details {
        summary.push_str(" — ");
        summary.push_str(&summarize_body(details.to_string().as_bytes()));
    }
    let mut problem = Problem::provider_rejected(Some(status), summary);
    if let Some(details) = details {
        problem = problem.with_extra("validation_details", details.clone());
    }
    if let Some(sila_status) = body.get("status").filter(|v| v.is_string()) {
        problem = problem.with_extra("sila_status", sila_status.clone());
    }
    problem
}

/// A transport failure: nothing conclusive came back, so the delivery is retried.
pub fn transport_failure(error: &reqwest::Error) -> Outcome {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    // reqwest's Display names the URL (no credentials in it) and the cause.
    Outcome::retry(format!("the request to Sila {kind}: {error}"), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            retry_after: None,
            body: body.as_bytes().to_vec(),
            truncated: false,
        }
    }

    #[test]
    fn success_carries_the_ids() {
        let single = outcome(&answer(
            200,
            r#"{"success":true,"status":"SUCCESS","message":"File uploaded successfully.","reference_id":"r","document_id":"d1"}"#,
        ));
        assert_eq!(
            single,
            Outcome::Delivered {
                reference: json!({"document_id": "d1", "reference_id": "r"}),
                owned: vec![OwnedRef::new(DOCUMENT_REF, "d1")],
                upstream_status: Some(200)
            }
        );
        let multi = outcome(&answer(
            200,
            r#"{"success":true,"status":"SUCCESS","reference_id":"r","document_id":["a","b","c"],"unsuccessful_uploads":[]}"#,
        ));
        let Outcome::Delivered { reference, .. } = multi else {
            panic!("delivered: {multi:?}")
        };
        assert_eq!(reference["document_id"], json!(["a", "b", "c"]));
    }

    #[test]
    fn a_400_is_rejected_with_validation_details() {
        let o = outcome(&answer(
            400,
            r#"{"success":false,"status":"FAILURE","message":"Bad request.","validation_details":{"document_type":"Invalid document_type"}}"#,
        ));
        let Outcome::Rejected { problem: p, .. } = o else {
            panic!("rejected")
        };
        assert_eq!(p.code, "provider_rejected");
        assert_eq!(p.extra["upstream_status"], 400);
        assert_eq!(
            p.extra["validation_details"]["document_type"],
            "Invalid document_type"
        );
        assert!(p
            .detail
            .unwrap_or_default()
            .contains("Invalid document_type"));
    }

    #[test]
    fn auth_failures_are_final_and_server_failures_are_retried() {
        for status in [401, 403, 404, 413] {
            let o = outcome(&answer(
                status,
                r#"{"success":false,"status":"FAILURE","message":"no"}"#,
            ));
            assert!(matches!(o, Outcome::Rejected { .. }), "{status}");
        }
        for status in [500, 502, 503, 504, 429, 408] {
            let mut a = answer(
                status,
                r#"{"success":false,"status":"FAILURE","message":"later"}"#,
            );
            a.retry_after = Some(Duration::from_secs(7));
            match outcome(&a) {
                Outcome::RetryLater {
                    after,
                    upstream_status,
                    ..
                } => {
                    assert_eq!(after, Some(Duration::from_secs(7)));
                    assert_eq!(upstream_status, Some(status));
                }
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    #[test]
    fn anything_that_is_not_the_json_envelope_is_retried() {
        for (status, body) in [
            (200, "<html>ok</html>"),
            (400, "Bad Request"),
            (502, ""),
            (200, "[1]"),
        ] {
            assert!(
                matches!(outcome(&answer(status, body)), Outcome::RetryLater { .. }),
                "{status} {body}"
            );
        }
        let mut cut = answer(200, r#"{"success":true}"#);
        cut.truncated = true;
        assert!(matches!(outcome(&cut), Outcome::RetryLater { .. }));
    }

    #[tokio::test]
    async fn read_keeps_at_most_the_bound_and_tells_a_cut_body() {
        let respond = |len: usize| {
            reqwest::Response::from(
                http::Response::builder()
                    .status(503)
                    .header("retry-after", "4")
                    .body(vec![b'x'; len])
                    .expect("response"),
            )
        };
        let exact = read(respond(MAX_ERROR_BODY)).await.expect("read");
        assert_eq!((exact.body.len(), exact.truncated), (MAX_ERROR_BODY, false));
        assert_eq!(exact.status, 503);
        assert_eq!(exact.retry_after, Some(Duration::from_secs(4)));
        let over = read(respond(MAX_ERROR_BODY + 1)).await.expect("read");
        assert_eq!((over.body.len(), over.truncated), (MAX_ERROR_BODY, true));
        let small = read(respond(3)).await.expect("read");
        assert_eq!((small.body, small.truncated), (b"xxx".to_vec(), false));
    }

    #[test]
    fn partial_multi_uploads_are_rejected_not_retried() {
        let o = outcome(&answer(
            200,
            r#"{"success":true,"status":"SUCCESS","document_id":["a"],"unsuccessful_uploads":[{"label":"b"}]}"#,
        ));
        let Outcome::Rejected { problem: p, .. } = o else {
            panic!("rejected")
        };
        assert_eq!(p.extra["document_id"], json!(["a"]));
    }
}
