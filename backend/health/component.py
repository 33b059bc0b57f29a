"""Probing one database: its facts gathered under the request's budget, judged, and one result built.

A ``ComponentProber`` per app and process remembers what the probes in between
need: the last full facts (connections, server details), the capacity risks
last measured, the server that last answered, and which binds were ever seen
in recovery (a replica bind). The monitor decides when to probe; this decides
what one probe of one database says.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any

from flask import Flask
from sqlalchemy.exc import SQLAlchemyError

from .. import metrics
from ..db import tls
from ..db.budget import Budget, using
from ..db.classify import misconfiguration
from ..db.deadline import DeadlineExceeded
from ..db.facts import pool_facts
from ..db.urls import scrub_secrets
from ..extensions import db
from . import dialects, judge, pooler, servers
from .migrations import MigrationState

log = logging.getLogger(__name__)

# Connections in use and server details are counted at most this often (and on
# every probe of a replica, for its lag); the probes in between are one cheap
# query, and report the last full facts with their own on top.
FULL_FACTS_EVERY_S = 10.0
# Capacity risks (ops/risks.py) read catalogs and every session: at most this
# often, with a full probe, on a side connection, within the probe's deadline.
# Tests lower it through the Flask key DB_RISKS_EVERY_S.
RISKS_EVERY_S = 60.0


_last_second: tuple[int, str] = (-1, "")


def iso_now() -> str:
    """Now in UTC to the second, as every result's timestamp (formatted once a second)."""
    global _last_second
    now = time.time()
    second, text = _last_second
    if int(now) != second:
        text = datetime.fromtimestamp(int(now), timezone.utc).isoformat().replace("+00:00", "Z")
        _last_second = (int(now), text)
    return text


