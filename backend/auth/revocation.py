"""Revoked token ids, kept in memory by every process and reloaded on a timer of their own.

Checking a token must not cost a database round trip per request, nor hang or
fail while the database is down; and a revocation must reach every worker of
every instance within 2 s whatever the traffic (SPEC 4). So each serving
process loads the set of unexpired revoked jtis once before it serves (bounded
by DB_HEALTH_TIMEOUT), then reloads it every RELOAD_S on a daemon thread of its
own, whether or not requests come and whatever DB_HEALTH_CHECK_INTERVAL says: a
revocation made anywhere is refused here within RELOAD_S plus one load. Each
load is also kept in the instance folder; a process that starts while the
database is down starts from that copy (and only then). A revocation made by
this process applies at once.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from datetime import datetime

import sqlalchemy as sa
from flask import Flask
from sqlalchemy.exc import SQLAlchemyError

from .. import audit
from ..db import side
from ..db.classify import is_transient
from ..db.deadline import DeadlineExceeded
from ..db.retry import with_db_retry
from ..extensions import db
from ..models import RevokedToken, utcnow
from ..state import state

RELOAD_S = 1.0
LOCAL_COPY = "revoked-tokens.json"
log = logging.getLogger(__name__)


class RevokedTokens:
    """The revoked jtis of this process, reloaded every RELOAD_S once ``start`` ran in it."""

    def __init__(self, app: Flask):
        self.app = app
        self.path = os.path.join(app.instance_path, LOCAL_COPY)
        self.loaded: frozenset[str] | None = None  # the database's set as last loaded here
        self.added: set[str] = set()  # revoked here and not yet seen in a load
        self.jtis: frozenset[str] = self._read_local_copy() or frozenset()
        self.lock = threading.Lock()
        self.start_lock = threading.Lock()
        self.started_pid: int | None = None
        self.stopped = threading.Event()
        self.problem: str | None = None  # the failure last logged, so a repeated one is logged once
        self.failures = 0

    def contains(self, jti: str) -> bool:
        return jti in self.jtis

    def add(self, jti: str) -> None:
        with self.lock:
            self.added.add(jti)
            self.jtis = self.jtis | {jti}

    def start(self) -> None:
        """Load before serving, then reload on the timer; once per process (cheap when already done)."""
        if self.started_pid == os.getpid():
            return
        with self.start_lock:  # a gthread worker's other threads wait for the first load
            if self.started_pid == os.getpid():
                return
            self.stopped.clear()
            self.reload()
            threading.Thread(target=self._loop, name="revocation-reload", daemon=True).start()
            self.started_pid = os.getpid()

    def stop(self) -> None:
        self.stopped.set()

    def _loop(self) -> None:
        while not self.stopped.wait(RELOAD_S):
            self.reload()
            if self.problem is None:
                self._flush_audit_spool()

    def reload(self) -> None:
        """Load the set from the database; on failure keep the last known one and say why once."""
        try:
            with self.app.app_context():
                query = sa.select(RevokedToken.jti).where(RevokedToken.expires_at > utcnow())
                timeout = self.app.config["DB_HEALTH_TIMEOUT"]
                rows = side.run_bounded(None, timeout, lambda connection: _load(connection, query))
        except (SQLAlchemyError, DeadlineExceeded) as error:
            self._failed(error, outage=isinstance(error, DeadlineExceeded) or is_transient(error))
            return
        except Exception as error:
            self._failed(error, outage=False)
            return
        loaded = frozenset(rows)
        with self.lock:
            changed = loaded != self.loaded
            self.added -= loaded
            self.loaded = loaded
            self.jtis = loaded | self.added
        if changed:
            self._write_local_copy(loaded)
        if self.problem is not None:
            log.info("revoked tokens reloaded (%d) after: %s", len(loaded), self.problem)
            self.problem = None

    def _failed(self, error: BaseException, outage: bool) -> None:
        """An outage is one warning until it ends; anything else is logged with its traceback."""
        self.failures += 1
        problem = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        if problem == self.problem:
            return
        self.problem = problem
        if outage:
            log.warning("cannot reload revoked tokens (database unavailable), keeping the last known %d: %s",
                        len(self.jtis), type(error).__name__)
        else:
            log.error("cannot reload revoked tokens, keeping the last known %d", len(self.jtis), exc_info=error)

    def _flush_audit_spool(self) -> None:
        try:
            with self.app.app_context():
                audit.flush_spool(self.app)
        except (SQLAlchemyError, DeadlineExceeded) as error:
            log.warning("spooled audit events not stored yet: %s", type(error).__name__)
        except Exception:
            log.exception("spooled audit events not stored")

    def _read_local_copy(self) -> frozenset[str] | None:
        try:
            with open(self.path) as handle:
                return frozenset(json.load(handle))
        except (OSError, ValueError, TypeError):
            return None

    def _write_local_copy(self, jtis: frozenset[str]) -> None:
        temporary = f"{self.path}.{os.getpid()}"
        try:
            with open(temporary, "w") as handle:
                json.dump(sorted(jtis), handle)
            os.replace(temporary, self.path)
        except OSError as error:
            log.warning("cannot keep a local copy of revoked tokens: %s", error)


def _load(connection: sa.Connection, query: sa.Select) -> list[str]:
    """Run the load; a connection whose pool was disposed meanwhile (/reconnect) is closed, not kept.

    This timer runs beside the thread that disposes pools: a connection checked
    out across a dispose would otherwise go back to the old pool and stay open.
    """
    rows = connection.execute(query).scalars().all()
    if connection.connection._pool is not connection.engine.pool:
        connection.invalidate()
    return rows


def revoked_tokens() -> RevokedTokens:
    return state().revoked


@with_db_retry()
def revoke(jti: str, expires_at: datetime) -> bool:
    """Store a revocation and prune expired ones; False if it was already revoked.

    Idempotent under retries: a retry after a lost acknowledgement finds the row.
    """
    now = utcnow()
    db.session.execute(sa.delete(RevokedToken).where(RevokedToken.expires_at <= now))
    exists = db.session.scalar(sa.select(RevokedToken.id).where(RevokedToken.jti == jti))
    if exists is None:
        db.session.add(RevokedToken(jti=jti, expires_at=expires_at))
    db.session.commit()
    revoked_tokens().add(jti)
    return exists is None
