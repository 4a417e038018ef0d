"""Errors in OpenAI's JSON shape, and the HTTP status of every owlkit error.

Clients (the ``openai`` package, lm-evaluation-harness) read ``{"error": {"message", "type", "param",
"code"}}`` and pick their exception class from the status: 400 for a bad request, 401 for a bad key,
403 for a refusal, 404 for an unknown model, 429 to retry later. A user's mistake is never a 500.
"""

from __future__ import annotations

from typing import Any

from owlkit.errors import Ambiguous, InvalidFile, NotFound, OwlError, Refused, TermsForbid, UsageError


class APIError(Exception):
    """An HTTP error answer: the status, OpenAI's error fields, and extra headers (Retry-After)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def from_owl(e: OwlError, *, param: str | None = None) -> APIError:
    """The answer for an owlkit error raised while handling a request."""
    from owlkit.backends.base import QueueFull

    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    if isinstance(e, QueueFull):
        return APIError(429, msg, type="rate_limit_error", code="queue_full", headers={"Retry-After": "1"})
    if isinstance(e, TermsForbid):
        return APIError(403, msg, type="permission_error", param=param, code="terms_forbid")
    if isinstance(e, Ambiguous):  # a NotFound, but the reference itself is what needs fixing
        return APIError(400, msg, param=param, code="ambiguous")
    if isinstance(e, NotFound):
        return APIError(404, msg, type="not_found_error", param=param, code="not_found")
    if isinstance(e, Refused):
        return APIError(400, msg, param=param, code="refused")
    if isinstance(e, UsageError | InvalidFile):
        return APIError(400, msg, param=param)
    # Corrupt store, missing extra, schema mismatch, file system: the server's problem, not the caller's.
    return APIError(500, msg, type="server_error", code=type(e).__name__)
