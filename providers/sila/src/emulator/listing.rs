//! `POST /0.2/list_documents`: the documents a user uploaded, filtered, sorted and paged.
//!
//! Sila's documented contract (its `/list_documents` page and the SDKs' parameter docs):
//! * signed like an upload: `authsignature` *and* `usersignature` over the raw body (or a
//!   bearer token); only the signing user's documents are listed — another user's never are;
//! * body filters, each optional (`null` = absent): `start_date` / `end_date` (`YYYY-MM-DD`,
//!   both inclusive, on the upload's UTC date), `doc_types` (short names from the supported
//!   types), `search` (part of the `name` or `filename`, no wildcards; matched here without
//!   regard to case), `sort_by` (`name` or `date`, default `date`);
//! * query: `page` (default 1), `per_page` (default 20, at most 100), `order` (`asc` default,
//!   or `desc`);
//! * answer: `documents` (`user_handle`, `document_id`, `name`, `filename`, `hash`, `type`,
//!   `size` as a string, `created`) and `pagination`, with `reference` and
//!   `sila_reference_id` beside them. Invalid parameters are a 400 naming each of them.

use std::{cmp::Ordering, sync::Arc, time::Instant};

use axum::{
    body::Body,
    extract::{RawQuery, State},
    response::{IntoResponse, Response},
};
use http::HeaderMap;
use serde_json::{json, Map, Value};
use time::{macros::format_description, Date, OffsetDateTime};

use super::{
    documents::present,
    envelope::{self, Failure},
    signed::{query_pairs, query_value, read_signed, Paging},
    store::StoredDocument,
    EmulatorState,
};

pub async fn list_documents(
    State(state): State<Arc<EmulatorState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    match list(&state, query.as_deref(), &headers, body, started).await {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    }
}

async fn list(
    state: &EmulatorState,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    started: Instant,
) -> Result<Response, Failure> {
    let signed = read_signed(state, headers, body, true).await?;
    let reference = signed.header.reference.clone();
    let pairs = query_pairs(query);
    let mut errors = Map::new();
    let paging = Paging::from_query(&pairs, &mut errors);
    let order = match query_value(&pairs, "order") {
        None | Some("asc") => Order::Asc,
        Some("desc") => Order::Desc,
        Some(_) => {
            errors.insert("order".into(), "order must be asc or desc".into());
            Order::Asc
        }
    };
    let filter = Filter::read(&signed.message, &state.options.document_types, &mut errors);
    if !errors.is_empty() {
        return Err(Failure::bad_request(Value::Object(errors)).with_reference(reference));
    }

    let app = signed.header.app_handle.as_str();
    let user = signed.header.user_handle.as_deref().unwrap_or_default();
    let mut matching: Vec<StoredDocument> = state
        .store
        .list()
        .into_iter()
        .filter(|d| d.belongs_to(app, user) && filter.admits(d))
        .collect();
    // The store lists in upload order, and the sort is stable: equal keys keep that order.
    matching.sort_by(|a, b| filter.sort_by.compare(a, b));
    if order == Order::Desc {
        matching.reverse();
    }
    let (page, pagination) = paging.slice(matching);

    let mut fields = Map::new();
    fields.insert(
        "reference".into(),
        reference
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
            .into(),
    );
    fields.insert(
        "sila_reference_id".into(),
        uuid::Uuid::new_v4().to_string().into(),
    );
    fields.insert(
        "documents".into(),
        Value::Array(page.iter().map(listed).collect()),
    );
    fields.insert("pagination".into(), pagination);
    Ok(envelope::success_without_message(started, fields))
}

/// One document as `/list_documents` shows it.
fn listed(doc: &StoredDocument) -> Value {
    json!({
        "user_handle": doc.user_handle,
        "document_id": doc.document_id,
        "name": doc.name,
        "filename": doc.filename,
        "hash": doc.sha256,
        "type": doc.document_type,
        "size": doc.size.to_string(),
        "created": created(doc.received_at),
    })
}

/// `created` as Sila writes it: an ISO 8601 UTC timestamp without a zone suffix.
fn created(unix_seconds: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix_seconds)
        .ok()
        .and_then(|t| {
            t.format(format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]"
            ))
            .ok()
        })
        .unwrap_or_default()
}

