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
pub mod data_dir_lock;
pub mod delivery;
pub mod failure_log;
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
#[cfg(test)]
mod test_stores;
pub mod web;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use docgate_core::{
    seal::EncryptedStore, ConfigIssues, LocalStore, ObjectStore, Registration, SpoolDir,
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
    #[error(transparent)]
    DataDirLocked(#[from] data_dir_lock::DataDirLockError),
}

/// Create the data directory (and its parents) readable by the gateway's user alone: the
/// ledger in it holds personal data in clear until erased. A directory that exists keeps the
/// mode its operator gave it.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    docgate_core::private_fs::create_dir_all(dir)
}

/// A data or spool dir made by someone else keeps its mode; say so when other users can
/// read it.
fn warn_if_readable_by_others(dir: &Path) {
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(dir) {
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
        if mode & 0o077 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                mode = format!("{:o}", mode & 0o777),
                "this directory is open to other users, and what docgate keeps in it is \
                 personal data (chmod 700 it)"
            );
        }
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let what = what.into();
    move |source| StartError::Io { what, source }
}

/// Spooled objects looked at before serving: the newest half and the oldest half of this
/// many (every object, in a spool holding fewer). The oldest are the ones a key rotation
/// strands.
const KEY_CHECK_SAMPLE: usize = 256;

/// Spooled objects' heads read at once by [`check_spool_keys`].
const KEY_CHECK_READS: usize = 16;

/// The objects [`check_spool_keys`] looks at.
async fn key_check_sample<S: ObjectStore>(store: &S) -> Result<Vec<String>, StartError> {
    let mut objects = store
        .list(spool_keys::UPLOADS)
        .await
        .map_err(io("listing the spool"))?;
    objects.sort_by_key(|o| std::cmp::Reverse(o.modified));
    if objects.len() > KEY_CHECK_SAMPLE {
        objects.drain(KEY_CHECK_SAMPLE / 2..objects.len() - KEY_CHECK_SAMPLE / 2);
    }
    Ok(objects.into_iter().map(|o| o.key).collect())
}

fn key_problem(message: String) -> StartError {
    StartError::Config(ConfigError::Invalid(format!("spool_encryption: {message}")))
}

