"""Reconnect: dispose connection pools in every worker process of this server.

``/reconnect`` bumps a generation number kept in a small file in the instance
folder. Every process compares that file's modification time (one ``stat``)
before it serves a request, and its monitor thread does the same every second,
so each worker throws its pools away before its next database use, whichever
worker took the request and whatever the worker class (or ``flask run``).
"""
from __future__ import annotations

import fcntl
import os

from flask import Flask

from ..state import state

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
    current = state(app)
    current.generation, current.generation_mtime = generation, _mtime(_path(app))
    return generation


def apply_pending_reconnect(app: Flask) -> bool:
    """Dispose this process's pools if another process bumped the generation."""
    current = state(app)
    mtime = _mtime(_path(app))
    if mtime == current.generation_mtime:
        return False
    current.generation_mtime = mtime
    generation = read_generation(app)
    if generation == current.generation:
        return False
    current.generation = generation
    current.dispose_connections()
    return True


def init_app(app: Flask) -> None:
    current = state(app)
    current.generation_mtime = _mtime(_path(app))
    current.generation = read_generation(app)

    @app.before_request
    def _dispose_if_asked():
        apply_pending_reconnect(app)
