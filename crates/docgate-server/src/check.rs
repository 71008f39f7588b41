//! `docgate check`: everything wrong with a configuration, in one run.
//!
//! A configuration can be wrong in itself (a missing secret, a bad value, an unknown key, a
//! secret file others can read) or for the machine it runs on (a ledger that does not answer,
//! a provider host that does not resolve). `check` reports both kinds at once, one line per
//! problem, so an operator fixes them in one go instead of one per failed start. `serve`
//! prints the same list when its configuration is broken.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use docgate_core::{registration::ConfigIssue, ConfigIssues, Registration};
use futures_util::future::join_all;

use crate::{
    config::{Config, ConfigError},
    registry::Registry,
    Setup,
};

/// How long a TCP connection to the ledger may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long PostgreSQL may take to accept a session (authentication, database).
const SESSION_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one provider host's DNS lookup may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Command-line values that replace the file's (`serve --listen`, `--data-dir`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

/// Load `path` exactly as `serve` does: the setup (as far as it could be built) and every
/// problem of the file itself. `Err`: unreadable, or not TOML.
pub fn load(
    path: &Path,
    overrides: &Overrides,
    table: &[&Registration],
) -> Result<(Setup, ConfigIssues), ConfigError> {
    let (mut config, mut issues) = Config::load_checked(path)?;
    if let Some(listen) = overrides.listen {
        config.listen = listen;
    }
    if let Some(data_dir) = &overrides.data_dir {
        config.data_dir = data_dir.clone();
    }
    let (setup, more) = Setup::assemble(config, table);
    issues.extend(more);
    Ok((setup, issues))
}

/// Every problem of the file at `path` and of the machine it is meant for.
pub async fn check(path: &Path, overrides: &Overrides, table: &[&Registration]) -> ConfigIssues {
    match load(path, overrides, table) {
        Ok((setup, mut issues)) => {
            issues.extend(environment(&setup).await);
            issues
        }
        Err(e) => ConfigIssues::one("", e),
    }
}

/// What the configuration needs from its surroundings: a ledger that answers (or a directory
/// SQLite can write), a spool bucket that takes the credentials, and provider hosts that
/// resolve.
pub async fn environment(setup: &Setup) -> ConfigIssues {
    let (ledger, spool, mut endpoints) = tokio::join!(
        probe_ledger(&setup.ledger_url, &setup.data_dir),
        probe_spool_bucket(setup),
        probe_endpoints(&setup.registry)
    );
    if let Err(problem) = spool {
        endpoints.0.insert(0, ConfigIssue::new("spool", problem));
    }
    if let Err(problem) = ledger {
        endpoints.0.insert(0, ConfigIssue::new("ledger", problem));
    }
    endpoints
}

/// With `spool = "s3://…"`: the bucket answers a `HEAD` with these credentials (the error
/// carries S3's status and code, never a secret).
async fn probe_spool_bucket(setup: &Setup) -> Result<(), String> {
    let Some(settings) = &setup.spool_s3 else {
        return Ok(());
    };
    docgate_spool_s3::S3Store::connect(settings)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Why the ledger cannot be used. Never shows the URL: it may carry a password.
#[derive(Debug, thiserror::Error)]
pub enum LedgerProblem {
    #[error("not a usable PostgreSQL URL: {0}")]
    Url(url::ParseError),
    #[error("cannot reach PostgreSQL at {host}:{port}: {source}")]
    Connect {
        host: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("cannot reach PostgreSQL at {host}:{port}: no answer within {}s", .after.as_secs())]
    Timeout {
        host: String,
        port: u16,
        after: Duration,
    },
    #[error("PostgreSQL at {target} does not accept the session: {source}")]
    Session { target: String, source: sqlx::Error },
    #[error("PostgreSQL at {target} did not accept the session within {}s", .after.as_secs())]
    SessionTimeout { target: String, after: Duration },
    #[error("SQLite cannot write its ledger in {}: {reason}", .dir.display())]
    NotWritable { dir: PathBuf, reason: String },
}

impl LedgerProblem {
    /// A server that does not answer may come up; a wrong URL or directory will not fix
    /// itself.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            LedgerProblem::Connect { .. }
                | LedgerProblem::Timeout { .. }
                | LedgerProblem::SessionTimeout { .. }
        )
    }
}

