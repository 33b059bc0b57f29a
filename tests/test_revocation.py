"""Revocation reaches every worker of every instance within 2 s, whatever the traffic.

Two gunicorn instances (2 workers each, their own instance folders) share one
PostgreSQL database; `flask auth revoke` runs as an operator would run it.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import uuid

import jwt as pyjwt
import pytest
import sqlalchemy as sa
from flask_migrate import upgrade

from backend import create_app
from backend.extensions import db
from backend.state import state
from tests.conftest import bearer, create_database
from tests.faults import ROOT, Gunicorn, wait_for

SECRET = "revocation-tests-secret-key-0123456789abcdef"
DEADLINE_S = 2.0


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    url, drop = create_database("postgresql")
    env = {"APP_ENV": "production", "DATABASE_URL": url, "JWT_SECRET_KEY": SECRET, "LOG_FORMAT": "json"}
    app = create_app({**env, "INSTANCE_PATH": str(tmp_path_factory.mktemp("cli"))})
    with app.app_context():
        upgrade()
        db.engine.dispose()
    servers = []

    def start(**extra) -> Gunicorn:
        folder = tmp_path_factory.mktemp("instance")
        server = Gunicorn({**env, "INSTANCE_PATH": str(folder), **extra}, workers=2)
        servers.append(server)
        return server

    yield app, env, start
    for server in servers:
        server.stop()
    drop()


def answered_by(server: Gunicorn, request_ids: set[str]) -> dict[str, int]:
    """Request id -> pid of the worker that logged it (JSON access log)."""
    found = {}
    for line in server.logs().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("request_id") in request_ids and record.get("logger") == "backend.request":
                found[record["request_id"]] = record["pid"]
    return found


def every_worker(server: Gunicorn, headers: dict[str, str], path: str = "/api/database/info", tries: int = 60):
    """Ask until each worker has answered; returns the (status, code) answers seen."""
    workers = set(server.worker_pids())
    sent, answers = set(), []
    for _ in range(tries):
        request_id = uuid.uuid4().hex
        sent.add(request_id)
        status, body, _ = server.get(path, headers={**headers, "X-Request-ID": request_id})
        answers.append((status, json.loads(body).get("code")))
        if set(answered_by(server, sent).values()) >= workers:
            return answers
    raise AssertionError(f"not every worker answered in {tries} requests: {answered_by(server, sent)}")


def test_a_revoked_token_is_refused_by_every_worker_within_2s(deployment):
    app, env, start = deployment
    first, second = start(), start()
    headers = bearer(app, "viewer", identity="monitor")
    jti = pyjwt.decode(headers["Authorization"].split()[1], options={"verify_signature": False})["jti"]
    for server in (first, second):  # every worker has verified (and cached) the token
        assert {status for status, _ in every_worker(server, headers)} == {200}

    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "auth", "revoke", jti],
        cwd=ROOT, env={"PATH": "/usr/bin:/bin", **env, "INSTANCE_PATH": app.instance_path},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    revoked_at = time.monotonic()
    # No traffic at all until the deadline: every worker is idle when its first request comes.
    time.sleep(max(0.0, revoked_at + DEADLINE_S - time.monotonic()))
    for server in (first, second):
        assert set(every_worker(server, headers)) == {(401, "token_revoked")}

    # A worker that has just started refuses it from its first request (no local copy to start from).
    third = start()
    assert third.get("/api/database/info", headers=headers)[0] == 401
    assert set(every_worker(third, headers)) == {(401, "token_revoked")}


def test_a_restarted_process_uses_its_local_copy_only_while_the_database_is_down(make_app, tmp_path):
    app = make_app()
    headers = bearer(app, "viewer")
    client = app.test_client()
    assert client.post("/api/auth/logout", headers=headers).status_code == 200
    jti = pyjwt.decode(headers["Authorization"].split()[1], options={"verify_signature": False})["jti"]
    copy = tmp_path / "instance" / "revoked-tokens.json"
    wait_for(lambda: copy.exists() and jti in json.loads(copy.read_text() or "[]"),  # the next reload keeps it
             "a local copy to be written", timeout=5, interval=0.05)

    down = make_app(migrate=False, DATABASE_URL="postgresql://nobody:pw@127.0.0.1:9/none", DB_RETRY_ATTEMPTS=0)
    down.config["JWT_SECRET_KEY"] = app.config["JWT_SECRET_KEY"]
    started = time.monotonic()
    response = down.test_client().get("/api/database/info", headers=headers)
    assert response.status_code == 401 and response.json["code"] == "token_revoked"
    assert time.monotonic() - started < down.config["DB_HEALTH_TIMEOUT"] + 1

    # The database answers (and has no such revocation): its set wins over the local copy.
    fresh_db = make_app(migrate=True, DATABASE_URL=f"sqlite:///{tmp_path}/other.db")
    fresh_db.config["JWT_SECRET_KEY"] = app.config["JWT_SECRET_KEY"]
    assert fresh_db.test_client().get("/api/database/info", headers=headers).status_code == 200


def test_reload_failures_that_are_not_outages_are_logged_with_their_traceback(make_app, caplog):
    app = make_app()
    client = app.test_client()
    assert client.get("/livez").status_code == 200  # starts the reload timer
    with app.app_context():
        db.session.execute(sa.text("ALTER TABLE revoked_tokens RENAME TO revoked_tokens_gone"))
        db.session.commit()
    record = wait_for(
        lambda: [r for r in caplog.records if r.name == "backend.auth.revocation" and r.levelno >= logging.ERROR],
        "the failing reload to be logged as an error", timeout=5, interval=0.05,
    )[0]
    assert record.exc_info and "revoked_tokens" in caplog.text


def test_reload_during_an_outage_is_one_warning_without_traceback(make_app, caplog):
    app = make_app(migrate=False, DATABASE_URL="postgresql://nobody:pw@127.0.0.1:9/none")
    assert app.test_client().get("/livez").status_code == 200
    wait_for(lambda: [r for r in caplog.records if r.name == "backend.auth.revocation"], "the outage to be logged",
             timeout=5, interval=0.05)
    revoked = state(app).revoked
    # A few more reloads fail the same way.
    wait_for(lambda: revoked.failures >= 3, "the timer to go on reloading", timeout=10, interval=0.05)
    records = [r for r in caplog.records if r.name == "backend.auth.revocation"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING and not records[0].exc_info
