"""Running one checked console statement on a connection of its own, under a deadline.

Every call opens its own connection and closes it afterwards (PostgreSQL after
``DISCARD ALL``, for a pooler that would keep the server session), so no
advisory lock, session variable, temporary table or prepared statement
outlives the call. The statement runs in a read-only transaction (SQLite: a
file opened ``mode=ro``), under the server's own timeout, and is cancelled on
the server when its time is up (PostgreSQL ``pg_cancel_backend``, MySQL ``KILL
QUERY``, each from another connection); a server that does not even answer that has its
socket cut (db/deadline.py). Rows stream in one at a time (a server-side cursor
on PostgreSQL, an unbuffered result on PyMySQL) and are cut at max_rows and
DB_CONSOLE_MAX_BYTES; an unbuffered MySQL result is cut by closing the
connection, never drained.
"""
from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy.engine import URL

from ..db import tls
from ..db.deadline import DeadlineExceeded, deadline
from ..db.engines import connect_args
from ..db.urls import scrub_secrets
from ..errors import ApiError
from .checker import Checked, check_statement, reject
from .lexers import Settings
from .results import collect

CANCEL_GRACE_S = 0.5  # after a cancel, how long the server gets to stop before the socket is cut
APPLICATION_NAME = "dbhealth-console"
STREAMED = ("select", "with", "values", "table")  # what PostgreSQL can DECLARE a cursor for
TIMEOUT_CODES = {"57014", 1317, 1969, 3024}
READ_ONLY_CODES = {"25006", 1792, 1290}
LOST_CODES = {2003, 2006, 2013, 2055}


@dataclass
class Session:
    dialect: str  # postgresql, mysql, mariadb or sqlite
    connection: Any  # the driver's own connection
    settings: Settings
    options: dict[str, Any]  # how to connect again (MySQL KILL QUERY)
    thread_id: int | None = None
    cursor: Any = None  # kept until close: a PyMySQL unbuffered cursor drains its result when released


def timed_out(seconds: float) -> ApiError:
    return ApiError(504, "query_timeout", f"The query did not finish within {seconds:g}s", "Query timed out")


def unavailable(message: str) -> ApiError:
    return ApiError(503, "db_unavailable", message, "Database unavailable")


def run(url: URL, query: str, params: dict[str, Any], max_rows: int, *, statement_s: float,
        deadline_at: float, max_bytes: int, record: dict[str, Any]) -> dict[str, Any]:
    """Check and run ``query``; ``record`` gets the statement as sent. Raises ApiError for every failure."""
    connect_s = deadline_at - time.monotonic() - statement_s - CANCEL_GRACE_S
    if connect_s <= 0:
        raise unavailable("No time left to reach the database")
    try:
        session = open_session(url, connect_s, max_bytes)
    except DeadlineExceeded:
        raise unavailable("The database did not answer in time") from None
    except Exception as error:
        raise _failure(session=None, error=error, late=False, statement_s=statement_s) from None
    try:
        checked = check_statement(query, session.dialect, session.settings,
                                  "named" if session.dialect == "sqlite" else "pyformat")
        _check_params(checked, params)
        record["statement"] = checked.statement
        return _execute(session, checked, params, max_rows, statement_s, max_bytes)
    finally:
        close(session)


def _check_params(checked: Checked, params: dict[str, Any]) -> None:
    missing = [name for name in checked.params if name not in params]
    if missing:
        raise reject(f"No value for parameter :{missing[0]}")
    unused = sorted(set(params) - set(checked.params))
    if unused:
        raise reject(f"Parameter {unused[0]!r} is not used by the query (markers in quotes or comments are text)")


