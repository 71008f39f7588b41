//! The gateway as providers' own routes see it: [`docgate_core::GatewayHost`] over the
//! tenants, the ledger and the metrics.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use docgate_core::{GatewayHost, OwnedRef, Problem, ProviderEvent, Side, TenantRef};
use http::HeaderMap;

use crate::{
    ledger::{Ledger, LedgerError},
    metrics::Metrics,
    tenants::Tenants,
};

/// The host installed on every request as an extension.
#[derive(Debug)]
pub struct Host {
    pub tenants: Arc<Tenants>,
    pub ledger: Arc<dyn Ledger>,
    pub metrics: Arc<Metrics>,
}

/// A ledger failure as the client sees it: 503, retry shortly, nothing about the database;
/// 507 when the ledger's disk is full (retrying soon will not help; freeing space will).
pub fn ledger_problem(e: &LedgerError) -> Problem {
    tracing::error!(error = %e, "ledger operation failed");
    if e.is_out_of_space() {
        return ledger_full();
    }
    Problem::new(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "ledger_unavailable",
        "Ledger unavailable",
    )
    .with_detail("the gateway's ledger could not be reached; retry shortly")
    .with_side(Side::Gateway)
    .with_retry_after(Duration::from_secs(1))
}

/// 507: the ledger's disk is full, so the write (an upload's record, a session's change) did
/// not happen.
pub fn ledger_full() -> Problem {
    crate::admission::insufficient_storage(
        "the gateway's ledger ran out of storage; nothing was recorded",
    )
}

#[async_trait]
impl GatewayHost for Host {
    fn authenticate(&self, headers: &HeaderMap) -> Result<TenantRef, Problem> {
        self.tenants.authenticate(headers).map(|t| t.to_ref())
    }

    async fn claim(
        &self,
        tenant: &str,
        provider: &str,
        subject: &OwnedRef,
    ) -> Result<bool, Problem> {
        self.ledger
            .claim_ref(tenant, provider, subject, "route")
            .await
            .map_err(|e| ledger_problem(&e))
    }

    async fn owns(
        &self,
        tenant: &str,
        provider: &str,
        subject: &OwnedRef,
    ) -> Result<bool, Problem> {
        self.ledger
            .owns_ref(tenant, provider, subject)
            .await
            .map_err(|e| ledger_problem(&e))
    }

    async fn release(
        &self,
        tenant: &str,
        provider: &str,
        subject: &OwnedRef,
    ) -> Result<(), Problem> {
        self.ledger
            .release_ref(tenant, provider, subject)
            .await
            .map_err(|e| ledger_problem(&e))
    }

    async fn record_event(&self, event: &ProviderEvent) -> Result<bool, Problem> {
        self.ledger
            .record_event(event)
            .await
            .map_err(|e| ledger_problem(&e))
    }

    async fn events(
        &self,
        tenant: &str,
        provider: &str,
        limit: u32,
    ) -> Result<Vec<ProviderEvent>, Problem> {
        self.ledger
            .list_events(tenant, provider, limit)
            .await
            .map_err(|e| ledger_problem(&e))
    }

    fn rejected(&self, code: &str) {
        self.metrics.rejected(code);
    }
}