/// Can the ledger named `ledger` (a config's `ledger` value) be used? PostgreSQL: a TCP
/// connection, then a session, each with a short timeout. SQLite: its directory is writable
/// (or can be created).
pub async fn probe_ledger(ledger: &str, data_dir: &Path) -> Result<(), LedgerProblem> {
    if ledger.starts_with("postgres://") || ledger.starts_with("postgresql://") {
        return probe_postgres(ledger).await;
    }
    let file = if ledger == "sqlite" {
        data_dir.join("ledger.sqlite")
    } else if let Some((path, _)) = crate::ledger::sql::sqlite_location(ledger) {
        if path.is_empty() || path == ":memory:" {
            return Ok(());
        }
        PathBuf::from(path)
    } else {
        // Not a ledger URL at all: the configuration check reports that.
        return Ok(());
    };
    tracing::debug!(file = %file.display(), "checking the SQLite ledger's directory");
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    writable_dir(&dir)
}

async fn probe_postgres(url: &str) -> Result<(), LedgerProblem> {
    let parsed = url::Url::parse(url).map_err(LedgerProblem::Url)?;
    let port = parsed.port().unwrap_or(5432);
    let host = match parsed.host() {
        Some(url::Host::Domain(d)) => Some(d.to_owned()),
        Some(url::Host::Ipv4(ip)) => Some(ip.to_string()),
        Some(url::Host::Ipv6(ip)) => Some(ip.to_string()),
        // A Unix socket (`?host=/run/postgresql`): only the session attempt can tell.
        None => None,
    };
    let target = match &host {
        Some(host) => {
            tracing::debug!(host, port, "connecting to the PostgreSQL ledger");
            let connect = tokio::net::TcpStream::connect((host.as_str(), port));
            match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                Ok(Ok(_)) => {}
                Ok(Err(source)) => {
                    return Err(LedgerProblem::Connect {
                        host: host.clone(),
                        port,
                        source,
                    })
                }
                Err(_) => {
                    return Err(LedgerProblem::Timeout {
                        host: host.clone(),
                        port,
                        after: CONNECT_TIMEOUT,
                    })
                }
            }
            format!("{host}:{port}")
        }
        None => "its socket".to_owned(),
    };
    use sqlx::Connection;
    match tokio::time::timeout(SESSION_TIMEOUT, sqlx::PgConnection::connect(url)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(source)) => Err(LedgerProblem::Session { target, source }),
        Err(_) => Err(LedgerProblem::SessionTimeout {
            target,
            after: SESSION_TIMEOUT,
        }),
    }
}

/// `dir` is a directory this process can create files in, or can be created: its nearest
/// existing ancestor is such a directory.
fn writable_dir(dir: &Path) -> Result<(), LedgerProblem> {
    let problem = |reason: String| LedgerProblem::NotWritable {
        dir: dir.to_owned(),
        reason,
    };
    let mut existing = dir;
    loop {
        match std::fs::metadata(existing) {
            Ok(meta) if meta.is_dir() => {
                use rustix::fs::{access, Access};
                return access(existing, Access::WRITE_OK | Access::EXEC_OK)
                    .map_err(|e| problem(format!("{}: {e}", existing.display())));
            }
            Ok(_) => {
                return Err(problem(format!(
                    "{} is not a directory",
                    existing.display()
                )))
            }
            // Missing, or under a file (reported once the walk up reaches that file).
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                existing = match existing.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
            }
            Err(e) => return Err(problem(format!("{}: {e}", existing.display()))),
        }
    }
}

/// Why a provider's host cannot be reached by name.
#[derive(Debug, thiserror::Error)]
pub enum EndpointProblem {
    #[error("host `{host}` does not resolve: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("host `{host}` resolves to no address")]
    NoAddress { host: String },
    #[error("host `{host}` did not resolve within {}s", .after.as_secs())]
    Timeout { host: String, after: Duration },
}

/// Look up the host of every configured provider endpoint, all at once.
pub async fn probe_endpoints(registry: &Registry) -> ConfigIssues {
    let lookups = registry.all().flat_map(|provider| {
        let name = provider.name().to_owned();
        provider
            .endpoints()
            .into_iter()
            .map(move |url| (name.clone(), url))
    });
    let results = join_all(lookups.map(|(name, url)| async move {
        let result = resolve(&url).await;
        (name, result)
    }))
    .await;
    let mut issues = ConfigIssues::default();
    for (name, result) in results {
        if let Err(problem) = result {
            issues.push(format!("providers.{name}"), problem);
        }
    }
    issues
}

