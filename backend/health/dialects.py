"""What to ask each dialect: the health probe, and the slower facts for /status.

Probes run on a kept-open connection under a hard deadline (bounded.py).
"""
from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from ..db.probe_connection import ProbeConnection, probe_connection
from ..db.side import run_bounded
from ..extensions import db
from ..ops import risks as capacity
from ..ops import unsupported_reason
from . import servers

# One round trip: client connections in use (cheaper than counting pg_stat_activity),
# the limit, recovery state and replay lag (0 when everything received is replayed).
# One query level, no subquery: the server plans it on every probe, and planning a
# subquery cost more than running it (~350 us a probe with them, ~250 without).
# The light probe: recovery state and which server answered (servers.py).
POSTGRES_LIGHT = f"SELECT pg_is_in_recovery(), {servers.POSTGRES_IDENTITY}"
POSTGRES_PROBE = f"""
SELECT count(*) FILTER (WHERE pg_stat_get_backend_dbid(b) <> 0),
       current_setting('max_connections')::int,
       pg_is_in_recovery(),
       CASE WHEN NOT pg_is_in_recovery() THEN NULL
            WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)
       END,
       {servers.POSTGRES_IDENTITY}, {servers.POSTGRES_TIMELINE}
FROM pg_stat_get_backend_idset() AS b
"""
POSTGRES_FACTS = """
SELECT EXTRACT(EPOCH FROM now() - pg_postmaster_start_time()),
       pg_database_size(current_database()),
       current_database()
"""
# This connection's TLS as the server sees it; asked once per connection (it cannot change).
POSTGRES_TLS = "SELECT ssl, version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
MARIADB_PROBE = (
    "SELECT @@read_only, @@max_connections, (SELECT VARIABLE_VALUE FROM "
    "information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'THREADS_CONNECTED'), "
    "@@hostname, @@port, @@server_id"
)
# Which server answered: MariaDB has no @@server_uuid, its @@server_id names a server of a replication set.
# TiDB is asked only what it is known to answer.
MYSQL_IDENTITY = {
    "mariadb": "@@hostname, @@port, @@server_id",
    "mysql": "@@hostname, @@port, @@server_uuid",
    "tidb": "@@hostname, @@port, NULL",
}


def _connections(used: Any, maximum: Any) -> dict[str, Any]:
    used = int(used) if used is not None else None
    maximum = int(maximum) if maximum is not None else None
    percent = round(100.0 * used / maximum, 1) if used is not None and maximum else None
    return {"used": used, "max": maximum, "percent": percent}


def tls_facts(connection: ProbeConnection) -> dict[str, Any]:
    """``in_use``, ``version`` and ``cipher`` of this connection, from the server, once per connection."""
    info = connection.info
    if "tls" not in info:
        if connection.dialect.name == "postgresql":
            row = connection.fetch(POSTGRES_TLS)
            in_use, version, cipher = row if row else (False, None, None)
        else:
            version = (connection.fetch("SHOW SESSION STATUS LIKE 'Ssl_version'") or (None, None))[1] or None
            cipher = (connection.fetch("SHOW SESSION STATUS LIKE 'Ssl_cipher'") or (None, None))[1] or None
            in_use = version is not None
        info["tls"] = {"in_use": bool(in_use), "version": version, "cipher": cipher}
    return dict(info["tls"])


def system_identifier(connection: ProbeConnection, server_identity: tuple[Any, ...]) -> str | None:
    """The system identifier of the server that gave ``server_identity`` (its address, port and
    postmaster start), asked once per server: it is fixed for a server's life, but behind a pooler
    one connection can meet several (a RELOAD that points pgbouncer elsewhere). None when the
    question reached another server than the probe (a pooler with several behind it)."""
    known = connection.info.setdefault("system_identifiers", {})
    if server_identity not in known:
        row = connection.fetch(servers.POSTGRES_SYSTEM_IDENTIFIER)
        if row:
            if len(known) >= 8:
                known.clear()
            known[tuple(row[:3])] = row[3]
    return known.get(server_identity)


def probe_postgresql(connection: ProbeConnection, full: bool) -> dict[str, Any]:
    major, minor = connection.dialect.server_version_info[:2]
    facts: dict[str, Any] = {
        "database_type": "postgresql",
        "version": f"PostgreSQL {major}.{minor}",
        "tls": tls_facts(connection),
    }
    dbapi_connection = connection.pooled.dbapi_connection
    if not full:
        in_recovery, *identity = connection.fetch(POSTGRES_LIGHT)
        server = servers.postgres_server(tuple(identity), in_recovery, dbapi_connection, connection.url)
        return {**facts, "read_only": bool(in_recovery), "replica": bool(in_recovery), "server": server}
    used, maximum, in_recovery, lag, *identity = connection.fetch(POSTGRES_PROBE)
    return {
        **facts,
        "connections": _connections(used, maximum),
        "read_only": bool(in_recovery),
        "replica": bool(in_recovery),
        "replication_lag_s": round(float(lag), 3) if lag is not None else None,
        "server": servers.postgres_server(
            (*identity, system_identifier(connection, tuple(identity[:3]))), in_recovery, dbapi_connection, connection.url
        ),
    }


