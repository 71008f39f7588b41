//! `TalerProvider`: docgate's client for `POST /kyc-bulk/$EXTERN_PUB`.
//!
//! One upload is one signed POST: the body streams from the spool with its exact
//! `Content-Length`; `If-Not-Match` and the signature are built from the SHA-512 the ingest
//! pass already computed. The exchange's answers map onto docgate's outcomes:
//!
//! | exchange | outcome |
//! |---|---|
//! | 204 | `Delivered` |
//! | 412 (already stored) | `Duplicate` |
//! | 413 for a ZIP with several entries | split, upload every part (see [`crate::split`]) |
//! | 400, 403, 404, 411, 413 otherwise, other 4xx | `Rejected` with Taler's `ErrorDetail` |
//! | 5xx, 408, 429, connection failure, timeout | `RetryLater` (the gateway backs off) |
//!
//! Every step is safe to repeat: the exchange recognises a body it has by its hash (412), and
//! ZIP parts are byte-identical on every attempt.

use std::{collections::VecDeque, time::Duration};

use async_trait::async_trait;
use docgate_core::{
    archive::{ArchiveError, ZipRules, DEFAULT_MAX_COMPRESSION_RATIO},
    provider::fields,
    upstream::{read_bounded, retry_after, summarize_body, MAX_ERROR_BODY},
    DeliveryContext, DigestSet, Document, DocumentMeta, FieldError, FieldSpec, Fields, MediaRange,
    Outcome, Prepared, Problem, Provider, SlotSpec, Slots, UploadPolicy,
};
use reqwest::{header, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{
    config::{TalerConfig, TalerConfigError},
    crockford,
    payto::{self, Payto},
    signing::{ExternKey, SigningScheme},
    split::{self, Part},
    wire::{
        codes, ErrorCodes, ErrorDetail, HEADER_IF_NOT_MATCH, HEADER_PAYTO, HEADER_SIGNATURE,
        PATH_PREFIX,
    },
};

/// The one document slot.
pub const SLOT: &str = "file";

/// What the exchange accepts as a body.
pub const ACCEPTED: [&str; 5] = [
    "application/pdf",
    "audio/*",
    "image/*",
    "video/*",
    "application/zip",
];

/// What a ZIP body may contain.
pub const ZIP_ENTRY_TYPES: [&str; 4] = ["application/pdf", "audio/*", "image/*", "video/*"];

/// Marks, in the upload's scratch directory, that the whole ZIP was refused as too large, so a
/// repeated delivery goes straight to the parts.
const SPLIT_MARKER: &str = "taler-split-needed";
const PARTS_DIR: &str = "taler-zip-parts";

/// What `prepare` keeps for `deliver` (stored in the ledger as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TalerPrepared {
    /// The canonical payto URI: sent and signed exactly like this.
    pub payto: String,
}

/// The client side of GNU Taler's kyc-bulk upload.
#[derive(Debug)]
pub struct TalerProvider {
    endpoint: Url,
    key: ExternKey,
    scheme: SigningScheme,
    upload_limit: u64,
    error_codes: ErrorCodes,
    http: reqwest::Client,
    policy: UploadPolicy,
}

fn ranges(list: &[&str]) -> Vec<MediaRange> {
    list.iter()
        .filter_map(|s| MediaRange::parse(s).ok())
        .collect()
}

