"""One deadline per request, on a frozen server, under sync and gthread workers.

A frozen server accepts TCP and never answers: the fault proxy in blackhole mode,
or a private PostgreSQL cluster stopped with SIGSTOP. The budgets asserted are
SPEC section 7's (DB_OPERATION_TIMEOUT + 1 s, DB_HEALTH_TIMEOUT + 0.5 s) plus
MARGIN for a busy 2-core machine. Settings are small (2 s and 1 s) to keep the
suite fast; libpq's 2 s minimum connect timeout still has to be cut short.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
import sqlalchemy as sa
from flask_migrate import upgrade

from backend import create_app
from backend.auth.users import create_user
from backend.state import state
from tests.conftest import bearer
from tests.faults import ROOT, Gunicorn

OP = 2.0  # DB_OPERATION_TIMEOUT
HEALTH = 1.0  # DB_HEALTH_TIMEOUT
MARGIN = 0.75
OP_BUDGET = OP + 1 + MARGIN
HEALTH_BUDGET = HEALTH + 0.5 + MARGIN
SECRET = "deadline-tests-secret-key-0123456789abcdef"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def database(cluster, tmp_path_factory):
    """A migrated database on the private cluster with an admin who can log in; returns its name."""
    cluster.execute("CREATE DATABASE deadlines")
    app = create_app(settings(cluster.url(database="deadlines"), tmp_path_factory.mktemp("migrate")))
    with app.app_context():
        upgrade()
        create_user("operator", PASSWORD, "admin")
        state(app).dispose_connections()
    return "deadlines"


def settings(url: str, instance, **extra) -> dict[str, str]:
    return {
        "APP_ENV": "production",
        "DATABASE_URL": url,
        "JWT_SECRET_KEY": SECRET,
        "INSTANCE_PATH": str(instance),
        "DB_OPERATION_TIMEOUT": str(OP),
        "DB_HEALTH_TIMEOUT": str(HEALTH),
        "DB_HEALTH_CACHE_TTL": "0",
        "DB_HEALTH_CHECK_INTERVAL": "0",
        "DB_RETRY_BASE_DELAY": "0.2",
        "LOG_LEVEL": "WARNING",
        **{key: str(value) for key, value in extra.items()},
    }


@pytest.fixture
def tokens(cluster, database, tmp_path):
    app = create_app(settings(cluster.url(database=database), tmp_path / "tokens"))
    return bearer(app, "admin", "operator"), bearer(app, "viewer")


@pytest.fixture
def serve(tmp_path):
    started = []

    def start(url: str, worker: str, **extra) -> Gunicorn:
        server = Gunicorn(settings(url, tmp_path / "instance", **extra), workers=1, extra=("--worker-class", worker))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(quick=True)


def timed(server, path, headers=None, method="GET", body=None):
    started = time.monotonic()
    headers = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(server.url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    return status, json.loads(raw or b"{}"), time.monotonic() - started


LOGIN = ("/api/auth/login", "POST", {"username": "operator", "password": PASSWORD})


def every_request_type(server, admin, viewer):
    """(name, status, body, seconds, budget) for each request type, one after another."""
    answers = []
    for name, path, method, body, headers, budget in (
        ("login", *LOGIN, None, OP_BUDGET),
        ("logout", "/api/auth/logout", "POST", None, admin, OP_BUDGET),
        ("health", "/api/database/health?force=true", "GET", None, viewer, HEALTH_BUDGET),
        ("status", "/api/database/status", "GET", None, viewer, HEALTH_BUDGET),
        ("audit", "/api/database/audit?limit=5", "GET", None, admin, OP_BUDGET),
        ("reconnect", "/api/database/reconnect", "POST", None, admin, OP_BUDGET),
    ):
        answers.append((name, *timed(server, path, headers, method, body), budget))
    return answers


def assert_within_budget(answers):
    late = [(name, round(seconds, 2), budget) for name, _, _, seconds, budget in answers if seconds > budget]
    assert not late, late
    for name, status, body, _, _ in answers:
        if name == "status":
            assert status == 200 and body["data"]["health"]["status"] == "unhealthy", body
        else:
            assert status == 503, (name, body)
            assert body["code"] == "db_unavailable", (name, body)


@pytest.mark.parametrize("worker", ["sync", "gthread"])
def test_frozen_after_the_pool_was_warm(worker, proxy, database, tokens, serve, cluster):
    admin, viewer = tokens
    server = serve(cluster.url(proxy.port, database), worker)
    warm_up = (LOGIN + (None,), ("/api/database/health?force=true", "GET", None, viewer),
               ("/api/database/status", "GET", None, viewer), ("/api/database/audit?limit=1", "GET", None, admin))
    for path, method, body, headers in warm_up:
        assert timed(server, path, headers, method, body)[0] == 200, path

    proxy.set_mode("blackhole")
    livez: list[float] = []
    if worker == "gthread":  # the other threads keep serving /livez meanwhile
        waiting = threading.Thread(target=timed, args=(server, LOGIN[0], None, "POST", LOGIN[2]))
        waiting.start()
        while waiting.is_alive():
            livez.append(timed(server, "/livez")[2])
        waiting.join()
        assert max(livez) < 0.5, livez
    answers = every_request_type(server, admin, viewer)
    assert_within_budget(answers)
    login = answers[0][2]
    assert login["retry_count"] >= 0 and login["last_attempt"].endswith("Z")

    proxy.set_mode("pass")
    assert timed(server, "/api/database/health?force=true", viewer)[0] == 200
    assert timed(server, LOGIN[0], None, "POST", LOGIN[2])[0] == 200


def sigstopped(cluster):
    """The cluster's postmaster and every backend, for SIGSTOP and SIGCONT."""
    with open(os.path.join(cluster.data, "postmaster.pid")) as pidfile:
        postmaster = int(pidfile.readline())
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(postmaster)], capture_output=True, text=True).stdout
    return [postmaster, *map(int, children.split())]


