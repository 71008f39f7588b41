//! `[providers.sila]`: how docgate reaches Sila and with which credentials.
//!
//! Secrets never appear in the file itself: the app key is a [`Secret`] (`{ env = "…" }` or
//! `{ file = "…" }`), user keys live in a separate keystore file that must be private to its
//! owner, and an OAuth2 token is named by its source so a rotated token file is picked up
//! without a restart. Every key has a default except the ones that identify the app.

use std::{path::PathBuf, time::Duration};

use docgate_core::{secret::SecretError, Secret, SecretSource};
use serde::Deserialize;

use crate::{credentials::KeystoreError, doctypes, signing::SigningError};

/// How requests are authenticated. Sila calls ECDSA "legacy"; new apps get OAuth2.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// `authsignature` (app key) + `usersignature` (user key) over the `data` bytes.
    #[default]
    Ecdsa,
    /// `Authorization: Bearer <token>`; no signatures.
    #[serde(rename = "oauth2")]
    OAuth2,
}

/// The provider's configuration section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilaConfig {
    /// Sila's API origin, e.g. `https://sandbox.silamoney.com` (production:
    /// `https://api.silamoney.com`). `/0.2/documents` is appended.
    pub base_url: String,
    /// The app's handle as registered with Sila (`header.app_handle`).
    pub app_handle: String,
    /// `"ecdsa"` (default) or `"oauth2"`.
    #[serde(default)]
    pub auth: AuthMode,
    /// ECDSA: the app's private key (64 hex characters, optional `0x`).
    #[serde(default)]
    pub app_private_key: Option<Secret>,
    /// ECDSA: a JSON file `{ "<user_handle>": "<private key hex>", … }` readable by its owner
    /// only (mode 0600 or stricter). Re-read when it changes, so users can be added live.
    #[serde(default)]
    pub user_keystore: Option<PathBuf>,
    /// OAuth2: where the access token is (`{ env = "…" }` or `{ file = "…" }`). A file is
    /// re-read whenever its modification time changes.
    #[serde(default)]
    pub oauth_token: Option<SecretSource>,
    /// Accepted `document_type` values; defaults to the documented list.
    #[serde(default = "doctypes::default_names")]
    pub document_types: Vec<String>,
    /// The largest request body docgate sends (multipart framing and metadata included).
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: u64,
    /// The most documents in one upload (one multi-document request).
    #[serde(default = "default_max_documents")]
    pub max_documents: usize,
    /// How long establishing the connection may take: a duration such as `"10s"`, `"500ms"`,
    /// `"5m"`, or a number of seconds. Default 10 s; zero means 1 s.
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "docgate_core::duration::deserialize"
    )]
    pub connect_timeout: Duration,
    /// How long the whole request may take, upload included. Default 300 s; zero means 1 s.
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "docgate_core::duration::deserialize"
    )]
    pub request_timeout: Duration,
}

fn default_max_request_bytes() -> u64 {
    doctypes::MAX_REQUEST_BYTES
}

fn default_max_documents() -> usize {
    10
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(300)
}

impl SilaConfig {
    /// A minimal ECDSA configuration (defaults for everything else).
    pub fn ecdsa(
        base_url: impl Into<String>,
        app_handle: impl Into<String>,
        app_private_key: Secret,
        user_keystore: impl Into<PathBuf>,
    ) -> SilaConfig {
        SilaConfig {
            base_url: base_url.into(),
            app_handle: app_handle.into(),
            auth: AuthMode::Ecdsa,
            app_private_key: Some(app_private_key),
            user_keystore: Some(user_keystore.into()),
            oauth_token: None,
            document_types: doctypes::default_names(),
            max_request_bytes: default_max_request_bytes(),
            max_documents: default_max_documents(),
            connect_timeout: default_connect_timeout(),
            request_timeout: default_request_timeout(),
        }
    }