impl TalerProvider {
    pub fn new(config: TalerConfig) -> Result<TalerProvider, TalerConfigError> {
        let key = ExternKey::parse(config.extern_key.expose())?;
        let endpoint = endpoint(&config.base_url, key.public_crockford())?;
        if let Some(name) = zero_limits(&config).next() {
            return Err(TalerConfigError::Zero(name));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            // A streamed body cannot be replayed to a redirect target; a redirect is a
            // configuration error to report, not to follow.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("docgate-taler/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(TalerConfigError::Client)?;
        let policy = UploadPolicy {
            min_document_bytes: 1,
            max_document_bytes: config.upload_limit,
            max_request_bytes: config.upload_limit,
            accepted: ranges(&ACCEPTED),
            digests: DigestSet {
                sha512: true,
                md5: false,
            },
            slots: Slots::Named {
                slots: vec![SlotSpec {
                    name: SLOT.into(),
                    required: true,
                }],
            },
            zip: Some(ZipRules {
                entry_types: ranges(&ZIP_ENTRY_TYPES),
                max_entries: config.max_zip_entries,
                max_total_uncompressed: config.max_zip_uncompressed,
                max_compression_ratio: DEFAULT_MAX_COMPRESSION_RATIO,
            }),
            refuse_active_content: true,
        };
        Ok(TalerProvider {
            endpoint,
            key,
            scheme: SigningScheme {
                purpose: config.purpose,
                payto_hash: config.payto_hash,
            },
            upload_limit: config.upload_limit,
            error_codes: config.error_codes,
            http,
            policy,
        })
    }

    /// `$EXTERN_PUB`, for operators registering the key with the exchange.
    pub fn extern_pub(&self) -> &str {
        self.key.public_crockford()
    }

    /// The full upload URL.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }
}

/// The limits that must not be zero and are.
fn zero_limits(config: &TalerConfig) -> impl Iterator<Item = &'static str> {
    [
        ("upload_limit", config.upload_limit),
        ("max_zip_entries", config.max_zip_entries as u64),
        ("max_zip_uncompressed", config.max_zip_uncompressed),
        ("timeout", config.timeout.as_millis() as u64),
        ("connect_timeout", config.connect_timeout.as_millis() as u64),
    ]
    .into_iter()
    .filter(|&(_, value)| value == 0)
    .map(|(name, _)| name)
}

/// What `docgate check` names before the key is loaded: the URL and the limits.
impl docgate_core::registration::SectionChecks for TalerConfig {
    type Problem = TalerConfigError;

    fn problems(&self) -> Vec<(&'static str, TalerConfigError)> {
        let mut found = Vec::new();
        // Any public key will do to check the URL's shape.
        if let Err(e) = endpoint(&self.base_url, "0") {
            found.push(("base_url", e));
        }
        found.extend(zero_limits(self).map(|name| (name, TalerConfigError::Zero(name))));
        found
    }
}

fn endpoint(base_url: &str, extern_pub: &str) -> Result<Url, TalerConfigError> {
    let bad = |reason: &str| TalerConfigError::BaseUrl {
        url: docgate_core::upstream::shown_url(base_url),
        reason: reason.to_owned(),
    };
    let mut base = Url::parse(base_url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if base.query().is_some() || base.fragment().is_some() {
        return Err(bad("it must not have a query or fragment"));
    }
    if !base.username().is_empty() || base.password().is_some() {
        return Err(bad("credentials do not belong in the URL"));
    }
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    base.join(&format!("{PATH_PREFIX}/{extern_pub}"))
        .map_err(|e| bad(&e.to_string()))
}

/// One body to upload: the whole document or one ZIP part.
struct Upload<'a> {
    payto: &'a Payto,
    h_body: [u8; 64],
    len: u64,
    media_type: &'a str,
    body: reqwest::Body,
}

/// A refusal, with what the exchange said.
#[derive(Debug, Clone)]
struct Refusal {
    status: u16,
    detail: Option<ErrorDetail>,
    summary: String,
}

/// The exchange's answer to one POST, classified.
#[derive(Debug)]
enum Answer {
    Stored(u16),
    AlreadyStored,
    TooLarge(Refusal),
    Refused(Refusal),
    Transient {
        after: Option<Duration>,
        reason: String,
        status: Option<u16>,
    },
}

