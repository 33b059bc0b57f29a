"""GET /sessions, GET /locks, POST /sessions/<pid>/cancel and /terminate (SPEC 10).

Per component (``?component=``, default primary). Every database call runs on a
side connection under a hard deadline; query text and client addresses are
for admins only and are not even fetched for viewers. On SQLite every route,
POST included, answers 200 with ``{"supported": false, "reason": ...}``.
"""
from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, request
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from .. import audit
from ..auth.tokens import admin_only, is_admin
from ..db.classify import is_transient
from ..db.deadline import DeadlineExceeded
from ..db.side import PROBE_APPLICATION_NAME, run_bounded
from ..errors import ApiError, json_object_body
from ..extensions import db
from ..fleet.workers import live_workers
from ..health.monitor import component_keys
from ..ops import kill, unsupported_reason
from ..ops.locks import lock_report
from ..ops.sessions import QUERY_TEXT_LIMIT, STATES, session_rows, summary
from ..state import state
from .blueprint import bp

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_PID = 2**63 - 1


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_parameter", message, "Invalid parameter")


def _component() -> tuple[str, str | None, str | None]:
    """(component name, bind key, why unsupported or None)."""
    name = request.args.get("component", "primary")
    keys = component_keys(current_app)
    if name not in keys:
        raise _invalid(f"component must be one of {', '.join(keys)}, got {name!r}")
    key = keys[name]
    return name, key, unsupported_reason(db.engines[key].dialect.name)


def _unsupported(name: str, reason: str) -> dict[str, Any]:
    return {"success": True, "data": {"supported": False, "component": name, "reason": reason}}


def _timeout() -> float:
    """DB_OPERATION_TIMEOUT where the settings have it, else DB_HEALTH_TIMEOUT."""
    config = current_app.config
    return config.get("DB_OPERATION_TIMEOUT") or config["DB_HEALTH_TIMEOUT"]


def _bounded(key: str | None, work: Callable[[Connection], T]) -> T:
    seconds = _timeout()
    try:
        return run_bounded(key, seconds, work)
    except DeadlineExceeded:
        raise ApiError(
            503, "db_unavailable", f"The database did not answer within {seconds:g}s", "Database unavailable"
        ) from None
    except DBAPIError as error:
        if is_transient(error):
            raise
        log.warning("operator query failed: %s", type(error.orig).__name__, exc_info=error)
        raise ApiError(
            503, "db_unavailable", "The database refused the operator query; see the logs under this request_id",
            "Database unavailable",
        ) from None


def _seconds_arg(name: str) -> float | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _invalid(f"{name} must be a non-negative number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise _invalid(f"{name} must be a non-negative number of seconds, got {raw!r}")
    return value


def _text_arg(name: str) -> str | None:
    """A free-text filter; a NUL is refused, since PostgreSQL cannot even compare a string holding one."""
    raw = request.args.get(name)
    if raw is not None and "\x00" in raw:
        raise _invalid(f"{name} must not contain a NUL character")
    return raw


@bp.get("/sessions")
def sessions():
    name, key, reason = _component()
    if reason:
        return _unsupported(name, reason)
    state = request.args.get("state") or None
    if state is not None and state not in STATES:
        raise _invalid(f"state must be one of {', '.join(STATES)}, got {state!r}")
    min_duration_s = _seconds_arg("min_duration_s")
    application = _text_arg("application")
    text = is_admin()

    def work(connection: Connection) -> dict[str, Any]:
        overview = summary(connection)
        rows = session_rows(
            connection, text=text, state=state, min_duration_s=min_duration_s, application=application
        )
        return {**overview, "sessions": rows}

    data = _bounded(key, work)
    return {"success": True, "data": {"supported": True, "component": name, **data}}, 200, {"Cache-Control": "no-store"}


@bp.get("/locks")
def locks():
    name, key, reason = _component()
    if reason:
        return _unsupported(name, reason)
    text = is_admin()
    data = _bounded(key, lambda connection: lock_report(connection, text=text))
    return {"success": True, "data": {"supported": True, "component": name, **data}}, 200, {"Cache-Control": "no-store"}


@bp.post("/sessions/<pid>/cancel")
@admin_only
def cancel_session(pid: str):
    return _signal(pid, "cancel")


@bp.post("/sessions/<pid>/terminate")
@admin_only
def terminate_session(pid: str):
    return _signal(pid, "terminate")


def _parse_pid(raw: str) -> int:
    pid = int(raw) if re.fullmatch(r"[0-9]{1,19}", raw) else -1
    if not 0 < pid <= MAX_PID:
        raise _invalid(f"pid must be a positive integer, got {raw!r}")
    return pid


def _guard_from_body() -> Any:
    """The optional ``backend_start`` guard; ``...`` when the body does not give one."""
    body = json_object_body(optional=True)
    unknown = sorted(set(body) - {"backend_start"})
    if unknown:
        raise ApiError(400, "bad_request", f"Unknown field(s): {', '.join(unknown)}", "Bad request")
    if "backend_start" not in body:
        return ...
    value = body["backend_start"]
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, "bad_request", "backend_start must be a string as /sessions gave it, or null", "Bad request")
    try:
        kill.parse_moment(value)
    except ValueError:
        raise ApiError(400, "bad_request", f"backend_start is not an ISO-8601 time: {value[:64]!r}", "Bad request") from None
    return value


