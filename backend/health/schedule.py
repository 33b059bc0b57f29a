"""The background probe: a daemon thread per serving process that probes every
DB_HEALTH_CHECK_INTERVAL seconds, in the instance's probing worker only
(fleet/leader.py), so the database sees one background probe per interval per
instance. Started on a process's first request, never in a gunicorn master.
"""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from ..process import ProcessThread
from ..state import state

if TYPE_CHECKING:
    from .monitor import HealthMonitor

log = logging.getLogger(__name__)


class Background:
    def __init__(self, monitor: HealthMonitor):
        self.monitor = monitor
        self.app = monitor.app
        self.thread = ProcessThread("db-health-monitor")
        self.stopped = threading.Event()

    def running(self) -> bool:
        """Whether this process runs the thread (a forked child does not, until it starts its own)."""
        return self.thread.running()

    def start(self) -> None:
        """Start the background thread in this process, once; it probes only while this is the probing worker."""
        self.thread.start(self._loop)

    def stop(self, wait: float = 5.0) -> None:
        """Stop this process's background threads (the monitor's and the poller), waiting up to ``wait`` seconds."""
        self.stopped.set()
        current = state(self.app)
        current.wake.set()
        for thread in (self.thread, current.poller):
            thread.join(wait)

    def _loop(self) -> None:
        interval = self.app.config["DB_HEALTH_CHECK_INTERVAL"]
        leader = state(self.app).leader
        while not self.stopped.wait(min(interval, 1.0)):
            try:
                if leader.holds() and self.monitor.shared_age() >= interval:
                    with self.app.app_context():
                        self.monitor.health(force=True)
            except Exception:
                log.exception("background health check failed")
