"""The service's one error hierarchy and the handlers that turn errors into JSON.

Every error body has the same shape:

    {"error": "<code>", "message": "<field>: <problem>", "field": "<field or null>",
     "retryable": false}
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from eventlog import LogUnavailable
from service.schemas.common import UNION_TAGS

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base of every error the API returns on purpose."""

    status = 500
    code = "internal"
    retryable = False

    def __init__(self, message: str, field: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "field": self.field, "retryable": self.retryable}


class InvalidInput(ServiceError):
    status, code = 422, "invalid_input"


class NotFound(ServiceError):
    status, code = 404, "not_found"


class Conflict(ServiceError):
    status, code = 409, "conflict"


class LateReward(ServiceError):
    status, code = 409, "late_reward"


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ServiceError):
    status, code = 403, "forbidden"


class RateLimited(ServiceError):
    status, code, retryable = 429, "rate_limited", True

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after_seconds))})


class LimitReached(ServiceError):
    """A configured limit (policies, experiments) is reached; ``field`` names what."""

    status, code = 409, "limit_reached"


class BodyTooLarge(ServiceError):
    status, code = 413, "body_too_large"


class Unavailable(ServiceError, LogUnavailable):
    """503: the event log (or the spool) cannot take the request now; the event log's own
    ``LogUnavailable`` gets the same body."""

    status, code, retryable = 503, "unavailable", True


def error_response(error: ServiceError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path") and p not in UNION_TAGS]
    return ".".join(parts) or "body"


def _problem(error: dict[str, Any]) -> dict[str, str]:
    if error["type"] == "json_invalid":  # loc is ("body", <character position>)
        reason = error.get("ctx", {}).get("error", "malformed")
        return {
            "field": "body",
            "problem": f"invalid JSON at character {error['loc'][-1]}: {reason}",
            "type": "json_invalid",
        }
    return {"field": _location(error["loc"]), "problem": error["msg"], "type": error["type"]}


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return error_response(exc)


async def _log_unavailable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LogUnavailable)
    return error_response(Unavailable(exc.message, exc.field))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [_problem(e) for e in exc.errors()]
    first = problems[0] if problems else {"field": "body", "problem": "invalid request"}
    error = InvalidInput(f"{first['field']}: {first['problem']}", first["field"])
    body = error.body() | {"problems": problems}
    return JSONResponse(body, status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:  # FastAPI could not read the body at all (e.g. not UTF-8)
        return error_response(InvalidInput(f"body: {exc.detail}", "body"))
    body = {"error": "http_error", "message": str(exc.detail), "field": None, "retryable": False}
    return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))


def install(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(LogUnavailable, _log_unavailable)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
