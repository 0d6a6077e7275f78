//! Simulated okc-6: a SOAP-style XML web service (`schemas/formats/soap.md`).

use std::sync::Arc;

use axum::Router;

use super::Upstream;

/// Path of the service.
pub const PATH: &str = "/okc-6/service";
/// How a sync authenticates.
pub const AUTH_HINT: &str = "basic auth `okc6` / `sandbox-okc-6`";

/// The okc-6 router.
pub fn router(up: Arc<Upstream>) -> Router {
    Router::new().with_state(up)
}
