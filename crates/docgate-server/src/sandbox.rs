//! The sandbox: `docgate serve` with no configuration.
//!
//! Every provider is wired to its emulator, running in this process on a loopback port with
//! its state under `<data_dir>/emulators/<provider>`; the emulators verify what the real
//! providers verify, so what works here works against them. One tenant, `sandbox`, may use
//! every provider; its API key comes from `DOCGATE_SANDBOX_KEY` or is generated.

use std::{net::SocketAddr, path::Path};

use docgate_core::Secret;
use rand::RngCore;

use crate::{
    config::{DeliverySettings, Limits},
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
    pub taler: docgate_taler::emulator::Emulator,
    pub sila: docgate_sila::emulator::Emulator,
    pub finext: docgate_finext::emulator::Emulator,
    pub ost: docgate_ost::emulator::Emulator,
}

impl Sandbox {
    /// One line per emulator: name and URL.
    pub fn emulator_urls(&self) -> Vec<(&'static str, String)> {
        vec![
            ("taler", self.taler.url()),
            ("sila", self.sila.url()),
            ("finext", self.finext.url()),
            ("ost", self.ost.url()),
        ]
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn generate_key() -> String {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("sandbox_{}", hex::encode(bytes))
}

/// Start the emulators and describe a gateway wired to them.
pub async fn setup(
    listen: SocketAddr,
    data_dir: &Path,
    key: Option<String>,
) -> Result<(Setup, Sandbox), StartError> {
    let emu_dir = data_dir.join("emulators");
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| StartError::Io { what, source }
    };
    let taler = docgate_taler::emulator::start(docgate_taler::emulator::EmulatorOptions::new(
        loopback(),
        emu_dir.join("taler"),
    ))
    .await
    .map_err(io("starting the taler emulator"))?;
    let sila = docgate_sila::emulator::start(docgate_sila::emulator::EmulatorOptions::new(
        loopback(),
        emu_dir.join("sila"),
    ))
    .await
    .map_err(io("starting the sila emulator"))?;
    let finext = docgate_finext::emulator::start(docgate_finext::emulator::EmulatorOptions::new(
        loopback(),
        emu_dir.join("finext"),
    ))
    .await
    .map_err(io("starting the finext emulator"))?;
    let ost = docgate_ost::emulator::start(docgate_ost::emulator::EmulatorOptions::new(
        loopback(),
        emu_dir.join("ost"),
    ))
    .await
    .map_err(io("starting the ost emulator"))?;

    // Bind now: the OST emulator signs its webhooks over the gateway's exact URL.
    let listener = std::net::TcpListener::bind(listen).map_err(io(&format!("binding {listen}")))?;
    let gateway_addr = listener
        .local_addr()
        .map_err(io("reading the bound address"))?;
    ost.set_webhook_url(Some(format!("http://{gateway_addr}/v1/webhooks/ost")));
    let ost_config = ost.sandbox_config();
    let mut registry = Registry::default();
    let invalid = |p: &str, e: &dyn std::fmt::Display| {
        crate::config::ConfigError::Invalid(format!("sandbox {p}: {e}"))
    };
    registry.insert(std::sync::Arc::new(
        docgate_taler::TalerProvider::new(taler.sandbox_config())
            .map_err(|e| invalid("taler", &e))?,
    ));
    registry.insert(std::sync::Arc::new(
        docgate_sila::SilaProvider::new(sila.sandbox_config()).map_err(|e| invalid("sila", &e))?,
    ));
    registry.insert(std::sync::Arc::new(
        docgate_finext::FinextProvider::new(finext.sandbox_config())
            .map_err(|e| invalid("finext", &e))?,
    ));
    registry.insert_ost(docgate_ost::OstProvider::new(ost_config).map_err(|e| invalid("ost", &e))?);

    let (api_key, generated_key) = match key {
        Some(k) if !k.trim().is_empty() => (Secret::new(k.trim()), false),
        _ => (Secret::new(generate_key()), true),
    };
    let mut tenants = Tenants::default();
    tenants.add(
        &api_key,
        Tenant {
            name: "sandbox".into(),
            providers: registry.names().map(str::to_owned).collect(),
            notify: None,
        },
    );
    let setup = Setup {
        listen,
        listener: Some(listener),
        data_dir: data_dir.to_owned(),
        ledger_url: "sqlite".into(),
        spool_dir: data_dir.join("spool"),
        limits: Limits::default(),
        delivery: DeliverySettings::default(),
        tenants,
        registry,
    };
    Ok((
        setup,
        Sandbox {
            api_key,
            generated_key,
            taler,
            sila,
            finext,
            ost,
        },
    ))
}
