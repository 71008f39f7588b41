//! The provider contract: what a provider crate implements so the gateway can use it.
//!
//! The gateway drives every provider the same way:
//! 1. [`Provider::prepare`] validates and normalises the frontend's text fields — before any
//!    document byte is read, so bad metadata costs the frontend nothing but a round trip;
//! 2. the ingest pipeline checks each document against [`Provider::policy`];
//! 3. [`Provider::check`] looks at the documents together (sizes of the outgoing request,
//!    slot combinations) — still before anything is sent;
//! 4. [`Provider::deliver`] sends them in the provider's own scheme and maps its answer to an
//!    [`Outcome`]. Deliver may be called again for the same upload (after a crash, a 500 or a
//!    timeout), so it must be idempotent from the provider's point of view.
//!
//! [`Prepared`] and [`DocumentMeta`] are plain JSON so the ledger can store them and a
//! delivery can resume after a restart with nothing but the spool files.

use std::{collections::BTreeMap, fmt, path::PathBuf, sync::Arc, time::Duration};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    host::OwnedRef,
    ingest::{Document, DocumentMeta},
    policy::UploadPolicy,
    problem::{FieldError, FieldErrorKind, Problem},
};

/// The frontend's text fields (multipart fields or query parameters), by name.
pub type Fields = BTreeMap<String, String>;

/// Metadata after `prepare`: provider-defined, stored in the ledger as is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prepared(pub Value);

impl Prepared {
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, Problem> {
        serde_json::from_value(self.0.clone())
            .map_err(|e| Problem::internal(format!("stored metadata does not parse: {e}")))
    }

    pub fn of<T: Serialize>(value: &T) -> Result<Prepared, Problem> {
        serde_json::to_value(value)
            .map(Prepared)
            .map_err(|e| Problem::internal(format!("metadata does not serialise: {e}")))
    }
}

/// One field a provider accepts, for `GET /v1/providers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldSpec {
    pub name: String,
    pub required: bool,
    pub description: String,
}

impl FieldSpec {
    pub fn required(name: &str, description: &str) -> FieldSpec {
        FieldSpec {
            name: name.into(),
            required: true,
            description: description.into(),
        }
    }

    pub fn optional(name: &str, description: &str) -> FieldSpec {
        FieldSpec {
            name: name.into(),
            required: false,
            description: description.into(),
        }
    }
}

/// What a delivery attempt knows about its circumstances.
#[derive(Debug, Clone)]
pub struct DeliveryContext {
    /// The gateway's upload id (stable across attempts).
    pub upload_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// A directory owned by this upload for derived files (e.g. ZIP parts); removed with the
    /// upload's spool once delivery is final.
    pub scratch_dir: PathBuf,
}

/// How a delivery attempt ended. Every variant says what the provider answered
/// (`upstream_status`: its HTTP status, `None` when no answer came).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The provider stored it; `reference` is what the provider calls it (ids, keys, parts),
    /// `owned` the identifiers the uploading tenant now owns (e.g. OST's S3 keys).
    Delivered {
        reference: Value,
        owned: Vec<OwnedRef>,
        upstream_status: Option<u16>,
    },
    /// The provider already had it: as good as delivered, never retried.
    Duplicate {
        reference: Value,
        owned: Vec<OwnedRef>,
        upstream_status: Option<u16>,
    },
    /// The provider refused it for a reason that retrying will not fix.
    Rejected {
        problem: Problem,
        upstream_status: Option<u16>,
    },
    /// A transient failure: try again after `after` (the provider's Retry-After when it gave one).
    RetryLater {
        after: Option<Duration>,
        reason: String,
        upstream_status: Option<u16>,
    },
}

impl Outcome {
    /// This outcome with every occurrence of `secrets` in its texts (reference, reason,
    /// problem detail and members) replaced by [`REDACTED`].
    pub fn redacted(mut self, secrets: &[crate::Secret]) -> Outcome {
        let secrets: Vec<String> = secrets.iter().flat_map(|s| spellings(s.expose())).collect();
        if secrets.is_empty() {
            return self;
        }
        match &mut self {
            Outcome::Delivered { reference, .. } | Outcome::Duplicate { reference, .. } => {
                redact_value(reference, &secrets)
            }
            Outcome::Rejected { problem, .. } => {
                if let Some(detail) = &mut problem.detail {
                    redact_text(detail, &secrets);
                }
                problem
                    .extra
                    .values_mut()
                    .for_each(|v| redact_value(v, &secrets));
                for error in &mut problem.errors {
                    redact_text(&mut error.message, &secrets);
                }
            }
            Outcome::RetryLater { reason, .. } => redact_text(reason, &secrets),
        }
        self
    }

    pub fn delivered(reference: Value, upstream_status: Option<u16>) -> Outcome {
        Outcome::Delivered {
            reference,
            owned: Vec::new(),
            upstream_status,
        }
    }

