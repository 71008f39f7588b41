//! `SilaProvider`: docgate's client for `POST /0.2/documents`.
//!
//! One docgate upload becomes one Sila request. A single document goes out in Sila's single
//! shape (part `file`, metadata at the top level); several go out together in the multi
//! shape, labelled by their slot names. Everything that can be decided without Sila is
//! decided early: fields in `prepare`, the exact request size in `check`. `deliver` then
//! signs and streams; it can run again for the same upload after a failure, sending the same
//! `header.reference` (derived from the upload id) so repeats are recognisable on Sila's side.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use docgate_core::{
    policy::UploadPolicy, registration::SectionChecks, DeliveryContext, DigestSet, Document,
    DocumentMeta, FieldSpec, Fields, MediaRange, Outcome, Prepared, Problem, Provider, Slots,
};
use sha2::{Digest, Sha256};

use crate::{
    config::{AuthMode, SilaConfig, SilaConfigError},
    credentials::{Keystore, TokenSource},
    doctypes::SUPPORTED_MEDIA_TYPES,
    fields::{self, PreparedUpload, Resolved, Rules},
    message::{DataMessage, FileFields, Header, VERSION},
    multipart::{BodyPlan, FilePart},
    naming, response,
    signing::PrivateKey,
};

/// How this gateway authenticates to Sila.
#[derive(Debug)]
enum Credentials {
    Ecdsa { app: PrivateKey, users: Keystore },
    OAuth2 { token: TokenSource },
}

/// The Sila provider (client side).
#[derive(Debug, Clone)]
pub struct SilaProvider {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    documents_url: reqwest::Url,
    app_handle: String,
    credentials: Credentials,
    document_types: Vec<String>,
    max_request_bytes: u64,
    policy: UploadPolicy,
    http: reqwest::Client,
}

