//! `docgate.toml`: the gateway's configuration.
//!
//! Everything has a sensible default except tenants and providers, which are the point of a
//! configuration. Secrets are never written in the file: each is `{ env = "VAR" }` or
//! `{ file = "/path" }` (see [`docgate_core::Secret`]) and is loaded when the file is read, so a
//! missing secret fails at start-up, not at the first upload.
//!
//! A broken configuration is reported whole: each top-level section, each tenant and each
//! secret is read on its own, so one problem does not hide the next (see
//! [`Config::load_checked`]).

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use docgate_core::{registration::section_with_unresolved, ConfigIssues, Secret};
use serde::Deserialize;

/// The whole configuration file. Read section by section ([`Config::parse_checked`]), not
/// with one derived `Deserialize`, so every section's problems are found in one pass.
#[derive(Debug)]
pub struct Config {
    /// Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Ledger (SQLite), spool and emulator state live here unless configured elsewhere.
    /// Default `docgate-data`.
    pub data_dir: PathBuf,
    /// `"sqlite"` (default: `<data_dir>/ledger.sqlite`), `"sqlite:///path"`, or `"postgres://…"`.
    pub ledger: String,
    /// Where documents wait for delivery, as a directory. Replicas sharing a PostgreSQL ledger
    /// must share it too (or use `spool = "s3://…"`). Default `<data_dir>/spool`.
    pub spool_dir: Option<PathBuf>,
    /// `spool = "s3://bucket/prefix"`: documents wait in S3 instead (see `[spool_s3]`).
    pub spool: Option<String>,
    /// `[spool_s3]`: how to reach the bucket of `spool`.
    pub spool_s3: Option<SpoolS3Config>,
    pub limits: Limits,
    pub delivery: DeliverySettings,
    pub tenants: Vec<TenantConfig>,
    pub providers: ProvidersConfig,
    /// `[web]`: the upload page and the console (off by default).
    pub web: crate::web::WebSettings,
    /// `spool_encryption = { … }`: seal every spooled document (off when absent).
    pub spool_encryption: Option<SpoolEncryptionConfig>,
}

/// The top-level keys of a configuration file.
const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "ledger",
    "spool_dir",
    "spool",
    "spool_s3",
    "limits",
    "delivery",
    "tenants",
    "providers",
    "web",
    "spool_encryption",
];

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
    /// A body must be complete within this time of its request (408 `body_too_slow`); under
    /// an hour (what is spooled longer unrecorded is taken for an orphan).
    #[serde(deserialize_with = "docgate_core::duration::deserialize")]
    pub body_deadline: Duration,
    /// Uploads being received at once; past it, an upload waits in line (`slot_wait`).
    pub max_concurrent_uploads: usize,
    /// How long an upload that finds no free slot waits for one, in a line as long as the
    /// slots, before 503 with Retry-After. 0 answers 503 at once.
    #[serde(deserialize_with = "docgate_core::duration::deserialize")]
    pub slot_wait: Duration,
    /// A tenant's share of `max_concurrent_uploads` when its own `max_concurrent_uploads` is
    /// not set, so one tenant cannot starve the others.
    pub tenant_upload_share: f64,
    /// Below this much free space on the spool's or ledger's filesystem, `/readyz` is not
    /// ready and uploads get 507 before their body is read. Default: 256 MiB, or a tenth of
    /// the smallest of those filesystems when that is less (a small disk stays usable).
    #[serde(default, deserialize_with = "docgate_core::size::deserialize_opt")]
    pub min_free_space: Option<u64>,
    /// Documents up to this size are spooled in memory, larger ones on disk. At most
    /// `MAX_SPOOL_MEMORY_THRESHOLD`: every upload in flight may hold this much.
    #[serde(deserialize_with = "docgate_core::size::deserialize")]
    pub spool_memory_threshold: u64,
    /// Bytes of one multipart part's headers.
    #[serde(deserialize_with = "docgate_core::size::deserialize")]
    pub max_part_header_bytes: u64,
    /// Bytes of a document's filename (UTF-8, after trimming); longer is 422.
    pub max_filename_bytes: usize,
    /// Pieces one tus document may arrive in (each PATCH's bytes are a spool file: an
    /// inode and a block); past it, 409 `too_many_pieces`.
    pub max_tus_pieces: usize,
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

