//! Bearer-token authentication and role checks.
//!
//! A missing, unknown or disabled token gets one and the same 401; a known user whose role may
//! not use an endpoint gets 403.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde_json::json;

use super::{ApiError, AppState, RequestCtx};
use crate::audit::{AuditAction, AuditOutcome, NewAuditEntry};
use crate::users::{Role, User, token_hash};

/// The authenticated caller and the request's context.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user.
    pub user: User,
    /// Request id and client address.
    pub ctx: RequestCtx,
}

impl Caller {
    /// Ok when the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.user.role) {
            Ok(())
        } else {
            Err(ApiError::WrongRole)
        }
    }

    /// An audit entry for this caller with everything but what the handler decides.
    pub fn entry(&self, action: AuditAction, outcome: AuditOutcome) -> NewAuditEntry {
        NewAuditEntry {
            user_id: Some(self.user.id),
            role: self.user.role.as_str().to_owned(),
            organisation: Some(self.user.organisation.clone()),
            action,
            subject: None,
            subject_key_id: None,
            purpose: None,
            outcome,
            checks: vec!["authenticated".to_owned()],
            break_glass: None,
            records_returned: 0,
            client_addr: self.ctx.client.clone(),
            request_id: self.ctx.id.clone(),
            refers_to: None,
        }
    }

    /// Checks the role for an endpoint that touches personal data: a refusal is audited
    /// (action `action`, outcome refused) before the 403 is returned.
    pub async fn require_audited(
        &self,
        state: &AppState,
        roles: &[Role],
        action: AuditAction,
    ) -> Result<(), ApiError> {
        if let Err(refused) = self.require(roles) {
            let mut entry = self.entry(action, AuditOutcome::Refused);
            entry.checks.push("role:refused".to_owned());
            state.record(entry).await?;
            return Err(refused);
        }
        Ok(())
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ctx = parts
            .extensions
            .get::<RequestCtx>()
            .cloned()
            .unwrap_or_else(|| RequestCtx {
                id: "unknown".to_owned(),
                client: None,
            });
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 256)
            .ok_or(ApiError::Unauthorized)?;
        let user = state
            .store()
            .user_by_token(token_hash(token))
            .await?
            .filter(|u| !u.disabled)
            .ok_or(ApiError::Unauthorized)?;
        tracing::Span::current().record("user_id", user.id);
        Ok(Caller { user, ctx })
    }
}

/// `GET /api/v1/me`: who the token belongs to (any role).
pub async fn me(State(_): State<AppState>, caller: Caller) -> Json<serde_json::Value> {
    Json(json!({
        "id": caller.user.id,
        "name": caller.user.name,
        "role": caller.user.role,
        "organisation": caller.user.organisation,
    }))
}
