"""When this process started serving: its own start, not its parent's.

A gunicorn master imports the package before it forks (LOG_FORMAT=json needs its
log formatter), so a time taken at import would be the master's in every worker.
The clock restarts in every forked child.
"""
from __future__ import annotations

import os
import time
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
