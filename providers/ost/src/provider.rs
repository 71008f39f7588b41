//! `OstProvider`: docgate's client side of OST KYC.
//!
//! OST never receives document bytes itself. Its API hands out presigned S3 URLs, the client
//! puts the bytes straight into OST's bucket, and the S3 keys are what the frontend later
//! passes to the KYC submission as `*_file_path`. So a delivery is two hops:
//!
//! 1. `GET /api/v2/users-kyc/pre-signed-urls/for-put?files[<slot>]=<sniffed type>…` (signed);
//! 2. one `PUT` per document to its URL with the signed `Content-Type`, an exact
//!    `Content-Length` and `Content-MD5` (S3 then checks the bytes end to end), streamed from
//!    the spool.
//!
//! A URL that S3 refuses (403/400: expired, or refused for its signature) gets one fresh set of
//! URLs within the same delivery; a second refusal is final. A repeated delivery asks for new
//! URLs and therefore gets new keys: the receipt lists the keys of the delivery that succeeded.
//!
//! Besides `deliver`, the gateway routes three OST operations through this type without
//! documents passing through docgate: [`OstProvider::presigned_post`] (browser uploads straight
//! to S3), [`OstProvider::submit_kyc`] and webhook verification ([`OstProvider::verify_webhook`]).

use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use base64::Engine as _;
use docgate_core::{
    provider::fields, upstream, DeliveryContext, DigestSet, Document, DocumentMeta, FieldError,
    FieldSpec, Fields, MediaRange, Outcome, OwnedRef, Prepared, Problem, Provider, SlotSpec, Slots,
    UploadPolicy,
};
use serde_json::{json, Map, Value};

use crate::{
    api::{self, ApiError, OstApi},
    config::{OstConfig, OstConfigError},
    envelope::ErrorData,
    kyc,
    webhook::{self, WebhookError, WebhookEvent},
};

pub use crate::api::endpoints::{FOR_POST, FOR_PUT, USERS_KYC};

/// The client for one OST account.
#[derive(Debug)]
pub struct OstProvider {
    api: OstApi,
    uploads: reqwest::Client,
    upload_timeout: Duration,
    policy: UploadPolicy,
    webhook: Option<WebhookSettings>,
}

#[derive(Debug)]
struct WebhookSettings {
    secret: docgate_core::Secret,
    url: String,
    max_age: Duration,
}

/// One presigned PUT target.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PutTarget {
    url: String,
    key: String,
}

/// How one document's PUT to S3 failed.
#[derive(Debug)]
enum PutError {
    /// S3 refused this URL (expired, bad signature): fresh URLs may work.
    UrlRefused { status: u16, summary: String },
    /// S3 refused the request for a reason new URLs will not change.
    Refused { status: u16, summary: String },
    /// Network, timeout or a 5xx: the same attempt may work later.
    Transient {
        status: Option<u16>,
        reason: String,
        after: Option<Duration>,
    },
}

