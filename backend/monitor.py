"""The health of every database: probed, judged, cached, shared, and remembered.

One ``HealthMonitor`` per app and process keeps the last result for
DB_HEALTH_CACHE_TTL seconds, lets concurrent callers share one in-flight probe
(single flight), and remembers recent latencies and state transitions for
/status. An optional daemon thread, started in the serving process on its first
request (so never in a gunicorn master before fork), probes every
DB_HEALTH_CHECK_INTERVAL seconds and applies pool disposals asked for by
/reconnect in other workers.
"""
from __future__ import annotations

import logging
import os
import statistics
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timezone
from typing import Any

from alembic.script import ScriptDirectory
from flask import Flask, current_app
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from . import bounded, checks, metrics, pools
from .database import pool_facts, scrub_secrets
from .deadline import DeadlineExceeded
from .extensions import db

log = logging.getLogger(__name__)

MIGRATIONS_RECHECK_S = 30.0
# Connections in use and server details are counted at most this often (and on
# every probe of a replica, for its lag); the probes in between are one cheap
# query, and report the last full facts with their own on top.
FULL_FACTS_EVERY_S = 10.0
HISTORY = 120
TRANSITIONS = 20
LABELS = {"postgresql": "PostgreSQL", "mysql": "MySQL", "mariadb": "MariaDB", "tidb": "TiDB", "sqlite": "SQLite"}


def iso_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def component_keys(app: Flask) -> dict[str, str | None]:
    """Component name -> Flask-SQLAlchemy bind key (None is the primary)."""
    return {"primary": None, **{name: name for name in app.config["DB_BINDS"]}}