def open_session(url: URL, seconds: float, max_bytes: int) -> Session:
    backend = url.get_backend_name()
    if backend == "sqlite":
        return _open_sqlite(url, max_bytes)
    options = dict(url.get_dialect()().create_connect_args(url)[1])
    options.update(connect_args(url, seconds))
    options.update(tls.driver_arguments(url, current_app.config))  # the same TLS as the app's own pool
    if backend == "postgresql":
        import psycopg2

        # A name of its own: what the cancel looks for, so it never reaches another session.
        options["application_name"] = f"{APPLICATION_NAME}-{secrets.token_hex(8)}"
        connection = psycopg2.connect(**options)
        connection.set_session(readonly=True, autocommit=False)
        scs = connection.info.parameter_status("standard_conforming_strings") != "off"
        return Session("postgresql", connection, Settings(standard_conforming_strings=scs), options)
    import pymysql

    connection = pymysql.connect(**options, autocommit=True, cursorclass=pymysql.cursors.SSCursor)
    session = Session("mysql", connection, Settings(), options, connection.thread_id())
    with deadline(connection, seconds):
        cursor = connection.cursor(pymysql.cursors.Cursor)
        cursor.execute("SELECT @@SESSION.sql_mode, VERSION()")
        sql_mode, version = cursor.fetchone()
        cursor.close()
    modes = set(sql_mode.upper().split(","))
    session.settings = Settings(backslash_escapes="NO_BACKSLASH_ESCAPES" not in modes, ansi_quotes="ANSI_QUOTES" in modes)
    session.dialect = "mariadb" if "mariadb" in version.lower() else "mysql"
    return session


def _open_sqlite(url: URL, max_bytes: int) -> Session:
    path = url.database or ""
    if path in ("", ":memory:") or path.startswith("file:"):
        raise unavailable("The console needs a SQLite file it can open read-only")
    uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro"
    connection = sqlite3.connect(uri, uri=True, timeout=1.0, isolation_level=None, check_same_thread=False)
    connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max_bytes)  # no string, blob or row above the budget
    connection.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    connection.execute("PRAGMA query_only = ON")
    return Session("sqlite", connection, Settings(), {})


def _execute(session: Session, checked: Checked, params: dict[str, Any], max_rows: int,
             statement_s: float, max_bytes: int) -> dict[str, Any]:
    connection = session.connection
    cancelled = threading.Event()
    give_up_at = time.monotonic() + statement_s

    def cancel() -> None:
        cancelled.set()
        _cancel_on_server(session)

    timer = threading.Timer(statement_s, cancel)
    timer.daemon = True
    started = time.perf_counter()
    try:
        with deadline(connection, statement_s + CANCEL_GRACE_S):
            timer.start()
            cursor = _start(session, checked, params, statement_s, give_up_at)

            def fetch_one() -> Any:
                if time.monotonic() > give_up_at:
                    raise timed_out(statement_s)
                return cursor.fetchone()

            first = fetch_one() if cursor.description is not None or session.dialect == "postgresql" else None
            columns = [column[0] for column in cursor.description or []]
            pending = [first] if first is not None else []
            rows, truncated = collect(lambda: pending.pop() if pending else fetch_one(), max_rows, max_bytes)
    except ApiError:
        raise
    except DeadlineExceeded:
        raise timed_out(statement_s) from None
    except Exception as error:
        raise _failure(session, error, cancelled.is_set() or time.monotonic() > give_up_at, statement_s) from None
    finally:
        timer.cancel()
    elapsed = time.perf_counter() - started
    return {
        "columns": columns,
        "rows": rows,
        "row_count": len(rows),
        "truncated": truncated,
        "elapsed_ms": round(elapsed * 1000, 2),
    }


def _start(session: Session, checked: Checked, params: dict[str, Any], statement_s: float, give_up_at: float) -> Any:
    """Begin the read-only transaction with the server's timeout, and execute; returns the cursor."""
    connection = session.connection
    if session.dialect == "postgresql":
        setup = connection.cursor()
        setup.execute(f"SET LOCAL statement_timeout = {max(int(statement_s * 1000), 1)}")
        setup.execute(f"SET LOCAL idle_in_transaction_session_timeout = {int((statement_s + 5) * 1000)}")
        setup.close()
        if checked.first in STREAMED:
            cursor = connection.cursor(name="dbhealth_console")
            cursor.itersize = 1
        else:
            cursor = connection.cursor()
        cursor.execute(checked.statement, params)
        return cursor
    if session.dialect == "sqlite":
        connection.set_progress_handler(lambda: int(time.monotonic() > give_up_at), 1000)
        return connection.execute(checked.statement, params)
    cursor = connection.cursor()
    if session.dialect == "mariadb":
        cursor.execute(f"SET SESSION max_statement_time = {statement_s:.3f}")
    else:
        cursor.execute(f"SET SESSION max_execution_time = {max(int(statement_s * 1000), 1)}")
    session.cursor = cursor
    cursor.execute("START TRANSACTION READ ONLY")
    cursor.execute(checked.statement, params)
    return cursor


