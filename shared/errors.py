"""The error kinds of tiqu, each with its HTTP status, and the one JSON envelope they travel in.

Domain code raises these; the API layer turns them into
`{"error": {"message", "type", "param", "code"}}` and the CLI into a red message and exit code 2.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import BaseModel, Field


class TiquError(Exception):
    """Base class: a failure with a message meant for the user."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        """HTTP headers of the error answer: `Retry-After` (whole seconds) when retrying helps."""
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidInputError(TiquError):
    status_code = 422
    error_type = "invalid_input"


class NotFoundError(TiquError):
    status_code = 404
    error_type = "not_found"


class PayloadTooLargeError(TiquError):
    status_code = 413
    error_type = "payload_too_large"


class UnauthorizedError(TiquError):
    status_code = 401
    error_type = "unauthorized"


class ForbiddenError(TiquError):
    status_code = 403
    error_type = "forbidden"


class ConflictError(TiquError):
    status_code = 409
    error_type = "conflict"


class OverloadedError(TiquError):
    status_code = 429
    error_type = "overloaded"


class UnavailableError(TiquError):
    status_code = 503
    error_type = "unavailable"


class ErrorBody(BaseModel):
    message: str = Field(max_length=4000)
    type: str = Field(max_length=64)
    param: str | None = Field(None, max_length=256)
    code: str | None = Field(None, max_length=64)


class ErrorResponse(BaseModel):
    """The JSON body of every error answer."""

    error: ErrorBody


def error_responses(*errors: type[TiquError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for a route that can fail with these errors."""
    return {e.status_code: {"model": ErrorResponse, "description": e.error_type} for e in errors}
