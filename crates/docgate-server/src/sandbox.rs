//! The sandbox: `docgate serve` with no configuration.
//!
//! Every provider of the table that has an emulator is wired to it, running in this process
//! on a loopback port with its state under `<data_dir>/emulators/<provider>`; the emulators
//! verify what the real providers verify, so what works here works against them. One
//! tenant, `sandbox`, may use every provider; its API key comes from `DOCGATE_SANDBOX_KEY` or
//! is generated.

use std::{net::SocketAddr, path::Path};

use docgate_core::{
    registration::{EmulatorError, EmulatorLaunch, RunningEmulator},
    Registration, Secret,
};
use rand::RngCore;

use crate::{
    config::{ConfigError, DeliverySettings, Limits},
    registry::Registry,
    tenants::{Tenant, Tenants},
    Setup, StartError,
};

/// The running emulators; dropping this stops them.
#[derive(Debug)]
pub struct Sandbox {
    pub api_key: Secret,
    /// Whether the key was generated (and so must be shown to the user).
    pub generated_key: bool,
    pub emulators: Vec<(&'static str, Box<dyn RunningEmulator>)>,
    /// The data directory stays this sandbox's while it runs.
    _data_dir_lock: crate::data_dir_lock::DataDirLock,
}

impl Sandbox {
    /// One line per emulator: name and URL.
    pub fn emulator_urls(&self) -> Vec<(&'static str, String)> {
        self.emulators
            .iter()
            .map(|(name, e)| (*name, e.url()))
            .collect()
    }

    /// The running emulator of `provider`.
    pub fn emulator(&self, provider: &str) -> Option<&dyn RunningEmulator> {
        self.emulators
            .iter()
            .find(|(name, _)| *name == provider)
            .map(|(_, e)| e.as_ref())
    }

    /// The running emulator of `provider` as its concrete type (tests drive its control API).
    pub fn emulator_as<T: 'static>(&self, provider: &str) -> Option<&T> {
        self.emulator(provider)?.as_any().downcast_ref::<T>()
    }
}

fn generate_key() -> String {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("sandbox_{}", hex::encode(bytes))
}

/// Where the sandbox keeps its spool key, so documents spooled before a restart still open.
pub const SPOOL_KEY_FILE: &str = "spool-key";

/// The sandbox's spool keyring: the key in `<data_dir>/spool-key` (64 hex characters, mode
/// 0600), generated on first start. Its id is fixed: there is one sandbox key, never rotated.
fn spool_keyring(data_dir: &Path) -> Result<docgate_core::seal::Keyring, StartError> {
    let path = data_dir.join(SPOOL_KEY_FILE);
    let failed = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |source| StartError::Io { what, source }
    };
    crate::create_private_dir(data_dir).map_err(failed("creating the directory of"))?;
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = zeroize::Zeroizing::new([0u8; 32]);
            rand::rngs::OsRng.fill_bytes(key.as_mut_slice());
            let text = hex::encode(key.as_slice());
            write_private(&path, &text).map_err(failed("writing"))?;
            text
        }
        Err(e) => return Err(failed("reading")(e)),
    };
    let text = zeroize::Zeroizing::new(text);
    let key = docgate_core::seal::parse_hex_key(&text).map_err(|e| {
        StartError::Config(ConfigError::Invalid(format!(
            "sandbox spool key {}: {e}",
            path.display()
        )))
    })?;
    docgate_core::seal::Keyring::new(("sandbox", &key), &[])
        .map_err(|e| StartError::Config(ConfigError::Invalid(format!("sandbox spool key: {e}"))))
}

/// Write `path` readable by its owner only (the mode is set at creation, before any byte of
/// the key is in it), through a renamed temporary file so an interrupted first start leaves
/// no half-written key behind.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn emulator_failed(name: &str, e: EmulatorError) -> StartError {
    match e {
        EmulatorError::Io(source) => StartError::Io {
            what: format!("starting the {name} emulator"),
            source,
        },
        other => StartError::Config(ConfigError::Invalid(format!(
            "sandbox {name} emulator: {other}"
        ))),
    }
}

