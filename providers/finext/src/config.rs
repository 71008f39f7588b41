//! `[providers.finext]`: where Finext is, the credentials, and the few choices its docs leave.
//!
//! ```toml
//! [providers.finext]
//! base_url = "https://api.finext.example"
//! api_key = "fd01a53d7834b06c080cd1024ae9c60a"
//! secret = { env = "FINEXT_SECRET" }
//! authorization = { file = "/run/secrets/finext-authorization" }
//! date_format = "YYYY-MM-DD"            # or "YYYY-DD-MM"
//! extension_map = { "image/jpeg" = "jpg", "image/png" = "png", "application/pdf" = "pdf" }
//! connect_timeout = "10s"
//! timeout = "300s"
//! max_document_bytes = 67108864
//! ```
//!
//! `api_key` travels in every request body and is an account identifier, so it is plain text;
//! `secret` (the signing key) and `authorization` (a header value the docs leave unspecified)
//! are [`Secret`]s, named by where they live and never printed.

use std::{collections::BTreeMap, time::Duration};

use docgate_core::{MediaRange, Secret};
use serde::Deserialize;

use crate::dates::DateFormat;

/// Largest document accepted by default: comfortably above a 50 MiB scan. The body Finext
/// receives is 4/3 of the document, so keep the provider's own request limit in mind.
pub const DEFAULT_MAX_DOCUMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Client configuration for Finext.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinextConfig {
    /// Scheme, host and optional path prefix; endpoints are appended (`/api/v1/account/…`).
    pub base_url: String,
    /// The account's API key (sent in every body and signed).
    pub api_key: String,
    /// The signing secret: `sign = MD5(api_key + username + timestamp + secret + request_id)`.
    pub secret: Secret,
    /// The value of the `authorization` header, sent as is.
    pub authorization: Secret,
    /// How dates are written on the wire; frontends always send ISO dates.
    #[serde(default)]
    pub date_format: DateFormat,
    /// Sniffed media type → the `*_extension` value sent. Replaces the default map
    /// (`image/jpeg` → `jpg`, `image/png` → `png`, `application/pdf` → `pdf`) when given; its
    /// keys are also exactly the media types accepted for upload.
    #[serde(default = "default_extension_map")]
    pub extension_map: BTreeMap<String, String>,
    /// How long to wait for a connection: a duration such as `"10s"`, `"500ms"`, `"5m"`, or a
    /// number of seconds. Default 10 s.
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "docgate_core::duration::deserialize"
    )]
    pub connect_timeout: Duration,
    /// How long one whole delivery (upload and answer) may take. Default 300 s.
    #[serde(
        default = "default_timeout",
        deserialize_with = "docgate_core::duration::deserialize"
    )]
    pub timeout: Duration,
    /// Largest accepted document, in bytes.
    #[serde(default = "default_max_document_bytes")]
    pub max_document_bytes: u64,
}

