//! docgate-sila: Sila's `POST /0.2/documents`, both sides.
//!
//! Sila takes KYC documents as `multipart/form-data`: a `data` part holding a JSON message
//! (header + per-file metadata including each file's SHA-256) and one part per file. In ECDSA
//! mode the app and the user each sign the exact `data` bytes with secp256k1 over Keccak-256
//! (Ethereum style); in OAuth2 mode a bearer token replaces the signatures.
//!
//! * [`signing`], [`message`], [`multipart`], [`naming`], [`doctypes`] — the wire format;
//! * [`SilaConfig`], [`credentials`] — configuration, the user keystore, OAuth2 tokens;
//! * [`SilaProvider`] ([`client`], [`fields`], [`response`]) — docgate's client;
//! * [`emulator`] — a faithful receiver for tests and the sandbox.
//!
//! The whole story, from the wire format to how the interop test runs, is in the crate's
//! `README.md`.

#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod credentials;
pub mod doctypes;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod fields;
pub mod message;
pub mod multipart;
pub mod naming;
pub mod registration;
pub mod response;
pub mod signing;

pub use client::SilaProvider;
pub use config::{AuthMode, SilaConfig, SilaConfigError};
pub use registration::REGISTRATION;