def _cancel_on_server(session: Session) -> None:
    """Stop the running statement on the server, from another thread."""
    try:
        if session.dialect == "postgresql":
            _cancel_postgresql(session)
        elif session.dialect in ("mysql", "mariadb"):
            import pymysql

            options = {**session.options, "connect_timeout": CANCEL_GRACE_S * 4, "read_timeout": CANCEL_GRACE_S * 4}
            killer = pymysql.connect(**options)
            try:
                killer.cursor().execute(f"KILL QUERY {int(session.thread_id)}")
            finally:
                killer.close()
    except Exception:  # the deadline watchdog cuts the socket if this did not work
        pass


def _cancel_postgresql(session: Session) -> None:
    """pg_cancel_backend from a connection of its own, as the same role, by the call's own application_name.

    Not psycopg2's ``connection.cancel()``: it keeps the GIL while it waits, with
    no timeout, so a server that stopped answering would freeze the whole worker.
    """
    import psycopg2

    target = session.options["application_name"]
    killer = psycopg2.connect(**{**session.options, "application_name": f"{APPLICATION_NAME}-cancel"})
    try:
        killer.autocommit = True
        with deadline(killer, CANCEL_GRACE_S * 4):
            # By name, not pid: behind pgbouncer the pid the client knows is the pooler's.
            killer.cursor().execute(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (target,)
            )
    finally:
        killer.close()


def close(session: Session) -> None:
    """End the session: nothing it did survives it."""
    connection = session.connection
    try:
        if session.dialect == "postgresql" and not connection.closed:
            with deadline(connection, CANCEL_GRACE_S * 2):
                connection.rollback()
                connection.autocommit = True
                connection.cursor().execute("DISCARD ALL")  # for a pooler that keeps the server session
        elif session.dialect in ("mysql", "mariadb"):
            # Closing the socket ends an unbuffered result without reading the rest of it;
            # then the cursor, detached, has nothing to drain when it is released.
            connection._force_close()
            if session.cursor is not None:
                session.cursor.connection = None
            if getattr(connection, "_result", None) is not None:
                connection._result.unbuffered_active = False
    except Exception:
        pass
    finally:
        try:
            if session.dialect in ("postgresql", "sqlite"):
                connection.close()
        except Exception:
            pass


def _failure(session: Session | None, error: BaseException, late: bool, statement_s: float) -> ApiError:
    """The ApiError a driver error means for the caller."""
    code = getattr(error, "pgcode", None)
    args = getattr(error, "args", ())
    if code is None and args and isinstance(args[0], int):
        code = args[0]
    message = server_message(error)
    if code in TIMEOUT_CODES or late or (isinstance(error, sqlite3.OperationalError) and "interrupted" in message):
        return timed_out(statement_s)
    if code in READ_ONLY_CODES or "readonly database" in message or "query_only" in message:
        return reject(f"The database refused a write: {message}")
    if isinstance(error, sqlite3.Error):
        disconnected = "unable to open" in message
    elif code is None:  # psycopg2: a lost connection has no SQLSTATE
        disconnected = type(error).__name__ in ("OperationalError", "InterfaceError")
    else:
        disconnected = code in LOST_CODES
    if session is None or disconnected:
        return unavailable(f"The console could not use the database: {message}")
    return ApiError(400, "query_error", message, "The database refused the query")


def server_message(error: BaseException) -> str:
    """The server's own message, first line, without the driver's prefix or credentials."""
    args = getattr(error, "args", ())
    pymysql_error = type(error).__module__.startswith("pymysql") and len(args) > 1
    message = (str(args[1]) if pymysql_error else str(error)).strip()
    return scrub_secrets(message.splitlines()[0] if message else type(error).__name__)
