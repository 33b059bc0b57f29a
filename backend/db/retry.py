"""Retry transient database failures with exponential backoff, and nothing else.

What counts as transient is decided in one place, ``is_transient``, from each
driver's own error codes. Dead pooled connections are ``pool_pre_ping``'s job;
this covers what can still go wrong mid-operation: a lost connection, a
deadlock, a serialization failure, a lock timeout, a server restarting.
"""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

from flask import current_app, has_app_context
from sqlalchemy import exc as sa_exc
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from .. import metrics
from ..extensions import db

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

# PostgreSQL SQLSTATEs: serialization failure, deadlock, lock not available,
# admin shutdown, crash shutdown, cannot connect now. Class 08 is checked by prefix.
POSTGRES_TRANSIENT = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03"}
# psycopg2 raises connection failures without a SQLSTATE; these words mark the permanent ones.
POSTGRES_PERMANENT_WORDS = ("authentication", "does not exist", "pg_hba.conf", "permission denied", "password")
# MySQL/MariaDB: lock wait timeout, deadlock, can't connect (socket, TCP), server gone,
# lost connection, connection killed, disconnected for inactivity.
MYSQL_TRANSIENT = {1205, 1213, 2002, 2003, 2006, 2013, 1927, 4031}
# SQLite: SQLITE_BUSY and SQLITE_LOCKED.
SQLITE_TRANSIENT = {5, 6}


def is_transient(error: BaseException) -> bool:
    """True for failures that may succeed if tried again; never for integrity, syntax or data errors."""
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return True
        error = error.orig
    elif isinstance(error, sa_exc.SQLAlchemyError):
        return False
    module = type(error).__module__
    if module.startswith("psycopg2"):
        code = getattr(error, "pgcode", None)
        if code:
            return code.startswith("08") or code in POSTGRES_TRANSIENT
        name = type(error).__name__
        text = str(error).lower()
        return name in ("OperationalError", "InterfaceError") and not any(
            word in text for word in POSTGRES_PERMANENT_WORDS
        )
    if module.startswith("pymysql"):
        code = error.args[0] if error.args and isinstance(error.args[0], int) else None
        return code in MYSQL_TRANSIENT
    if module == "sqlite3":
        code = getattr(error, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in SQLITE_TRANSIENT
        return "database is locked" in str(error) or "database table is locked" in str(error)
    return False


def _rollback_and_log(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    if has_app_context():
        db.session.rollback()
    metrics.RETRIES.labels(outcome="retried").inc()
    log.warning(
        "transient database error in %s (attempt %d): %s; retrying in %.2fs",
        getattr(state.fn, "__qualname__", state.fn),
        state.attempt_number,
        type(error).__name__,
        state.upcoming_sleep,
    )


def with_db_retry(
    max_retries: int | None = None,
    base_delay: float | None = None,
    sleep: Callable[[float], None] | None = None,
) -> Callable[[F], F]:
    """Retry the decorated function on transient database errors.

    Defaults come from DB_RETRY_ATTEMPTS and DB_RETRY_BASE_DELAY at call time.
    Waits ``base_delay``, then 2x, 4x... (at most 30 s), each plus up to half ``base_delay`` of jitter,
    rolling the session back before each sleep. When the retries run out, the
    original error is re-raised carrying ``retry_count`` and ``last_attempt``,
    which the error handler turns into 503 ``db_unavailable``.

    :param sleep: replaces ``time.sleep``, for tests.
    """

    def decorator(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            config = current_app.config if has_app_context() else {}
            retries = config.get("DB_RETRY_ATTEMPTS", 3) if max_retries is None else max_retries
            delay = config.get("DB_RETRY_BASE_DELAY", 1.0) if base_delay is None else base_delay
            retrying = Retrying(
                stop=stop_after_attempt(retries + 1),
                wait=wait_exponential_jitter(multiplier=delay, exp_base=2, jitter=delay / 2, max=30),
                retry=retry_if_exception(is_transient),
                before_sleep=_rollback_and_log,
                sleep=sleep or time.sleep,
                reraise=True,
            )
            try:
                return retrying(function, *args, **kwargs)
            except Exception as error:
                if is_transient(error):
                    metrics.RETRIES.labels(outcome="gave_up").inc()
                    error.retry_count = retrying.statistics.get("attempt_number", 1) - 1
                    error.last_attempt = datetime.now(timezone.utc).isoformat(timespec="seconds").replace(
                        "+00:00", "Z"
                    )
                raise

        return wrapper  # type: ignore[return-value]

    return decorator
