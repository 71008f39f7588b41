//! docgate-server: the front door.
//!
//! It turns a configuration (or the sandbox) into a running gateway: tenants and their API
//! keys, the providers, the ledger, the spool, the HTTP API and the delivery worker.
//!
//! - [`config`]: `docgate.toml`; [`sandbox`]: every provider wired to its in-process emulator.
//! - [`routes`]: the HTTP API; [`app`]: shared state and the router; [`serve`]: the accept loop.
//! - [`ledger`]: the durable record of uploads; [`delivery`]: attempts, retries, the worker,
//!   tenant notifications.
//! - [`receipt`]: what the frontend gets back; [`metrics`]: Prometheus.

#![forbid(unsafe_code)]

pub mod app;
pub mod body;
pub mod config;
pub mod delivery;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod receipt;
pub mod registry;
pub mod routes;
pub mod sandbox;
pub mod serve;
pub mod tenants;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use docgate_core::SpoolDir;
use tokio::{net::TcpListener, sync::Semaphore, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
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
    pub limits: Limits,
    pub delivery: DeliverySettings,
    pub tenants: Tenants,
    pub registry: Registry,
}

impl Setup {
    pub fn from_config(config: Config) -> Result<Setup, ConfigError> {
        let mut tenants = Tenants::default();
        for t in config.tenants {
            let notify = match (t.notify_url, t.notify_secret) {
                (Some(url), Some(secret)) => Some(NotifyTarget { url, secret }),
                _ => None,
            };
            let name = t.name.clone();
            if !tenants.add(
                &t.api_key,
                Tenant {
                    name: t.name,
                    providers: t.providers,
                    notify,
                },
            ) {
                return Err(ConfigError::Invalid(format!(
                    "tenant `{name}` has the same api_key as another tenant"
                )));
            }
        }
        let spool_dir = config
            .spool_dir
            .clone()
            .unwrap_or_else(|| config.data_dir.join("spool"));
        let registry = Registry::from_config(config.providers)?;
        for name in tenants_providers(&tenants) {
            if registry.get(&name).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "a tenant uses provider `{name}`, which has no [providers.{name}] section"
                )));
            }
        }
        Ok(Setup {
            listen: config.listen,
            listener: None,
            data_dir: config.data_dir,
            ledger_url: config.ledger,
            spool_dir,
            limits: config.limits,
            delivery: config.delivery,
            tenants,
            registry,
        })
    }
}

fn tenants_providers(t: &Tenants) -> Vec<String> {
    let mut names: Vec<String> = t.all().flat_map(|t| t.providers.clone()).collect();
    names.sort();
    names.dedup();
    names
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let what = what.into();
    move |source| StartError::Io { what, source }
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

impl Gateway {
    /// Open the ledger and spool, resume pending work, bind and serve.
    pub async fn start(setup: Setup) -> Result<Gateway, StartError> {
        std::fs::create_dir_all(&setup.data_dir)
            .map_err(io(format!("creating {}", setup.data_dir.display())))?;
        let spool = SpoolDir::new(&setup.spool_dir, setup.limits.spool_memory_threshold)
            .map_err(io(format!("creating spool {}", setup.spool_dir.display())))?;
        let single_replica = !setup.ledger_url.starts_with("postgres");
        let ledger_url = if setup.ledger_url == "sqlite" {
            SqlLedger::sqlite_url(&setup.data_dir.join("ledger.sqlite"))
        } else {
            setup.ledger_url.clone()
        };
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
        let metrics = Arc::new(Metrics::default());
        let registry = Arc::new(setup.registry);
        let tenants = Arc::new(setup.tenants);
        let deliverer = Arc::new(Deliverer::new(
            ledger.clone(),
            registry.clone(),
            spool.clone(),
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
        let app: AppState = Arc::new(App {
            registry,
            tenants: tenants.clone(),
            spool,
            ledger,
            deliverer: deliverer.clone(),
            upload_slots: Arc::new(Semaphore::new(setup.limits.max_concurrent_uploads)),
            limits: setup.limits.clone(),
            delivery: setup.delivery,
            metrics: metrics.clone(),
        });
        let listener = match setup.listener {
            Some(std_listener) => {
                std_listener
                    .set_nonblocking(true)
                    .map_err(io("configuring the listener"))?;
                TcpListener::from_std(std_listener).map_err(io("adopting the listener"))?
            }
            None => TcpListener::bind(setup.listen)
                .await
                .map_err(io(format!("binding {}", setup.listen)))?,
        };
        let addr = listener
            .local_addr()
            .map_err(io("reading the bound address"))?;
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve::serve(
            listener,
            app::router(app.clone()),
            setup.limits.header_read_timeout,
            shutdown.clone(),
            setup.limits.shutdown_grace,
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
