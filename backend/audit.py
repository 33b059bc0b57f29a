"""The audit trail: who did what, when, from where, and how it ended.

Every event gets an id of its own before its first attempt, so a retried insert
whose acknowledgement was lost (the commit reached the server, the answer did
not reach us) finds its row instead of writing it twice. An event that must not
wait for the database (`flask auth issue-token` during an outage) is logged at
once and spooled to the instance folder; every serving process stores spooled
events as soon as the database answers again (``flush_spool``).
"""
from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app, g, has_request_context, request
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from .db import side
from .db.deadline import DeadlineExceeded
from .db.retry import with_db_retry
from .extensions import db
from .logs import current_request_id
from .models import AuditEvent, utcnow

SPOOL = "audit-spool.jsonl"
log = logging.getLogger(__name__)


def _clean(text: str | None, width: int) -> str | None:
    """Text any database can store: NUL shown as \\x00 (PostgreSQL refuses it), cut to the column."""
    return text.replace("\x00", "\\x00")[:width] if text else None


def _fields(action: str, outcome: str, actor: str | None, target: str | None, detail: dict[str, Any] | None) -> dict[str, Any]:
    in_request = has_request_context()
    return {
        "event_id": uuid.uuid4().hex,
        "created_at": utcnow(),
        "action": action,
        "outcome": outcome,
        "actor": _clean(actor or (g.get("identity") if in_request else None), 80),
        "target": _clean(target, 255),
        "detail": detail,
        "remote_addr": request.remote_addr if in_request else None,
        "request_id": current_request_id(),
    }


def _stored(event_id: str) -> bool:
    return db.session.scalar(sa.select(AuditEvent.id).where(AuditEvent.event_id == event_id)) is not None


def _insert(fields: dict[str, Any]) -> None:
    """Insert once, retried like every write of the service; a retry first looks for the row."""
    attempts = itertools.count()

    @with_db_retry()
    def write() -> None:
        if next(attempts) and _stored(fields["event_id"]):
            return  # an earlier attempt's commit landed; only its acknowledgement was lost
        db.session.add(AuditEvent(**fields))
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            if not _stored(fields["event_id"]):
                raise

    write()


def record(
    action: str,
    outcome: str,
    *,
    actor: str | None = None,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Write one audit event, retried like every write of the service."""
    _insert(_fields(action, outcome, actor, target, detail))


def record_or_spool(action: str, outcome: str, *, actor: str | None = None, target: str | None = None,
                    detail: dict[str, Any] | None = None) -> bool:
    """Store one event within DB_HEALTH_TIMEOUT, or log it now and spool it for later; True if stored."""
    fields = _fields(action, outcome, actor, target, detail)
    try:
        _insert_bounded(fields, current_app.config["DB_HEALTH_TIMEOUT"])
        return True
    except (SQLAlchemyError, DeadlineExceeded) as error:
        line = _spool_line(fields)
        log.warning("audit event spooled, the database is unavailable (%s): %s", type(error).__name__, line)
        path = os.path.join(current_app.instance_path, SPOOL)
        with open(path, "a") as spool:
            fcntl.flock(spool, fcntl.LOCK_EX)
            spool.write(line + "\n")
        return False


def _spool_line(fields: dict[str, Any]) -> str:
    return json.dumps({**fields, "created_at": fields["created_at"].isoformat()}, sort_keys=True)


def _insert_bounded(fields: dict[str, Any], seconds: float) -> None:
    """One autocommitted insert under a deadline, on a side connection; a duplicate event id means done."""

    def work(connection: sa.Connection) -> None:
        exists = sa.select(AuditEvent.id).where(AuditEvent.event_id == fields["event_id"])
        if connection.execute(exists).first() is None:
            try:
                connection.execute(sa.insert(AuditEvent).values(**fields))
                connection.commit()
            except IntegrityError:
                connection.rollback()
                if connection.execute(exists).first() is None:
                    raise

    side.run_bounded(None, seconds, work)


def flush_spool(app: Flask) -> int:
    """Store the spooled events (each once, whoever flushes); returns how many were stored."""
    path = os.path.join(app.instance_path, SPOOL)
    try:
        if os.path.getsize(path) == 0:
            return 0
    except OSError:
        return 0
    with open(path, "r+") as spool:
        try:
            fcntl.flock(spool, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # another process is storing them
        stored = 0
        for line in spool.read().splitlines():
            try:
                fields = json.loads(line)
                fields["created_at"] = datetime.fromisoformat(fields["created_at"])
            except (ValueError, KeyError, TypeError):
                log.error("unreadable line in %s dropped: %r", path, line[:200])
                continue
            _insert_bounded(fields, app.config["DB_HEALTH_TIMEOUT"])  # an outage stops here; the file stays
            stored += 1
        spool.seek(0)
        spool.truncate()
    if stored:
        log.info("%d spooled audit event(s) stored", stored)
    return stored


def recent(limit: int, action: str | None = None) -> list[dict[str, Any]]:
    query = db.select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if action:
        query = query.where(AuditEvent.action == action)
    return [event.to_dict() for event in db.session.scalars(query)]
