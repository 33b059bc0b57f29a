"""POST /api/database/test: the query console, and its audit policy: no audit row, no run.

A call's whole budget is DB_STATEMENT_TIMEOUT_MS + DB_OPERATION_TIMEOUT + 1 s,
its audit writes included. Before a statement runs, its audit event (the query
and the parameter values as bound) is stored, under half of
DB_OPERATION_TIMEOUT; if it cannot be stored the statement does not run (503).
Afterwards the same event gets the outcome. Calls refused before that point
(bad body, no read-only role) are recorded as refused, as far as the database
lets us; they never run anything.
"""
from __future__ import annotations

import logging
import math
import re
import time
from typing import Any

import sqlalchemy as sa
from flask import current_app, g, request
from sqlalchemy.exc import SQLAlchemyError

from ..auth.tokens import admin_only
from ..console import guard, runner
from ..console.checker import DEFAULT_MAX_ROWS, DEFAULT_QUERY, MAX_QUERY_LENGTH, MAX_ROWS_CAP, reject
from ..db import budget, side
from ..db.deadline import DeadlineExceeded
from ..errors import ApiError, json_object_body
from ..logs import current_request_id
from ..models import AuditEvent
from .blueprint import bp

log = logging.getLogger(__name__)

PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_PARAMS = 100
AUDIT_VALUE_CHARS = 200  # a parameter value longer than this is kept cut, with its length
FINAL_AUDIT_RESERVE_S = 1.0


@bp.post("/test")
@admin_only
def test_query():
    config = current_app.config
    statement_s = config["DB_STATEMENT_TIMEOUT_MS"] / 1000
    operation_s = guard.operation_timeout(config)
    deadline_at = time.monotonic() + statement_s + operation_s + 1.0
    budget.start_budget(statement_s + operation_s + 1.0)  # the request's database budget, audit writes included
    body = json_object_body(optional=True)
    detail: dict[str, Any] = {"query": _as_text(body.get("query", DEFAULT_QUERY))[:MAX_QUERY_LENGTH]}
    if body.get("params") is not None:
        detail["params"] = _audit_params(body.get("params"))
    try:
        query, params, max_rows = parse_request(body)
        guard.require("query" in body, operation_s / 2)
    except ApiError as error:
        detail["code"] = error.code
        _audit_refused(_outcome(error), detail, time.monotonic() + operation_s / 2)
        raise
    event_id = _audit_start(detail, operation_s / 2)
    try:
        result = runner.run(
            guard.console_url(), query, params, max_rows,
            statement_s=statement_s,
            deadline_at=deadline_at - FINAL_AUDIT_RESERVE_S,
            max_bytes=config["DB_CONSOLE_MAX_BYTES"],
            record=detail,
        )
    except ApiError as error:
        detail["code"] = error.code
        _audit_finish(event_id, _outcome(error), detail, deadline_at)
        raise
    detail.update(row_count=result["row_count"], elapsed_ms=result["elapsed_ms"], truncated=result["truncated"])
    _audit_finish(event_id, "ok", detail, deadline_at)
    return {"success": True, "data": {"query": query, **result}}


def parse_request(body: dict[str, Any]) -> tuple[str, dict[str, Any], int]:
    query = body.get("query", DEFAULT_QUERY)
    params = body.get("params") or {}
    max_rows = body.get("max_rows", DEFAULT_MAX_ROWS)
    if not isinstance(query, str) or not query.strip():
        raise reject("query must be a non-empty string")
    if len(query) > MAX_QUERY_LENGTH:
        raise reject(f"query is longer than {MAX_QUERY_LENGTH} characters")
    if not isinstance(params, dict) or len(params) > MAX_PARAMS:
        raise reject(f"params must be an object of at most {MAX_PARAMS} name: value pairs")
    if not all(isinstance(k, str) and PARAM_NAME.fullmatch(k) for k in params):
        raise reject("parameter names must be letters, digits and _, not starting with a digit")
    for value in params.values():
        if not (value is None or isinstance(value, (str, int, float, bool))):
            raise reject("parameter values must be strings, numbers, booleans or null")
        if isinstance(value, float) and not math.isfinite(value):
            raise reject("parameter values must be finite numbers")
        if isinstance(value, str) and len(value) > MAX_QUERY_LENGTH:
            raise reject(f"a parameter value is longer than {MAX_QUERY_LENGTH} characters")
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise reject("max_rows must be a positive integer")
    return query, params, min(max_rows, MAX_ROWS_CAP)


