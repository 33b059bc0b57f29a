"""One deadline for all the database work of a request (or a CLI command, or a probe).

A ``Budget`` is a start and a number of seconds, kept in ``flask.g``. A request
gets DB_OPERATION_TIMEOUT from its start the first time it touches a database;
a view can give itself another budget with ``start_budget`` (health and status
use DB_HEALTH_TIMEOUT, the console its statement timeout on top). Everything
that can wait on a database consults the budget that is in force:

- the pool's wait for a free connection (``BudgetedQueuePool``);
- connecting: the driver's connect timeout is capped by the time left, and the
  connect runs on a helper thread we stop waiting for when the time is up
  (libpq's minimum is 2 s, PyMySQL bounds only the TCP handshake);
- SQLAlchemy's first-connect queries, pool pre-ping and every statement of a
  checked-out connection, by arming the watchdog (deadline.py) on its socket;
- ``with_db_retry`` (no attempt and no backoff past the budget) and ``run_bounded``.

Outside a request nothing is bounded unless a budget was started (migrations
may take as long as they take).
"""
from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from flask import current_app, g, has_app_context, has_request_context
from sqlalchemy.engine import Engine
from sqlalchemy.util import queue as sa_queue

from ..logs import request_started
from .deadline import DeadlineExceeded, release, watch

T = TypeVar("T")
CONNECT_WATCH = "dbhealth_connect_watch"
USE_WATCH = "dbhealth_use_watch"


@dataclass
class Budget:
    started: float  # time.perf_counter()
    seconds: float

    def left(self) -> float:
        return self.started + self.seconds - time.perf_counter()

    def check(self) -> None:
        """Raise DeadlineExceeded when no time is left."""
        if self.left() <= 0:
            raise DeadlineExceeded(f"the {self.seconds:g}s budget for database work is spent")


def current_budget() -> Budget | None:
    """The budget in force: the one started for this context, else a request's default."""
    if not has_app_context():
        return None
    budget = g.get("db_budget")
    if budget is None:
        seconds = current_app.config["DB_OPERATION_TIMEOUT"] if has_request_context() else g.get("db_budget_seconds")
        if seconds is not None:  # counted from the request's start, or a command's first database use
            budget = g.db_budget = Budget(request_started() or time.perf_counter(), seconds)
    return budget


def start_budget(seconds: float) -> Budget:
    """Give the current request (or command) ``seconds`` for all its database work.

    Counted from the request's start, so a view calling this late gets no extra
    time. The console, for one, calls ``start_budget(statement_timeout_s +
    DB_OPERATION_TIMEOUT)`` first thing, so its audit writes fit in the same budget.
    """
    budget = g.db_budget = Budget(request_started() or time.perf_counter(), seconds)
    return budget


@contextmanager
def using(budget: Budget | None) -> Iterator[Budget | None]:
    """Make ``budget`` the one in force for the block (e.g. in a helper thread's app context)."""
    previous = g.get("db_budget")
    g.db_budget = budget
    try:
        yield budget
    finally:
        g.db_budget = previous


def bounded(seconds: float) -> AbstractContextManager[Budget | None]:
    """A budget of ``seconds`` from now for the block, never more than the time left in the current one."""
    current = current_budget()
    if current is not None:
        seconds = min(seconds, current.left())
    return using(Budget(time.perf_counter(), seconds))


def with_budget(setting: str = "DB_OPERATION_TIMEOUT") -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Run a CLI command under a budget of the named setting's seconds, from its first database use
    (not from a password prompt)."""

    def decorator(function: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            g.db_budget_seconds = current_app.config[setting]
            try:
                return function(*args, **kwargs)
            finally:
                g.pop("db_budget_seconds", None)
                g.pop("db_budget", None)

        return wrapper

    return decorator


def gather(jobs: dict[str, Callable[[], T]], budget: Budget) -> dict[str, T | Exception]:
    """Run ``jobs`` at once, each on a thread of its own under ``budget``; wait no longer than it.

    A job that failed, or had not finished in time, gives its exception.
    """
    app = current_app._get_current_object()

    def run(job: Callable[[], T]) -> T:
        with app.app_context(), using(budget):
            return job()

    executor = ThreadPoolExecutor(max(len(jobs), 1), thread_name_prefix="gather")
    try:
        futures = {name: executor.submit(run, job) for name, job in jobs.items()}
        results: dict[str, T | Exception] = {}
        for name, future in futures.items():
            try:
                results[name] = future.result(timeout=max(budget.left(), 0) + 0.05)
            except FutureTimeout:
                results[name] = DeadlineExceeded(f"no answer within {budget.seconds:g}s")
            except Exception as error:
                results[name] = error
        return results
    finally:
        executor.shutdown(wait=False)


class _BudgetedQueue(sa_queue.Queue):
    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        budget = current_budget() if block else None
        if budget is not None:
            left = max(budget.left(), 0.001)
            timeout = left if timeout is None else min(timeout, left)
        return super().get(block, timeout)


class BudgetedQueuePool(sa.pool.QueuePool):
    """A QueuePool whose wait for a free connection is capped by the time left in the budget.

    Once retired (a reconnect replaced it), a connection given back is closed, not kept.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._pool = _BudgetedQueue(self._pool.maxsize, use_lifo=self._pool.use_lifo)
        self._retired = False
        self._retire_lock = threading.Lock()  # a connection comes back either before retire() or closed
        if not self.echo:  # log as QueuePool does: under "sqlalchemy", quiet unless asked for
            self.logger = logging.getLogger("sqlalchemy.pool.impl.QueuePool")

    def retire(self) -> None:
        """Close what is idle here, and every connection still out as soon as it comes back.

        After ``engine.dispose()`` SQLAlchemy leaves those to this pool, closed when
        the garbage collector frees it; a pool made before the worker froze the
        collector (gunicorn.conf.py) is never freed, and a connection kept in it would
        stay open for good (behind pgbouncer in session mode, holding a server
        connection past RECONNECT).
        """
        with self._retire_lock:
            self._retired = True
            self.dispose()

    def _do_return_conn(self, record: Any) -> None:
        with self._retire_lock:
            if self._retired:
                record.close()  # then queued closed as usual, which keeps the old pool's counts right
            super()._do_return_conn(record)


