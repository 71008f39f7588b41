//! `docgate.toml`: the gateway's configuration.
//!
//! Everything has a sensible default except tenants and providers, which are the point of a
//! configuration. Secrets are never written in the file: each is `{ env = "VAR" }` or
//! `{ file = "/path" }` (see [`docgate_core::Secret`]) and is loaded when the file is read, so a
//! missing secret fails at start-up, not at the first upload.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use docgate_core::Secret;
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Ledger (SQLite), spool and emulator state live here unless configured elsewhere.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `"sqlite"` (default: `<data_dir>/ledger.sqlite`), `"sqlite:///path"`, or `"postgres://…"`.
    #[serde(default = "default_ledger")]
    pub ledger: String,
    /// Where documents wait for delivery. Replicas sharing a PostgreSQL ledger must share this
    /// directory too. Default `<data_dir>/spool`.
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub delivery: DeliverySettings,
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    #[serde(default)]
    pub providers: ProvidersConfig,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("docgate-data")
}

fn default_ledger() -> String {
    "sqlite".into()
}

/// Connection and request limits of the front door.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// A client must send its request head within this time (slow-loris defence).
    #[serde(deserialize_with = "docgate_core::duration::deserialize")]
    pub header_read_timeout: Duration,
    /// A request body that sends nothing for this long is cut off.
    #[serde(deserialize_with = "docgate_core::duration::deserialize")]
    pub body_idle_timeout: Duration,
    /// Uploads being received at once; past it, 503 with Retry-After.
    pub max_concurrent_uploads: usize,
    /// Documents up to this size are spooled in memory, larger ones on disk.
    pub spool_memory_threshold: usize,
    /// How long shutdown waits for in-flight requests.
    #[serde(deserialize_with = "docgate_core::duration::deserialize")]
    pub shutdown_grace: Duration,
    /// Refuse uploads without a Content-Length (411) instead of counting chunked bodies.
    pub require_content_length: bool,
    /// After refusing a request early (413, 415, 401, …) the gateway still reads up to this
    /// many body bytes and drops them, so the client receives the refusal instead of a
    /// connection reset. A request declaring more is not read out. 0 turns this off.
    pub refused_body_read_out: u64,
}

impl Limits {
    /// The read-out bounds for refused bodies.
    pub fn read_out(&self) -> docgate_core::read_out::ReadOut {
        docgate_core::read_out::ReadOut {
            max_bytes: self.refused_body_read_out,
            idle: self.body_idle_timeout.min(Duration::from_secs(5)),
            total: Duration::from_secs(30),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(30),
            max_concurrent_uploads: 64,
            spool_memory_threshold: 256 * 1024,
            shutdown_grace: Duration::from_secs(30),
            require_content_length: false,
            refused_body_read_out: 32 * 1024 * 1024,
        }
    }
}

/// How deliveries are attempted and retried.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    /// A synchronous request waits this long for delivery, then answers 202.
    #[serde(deserialize_with = "docgate_core::duration::deserialize")]
    pub sync_budget: Duration,
    /// One attempt may take this long.
    #[serde(deserialize_with = "docgate_core::duration::deserialize")]
    pub attempt_timeout: Duration,
    /// First retry delay; doubled each attempt up to `max_backoff`, with ±20 % jitter.
    #[serde(deserialize_with = "docgate_core::duration::deserialize")]
    pub initial_backoff: Duration,
    #[serde(deserialize_with = "docgate_core::duration::deserialize")]
    pub max_backoff: Duration,
    /// Give up (status `failed`) after this many attempts…
    pub max_attempts: u32,
    /// …or once the upload is this old.
    #[serde(deserialize_with = "docgate_core::duration::deserialize")]
    pub max_age: Duration,
    /// A claimed delivery is this replica's for this long unless renewed; a crashed replica's
    /// deliveries are picked up by others when it expires.
    #[serde(deserialize_with = "docgate_core::duration::deserialize")]
    pub lease: Duration,
    /// How often the worker looks for due deliveries.
    #[serde(deserialize_with = "docgate_core::duration::deserialize")]
    pub poll_interval: Duration,
    /// Deliveries run at once by one replica's worker.
    pub worker_concurrency: usize,
    /// Keep spooled documents this long after delivery is final (0 = remove at once).
    #[serde(deserialize_with = "docgate_core::duration::deserialize")]
    pub retention: Duration,
    /// Per-provider overrides of the give-up limits: `[delivery.providers.taler]`.
    pub providers: std::collections::BTreeMap<String, ProviderDelivery>,
}

/// When to give up on one provider's deliveries, if not the global limits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderDelivery {
    pub max_attempts: Option<u32>,
    #[serde(default, deserialize_with = "docgate_core::duration::deserialize_opt")]
    pub max_age: Option<Duration>,
}

impl DeliverySettings {
    /// `(max_attempts, max_age)` for `provider`.
    pub fn limits_for(&self, provider: &str) -> (u32, Duration) {
        let o = self.providers.get(provider);
        (
            o.and_then(|o| o.max_attempts).unwrap_or(self.max_attempts),
            o.and_then(|o| o.max_age).unwrap_or(self.max_age),
        )
    }
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            sync_budget: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            max_attempts: 50,
            max_age: Duration::from_secs(24 * 3600),
            lease: Duration::from_secs(90),
            poll_interval: Duration::from_millis(500),
            worker_concurrency: 16,
            retention: Duration::ZERO,
            providers: std::collections::BTreeMap::new(),
        }
    }
}

/// A frontend application allowed to upload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: String,
    /// Sent by the frontend as `Authorization: Bearer <key>`.
    pub api_key: Secret,
    /// Providers this tenant may use.
    pub providers: Vec<String>,
    /// Final receipts are POSTed here, signed with `notify_secret`.
    #[serde(default)]
    pub notify_url: Option<String>,
    #[serde(default)]
    pub notify_secret: Option<Secret>,
}

/// One section per provider; a provider without a section is not offered.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersConfig {
    pub taler: Option<docgate_taler::TalerConfig>,
    pub sila: Option<docgate_sila::SilaConfig>,
    pub finext: Option<docgate_finext::FinextConfig>,
    pub ost: Option<docgate_ost::OstConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Config {
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.tenants.is_empty() {
            return Err(ConfigError::Invalid(
                "at least one [[tenants]] entry is needed".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for t in &self.tenants {
            if !names.insert(t.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "tenant `{}` is defined twice",
                    t.name
                )));
            }
            if t.notify_url.is_some() != t.notify_secret.is_some() {
                return Err(ConfigError::Invalid(format!(
                    "tenant `{}`: notify_url and notify_secret go together",
                    t.name
                )));
            }
            if let Some(url) = &t.notify_url {
                let parsed = url::Url::parse(url).map_err(|e| {
                    ConfigError::Invalid(format!("tenant `{}`: notify_url: {e}", t.name))
                })?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(ConfigError::Invalid(format!(
                        "tenant `{}`: notify_url must be http(s)",
                        t.name
                    )));
                }
            }
        }
        if self.delivery.lease < Duration::from_secs(3) {
            return Err(ConfigError::Invalid(
                "delivery.lease must be at least 3s (it is renewed every third of it)".into(),
            ));
        }
        if self.delivery.max_attempts == 0
            || self
                .delivery
                .providers
                .values()
                .any(|p| p.max_attempts == Some(0))
        {
            return Err(ConfigError::Invalid(
                "delivery max_attempts must be at least 1".into(),
            ));
        }
        if self.limits.max_concurrent_uploads == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_concurrent_uploads must be at least 1".into(),
            ));
        }
        Ok(())
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.spool_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("spool"))
    }
}
