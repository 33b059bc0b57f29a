"""The per-app state Flask-SQLAlchemy does not keep: one typed object per app.

Stored as ``app.extensions["dbhealth"]``, the way Flask-SQLAlchemy keeps its own
state, and reached through ``state()``. It owns what outlives a request: the
side engines and kept-open probe connections, the monitor, the revoked-token
set, the pool generation this process applied, and this process's part in the
instance (whether it is the probing worker, its poller thread). Connection
lifecycle (dispose on reconnect, forget after a fork) lives here, in one place.
"""
from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import Flask, current_app

from .db.budget import BudgetedQueuePool
from .extensions import db
from .process import ProcessThread

if TYPE_CHECKING:
    from .auth.revocation import RevokedTokens
    from .fleet.leader import ProbeLeader
    from .db.probe_connection import ProbeConnection
    from .health.monitor import HealthMonitor


@dataclass
class DbHealth:
    app: Flask
    engine_options: dict[str | None, dict[str, Any]]
    monitor: HealthMonitor
    revoked: RevokedTokens
    leader: ProbeLeader
    side_engines: dict[tuple[str | None, str], sa.Engine] = field(default_factory=dict)
    probe_connections: dict[str | None, ProbeConnection] = field(default_factory=dict)
    verified_tokens: dict[str, tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict)  # header -> (jwt header, claims)
    generation: int = 0  # the pool generation this process last applied
    generation_local: int = 0  # reconnects asked through the instance folder alone (database down)
    generation_mtime: int = 0
    generation_seen: int | None = None  # the database's latest generation at the last poll
    generation_lock: threading.Lock = field(default_factory=threading.Lock)
    unrecorded: list[tuple[int, Any]] = field(default_factory=list)  # generations applied, not yet stored
    last_probe: dict[str, Any] | None = None  # this process's own last probe, for /status workers
    poller: ProcessThread = field(default_factory=lambda: ProcessThread("dbhealth-poller"))
    wake: threading.Event = field(default_factory=threading.Event)  # something for the poller to do now
    pruned_at: float = 0.0
    console_role_verified: bool = False  # DATABASE_READONLY_URL proved unable to write (console/guard.py)

    def engines(self) -> set[sa.Engine]:
        """Every engine of this app: Flask-SQLAlchemy's and the side ones."""
        with self.app.app_context():
            return {*db.engines.values(), *self.side_engines.values()}

    def dispose_connections(self) -> int:
        """Close this process's pooled and probe connections; returns how many idle ones were closed."""
        disposed = sum(connection.close() for connection in list(self.probe_connections.values()))
        for engine in self.engines():
            if isinstance(engine.pool, sa.pool.StaticPool):
                continue  # an in-memory SQLite database lives only in its one connection
            if isinstance(engine.pool, sa.pool.QueuePool):
                disposed += engine.pool.checkedin()
            _dispose(engine)
        return disposed

    def forget_inherited_connections(self) -> None:
        """In a forked child: drop the parent's pooled sockets without closing them."""
        for engine in self.engines():
            engine.dispose(close=False)


def _dispose(engine: sa.Engine) -> None:
    """``engine.dispose()``; the old pool closes the connections still out as they come back.

    SQLite's pools hold no server connection and are left to SQLAlchemy.
    """
    old = engine.pool
    engine.dispose()
    if isinstance(old, BudgetedQueuePool):
        old.retire()


def state(app: Flask | None = None) -> DbHealth:
    """The DbHealth of ``app``, or of the current app."""
    return (app or current_app).extensions["dbhealth"]


def forget_connections_after_fork(app: Flask) -> None:
    """A forked child must not use sockets it shares with its parent (gunicorn --preload, multiprocessing)."""
    app_ref = weakref.ref(app)

    def forget() -> None:
        app = app_ref()
        if app is not None:
            state(app).forget_inherited_connections()

    os.register_at_fork(after_in_child=forget)