fn upload_date(unix_seconds: i64) -> Option<Date> {
    OffsetDateTime::from_unix_timestamp(unix_seconds)
        .ok()
        .map(|t| t.date())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Asc,
    Desc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortBy {
    Date,
    Name,
}

impl SortBy {
    fn compare(self, a: &StoredDocument, b: &StoredDocument) -> Ordering {
        match self {
            SortBy::Date => a.received_at.cmp(&b.received_at),
            // A document uploaded without a `name` is known by its filename.
            SortBy::Name => {
                let key = |d: &StoredDocument| d.name.as_deref().unwrap_or(&d.filename).to_owned();
                key(a).cmp(&key(b)).then(a.received_at.cmp(&b.received_at))
            }
        }
    }
}

/// The body's filters, validated.
#[derive(Debug, Clone)]
struct Filter {
    start_date: Option<Date>,
    end_date: Option<Date>,
    doc_types: Option<Vec<String>>,
    search: Option<String>,
    sort_by: SortBy,
}

impl Filter {
    /// Read every filter; each invalid one is explained in `errors`.
    fn read(
        message: &Map<String, Value>,
        known_types: &[String],
        errors: &mut Map<String, Value>,
    ) -> Filter {
        let start_date = date_field(message, "start_date", errors);
        let end_date = date_field(message, "end_date", errors);
        if let (Some(start), Some(end)) = (start_date, end_date) {
            if start > end {
                errors.insert(
                    "end_date".into(),
                    "end_date must not be before start_date".into(),
                );
            }
        }
        let doc_types = doc_types_field(message, known_types, errors);
        let search = match present(message, "search") {
            None => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.to_lowercase()),
            Some(_) => {
                errors.insert("search".into(), "search must be a string".into());
                None
            }
        };
        let sort_by = match present(message, "sort_by") {
            None => SortBy::Date,
            Some(Value::String(s)) if s == "date" => SortBy::Date,
            Some(Value::String(s)) if s == "name" => SortBy::Name,
            Some(_) => {
                errors.insert("sort_by".into(), "sort_by must be name or date".into());
                SortBy::Date
            }
        };
        Filter {
            start_date,
            end_date,
            doc_types,
            search,
            sort_by,
        }
    }

    fn admits(&self, doc: &StoredDocument) -> bool {
        let date = upload_date(doc.received_at);
        let after_start = self.start_date.is_none_or(|s| date.is_some_and(|d| d >= s));
        let before_end = self.end_date.is_none_or(|e| date.is_some_and(|d| d <= e));
        let of_type = self
            .doc_types
            .as_ref()
            .is_none_or(|types| types.contains(&doc.document_type));
        let found = self.search.as_ref().is_none_or(|needle| {
            doc.filename.to_lowercase().contains(needle)
                || doc
                    .name
                    .as_ref()
                    .is_some_and(|n| n.to_lowercase().contains(needle))
        });
        after_start && before_end && of_type && found
    }
}

fn date_field(
    message: &Map<String, Value>,
    key: &str,
    errors: &mut Map<String, Value>,
) -> Option<Date> {
    let value = present(message, key)?;
    let parsed = value
        .as_str()
        .and_then(|s| Date::parse(s, format_description!("[year]-[month]-[day]")).ok());
    if parsed.is_none() {
        errors.insert(
            key.into(),
            format!("{key} must be a date YYYY-MM-DD").into(),
        );
    }
    parsed
}

