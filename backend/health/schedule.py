"""The background probe: a daemon thread per serving process that probes every
DB_HEALTH_CHECK_INTERVAL seconds, in the instance's probing worker only
(fleet/leader.py), so the database sees one background probe per interval per
instance. Started on a process's first request, never in a gunicorn master.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

from ..state import state

if TYPE_CHECKING:
    from .monitor import HealthMonitor

log = logging.getLogger(__name__)


class Background:
    def __init__(self, monitor: HealthMonitor):
        self.monitor = monitor
        self.app = monitor.app
        self.lock = threading.Lock()
        self.thread_pid: int | None = None
        self.thread: threading.Thread | None = None
        self.stopped = threading.Event()

    def running(self) -> bool:
        """Whether this process runs the thread (a forked child does not, until it starts its own)."""
        return self.thread_pid == os.getpid()

    def start(self) -> None:
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
                if leader.holds() and self.monitor.shared_age() >= interval:
                    with self.app.app_context():
                        self.monitor.health(force=True)
            except Exception:
                log.exception("background health check failed")
