"""Reconnect: every worker of every instance throws its connections away.

``POST /reconnect`` inserts a row into ``reconnect_generations``; its id is the
new generation. Every worker polls the latest generation once a second from its
poller thread (a query under a hard deadline: LISTEN/NOTIFY would not pass a
transaction-mode pooler), disposes all its connections when it changed, and
records in ``reconnect_applied`` that it did, so the answer and /status can say
which instances have applied it.

The instance folder carries the generation too (``pool-generation``): the
worker that took the request writes it there, and its siblings' pollers look
at it first (one ``stat``) each second, and so does a probe. While the database is
down, /reconnect cannot insert a row and falls back to the file alone: the
``local`` count in it goes up, and this instance's workers still reconnect.
"""
from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import Flask
from sqlalchemy.exc import SQLAlchemyError

from ..fleet.folder import instance_file, locked, read_json, write_json
from ..models import ReconnectApplied, ReconnectGeneration, utcnow
from ..state import state
from . import side
from .deadline import DeadlineExceeded

GENERATION_FILE = "pool-generation"
GENERATION_POLL_S = 1.0
GENERATIONS = ReconnectGeneration.__table__
APPLIED = ReconnectApplied.__table__
log = logging.getLogger(__name__)


def _path(app: Flask) -> str:
    return instance_file(app.instance_path, GENERATION_FILE)


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return 0


def read_file(app: Flask) -> tuple[int, int]:
    """(generation, local fallbacks) as the instance folder has them."""
    data = read_json(_path(app))
    if not isinstance(data, dict):
        return 0, 0
    return int(data.get("generation", 0)), int(data.get("local", 0))


def _write_file(app: Flask, generation: int | None = None, local_bump: bool = False) -> tuple[int, int]:
    with locked(_path(app) + ".lock"):
        current, local = read_file(app)
        if generation is not None:
            current = generation
        if local_bump:
            local += 1
        write_json(_path(app), {"generation": current, "local": local})
    return current, local


def _poll_budget(app: Flask) -> float:
    return min(app.config["DB_HEALTH_TIMEOUT"], 0.9)  # the next poll is due a second later


def _apply(app: Flask, generation: int, local: int, record: bool) -> int:
    """Dispose this worker's connections for (generation, local); returns how many idle ones were closed."""
    current = state(app)
    disposed = current.dispose_connections()
    changed = generation != current.generation
    current.generation, current.generation_local = generation, local
    if record and changed and generation:
        current.unrecorded.append((generation, utcnow()))
    log.info("connections disposed for reconnect generation %s (%d idle closed)", generation, disposed)
    return disposed


def apply_pending_reconnect(app: Flask) -> bool:
    """Dispose this worker's connections if the instance folder has a generation it has not applied (one stat)."""
    current = state(app)
    mtime = _mtime(_path(app))
    if mtime == current.generation_mtime:
        return False
    with current.generation_lock:
        if mtime == current.generation_mtime:
            return False
        current.generation_mtime = mtime
        generation, local = read_file(app)
        if (generation, local) == (current.generation, current.generation_local):
            return False
        _apply(app, generation, local, record=True)
    return True


def poll(app: Flask) -> None:
    """The poller's step: apply what the folder or the database says, then record what was applied."""
    apply_pending_reconnect(app)
    current = state(app)
    query = sa.select(sa.func.max(GENERATIONS.c.generation))
    latest = side.run_bounded(None, _poll_budget(app), lambda connection: connection.execute(query).scalar()) or 0
    with current.generation_lock:
        seen, current.generation_seen = current.generation_seen, latest
        if seen is None:
            # A worker's first look: nothing was open before it, so there is nothing to apply.
            current.generation = latest
        elif latest != seen and latest != current.generation:
            _apply(app, latest, current.generation_local, record=True)
    if latest != read_file(app)[0]:
        _write_file(app, latest)  # siblings see it at their next request
    _record_applied(app)


def _record_applied(app: Flask) -> None:
    current = state(app)
    if not current.unrecorded:
        return
    rows = [
        {"generation": generation, "instance": app.config["INSTANCE_ID"], "pid": os.getpid(), "applied_at": at}
        for generation, at in current.unrecorded
    ]

    def insert(connection: sa.Connection) -> None:
        connection.execute(sa.insert(APPLIED), rows)
        connection.commit()

    side.run_bounded(None, _poll_budget(app), insert)
    del current.unrecorded[: len(rows)]


def request_reconnect(app: Flask) -> dict[str, Any]:
    """Start a new generation for the fleet (or, with the database down, for this instance) and apply it here."""
    instance = app.config["INSTANCE_ID"]

    def insert(connection: sa.Connection) -> int:
        generation = connection.execute(
            sa.insert(GENERATIONS).values(instance=instance, requested_at=utcnow())
        ).inserted_primary_key[0]
        connection.commit()
        return generation

    current = state(app)
    try:
        generation = side.run_bounded(None, app.config["DB_HEALTH_TIMEOUT"], insert)
    except (SQLAlchemyError, DeadlineExceeded) as error:
        log.warning("reconnect through the instance folder only, the database is unavailable: %s", type(error).__name__)
        with current.generation_lock:
            generation, local = _write_file(app, local_bump=True)
            current.generation_mtime = _mtime(_path(app))
            disposed = _apply(app, generation, local, record=False)
        return {"generation": current.generation, "disposed_connections": disposed, "applied_by": [], "fallback": True}
    with current.generation_lock:
        _, local = _write_file(app, generation)
        current.generation_mtime = _mtime(_path(app))
        disposed = _apply(app, generation, local, record=True)
    try:
        _record_applied(app)
        applied = applied_by(app, generation)
    except (SQLAlchemyError, DeadlineExceeded):
        applied = []
    return {"generation": generation, "disposed_connections": disposed, "applied_by": applied, "fallback": False}


def applied_by(app: Flask, generation: int) -> list[dict[str, Any]]:
    """The instances that applied ``generation``: when their last worker did, and how many workers."""
    query = (
        sa.select(APPLIED.c.instance, sa.func.max(APPLIED.c.applied_at), sa.func.count(sa.distinct(APPLIED.c.pid)))
        .where(APPLIED.c.generation == generation)
        .group_by(APPLIED.c.instance)
        .order_by(APPLIED.c.instance)
    )
    rows = side.run_bounded(None, app.config["DB_HEALTH_TIMEOUT"], lambda connection: connection.execute(query).all())
    return [{"instance": instance, "at": _iso(at), "workers": workers} for instance, at, workers in rows]


def report(app: Flask) -> dict[str, Any]:
    """/status ``reconnect``: the fleet's latest generation and who applied it."""
    current = state(app)
    try:
        query = sa.select(sa.func.max(GENERATIONS.c.generation))
        latest = side.run_bounded(None, app.config["DB_HEALTH_TIMEOUT"], lambda connection: connection.execute(query).scalar())
        applied = applied_by(app, latest) if latest else []
        return {"generation": latest or 0, "applied_by": applied}
    except (SQLAlchemyError, DeadlineExceeded) as error:
        log.warning("reconnect generations unavailable: %s", type(error).__name__)
        return {"generation": current.generation, "applied_by": None, "error": "reconnect generations unavailable"}


def _iso(at: datetime | None) -> str | None:
    return at.isoformat(timespec="milliseconds") + "Z" if at else None


def init_app(app: Flask) -> None:
    current = state(app)
    current.generation_mtime = _mtime(_path(app))
    current.generation, current.generation_local = read_file(app)
