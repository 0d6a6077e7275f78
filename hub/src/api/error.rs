//! The API's error type: a status code and a JSON body `{ "error": code, "message": text }`
//! that never holds personal data or database internals.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The explanation of a need-to-know refusal. One constant text, so the refusal is the same
/// bytes whether or not the person is in the index.
pub const NEED_TO_KNOW: &str = "Your organisation has no active involvement with this person or \
their household, so the lookup is refused (need to know). If there is an urgent reason to see \
who is involved anyway, repeat the same request with \"break_glass_reason\": {\"code\": one of \
acute_safety, crisis, continuity_of_care, \"justification\": a short explanation without any \
BSN}. Such a lookup is answered, flagged and reviewed by the privacy officer.";

/// Why a request was not answered.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No, an unknown or a disabled token (one answer for all three).
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// The user's role may not use this endpoint.
    #[error("your role may not use this endpoint")]
    WrongRole,
    /// Need to know: no active involvement of the requester's organisation.
    #[error("need to know")]
    NeedToKnow,
    /// The person may not be looked up through break-the-glass.
    #[error("shielded")]
    Shielded,
    /// The request is malformed; the text says what and how to fix it (never echoes input).
    #[error("{0}")]
    BadRequest(String),
    /// Nothing here.
    #[error("not found")]
    NotFound,
    /// The body is larger than the server accepts.
    #[error("body too large")]
    TooLarge,
    /// The audit trail could not record the request: fail closed.
    #[error("the audit trail is unavailable")]
    AuditUnavailable,
    /// Something failed inside; details are logged, not returned.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::WrongRole | ApiError::NeedToKnow | ApiError::Shielded => {
                StatusCode::FORBIDDEN
            }
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::WrongRole => "forbidden_role",
            ApiError::NeedToKnow => "need_to_know",
            ApiError::Shielded => "shielded",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound => "not_found",
            ApiError::TooLarge => "too_large",
            ApiError::AuditUnavailable => "audit_unavailable",
            ApiError::Internal => "internal",
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::Unauthorized => {
                "A valid bearer token is required: send `Authorization: Bearer <token>` with a \
                 token from `matchpoint users add`."
                    .into()
            }
            ApiError::WrongRole => "Your role may not use this endpoint.".into(),
            ApiError::NeedToKnow => NEED_TO_KNOW.into(),
            ApiError::Shielded => "This person cannot be looked up through break-the-glass. \
                 Contact the privacy officer."
                .into(),
            ApiError::BadRequest(m) => m.clone(),
            ApiError::NotFound => "No such endpoint; see /api/v1/openapi.json.".into(),
            ApiError::TooLarge => "The request body is larger than the server accepts.".into(),
            ApiError::AuditUnavailable => "The audit trail cannot record this request, so it \
                 is refused and no data is returned. Try again later; operators: check the \
                 store."
                .into(),
            ApiError::Internal => {
                "Internal error; the request id identifies it in the logs.".into()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = json!({ "error": self.code(), "message": self.message() });
        let mut response = (status, Json(body)).into_response();
        if matches!(self, ApiError::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        tracing::error!(%error, "Store operation failed.");
        ApiError::Internal
    }
}