    pub fn duplicate(reference: Value, upstream_status: Option<u16>) -> Outcome {
        Outcome::Duplicate {
            reference,
            owned: Vec::new(),
            upstream_status,
        }
    }

    /// A refusal; a provider's own status is also shown in the problem (`upstream_status`).
    pub fn rejected(problem: Problem, upstream_status: Option<u16>) -> Outcome {
        Outcome::Rejected {
            problem,
            upstream_status,
        }
    }

    pub fn retry(reason: impl Into<String>, upstream_status: Option<u16>) -> Outcome {
        Outcome::RetryLater {
            after: None,
            reason: reason.into(),
            upstream_status,
        }
    }

    pub fn is_final(&self) -> bool {
        !matches!(self, Outcome::RetryLater { .. })
    }

    pub fn upstream_status(&self) -> Option<u16> {
        match self {
            Outcome::Delivered {
                upstream_status, ..
            }
            | Outcome::Duplicate {
                upstream_status, ..
            }
            | Outcome::Rejected {
                upstream_status, ..
            }
            | Outcome::RetryLater {
                upstream_status, ..
            } => *upstream_status,
        }
    }

    /// A short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Duplicate { .. } => "duplicate",
            Outcome::Rejected { .. } => "rejected",
            Outcome::RetryLater { .. } => "retry_later",
        }
    }
}

/// A provider's own HTTP routes (see [`Provider::routes`]).
#[derive(Debug, Default)]
pub struct ProviderRoutes {
    /// Mounted under `/v1/providers/<name>`; tenant-authenticated by the provider's handlers
    /// (with [`ApiTenant`](crate::host::ApiTenant)).
    pub api: Option<axum::Router>,
    /// Mounted under `/v1/webhooks/<name>`: unauthenticated (the provider verifies its
    /// signature); the gateway bounds its body size, time and concurrency.
    pub webhook: Option<axum::Router>,
}

/// A provider: client side of one provider's upload scheme.
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug + 'static {
    /// Stable name used in the API (`provider=taler`).
    fn name(&self) -> &str;

    /// One line for `GET /v1/providers`.
    fn description(&self) -> &str;

    fn policy(&self) -> &UploadPolicy;

    fn fields(&self) -> Vec<FieldSpec>;

    /// Validate and normalise the text fields. Report every bad field at once
    /// (`Problem::invalid_metadata`). Called before documents are read; the gateway may call it
    /// early with some fields still to come and only acts on errors other than `Missing`.
    fn prepare(&self, fields: &Fields) -> Result<Prepared, Problem>;

    /// Cross-document checks once every document is ingested (and before delivery).
    fn check(&self, _prepared: &Prepared, _documents: &[DocumentMeta]) -> Result<(), Problem> {
        Ok(())
    }

    /// The provider-side customers an upload acts for, each with the field that names it: a
    /// Sila user handle, a Finext username, a Taler bank account. Every tenant of a gateway
    /// shares the provider's account, so without this one tenant could add documents to
    /// another's customer. The gateway records the first tenant to upload for a customer as
    /// its owner and refuses the others (see [`crate::host`]). None by default.
    fn subjects(&self, _prepared: &Prepared) -> Vec<(&'static str, OwnedRef)> {
        Vec::new()
    }

    /// Send the documents. Must be safe to call again for the same upload.
    async fn deliver(
        &self,
        ctx: &DeliveryContext,
        prepared: &Prepared,
        documents: &[Document],
    ) -> Outcome;

    /// Routes beyond uploads, mounted by the gateway (none by default).
    fn routes(self: Arc<Self>) -> ProviderRoutes {
        ProviderRoutes::default()
    }

    /// The configured URLs this provider sends to, for `docgate check` (does each host
    /// resolve?). URLs learnt at run time (presigned uploads) are not listed.
    fn endpoints(&self) -> Vec<url::Url> {
        Vec::new()
    }

    /// The credentials this provider holds (a bearer token, a signing secret): taken out of
    /// every outcome's texts before they are recorded or answered ([`Outcome::redacted`]),
    /// since an upstream may quote the request it refused, headers and all. None by default.
    fn secrets(&self) -> Vec<crate::Secret> {
        Vec::new()
    }
}

/// What a secret is replaced with in an outcome's texts.
pub const REDACTED: &str = "[redacted]";

/// Secrets shorter than this are not searched for: a one-letter test credential would
/// redact every word it occurs in, and a real credential is never this short.
const REDACT_MIN_LEN: usize = 6;

