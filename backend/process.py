"""This process's own, not its parent's: when it started serving, and its background threads.

A gunicorn master imports the package before it forks (gunicorn.conf.py
on_starting), so a time taken at import would be the master's in every worker.
The clock restarts in every forked child. A forked child inherits the objects
that name its parent's threads but none of the threads: it starts its own.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

_started = time.time()


def _restart() -> None:
    global _started
    _started = time.time()


os.register_at_fork(after_in_child=_restart)


def started() -> float:
    """Seconds since the epoch at which this process started (or was forked)."""
    return _started


def started_iso() -> str:
    return datetime.fromtimestamp(_started, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class ProcessThread:
    """A daemon thread that each process starts once (a forked child starts its own)."""

    def __init__(self, name: str):
        self.name = name
        self.lock = threading.Lock()
        self.pid: int | None = None
        self.thread: threading.Thread | None = None

    def running(self) -> bool:
        """Whether this process has started the thread."""
        return self.pid == os.getpid()

    def start(self, target: Callable[..., object], *args: object) -> bool:
        """Run ``target(*args)`` in the thread unless this process already has; True if this call did."""
        if self.pid == os.getpid():
            return False
        with self.lock:
            if self.pid == os.getpid():
                return False
            self.pid = os.getpid()
        self.thread = threading.Thread(target=target, args=args, name=self.name, daemon=True)
        self.thread.start()
        return True

    def join(self, wait: float) -> None:
        """Wait up to ``wait`` seconds for the thread to end (never from the thread itself)."""
        thread = self.thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(wait)
