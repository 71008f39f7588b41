//! `FinextProvider`: docgate's client side of Finext's proof endpoints.
//!
//! One delivery is one signed POST. The body is the documented JSON with the documents inlined
//! as base64, streamed from the spool ([`crate::body`]) with an exact `Content-Length`. Every
//! attempt draws a fresh `request_id` and `timestamp` and signs them, so a retry after a 5xx
//! or a timeout is a new request to Finext, never a replay it would refuse.

use std::collections::BTreeMap;

use async_trait::async_trait;
use docgate_core::{
    registration::SectionChecks,
    upstream::{read_bounded, MAX_ERROR_BODY},
    DeliveryContext, DigestSet, Document, DocumentMeta, FieldError, FieldSpec, Fields, MediaRange,
    Outcome, Prepared, Problem, Provider, SlotSpec, Slots, UploadPolicy,
};
use http::{header, HeaderValue};

use crate::{
    body::{BodyBuilder, SpoolFault},
    config::{checked_extension_map, FinextConfig, FinextConfigError},
    dates, outcome,
    sign::{request_id, sign, timestamp_ms},
    submission::{self, Proof, Submission},
    vocab::Vocabulary,
};

/// The document slots: the front is always needed, the back depends on the document.
pub const FRONT: &str = "front";
pub const BACK: &str = "back";

/// Finext as a docgate provider.
#[derive(Debug)]
pub struct FinextProvider {
    config: FinextConfig,
    base_url: String,
    /// Canonical sniffed media type → `*_extension` value.
    extensions: BTreeMap<String, String>,
    authorization: HeaderValue,
    policy: UploadPolicy,
    http: reqwest::Client,
}

impl FinextProvider {
    pub fn new(config: FinextConfig) -> Result<FinextProvider, FinextConfigError> {
        if let Some((_, first)) = config.problems().into_iter().next() {
            return Err(first);
        }
        let base_url = config.base_url.trim().trim_end_matches('/').to_owned();
        let mut authorization = HeaderValue::from_str(config.authorization.expose())
            .map_err(|_| FinextConfigError::Authorization)?;
        authorization.set_sensitive(true);
        let checked = checked_extension_map(&config.extension_map)?;
        let accepted: Vec<MediaRange> = checked.iter().map(|(r, _, _)| r.clone()).collect();
        let extensions = checked.into_iter().map(|(_, t, e)| (t, e)).collect();
        let policy = UploadPolicy {
            min_document_bytes: 1,
            max_document_bytes: config.max_document_bytes,
            max_request_bytes: config.max_document_bytes.saturating_mul(2),
            accepted,
            digests: DigestSet::SHA256,
            slots: Slots::Named {
                slots: vec![
                    SlotSpec {
                        name: FRONT.into(),
                        required: true,
                    },
                    SlotSpec {
                        name: BACK.into(),
                        required: false,
                    },
                ],
            },
            zip: None,
            refuse_active_content: true,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            // A redirect cannot replay a streamed body; a moved API is a configuration error.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("docgate-finext/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FinextConfigError::Client(e.to_string()))?;
        Ok(FinextProvider {
            config,
            base_url,
            extensions,
            authorization,
            policy,
            http,
        })
    }

    /// The `*_extension` value for a sniffed media type.
    fn extension(&self, media_type: &str) -> Option<&str> {
        self.extensions.get(media_type).map(String::as_str)
    }

    /// The document in `slot` with its `*_extension` value.
    fn in_slot<'a>(
        &'a self,
        documents: &'a [Document],
        slot: &str,
    ) -> Option<(&'a Document, &'a str)> {
        documents
            .iter()
            .find(|d| d.meta.slot == slot)
            .and_then(|d| {
                // check() guarantees every document's type has an extension.
                self.extension(&d.meta.media_type).map(|e| (d, e))
            })
    }

