//! `docgate.toml`: the gateway's configuration.
//!
//! Everything has a sensible default except tenants and providers, which are the point of a
//! configuration. Secrets are never written in the file: each is `{ env = "VAR" }` or
//! `{ file = "/path" }` (see [`docgate_core::Secret`]) and is loaded when the file is read, so a
//! missing secret fails at start-up, not at the first upload.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

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

/// Connection and request limits of the front door. Every buffer, timer and count a client
/// can push on has a bound here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// A new connection must send its first request head within this time, and every later
    /// one within this time of the previous answer (slow-loris and idle-socket defence).
    #[serde(deserialize_with = "docgate_core::duration::deserialize")]
    pub header_read_timeout: Duration,
    /// Open connections at once; past it new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Bytes of a request head (request line and headers); past it, 431.
    #[serde(deserialize_with = "docgate_core::size::deserialize")]
    pub max_header_bytes: u64,
    /// A request body that sends nothing for this long is cut off (408 `body_timeout`).
    #[serde(deserialize_with = "docgate_core::duration::deserialize")]
    pub body_idle_timeout: Duration,
    /// A body slower than this many bytes/s, averaged over `body_rate_window`, is cut off
    /// (408 `body_too_slow`). 0 turns the check off.
    #[serde(deserialize_with = "docgate_core::size::deserialize")]
    pub min_body_rate: u64,
    #[serde(deserialize_with = "docgate_core::duration::deserialize")]
    pub body_rate_window: Duration,
    /// A body must be complete within this time of its request (408 `body_too_slow`).
    #[serde(deserialize_with = "docgate_core::duration::deserialize")]
    pub body_deadline: Duration,
    /// Uploads being received at once; past it, 503 with Retry-After.
    pub max_concurrent_uploads: usize,
    /// A tenant's share of `max_concurrent_uploads` when its own `max_concurrent_uploads` is
    /// not set, so one tenant cannot starve the others.
    pub tenant_upload_share: f64,
    /// Below this much free space on the spool's or ledger's filesystem, `/readyz` is not
    /// ready and uploads get 507 before their body is read.
    #[serde(deserialize_with = "docgate_core::size::deserialize")]
    pub min_free_space: u64,
    /// Documents up to this size are spooled in memory, larger ones on disk.
    pub spool_memory_threshold: usize,
    /// Bytes of one multipart part's headers.
    #[serde(deserialize_with = "docgate_core::size::deserialize")]
    pub max_part_header_bytes: u64,
    /// Bytes of a document's filename (UTF-8, after trimming); longer is 422.
    pub max_filename_bytes: usize,
    /// Text fields of one upload, and their bytes together.
    pub max_fields: usize,
    #[serde(deserialize_with = "docgate_core::size::deserialize")]
    pub max_field_bytes: u64,
    /// How long shutdown waits for in-flight requests.
    #[serde(deserialize_with = "docgate_core::duration::deserialize")]
    pub shutdown_grace: Duration,
    /// Refuse uploads without a Content-Length (411) instead of counting chunked bodies.
    pub require_content_length: bool,
    /// After refusing a request early (413, 415, 401, …) the gateway still reads up to this
    /// many body bytes and drops them, so the client receives the refusal instead of a
    /// connection reset. A request declaring more is not read out. 0 turns this off.
    #[serde(deserialize_with = "docgate_core::size::deserialize")]
    pub refused_body_read_out: u64,
    /// Unauthenticated provider webhooks: body size, time to read and answer, and how many at
    /// once (past it, 503).
    #[serde(deserialize_with = "docgate_core::size::deserialize")]
    pub webhook_body_limit: u64,
    #[serde(deserialize_with = "docgate_core::duration::deserialize")]
    pub webhook_timeout: Duration,
    pub webhook_concurrency: usize,
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

    /// How upload bodies must arrive.
    pub fn body_rules(&self) -> crate::body::BodyRules {
        crate::body::BodyRules {
            idle: self.body_idle_timeout,
            min_rate: self.min_body_rate,
            window: self.body_rate_window,
            deadline: self.body_deadline,
        }
    }

    /// A tenant's upload slots when its configuration does not say.
    pub fn default_tenant_slots(&self) -> usize {
        let share = (self.max_concurrent_uploads as f64 * self.tenant_upload_share).ceil();
        (share as usize).clamp(1, self.max_concurrent_uploads)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_header_bytes: 16 * 1024,
            body_idle_timeout: Duration::from_secs(30),
            min_body_rate: 1024,
            body_rate_window: Duration::from_secs(10),
            body_deadline: Duration::from_secs(15 * 60),
            max_concurrent_uploads: 64,
            tenant_upload_share: 0.5,
            min_free_space: 256 << 20,
            spool_memory_threshold: 256 * 1024,
            max_part_header_bytes: 8 * 1024,
            max_filename_bytes: 255,
            max_fields: 100,
            max_field_bytes: 64 * 1024,
            shutdown_grace: Duration::from_secs(30),
            require_content_length: false,
            refused_body_read_out: 32 * 1024 * 1024,
            webhook_body_limit: 256 * 1024,
            webhook_timeout: Duration::from_secs(10),
            webhook_concurrency: 16,
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
    /// Uploads this tenant may have in flight at once (default: `limits.tenant_upload_share`
    /// of `limits.max_concurrent_uploads`).
    #[serde(default)]
    pub max_concurrent_uploads: Option<usize>,
    /// Final receipts are POSTed here, signed with `notify_secret`.
    #[serde(default)]
    pub notify_url: Option<String>,
    #[serde(default)]
    pub notify_secret: Option<Secret>,
    /// Per-provider tenant options, `[tenants.options.<provider>]`, checked by the provider.
    #[serde(default)]
    pub options: BTreeMap<String, toml::Table>,
}

/// One section per provider, `[providers.<name>]`, parsed by that provider's registration; a
/// provider without a section is not offered.
pub type ProvidersConfig = BTreeMap<String, toml::Value>;

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
    #[error("configuration:\n{0}")]
    Issues(docgate_core::ConfigIssues),
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