/// The longest `limits.slot_wait` accepted.
const MAX_SLOT_WAIT: Duration = Duration::from_secs(300);

/// The largest `limits.spool_memory_threshold` accepted: with the default 64 uploads in
/// flight, up to 1 GiB of documents in memory before they reach the spool.
const MAX_SPOOL_MEMORY_THRESHOLD: u64 = 16 * 1024 * 1024;

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
            slot_wait: Duration::from_secs(10),
            tenant_upload_share: 0.5,
            min_free_space: None,
            spool_memory_threshold: 256 * 1024,
            max_part_header_bytes: 8 * 1024,
            max_filename_bytes: 255,
            max_tus_pieces: 2048,
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
    /// Browser origins (`https://app.example`) allowed to use this tenant's upload sessions.
    #[serde(default)]
    pub cors_origins: Vec<String>,
}

/// `spool_encryption = { key = { env = "…" }, key_id = "k2", previous = [{ key = …, key_id =
/// "k1" }] }`: new spooled documents are sealed under `key`; documents sealed under a
/// `previous` key still open (rotation). Keys are 32 bytes written as 64 hex characters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolEncryptionConfig {
    pub key: Secret,
    pub key_id: String,
    #[serde(default)]
    pub previous: Vec<PreviousSpoolKey>,
}

/// `[spool_s3]`: the bucket's endpoint and credentials (secrets as `{ env = … }` or
/// `{ file = … }`; without them, `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolS3Config {
    /// An S3-compatible endpoint (`https://minio.internal:9000`); AWS's own when absent.
    pub endpoint: Option<String>,
    /// Default `us-east-1`.
    pub region: Option<String>,
    /// Address the bucket in the path (most S3-compatible stores) rather than the host name.
    #[serde(default)]
    pub path_style: bool,
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    /// A connection to the store must be made within this (default 5 s).
    #[serde(default, deserialize_with = "docgate_core::duration::deserialize_opt")]
    pub connect_timeout: Option<Duration>,
    /// No byte from the store for this long fails the request (default 30 s); a frozen
    /// store holds an upload about three times this long (the client's attempts), and its
    /// clean-up as long again.
    #[serde(default, deserialize_with = "docgate_core::duration::deserialize_opt")]
    pub read_timeout: Option<Duration>,
    /// One request attempt, a whole part's upload included (default 120 s).
    #[serde(default, deserialize_with = "docgate_core::duration::deserialize_opt")]
    pub attempt_timeout: Option<Duration>,
}

/// A key that only opens documents sealed before a rotation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousSpoolKey {
    pub key: Secret,
    pub key_id: String,
}

impl SpoolEncryptionConfig {
    /// The keyring, or `None` with every reason in `issues` (paths under `spool_encryption`).
    /// Keys that could not be loaded were reported when the file was read and are skipped.
    pub fn keyring(&self, issues: &mut ConfigIssues) -> Option<docgate_core::seal::Keyring> {
        use docgate_core::seal::{check_key_id, parse_hex_key, Keyring};
        let entries = std::iter::once(("spool_encryption".to_owned(), &self.key, &self.key_id))
            .chain(
                self.previous
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (format!("spool_encryption.previous[{i}]"), &p.key, &p.key_id)),
            );
        let mut keys = Vec::new();
        let mut usable = true;
        for (path, key, id) in entries {
            if let Err(e) = check_key_id(id) {
                issues.push(format!("{path}.key_id"), e);
                usable = false;
            }
            if !key.is_resolved() {
                usable = false;
                continue;
            }
            // The message never quotes the value: it is the key (or a near miss of it).
            match parse_hex_key(key.expose()) {
                Ok(bytes) => keys.push((id.as_str(), bytes)),
                Err(e) => {
                    issues.push(format!("{path}.key"), e);
                    usable = false;
                }
            }
        }
        if !usable {
            return None;
        }
        let (current, previous) = keys.split_first()?;
        let previous: Vec<(&str, &[u8; 32])> = previous.iter().map(|(id, k)| (*id, &**k)).collect();
        match Keyring::new((current.0, &current.1), &previous) {
            Ok(ring) => Some(ring),
            Err(e) => {
                issues.push("spool_encryption", e);
                None
            }
        }
    }
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