def _mysql_flavour(connection: ProbeConnection) -> tuple[str, str]:
    """(database_type, version) from VERSION(), asked once per connection."""
    info = connection.info
    if "flavour" not in info:
        version = connection.fetch("SELECT VERSION()")[0] or ""
        if "tidb" in version.lower():
            flavour, label = "tidb", "TiDB " + version.split("TiDB-")[-1]
        elif "mariadb" in version.lower():
            flavour, label = "mariadb", "MariaDB " + version.split("-")[0]
        else:
            flavour, label = "mysql", "MySQL " + version.split("-")[0]
        info["flavour"] = (flavour, label)
    return info["flavour"]


def probe_mysql(connection: ProbeConnection, full: bool) -> dict[str, Any]:
    flavour, version = _mysql_flavour(connection)
    facts: dict[str, Any] = {"database_type": flavour, "version": version, "tls": tls_facts(connection)}
    identity_sql = MYSQL_IDENTITY[flavour]
    if not full:
        read_only, *identity = connection.fetch(f"SELECT @@read_only, {identity_sql}")
    elif flavour == "mariadb":
        read_only, maximum, used, *identity = connection.fetch(MARIADB_PROBE)
    else:
        read_only, maximum, *identity = connection.fetch(f"SELECT @@read_only, @@max_connections, {identity_sql}")
        row = connection.fetch("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
        used = row[1] if row else None
    read_only = bool(int(read_only))
    server = servers.mysql_server(*identity, read_only, flavour, connection.pooled.dbapi_connection, connection.url)
    facts.update(read_only=read_only, replica=read_only, server=server)
    if not full:
        return facts
    return {**facts, "connections": _connections(used, maximum), "replication_lag_s": None}


def probe_sqlite(connection: ProbeConnection, full: bool) -> dict[str, Any]:
    connection.fetch("SELECT count(*) FROM sqlite_master")
    facts: dict[str, Any] = {
        "database_type": "sqlite",
        "version": f"SQLite {sqlite3.sqlite_version}",
        "read_only": False,
        "replica": False,
        "tls": None,  # a file: nothing on a wire
        "server": {"address": None, "port": None, "in_recovery": False, "unreachable_hosts": []},
    }
    if not full:
        return facts
    facts["journal_mode"] = connection.fetch("PRAGMA journal_mode")[0]
    path = connection.url.database
    if path and path != ":memory:" and os.path.exists(path):
        facts["file_size_bytes"] = os.path.getsize(path)
        facts["disk_free_bytes"] = shutil.disk_usage(os.path.dirname(path)).free
    return facts


PROBES = {"postgresql": probe_postgresql, "mysql": probe_mysql, "mariadb": probe_mysql, "sqlite": probe_sqlite}


def probe(key: str | None, seconds: float, full: bool = True) -> dict[str, Any]:
    """Probe one database; raises DeadlineExceeded or SQLAlchemyError when it does not answer.

    A light probe is one cheap round trip (liveness and read-only state); a full
    one also counts connections and measures replica lag.
    """
    dialect = db.engines[key].dialect.name
    return probe_connection(key).run(seconds, lambda connection: PROBES[dialect](connection, full))


def _server_facts_postgresql(connection: Connection) -> dict[str, Any]:
    uptime, size, name = connection.exec_driver_sql(POSTGRES_FACTS).one()
    return {"uptime_seconds": round(float(uptime)), "database_size_bytes": int(size), "database": name}


def _server_facts_mysql(connection: Connection) -> dict[str, Any]:
    uptime = connection.exec_driver_sql("SHOW GLOBAL STATUS LIKE 'Uptime'").first()
    size, name = connection.exec_driver_sql(
        "SELECT COALESCE(SUM(data_length + index_length), 0), DATABASE() "
        "FROM information_schema.TABLES WHERE table_schema = DATABASE()"
    ).one()
    facts: dict[str, Any] = {
        "uptime_seconds": int(uptime[1]) if uptime else None,
        "database_size_bytes": int(size),
        "database": name,
    }
    try:
        status = connection.exec_driver_sql("SHOW REPLICA STATUS").mappings().first()
    except DBAPIError:
        try:
            status = connection.exec_driver_sql("SHOW SLAVE STATUS").mappings().first()
        except DBAPIError:
            status = None
    if status:
        lag = status.get("Seconds_Behind_Source", status.get("Seconds_Behind_Master"))
        facts["replication_lag_s"] = float(lag) if lag is not None else None
    return facts


def _server_facts_sqlite(connection: Connection) -> dict[str, Any]:
    page_count = connection.exec_driver_sql("PRAGMA page_count").scalar()
    page_size = connection.exec_driver_sql("PRAGMA page_size").scalar()
    return {"uptime_seconds": None, "database_size_bytes": page_count * page_size, "database": connection.engine.url.database}


SERVER_FACTS = {
    "postgresql": _server_facts_postgresql,
    "mysql": _server_facts_mysql,
    "mariadb": _server_facts_mysql,
    "sqlite": _server_facts_sqlite,
}


def server_facts(key: str | None, seconds: float) -> dict[str, Any]:
    """Slower facts for /status: uptime, database size, replication state."""
    dialect = db.engines[key].dialect.name
    return run_bounded(key, seconds, SERVER_FACTS[dialect])


def risks(key: str | None, seconds: float, limits: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """Capacity risks (ops/risks.py) on a side connection; None for a dialect that has none."""
    if not risks_supported(key):
        return None
    return run_bounded(key, seconds, lambda connection: capacity.measure(connection, limits))


def risks_supported(key: str | None) -> bool:
    return unsupported_reason(db.engines[key].dialect.name) is None