class ComponentProber:
    def __init__(self, app: Flask, migrations: MigrationState):
        self.app = app
        self.migrations = migrations
        self.lock = threading.Lock()  # guards everything below
        self.full_facts: dict[str, tuple[float, dict[str, Any]]] = {}
        self.risks: dict[str, dict[str, Any]] = {}  # component -> {"at", "checked_at", "items"}, as last measured here
        self.servers: dict[str, dict[str, Any]] = {}  # component -> the server that last answered
        self.seen_in_recovery: set[str] = set()
        admin_url = app.config.get("DB_PGBOUNCER_ADMIN_URL")
        self.pooler = (
            pooler.PoolerConsole(admin_url, app.config["DB_HEALTH_TIMEOUT"], tls.libpq_parameters(admin_url, app.config))
            if admin_url
            else None
        )

    def probe_in_context(self, name: str, key: str | None, budget: Budget) -> dict[str, Any]:
        """Probe a bind or the pooler from another thread, in an app context and the request's budget."""
        with self.app.app_context(), using(budget):
            if name == "pooler":
                databases = {engine.url.database for engine in db.engines.values()}
                return pooler.component(self.pooler, max(budget.left(), 0.001), databases, iso_now())
            return self.probe(name, key, budget)

    def probe(self, name: str, key: str | None, budget: Budget) -> dict[str, Any]:
        """Probe one database within ``budget``: its result, up or down, never an exception."""
        started, timestamp = time.perf_counter(), iso_now()
        with self.lock:
            last_full = self.full_facts.get(name)
            risks_at = self.risks.get(name, {}).get("at")
        risks_due = risks_at is None or time.monotonic() - risks_at >= self.app.config.get("DB_RISKS_EVERY_S", RISKS_EVERY_S)
        full = (
            risks_due or last_full is None or time.monotonic() - last_full[0] >= FULL_FACTS_EVERY_S
            or last_full[1].get("replica")
        )
        engine = db.engines[key]
        url = engine.url
        try:
            budget.check()
            facts = dialects.probe(key, budget.left(), full)
            if not full and not servers.same_answer(last_full[1].get("server"), facts.get("server")):
                full = True  # another server, or another role: learn all about it now
                facts = dialects.probe(key, max(budget.left(), 0.001), True)
        except SQLAlchemyError as error:
            elapsed = time.perf_counter() - started
            if isinstance(error, DeadlineExceeded) or budget.left() <= 0:
                message = f"No answer from the database within {budget.seconds:g}s"
                unanswered = result(key, name, "unhealthy", message, elapsed, timestamp, self.unanswered(name, url))
                return {**unanswered, "timed_out": True}
            cause = getattr(error, "orig", None) or error
            detail = scrub_secrets(str(cause).strip())
            log.warning("probe of %s failed: %s", name, detail)
            facts = self.unanswered(name, url)
            wrong = misconfiguration(error)
            if wrong is not None:
                variable = "DATABASE_URL" if key is None else f"DB_BIND_{key.upper()}"
                message = f"Database misconfigured: {wrong}; check {variable}"
                return result(key, name, "unhealthy", message, elapsed, timestamp, facts, error=detail, misconfigured=True)
            message = f"Database unreachable ({type(cause).__name__})"
            return result(key, name, "unhealthy", message, elapsed, timestamp, facts, error=detail)
        except Exception:
            log.exception("probe of %s failed unexpectedly", name)
            message = "Health probe failed unexpectedly"
            return result(key, name, "unhealthy", message, time.perf_counter() - started, timestamp, {})
        elapsed = time.perf_counter() - started
        if full:
            with self.lock:
                self.full_facts[name] = (time.monotonic(), dict(facts))
        else:
            facts = {**last_full[1], **facts, "server": {**last_full[1]["server"], **facts["server"]}}
        with self.lock:
            self.servers[name] = facts["server"]
        if risks_due:
            self._check_risks(name, key, budget.left())
        with self.lock:
            risks = self.risks.get(name)
        if risks and risks["checked_at"]:  # in the result, so workers that adopt it see them too
            facts["risks"] = {"checked_at": risks["checked_at"], "items": risks["items"]}
        pool = pool_facts(engine)
        migrations = self.migrations.get() if key is None else None
        local = tls.is_local(url)
        warnings = judge.component_warnings(
            facts, pool, self.app.config, migrations, risks and risks["items"], local=local
        )
        status, message = judge.component_verdict(facts["database_type"], warnings)
        return result(key, name, status, message, elapsed, timestamp, facts, warnings=warnings, pool=pool)

    def _check_risks(self, name: str, key: str | None, seconds: float) -> None:
        """Measure capacity risks in what is left of the probe's budget; keep the last ones if that fails."""
        if seconds < 0.05:
            return  # no time left in this probe: the next one tries
        checked_at = iso_now()
        try:
            items = dialects.risks(key, seconds, self.app.config)
        except (DeadlineExceeded, SQLAlchemyError) as error:
            log.warning("capacity risks of %s not measured: %s", name, type(error).__name__)
            with self.lock:
                self.risks.setdefault(name, {"checked_at": None, "items": []})["at"] = time.monotonic()
            return
        with self.lock:
            self.risks[name] = {
                "at": time.monotonic(), "checked_at": checked_at if items is not None else None, "items": items or [],
            }
        if items:
            metrics.record_risks(name, items)

    def unanswered(self, name: str, url: Any) -> dict[str, Any]:
        """Facts of a component that did not answer: its hosts, and the server that answered last."""
        with self.lock:
            last = self.servers.get(name)
        return {"server": servers.unanswered(url, last)}

    def judge_together(self, results: dict[str, dict[str, Any]]) -> None:
        """What needs several components at once: replica binds against the primary, a timeout against the pooler."""
        primary = results["primary"]
        for name, component in results.items():
            if name in ("primary", "pooler") or component["status"] == "unhealthy":
                continue
            with self.lock:
                if component.get("replica"):
                    self.seen_in_recovery.add(name)
                seen = name in self.seen_in_recovery
            attrs = db.engines[name].url.query.get("target_session_attrs")
            if judge.meant_as_replica(name, attrs, seen):
                extra = judge.replica_warnings(name, component, primary if primary["status"] != "unhealthy" else None)
                if extra:
                    component["warnings"] = [*component["warnings"], *extra]
                    component["status"], component["message"] = judge.component_verdict(component["database_type"], component["warnings"])
        if primary.pop("timed_out", False) and "pooler" in results:
            queued = judge.explain_timeout(results["pooler"])
            if queued:
                primary["message"] = f"{queued} (no answer within {self.app.config['DB_HEALTH_TIMEOUT']:g}s)"
        for component in results.values():
            component.pop("timed_out", None)


def result(
    key: str | None,
    name: str,
    status: str,
    message: str,
    elapsed: float,
    timestamp: str,
    facts: dict[str, Any],
    *,
    warnings: list[str] | None = None,
    pool: dict[str, Any] | None = None,
    error: str | None = None,
    misconfigured: bool = False,
) -> dict[str, Any]:
    """One component's result, the same shape up or down; ``error`` is the driver's text, for admins only.

    ``misconfigured``: the database refused our settings (not an outage: exit 3, never retried).
    """
    engine = db.engines[key] if name != "pooler" else None  # the pooler when it did not answer in time
    pool = pool if pool is not None else pool_facts(engine) if engine is not None else {}
    result = {
        "status": status,
        "database_type": facts.pop("database_type", engine.dialect.name if engine is not None else "pgbouncer"),
        "version": facts.pop("version", None),
        "timestamp": timestamp,
        "response_time_ms": round(elapsed * 1000, 2),
        "cached": False,
        "pool_status": pool,
        "message": message,
        "warnings": warnings or [],
        "tls": None,  # unknown until a connection is made
        **facts,
    }
    if status == "unhealthy":
        result["error"] = error
        result["misconfigured"] = misconfigured
    return result
