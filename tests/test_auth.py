"""Operators' access: every failure code produced for real, roles, revocation, and the CLI."""
from __future__ import annotations

import base64
import json

import jwt as pyjwt
import pytest
import sqlalchemy as sa

from backend.auth.users import create_user
from backend.extensions import db
from backend.models import AuditEvent, RevokedToken, User
from tests.conftest import bearer
from tests.faults import wait_for

VIEWER_ROUTES = [("get", "/api/database/health"), ("get", "/api/database/info"), ("get", "/api/database/status")]
ADMIN_ROUTES = [("post", "/api/database/test"), ("post", "/api/database/reconnect"), ("get", "/api/database/audit")]


def add_user(app, name="alice", password="correct horse", role="admin"):
    with app.app_context():
        create_user(name, password, role)


def login(client, username, password):
    return client.post("/api/auth/login", json={"username": username, "password": password})


def audit_actions(app):
    with app.app_context():
        return [(e.action, e.outcome, e.actor) for e in db.session.scalars(sa.select(AuditEvent).order_by(AuditEvent.id))]


def test_login_returns_a_token_that_works(app, client):
    add_user(app)
    response = login(client, "alice", "correct horse")
    assert response.status_code == 200
    data = response.json["data"]
    assert data["token_type"] == "Bearer" and data["role"] == "admin" and data["expires_in"] == 3600
    headers = {"Authorization": f"Bearer {data['access_token']}"}
    assert client.get("/api/database/info", headers=headers).status_code == 200
    with app.app_context():
        stored = db.session.scalar(sa.select(User.password_hash).where(User.username == "alice"))
    assert stored.startswith("scrypt:") and "correct horse" not in stored
    assert ("login", "ok", "alice") in audit_actions(app)


def test_unknown_user_wrong_password_and_inactive_user_get_the_same_401(app, client):
    add_user(app)
    add_user(app, "sleepy", "correct horse", "viewer")
    with app.app_context():
        db.session.execute(sa.update(User).where(User.username == "sleepy").values(active=False))
        db.session.commit()
    answers = [login(client, "nobody", "whatever1"), login(client, "alice", "wrong password"), login(client, "sleepy", "correct horse")]
    for response in answers:
        assert response.status_code == 401
        assert response.json["code"] == "invalid_credentials"
    assert len({(r.json["error"], r.json["message"]) for r in answers}) == 1
    assert [a for a in audit_actions(app) if a[0] == "login"] == [
        ("login", "denied", "nobody"), ("login", "denied", "alice"), ("login", "denied", "sleepy")
    ]


def test_a_login_names_its_user_exactly_on_every_dialect(app, client):
    """MariaDB's collation finds "alice" for "ALICE" and "alice "; neither is alice's name."""
    add_user(app)
    for variant in ("ALICE", "alice ", "Alice"):
        response = login(client, variant, "correct horse")
        assert response.status_code == 401 and response.json["code"] == "invalid_credentials", variant
    assert login(client, "alice", "correct horse").status_code == 200


def test_login_needs_both_fields(app, client):
    response = client.post("/api/auth/login", json={"username": "alice"})
    assert response.status_code == 400


def test_no_token_is_auth_required(client):
    response = client.get("/api/database/health")
    assert response.status_code == 401
    assert response.json["code"] == "auth_required"


def _forge(payload: dict, header: dict, key: bytes = b"") -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(payload)}.{base64.urlsafe_b64encode(key).rstrip(b'=').decode()}"


