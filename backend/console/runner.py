"""Running a checked console statement: read-only transaction, limits, JSON-safe results.

Three layers stop a query from changing anything, outermost first:

1. ``check_statement`` (checker.py) refuses several statements, anything but a
   read, and functions with side effects that a read-only transaction would
   still allow;
2. the database runs it in a read-only transaction (PostgreSQL ``SET
   TRANSACTION READ ONLY``, MySQL family ``START TRANSACTION READ ONLY``,
   SQLite ``PRAGMA query_only``) that is always rolled back;
3. optionally, DATABASE_READONLY_URL runs it as a role that cannot write at all.
"""
from __future__ import annotations

import datetime as dt
import decimal
import re
import time
import uuid
from typing import Any

from flask import current_app
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, StatementError

from ..db import side
from ..db.deadline import DeadlineExceeded
from ..db.retry import is_transient
from ..db.urls import scrub_secrets
from ..errors import ApiError
from .checker import DEFAULT_MAX_ROWS, DEFAULT_QUERY, MAX_QUERY_LENGTH, MAX_ROWS_CAP, check_statement, reject


def parse_request(body: dict[str, Any]) -> tuple[str, dict[str, Any], int]:
    query = body.get("query", DEFAULT_QUERY)
    params = body.get("params") or {}
    max_rows = body.get("max_rows", DEFAULT_MAX_ROWS)
    if not isinstance(query, str) or not query.strip():
        raise reject("query must be a non-empty string")
    if len(query) > MAX_QUERY_LENGTH:
        raise reject(f"query is longer than {MAX_QUERY_LENGTH} characters")
    if not isinstance(params, dict) or not all(isinstance(k, str) and re.fullmatch(r"\w+", k) for k in params):
        raise reject("params must be an object of name: value")
    if not all(v is None or isinstance(v, (str, int, float, bool)) for v in params.values()):
        raise reject("parameter values must be strings, numbers, booleans or null")
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise reject("max_rows must be a positive integer")
    return query, params, min(max_rows, MAX_ROWS_CAP)


def json_safe(value: Any) -> Any:
    """Values as JSON can carry them: ISO-8601 times, decimals as strings, bytes as hex."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    return str(value)


def _run(connection: Connection, query: str, params: dict[str, Any], max_rows: int, first: str) -> dict[str, Any]:
    dialect = connection.dialect.name
    timeout_ms = current_app.config["DB_STATEMENT_TIMEOUT_MS"]
    dbapi = connection.connection.dbapi_connection
    stream = dialect == "postgresql" and first in ("select", "with", "values", "table")
    if dialect == "postgresql":
        connection.exec_driver_sql("SET TRANSACTION READ ONLY")
        connection.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
    elif dialect in ("mysql", "mariadb"):
        if connection.dialect.is_mariadb:
            connection.exec_driver_sql(f"SET SESSION max_statement_time = {timeout_ms / 1000:.3f}")
        else:
            connection.exec_driver_sql(f"SET SESSION max_execution_time = {int(timeout_ms)}")
        connection.exec_driver_sql("START TRANSACTION READ ONLY")
    else:
        connection.exec_driver_sql("PRAGMA query_only = ON")
        give_up_at = time.monotonic() + timeout_ms / 1000
        dbapi.set_progress_handler(lambda: int(time.monotonic() > give_up_at), 10_000)
    truncated = False
    try:
        started = time.perf_counter()
        result = connection.execution_options(stream_results=stream).execute(text(query), params)
        columns = list(result.keys()) if result.returns_rows else []
        rows = result.fetchmany(max_rows + 1) if result.returns_rows else []
        elapsed = time.perf_counter() - started
        truncated = len(rows) > max_rows
        if truncated and dialect in ("mysql", "mariadb"):
            connection.invalidate()  # do not drain the rest of an unbuffered result
        else:
            result.close()
    finally:
        if not connection.invalidated:
            connection.rollback()
            if dialect == "sqlite":
                dbapi.set_progress_handler(None, 0)
                connection.exec_driver_sql("PRAGMA query_only = OFF")
                connection.rollback()
            elif dialect in ("mysql", "mariadb"):
                variable = "max_statement_time" if connection.dialect.is_mariadb else "max_execution_time"
                connection.exec_driver_sql(f"SET SESSION {variable} = DEFAULT")
    return {
        "query": query,
        "columns": columns,
        "rows": [[json_safe(value) for value in row] for row in rows[:max_rows]],
        "row_count": min(len(rows), max_rows),
        "truncated": truncated,
        "elapsed_ms": round(elapsed * 1000, 2),
    }


# Server errors that mean "this was a write" and "this took too long", per driver.
READ_ONLY_CODES = {"25006", 1792, 1290}
TIMEOUT_CODES = {"57014", 1969, 3024}


def _driver_code(error: DBAPIError) -> Any:
    orig = error.orig
    code = getattr(orig, "pgcode", None)
    if code is None and getattr(orig, "args", None) and isinstance(orig.args[0], int):
        code = orig.args[0]
    return code


def run_query(query: str, params: dict[str, Any], max_rows: int) -> dict[str, Any]:
    """Run one checked statement read-only; raises ApiError for every way it can fail."""
    dialect = side.side_engine(None, "console").dialect.name
    first = check_statement(query, dialect)
    timeout_s = current_app.config["DB_STATEMENT_TIMEOUT_MS"] / 1000
    timed_out = ApiError(504, "query_timeout", f"The query did not finish within {timeout_s:g}s", "Query timed out")
    try:
        return side.run_bounded(
            None, timeout_s + 1.0, lambda c: _run(c, query, params, max_rows, first), purpose="console"
        )
    except DeadlineExceeded:
        raise timed_out from None
    except StatementError as error:
        if not isinstance(error, DBAPIError):
            raise reject(f"Bad parameters: {error.orig}") from None
        code = _driver_code(error)
        message = server_message(error)
        if code in TIMEOUT_CODES or "interrupted" in message:
            raise timed_out from error
        if code in READ_ONLY_CODES or "readonly database" in message or "query_only" in message:
            raise reject(f"The database refused a write: {message}") from error
        if is_transient(error):
            raise
        raise ApiError(400, "query_error", message, "The database refused the query") from error


def server_message(error: DBAPIError) -> str:
    """The server's own message, first line, without the driver's prefix or credentials."""
    orig = error.orig
    pymysql_error = type(orig).__module__.startswith("pymysql") and len(orig.args) > 1
    message = (str(orig.args[1]) if pymysql_error else str(orig)).strip()
    return scrub_secrets(message.splitlines()[0] if message else type(orig).__name__)
