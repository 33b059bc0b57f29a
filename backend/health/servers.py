"""Which server answered a probe, and what a change of server means.

Behind a multi-host URL, a pooler or a virtual IP the configured address names
no server, and a replica shares its primary's system identifier, so a probe
asks the server itself: its own address and port, whether it is in recovery,
its postmaster start time and (with the full facts) its timeline. The MySQL
family gives @@hostname, @@port and @@server_uuid (@@server_id on MariaDB).
``change`` compares two answers without a database; ``detect_change`` lets the
instance record a change of server once, as a transition (shared.py).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ..db import hosts as multi_host
from ..db.urls import hosts_of

# Asked with every PostgreSQL probe (about 8 us on the server)...
POSTGRES_IDENTITY = "inet_server_addr(), inet_server_port(), pg_postmaster_start_time()"
# ...and with the full facts only: the timeline (a primary's from its current WAL file, exact
# from the moment of a promotion; a standby's from pg_control_checkpoint(), its last restartpoint).
POSTGRES_TIMELINE = (
    "CASE WHEN pg_is_in_recovery() THEN (pg_control_checkpoint()).timeline_id "
    "ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END"
)
# The system identifier is fixed for a server's life: asked once per server a connection meets,
# with the identity it belongs to (reading pg_control took ~45 us of a ~350 us probe, every probe).
POSTGRES_SYSTEM_IDENTIFIER = f"SELECT {POSTGRES_IDENTITY}, system_identifier::text FROM pg_control_system()"


def connected_to(dbapi_connection: Any) -> str | None:
    """The configured ``host:port`` this driver connection reached."""
    info = getattr(dbapi_connection, "info", None)
    host = getattr(info, "host", None) or getattr(dbapi_connection, "host", None)
    port = getattr(info, "port", None) or getattr(dbapi_connection, "port", None)
    return f"{host}:{port}" if host else None


def unreachable_hosts(url: Any, failed: bool) -> list[str]:
    """Configured hosts that did not answer: from the latest attempts of a multi-host URL, else the one host if the probe failed."""
    if not failed and not isinstance(url.query.get("host"), tuple):
        return []  # one host, and it answered (every probe's case: no list built)
    configured = hosts_of(url)
    if len(configured) > 1:
        found = multi_host.unreachable(configured)
        return found or ([f"{host}:{port}" for host, port in configured] if failed else [])
    return [f"{host}:{port}" for host, port in configured] if failed else []


def postgres_server(row: tuple[Any, ...], in_recovery: bool, dbapi_connection: Any, url: Any) -> dict[str, Any]:
    """``server`` from the identity columns (and, when present, the lineage ones) of a probe row."""
    address, port, started, *lineage = row
    server = {
        "address": str(address) if address is not None else None,
        "port": int(port) if port is not None else None,
        "connected_to": connected_to(dbapi_connection),
        "in_recovery": bool(in_recovery),
        "postmaster_start_time": _iso(started),
    }
    if lineage:
        timeline, system_identifier = lineage
        server.update(timeline=int(timeline) if timeline is not None else None, system_identifier=system_identifier)
    server["unreachable_hosts"] = unreachable_hosts(url, failed=False)
    return server


def mysql_server(hostname: Any, port: Any, uuid: Any, read_only: bool, flavour: str, dbapi_connection: Any, url: Any) -> dict[str, Any]:
    server = {
        "address": hostname,
        "port": int(port) if port is not None else None,
        "connected_to": connected_to(dbapi_connection),
        "in_recovery": bool(read_only),  # the MySQL family has no recovery: a read-only server is a replica
        ("server_id" if flavour == "mariadb" else "server_uuid"): str(uuid) if uuid is not None else None,
        "unreachable_hosts": unreachable_hosts(url, failed=False),
    }
    return server


def unanswered(url: Any, last: dict[str, Any] | None = None) -> dict[str, Any]:
    """``server`` of a component that did not answer, with the server that answered last (to tell a failover)."""
    server: dict[str, Any] = {"address": None, "port": None, "in_recovery": None, "unreachable_hosts": unreachable_hosts(url, failed=True)}
    if last:
        server["last_answered"] = {key: value for key, value in last.items() if key not in ("unreachable_hosts", "last_answered")}
    return server


def name(server: dict[str, Any]) -> str:
    """``address:port`` as the server reports it, else the configured host it was reached at."""
    if server.get("address"):
        return f"{server['address']}:{server['port']}"
    return server.get("connected_to") or "unknown server"


def same_answer(previous: dict[str, Any] | None, current: dict[str, Any] | None) -> bool:
    """True when a light probe reached the server the full facts describe, in the same role."""
    if not previous or not current:
        return False
    keys = ("address", "port", "postmaster_start_time", "server_uuid", "server_id", "in_recovery")
    return all(previous.get(key) == current.get(key) for key in keys)


def change(previous: dict[str, Any] | None, current: dict[str, Any] | None) -> str | None:
    """The words for a change of server between two answers, or None.

    Named by the role the old server had: "primary changed from h1:5432 to h2:5432".
    """
    if not previous or not current or not (previous.get("address") or previous.get("connected_to")):
        return None
    before, after, role = name(previous), name(current), _role(previous)
    for key in ("server_uuid", "server_id"):
        if previous.get(key) and current.get(key) and previous[key] != current[key] and before == after:
            return f"{role} changed from {before} ({key} {previous[key]}) to {after} ({key} {current[key]})"
    if before != after:
        return f"{role} changed from {before} to {after}{_timelines(previous, current)}"
    if previous.get("postmaster_start_time") != current.get("postmaster_start_time"):
        return f"{role} {after} restarted (postmaster started {current.get('postmaster_start_time')})"
    if previous.get("in_recovery") != current.get("in_recovery") and current.get("in_recovery") is not None:
        return f"replica {after} left recovery (promoted)" if not current["in_recovery"] else f"primary {after} is now in recovery (a replica)"
    return None


def detect_change(old: dict[str, Any] | None, component: dict[str, Any]) -> str | None:
    """A detector for the instance's published probes (shared.py): has another server answered?"""
    if not old or component.get("status") == "unhealthy":
        return None
    before = old.get("server") or {}
    if not (before.get("address") or before.get("connected_to")):
        before = before.get("last_answered") or {}  # it was down: compare with the server that answered before
    return change(before, component.get("server"))


def _role(server: dict[str, Any]) -> str:
    return "replica" if server.get("in_recovery") else "primary"


def _timelines(previous: dict[str, Any], current: dict[str, Any]) -> str:
    if previous.get("timeline") is None or current.get("timeline") is None or previous["timeline"] == current["timeline"]:
        return ""
    return f", timeline {previous['timeline']} -> {current['timeline']}"


# The postmaster start time of the last server: every probe reads it, and it changes with a restart.
_last_iso: tuple[Any, str | None] = (None, None)


def _iso(value: Any) -> str | None:
    global _last_iso
    if isinstance(value, datetime):
        seen, text = _last_iso
        if seen != value:  # equal instants give the same text in UTC
            text = value.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
            _last_iso = (value, text)
        return text
    return str(value) if value is not None else None
