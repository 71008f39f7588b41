//! docgate-server: the front door.
//!
//! It turns a configuration (or the sandbox) into a running gateway: tenants and their API
//! keys, the providers, the ledger, the spool, the HTTP API and the delivery worker.
//!
//! - [`config`]: `docgate.toml`; [`sandbox`]: every provider wired to its in-process emulator;
//!   [`check`]: everything wrong with a configuration and its surroundings, at once.
//! - [`routes`]: the HTTP API; [`app`]: shared state and the router; [`serve`]: the accept loop.
//! - [`ledger`]: the durable record of uploads; [`delivery`]: attempts, retries, the worker,
//!   tenant notifications.
//! - [`receipt`]: what the frontend gets back; [`metrics`]: Prometheus.

#![forbid(unsafe_code)]

pub mod admission;
pub mod app;
pub mod auth;
pub mod body;
pub mod check;
pub mod config;
pub mod cors;
pub mod delivery;
pub mod host;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod part_headers;
pub mod receipt;
pub mod registry;
pub mod routes;
pub mod sandbox;
pub mod serve;
pub mod sessions;
pub mod spool_keys;
pub mod tenants;
pub mod web;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use docgate_core::{
    seal::{EncryptedStore, SealError},
    ConfigIssues, LocalStore, ObjectStore, Registration, SpoolDir,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    admission::{Admission, SpaceWatch},
    app::{App, AppState},
    config::{Config, ConfigError, DeliverySettings, Limits},
    delivery::{notify::Notifier, Deliverer},
    ledger::{Ledger, SqlLedger},
    metrics::Metrics,
    registry::Registry,
    tenants::{NotifyTarget, Tenant, Tenants},
};

/// Everything needed to start a gateway, from a config file or from the sandbox.
#[derive(Debug)]
pub struct Setup {
    pub listen: SocketAddr,
    /// Already bound (the sandbox binds first: its OST emulator must know the gateway's
    /// webhook URL before the gateway starts). `None`: bind `listen`.
    pub listener: Option<std::net::TcpListener>,
    pub data_dir: PathBuf,
    pub ledger_url: String,
    pub spool_dir: PathBuf,
    /// Spool in S3 instead of `spool_dir`.
    pub spool_s3: Option<docgate_spool_s3::S3Settings>,
    pub limits: Limits,
    pub delivery: DeliverySettings,
    pub tenants: Tenants,
    pub registry: Registry,
    /// The pages (and, in the sandbox, who they mint sessions for).
    pub web: web::WebSettings,
    /// Seal spooled documents with these keys (`None`: stored as received).
    pub spool_encryption: Option<docgate_core::seal::Keyring>,
}

impl Setup {
    /// Everything `config` describes, with providers built through `table`. Every problem is
    /// reported at once.
    pub fn from_config(config: Config, table: &[&Registration]) -> Result<Setup, ConfigError> {
        let (setup, issues) = Setup::assemble(config, table);
        issues.into_result(setup).map_err(ConfigError::Issues)
    }

    /// Whatever `config` allows to be built, and every problem found on the way: providers
    /// whose sections fail are left out, and so are tenants whose API key could not be
    /// loaded. For reports (`docgate check`); serving needs [`Setup::from_config`].
    pub fn assemble(config: Config, table: &[&Registration]) -> (Setup, ConfigIssues) {
        let mut issues = ConfigIssues::default();
        let spool_dir = config.spool_dir();
        // Its problems were reported when the file was read (`Config::validate`).
        let spool_s3 = config.spool_s3_settings(&mut ConfigIssues::default());
        let sections: std::collections::BTreeSet<String> =
            config.providers.keys().cloned().collect();
        let mut registry = Registry::default();
        for (name, section) in config.providers {
            // One section at a time: the providers that build are kept for the checks that
            // need them (their hosts) even when another section is broken.
            match Registry::from_config([(name, section)].into(), table) {
                Ok(built) => built.all().for_each(|p| registry.insert(p.clone())),
                Err(e) => issues.extend(e),
            }
        }
        let tenants = tenants_from_config(config.tenants, table, &sections, &mut issues);
        // Its problems were reported when the file was read (`Config::validate`).
        let spool_encryption = config
            .spool_encryption
            .as_ref()
            .and_then(|e| e.keyring(&mut ConfigIssues::default()));
        let setup = Setup {
            listen: config.listen,
            listener: None,
            data_dir: config.data_dir,
            ledger_url: config.ledger,
            spool_dir,
            spool_s3,
            limits: config.limits,
            delivery: config.delivery,
            tenants,
            registry,
            web: config.web,
            spool_encryption,
        };
        (setup, issues)
    }
}