@pytest.mark.parametrize("kind", ["garbage", "other_key", "alg_none", "tampered", "hs512"])
def test_bad_tokens_are_invalid_token(sqlite_app, kind):
    client = sqlite_app.test_client()
    good = bearer(sqlite_app, "viewer")["Authorization"].split()[1]
    claims = pyjwt.decode(good, options={"verify_signature": False})
    if kind == "garbage":
        token = "not.a.token"
    elif kind == "other_key":
        token = pyjwt.encode(claims, "another-secret-that-is-long-enough-1234", algorithm="HS256")
    elif kind == "alg_none":
        token = _forge({**claims, "role": "admin"}, {"alg": "none", "typ": "JWT"})
    elif kind == "hs512":
        token = pyjwt.encode(claims, sqlite_app.config["JWT_SECRET_KEY"], algorithm="HS512")
    else:
        header, _, signature = good.split(".")
        token = ".".join([header, _forge({**claims, "role": "admin"}, {}).split(".")[1], signature])
    response = client.get("/api/database/health", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json["code"] == "invalid_token"


def test_expired_token(sqlite_app):
    headers = bearer(sqlite_app, "viewer", expires_in=1)
    client = sqlite_app.test_client()
    response = wait_for(lambda: (r := client.get("/api/database/info", headers=headers)).status_code != 200 and r,
                        "the token to expire", timeout=5, interval=0.05)
    assert response.status_code == 401
    assert response.json["code"] == "token_expired"


def test_logout_revokes_everywhere_and_survives_restart(app, make_app, database_url):
    add_user(app, "alice", "correct horse", "viewer")
    client = app.test_client()
    token = login(client, "alice", "correct horse").json["data"]["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    other = make_app(migrate=False, DATABASE_URL=database_url, JWT_SECRET_KEY=None)
    other.config["JWT_SECRET_KEY"] = app.config["JWT_SECRET_KEY"]  # a second worker of the same deployment
    assert other.test_client().get("/api/database/info", headers=headers).status_code == 200

    response = client.post("/api/auth/logout", headers=headers)
    assert response.status_code == 200
    assert client.get("/api/database/info", headers=headers).json["code"] == "token_revoked"

    # The other process learns of it within the refresh interval, without a round trip per request.
    wait_for(lambda: other.test_client().get("/api/database/info", headers=headers).status_code != 200,
             "the revocation to reach the second app", timeout=10, interval=0.2)
    assert other.test_client().get("/api/database/info", headers=headers).json["code"] == "token_revoked"

    restarted = make_app(migrate=False, DATABASE_URL=database_url)
    restarted.config["JWT_SECRET_KEY"] = app.config["JWT_SECRET_KEY"]
    assert restarted.test_client().get("/api/database/info", headers=headers).json["code"] == "token_revoked"
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(RevokedToken)) == 1


@pytest.mark.parametrize("method, path", ADMIN_ROUTES)
def test_viewer_is_forbidden_on_admin_routes(sqlite_app, method, path):
    response = getattr(sqlite_app.test_client(), method)(path, headers=bearer(sqlite_app, "viewer"))
    assert response.status_code == 403
    assert response.json["code"] == "forbidden"


@pytest.mark.parametrize("method, path", VIEWER_ROUTES + ADMIN_ROUTES)
def test_admin_may_use_every_route(sqlite_app, method, path):
    response = getattr(sqlite_app.test_client(), method)(path, headers=bearer(sqlite_app, "admin"))
    assert response.status_code == 200, response.json


@pytest.mark.parametrize("method, path", VIEWER_ROUTES)
def test_viewer_may_read(sqlite_app, method, path):
    response = getattr(sqlite_app.test_client(), method)(path, headers=bearer(sqlite_app, "viewer"))
    assert response.status_code == 200


def test_cli_create_user_then_login(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["auth", "create-user", "carol", "--role", "viewer", "--password-stdin"], input="long enough pw\n")
    assert result.exit_code == 0, result.output
    assert login(app.test_client(), "carol", "long enough pw").json["data"]["role"] == "viewer"
    again = runner.invoke(args=["auth", "create-user", "carol", "--role", "viewer", "--password-stdin"], input="long enough pw\n")
    assert again.exit_code == 1 and "already exists" in again.output
    listed = runner.invoke(args=["auth", "list-users"])
    assert "carol\tviewer\tactive" in listed.output


def test_cli_create_user_prompts_twice(sqlite_app):
    runner = sqlite_app.test_cli_runner()
    result = runner.invoke(args=["auth", "create-user", "dave", "--role", "admin"], input="s3cret-pass\ns3cret-pass\n")
    assert result.exit_code == 0, result.output
    short = runner.invoke(args=["auth", "create-user", "erin", "--role", "admin", "--password-stdin"], input="short\n")
    assert short.exit_code == 1 and "at least 8" in short.output


def test_cli_issue_token_prints_only_the_token_and_revoke_works(sqlite_app):
    runner = sqlite_app.test_cli_runner()
    result = runner.invoke(args=["auth", "issue-token", "prometheus", "--role", "viewer", "--expires-in", "86400"])
    assert result.exit_code == 0
    token = result.stdout.strip()
    assert token.count(".") == 2 and "\n" not in token
    claims = pyjwt.decode(token, sqlite_app.config["JWT_SECRET_KEY"], algorithms=["HS256"])
    assert claims["role"] == "viewer" and claims["sub"] == "prometheus" and claims["exp"] - claims["iat"] == 86400
    client = sqlite_app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/database/health", headers=headers).status_code == 200
    assert runner.invoke(args=["auth", "revoke", claims["jti"]]).exit_code == 0
    assert client.get("/api/database/health", headers=headers).json["code"] == "token_revoked"
    assert [a[0] for a in audit_actions(sqlite_app)] == ["token_issued", "token_revoked"]


def test_cli_rejects_bad_role(sqlite_app):
    result = sqlite_app.test_cli_runner().invoke(args=["auth", "issue-token", "x", "--role", "root"])
    assert result.exit_code == 2