/// Refuse to start with keys that cannot open what is already spooled — a document whose
/// key is missing or wrong would fail its delivery and be lost with it: a sealed spool on a
/// replica without `spool_encryption`, a key id the configuration lost (a rotation that
/// dropped `previous`), a key that opens none of the sampled documents sealed under its id
/// (wrong bytes under the right id), or a spool whose documents are not sealed at all. A
/// single object that does not open under a key that opens others is left to its delivery,
/// which fails it as altered: one damaged file must not keep the gateway down.
async fn check_spool_keys<S: ObjectStore>(
    store: &S,
    keys: Option<&docgate_core::seal::Keyring>,
) -> Result<(), StartError> {
    let sample = key_check_sample(store).await?;
    // (key, the key id its header names, its first bytes): each object read once, a few at
    // a time (on S3 each read is a request).
    use futures_util::StreamExt as _;
    let mut heads = futures_util::stream::iter(&sample)
        .map(|key| async move { (key, docgate_core::seal::read_head(store, key).await) })
        .buffer_unordered(KEY_CHECK_READS);
    let mut sealed = Vec::with_capacity(sample.len());
    while let Some((key, head)) = heads.next().await {
        match head {
            Ok(head) => sealed.push((key, docgate_core::seal::sealed_key_id(&head), head)),
            // Removed since listed (a delivery finishing): nothing to check.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("reading spooled object {key}"))(e)),
        }
    }
    let Some(keys) = keys else {
        return match sealed.iter().find_map(|(_, id, _)| id.as_deref()) {
            Some(id) => Err(key_problem(format!(
                "not configured, but spooled documents are sealed (under key id `{id}`): this \
                 replica could not deliver them"
            ))),
            None => Ok(()),
        };
    };
    if !sealed.is_empty() && sealed.iter().all(|(_, id, _)| id.is_none()) {
        return Err(key_problem(format!(
            "none of the {} spooled documents looked at is sealed (spooled before encryption \
             was turned on?)",
            sealed.len()
        )));
    }
    // Per key id: (documents that open, the first failure).
    let mut by_id: std::collections::BTreeMap<&str, (usize, Option<std::io::Error>)> =
        Default::default();
    for (key, id, head) in &sealed {
        let Some(id) = id.as_deref() else { continue };
        if !keys.has(id) {
            return Err(key_problem(format!(
                "spooled documents are sealed under key id `{id}`, which is not configured \
                 (keep it in spool_encryption.previous until they are delivered)"
            )));
        }
        let tally = by_id.entry(id).or_default();
        match docgate_core::seal::opens(head, keys, key) {
            Ok(()) => tally.0 += 1,
            Err(e) => {
                tally.1.get_or_insert(e);
            }
        }
    }
    for (id, (opened, failure)) in by_id {
        if let (0, Some(first)) = (opened, failure) {
            return Err(key_problem(format!(
                "the configured key `{id}` opens none of the spooled documents sealed under \
                 that id (wrong key bytes?): {first}"
            )));
        }
    }
    Ok(())
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    pub addr: SocketAddr,
    pub app: AppState,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
    worker: JoinHandle<()>,
    /// The data directory's lock and the SQLite ledger file's: released once both tasks
    /// have stopped (or with the process).
    _locks: Vec<data_dir_lock::DataDirLock>,
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
            // Private like the data dir: it may be elsewhere, and holds documents.
            create_private_dir(&setup.spool_dir)
                .map_err(io(format!("creating spool {}", setup.spool_dir.display())))?;
            warn_if_readable_by_others(&setup.spool_dir);
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
            check_spool_keys(&store, Some(keys)).await?;
            let sealed = EncryptedStore::new(store, keys.clone());
            tracing::info!(
                key_id = keys.current_id(),
                "spooled documents are encrypted"
            );
            Arc::new(sealed)
        }
        None => {
            check_spool_keys(&store, None).await?;
            tracing::warn!(
                "spool_encryption is not configured: spooled documents are stored unencrypted"
            );
            Arc::new(store)
        }
    })
}

/// The ledger, probed first for a clear error; a single replica takes back the leases of
/// the process before it.
/// The ledger, and on SQLite the lock of its file (a ledger kept outside the data directory
/// is not covered by the directory's lock).
/// The ledger's URL: `sqlite` alone is the file in the data directory.
fn sqlite_ledger_url(setup: &Setup) -> String {
    if setup.ledger_url == "sqlite" {
        return SqlLedger::sqlite_url(&setup.data_dir.join("ledger.sqlite"));
    }
    created_when_missing(&setup.ledger_url)
}

fn created_when_missing(url: &str) -> String {
    match ledger::sql::sqlite_location(url) {
        // `sqlite:///path` as the configuration shows it: created when missing, as the
        // default ledger is (sqlx would only open one that exists).
        Some((_, params)) if !params.split('&').any(|p| p.starts_with("mode=")) => {
            let joint = if url.contains('?') { '&' } else { '?' };
            format!("{url}{joint}mode=rwc")
        }
        _ => url.to_owned(),
    }
}

async fn open_ledger(
    setup: &Setup,
    single_replica: bool,
) -> Result<(Arc<dyn Ledger>, Option<data_dir_lock::DataDirLock>), StartError> {
    let ledger_url = sqlite_ledger_url(setup);
    check::probe_ledger(&setup.ledger_url, &setup.data_dir).await?;
    let file_lock = if single_replica {
        let file = ledger::sqlite_file(&ledger_url)?;
        Some(data_dir_lock::DataDirLock::acquire_for_ledger(&file)?)
    } else {
        None
    };
    let ledger: Arc<dyn Ledger> = Arc::new(SqlLedger::connect(&ledger_url).await?);
    Ok((ledger, file_lock))
}

