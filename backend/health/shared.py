"""The last probe of an instance, shared by its workers through the instance folder.

Whichever worker probes publishes its result to ``INSTANCE_PATH/health.json``
under a lock; the others reuse it while it is younger than DB_HEALTH_CACHE_TTL
instead of probing themselves. Publishing also decides, once per instance,
what changed since the previous probe (a component's status, or anything a
registered detector finds, such as a change of server): the changes are
recorded as transitions and passed to the publish hooks (alerts), so two
workers never report one change twice.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import weakref
from collections.abc import Callable
from typing import Any

from flask import Flask

from ..fleet.folder import instance_file, locked_kept, read_json, write_json
from . import servers
from .transitions import record_transition

SHARED_FILE = "health.json"
STAMP_FILE = "health.stamp"
REWRITE_AFTER_S = 1.0  # an unchanged result is written again once the published one is this old
# What moves from one probe to the next without telling a sibling or a detector anything new:
# measurements (a risk over its threshold shows as a warning, which is compared). Each worker
# measures its own risks, at its own times: compared, two workers' alike results alternate as
# "new" and every forced probe rewrites the file.
VOLATILE = frozenset({"timestamp", "response_time_ms", "cached", "pool_status", "connections", "replication_lag_s",
                      "risks"})
log = logging.getLogger(__name__)

# A change: {"component", "from", "to", "message", "kind"}; kind is "status" or the detector's name.
Change = dict[str, Any]
# detector(component name, previous result or None, current result) -> a message, or None
Detector = Callable[[str, dict[str, Any] | None, dict[str, Any]], str | None]
# hook(app, previous document or None, new document, changes): may add its own state to the document
PublishHook = Callable[[Flask, dict[str, Any] | None, dict[str, Any], list[Change]], None]
PUBLISH_HOOKS: list[PublishHook] = []


def server_changed(name: str, old: dict[str, Any] | None, new: dict[str, Any]) -> str | None:
    """A change of the server that answers (a failover, a restart, a promotion), in servers.py's words."""
    return servers.detect_change(old, new)


# Changes other than a status, found when a result is published: recorded once
# per instance and notified at once (alerts). Add yours here rather than
# recording from a probe, which every worker runs.
DETECTORS: list[Detector] = [server_changed]


def _path(app: Flask) -> str:
    return instance_file(app.instance_path, SHARED_FILE)


_digests: weakref.WeakKeyDictionary[Flask, str] = weakref.WeakKeyDictionary()


def _databases(app: Flask) -> str:
    """What was probed: a result about other databases (a folder reused with new settings) is not shared.

    The URLs are set when the app is made, so their digest is taken once per app."""
    digest = _digests.get(app)
    if digest is None:
        urls = [app.config["SQLALCHEMY_DATABASE_URI"], *(bind["url"] for bind in app.config["SQLALCHEMY_BINDS"].values())]
        digest = _digests[app] = hashlib.sha256("\n".join(str(url) for url in urls).encode()).hexdigest()[:16]
    return digest


# The document this process last read or wrote, by the file's identity: a file unchanged since
# is not read and parsed again (under forced probes, most publications write nothing).
_last_seen: dict[str, tuple[tuple[int, int, int], Any]] = {}


def _identity(path: str) -> tuple[int, int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_ino, status.st_mtime_ns, status.st_size


def _read(app: Flask) -> dict[str, Any] | None:
    path = _path(app)
    identity = _identity(path)
    seen = _last_seen.get(path)
    if identity is not None and seen is not None and seen[0] == identity:
        document = seen[1]
    else:
        document = read_json(path)
        if identity is not None:
            _last_seen[path] = (identity, document)  # replaced meanwhile? Then its identity differs next time
    if isinstance(document, dict) and "snapshot" in document and document.get("databases") == _databases(app):
        return document
    return None


def _write(path: str, document: dict[str, Any]) -> None:
    text = write_json(path, document)
    os.utime(path, (document["probed_at"], document["probed_at"]))  # read_shared's age, without parsing
    identity = _identity(path)
    if identity is not None:
        _last_seen[path] = (identity, json.loads(text))  # as a reader would parse it


# The start of the newest probe the published file speaks for (the one it holds, or a later one
# found to say nothing new) is the mtime of a file of its own, so that stamping it leaves the
# result, and every worker's parsed copy of it, as they are. A probe that started before it is
# overtaken. The file is only ever made by _stamp, already stamped: no mtime of its means
# anything else (a lock file's would be when it was made).
def _stamp_path(app: Flask) -> str:
    return instance_file(app.instance_path, STAMP_FILE)


def _stamp(app: Flask, probed_at: float) -> None:
    path = _stamp_path(app)
    try:
        os.utime(path, (probed_at, probed_at))
    except FileNotFoundError:
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "w"):
            pass
        os.utime(temporary, (probed_at, probed_at))
        os.replace(temporary, path)


