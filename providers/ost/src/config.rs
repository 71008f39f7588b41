//! `[providers.ost]` configuration.
//!
//! Secrets (`api_secret`, `webhook_secret`) are written as their source
//! (`{ env = "VAR" }` / `{ file = "/path" }`) and loaded while the file is read; they never
//! appear in the file itself, in logs or in errors.

use std::time::Duration;

use docgate_core::{registration::SectionChecks, Secret};
use serde::Deserialize;

/// The spec's POST policy: `["content-length-range", 204800, 20971520]`.
pub const DEFAULT_MIN_DOCUMENT_BYTES: u64 = 200 * 1024;
pub const DEFAULT_MAX_DOCUMENT_BYTES: u64 = 20 * 1024 * 1024;

/// Configuration of the OST client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OstConfig {
    /// Where the API lives, without `/api/v2` (e.g. `https://kyc.ost.com`). The signed endpoint
    /// is always `/api/v2/...`, whatever path this URL has.
    pub base_url: String,
    /// The API key from the OST KYC dashboard (sent in clear with every request).
    pub api_key: String,
    /// The API secret that signs every request.
    pub api_secret: Secret,
    /// Time allowed for one OST API call (connect + answer): a duration such as `"15s"`,
    /// `"500ms"`, `"5m"`, or a number of seconds. Default 15 s.
    #[serde(
        default = "default_api_timeout",
        deserialize_with = "docgate_core::duration::deserialize"
    )]
    pub api_timeout: Duration,
    /// Time allowed to connect to OST or S3. Default 10 s.
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "docgate_core::duration::deserialize"
    )]
    pub connect_timeout: Duration,
    /// Time allowed for one document's PUT to S3. Default 300 s.
    #[serde(
        default = "default_upload_timeout",
        deserialize_with = "docgate_core::duration::deserialize"
    )]
    pub upload_timeout: Duration,
    /// Smallest document accepted (the POST policy's lower bound).
    #[serde(default = "default_min_document_bytes")]
    pub min_document_bytes: u64,
    /// Largest document accepted (the POST policy's upper bound).
    #[serde(default = "default_max_document_bytes")]
    pub max_document_bytes: u64,
    /// The secret of the webhook configured in OST's dashboard (verifies incoming events).
    #[serde(default)]
    pub webhook_secret: Option<Secret>,
    /// The full public URL OST posts events to, exactly as entered in OST's dashboard
    /// (e.g. `https://docgate.example.com/v1/webhooks/ost`): it is part of what OST signs.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Events whose `request_timestamp` is older than this (or as far in the future) are
    /// refused; checked in whole seconds. Default 300 s.
    #[serde(
        default = "default_webhook_max_age",
        deserialize_with = "docgate_core::duration::deserialize"
    )]
    pub webhook_max_age: Duration,
}

fn default_api_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_upload_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_min_document_bytes() -> u64 {
    DEFAULT_MIN_DOCUMENT_BYTES
}
fn default_max_document_bytes() -> u64 {
    DEFAULT_MAX_DOCUMENT_BYTES
}
fn default_webhook_max_age() -> Duration {
    Duration::from_secs(300)
}

impl OstConfig {
    /// A config with every optional key at its default.
    pub fn new(
        base_url: impl Into<String>,
        api_key: impl Into<String>,
        api_secret: Secret,
    ) -> Self {
        OstConfig {
            base_url: base_url.into(),
            api_key: api_key.into(),
            api_secret,
            api_timeout: default_api_timeout(),
            connect_timeout: default_connect_timeout(),
            upload_timeout: default_upload_timeout(),
            min_document_bytes: default_min_document_bytes(),
            max_document_bytes: default_max_document_bytes(),
            webhook_secret: None,
            webhook_url: None,
            webhook_max_age: default_webhook_max_age(),
        }
    }

