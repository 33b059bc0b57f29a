"""Revoked token ids, kept in memory by every process and refreshed in the background.

Checking a token must not cost a database round trip per request, nor hang or
fail while the database is down. Each process holds the set of unexpired revoked
jtis and reloads it at most every REFRESH_S seconds on a background thread
(stale-while-revalidate), so no request waits for a refresh. During an outage the
last known set holds, and a restarted process starts from the copy of the last
load kept in the instance folder. A revocation made by this process applies at
once; one made elsewhere reaches this process within REFRESH_S seconds of its
next request.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import datetime

import sqlalchemy as sa
from flask import Flask

from ..db import side
from ..db.retry import with_db_retry
from ..extensions import db
from ..models import RevokedToken, utcnow
from ..state import state

REFRESH_S = 2.0
# A fresh process with no local copy waits this long for its first load, so a
# revoked token is not accepted in its first milliseconds; never longer, so an
# outage does not slow requests down.
FIRST_LOAD_WAIT_S = 0.1
LOCAL_COPY = "revoked-tokens.json"
log = logging.getLogger(__name__)


class RevokedTokens:
    """The revoked jtis of this process; each load is also kept in the instance
    folder, so a restarted worker starts from the last known set even while the
    database is down."""

    def __init__(self, app: Flask):
        self.app = app
        self.path = os.path.join(app.instance_path, LOCAL_COPY)
        self.loaded = self._read_local_copy()  # the database's set as last seen, None if never
        self.added: set[str] = set()  # revoked here and not yet seen in a load
        self.jtis = self.loaded or frozenset()
        self.loaded_at = 0.0
        self.lock = threading.Lock()
        self.refreshing: threading.Thread | None = None
        self.failing = False

    def contains(self, jti: str) -> bool:
        if time.monotonic() - self.loaded_at > REFRESH_S:
            self._refresh(wait=self.loaded_at == 0.0 and self.loaded is None)
        return jti in self.jtis

    def reload_if_older(self, seconds: float) -> None:
        """Load the set now if the last load is older than ``seconds``.

        Every worker's poller thread (fleet/poller.py) calls this once a second,
        so a worker that has been idle refuses a token revoked on another
        instance from its first request, not only from its second.
        """
        if time.monotonic() - self.loaded_at >= seconds and self.refreshing is None:
            self._load()

    def add(self, jti: str) -> None:
        with self.lock:
            self.added.add(jti)
            self.jtis = self.jtis | {jti}

    def _read_local_copy(self) -> frozenset[str] | None:
        try:
            with open(self.path) as handle:
                return frozenset(json.load(handle))
        except (OSError, ValueError):
            return None

    def _write_local_copy(self, jtis: frozenset[str]) -> None:
        temporary = f"{self.path}.{os.getpid()}"
        try:
            with open(temporary, "w") as handle:
                json.dump(sorted(jtis), handle)
            os.replace(temporary, self.path)
        except OSError as error:
            log.warning("cannot keep a local copy of revoked tokens: %s", error)

    def _refresh(self, wait: bool) -> None:
        with self.lock:
            thread = self.refreshing
            if thread is None:
                thread = self.refreshing = threading.Thread(target=self._load, name="revocation-refresh", daemon=True)
                thread.start()
        if wait:
            thread.join(FIRST_LOAD_WAIT_S)

    def _load(self) -> None:
        try:
            with self.app.app_context():
                query = sa.select(RevokedToken.jti).where(RevokedToken.expires_at > utcnow())
                timeout = self.app.config["DB_HEALTH_TIMEOUT"]
                rows = side.run_bounded(None, timeout, lambda connection: connection.execute(query).scalars().all())
            loaded = frozenset(rows)
            with self.lock:
                changed = loaded != self.loaded
                self.added -= loaded
                self.loaded = loaded
                self.jtis = loaded | self.added
            if changed:
                self._write_local_copy(loaded)
            if self.failing:
                log.info("revoked tokens reloaded (%d)", len(loaded))
            self.failing = False
        except Exception as error:
            if not self.failing:
                log.warning("cannot reload revoked tokens, keeping the last known %d: %s", len(self.jtis), type(error).__name__)
            self.failing = True
        finally:
            self.loaded_at = time.monotonic()
            with self.lock:
                self.refreshing = None


def revoked_tokens() -> RevokedTokens:
    return state().revoked


@with_db_retry()
def revoke(jti: str, expires_at: datetime) -> bool:
    """Store a revocation and prune expired ones; False if it was already revoked."""
    now = utcnow()
    db.session.execute(sa.delete(RevokedToken).where(RevokedToken.expires_at <= now))
    exists = db.session.scalar(sa.select(RevokedToken.id).where(RevokedToken.jti == jti))
    if exists is None:
        db.session.add(RevokedToken(jti=jti, expires_at=expires_at))
    db.session.commit()
    revoked_tokens().add(jti)
    return exists is None
