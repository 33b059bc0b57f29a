"""Request ids, log formatting (text or one JSON object per line) and the per-request hook:
X-Request-ID and X-Instance-ID on every response, the request metrics and the log line."""
from __future__ import annotations

import json
import logging
import random
import re
import sys
import time
from datetime import datetime, timezone
from typing import Any

from flask import Flask, g, has_request_context, request

from . import metrics

# SPEC 3: 1-64 characters of A-Z a-z 0-9 . _ - (the audit column is 64 wide); anything else gets a new id.
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Polled every few seconds by machines: logged at DEBUG, not INFO. Health answers
# that are not a success (401, 403, 503...) are still logged at INFO.
QUIET_PATHS = frozenset({"/livez", "/readyz", "/metrics"})
POLLED_PATHS = frozenset({"/api/database/health"})
REQUEST_FIELDS = ("method", "route", "path", "status", "duration_ms", "remote_addr", "identity")
log = logging.getLogger("backend.request")


def current_request_id() -> str | None:
    """The request's id: the caller's X-Request-ID when it is 1-64 safe characters, else a new one (never an error)."""
    if not has_request_context():
        return None
    return _request_id(g._get_current_object(), request.environ)


def _request_id(context: Any, environ: dict[str, Any]) -> str:
    """Made once per request. Each use of Flask's ``g`` or ``request`` resolves a context
    proxy (about a microsecond each): the per-request hooks resolve them once."""
    request_id = getattr(context, "request_id", None)
    if request_id is None:
        given = environ.get("HTTP_X_REQUEST_ID", "")
        # An id only correlates log lines, it guards nothing: the process's PRNG (reseeded
        # after a fork) makes one as random as uuid4().hex without a system call.
        request_id = context.request_id = given if REQUEST_ID.fullmatch(given) else f"{random.getrandbits(128):032x}"
    return request_id


def utc_timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RequestIdFilter(logging.Filter):
    """Stamp every record with the request id of the request that logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id and request fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": utc_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
            "pid": record.process,  # which worker: gunicorn runs several
        }
        for field in REQUEST_FIELDS:
            if hasattr(record, field):
                payload[field] = getattr(record, field)
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
# What a reader or a log shipper takes for the end of a line, and other invisible controls.
LINE_BREAKING = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


class TextFormatter(logging.Formatter):
    """One line per record: controls in the message (a request path, a user name) are escaped.

    Otherwise ``GET /x%0A<a line of one's own>`` would write a forged line into the
    log. Tracebacks are added after this and keep their lines.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        return LINE_BREAKING.sub(_escape, super().formatMessage(record))


def make_handler(log_format: str, stream=None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter(TEXT_FORMAT))
    handler._dbhealth = True  # type: ignore[attr-defined]
    return handler


def configure_logging(level: str, log_format: str) -> None:
    """Logs to stderr and the access log (one line per request) to stdout, in the chosen format.

    Handlers installed by an earlier app in the same process are replaced.
    """
    root = logging.getLogger()
    for logger in (root, log):
        for handler in [h for h in logger.handlers if getattr(h, "_dbhealth", False)]:
            logger.removeHandler(handler)
    root.addHandler(make_handler(log_format))
    root.setLevel(level)
    log.addHandler(make_handler(log_format, sys.stdout))
    log.propagate = False
    # Werkzeug's own access lines would repeat ours in a different format.
    logging.getLogger("werkzeug").setLevel(max(logging.getLevelName(level), logging.WARNING))


def _start_timer() -> None:
    g.request_started = time.perf_counter()  # the request id is made when first asked for (a log line, the response)


def _finish_request(response, instance: str):
    """Name the request and the instance on the response, count it, and log it."""
    context, current = g._get_current_object(), request._get_current_object()
    request_id = _request_id(context, current.environ)
    response.headers["X-Request-ID"] = request_id
    response.headers["X-Instance-ID"] = instance
    started = getattr(context, "request_started", None)
    if started is None:
        return response
    elapsed = time.perf_counter() - started
    method, path, status = current.method, current.path, response.status_code
    route = current.url_rule.rule if current.url_rule else metrics.UNMATCHED
    metrics.record_request(method, route, status, elapsed)
    quiet = path in QUIET_PATHS or (path in POLLED_PATHS and status < 400)
    level = logging.DEBUG if quiet else logging.INFO
    if log.isEnabledFor(level):
        duration_ms = round(elapsed * 1000, 2)
        log.log(
            level,
            "%s %s %s %.1fms",
            method,
            path,
            status,
            duration_ms,
            extra={
                "request_id": request_id,
                "method": method,
                "route": route,
                "path": path,
                "status": status,
                "duration_ms": duration_ms,
                "remote_addr": current.remote_addr,
                "identity": getattr(context, "identity", None),
            },
        )
    return response


def init_app(app: Flask) -> None:
    configure_logging(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"])
    instance = app.config["INSTANCE_ID"]
    app.before_request(_start_timer)
    app.after_request(lambda response: _finish_request(response, instance))
