//! docgate-finext: Finext KYC address and ID proofs — client and faithful emulator.
//!
//! Finext takes a proof as one JSON object: account fields, the document's metadata, the
//! document itself as a base64 string, and an MD5 signature over the api key, username,
//! timestamp, secret and a never-reused request id. Three endpoints take documents
//! (`addAddressProof`, `updateAddressProof`, `addIDProof`) and `getAddressKycStatus` reports
//! the review state.
//!
//! * [`sign`] — the signature, request ids and timestamps;
//! * [`vocab`], [`dates`], [`submission`] — Finext's rules, checked before any upload byte is
//!   read;
//! * [`base64_stream`], [`body`] — the JSON body streamed from the spool with an exact
//!   `Content-Length`, never whole in memory;
//! * [`provider`], [`outcome`] — [`FinextProvider`] and how Finext's answers map to outcomes;
//! * [`emulator`] — `docgate emulate finext`: verifies what Finext verifies and stores the
//!   decoded documents.
//!
//! The whole story (wire format, fields, codes, configuration) is in this crate's README.

#![forbid(unsafe_code)]

pub mod base64_stream;
pub mod body;
pub mod config;
pub mod dates;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod outcome;
pub mod provider;
pub mod registration;
pub mod sign;
pub mod submission;
pub mod vocab;

pub use config::{FinextConfig, FinextConfigError};
pub use dates::DateFormat;
pub use provider::FinextProvider;
pub use registration::REGISTRATION;
pub use submission::{Endpoint, Proof, Submission};
