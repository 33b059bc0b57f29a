"""Capacity risks: what is about to break, measured per dialect, each against its threshold.

``measure`` runs on a connection the caller opened under a deadline and
returns one item per risk the dialect has: ``{"risk", "value", "threshold",
"unit", "over", "message"}``. Session-level risks (idle in transaction, lock
waits) count sessions of the component's own database; transaction-ID age and
replication slots are the whole cluster's (wraparound and WAL retention stop
every database); sequences and AUTO_INCREMENT are the component's database.
A risk the server will not tell (missing privilege, old version) is reported
with ``value: null`` and never makes a component degraded.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from .sessions import is_mysql

log = logging.getLogger(__name__)

RANGE_WARN_PERCENT = 80.0
RISKS = {  # name -> (unit, threshold setting or None for RANGE_WARN_PERCENT)
    "idle_in_transaction": ("s", "DB_IDLE_IN_TX_WARN_S"),
    "lock_wait": ("s", "DB_LOCK_WAIT_WARN_S"),
    "xid_age": ("transactions", "DB_XID_AGE_WARN"),
    "replication_slot": ("bytes", "DB_SLOT_RETAINED_WARN_BYTES"),
    "sequence": ("percent", None),
    "auto_increment": ("percent", None),
    "replica_threads": ("stopped threads", None),
}

POSTGRES_IDLE_IN_TX = """
SELECT pid, EXTRACT(EPOCH FROM now() - state_change)::float8 FROM pg_stat_activity
WHERE state IN ('idle in transaction', 'idle in transaction (aborted)') AND datname = current_database()
ORDER BY 2 DESC LIMIT 1
"""
POSTGRES_LOCK_WAIT = """
SELECT l.pid, EXTRACT(EPOCH FROM now() - COALESCE({waitstart}, a.state_change))::float8
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE NOT l.granted AND a.datname = current_database() ORDER BY 2 DESC LIMIT 1
"""
POSTGRES_XID_AGE = "SELECT datname, age(datfrozenxid) FROM pg_database ORDER BY 2 DESC LIMIT 1"
# wal_status is new in PostgreSQL 13.
POSTGRES_SLOTS = """
SELECT slot_name, active, {wal_status},
       pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END,
                       restart_lsn)::float8
FROM pg_replication_slots LIMIT 100
"""
# The range that matters is the narrower of the sequence's and its owning column's.
POSTGRES_SEQUENCES = """
SELECT name, 100.0 * CASE WHEN increment > 0 THEN (last_value - low)::float8 / NULLIF(high - low, 0)
                          ELSE (high - last_value)::float8 / NULLIF(high - low, 0) END AS percent
