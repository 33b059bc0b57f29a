"""The connection kept open per database: health probes, and the service's own small reads and writes.

One connection per database and worker serves the probe (one round trip, no
pool checkout) and every ``run_bounded`` call of the service's own (revoked
tokens, migration state, status facts, the reconnect generation, stored
transitions), one at a time. Behind pgbouncer in session mode each client
connection pins a server connection, so this keeps a worker's share small: this
connection, the console's, and the application's pool (sized to its threads).
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from ..state import state
from .budget import connect_within
from .deadline import DeadlineExceeded, deadline
from .side import driver_fetch, engines_lock, retry_stale_once, side_engine

T = TypeVar("T")
# Connections a forked child inherited: never used, never closed (the parent owns the socket).
_INHERITED: list[Any] = []


class ProbeConnection:
    """One connection per database, kept open between probes.

    A probe then costs one round trip and no pool checkout. The lock lets one
    caller at a time use it (a probe, a bounded read) and makes closing it
    (reconnect) wait for a call in progress; waiting for the lock counts against
    the caller's deadline, and the call itself is bounded by what is left. A
    connection that turns out dead is replaced at once, within the same deadline.
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self.dialect = engine.dialect
        self.url = engine.url
        self.lock = threading.Lock()
        self.connection: Connection | None = None
        self.pooled: Any = None  # the driver connection's pool wrapper, for the probe's own cursor
        self.pid = 0
        self.info: dict[str, Any] = {}

    def fetch(self, sql: str) -> tuple[Any, ...] | None:
        return driver_fetch(self.pooled.dbapi_connection, self.dialect, sql)

    def server_pid(self) -> int | None:
        """The server's id of the kept connection (PostgreSQL backend pid, MySQL connection id), if open here."""
        pooled = self.pooled
        if pooled is None or self.pid != os.getpid():
            return None
        raw = getattr(pooled, "dbapi_connection", None)
        try:
            if hasattr(raw, "get_backend_pid"):  # psycopg2
                return int(raw.get_backend_pid())
            if hasattr(raw, "thread_id"):  # PyMySQL
                return int(raw.thread_id())
        except Exception:  # a closed driver connection has no id
            return None
        return None

    def run(self, seconds: float, work: Callable[[ProbeConnection], T]) -> T:
        started = time.monotonic()
        if not self.lock.acquire(timeout=max(seconds, 0.001)):
            raise DeadlineExceeded(f"the kept connection stayed busy for {seconds:g}s")
        try:
            left = max(seconds - (time.monotonic() - started), 0.001)
            return retry_stale_once(left, lambda remaining: self._attempt(remaining, work))
        finally:
            self.lock.release()

    def run_sql(self, seconds: float, work: Callable[[Connection], T]) -> T:
        """``work(connection)`` with SQLAlchemy's API on the kept connection (autocommit), under the deadline."""

        def on_connection(kept: ProbeConnection) -> T:
            try:
                return work(kept.connection)
            finally:
                if kept.connection is not None and kept.connection.in_transaction() and not kept.connection.invalidated:
                    kept.connection.rollback()  # end SQLAlchemy's own bookkeeping; autocommit sends nothing

        return self.run(seconds, on_connection)

    def _usable(self) -> bool:
        """Opened in this process, and neither closed nor invalidated since (either leaves the pool's
        wrapper without a driver connection): SQLAlchemy invalidates a connection on a disconnect it
        sees, even one its caller then handled."""
        return self.pooled is not None and self.pid == os.getpid() and self.pooled.dbapi_connection is not None

    def _attempt(self, seconds: float, work: Callable[[ProbeConnection], T]) -> T:
        if not self._usable():
            started = time.monotonic()
            self._close(broken=True)  # a dead one of ours: dropped (one inherited across a fork: only forgotten)
            self._open(seconds)
            seconds = max(seconds - (time.monotonic() - started), 0.001)
        try:
            with deadline(self.pooled.dbapi_connection, seconds):
                return work(self)
        except DeadlineExceeded:
            self._close(broken=True)
            raise
        except DBAPIError as error:
            if error.connection_invalidated:
                self._close(broken=True)
            raise

    def close(self) -> bool:
        """Close the kept connection; True if there was one."""
        with self.lock:
            was_open = self.connection is not None and self.pid == os.getpid()
            self._close()
            return was_open

    def _open(self, seconds: float) -> None:
        """Connect, waiting at most ``seconds`` (libpq's connect_timeout cannot go below 2 s), in place
        of the connection _attempt has just let go."""
        if self.dialect.name == "sqlite":  # no network; and a memory database lives in its thread's connection
            connection = self.engine.connect()
        else:
            # connect and SQLAlchemy's first-connect queries together, on a helper thread
            connection = connect_within(seconds, self.engine.connect, Connection.close)
        self.connection, self.pooled, self.pid = connection, connection.connection, os.getpid()

    def _close(self, broken: bool = False) -> None:
        if self.connection is not None and self.pid == os.getpid():  # for SQLite: back to the app's pool
            try:
                if broken:  # cut by the watchdog or dead: nothing to roll back, just drop it
                    self.connection.invalidate()
                self.connection.close()
            except Exception:
                pass
        self._forget()

    def _forget(self) -> None:
        if self.connection is not None and self.pid != os.getpid():
            _INHERITED.append(self.connection)
        self.connection = self.pooled = None
        self.info = {}


def probe_connection(key: str | None) -> ProbeConnection:
    """The kept-open probe connection of a database (None is the primary)."""
    connections = state().probe_connections
    connection = connections.get(key)
    if connection is None:
        engine = side_engine(key, "kept")
        with engines_lock:
            connection = connections.setdefault(key, ProbeConnection(engine))
    return connection


