//! The providers this gateway offers, by name, built from the provider table.

use std::{collections::BTreeMap, sync::Arc};

use docgate_core::{ConfigIssues, Provider, Registration};

use crate::config::ProvidersConfig;

/// The configured providers.
#[derive(Debug, Default)]
pub struct Registry {
    providers: BTreeMap<String, Arc<dyn Provider>>,
}

impl Registry {
    pub fn insert(&mut self, provider: Arc<dyn Provider>) {
        self.providers.insert(provider.name().to_owned(), provider);
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

    /// Build every provider that has a `[providers.<name>]` section, through its entry in
    /// `table`. A section no entry claims is an error (a typo must not silently disable a
    /// provider); every problem of every section is reported at once.
    pub fn from_config(
        sections: ProvidersConfig,
        table: &[&Registration],
    ) -> Result<Registry, ConfigIssues> {
        let mut registry = Registry::default();
        let mut issues = ConfigIssues::default();
        for (name, section) in sections {
            let path = format!("providers.{name}");
            let Some(entry) = table.iter().find(|r| r.name == name) else {
                let known: Vec<&str> = table.iter().map(|r| r.name).collect();
                issues.push(
                    path,
                    format!(
                        "no such provider in this build (providers: {})",
                        known.join(", ")
                    ),
                );
                continue;
            };
            match (entry.from_config)(section) {
                Ok(provider) => registry.insert(provider),
                Err(e) => issues.extend(e.under(&path)),
            }
        }
        issues.into_result(registry)
    }
}