impl TalerProvider {
    async fn post(&self, upload: Upload<'_>) -> Answer {
        let signature = self
            .key
            .sign(&self.scheme, &upload.h_body, upload.payto.as_str());
        let request = self
            .http
            .post(self.endpoint.clone())
            .header(HEADER_SIGNATURE, signature)
            .header(HEADER_PAYTO, upload.payto.as_str())
            .header(HEADER_IF_NOT_MATCH, crockford::encode(&upload.h_body))
            .header(header::CONTENT_TYPE, upload.media_type)
            // The body is a stream: the length is stated so the exchange can check it
            // before reading (411 otherwise) and so hyper sends it unchunked.
            .header(header::CONTENT_LENGTH, upload.len)
            .body(upload.body);
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                let what = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "could not connect"
                } else {
                    "failed"
                };
                return Answer::Transient {
                    after: None,
                    reason: format!("the upload to the exchange {what}: {}", e.without_url()),
                    status: None,
                };
            }
        };
        let status = response.status();
        let after = retry_after(response.headers());
        // The peer decides how much it sends, we decide how much we keep.
        let body = match read_bounded(response.bytes_stream(), MAX_ERROR_BODY).await {
            Ok(body) => body,
            // The status line arrived but the rest broke off: not a verdict to act on.
            Err(e) => {
                return Answer::Transient {
                    after,
                    reason: format!("the exchange's answer ({status}) broke off: {e}"),
                    status: Some(status.as_u16()),
                };
            }
        };
        self.classify(status, after, &body)
    }

    fn classify(&self, status: StatusCode, after: Option<Duration>, body: &[u8]) -> Answer {
        let code = status.as_u16();
        if status.is_success() {
            return Answer::Stored(code);
        }
        let detail = ErrorDetail::parse(body);
        let summary = self.summary(code, detail.as_ref(), body);
        match code {
            412 => Answer::AlreadyStored,
            413 => Answer::TooLarge(Refusal {
                status: code,
                detail,
                summary,
            }),
            408 | 429 | 500..=599 => Answer::Transient {
                after,
                reason: summary,
                status: Some(code),
            },
            _ => Answer::Refused(Refusal {
                status: code,
                detail,
                summary,
            }),
        }
    }

    /// One line a person can act on: what happened, what to check, and Taler's own words.
    fn summary(&self, status: u16, detail: Option<&ErrorDetail>, body: &[u8]) -> String {
        let what = match status {
            400 => "the exchange found the request malformed",
            403 => "the exchange refused the signature (check extern_key, purpose and payto_hash)",
            404 if detail.is_some_and(|d| d.code == codes::GENERIC_ENDPOINT_UNKNOWN) => {
                "the exchange has no kyc-bulk endpoint here (check base_url; it needs protocol vIMPORT)"
            }
            404 => "the exchange does not know this extern key (register EXTERN_PUB with the operator)",
            411 => "the exchange requires a Content-Length",
            413 => "the document is larger than the exchange accepts",
            500..=599 => "the exchange failed internally",
            300..=399 => "the exchange redirected (base_url is probably outdated)",
            _ => "the exchange refused the upload",
        };
        match detail {
            Some(d) => {
                let name = self
                    .error_codes
                    .name(d.code)
                    .map(|n| format!(" {n}"))
                    .unwrap_or_default();
                let mut line = format!("{what} ({status}, code {}{name})", d.code);
                for extra in [&d.hint, &d.detail].into_iter().flatten() {
                    line.push_str(": ");
                    line.push_str(&summarize_body(extra.as_bytes()));
                }
                line
            }
            None if body.is_empty() => format!("{what} ({status})"),
            None => format!("{what} ({status}): {}", summarize_body(body)),
        }
    }

    fn rejection(&self, refusal: &Refusal) -> Problem {
        let mut p = Problem::provider_rejected(Some(refusal.status), refusal.summary.clone());
        if let Some(d) = &refusal.detail {
            p = p.with_extra("taler_code", d.code);
            if let Some(name) = self.error_codes.name(d.code) {
                p = p.with_extra("taler_error", name);
            }
            if let Some(hint) = &d.hint {
                p = p.with_extra("taler_hint", hint.as_str());
            }
            if let Some(detail) = &d.detail {
                p = p.with_extra("taler_detail", detail.as_str());
            }
        }
        p
    }
}

fn sha512_of(meta: &DocumentMeta) -> Option<[u8; 64]> {
    let bytes = hex::decode(meta.digests.sha512.as_deref()?).ok()?;
    bytes.try_into().ok()
}

fn zip_entry_count(meta: &DocumentMeta) -> usize {
    if meta.media_type != "application/zip" {
        return 0;
    }
    meta.entries.as_ref().map_or(0, Vec::len)
}

