"""Token claims and flask-jwt-extended's context: every odd token is a 401, never a 500."""
from __future__ import annotations

import time
import uuid

import jwt as pyjwt
import pytest
from flask import Blueprint
from flask_jwt_extended import get_jwt, get_jwt_identity

from backend.auth.tokens import protect
from tests.conftest import bearer

GOOD = {"sub": "monitor", "role": "viewer", "type": "access", "fresh": False}


def signed(app, **claims) -> dict[str, str]:
    """A token signed with the app's own key carrying exactly ``claims`` (None drops one)."""
    payload = {**GOOD, "jti": uuid.uuid4().hex, "iat": int(time.time()), "exp": int(time.time()) + 600}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    token = pyjwt.encode(payload, app.config["JWT_SECRET_KEY"], algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": None},
        {"jti": None},
        {"sub": None},
        {"role": None},
        {"exp": "9999999999"},
        {"exp": [9999999999]},
        {"exp": float("inf")},
        {"iat": float("inf")},
        {"jti": 12345},
        {"jti": ""},
        {"jti": {"a": 1}},
        {"sub": 7},
        {"role": ["admin"]},
        {"role": "root"},
        {"jti": "a\x00b"},
        {"jti": "j" * 65},
        {"sub": "\ud800"},
        {"sub": "s" * 81},
        {"exp": 10**400},
    ],
    ids=repr,
)
def test_tokens_missing_or_odd_claims_are_invalid_token(sqlite_app, claims):
    client = sqlite_app.test_client()
    headers = signed(sqlite_app, **claims)
    for path in ("/api/database/info", "/api/database/info", "/api/auth/logout"):  # twice: the verified-token cache
        method = client.post if path.endswith("logout") else client.get
        response = method(path, headers=headers)
        assert response.status_code == 401, (path, response.json)
        assert response.json["code"] == "invalid_token"


def test_a_well_formed_foreign_signed_token_still_works(sqlite_app):
    client = sqlite_app.test_client()
    headers = signed(sqlite_app)
    assert client.get("/api/database/info", headers=headers).status_code == 200
    assert client.get("/api/database/info", headers=headers).status_code == 200


def test_flask_jwt_extended_context_is_valid_on_every_request(make_app):
    app = make_app()
    probe = Blueprint("whoami", __name__, url_prefix="/whoami")
    protect(probe)

    @probe.get("/")
    def whoami():
        return {"sub": get_jwt_identity(), "role": get_jwt()["role"]}

    app.register_blueprint(probe)
    client = app.test_client()
    headers = bearer(app, "admin", identity="ops")
    for _ in range(3):  # the first request verifies, the next ones come from the cache
        response = client.get("/whoami/", headers=headers)
        assert response.status_code == 200, response.json
        assert response.json == {"sub": "ops", "role": "admin"}


@pytest.mark.parametrize("path", ["/api/database/health", "/api/database/info", "/api/database/test", "/api/database/audit"])
def test_options_without_a_token_is_not_a_500(sqlite_app, path):
    response = sqlite_app.test_client().options(path)
    assert response.status_code == 200
    assert "GET" in response.headers["Allow"] or "POST" in response.headers["Allow"]
    assert not response.get_data()  # nothing but the allowed methods


def test_logout_twice_with_the_same_token(sqlite_app):
    client = sqlite_app.test_client()
    headers = bearer(sqlite_app, "viewer")
    assert client.post("/api/auth/logout", headers=headers).status_code == 200
    again = client.post("/api/auth/logout", headers=headers)
    assert again.status_code == 401 and again.json["code"] == "token_revoked"


def test_issue_token_refuses_an_identity_no_token_may_carry(sqlite_app):
    result = sqlite_app.test_cli_runner().invoke(args=["auth", "issue-token", "x" * 81])
    assert result.exit_code == 2 and "1-80 characters" in result.output
