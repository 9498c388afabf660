//! The one error type of the HTTP API and the envelope it renders:
//! `{"message", "error", "code", "statusCode", "request_id"}`. Handlers return
//! `Result<_, ApiError>`; responses that axum or tower make on their own (405, 413, panics)
//! are rewritten into the same envelope by the request-context middleware.

use std::borrow::Cow;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::context::current_request_id;

/// The error envelope: the body of every 4xx and 5xx answer (the OpenAPI `Error` schema).
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub(crate) struct Envelope<'a> {
    /// What went wrong, for a person.
    #[schema(example = "Agent not found")]
    message: &'a str,
    /// The status's reason phrase.
    #[schema(example = "Not Found")]
    error: &'a str,
    /// Stable machine-readable code, e.g. `not_found`, `validation_failed`, `insufficient_scope`.
    #[schema(example = "not_found")]
    code: &'a str,
    /// The HTTP status, as in the status line.
    #[serde(rename = "statusCode")]
    #[schema(minimum = 400, maximum = 599, example = 404)]
    status_code: u16,
    /// The request id (also in `X-Request-Id`); quote it when reporting a problem.
    request_id: &'a str,
    /// More about the error, e.g. `{"field": "name", "problem": "..."}` for a validation error.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    details: Option<&'a Value>,
}

/// Marks a response whose body already is the envelope.
#[derive(Clone, Copy)]
pub(crate) struct Enveloped;

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: Cow<'static, str>,
    message: String,
    retry_after: Option<u64>,
    details: Option<Value>,
}

impl ApiError {
    /// Any status, code and message.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            retry_after: None,
            details: None,
        }
    }

    /// 404 `not_found`, e.g. `not_found("API key")` → "API key not found".
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 400 `validation_failed`.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "validation_failed", message)
    }

    /// 400 `validation_failed` naming the field at fault.
    pub fn invalid_field(field: &str, problem: impl std::fmt::Display) -> Self {
        Self::validation(format!("{field}: {problem}"))
            .with_details(json!({"field": field, "problem": problem.to_string()}))
    }

    /// 401 with one of the `api_key_*` codes.
    pub fn unauthorized(code: &'static str, message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 403 `insufficient_scope`, naming the scope (seed 003's message).
    pub fn insufficient_scope(scope: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("This API key is missing the required scope: {scope}."),
        )
    }

    /// 409 with a specific code.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 500; the cause is logged here, the client only sees the request id.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Something went wrong on our side; quote the request id if you report it.",
        )
    }

    /// 503 with retry guidance.
    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message).with_retry_after(retry_after)
    }

    /// Adds `Retry-After` (seconds).
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Adds a `details` member to the envelope.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The generic error for a status that axum or tower produced without a body we know.
    pub(crate) fn from_status(status: StatusCode) -> Self {
        let (code, message) = match status {
            StatusCode::NOT_FOUND => ("not_found", "No such route"),
            StatusCode::METHOD_NOT_ALLOWED => {
                ("method_not_allowed", "Method not allowed on this route")
            }
            StatusCode::PAYLOAD_TOO_LARGE => {
                ("payload_too_large", "Request body is larger than the limit")
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported_media_type",
                "Content-Type must be application/json",
            ),
            StatusCode::REQUEST_TIMEOUT => ("request_timeout", "The request took too long"),
            StatusCode::URI_TOO_LONG => (
                "uri_too_long",
                "The request's path and query are longer than the limit",
            ),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (
                "headers_too_large",
                "The request's headers are larger than the limit",
            ),
            StatusCode::INTERNAL_SERVER_ERROR => (
                "internal_error",
                "Something went wrong on our side; quote the request id if you report it.",
            ),
            s if s.is_client_error() => ("bad_request", "The request could not be handled"),
            _ => (
                "internal_error",
                "Something went wrong on our side; quote the request id if you report it.",
            ),
        };
        Self::new(status, code, message)
    }

    /// The envelope for this error under `request_id`.
    pub(crate) fn envelope(&self, request_id: &str) -> Value {
        let body = Envelope {
            message: &self.message,
            error: self.status.canonical_reason().unwrap_or("Error"),
            code: &self.code,
            status_code: self.status.as_u16(),
            request_id,
            details: self.details.as_ref(),
        };
        serde_json::to_value(body).unwrap_or_default()
    }
}

impl ApiError {
    /// The response under an explicit request id (outside the request's task scope).
    pub(crate) fn into_response_with(self, request_id: &str) -> Response {
        let mut resp = (self.status, axum::Json(self.envelope(request_id))).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp.extensions_mut().insert(Enveloped);
        resp
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = current_request_id().unwrap_or_default();
        let mut resp = (self.status, axum::Json(self.envelope(&request_id))).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp.extensions_mut().insert(Enveloped);
        resp
    }
}

/// Whether a database error says the database cannot be reached or used right now (pool
/// exhausted, connection lost or refused, server shutting down or starting), as opposed to
/// a statement that failed: the first is a 503 to retry, the second a bug.
fn db_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // Class 08: connection exception; 57P01-57P03: admin/crash shutdown, cannot connect now.
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if db_unavailable(&e) {
            tracing::warn!(error = %e, "database unavailable");
            return ApiError::unavailable(
                "database_unavailable",
                "The database is busy or unreachable; retry shortly.",
                2,
            );
        }
        ApiError::internal(format!("database: {e}"))
    }
}

impl From<agentq_shared::batch::BatchError> for ApiError {
    fn from(e: agentq_shared::batch::BatchError) -> Self {
        match e {
            agentq_shared::batch::BatchError::Db(db) if db_unavailable(&db) => {
                ApiError::unavailable(
                    "database_unavailable",
                    "The database is busy or unreachable; retry shortly.",
                    2,
                )
            }
            agentq_shared::batch::BatchError::Db(db) => {
                ApiError::internal(format!("database: {db}"))
            }
            agentq_shared::batch::BatchError::Closed => ApiError::unavailable(
                "shutting_down",
                "The server is shutting down; retry shortly.",
                2,
            ),
        }
    }
}

impl From<agentq_shared::pagination::CursorError> for ApiError {
    fn from(e: agentq_shared::pagination::CursorError) -> Self {
        ApiError::validation(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_or_refused_database_is_unavailable_and_a_failed_statement_is_not() {
        let lost = || {
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "reset",
            ))
        };
        for e in [sqlx::Error::PoolTimedOut, sqlx::Error::PoolClosed, lost()] {
            assert!(db_unavailable(&e), "{e}");
            assert_eq!(ApiError::from(e).status, StatusCode::SERVICE_UNAVAILABLE);
        }
        for e in [
            sqlx::Error::RowNotFound,
            sqlx::Error::ColumnNotFound("x".into()),
        ] {
            assert!(!db_unavailable(&e), "{e}");
            assert_eq!(ApiError::from(e).status, StatusCode::INTERNAL_SERVER_ERROR);
        }
        let batched = agentq_shared::batch::BatchError::Db(std::sync::Arc::new(lost()));
        assert_eq!(
            ApiError::from(batched).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
