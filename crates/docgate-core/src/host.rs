//! What a provider's own routes may ask of the gateway: [`GatewayHost`].
//!
//! Some providers need HTTP routes beyond uploads (OST: presigned browser forms, KYC
//! submissions, webhooks). Those routes live in the provider's crate, but tenants, ownership
//! and recorded events belong to the gateway. The host trait is that boundary: a provider
//! authenticates callers, records what a tenant owns and checks ownership without knowing how
//! the gateway stores any of it.
//!
//! **Ownership** is how tenants stay apart. Anything a provider identifies — an S3 key, an
//! OST user id — is owned by the tenant whose upload or request created it, first come first
//! served; every route that takes such an id checks it, and answers 404 for ids another
//! tenant owns (a 403 would confirm that the id exists). The customers an upload names in its
//! fields (a Sila user handle, a Finext username, a Taler bank account: see
//! [`crate::Provider::subjects`]) are claimed the same way when the upload is accepted; an
//! upload for another tenant's customer is refused with 403 (its fields are not a resource
//! to pretend absent).

use std::{collections::BTreeMap, fmt, sync::Arc};

use async_trait::async_trait;
use axum::extract::FromRequestParts;
use http::{request::Parts, HeaderMap};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::problem::Problem;

/// A provider-scoped identifier a tenant can own: `kind` says what it is (`s3_key`,
/// `user`), `value` is the provider's own identifier.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OwnedRef {
    pub kind: String,
    pub value: String,
}

impl OwnedRef {
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> OwnedRef {
        OwnedRef {
            kind: kind.into(),
            value: value.into(),
        }
    }

    /// An identity recorded as its SHA-256 alone: a bank account or a user name is personal
    /// data, and ownership records outlive the erasure of the uploads that made them.
    pub fn hashed(kind: impl Into<String>, identity: &str) -> OwnedRef {
        use sha2::Digest as _;
        OwnedRef::new(kind, hex::encode(sha2::Sha256::digest(identity.as_bytes())))
    }
}

/// An event a provider sent to the gateway (e.g. an OST webhook), as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderEvent {
    pub provider: String,
    pub event_id: String,
    pub name: String,
    /// Milliseconds since the Unix epoch.
    pub received_at: i64,
    /// What the event is about; only the tenant owning it sees the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<OwnedRef>,
    pub payload: Value,
}

/// The tenant behind a request, as a provider's routes see it.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantRef {
    pub name: String,
    pub providers: Arc<Vec<String>>,
    /// `[tenants.options.<provider>]`, checked at start by the provider's registration.
    pub options: Arc<BTreeMap<String, toml::Table>>,
}

impl TenantRef {
    pub fn may_use(&self, provider: &str) -> bool {
        self.providers.iter().any(|p| p == provider)
    }

    /// 403 unless this tenant may use `provider`.
    pub fn require(&self, provider: &str) -> Result<(), Problem> {
        if self.may_use(provider) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "tenant `{}` may not use provider `{provider}`",
                self.name
            )))
        }
    }

    /// A boolean tenant option of `provider` (false when absent).
    pub fn flag(&self, provider: &str, key: &str) -> bool {
        self.options
            .get(provider)
            .and_then(|t| t.get(key))
            .and_then(toml::Value::as_bool)
            .unwrap_or(false)
    }
}

/// The gateway as seen from a provider's routes. Errors come back as problems ready to send
/// (the ledger being down is a 503 with Retry-After, never a detail of the database).
#[async_trait]
pub trait GatewayHost: Send + Sync + fmt::Debug + 'static {
    /// The tenant behind `Authorization: Bearer <api key>` (never an upload-session token).
    fn authenticate(&self, headers: &HeaderMap) -> Result<TenantRef, Problem>;

    /// Make `tenant` the owner of `subject` unless another tenant already is. `Ok(true)`: the
    /// tenant owns it (now or from before); `Ok(false)`: another tenant does.
    async fn claim(
        &self,
        tenant: &str,
        provider: &str,
        subject: &OwnedRef,
    ) -> Result<bool, Problem>;

    /// Does `tenant` own `subject`?
    async fn owns(&self, tenant: &str, provider: &str, subject: &OwnedRef)
        -> Result<bool, Problem>;

    /// Give up `tenant`'s claim on `subject` (one it made for a request the provider then
    /// refused), so that claiming cannot be used to take identifiers that do not exist yet.
    async fn release(
        &self,
        tenant: &str,
        provider: &str,
        subject: &OwnedRef,
    ) -> Result<(), Problem>;

    /// Record an inbound event; `Ok(false)` when `(provider, event_id)` was seen before.
    async fn record_event(&self, event: &ProviderEvent) -> Result<bool, Problem>;

    /// The newest events of `provider` whose subject `tenant` owns.
    async fn events(
        &self,
        tenant: &str,
        provider: &str,
        limit: u32,
    ) -> Result<Vec<ProviderEvent>, Problem>;

    /// Count a refusal in the gateway's metrics (`docgate_rejections_total{code}`).
    fn rejected(&self, code: &str);
}

/// The host as the gateway hands it to routes (a request extension).
pub type Host = Arc<dyn GatewayHost>;

/// Extractor: the tenant authenticated by its API key. Rejects with 401 problem+json.
#[derive(Debug, Clone)]
pub struct ApiTenant(pub TenantRef);

impl<S: Send + Sync> FromRequestParts<S> for ApiTenant {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let host = host_of(parts)?;
        host.authenticate(&parts.headers).map(ApiTenant)
    }
}

/// The gateway host of a request (the gateway installs it as an extension on every request).
pub fn host_of(parts: &Parts) -> Result<Host, Problem> {
    parts
        .extensions
        .get::<Host>()
        .cloned()
        .ok_or_else(|| Problem::internal("the gateway host is not installed on this router"))
}

/// Extractor: the gateway host itself.
#[derive(Debug, Clone)]
pub struct HostRef(pub Host);

impl<S: Send + Sync> FromRequestParts<S> for HostRef {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        host_of(parts).map(HostRef)
    }
}
