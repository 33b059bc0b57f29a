"""Migration state: the database's Alembic revision against the code's head.

Asked on the health path, so it is rechecked at most every MIGRATIONS_RECHECK_S
seconds, under a hard deadline, and the last known answer holds while the
database does not answer.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from alembic.script import ScriptDirectory
from flask import Flask
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ..db.deadline import DeadlineExceeded
from ..db.side import run_bounded

MIGRATIONS_RECHECK_S = 30.0


class MigrationState:
    def __init__(self, app: Flask):
        self.app = app
        self.lock = threading.Lock()
        self.head: str | None = None
        self.known: dict[str, Any] | None = None
        self.checked_at = -MIGRATIONS_RECHECK_S

    def get(self, force: bool = False) -> dict[str, Any]:
        """``{"current", "head", "up_to_date"}``; ``up_to_date`` is None while unknown."""
        with self.lock:
            if not force and self.known is not None and time.monotonic() - self.checked_at < MIGRATIONS_RECHECK_S:
                return self.known
            if self.head is None:
                config = self.app.extensions["migrate"].migrate.get_config()
                self.head = ScriptDirectory.from_config(config).get_current_head()
            head, known = self.head, self.known
        try:
            current = run_bounded(None, self.app.config["DB_HEALTH_TIMEOUT"], _current_revision)
        except (SQLAlchemyError, DeadlineExceeded):
            return known or {"current": None, "head": head, "up_to_date": None}
        answer = {"current": current, "head": head, "up_to_date": current == head}
        with self.lock:
            self.known, self.checked_at = answer, time.monotonic()
        return answer


def _current_revision(connection: Connection) -> str | None:
    try:
        return connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    except DBAPIError:
        if connection.invalidated:
            raise
        return None
