//! Who is calling: the tenant behind an API key, as an extractor, so no handler
//! authenticates by hand and none can forget to.

use axum::extract::FromRequestParts;
use docgate_core::Problem;
use http::request::Parts;

use crate::{app::AppState, tenants::Tenant};

/// The tenant authenticated by `Authorization: Bearer <api key>`; 401 otherwise.
#[derive(Debug, Clone)]
pub struct Caller(pub Tenant);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        app.tenants
            .authenticate(&parts.headers)
            .cloned()
            .map(Caller)
    }
}
