"""The audit trail: who did what, when, from where, and how it ended."""
from __future__ import annotations

from typing import Any

from flask import g, has_request_context, request

from .db.retry import with_db_retry
from .extensions import db
from .logs import current_request_id
from .models import AuditEvent


@with_db_retry()
def _insert(fields: dict[str, Any]) -> None:
    db.session.add(AuditEvent(**fields))
    db.session.commit()


def record(
    action: str,
    outcome: str,
    *,
    actor: str | None = None,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Write one audit event, retried like every write of the service."""
    in_request = has_request_context()
    _insert(
        {
            "action": action,
            "outcome": outcome,
            "actor": actor or (g.get("identity") if in_request else None),
            "target": target[:255] if target else None,
            "detail": detail,
            "remote_addr": request.remote_addr if in_request else None,
            "request_id": current_request_id(),
        }
    )


def recent(limit: int, action: str | None = None) -> list[dict[str, Any]]:
    query = db.select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if action:
        query = query.where(AuditEvent.action == action)
    return [event.to_dict() for event in db.session.scalars(query)]
