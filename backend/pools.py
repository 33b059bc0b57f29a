"""Dispose connection pools in every worker process of this server.

``/reconnect`` bumps a generation number kept in a small file in the instance
folder. Every process compares that file's modification time (one ``stat``)
before it serves a request, and its monitor thread does the same every second,
so each worker throws its pools away before its next database use, whichever
worker took the request and whatever the worker class (or ``flask run``).
"""
from __future__ import annotations

import fcntl
import os

import sqlalchemy as sa
from flask import Flask

from .extensions import db

GENERATION_FILE = "pool-generation"
GENERATION_POLL_S = 1.0


def _path(app: Flask) -> str:
    return os.path.join(app.instance_path, GENERATION_FILE)


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return 0


def read_generation(app: Flask) -> int:
    try:
        with open(_path(app)) as handle:
            return int(handle.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def bump_generation(app: Flask) -> int:
    """Increase the generation under a file lock; every process sees it within a second."""
    os.makedirs(app.instance_path, exist_ok=True)
    with open(_path(app) + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        generation = read_generation(app) + 1
        temporary = f"{_path(app)}.{os.getpid()}"
        with open(temporary, "w") as handle:
            handle.write(str(generation))
        os.replace(temporary, _path(app))
    state = app.extensions["dbhealth"]
    state["generation"], state["generation_mtime"] = generation, _mtime(_path(app))
    return generation


def dispose_pools(app: Flask) -> int:
    """Close this process's pooled and probe connections; returns how many idle ones were closed."""
    disposed = 0
    for probe_connection in list(app.extensions["dbhealth"]["probe_connections"].values()):
        disposed += probe_connection.close()
    engines = {*db.engines.values(), *app.extensions["dbhealth"]["side_engines"].values()}
    for engine in engines:
        if isinstance(engine.pool, sa.pool.StaticPool):
            continue  # an in-memory SQLite database lives only in its one connection
        if isinstance(engine.pool, sa.pool.QueuePool):
            disposed += engine.pool.checkedin()
        engine.dispose()
    return disposed


def apply_pending_reconnect(app: Flask) -> bool:
    """Dispose this process's pools if another process bumped the generation."""
    state = app.extensions["dbhealth"]
    mtime = _mtime(_path(app))
    if mtime == state["generation_mtime"]:
        return False
    state["generation_mtime"] = mtime
    generation = read_generation(app)
    if generation == state["generation"]:
        return False
    state["generation"] = generation
    dispose_pools(app)
    return True


def init_app(app: Flask) -> None:
    state = app.extensions["dbhealth"]
    state["generation_mtime"] = _mtime(_path(app))
    state["generation"] = read_generation(app)

    @app.before_request
    def _dispose_if_asked():
        apply_pending_reconnect(app)
