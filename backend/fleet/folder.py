"""Small files in the instance folder that the workers of one instance share.

Writes are atomic (a temporary file renamed over the old one) so a reader never
sees half a file; ``locked`` serialises read-modify-write cycles between
processes with ``fcntl.flock``, which the kernel releases when a process dies.
"""
from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


_paths: dict[tuple[str, str], str] = {}


def instance_file(instance_path: str, name: str) -> str:
    """``os.path.join(instance_path, name)``, joined once: a forced probe asks for five of them."""
    key = (instance_path, name)
    path = _paths.get(key)
    if path is None:
        path = _paths[key] = os.path.join(instance_path, name)
    return path


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


# path -> (pid, descriptor): each process opens its own (a descriptor inherited across a fork
# shares its locks with the parent's).
_descriptors: dict[str, tuple[int, int]] = {}
# (pid, path) -> the lock this process's threads take before flock: flock locks belong to an open
# file, which they share. By pid, as a child forked while a thread held one must not inherit it held.
_thread_locks: dict[tuple[int, str], threading.Lock] = {}


def kept_descriptor(path: str) -> int:
    """This process's descriptor of ``path`` (created if missing), opened once and kept: a lock
    taken on every probe need not pay an open and a close each time."""
    pid = os.getpid()
    held = _descriptors.get(path)
    if held is not None and held[0] == pid:
        if _same_file(path, held[1]):
            return held[1]
        # removed, or the folder moved or replaced: a lock on the old file would exclude nobody
        _close_quietly(held[1])
        del _descriptors[path]
    elif held is not None:
        _close_quietly(held[1])  # the parent's: closing our copy leaves its lock alone
        del _descriptors[path]
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    _descriptors[path] = (pid, fd)
    return fd


def _same_file(path: str, fd: int) -> bool:
    try:
        named, held = os.stat(path), os.fstat(fd)
    except OSError:  # no such file any more, or the descriptor was closed behind our back
        return False
    return (named.st_ino, named.st_dev) == (held.st_ino, held.st_dev)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


@contextmanager
def locked_kept(path: str) -> Iterator[int]:
    """``locked`` on a kept descriptor, for a lock taken on every probe (``locked`` opens and closes
    the file each time, which the rarer read-modify-write cycles can afford): exclusive between
    processes, and between this process's threads."""
    key = (os.getpid(), path)
    thread_lock = _thread_locks.get(key) or _thread_locks.setdefault(key, threading.Lock())  # setdefault: one wins
    with thread_lock:
        fd = kept_descriptor(path)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield fd
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)  # a child forked meanwhile has a copy that would keep it locked


def try_lock(path: str) -> int | None:
    """A file descriptor holding an exclusive lock on ``path``, or None if another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd
