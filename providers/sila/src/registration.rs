//! This provider's line in the gateway's table (`docgate_providers::ALL`).

use docgate_core::registration::{build_checked, Registration, StartEmulator};

use crate::SilaProvider;

/// How the gateway builds, configures and emulates this provider.
pub static REGISTRATION: Registration = Registration {
    name: "sila",
    from_config: |section| build_checked(section, SilaProvider::new),
    tenant_options: None,
    emulator: EMULATOR,
};

#[cfg(feature = "emulator")]
const EMULATOR: Option<StartEmulator> = Some(|launch| Box::pin(crate::emulator::launch(launch)));
#[cfg(not(feature = "emulator"))]
const EMULATOR: Option<StartEmulator> = None;
