"""The connection kept open per database for health probes: one round trip, no pool checkout."""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from ..state import state
from .deadline import DeadlineExceeded, deadline
from .side import driver_fetch, engines_lock, retry_stale_once, side_engine

T = TypeVar("T")
# Connections a forked child inherited: never used, never closed (the parent owns the socket).
_INHERITED: list[Any] = []


class ProbeConnection:
    """One connection per database, kept open between probes.

    A probe then costs one round trip and no pool checkout. The monitor's single
    flight means one probe at a time; the lock makes closing it (reconnect) wait
    for a probe in progress, which the deadline bounds. A connection that turns
    out dead is replaced at once, within the same deadline.
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self.dialect = engine.dialect
        self.url = engine.url
        self.lock = threading.Lock()
        self.pooled: Any = None
        self.pid = 0
        self.info: dict[str, Any] = {}

    def fetch(self, sql: str) -> tuple[Any, ...] | None:
        return driver_fetch(self.pooled.dbapi_connection, self.dialect, sql)

    def run(self, seconds: float, work: Callable[[ProbeConnection], T]) -> T:
        with self.lock:
            return retry_stale_once(seconds, lambda remaining: self._attempt(remaining, work))

    def _attempt(self, seconds: float, work: Callable[[ProbeConnection], T]) -> T:
        if self.pooled is None or self.pid != os.getpid():
            self._open()
        try:
            with deadline(self.pooled.dbapi_connection, seconds):
                return work(self)
        except DeadlineExceeded:
            self._close()
            raise
        except DBAPIError as error:
            if error.connection_invalidated:
                self._close()
            raise

    def close(self) -> bool:
        """Close the kept connection; True if there was one."""
        with self.lock:
            was_open = self.pooled is not None and self.pid == os.getpid()
            self._close()
            return was_open

    def _open(self) -> None:
        self._forget()
        try:
            pooled = self.engine.raw_connection()
        except self.dialect.loaded_dbapi.Error as error:  # pools raise the driver's own errors
            raise DBAPIError.instance(None, None, error, self.dialect.loaded_dbapi.Error) from error
        self.pooled, self.pid = pooled, os.getpid()

    def _close(self) -> None:
        if self.pooled is not None and self.pid == os.getpid():  # for SQLite: back to the app's pool
            try:
                self.pooled.close()
            except Exception:
                pass
        self._forget()

    def _forget(self) -> None:
        if self.pooled is not None and self.pid != os.getpid():
            _INHERITED.append(self.pooled)
        self.pooled = None
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


