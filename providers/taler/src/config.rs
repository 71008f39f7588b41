//! `TalerConfig`: how docgate reaches one exchange, as written in `docgate.toml`.
//!
//! Three of these settings are guesses nobody can make for you yet — the signature purpose
//! number, the payto-hash variant and two error codes are unpublished (`../README.md`) — so
//! `purpose` has no default: a real configuration must say which number its exchange uses.

use std::time::Duration;

use docgate_core::Secret;
use serde::Deserialize;

use crate::{
    signing::{KeyError, PaytoHash},
    wire::{ErrorCodes, DEFAULT_UPLOAD_LIMIT},
};

/// The client configuration for one exchange.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TalerConfig {
    /// The exchange's base URL (`https://exchange.example.com/`); uploads go to
    /// `{base_url}/kyc-bulk/{EXTERN_PUB}`.
    pub base_url: String,
    /// The third party's Ed25519 private key: the 32-byte seed, written as 52 Crockford
    /// base32 characters (GNUnet style) or 64 hex digits. `{ env = "VAR" }` or
    /// `{ file = "/path" }`; never inline.
    pub extern_key: Secret,
    /// `TALER_SIGNATURE_EXTERN_BULK_UPLOAD`, the signature purpose number. Unpublished:
    /// ask the exchange operator (the test vectors and the sandbox use 65535).
    pub purpose: u32,
    /// Which payto hash the exchange signs over: "A" (default), "B" or "C".
    #[serde(default)]
    pub payto_hash: PaytoHash,
    /// The exchange's body limit in bytes (16 MiB today): the largest document accepted
    /// from frontends, and what a refused ZIP is split down to.
    #[serde(default = "default_upload_limit")]
    pub upload_limit: u64,
    /// At most this many entries in a ZIP document.
    #[serde(default = "default_max_zip_entries")]
    pub max_zip_entries: usize,
    /// At most this many bytes once every ZIP entry is uncompressed (zip-bomb guard).
    #[serde(default = "default_max_zip_uncompressed")]
    pub max_zip_uncompressed: u64,
    /// How long one upload request may take in total (connect, send, answer): a duration
    /// such as `"90s"`, `"5m"`, `"500ms"`, or a number of seconds. Default 300 s.
    #[serde(
        default = "default_timeout",
        deserialize_with = "docgate_core::duration::deserialize"
    )]
    pub timeout: Duration,
    /// How long establishing the connection may take. Default 10 s.
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "docgate_core::duration::deserialize"
    )]
    pub connect_timeout: Duration,
    /// Numbers of the unpublished error codes, if the exchange operator told you; they only
    /// make rejections easier to read.
    #[serde(default)]
    pub error_codes: ErrorCodes,
}

fn default_upload_limit() -> u64 {
    DEFAULT_UPLOAD_LIMIT
}
fn default_max_zip_entries() -> usize {
    1000
}
fn default_max_zip_uncompressed() -> u64 {
    1 << 30
}
fn default_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

impl TalerConfig {
    /// A configuration with every optional setting at its default.
    pub fn new(base_url: impl Into<String>, extern_key: Secret, purpose: u32) -> TalerConfig {
        TalerConfig {
            base_url: base_url.into(),
            extern_key,
            purpose,
            payto_hash: PaytoHash::default(),
            upload_limit: default_upload_limit(),
            max_zip_entries: default_max_zip_entries(),
            max_zip_uncompressed: default_max_zip_uncompressed(),
            timeout: default_timeout(),
            connect_timeout: default_connect_timeout(),
            error_codes: ErrorCodes::default(),
        }
    }
}

/// Why a configuration cannot be used. Never contains the key.
#[derive(Debug, thiserror::Error)]
pub enum TalerConfigError {
    #[error("taler base_url `{url}` is not usable: {reason}")]
    BaseUrl { url: String, reason: String },
    #[error("taler extern_key: {0}")]
    Key(#[from] KeyError),
    #[error("taler {0} must be greater than zero")]
    Zero(&'static str),
    #[error("taler HTTP client cannot be built: {0}")]
    Client(#[source] reqwest::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_toml_section_gets_the_documented_defaults() {
        std::env::set_var("DOCGATE_TALER_CONFIG_TEST_KEY", "00".repeat(32));
        let c: TalerConfig = toml::from_str(
            r#"
            base_url = "https://exchange.example.com/"
            extern_key = { env = "DOCGATE_TALER_CONFIG_TEST_KEY" }
            purpose = 1234
            "#,
        )
        .expect("parses");
        assert_eq!(c.purpose, 1234);
        assert_eq!(c.payto_hash, PaytoHash::A);
        assert_eq!(c.upload_limit, 16 * 1024 * 1024);
        assert_eq!(c.timeout, Duration::from_secs(300));
        assert_eq!(c.error_codes, ErrorCodes::default());
        assert!(!format!("{c:?}").contains(&"00".repeat(32)));
    }

    #[test]
    fn purpose_is_required_and_unknown_keys_are_refused() {
        std::env::set_var("DOCGATE_TALER_CONFIG_TEST_KEY2", "00".repeat(32));
        let missing = toml::from_str::<TalerConfig>(
            r#"
            base_url = "https://x/"
            extern_key = { env = "DOCGATE_TALER_CONFIG_TEST_KEY2" }
            "#,
        );
        assert!(missing
            .expect_err("no purpose")
            .to_string()
            .contains("purpose"));
        let unknown = toml::from_str::<TalerConfig>(
            r#"
            base_url = "https://x/"
            extern_key = { env = "DOCGATE_TALER_CONFIG_TEST_KEY2" }
            purpose = 1
            payto_hashing = "B"
            "#,
        );
        assert!(unknown.is_err());
        let full: TalerConfig = toml::from_str(
            r#"
            base_url = "https://x/"
            extern_key = { env = "DOCGATE_TALER_CONFIG_TEST_KEY2" }
            purpose = 1
            payto_hash = "C"
            upload_limit = 1048576
            max_zip_entries = 10
            max_zip_uncompressed = 2000000
            timeout = "90s"
            connect_timeout = 2
            error_codes = { signature_invalid = 1001, third_party_unknown = 1002 }
            "#,
        )
        .expect("parses");
        assert_eq!(full.payto_hash, PaytoHash::C);
        assert_eq!(full.error_codes.third_party_unknown, Some(1002));
        assert_eq!(full.timeout, Duration::from_secs(90));
        assert_eq!(full.connect_timeout, Duration::from_secs(2));
    }

    #[test]
    fn the_readme_example_is_a_valid_configuration() {
        let readme = include_str!("../README.md");
        let block = readme
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("the README has a toml example");
        let section = block
            .strip_prefix("[providers.taler]\n")
            .expect("the example is the [providers.taler] section");
        std::env::set_var("TALER_EXTERN_KEY", "00".repeat(32));
        let c: TalerConfig = toml::from_str(section).expect("the README example parses");
        assert_eq!(c.purpose, 65535);
        assert_eq!(c.timeout, Duration::from_secs(300));
    }
}