class HealthMonitor:
    def __init__(self, app: Flask):
        self.app = app
        self.lock = threading.Lock()
        self.snapshot: dict[str, Any] | None = None
        self.snapshot_at = 0.0
        self.inflight: Future | None = None
        self.latencies: deque[float] = deque(maxlen=HISTORY)
        self.transitions: deque[dict[str, Any]] = deque(maxlen=TRANSITIONS)
        self.checks_total = 0
        self.failures_total = 0
        self.consecutive_failures = 0
        self.last_success: str | None = None
        self.last_failure: str | None = None
        self.last_error: str | None = None
        self.migrations: dict[str, Any] | None = None
        self.migrations_at = -MIGRATIONS_RECHECK_S
        self.head: str | None = None
        self.full_facts: dict[str, tuple[float, dict[str, Any]]] = {}
        self.thread_pid: int | None = None
        self.stopped = threading.Event()

    # -- the cache and single flight ------------------------------------------------

    def health(self, force: bool = False) -> tuple[dict[str, Any], bool]:
        """The latest health and whether it was reused from the cache."""
        ttl = self.app.config["DB_HEALTH_CACHE_TTL"]
        with self.lock:
            if not force and self.snapshot is not None and time.monotonic() - self.snapshot_at < ttl:
                return self.snapshot, True
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
        """The last result if still within its TTL, without probing."""
        with self.lock:
            if self.snapshot is not None and time.monotonic() - self.snapshot_at < self.app.config["DB_HEALTH_CACHE_TTL"]:
                return self.snapshot
            return None

    # -- probing -------------------------------------------------------------------------

    def _check_all(self) -> dict[str, Any]:
        pools.apply_pending_reconnect(self.app)
        keys = component_keys(self.app)
        timeout = self.app.config["DB_HEALTH_TIMEOUT"]
        binds = [name for name in keys if name != "primary"]
        results: dict[str, dict[str, Any]] = {}
        executor = ThreadPoolExecutor(len(binds), thread_name_prefix="probe") if binds else None
        try:
            futures = {name: executor.submit(self._probe_in_context, name, keys[name]) for name in binds} if executor else {}
            results["primary"] = self._probe_component("primary", None)
            for name, future in futures.items():
                try:
                    results[name] = future.result(timeout=timeout + 1)
                except FutureTimeout:
                    results[name] = self._failed(name, keys[name], "No answer within the health timeout", None, timeout, iso_now())
        finally:
            if executor:
                executor.shutdown(wait=False)
        snapshot = self._summarise(results)
        self._remember(snapshot)
        return snapshot

    def _probe_in_context(self, name: str, key: str | None) -> dict[str, Any]:
        with self.app.app_context():
            return self._probe_component(name, key)

    def _probe_component(self, name: str, key: str | None) -> dict[str, Any]:
        timeout = self.app.config["DB_HEALTH_TIMEOUT"]
        started = time.perf_counter()
        timestamp = iso_now()
        last_full = self.full_facts.get(name)
        full = last_full is None or time.monotonic() - last_full[0] >= FULL_FACTS_EVERY_S or last_full[1].get("replica")
        try:
            facts = checks.probe(key, timeout, full)
        except DeadlineExceeded:
            elapsed = time.perf_counter() - started
            return self._failed(name, key, f"No answer from the database within {timeout:g}s", None, elapsed, timestamp)
        except SQLAlchemyError as error:
            cause = getattr(error, "orig", None) or error
            detail = scrub_secrets(str(cause).strip())
            log.warning("probe of %s failed: %s", name, detail)
            message = f"Database unreachable ({type(cause).__name__})"
            return self._failed(name, key, message, detail, time.perf_counter() - started, timestamp)
        except Exception:
            log.exception("probe of %s failed unexpectedly", name)
            message = "Health probe failed unexpectedly"
            return self._failed(name, key, message, None, time.perf_counter() - started, timestamp)
        elapsed = time.perf_counter() - started
        if full:
            self.full_facts[name] = (time.monotonic(), dict(facts))
        else:
            facts = {**last_full[1], **facts}
        engine = db.engines[key]
        pool = pool_facts(engine)
        warnings = self._warnings(name, key, facts, pool)
        label = LABELS.get(facts["database_type"], facts["database_type"])
        result = {
            "status": "degraded" if warnings else "healthy",
            "database_type": facts.pop("database_type"),
            "version": facts.pop("version"),
            "timestamp": timestamp,
            "response_time_ms": round(elapsed * 1000, 2),
            "cached": False,
            "pool_status": pool,
            "message": f"{label} connection healthy" if not warnings else f"{label} needs attention: " + "; ".join(warnings),
            "warnings": warnings,
            **facts,
        }
        metrics.record_probe(name, result["status"], elapsed, pool)
        return result

    def _failed(
        self, name: str, key: str | None, message: str, detail: str | None, elapsed: float, timestamp: str
    ) -> dict[str, Any]:
        """An unhealthy result; ``detail`` is the driver's text, shown to admins only."""
        engine = db.engines[key]
        pool = pool_facts(engine)
        metrics.record_probe(name, "unhealthy", elapsed, pool)
        return {
            "status": "unhealthy",
            "database_type": engine.dialect.name,
            "version": None,
            "timestamp": timestamp,
            "response_time_ms": round(elapsed * 1000, 2),
            "cached": False,
            "pool_status": pool,
            "message": message,
            "warnings": [],
            "error": detail,
        }

    def _warnings(self, name: str, key: str | None, facts: dict[str, Any], pool: dict[str, Any]) -> list[str]:
        config = self.app.config
        warnings = []
        connections = facts.get("connections") or {}
        if connections.get("percent") is not None and connections["percent"] >= config["DB_CONNECTIONS_WARN_PERCENT"]:
            warnings.append(f"{connections['percent']}% of max_connections in use")
        if pool.get("utilization_percent") is not None and pool["utilization_percent"] >= config["DB_POOL_WARN_PERCENT"]:
            warnings.append(f"connection pool {pool['utilization_percent']}% in use")
        lag = facts.get("replication_lag_s")
        if lag is not None and lag > config["DB_REPLICA_MAX_LAG_S"]:
            warnings.append(f"replica {lag:g}s behind its primary")
        if key is None:
            if facts.get("read_only"):
                warnings.append("the primary database is read-only")
            migrations = self.migration_state()
            if migrations["up_to_date"] is False:
                warnings.append(f"migrations pending (database at {migrations['current']}, code at {migrations['head']})")
        return warnings

    # -- migrations ----------------------------------------------------------------------

    def migration_state(self, force: bool = False) -> dict[str, Any]:
        """Alembic's current and head revisions, rechecked at most every 30 s."""
        now = time.monotonic()
        if not force and self.migrations is not None and now - self.migrations_at < MIGRATIONS_RECHECK_S:
            return self.migrations
        if self.head is None:
            config = current_app.extensions["migrate"].migrate.get_config()
            self.head = ScriptDirectory.from_config(config).get_current_head()
        try:
            current = bounded.run_bounded(None, self.app.config["DB_HEALTH_TIMEOUT"], _current_revision)
        except (SQLAlchemyError, DeadlineExceeded):
            return self.migrations or {"current": None, "head": self.head, "up_to_date": None}
        self.migrations = {"current": current, "head": self.head, "up_to_date": current == self.head}
        self.migrations_at = now
        return self.migrations

    # -- memory ----------------------------------------------------------------------------

    def _summarise(self, components: dict[str, dict[str, Any]]) -> dict[str, Any]:
        primary = components["primary"]
        others_ok = all(c["status"] == "healthy" for c in components.values())
        if primary["status"] == "unhealthy":
            status = "unhealthy"
        elif others_ok:
            status = "healthy"
        else:
            status = "degraded"
        message = primary["message"]
        failing = [name for name, c in components.items() if name != "primary" and c["status"] != "healthy"]
        if failing and primary["status"] != "unhealthy":
            message += "; needs attention: " + ", ".join(failing)
        return {**primary, "status": status, "message": message, "components": components}

    def _remember(self, snapshot: dict[str, Any]) -> None:
        primary = snapshot["components"]["primary"]
        with self.lock:
            previous = self.snapshot["status"] if self.snapshot else None
            self.snapshot = snapshot
            self.snapshot_at = time.monotonic()
            self.checks_total += 1
            self.latencies.append(primary["response_time_ms"])
            if primary["status"] == "unhealthy":
                self.failures_total += 1
                self.consecutive_failures += 1
                self.last_failure = snapshot["timestamp"]
                self.last_error = primary["message"]
            else:
                self.consecutive_failures = 0
                self.last_success = snapshot["timestamp"]
            if previous != snapshot["status"]:
                self.transitions.append({"from": previous, "to": snapshot["status"], "at": snapshot["timestamp"]})
        if previous is not None and previous != snapshot["status"]:
            level = logging.INFO if snapshot["status"] == "healthy" else logging.WARNING
            log.log(level, "database health changed: %s -> %s (%s)", previous, snapshot["status"], snapshot["message"])

    def report(self) -> dict[str, Any]:
        """The monitor section of /status."""
        with self.lock:
            latencies = sorted(self.latencies)
            return {
                "background_interval_s": self.app.config["DB_HEALTH_CHECK_INTERVAL"],
                "background_running": self.thread_pid == os.getpid(),
                "checks_total": self.checks_total,
                "failures_total": self.failures_total,
                "consecutive_failures": self.consecutive_failures,
                "last_success": self.last_success,
                "last_failure": self.last_failure,
                "last_error": self.last_error,
                "latency_ms": {
                    "samples": len(latencies),
                    "p50": round(statistics.median(latencies), 2) if latencies else None,
                    "p95": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 2) if latencies else None,
                    "max": round(latencies[-1], 2) if latencies else None,
                },
                "transitions": list(self.transitions),
            }

    # -- the background thread -------------------------------------------------------------

    def start_background(self) -> None:
        """Start the probing thread in this process, once."""
        if self.thread_pid == os.getpid():
            return
        with self.lock:
            if self.thread_pid == os.getpid():
                return
            self.thread_pid = os.getpid()
        threading.Thread(target=self._loop, name="db-health-monitor", daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()

    def _loop(self) -> None:
        interval = self.app.config["DB_HEALTH_CHECK_INTERVAL"]
        while not self.stopped.wait(pools.GENERATION_POLL_S):
            try:
                with self.app.app_context():
                    pools.apply_pending_reconnect(self.app)
                    if interval and time.monotonic() - self.snapshot_at >= interval:
                        self.health(force=True)
            except Exception:
                log.exception("background health check failed")


def _current_revision(connection) -> str | None:
    try:
        return connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    except DBAPIError:
        if connection.invalidated:
            raise
        return None


def monitor() -> HealthMonitor:
    return current_app.extensions["dbhealth"]["monitor"]
