"""Retry transient database failures with exponential backoff, and nothing else.

What counts as transient is decided in one place, ``classify.is_transient``.
Dead pooled connections are ``pool_pre_ping``'s job; this covers what can still
go wrong mid-operation: a lost connection, a deadlock, a serialization failure,
a lock timeout, a server restarting. Attempts and backoff stay inside the
budget in force (budget.py): when the time is up, the last error is raised.
"""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

from flask import current_app, has_app_context
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from .. import metrics
from ..extensions import db
from .budget import Budget, current_budget
from .classify import is_transient

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

# Never start an attempt with less time than this left in the budget.
MIN_ATTEMPT_S = 0.05


def _out_of_time(budget: Budget) -> Callable[[RetryCallState], bool]:
    """Stop when sleeping before the next attempt would leave it no time: backoff never passes the budget."""

    def stop(state: RetryCallState) -> bool:
        return budget.left() - (state.upcoming_sleep or 0) < MIN_ATTEMPT_S

    return stop


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
    rolling the session back before each sleep, and never past the budget in
    force. When the retries or the time run out, the original error is re-raised
    carrying ``retry_count`` (the retries really made) and ``last_attempt``, which
    the error handler turns into 503 ``db_unavailable``.

    :param sleep: replaces ``time.sleep``, for tests.
    """

    def decorator(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            config = current_app.config if has_app_context() else {}
            retries = config.get("DB_RETRY_ATTEMPTS", 3) if max_retries is None else max_retries
            delay = config.get("DB_RETRY_BASE_DELAY", 1.0) if base_delay is None else base_delay
            budget = current_budget()
            stop = stop_after_attempt(retries + 1)
            if budget is not None:
                stop = stop | _out_of_time(budget)
            retrying = Retrying(
                stop=stop,
                wait=wait_exponential_jitter(multiplier=delay, exp_base=2, jitter=delay / 2, max=30),
                retry=retry_if_exception(is_transient),
                before_sleep=_rollback_and_log,
                sleep=sleep or time.sleep,
                reraise=True,
            )

            @functools.wraps(function)
            def attempt(*args: Any, **kwargs: Any) -> Any:
                if budget is not None:
                    budget.check()
                return function(*args, **kwargs)

            try:
                return retrying(attempt, *args, **kwargs)
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