impl OstProvider {
    pub fn new(config: OstConfig) -> Result<OstProvider, OstConfigError> {
        config.validate()?;
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout())
            // A redirected PUT would become a GET without the document (303), whose 2xx would
            // read as stored; a streamed body cannot follow a 307 either. Neither is followed.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OstConfigError::Http(api::describe(e)))?;
        let api = OstApi::new(
            http.clone(),
            &config.base_url,
            &config.api_key,
            config.api_secret.clone(),
            config.api_timeout(),
        );
        let webhook = match (config.webhook_secret.clone(), config.webhook_url.clone()) {
            (Some(secret), Some(url)) => Some(WebhookSettings {
                secret,
                url,
                max_age: config.webhook_max_age(),
            }),
            _ => None,
        };
        Ok(OstProvider {
            api,
            uploads: http,
            upload_timeout: config.upload_timeout(),
            policy: policy(config.min_document_bytes, config.max_document_bytes),
            webhook,
        })
    }

    /// Browser uploads: presigned POST forms for `files` (slot → content type), straight from
    /// OST's `for-post`. Returns OST's `file_upload_post` object: `{slot: {url, fields}}`; the
    /// form posts every field plus `file` to `url`, and `fields.key` is the S3 key.
    pub async fn presigned_post(&self, files: &BTreeMap<String, String>) -> Result<Value, Problem> {
        let errors = kyc::check_files(files);
        if !errors.is_empty() {
            return Err(invalid(errors));
        }
        let data = self
            .api
            .get(FOR_POST, files_param(files))
            .await
            .map_err(|e| e.to_problem())?;
        let forms = data
            .get("file_upload_post")
            .and_then(Value::as_object)
            .ok_or_else(|| malformed_answer("for-post", "no file_upload_post object"))?;
        for slot in files.keys() {
            let complete = forms
                .get(slot)
                .map(|f| f["url"].is_string() && f["fields"]["key"].is_string())
                .unwrap_or(false);
            if !complete {
                return Err(malformed_answer(
                    "for-post",
                    &format!("no url and key for `{slot}`"),
                ));
            }
        }
        Ok(Value::Object(forms.clone()))
    }

    /// Submit (or re-submit) a user's KYC details: `POST /api/v2/users-kyc/{user_id}` with
    /// `fields` as a signed form body. Field names, shapes and formats are checked here first;
    /// which fields are required is the OST account's own setting, so OST decides that.
    /// Returns OST's `data` (`{"result_type": "user_kyc", "user_kyc": {...}}`).
    pub async fn submit_kyc(
        &self,
        user_id: &str,
        fields: &BTreeMap<String, Value>,
    ) -> Result<Value, Problem> {
        let user_id = parse_user_id(user_id)?;
        let errors = kyc::check_kyc_fields(fields);
        if !errors.is_empty() {
            return Err(invalid(errors));
        }
        let params: Map<String, Value> = fields.clone().into_iter().collect();
        self.api
            .post(&format!("{USERS_KYC}/{user_id}"), params)
            .await
            .map_err(|e| e.to_problem())
    }

    /// The status of a user's last KYC submission: `GET /api/v2/users-kyc/{user_id}` →
    /// OST's `data` (`{"result_type": "user_kyc", "user_kyc": {"kyc_status", "admin_status",
    /// "aml_status", "whitelist_status", "admin_action_types", …}}`).
    pub async fn kyc_status(&self, user_id: &str) -> Result<Value, Problem> {
        let user_id = parse_user_id(user_id)?;
        self.api.user_kyc(user_id).await.map_err(|e| e.to_problem())
    }

    /// The details of a user's last KYC submission: `GET /api/v2/users-kyc-detail/{user_id}`
    /// → OST's `data` (`user_kyc_detail` with the fields and 12-hour file URLs, or only
    /// `user_kyc: {id, created_at}` when the OST account does not share KYC data).
    pub async fn kyc_details(&self, user_id: &str) -> Result<Value, Problem> {
        let user_id = parse_user_id(user_id)?;
        self.api
            .user_kyc_detail(user_id)
            .await
            .map_err(|e| e.to_problem())
    }

    /// Whether incoming webhooks can be verified (a secret and URL are configured).
    pub fn webhooks_configured(&self) -> bool {
        self.webhook.is_some()
    }

    /// Verify an incoming webhook's parameters (see [`webhook::params_from_body`]) against the
    /// configured secret, URL and age limit. `now` is unix seconds.
    pub fn verify_webhook(
        &self,
        params: &Map<String, Value>,
        now: i64,
    ) -> Result<WebhookEvent, Problem> {
        let Some(settings) = &self.webhook else {
            return Err(Problem::not_found(
                "OST webhooks are not configured (webhook_secret and webhook_url)",
            ));
        };
        webhook::verify(
            settings.secret.expose(),
            &settings.url,
            params,
            now,
            settings.max_age,
        )
        .map_err(webhook_problem)
    }

    async fn presigned_put(
        &self,
        documents: &[&Document],
    ) -> Result<BTreeMap<String, PutTarget>, ApiError> {
        let files: BTreeMap<String, String> = documents
            .iter()
            .map(|d| (d.meta.slot.clone(), d.meta.media_type.clone()))
            .collect();
        let data = self.api.get(FOR_PUT, files_param(&files)).await?;
        let mut targets = BTreeMap::new();
        for slot in files.keys() {
            let entry = &data["file_upload_put"][slot.as_str()];
            let (Some(url), Some(key)) = (entry["url"].as_str(), entry["fields"]["key"].as_str())
            else {
                return Err(ApiError::Unusable(format!(
                    "for-put answered without a url and key for `{slot}`"
                )));
            };
            // The document goes only where TLS protects it (plain http only when OST itself is
            // reached that way: the emulator on loopback).
            let plain_to_plain =
                url.starts_with("http://") && self.api.base_url().starts_with("http://");
            if !(url.starts_with("https://") || plain_to_plain) {
                return Err(ApiError::Unusable(format!(
                    "for-put answered a URL that is not https for `{slot}`"
                )));
            }
            targets.insert(
                slot.clone(),
                PutTarget {
                    url: url.to_owned(),
                    key: key.to_owned(),
                },
            );
        }
        Ok(targets)
    }

    async fn put_document(&self, target: &PutTarget, doc: &Document) -> Result<(), PutError> {
        let mut request = self
            .uploads
            .put(&target.url)
            .timeout(self.upload_timeout)
            .header(http::header::CONTENT_TYPE, &doc.meta.media_type)
            .header(http::header::CONTENT_LENGTH, doc.spool.len())
            .body(reqwest::Body::wrap_stream(doc.spool.stream()));
        if let Some(md5) = content_md5(&doc.meta) {
            request = request.header("Content-MD5", md5);
        }
        let response = request.send().await.map_err(|e| PutError::Transient {
            status: None,
            reason: format!(
                "S3 upload of `{}` failed: {}",
                doc.meta.slot,
                api::describe(e)
            ),
            after: None,
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let after = upstream::retry_after(response.headers());
        let body = upstream::read_bounded(response.bytes_stream(), upstream::MAX_ERROR_BODY)
            .await
            .unwrap_or_default();
        let summary = format!(
            "S3 answered {} to the upload of `{}`: {}",
            status.as_u16(),
            doc.meta.slot,
            s3_error_summary(&body)
        );
        Err(put_refusal(status.as_u16(), &body, summary, after))
    }
}

#[async_trait]
impl Provider for OstProvider {
    fn name(&self) -> &str {
        "ost"
    }

    fn description(&self) -> &str {
        "OST KYC: documents go to OST's S3 bucket through presigned URLs; the receipt's \
         provider_reference maps each slot to its S3 key (the *_file_path of a KYC submission)"
    }

    fn policy(&self) -> &UploadPolicy {
        &self.policy
    }

    fn fields(&self) -> Vec<FieldSpec> {
        // The documents are the whole request: OST ties them to a user only at submission.
        Vec::new()
    }

    fn prepare(&self, fields: &Fields) -> Result<Prepared, Problem> {
        let unknown = fields::unknown(fields, &[], &[]);
        if !unknown.is_empty() {
            return Err(Problem::invalid_metadata(unknown));
        }
        Ok(Prepared(json!({})))
    }

    fn check(&self, _prepared: &Prepared, documents: &[DocumentMeta]) -> Result<(), Problem> {
        if documents.is_empty() {
            return Err(Problem::invalid_metadata(vec![FieldError::missing(
                format!("one of {}", kyc::SLOTS.join(", ")),
            )]));
        }
        let mut seen = Vec::new();
        let mut errors = Vec::new();
        for doc in documents {
            if seen.contains(&doc.slot.as_str()) {
                errors.push(FieldError::invalid(
                    doc.slot.as_str(),
                    "each slot takes one document",
                ));
            }
            seen.push(doc.slot.as_str());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Problem::invalid_metadata(errors))
        }
    }

    fn routes(self: std::sync::Arc<Self>) -> docgate_core::ProviderRoutes {
        crate::routes::routes(self)
    }

    fn endpoints(&self) -> Vec<url::Url> {
        // `new` checked that the base URL parses.
        url::Url::parse(self.api.base_url()).into_iter().collect()
    }

    async fn deliver(
        &self,
        _ctx: &DeliveryContext,
        _prepared: &Prepared,
        documents: &[Document],
    ) -> Outcome {
        let mut pending: Vec<&Document> = documents.iter().collect();
        let mut keys = Map::new();
        let mut refreshed = false;
        loop {
            let round = match self.put_round(pending, &mut keys).await {
                Ok(round) => round,
                Err(outcome) => return outcome,
            };
            match round.last_refusal {
                None => return delivered(keys),
                Some((status, summary)) if refreshed => {
                    return Outcome::rejected(
                        Problem::provider_rejected(
                            Some(status),
                            format!("{summary} (also with freshly fetched URLs)"),
                        ),
                        Some(status),
                    )
                }
                Some(_) => {
                    refreshed = true;
                    pending = round.refused;
                }
            }
        }
    }
}

