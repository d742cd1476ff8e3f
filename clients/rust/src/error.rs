//! One error type: a variant per error code of the contract (docs/protocol.md
//! "Errors"), and the few the client itself raises.

/// What a call, a subscription or a connect can fail with. Match on the
/// variant, not on the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Malformed: a missing, unknown or wrong-typed field, an unknown topic.
    #[error("bad_request: {0}")]
    BadRequest(String),
    /// Well-formed but against a rule (a field rule, a limit).
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("not_found: {0}")]
    NotFound(String),
    /// A stale `if_version`, a taken name, a reused op_id, a task assigned to another agent.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The token is unknown or revoked (at connect), or was revoked before a call could commit.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The token's role may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("too_large: {0}")]
    TooLarge(String),
    /// Over a rate limit. Calls and subscribes retry it by themselves; only a
    /// connect can return it.
    #[error("rate_limited: {0}")]
    RateLimited(String),
    #[error("gone: {0}")]
    Gone(String),
    /// The server cannot take it now. Calls and subscribes retry it by
    /// themselves; a connect (the socket limits at upgrade) returns it.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug in the server; its log has the detail.
    #[error("internal: {0}")]
    Internal(String),
    /// A code this client does not know (a newer server).
    #[error("{code}: {message}")]
    Other { code: String, message: String },
    /// The server closed the socket with 1008 (the token was revoked, or the
    /// connection was rate limited for too long). The client has stopped.
    #[error("closed by the server (1008): {0}")]
    Revoked(String),
    /// The client was closed (or stopped after a revocation) before an answer came.
    #[error("the client is closed")]
    Closed,
    /// The first connect failed: no server there, no WebSocket, a timeout.
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The server said something this client cannot read.
    #[error("protocol: {0}")]
    Protocol(String),
    /// A misuse of the client, such as subscribing twice to one topic.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// The error of a refused reply: `{"code": ..., "message": ...}`.
    pub fn from_wire(code: &str, message: String) -> Error {
        match code {
            "bad_request" => Error::BadRequest(message),
            "invalid" => Error::Invalid(message),
            "not_found" => Error::NotFound(message),
            "conflict" => Error::Conflict(message),
            "unauthorized" => Error::Unauthorized(message),
            "forbidden" => Error::Forbidden(message),
            "too_large" => Error::TooLarge(message),
            "rate_limited" => Error::RateLimited(message),
            "gone" => Error::Gone(message),
            "unavailable" => Error::Unavailable(message),
            "internal" => Error::Internal(message),
            _ => Error::Other {
                code: code.to_string(),
                message,
            },
        }
    }

    /// The contract's code, or the client's own (`revoked`, `closed`,
    /// `connect`, `protocol`, `usage`).
    pub fn code(&self) -> &str {
        match self {
            Error::BadRequest(_) => "bad_request",
            Error::Invalid(_) => "invalid",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::TooLarge(_) => "too_large",
            Error::RateLimited(_) => "rate_limited",
            Error::Gone(_) => "gone",
            Error::Unavailable(_) => "unavailable",
            Error::Internal(_) => "internal",
            Error::Other { code, .. } => code,
            Error::Revoked(_) => "revoked",
            Error::Closed => "closed",
            Error::Connect { .. } => "connect",
            Error::Protocol(_) => "protocol",
            Error::Usage(_) => "usage",
        }
    }

    /// Answered but not executed, worth sending again unchanged after a while.
    pub fn is_busy(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::RateLimited(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
