"""The factory's promises: JSON errors everywhere, request ids, /livez, and starting while the database is down."""
from __future__ import annotations

import json

import pytest
from flask import Blueprint


def test_livez(sqlite_app):
    response = sqlite_app.test_client().get("/livez")
    assert response.status_code == 200
    assert response.json == {"success": True, "data": {"status": "alive"}}


@pytest.mark.parametrize(
    "method, path, status, code",
    [
        ("get", "/no/such/page", 404, "not_found"),
        ("post", "/livez", 405, "method_not_allowed"),
        ("get", "/api/auth/login", 405, "method_not_allowed"),
    ],
)
def test_routing_errors_are_json(sqlite_app, method, path, status, code):
    response = getattr(sqlite_app.test_client(), method)(path)
    assert response.status_code == status
    assert response.is_json
    body = response.json
    assert body["success"] is False and body["code"] == code
    assert body["error"] and body["message"]
    assert body["request_id"] == response.headers["X-Request-ID"]


def test_405_keeps_the_allow_header(sqlite_app):
    response = sqlite_app.test_client().delete("/livez")
    assert "GET" in response.headers["Allow"]


def test_oversized_body_is_413_json(sqlite_app):
    response = sqlite_app.test_client().post(
        "/api/auth/login", data=b"x" * (2 * 1024 * 1024), content_type="application/json"
    )
    assert response.status_code == 413
    assert response.json["code"] == "payload_too_large"


def test_non_json_body_is_415_and_non_object_is_400(sqlite_app):
    client = sqlite_app.test_client()
    response = client.post("/api/auth/login", data="username=a", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415 and response.json["code"] == "unsupported_media_type"
    response = client.post("/api/auth/login", data="[1, 2]", content_type="application/json")
    assert response.status_code == 400 and response.json["code"] == "bad_request"
    response = client.post("/api/auth/login", data="{not json", content_type="application/json")
    assert response.status_code == 400 and response.json["code"] == "bad_request"


def test_unhandled_exception_is_500_json_without_traceback(make_app, caplog):
    app = make_app()
    boom = Blueprint("boom", __name__)

    @boom.get("/boom")
    def explode():
        raise RuntimeError("secret internals at 10.0.0.7")

    app.register_blueprint(boom)
    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.json["code"] == "internal_error"
    text = json.dumps(response.json)
    assert "10.0.0.7" not in text and "Traceback" not in text
    assert any("secret internals" in (r.exc_text or "") for r in caplog.records if r.exc_info)


def test_request_id_is_taken_from_the_request_when_safe(sqlite_app):
    client = sqlite_app.test_client()
    response = client.get("/nope", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    assert response.json["request_id"] == "abc-123"
    response = client.get("/livez", headers={"X-Request-ID": "bad id with spaces"})
    assert response.headers["X-Request-ID"] != "bad id with spaces"
    assert len(response.headers["X-Request-ID"]) == 32


def test_app_starts_while_the_database_is_down(make_app):
    app = make_app(migrate=False, DATABASE_URL="postgresql://nobody:pw@127.0.0.1:9/none", DB_HEALTH_TIMEOUT=2)
    client = app.test_client()
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200  # SPEC 6: ready while the instance can serve