    /// Sign and stream one request; the response, or the outcome when none came.
    async fn send(
        &self,
        ctx: &DeliveryContext,
        submission: &Submission,
        front: (&Document, &str),
        back: Option<(&Document, &str)>,
        request_id: &str,
    ) -> Result<reqwest::Response, Outcome> {
        let endpoint = submission.endpoint();
        let timestamp = timestamp_ms();
        let plan = self
            .body(submission, front, back, request_id, &timestamp)
            .finish();
        let content_length = plan.content_length();
        let fault = SpoolFault::default();
        let url = format!("{}{}", self.base_url, endpoint.path());
        tracing::info!(
            upload_id = %ctx.upload_id,
            attempt = ctx.attempt,
            endpoint = endpoint.name(),
            request_id = %request_id,
            content_length,
            "finext: sending"
        );
        let sent = self
            .http
            .post(&url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(header::CONTENT_LENGTH, content_length)
            .body(reqwest::Body::wrap_stream(plan.into_stream(fault.clone())))
            .send()
            .await;
        sent.map_err(|e| {
            // The stream broke on our side (the spool), not on the network: say so. A read
            // that failed (an S3 range cut, EMFILE) may work next time; a document found altered
            // or truncated cannot, and the engine ends those (`Spooled::failed_integrity`).
            if let Some(what) = fault.get() {
                return Outcome::retry(format!("finext: {what}"), None);
            }
            outcome::transport_failure(&e, self.config.timeout)
        })
    }

    /// Read Finext's answer and classify it.
    async fn answer(
        &self,
        ctx: &DeliveryContext,
        submission: &Submission,
        request_id: &str,
        response: reqwest::Response,
    ) -> Outcome {
        let endpoint = submission.endpoint();
        let status = response.status();
        let headers = response.headers().clone();
        // At most `MAX_ERROR_BODY` bytes of the answer (Finext's answers are tiny JSON objects).
        let body = match read_bounded(response.bytes_stream(), MAX_ERROR_BODY).await {
            Ok(b) => b,
            Err(e) => return outcome::transport_failure(&e, self.config.timeout),
        };
        let result = outcome::interpret(
            status,
            &headers,
            &body,
            &outcome::Attempt {
                endpoint,
                username: &submission.username,
                request_id,
            },
        );
        tracing::info!(
            upload_id = %ctx.upload_id,
            endpoint = endpoint.name(),
            request_id = %request_id,
            status = status.as_u16(),
            delivered = matches!(result, Outcome::Delivered { .. }),
            final_ = result.is_final(),
            "finext: answered"
        );
        result
    }

    fn back_problem(submission: &Submission) -> Problem {
        let what = match &submission.proof {
            Proof::Id { id_type, .. } => format!("an ID proof with id_type {id_type}"),
            Proof::Address { .. } => "this proof".into(),
        };
        Problem::invalid_metadata(vec![FieldError {
            message: format!("{what} needs its back side in the `{BACK}` slot"),
            ..FieldError::missing(BACK)
        }])
    }

    /// The body, in the field order of Finext's documentation.
    fn body(
        &self,
        submission: &Submission,
        front: (&Document, &str),
        back: Option<(&Document, &str)>,
        request_id: &str,
        timestamp: &str,
    ) -> BodyBuilder {
        let signature = sign(
            &self.config.api_key,
            &submission.username,
            timestamp,
            self.config.secret.expose(),
            request_id,
        );
        let fmt = |d| self.config.date_format.format(d);
        let mut b = BodyBuilder::new()
            .field("api_key", &self.config.api_key)
            .field("request_id", request_id)
            .field("timestamp", timestamp)
            .field("username", &submission.username);
        let (front_field, back_field) = match &submission.proof {
            Proof::Address {
                address_type,
                address_issued_by,
                address_issued_date,
                address_language,
                ..
            } => {
                b = b
                    .field("address_type", address_type.as_str())
                    .field("address_issued_by", address_issued_by)
                    .field("address_issued_date", &fmt(*address_issued_date))
                    .field("address_language", address_language.as_str());
                ("address_proof_front", "address_proof_back")
            }
            Proof::Id {
                id_type,
                id_number,
                issued_by,
                issued_date,
                expiration_date,
                language,
            } => {
                b = b
                    .field("id_type", id_type.as_str())
                    .field("id_number", id_number)
                    .field("issued_by", issued_by);
                if let Some(d) = issued_date {
                    b = b.field("issued_date", &fmt(*d));
                }
                if let Some(d) = expiration_date {
                    b = b.field("expiration_date", &fmt(*d));
                }
                b = b.field("language", language.as_str());
                ("id_front", "id_back")
            }
        };
        let (doc, ext) = front;
        b = b
            .document(front_field, doc.spool.clone(), doc.meta.size)
            .field(&format!("{front_field}_extension"), ext);
        if let Some((doc, ext)) = back {
            b = b
                .document(back_field, doc.spool.clone(), doc.meta.size)
                .field(&format!("{back_field}_extension"), ext);
        }
        b.field("sign", &signature)
    }
}

/// Every problem of a configuration that needs no secret, each at its key.
impl SectionChecks for FinextConfig {
    type Problem = FinextConfigError;

