"""Database probes per dialect, run on a small side pool under a hard deadline.

The side pool is separate from the application's pool on purpose: a probe must
answer while the application pool is exhausted, must not pay pool pre-ping,
BEGIN and ROLLBACK around one query (it runs in autocommit and *is* the ping),
and its connect timeout is capped by DB_HEALTH_TIMEOUT. SQLite has no socket to
freeze and its in-memory databases live in one connection, so SQLite is probed
through the application's own engine.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from .database import connect_args
from .deadline import DeadlineExceeded, deadline
from .extensions import db

_engines_lock = threading.Lock()

# One round trip: client connections in use (cheaper than counting pg_stat_activity),
# the limit, recovery state and replay lag (0 when everything received is replayed).
POSTGRES_PROBE = """
SELECT (SELECT count(*) FROM pg_stat_get_backend_idset() AS b WHERE pg_stat_get_backend_dbid(b) <> 0),
       current_setting('max_connections')::int,
       pg_is_in_recovery(),
       CASE WHEN NOT pg_is_in_recovery() THEN NULL
            WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)
       END
"""
POSTGRES_FACTS = """
SELECT EXTRACT(EPOCH FROM now() - pg_postmaster_start_time()),
       pg_database_size(current_database()),
       current_database()
"""
MARIADB_PROBE = (
    "SELECT @@read_only, @@max_connections, (SELECT VARIABLE_VALUE FROM "
    "information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'THREADS_CONNECTED')"
)


def side_engine(key: str | None, purpose: str = "probe") -> Engine:
    """A small pool for a bind (None is the primary), built on first use.

    ``probe`` engines run in autocommit; ``console`` engines (for /test) run
    transactions, on DATABASE_READONLY_URL for the primary when it is set.
    """
    app = current_app._get_current_object()
    engines = app.extensions["dbhealth"]["side_engines"]
    engine = engines.get((key, purpose))
    if engine is not None:
        return engine
    with _engines_lock:
        engine = engines.get((key, purpose))
        if engine is None:
            engine = engines[(key, purpose)] = _make_side_engine(app, key, purpose)
    return engine


def _make_side_engine(app: Flask, key: str | None, purpose: str) -> Engine:
    main = db.engines[key]
    url = main.url
    if purpose == "console" and key is None and app.config.get("READONLY_URL") is not None:
        url = app.config["READONLY_URL"]
    elif main.dialect.name == "sqlite":
        return main
    if url.get_backend_name() == "sqlite":
        return sa.create_engine(url)
    timeout = app.config["DB_HEALTH_TIMEOUT"]
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if purpose == "probe" else {}
    return sa.create_engine(
        url,
        pool_size=1,
        max_overflow=2,
        pool_timeout=timeout,
        pool_recycle=app.config["DB_POOL_RECYCLE"],
        pool_pre_ping=False,
        pool_reset_on_return=None if purpose == "probe" else "rollback",
        connect_args=connect_args(url, min(timeout, app.config["DB_CONNECT_TIMEOUT"])),
        **options,
    )


@contextmanager
def _side_connection(key: str | None, seconds: float, purpose: str) -> Iterator[Connection]:
    with side_engine(key, purpose).connect() as connection:
        try:
            with deadline(connection.connection.dbapi_connection, seconds):
                yield connection
        except DeadlineExceeded:
            if not connection.invalidated:
                connection.invalidate()
            raise


def run_bounded(
    key: str | None, seconds: float, work: Callable[[Connection], Any], purpose: str = "probe"
) -> Any:
    """Run ``work`` on a side connection and give up after ``seconds``.

    A connection pooled before a database restart fails on first use; that one
    failure is retried at once on a fresh connection, as pre-ping would have.
    """
    deadline_at = time.monotonic() + seconds
    for attempt in (1, 2):
        try:
            with _side_connection(key, max(deadline_at - time.monotonic(), 0.001), purpose) as connection:
                return work(connection)
        except DBAPIError as error:
            if attempt == 2 or not error.connection_invalidated or time.monotonic() >= deadline_at:
                raise
    raise AssertionError("unreachable")


def fetch_row(connection: Connection, sql: str) -> tuple[Any, ...] | None:
    """One row through the driver's own cursor.

    SQLAlchemy's result machinery costs about as much as a probe query; errors
    are still raised as SQLAlchemy's, and a dead connection is invalidated.
    """
    dbapi_connection = connection.connection.dbapi_connection
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(sql)
        return cursor.fetchone()
    except connection.dialect.loaded_dbapi.Error as error:
        disconnected = connection.dialect.is_disconnect(error, dbapi_connection, cursor)
        if disconnected:
            connection.invalidate(error)
        raise DBAPIError.instance(
            sql, None, error, connection.dialect.loaded_dbapi.Error, connection_invalidated=disconnected
        ) from error
    finally:
        try:
            cursor.close()
        except Exception:
            pass


def _connections(used: Any, maximum: Any) -> dict[str, Any]:
    used = int(used) if used is not None else None
    maximum = int(maximum) if maximum is not None else None
    percent = round(100.0 * used / maximum, 1) if used is not None and maximum else None
    return {"used": used, "max": maximum, "percent": percent}


def probe_postgresql(connection: Connection, full: bool) -> dict[str, Any]:
    major, minor = connection.dialect.server_version_info[:2]
    facts: dict[str, Any] = {"database_type": "postgresql", "version": f"PostgreSQL {major}.{minor}"}
    if not full:
        (in_recovery,) = fetch_row(connection, "SELECT pg_is_in_recovery()")
        return {**facts, "read_only": bool(in_recovery), "replica": bool(in_recovery)}
    used, maximum, in_recovery, lag = fetch_row(connection, POSTGRES_PROBE)
    return {
        **facts,
        "connections": _connections(used, maximum),
        "read_only": bool(in_recovery),
        "replica": bool(in_recovery),
        "replication_lag_s": round(float(lag), 3) if lag is not None else None,
    }


def _mysql_flavour(connection: Connection) -> tuple[str, str]:
    """(database_type, version) from VERSION(), asked once per connection."""
    info = connection.connection.info
    if "flavour" not in info:
        version = fetch_row(connection, "SELECT VERSION()")[0] or ""
        if "tidb" in version.lower():
            flavour, label = "tidb", "TiDB " + version.split("TiDB-")[-1]
        elif "mariadb" in version.lower():
            flavour, label = "mariadb", "MariaDB " + version.split("-")[0]
        else:
            flavour, label = "mysql", "MySQL " + version.split("-")[0]
        info["flavour"] = (flavour, label)
    return info["flavour"]


def probe_mysql(connection: Connection, full: bool) -> dict[str, Any]:
    flavour, version = _mysql_flavour(connection)
    facts: dict[str, Any] = {"database_type": flavour, "version": version}
    if not full:
        (read_only,) = fetch_row(connection, "SELECT @@read_only")
        return {**facts, "read_only": bool(int(read_only)), "replica": bool(int(read_only))}
    if flavour == "mariadb":
        read_only, maximum, used = fetch_row(connection, MARIADB_PROBE)
    else:
        read_only, maximum = fetch_row(connection, "SELECT @@read_only, @@max_connections")
        row = fetch_row(connection, "SHOW GLOBAL STATUS LIKE 'Threads_connected'")
        used = row[1] if row else None
    return {
        **facts,
        "connections": _connections(used, maximum),
        "read_only": bool(int(read_only)),
        "replica": bool(int(read_only)),
        "replication_lag_s": None,
    }


def probe_sqlite(connection: Connection, full: bool) -> dict[str, Any]:
    fetch_row(connection, "SELECT count(*) FROM sqlite_master")
    facts: dict[str, Any] = {
        "database_type": "sqlite",
        "version": f"SQLite {sqlite3.sqlite_version}",
        "read_only": False,
        "replica": False,
    }
    if not full:
        return facts
    facts["journal_mode"] = fetch_row(connection, "PRAGMA journal_mode")[0]
    path = connection.engine.url.database
    if path and path != ":memory:" and os.path.exists(path):
        facts["file_size_bytes"] = os.path.getsize(path)
        facts["disk_free_bytes"] = shutil.disk_usage(os.path.dirname(path)).free
    return facts


PROBES = {"postgresql": probe_postgresql, "mysql": probe_mysql, "mariadb": probe_mysql, "sqlite": probe_sqlite}


def probe(key: str | None, seconds: float, full: bool = True) -> dict[str, Any]:
    """Probe one database; raises DeadlineExceeded or SQLAlchemyError when it does not answer.

    A light probe is one cheap round trip (liveness and read-only state); a full
    one also counts connections and measures replica lag.
    """
    dialect = db.engines[key].dialect.name
    return run_bounded(key, seconds, lambda connection: PROBES[dialect](connection, full))


def _server_facts_postgresql(connection: Connection) -> dict[str, Any]:
    uptime, size, name = connection.exec_driver_sql(POSTGRES_FACTS).one()
    return {"uptime_seconds": round(float(uptime)), "database_size_bytes": int(size), "database": name}


def _server_facts_mysql(connection: Connection) -> dict[str, Any]:
    uptime = connection.exec_driver_sql("SHOW GLOBAL STATUS LIKE 'Uptime'").first()
    size, name = connection.exec_driver_sql(
        "SELECT COALESCE(SUM(data_length + index_length), 0), DATABASE() "
        "FROM information_schema.TABLES WHERE table_schema = DATABASE()"
    ).one()
    facts: dict[str, Any] = {
        "uptime_seconds": int(uptime[1]) if uptime else None,
        "database_size_bytes": int(size),
        "database": name,
    }
    try:
        status = connection.exec_driver_sql("SHOW REPLICA STATUS").mappings().first()
    except DBAPIError:
        try:
            status = connection.exec_driver_sql("SHOW SLAVE STATUS").mappings().first()
        except DBAPIError:
            status = None
    if status:
        lag = status.get("Seconds_Behind_Source", status.get("Seconds_Behind_Master"))
        facts["replication_lag_s"] = float(lag) if lag is not None else None
    return facts


def _server_facts_sqlite(connection: Connection) -> dict[str, Any]:
    page_count = connection.exec_driver_sql("PRAGMA page_count").scalar()
    page_size = connection.exec_driver_sql("PRAGMA page_size").scalar()
    return {"uptime_seconds": None, "database_size_bytes": page_count * page_size, "database": connection.engine.url.database}


SERVER_FACTS = {
    "postgresql": _server_facts_postgresql,
    "mysql": _server_facts_mysql,
    "mariadb": _server_facts_mysql,
    "sqlite": _server_facts_sqlite,
}


def server_facts(key: str | None, seconds: float) -> dict[str, Any]:
    """Slower facts for /status: uptime, database size, replication state."""
    dialect = db.engines[key].dialect.name
    return run_bounded(key, seconds, SERVER_FACTS[dialect])
