//! Secrets: loaded from the environment or a file, never printed.
//!
//! A configuration file names *where* a secret is (`{ env = "FINEXT_SECRET" }` or
//! `{ file = "/run/secrets/finext" }`), never the secret itself, so config files can be
//! committed and command lines stay clean. [`Secret`]'s `Debug` and `Display` print `***`,
//! so a secret cannot leak through a log line or an error message by accident.

use std::{fmt, path::PathBuf};

use serde::{Deserialize, Deserializer};

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum SecretSource {
    Env { env: String },
    File { file: PathBuf },
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    #[error("cannot read secret file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secret from {0} is empty")]
    Empty(String),
}

impl SecretSource {
    /// Read the secret now. Files are trimmed of surrounding whitespace (trailing newlines).
    pub fn load(&self) -> Result<Secret, SecretError> {
        let (value, origin) = match self {
            SecretSource::Env { env } => (
                std::env::var(env).map_err(|_| SecretError::MissingEnv(env.clone()))?,
                format!("${env}"),
            ),
            SecretSource::File { file } => (
                std::fs::read_to_string(file).map_err(|source| SecretError::File {
                    path: file.clone(),
                    source,
                })?,
                file.display().to_string(),
            ),
        };
        let value = value.trim().to_owned();
        if value.is_empty() {
            return Err(SecretError::Empty(origin));
        }
        Ok(Secret(value))
    }
}

/// A loaded secret value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value produced in code (sandbox credentials, generated keys).
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for signing. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// In config files a `Secret` is written as its source and loaded while the file is read.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        let source = SecretSource::deserialize(d)?;
        source.load().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn loads_from_a_file_trimmed_and_refuses_empty_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        std::fs::write(&path, "  abc\n").expect("write");
        let src = SecretSource::File { file: path.clone() };
        assert_eq!(src.load().expect("loads").expose(), "abc");
        std::fs::write(&path, "\n").expect("write");
        assert!(matches!(src.load(), Err(SecretError::Empty(_))));
    }

    #[test]
    fn a_missing_env_var_names_the_variable_not_a_value() {
        let src = SecretSource::Env {
            env: "DOCGATE_TEST_SURELY_UNSET_VAR".into(),
        };
        let err = src.load().expect_err("unset").to_string();
        assert!(err.contains("DOCGATE_TEST_SURELY_UNSET_VAR"));
    }

    #[test]
    fn config_syntax_is_env_or_file() {
        #[derive(Deserialize)]
        struct C {
            #[allow(dead_code)]
            key: SecretSource,
        }
        assert!(serde_json::from_str::<C>(r#"{"key": {"env": "X"}}"#).is_ok());
        assert!(serde_json::from_str::<C>(r#"{"key": {"file": "/x"}}"#).is_ok());
        assert!(serde_json::from_str::<C>(r#"{"key": "inline-value"}"#).is_err());
    }
}
