//! A JSON body extractor whose errors never echo the input.
//!
//! serde's messages quote offending values (`invalid type: integer 123456782`), which would put
//! a BSN sent as a number into a response; these errors keep only the category and position.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::ApiError;

/// A JSON request body of type `T`.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge
            } else {
                ApiError::BadRequest("The request body could not be read.".into())
            }
        })?;
        parse(&bytes).map(JsonBody)
    }
}

/// Parses a JSON body; the error names line and column and what kind of problem it is.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "is not valid JSON"
            }
            serde_json::error::Category::Data => {
                "does not have the expected fields and types (see /api/v1/openapi.json)"
            }
            serde_json::error::Category::Io => "could not be read",
        };
        ApiError::BadRequest(format!(
            "The request body {what} (line {}, column {}).",
            e.line(),
            e.column()
        ))
    })
}