def _outcome(error: ApiError) -> str:
    return "rejected" if error.code == "query_rejected" else error.code


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _audit_params(params: Any) -> Any:
    """The parameter values as bound, each cut to a readable length."""
    if not isinstance(params, dict):
        return _as_text(params)[:AUDIT_VALUE_CHARS]
    kept = {}
    for name, value in list(params.items())[:MAX_PARAMS]:
        if isinstance(value, str) and len(value) > AUDIT_VALUE_CHARS:
            value = f"{value[:AUDIT_VALUE_CHARS]}... ({len(value)} characters)"
        elif not (value is None or isinstance(value, (str, int, float, bool))):
            value = _as_text(value)[:AUDIT_VALUE_CHARS]
        elif isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        kept[str(name)[:80]] = value
    return kept


def _storable(value: Any) -> Any:
    """Text every database can store: NUL and lone surrogates written as escapes."""
    if isinstance(value, str):
        return value.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(item) for item in value]
    return value


def _fields(outcome: str, detail: dict[str, Any]) -> dict[str, Any]:
    detail = _storable(detail)
    return {
        "action": "test",
        "outcome": outcome,
        "actor": g.get("identity"),
        "target": detail["query"][:255],
        "detail": detail,
        "remote_addr": (request.remote_addr or "")[:64] or None,
        "request_id": (current_request_id() or "")[:64] or None,  # the column's size, whatever the header was
    }


# Any failure to store the event counts: a driver that refuses a value (ValueError) as much as the database.
AUDIT_FAILURES = (SQLAlchemyError, DeadlineExceeded, ValueError)


def _write(seconds: float, statement: sa.Executable) -> Any:
    """One audit write under a hard deadline, on the kept side connection of the primary."""

    def work(connection: sa.Connection) -> Any:
        result = connection.execute(statement)
        connection.commit()
        return result

    return side.run_bounded(None, max(seconds, 0.05), work)  # the kept connection: no pool of its own


def _audit_start(detail: dict[str, Any], seconds: float) -> int:
    """Store the event before the statement runs; 503 (and no run) when it cannot be stored."""
    try:
        result = _write(seconds, sa.insert(AuditEvent.__table__).values(**_fields("running", detail)))
        return result.inserted_primary_key[0]
    except AUDIT_FAILURES as error:
        log.error("audit event not stored, query not run: %s detail=%s", type(error).__name__, detail)
        raise ApiError(
            503, "db_unavailable", "The audit event could not be stored, so the query was not run",
            "Database unavailable",
        ) from None


def _audit_finish(event_id: int, outcome: str, detail: dict[str, Any], deadline_at: float) -> None:
    table = AuditEvent.__table__
    statement = sa.update(table).where(table.c.id == event_id).values(outcome=outcome, detail=_storable(detail))
    try:
        _write(deadline_at - time.monotonic(), statement)
    except AUDIT_FAILURES as error:
        log.error("audit outcome lost (event %s stays 'running'): %s outcome=%s detail=%s",
                  event_id, type(error).__name__, outcome, detail)


def _audit_refused(outcome: str, detail: dict[str, Any], deadline_at: float) -> None:
    try:
        _write(deadline_at - time.monotonic(), sa.insert(AuditEvent.__table__).values(**_fields(outcome, detail)))
    except AUDIT_FAILURES as error:
        log.error("audit event lost: %s action=test outcome=%s detail=%s", type(error).__name__, outcome, detail)
