"""Who blocks whom, as a forest: each root blocks others and waits for no one.

The server gives the edges (a waiting session, one session it waits for, and
the lock it wants): PostgreSQL from pg_locks and pg_blocking_pids; MariaDB and
MySQL 5.7 from information_schema.INNODB_LOCK_WAITS, MySQL 8 from
sys.innodb_lock_waits. ``forest`` turns edges into chains and is pure.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from .sessions import is_mysql, session_rows

WAIT_LIMIT = 1000
NODE_LIMIT = 500
DEPTH_LIMIT = 32

# One row per (waiting session, session it waits for). A row lock waiter waits on
# the holder's transaction id; the table comes from the tuple lock it holds.
POSTGRES_WAITS = """
SELECT w.pid, b.blocker AS blocked_by, w.locktype AS lock_type, w.mode,
       CASE WHEN w.rel IS NULL THEN NULL
            WHEN w.reldb = (SELECT oid FROM pg_database WHERE datname = current_database()) THEN w.rel::regclass::text
            ELSE w.rel::text END AS relation,
       EXTRACT(EPOCH FROM now() - COALESCE(w.waitstart, a.state_change))::float8 AS waiting_s
FROM (SELECT l.pid, l.locktype, l.mode, {waitstart} AS waitstart,
             COALESCE(l.relation, t.relation) AS rel, COALESCE(l.database, t.database) AS reldb
      FROM pg_locks l
      LEFT JOIN LATERAL (SELECT t.relation, t.database FROM pg_locks t
                         WHERE t.pid = l.pid AND t.locktype = 'tuple' AND t.granted LIMIT 1) t ON true
      WHERE NOT l.granted AND l.pid IS NOT NULL LIMIT {limit}) w
JOIN pg_stat_activity a ON a.pid = w.pid
CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS b(blocker)
"""
MARIADB_WAITS = f"""
SELECT r.trx_mysql_thread_id AS pid, b.trx_mysql_thread_id AS blocked_by,
       l.lock_type, l.lock_mode AS mode, l.lock_table AS relation,
       TIMESTAMPDIFF(MICROSECOND, r.trx_wait_started, NOW()) / 1000000.0 AS waiting_s
FROM information_schema.INNODB_LOCK_WAITS w
JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id
JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id
LEFT JOIN information_schema.INNODB_LOCKS l ON l.lock_id = w.requested_lock_id
LIMIT {WAIT_LIMIT}
"""
MYSQL8_WAITS = f"""
SELECT waiting_pid AS pid, blocking_pid AS blocked_by, locked_type AS lock_type,
       waiting_lock_mode AS mode, locked_table AS relation, wait_age_secs AS waiting_s
FROM sys.innodb_lock_waits LIMIT {WAIT_LIMIT}
"""


def _edge(row: Any) -> dict[str, Any]:
    return {
        "pid": int(row["pid"]),
        "blocked_by": int(row["blocked_by"]),
        "lock_type": row["lock_type"],
        "mode": row["mode"],
        "relation": row["relation"],
        "waiting_s": round(float(row["waiting_s"]), 3) if row["waiting_s"] is not None else None,
    }


def postgres_lock_waits(connection: Connection) -> list[dict[str, Any]]:
    version = connection.dialect.server_version_info or (0,)
    waitstart = "l.waitstart" if version >= (14,) else "NULL::timestamptz"  # pg_locks.waitstart is new in 14
    sql = POSTGRES_WAITS.format(waitstart=waitstart, limit=WAIT_LIMIT)
    return [_edge(row) for row in connection.exec_driver_sql(sql).mappings()]


def mysql_lock_waits(connection: Connection) -> list[dict[str, Any]]:
    """MariaDB and MySQL 5.7 keep INNODB_LOCK_WAITS; MySQL 8 moved it to performance_schema (read through sys)."""
    candidates = [MARIADB_WAITS, MYSQL8_WAITS]
    if not getattr(connection.dialect, "is_mariadb", False) and (connection.dialect.server_version_info or (0,)) >= (8,):
        candidates.reverse()
    error: DBAPIError | None = None
    for sql in candidates:
        try:
            return [_edge(row) for row in connection.exec_driver_sql(sql).mappings()]
        except DBAPIError as failed:
            if connection.invalidated:
                raise
            error = failed
    assert error is not None
    raise error


def lock_waits(connection: Connection) -> list[dict[str, Any]]:
    return mysql_lock_waits(connection) if is_mysql(connection) else postgres_lock_waits(connection)


def forest(waits: list[dict[str, Any]], sessions: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Blocking chains from wait edges; ``sessions`` gives state, transaction age and query by pid.

    A session waiting on several others appears under each. A cycle (a deadlock
    the server has not broken yet) has no natural root: its lowest pid becomes one.
    """
    waiters_of: dict[int, list[dict[str, Any]]] = defaultdict(list)
    waiting: dict[int, dict[str, Any]] = {}
    for wait in waits:
        waiters_of[wait["blocked_by"]].append(wait)
        waiting.setdefault(wait["pid"], wait)
    for children in waiters_of.values():
        children.sort(key=lambda wait: -(wait["waiting_s"] or 0))
    budget = [NODE_LIMIT]
    reached: set[int] = set()

    def below(pid: int, path: frozenset[int]) -> list[dict[str, Any]]:
        nodes = []
        for wait in waiters_of.get(pid, []):
            child = wait["pid"]
            if child in path or budget[0] <= 0 or len(path) >= DEPTH_LIMIT:
                continue
            budget[0] -= 1
            reached.add(child)
            session = sessions.get(child, {})
            nodes.append(
                {
                    "pid": child,
                    "state": session.get("state"),
                    "waiting_s": wait["waiting_s"],
                    "lock_type": wait["lock_type"],
                    "mode": wait["mode"],
                    "relation": wait["relation"],
                    "query": session.get("query"),
                    "blocks": below(child, path | {child}),
                }
            )
        return nodes

    def root(pid: int) -> dict[str, Any]:
        reached.add(pid)
        session = sessions.get(pid, {})
        return {
            "pid": pid,
            "state": session.get("state", "other"),
            "transaction_age_s": session.get("transaction_age_s"),
            "query": session.get("query"),
            "blocks": below(pid, frozenset({pid})),
        }

    chains = [root(pid) for pid in sorted(set(waiters_of) - set(waiting))]
    while set(waiting) - reached and budget[0] > 0:  # cycles left over
        chains.append(root(min(set(waiting) - reached)))
    chains.sort(key=lambda chain: (-_count(chain), chain["pid"]))
    longest = max((wait["waiting_s"] or 0 for wait in waits), default=None)
    return {
        "waiting_total": len(waiting),
        "longest_wait_s": longest,
        "chains": chains,
        "truncated": budget[0] <= 0,
    }


def _count(node: dict[str, Any]) -> int:
    return sum(1 + _count(child) for child in node["blocks"])


def lock_report(connection: Connection, *, text: bool) -> dict[str, Any]:
    """The /locks data: edges from the server, session details for every pid in them."""
    waits = lock_waits(connection)
    pids = sorted({wait["pid"] for wait in waits} | {wait["blocked_by"] for wait in waits})
    rows = session_rows(connection, text=text, pids=pids, limit=len(pids) or 1) if pids else []
    return forest(waits, {row["pid"]: row for row in rows})
