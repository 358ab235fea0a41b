"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with the status
that says whose fault it is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from starlette.responses import JSONResponse

from .. import errors

__all__ = ["ApiError", "error_body", "from_pcai_error"]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "server_error",
}


@dataclass
class ApiError(Exception):
    """A request that fails with ``status``; raised anywhere in a route, answered by the app."""

    status: int
    message: str
    param: Optional[str] = None
    code: Optional[str] = None
    headers: Optional[dict[str, str]] = None

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(status: int, message: str, param: Optional[str] = None, code: Optional[str] = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error"), "param": param, "code": code}}


def from_pcai_error(e: errors.PcaiError) -> ApiError:
    """The status of each of our errors: the caller's mistakes are 4xx, never 500."""
    if isinstance(e, errors.InvalidRequestError):  # InvalidImageError included
        return ApiError(400, str(e), code="invalid_request")
    if isinstance(e, (errors.ModelClosedError, errors.ModelNotLoadedError)):
        return ApiError(503, str(e), code="model_unavailable")
    if isinstance(e, errors.ModelNotFoundError):
        return ApiError(404, str(e), code="model_not_found")
    if isinstance(e, errors.ModelFormatError):
        return ApiError(400, str(e), code="model_format")
    if isinstance(e, errors.DownloadError):
        return ApiError(502, str(e), code="download_failed")
    if isinstance(e, errors.GenerationError):
        return ApiError(500, str(e), code="generation_failed")
    return ApiError(500, str(e), code="internal_error")
