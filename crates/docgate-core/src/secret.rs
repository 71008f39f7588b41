//! Secrets: loaded from the environment or a file, never printed.
//!
//! A configuration file names *where* a secret is (`{ env = "FINEXT_SECRET" }` or
//! `{ file = "/run/secrets/finext" }`), never the secret itself, so config files can be
//! committed and command lines stay clean. [`Secret`]'s `Debug` and `Display` print `***`,
//! so a secret cannot leak through a log line or an error message by accident.
//!
//! A secret file must be private to its owner (mode `0600` or stricter), like an ssh key: a
//! file others can read has already leaked, and failing loudly is how the operator hears of it.
//!
//! Reading a configuration names every missing secret at once, not one per start: inside
//! [`collecting`], a secret that cannot be loaded does not abort deserialization. It becomes
//! an unresolved [`Secret`] and the failure is recorded; [`issues`] turns the failures into
//! configuration issues at the places the sources are written.

use std::{cell::RefCell, fmt, io::Read, path::PathBuf};

use serde::{
    de::{self, MapAccess, Visitor},
    Deserialize, Deserializer,
};

use crate::registration::ConfigIssues;

/// A secret file larger than this is certainly not one (and is not read whole).
pub const MAX_SECRET_FILE: u64 = 64 * 1024;

/// How a secret is written in a configuration file (part of the error messages).
const SYNTAX: &str = "write `{ env = \"VAR\" }` (an environment variable holding it) or \
                      `{ file = \"/path\" }` (a file holding it, mode 0600)";

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum SecretSource {
    Env { env: String },
    File { file: PathBuf },
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    #[error("environment variable {0} is not valid UTF-8")]
    NotUnicode(String),
    #[error("cannot read secret file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secret file {0} is not a regular file")]
    NotAFile(PathBuf),
    #[error("secret file {0} is larger than {MAX_SECRET_FILE} bytes")]
    TooLarge(PathBuf),
    #[error("secret file {path} is accessible by group or others (mode {mode:04o}): chmod 600 it")]
    Exposed { path: PathBuf, mode: u32 },
    #[error("secret from {0} is empty")]
    Empty(String),
}

impl SecretSource {
    /// Read the secret now. Files are trimmed of surrounding whitespace (trailing newlines).
    pub fn load(&self) -> Result<Secret, SecretError> {
        let (value, origin) = match self {
            SecretSource::Env { env } => {
                let value = std::env::var(env).map_err(|e| match e {
                    std::env::VarError::NotPresent => SecretError::MissingEnv(env.clone()),
                    std::env::VarError::NotUnicode(_) => SecretError::NotUnicode(env.clone()),
                })?;
                (value, format!("${env}"))
            }
            SecretSource::File { file } => (read_private_file(file)?, file.display().to_string()),
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(SecretError::Empty(origin));
        }
        Ok(Secret::new(value))
    }
}

/// The content of a regular, owner-only file of at most [`MAX_SECRET_FILE`] bytes.
fn read_private_file(path: &std::path::Path) -> Result<String, SecretError> {
    let io = |source| SecretError::File {
        path: path.to_owned(),
        source,
    };
    // Stat the path before opening it: opening a FIFO would block.
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(SecretError::NotAFile(path.to_owned()));
    }
    let file = std::fs::File::open(path).map_err(io)?;
    // The mode checked is the opened file's, not whatever the path points at later.
    let meta = file.metadata().map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(SecretError::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
    }
    if meta.len() > MAX_SECRET_FILE {
        return Err(SecretError::TooLarge(path.to_owned()));
    }
    let mut text = String::new();
    file.take(MAX_SECRET_FILE + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_SECRET_FILE {
        return Err(SecretError::TooLarge(path.to_owned()));
    }
    Ok(text)
}

/// The written form of a secret source. A plain value where a source is expected is refused
/// with advice, and never echoed: it is probably the secret itself.
impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SecretSource, D::Error> {
        d.deserialize_any(SourceVisitor)
    }
}

struct SourceVisitor;

