//! Tenants: who may upload, with which key, to which providers.
//!
//! API keys are compared by their SHA-256 digest in a map, so lookup time does not depend on
//! how much of a guessed key is right, and the keys themselves are not kept around.

use std::{collections::BTreeMap, collections::HashMap, sync::Arc};

use docgate_core::{Problem, Secret, TenantRef};
use http::HeaderMap;
use sha2::{Digest, Sha256};

/// One tenant, as the request handlers see it.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub name: String,
    pub providers: Arc<Vec<String>>,
    /// `[tenants.options.<provider>]`, checked by each provider's registration.
    pub options: Arc<BTreeMap<String, toml::Table>>,
    pub notify: Option<NotifyTarget>,
    /// Uploads in flight at once; `None`: the default share of the global limit.
    pub max_concurrent_uploads: Option<usize>,
    /// Browser origins allowed to use this tenant's upload sessions (CORS).
    pub cors_origins: Arc<Vec<String>>,
}

/// Where a tenant's final receipts are POSTed.
#[derive(Debug, Clone)]
pub struct NotifyTarget {
    pub url: String,
    pub secret: Secret,
}

impl Tenant {
    /// A tenant that may use `providers`, without options or notifications.
    pub fn new(name: impl Into<String>, providers: Vec<String>) -> Tenant {
        Tenant {
            name: name.into(),
            providers: Arc::new(providers),
            options: Arc::default(),
            notify: None,
            max_concurrent_uploads: None,
            cors_origins: Arc::default(),
        }
    }

    pub fn may_use(&self, provider: &str) -> bool {
        self.providers.iter().any(|p| p == provider)
    }

    /// What a provider's routes see of this tenant.
    pub fn to_ref(&self) -> TenantRef {
        TenantRef {
            name: self.name.clone(),
            providers: self.providers.clone(),
            options: self.options.clone(),
        }
    }
}

/// All tenants, by key digest.
#[derive(Debug, Default, Clone)]
pub struct Tenants {
    by_key: HashMap<[u8; 32], Tenant>,
    by_name: HashMap<String, Tenant>,
}

impl Tenants {
    /// Add a tenant. False (and nothing added) when another tenant already has this key:
    /// one key must identify one tenant.
    pub fn add(&mut self, key: &Secret, tenant: Tenant) -> bool {
        let digest: [u8; 32] = Sha256::digest(key.expose().as_bytes()).into();
        if self.by_key.contains_key(&digest) {
            return false;
        }
        self.by_key.insert(digest, tenant.clone());
        self.by_name.insert(tenant.name.clone(), tenant);
        true
    }

    pub fn all(&self) -> impl Iterator<Item = &Tenant> {
        self.by_name.values()
    }

    pub fn by_name(&self, name: &str) -> Option<&Tenant> {
        self.by_name.get(name)
    }

    /// The tenant behind `Authorization: Bearer <key>`, or 401.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<&Tenant, Problem> {
        let value = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(Problem::unauthorized)?;
        let (scheme, key) = value
            .trim()
            .split_once(' ')
            .ok_or_else(Problem::unauthorized)?;
        if !scheme.eq_ignore_ascii_case("bearer") || key.trim().is_empty() {
            return Err(Problem::unauthorized());
        }
        let digest: [u8; 32] = Sha256::digest(key.trim().as_bytes()).into();
        self.by_key
            .get(&digest)
            .ok_or_else(|| Problem::unauthorized().with_detail("unknown API key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants() -> Tenants {
        let mut t = Tenants::default();
        t.add(
            &Secret::new("k1"),
            Tenant::new("acme", vec!["taler".into()]),
        );
        t
    }

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, v.parse().expect("header"));
        h
    }

    #[test]
    fn bearer_keys_identify_tenants() {
        let t = tenants();
        assert_eq!(
            t.authenticate(&headers("Bearer k1"))
                .map(|t| t.name.as_str()),
            Ok("acme")
        );
        assert_eq!(
            t.authenticate(&headers("bearer  k1 "))
                .map(|t| t.name.as_str()),
            Ok("acme")
        );
        for bad in ["Bearer k2", "Basic k1", "k1", "Bearer "] {
            assert_eq!(
                t.authenticate(&headers(bad))
                    .map(|_| ())
                    .map_err(|p| p.status.as_u16()),
                Err(401),
                "{bad}"
            );
        }
        assert!(t.authenticate(&HeaderMap::new()).is_err());
    }
}
