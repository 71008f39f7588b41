//! The providers this gateway offers, by name.

use std::{collections::BTreeMap, sync::Arc};

use docgate_core::Provider;

use crate::config::{ConfigError, ProvidersConfig};

#[derive(Debug, Default)]
pub struct Registry {
    providers: BTreeMap<String, Arc<dyn Provider>>,
    /// OST has gateway routes beyond uploads (presigned POST, KYC submit, webhooks).
    pub ost: Option<Arc<docgate_ost::OstProvider>>,
}

impl Registry {
    pub fn insert(&mut self, provider: Arc<dyn Provider>) {
        self.providers.insert(provider.name().to_owned(), provider);
    }

    pub fn insert_ost(&mut self, ost: docgate_ost::OstProvider) {
        let ost = Arc::new(ost);
        self.insert(ost.clone());
        self.ost = Some(ost);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.providers.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.providers.keys().map(String::as_str)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn Provider>> {
        self.providers.values()
    }

    /// Build the configured providers. A provider whose section is absent is not offered.
    pub fn from_config(config: ProvidersConfig) -> Result<Registry, ConfigError> {
        let mut r = Registry::default();
        let invalid = |p: &str, e: &dyn std::fmt::Display| {
            ConfigError::Invalid(format!("providers.{p}: {e}"))
        };
        if let Some(c) = config.taler {
            r.insert(Arc::new(
                docgate_taler::TalerProvider::new(c).map_err(|e| invalid("taler", &e))?,
            ));
        }
        if let Some(c) = config.sila {
            r.insert(Arc::new(
                docgate_sila::SilaProvider::new(c).map_err(|e| invalid("sila", &e))?,
            ));
        }
        if let Some(c) = config.finext {
            r.insert(Arc::new(
                docgate_finext::FinextProvider::new(c).map_err(|e| invalid("finext", &e))?,
            ));
        }
        if let Some(c) = config.ost {
            r.insert_ost(docgate_ost::OstProvider::new(c).map_err(|e| invalid("ost", &e))?);
        }
        Ok(r)
    }
}