impl SourceVisitor {
    fn inline<E: de::Error>(self) -> Result<SecretSource, E> {
        Err(E::custom(format_args!(
            "a secret is never written in the configuration itself: {SYNTAX}"
        )))
    }
}

impl<'de> Visitor<'de> for SourceVisitor {
    type Value = SecretSource;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`{ env = \"VAR\" }` or `{ file = \"/path\" }`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretSource, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            let source = match key.as_str() {
                "env" => SecretSource::Env {
                    env: map.next_value()?,
                },
                "file" => SecretSource::File {
                    file: map.next_value()?,
                },
                // The key is not echoed either: a mistyped table may hold the secret as a key.
                _ => {
                    return Err(de::Error::custom(format_args!(
                        "a secret source has one key, `env` or `file`: {SYNTAX}"
                    )))
                }
            };
            if found.replace(source).is_some() {
                return Err(de::Error::custom(
                    "a secret source has either `env` or `file`, not both",
                ));
            }
        }
        found.ok_or_else(|| de::Error::custom(format_args!("an empty secret source: {SYNTAX}")))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<SecretSource, E> {
        self.inline()
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<SecretSource, E> {
        self.inline()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<SecretSource, E> {
        self.inline()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<SecretSource, E> {
        self.inline()
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<SecretSource, E> {
        self.inline()
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<SecretSource, E> {
        self.inline()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<SecretSource, E> {
        self.inline()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<SecretSource, E> {
        self.inline()
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<SecretSource, A::Error> {
        self.inline()
    }
}

/// A loaded secret value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(State);

#[derive(Clone, PartialEq, Eq)]
enum State {
    Loaded(String),
    /// Could not be loaded while [`collecting`]; the failure went to the collector.
    Unresolved(SecretSource),
}

impl Secret {
    /// Wrap a value produced in code (sandbox credentials, generated keys).
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(State::Loaded(value.into()))
    }

    /// The value, for signing. Never log it. An unresolved secret exposes the empty string;
    /// a configuration holding one is reported as broken and never put to use.
    pub fn expose(&self) -> &str {
        match &self.0 {
            State::Loaded(value) => value,
            State::Unresolved(_) => "",
        }
    }

    /// `false` for a secret that failed to load while [`collecting`].
    pub fn is_resolved(&self) -> bool {
        matches!(self.0, State::Loaded(_))
    }

    /// Where an unresolved secret should have come from.
    pub fn unresolved_source(&self) -> Option<&SecretSource> {
        match &self.0 {
            State::Loaded(_) => None,
            State::Unresolved(source) => Some(source),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            State::Loaded(_) => f.write_str("Secret(***)"),
            State::Unresolved(_) => f.write_str("Secret(unresolved)"),
        }
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// In config files a `Secret` is written as its source and loaded while the file is read.
/// Inside [`collecting`] a failure is recorded instead of ending the deserialization.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        let source = SecretSource::deserialize(d)?;
        match source.load() {
            Ok(secret) => Ok(secret),
            Err(error) => defer(source, error).map_err(de::Error::custom),
        }
    }
}

/// A secret that could not be loaded inside [`collecting`].
#[derive(Debug)]
pub struct SecretFailure {
    pub source: SecretSource,
    pub error: SecretError,
}

thread_local! {
    /// The failures of the innermost [`collecting`] on this thread (deserialization is
    /// synchronous, so a thread-local scope covers exactly the closure's deserializations).
    static COLLECTOR: RefCell<Option<Vec<SecretFailure>>> = const { RefCell::new(None) };
}

/// Run `f` (a deserialization) so that secrets failing to load become unresolved instead of
/// errors; returns `f`'s result and every failure, in the order they happened.
pub fn collecting<T>(f: impl FnOnce() -> T) -> (T, Vec<SecretFailure>) {
    /// Restores the enclosing scope's collector, also when `f` panics.
    struct Scope(Option<Vec<SecretFailure>>);
    impl Drop for Scope {
        fn drop(&mut self) {
            let outer = self.0.take();
            COLLECTOR.with(|c| *c.borrow_mut() = outer);
        }
    }
    let outer = COLLECTOR.with(|c| c.borrow_mut().replace(Vec::new()));
    let scope = Scope(outer);
    let value = f();
    let failures = COLLECTOR
        .with(|c| c.borrow_mut().take())
        .unwrap_or_default();
    drop(scope);
    (value, failures)
}

/// Record `error` in the active collector and stand in an unresolved secret; without a
/// collector, the error stands.
fn defer(source: SecretSource, error: SecretError) -> Result<Secret, SecretError> {
    COLLECTOR.with(|c| match c.borrow_mut().as_mut() {
        Some(failures) => {
            failures.push(SecretFailure {
                source: source.clone(),
                error,
            });
            Ok(Secret(State::Unresolved(source)))
        }
        None => Err(error),
    })
}

/// The dotted paths under `root` where `source` is written (`tenants[1].api_key`). One
/// source may be named in several places; each of them is broken.
pub fn locate(root: &toml::Value, source: &SecretSource) -> Vec<String> {
    let mut found = Vec::new();
    walk(root, source, String::new(), &mut found);
    found
}

fn walk(value: &toml::Value, source: &SecretSource, path: String, found: &mut Vec<String>) {
    match value {
        toml::Value::Table(table) => {
            let written = SecretSource::deserialize(value.clone()).ok();
            if written.as_ref() == Some(source) {
                found.push(path);
                return;
            }
            for (key, child) in table {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                walk(child, source, child_path, found);
            }
        }
        toml::Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                walk(child, source, format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

/// One issue per place each failed source is written in `root`.
pub fn issues(root: &toml::Value, failures: Vec<SecretFailure>) -> ConfigIssues {
    let mut issues = ConfigIssues::default();
    let mut seen: Vec<SecretSource> = Vec::new();
    for failure in failures {
        if seen.contains(&failure.source) {
            continue;
        }
        let paths = locate(root, &failure.source);
        if paths.is_empty() {
            issues.push("", &failure.error);
        }
        for path in paths {
            issues.push(path, &failure.error);
        }
        seen.push(failure.source);
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn write_private(path: &std::path::Path, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).expect("write");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[cfg(unix)]
    #[test]
    fn loads_from_a_file_trimmed_and_refuses_empty_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        write_private(&path, "  abc\n");
        let src = SecretSource::File { file: path.clone() };
        assert_eq!(src.load().expect("loads").expose(), "abc");
        write_private(&path, "\n");
        assert!(matches!(src.load(), Err(SecretError::Empty(_))));
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_file_others_can_access_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        write_private(&path, "abc");
        let src = SecretSource::File { file: path.clone() };
        for mode in [0o644, 0o640, 0o604, 0o620, 0o601] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let err = src.load().expect_err("exposed");
            assert!(
                matches!(err, SecretError::Exposed { mode: m, .. } if m == mode),
                "{mode:o}: {err}"
            );
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        assert_eq!(src.load().expect("0400 is private").expose(), "abc");
    }

    #[cfg(unix)]
    #[test]
    fn directories_and_oversized_files_are_not_secrets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let not_a_file = SecretSource::File {
            file: dir.path().to_owned(),
        };
        assert!(matches!(not_a_file.load(), Err(SecretError::NotAFile(_))));
        let big = dir.path().join("big");
        write_private(&big, &"x".repeat(MAX_SECRET_FILE as usize + 1));
        let src = SecretSource::File { file: big };
        assert!(matches!(src.load(), Err(SecretError::TooLarge(_))));
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
        assert!(serde_json::from_str::<C>(r#"{"key": {"env": "X", "file": "/x"}}"#).is_err());
        assert!(serde_json::from_str::<C>(r#"{"key": {}}"#).is_err());
    }

    #[test]
    fn an_inline_secret_is_refused_with_the_syntax_and_never_echoed() {
        for inline in [
            r#"key = "s3cr3t-inline-value""#,
            "key = 982451653",
            "key = [\"s3cr3t-inline-value\"]",
            r#"key = { s3cr3t-inline-value = "x" }"#,
        ] {
            let err = toml::from_str::<toml::Table>(inline)
                .expect("valid toml")
                .get("key")
                .cloned()
                .map(Secret::deserialize)
                .expect("key")
                .expect_err("inline");
            let message = err.message();
            assert!(message.contains("{ env = \"VAR\" }"), "{message}");
            assert!(message.contains("{ file = \"/path\" }"), "{message}");
            assert!(
                !message.contains("s3cr3t") && !message.contains("982451653"),
                "{message}"
            );
        }
    }

    #[test]
    fn collecting_defers_every_failure_and_keeps_going() {
        #[derive(Deserialize)]
        struct C {
            a: Secret,
            b: Option<Secret>,
            c: Secret,
        }
        std::env::set_var("DOCGATE_TEST_COLLECT_SET", "value");
        let value: toml::Value = toml::from_str(
            r#"
            a = { env = "DOCGATE_TEST_COLLECT_UNSET_A" }
            b = { env = "DOCGATE_TEST_COLLECT_SET" }
            [nested]
            c = { env = "DOCGATE_TEST_COLLECT_UNSET_C" }
            "#,
        )
        .expect("toml");
        let flat: toml::Value = toml::from_str(
            r#"
            a = { env = "DOCGATE_TEST_COLLECT_UNSET_A" }
            b = { env = "DOCGATE_TEST_COLLECT_SET" }
            c = { env = "DOCGATE_TEST_COLLECT_UNSET_C" }
            "#,
        )
        .expect("toml");
        let (parsed, failures) = collecting(|| C::deserialize(flat.clone()));
        let parsed = parsed.expect("deserialization succeeds with unresolved secrets");
        assert!(!parsed.a.is_resolved() && !parsed.c.is_resolved());
        assert_eq!(parsed.b.as_ref().map(Secret::expose), Some("value"));
        assert_eq!(format!("{:?}", parsed.a), "Secret(unresolved)");
        assert_eq!(failures.len(), 2);
        let issues = issues(&flat, failures);
        assert_eq!(
            issues.to_string(),
            "a: environment variable DOCGATE_TEST_COLLECT_UNSET_A is not set\n\
             c: environment variable DOCGATE_TEST_COLLECT_UNSET_C is not set"
        );
        // Outside a collector the first failure is an error, as before.
        assert!(C::deserialize(flat).is_err());
        // Paths go through tables and arrays.
        let source = SecretSource::Env {
            env: "DOCGATE_TEST_COLLECT_UNSET_C".into(),
        };
        assert_eq!(locate(&value, &source), vec!["nested.c".to_owned()]);
        let array: toml::Value =
            toml::from_str("[[t]]\nk = 1\n[[t]]\nk = { env = \"DOCGATE_TEST_COLLECT_UNSET_C\" }")
                .expect("toml");
        assert_eq!(locate(&array, &source), vec!["t[1].k".to_owned()]);
    }

    #[test]
    fn nested_collectors_keep_their_own_failures() {
        let missing = |name: &str| {
            toml::Value::try_from(SecretSource::Env { env: name.into() }).expect("value")
        };
        let outer = missing("DOCGATE_TEST_NESTED_OUTER");
        let inner = missing("DOCGATE_TEST_NESTED_INNER");
        let ((first, inner_failures), outer_failures) = collecting(|| {
            let first = Secret::deserialize(outer.clone()).expect("deferred");
            (
                first,
                collecting(|| Secret::deserialize(inner.clone()).expect("deferred")).1,
            )
        });
        assert!(!first.is_resolved());
        assert_eq!(inner_failures.len(), 1);
        assert_eq!(outer_failures.len(), 1);
        assert!(
            matches!(&outer_failures[0].error, SecretError::MissingEnv(v) if v == "DOCGATE_TEST_NESTED_OUTER")
        );
        assert!(
            Secret::deserialize(outer).is_err(),
            "no collector left behind"
        );
    }
}
