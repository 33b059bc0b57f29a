"""Request ids, log formatting (text or one JSON object per line) and the per-request hook:
X-Request-ID and X-Instance-ID on every response, the request metrics and the log line."""
from __future__ import annotations

import json
import logging
import random
import re
import sys
import time
from collections.abc import Callable
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


STARTED = "dbhealth.started"  # environ keys: when the request reached the app (perf_counter), its id
REQUEST_ID_KEY = "dbhealth.request_id"


def current_request_id() -> str | None:
    """The request's id: the caller's X-Request-ID when it is 1-64 safe characters, else a new one (never an error)."""
    if not has_request_context():
        return None
    return _request_id(request.environ)


def request_started() -> float | None:
    """When the current request reached the app (time.perf_counter()), if there is one."""
    return request.environ.get(STARTED) if has_request_context() else None


def _request_id(environ: dict[str, Any]) -> str:
    """Made once per request, when first asked for (a log line, the response)."""
    request_id = environ.get(REQUEST_ID_KEY)
    if request_id is None:
        given = environ.get("HTTP_X_REQUEST_ID", "")
        # An id only correlates log lines, it guards nothing: the process's PRNG (reseeded
        # after a fork) makes one as random as uuid4().hex without a system call.
        request_id = environ[REQUEST_ID_KEY] = given if REQUEST_ID.fullmatch(given) else f"{random.getrandbits(128):032x}"
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


def with_bookkeeping(wsgi_app: Callable[..., Any], instance: str) -> Callable[..., Any]:
    """``wsgi_app`` wrapped: the request's start, X-Request-ID and X-Instance-ID on every
    response, its metrics and its log line.

    A WSGI wrapper rather than a Flask before- and after-request hook: measured under
    gunicorn, the two hooks (Flask's dispatch of them, werkzeug's header checks, the
    context proxies) cost /livez about a tenth of its throughput. The response's
    status and headers pass through here while the request context is still pushed.
    ``instance`` is validated by the settings, the request id here: both are safe in a
    header as they are.
    """

    def bookkept(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        environ[STARTED] = time.perf_counter()

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            request_id = _request_id(environ)
            headers.append(("X-Request-ID", request_id))
            headers.append(("X-Instance-ID", instance))
            try:
                _account(environ, request_id, int(status[:3]))
            except Exception:  # a metric or a log line is never worth the response
                logging.getLogger(__name__).exception("request accounting failed")
            return start_response(status, headers, exc_info)

        return wsgi_app(environ, start)

    return bookkept


def _account(environ: dict[str, Any], request_id: str, status: int) -> None:
    """Count the request and log it (machines' polls at DEBUG)."""
    elapsed = time.perf_counter() - environ[STARTED]
    current = environ.get("werkzeug.request")  # the app's request object for this environ
    method = current.method if current is not None else environ.get("REQUEST_METHOD", "").upper()
    rule = current.url_rule if current is not None else None
    route = rule.rule if rule is not None else metrics.UNMATCHED
    path = current.path if current is not None else environ.get("PATH_INFO", "")
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
                "remote_addr": current.remote_addr if current is not None else environ.get("REMOTE_ADDR"),
                "identity": g.get("identity") if has_request_context() else None,
            },
        )
    metrics.record_request(method, route, status, elapsed)  # last: a failing sample loses no log line


def init_app(app: Flask) -> None:
    configure_logging(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"])
    app.wsgi_app = with_bookkeeping(app.wsgi_app, app.config["INSTANCE_ID"])  # type: ignore[method-assign]
