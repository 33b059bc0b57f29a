"""One probe in flight per instance: a worker that finds a sibling probing shares its result.

SPEC 5: concurrent requests share one in-flight probe. Within a worker the
monitor's Future does it; between the workers of an instance (sync workers serve
one request each) the worker that probes holds ``flock(LOCK_EX)`` on
``INSTANCE_PATH/health.flight``, stamped with the time it took it, until its
result is published (shared.py). A worker that finds the lock taken waits for it,
polling (a blocking flock has no timeout), then answers with what was published
if a probe that started no earlier than the sibling's (and than ``since``, for a
caller such as /reconnect that must see a probe of its own time) produced or
confirmed it: the sibling's result, or the published one it found nothing new
against (the same verdict; timings up to shared.REWRITE_AFTER_S older).
Otherwise (the sibling failed to publish, or died) it probes itself. A holder whose
probe has published already is a waiter reading that result: a request that finds it
waits for the lock and then takes no result older than itself.

A sibling has answered or timed out by its own start + DB_HEALTH_TIMEOUT; a
waiter gives it that and a little more, unless it is stuck (stopped, say), and
then probes with what is left of its request's budget (DB_HEALTH_TIMEOUT + 0.5 s
from its start, SPEC 7). Without the folder (no such file, a full descriptor
table) each worker simply probes on its own.
"""
from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from flask import Flask

from ..db.budget import Budget
from ..fleet.folder import instance_file, kept_descriptor
from . import shared

FLIGHT_FILE = "health.flight"
# A probe takes well under a millisecond, and a sync worker waiting for its sibling's is idle
# until it looks: it looks every POLL_S while the probe is likely to land, then less and
# less often (a frozen server holds a probe for DB_HEALTH_TIMEOUT). Polls that grew from
# 0.1 to 5 ms at once cost forced /health with two sync workers 3-12% of its answers a second;
# looking every 50 us rather than 200 (a sleep overshoots by the kernel's 50 us timer slack)
# answers as fast as a blocking lock would, about 3% more answers a second.
POLL_S = 0.00005
OFTEN_FOR_S = 0.005
LAST_POLL_S = 0.005
LAND_GRACE_S = 0.1  # past a sibling's deadline, for it to publish
ANSWER_WITHIN_S = 0.45  # a waiter's request ends within DB_HEALTH_TIMEOUT + this
log = logging.getLogger(__name__)

_warned_pid = 0

Snapshot = dict[str, Any]


def _take(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _wait_to_take(fd: int, until: float) -> bool:
    """Poll for the lock until ``until`` (perf_counter); True once it is ours."""
    often_until = time.perf_counter() + OFTEN_FOR_S
    pause = POLL_S
    while (now := time.perf_counter()) < until:
        time.sleep(min(pause, until - now))
        if _take(fd):
            return True
        if now >= often_until:
            pause = min(pause * 2, LAST_POLL_S)
    return False


def _lead(fd: int, budget: Budget, probe: Callable[[Budget], Snapshot]) -> tuple[Snapshot, None]:
    """Probe holding the flight (taken by the caller), stamped with when this probe began."""
    try:
        now = time.time()
        os.utime(fd, (now, now))
        return probe(budget), None
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def probe_once(
    app: Flask, budget: Budget, probe: Callable[[Budget], Snapshot], since: float | None = None
) -> tuple[Snapshot, float | None]:
    """``probe(budget)`` unless a sibling worker is probing: then its result once published.

    Returns the snapshot and, when it is a sibling's, its age in seconds (None: probed here).
    ``since`` (time.time()): take no result of a probe that started before it.
    """
    try:
        fd = kept_descriptor(instance_file(app.instance_path, FLIGHT_FILE))
    except OSError as error:
        _warn_once(error)
        return probe(budget), None
    if _take(fd):
        return _lead(fd, budget, probe)

    arrived, arrived_at = time.perf_counter(), time.time()
    try:
        sibling_started = os.fstat(fd).st_mtime
    except OSError:
        sibling_started = arrived_at
    # A holder whose probe has published (stamped after it took the flight) is a waiter reading that
    # result, not a probe in flight: what was complete before this request arrived is no answer to it.
    # How long to wait still follows the flight's stamp: a stuck holder is given up on as before.
    newest = shared.stamp(app)
    wanted_since = arrived_at if newest is not None and newest > sibling_started else sibling_started
    seconds = budget.seconds
    give_up = arrived + min(sibling_started - arrived_at + seconds + LAND_GRACE_S, seconds + 2 * LAND_GRACE_S)

    def what_is_left() -> Budget:
        """The rest of the request's budget, for a probe of our own: never more than one probe's."""
        return Budget(time.perf_counter(), min(seconds, max(arrived + seconds + ANSWER_WITHIN_S - time.perf_counter(), 0.01)))

    if not _wait_to_take(fd, give_up):
        return probe(what_is_left()), None  # the sibling is stuck: on our own, without the flight
    try:
        found = _published_since(app, max(wanted_since, since or float("-inf")))
    except BaseException:
        fcntl.flock(fd, fcntl.LOCK_UN)
        raise
    if found is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return found
    return _lead(fd, what_is_left(), probe)  # nothing new was published: we hold the flight, we probe


def _published_since(app: Flask, started: float) -> tuple[Snapshot, float] | None:
    """The published result and its age, if a probe that began at ``started`` or later produced or confirmed it."""
    newest = shared.stamp(app)
    if newest is None or newest < started:
        return None
    return shared.read_shared(app, float("inf"))


def _warn_once(error: OSError) -> None:
    global _warned_pid
    if _warned_pid != os.getpid():
        _warned_pid = os.getpid()
        log.warning("no shared probe flight in the instance folder, each worker probes on its own: %s", error)
