"""pgbouncer's admin console: the ``pooler`` component of health, and RECONNECT.

The admin console (DB_PGBOUNCER_ADMIN_URL, database ``pgbouncer``) speaks only
the simple query protocol and knows only its own commands, so it is reached
with psycopg2 directly, in autocommit: SQLAlchemy's first-connect queries would
fail there. One connection per process is kept open, used under the same
deadline watchdog as every other database call, and replaced when it fails.
It is a client of pgbouncer only: it holds no server connection.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from typing import Any

import psycopg2
from sqlalchemy.engine import URL

from ..db.deadline import DeadlineExceeded, deadline
from ..db.engines import APPLICATION_NAME
from ..db.urls import scrub_secrets
from . import judge

log = logging.getLogger(__name__)


class PoolerConsole:
    def __init__(self, url: URL, connect_timeout: float, tls: dict[str, Any] | None = None):
        """``tls``: libpq's sslmode and certificate files (db/tls.py), as for every other connection."""
        self.params = {
            "host": url.host,
            "port": url.port or 6432,
            "user": url.username,
            "password": url.password,
            "dbname": url.database or "pgbouncer",
            "connect_timeout": max(2, math.ceil(connect_timeout)),  # libpq: whole seconds, 1 means 2
            "application_name": APPLICATION_NAME,
            **(tls or {}),
        }
        self.address = f"{self.params['host']}:{self.params['port']}"
        self.lock = threading.Lock()
        self.connection: Any = None
        self.pid = 0
        self.version: str | None = None

    def run(self, seconds: float, *statements: str) -> list[list[dict[str, Any]]]:
        """Rows of each admin command, as dicts; raises DeadlineExceeded or psycopg2.Error."""
        with self.lock:
            if self.connection is None or self.pid != os.getpid() or self.connection.closed:
                self.connection = None
                connection = psycopg2.connect(**{k: v for k, v in self.params.items() if v is not None})
                connection.autocommit = True  # the admin console refuses BEGIN
                self.connection, self.pid, self.version = connection, os.getpid(), None
            try:
                with deadline(self.connection, seconds):
                    return [self._rows(statement) for statement in statements]
            except (DeadlineExceeded, psycopg2.Error):
                self._close()
                raise

    def _rows(self, statement: str) -> list[dict[str, Any]]:
        with self.connection.cursor() as cursor:
            cursor.execute(statement)
            if cursor.description is None:
                return []
            names = [column.name for column in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    def _close(self) -> None:
        if self.connection is not None and self.pid == os.getpid():
            try:
                self.connection.close()
            except psycopg2.Error:
                pass
        self.connection = None

    def close(self) -> None:
        with self.lock:
            self._close()


def facts(console: PoolerConsole, seconds: float, databases: set[str]) -> dict[str, Any]:
    """The pools of our databases (all of them if none matches) from SHOW POOLS and SHOW DATABASES."""
    statements = ["SHOW POOLS", "SHOW DATABASES"] + (["SHOW VERSION"] if console.version is None else [])
    pools, listed, *version = console.run(seconds, *statements)
    if version and version[0]:
        console.version = next(iter(version[0][0].values()))
    pools = [pool for pool in pools if pool["database"] != "pgbouncer"]
    ours = [pool for pool in pools if pool["database"] in databases] or pools
    names = {pool["database"] for pool in ours}
    waits = [float(pool["maxwait"]) + float(pool.get("maxwait_us") or 0) / 1e6 for pool in ours]
    return {
        "database_type": "pgbouncer",
        "version": console.version,
        "address": console.address,
        "pool_mode": ", ".join(sorted({str(pool["pool_mode"]) for pool in ours})) or None,
        "clients_active": sum(int(pool["cl_active"]) for pool in ours),
        "clients_waiting": sum(int(pool["cl_waiting"]) for pool in ours),
        "longest_wait_s": round(max(waits, default=0.0), 3),
        "server_connections_in_use": sum(int(pool["sv_active"]) for pool in ours),
        "server_connections_idle": sum(int(pool["sv_idle"]) + int(pool["sv_used"]) for pool in ours),
        "pool_size": sum(int(row["pool_size"]) for row in listed if row["name"] in names) or None,
        "pools": [
            {
                "database": pool["database"],
                "user": pool["user"],
                "clients_active": int(pool["cl_active"]),
                "clients_waiting": int(pool["cl_waiting"]),
                "server_connections_in_use": int(pool["sv_active"]),
                "server_connections_idle": int(pool["sv_idle"]) + int(pool["sv_used"]),
                "pool_mode": pool["pool_mode"],
            }
            for pool in ours
        ],
    }


def reconnect(console: PoolerConsole, seconds: float, databases: set[str]) -> list[str]:
    """Ask pgbouncer to replace the server connections of our databases once released; returns their names."""
    (listed,) = console.run(seconds, "SHOW DATABASES")
    names = sorted({row["name"] for row in listed if row["name"] in databases})
    commands = [f'RECONNECT "{name}"' for name in names] or ["RECONNECT"]
    console.run(seconds, *commands)
    return names or ["*"]


def component(console: PoolerConsole, seconds: float, databases: set[str], timestamp: str) -> dict[str, Any]:
    """The ``pooler`` component of health, shaped like the databases' (judge.py decides its status)."""
    started = time.perf_counter()
    error = None
    try:
        found = facts(console, seconds, databases)
    except DeadlineExceeded:
        found, message = None, f"No answer from pgbouncer's admin console within {seconds:g}s"
    except psycopg2.Error as failure:
        error = scrub_secrets(str(failure).strip())
        log.warning("probe of pooler failed: %s", error)
        found, message = None, f"pgbouncer's admin console unreachable ({type(failure).__name__})"
    if found is None:
        status, warnings = "unhealthy", []
        found = {"database_type": "pgbouncer", "version": console.version, "address": console.address,
                 "clients_waiting": None, "longest_wait_s": None, "server_connections_in_use": None}
    else:
        warnings = judge.pooler_warnings(found)
        status, message = judge.component_verdict("pgbouncer", warnings)
    result = {
        "status": status,
        "database_type": found.pop("database_type"),
        "version": found.pop("version"),
        "timestamp": timestamp,
        "response_time_ms": round((time.perf_counter() - started) * 1000, 2),
        "cached": False,
        "pool_status": {},
        "message": message,
        "warnings": warnings,
        **found,
    }
    if status == "unhealthy":
        result["error"] = error
    return result