/// The documents whose presigned URL S3 refused in one round, and the last refusal.
struct Round<'a> {
    refused: Vec<&'a Document>,
    last_refusal: Option<(u16, String)>,
}

impl OstProvider {
    /// Fetch URLs for `pending` and put each document; the S3 key of each stored document
    /// goes into `keys`. An outcome ends the delivery.
    async fn put_round<'a>(
        &self,
        pending: Vec<&'a Document>,
        keys: &mut Map<String, Value>,
    ) -> Result<Round<'a>, Outcome> {
        let targets = self.presigned_put(&pending).await.map_err(api_outcome)?;
        let mut round = Round {
            refused: Vec::new(),
            last_refusal: None,
        };
        for doc in pending {
            let Some(target) = targets.get(&doc.meta.slot) else {
                return Err(Outcome::rejected(
                    malformed_answer("for-put", "a slot is missing"),
                    Some(200),
                ));
            };
            match self.put_document(target, doc).await {
                Ok(()) => {
                    keys.insert(doc.meta.slot.clone(), Value::String(target.key.clone()));
                }
                Err(PutError::UrlRefused { status, summary }) => {
                    tracing::info!(slot = %doc.meta.slot, status, "S3 refused a presigned URL");
                    round.refused.push(doc);
                    round.last_refusal = Some((status, summary));
                }
                Err(PutError::Refused { status, summary }) => {
                    return Err(Outcome::rejected(
                        Problem::provider_rejected(Some(status), summary),
                        Some(status),
                    ))
                }
                Err(PutError::Transient {
                    status,
                    reason,
                    after,
                }) => {
                    return Err(Outcome::RetryLater {
                        after,
                        reason,
                        upstream_status: status,
                    })
                }
            }
        }
        Ok(round)
    }
}