    pub fn api_timeout(&self) -> Duration {
        self.api_timeout
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    pub fn upload_timeout(&self) -> Duration {
        self.upload_timeout
    }

    pub fn webhook_max_age(&self) -> Duration {
        self.webhook_max_age
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum OstConfigError {
    #[error("base_url `{0}` is not an http(s) URL")]
    BaseUrl(String),
    #[error("api_key is empty")]
    EmptyApiKey,
    #[error("{0} must be greater than zero")]
    ZeroTimeout(&'static str),
    #[error("min_document_bytes ({min}) must not exceed max_document_bytes ({max})")]
    SizeBounds { min: u64, max: u64 },
    #[error("webhook_url `{0}` is not an http(s) URL")]
    WebhookUrl(String),
    #[error("webhook_secret and webhook_url must be configured together")]
    WebhookHalfConfigured,
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

impl OstConfig {
    pub(crate) fn validate(&self) -> Result<(), OstConfigError> {
        match SectionChecks::problems(self).into_iter().next() {
            Some((_, first)) => Err(first),
            None => Ok(()),
        }
    }
}

/// Every problem of this configuration, each with the key it is about (so that one run of
/// `docgate check` names them all).
impl SectionChecks for OstConfig {
    type Problem = OstConfigError;

    fn problems(&self) -> Vec<(&'static str, OstConfigError)> {
        let is_http = |u: &str| {
            url::Url::parse(u)
                .map(|p| matches!(p.scheme(), "http" | "https") && p.host().is_some())
                .unwrap_or(false)
        };
        let mut found = Vec::new();
        if !is_http(&self.base_url) {
            found.push((
                "base_url",
                OstConfigError::BaseUrl(docgate_core::upstream::shown_url(&self.base_url)),
            ));
        }
        if self.api_key.trim().is_empty() {
            found.push(("api_key", OstConfigError::EmptyApiKey));
        }
        for (name, v) in [
            ("api_timeout", self.api_timeout),
            ("connect_timeout", self.connect_timeout),
            ("upload_timeout", self.upload_timeout),
        ] {
            if v.is_zero() {
                found.push((name, OstConfigError::ZeroTimeout(name)));
            }
        }
        if self.min_document_bytes > self.max_document_bytes {
            found.push((
                "min_document_bytes",
                OstConfigError::SizeBounds {
                    min: self.min_document_bytes,
                    max: self.max_document_bytes,
                },
            ));
        }
        match (&self.webhook_secret, &self.webhook_url) {
            (Some(_), Some(url)) if !is_http(url) => found.push((
                "webhook_url",
                OstConfigError::WebhookUrl(docgate_core::upstream::shown_url(url)),
            )),
            (Some(_), None) | (None, Some(_)) => {
                found.push(("webhook_url", OstConfigError::WebhookHalfConfigured))
            }
            _ => {}
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_toml_section_fills_in_defaults_and_unknown_keys_are_refused() {
        std::env::set_var("DOCGATE_OST_TEST_SECRET", "s3cr3t");
        let cfg: OstConfig = toml::from_str(
            r#"
            base_url = "https://kyc.ost.com"
            api_key = "a0de4b4f2b1c4d5e"
            api_secret = { env = "DOCGATE_OST_TEST_SECRET" }
            "#,
        )
        .expect("parses");
        assert_eq!(cfg.api_secret.expose(), "s3cr3t");
        assert_eq!(cfg.min_document_bytes, 204_800);
        assert_eq!(cfg.max_document_bytes, 20_971_520);
        assert_eq!(cfg.api_timeout(), Duration::from_secs(15));
        assert_eq!(cfg.connect_timeout(), Duration::from_secs(10));
        assert_eq!(cfg.upload_timeout(), Duration::from_secs(300));
        assert_eq!(cfg.webhook_max_age(), Duration::from_secs(300));
        assert!(cfg.validate().is_ok());
        assert!(!format!("{cfg:?}").contains("s3cr3t"));

        let unknown = toml::from_str::<OstConfig>(
            r#"
            base_url = "https://kyc.ost.com"
            api_key = "k"
            api_secret = { env = "DOCGATE_OST_TEST_SECRET" }
            api_sercet = "typo"
            "#,
        );
        assert!(unknown.is_err());
    }

    #[test]
    fn durations_are_written_with_units_or_as_whole_seconds() {
        std::env::set_var("DOCGATE_OST_TEST_SECRET2", "s");
        let section = |durations: &str| {
            toml::from_str::<OstConfig>(&format!(
                r#"
                base_url = "https://kyc.ost.com"
                api_key = "k"
                api_secret = {{ env = "DOCGATE_OST_TEST_SECRET2" }}
                {durations}
                "#
            ))
        };
        let cfg = section(
            r#"
            api_timeout = "500ms"
            connect_timeout = "2s"
            upload_timeout = "5m"
            webhook_max_age = 60
            "#,
        )
        .expect("parses");
        assert_eq!(cfg.api_timeout(), Duration::from_millis(500));
        assert_eq!(cfg.connect_timeout(), Duration::from_secs(2));
        assert_eq!(cfg.upload_timeout(), Duration::from_secs(300));
        assert_eq!(cfg.webhook_max_age(), Duration::from_secs(60));
        let fast = section(r#"api_timeout = "fast""#).expect_err("not a duration");
        assert!(fast.to_string().contains("not a duration"), "{fast}");
        let old = section("api_timeout_secs = 15").expect_err("the old key");
        assert!(old.to_string().contains("unknown field"), "{old}");
        let zero = section(r#"upload_timeout = "0s""#).expect("parses");
        assert_eq!(
            zero.validate().expect_err("zero").to_string(),
            "upload_timeout must be greater than zero"
        );
    }

    #[test]
    fn the_readme_example_is_a_valid_configuration() {
        let readme = include_str!("../README.md");
        let section = readme
            .split("```toml\n[providers.ost]\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("the README has a [providers.ost] example");
        std::env::set_var("OST_API_SECRET", "s");
        std::env::set_var("OST_WEBHOOK_SECRET", "w");
        let cfg: OstConfig = toml::from_str(section).expect("the README example parses");
        assert!(cfg.validate().is_ok());
        assert_eq!(cfg.api_timeout(), Duration::from_secs(15));
        assert_eq!(cfg.upload_timeout(), Duration::from_secs(300));
        assert_eq!(cfg.webhook_max_age(), Duration::from_secs(300));
    }

    #[test]
    fn impossible_settings_are_named() {
        let mut cfg = OstConfig::new("ftp://x", "k", Secret::new("s"));
        assert!(matches!(cfg.validate(), Err(OstConfigError::BaseUrl(_))));
        cfg.base_url = "http://127.0.0.1:1".into();
        cfg.min_document_bytes = 10;
        cfg.max_document_bytes = 5;
        assert!(matches!(
            cfg.validate(),
            Err(OstConfigError::SizeBounds { .. })
        ));
        cfg.max_document_bytes = 50;
        cfg.webhook_secret = Some(Secret::new("w"));
        assert!(matches!(
            cfg.validate(),
            Err(OstConfigError::WebhookHalfConfigured)
        ));
    }

    // `docgate check` named only the first of them.
    #[test]
    fn regression_every_problem_is_named_with_its_key() {
        let mut cfg = OstConfig::new("ftp://user:hunter2@x", " ", Secret::new("s"));
        cfg.min_document_bytes = 10;
        cfg.max_document_bytes = 5;
        cfg.webhook_secret = Some(Secret::new("w"));
        let problems = cfg.problems();
        let keys: Vec<&str> = problems.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            vec!["base_url", "api_key", "min_document_bytes", "webhook_url"]
        );
        let shown: String = problems.iter().map(|(_, p)| p.to_string()).collect();
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
