"""The /api/database routes for health, info, status, reconnect and the audit log."""
from __future__ import annotations

import functools
import logging
import math
import os
import platform
import re
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson
import psycopg2
from flask import Flask, Request, current_app, request
from werkzeug.datastructures import Headers

from .. import alerts, audit, metrics, process
from ..auth.tokens import admin_only, is_admin
from ..console.guard import guard_facts
from ..db import reconnect as reconnection
from ..db import tls
from ..db.budget import gather, start_budget
from ..db.deadline import DeadlineExceeded
from ..db.facts import connection_facts, pool_facts
from ..errors import ApiError, error_body
from ..extensions import db
from ..fleet.workers import live_workers
from ..health import dialects, judge, pooler, transitions
from ..health.monitor import component_keys, monitor
from ..state import state
from .blueprint import bp

log = logging.getLogger(__name__)

HEALTH_JSON = "application/health+json"
HEALTH_JSON_STATUS = {"healthy": "pass", "degraded": "warn", "unhealthy": "fail"}


# The first value of each parameter, by the raw query string: /health sees the same few
# again and again, and werkzeug's parse (a MultiDict, an exception per missing key) costs
# a forced probe's answer 2% of its rate. Bounded: a caller inventing query strings only
# empties it.
_parsed_queries: dict[bytes, Mapping[str, str]] = {}
PARSED_QUERIES_KEPT = 64


def query_args(current: Request) -> Mapping[str, str]:
    """The query parameters, first value of each (as ``request.args.get``), read-only: shared by requests."""
    raw = current.query_string
    if not raw:
        return {}
    parsed = _parsed_queries.get(raw)
    if parsed is None:
        if len(_parsed_queries) >= PARSED_QUERIES_KEPT:
            _parsed_queries.clear()
        args = current.args
        parsed = _parsed_queries[raw] = MappingProxyType({key: args[key] for key in args})
    return parsed


def flag(args: Mapping[str, str], name: str) -> bool:
    raw = args.get(name)
    if raw is None:
        return False
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise ApiError(400, "invalid_parameter", f"{name} must be true, false, 1 or 0, got {raw!r}", "Invalid parameter")


def present(snapshot: dict[str, Any], cached: bool, admin: bool) -> dict[str, Any]:
    """The health data as a caller sees it: ``cached`` set, driver errors for admins only."""
    components = {}
    for name, component in snapshot["components"].items():
        component = {**component, "cached": cached}
        if not admin:
            component.pop("error", None)
        components[name] = component
    data = {**snapshot, "cached": cached, "components": components}
    if not admin:
        data.pop("error", None)
    return data


def health_json(data: dict[str, Any]) -> dict[str, Any]:
    """The same facts in the IETF health check response format (draft-inadarei-api-health-check)."""
    checks_out: dict[str, list[dict[str, Any]]] = {}
    for name, component in data["components"].items():
        status = HEALTH_JSON_STATUS[component["status"]]
        common = {"componentId": name, "componentType": "datastore", "status": status, "time": component["timestamp"]}
        checks_out[f"{name}:responseTime"] = [
            {**common, "observedValue": component["response_time_ms"], "observedUnit": "ms"}
        ]
        connections = component.get("connections")
        if connections and connections.get("used") is not None:
            checks_out[f"{name}:connections"] = [
                {**common, "observedValue": connections["used"], "observedUnit": "connections"}
            ]
        utilization = (component.get("pool_status") or {}).get("utilization_percent")
        if utilization is not None:
            checks_out[f"{name}:poolUtilization"] = [{**common, "observedValue": utilization, "observedUnit": "percent"}]
        if component.get("replication_lag_s") is not None:
            checks_out[f"{name}:replicationLag"] = [
                {**common, "observedValue": component["replication_lag_s"], "observedUnit": "s"}
            ]
    body = {
        "status": HEALTH_JSON_STATUS[data["status"]],
        "description": "database health",
        "checks": checks_out,
    }
    if data["status"] != "healthy":
        body["output"] = data["message"]
    return body


# A success body depends only on (snapshot, cached, admin): rendered once per snapshot.
_rendered: dict[tuple[int, bool, bool], tuple[dict[str, Any], bytes]] = {}


