"""Judging health: facts in, status and messages out. No database, no Flask.

The monitor gathers facts (a probe's answer, pool numbers, migration state);
these functions alone decide what they mean, so every rule is testable with
plain dictionaries.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LABELS = {"postgresql": "PostgreSQL", "mysql": "MySQL", "mariadb": "MariaDB", "tidb": "TiDB", "sqlite": "SQLite"}


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
        risks = component.get("risks") or {}
        report[name] = {"supported": supported[name], "checked_at": risks.get("checked_at"), "items": risks.get("items", [])}
    return report