/// A gateway with a ledger of its own starts after a process that is gone: its leases mean
/// nothing (resume its deliveries now), and the sessions it was completing are open again.
/// Run after the orphan sweep: on a disk a crash left full, that sweep is what makes room
/// for this write.
async fn resume_after_last_process(ledger: &dyn Ledger) -> Result<(), StartError> {
    let n = ledger.release_all(ledger::now_ms()).await?;
    if n > 0 {
        tracing::info!(
            resumed = n,
            "resuming deliveries interrupted by the last shutdown"
        );
    }
    Ok(())
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
        warn_if_readable_by_others(&setup.data_dir);
        // Before anything below treats the directory's leases and files as left behind.
        let data_dir = data_dir_lock::DataDirLock::acquire(&setup.data_dir)?;
        let spool = SpoolDir::with_store(
            open_spool(&setup).await?,
            // Validated to at most 16 MiB, which every target's usize holds.
            usize::try_from(setup.limits.spool_memory_threshold).unwrap_or(usize::MAX),
        );
        let single_replica = !setup.ledger_url.starts_with("postgres");
        // A gateway with a ledger of its own takes every spool file its ledger does not name
        // for an orphan (at start, at once): a local spool another such gateway writes to
        // would lose that one's accepted documents. Replicas sharing one PostgreSQL ledger
        // share the spool on purpose.
        let spool_lock = match (single_replica, setup.spool_s3.is_none()) {
            (true, true) => Some(data_dir_lock::DataDirLock::acquire(&setup.spool_dir)?),
            _ => None,
        };
        let (ledger, ledger_lock) = open_ledger(&setup, single_replica).await?;
        let ledger_dir = single_replica
            .then(|| ledger::sqlite_file(&sqlite_ledger_url(&setup)).ok())
            .flatten()
            .and_then(|file| file.parent().map(Path::to_owned))
            .filter(|dir| !dir.as_os_str().is_empty() && *dir != setup.data_dir);
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
        if single_replica {
            resume_after_last_process(ledger.as_ref()).await?;
        }
        // The spool's own filesystem when it is local; the data dir always (scratch space
        // for deliveries, the SQLite ledger by default); a SQLite ledger kept elsewhere too.
        let watched: Vec<PathBuf> = std::iter::once(setup.data_dir.clone())
            .chain(spool.local_root().map(Path::to_owned))
            .chain(ledger_dir)
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
            metric_gauges: Default::default(),
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
            _locks: std::iter::once(data_dir)
                .chain(ledger_lock)
                .chain(spool_lock)
                .collect(),
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
    use docgate_core::seal::Keyring;

    const K1: [u8; 32] = [1; 32];
    const K2: [u8; 32] = [2; 32];

    /// `ledger = "sqlite:///path"`, as the configuration documents it, failed to start on a
    /// new path ("unable to open database file"): sqlx opens only files that exist.
    #[tokio::test]
    async fn regression_a_sqlite_ledger_url_for_a_new_file_starts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("new.sqlite").display());
        let opened = created_when_missing(&url);
        assert_eq!(opened, format!("{url}?mode=rwc"));
        SqlLedger::connect(&opened).await.expect("a new ledger");
        let explicit = format!("{url}?mode=ro");
        assert_eq!(
            created_when_missing(&explicit),
            explicit,
            "a mode given is kept"
        );
        assert_eq!(
            created_when_missing("postgres://u@h/db"),
            "postgres://u@h/db"
        );
    }

    /// Seal `n` documents under `keys` into the spool at `root`, named after `tag`.
    async fn spool_sealed(root: &std::path::Path, keys: &Keyring, tag: &str, n: usize) {
        let sealed = EncryptedStore::new(LocalStore::new(root).expect("store"), keys.clone());
        for i in 0..n {
            let mut w = sealed
                .put(&format!("uploads/{tag}-{i}.doc"))
                .await
                .expect("put");
            w.write(bytes::Bytes::from_static(b"%PDF-1.4 a document"))
                .await
                .expect("write");
            w.commit().await.expect("commit");
        }
    }

    fn refusal(r: Result<(), StartError>) -> String {
        match r {
            Err(e) => e.to_string(),
            Ok(()) => panic!("expected the start to be refused"),
        }
    }

    // A rotation's older documents were not looked at: a config that dropped k1, or held
    // wrong bytes for it, started, and the k1 documents failed their deliveries and were
    // removed with them.
    #[tokio::test]
    async fn regression_keys_that_strand_older_spooled_documents_stop_the_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path()).expect("store");
        let k1 = Keyring::new(("k1", &K1), &[]).expect("keys");
        let rotated = Keyring::new(("k2", &K2), &[("k1", &K1)]).expect("keys");
        spool_sealed(dir.path(), &k1, "old", 3).await;
        // Newer objects, so that the newest all open under k2.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        spool_sealed(dir.path(), &rotated, "new", 10).await;
        assert!(check_spool_keys(&store, Some(&rotated)).await.is_ok());

        let dropped = Keyring::new(("k2", &K2), &[]).expect("keys");
        let text = refusal(check_spool_keys(&store, Some(&dropped)).await);
        assert!(text.contains("`k1`") && text.contains("previous"), "{text}");

        let wrong = Keyring::new(("k2", &K2), &[("k1", &[9; 32])]).expect("keys");
        let text = refusal(check_spool_keys(&store, Some(&wrong)).await);
        assert!(
            text.contains("`k1`") && text.contains("wrong key"),
            "{text}"
        );

        let text = refusal(check_spool_keys(&store, None).await);
        assert!(
            text.contains("not configured") && text.contains("sealed"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn one_damaged_object_does_not_stop_the_start_but_an_unsealed_spool_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path()).expect("store");
        let k1 = Keyring::new(("k1", &K1), &[]).expect("keys");
        spool_sealed(dir.path(), &k1, "doc", 3).await;
        let damaged = dir.path().join("uploads").join("doc-0.doc");
        let mut bytes = std::fs::read(&damaged).expect("read");
        bytes[60] ^= 1; // in the wrapped data key
        std::fs::write(&damaged, bytes).expect("write");
        assert!(check_spool_keys(&store, Some(&k1)).await.is_ok());

        let plain = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(plain.path().join("uploads")).expect("mkdir");
        std::fs::write(plain.path().join("uploads").join("a.doc"), b"%PDF-1.4").expect("write");
        let store = LocalStore::new(plain.path()).expect("store");
        assert!(check_spool_keys(&store, None).await.is_ok());
        let text = refusal(check_spool_keys(&store, Some(&k1)).await);
        assert!(text.contains("none of the 1 spooled documents"), "{text}");
    }

    // A missing secret hid the section's other values, and a provider's constructor named
    // only its first problem.
    #[test]
    fn regression_a_provider_section_s_problems_are_all_named_beside_a_missing_secret() {
        let text = r#"
            [[tenants]]
            name = "a"
            api_key = { env = "DOCGATE_SETUP_TEST_UNSET_KEY" }
            providers = ["taler", "ost"]
            [providers.taler]
            base_url = "not-a-url"
            purpose = 1
            upload_limit = 0
            extern_key = { env = "DOCGATE_SETUP_TEST_UNSET_TALER" }
            [providers.ost]
            base_url = "ftp://kyc.example"
            api_key = " "
            api_secret = { env = "DOCGATE_SETUP_TEST_UNSET_OST" }
            min_document_bytes = 10
            max_document_bytes = 5
        "#;
        let (config, mut issues) = Config::parse_checked(text).expect("toml");
        let (_, more) = Setup::assemble(config, docgate_providers::ALL);
        issues.extend(more);
        let mut paths: Vec<&str> = issues.0.iter().map(|i| i.path.as_str()).collect();
        paths.sort();
        assert_eq!(
            paths,
            vec![
                "providers.ost.api_key",
                "providers.ost.api_secret",
                "providers.ost.base_url",
                "providers.ost.min_document_bytes",
                "providers.taler.base_url",
                "providers.taler.extern_key",
                "providers.taler.upload_limit",
                "tenants.a.api_key",
            ],
            "{issues}"
        );
    }

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