impl ConfigError {
    /// Name the file a parse error is in.
    fn in_file(self, file: &std::path::Path) -> ConfigError {
        match self {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: file.to_owned(),
                message,
            },
            other => other,
        }
    }
}

/// A browser origin as browsers send it: `scheme://host[:port]`, nothing more (matching is
/// exact, so anything else would silently never match).
fn check_origin(origin: &str) -> Result<(), String> {
    let url = url::Url::parse(origin)
        .map_err(|_| "not an origin such as https://app.example".to_owned())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("not an http(s) origin such as https://app.example".into());
    }
    if url.host_str().is_some_and(|h| h.contains('*')) {
        return Err("wildcards are not supported: list each origin".into());
    }
    let written = url.origin().ascii_serialization();
    if written != origin {
        // Browsers send the serialised form: lower case, no default port, punycode, no path.
        return Err(format!("browsers send it as `{written}`: write that"));
    }
    Ok(())
}

impl Config {
    /// Read `path`; every problem in it is reported at once ([`ConfigError::Issues`]).
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let (config, issues) = Config::load_checked(path)?;
        issues.into_result(config).map_err(ConfigError::Issues)
    }

    /// Read `path` and go on past problems: the configuration (defaults where a section is
    /// broken, unresolved secrets where one cannot be loaded) and everything found wrong.
    /// `Err` only when there is nothing to go on: the file is unreadable or not TOML.
    pub fn load_checked(path: &std::path::Path) -> Result<(Config, ConfigIssues), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse_checked(&text).map_err(|e| e.in_file(path))
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let (config, issues) = Config::parse_checked(text)?;
        issues.into_result(config).map_err(ConfigError::Issues)
    }

    /// [`Config::load_checked`] for text already read.
    pub fn parse_checked(text: &str) -> Result<(Config, ConfigIssues), ConfigError> {
        let table: toml::Table = text.parse().map_err(|e| syntax_error(text, &e))?;
        let mut issues = ConfigIssues::default();
        let config = Sections {
            table,
            issues: &mut issues,
        }
        .into_config();
        config.validate(&mut issues);
        Ok((config, issues))
    }

    /// Values each section could not check on its own.
    fn validate(&self, issues: &mut ConfigIssues) {
        let mut names = std::collections::HashSet::new();
        for t in &self.tenants {
            let path = format!("tenants.{}", t.name);
            if !names.insert(t.name.as_str()) {
                issues.push(&path, "a tenant of this name is defined twice");
            }
            if t.notify_url.is_some() != t.notify_secret.is_some() {
                issues.push(&path, "notify_url and notify_secret go together");
            }
            if let Some(url) = &t.notify_url {
                match url::Url::parse(url) {
                    Err(e) => issues.push(format!("{path}.notify_url"), e),
                    Ok(parsed) if !matches!(parsed.scheme(), "http" | "https") => {
                        issues.push(format!("{path}.notify_url"), "must be http(s)")
                    }
                    Ok(_) => {}
                }
            }
            if t.max_concurrent_uploads == Some(0) {
                issues.push(
                    format!("{path}.max_concurrent_uploads"),
                    "must be at least 1",
                );
            }
            for origin in &t.cors_origins {
                if let Err(why) = check_origin(origin) {
                    issues.push(format!("{path}.cors_origins"), format!("`{origin}`: {why}"));
                }
            }
        }
        let ledger = self.ledger.as_str();
        if !(ledger == "sqlite"
            || ledger.starts_with("sqlite:")
            || ledger.starts_with("postgres://")
            || ledger.starts_with("postgresql://"))
        {
            // Not echoed: a database URL may carry a password.
            issues.push(
                "ledger",
                "must be \"sqlite\", \"sqlite:///path\" or \"postgres://user@host:port/db\"",
            );
        }
        if self.delivery.lease < Duration::from_secs(3) {
            issues.push(
                "delivery.lease",
                "must be at least 3s (it is renewed every third of it)",
            );
        } else if self.delivery.attempt_timeout >= self.delivery.lease {
            // An attempt whose lease renewals fail (its ledger unreachable) must end before
            // the lease does, or another replica starts a second delivery beside it.
            issues.push(
                "delivery.lease",
                "must be longer than delivery.attempt_timeout",
            );
        }
        if self.limits.body_deadline >= crate::delivery::worker::ORPHAN_AGE {
            // A multipart upload's first documents are spooled as its later parts arrive:
            // the orphan sweep would take them for abandoned before the upload is recorded.
            issues.push(
                "limits.body_deadline",
                "must be under 1h (spooled files unrecorded that long are removed as orphans)",
            );
        }
        if self.delivery.max_attempts == 0 {
            issues.push("delivery.max_attempts", "must be at least 1");
        }
        for (provider, p) in &self.delivery.providers {
            if p.max_attempts == Some(0) {
                issues.push(
                    format!("delivery.providers.{provider}.max_attempts"),
                    "must be at least 1",
                );
            }
        }
        if self.delivery.poll_interval.is_zero() {
            // The worker would poll the ledger in a busy loop.
            issues.push("delivery.poll_interval", "must be greater than 0");
        }
        if self.delivery.worker_concurrency == 0 {
            issues.push("delivery.worker_concurrency", "must be at least 1");
        }
        for provider in self.delivery.providers.keys() {
            if !self.providers.contains_key(provider) {
                issues.push(
                    format!("delivery.providers.{provider}"),
                    "no [providers] section of this name",
                );
            }
        }
        let share = self.limits.tenant_upload_share;
        if !(share > 0.0 && share <= 1.0) {
            issues.push(
                "limits.tenant_upload_share",
                "must be above 0 and at most 1",
            );
        }
        if self.limits.max_concurrent_uploads == 0 {
            issues.push("limits.max_concurrent_uploads", "must be at least 1");
        }
        if self.limits.slot_wait > MAX_SLOT_WAIT {
            // A client kept waiting longer than this has given up or timed out already.
            issues.push("limits.slot_wait", "must be at most 5m");
        }
        if self.limits.spool_memory_threshold > MAX_SPOOL_MEMORY_THRESHOLD {
            issues.push("limits.spool_memory_threshold", "must be at most 16MiB");
        }
        if let Some(encryption) = &self.spool_encryption {
            encryption.keyring(issues);
        }
        self.spool_s3_settings(issues);
    }

    /// The S3 spool's settings when `spool = "s3://…"`, every problem reported to `issues`.
    pub fn spool_s3_settings(
        &self,
        issues: &mut ConfigIssues,
    ) -> Option<docgate_spool_s3::S3Settings> {
        let Some(url) = &self.spool else {
            if self.spool_s3.is_some() {
                issues.push(
                    "spool_s3",
                    "is only read with spool = \"s3://bucket/prefix\"",
                );
            }
            return None;
        };
        if self.spool_dir.is_some() {
            issues.push(
                "spool",
                "set either spool (S3) or spool_dir (a directory), not both",
            );
        }
        let location = match docgate_spool_s3::S3Location::parse(url) {
            Ok(location) => location,
            Err(e) => {
                issues.push("spool", e.to_string());
                return None;
            }
        };
        let s3 = self.spool_s3.as_ref();
        let mut settings = docgate_spool_s3::S3Settings::new(
            location,
            s3.and_then(|c| c.region.clone())
                .unwrap_or_else(|| "us-east-1".to_owned()),
        );
        if let Some(c) = s3 {
            settings.endpoint = c.endpoint.clone();
            settings.path_style = c.path_style;
            let timeouts = [
                (
                    "spool_s3.connect_timeout",
                    c.connect_timeout,
                    &mut settings.connect_timeout,
                ),
                (
                    "spool_s3.read_timeout",
                    c.read_timeout,
                    &mut settings.read_timeout,
                ),
                (
                    "spool_s3.attempt_timeout",
                    c.attempt_timeout,
                    &mut settings.attempt_timeout,
                ),
            ];
            for (path, set, timeout) in timeouts {
                match set {
                    Some(d) if d.is_zero() => issues.push(path, "must be above 0"),
                    Some(d) => *timeout = d,
                    None => {}
                }
            }
            match (&c.access_key_id, &c.secret_access_key) {
                (Some(id), Some(secret)) => {
                    settings.access_key_id = Some(id.clone());
                    settings.secret_access_key = Some(secret.clone());
                }
                (None, None) => {}
                _ => issues.push(
                    "spool_s3",
                    "set both access_key_id and secret_access_key, or neither (AWS_* variables)",
                ),
            }
        }
        Some(settings)
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.spool_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("spool"))
    }
}

