//! What travels on the wire besides the body: header names, the `ErrorDetail` envelope and
//! the error codes — shared by the client and the emulator so they cannot drift apart.
//!
//! Two codes the spec names are not published yet (`TALER_EC_KYC_BULK_SIGNATURE_INVALID`,
//! `TALER_EC_EXCHANGE_KYC_IMPORT_3RD_PARTY_UNKNOWN`): they are [`ErrorCodes`] configuration,
//! never a guessed constant. The published ones are constants with their Taler names.

use serde::{Deserialize, Serialize};

/// Crockford EdDSA signature over the packed struct (103 characters).
pub const HEADER_SIGNATURE: &str = "Taler-Extern-Signature";
/// The customer's payto URI, exactly as hashed into the signature.
pub const HEADER_PAYTO: &str = "Taler-Customer-Payto";
/// Crockford SHA-512 of the body. Non-standard name: not `If-None-Match`.
pub const HEADER_IF_NOT_MATCH: &str = "If-Not-Match";

/// The endpoint path below the exchange's base URL, before `$EXTERN_PUB`.
pub const PATH_PREFIX: &str = "kyc-bulk";

/// The body limit of today's exchange.
pub const DEFAULT_UPLOAD_LIMIT: u64 = 16 * 1024 * 1024;

/// Published GNU Taler error codes used by this endpoint.
pub mod codes {
    pub const GENERIC_METHOD_INVALID: u32 = 20;
    pub const GENERIC_ENDPOINT_UNKNOWN: u32 = 21;
    pub const GENERIC_PARAMETER_MISSING: u32 = 25;
    pub const GENERIC_PARAMETER_MALFORMED: u32 = 26;
    pub const GENERIC_UPLOAD_EXCEEDS_LIMIT: u32 = 32;
    pub const GENERIC_DB_SETUP_FAILED: u32 = 50;
    pub const GENERIC_DB_STORE_FAILED: u32 = 52;
    pub const GENERIC_DB_INVARIANT_FAILURE: u32 = 56;
    pub const GENERIC_INTERNAL_INVARIANT_FAILURE: u32 = 60;
}

/// The numbers of the codes the spec names but nobody has published yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorCodes {
    /// `TALER_EC_KYC_BULK_SIGNATURE_INVALID` (sent with 403).
    #[serde(default)]
    pub signature_invalid: Option<u32>,
    /// `TALER_EC_EXCHANGE_KYC_IMPORT_3RD_PARTY_UNKNOWN` (sent with 404).
    #[serde(default)]
    pub third_party_unknown: Option<u32>,
}

impl ErrorCodes {
    /// The Taler name of `code`, when known (published or configured).
    pub fn name(&self, code: u32) -> Option<&'static str> {
        use codes::*;
        if Some(code) == self.signature_invalid {
            return Some("TALER_EC_KYC_BULK_SIGNATURE_INVALID");
        }
        if Some(code) == self.third_party_unknown {
            return Some("TALER_EC_EXCHANGE_KYC_IMPORT_3RD_PARTY_UNKNOWN");
        }
        Some(match code {
            GENERIC_METHOD_INVALID => "TALER_EC_GENERIC_METHOD_INVALID",
            GENERIC_ENDPOINT_UNKNOWN => "TALER_EC_GENERIC_ENDPOINT_UNKNOWN",
            GENERIC_PARAMETER_MISSING => "TALER_EC_GENERIC_PARAMETER_MISSING",
            GENERIC_PARAMETER_MALFORMED => "TALER_EC_GENERIC_PARAMETER_MALFORMED",
            GENERIC_UPLOAD_EXCEEDS_LIMIT => "TALER_EC_GENERIC_UPLOAD_EXCEEDS_LIMIT",
            GENERIC_DB_SETUP_FAILED => "TALER_EC_GENERIC_DB_SETUP_FAILED",
            GENERIC_DB_STORE_FAILED => "TALER_EC_GENERIC_DB_STORE_FAILED",
            GENERIC_DB_INVARIANT_FAILURE => "TALER_EC_GENERIC_DB_INVARIANT_FAILURE",
            GENERIC_INTERNAL_INVARIANT_FAILURE => "TALER_EC_GENERIC_INTERNAL_INVARIANT_FAILURE",
            _ => return None,
        })
    }
}

/// Taler's error body: `{"code": n, "hint": "...", "detail": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ErrorDetail {
    pub fn new(code: u32, hint: impl Into<String>) -> ErrorDetail {
        ErrorDetail {
            code,
            hint: Some(hint.into()),
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> ErrorDetail {
        self.detail = Some(detail.into());
        self
    }

    /// Parse a (bounded) error body; `None` when it is not Taler's envelope.
    pub fn parse(body: &[u8]) -> Option<ErrorDetail> {
        serde_json::from_slice(body).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_detail_parses_with_and_without_optional_members() {
        let full = ErrorDetail::parse(br#"{"code":26,"hint":"bad","detail":"If-Not-Match"}"#)
            .expect("parses");
        assert_eq!(
            full,
            ErrorDetail::new(26, "bad").with_detail("If-Not-Match")
        );
        let bare = ErrorDetail::parse(br#"{"code":52}"#).expect("parses");
        assert_eq!((bare.code, bare.hint), (52, None));
        assert!(ErrorDetail::parse(b"<html>502</html>").is_none());
    }

    #[test]
    fn unpublished_codes_are_named_only_when_configured() {
        let none = ErrorCodes::default();
        assert_eq!(none.name(26), Some("TALER_EC_GENERIC_PARAMETER_MALFORMED"));
        assert_eq!(none.name(1234), None);
        let configured = ErrorCodes {
            signature_invalid: Some(1234),
            third_party_unknown: Some(1235),
        };
        assert_eq!(
            configured.name(1234),
            Some("TALER_EC_KYC_BULK_SIGNATURE_INVALID")
        );
        assert_eq!(
            configured.name(1235),
            Some("TALER_EC_EXCHANGE_KYC_IMPORT_3RD_PARTY_UNKNOWN")
        );
    }
}