/// Every document is stored; `keys` maps each slot to its S3 key.
fn delivered(keys: Map<String, Value>) -> Outcome {
    // The S3 keys are the tenant's: only it may name them in a KYC submission.
    let owned = keys
        .values()
        .filter_map(Value::as_str)
        .map(|k| OwnedRef::new(kyc::KEY_REF, k))
        .collect();
    Outcome::Delivered {
        reference: Value::Object(keys),
        owned,
        upstream_status: Some(200),
    }
}

/// The policy OST's POST policy and content types imply.
fn policy(min: u64, max: u64) -> UploadPolicy {
    let accepted = ["image/jpeg", "image/png", "application/pdf"]
        .iter()
        .filter_map(|t| MediaRange::parse(t).ok())
        .collect();
    UploadPolicy {
        min_document_bytes: min,
        max_document_bytes: max,
        max_request_bytes: max.saturating_mul(kyc::SLOTS.len() as u64),
        accepted,
        // MD5 goes to S3 as Content-MD5, so S3 itself confirms the bytes it stored.
        digests: DigestSet {
            sha512: false,
            md5: true,
        },
        slots: Slots::Named {
            slots: kyc::SLOTS
                .iter()
                .map(|s| SlotSpec {
                    name: (*s).to_owned(),
                    required: false,
                })
                .collect(),
        },
        zip: None,
        refuse_active_content: true,
    }
}

fn files_param(files: &BTreeMap<String, String>) -> Map<String, Value> {
    let files: Map<String, Value> = files
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut params = Map::new();
    params.insert("files".into(), Value::Object(files));
    params
}

fn content_md5(meta: &DocumentMeta) -> Option<String> {
    let raw = hex::decode(meta.digests.md5.as_deref()?).ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(raw))
}

fn parse_user_id(user_id: &str) -> Result<u64, Problem> {
    let trimmed = user_id.trim();
    match trimmed.parse::<u64>() {
        Ok(id) if trimmed.bytes().all(|b| b.is_ascii_digit()) => Ok(id),
        _ => Err(Problem::invalid_field(
            "user_id",
            "must be OST's numeric user id",
        )),
    }
}

fn invalid(errors: Vec<ErrorData>) -> Problem {
    Problem::invalid_metadata(
        errors
            .into_iter()
            .map(|e| FieldError::invalid(e.parameter, e.msg))
            .collect(),
    )
}

fn malformed_answer(what: &str, detail: &str) -> Problem {
    Problem::provider_rejected(
        Some(200),
        format!("OST's {what} answer is unusable: {detail}"),
    )
}

fn api_outcome(e: ApiError) -> Outcome {
    if e.is_transient() {
        Outcome::RetryLater {
            after: e.retry_after(),
            reason: e.to_string(),
            upstream_status: e.upstream_status(),
        }
    } else {
        Outcome::rejected(e.to_problem(), e.upstream_status())
    }
}