    fn problems(&self) -> Vec<(&'static str, FinextConfigError)> {
        let config = self;
        let mut found = Vec::new();
        let base_url = config.base_url.trim().trim_end_matches('/');
        let bad_url = |reason: String| FinextConfigError::BaseUrl {
            url: docgate_core::upstream::shown_url(&config.base_url),
            reason,
        };
        match reqwest::Url::parse(base_url) {
            Err(e) => found.push(("base_url", bad_url(e.to_string()))),
            Ok(parsed)
                if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() =>
            {
                found.push((
                    "base_url",
                    bad_url("want http(s)://host[:port][/prefix] without a query".into()),
                ))
            }
            Ok(_) => {}
        }
        if config.api_key.trim().is_empty() {
            found.push(("api_key", FinextConfigError::EmptyApiKey));
        }
        for (name, zero) in [
            ("connect_timeout", config.connect_timeout.is_zero()),
            ("timeout", config.timeout.is_zero()),
            ("max_document_bytes", config.max_document_bytes == 0),
        ] {
            if zero {
                found.push((name, FinextConfigError::Zero(name)));
            }
        }
        if let Err(e) = checked_extension_map(&config.extension_map) {
            found.push(("extension_map", e));
        }
        found
    }
}

/// The customer a submission is for, as tenants own it. Finext says only "unique
/// username"; whether it folds case is not known, so the owner of `lili111` owns every
/// spelling of it in case (refusing more, never less). Kept as a hash.
fn username_subject(username: &str) -> docgate_core::OwnedRef {
    docgate_core::OwnedRef::hashed("username", &username.trim().to_lowercase())
}

#[async_trait]
impl Provider for FinextProvider {
    fn name(&self) -> &str {
        "finext"
    }

    fn description(&self) -> &str {
        "Finext KYC address proofs (add/update) and ID proofs: MD5-signed JSON with base64 documents"
    }

    fn policy(&self) -> &UploadPolicy {
        &self.policy
    }

    fn fields(&self) -> Vec<FieldSpec> {
        submission::field_specs()
    }

    fn prepare(&self, fields: &Fields) -> Result<Prepared, Problem> {
        let submission = submission::validate(fields, dates::today_utc())?;
        Prepared::of(&submission)
    }

    /// The end user's Finext account.
    fn subjects(&self, prepared: &Prepared) -> Vec<(&'static str, docgate_core::OwnedRef)> {
        let Ok(s) = prepared.parse::<Submission>() else {
            return Vec::new();
        };
        vec![("username", username_subject(&s.username))]
    }

    fn check(&self, prepared: &Prepared, documents: &[DocumentMeta]) -> Result<(), Problem> {
        let submission: Submission = prepared.parse()?;
        if !documents.iter().any(|d| d.slot == FRONT) {
            return Err(Problem::invalid_metadata(vec![FieldError::missing(FRONT)]));
        }
        if submission.needs_back() && !documents.iter().any(|d| d.slot == BACK) {
            return Err(Self::back_problem(&submission));
        }
        for d in documents {
            if self.extension(&d.media_type).is_none() {
                let accepted: Vec<String> = self.extensions.keys().cloned().collect();
                return Err(Problem::unsupported_media_type(&d.media_type, &accepted));
            }
        }
        Ok(())
    }

    fn endpoints(&self) -> Vec<reqwest::Url> {
        // `new` checked that the base URL parses.
        reqwest::Url::parse(&self.base_url).into_iter().collect()
    }

    /// The `Authorization` value is sent as it is; the signing secret only through MD5.
    fn secrets(&self) -> Vec<docgate_core::Secret> {
        vec![
            self.config.authorization.clone(),
            self.config.secret.clone(),
        ]
    }

    async fn deliver(
        &self,
        ctx: &DeliveryContext,
        prepared: &Prepared,
        documents: &[Document],
    ) -> Outcome {
        let submission: Submission = match prepared.parse() {
            Ok(s) => s,
            Err(p) => return Outcome::rejected(p, None),
        };
        let metas: Vec<DocumentMeta> = documents.iter().map(|d| d.meta.clone()).collect();
        if let Err(p) = self.check(prepared, &metas) {
            return Outcome::rejected(p, None);
        }
        let Some(front) = self.in_slot(documents, FRONT) else {
            return Outcome::rejected(
                Problem::invalid_metadata(vec![FieldError::missing(FRONT)]),
                None,
            );
        };
        let back = self.in_slot(documents, BACK);
        let request_id = request_id();
        match self.send(ctx, &submission, front, back, &request_id).await {
            Ok(response) => self.answer(ctx, &submission, &request_id, response).await,
            Err(outcome) => outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_username_is_one_customer_whatever_its_case() {
        let user = username_subject("lili111");
        assert_eq!(username_subject(" LILI111 "), user);
        assert_eq!(username_subject("Lili111"), user);
        assert_ne!(username_subject("lili112"), user);
        assert!(!user.value.contains("lili"), "kept as a hash");
    }
}
