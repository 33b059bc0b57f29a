"""Failed logins throttled with Flask-Limiter: per (username, client address) and per address.

Only failures count (a 401 from the login view), so an operator who types the
right password is never slowed down. Once a budget is spent, every attempt with
that key waits, the right password too: otherwise the answer to a guess would
still tell whether it was right. The per-pair budget means an attacker can
lock a user out only from the attacker's own address; the per-address budget
(three times as large) stops one address trying many names.

Counts live in memory, in each worker process (Flask-Limiter's ``memory://``
storage): an instance with W workers allows up to W times the budget, and N
instances N x W times, since the kernel spreads connections over workers. That
still bounds guessing far below the server's speed without a shared store to
run or to fail. The client address is the peer's, or with TRUSTED_PROXIES=n the
one n proxies in front wrote into X-Forwarded-For (werkzeug ProxyFix).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, request
from flask_limiter.errors import RateLimitExceeded

from ..errors import error_body
from ..extensions import limiter


def client_address() -> str:
    return request.remote_addr or "unknown"


def username_and_address() -> str:
    body = request.get_json(silent=True)
    username = body.get("username") if isinstance(body, dict) else None
    return f"{client_address()}|{username[:80] if isinstance(username, str) else ''}"


def _failed(response: Response) -> bool:
    return response.status_code == 401


def _pair_limit() -> str:
    return current_app.config["AUTH_LOGIN_LIMIT"]


def _address_limit() -> str:
    return current_app.config["AUTH_LOGIN_ADDRESS_LIMIT"]


def throttle_failures(view: Callable[..., Any]) -> Callable[..., Any]:
    """Apply both failed-login budgets to a login view."""
    per_address = limiter.limit(_address_limit, key_func=client_address, deduct_when=_failed)
    per_pair = limiter.limit(_pair_limit, key_func=username_and_address, deduct_when=_failed)
    return per_pair(per_address(view))


def _too_many_attempts(error: RateLimitExceeded):
    breached = limiter.current_limit
    retry_after = max(1, math.ceil(breached.window[0] - time.time())) if breached else 60
    body = error_body(
        "too_many_attempts",
        f"Too many failed logins; try again in {retry_after} s",
        "Too many attempts",
        retry_after=retry_after,
    )
    return body, 429, {"Retry-After": str(retry_after)}


def init_app(app: Flask) -> None:
    """Bind the limiter, its hooks scoped to the login's blueprint.

    Flask-Limiter hooks every request of the app (a before, an after and a teardown
    function: about a third of what /livez costs); only the login view is limited, and
    its decorators check the limits, so the hooks run for /api/auth alone.
    """
    hooks = (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs)
    counts = [len(registry.get(None, ())) for registry in hooks]
    limiter.init_app(app)
    for registry, count in zip(hooks, counts, strict=True):
        added = registry[None][count:]
        del registry[None][count:]
        registry.setdefault("auth", []).extend(added)
    app.register_error_handler(RateLimitExceeded, _too_many_attempts)
