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
    let (api_key, generated_key) = match key {
        Some(k) if !k.trim().is_empty() => (Secret::new(k.trim()), false),
        _ => (Secret::new(generate_key()), true),
    };
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
        },
    };
    Ok((
        setup,
        Sandbox {
            api_key,
            generated_key,
            emulators,
        },
    ))
}
