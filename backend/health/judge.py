"""Judging health: facts in, status and messages out. No database, no Flask.

The monitor gathers facts (a probe's answer, pool numbers, migration state);
these functions alone decide what they mean, so every rule is testable with
plain dictionaries.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .servers import name as server_name

LABELS = {
    "postgresql": "PostgreSQL",
    "mysql": "MySQL",
    "mariadb": "MariaDB",
    "tidb": "TiDB",
    "sqlite": "SQLite",
    "pgbouncer": "pgbouncer",
}
# A bind is meant to be a replica when its name says so, its URL asks for a standby, or it was seen in recovery.
REPLICA_NAMES = ("replica", "standby")
STANDBY_ATTRS = ("read-only", "standby", "prefer-standby")
# Clients queued this long in pgbouncer make the pooler degraded.
POOLER_WAIT_WARN_S = 1.0


def component_warnings(
    facts: Mapping[str, Any],
    pool: Mapping[str, Any],
    limits: Mapping[str, Any],
    migrations: Mapping[str, Any] | None = None,
    risks: list[Mapping[str, Any]] | None = None,
    local: bool = True,
) -> list[str]:
    """What needs attention in one answering database.

    ``limits`` holds APP_ENV and the DB_*_WARN_PERCENT and DB_REPLICA_MAX_LAG_S
    settings; ``migrations`` is given for the primary only; ``risks`` are the
    capacity risks last measured (ops/risks.py), each already judged against its
    threshold; ``local`` is false when the connection crosses a network (not
    loopback, not a Unix socket).
    """
    warnings = []
    connections = facts.get("connections") or {}
    if connections.get("percent") is not None and connections["percent"] >= limits["DB_CONNECTIONS_WARN_PERCENT"]:
        warnings.append(f"{connections['percent']}% of max_connections in use")
    if pool.get("utilization_percent") is not None and pool["utilization_percent"] >= limits["DB_POOL_WARN_PERCENT"]:
        warnings.append(f"connection pool {pool['utilization_percent']}% in use")
    lag = facts.get("replication_lag_s")
    if lag is not None and lag > limits["DB_REPLICA_MAX_LAG_S"]:
        warnings.append(f"replica {lag:g}s behind its primary")
    tls = facts.get("tls")
    if tls is not None and not tls.get("in_use") and not local and limits.get("APP_ENV") == "production":
        warnings.append("the connection to this database is not encrypted (no TLS) and crosses a network")
    if migrations is not None:
        if facts.get("read_only"):
            warnings.append("the primary database is read-only")
        if migrations.get("up_to_date") is False:
            warnings.append(
                f"migrations pending (database at {migrations['current']}, code at {migrations['head']})"
            )
    warnings += [risk["message"] for risk in risks or () if risk["over"]]
    return warnings


def component_verdict(database_type: str, warnings: list[str]) -> tuple[str, str]:
    """(status, message) of a database that answered."""
    label = LABELS.get(database_type, database_type)
    if warnings:
        return "degraded", f"{label} needs attention: " + "; ".join(warnings)
    return "healthy", f"{label} connection healthy"


def overall(components: Mapping[str, Mapping[str, Any]]) -> tuple[str, str]:
    """(status, message) of the whole: the primary decides up or down, any other component can degrade it."""
    primary = components["primary"]
    failing = [name for name, c in components.items() if name != "primary" and c["status"] != "healthy"]
    if primary["status"] == "unhealthy":
        return "unhealthy", primary["message"]
    if primary["status"] == "healthy" and not failing:
        return "healthy", primary["message"]
    message = primary["message"]
    if failing:
        message += "; needs attention: " + ", ".join(failing)
    return "degraded", message


def again(snapshot: Mapping[str, Any], limits: Mapping[str, Any], migrations: Mapping[str, Any]) -> dict[str, Any]:
    """A snapshot judged again under other ``limits`` (a request's own max_lag_s): components that
    answered and report replica lag get new warnings, status and message; the rest stay as they were."""
    components = {}
    for name, component in snapshot["components"].items():
        if component["status"] == "unhealthy" or component.get("replication_lag_s") is None:
            components[name] = component
            continue
        risks = (component.get("risks") or {}).get("items")
        warnings = component_warnings(
            component, component["pool_status"], limits, migrations if name == "primary" else None, risks
        )
        status, message = component_verdict(component["database_type"], warnings)
        components[name] = {**component, "status": status, "message": message, "warnings": warnings}
    status, message = overall(components)
    return {**components["primary"], "status": status, "message": message, "components": components}


def risk_report(components: Mapping[str, Mapping[str, Any]], supported: Mapping[str, bool]) -> dict[str, Any]:
    """The risks section of /status, per component: when last measured and what (ops/risks.py)."""
    report = {}
    for name, component in components.items():
        if name not in supported:
            continue  # not a database (the pooler)
        risks = component.get("risks") or {}
        report[name] = {"supported": supported[name], "checked_at": risks.get("checked_at"), "items": risks.get("items", [])}
    return report
def meant_as_replica(name: str, target_session_attrs: str | None, seen_in_recovery: bool) -> bool:
    """Whether a bind is expected to be a replica (see REPLICA_NAMES, STANDBY_ATTRS)."""
    return any(word in name.lower() for word in REPLICA_NAMES) or target_session_attrs in STANDBY_ATTRS or seen_in_recovery


def same_server(one: Mapping[str, Any] | None, other: Mapping[str, Any] | None) -> bool:
    """Two ``server`` facts name one server.

    PostgreSQL: same port, postmaster start time and system identifier (a
    replica shares only the identifier; the address can differ by interface).
    MySQL family: same @@hostname, @@port and server id or uuid.
    """
    if not one or not other or one.get("port") is None:
        return False
    keys = ["port", "postmaster_start_time", "system_identifier", "server_uuid", "server_id"]
    if one.get("postmaster_start_time") is None:
        keys.append("address")
    known = [key for key in keys if key == "port" or (one.get(key) is not None and other.get(key) is not None)]
    return all(one.get(key) == other.get(key) for key in known)


def replica_warnings(name: str, facts: Mapping[str, Any], primary: Mapping[str, Any] | None) -> list[str]:
    """What is wrong with a bind meant to be a replica: it accepts writes, or it is the primary itself."""
    server = facts.get("server") or {}
    warnings = []
    if server.get("in_recovery") is False or facts.get("read_only") is False:
        warnings.append(f"replica {name} is writable: {server_name(server)} is not in recovery (a primary)")
    if primary and same_server(server, primary.get("server")):
        warnings.append(f"replica {name} is the same server as the primary ({server_name(server)})")
    return warnings


def pooler_queue(facts: Mapping[str, Any], min_wait_s: float = 0.0) -> str | None:
    """"pooler queue full: ..." when clients wait and every server connection of the pool is busy, else None.

    Clients waiting while a server connection is idle, or while fewer than
    pool_size are in use (pgbouncer still logging in to a server that does not
    answer), are not a full queue.
    """
    waiting = facts.get("clients_waiting") or 0
    longest = facts.get("longest_wait_s") or 0.0
    in_use, size = facts.get("server_connections_in_use") or 0, facts.get("pool_size")
    if waiting <= 0 or longest < min_wait_s or (facts.get("server_connections_idle") or 0) > 0:
        return None
    if size and in_use < size:
        return None
    return f"pooler queue full: {waiting} client{'s' if waiting != 1 else ''} waiting, longest {longest:.1f} s"


def pooler_warnings(facts: Mapping[str, Any]) -> list[str]:
    queue = pooler_queue(facts, POOLER_WAIT_WARN_S)
    return [queue] if queue else []


def explain_timeout(pooler: Mapping[str, Any] | None) -> str | None:
    """Why a probe through pgbouncer got no answer: a full queue, told apart from a frozen server."""
    if not pooler or pooler.get("status") == "unhealthy":
        return None
    return pooler_queue(pooler)
