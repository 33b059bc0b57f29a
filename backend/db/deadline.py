"""Hard deadlines for database calls that a driver cannot bound by itself.

psycopg2 blocks in libpq with no per-call timeout, and a server that accepts TCP
and then never answers (a frozen host, a blackholing proxy) is not noticed by
TCP keepalives either, because the kernel in between keeps acknowledging. So a
single daemon thread per process watches the sockets of bounded calls; when one
outlives its deadline it shuts the socket down. The blocked driver call then
fails at once with a disconnect error, SQLAlchemy invalidates the connection,
and the stuck connection never goes back to the pool.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import exc as sa_exc


def socket_fileno(dbapi_connection: Any) -> int | None:
    """The socket behind a psycopg2 or PyMySQL connection; None for SQLite or a closed one."""
    fileno = getattr(dbapi_connection, "fileno", None)
    if callable(fileno):  # psycopg2
        try:
            return fileno()
        except Exception:
            return None
    sock = getattr(dbapi_connection, "_sock", None)  # PyMySQL
    return sock.fileno() if sock is not None else None


class Watch:
    """One call under a deadline: a duplicate of its socket's descriptor, so the
    watchdog can never shut down an unrelated socket that reused the number."""

    __slots__ = ("fileno", "deadline", "fired")

    def __init__(self, fileno: int, deadline: float):
        self.fileno = fileno
        self.deadline = deadline
        self.fired = False


class Watchdog:
    """One thread that shuts down the sockets of calls past their deadline.

    ``watch`` never wakes the thread (a wake-up costs more than the probe it
    guards); the thread looks at least every POLL_S seconds, so a deadline fires
    at most POLL_S late, and on time once the thread has seen it. A watch that is
    never released (its connection failed and was dropped) simply fires later,
    on a socket nobody uses any more.

    Only watches in flight are kept (a released one is gone at once), and the lock
    is held for a dictionary operation or one scan of them, never while the thread
    sleeps: a request thread never waits for the watchdog long. A due watch is
    marked fired and its socket shut down before the lock is let go, so release()
    never reports a live socket as cut, nor a cut one as live. Whoever takes a
    watch out of the set owns its descriptor and closes it.
    """

    POLL_S = 0.1

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: set[Watch] = set()
        self._pid: int | None = None
        # A lock held by another thread at fork time would stay held in the child.
        os.register_at_fork(after_in_child=self._forget_parent)

    def _forget_parent(self) -> None:
        for watch in self._watches:  # the parent's duplicates, inherited: not this process's to watch
            try:
                os.close(watch.fileno)
            except OSError:
                pass
        self._lock = threading.Lock()
        self._watches = set()
        self._pid = None

    def watch(self, fileno: int, seconds: float) -> Watch:
        watch = Watch(os.dup(fileno), time.monotonic() + seconds)
        with self._lock:
            if self._pid != os.getpid():  # first use, or first use after a fork
                self._pid = os.getpid()
                threading.Thread(target=self._run, args=(self._pid,), name="db-deadline-watchdog", daemon=True).start()
            self._watches.add(watch)
        return watch

    def release(self, watch: Watch) -> bool:
        """Stop watching; True if the deadline had already fired."""
        with self._lock:
            mine = watch in self._watches
            self._watches.discard(watch)
        if mine:
            os.close(watch.fileno)
        return watch.fired

    def _run(self, pid: int) -> None:
        while self._pid == pid:
            now = time.monotonic()
            with self._lock:
                fired = [watch for watch in self._watches if watch.deadline <= now]
                self._watches.difference_update(fired)
                for watch in fired:  # cut before release() can look (shutdown does not block)
                    watch.fired = True
                    _shutdown(watch.fileno)
                soonest = min((watch.deadline for watch in self._watches), default=now + self.POLL_S)
            for watch in fired:
                os.close(watch.fileno)
            time.sleep(min(max(soonest - now, 0.001), self.POLL_S))


def _shutdown(fileno: int) -> None:
    try:
        sock = socket.socket(fileno=os.dup(fileno))
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


WATCHDOG = Watchdog()


class DeadlineExceeded(sa_exc.TimeoutError):
    """A database call did not finish in time (its connection was cut), or no time was left to start it.

    A SQLAlchemy error, so every ``except SQLAlchemyError`` and the 503 handler see it.
    """


def watch(dbapi_connection: Any, seconds: float) -> Watch | None:
    """Cut ``dbapi_connection``'s socket after ``seconds`` unless released first; None for SQLite."""
    fileno = socket_fileno(dbapi_connection)
    return None if fileno is None else WATCHDOG.watch(fileno, max(seconds, 0.001))


def release(watch: Watch | None) -> bool:
    """Stop a watch; True if it had fired (the connection is cut and must not be reused)."""
    return watch is not None and WATCHDOG.release(watch)


@contextmanager
def deadline(dbapi_connection: Any, seconds: float) -> Iterator[None]:
    """Cut ``dbapi_connection`` if the block is still running after ``seconds``.

    Raises DeadlineExceeded (chained to the driver's error) when it fired.
    """
    token = watch(dbapi_connection, seconds)
    try:
        yield
    except Exception as error:
        if release(token):
            raise DeadlineExceeded(f"no answer within {seconds:g}s") from error
        raise
    else:
        if release(token):
            raise DeadlineExceeded(f"no answer within {seconds:g}s")
