"""What a database error means: worth another try, a setting to fix, or neither.

Decided in one place from each driver's own error codes. A misconfiguration
(wrong password, unknown database or role, a parameter the server or a pooler
refuses) is not an outage: it is never retried, and callers say what to fix.
psycopg2 raises connection failures without a SQLSTATE, so for those the
server's message decides.
"""
from __future__ import annotations

import re

from sqlalchemy import exc as sa_exc

from . import tls

# PostgreSQL SQLSTATEs: serialization failure, deadlock, lock not available,
# admin shutdown, crash shutdown, cannot connect now. Class 08 is checked by prefix.
POSTGRES_TRANSIENT = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03"}
# MySQL/MariaDB: lock wait timeout, deadlock, can't connect (socket, TCP), server gone,
# lost connection, connection killed, disconnected for inactivity.
MYSQL_TRANSIENT = {1205, 1213, 2002, 2003, 2006, 2013, 1927, 4031}
# SQLite: SQLITE_BUSY and SQLITE_LOCKED.
SQLITE_TRANSIENT = {5, 6}

# The cause in words, by SQLSTATE: only codes a server gives when it refuses a login.
POSTGRES_MISCONFIGURED = {
    "28P01": "the server refused the password",
    "28000": "the server refused the user (unknown role, or no pg_hba.conf entry)",
    "3D000": "the database does not exist",
}
# The cause in words, by what the server says when it refuses a connection
# (psycopg2 gives connection failures no SQLSTATE). Matched after "FATAL:" or "ERROR:".
POSTGRES_MISCONFIGURED_WORDS = [
    (re.compile(pattern), cause)
    for pattern, cause in (
        (r"password authentication failed", "the server refused the password"),
        (r"no password supplied|password is required", "the server wants a password and none is set"),
        (r"authentication failed", "the server refused the credentials"),
        (r"pg_hba\.conf", "the server's pg_hba.conf has no entry for this user, host and database"),
        (r'^\s*role ".*" does not exist', "the user (role) does not exist"),
        (r'^\s*database ".*" does not exist|no such database', "the database does not exist"),
        (r"unsupported startup parameter", "the server or pooler refused a startup parameter (options in the URL?)"),
        (r"unrecognized configuration parameter", "the server does not know a parameter set in the URL"),
        (r"invalid value for parameter", "the server refused a parameter value set in the URL"),
        (r"permission denied for database", "the user may not connect to this database"),
        (r"is not permitted to log in", "the role may not log in"),
    )
]
MYSQL_MISCONFIGURED = {
    1044: "the user may not use this database",
    1045: "the server refused the user or password",
    1049: "the database does not exist",
    1130: "the server does not let this host connect",
    1251: "the server wants an authentication method the driver does not offer",
    1698: "the server refused the user",
    2059: "the server wants an authentication plugin the driver cannot load",
}


def _driver_error(error: BaseException) -> BaseException:
    return error.orig if isinstance(error, sa_exc.DBAPIError) and error.orig is not None else error


def misconfiguration(error: BaseException) -> str | None:
    """The cause in words when ``error`` means a setting is wrong; None for anything else."""
    error = _driver_error(error)
    cause = tls.handshake_failure(error)  # certificate verify failed, host name mismatch, no SSL...
    if cause is not None:
        return cause
    module = type(error).__module__
    if module.startswith("psycopg2"):
        code = getattr(error, "pgcode", None)
        if code:
            return POSTGRES_MISCONFIGURED.get(code)
        if type(error).__name__ != "OperationalError":
            return None
        text = str(error).lower()
        if "fe_sendauth: no password supplied" in text:  # libpq's own: the server asked for one
            return "the server wants a password and none is set"
        said = re.split(r"(?:fatal|error):", text, maxsplit=1)
        if len(said) < 2:
            return None  # refused, timed out, lost: no word from a server
        return next((cause for words, cause in POSTGRES_MISCONFIGURED_WORDS if words.search(said[1])), None)
    if module.startswith("pymysql"):
        code = error.args[0] if error.args and isinstance(error.args[0], int) else None
        return MYSQL_MISCONFIGURED.get(code)
    return None


def is_transient(error: BaseException) -> bool:
    """True for failures that may succeed if tried again; never for integrity, syntax,
    data or permission errors, nor for a misconfiguration."""
    if isinstance(error, sa_exc.TimeoutError):
        return True  # no free pooled connection in time, or DeadlineExceeded: the database did not answer
    if isinstance(error, sa_exc.DBAPIError):
        if misconfiguration(error) is not None:
            return False
        if error.connection_invalidated:
            return True
        error = error.orig
    elif isinstance(error, sa_exc.SQLAlchemyError):
        return False
    if misconfiguration(error) is not None:
        return False
    module = type(error).__module__
    if module.startswith("psycopg2"):
        code = getattr(error, "pgcode", None)
        if code:
            return code.startswith("08") or code in POSTGRES_TRANSIENT
        return type(error).__name__ in ("OperationalError", "InterfaceError")
    if module.startswith("pymysql"):
        code = error.args[0] if error.args and isinstance(error.args[0], int) else None
        return code in MYSQL_TRANSIENT
    if module == "sqlite3":
        code = getattr(error, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in SQLITE_TRANSIENT
        return "database is locked" in str(error) or "database table is locked" in str(error)
    return False
