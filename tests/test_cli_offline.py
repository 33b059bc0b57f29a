"""`flask auth` while the database is down or frozen: a token still comes out; anything else fails in one line."""
from __future__ import annotations

import subprocess
import sys
import time

import jwt as pyjwt
import pytest
import sqlalchemy as sa

from backend.extensions import db
from backend.models import AuditEvent
from tests.conftest import create_database
from tests.faults import ROOT, Proxy, free_port, wait_for

SECRET = "offline-cli-tests-secret-key-0123456789abcd"


def flask(*args, env, stdin=None):
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *args],
        cwd=ROOT, env={"PATH": "/usr/bin:/bin", **env}, input=stdin, capture_output=True, text=True, timeout=120,
    )
    return result, time.monotonic() - started


@pytest.fixture
def shared_database(make_app, tmp_path):
    """A migrated database on the shared PostgreSQL, reached through a proxy the test can break."""
    url, drop = create_database("postgresql")
    make_app(DATABASE_URL=url)  # migrates
    proxy = Proxy(5432)
    env = {
        "APP_ENV": "production", "JWT_SECRET_KEY": SECRET, "INSTANCE_PATH": str(tmp_path / "instance"),
        "DATABASE_URL": url.replace(":5432/", f":{proxy.port}/"), "DB_RETRY_BASE_DELAY": "0.05",
    }
    yield url, proxy, env
    proxy.close()
    drop()


@pytest.mark.parametrize("fault", ["reset", "blackhole"])
def test_issue_token_works_with_the_database_down_or_frozen_and_audits_later(make_app, shared_database, fault, tmp_path):
    url, proxy, env = shared_database
    proxy.set_mode(fault)
    result, elapsed = flask("auth", "issue-token", "prometheus", "--role", "viewer", "--expires-in", "86400", env=env)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    claims = pyjwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "prometheus" and claims["role"] == "viewer"
    assert elapsed < 2 + 4, elapsed  # DB_HEALTH_TIMEOUT, plus starting Python on a busy machine
    assert "Traceback" not in result.stderr
    assert "token_issued" in result.stderr and "prometheus" in result.stderr  # in the log at once

    proxy.set_mode("pass")  # the database is back: a serving process stores the event
    app = make_app(migrate=False, DATABASE_URL=env["DATABASE_URL"], JWT_SECRET_KEY=SECRET, INSTANCE_PATH=env["INSTANCE_PATH"])
    assert app.test_client().get("/livez").status_code == 200

    def stored():
        with app.app_context():
            return db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "token_issued")).all()

    wait_for(stored, "the spooled audit event to be stored", timeout=10)
    spool = tmp_path / "instance" / "audit-spool.jsonl"
    # Emptied once stored: no later tick can store it again.
    wait_for(lambda: spool.stat().st_size == 0, "the spool to be emptied", timeout=10)
    (event,) = stored()
    assert event.target == "prometheus" and event.detail == {"role": "viewer", "expires_in": 86400}
    assert event.actor.startswith("cli:")


@pytest.mark.parametrize(
    "args, stdin",
    [
        (("auth", "revoke", "0123456789abcdef"), None),
        (("auth", "list-users"), None),
        (("auth", "create-user", "carol", "--role", "viewer", "--password-stdin"), "long enough pw\n"),
        (("db", "upgrade"), None),
        (("db", "current"), None),
    ],
)
def test_other_commands_say_the_database_is_unreachable_in_one_line(tmp_path, args, stdin):
    env = {
        "APP_ENV": "production", "JWT_SECRET_KEY": SECRET, "INSTANCE_PATH": str(tmp_path),
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/none", "DB_RETRY_ATTEMPTS": "0",
    }
    result, _ = flask(*args, env=env, stdin=stdin)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: cannot reach the database")
    assert result.stdout == ""
