"""The health of every database: probed, cached, shared and scheduled.

One ``HealthMonitor`` per app and process keeps the last result for
DB_HEALTH_CACHE_TTL seconds and lets concurrent callers share one in-flight
probe (single flight). Every result is published to the instance folder
(shared.py), and a worker whose own result is stale reuses its siblings' while
it is fresh, so an instance probes about once per TTL whatever its number of
workers. An optional daemon thread probes every DB_HEALTH_CHECK_INTERVAL
seconds, in the instance's probing worker only (fleet/leader.py). What the
answers mean is judge.py's job.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timezone
from typing import Any

from flask import Flask
from sqlalchemy.exc import SQLAlchemyError

from .. import metrics
from ..db import reconnect, tls
from ..db.budget import Budget, using
from ..db.classify import misconfiguration
from ..db.deadline import DeadlineExceeded
from ..db.facts import pool_facts
from ..db.urls import scrub_secrets
from ..extensions import db
from ..state import state
from . import dialects, judge, pooler, servers, shared
from .history import ProbeHistory
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


def iso_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def component_keys(app: Flask) -> dict[str, str | None]:
    """Component name -> Flask-SQLAlchemy bind key (None is the primary)."""
    return {"primary": None, **{name: name for name in app.config["DB_BINDS"]}}


class HealthMonitor:
    def __init__(self, app: Flask):
        self.app = app
        self.lock = threading.Lock()  # guards snapshot, snapshot_at, inflight, full_facts, thread_pid
        self.snapshot: dict[str, Any] | None = None
        self.snapshot_at = 0.0
        self.inflight: Future | None = None
        self.full_facts: dict[str, tuple[float, dict[str, Any]]] = {}
        self.risks: dict[str, dict[str, Any]] = {}  # component -> {"at", "checked_at", "items"}, as last measured here
        self.thread_pid: int | None = None
        self.thread: threading.Thread | None = None
        self.stopped = threading.Event()
        self.shares = True  # a serving worker shares its results with its instance; a CLI command does not
        self.history = ProbeHistory()
        self.migrations = MigrationState(app)
        self.servers: dict[str, dict[str, Any]] = {}  # component -> the server that last answered
        self.seen_in_recovery: set[str] = set()
        admin_url = app.config.get("DB_PGBOUNCER_ADMIN_URL")
        self.pooler = (
            pooler.PoolerConsole(admin_url, app.config["DB_HEALTH_TIMEOUT"], tls.libpq_parameters(admin_url, app.config))
            if admin_url
            else None
        )

    def health(self, force: bool = False) -> tuple[dict[str, Any], bool]:
        """The latest health and whether it was reused from the cache."""
        with self.lock:
            if not force and self._fresh():
                return self.snapshot, True
        if not force and self._adopt_shared():
            return self.snapshot, True
        with self.lock:
            future = self.inflight
            leader = future is None
            if leader:
                future = self.inflight = Future()
        if not leader:
            return future.result(timeout=self.app.config["DB_HEALTH_TIMEOUT"] + 5), False
        try:
            snapshot = self._check_all()
            future.set_result(snapshot)
            return snapshot, False
        except BaseException as error:
            future.set_exception(error)
            raise
        finally:
            with self.lock:
                self.inflight = None

    def cached(self) -> dict[str, Any] | None:
        """The last result of this instance if still within its TTL, without probing."""
        with self.lock:
            if self._fresh():
                return self.snapshot
        return self.snapshot if self._adopt_shared() else None

    def _adopt_shared(self) -> bool:
        """Take a sibling worker's result if it is fresher than ours and within the TTL."""
        found = shared.read_shared(self.app, self.app.config["DB_HEALTH_CACHE_TTL"]) if self.shares else None
        if found is None:
            return False
        snapshot, age = found
        with self.lock:
            if self.snapshot is not None and self.snapshot_at >= time.monotonic() - age:
                return self._fresh()
            self.snapshot, self.snapshot_at = snapshot, time.monotonic() - age
        return True

    def shared_age(self) -> float:
        """Seconds since any worker of this instance last probed (inf if unknown)."""
        found = shared.read_shared(self.app, float("inf"))
        return found[1] if found else float("inf")

    def _fresh(self) -> bool:
        ttl = self.app.config["DB_HEALTH_CACHE_TTL"]
        return self.snapshot is not None and time.monotonic() - self.snapshot_at < ttl

    def migration_state(self, force: bool = False) -> dict[str, Any]:
        return self.migrations.get(force)

    def _check_all(self) -> dict[str, Any]:
        """Probe the primary here and every bind (and the pooler) in parallel, then judge the whole.

        One budget of DB_HEALTH_TIMEOUT covers it all: connecting, the probes and
        the migration check, whatever the number of databases.
        """
        reconnect.apply_pending_reconnect(self.app)
        probed_at = time.time()
        keys = component_keys(self.app)
        timeout = self.app.config["DB_HEALTH_TIMEOUT"]
        budget = Budget(time.perf_counter(), timeout)
        binds = [name for name in keys if name != "primary"]
        others = binds + (["pooler"] if self.pooler else [])
        results: dict[str, dict[str, Any]] = {}
        executor = ThreadPoolExecutor(len(others), thread_name_prefix="probe") if others else None
        try:
            futures = (
                {name: executor.submit(self._probe_in_context, name, keys.get(name), budget) for name in others}
                if executor
                else {}
            )
            with using(budget):
                results["primary"] = self._probe_component("primary", None, budget)
            for name, future in futures.items():
                try:
                    results[name] = future.result(timeout=max(budget.left(), 0) + 0.2)
                except FutureTimeout:
                    message = "No answer within the health timeout"
                    results[name] = _result(keys.get(name), name, "unhealthy", message, timeout, iso_now(), {})
        finally:
            if executor:
                executor.shutdown(wait=False)
        self._judge_together(results)
        status, message = judge.overall(results)
        snapshot = {**results["primary"], "status": status, "message": message, "components": results}
        for name, component in results.items():
            metrics.record_probe(name, component["status"], component["response_time_ms"] / 1000, component["pool_status"] or {})
        self._remember(snapshot, probed_at)
        return snapshot

    def _judge_together(self, results: dict[str, dict[str, Any]]) -> None:
        """What needs several components at once: replica binds against the primary, a timeout against the pooler."""
        primary = results["primary"]
        for name, component in results.items():
            if name in ("primary", "pooler") or component["status"] == "unhealthy":
                continue
            if component.get("replica"):
                self.seen_in_recovery.add(name)
            attrs = db.engines[name].url.query.get("target_session_attrs")
            if judge.meant_as_replica(name, attrs, name in self.seen_in_recovery):
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

    def _probe_in_context(self, name: str, key: str | None, budget: Budget) -> dict[str, Any]:
        with self.app.app_context(), using(budget):
            if name == "pooler":
                databases = {engine.url.database for engine in db.engines.values()}
                return pooler.component(self.pooler, max(budget.left(), 0.001), databases, iso_now())
            return self._probe_component(name, key, budget)

    def _probe_component(self, name: str, key: str | None, budget: Budget) -> dict[str, Any]:
        started, timestamp = time.perf_counter(), iso_now()
        with self.lock:
            last_full = self.full_facts.get(name)
            risks_at = self.risks.get(name, {}).get("at")
        risks_due = risks_at is None or time.monotonic() - risks_at >= self.app.config.get("DB_RISKS_EVERY_S", RISKS_EVERY_S)
        full = (
            risks_due or last_full is None or time.monotonic() - last_full[0] >= FULL_FACTS_EVERY_S
            or last_full[1].get("replica")
        )
        url = db.engines[key].url
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
                unanswered = _result(key, name, "unhealthy", message, elapsed, timestamp, self._unanswered(name, url))
                return {**unanswered, "timed_out": True}
            cause = getattr(error, "orig", None) or error
            detail = scrub_secrets(str(cause).strip())
            log.warning("probe of %s failed: %s", name, detail)
            facts = self._unanswered(name, url)
            wrong = misconfiguration(error)
            if wrong is not None:
                variable = "DATABASE_URL" if key is None else f"DB_BIND_{key.upper()}"
                message = f"Database misconfigured: {wrong}; check {variable}"
                return _result(key, name, "unhealthy", message, elapsed, timestamp, facts, error=detail, misconfigured=True)
            message = f"Database unreachable ({type(cause).__name__})"
            return _result(key, name, "unhealthy", message, elapsed, timestamp, facts, error=detail)
        except Exception:
            log.exception("probe of %s failed unexpectedly", name)
            message = "Health probe failed unexpectedly"
            return _result(key, name, "unhealthy", message, time.perf_counter() - started, timestamp, {})
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
        pool = pool_facts(db.engines[key])
        migrations = self.migration_state() if key is None else None
        local = tls.is_local(db.engines[key].url)
        warnings = judge.component_warnings(
            facts, pool, self.app.config, migrations, risks and risks["items"], local=local
        )
        status, message = judge.component_verdict(facts["database_type"], warnings)
        return _result(key, name, status, message, elapsed, timestamp, facts, warnings=warnings, pool=pool)

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

    def with_lag_limit(self, snapshot: dict[str, Any], max_lag_s: float) -> dict[str, Any]:
        """The snapshot judged again with replica lag limited to ``max_lag_s`` (GET /health?max_lag_s=N)."""
        limits = {**self.app.config, "DB_REPLICA_MAX_LAG_S": max_lag_s}
        return judge.again(snapshot, limits, self.migration_state())

    def _unanswered(self, name: str, url: Any) -> dict[str, Any]:
        """Facts of a component that did not answer: its hosts, and the server that answered last."""
        with self.lock:
            last = self.servers.get(name)
        return {"server": servers.unanswered(url, last)}

    def _remember(self, snapshot: dict[str, Any], probed_at: float) -> None:
        with self.lock:
            self.snapshot, self.snapshot_at = snapshot, time.monotonic()
        self.history.record(snapshot)
        primary = snapshot["components"]["primary"]
        state(self.app).last_probe = {
            "at": snapshot["timestamp"],
            "status": snapshot["status"],
            "response_time_ms": primary["response_time_ms"],
        }
        if not self.shares:
            return
        try:
            shared.publish(self.app, snapshot, probed_at)
        except OSError as error:
            log.warning("cannot share the probe's result in the instance folder: %s", error)

    def report(self) -> dict[str, Any]:
        """The monitor section of /status."""
        return {
            "background_interval_s": self.app.config["DB_HEALTH_CHECK_INTERVAL"],
            "background_running": self.thread_pid == os.getpid(),
            **self.history.report(),
        }

    def start_background(self) -> None:
        """Start the background thread in this process, once; it probes only while this is the probing worker."""
        if self.thread_pid == os.getpid():
            return
        with self.lock:
            if self.thread_pid == os.getpid():
                return
            self.thread_pid = os.getpid()
        self.thread = threading.Thread(target=self._loop, name="db-health-monitor", daemon=True)
        self.thread.start()

    def stop(self, wait: float = 5.0) -> None:
        """Stop this process's background threads (the monitor's and the poller), waiting up to ``wait`` seconds."""
        self.stopped.set()
        current = state(self.app)
        current.wake.set()
        for thread in (self.thread, current.poller_thread):
            if thread is not None and thread.is_alive() and thread is not threading.current_thread():
                thread.join(wait)

    def _loop(self) -> None:
        interval = self.app.config["DB_HEALTH_CHECK_INTERVAL"]
        leader = state(self.app).leader
        while not self.stopped.wait(min(interval, 1.0)):
            try:
                if leader.holds() and self.shared_age() >= interval:
                    with self.app.app_context():
                        self.health(force=True)
            except Exception:
                log.exception("background health check failed")


def _result(
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


def monitor() -> HealthMonitor:
    return state().monitor