/// How the parts of a split upload went.
#[derive(Debug, Clone, Serialize)]
struct PartReport {
    name: String,
    size: u64,
    sha512: String,
    h_body: String,
    entries: Vec<String>,
    status: &'static str,
}

impl PartReport {
    fn of(part: &Part, status: &'static str) -> PartReport {
        PartReport {
            name: part.name.clone(),
            size: part.size,
            sha512: hex::encode(part.sha512),
            h_body: crockford::encode(&part.sha512),
            entries: part.entries.clone(),
            status,
        }
    }
}

impl TalerProvider {
    fn reference(&self, h_body: &[u8; 64], meta: &DocumentMeta) -> Value {
        json!({
            "h_body": crockford::encode(h_body),
            "extern_pub": self.key.public_crockford(),
            "size": meta.size,
            "media_type": meta.media_type,
        })
    }

    async fn deliver_whole(&self, ctx: &DeliveryContext, payto: &Payto, doc: &Document) -> Outcome {
        let Some(h_body) = sha512_of(&doc.meta) else {
            return Outcome::rejected(Problem::internal(
                "the document has no SHA-512 digest; the taler policy asks the ingest pass for one",
            ), None);
        };
        let splittable = zip_entry_count(&doc.meta) >= 2;
        if splittable && ctx.scratch_dir.join(SPLIT_MARKER).exists() {
            return self.deliver_parts(ctx, payto, doc, &h_body).await;
        }
        let answer = self
            .post(Upload {
                payto,
                h_body,
                len: doc.meta.size,
                media_type: &doc.meta.media_type,
                body: reqwest::Body::wrap_stream(doc.spool.stream()),
            })
            .await;
        let reference = self.reference(&h_body, &doc.meta);
        match answer {
            Answer::Stored(status) => Outcome::delivered(reference, Some(status)),
            Answer::AlreadyStored => Outcome::duplicate(reference, Some(412)),
            Answer::TooLarge(_) if splittable => {
                tracing::info!(
                    upload = %ctx.upload_id,
                    size = doc.meta.size,
                    "exchange refused the ZIP as too large; splitting it"
                );
                if let Err(e) = mark_split_needed(ctx).await {
                    tracing::warn!(upload = %ctx.upload_id, "cannot record the split: {e}");
                }
                self.deliver_parts(ctx, payto, doc, &h_body).await
            }
            Answer::TooLarge(refusal) | Answer::Refused(refusal) => {
                Outcome::rejected(self.rejection(&refusal), Some(refusal.status))
            }
            Answer::Transient {
                after,
                reason,
                status,
            } => Outcome::RetryLater {
                after,
                reason,
                upstream_status: status,
            },
        }
    }

    /// Split the refused ZIP and upload every part, splitting again any part that is refused.
    async fn deliver_parts(
        &self,
        ctx: &DeliveryContext,
        payto: &Payto,
        doc: &Document,
        h_body: &[u8; 64],
    ) -> Outcome {
        let done = match self.upload_parts(ctx, payto, doc).await {
            Ok(done) => done,
            Err(outcome) => return outcome,
        };
        let mut reference = self.reference(h_body, &doc.meta);
        reference["split"] = Value::Bool(true);
        reference["parts"] = parts_value(&done);
        if done.iter().all(|p| p.status == "already_stored") {
            Outcome::duplicate(reference, Some(412))
        } else {
            Outcome::delivered(reference, Some(204))
        }
    }

