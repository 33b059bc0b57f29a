"""Side engines by purpose, and database calls under a hard deadline on them.

The side pools are separate from the application's pool on purpose: a probe
must answer while the application pool is exhausted, must not pay pool
pre-ping, BEGIN and ROLLBACK around one query (probes run in autocommit and
*are* the ping), and its connect timeout is capped by DB_HEALTH_TIMEOUT.
SQLite has no socket to freeze and its in-memory databases live in one
connection, so SQLite goes through the application's own engine.

Every call registers its socket with the deadline watchdog (deadline.py), so a
server that stops answering is cut off on time, and runs within the budget in
force (budget.py): connecting, the pool's wait and the work itself.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from flask import Flask, current_app
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import DBAPIError

from ..extensions import db
from ..state import state
from . import tls
from .budget import BudgetedQueuePool, bounded, guard_engine
from .deadline import DeadlineExceeded, deadline
from .engines import connect_args
from .hosts import race_hosts

T = TypeVar("T")
PROBE_APPLICATION_NAME = "dbhealth-probe"
engines_lock = threading.Lock()


def side_engine(key: str | None, purpose: str = "reads") -> Engine:
    """A small pool for a bind (None is the primary), built on first use.

    ``reads`` engines (the service's own bounded reads: revoked tokens,
    migrations, status facts) run in autocommit; ``kept`` ones too, without a
    pool, for ProbeConnection; ``console`` engines (for /test) run transactions, on
    DATABASE_READONLY_URL for the primary when it is set. For SQLite every
    purpose but that one is the app's own engine.
    """
    app = current_app._get_current_object()
    engines = state(app).side_engines
    engine = engines.get((key, purpose))
    if engine is not None:
        return engine
    with engines_lock:
        engine = engines.get((key, purpose))
        if engine is None:
            engine = _make_side_engine(app, key, purpose)
            if engine is not db.engines[key]:
                race_hosts(engine)  # several hosts in the URL: race them, as the app's engines do
            engines[(key, purpose)] = engine
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
    arguments = connect_args(url, min(timeout, app.config["DB_CONNECT_TIMEOUT"]))
    arguments.update(tls.driver_arguments(url, app.config))  # the same TLS as the app's own pool
    if purpose == "kept":  # every connection new: ProbeConnection keeps its own
        if "application_name" in arguments:  # so every worker's probe is known, and never signalled (ops/kill.py)
            arguments["application_name"] = PROBE_APPLICATION_NAME
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT", connect_args=arguments)
        guard_engine(engine, per_use=False)
        return engine
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if purpose == "reads" else {}
    engine = sa.create_engine(
        url,
        poolclass=BudgetedQueuePool,
        pool_size=1,
        max_overflow=2,
        pool_timeout=timeout,
        pool_recycle=app.config["DB_POOL_RECYCLE"],
        pool_pre_ping=False,
        pool_reset_on_return=None if purpose == "reads" else "rollback",
        connect_args=arguments,
        **options,
    )
    guard_engine(engine)
    return engine


def retry_stale_once(seconds: float, attempt: Callable[[float], T]) -> T:
    """Call ``attempt(remaining_seconds)``; once more, at once, if its connection died.

    A connection kept from before a database restart fails on first use; that one
    failure is retried on a fresh connection, as pre-ping would have, within the
    same deadline. Any other failure is raised.
    """
    deadline_at = time.monotonic() + seconds
    for tries in (1, 2):
        try:
            return attempt(max(deadline_at - time.monotonic(), 0.001))
        except DBAPIError as error:
            if tries == 2 or not error.connection_invalidated or time.monotonic() >= deadline_at:
                raise
    raise AssertionError("unreachable")


def run_bounded(
    key: str | None, seconds: float, work: Callable[[Connection], T], purpose: str = "reads"
) -> T:
    """Run ``work`` on a side connection; give up after ``seconds`` or when the budget in force is spent.

    The service's own reads and small writes (``purpose="reads"``) run on the
    kept-open probe connection, one at a time, so a worker holds one connection
    per database for all of them (probe_connection.py). Raises DeadlineExceeded
    when time ran out, whichever step it caught.
    """

    def attempt(remaining: float) -> T:
        with side_engine(key, purpose).connect() as connection:
            try:
                with deadline(connection.connection.dbapi_connection, remaining):
                    return work(connection)
            except DeadlineExceeded:
                if not connection.invalidated:
                    connection.invalidate()
                raise

    with bounded(seconds) as budget:
        budget.check()
        try:
            if purpose == "reads":
                from .probe_connection import probe_connection  # it builds on this module

                return probe_connection(key).run_sql(budget.left(), work)
            return retry_stale_once(budget.left(), attempt)
        except DBAPIError as error:
            if budget.left() <= 0:  # cut by the budget's own watch while connecting or checking out
                raise DeadlineExceeded(f"no answer within {budget.seconds:.2f}s") from error
            raise


def driver_fetch(dbapi_connection: Any, dialect: Dialect, sql: str) -> tuple[Any, ...] | None:
    """One row through the driver's own cursor, errors raised as SQLAlchemy's.

    SQLAlchemy's result machinery costs about as much as a probe query.
    ``connection_invalidated`` on the error tells that the connection died.
    """
    cursor = None
    try:
        cursor = dbapi_connection.cursor()
        cursor.execute(sql)
        return cursor.fetchone()
    except dialect.loaded_dbapi.Error as error:
        disconnected = dialect.is_disconnect(error, dbapi_connection, cursor)
        raise DBAPIError.instance(
            sql, None, error, dialect.loaded_dbapi.Error, connection_invalidated=disconnected
        ) from error
    finally:
        if cursor is not None:
            try:
                cursor.close()
            except Exception:
                pass