def _success_body(snapshot: dict[str, Any], cached: bool, admin: bool) -> bytes:
    """The JSON Flask's encoder wrote (keys in order, no spaces; text as UTF-8, not \\u escapes),
    ten times faster: every forced probe's answer is a new 3 KB body. Anything but JSON's own
    types is written as the published copy has it (str, shared.py)."""
    key = (id(snapshot), cached, admin)
    hit = _rendered.get(key)
    if hit is None or hit[0] is not snapshot:
        if len(_rendered) > 16:
            _rendered.clear()
        data = {"success": True, "data": present(snapshot, cached, admin)}
        hit = _rendered[key] = (snapshot, orjson.dumps(data, default=str, option=orjson.OPT_PASSTHROUGH_DATETIME))
    return hit[1]


# A success's headers, parsed and checked once: werkzeug copies a Headers as it is, a dict it checks again.
SUCCESS_HEADERS = Headers([("Content-Type", "application/json"), ("Cache-Control", "no-store")])


def wants_health_json(current: Request) -> bool:
    """The IETF format only when the client names it, with a quality above zero and no lower than JSON's.

    ``application/health+json;q=0`` means "not this"; ``*/*`` means plain JSON.
    """
    if HEALTH_JSON not in current.environ.get("HTTP_ACCEPT", "").lower():
        return False
    accept = current.accept_mimetypes
    named = max((q for value, q in accept if value.split(";")[0].strip().lower() == HEALTH_JSON), default=0)
    return named > 0 and named >= accept.quality("application/json")


def health_response(app: Flask, current: Request, snapshot: dict[str, Any], cached: bool, admin: bool):
    """200 or 503 with the health data, as JSON or as application/health+json."""
    status = 503 if snapshot["status"] == "unhealthy" else 200
    headers = {"Cache-Control": "no-store"}
    if wants_health_json(current):
        body = app.json.dumps(health_json(present(snapshot, cached, admin)))
        return app.response_class(body, status=status, mimetype=HEALTH_JSON, headers=headers)
    if status == 503:
        data = present(snapshot, cached, admin)
        if snapshot["components"]["primary"].get("misconfigured"):
            return error_body("db_misconfigured", data["message"], "Database misconfigured", data=data), 503, headers
        return error_body("db_unavailable", data["message"], "Database unhealthy", data=data), 503, headers
    return app.response_class(_success_body(snapshot, cached, admin), headers=SUCCESS_HEADERS.copy())


def seconds_arg(args: Mapping[str, str], name: str) -> float | None:
    raw = args.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise ApiError(
            400, "invalid_parameter", f"{name} must be a non-negative number of seconds, got {raw!r}", "Invalid parameter"
        )
    return value


@bp.get("/health")
def health():
    current, app = request._get_current_object(), current_app._get_current_object()  # each proxy use resolves it again
    args = query_args(current)
    force = flag(args, "force")
    max_lag_s = seconds_arg(args, "max_lag_s")
    health_monitor = state(app).monitor
    snapshot, cached = health_monitor.health(force=force)
    if max_lag_s is not None:  # judged for this request only; the cached snapshot is not changed
        snapshot = health_monitor.with_lag_limit(snapshot, max_lag_s)
    return health_response(app, current, snapshot, cached, is_admin())


@bp.get("/info")
def info():
    options = state().engine_options
    keys = component_keys(current_app)
    snapshot, _ = monitor().health()  # database_type as the server told it, the same as /health says
    facts = {}
    for name, key in keys.items():
        engine = db.engines[key]
        facts[name] = {**connection_facts(engine, options[key]), "tls": tls.describe(engine.url, current_app.config)}
        facts[name]["database_type"] = snapshot["components"][name]["database_type"]
    primary = facts.pop("primary")
    return {"success": True, "data": {**primary, "binds": facts, "console": guard_facts()}}