fn doc_types_field(
    message: &Map<String, Value>,
    known_types: &[String],
    errors: &mut Map<String, Value>,
) -> Option<Vec<String>> {
    let value = present(message, "doc_types")?;
    let Some(items) = value.as_array() else {
        errors.insert(
            "doc_types".into(),
            "doc_types must be a list of document type names".into(),
        );
        return None;
    };
    let mut names = Vec::with_capacity(items.len());
    for item in items {
        match item.as_str() {
            Some(name) if known_types.iter().any(|k| k == name) => names.push(name.to_owned()),
            _ => {
                errors.insert(
                    "doc_types".into(),
                    format!("Invalid document type in doc_types: {item}").into(),
                );
                return None;
            }
        }
    }
    // An empty list filters nothing out, like an absent one.
    (!names.is_empty()).then_some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(name: Option<&str>, filename: &str, doc_type: &str, received_at: i64) -> StoredDocument {
        StoredDocument {
            document_id: uuid::Uuid::new_v4().to_string(),
            reference: "r".into(),
            app_handle: "app".into(),
            user_handle: "user".into(),
            label: "file".into(),
            filename: filename.into(),
            name: name.map(str::to_owned),
            description: None,
            document_type: doc_type.into(),
            identity_type: None,
            mime_type: "image/png".into(),
            sha256: "00".into(),
            size: 1,
            request_content_length: None,
            auth: "ecdsa".into(),
            received_at,
        }
    }

    fn filter(body: Value) -> Result<Filter, Map<String, Value>> {
        let mut errors = Map::new();
        let known = crate::doctypes::default_names();
        let f = Filter::read(body.as_object().expect("object"), &known, &mut errors);
        if errors.is_empty() {
            Ok(f)
        } else {
            Err(errors)
        }
    }

    // 2020-08-03T17:09:24Z and the day after.
    const AUG_3: i64 = 1_596_474_564;
    const AUG_4: i64 = AUG_3 + 86_400;

    #[test]
    fn dates_are_inclusive_on_the_utc_day() {
        let f = filter(json!({"start_date": "2020-08-03", "end_date": "2020-08-03"})).expect("ok");
        assert!(f.admits(&doc(None, "a", "id_passport", AUG_3)));
        assert!(!f.admits(&doc(None, "a", "id_passport", AUG_4)));
        let f = filter(json!({"start_date": "2020-08-04", "end_date": null})).expect("ok");
        assert!(!f.admits(&doc(None, "a", "id_passport", AUG_3)));
        assert!(f.admits(&doc(None, "a", "id_passport", AUG_4)));
    }

    #[test]
    fn search_looks_in_name_and_filename_without_wildcards() {
        let f = filter(json!({"search": "ca DRIVER"})).expect("ok");
        assert!(f.admits(&doc(
            Some("My CA driver license"),
            "x",
            "id_passport",
            AUG_3
        )));
        assert!(!f.admits(&doc(None, "scan_ca_driver_x", "id_passport", AUG_3)));
        assert!(f.admits(&doc(None, "ca driver", "id_passport", AUG_3)));
        let f = filter(json!({"search": "ca*"})).expect("ok");
        assert!(!f.admits(&doc(Some("ca license"), "x", "id_passport", AUG_3)));
    }

    #[test]
    fn doc_types_filter_and_refuse_unknown_names() {
        let f = filter(json!({"doc_types": ["id_passport"]})).expect("ok");
        assert!(f.admits(&doc(None, "a", "id_passport", AUG_3)));
        assert!(!f.admits(&doc(None, "a", "doc_utility", AUG_3)));
        let errors = filter(json!({"doc_types": ["Passport"]})).expect_err("label, not name");
        assert!(errors.contains_key("doc_types"));
        assert!(filter(json!({"doc_types": []}))
            .expect("ok")
            .doc_types
            .is_none());
    }

    #[test]
    fn every_invalid_filter_is_named() {
        let errors = filter(json!({
            "start_date": "08/03/2020",
            "end_date": 20200804,
            "search": 5,
            "sort_by": "size",
            "doc_types": "id_passport"
        }))
        .expect_err("all invalid");
        for key in ["start_date", "end_date", "search", "sort_by", "doc_types"] {
            assert!(errors.contains_key(key), "{key}: {errors:?}");
        }
        let errors = filter(json!({"start_date": "2020-08-05", "end_date": "2020-08-04"}))
            .expect_err("reversed range");
        assert!(errors.contains_key("end_date"));
    }

    #[test]
    fn sort_by_name_falls_back_to_the_filename_and_then_to_the_date() {
        let b = doc(Some("b"), "z", "id_passport", AUG_3);
        let a = doc(None, "a", "id_passport", AUG_4);
        let b_later = doc(Some("b"), "y", "id_passport", AUG_4);
        assert_eq!(SortBy::Name.compare(&a, &b), Ordering::Less);
        assert_eq!(SortBy::Name.compare(&b, &b_later), Ordering::Less);
        assert_eq!(SortBy::Date.compare(&b, &a), Ordering::Less);
    }

    #[test]
    fn created_is_iso_8601_utc() {
        assert_eq!(created(AUG_3), "2020-08-03T17:09:24");
    }
}