pub fn default_extension_map() -> BTreeMap<String, String> {
    [
        ("image/jpeg", "jpg"),
        ("image/png", "png"),
        ("application/pdf", "pdf"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_timeout() -> Duration {
    Duration::from_secs(300)
}

fn default_max_document_bytes() -> u64 {
    DEFAULT_MAX_DOCUMENT_BYTES
}

impl FinextConfig {
    /// A configuration with every optional key at its default.
    pub fn new(
        base_url: impl Into<String>,
        api_key: impl Into<String>,
        secret: Secret,
        authorization: Secret,
    ) -> FinextConfig {
        FinextConfig {
            base_url: base_url.into(),
            api_key: api_key.into(),
            secret,
            authorization,
            date_format: DateFormat::default(),
            extension_map: default_extension_map(),
            connect_timeout: default_connect_timeout(),
            timeout: default_timeout(),
            max_document_bytes: default_max_document_bytes(),
        }
    }
}

/// A configuration that cannot work, found when the provider is built (at start-up).
#[derive(Debug, thiserror::Error)]
pub enum FinextConfigError {
    #[error("finext.base_url `{url}` is not an http(s) URL: {reason}")]
    BaseUrl { url: String, reason: String },
    #[error("finext.api_key is empty")]
    EmptyApiKey,
    #[error("finext.authorization is not a valid header value (it must be visible ASCII)")]
    Authorization,
    #[error("finext.extension_map is empty: no document type could be sent")]
    NoExtensions,
    #[error("finext.extension_map key `{0}` is not an exact media type such as image/jpeg")]
    ExtensionKey(String),
    #[error("finext.extension_map value `{value}` for {media_type} is not a plain extension such as jpg")]
    ExtensionValue { media_type: String, value: String },
    #[error("finext.{0} must be greater than 0")]
    Zero(&'static str),
    #[error("the HTTP client could not be built: {0}")]
    Client(String),
}

/// The checked extension map: media types in canonical spelling.
pub(crate) fn checked_extension_map(
    map: &BTreeMap<String, String>,
) -> Result<Vec<(MediaRange, String, String)>, FinextConfigError> {
    if map.is_empty() {
        return Err(FinextConfigError::NoExtensions);
    }
    let mut out = Vec::new();
    for (media_type, ext) in map {
        let range = MediaRange::parse(media_type)
            .ok()
            .filter(|_| !media_type.ends_with("/*"))
            .ok_or_else(|| FinextConfigError::ExtensionKey(media_type.clone()))?;
        let plain =
            !ext.is_empty() && ext.len() <= 10 && ext.bytes().all(|b| b.is_ascii_alphanumeric());
        if !plain {
            return Err(FinextConfigError::ExtensionValue {
                media_type: media_type.clone(),
                value: ext.clone(),
            });
        }
        out.push((range, media_type.trim().to_ascii_lowercase(), ext.clone()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_section_with_defaults_and_secrets_from_the_environment() {
        std::env::set_var("DOCGATE_FINEXT_TEST_SECRET", "s3cr3t");
        std::env::set_var("DOCGATE_FINEXT_TEST_AUTH", "Bearer abc");
        let c: FinextConfig = toml::from_str(
            r#"
            base_url = "https://api.example"
            api_key = "k"
            secret = { env = "DOCGATE_FINEXT_TEST_SECRET" }
            authorization = { env = "DOCGATE_FINEXT_TEST_AUTH" }
            date_format = "YYYY-DD-MM"
            "#,
        )
        .expect("parses");
        assert_eq!(c.secret.expose(), "s3cr3t");
        assert_eq!(c.date_format, DateFormat::YearDayMonth);
        assert_eq!(c.extension_map, default_extension_map());
        assert_eq!(c.max_document_bytes, 64 * 1024 * 1024);
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.timeout, Duration::from_secs(300));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("Bearer abc"),
            "{shown}"
        );
    }

    #[test]
    fn timeouts_are_durations_or_whole_seconds() {
        std::env::set_var("DOCGATE_FINEXT_TEST_SECRET2", "s");
        std::env::set_var("DOCGATE_FINEXT_TEST_AUTH2", "a");
        let section = |timeouts: &str| {
            toml::from_str::<FinextConfig>(&format!(
                r#"
                base_url = "https://api.example"
                api_key = "k"
                secret = {{ env = "DOCGATE_FINEXT_TEST_SECRET2" }}
                authorization = {{ env = "DOCGATE_FINEXT_TEST_AUTH2" }}
                {timeouts}
                "#
            ))
        };
        let c = section("connect_timeout = \"500ms\"\ntimeout = \"5m\"").expect("parses");
        assert_eq!(c.connect_timeout, Duration::from_millis(500));
        assert_eq!(c.timeout, Duration::from_secs(300));
        let c = section("timeout = 90").expect("whole seconds parse");
        assert_eq!(c.timeout, Duration::from_secs(90));
        let soon = section("timeout = \"soon\"").expect_err("not a duration");
        assert!(soon.to_string().contains("not a duration"), "{soon}");
        let old = section("timeout_secs = 300").expect_err("the old key");
        assert!(old.to_string().contains("unknown field"), "{old}");
    }

    #[test]
    fn the_readme_example_is_a_valid_configuration() {
        let readme = include_str!("../README.md");
        let section = readme
            .split("```toml\n[providers.finext]\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("the README has a [providers.finext] example");
        std::env::set_var("FINEXT_SECRET", "s");
        std::env::set_var("FINEXT_AUTHORIZATION", "a");
        let c: FinextConfig = toml::from_str(section).expect("the README example parses");
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.timeout, Duration::from_secs(300));
    }

    #[test]
    fn unknown_keys_and_inline_secrets_are_refused() {
        let typo = toml::from_str::<FinextConfig>(
            r#"
            base_url = "https://api.example"
            api_key = "k"
            secret = { env = "X" }
            authorization = { env = "Y" }
            date_fromat = "YYYY-DD-MM"
            "#,
        );
        assert!(typo.is_err());
        let inline = toml::from_str::<FinextConfig>(
            r#"
            base_url = "https://api.example"
            api_key = "k"
            secret = "plain-text-secret"
            authorization = { env = "Y" }
            "#,
        );
        assert!(inline.is_err());
    }

    #[test]
    fn extension_maps_must_be_exact_types_and_plain_extensions() {
        let ok = checked_extension_map(&default_extension_map()).expect("default is valid");
        assert_eq!(ok.len(), 3);
        let mut m = BTreeMap::new();
        m.insert("image/*".to_string(), "img".to_string());
        assert!(matches!(
            checked_extension_map(&m),
            Err(FinextConfigError::ExtensionKey(_))
        ));
        let mut m = BTreeMap::new();
        m.insert("image/jpeg".to_string(), ".jpg".to_string());
        assert!(matches!(
            checked_extension_map(&m),
            Err(FinextConfigError::ExtensionValue { .. })
        ));
        assert!(matches!(
            checked_extension_map(&BTreeMap::new()),
            Err(FinextConfigError::NoExtensions)
        ));
    }
}