    /// Upload the parts of the split document in order; what each part became, or the
    /// outcome that ends the delivery.
    async fn upload_parts(
        &self,
        ctx: &DeliveryContext,
        payto: &Payto,
        doc: &Document,
    ) -> Result<Vec<PartReport>, Outcome> {
        let root = ctx.scratch_dir.join(PARTS_DIR);
        let mut pending = self.split_document(doc, &root).await?;
        let mut done: Vec<PartReport> = Vec::new();
        // Each refusal replaces a part by two or more strictly smaller ones, so this only
        // guards against an exchange that refuses everything.
        let mut budget = 4 * zip_entry_count(&doc.meta) + 16;
        while let Some(part) = pending.pop_front() {
            if budget == 0 {
                return Err(Outcome::rejected(
                    self.unsplittable(&doc.meta, &done)
                        .with_detail("the exchange kept refusing the parts of the split ZIP"),
                    None,
                ));
            }
            budget -= 1;
            let answer = self.post_part(payto, &part).await?;
            match answer {
                Answer::Stored(_) => done.push(PartReport::of(&part, "stored")),
                Answer::AlreadyStored => done.push(PartReport::of(&part, "already_stored")),
                Answer::TooLarge(_) if part.entries.len() >= 2 => {
                    let smaller = self.split_part(&part, &root).await?;
                    let Some(smaller) = smaller else {
                        return Err(Outcome::rejected(self.unsplittable(&doc.meta, &done), None));
                    };
                    smaller
                        .into_iter()
                        .rev()
                        .for_each(|p| pending.push_front(p));
                }
                Answer::TooLarge(_) => {
                    let entry = part.entries.first().cloned().unwrap_or_default();
                    let problem = self.unsplittable(&doc.meta, &done);
                    return Err(Outcome::rejected(problem.with_extra("entry", entry), None));
                }
                Answer::Refused(refusal) => {
                    let problem = self
                        .rejection(&refusal)
                        .with_extra("part", part.name.as_str())
                        .with_extra("parts", parts_value(&done));
                    return Err(Outcome::rejected(problem, None));
                }
                Answer::Transient {
                    after,
                    reason,
                    status,
                } => return Err(part_retry_later(&part, &done, after, reason, status)),
            }
        }
        Ok(done)
    }

    /// The first split of the refused document, its parts under `root`.
    async fn split_document(
        &self,
        doc: &Document,
        root: &std::path::Path,
    ) -> Result<VecDeque<Part>, Outcome> {
        let spool = doc.spool.clone();
        let first = split_off_reactor(
            move || spool.blocking_reader(),
            doc.meta.size,
            self.upload_limit,
            root.to_path_buf(),
            "part-".into(),
        )
        .await?;
        match first {
            Some(parts) => Ok(parts.into()),
            None => Err(Outcome::rejected(self.unsplittable(&doc.meta, &[]), None)),
        }
    }

    /// Stream one part file to the exchange.
    async fn post_part(&self, payto: &Payto, part: &Part) -> Result<Answer, Outcome> {
        let body = match tokio::fs::File::open(&part.path).await {
            Ok(f) => reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
                f,
                docgate_core::spool::BLOCK,
            )),
            Err(e) => {
                return Err(Outcome::retry(
                    format!("ZIP part {} cannot be read: {e}", part.name),
                    None,
                ))
            }
        };
        Ok(self
            .post(Upload {
                payto,
                h_body: part.sha512,
                len: part.size,
                media_type: "application/zip",
                body,
            })
            .await)
    }

    /// Split a part the exchange refused as too large; its pieces go under `root/<name>`.
    async fn split_part(
        &self,
        part: &Part,
        root: &std::path::Path,
    ) -> Result<Option<Vec<Part>>, Outcome> {
        let path = part.path.clone();
        split_off_reactor(
            move || std::fs::File::open(&path).map(std::io::BufReader::new),
            part.size,
            self.upload_limit,
            root.join(&part.name),
            format!("{}.", part.name),
        )
        .await
    }

    fn unsplittable(&self, meta: &DocumentMeta, done: &[PartReport]) -> Problem {
        let mut p = Problem::provider_rejected(
            Some(413),
            format!(
                "the exchange refused the {} byte document as too large, and it cannot be split \
                 further: an entry alone exceeds what the exchange accepts",
                meta.size
            ),
        )
        .with_extra("taler_code", codes::GENERIC_UPLOAD_EXCEEDS_LIMIT);
        if !done.is_empty() {
            p = p.with_extra("parts", parts_value(done));
        }
        p
    }
}

/// The exchange asked to wait while a split upload was under way.
fn part_retry_later(
    part: &Part,
    done: &[PartReport],
    after: Option<Duration>,
    reason: String,
    status: Option<u16>,
) -> Outcome {
    Outcome::RetryLater {
        after,
        reason: format!(
            "ZIP part {} of a split upload ({} parts stored so far): {reason}",
            part.name,
            done.len()
        ),
        upstream_status: status,
    }
}