def _probe_pids(name: str, key: str | None) -> set[int]:
    """The server-side ids of this instance's kept-open probe connections to one database.

    This worker's own, and its siblings' as they list them in the instance
    folder: on the MySQL family nothing else tells a probe connection apart.
    """
    connection = state().probe_connections.get(key)
    own = connection.server_pid() if connection is not None else None
    siblings = {
        worker["probe_pids"][name]
        for worker in live_workers(current_app.instance_path)
        if isinstance(worker.get("probe_pids"), dict) and isinstance(worker["probe_pids"].get(name), int)
    }
    return siblings | ({own} if own is not None else set())


def _signal(raw_pid: str, action: str):
    name, key, reason = _component()
    if reason:
        return _unsupported(name, reason)
    pid = _parse_pid(raw_pid)
    guard = _guard_from_body()
    mode = current_app.config["DB_SESSION_KILL"]
    detail: dict[str, Any] = {"component": name, "pid": pid, "action": action, "mode": mode}
    if guard is not ...:
        detail["backend_start_given"] = guard
    probe_pids = _probe_pids(name, key)

    def work(connection: Connection) -> dict[str, Any]:
        session = kill.find(connection, pid)
        if session is not None:
            detail.update(
                user=session["user"], application=session["application"], state=session["state"],
                backend_start=session["backend_start"], query=(session["query"] or "")[:QUERY_TEXT_LIMIT] or None,
            )
        user, own = kill.context(connection)
        kill.decide(
            session,
            mode=mode,
            user=user,
            protected=({own} | probe_pids) - {None},
            protected_applications=frozenset({PROBE_APPLICATION_NAME}),
            backend_start=guard,
        )
        kill.signal(connection, pid, action)
        return session

    try:
        if mode == "off":  # refused without asking the database
            kill.decide(None, mode=mode, user="", protected=set())
        session = _bounded(key, work)
    except kill.Refusal as refusal:
        _audit(action, refusal.code, name, pid, detail)
        raise ApiError(refusal.status, refusal.code, refusal.error, refusal.error) from None
    _audit(action, "ok", name, pid, detail)
    return {
        "success": True,
        "data": {"supported": True, "component": name, "action": action, "pid": pid, "signalled": True, "session": session},
    }


def _audit(action: str, outcome: str, component: str, pid: int, detail: dict[str, Any]) -> None:
    """Every attempt is recorded; an event the database will not take goes to the log in full."""
    try:
        audit.record(f"session_{action}", outcome, target=f"{component}:{pid}", detail=detail)
    except SQLAlchemyError:
        log.error("audit event lost: action=session_%s outcome=%s detail=%s", action, outcome, detail)
        if outcome == "ok":
            raise
