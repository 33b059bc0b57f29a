"""One probe in flight per instance: a worker that finds a sibling probing shares its result.

SPEC 5: concurrent requests share one in-flight probe. Within a worker the
monitor's Future does it; between the workers of an instance (sync workers serve
one request each) the worker that probes holds ``flock(LOCK_EX)`` on
``INSTANCE_PATH/health.flight`` until its result is published (shared.py). One
that finds the lock taken waits for it, polling (a blocking flock has no
timeout), then takes what was published meanwhile: a probe that was in flight
when it asked: that probe's own result, or the published one it found nothing
new against (the same verdict; timings up to shared.REWRITE_AFTER_S older). If
nothing was published (the sibling's probe failed to publish, or was overtaken)
it probes itself. It waits at most until three quarters of its budget are spent:
a sibling's probe started before the wait, so it has answered or timed out by
then unless it is stuck itself (stopped, say); then it probes with what is left,
and the request still ends within its budget.
"""
from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from typing import Any

from flask import Flask

from ..db.budget import Budget
from . import shared

FLIGHT_FILE = "health.flight"
FIRST_POLL_S = 0.0001  # a probe in flight usually lands within a few hundred microseconds
LAST_POLL_S = 0.005
WAIT_SHARE = 0.75  # of the budget, at most, spent waiting for a sibling

# path -> (pid, descriptor): each process opens its own (a descriptor inherited across a fork
# shares its lock with the parent's).
_descriptors: dict[str, tuple[int, int]] = {}

Snapshot = dict[str, Any]


def _descriptor(path: str) -> int:
    pid = os.getpid()
    held = _descriptors.get(path)
    if held is not None and held[0] == pid:
        return held[1]
    if held is not None:
        os.close(held[1])  # the parent's: closing our copy leaves its lock alone
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    _descriptors[path] = (pid, fd)
    return fd


def _take(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _wait_to_take(fd: int, until: float) -> bool:
    """Poll for the lock until ``until`` (perf_counter); True once it is ours."""
    pause = FIRST_POLL_S
    while time.perf_counter() < until:
        time.sleep(min(pause, max(until - time.perf_counter(), 0)))
        if _take(fd):
            return True
        pause = min(pause * 2, LAST_POLL_S)
    return False


def probe_once(app: Flask, budget: Budget, probe: Callable[[Budget], Snapshot]) -> tuple[Snapshot, float | None]:
    """``probe(budget)`` unless a sibling worker is probing: then its result once published.

    Returns the snapshot and, when it is a sibling's, its age in seconds (None: probed here).
    """
    fd = _descriptor(os.path.join(app.instance_path, FLIGHT_FILE))
    if not _take(fd):
        before = shared.stamp(app)
        if not _wait_to_take(fd, budget.started + budget.seconds * WAIT_SHARE):
            return probe(budget), None  # the sibling is stuck: on our own
        if shared.stamp(app) != before:
            found = shared.read_shared(app, float("inf"))
            if found is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
                return found
    try:
        return probe(budget), None
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
