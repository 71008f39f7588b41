//! Starting this emulator from `docgate emulate sila` or from the sandbox.

use std::sync::Arc;

use docgate_core::{
    registration::{ConfigIssues, EmulatorError, EmulatorLaunch, RunningEmulator},
    Provider,
};
use docgate_emulator::cli::{Launch, NoArgs};

use super::{start, Emulator, EmulatorOptions};

/// The registration's emulator entry.
pub async fn launch(launch: EmulatorLaunch) -> Result<Box<dyn RunningEmulator>, EmulatorError> {
    let launch = Launch::<NoArgs>::from("sila", launch)?;
    let emulator = start(EmulatorOptions::new(launch.listen, launch.data_dir)).await?;
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
        let provider = crate::SilaProvider::new(self.sandbox_config())
            .map_err(|e| ConfigIssues::one("sila", e))?;
        Ok(Arc::new(provider))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