    /// A minimal OAuth2 configuration.
    pub fn oauth2(
        base_url: impl Into<String>,
        app_handle: impl Into<String>,
        token: SecretSource,
    ) -> SilaConfig {
        SilaConfig {
            base_url: base_url.into(),
            app_handle: app_handle.into(),
            auth: AuthMode::OAuth2,
            app_private_key: None,
            user_keystore: None,
            oauth_token: Some(token),
            document_types: doctypes::default_names(),
            max_request_bytes: default_max_request_bytes(),
            max_documents: default_max_documents(),
            connect_timeout: default_connect_timeout(),
            request_timeout: default_request_timeout(),
        }
    }
}

/// Why a configuration cannot be used. Messages name the key, never a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum SilaConfigError {
    #[error("base_url `{0}` is not an http(s) URL")]
    BaseUrl(String),
    #[error("app_handle must not be empty")]
    AppHandle,
    #[error("auth = \"{mode}\" needs `{key}`")]
    Missing {
        mode: &'static str,
        key: &'static str,
    },
    #[error("`{key}` has no effect with auth = \"{mode}\"; remove it (or change auth)")]
    Conflicting {
        mode: &'static str,
        key: &'static str,
    },
    #[error("app_private_key: {0}")]
    AppKey(SigningError),
    #[error("user_keystore: {0}")]
    Keystore(#[from] KeystoreError),
    #[error("oauth_token: {0}")]
    Token(#[from] SecretError),
    #[error("document_types must list at least one type")]
    NoDocumentTypes,
    #[error("max_request_bytes and max_documents must be at least 1")]
    Limits,
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_toml_section_with_defaults_deserialises() {
        let cfg: SilaConfig = serde_json::from_value(serde_json::json!({
            "base_url": "https://sandbox.silamoney.com",
            "app_handle": "my_app.silamoney.eth",
            "user_keystore": "/etc/docgate/sila-users.json",
        }))
        .expect("parses");
        assert_eq!(cfg.auth, AuthMode::Ecdsa);
        assert_eq!(cfg.max_request_bytes, 20_000_000);
        assert_eq!(cfg.document_types.len(), doctypes::DOCUMENT_TYPES.len());
        assert_eq!(cfg.connect_timeout, Duration::from_secs(10));
        assert_eq!(cfg.request_timeout, Duration::from_secs(300));
    }

    #[test]
    fn timeouts_are_durations() {
        let cfg: SilaConfig = serde_json::from_value(serde_json::json!({
            "base_url": "https://sandbox.silamoney.com",
            "app_handle": "my_app.silamoney.eth",
            "connect_timeout": "500ms",
            "request_timeout": "5m",
        }))
        .expect("parses");
        assert_eq!(cfg.connect_timeout, Duration::from_millis(500));
        assert_eq!(cfg.request_timeout, Duration::from_secs(300));
        let seconds: SilaConfig = serde_json::from_value(serde_json::json!({
            "base_url": "x", "app_handle": "a", "request_timeout": 90,
        }))
        .expect("whole seconds parse");
        assert_eq!(seconds.request_timeout, Duration::from_secs(90));
        for (bad, why) in [
            (
                serde_json::json!({"base_url": "x", "app_handle": "a", "request_timeout": "soon"}),
                "not a duration",
            ),
            (
                serde_json::json!({"base_url": "x", "app_handle": "a", "request_timeout_secs": 300}),
                "unknown field",
            ),
        ] {
            let e = serde_json::from_value::<SilaConfig>(bad).expect_err(why);
            assert!(e.to_string().contains(why), "{e}");
        }
    }

    #[test]
    fn unknown_keys_and_modes_are_refused() {
        let unknown = serde_json::from_value::<SilaConfig>(serde_json::json!({
            "base_url": "x", "app_handle": "a", "app_key": "oops",
        }));
        assert!(unknown.is_err());
        let mode = serde_json::from_value::<SilaConfig>(serde_json::json!({
            "base_url": "x", "app_handle": "a", "auth": "hmac",
        }));
        assert!(mode.is_err());
        let oauth = serde_json::from_value::<SilaConfig>(serde_json::json!({
            "base_url": "x", "app_handle": "a", "auth": "oauth2",
            "oauth_token": {"env": "SILA_TOKEN"},
        }))
        .expect("oauth2 parses");
        assert_eq!(oauth.auth, AuthMode::OAuth2);
    }
}