fn tenants_from_config(
    configs: Vec<config::TenantConfig>,
    table: &[&Registration],
    sections: &std::collections::BTreeSet<String>,
    issues: &mut ConfigIssues,
) -> Tenants {
    let mut tenants = Tenants::default();
    for t in configs {
        let path = format!("tenants.{}", t.name);
        for name in &t.providers {
            if !table.iter().any(|r| r.name == name) {
                issues.push(
                    format!("{path}.providers"),
                    format!("no such provider in this build: `{name}`"),
                );
            } else if !sections.contains(name) {
                issues.push(
                    format!("{path}.providers"),
                    format!("provider `{name}` has no [providers.{name}] section"),
                );
            }
        }
        for (provider, options) in &t.options {
            match table.iter().find(|r| r.name == provider) {
                Some(entry) => {
                    if let Err(e) = entry.check_tenant_options(options) {
                        issues.extend(e.under(&format!("{path}.options.{provider}")));
                    }
                }
                None => issues.push(
                    format!("{path}.options.{provider}"),
                    "no such provider in this build",
                ),
            }
        }
        if !t.api_key.is_resolved() {
            // Its loading problem is already reported; an unusable key must not be compared
            // with the others (two missing keys are not "the same key").
            continue;
        }
        let notify = match (t.notify_url, t.notify_secret) {
            (Some(url), Some(secret)) => Some(NotifyTarget { url, secret }),
            _ => None,
        };
        let tenant = Tenant {
            name: t.name,
            providers: Arc::new(t.providers),
            options: Arc::new(t.options),
            notify,
            max_concurrent_uploads: t.max_concurrent_uploads,
            cors_origins: Arc::new(t.cors_origins),
        };
        if !tenants.add(&t.api_key, tenant) {
            issues.push(
                format!("{path}.api_key"),
                "the same api_key as another tenant",
            );
        }
    }
    tenants
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    /// Found before connecting, so the operator reads where and why instead of a pool timeout.
    #[error(transparent)]
    LedgerUnreachable(#[from] check::LedgerProblem),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// Create the data directory (and its parents) readable by the gateway's user alone: the
/// ledger in it holds personal data in clear until erased. A directory that exists keeps the
/// mode its operator gave it.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let what = what.into();
    move |source| StartError::Io { what, source }
}

/// Spooled objects looked at before serving, newest first.
const KEY_CHECK_SAMPLE: usize = 8;

/// Refuse to start with keys that cannot open what is already spooled: a key id the
/// configuration lost (a rotation that dropped `previous`), or a key that opens none of the
/// newest objects (a wrong key, or a spool written before encryption was turned on). One
/// object that does not open is left to its delivery, which fails it as altered: a single
/// damaged file must not keep the gateway down.
async fn check_spool_keys<S: ObjectStore>(store: &EncryptedStore<S>) -> Result<(), StartError> {
    let mut objects = store
        .list(spool_keys::UPLOADS)
        .await
        .map_err(io("listing the spool"))?;
    objects.sort_by_key(|o| std::cmp::Reverse(o.modified));
    let mut failures = Vec::new();
    let sampled = objects.len().min(KEY_CHECK_SAMPLE);
    for object in objects.iter().take(KEY_CHECK_SAMPLE) {
        let Err(e) = store.open_header(&object.key).await else {
            return Ok(());
        };
        if let Some(SealError::UnknownKey { key_id, .. }) =
            e.get_ref().and_then(|i| i.downcast_ref::<SealError>())
        {
            return Err(StartError::Config(ConfigError::Invalid(format!(
                "spool_encryption: spooled documents are sealed under key id `{key_id}`, which is \
                 not configured (keep it in spool_encryption.previous until they are delivered)"
            ))));
        }
        failures.push(e);
    }
    match failures.first() {
        Some(first) if failures.len() == sampled => {
            Err(StartError::Config(ConfigError::Invalid(format!(
                "spool_encryption: the configured keys open none of the {sampled} newest spooled \
                 documents (wrong key, or documents spooled before encryption was turned on): {first}"
            ))))
        }
        _ => Ok(()),
    }
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    pub addr: SocketAddr,
    pub app: AppState,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
    worker: JoinHandle<()>,
}

/// The spool's object store: files under `spool_dir`, or objects in S3 (`spool_s3`, checked
/// reachable first), sealed when `spool_encryption` is configured (after checking the keys
/// open what is already spooled).
async fn open_spool(setup: &Setup) -> Result<Arc<dyn ObjectStore>, StartError> {
    match &setup.spool_s3 {
        Some(settings) => {
            let s3 = docgate_spool_s3::S3Store::connect(settings)
                .await
                .map_err(|e| match e {
                    // Unreachable may pass (a network blip); a bad setting will not.
                    docgate_spool_s3::S3ConfigError::Unreachable { bucket, source } => {
                        StartError::Io {
                            what: format!("reaching the spool bucket {bucket}"),
                            source,
                        }
                    }
                    other => StartError::Config(ConfigError::Invalid(other.to_string())),
                })?;
            tracing::info!(bucket = %settings.location.bucket, "spooling documents in S3");
            seal_if_configured(setup, s3).await
        }
        None => {
            let local = LocalStore::new(&setup.spool_dir)
                .map_err(io(format!("creating spool {}", setup.spool_dir.display())))?;
            seal_if_configured(setup, local).await
        }
    }
}

async fn seal_if_configured<S: ObjectStore>(
    setup: &Setup,
    store: S,
) -> Result<Arc<dyn ObjectStore>, StartError> {
    Ok(match &setup.spool_encryption {
        Some(keys) => {
            let sealed = EncryptedStore::new(store, keys.clone());
            check_spool_keys(&sealed).await?;
            tracing::info!(
                key_id = keys.current_id(),
                "spooled documents are encrypted"
            );
            Arc::new(sealed)
        }
        None => {
            tracing::warn!(
                "spool_encryption is not configured: spooled documents are stored unencrypted"
            );
            Arc::new(store)
        }
    })
}

/// The ledger, probed first for a clear error; a single replica takes back the leases of
/// the process before it.
async fn open_ledger(setup: &Setup, single_replica: bool) -> Result<Arc<dyn Ledger>, StartError> {
    let ledger_url = if setup.ledger_url == "sqlite" {
        SqlLedger::sqlite_url(&setup.data_dir.join("ledger.sqlite"))
    } else {
        setup.ledger_url.clone()
    };
    check::probe_ledger(&setup.ledger_url, &setup.data_dir).await?;
    let ledger: Arc<dyn Ledger> = Arc::new(SqlLedger::connect(&ledger_url).await?);
    if single_replica {
        // The previous process is gone: its leases mean nothing, resume its work now.
        let n = ledger.release_all(ledger::now_ms()).await?;
        if n > 0 {
            tracing::info!(
                resumed = n,
                "resuming deliveries interrupted by the last shutdown"
            );
        }
    }
    Ok(ledger)
}

/// Upload slots: the global bound and each tenant's share.
fn admission_for(tenants: &Tenants, limits: &Limits, space: Arc<SpaceWatch>) -> Admission {
    Admission::new(
        limits.max_concurrent_uploads,
        tenants.all().map(|t| {
            let slots = t
                .max_concurrent_uploads
                .unwrap_or_else(|| limits.default_tenant_slots());
            (t.name.clone(), slots)
        }),
        limits.min_body_rate,
        limits.slot_wait,
        space,
    )
}

/// The listener: the one already bound (the sandbox's), or a new one on `addr`.
async fn listen(
    bound: Option<std::net::TcpListener>,
    addr: SocketAddr,
) -> Result<TcpListener, StartError> {
    match bound {
        Some(std_listener) => {
            std_listener
                .set_nonblocking(true)
                .map_err(io("configuring the listener"))?;
            TcpListener::from_std(std_listener).map_err(io("adopting the listener"))
        }
        None => TcpListener::bind(addr)
            .await
            .map_err(io(format!("binding {addr}"))),
    }
}

impl Gateway {
    /// Open the ledger and spool, resume pending work, bind and serve.
    pub async fn start(setup: Setup) -> Result<Gateway, StartError> {
        create_private_dir(&setup.data_dir)
            .map_err(io(format!("creating {}", setup.data_dir.display())))?;
        let spool = SpoolDir::with_store(
            open_spool(&setup).await?,
            setup.limits.spool_memory_threshold,
        );
        let single_replica = !setup.ledger_url.starts_with("postgres");
        let ledger = open_ledger(&setup, single_replica).await?;
        let metrics = Arc::new(Metrics::default());
        let registry = Arc::new(setup.registry);
        let tenants = Arc::new(setup.tenants);
        let deliverer = Arc::new(Deliverer::new(
            ledger.clone(),
            registry.clone(),
            spool.clone(),
            setup.data_dir.join("scratch"),
            setup.delivery.clone(),
            metrics.clone(),
        ));
        let orphan_age = if single_replica {
            Duration::ZERO
        } else {
            Duration::from_secs(3600)
        };
        match deliverer.remove_orphans(orphan_age).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed orphaned spool files"),
            Err(e) => tracing::warn!(error = %e, "orphan spool cleanup failed"),
        }
        // The spool's own filesystem when it is local; the data dir always (the SQLite
        // ledger, scratch space for deliveries).
        let watched: Vec<PathBuf> = std::iter::once(setup.data_dir.clone())
            .chain(spool.local_root().map(Path::to_owned))
            .collect();
        let reserve = setup
            .limits
            .min_free_space
            .unwrap_or_else(|| admission::default_reserve(&watched));
        let space = SpaceWatch::new(watched, reserve);
        let admission = admission_for(&tenants, &setup.limits, space.clone())
            .with_waiting_gauge(metrics.waiting_gauge());
        let host: docgate_core::Host = Arc::new(host::Host {
            tenants: tenants.clone(),
            ledger: ledger.clone(),
            metrics: metrics.clone(),
        });
        let app: AppState = Arc::new(App {
            registry,
            tenants: tenants.clone(),
            spool,
            ledger,
            deliverer: deliverer.clone(),
            limits: setup.limits.clone(),
            delivery: setup.delivery,
            admission,
            metrics: metrics.clone(),
            host,
            assemblies: routes::tus::Assemblies::default(),
            web: setup.web,
            spool_probe: Default::default(),
        });
        let listener = listen(setup.listener, setup.listen).await?;
        let addr = listener
            .local_addr()
            .map_err(io("reading the bound address"))?;
        let shutdown = CancellationToken::new();
        tokio::spawn(space.run(shutdown.clone()));
        let server = tokio::spawn(serve::serve(
            listener,
            app::router(app.clone()),
            setup.limits.clone(),
            shutdown.clone(),
        ));
        let worker = tokio::spawn(deliverer.run_worker(
            Notifier::new(tenants, metrics),
            shutdown.clone(),
            setup.limits.shutdown_grace,
        ));
        Ok(Gateway {
            addr,
            app,
            shutdown,
            server,
            worker,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop accepting, let in-flight uploads and deliveries finish (up to the grace period),
    /// hand back unfinished work to the ledger.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.server.await;
        let _ = self.worker.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_missing_api_keys_are_two_problems_not_one_shared_key() {
        let text = r#"
            [[tenants]]
            name = "a"
            api_key = { env = "DOCGATE_SETUP_TEST_UNSET_A" }
            providers = ["taler"]
            [[tenants]]
            name = "b"
            api_key = { env = "DOCGATE_SETUP_TEST_UNSET_B" }
            providers = ["taler"]
            [providers.taler]
            base_url = "http://127.0.0.1:1/"
            purpose = 1
            extern_key = { env = "DOCGATE_SETUP_TEST_UNSET_TALER" }
        "#;
        let (config, mut issues) = Config::parse_checked(text).expect("toml");
        let (setup, more) = Setup::assemble(config, docgate_providers::ALL);
        issues.extend(more);
        let paths: Vec<&str> = issues.0.iter().map(|i| i.path.as_str()).collect();
        // Neither "the same api_key" nor "no [providers.taler] section": the section is
        // there, only its secret is missing.
        assert_eq!(
            paths,
            vec![
                "tenants.a.api_key",
                "tenants.b.api_key",
                "providers.taler.extern_key"
            ],
            "{issues}"
        );
        assert_eq!(setup.tenants.all().count(), 0);
    }

    #[test]
    fn providers_that_build_are_kept_when_another_section_is_broken() {
        std::env::set_var("DOCGATE_SETUP_TEST_KEY", "k");
        std::env::set_var("DOCGATE_SETUP_TEST_TALER", "00".repeat(32));
        let text = r#"
            [[tenants]]
            name = "a"
            api_key = { env = "DOCGATE_SETUP_TEST_KEY" }
            providers = ["taler", "finext"]
            [providers.taler]
            base_url = "http://127.0.0.1:1/"
            purpose = 1
            extern_key = { env = "DOCGATE_SETUP_TEST_TALER" }
            [providers.finext]
            base_url = "not a url"
        "#;
        let config = Config::parse(text).expect("the file itself is fine");
        let (setup, issues) = Setup::assemble(config, docgate_providers::ALL);
        assert!(
            issues.0.iter().all(|i| i.path == "providers.finext"),
            "{issues}"
        );
        assert!(!issues.is_empty());
        assert_eq!(setup.registry.names().collect::<Vec<_>>(), vec!["taler"]);
        assert!(
            Setup::from_config(Config::parse(text).expect("parses"), docgate_providers::ALL)
                .is_err()
        );
    }
}

#[cfg(unix)]
#[test]
fn the_data_dir_is_created_for_the_gateway_s_user_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("a").join("data");
    create_private_dir(&data).expect("create");
    let mode = std::fs::metadata(&data).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    create_private_dir(&data).expect("an existing one is fine");
}