@bp.get("/status")
def status():
    """Everything on one page, within DB_HEALTH_TIMEOUT: the facts are gathered in parallel."""
    budget = start_budget(current_app.config["DB_HEALTH_TIMEOUT"])
    snapshot, cached = monitor().health()
    data = present(snapshot, cached, is_admin())
    keys = component_keys(current_app)
    app = current_app._get_current_object()
    jobs: dict[str, Any] = {
        "migrations": monitor().migration_state,
        "transitions": functools.partial(transitions.recent, app, budget.seconds),
        "reconnect": functools.partial(reconnection.report, app),
    }
    for name, key in keys.items():
        if data["components"][name]["status"] != "unhealthy":
            jobs[f"server:{name}"] = functools.partial(dialects.server_facts, key, budget.seconds)
    gathered = gather(jobs, budget)
    server: dict[str, Any] = {}
    pool: dict[str, Any] = {}
    for name, key in keys.items():
        component = data["components"][name]
        engine = db.engines[key]
        pool[name] = {
            **pool_facts(engine),
            "pool_timeout": getattr(engine.pool, "_timeout", None),
            "pool_recycle": engine.pool._recycle if engine.pool._recycle >= 0 else None,
        }
        facts = {
            "version": component.get("version"),
            "connections": component.get("connections"),
            "read_only": component.get("read_only"),
            "replica": component.get("replica"),
            "replication_lag_s": component.get("replication_lag_s"),
            "tls": component.get("tls"),
        }
        found = gathered.get(f"server:{name}")
        if isinstance(found, dict):
            facts.update(found)
        elif found is not None:
            log.warning("server facts of %s unavailable: %s", name, type(found).__name__)
            facts["error"] = "server facts unavailable"
        server[name] = facts
    migrations = gathered["migrations"]
    if not isinstance(migrations, dict):
        migrations = monitor().migrations.known or {"current": None, "head": monitor().migrations.head, "up_to_date": None}
    history, history_error = (
        gathered["transitions"] if isinstance(gathered["transitions"], tuple) else ([], "transitions unavailable")
    )
    report = {**monitor().report(), "transitions": history, "history_retention_days": current_app.config["DB_HISTORY_RETENTION_DAYS"]}
    if history_error:
        report["transitions_error"] = history_error
    return {
        "success": True,
        "data": {
            "instance": current_app.config["INSTANCE_ID"],
            "health": data,
            "pool": pool,
            "server": server,
            "migrations": migrations,
            "risks": judge.risk_report(data["components"], {name: dialects.risks_supported(key) for name, key in keys.items()}),
            "monitor": report,
            "reconnect": gathered["reconnect"] if isinstance(gathered["reconnect"], dict) else {
                "generation": state().generation, "applied_by": None, "error": "reconnect generations unavailable"
            },
            "alerts": alerts.report(current_app),
            "workers": live_workers(current_app.instance_path),
            "process": {
                "pid": os.getpid(),
                "started_at": process.started_iso(),
                "uptime_seconds": round(time.time() - process.started()),
                "python": platform.python_version(),
                "pool_generation": state().generation,
            },
        },
    }, 200, {"Cache-Control": "no-store"}


@bp.post("/reconnect")
@admin_only
def reconnect():
    app = current_app._get_current_object()
    pooler_reconnected = reconnect_pooler(app)
    applied = reconnection.request_reconnect(app)
    metrics.RECONNECTS.inc()
    snapshot, _ = monitor().health(force=True, since=time.time())  # on the new connections, not one in flight
    data = {**applied, "health": present(snapshot, False, True)}
    detail = {key: applied[key] for key in ("generation", "disposed_connections", "fallback")}
    detail["status"] = snapshot["status"]
    if pooler_reconnected is not None:
        data["pooler_reconnected"] = detail["pooler_reconnected"] = pooler_reconnected
    if snapshot["status"] == "unhealthy":
        log.warning("audit event not stored, database down: action=reconnect detail=%s", detail)
        return error_body("db_unavailable", snapshot["message"], "Database still unavailable", data=data), 503
    audit.record("reconnect", "ok", detail=detail)
    return {"success": True, "data": data}


def reconnect_pooler(app) -> list[str] | str | None:
    """With DB_PGBOUNCER_ADMIN_URL, ask pgbouncer to replace its server connections too (RECONNECT)."""
    console = monitor().components.pooler
    if console is None:
        return None
    databases = {engine.url.database for engine in db.engines.values()}
    try:
        return pooler.reconnect(console, app.config["DB_HEALTH_TIMEOUT"], databases)
    except (psycopg2.Error, DeadlineExceeded) as error:
        log.warning("pgbouncer RECONNECT failed: %s", type(error).__name__)
        return f"failed: {type(error).__name__}"


AUDIT_ACTION = re.compile(r"[a-z_]{1,40}")


def bounded_int(name: str, default: int, low: int, high: int) -> int:
    """An integer query argument by Flask's own conversion (never isdigit() then int()), 400 when out of range."""
    if name not in request.args:
        return default
    value = request.args.get(name, type=int)
    if value is None or not low <= value <= high:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer from {low} to {high}", "Invalid parameter")
    return value


@bp.get("/audit")
@admin_only
def audit_log():
    limit = bounded_int("limit", 100, 1, 1000)
    action = request.args.get("action") or None
    if action is not None and not AUDIT_ACTION.fullmatch(action):
        raise ApiError(400, "invalid_parameter", "action must be an action name such as login or test", "Invalid parameter")
    return {"success": True, "data": {"events": audit.recent(limit, action)}}