def stamp(app: Flask) -> float | None:
    """The start of the newest probe the published result speaks for, if any was stamped."""
    try:
        return os.stat(_stamp_path(app)).st_mtime
    except OSError:
        return None


def _newest_probe(app: Flask, previous: dict[str, Any] | None) -> float:
    if previous is None:
        return float("-inf")
    return max(previous["probed_at"], stamp(app) or float("-inf"))


def read_shared(app: Flask, max_age: float) -> tuple[dict[str, Any], float] | None:
    """The instance's last published snapshot and its age, if younger than ``max_age`` seconds."""
    if max_age <= 0:
        return None
    try:
        age = time.time() - os.stat(_path(app)).st_mtime
    except OSError:
        return None
    if age >= max_age:
        return None
    document = _read(app)
    if document is None:
        return None
    age = time.time() - document["probed_at"]
    return (document["snapshot"], age) if 0 <= age < max_age else None


def _changes(previous: dict[str, Any] | None, snapshot: dict[str, Any]) -> list[Change]:
    changes = []
    before = (previous or {}).get("snapshot", {}).get("components", {})
    for name, component in snapshot["components"].items():
        old = before.get(name)
        old_status = old["status"] if old else None
        if old_status != component["status"] and (old_status is not None or component["status"] != "healthy"):
            # starting up healthy is not a change; starting while a database is down is
            changes.append({"component": name, "from": old_status, "to": component["status"],
                            "message": component["message"], "kind": "status"})
        for detect in DETECTORS:
            message = detect(name, old, component)
            if message:
                changes.append({"component": name, "from": old_status, "to": component["status"],
                                "message": message, "kind": getattr(detect, "__name__", "detector")})
    return changes


# The published document last compared, and what of it is settled: the file, and so the parsed
# document, stays the same from one forced probe to the next.
_settled_seen: tuple[Any, dict[str, Any] | None] = (None, None)


def _settled(document: dict[str, Any]) -> dict[str, Any]:
    components = document["snapshot"]["components"]
    return {name: {key: value for key, value in component.items() if key not in VOLATILE} for name, component in components.items()}


def _settled_published(previous: dict[str, Any]) -> dict[str, Any]:
    """``_settled`` of the published document, worked out once per document read (never changed once read)."""
    global _settled_seen
    seen, settled = _settled_seen
    if seen is not previous or settled is None:
        settled = _settled(previous)
        _settled_seen = (previous, settled)
    return settled


def _nothing_new(app: Flask, previous: dict[str, Any] | None, document: dict[str, Any], changes: list[Change]) -> bool:
    """No change, every component as published but for its VOLATILE fields, the hooks' state as it
    was, and the published copy young enough for the siblings' cache.

    Writing the file (a new file renamed over the old) costs more than the probe
    itself; forced probes one after another would otherwise each pay it.
    """
    if previous is None or changes:
        return False
    own_state = {key: value for key, value in document.items() if key not in ("snapshot", "probed_at", "pid")}
    if any(previous.get(key) != value for key, value in own_state.items()) or _settled_published(previous) != _settled(document):
        return False
    fresh_for = min(REWRITE_AFTER_S, app.config["DB_HEALTH_CACHE_TTL"] / 2)
    return document["probed_at"] - previous["probed_at"] < fresh_for


def publish(app: Flask, snapshot: dict[str, Any], probed_at: float) -> list[Change]:
    """Share a probe's result with this instance's workers; record and return what changed.

    A result older than the one already published, or than a later one that said
    nothing new (a slow probe overtaken by a quicker one), is not published and
    changes nothing.
    """
    path = _path(app)
    with locked_kept(path + ".lock"):
        previous = _read(app)
        if _newest_probe(app, previous) > probed_at:
            return []
        changes = _changes(previous, snapshot)
        document = {"probed_at": probed_at, "pid": os.getpid(), "databases": _databases(app), "snapshot": snapshot}
        for hook in PUBLISH_HOOKS:
            try:
                hook(app, previous, document, changes)
            except Exception:
                log.exception("publish hook %s failed", getattr(hook, "__name__", hook))
        if not _nothing_new(app, previous, document, changes):
            _write(path, document)
        _stamp(app, probed_at)
    for change in changes:
        # A recovery is good news; a change of server (a failover) is worth a warning whatever the status.
        level = logging.INFO if change["to"] == "healthy" and change["kind"] == "status" else logging.WARNING
        log.log(level, "%s: %s -> %s (%s)", change["component"], change["from"], change["to"], change["message"])
        record_transition(change["component"], change["from"], change["to"], change["message"], app=app)
    return changes
