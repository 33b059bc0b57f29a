"""Tables of the service: operators, revoked tokens, the audit trail, and what instances share."""
from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from .extensions import db

ROLES = ("viewer", "admin")


def utcnow() -> datetime:
    """Naive UTC, stored alike by every dialect."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(sa.String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    role: Mapped[str] = mapped_column(sa.String(16), default="viewer")
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (sa.CheckConstraint("role IN ('viewer', 'admin')", name="role"),)


class RevokedToken(db.Model):
    __tablename__ = "revoked_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    jti: Mapped[str] = mapped_column(sa.String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    revoked_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEvent(db.Model):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str | None] = mapped_column(sa.String(80))
    action: Mapped[str] = mapped_column(sa.String(40), index=True)
    target: Mapped[str | None] = mapped_column(sa.String(255))
    outcome: Mapped[str] = mapped_column(sa.String(40))
    detail: Mapped[dict | None] = mapped_column(sa.JSON)
    remote_addr: Mapped[str | None] = mapped_column(sa.String(64))
    request_id: Mapped[str | None] = mapped_column(sa.String(64))
    # Chosen by the writer before the first attempt: a retried insert whose
    # acknowledgement was lost finds its row instead of writing it twice.
    event_id: Mapped[str | None] = mapped_column(sa.String(32), unique=True)

    def to_dict(self) -> dict:
        """The fields of GET /api/database/audit (SPEC 5: who is ``actor``; action, target, outcome, request_id, at)."""
        return {
            "id": self.id,
            "at": self.created_at.isoformat(timespec="milliseconds") + "Z",
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "request_id": self.request_id,
            "remote_addr": self.remote_addr,
            "detail": self.detail,
        }


class ReconnectGeneration(db.Model):
    """One row per POST /reconnect: its id is the generation every worker of every instance applies."""

    __tablename__ = "reconnect_generations"

    generation: Mapped[int] = mapped_column(primary_key=True)
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    instance: Mapped[str] = mapped_column(sa.String(64))


class ReconnectApplied(db.Model):
    """A worker of an instance disposed its connections for a generation."""

    __tablename__ = "reconnect_applied"

    id: Mapped[int] = mapped_column(primary_key=True)
    generation: Mapped[int] = mapped_column(index=True)
    instance: Mapped[str] = mapped_column(sa.String(64))
    pid: Mapped[int]
    applied_at: Mapped[datetime] = mapped_column(default=utcnow)


class HealthTransition(db.Model):
    """A component's status changed on an instance (or its server changed), kept DB_HISTORY_RETENTION_DAYS."""

    __tablename__ = "health_transitions"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    instance: Mapped[str] = mapped_column(sa.String(64))
    component: Mapped[str] = mapped_column(sa.String(64))
    from_status: Mapped[str | None] = mapped_column(sa.String(16))
    to_status: Mapped[str] = mapped_column(sa.String(16))
    message: Mapped[str | None] = mapped_column(sa.String(500))
