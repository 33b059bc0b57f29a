"""What a frozen database costs each request type: a fresh worker in front of a server
that accepts TCP and never answers, under sync and gthread workers."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from tests.faults import Gunicorn, Proxy

# (label, method, path, needs a token, budget): DB_OPERATION_TIMEOUT + 1 s or DB_HEALTH_TIMEOUT + 0.5 s
REQUESTS = (
    ("login", "POST", "/api/auth/login", False, "op"),
    ("health", "GET", "/api/database/health?force=true", True, "health"),
    ("status", "GET", "/api/database/status", True, "health"),
    ("audit", "GET", "/api/database/audit?limit=1", True, "op"),
)


def ask(server: Gunicorn, method: str, path: str, headers: dict[str, str]) -> tuple[int | None, float]:
    body = json.dumps({"username": "nobody", "password": "not a password"}).encode() if method == "POST" else None
    request = urllib.request.Request(server.url + path, data=body, method=method,
                                     headers={**headers, "Content-Type": "application/json"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=40) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except OSError:
        status = None
    return status, time.monotonic() - started


def frozen_budgets(serve: Callable[[str], Gunicorn], proxy: Proxy, admin: dict[str, str],
                   budgets: dict[str, float]) -> dict[str, list[tuple[str, int | None, float, float]]]:
    """model -> [(request, status, seconds, budget)] for a worker's first requests on a frozen server."""
    answers = {}
    proxy.set_mode("blackhole")
    try:
        for model in ("sync", "gthread"):
            server = serve(model)
            answers[model] = [
                (label, *ask(server, method, path, admin if token else {}), budgets[budget])
                for label, method, path, token, budget in REQUESTS
            ]
            server.stop(quick=True)
    finally:
        proxy.set_mode("pass")
    return answers