async fn resolve(url: &url::Url) -> Result<(), EndpointProblem> {
    // An address needs no lookup.
    let Some(url::Host::Domain(host)) = url.host() else {
        return Ok(());
    };
    let port = url.port_or_known_default().unwrap_or(443);
    tracing::debug!(host, "resolving a provider host");
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(mut addrs)) => match addrs.next() {
            Some(_) => Ok(()),
            None => Err(EndpointProblem::NoAddress {
                host: host.to_owned(),
            }),
        },
        Ok(Err(source)) => Err(EndpointProblem::Resolve {
            host: host.to_owned(),
            source,
        }),
        Err(_) => Err(EndpointProblem::Timeout {
            host: host.to_owned(),
            after: RESOLVE_TIMEOUT,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback port nothing listens on (bound, then released).
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    }

    #[tokio::test]
    async fn an_unreachable_postgres_names_host_port_and_cause_but_not_the_password() {
        let port = closed_port();
        let url = format!("postgres://docgate:pw-never-shown@127.0.0.1:{port}/test");
        let problem = probe_ledger(&url, Path::new("unused"))
            .await
            .expect_err("nothing listens there");
        assert!(
            matches!(problem, LedgerProblem::Connect { .. }),
            "{problem}"
        );
        assert!(problem.retryable());
        let text = problem.to_string();
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert!(text.to_lowercase().contains("refused"), "{text}");
        assert!(!text.contains("pw-never-shown"), "{text}");
    }

    #[tokio::test]
    async fn sqlite_needs_a_directory_it_can_create_or_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        probe_ledger("sqlite", &dir.path().join("not/yet/there"))
            .await
            .expect("creatable");
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").expect("write");
        let problem = probe_ledger("sqlite", &file.join("data"))
            .await
            .expect_err("under a regular file");
        assert!(
            problem.to_string().contains("is not a directory"),
            "{problem}"
        );
        assert!(!problem.retryable());
        let url = format!("sqlite://{}/ledger.sqlite?mode=rwc", file.display());
        assert!(probe_ledger(&url, Path::new("unused")).await.is_err());
        probe_ledger("sqlite::memory:", Path::new("unused"))
            .await
            .expect("in memory");
    }

    #[tokio::test]
    async fn every_provider_lists_the_url_it_is_configured_with() {
        let dir = tempfile::tempdir().expect("tempdir");
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let (setup, _emulators) =
            crate::sandbox::setup(listen, dir.path(), None, docgate_providers::ALL)
                .await
                .expect("sandbox");
        assert_eq!(setup.registry.names().count(), docgate_providers::ALL.len());
        for provider in setup.registry.all() {
            let endpoints = provider.endpoints();
            assert!(!endpoints.is_empty(), "{} lists none", provider.name());
            // Each points at its emulator, on loopback.
            for url in endpoints {
                assert_eq!(
                    url.host_str(),
                    Some("127.0.0.1"),
                    "{}: {url}",
                    provider.name()
                );
            }
        }
        assert!(probe_endpoints(&setup.registry).await.is_empty());
    }

    #[tokio::test]
    async fn provider_hosts_that_do_not_resolve_are_named_per_provider() {
        std::env::set_var("DOCGATE_CHECK_TEST_TALER_KEY", "00".repeat(32));
        let section = |base_url: &str| -> toml::Value {
            toml::from_str(&format!(
                "base_url = \"{base_url}\"\npurpose = 1\n\
                 extern_key = {{ env = \"DOCGATE_CHECK_TEST_TALER_KEY\" }}"
            ))
            .expect("toml")
        };
        let table = [&docgate_taler::REGISTRATION];
        // `.invalid` never resolves (RFC 6761); an address needs no lookup.
        let broken = Registry::from_config(
            [(
                "taler".to_owned(),
                section("https://exchange.docgate.invalid/"),
            )]
            .into(),
            &table,
        )
        .expect("builds");
        let issues = probe_endpoints(&broken).await;
        assert_eq!(issues.0.len(), 1, "{issues}");
        assert_eq!(issues.0[0].path, "providers.taler");
        assert!(
            issues.0[0].message.contains("exchange.docgate.invalid"),
            "{issues}"
        );
        let fine = Registry::from_config(
            [("taler".to_owned(), section("http://127.0.0.1:1/"))].into(),
            &table,
        )
        .expect("builds");
        assert!(probe_endpoints(&fine).await.is_empty());
    }
}
