//! docgate-ost: OST KYC — HMAC-signed API, documents into OST's S3 through presigned URLs.
//!
//! The provider's whole story is in `README.md` beside this crate. In code:
//! * [`signing`] — the Rack-style nested query and HMAC every API call and webhook uses;
//! * [`envelope`] — OST's `{"success", "data" | "err"}` answers;
//! * [`kyc`] — slots, content types and KYC fields both sides agree on;
//! * [`api`] — the signed API client; [`provider`] — [`OstProvider`], docgate's client;
//! * [`webhook`] — verifying the events OST posts to docgate;
//! * [`emulator`] — `docgate emulate ost`: the API and a real S3 that checks its URLs.

#![forbid(unsafe_code)]

pub mod api;
pub mod config;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod envelope;
pub mod kyc;
pub mod provider;
pub mod registration;
pub mod routes;
pub mod signing;
pub mod webhook;

pub use config::{OstConfig, OstConfigError};
pub use provider::OstProvider;
pub use registration::REGISTRATION;
pub use webhook::{WebhookError, WebhookEvent};
