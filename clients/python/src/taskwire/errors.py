"""One exception class per error code of the protocol (docs/protocol.md, "Errors")."""

from __future__ import annotations


class TaskwireError(Exception):
    """A refusal from the server, or the client's own `closed` / `timeout`.

    Match on the class or on `code`, not on `message`.
    """

    code: str = "unknown"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class BadRequestError(TaskwireError):
    code = "bad_request"


class InvalidError(TaskwireError):
    code = "invalid"


class NotFoundError(TaskwireError):
    code = "not_found"


class ConflictError(TaskwireError):
    code = "conflict"


class UnauthorizedError(TaskwireError):
    """A bad or revoked token. The client stops: reconnecting cannot help."""

    code = "unauthorized"


class ForbiddenError(TaskwireError):
    code = "forbidden"


class TooLargeError(TaskwireError):
    code = "too_large"


class RateLimitedError(TaskwireError):
    """Retried by the client itself; raised only from `call(..., retry=False)`."""

    code = "rate_limited"


class GoneError(TaskwireError):
    code = "gone"


class UnavailableError(TaskwireError):
    """Retried by the client itself; raised only from `call(..., retry=False)`."""

    code = "unavailable"


class InternalError(TaskwireError):
    code = "internal"


class ClosedError(TaskwireError):
    """The client was closed before the call was answered."""

    code = "closed"


class CallTimeoutError(TaskwireError):
    """`call(..., timeout=...)` ran out. The call may still commit later:
    retry it with the same op_id to apply it exactly once."""

    code = "timeout"


ERRORS: dict[str, type[TaskwireError]] = {
    cls.code: cls
    for cls in (
        BadRequestError,
        InvalidError,
        NotFoundError,
        ConflictError,
        UnauthorizedError,
        ForbiddenError,
        TooLargeError,
        RateLimitedError,
        GoneError,
        UnavailableError,
        InternalError,
    )
}


def error_from(error: dict[str, object]) -> TaskwireError:
    """The exception for a reply's `error` object; an unknown code (from a newer
    server) becomes a plain TaskwireError carrying that code."""
    code = str(error.get("code", "unknown"))
    message = str(error.get("message", ""))
    cls = ERRORS.get(code)
    return cls(message) if cls else TaskwireError(message, code)