/// A TOML syntax error with its line and column, and without the source line toml would
/// quote: that line may hold a secret someone wrote inline.
fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let position = e
        .span()
        .map(|span| {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            format!("line {line}, column {column}: ")
        })
        .unwrap_or_default();
    let message = docgate_core::registration::ConfigIssue::new("", e.message()).message;
    ConfigError::Parse {
        path: PathBuf::from("<config>"),
        message: format!("{position}{message}"),
    }
}

/// The file's top-level table, taken apart one section at a time.
struct Sections<'a> {
    table: toml::Table,
    issues: &'a mut ConfigIssues,
}

impl Sections<'_> {
    fn into_config(mut self) -> Config {
        let config = Config {
            listen: self.take("listen").unwrap_or_else(default_listen),
            data_dir: self.take("data_dir").unwrap_or_else(default_data_dir),
            ledger: self.take("ledger").unwrap_or_else(default_ledger),
            spool_dir: self.take("spool_dir"),
            spool: self.take("spool"),
            spool_s3: self.take("spool_s3"),
            limits: self.take("limits").unwrap_or_default(),
            delivery: self.take("delivery").unwrap_or_default(),
            tenants: self.take_tenants(),
            providers: self.take("providers").unwrap_or_default(),
            web: self.take("web").unwrap_or_default(),
            spool_encryption: self.take("spool_encryption"),
        };
        for key in self.table.keys() {
            self.issues.push(
                key.as_str(),
                format!(
                    "unknown key (expected one of: {})",
                    TOP_LEVEL_KEYS.join(", ")
                ),
            );
        }
        config
    }

    /// The section `key`, if present and usable; its problems become issues under `key`.
    fn take<T: serde::de::DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        let value = self.table.remove(key)?;
        let (parsed, issues) = section_with_unresolved(value);
        self.issues.extend(issues.under(key));
        parsed
    }

    /// Each `[[tenants]]` entry on its own, so one broken tenant does not hide another's
    /// problems.
    fn take_tenants(&mut self) -> Vec<TenantConfig> {
        let entries = match self.table.remove("tenants") {
            None => Vec::new(),
            Some(toml::Value::Array(entries)) => entries,
            Some(_) => {
                self.issues
                    .push("tenants", "must be an array of tables: [[tenants]]");
                return Vec::new();
            }
        };
        if entries.is_empty() {
            self.issues
                .push("tenants", "at least one [[tenants]] entry is needed");
        }
        let mut tenants = Vec::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let path = match entry.get("name").and_then(toml::Value::as_str) {
                Some(name) => format!("tenants.{name}"),
                None => format!("tenants[{i}]"),
            };
            let (tenant, issues) = section_with_unresolved(entry);
            self.issues.extend(issues.under(&path));
            tenants.extend(tenant);
        }
        tenants
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(issues: &ConfigIssues) -> Vec<&str> {
        issues.0.iter().map(|i| i.path.as_str()).collect()
    }

    #[test]
    fn a_valid_config_takes_defaults_for_what_it_does_not_say() {
        std::env::set_var("DOCGATE_CONFIG_TEST_KEY", "k");
        let config = Config::parse(
            "[[tenants]]\nname = \"shop\"\napi_key = { env = \"DOCGATE_CONFIG_TEST_KEY\" }\n\
             providers = []\n",
        )
        .expect("valid");
        assert_eq!(config.listen, default_listen());
        assert_eq!(config.ledger, "sqlite");
        assert_eq!(config.spool_dir(), PathBuf::from("docgate-data/spool"));
        assert_eq!(config.tenants[0].api_key.expose(), "k");
    }

    // Each of these passed `docgate check` and then never worked (origins never matched,
    // the worker polled in a busy loop, a provider's limits applied to nothing).
    #[test]
    fn regression_values_that_could_never_work_are_named() {
        std::env::set_var("DOCGATE_CONFIG_TEST_KEY", "k");
        let text = "[limits]\ntenant_upload_share = 7.5\nheader_read_timeout = \"soon\"\n\
             typo = 1\n[delivery]\npoll_interval = \"0s\"\nworker_concurrency = 0\n\
             [delivery.providers.nosuch]\nmax_attempts = 3\n\
             [[tenants]]\nname = \"shop\"\napi_key = { env = \"DOCGATE_CONFIG_TEST_KEY\" }\n\
             providers = []\nmax_concurrent_uploads = 0\n\
             cors_origins = [\"https://ok.example\", \"*\", \"https://app.example/path\", \"not a url\", \
             \"HTTPS://A.EXAMPLE\", \"https://*.example.com\"]\n";
        let (_, issues) = Config::parse_checked(text).expect("toml");
        assert!(
            issues
                .to_string()
                .contains("browsers send it as `https://a.example`"),
            "{issues}"
        );
        let mut found = paths(&issues);
        found.sort();
        assert_eq!(
            found,
            vec![
                "delivery.poll_interval",
                "delivery.providers.nosuch",
                "delivery.worker_concurrency",
                "limits.header_read_timeout",
                "limits.tenant_upload_share",
                "limits.typo",
                "tenants.shop.cors_origins",
                "tenants.shop.cors_origins",
                "tenants.shop.cors_origins",
                "tenants.shop.cors_origins",
                "tenants.shop.cors_origins",
                "tenants.shop.max_concurrent_uploads",
            ],
            "{issues}"
        );
    }

    /// The paths of the issues of a configuration: `settings`, then one tenant.
    fn issues_with(settings: &str) -> Vec<String> {
        let text = format!(
            "{settings}[[tenants]]\nname = \"shop\"\n\
             api_key = {{ env = \"DOCGATE_CONFIG_TEST_KEY\" }}\nproviders = []\n"
        );
        let (_, issues) = Config::parse_checked(&text).expect("toml");
        paths(&issues).into_iter().map(str::to_owned).collect()
    }

    // A lease shorter than an attempt was taken: with its renewals failing (the ledger out of
    // reach), another replica claimed the upload and delivered it beside the first attempt.
    #[test]
    fn regression_a_lease_no_longer_than_an_attempt_is_named() {
        std::env::set_var("DOCGATE_CONFIG_TEST_KEY", "k");
        let with = |lease: &str| {
            issues_with(&format!(
                "[delivery]\nattempt_timeout = \"60s\"\nlease = \"{lease}\"\n"
            ))
        };
        assert_eq!(with("30s"), vec!["delivery.lease"]);
        assert_eq!(with("60s"), vec!["delivery.lease"]);
        assert!(with("61s").is_empty());
    }

    // A body deadline of an hour or more let the orphan sweep remove a multipart upload's
    // first document while its later parts still arrived: the upload was then accepted
    // naming a file that was gone.
    #[test]
    fn regression_a_body_deadline_the_orphan_sweep_would_cut_short_is_named() {
        std::env::set_var("DOCGATE_CONFIG_TEST_KEY", "k");
        let with =
            |deadline: &str| issues_with(&format!("[limits]\nbody_deadline = \"{deadline}\"\n"));
        assert_eq!(with("1h"), vec!["limits.body_deadline"]);
        assert!(with("59m").is_empty());
    }

    #[test]
    fn the_slot_wait_is_zero_to_five_minutes() {
        std::env::set_var("DOCGATE_CONFIG_TEST_KEY", "k");
        let with = |wait: &str| {
            let text = format!(
                "[limits]\nslot_wait = \"{wait}\"\n[[tenants]]\nname = \"shop\"\n\
                 api_key = {{ env = \"DOCGATE_CONFIG_TEST_KEY\" }}\nproviders = []\n"
            );
            let (config, issues) = Config::parse_checked(&text).expect("toml");
            (config.limits.slot_wait, paths(&issues).join(","))
        };
        assert_eq!(with("0s"), (Duration::ZERO, String::new()));
        assert_eq!(with("5m"), (Duration::from_secs(300), String::new()));
        assert_eq!(with("301s").1, "limits.slot_wait");
    }

    // `spool_memory_threshold` was the one byte limit that took only whole bytes: a config
    // written like the others ("256KiB") stopped the start. Unbounded, it let every upload
    // in flight hold a document of any size in memory.
    #[test]
    fn regression_the_spool_memory_threshold_takes_a_size_and_is_bounded() {
        std::env::set_var("DOCGATE_CONFIG_TEST_KEY", "k");
        let with = |threshold: &str| {
            let text = format!(
                "[limits]\nspool_memory_threshold = {threshold}\n[[tenants]]\nname = \"shop\"\n\
                 api_key = {{ env = \"DOCGATE_CONFIG_TEST_KEY\" }}\nproviders = []\n"
            );
            let (config, issues) = Config::parse_checked(&text).expect("toml");
            (
                config.limits.spool_memory_threshold,
                paths(&issues).join(","),
            )
        };
        assert_eq!(with("\"128KiB\""), (128 * 1024, String::new()));
        assert_eq!(with("4096"), (4096, String::new()));
        assert_eq!(with("\"16MiB\"").1, "");
        assert_eq!(with("\"17MiB\"").1, "limits.spool_memory_threshold");
    }

    #[test]
    fn every_problem_is_reported_at_its_path_in_one_pass() {
        let text = r#"
            lisen = "127.0.0.1:1"
            ledger = "mysql://u:pw-not-shown@db/x"
            [limits]
            max_connections = "many"
            [delivery]
            lease = "1s"
            [[tenants]]
            name = "shop"
            api_key = { env = "DOCGATE_CONFIG_TEST_UNSET" }
            providers = []
            notify_url = "ftp://example.com/hook"
            notify_secret = { env = "DOCGATE_CONFIG_TEST_UNSET_NOTIFY" }
            [[tenants]]
            name = "bank"
            api_key = { env = "DOCGATE_CONFIG_TEST_UNSET" }
            providers = []
            [[tenants]]
            api_key = { env = "DOCGATE_CONFIG_TEST_UNSET" }
        "#;
        let (config, issues) = Config::parse_checked(text).expect("TOML is fine");
        assert_eq!(
            paths(&issues),
            vec![
                "limits.max_connections",
                "tenants.shop.api_key",
                "tenants.shop.notify_secret",
                "tenants.bank.api_key",
                "tenants[2].api_key",
                "tenants[2]",
                "lisen",
                "tenants.shop.notify_url",
                "ledger",
                "delivery.lease",
            ],
            "{issues}"
        );
        assert!(!issues.to_string().contains("pw-not-shown"), "{issues}");
        // What could be read is there, missing secrets unresolved.
        assert_eq!(config.tenants.len(), 2);
        assert!(!config.tenants[1].api_key.is_resolved());
        assert!(matches!(
            Config::parse(text),
            Err(ConfigError::Issues(all)) if all == issues
        ));
    }

    #[test]
    fn an_s3_spool_is_read_with_its_table_and_its_mistakes_are_named() {
        let (config, issues) = Config::parse_checked(
            r#"
            spool = "s3://kyc-spool/fleet/"
            [spool_s3]
            endpoint = "http://127.0.0.1:9000"
            path_style = true
            read_timeout = "5s"
        "#,
        )
        .expect("TOML is fine");
        // Only what this test is about: a file without tenants is reported too.
        let about_spool = |issues: &ConfigIssues| -> Vec<String> {
            paths(issues)
                .into_iter()
                .filter(|p| *p != "tenants")
                .map(String::from)
                .collect()
        };
        assert!(about_spool(&issues).is_empty(), "{issues}");
        let s3 = config
            .spool_s3_settings(&mut ConfigIssues::default())
            .expect("settings");
        assert_eq!(
            (s3.location.bucket.as_str(), s3.location.prefix.as_str()),
            ("kyc-spool", "fleet/")
        );
        assert_eq!(
            (s3.endpoint.as_deref(), s3.path_style, s3.region.as_str()),
            (Some("http://127.0.0.1:9000"), true, "us-east-1")
        );
        // A frozen store held an upload three read timeouts long, and its clean-up as long
        // again: an operator can shorten them.
        assert_eq!(
            (s3.read_timeout, s3.connect_timeout, s3.attempt_timeout),
            (
                Duration::from_secs(5),
                Duration::from_secs(5),
                Duration::from_secs(120)
            )
        );

        for (text, path) in [
            (r#"spool = "/var/spool/docgate""#, "spool"),
            (r#"spool = "s3://Bad_Bucket/x""#, "spool"),
            ("spool = \"s3://kyc-spool\"\nspool_dir = \"/x\"", "spool"),
            ("[spool_s3]\nregion = \"eu-west-1\"", "spool_s3"),
            (
                "spool = \"s3://kyc-spool\"\n[spool_s3]\naccess_key_id = { env = \"HOME\" }",
                "spool_s3",
            ),
            (
                "spool = \"s3://kyc-spool\"\n[spool_s3]\nattempt_timeout = \"0s\"",
                "spool_s3.attempt_timeout",
            ),
        ] {
            let (_, issues) = Config::parse_checked(text).expect("TOML is fine");
            assert_eq!(about_spool(&issues), vec![path], "{text}: {issues}");
        }
    }

    #[test]
    fn syntax_errors_keep_line_and_column_but_not_the_line() {
        let text = "[[tenants]]\nname = \"a\"\napi_key = s3cr3t-unquoted\n";
        let Err(ConfigError::Parse { message, .. }) = Config::parse(text) else {
            panic!("a syntax error");
        };
        assert!(message.starts_with("line 3, column 11: "), "{message}");
        assert!(!message.contains("s3cr3t"), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn an_inline_secret_gets_the_syntax_to_use_instead() {
        let text = "[[tenants]]\nname = \"a\"\napi_key = \"s3cr3t-inline\"\nproviders = []\n";
        let Err(ConfigError::Issues(issues)) = Config::parse(text) else {
            panic!("refused");
        };
        assert_eq!(paths(&issues), vec!["tenants.a.api_key"]);
        let message = &issues.0[0].message;
        assert!(
            message.contains("{ env = \"VAR\" }") && message.contains("{ file = \"/path\" }"),
            "{message}"
        );
        assert!(!message.contains("s3cr3t"), "{message}");
    }

    #[test]
    fn a_file_without_tenants_says_so() {
        let (_, issues) = Config::parse_checked("listen = \"127.0.0.1:9\"").expect("toml");
        assert_eq!(paths(&issues), vec!["tenants"]);
    }

    #[test]
    fn spool_encryption_keys_are_checked_with_everything_else() {
        std::env::set_var("DOCGATE_CONFIG_TEST_KEY", "k");
        std::env::set_var("DOCGATE_CONFIG_TEST_KEK2", "ab".repeat(32));
        std::env::set_var("DOCGATE_CONFIG_TEST_KEK1", "cd".repeat(32));
        std::env::set_var("DOCGATE_CONFIG_TEST_KEK_SHORT", "secret-not-shown");
        let tenant = "[[tenants]]\nname = \"shop\"\napi_key = { env = \"DOCGATE_CONFIG_TEST_KEY\" }\nproviders = []\n";
        let good = format!(
            "spool_encryption = {{ key = {{ env = \"DOCGATE_CONFIG_TEST_KEK2\" }}, key_id = \"k2\", \
             previous = [{{ key = {{ env = \"DOCGATE_CONFIG_TEST_KEK1\" }}, key_id = \"k1\" }}] }}\n{tenant}"
        );
        let config = Config::parse(&good).expect("valid");
        let ring = config
            .spool_encryption
            .as_ref()
            .and_then(|e| e.keyring(&mut ConfigIssues::default()))
            .expect("keyring");
        assert_eq!(ring.current_id(), "k2");
        let bad = format!(
            "spool_encryption = {{ key = {{ env = \"DOCGATE_CONFIG_TEST_KEK_SHORT\" }}, key_id = \"k 2\", \
             previous = [{{ key = {{ env = \"DOCGATE_CONFIG_TEST_KEK_UNSET\" }}, key_id = \"k1\" }}] }}\n{tenant}"
        );
        let (_, issues) = Config::parse_checked(&bad).expect("toml");
        assert_eq!(
            paths(&issues),
            vec![
                "spool_encryption.previous[0].key",
                "spool_encryption.key_id",
                "spool_encryption.key",
            ],
            "{issues}"
        );
        let text = issues.to_string();
        assert!(text.contains("64 hexadecimal"), "{text}");
        assert!(text.contains("DOCGATE_CONFIG_TEST_KEK_UNSET"), "{text}");
        assert!(!text.contains("secret-not-shown"), "{text}");
    }
}
