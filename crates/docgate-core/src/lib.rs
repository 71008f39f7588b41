//! docgate-core: the ingest pipeline and the provider contract.
//!
//! This crate knows no provider and no server. It answers three questions for every
//! document that passes through the gateway, in one streaming pass with bounded memory:
//! *is it acceptable* (size, real media type, ZIP contents, active content and polyglots —
//! see [`policy`], [`media`], [`archive`], [`scan`]), *what are its digests* ([`digest`]), and *where is it kept until delivered*
//! ([`spool`]). [`ingest`] ties them together. [`provider`] is the contract a provider crate
//! implements; [`problem`] is the error shape every rejection takes.

#![forbid(unsafe_code)]

pub mod archive;
pub mod blocks;
pub mod digest;
pub mod duration;
pub mod host;
pub mod ingest;
pub mod local_host;
pub mod media;
pub mod policy;
pub mod private_fs;
pub mod problem;
pub mod provider;
pub mod read_out;
pub mod registration;
pub mod resume;
pub mod scan;
pub mod seal;
pub mod secret;
pub mod size;
pub mod spool;
pub mod store;
pub mod upstream;

pub use digest::{DigestPipeline, Digests, DigestsHex};
pub use host::{ApiTenant, GatewayHost, Host, OwnedRef, ProviderEvent, TenantRef};
pub use ingest::{
    ingest, ingest_into, recheck, Document, DocumentMeta, IngestError, IngestRequest,
};
pub use media::MediaRange;
pub use policy::{DigestSet, SlotSpec, Slots, UploadPolicy};
pub use problem::{FieldError, FieldErrorKind, Problem, Side};
pub use provider::{
    DeliveryContext, FieldSpec, Fields, Outcome, Prepared, Provider, ProviderRoutes, REDACTED,
};
pub use registration::{ConfigIssues, Registration};
pub use scan::{ContentScan, ScanError};
pub use secret::{Secret, SecretSource};

/// Milliseconds since the Unix epoch: the clock of the ledger and of recorded events.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}
pub use spool::{ByteStream, Spool, SpoolDir, Spooled};
pub use store::{LocalStore, ObjectStore};
