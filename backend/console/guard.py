"""Which guard keeps the console from writing, and proof that DATABASE_READONLY_URL cannot write.

The checker and the read-only transaction can be wrong; a role without write
privileges cannot. So DATABASE_READONLY_URL is verified, as the role itself
sees its privileges: at start-up when the database answers (a role that can
write stops start-up, with one line naming the privilege), otherwise at the
console's first use, which refuses free-form queries until the check passed.
In production, without that role, a free-form query needs
DB_CONSOLE_ALLOW_PRIMARY_ROLE=true.
"""
from __future__ import annotations

import logging
import re
import sys
import threading
from typing import Any

from flask import Flask, current_app
from sqlalchemy.engine import URL

from ..config import EXIT_MISCONFIGURED
from ..db.deadline import DeadlineExceeded, deadline
from ..errors import ApiError
from ..state import state
from .runner import open_session

log = logging.getLogger(__name__)
_lock = threading.Lock()

# Checked for the role and every role it is a member of, inherited or not (SET ROLE reaches them).
POSTGRES_PRIVILEGES = """
WITH member AS (SELECT oid, rolname FROM pg_roles WHERE pg_has_role(current_user, oid, 'MEMBER'))
SELECT
  (SELECT 'SUPERUSER' FROM pg_roles r JOIN member m USING (oid) WHERE r.rolsuper LIMIT 1),
  (SELECT 'CREATEROLE' FROM pg_roles r JOIN member m USING (oid) WHERE r.rolcreaterole LIMIT 1),
  (SELECT 'membership in ' || string_agg(rolname, ', ') FROM member
     WHERE rolname IN ('pg_signal_backend', 'pg_read_server_files', 'pg_write_server_files',
                       'pg_execute_server_program', 'pg_write_all_data')),
  (SELECT 'CREATE on the database' FROM member WHERE has_database_privilege(oid, current_database(), 'CREATE') LIMIT 1),
  (SELECT 'TEMP on the database' FROM member WHERE has_database_privilege(oid, current_database(), 'TEMP') LIMIT 1),
  (SELECT format('%s on table %s', p, c.oid::regclass) FROM pg_class c
     CROSS JOIN unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS p CROSS JOIN member m
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
       AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
       AND CASE WHEN p IN ('INSERT', 'UPDATE') THEN has_any_column_privilege(m.oid, c.oid, p)
                ELSE has_table_privilege(m.oid, c.oid, p) END
     LIMIT 1),
  (SELECT format('%s on sequence %s', p, c.oid::regclass) FROM pg_class c
     CROSS JOIN unnest(ARRAY['USAGE', 'UPDATE']) AS p CROSS JOIN member m
     WHERE c.relkind = 'S' AND has_sequence_privilege(m.oid, c.oid, p)
     LIMIT 1)
"""
MYSQL_ALLOWED = {"SELECT", "USAGE"}


class RoleCanWrite(Exception):
    """DATABASE_READONLY_URL names a role that can write; the message names the privilege."""


def write_privilege(url: URL, seconds: float) -> str | None:
    """A privilege of ``url``'s role that lets it write, or None; raises when the database does not answer."""
    session = open_session(url, seconds, 1024)
    connection = session.connection
    try:
        with deadline(connection, seconds):
            cursor = connection.cursor()
            if session.dialect == "postgresql":
                cursor.execute(POSTGRES_PRIVILEGES)
                return next((found for found in cursor.fetchone() if found), None)
            cursor.execute("SHOW GRANTS")
            return _mysql_write_grant([row[0] for row in cursor.fetchall()])
    finally:
        connection.close()