/// `split::split_refused` on a blocking thread (it reads and writes whole archives). A
/// failure is the outcome to return: our own disk trouble is worth retrying; anything else
/// (the ZIP was already inspected at ingest) is not.
async fn split_off_reactor<R, F>(
    open: F,
    refused_size: u64,
    upload_limit: u64,
    out_dir: std::path::PathBuf,
    prefix: String,
) -> Result<Option<Vec<Part>>, Outcome>
where
    R: std::io::Read + std::io::Seek,
    F: Fn() -> std::io::Result<R> + Send + 'static,
{
    let joined = tokio::task::spawn_blocking(move || {
        let split = split::split_refused(open, refused_size, upload_limit, &out_dir, &prefix);
        if split.is_err() {
            // Parts half written (a full disk, usually) would hold their space for the whole
            // retry series, where the ledger needs it to record the retry.
            if let Err(e) = std::fs::remove_dir_all(&out_dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(error = %e, dir = %out_dir.display(), "could not remove a failed split's parts");
                }
            }
        }
        split
    })
    .await;
    match joined {
        Ok(Ok(parts)) => Ok(parts),
        Ok(Err(ArchiveError::Io(e))) => Err(Outcome::retry(
            format!("splitting the ZIP failed on our side: {e}"),
            None,
        )),
        Ok(Err(e)) => Err(Outcome::rejected(
            Problem::internal(format!("splitting the ZIP failed: {e}")),
            None,
        )),
        Err(e) => Err(Outcome::rejected(
            Problem::internal(format!("splitting the ZIP failed: {e}")),
            None,
        )),
    }
}

fn parts_value(parts: &[PartReport]) -> Value {
    serde_json::to_value(parts).unwrap_or(Value::Null)
}

async fn mark_split_needed(ctx: &DeliveryContext) -> std::io::Result<()> {
    // The scratch directory will hold the split's parts, the documents in clear.
    let dir = ctx.scratch_dir.clone();
    tokio::task::spawn_blocking(move || {
        docgate_core::private_fs::create_dir_all(&dir)?;
        std::io::Write::write_all(
            &mut docgate_core::private_fs::create_file(&dir.join(SPLIT_MARKER))?,
            b"413\n",
        )
    })
    .await
    .map_err(std::io::Error::other)?
}

#[async_trait]
impl Provider for TalerProvider {
    fn name(&self) -> &str {
        "taler"
    }

    fn description(&self) -> &str {
        "GNU Taler exchange: KYC/KYB attachments via POST /kyc-bulk/$EXTERN_PUB (Ed25519-signed)"
    }

    fn policy(&self) -> &UploadPolicy {
        &self.policy
    }

    fn fields(&self) -> Vec<FieldSpec> {
        vec![FieldSpec::required(
            payto::FIELD,
            "payto:// URI of the customer's bank account or wallet, e.g. \
             payto://iban/DE89370400440532013000",
        )]
    }

    fn prepare(&self, fields: &Fields) -> Result<Prepared, Problem> {
        let mut errors = fields::unknown(fields, &[payto::FIELD], &[]);
        let parsed = fields::required(fields, payto::FIELD, &mut errors).map(Payto::parse);
        let payto = match parsed {
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => {
                errors.extend(e.to_problem().errors);
                None
            }
            None => None,
        };
        match payto {
            Some(p) if errors.is_empty() => Prepared::of(&TalerPrepared {
                payto: p.as_str().to_owned(),
            }),
            _ => Err(Problem::invalid_metadata(errors)),
        }
    }

    /// The bank account, normalised as the exchange tells accounts apart (payto-hash
    /// variant C): no options (`receiver-name` names the holder, not the account), and for
    /// an IBAN no BIC and one case — whatever payto-hash variant this exchange is sent.
    fn subjects(&self, prepared: &Prepared) -> Vec<(&'static str, docgate_core::OwnedRef)> {
        let Ok(p) = prepared.parse::<TalerPrepared>() else {
            return Vec::new();
        };
        let account = payto::normalize_for_hash(&p.payto);
        vec![(
            payto::FIELD,
            docgate_core::OwnedRef::hashed("account", &account),
        )]
    }

