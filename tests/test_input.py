"""Odd input from outside: every one a 4xx in the JSON envelope, never a 500."""
from __future__ import annotations

import pytest

from backend import metrics
from backend.auth.users import create_user
from backend.extensions import db
from backend.models import AuditEvent
from tests.conftest import bearer

NESTED = "[" * 100_000 + "]" * 100_000
NESTED_OBJECT = '{"username": ' + "[" * 50_000 + "]" * 50_000 + ', "password": "x"}'


@pytest.mark.parametrize("body", [NESTED, NESTED_OBJECT])
def test_deeply_nested_json_is_400(sqlite_app, body):
    client = sqlite_app.test_client()
    for path, headers in (("/api/auth/login", {}), ("/api/database/test", bearer(sqlite_app, "admin"))):
        response = client.post(path, data=body, content_type="application/json", headers=headers)
        assert response.status_code == 400, (path, response.get_data()[:300])
        assert response.json["code"] == "bad_request"


def test_lone_surrogates_are_400(sqlite_app):
    client = sqlite_app.test_client()
    for path, headers in (("/api/auth/login", {}), ("/api/database/test", bearer(sqlite_app, "admin"))):
        for body in ('{"username": "\\ud800", "password": "x"}', '{"query": "SELECT \'\\udfff\'"}', '{"\\ud800": 1}'):
            response = client.post(path, data=body, content_type="application/json", headers=headers)
            assert response.status_code == 400, (path, body, response.get_data()[:300])
            assert response.json["code"] == "bad_request"


def test_nul_bytes_and_long_request_ids_on_login_and_audit(app):
    client = app.test_client()
    with app.app_context():
        create_user("alice", "correct horse", "admin")
    response = client.post("/api/auth/login", json={"username": "ali\x00ce", "password": "correct horse"})
    assert response.status_code == 401 and response.json["code"] == "invalid_credentials"
    response = client.post("/api/auth/login", json={"username": "alice", "password": "correct\x00horse"})
    assert response.status_code == 401 and response.json["code"] == "invalid_credentials"
    long_id = "a" * 100
    response = client.post(
        "/api/auth/login", json={"username": "alice", "password": "correct horse"}, headers={"X-Request-ID": long_id}
    )
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] != long_id and len(response.headers["X-Request-ID"]) <= 64
    admin = {"Authorization": f"Bearer {response.json['data']['access_token']}", "X-Request-ID": "b" * 128}
    assert client.post("/api/database/test", headers=admin).status_code == 200
    assert client.post("/api/database/reconnect", headers=admin).status_code == 200
    response = client.get("/api/database/audit?action=lo%00gin", headers=admin)
    assert response.status_code == 400 and response.json["code"] == "invalid_parameter"
    events = client.get("/api/database/audit", headers=admin).json["data"]["events"]
    assert [e["action"] for e in events] == ["reconnect", "test", "login", "login", "login"]
    assert {"actor", "action", "target", "outcome", "request_id", "at"} <= set(events[0])
    assert events[-1]["actor"] == "ali\\x00ce"


@pytest.mark.parametrize("raw", ["%C2%B2", "abc", "0", "1001", "-1", "1.5", "", "%00"])
def test_audit_limit_is_1_to_1000(sqlite_app, raw):
    response = sqlite_app.test_client().get(f"/api/database/audit?limit={raw}", headers=bearer(sqlite_app, "admin"))
    assert response.status_code == 400, response.json
    assert response.json["code"] == "invalid_parameter"


def test_audit_default_is_100_newest_first(sqlite_app):
    with sqlite_app.app_context():
        db.session.add_all([AuditEvent(action="test", outcome="ok", actor=f"u{n}") for n in range(130)])
        db.session.commit()
    client = sqlite_app.test_client()
    admin = bearer(sqlite_app, "admin")
    events = client.get("/api/database/audit", headers=admin).json["data"]["events"]
    assert len(events) == 100 and events[0]["actor"] == "u129"
    assert len(client.get("/api/database/audit?limit=1000", headers=admin).json["data"]["events"]) == 130
    assert len(client.get("/api/database/audit?limit=1", headers=admin).json["data"]["events"]) == 1


@pytest.mark.parametrize(
    "given, kept",
    [("a" * 64, True), ("a" * 65, False), ("trace-1.x_Y", True), ("a:b", False), ("a b", False), ("é", False)],
)
def test_request_id_is_1_to_64_safe_characters(sqlite_app, given, kept):
    response = sqlite_app.test_client().get("/nope", headers={"X-Request-ID": given})
    assert response.status_code == 404
    assert (response.headers["X-Request-ID"] == given) is kept
    assert response.json["request_id"] == response.headers["X-Request-ID"]


def test_made_up_methods_share_one_metrics_label(sqlite_app):
    client = sqlite_app.test_client()
    for number in range(30):
        assert client.open("/livez", method=f"BREW{number}").status_code == 405
        assert client.get(f"/no/such/page/{number}").status_code == 404
    text = metrics.exposition().decode()
    assert "BREW" not in text
    assert "/no/such/page" not in text
    assert 'method="other",route="<unmatched>",status="405"' in text


def test_readyz_serves_while_the_database_is_down(make_app):
    down = "postgresql://nobody:pw@127.0.0.1:9/none"
    app = make_app(migrate=False, DATABASE_URL=down, DB_HEALTH_TIMEOUT=2)
    response = app.test_client().get("/readyz")
    assert response.status_code == 200 and response.json == {"success": True, "data": {"status": "ready"}}
    strict = make_app(migrate=False, DATABASE_URL=down, DB_HEALTH_TIMEOUT=2, DB_READYZ_CHECKS_DATABASE="true")
    response = strict.test_client().get("/readyz")
    assert response.status_code == 503 and response.json["code"] == "not_ready"
    assert set(response.json) == {"success", "code", "error", "message", "request_id"}


def test_readyz_checking_the_database_is_200_while_it_answers(make_app):
    app = make_app(DB_READYZ_CHECKS_DATABASE="true")
    assert app.test_client().get("/readyz").status_code == 200


def test_info_and_health_agree_on_the_database_type(make_app):
    from tests.conftest import create_database

    url, drop = create_database("mariadb")
    try:
        app = make_app(DATABASE_URL=url.replace("mariadb://", "mysql+pymysql://"))
        client = app.test_client()
        viewer = bearer(app)
        info = client.get("/api/database/info", headers=viewer).json["data"]
        health = client.get("/api/database/health", headers=viewer).json["data"]
        assert info["database_type"] == health["database_type"] == "mariadb"
    finally:
        drop()
