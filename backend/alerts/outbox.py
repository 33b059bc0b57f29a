"""Notifications decided by any worker, sent by the instance's probing worker.

The decision is made once per instance, when a probe's result is published
(health/shared.py); the notification is appended to ``INSTANCE_PATH/alerts.outbox``
and the probing worker's poller takes it from there within a second. So two
workers never both send, and a worker that exits after deciding loses nothing.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

from ..fleet.folder import locked

OUTBOX = "alerts.outbox"
log = logging.getLogger(__name__)


def _path(instance_path: str) -> str:
    return os.path.join(instance_path, OUTBOX)


def put(instance_path: str, body: dict[str, Any]) -> None:
    with locked(_path(instance_path) + ".lock"):
        with open(_path(instance_path), "a") as handle:
            handle.write(json.dumps(body) + "\n")


def take(instance_path: str) -> list[dict[str, Any]]:
    """Every waiting notification, removed from the outbox."""
    path = _path(instance_path)
    try:
        if os.path.getsize(path) == 0:
            return []
    except OSError:
        return []
    with locked(path + ".lock"):
        with open(path) as handle:
            lines = handle.read().splitlines()
        with open(path, "w"):
            pass
    bodies = []
    for line in lines:
        try:
            bodies.append(json.loads(line))
        except ValueError:
            log.warning("dropping an unreadable notification from the outbox")
    return bodies
