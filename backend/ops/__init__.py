"""The operator's view of a database (SPEC section 10): sessions, blocking chains,
cancel and terminate, capacity risks; PostgreSQL and the MySQL family only.

Every function here takes a SQLAlchemy connection the caller opened under a
deadline, asks the server, and shapes the answer; none reads Flask state.
"""
from __future__ import annotations

SUPPORTED = ("postgresql", "mysql", "mariadb")


def unsupported_reason(dialect: str) -> str | None:
    """Why a dialect has no sessions to show, or None when it has."""
    if dialect in SUPPORTED:
        return None
    if dialect == "sqlite":
        return "SQLite has no server sessions: one process opens the file, there is nothing to list, cancel or terminate"
    return f"{dialect} is not supported: sessions and locks are read from PostgreSQL and the MySQL family"