/// Start the emulators of every provider in `table` that has one, and describe a gateway
/// wired to them.
/// Every emulator in `table`, started for a gateway at `gateway_addr`, and the providers
/// wired to them.
async fn start_emulators(
    table: &[&Registration],
    data_dir: &Path,
    gateway_addr: SocketAddr,
) -> Result<(Registry, Vec<(&'static str, Box<dyn RunningEmulator>)>), StartError> {
    let mut registry = Registry::default();
    let mut emulators = Vec::new();
    for entry in table {
        let Some(start) = entry.emulator else {
            continue;
        };
        let launch = EmulatorLaunch::Sandbox {
            data_dir: data_dir.join("emulators").join(entry.name),
            gateway_url: format!("http://{gateway_addr}"),
        };
        let emulator = start(launch)
            .await
            .map_err(|e| emulator_failed(entry.name, e))?;
        let provider = emulator.sandbox_provider().map_err(|e| {
            StartError::Config(ConfigError::Issues(
                e.under(&format!("sandbox.{}", entry.name)),
            ))
        })?;
        registry.insert(provider);
        emulators.push((entry.name, emulator));
    }
    Ok((registry, emulators))
}

/// The sandbox's one tenant: every provider, OST's direct-to-S3 posts, and the origins in
/// `DOCGATE_SANDBOX_ORIGINS`.
fn sandbox_tenant(registry: &Registry) -> Tenant {
    let mut tenant = Tenant::new("sandbox", registry.names().map(str::to_owned).collect());
    // The sandbox is for trying everything, including OST's uninspected direct-to-S3 posts;
    // a configured tenant must opt in to them.
    let mut ost = toml::Table::new();
    ost.insert("presigned_post".into(), toml::Value::Boolean(true));
    tenant.options = std::sync::Arc::new([("ost".to_owned(), ost)].into_iter().collect());
    // Frontends on other origins (the Uppy example, a team's dev server) may use the
    // sandbox's upload sessions when listed here, comma-separated.
    if let Ok(origins) = std::env::var("DOCGATE_SANDBOX_ORIGINS") {
        tenant.cors_origins = std::sync::Arc::new(
            origins
                .split(',')
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
        );
    }
    tenant
}

pub async fn setup(
    listen: SocketAddr,
    data_dir: &Path,
    key: Option<String>,
    table: &[&Registration],
) -> Result<(Setup, Sandbox), StartError> {
    // Bind first: emulators that call the gateway back (OST's webhooks) sign over its URL.
    let listener = std::net::TcpListener::bind(listen).map_err(|source| StartError::Io {
        what: format!("binding {listen}"),
        source,
    })?;
    let gateway_addr = listener.local_addr().map_err(|source| StartError::Io {
        what: "reading the bound address".into(),
        source,
    })?;
    // The data dir is made private before the emulators create their folders in it (a
    // directory that exists keeps its mode).
    crate::create_private_dir(data_dir).map_err(|source| StartError::Io {
        what: format!("creating {}", data_dir.display()),
        source,
    })?;
    // A sandbox already running on this directory: refused before the emulators clear their
    // temporary folders under it. Held by the sandbox; the gateway shares it.
    let data_dir_lock = crate::data_dir_lock::DataDirLock::acquire(data_dir)?;
    let (registry, emulators) = start_emulators(table, data_dir, gateway_addr).await?;
    let (api_key, generated_key) = match key {
        Some(k) if !k.trim().is_empty() => (Secret::new(k.trim()), false),
        _ => (Secret::new(generate_key()), true),
    };
    let tenant = sandbox_tenant(&registry);
    let mut tenants = Tenants::default();
    tenants.add(&api_key, tenant);
    let setup = Setup {
        listen,
        listener: Some(listener),
        data_dir: data_dir.to_owned(),
        ledger_url: "sqlite".into(),
        spool_dir: data_dir.join("spool"),
        limits: Limits::default(),
        // Documents stay a day after their final status, so a failed upload can be
        // retried from the console while trying things out.
        delivery: DeliverySettings {
            retention: std::time::Duration::from_secs(24 * 3600),
            ..DeliverySettings::default()
        },
        tenants,
        registry,
        web: crate::web::WebSettings {
            pages: true,
            sandbox_tenant: Some("sandbox".into()),
            local_only: gateway_addr.ip().is_loopback(),
        },
        spool_encryption: Some(spool_keyring(data_dir)?),
        spool_s3: None,
    };
    Ok((
        setup,
        Sandbox {
            api_key,
            generated_key,
            emulators,
            _data_dir_lock: data_dir_lock,
        },
    ))
}