/// The spellings of a secret an upstream may quote: as configured, its credential without
/// an auth scheme (`Bearer <token>` → `<token>`), and URL-encoded.
fn spellings(secret: &str) -> Vec<String> {
    let mut out = vec![secret.to_owned()];
    if let Some((_, credential)) = secret.trim().rsplit_once(' ') {
        out.push(credential.to_owned());
    }
    let encoded: Vec<String> = out
        .iter()
        .map(|s| url::form_urlencoded::byte_serialize(s.as_bytes()).collect())
        .collect();
    out.extend(encoded);
    out.retain(|s| s.len() >= REDACT_MIN_LEN);
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

/// Replace every occurrence of each secret, in any ASCII case.
fn redact_text(text: &mut String, secrets: &[String]) {
    for secret in secrets {
        let needle = secret.to_ascii_lowercase();
        // ASCII lower-casing keeps byte offsets, so matches in the copy are matches in `text`.
        let hay = text.to_ascii_lowercase();
        let found: Vec<usize> = hay.match_indices(&needle).map(|(i, _)| i).collect();
        for at in found.into_iter().rev() {
            text.replace_range(at..at + needle.len(), REDACTED);
        }
    }
}

fn redact_value(value: &mut Value, secrets: &[String]) {
    match value {
        Value::String(text) => redact_text(text, secrets),
        Value::Array(items) => items.iter_mut().for_each(|v| redact_value(v, secrets)),
        Value::Object(members) => members.values_mut().for_each(|v| redact_value(v, secrets)),
        _ => {}
    }
}

/// Helpers for `prepare` implementations.
pub mod fields {
    use super::*;

    /// Report fields not in `known` as `Unknown`. A name `base.slot` is known when `base` is
    /// in `per_slot` (per-document variants such as `document_type.front`).
    pub fn unknown(fields: &Fields, known: &[&str], per_slot: &[&str]) -> Vec<FieldError> {
        fields
            .keys()
            .filter(|k| {
                let base = k.split_once('.').map(|(b, _)| b);
                !known.contains(&k.as_str()) && !base.is_some_and(|b| per_slot.contains(&b))
            })
            .map(FieldError::unknown)
            .collect()
    }

    /// The trimmed, non-empty value of a required field, or a `Missing` error.
    pub fn required<'a>(
        fields: &'a Fields,
        name: &str,
        errors: &mut Vec<FieldError>,
    ) -> Option<&'a str> {
        match fields.get(name).map(|v| v.trim()) {
            Some(v) if !v.is_empty() => Some(v),
            _ => {
                errors.push(FieldError::missing(name));
                None
            }
        }
    }

    /// The trimmed value of an optional field (empty counts as absent).
    pub fn optional<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
        fields.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// `Ok` when every error is only a missing field (more fields may still arrive).
    pub fn only_missing(problem: &Problem) -> bool {
        problem.code == "invalid_metadata"
            && !problem.errors.is_empty()
            && problem
                .errors
                .iter()
                .all(|e| e.kind == FieldErrorKind::Missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_allow_per_slot_variants_of_known_bases() {
        let f: Fields = [("a", "1"), ("b.front", "2"), ("c", "3"), ("c.front", "4")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let errs = fields::unknown(&f, &["a", "b"], &["b"]);
        let names: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(names, vec!["c", "c.front"]);
    }

    #[test]
    fn only_missing_distinguishes_incomplete_from_invalid() {
        let missing = Problem::invalid_metadata(vec![FieldError::missing("x")]);
        let invalid = Problem::invalid_metadata(vec![
            FieldError::missing("x"),
            FieldError::invalid("y", "bad"),
        ]);
        assert!(fields::only_missing(&missing));
        assert!(!fields::only_missing(&invalid));
    }

    #[test]
    fn a_secret_is_redacted_however_the_upstream_quotes_it() {
        let secret = crate::Secret::new("Bearer R7AUTH+Secret/x=");
        let quoted = [
            "authorization: Bearer R7AUTH+Secret/x=",
            "unknown token R7AUTH+Secret/x=",
            "token=R7AUTH%2BSecret%2Fx%3D",
            "AUTHORIZATION: BEARER R7AUTH+SECRET/X=",
        ];
        for text in quoted {
            let outcome = Outcome::RetryLater {
                after: None,
                reason: text.to_owned(),
                upstream_status: Some(400),
            }
            .redacted(std::slice::from_ref(&secret));
            let Outcome::RetryLater { reason, .. } = outcome else {
                panic!("the same variant");
            };
            assert!(!reason.to_ascii_lowercase().contains("r7auth"), "{reason}");
            assert!(reason.contains(REDACTED), "{reason}");
        }
        // Short values are not searched for (they would redact ordinary words).
        let short = crate::Secret::new("abc");
        let kept = Outcome::delivered(serde_json::json!({"msg": "abc def"}), None)
            .redacted(std::slice::from_ref(&short));
        assert!(
            matches!(kept, Outcome::Delivered { reference, .. } if reference["msg"] == "abc def")
        );
    }
}
