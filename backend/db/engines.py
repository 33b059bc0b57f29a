"""Engine options per dialect: pool sizes, timeouts, driver arguments, SQLite pragmas.

Flask-SQLAlchemy owns the engines and sessions; this module only decides how
they are built, so nothing else needs to know about dialects.
"""
from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from . import tls
from .hosts import race_hosts
from .budget import BudgetedQueuePool, guard_engine
from .urls import database_backend

APPLICATION_NAME = "dbhealth"
# Socket timeouts for PyMySQL: no ordinary query of this service runs longer.
MYSQL_READ_WRITE_TIMEOUT = 30
SQLITE_BUSY_TIMEOUT = 5.0


def engine_options(url: URL, settings: dict[str, Any]) -> dict[str, Any]:
    """Engine options for one database: pool, timeouts and driver arguments per dialect."""
    # hide_parameters: bound values (password hashes, user input) stay out of error messages.
    options: dict[str, Any] = {"url": url, "echo": settings["DB_ECHO"], "hide_parameters": True}
    backend = database_backend(url)
    if backend == "sqlite":
        options["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT}
        return options

    options.update(
        poolclass=BudgetedQueuePool,  # the wait for a free connection is capped by the request's budget
        pool_size=settings["DB_POOL_SIZE"],
        max_overflow=settings["DB_MAX_OVERFLOW"],
        pool_timeout=settings["DB_POOL_TIMEOUT"],
        pool_recycle=settings["DB_POOL_RECYCLE"],
        pool_pre_ping=True,
        # TLS (DB_SSL*) beside the timeouts: the side engines (side.py) add the same.
        connect_args={**connect_args(url, settings["DB_CONNECT_TIMEOUT"]), **tls.driver_arguments(url, settings)},
    )
    return options


def connect_args(url: URL, connect_timeout: float) -> dict[str, Any]:
    """Driver arguments that bound connecting and notice dead peers."""
    if url.get_driver_name() == "psycopg2":
        return {
            # libpq takes whole seconds and treats 1 as 2.
            "connect_timeout": max(2, math.ceil(connect_timeout)),
            "application_name": APPLICATION_NAME,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "tcp_user_timeout": 30_000,
        }
    if url.get_driver_name() == "pymysql":
        return {
            "connect_timeout": connect_timeout,
            "read_timeout": MYSQL_READ_WRITE_TIMEOUT,
            "write_timeout": MYSQL_READ_WRITE_TIMEOUT,
            "charset": "utf8mb4",
        }
    return {}


def sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    """Foreign keys on, WAL for files, a busy timeout: set on every new SQLite connection."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
    cursor.execute("PRAGMA journal_mode")
    if cursor.fetchone()[0] not in ("memory", "wal"):
        cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def prepare_engine(engine: Engine) -> None:
    """Attach connection set-up to an engine (Flask-SQLAlchemy's or a side one): SQLite pragmas,
    racing a multi-host URL's hosts, and the budget's guards."""
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", sqlite_pragmas)
    race_hosts(engine)
    guard_engine(engine)
