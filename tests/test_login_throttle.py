"""Failed logins are throttled per (username, client address) and per address, never for everyone."""
from __future__ import annotations

import pytest

from backend.auth.users import create_user


def login(client, username, password, address="203.0.113.7", headers=None):
    return client.post(
        "/api/auth/login",
        json={"username": username, "password": password},
        environ_base={"REMOTE_ADDR": address},
        headers=headers or {},
    )


@pytest.fixture
def throttled(make_app):
    app = make_app(AUTH_LOGIN_LIMIT="3/minute")
    with app.app_context():
        create_user("alice", "correct horse", "admin")
        create_user("bob", "battery staple", "viewer")
    return app


def test_failures_per_user_and_address_are_throttled_with_retry_after(throttled):
    client = throttled.test_client()
    assert login(client, "alice", "correct horse").status_code == 200  # successes cost nothing
    for _ in range(3):
        assert login(client, "alice", "wrong").status_code == 401
    response = login(client, "alice", "wrong")
    assert response.status_code == 429
    body = response.json
    assert body["success"] is False and body["code"] == "too_many_attempts"
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert body["retry_after"] == int(response.headers["Retry-After"])
    # Throttled means throttled: the right password waits too, or a guess could still be tested.
    assert login(client, "alice", "correct horse").status_code == 429
    # Nobody can lock alice out from every address, and bob is not locked out from this one.
    assert login(client, "alice", "correct horse", address="198.51.100.9").status_code == 200
    assert login(client, "bob", "battery staple").status_code == 200


def test_failures_per_address_are_three_times_the_budget(throttled):
    client = throttled.test_client()
    for number in range(9):  # nine different names, each under its own budget of 3
        assert login(client, f"user{number}", "guess").status_code == 401
    response = login(client, "user9", "guess")
    assert response.status_code == 429 and response.json["code"] == "too_many_attempts"
    assert login(client, "user9", "guess", address="198.51.100.9").status_code == 401


def test_forwarded_for_is_ignored_without_trusted_proxies(throttled):
    client = throttled.test_client()
    for number in range(3):
        assert login(client, "alice", "wrong", headers={"X-Forwarded-For": f"10.0.0.{number}"}).status_code == 401
    assert login(client, "alice", "wrong", headers={"X-Forwarded-For": "10.0.0.99"}).status_code == 429


def test_trusted_proxies_give_the_client_address(make_app):
    app = make_app(AUTH_LOGIN_LIMIT="2/minute", TRUSTED_PROXIES="1")
    client = app.test_client()
    proxy = "192.0.2.1"
    for _ in range(2):
        assert login(client, "alice", "wrong", proxy, {"X-Forwarded-For": "203.0.113.50"}).status_code == 401
    assert login(client, "alice", "wrong", proxy, {"X-Forwarded-For": "203.0.113.50"}).status_code == 429
    # Another client behind the same proxy has its own budget; a spoofed first hop is not trusted.
    assert login(client, "alice", "wrong", proxy, {"X-Forwarded-For": "203.0.113.51"}).status_code == 401
    spoofed = {"X-Forwarded-For": "203.0.113.50, 203.0.113.52"}
    assert login(client, "alice", "wrong", proxy, spoofed).status_code == 401
    admin = app.test_client()
    from tests.conftest import bearer

    events = admin.get("/api/database/audit?action=login", headers=bearer(app, "admin")).json["data"]["events"]
    assert {e["remote_addr"] for e in events} == {"203.0.113.50", "203.0.113.51", "203.0.113.52"}


def test_a_flood_of_failures_does_not_reach_the_password_hash(throttled, caplog):
    client = throttled.test_client()
    answers = [login(client, "alice", f"guess{n}").status_code for n in range(40)]
    assert answers.count(401) == 3 and answers.count(429) == 37
