//! This provider's line in the gateway's table (`docgate_providers::ALL`).

use std::sync::Arc;

use docgate_core::{
    registration::{section, ConfigIssues, Registration, StartEmulator},
    Provider,
};

use crate::{OstConfig, OstProvider};

/// How the gateway builds, configures and emulates this provider.
pub static REGISTRATION: Registration = Registration {
    name: "ost",
    from_config,
    tenant_options: Some(crate::routes::check_tenant_options),
    emulator: EMULATOR,
};

#[cfg(feature = "emulator")]
const EMULATOR: Option<StartEmulator> = Some(|launch| Box::pin(crate::emulator::launch(launch)));
#[cfg(not(feature = "emulator"))]
const EMULATOR: Option<StartEmulator> = None;

/// The section read, every problem of it named at its key, then the provider built.
fn from_config(value: toml::Value) -> Result<Arc<dyn Provider>, ConfigIssues> {
    let config: OstConfig = section(value)?;
    let problems = config.problems();
    if !problems.is_empty() {
        let mut issues = ConfigIssues::default();
        for (key, problem) in problems {
            issues.push(key, problem);
        }
        return Err(issues);
    }
    let provider = OstProvider::new(config).map_err(|e| ConfigIssues::one("", e))?;
    Ok(Arc::new(provider))
}
