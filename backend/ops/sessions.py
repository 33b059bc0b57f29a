"""Who is connected and what they run: one bounded read per dialect, shaped alike.

PostgreSQL: pg_stat_activity (client backends) with pg_blocking_pids for the
sessions waiting on a lock. MySQL family: information_schema.PROCESSLIST with
INNODB_TRX (open transactions) and the server's lock-wait table (locks.py).
Summaries and the list are computed by the server, so a server with thousands
of connections costs the service at most SESSION_LIMIT rows; query text is cut
on the server and not even fetched for viewers.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

SESSION_LIMIT = 200
GROUP_LIMIT = 1000
QUERY_TEXT_LIMIT = 2048
STATES = ("active", "idle", "idle_in_transaction", "idle_in_transaction_aborted", "other")

POSTGRES_STATE = """CASE a.state WHEN 'active' THEN 'active' WHEN 'idle' THEN 'idle'
    WHEN 'idle in transaction' THEN 'idle_in_transaction'
    WHEN 'idle in transaction (aborted)' THEN 'idle_in_transaction_aborted' ELSE 'other' END"""
# One row per client backend; text columns NULL unless asked for.
POSTGRES_SESSIONS = f"""
SELECT * FROM (
  SELECT a.pid, a.usename AS user, a.application_name AS application,
         CASE WHEN :text THEN host(a.client_addr) END AS client_addr,
         {POSTGRES_STATE} AS state, a.datname AS database,
         a.backend_start, a.xact_start AS transaction_start, a.query_start,
         EXTRACT(EPOCH FROM now() - COALESCE(a.state_change, a.backend_start))::float8 AS duration_s,
         EXTRACT(EPOCH FROM now() - a.xact_start)::float8 AS transaction_age_s,
         a.wait_event_type, a.wait_event,
         CASE WHEN a.wait_event_type = 'Lock' THEN pg_blocking_pids(a.pid) END AS blocked_by,
         CASE WHEN :text THEN left(a.query, :query_limit) END AS query
  FROM pg_stat_activity a
  WHERE a.backend_type = 'client backend'
) s
"""
POSTGRES_SUMMARY = f"""
SELECT {POSTGRES_STATE}, a.application_name, a.usename, count(*),
       max(EXTRACT(EPOCH FROM now() - a.xact_start))::float8
FROM pg_stat_activity a WHERE a.backend_type = 'client backend'
GROUP BY 1, 2, 3 LIMIT {GROUP_LIMIT}
"""

MYSQL_STATE = """CASE WHEN p.COMMAND = 'Sleep' AND t.trx_id IS NOT NULL THEN 'idle_in_transaction'
    WHEN p.COMMAND = 'Sleep' THEN 'idle' WHEN p.COMMAND IN ('Query', 'Execute') THEN 'active'
    ELSE 'other' END"""
# ``{time_ms}`` is TIME_MS on MariaDB, TIME * 1000 elsewhere; ``{application}`` the
# program_name connect attribute when performance_schema is on, else NULL.
MYSQL_SESSIONS = """
SELECT * FROM (
  SELECT p.ID AS pid, p.USER AS user, {application} AS application,
         CASE WHEN :text THEN p.HOST END AS client_addr,
         {state} AS state, p.DB AS `database`, p.COMMAND AS command,
         {time_ms} / 1000.0 AS duration_s,
         TIMESTAMPDIFF(MICROSECOND, t.trx_started, NOW()) / 1000000.0 AS transaction_age_s,
         t.trx_state AS trx_state, p.STATE AS wait_event,
         CASE WHEN :text THEN LEFT(p.INFO, :query_limit) END AS query
  FROM information_schema.PROCESSLIST p
  LEFT JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID
  {join}
  WHERE p.COMMAND <> 'Daemon'
) s
"""
MYSQL_APPLICATION_JOIN = (
    "LEFT JOIN performance_schema.session_connect_attrs ca "
    "ON ca.PROCESSLIST_ID = p.ID AND ca.ATTR_NAME = 'program_name'"
)


def iso(moment: datetime | None) -> str | None:
    """ISO-8601 UTC with microseconds: /sessions and the backend_start guard compare these strings."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _seconds(value: Any) -> float | None:
    return round(float(value), 3) if value is not None else None


def is_mysql(connection: Connection) -> bool:
    return connection.dialect.name in ("mysql", "mariadb")


def _mysql_sql(connection: Connection) -> str:
    mariadb = getattr(connection.dialect, "is_mariadb", False)
    performance_schema = _performance_schema(connection)
    return MYSQL_SESSIONS.format(
        application="ca.ATTR_VALUE" if performance_schema else "CAST(NULL AS CHAR)",
        join=MYSQL_APPLICATION_JOIN if performance_schema else "",
        state=MYSQL_STATE,
        time_ms="p.TIME_MS" if mariadb else "p.TIME * 1000",
    )


def _performance_schema(connection: Connection) -> bool:
    try:
        return bool(int(connection.exec_driver_sql("SELECT @@performance_schema").scalar() or 0))
    except DBAPIError:
        if connection.invalidated:
            raise
        return False


