//! This provider's line in the gateway's table (`docgate_providers::ALL`).

use docgate_core::registration::{build_checked, Registration, StartEmulator};

use crate::OstProvider;

/// How the gateway builds, configures and emulates this provider.
pub static REGISTRATION: Registration = Registration {
    name: "ost",
    from_config: |section| build_checked(section, OstProvider::new),
    tenant_options: Some(crate::routes::check_tenant_options),
    emulator: EMULATOR,
};

#[cfg(feature = "emulator")]
const EMULATOR: Option<StartEmulator> = Some(|launch| Box::pin(crate::emulator::launch(launch)));
#[cfg(not(feature = "emulator"))]
const EMULATOR: Option<StartEmulator> = None;
