//! Starting this emulator from `docgate emulate ost` or from the sandbox.

use std::sync::Arc;

use docgate_core::{
    registration::{ConfigIssues, EmulatorError, EmulatorLaunch, RunningEmulator},
    Provider,
};
use docgate_emulator::cli::Launch;

use super::{start, Emulator, EmulatorArgs};

/// The registration's emulator entry. In the sandbox, OST's webhooks go to the gateway.
pub async fn launch(launch: EmulatorLaunch) -> Result<Box<dyn RunningEmulator>, EmulatorError> {
    let launch = Launch::<EmulatorArgs>::from("ost", launch)?;
    let emulator = start(launch.args.into_options(launch.listen, launch.data_dir)).await?;
    if let Some(gateway) = &launch.gateway_url {
        emulator.set_webhook_url(Some(format!("{gateway}/v1/webhooks/ost")));
    }
    Ok(Box::new(emulator))
}

impl RunningEmulator for Emulator {
    fn url(&self) -> String {
        Emulator::url(self)
    }

    fn banner(&self) -> Vec<String> {
        Emulator::banner(self)
    }

    fn sandbox_provider(&self) -> Result<Arc<dyn Provider>, ConfigIssues> {
        let provider = crate::OstProvider::new(self.sandbox_config())
            .map_err(|e| ConfigIssues::one("ost", e))?;
        Ok(Arc::new(provider))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
