"""Small files in the instance folder that the workers of one instance share.

Writes are atomic (a temporary file renamed over the old one) so a reader never
sees half a file; ``locked`` serialises read-modify-write cycles between
processes with ``fcntl.flock``, which the kernel releases when a process dies.
"""
from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def read_json(path: str) -> Any:
    """The file's JSON, or None when it is missing or unreadable."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def write_json(path: str, data: Any) -> str:
    """Replace the file atomically with ``data``; returns the JSON text written."""
    text = json.dumps(data, default=str, separators=(",", ":"))  # dump() would use the pure-Python encoder
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)
    return text


@contextmanager
def locked(path: str) -> Iterator[int]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block; yields its descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield fd
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)  # a child forked meanwhile has a copy that would keep it locked
    finally:
        os.close(fd)


def try_lock(path: str) -> int | None:
    """A file descriptor holding an exclusive lock on ``path``, or None if another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd
