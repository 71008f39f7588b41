//! How a provider plugs into the gateway: one [`Registration`] per provider crate.
//!
//! The gateway knows providers only through this table entry. A provider crate exports one
//! `static REGISTRATION: Registration` that says its name, how to build it from its
//! `[providers.<name>]` configuration section, which per-tenant options it understands, and —
//! when its `emulator` cargo feature is on — how to start its emulator. The server, the
//! sandbox, `docgate emulate` and `GET /v1/providers` all iterate the same table
//! (`docgate_providers::ALL`), so adding a provider is its crate plus one line there.
//!
//! Provider-specific HTTP routes (OST's presigned posts, KYC submissions, webhooks) come from
//! [`Provider::routes`](crate::Provider::routes): the provider mounts them itself, reaching
//! the gateway's tenants and ledger only through [`GatewayHost`](crate::host::GatewayHost).

use std::{ffi::OsString, fmt, future::Future, path::PathBuf, pin::Pin, sync::Arc};

use crate::provider::Provider;

/// Provider crates name configuration types through this (no direct `toml` dependency).
pub use toml;

/// A boxed future, as the registration's function pointers return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Everything wrong with one piece of configuration, reported at once (a config check must
/// not make the operator fix one problem per start).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigIssues(pub Vec<ConfigIssue>);

/// One problem in a configuration: where (a dotted path such as `providers.taler.purpose`)
/// and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