@pytest.mark.parametrize("worker", ["sync", "gthread"])
@pytest.mark.parametrize("fault", ["proxy", "sigstop"])
def test_a_fresh_worker_meets_a_frozen_server(worker, fault, proxy, database, tokens, serve, cluster):
    admin, viewer = tokens
    frozen: list[int] = []
    if fault == "proxy":
        proxy.set_mode("blackhole")
        url = cluster.url(proxy.port, database)
    else:
        url = cluster.url(database=database)
    try:
        if fault == "sigstop":
            frozen = sigstopped(cluster)
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
        server = serve(url, worker)  # ready on /livez: no database yet
        answers = every_request_type(server, admin, viewer)
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    assert_within_budget(answers)


def test_first_connect_queries_are_bounded(cluster, database, proxy, tmp_path):
    """SQLAlchemy's first-connect queries (server version, hstore) meet a server that froze
    right after the login: libpq's connect timeout no longer applies, the budget does."""
    app = create_app({**settings(cluster.url(proxy.port, database), tmp_path), "DB_HEALTH_CHECK_INTERVAL": 0})
    with app.app_context():
        from backend.extensions import db

        sa.event.listen(db.engine.pool, "connect", lambda *_: proxy.set_mode("blackhole"), insert=True)
    started = time.monotonic()
    response = app.test_client().post(LOGIN[0], json=LOGIN[2])
    elapsed = time.monotonic() - started
    assert response.status_code == 503 and response.json["code"] == "db_unavailable", response.json
    assert elapsed <= OP_BUDGET, elapsed


def test_backoff_never_sleeps_past_the_budget(cluster, database, proxy, tmp_path):
    """Refused at once each time: with 1 s then 2 s backoffs, a 2 s budget has room for one retry only."""
    proxy.set_mode("reset")
    app = create_app(settings(cluster.url(proxy.port, database), tmp_path, DB_RETRY_BASE_DELAY=1.0, DB_RETRY_ATTEMPTS=3))
    started = time.monotonic()
    response = app.test_client().post(LOGIN[0], json=LOGIN[2])
    elapsed = time.monotonic() - started
    assert response.status_code == 503 and response.json["code"] == "db_unavailable"
    assert response.json["retry_count"] == 1, response.json
    assert elapsed <= OP + 0.5, elapsed


def test_cli_answers_within_its_budget(cluster, database, proxy, tmp_path):
    app = create_app(settings(cluster.url(proxy.port, database), tmp_path))
    runner = app.test_cli_runner()
    proxy.set_mode("blackhole")
    started = time.monotonic()
    result = runner.invoke(args=["dbhealth", "check"])
    assert result.exit_code == 2 and time.monotonic() - started <= HEALTH_BUDGET, result.output
    started = time.monotonic()
    result = runner.invoke(args=["auth", "list-users"])
    assert result.exit_code != 0 and time.monotonic() - started <= OP_BUDGET, result.output


@pytest.mark.parametrize("asked, used", [((), "gthread"), (("--worker-class", "sync"), "sync")])
def test_gthread_is_the_default_and_sync_is_sync(asked, used, cluster, database, tmp_path):
    """gunicorn runs a sync worker with threads > 1 as gthread: asking for sync must give sync."""
    server = Gunicorn(settings(cluster.url(database=database), tmp_path, LOG_LEVEL="INFO"), workers=1, extra=asked)
    try:
        assert f"Using worker: {used}" in server.logs()
    finally:
        server.stop(quick=True)


def test_greenlet_workers_are_refused():
    for worker in ("gevent", "eventlet"):
        result = subprocess.run(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--worker-class", worker, "wsgi:app"],
            cwd=ROOT, capture_output=True, text=True, timeout=30,
        )
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"worker class '{worker}' is not supported" in lines[0], result.stderr


def test_the_watchdog_cuts_a_socket_past_its_deadline_and_leaves_a_released_one():
    """A call still waiting at its deadline finds its socket shut down (and release says so);
    a call released in time keeps its socket, and so do the thousands released before it."""
    import socket

    from backend.db.deadline import WATCHDOG, Watchdog

    ours, peer = socket.socketpair()
    try:
        for _ in range(5000):
            assert WATCHDOG.release(WATCHDOG.watch(ours.fileno(), 5.0)) is False
        token = WATCHDOG.watch(ours.fileno(), 0.05)
        ours.settimeout(5)
        started = time.monotonic()
        assert ours.recv(1) == b""  # shut down under the blocked read: end of stream
        assert time.monotonic() - started <= 0.05 + Watchdog.POLL_S + 0.5
        assert WATCHDOG.release(token) is True
    finally:
        ours.close()
        peer.close()
    kept, peer = socket.socketpair()
    try:
        assert WATCHDOG.release(WATCHDOG.watch(kept.fileno(), 0.05)) is False
        time.sleep(0.05 + Watchdog.POLL_S * 2)  # past the deadline of a watch no longer held
        peer.sendall(b"x")
        assert kept.recv(1) == b"x"
    finally:
        kept.close()
        peer.close()
