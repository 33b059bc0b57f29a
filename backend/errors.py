"""One JSON envelope for every error the service can produce."""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from .db.classify import is_transient, misconfiguration
from .extensions import db
from .logs import current_request_id

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "bad_request",
    401: "auth_required",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable_entity",
    429: "too_many_requests",
    500: "internal_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An error with a status, a stable ``code`` and a message safe to show the caller."""

    def __init__(self, status: int, code: str, error: str, message: str | None = None, **extra: Any):
        super().__init__(error)
        self.status = status
        self.code = code
        self.error = error
        self.message = message or error
        self.extra = extra


def error_body(code: str, error: str, message: str | None = None, **extra: Any) -> dict[str, Any]:
    """The error envelope every failure shares: success false, a stable code, the request id."""
    return {
        "success": False,
        "code": code,
        "error": error,
        "message": message or error,
        "request_id": current_request_id(),
        **extra,
    }


def unavailable_body(error: BaseException) -> dict[str, Any]:
    """The 503 body for a database operation that failed after its retries."""
    extra = {}
    if getattr(error, "retry_count", None) is not None:
        extra = {"retry_count": error.retry_count, "last_attempt": error.last_attempt}
    return error_body(
        "db_unavailable",
        "The database did not answer; see the logs under this request_id",
        "Database unavailable",
        **extra,
    )


def handle_api_error(error: ApiError):
    return error_body(error.code, error.error, error.message, **error.extra), error.status


def handle_http_error(error: HTTPException):
    status = error.code or 500
    body = error_body(HTTP_CODES.get(status, f"http_{status}"), error.description or error.name, error.name)
    headers = [(key, value) for key, value in error.get_headers() if key.lower() == "allow"]
    return body, status, headers


def misconfigured_body(cause: str, variable: str = "DATABASE_URL") -> dict[str, Any]:
    """The 503 body for a database that refuses this service's settings: what to fix, not an outage."""
    return error_body("db_misconfigured", f"{cause}: check {variable}", "Database misconfigured")


def handle_database_error(error: SQLAlchemyError):
    db.session.rollback()
    cause = misconfiguration(error)
    if cause is not None:
        log.error("database misconfigured: %s", cause)
        return misconfigured_body(cause), 503
    if is_transient(error):
        log.warning("database unavailable: %s", error.__class__.__name__, exc_info=error)
        return unavailable_body(error), 503
    log.error("database error", exc_info=error)
    return error_body("internal_error", "Internal server error", "Internal server error"), 500


def handle_unexpected_error(error: Exception):
    db.session.rollback()
    log.error("unhandled exception", exc_info=error)
    return error_body("internal_error", "Internal server error", "Internal server error"), 500


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(SQLAlchemyError, handle_database_error)
    app.register_error_handler(Exception, handle_unexpected_error)


def json_object_body(optional: bool = False) -> dict[str, Any]:
    """The request body as a JSON object: 415 when it is not JSON, 400 when it is not an object."""
    if not request.get_data(cache=True):
        if optional:
            return {}
        raise ApiError(400, "bad_request", "A JSON object body is required", "Bad request")
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json", "Unsupported media type")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "The body must be a JSON object", "Bad request")
    return body
