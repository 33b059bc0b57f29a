"""A commit whose acknowledgement is lost is retried without writing twice (SPEC 7).

The fault is real: a proxy forwards COMMIT to PostgreSQL and resets the
connection when the server answers, so the service cannot know the outcome.
"""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from backend.auth.users import create_user
from backend.extensions import db
from backend.models import AuditEvent, User
from tests.conftest import bearer, create_database
from tests.faults import Proxy


@pytest.fixture
def behind_proxy(make_app):
    url, drop = create_database("postgresql")
    proxy = Proxy(5432)
    app = make_app(DATABASE_URL=url.replace(":5432/", f":{proxy.port}/"), DB_RETRY_BASE_DELAY=0.01)
    yield app, proxy
    proxy.close()
    drop()


def count(app, model, *where):
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))


def test_create_user_with_a_lost_acknowledgement_creates_one_user(behind_proxy):
    app, proxy = behind_proxy
    proxy.cut_reply_after(b"COMMIT")
    result = app.test_cli_runner().invoke(
        args=["auth", "create-user", "dave", "--role", "viewer", "--password-stdin"], input="long enough pw\n"
    )
    assert result.exit_code == 0, result.output
    assert proxy.cut_marker is None  # the fault did happen
    assert count(app, User, User.username == "dave") == 1
    assert count(app, AuditEvent, AuditEvent.action == "user_created") == 1


def test_an_audit_event_with_a_lost_acknowledgement_is_stored_once(behind_proxy):
    app, proxy = behind_proxy
    with app.app_context():
        create_user("erin", "long enough pw", "admin")
    client = app.test_client()
    proxy.cut_reply_after(b"COMMIT")  # the login's audit insert
    response = client.post("/api/auth/login", json={"username": "erin", "password": "long enough pw"})
    assert response.status_code == 200, response.json
    assert proxy.cut_marker is None
    events = client.get("/api/database/audit?action=login", headers=bearer(app, "admin")).json["data"]["events"]
    assert [(e["actor"], e["outcome"]) for e in events] == [("erin", "ok")]
