"""Health transitions of the whole fleet, kept in the database with their instance.

``record_transition`` never touches the database: it appends one line to a
spool file in the instance folder and wakes the worker's poller, which writes
the spool to ``health_transitions`` within a second, or later, when the
database is back (a transition is most often "the database went down", exactly
when it cannot be written). So recording costs a request nothing, and nothing
is lost during an outage. Stored transitions are kept DB_HISTORY_RETENTION_DAYS.
"""
from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app
from sqlalchemy.exc import SQLAlchemyError

from ..db import side
from ..db.deadline import DeadlineExceeded
from ..fleet.folder import locked, try_lock
from ..models import HealthTransition, ReconnectApplied, utcnow
from ..state import state

SPOOL = "transitions.spool"
FLUSH_LOCK = "transitions.flush.lock"
PRUNE_EVERY_S = 3600.0
MESSAGE_MAX = 500
TABLE = HealthTransition.__table__
log = logging.getLogger(__name__)


def record_transition(
    component: str, from_status: str | None, to_status: str, message: str | None = None, *, app: Flask | None = None
) -> None:
    """Keep a change of ``component`` on this instance (e.g. "primary changed from h1:5432 to h2:5432").

    Call it once per change per instance: the monitor does for status changes,
    deciding under the instance's shared health file so workers do not repeat it.
    """
    app = app or current_app._get_current_object()
    line = {
        "at": datetime.now(timezone.utc).replace(tzinfo=None).isoformat(timespec="milliseconds"),
        "instance": app.config["INSTANCE_ID"],
        "component": component,
        "from": from_status,
        "to": to_status,
        "message": (message or "")[:MESSAGE_MAX] or None,
    }
    path = os.path.join(app.instance_path, SPOOL)
    with locked(path + ".lock"):
        with open(path, "a") as handle:
            handle.write(json.dumps(line) + "\n")
    state(app).wake.set()


def _spooled(app: Flask) -> tuple[list[dict[str, Any]], int]:
    """The spooled transitions and the byte length they take."""
    path = os.path.join(app.instance_path, SPOOL)
    with locked(path + ".lock"):
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            return [], 0
    length = raw.rfind(b"\n") + 1  # a line still being written is left for next time
    lines = []
    for text in raw[:length].decode("utf-8", "replace").splitlines():
        try:
            lines.append(json.loads(text))
        except ValueError:
            log.warning("dropping an unreadable spooled transition: %r", text[:200])
    return lines, length


def _drop_first(app: Flask, length: int) -> None:
    path = os.path.join(app.instance_path, SPOOL)
    with locked(path + ".lock"):
        with open(path, "rb") as handle:
            rest = handle.read()[length:]
        with open(path, "wb") as handle:
            handle.write(rest)


def pending(app: Flask) -> bool:
    try:
        return os.path.getsize(os.path.join(app.instance_path, SPOOL)) > 0
    except OSError:
        return False


def flush(app: Flask, seconds: float) -> int:
    """Write spooled transitions to the database; how many. One worker at a time; raises if the database fails."""
    if not pending(app):
        return 0
    fd = try_lock(os.path.join(app.instance_path, FLUSH_LOCK))
    if fd is None:
        return 0  # a sibling is flushing
    try:
        lines, length = _spooled(app)
        if lines:
            rows = [
                {
                    "at": datetime.fromisoformat(line["at"]),
                    "instance": line["instance"],
                    "component": line["component"],
                    "from_status": line["from"],
                    "to_status": line["to"],
                    "message": line["message"],
                }
                for line in lines
            ]

            def insert(connection: sa.Connection) -> None:
                connection.execute(sa.insert(TABLE), rows)
                connection.commit()

            side.run_bounded(None, seconds, insert)
        if length:
            _drop_first(app, length)
        return len(lines)
    finally:
        os.close(fd)


def prune(app: Flask, seconds: float) -> None:
    """Delete transitions (and reconnect acknowledgements) older than DB_HISTORY_RETENTION_DAYS, at most hourly."""
    current = state(app)
    if time.monotonic() - current.pruned_at < PRUNE_EVERY_S and current.pruned_at:
        return
    cutoff = utcnow() - timedelta(days=app.config["DB_HISTORY_RETENTION_DAYS"])

    def delete(connection: sa.Connection) -> None:
        connection.execute(sa.delete(HealthTransition).where(HealthTransition.at < cutoff))
        connection.execute(sa.delete(ReconnectApplied).where(ReconnectApplied.applied_at < cutoff))
        connection.commit()

    side.run_bounded(None, seconds, delete)
    current.pruned_at = time.monotonic()


def _shown(at: datetime | str, instance: str, component: str, from_status, to_status, message, stored: bool) -> dict:
    at = at if isinstance(at, str) else at.isoformat(timespec="milliseconds")
    return {
        "at": at + "Z",
        "instance": instance,
        "component": component,
        "from": from_status,
        "to": to_status,
        "message": message,
        "stored": stored,
    }


def recent(app: Flask, seconds: float, limit: int = 50) -> tuple[list[dict[str, Any]], str | None]:
    """The fleet's latest transitions, newest first, and an error if the stored ones could not be read.

    This instance's spooled transitions are included, marked ``stored: false``.
    """
    spooled = [
        _shown(line["at"], line["instance"], line["component"], line["from"], line["to"], line["message"], False)
        for line in _spooled(app)[0]
    ]
    error = None
    stored: list[dict[str, Any]] = []
    cutoff = utcnow() - timedelta(days=app.config["DB_HISTORY_RETENTION_DAYS"])
    query = (
        sa.select(TABLE)
        .where(TABLE.c.at >= cutoff)
        .order_by(TABLE.c.at.desc(), TABLE.c.id.desc())
        .limit(limit)
    )
    try:
        rows = side.run_bounded(None, seconds, lambda connection: connection.execute(query).all())
        stored = [
            _shown(row.at, row.instance, row.component, row.from_status, row.to_status, row.message, True) for row in rows
        ]
    except (SQLAlchemyError, DeadlineExceeded) as error_:  # the history must not take /status down with it
        log.warning("stored transitions unavailable: %s", type(error_).__name__)
        error = "stored transitions unavailable"
    events = sorted(spooled + stored, key=lambda event: event["at"], reverse=True)[:limit]
    return events, error
