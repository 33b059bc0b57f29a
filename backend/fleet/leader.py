"""Which worker of an instance probes in the background: the holder of a lock file.

Every worker tries ``flock(LOCK_EX | LOCK_NB)`` on ``INSTANCE_PATH/probe.lock``
once a second; the one that gets it keeps it (and its file descriptor) until it
exits, when the kernel releases it and another worker takes over within a
second. No election protocol, no heartbeat to time out, nothing to clean up
after a crash. The lock is per instance folder, so each instance has one
probing worker, whatever its number of workers.
"""
from __future__ import annotations

import os
import threading

from .folder import try_lock

LOCK_FILE = "probe.lock"


class ProbeLeader:
    def __init__(self, instance_path: str):
        self.path = os.path.join(instance_path, LOCK_FILE)
        self.fd: int | None = None
        self.pid = 0
        self.lock = threading.Lock()

    def holds(self) -> bool:
        """True if this process is the instance's probing worker (taking the lock when it is free)."""
        with self.lock:
            if self.pid != os.getpid():  # a forked child does not inherit the leadership
                if self.fd is not None:
                    os.close(self.fd)  # the parent's lock stays the parent's
                self.fd, self.pid = None, os.getpid()
            if self.fd is None:
                self.fd = try_lock(self.path)
            return self.fd is not None

    def is_leader(self) -> bool:
        """True if this process holds the lock, without trying to take it."""
        return self.fd is not None and self.pid == os.getpid()