def connect_within(seconds: float, connect: Callable[[], T], close: Callable[[T], None]) -> T:
    """``connect()`` on a helper thread, waited for at most ``seconds``.

    A connect we stop waiting for finishes on its own (bounded by the driver's
    connect timeout) and its connection, if it gets one, is closed.
    """
    lock, outcome = threading.Lock(), {}

    def run() -> None:
        try:
            connection = connect()
        except BaseException as error:  # handed to the caller
            outcome["error"] = error
            return
        with lock:
            gave_up = outcome.setdefault("connection", connection) is None
        if gave_up:
            close(connection)

    helper = threading.Thread(target=run, name="db-connect", daemon=True)
    helper.start()
    helper.join(seconds)
    with lock:
        if outcome.setdefault("connection", None) is None and "error" not in outcome:
            raise DeadlineExceeded(f"could not connect within {seconds:.2f}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["connection"]


def _capped_timeout(driver: str, configured: Any, left: float) -> Any:
    if configured is None:
        return None
    if driver == "psycopg2":  # whole seconds, and libpq treats 1 as 2
        return max(2, min(int(configured), math.ceil(left)))
    return min(float(configured), left)


def guard_engine(engine: Engine, per_use: bool = True) -> None:
    """Bound connecting, first-connect queries, pre-ping and (``per_use``) every use by the budget.

    ``per_use`` is for pooled engines whose connections go back to the pool after
    each use; a connection kept open for probes is bounded by its caller instead.
    """
    if engine.dialect.name == "sqlite":
        return
    driver = engine.dialect.driver

    @sa.event.listens_for(engine, "do_connect")
    def _connect(dialect, record, cargs, cparams):
        budget = current_budget()
        if budget is None:
            return None
        budget.check()
        left = budget.left()
        if "connect_timeout" in cparams:
            cparams["connect_timeout"] = _capped_timeout(driver, cparams["connect_timeout"], left)
        connection = connect_within(left, lambda: dialect.connect(*cargs, **cparams), _close)
        if record is not None:  # until the connect listeners (first-connect queries) are done
            record.info[CONNECT_WATCH] = watch(connection, budget.left())
        return connection

    @sa.event.listens_for(engine.pool, "connect")
    def _connected(dbapi_connection, record):  # registered last: runs after SQLAlchemy's own
        if release(record.info.pop(CONNECT_WATCH, None)):
            raise DeadlineExceeded("no answer while setting up a new connection")

    ping = engine.dialect.do_ping

    def do_ping(dbapi_connection: Any) -> bool:
        budget = current_budget()
        if budget is None:
            return ping(dbapi_connection)
        token = watch(dbapi_connection, budget.left())
        try:
            return ping(dbapi_connection)
        finally:
            release(token)

    engine.dialect.do_ping = do_ping  # pre-ping under the budget: SQLAlchemy has no event before it

    if not per_use:
        return

    @sa.event.listens_for(engine.pool, "checkout")
    def _checkout(dbapi_connection, record, proxy):
        budget = current_budget()
        if budget is not None:
            record.info[USE_WATCH] = watch(dbapi_connection, budget.left())

    @sa.event.listens_for(engine.pool, "checkin")
    def _checkin(dbapi_connection, record):
        release(record.info.pop(USE_WATCH, None))


def _close(connection: Any) -> None:
    try:
        connection.close()
    except Exception:
        pass