/// The app key and the user keystore; an OAuth2 token alongside is a conflict.
/// Where documents go: `{base_url}/0.2/documents`.
fn documents_url(config: &SilaConfig) -> Result<reqwest::Url, SilaConfigError> {
    reqwest::Url::parse(config.base_url.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
        .and_then(|base| endpoint(&base, "0.2/documents"))
        .ok_or_else(|| {
            SilaConfigError::BaseUrl(docgate_core::upstream::shown_url(&config.base_url))
        })
}

/// Every problem of a configuration that needs no secret, each at its key (the keystore's
/// file is opened: its permissions are checked, and it is a file, not a secret source).
impl SectionChecks for SilaConfig {
    type Problem = SilaConfigError;

    fn problems(&self) -> Vec<(&'static str, SilaConfigError)> {
        let config = self;
        let mut found = Vec::new();
        if let Err(e) = documents_url(config) {
            found.push(("base_url", e));
        }
        if config.app_handle.trim().is_empty() {
            found.push(("app_handle", SilaConfigError::AppHandle));
        }
        if config.document_types.is_empty() {
            found.push(("document_types", SilaConfigError::NoDocumentTypes));
        }
        if config.max_request_bytes == 0 || config.max_documents == 0 {
            found.push(("max_request_bytes", SilaConfigError::Limits));
        }
        if let (AuthMode::Ecdsa, Some(path)) = (&config.auth, &config.user_keystore) {
            if let Err(e) = Keystore::open(path) {
                found.push(("user_keystore", e.into()));
            }
        }
        found
    }
}

fn ecdsa_credentials(config: &SilaConfig) -> Result<Credentials, SilaConfigError> {
    const MODE: &str = "ecdsa";
    if config.oauth_token.is_some() {
        return Err(SilaConfigError::Conflicting {
            mode: MODE,
            key: "oauth_token",
        });
    }
    let key = config
        .app_private_key
        .as_ref()
        .ok_or(SilaConfigError::Missing {
            mode: MODE,
            key: "app_private_key",
        })?;
    let app = PrivateKey::from_hex(key.expose()).map_err(SilaConfigError::AppKey)?;
    let path = config
        .user_keystore
        .as_ref()
        .ok_or(SilaConfigError::Missing {
            mode: MODE,
            key: "user_keystore",
        })?;
    Ok(Credentials::Ecdsa {
        app,
        users: Keystore::open(path)?,
    })
}

/// The token source; ECDSA keys alongside are a conflict.
fn oauth2_credentials(config: &SilaConfig) -> Result<Credentials, SilaConfigError> {
    const MODE: &str = "oauth2";
    for (present, key) in [
        (config.app_private_key.is_some(), "app_private_key"),
        (config.user_keystore.is_some(), "user_keystore"),
    ] {
        if present {
            return Err(SilaConfigError::Conflicting { mode: MODE, key });
        }
    }
    let source = config
        .oauth_token
        .as_ref()
        .ok_or(SilaConfigError::Missing {
            mode: MODE,
            key: "oauth_token",
        })?;
    Ok(Credentials::OAuth2 {
        token: TokenSource::open(source)?,
    })
}

fn http_client(config: &SilaConfig) -> Result<reqwest::Client, SilaConfigError> {
    reqwest::Client::builder()
        .connect_timeout(at_least_a_second_if_zero(config.connect_timeout))
        .timeout(at_least_a_second_if_zero(config.request_timeout))
        // A redirected POST becomes a GET without the documents, whose 2xx would read as
        // delivered; a moved API is a configuration error to report, not to follow.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("docgate-sila/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| SilaConfigError::HttpClient(e.to_string()))
}

fn upload_policy(config: &SilaConfig) -> UploadPolicy {
    UploadPolicy {
        min_document_bytes: 1,
        max_document_bytes: config.max_request_bytes,
        // Documents alone may not exceed Sila's request limit; the exact check, framing
        // and metadata included, is `check`. With this, the gateway refuses a request
        // whose Content-Length already exceeds the limit before reading its body.
        max_request_bytes: config.max_request_bytes,
        accepted: SUPPORTED_MEDIA_TYPES
            .iter()
            .filter_map(|m| MediaRange::parse(m).ok())
            .collect(),
        digests: DigestSet::SHA256,
        slots: Slots::Free {
            max: config.max_documents,
        },
        zip: None,
        refuse_active_content: true,
    }
}

impl SilaProvider {
    /// Check the configuration and load the credentials (the keystore's permissions too).
    pub fn new(config: SilaConfig) -> Result<SilaProvider, SilaConfigError> {
        let documents_url = documents_url(&config)?;
        // The keystore is opened below, after the app key, as it always was.
        if let Some((_, first)) = config
            .problems()
            .into_iter()
            .find(|(key, _)| *key != "user_keystore")
        {
            return Err(first);
        }
        let app_handle = config.app_handle.trim().to_owned();
        let credentials = match config.auth {
            AuthMode::Ecdsa => ecdsa_credentials(&config)?,
            AuthMode::OAuth2 => oauth2_credentials(&config)?,
        };
        let http = http_client(&config)?;
        let policy = upload_policy(&config);
        Ok(SilaProvider {
            inner: Arc::new(Inner {
                documents_url,
                app_handle,
                credentials,
                document_types: config.document_types,
                max_request_bytes: config.max_request_bytes,
                policy,
                http,
            }),
        })
    }

    fn with_rules<T>(&self, f: impl FnOnce(&Rules<'_>) -> T) -> T {
        let inner = &self.inner;
        match &inner.credentials {
            Credentials::Ecdsa { users, .. } => {
                let has_key = |handle: &str| match users.key_for(handle) {
                    Ok(key) => Ok(key.is_some()),
                    Err(e) => {
                        tracing::error!(error = %e, "Sila user keystore unusable");
                        Err(e.to_string())
                    }
                };
                f(&Rules {
                    document_types: &inner.document_types,
                    has_user_key: Some(&has_key),
                })
            }
            Credentials::OAuth2 { .. } => f(&Rules {
                document_types: &inner.document_types,
                has_user_key: None,
            }),
        }
    }

    /// The data message and the body plan for these documents.
    fn outgoing(
        &self,
        prepared: &PreparedUpload,
        documents: &[&DocumentMeta],
        created: i64,
        reference: String,
    ) -> Result<(DataMessage, BodyPlan), Problem> {
        if documents.is_empty() {
            return Err(Problem::bad_request(
                "a Sila upload needs at least one document",
            ));
        }
        let resolved = fields::resolve(prepared, documents)?;
        let header = Header {
            created,
            app_handle: self.inner.app_handle.clone(),
            user_handle: prepared.user_handle.clone(),
            version: VERSION,
            reference,
        };
        let mut labelled: Vec<(String, FileFields)> = Vec::with_capacity(documents.len());
        let mut parts = Vec::with_capacity(documents.len());
        for (meta, resolved) in documents.iter().zip(resolved) {
            if !SUPPORTED_MEDIA_TYPES.contains(&meta.media_type.as_str()) {
                return Err(Problem::unsupported_media_type(
                    &meta.media_type,
                    &self.inner.policy.accepted_names(),
                ));
            }
            let label = naming::label(&meta.slot);
            if labelled.iter().any(|(l, _)| *l == label) {
                return Err(Problem::invalid_field(
                    &meta.slot,
                    "two documents map to the same Sila label",
                ));
            }
            let filename = naming::sila_filename(meta.filename.as_deref(), &meta.slot);
            let Resolved {
                document_type,
                name,
                description,
                identity_type,
            } = resolved;
            parts.push(FilePart {
                name: label.clone(),
                filename: naming::part_filename(
                    &filename,
                    docgate_core::media::extension_for(&meta.media_type),
                ),
                content_type: meta.media_type.clone(),
                size: meta.size,
            });
            labelled.push((
                label,
                FileFields {
                    name,
                    filename,
                    hash: meta.digests.sha256.to_ascii_lowercase(),
                    mime_type: meta.media_type.clone(),
                    document_type,
                    identity_type,
                    description,
                },
            ));
        }
        let message = if labelled.len() == 1 {
            let (_, file) = labelled.remove(0);
            parts[0].name = crate::message::SINGLE_PART_NAME.to_owned();
            DataMessage::Single { header, file }
        } else {
            DataMessage::Multi {
                header,
                files: labelled,
            }
        };
        let plan = BodyPlan::new(Bytes::from(message.to_bytes()), parts);
        Ok((message, plan))
    }

    fn too_large(&self, plan: &BodyPlan) -> Option<Problem> {
        let length = plan.content_length();
        (length > self.inner.max_request_bytes).then(|| {
            Problem::payload_too_large(
                self.inner.max_request_bytes,
                &format!(
                    "the request to Sila ({length} bytes: documents, multipart framing and metadata)"
                ),
            )
        })
    }

    async fn send(
        &self,
        ctx: &DeliveryContext,
        data: &[u8],
        plan: &BodyPlan,
        documents: &[Document],
        user_handle: &str,
    ) -> Outcome {
        let inner = &self.inner;
        let mut request = inner
            .http
            .post(inner.documents_url.clone())
            .header(http::header::CONTENT_TYPE, plan.content_type())
            .header(http::header::CONTENT_LENGTH, plan.content_length());
        match &inner.credentials {
            Credentials::Ecdsa { app, users } => {
                let user = match users.key_for(user_handle) {
                    Ok(Some(key)) => key,
                    Ok(None) => {
                        return Outcome::rejected(
                            Problem::invalid_field(
                                fields::USER_HANDLE,
                                "docgate holds no signing key for this user_handle (any more)",
                            ),
                            None,
                        )
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "Sila user keystore unusable");
                        return Outcome::retry(format!("the user keystore is unusable: {e}"), None);
                    }
                };
                let (auth, usersig) = match (app.sign(data), user.sign(data)) {
                    (Ok(a), Ok(u)) => (a, u),
                    _ => return Outcome::retry("signing the Sila request failed", None),
                };
                request = request
                    .header("authsignature", auth)
                    .header("usersignature", usersig);
            }
            Credentials::OAuth2 { token } => match token.current() {
                Ok(token) => {
                    request = request.bearer_auth(token.expose());
                }
                Err(e) => {
                    tracing::error!(error = %e, "Sila OAuth2 token unavailable");
                    return Outcome::retry(format!("the OAuth2 token is unavailable: {e}"), None);
                }
            },
        }
        let streams = documents.iter().map(|d| d.spool.stream()).collect();
        let body = match plan.stream(streams) {
            Ok(body) => body,
            Err(e) => return Outcome::rejected(Problem::internal(e.to_string()), None),
        };
        let started = std::time::Instant::now();
        let result = request.body(reqwest::Body::wrap_stream(body)).send().await;
        let outcome = match result {
            Ok(resp) => match response::read(resp).await {
                Ok(answer) => match &inner.credentials {
                    Credentials::OAuth2 { .. } => {
                        response::bearer_refusal_retried(response::outcome(&answer))
                    }
                    Credentials::Ecdsa { .. } => response::outcome(&answer),
                },
                Err(e) => response::transport_failure(&e),
            },
            Err(e) => response::transport_failure(&e),
        };
        tracing::info!(
            upload_id = %ctx.upload_id,
            attempt = ctx.attempt,
            documents = documents.len(),
            bytes = plan.content_length(),
            upstream_status = ?outcome.upstream_status(),
            final_outcome = outcome.is_final(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "sila delivery attempt"
        );
        outcome
    }
}

/// `base` + `path`, keeping any path prefix of the base (`https://proxy/sila` works).
/// A zero timeout would fail every request at once; like before, it means one second.
fn at_least_a_second_if_zero(timeout: Duration) -> Duration {
    if timeout.is_zero() {
        Duration::from_secs(1)
    } else {
        timeout
    }
}

fn endpoint(base: &reqwest::Url, path: &str) -> Option<reqwest::Url> {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let with_slash = format!("{}/", base.path());
        base.set_path(&with_slash);
    }
    base.join(path).ok()
}

/// `header.reference` for an upload: the upload id itself when it is a UUID, else a UUID
/// derived from it. Stable across attempts, so a repeated delivery carries the same one.
pub fn reference_for(upload_id: &str) -> String {
    if let Ok(id) = uuid::Uuid::parse_str(upload_id) {
        return id.hyphenated().to_string();
    }
    let hash = Sha256::digest(format!("docgate-sila-reference:{upload_id}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    // RFC 9562 version 8 ("custom") and the RFC variant, so it parses as a UUID anywhere.
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(bytes).hyphenated().to_string()
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[async_trait]
impl Provider for SilaProvider {
    fn name(&self) -> &str {
        "sila"
    }

    fn description(&self) -> &str {
        "Sila KYC documents (POST /0.2/documents): PNG, JPEG or PDF, several per request, signed with secp256k1 or sent with an OAuth2 token"
    }

    fn policy(&self) -> &UploadPolicy {
        &self.inner.policy
    }

    fn fields(&self) -> Vec<FieldSpec> {
        vec![
            FieldSpec::required(fields::USER_HANDLE, "the Sila user the documents belong to (e.g. user.silamoney.eth)"),
            FieldSpec::required(
                fields::DOCUMENT_TYPE,
                "a Sila document type such as id_drivers_license; `document_type.<slot>` sets it for one document",
            ),
            FieldSpec::optional(fields::NAME, "descriptive name, at most 100 characters; `name.<slot>` for one document"),
            FieldSpec::optional(
                fields::DESCRIPTION,
                "description, at most 255 characters; `description.<slot>` for one document",
            ),
            FieldSpec::optional(fields::IDENTITY_TYPE, "Sila identity type (e.g. license); `identity_type.<slot>` for one document"),
        ]
    }

    fn prepare(&self, fields: &Fields) -> Result<Prepared, Problem> {
        let prepared = self.with_rules(|rules| fields::prepare(fields, rules))?;
        Prepared::of(&prepared)
    }

    /// The Sila user.
    fn subjects(&self, prepared: &Prepared) -> Vec<(&'static str, docgate_core::OwnedRef)> {
        let Ok(p) = prepared.parse::<PreparedUpload>() else {
            return Vec::new();
        };
        vec![(fields::USER_HANDLE, user_subject(&p.user_handle))]
    }

    fn check(&self, prepared: &Prepared, documents: &[DocumentMeta]) -> Result<(), Problem> {
        let prepared: PreparedUpload = prepared.parse()?;
        if documents.len() > self.inner.policy.max_documents() {
            return Err(Problem::invalid_field(
                "documents",
                format!(
                    "at most {} documents per upload",
                    self.inner.policy.max_documents()
                ),
            ));
        }
        let metas: Vec<&DocumentMeta> = documents.iter().collect();
        // The reference and timestamp have fixed lengths, so any values give the real size.
        let (_, plan) = self.outgoing(&prepared, &metas, now_unix(), reference_for("check"))?;
        match self.too_large(&plan) {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    fn endpoints(&self) -> Vec<reqwest::Url> {
        vec![self.inner.documents_url.clone()]
    }

    /// The OAuth2 bearer token is sent as it is (ECDSA keys sign; their signatures are
    /// worthless for any other request).
    fn secrets(&self) -> Vec<docgate_core::Secret> {
        match &self.inner.credentials {
            Credentials::OAuth2 { token } => token.current().into_iter().collect(),
            Credentials::Ecdsa { .. } => Vec::new(),
        }
    }

    async fn deliver(
        &self,
        ctx: &DeliveryContext,
        prepared: &Prepared,
        documents: &[Document],
    ) -> Outcome {
        let prepared: PreparedUpload = match prepared.parse() {
            Ok(p) => p,
            Err(problem) => return Outcome::rejected(problem, None),
        };
        let metas: Vec<&DocumentMeta> = documents.iter().map(|d| &d.meta).collect();
        for doc in documents {
            if doc.spool.len() != doc.meta.size {
                return Outcome::rejected(
                    Problem::internal(format!(
                        "spooled document `{}` is {} bytes, its record says {}",
                        doc.meta.slot,
                        doc.spool.len(),
                        doc.meta.size
                    )),
                    None,
                );
            }
        }
        let (message, plan) =
            match self.outgoing(&prepared, &metas, now_unix(), reference_for(&ctx.upload_id)) {
                Ok(out) => out,
                Err(problem) => return Outcome::rejected(problem, None),
            };
        if let Some(problem) = self.too_large(&plan) {
            return Outcome::rejected(problem, None);
        }
        let data = message.to_bytes();
        self.send(ctx, &data, &plan, documents, &prepared.user_handle)
            .await
    }
}

/// A Sila user as an owned customer: handles are case-insensitive at Sila.
fn user_subject(handle: &str) -> docgate_core::OwnedRef {
    docgate_core::OwnedRef::hashed("user_handle", &handle.trim().to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_handle_is_one_customer_however_it_is_spelt() {
        let user = user_subject("test_user.silamoney.eth");
        assert_eq!(user_subject(" Test_User.SilaMoney.eth"), user);
        assert_ne!(user_subject("other_user.silamoney.eth"), user);
        assert!(!user.value.contains("test_user"), "kept as a hash");
    }

    #[test]
    fn references_are_stable_uuids() {
        let id = "5f0c1d1e-8a5b-4c3e-9a63-0b1f4f1d2e3a";
        assert_eq!(reference_for(id), id);
        let derived = reference_for("upl_01HZX");
        assert_eq!(derived, reference_for("upl_01HZX"));
        assert_ne!(derived, reference_for("upl_01HZY"));
        assert!(uuid::Uuid::parse_str(&derived).is_ok());
        assert_eq!(derived.len(), 36);
    }

    #[test]
    fn endpoints_keep_a_base_path() {
        let plain = reqwest::Url::parse("https://sandbox.silamoney.com").expect("url");
        assert_eq!(
            endpoint(&plain, "0.2/documents").expect("join").as_str(),
            "https://sandbox.silamoney.com/0.2/documents"
        );
        let prefixed = reqwest::Url::parse("http://proxy:8080/sila").expect("url");
        assert_eq!(
            endpoint(&prefixed, "0.2/documents").expect("join").as_str(),
            "http://proxy:8080/sila/0.2/documents"
        );
    }
}