impl ConfigIssue {
    /// An issue whose message is one line (a report prints one line per problem).
    pub fn new(path: impl Into<String>, message: impl fmt::Display) -> ConfigIssue {
        let message = message.to_string();
        let message = message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        ConfigIssue {
            path: path.into(),
            message,
        }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl ConfigIssues {
    pub fn one(path: impl Into<String>, message: impl fmt::Display) -> ConfigIssues {
        ConfigIssues(vec![ConfigIssue::new(path, message)])
    }

    pub fn push(&mut self, path: impl Into<String>, message: impl fmt::Display) {
        self.0.push(ConfigIssue::new(path, message));
    }

    pub fn extend(&mut self, other: ConfigIssues) {
        self.0.extend(other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing was found wrong.
    pub fn into_result<T>(self, value: T) -> Result<T, ConfigIssues> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }

    /// Prefix every path (a provider reports paths inside its own section).
    pub fn under(mut self, prefix: &str) -> ConfigIssues {
        for issue in &mut self.0 {
            issue.path = if issue.path.is_empty() {
                prefix.to_owned()
            } else {
                format!("{prefix}.{}", issue.path)
            };
        }
        self
    }
}

impl fmt::Display for ConfigIssues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigIssues {}

/// Deserialize a provider's section, mapping serde's error to an issue at its path. Every
/// secret that fails to load is reported (at its key), not only the first.
pub fn section<T: serde::de::DeserializeOwned>(value: toml::Value) -> Result<T, ConfigIssues> {
    match section_with_unresolved(value) {
        (Some(parsed), issues) if issues.is_empty() => Ok(parsed),
        (_, issues) => Err(issues),
    }
}

/// Deserialize a section, collecting every secret that fails to load: the value comes back
/// (holding those secrets unresolved) unless something other than a secret is wrong, with
/// an issue per failed secret and per deserialization error. For checks that go on after a
/// missing secret; nothing built from an unresolved secret may be put to use.
///
/// serde stops at the first bad value; so that one run of `docgate check` names every
/// problem, the bad key is taken out and the section read again (its default then stands
/// in), up to [`MAX_SECTION_ERRORS`] times. The section comes back parsed when what is left
/// parses, so its other values are still validated; the issues say it was not usable as
/// written.
pub fn section_with_unresolved<T: serde::de::DeserializeOwned>(
    mut value: toml::Value,
) -> (Option<T>, ConfigIssues) {
    let mut errors = ConfigIssues::default();
    let mut removed: Vec<String> = Vec::new();
    // Secrets that failed to load come first, then what serde found, in the order found.
    let finish = |value: &toml::Value, failures, errors: ConfigIssues| {
        let mut issues = crate::secret::issues(value, failures);
        issues.extend(errors);
        issues
    };
    for _ in 0..MAX_SECTION_ERRORS {
        let (parsed, failures) =
            crate::secret::collecting(|| serde_path_to_error::deserialize::<_, T>(value.clone()));
        let e = match parsed {
            Ok(parsed) => return (Some(parsed), finish(&value, failures, errors)),
            Err(e) => e,
        };
        // `.` is the path of the section itself.
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = e.inner().message();
        // A key taken out after its own error is then missing: that is not news.
        let echo = removed.iter().any(|key| {
            message
                .strip_prefix("missing field `")
                .and_then(|m| m.strip_suffix('`'))
                == Some(key_name(key))
                && parent_of(key) == path
        });
        if !echo {
            errors.push(path.clone(), message);
        }
        let unknown = message.starts_with("unknown field `");
        let key = match (unknown, message.split('`').nth(1)) {
            // serde names an unknown field in its message; the path may stop at its table.
            (true, Some(field)) if key_name(&path) != field => {
                if path.is_empty() {
                    field.to_owned()
                } else {
                    format!("{path}.{field}")
                }
            }
            _ => path,
        };
        if echo || key.is_empty() || !remove_at(&mut value, &key) {
            return (None, finish(&value, failures, errors));
        }
        removed.push(key);
    }
    errors.push(
        "",
        format!("more problems than the first {MAX_SECTION_ERRORS} may follow"),
    );
    (None, errors)
}

/// Problems read from one section at most.
pub const MAX_SECTION_ERRORS: usize = 32;

fn key_name(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('.').map_or("", |(parent, _)| parent)
}

/// Remove the value at a serde path (`a.b`, `a[2].c`) from `value`; false when it is not
/// there.
fn remove_at(value: &mut toml::Value, path: &str) -> bool {
    let mut steps: Vec<&str> = Vec::new();
    for part in path.split('.') {
        match part.split_once('[') {
            Some((name, rest)) => {
                steps.push(name);
                steps.extend(rest.split('[').map(|i| i.trim_end_matches(']')));
            }
            None => steps.push(part),
        }
    }
    let Some((last, parents)) = steps.split_last() else {
        return false;
    };
    let mut at = value;
    for step in parents {
        let next = match at {
            toml::Value::Table(t) => t.get_mut(*step),
            toml::Value::Array(a) => step.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        };
        match next {
            Some(v) => at = v,
            None => return false,
        }
    }
    match at {
        toml::Value::Table(t) => t.remove(*last).is_some(),
        _ => false,
    }
}

/// Build a provider from its section with its own constructor: the usual `from_config`.
pub fn build<C, P, E>(
    value: toml::Value,
    new: fn(C) -> Result<P, E>,
) -> Result<Arc<dyn Provider>, ConfigIssues>
where
    C: serde::de::DeserializeOwned,
    P: Provider,
    E: fmt::Display,
{
    let config: C = section(value)?;
    let provider = new(config).map_err(|e| ConfigIssues::one("", e))?;
    Ok(Arc::new(provider))
}

/// A provider section's own checks that need no secret, each problem at its key: run by
/// [`build_checked`] even while a secret of the section is missing or another value did not
/// parse, so that one run of `docgate check` names them all.
pub trait SectionChecks {
    type Problem: fmt::Display;
    fn problems(&self) -> Vec<(&'static str, Self::Problem)>;
}

/// [`build`], with the section's [`SectionChecks`] named before the constructor runs.
pub fn build_checked<C, P, E>(
    value: toml::Value,
    new: fn(C) -> Result<P, E>,
) -> Result<Arc<dyn Provider>, ConfigIssues>
where
    C: serde::de::DeserializeOwned + SectionChecks,
    P: Provider,
    E: fmt::Display,
{
    let (parsed, mut issues) = section_with_unresolved::<C>(value);
    if let Some(config) = &parsed {
        for (key, problem) in config.problems() {
            issues.push(key, problem);
        }
    }
    match parsed {
        Some(config) if issues.is_empty() => {
            let provider = new(config).map_err(|e| ConfigIssues::one("", e))?;
            Ok(Arc::new(provider))
        }
        _ => Err(issues),
    }
}

/// How an emulator is launched.
#[derive(Debug, Clone)]
pub enum EmulatorLaunch {
    /// `docgate emulate <name> ARGS…`: the provider parses its own arguments (including the
    /// common `--listen` and `--data-dir`).
    Cli(Vec<OsString>),
    /// Inside the sandbox: a loopback port of its choosing, state under `data_dir`, and the
    /// gateway's URL (for emulators that call the gateway back, such as OST's webhooks).
    Sandbox {
        data_dir: PathBuf,
        gateway_url: String,
    },
}

/// Why an emulator did not start.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// Bad command-line arguments (the message is clap's, ready to print).
    #[error("{0}")]
    Usage(String),
    /// `--help` was asked for: print this and exit successfully.
    #[error("{0}")]
    Help(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Config(#[from] ConfigIssues),
}

/// A running emulator; dropping it stops it.
pub trait RunningEmulator: Send + Sync + fmt::Debug {
    fn url(&self) -> String;
    /// Lines for the terminal: credentials, control routes.
    fn banner(&self) -> Vec<String>;
    /// The provider, configured to deliver to this emulator (the sandbox).
    fn sandbox_provider(&self) -> Result<Arc<dyn Provider>, ConfigIssues>;
    /// The concrete emulator, for tests that drive its control API in Rust.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// Starts a provider's emulator.
pub type StartEmulator =
    fn(EmulatorLaunch) -> BoxFuture<'static, Result<Box<dyn RunningEmulator>, EmulatorError>>;

/// Checks a tenant's `[tenants.options.<name>]` table for one provider.
pub type CheckTenantOptions = fn(&toml::Table) -> Result<(), ConfigIssues>;

/// One provider, as the gateway's table lists it.
#[derive(Clone, Copy)]
pub struct Registration {
    /// The name in the API (`provider=taler`) and the config section (`[providers.taler]`).
    pub name: &'static str,
    /// Build the provider from its configuration section. Reports every problem at once.
    pub from_config: fn(toml::Value) -> Result<Arc<dyn Provider>, ConfigIssues>,
    /// Check a tenant's `[tenants.options.<name>]` table; `None`: the provider has none.
    pub tenant_options: Option<CheckTenantOptions>,
    /// Its emulator, when the crate's `emulator` feature is on.
    pub emulator: Option<StartEmulator>,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("name", &self.name)
            .field("tenant_options", &self.tenant_options.is_some())
            .field("emulator", &self.emulator.is_some())
            .finish()
    }
}

impl Registration {
    /// Validate a tenant's options for this provider.
    pub fn check_tenant_options(&self, options: &toml::Table) -> Result<(), ConfigIssues> {
        match self.tenant_options {
            Some(check) => check(options),
            None if options.is_empty() => Ok(()),
            None => Err(ConfigIssues::one(
                "",
                format!("provider `{}` takes no tenant options", self.name),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Section {
        url: String,
        key: crate::Secret,
        #[serde(default)]
        other: Option<crate::Secret>,
        #[serde(default)]
        limit: u32,
    }

    fn value(text: &str) -> toml::Value {
        toml::from_str(text).expect("toml")
    }

    #[test]
    fn a_section_reports_every_missing_secret_at_its_key() {
        let v = value(
            "url = \"x\"\nkey = { env = \"DOCGATE_REG_TEST_UNSET_1\" }\n\
             other = { env = \"DOCGATE_REG_TEST_UNSET_2\" }",
        );
        let issues = section::<Section>(v).expect_err("missing");
        assert_eq!(
            issues.under("providers.p").to_string(),
            "providers.p.key: environment variable DOCGATE_REG_TEST_UNSET_1 is not set\n\
             providers.p.other: environment variable DOCGATE_REG_TEST_UNSET_2 is not set"
        );
    }

    #[test]
    fn a_bad_value_is_reported_at_its_key_next_to_missing_secrets() {
        let v = value("url = \"x\"\nkey = { env = \"DOCGATE_REG_TEST_UNSET_1\" }\nlimit = -1");
        let (parsed, issues) = section_with_unresolved::<Section>(v.clone());
        // Read again without the bad value, so the rest is still checked; never usable.
        assert!(parsed.is_some_and(|s| s.limit == 0));
        let paths: Vec<&str> = issues.0.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, vec!["key", "limit"], "{issues}");
        assert!(section::<Section>(v).is_err());
        let v = value("url = \"x\"\nkey = { env = \"DOCGATE_REG_TEST_UNSET_1\" }");
        let (parsed, issues) = section_with_unresolved::<Section>(v);
        assert!(parsed.is_some_and(|s| !s.key.is_resolved()));
        assert_eq!(issues.0.len(), 1);
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Strict {
        url: String,
        #[serde(default)]
        limit: u32,
        #[serde(default)]
        inner: Inner,
    }

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        #[serde(default)]
        depth: u32,
    }

    // One run of `docgate check` named only the first problem of each section.
    #[test]
    fn regression_every_problem_of_a_section_is_named_not_only_the_first() {
        let v = value(
            "url = \"x\"\nlimit = \"big\"\ntypo = 1\nother_typo = 2\n\
             [inner]\ndepth = -1\ndeeper_typo = true",
        );
        let (parsed, issues) = section_with_unresolved::<Strict>(v);
        assert!(parsed.is_some(), "what is left is still read");
        let mut paths: Vec<&str> = issues.0.iter().map(|i| i.path.as_str()).collect();
        paths.sort();
        assert_eq!(
            paths,
            vec![
                "inner.deeper_typo",
                "inner.depth",
                "limit",
                "other_typo",
                "typo"
            ],
            "{issues}"
        );
        // A required key with a bad value is named once, not again as missing.
        let (parsed, issues) = section_with_unresolved::<Strict>(value("url = 5\ntypo = 1"));
        assert!(parsed.is_none());
        let paths: Vec<&str> = issues.0.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths.len(), 2, "{issues}");
        assert!(
            paths.contains(&"url") && paths.contains(&"typo"),
            "{issues}"
        );
    }

    #[test]
    fn issues_are_one_line_each() {
        let issues = ConfigIssues::one("a", "first\n  second\n");
        assert_eq!(issues.to_string(), "a: first; second");
    }
}
