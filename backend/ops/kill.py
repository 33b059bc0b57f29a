"""Cancel a session's statement or end the session, and who may.

``decide`` is the policy and is pure: DB_SESSION_KILL (own, any, off), the
service's own connections (never signalled: the probe would report an outage
it caused), and the ``backend_start`` guard against a pid the server has given
to a new session. ``signal`` asks the server; its refusal is kept apart from
"no such session" so the caller can answer 403 or 404.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from .sessions import is_mysql, own_pid, service_user, session_rows

ACTIONS = ("cancel", "terminate")
MODES = ("own", "any", "off")
# PostgreSQL insufficient_privilege; MySQL "not owner of thread", "access denied", missing privilege.
POSTGRES_REFUSED = {"42501"}
MYSQL_REFUSED = {1095, 1045, 1227}
MYSQL_UNKNOWN_THREAD = 1094


class Refusal(Exception):
    """The call may not go on: ``status`` and ``code`` are the API's answer."""

    def __init__(self, status: int, code: str, error: str):
        super().__init__(error)
        self.status, self.code, self.error = status, code, error


def parse_moment(value: str) -> datetime:
    """An ISO-8601 instant as /sessions writes it (``Z`` or an offset); naive means UTC."""
    moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def decide(
    session: dict[str, Any] | None,
    *,
    mode: str,
    user: str,
    protected: set[int],
    protected_applications: frozenset[str] = frozenset(),
    backend_start: Any = ...,
) -> None:
    """Raise Refusal unless the session may be signalled; ``...`` means no guard was given.

    ``protected`` are pids of the service's own connections in this process;
    ``protected_applications`` names those of every worker (PostgreSQL only:
    the MySQL family does not show a connection's program name without
    performance_schema).
    """
    if mode == "off":
        raise Refusal(403, "kill_not_allowed", "DB_SESSION_KILL=off: cancelling and terminating sessions is disabled")
    if session is None:
        raise Refusal(404, "session_not_found", "No session with this pid")
    if backend_start is not ... and not _same_moment(backend_start, session["backend_start"]):
        raise Refusal(
            409,
            "session_changed",
            f"The pid now belongs to a session started at {session['backend_start']}, not {backend_start}",
        )
    if session["pid"] in protected or session["application"] in protected_applications:
        raise Refusal(403, "kill_not_allowed", "This is the service's own connection (its health probe or this request)")
    if mode == "own" and session["user"] != user:
        raise Refusal(
            403,
            "kill_not_allowed",
            f"DB_SESSION_KILL=own: only sessions of the service's database user {user!r} may be signalled",
        )


def _same_moment(given: Any, actual: str | None) -> bool:
    if given is None or actual is None:
        return given is None and actual is None
    return parse_moment(given) == parse_moment(actual)


def find(connection: Connection, pid: int, text: bool = True) -> dict[str, Any] | None:
    rows = session_rows(connection, text=text, pids=[pid], limit=1)
    return rows[0] if rows else None


def context(connection: Connection) -> tuple[str, int]:
    """(the service's database user, this connection's own pid)."""
    return service_user(connection), own_pid(connection)


def signal(connection: Connection, pid: int, action: str) -> None:
    """Cancel or terminate ``pid``; Refusal when the server says no or the session is gone."""
    if is_mysql(connection):
        sql = f"KILL QUERY {int(pid)}" if action == "cancel" else f"KILL CONNECTION {int(pid)}"
    else:
        function = "pg_cancel_backend" if action == "cancel" else "pg_terminate_backend"
        sql = f"SELECT {function}({int(pid)})"
    try:
        result = connection.exec_driver_sql(sql)
        signalled = result.scalar() if result.returns_rows else True
    except DBAPIError as error:
        if connection.invalidated:
            raise
        code = _error_code(error)
        if code == MYSQL_UNKNOWN_THREAD:
            raise Refusal(404, "session_not_found", "The session ended before it could be signalled") from error
        if code in POSTGRES_REFUSED or code in MYSQL_REFUSED:
            raise Refusal(
                403, "kill_not_allowed", "The database refused: the service's role may not signal this session"
            ) from error
        raise
    if not signalled:  # PostgreSQL: no such backend any more
        raise Refusal(404, "session_not_found", "The session ended before it could be signalled")


def _error_code(error: DBAPIError) -> Any:
    original = error.orig
    code = getattr(original, "pgcode", None)
    if code is None and getattr(original, "args", None):
        code = original.args[0]
    return code
