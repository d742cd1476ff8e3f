//! The one error type of the API: stable codes shared by socket replies and REST.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::json;

/// Every error code the wire contract knows, in one enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Invalid,
    NotFound,
    Conflict,
    Unauthorized,
    Forbidden,
    TooLarge,
    RateLimited,
    Gone,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Invalid => "invalid",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Gone => "gone",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status REST answers with for this code.
    pub fn http_status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Gone => StatusCode::GONE,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error as a client sees it: a code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// A `conflict` caused by a stale version: REST answers it with 412 when the
    /// version came from `If-Match`.
    pub stale_version: bool,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            stale_version: false,
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, m)
    }
    pub fn invalid(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::Invalid, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, m)
    }
    pub fn stale(entity: &str, id: i64, current: i64, expected: i64) -> Self {
        ApiError {
            stale_version: true,
            ..Self::conflict(format!("{entity} {id} is at version {current}, not {expected}"))
        }
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, m)
    }
    pub fn too_large(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::TooLarge, m)
    }
    pub fn rate_limited(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::RateLimited, m)
    }
    pub fn gone(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::Gone, m)
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, m)
    }
    /// A bug. The detail goes to the log, never to the client.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        log::error!("internal error: {detail}");
        Self::new(ErrorCode::Internal, "internal error")
    }

    /// The `{"code", "message"}` object both doors put on the wire.
    pub fn body(&self) -> serde_json::Value {
        json!({"code": self.code.as_str(), "message": self.message})
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::Error;
        match &e {
            // Lookups use `.optional()`; a missing row here is a bug, and
            // `internal` rolls the whole group commit back.
            // Uniqueness (agent names, op_ids) is checked before any write, so a
            // violation here is a bug: `internal` makes the group commit roll
            // the whole batch back rather than keep half a call.
            Error::DatabaseError(_, info) if is_storage_fault(info.message()) => {
                log::warn!("database refuses writes: {}", info.message());
                ApiError::unavailable("the database cannot take writes right now")
            }
            _ => ApiError::internal(e),
        }
    }
}

/// SQLite's messages for a read-only, full, locked or failing file: the store's
/// fault, not the request's, and expected to clear.
fn is_storage_fault(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "readonly",
        "read-only",
        "disk is full",
        "database or disk is full",
        "locked",
        "busy",
        "disk i/o error",
        "unable to open",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        // Over REST a version only comes from `If-Match`.
        if self.stale_version {
            return StatusCode::PRECONDITION_FAILED;
        }
        self.code.http_status()
    }
    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        if self.code == ErrorCode::RateLimited {
            res.insert_header(("Retry-After", "1"));
        }
        res.json(json!({ "error": self.body() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_to_its_wire_name_and_status() {
        let table = [
            (ErrorCode::BadRequest, "bad_request", 400),
            (ErrorCode::Invalid, "invalid", 422),
            (ErrorCode::NotFound, "not_found", 404),
            (ErrorCode::Conflict, "conflict", 409),
            (ErrorCode::Unauthorized, "unauthorized", 401),
            (ErrorCode::Forbidden, "forbidden", 403),
            (ErrorCode::TooLarge, "too_large", 413),
            (ErrorCode::RateLimited, "rate_limited", 429),
            (ErrorCode::Gone, "gone", 410),
            (ErrorCode::Unavailable, "unavailable", 503),
            (ErrorCode::Internal, "internal", 500),
        ];
        for (code, name, status) in table {
            assert_eq!(code.as_str(), name);
            assert_eq!(serde_json::to_value(code).unwrap(), name);
            assert_eq!(code.http_status().as_u16(), status);
        }
    }

    #[test]
    fn internal_errors_do_not_leak_detail() {
        let e = ApiError::internal("secret path /var/x");
        assert_eq!(e.message, "internal error");
    }

    #[test]
    fn a_unique_violation_is_a_bug_not_a_conflict() {
        use diesel::result::{DatabaseErrorKind, Error};
        let e: ApiError = Error::DatabaseError(
            DatabaseErrorKind::UniqueViolation,
            Box::new("UNIQUE constraint failed".to_string()),
        )
        .into();
        assert_eq!(e.code, ErrorCode::Internal);
    }

    #[test]
    fn storage_faults_are_unavailable() {
        use diesel::result::{DatabaseErrorKind, Error};
        let e: ApiError = Error::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new("attempt to write a readonly database".to_string()),
        )
        .into();
        assert_eq!(e.code, ErrorCode::Unavailable);
    }
}