FROM (
  SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name, s.seqincrement AS increment, s.seqmin AS low,
         LEAST(s.seqmax, CASE a.atttypid WHEN 'int2'::regtype THEN 32767 WHEN 'int4'::regtype THEN 2147483647 END) AS high,
         CASE WHEN has_sequence_privilege(c.oid, 'SELECT,USAGE') THEN pg_sequence_last_value(c.oid) END AS last_value
  FROM pg_sequence s
  JOIN pg_class c ON c.oid = s.seqrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
                        AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
  LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
) q
WHERE last_value IS NOT NULL ORDER BY percent DESC NULLS LAST LIMIT 1
"""

# ``{seconds}``: MariaDB's TIME_MS / 1000, else TIME (whole seconds).
MYSQL_IDLE_IN_TX = """
SELECT p.ID, {seconds} AS idle_s FROM information_schema.PROCESSLIST p
JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID
WHERE p.COMMAND = 'Sleep' AND p.DB = DATABASE() ORDER BY idle_s DESC LIMIT 1
"""
MYSQL_LOCK_WAIT = """
SELECT t.trx_mysql_thread_id, TIMESTAMPDIFF(MICROSECOND, t.trx_wait_started, NOW()) / 1000000.0
FROM information_schema.INNODB_TRX t JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id
WHERE t.trx_state = 'LOCK WAIT' AND p.DB = DATABASE() ORDER BY 2 DESC LIMIT 1
"""
# Two reads joined here: MariaDB joins these two views by reading every schema's columns.
MYSQL_AUTO_INCREMENT_TABLES = """
SELECT TABLE_NAME, AUTO_INCREMENT FROM information_schema.TABLES
WHERE TABLE_SCHEMA = DATABASE() AND AUTO_INCREMENT IS NOT NULL LIMIT 2000
"""
MYSQL_AUTO_INCREMENT_COLUMNS = """
SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE FROM information_schema.COLUMNS
WHERE TABLE_SCHEMA = DATABASE() AND LOCATE('auto_increment', EXTRA) > 0 LIMIT 2000
"""
MYSQL_INTEGER_MAX = {"tinyint": 127, "smallint": 32767, "mediumint": 8388607, "int": 2147483647, "bigint": 2**63 - 1}


def item(risk: str, value: float | None, limits: Mapping[str, Any], message: str, over: bool | None = None) -> dict[str, Any]:
    """One measured risk; ``over`` defaults to value > threshold."""
    unit, setting = RISKS[risk]
    threshold = limits[setting] if setting else (RANGE_WARN_PERCENT if unit == "percent" else 0)
    if over is None:
        over = value is not None and value > threshold
    return {"risk": risk, "value": value, "threshold": threshold, "unit": unit, "over": bool(over), "message": message}


def _rounded(value: Any) -> float:
    return round(float(value), 3)


def _postgres_idle(connection: Connection, limits: Mapping[str, Any]) -> dict[str, Any]:
    row = connection.exec_driver_sql(POSTGRES_IDLE_IN_TX).first()
    value = _rounded(row[1]) if row else 0.0
    message = f"session {row[0]} idle in transaction for {value:.0f}s" if row else "no session idle in transaction"
    return item("idle_in_transaction", value, limits, message)


def _postgres_lock_wait(connection: Connection, limits: Mapping[str, Any]) -> dict[str, Any]:
    version = connection.dialect.server_version_info or (0,)
    sql = POSTGRES_LOCK_WAIT.format(waitstart="l.waitstart" if version >= (14,) else "NULL::timestamptz")
    row = connection.exec_driver_sql(sql).first()
    value = _rounded(row[1]) if row else 0.0
    message = f"session {row[0]} waiting for a lock for {value:.0f}s" if row else "no session waiting for a lock"
    return item("lock_wait", value, limits, message)


def _postgres_xid_age(connection: Connection, limits: Mapping[str, Any]) -> dict[str, Any]:
    name, age = connection.exec_driver_sql(POSTGRES_XID_AGE).one()
    return item("xid_age", int(age), limits, f"database {name} is {int(age)} transactions from its last freeze")


def _postgres_slots(connection: Connection, limits: Mapping[str, Any]) -> dict[str, Any]:
    version = connection.dialect.server_version_info or (0,)
    sql = POSTGRES_SLOTS.format(wal_status="wal_status" if version >= (13,) else "NULL::text")
    threshold = limits["DB_SLOT_RETAINED_WARN_BYTES"]
    worst, problems = 0.0, []
    for name, active, wal_status, retained in connection.exec_driver_sql(sql):
        if wal_status in ("lost", "unreserved"):
            problems.append(f"replication slot {name} wal_status is {wal_status}")
        if not active and retained is not None:
            worst = max(worst, float(retained))
            if retained > threshold:
                problems.append(f"inactive replication slot {name} retains {int(retained)} bytes of WAL")
    message = "; ".join(problems) if problems else "no replication slot at risk"
    return item("replication_slot", worst, limits, message, over=bool(problems))


def _postgres_sequences(connection: Connection, limits: Mapping[str, Any]) -> dict[str, Any]:
    row = connection.exec_driver_sql(POSTGRES_SEQUENCES).first()
    if row is None or row[1] is None:
        return item("sequence", 0.0, limits, "no sequence in use")
    value = _rounded(row[1])
    return item("sequence", value, limits, f"sequence {row[0]} has used {value:.1f}% of its range")


def _mysql_idle(connection: Connection, limits: Mapping[str, Any]) -> dict[str, Any]:
    seconds = "p.TIME_MS / 1000.0" if getattr(connection.dialect, "is_mariadb", False) else "p.TIME"
    row = connection.exec_driver_sql(MYSQL_IDLE_IN_TX.format(seconds=seconds)).first()
    value = _rounded(row[1]) if row else 0.0
    message = f"connection {row[0]} idle in transaction for {value:.0f}s" if row else "no connection idle in transaction"
    return item("idle_in_transaction", value, limits, message)


def _mysql_lock_wait(connection: Connection, limits: Mapping[str, Any]) -> dict[str, Any]:
    row = connection.exec_driver_sql(MYSQL_LOCK_WAIT).first()
    value = _rounded(row[1]) if row and row[1] is not None else 0.0
    message = f"connection {row[0]} waiting for a lock for {value:.0f}s" if row else "no connection waiting for a lock"
    return item("lock_wait", value, limits, message)


def _mysql_auto_increment(connection: Connection, limits: Mapping[str, Any]) -> dict[str, Any]:
    if not getattr(connection.dialect, "is_mariadb", False):  # MySQL 8 caches these statistics for a day
        connection.exec_driver_sql("SET SESSION information_schema_stats_expiry = 0")
    worst, where = 0.0, None
    next_values = dict(connection.exec_driver_sql(MYSQL_AUTO_INCREMENT_TABLES).all())
    for table, column, data_type, column_type in connection.exec_driver_sql(MYSQL_AUTO_INCREMENT_COLUMNS):
        next_value = next_values.get(table)
        maximum = MYSQL_INTEGER_MAX.get(str(data_type).lower())
        if maximum is None or next_value is None:
            continue
        if "unsigned" in str(column_type).lower():
            maximum = maximum * 2 + 1
        percent = 100.0 * (int(next_value) - 1) / maximum
        if percent >= worst:
            worst, where = percent, f"{table}.{column}"
    if where is None:
        return item("auto_increment", 0.0, limits, "no AUTO_INCREMENT column in use")
    value = _rounded(worst)
    return item("auto_increment", value, limits, f"AUTO_INCREMENT of {where} has used {value:.1f}% of its range")


def _mysql_replica(connection: Connection, limits: Mapping[str, Any]) -> dict[str, Any] | None:
    """None when the server replicates from no one."""
    sql = "SHOW ALL SLAVES STATUS" if getattr(connection.dialect, "is_mariadb", False) else "SHOW REPLICA STATUS"
    rows = connection.exec_driver_sql(sql).mappings().all()
    if not rows:
        return None
    stopped = []
    for row in rows:
        channel = row.get("Connection_name") or row.get("Channel_Name") or ""
        for thread in ("IO", "SQL"):
            running = row.get(f"Replica_{thread}_Running", row.get(f"Slave_{thread}_Running"))
            if running != "Yes":
                label = f"replication {channel!r} " if channel else "replication "
                stopped.append(f"{label}{thread} thread {str(running or 'not running').lower()}")
    message = "; ".join(stopped) if stopped else "replica threads running"
    return item("replica_threads", len(stopped), limits, message)


POSTGRES_RISKS: list[Callable[[Connection, Mapping[str, Any]], dict[str, Any] | None]] = [
    _postgres_idle, _postgres_lock_wait, _postgres_xid_age, _postgres_slots, _postgres_sequences,
]
MYSQL_RISKS: list[Callable[[Connection, Mapping[str, Any]], dict[str, Any] | None]] = [
    _mysql_idle, _mysql_lock_wait, _mysql_auto_increment, _mysql_replica,
]
MEASURED_BY = {
    _postgres_idle: "idle_in_transaction", _postgres_lock_wait: "lock_wait", _postgres_xid_age: "xid_age",
    _postgres_slots: "replication_slot", _postgres_sequences: "sequence", _mysql_idle: "idle_in_transaction",
    _mysql_lock_wait: "lock_wait", _mysql_auto_increment: "auto_increment", _mysql_replica: "replica_threads",
}


def measure(connection: Connection, limits: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every risk of the connection's dialect; one the server refuses is reported without a value."""
    results = []
    for check in MYSQL_RISKS if is_mysql(connection) else POSTGRES_RISKS:
        try:
            result = check(connection, limits)
        except DBAPIError as error:
            if connection.invalidated:
                raise
            log.warning("capacity risk %s unavailable: %s", MEASURED_BY[check], str(error.orig).strip()[:200])
            result = item(MEASURED_BY[check], None, limits, "unavailable: the server did not tell", over=False)
        if result is not None:
            results.append(result)
    return results


def warnings(risks: list[dict[str, Any]]) -> list[str]:
    """The messages of the risks over their thresholds, for health ``warnings``."""
    return [risk["message"] for risk in risks if risk["over"]]
