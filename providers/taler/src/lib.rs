//! docgate-taler: GNU Taler's `POST /kyc-bulk/$EXTERN_PUB`, both sides.
//!
//! A third party (docgate) uploads a large KYC/KYB attachment about one customer to a Taler
//! exchange. The request is authenticated by an Ed25519 signature that binds the body's
//! SHA-512 to the customer's payto URI; the exchange deduplicates by that hash. The whole
//! story — wire format, signature, fields, configuration, emulator behaviour — is in
//! `README.md` next to this crate; the modules, bottom up:
//!
//! * [`crockford`] — GNUnet's base32 for keys, signatures and hashes;
//! * [`payto`] — the validated `payto` field;
//! * [`signing`] — the packed struct, the three payto-hash readings, Ed25519;
//! * [`wire`] — header names, `ErrorDetail`, error codes;
//! * [`config`] and [`client`] — `TalerConfig` and `TalerProvider` (docgate's client);
//! * [`split`] — breaking a refused ZIP into parts the exchange accepts;
//! * [`emulator`] — the exchange side, for `docgate emulate taler` and the sandbox.

#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod crockford;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod payto;
pub mod registration;
pub mod signing;
pub mod split;
pub mod wire;

pub use client::{TalerPrepared, TalerProvider};
pub use config::{TalerConfig, TalerConfigError};
pub use registration::REGISTRATION;
pub use signing::PaytoHash;
