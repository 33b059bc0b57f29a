"""Revoked token ids, kept in memory by every process and refreshed in the background.

Checking a token must not cost a database round trip per request, nor hang or
fail while the database is down. Each process holds the set of unexpired revoked
jtis and reloads it at most every REFRESH_S seconds on a background thread
(stale-while-revalidate), so no request waits for a refresh except the very first
one of a process, which waits at most DB_HEALTH_TIMEOUT. During an outage the
last known set holds. A revocation made by this process applies at once; one
made elsewhere reaches this process within REFRESH_S seconds of its next request.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime

import sqlalchemy as sa
from flask import Flask, current_app

from . import checks
from .extensions import db
from .models import RevokedToken, utcnow
from .retry import with_db_retry

REFRESH_S = 2.0
log = logging.getLogger(__name__)


class RevokedTokens:
    def __init__(self, app: Flask):
        self.app = app
        self.jtis: frozenset[str] = frozenset()
        self.loaded_at = 0.0
        self.lock = threading.Lock()
        self.refreshing: threading.Thread | None = None
        self.failing = False

    def contains(self, jti: str) -> bool:
        if time.monotonic() - self.loaded_at > REFRESH_S:
            self._refresh(wait=self.loaded_at == 0.0)
        return jti in self.jtis

    def add(self, jti: str) -> None:
        with self.lock:
            self.jtis = self.jtis | {jti}

    def _refresh(self, wait: bool) -> None:
        with self.lock:
            thread = self.refreshing
            if thread is None:
                thread = self.refreshing = threading.Thread(target=self._load, name="revocation-refresh", daemon=True)
                thread.start()
        if wait:
            thread.join(self.app.config["DB_HEALTH_TIMEOUT"] + 0.5)

    def _load(self) -> None:
        try:
            with self.app.app_context():
                query = sa.select(RevokedToken.jti).where(RevokedToken.expires_at > utcnow())
                timeout = self.app.config["DB_HEALTH_TIMEOUT"]
                rows = checks.run_bounded(None, timeout, lambda connection: connection.execute(query).scalars().all())
            with self.lock:
                self.jtis = frozenset(rows)
            if self.failing:
                log.info("revoked tokens reloaded (%d)", len(rows))
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
    return current_app.extensions["dbhealth"]["revoked"]


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
