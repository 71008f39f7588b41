//! What every JSON endpoint of Sila does before its own work: read a small signed message,
//! check who signed it, and read the paging query.
//!
//! `/document_types`, `/list_documents` and `/get_document` all take a JSON body that is
//! signed exactly as the `data` part of an upload is (Keccak-256 + secp256k1 over the raw
//! bytes, or a bearer token instead). The checks come in the same order as for uploads:
//! credentials present (401) before the body is read, then the body (at most
//! [`MAX_JSON_BODY`], 413 beyond), the `header` (400), the signatures over the *raw* bytes
//! (403), and the optional freshness check.

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Map, Value};

use super::{
    documents::{message_header, MessageHeader},
    envelope::{self, failure, Failure},
    EmulatorState,
};

/// JSON bodies of the non-upload endpoints are small; this bounds what is buffered.
pub const MAX_JSON_BODY: usize = 64 * 1024;
/// Sila's paging defaults (`/document_types`, `/list_documents`).
pub const DEFAULT_PER_PAGE: u64 = 20;
pub const MAX_PER_PAGE: u64 = 100;

/// A request body whose signatures (or bearer token) checked out.
#[derive(Debug, Clone)]
pub struct SignedMessage {
    pub message: Map<String, Value>,
    pub header: MessageHeader,
}

/// Read and authenticate a signed JSON message. With `needs_user`, both signatures are
/// required (or a bearer token) and `header.user_handle` must name a registered user; the
/// Python SDK sends these bodies without a Content-Type, so the header is not looked at.
pub async fn read_signed(
    state: &EmulatorState,
    headers: &HeaderMap,
    body: Body,
    needs_user: bool,
) -> Result<SignedMessage, Failure> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let early = if declared.is_some_and(|n| n > MAX_JSON_BODY as u64) {
        Err(too_large())
    } else {
        state.registry.presented(headers, needs_user)
    };
    let presented = match early {
        Ok(presented) => presented,
        Err(refusal) => {
            // Refused from the headers alone; read the body away so the answer is not lost
            // in a connection reset.
            docgate_emulator::drain_in_background(body);
            return Err(refusal);
        }
    };
    let raw: Bytes = axum::body::to_bytes(body, MAX_JSON_BODY)
        .await
        .map_err(|_| too_large())?;
    let message: Map<String, Value> = match serde_json::from_slice::<Value>(&raw) {
        Ok(Value::Object(map)) => map,
        _ => {
            return Err(Failure::bad_request(
                json!({"body": "the body must be a JSON object with a header"}),
            ))
        }
    };
    let header = message_header(&message, needs_user)?;
    let user = if needs_user {
        header.user_handle.as_deref()
    } else {
        None
    };
    state
        .registry
        .verify(&presented, &raw, &header.app_handle, user)
        .map_err(|f| f.with_reference(header.reference.clone()))?;
    state
        .check_fresh(header.created)
        .map_err(|f| f.with_reference(header.reference.clone()))?;
    Ok(SignedMessage { message, header })
}

fn too_large() -> Failure {
    failure(
        StatusCode::PAYLOAD_TOO_LARGE,
        envelope::message_for(StatusCode::PAYLOAD_TOO_LARGE),
    )
}

/// The query string as pairs. A leading `&` (the Python SDK writes `?&page=1`) is an empty
/// pair and is skipped; an undecodable query counts as empty.
pub fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    serde_urlencoded::from_str(raw.unwrap_or_default()).unwrap_or_default()
}

pub fn query_value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// `?page=&per_page=`, validated: page ≥ 1, per_page 1..=100 (default 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub page: u64,
    pub per_page: u64,
}

impl Paging {
    /// Read the paging parameters; an invalid one is explained in `errors` (and the default
    /// is used meanwhile, so every problem of the request is reported at once).
    pub fn from_query(pairs: &[(String, String)], errors: &mut Map<String, Value>) -> Paging {
        let mut number = |key: &str, default: u64, max: u64| -> u64 {
            match query_value(pairs, key).map(|v| v.trim().parse::<u64>()) {
                None => default,
                Some(Ok(n)) if (1..=max).contains(&n) => n,
                Some(_) => {
                    errors.insert(
                        key.into(),
                        format!("{key} must be an integer from 1 to {max}").into(),
                    );
                    default
                }
            }
        };
        Paging {
            page: number("page", 1, u64::from(u32::MAX)),
            per_page: number("per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE),
        }
    }

    /// This page of `items`, and Sila's `pagination` object for it. A page past the end is
    /// empty, not an error.
    pub fn slice<T>(&self, items: Vec<T>) -> (Vec<T>, Value) {
        let total = items.len() as u64;
        let skip =
            usize::try_from((self.page - 1).saturating_mul(self.per_page)).unwrap_or(usize::MAX);
        let take = usize::try_from(self.per_page).unwrap_or(usize::MAX);
        let page: Vec<T> = items.into_iter().skip(skip).take(take).collect();
        let pagination = json!({
            "returned_count": page.len(),
            "total_count": total,
            "current_page": self.page,
            "total_pages": total.div_ceil(self.per_page),
        });
        (page, pagination)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        query_pairs(Some(q))
    }

    #[test]
    fn the_python_sdks_leading_ampersand_is_harmless() {
        let mut errors = Map::new();
        let paging = Paging::from_query(&pairs("&page=2&per_page=7"), &mut errors);
        assert!(errors.is_empty());
        assert_eq!(
            paging,
            Paging {
                page: 2,
                per_page: 7
            }
        );
    }

    #[test]
    fn out_of_range_paging_is_explained_per_parameter() {
        let mut errors = Map::new();
        Paging::from_query(&pairs("page=0&per_page=101"), &mut errors);
        assert!(errors["page"].is_string());
        assert!(errors["per_page"].is_string());
    }

    #[test]
    fn a_page_past_the_end_is_empty_with_the_true_totals() {
        let paging = Paging {
            page: 3,
            per_page: 2,
        };
        let (page, pagination) = paging.slice(vec![1, 2, 3, 4, 5]);
        assert_eq!(page, vec![5]);
        assert_eq!(pagination["total_pages"], 3);
        let (page, pagination) = Paging {
            page: 9,
            per_page: 2,
        }
        .slice(vec![1, 2, 3]);
        assert!(page.is_empty());
        assert_eq!(pagination["returned_count"], 0);
        assert_eq!(pagination["total_count"], 3);
    }
}
