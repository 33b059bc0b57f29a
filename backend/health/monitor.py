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
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from flask import Flask

from .. import metrics
from ..db import reconnect
from ..db.budget import Budget, using
from ..state import state
from . import flight, judge, shared
from .component import ComponentProber, iso_now, result
from .history import ProbeHistory
from .migrations import MigrationState
from .schedule import Background

log = logging.getLogger(__name__)


def component_keys(app: Flask) -> dict[str, str | None]:
    """Component name -> Flask-SQLAlchemy bind key (None is the primary)."""
    return {"primary": None, **{name: name for name in app.config["DB_BINDS"]}}


class HealthMonitor:
    def __init__(self, app: Flask):
        self.app = app
        self.lock = threading.Lock()  # guards snapshot, snapshot_at, inflight
        self.snapshot: dict[str, Any] | None = None
        self.snapshot_at = 0.0
        self.inflight: Future | None = None
        self.inflight_started = 0.0  # time.time() when the probe in flight began
        self.shares = True  # a serving worker shares its results with its instance; a CLI command does not
        self.history = ProbeHistory()
        self.migrations = MigrationState(app)
        self.components = ComponentProber(app, self.migrations)
        self.background = Background(self)

    def health(self, force: bool = False, since: float | None = None) -> tuple[dict[str, Any], bool]:
        """The latest health and whether it was reused from the cache.

        ``since`` (time.time(), with ``force``): only a probe that started then or later will do,
        not one already in flight (/reconnect: a probe on the connections made after it).
        """
        with self.lock:
            if not force and self._fresh():
                return self.snapshot, True
        if not force and self._adopt_shared():
            return self.snapshot, True
        while True:
            with self.lock:
                future = self.inflight
                leader = future is None
                if leader:
                    future, self.inflight_started = Future(), time.time()
                    self.inflight = future
                too_early = not leader and since is not None and self.inflight_started < since
            if leader:
                break
            snapshot = future.result(timeout=self.app.config["DB_HEALTH_TIMEOUT"] + 5)
            if not too_early:
                return snapshot, False
        try:
            budget = Budget(time.perf_counter(), self.app.config["DB_HEALTH_TIMEOUT"])
            if self.shares:
                snapshot, age = flight.probe_once(self.app, budget, self._check_all, since)
                if age is not None and not self._adopt(snapshot, age):
                    snapshot = self.snapshot  # our own result is newer than the sibling's published one
            else:
                snapshot, age = self._check_all(budget), None
            future.set_result(snapshot)
        except BaseException as error:
            future.set_exception(error)
            raise
        else:
            if age is None:  # probed here: counted once whoever waited has it, before a newer probe can be
                self._count(snapshot)
        finally:
            with self.lock:
                self.inflight = None
        return snapshot, False

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
        if self._adopt(*found):
            return True
        with self.lock:
            return self._fresh()

    def _adopt(self, snapshot: dict[str, Any], age: float) -> bool:
        """Keep a sibling's result unless ours is newer; whether it was kept."""
        with self.lock:
            if self.snapshot is not None and self.snapshot_at >= time.monotonic() - age:
                return False
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

    def _check_all(self, budget: Budget) -> dict[str, Any]:
        """Probe the primary here and every bind (and the pooler) in parallel, then judge the whole.

        One budget (DB_HEALTH_TIMEOUT, or what a wait for a sibling left of it)
        covers it all: connecting, the probes and the migration check, whatever the
        number of databases.
        """
        reconnect.apply_pending_reconnect(self.app)
        probed_at = time.time()
        keys = component_keys(self.app)
        timeout = budget.seconds
        binds = [name for name in keys if name != "primary"]
        others = binds + (["pooler"] if self.components.pooler else [])
        results: dict[str, dict[str, Any]] = {}
        executor = ThreadPoolExecutor(len(others), thread_name_prefix="probe") if others else None
        try:
            futures = (
                {name: executor.submit(self.components.probe_in_context, name, keys.get(name), budget) for name in others}
                if executor
                else {}
            )
            with using(budget):
                results["primary"] = self.components.probe("primary", None, budget)
            for name, future in futures.items():
                try:
                    results[name] = future.result(timeout=max(budget.left(), 0) + 0.2)
                except FutureTimeout:
                    message = "No answer within the health timeout"
                    results[name] = result(keys.get(name), name, "unhealthy", message, timeout, iso_now(), {})
        finally:
            if executor:
                executor.shutdown(wait=False)
        self.components.judge_together(results)
        status, message = judge.overall(results)
        snapshot = {**results["primary"], "status": status, "message": message, "components": results}
        self._remember(snapshot, probed_at)
        return snapshot

    def with_lag_limit(self, snapshot: dict[str, Any], max_lag_s: float) -> dict[str, Any]:
        """The snapshot judged again with replica lag limited to ``max_lag_s`` (GET /health?max_lag_s=N)."""
        limits = {**self.app.config, "DB_REPLICA_MAX_LAG_S": max_lag_s}
        return judge.again(snapshot, limits, self.migration_state())

    def _remember(self, snapshot: dict[str, Any], probed_at: float) -> None:
        with self.lock:
            self.snapshot, self.snapshot_at = snapshot, time.monotonic()
        if not self.shares:
            return
        try:
            shared.publish(self.app, snapshot, probed_at)
        except OSError as error:
            log.warning("cannot share the probe's result in the instance folder: %s", error)

    def _count(self, snapshot: dict[str, Any]) -> None:
        """This worker's own record of a probe it ran: history, last probe and metrics."""
        self.history.record(snapshot)
        primary = snapshot["components"]["primary"]
        state(self.app).last_probe = {
            "at": snapshot["timestamp"],
            "status": snapshot["status"],
            "response_time_ms": primary["response_time_ms"],
        }
        for name, component in snapshot["components"].items():
            metrics.record_probe(name, component["status"], component["response_time_ms"] / 1000, component["pool_status"] or {})

    def report(self) -> dict[str, Any]:
        """The monitor section of /status."""
        return {
            "background_interval_s": self.app.config["DB_HEALTH_CHECK_INTERVAL"],
            "background_running": self.background.running(),
            **self.history.report(),
        }

    def start_background(self) -> None:
        """Start the background probe in this process, once."""
        self.background.start()

    def stop(self, wait: float = 5.0) -> None:
        """Stop this process's background threads, waiting up to ``wait`` seconds."""
        self.background.stop(wait)



def monitor() -> HealthMonitor:
    return state().monitor