fn webhook_problem(e: WebhookError) -> Problem {
    match e {
        WebhookError::BadSignature | WebhookError::Missing("signature") => {
            Problem::unauthorized().with_detail(e.to_string())
        }
        _ => Problem::bad_request(e.to_string()),
    }
    .with_extra("webhook_error", webhook_error_code(&e))
}

/// A stable word for each refusal (logs and the problem's `webhook_error`).
pub fn webhook_error_code(e: &WebhookError) -> &'static str {
    match e {
        WebhookError::Malformed(_) => "malformed",
        WebhookError::Missing(_) => "missing_parameter",
        WebhookError::BadSignature => "bad_signature",
        WebhookError::Stale { .. } => "stale",
        WebhookError::FromTheFuture { .. } => "from_the_future",
    }
}

/// `Code: Message` from an S3 XML error body, or a one-line summary of whatever it was.
/// What S3's refusal of a PUT means for the upload. Whatever is only a moment's trouble —
/// S3's `RequestTimeout` (a 400: our body came too slowly, e.g. from a slow spool), 408, a
/// redirect to another endpoint (the streamed body cannot follow it; the next attempt asks OST
/// for URLs afresh), 429 and 5xx — is retried: ending it `rejected` would remove the document.
fn put_refusal(status: u16, body: &[u8], summary: String, after: Option<Duration>) -> PutError {
    let transient = |status| PutError::Transient {
        status: Some(status),
        reason: summary.clone(),
        after,
    };
    match status {
        400 if s3_error_tag(body, "Code").as_deref() == Some("RequestTimeout") => transient(status),
        400 | 403 => PutError::UrlRefused { status, summary },
        307 | 408 | 429 | 500..=599 => transient(status),
        _ => PutError::Refused { status, summary },
    }
}

/// The text of S3's `<name>` element in an error document.
fn s3_error_tag(body: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = text.find(&open)? + open.len();
    let len = text[start..].find(&close)?;
    Some(text[start..start + len].to_owned())
}

fn s3_error_summary(body: &[u8]) -> String {
    let tag = |name: &str| s3_error_tag(body, name);
    match (tag("Code"), tag("Message")) {
        (Some(code), Some(msg)) => format!("{code}: {msg}"),
        (Some(code), None) => code,
        _ => upstream::summarize_body(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_errors_are_summarised_by_code_and_message() {
        let xml = b"<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>";
        assert_eq!(s3_error_summary(xml), "AccessDenied: Request has expired");
        assert_eq!(s3_error_summary(b"oops"), "oops");
    }

    /// Regression: a 408, S3's `RequestTimeout` and a redirect ended the upload `rejected`
    /// (its document removed) where the next attempt would have stored it.
    #[test]
    fn regression_s3_refusals_that_a_later_attempt_can_pass_are_retried() {
        let timeout = b"<Error><Code>RequestTimeout</Code><Message>Your socket connection to the server was not read from or written to within the timeout period.</Message></Error>";
        let expired =
            b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>";
        let kind = |status, body: &[u8]| match put_refusal(status, body, String::new(), None) {
            PutError::Transient { .. } => "transient",
            PutError::UrlRefused { .. } => "url refused",
            PutError::Refused { .. } => "refused",
        };
        assert_eq!(kind(400, timeout), "transient");
        for status in [307, 408, 429, 500, 503] {
            assert_eq!(kind(status, b""), "transient", "{status}");
        }
        assert_eq!(kind(403, expired), "url refused");
        assert_eq!(
            kind(400, b"<Error><Code>InvalidDigest</Code></Error>"),
            "url refused"
        );
        assert_eq!(kind(404, b""), "refused");
        assert_eq!(kind(413, b""), "refused");
    }

    #[test]
    fn user_ids_are_plain_numbers() {
        assert_eq!(parse_user_id(" 11035 ").ok(), Some(11035));
        assert!(parse_user_id("+5").is_err());
        assert!(parse_user_id("1/2").is_err());
        assert!(parse_user_id("").is_err());
    }

    #[test]
    fn the_policy_names_every_slot_optional_and_only_ost_types() {
        let p = policy(10, 20);
        assert!(p.accepts("image/png") && p.accepts("application/pdf"));
        assert!(!p.accepts("image/gif"));
        assert!(p.check_slot("investor_proof_file2").is_ok());
        assert!(p.check_slot("passport").is_err());
        assert!(p.missing_slots(&[]).is_empty());
        assert_eq!(p.max_request_bytes, 100);
    }
}