def _filters(state: str | None, min_duration_s: float | None, application: str | None, pids: list[int] | None):
    clauses, params = [], {}
    if state is not None:
        clauses.append("s.state = :state")
        params["state"] = state
    if min_duration_s is not None:
        clauses.append("s.duration_s >= :min_duration_s")
        params["min_duration_s"] = min_duration_s
    if application is not None:
        clauses.append("s.application = :application")
        params["application"] = application
    if pids is not None:
        clauses.append("s.pid IN :pids")
        params["pids"] = list(pids) or [-1]
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def session_rows(
    connection: Connection,
    *,
    text: bool,
    state: str | None = None,
    min_duration_s: float | None = None,
    application: str | None = None,
    pids: list[int] | None = None,
    limit: int = SESSION_LIMIT,
) -> list[dict[str, Any]]:
    """Sessions longest in their state first, shaped as SPEC 10 shows them."""
    where, params = _filters(state, min_duration_s, application, pids)
    base = _mysql_sql(connection) if is_mysql(connection) else POSTGRES_SESSIONS
    statement = sa.text(f"{base}{where} ORDER BY s.duration_s IS NULL, s.duration_s DESC LIMIT {int(limit)}")
    if pids is not None:
        statement = statement.bindparams(sa.bindparam("pids", expanding=True))
    rows = connection.execute(statement, {"text": text, "query_limit": QUERY_TEXT_LIMIT, **params}).mappings().all()
    if is_mysql(connection):
        now = connection.exec_driver_sql("SELECT UTC_TIMESTAMP(6)").scalar()
        sessions = [_mysql_session(row, now) for row in rows]
        _add_mysql_blockers(connection, sessions)
        return sessions
    return [_postgres_session(row) for row in rows]


def _postgres_session(row: Any) -> dict[str, Any]:
    wait = row["wait_event"]
    return {
        "pid": row["pid"],
        "user": row["user"],
        "application": row["application"],
        "client_addr": row["client_addr"],
        "state": row["state"],
        "database": row["database"],
        "backend_start": iso(row["backend_start"]),
        "transaction_start": iso(row["transaction_start"]),
        "query_start": iso(row["query_start"]),
        "duration_s": _seconds(row["duration_s"]),
        "transaction_age_s": _seconds(row["transaction_age_s"]),
        "wait_event_type": row["wait_event_type"],
        "wait_event": wait,
        "blocked_by": sorted(row["blocked_by"] or []),
        "query": row["query"],
    }


def _mysql_session(row: Any, now: datetime) -> dict[str, Any]:
    duration = _seconds(row["duration_s"])
    trx_age = _seconds(row["transaction_age_s"])
    active = row["state"] == "active"
    waiting = row["trx_state"] == "LOCK WAIT"
    return {
        "pid": int(row["pid"]),
        "user": row["user"],
        "application": row["application"],
        "client_addr": _host_only(row["client_addr"]),
        "state": row["state"],
        "database": row["database"],
        "backend_start": None,  # the MySQL family does not say when a connection was opened
        "transaction_start": iso(now - timedelta(seconds=trx_age)) if trx_age is not None else None,
        "query_start": iso(now - timedelta(seconds=duration)) if active and duration is not None else None,
        "duration_s": duration,
        "transaction_age_s": trx_age,
        "wait_event_type": "Lock" if waiting else None,
        "wait_event": row["wait_event"] or None,
        "blocked_by": [],
        "query": row["query"],
    }


def _host_only(host: str | None) -> str | None:
    """PROCESSLIST.HOST is host:port; PostgreSQL's client_addr has no port."""
    if not host:
        return host
    address, _, port = host.rpartition(":")
    return address if address and port.isdigit() else host


def _add_mysql_blockers(connection: Connection, sessions: list[dict[str, Any]]) -> None:
    from .locks import mysql_lock_waits  # locks.py builds on this module

    waiting = {s["pid"]: s for s in sessions if s["wait_event_type"] == "Lock"}
    if not waiting:
        return
    for wait in mysql_lock_waits(connection):
        session = waiting.get(wait["pid"])
        if session is not None and wait["blocked_by"] not in session["blocked_by"]:
            session["blocked_by"].append(wait["blocked_by"])


def summary(connection: Connection) -> dict[str, Any]:
    """Counts by state, application and user over every session, and the oldest transaction."""
    if is_mysql(connection):
        base = _mysql_sql(connection)
        groups = connection.execute(
            sa.text(
                f"SELECT s.state, s.application, s.user, COUNT(*), MAX(s.transaction_age_s) FROM ({base}) s "
                f"GROUP BY s.state, s.application, s.user LIMIT {GROUP_LIMIT}"
            ),
            {"text": False, "query_limit": 0},
        ).all()
        maximum = connection.exec_driver_sql("SELECT @@max_connections").scalar()
    else:
        groups = connection.exec_driver_sql(POSTGRES_SUMMARY).all()
        maximum = connection.exec_driver_sql("SELECT current_setting('max_connections')::int").scalar()
    by_state = dict.fromkeys(STATES, 0)
    by_application: dict[str, int] = {}
    by_user: dict[str, int] = {}
    oldest = None
    for state, application, user, count, trx_age in groups:
        by_state[state] += count
        application = application or ""
        by_application[application] = by_application.get(application, 0) + count
        by_user[user or ""] = by_user.get(user or "", 0) + count
        if trx_age is not None and (oldest is None or trx_age > oldest):
            oldest = float(trx_age)
    return {
        "max_connections": int(maximum) if maximum is not None else None,
        "total": sum(by_state.values()),
        "by_state": by_state,
        "by_application": dict(sorted(by_application.items(), key=lambda item: -item[1])),
        "by_user": dict(sorted(by_user.items(), key=lambda item: -item[1])),
        "oldest_transaction_s": _seconds(oldest),
    }


def service_user(connection: Connection) -> str:
    """The database user the service logs in as, as sessions show it."""
    if is_mysql(connection):
        return connection.exec_driver_sql("SELECT SUBSTRING_INDEX(USER(), '@', 1)").scalar()
    return connection.exec_driver_sql("SELECT session_user").scalar()


def own_pid(connection: Connection) -> int:
    """The server-side id of this very connection."""
    sql = "SELECT CONNECTION_ID()" if is_mysql(connection) else "SELECT pg_backend_pid()"
    return int(connection.exec_driver_sql(sql).scalar())