def _mysql_write_grant(grants: list[str]) -> str | None:
    for line in grants:
        match = re.match(r"GRANT (.+?) ON (.+?) TO ", line)
        if match is None:
            return f"a granted role or proxy ({line.split(' TO ')[0]})"
        privileges = [p.split("(")[0].strip().upper() for p in re.sub(r"\([^)]*\)", "", match.group(1)).split(",")]
        extra = [p for p in privileges if p not in MYSQL_ALLOWED]
        if extra:
            return f"{extra[0]} on {match.group(2)}"
        if "WITH GRANT OPTION" in line.upper():
            return f"GRANT OPTION on {match.group(2)}"
    return None


def verify(app: Flask, seconds: float) -> None:
    """Check DATABASE_READONLY_URL once per process; raises RoleCanWrite, or a driver error when unreachable."""
    url = app.config.get("READONLY_URL")
    health = state(app)
    if url is None or url.get_backend_name() == "sqlite" or health.console_role_verified:
        return
    with _lock:
        if health.console_role_verified:
            return
        found = write_privilege(url, seconds)
        if found:
            raise RoleCanWrite(f"DATABASE_READONLY_URL role {url.username!r} can write: it has {found}")
        health.console_role_verified = True


def verify_at_startup(app: Flask) -> None:
    """Stop start-up on a read-only role that can write; leave the check for later when the database is down."""
    if app.config.get("READONLY_URL") is None:
        return
    try:
        verify(app, min(app.config["DB_CONNECT_TIMEOUT"], app.config["DB_HEALTH_TIMEOUT"]))
    except RoleCanWrite as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_MISCONFIGURED) from None
    except Exception as error:  # not reachable now: checked at the console's first use
        log.warning("DATABASE_READONLY_URL not verified at start-up (%s); the console checks it at first use",
                    type(error).__name__)


DEFAULT_OPERATION_TIMEOUT = 5.0


def operation_timeout(config: Any) -> float:
    """DB_OPERATION_TIMEOUT, 5 s when unset (other routes fall back on their own deadlines then)."""
    return config.get("DB_OPERATION_TIMEOUT") or DEFAULT_OPERATION_TIMEOUT


def console_url() -> URL:
    """Where the console connects: DATABASE_READONLY_URL, else the primary."""
    from ..extensions import db

    return current_app.config.get("READONLY_URL") or db.engines[None].url


def require(free_form: bool, seconds: float) -> None:
    """Refuse a free-form query the guards in force do not allow."""
    app = current_app._get_current_object()
    if not free_form:
        return
    facts = guard_facts(app)
    if facts["guard"] == "disabled":
        raise ApiError(
            403, "console_needs_readonly_role",
            "In production a query needs DATABASE_READONLY_URL (a role that cannot write), "
            "or DB_CONSOLE_ALLOW_PRIMARY_ROLE=true",
            "The console needs a read-only role",
        )
    if facts["guard"] == "readonly_role":
        try:
            verify(app, seconds)
        except RoleCanWrite as error:
            raise ApiError(403, "console_needs_readonly_role", str(error), "The console needs a read-only role") from None
        except (DeadlineExceeded, Exception) as error:
            log.warning("DATABASE_READONLY_URL not verified: %s", type(error).__name__)
            raise ApiError(503, "db_unavailable", "DATABASE_READONLY_URL could not be verified: the database did "
                           "not answer", "Database unavailable") from None


def guard_facts(app: Flask | None = None) -> dict[str, Any]:
    """What keeps the console from writing, for /info."""
    app = app or current_app._get_current_object()
    readonly = app.config.get("READONLY_URL")
    url = readonly or app.config["SQLALCHEMY_DATABASE_URI"]
    url = url if isinstance(url, URL) else None
    if readonly is not None and readonly.get_backend_name() != "sqlite":
        return {"guard": "readonly_role", "role": readonly.username, "verified": state(app).console_role_verified}
    if url is None or url.get_backend_name() == "sqlite":
        return {"guard": "read_only_file", "role": None}
    if app.config["APP_ENV"] == "production" and not app.config["DB_CONSOLE_ALLOW_PRIMARY_ROLE"]:
        return {"guard": "disabled", "role": None}
    return {"guard": "read_only_transaction", "role": url.username}