    fn check(&self, _prepared: &Prepared, documents: &[DocumentMeta]) -> Result<(), Problem> {
        match documents {
            [doc] if doc.slot == SLOT => {
                if sha512_of(doc).is_none() {
                    return Err(Problem::internal(
                        "the document has no SHA-512 digest; the taler policy asks for one",
                    ));
                }
                Ok(())
            }
            [] => Err(Problem::invalid_metadata(vec![FieldError::missing(SLOT)])),
            [doc] => Err(Problem::invalid_field(
                &doc.slot,
                format!("the document goes in the `{SLOT}` slot"),
            )),
            _ => Err(Problem::invalid_field(
                SLOT,
                "the exchange takes exactly one document per upload",
            )),
        }
    }

    fn endpoints(&self) -> Vec<reqwest::Url> {
        vec![self.endpoint.clone()]
    }

    async fn deliver(
        &self,
        ctx: &DeliveryContext,
        prepared: &Prepared,
        documents: &[Document],
    ) -> Outcome {
        let prepared: TalerPrepared = match prepared.parse() {
            Ok(p) => p,
            Err(problem) => return Outcome::rejected(problem, None),
        };
        let payto = match Payto::parse(&prepared.payto) {
            Ok(p) => p,
            Err(e) => return Outcome::rejected(e.to_problem(), None),
        };
        let metas: Vec<DocumentMeta> = documents.iter().map(|d| d.meta.clone()).collect();
        if let Err(problem) = self.check(&Prepared(Value::Null), &metas) {
            return Outcome::rejected(problem, None);
        }
        let Some(doc) = documents.first() else {
            return Outcome::rejected(
                Problem::invalid_metadata(vec![FieldError::missing(SLOT)]),
                None,
            );
        };
        self.deliver_whole(ctx, &payto, doc).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use docgate_core::Secret;

    fn provider() -> TalerProvider {
        let mut c = TalerConfig::new(
            "https://exchange.example.com/base",
            Secret::new("00".repeat(32)),
            65535,
        );
        c.error_codes.signature_invalid = Some(1001);
        TalerProvider::new(c).expect("valid config")
    }

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_endpoint_keeps_the_base_path_and_appends_the_public_key() {
        let p = provider();
        assert_eq!(
            p.endpoint().as_str(),
            format!(
                "https://exchange.example.com/base/kyc-bulk/{}",
                p.extern_pub()
            )
        );
        for bad in ["ftp://x/", "https://x/?a=1", "not a url", "https://u:p@x/"] {
            let c = TalerConfig::new(bad, Secret::new("00".repeat(32)), 1);
            assert!(
                matches!(TalerProvider::new(c), Err(TalerConfigError::BaseUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn config_errors_never_show_the_key() {
        let c = TalerConfig::new("https://x/", Secret::new("supersecretvalue"), 1);
        let err = TalerProvider::new(c).expect_err("bad key").to_string();
        assert!(!err.contains("supersecretvalue"), "{err}");
        let mut c = TalerConfig::new("https://x/", Secret::new("00".repeat(32)), 1);
        c.upload_limit = 0;
        assert!(matches!(
            TalerProvider::new(c),
            Err(TalerConfigError::Zero("upload_limit"))
        ));
    }

    #[test]
    fn policy_is_one_file_slot_with_sha512_and_checked_zips() {
        let p = provider();
        let policy = p.policy();
        assert!(policy.digests.sha512);
        assert_eq!(policy.max_document_bytes, 16 * 1024 * 1024);
        for ok in [
            "application/pdf",
            "image/png",
            "audio/mpeg",
            "video/mp4",
            "application/zip",
        ] {
            assert!(policy.accepts(ok), "{ok}");
        }
        assert!(!policy.accepts("text/plain"));
        let zip = policy.zip.as_ref().expect("zip rules");
        assert!(!zip.entry_types.iter().any(|r| r.matches("application/zip")));
        assert!(policy.check_slot("file").is_ok());
        assert!(policy.check_slot("front").is_err());
    }

    #[test]
    fn prepare_canonicalises_the_payto_and_reports_every_bad_field() {
        let p = provider();
        let prepared = p
            .prepare(&fields(&[(
                "payto",
                " payto://IBAN/de89370400440532013000 ",
            )]))
            .expect("valid");
        assert_eq!(
            prepared.parse::<TalerPrepared>().expect("parses").payto,
            "payto://iban/DE89370400440532013000"
        );
        let err = p
            .prepare(&fields(&[
                ("payto", "payto://iban/DE00"),
                ("colour", "red"),
            ]))
            .expect_err("invalid");
        let names: Vec<&str> = err.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(names, ["colour", "payto"]);
        let missing = p.prepare(&fields(&[])).expect_err("missing");
        assert!(fields::only_missing(&missing));
    }

    #[test]
    fn the_customer_is_the_bank_account_kept_as_a_hash() {
        let p = provider();
        let subject = |payto: &str| {
            let prepared = p.prepare(&fields(&[("payto", payto)])).expect("valid");
            p.subjects(&prepared)
        };
        let plain = subject("payto://iban/DE89370400440532013000");
        assert_eq!(plain.len(), 1);
        assert_eq!(plain[0].0, "payto");
        assert_eq!(
            subject("payto://IBAN/de89370400440532013000?receiver-name=Erika%20Mustermann"),
            plain,
            "the holder's name and the spelling do not make another customer"
        );
        assert_eq!(
            subject("payto://iban/COBADEFFXXX/DE89370400440532013000"),
            plain,
            "nor does a BIC in front of the IBAN"
        );
        assert_ne!(subject("payto://iban/FR1420041010050500013M02606"), plain);
        assert_eq!(plain[0].1.value.len(), 64);
        assert!(
            !plain[0].1.value.contains("DE89"),
            "no account number is kept"
        );
    }

    #[test]
    fn answers_map_onto_outcome_classes() {
        let p = provider();
        let s = |n| StatusCode::from_u16(n).expect("status");
        assert!(matches!(p.classify(s(204), None, b""), Answer::Stored(204)));
        assert!(matches!(
            p.classify(s(412), None, b""),
            Answer::AlreadyStored
        ));
        assert!(matches!(
            p.classify(s(413), None, br#"{"code":32}"#),
            Answer::TooLarge(_)
        ));
        for refused in [400, 403, 404, 411, 451] {
            assert!(
                matches!(p.classify(s(refused), None, b"{}"), Answer::Refused(_)),
                "{refused}"
            );
        }
        for transient in [500, 502, 503, 408, 429] {
            assert!(
                matches!(
                    p.classify(s(transient), None, b""),
                    Answer::Transient { .. }
                ),
                "{transient}"
            );
        }
    }

    #[test]
    fn rejections_carry_taler_s_error_detail_and_name_configured_codes() {
        let p = provider();
        let Answer::Refused(refusal) = p.classify(
            StatusCode::FORBIDDEN,
            None,
            br#"{"code":1001,"hint":"signature invalid","detail":"Taler-Extern-Signature"}"#,
        ) else {
            panic!("403 is a refusal");
        };
        let problem = p.rejection(&refusal);
        assert_eq!(problem.code, "provider_rejected");
        assert_eq!(problem.extra["upstream_status"], 403);
        assert_eq!(problem.extra["taler_code"], 1001);
        assert_eq!(
            problem.extra["taler_error"],
            "TALER_EC_KYC_BULK_SIGNATURE_INVALID"
        );
        assert_eq!(problem.extra["taler_hint"], "signature invalid");
        assert_eq!(problem.extra["taler_detail"], "Taler-Extern-Signature");
        let detail = problem.detail.expect("detail");
        assert!(
            detail.contains("signature") && detail.contains("1001"),
            "{detail}"
        );
        // 404 tells an unknown endpoint from an unknown key.
        let Answer::Refused(endpoint) =
            p.classify(StatusCode::NOT_FOUND, None, br#"{"code":21,"hint":"x"}"#)
        else {
            panic!("404 is a refusal");
        };
        assert!(
            endpoint.summary.contains("base_url"),
            "{}",
            endpoint.summary
        );
    }
}
