"""The operator's view (SPEC 10): sessions, blocking chains, cancel and terminate.

Each situation is built for real on PostgreSQL and MariaDB with connections of
the test's own: a transaction left idle, a row lock with waiters, a long sleep
to cancel, a session to terminate, a session of another database user.
"""
from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import admin_engine, bearer, create_database
from tests.faults import Proxy, wait_for

SESSION_FIELDS = {
    "pid", "user", "application", "client_addr", "state", "backend_start", "transaction_start", "query_start",
    "duration_s", "wait_event", "blocked_by", "query",
}
SUMMARY_FIELDS = {
    "supported", "component", "max_connections", "total", "by_state", "by_application", "by_user",
    "oldest_transaction_s", "sessions",
}
STATES = {"active", "idle", "idle_in_transaction", "idle_in_transaction_aborted", "other"}


class Server:
    """The service on a fresh database of a shared server, and connections of the test's own."""

    def __init__(self, kind: str, url: str, make_app, **settings: Any):
        self.kind, self.url = kind, url
        self.app = make_app(DATABASE_URL=url, **settings)
        self.client = self.app.test_client()
        self.admin = bearer(self.app, "admin", "ops-admin")
        self.viewer = bearer(self.app, "viewer", "ops-viewer")
        self.engines: list[sa.Engine] = []

    def engine(self, user: str | None = None, application: str | None = None) -> sa.Engine:
        url = sa.make_url(self.url)
        url = url.set(drivername="postgresql+psycopg2" if self.kind == "postgresql" else "mariadb+pymysql")
        if user:
            url = url.set(username=user)
        args = {"application_name": application} if application and self.kind == "postgresql" else {}
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args=args)
        self.engines.append(engine)
        return engine

    def pid(self, connection: sa.Connection) -> int:
        sql = "SELECT pg_backend_pid()" if self.kind == "postgresql" else "SELECT CONNECTION_ID()"
        return int(connection.exec_driver_sql(sql).scalar())

    def get(self, path: str, role: str = "viewer"):
        return self.client.get(f"/api/database{path}", headers=self.admin if role == "admin" else self.viewer)

    def post(self, path: str, role: str = "admin", **kwargs):
        return self.client.post(f"/api/database{path}", headers=self.admin if role == "admin" else self.viewer, **kwargs)

    def session(self, pid: int, role: str = "admin") -> dict[str, Any] | None:
        response = self.get("/sessions", role)
        assert response.status_code == 200, response.json
        return next((s for s in response.json["data"]["sessions"] if s["pid"] == pid), None)

    def close(self) -> None:
        for engine in self.engines:
            engine.dispose()


@pytest.fixture(params=["postgresql", "mariadb"])
def served(request, make_app):
    """Build the service on a new database of the shared server; dropped afterwards."""
    kind = request.param
    url, drop = create_database(kind)
    servers: list[Server] = []

    def make(**settings: Any) -> Server:
        server = Server(kind, url, make_app, **settings)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()
    drop()


@pytest.fixture
def other_user(served):
    """A second database user of the shared server, allowed into the test's database."""
    server = served()
    name = f"ops_{uuid.uuid4().hex[:10]}"
    engine = admin_engine(server.kind)
    database = sa.make_url(server.url).database
    with engine.connect() as connection:
        if server.kind == "postgresql":
            connection.exec_driver_sql(f"CREATE ROLE {name} LOGIN")
        else:
            connection.exec_driver_sql(f"CREATE USER '{name}'@'127.0.0.1'")
            connection.exec_driver_sql(f"GRANT SELECT ON {database}.* TO '{name}'@'127.0.0.1'")
    yield name
    server.close()
    with engine.connect() as connection:
        if server.kind == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{name}'")
            connection.exec_driver_sql(f"DROP ROLE IF EXISTS {name}")
        else:
            connection.exec_driver_sql(f"DROP USER IF EXISTS '{name}'@'127.0.0.1'")
    engine.dispose()


def in_thread(work) -> dict[str, Any]:
    """Run ``work()`` in a thread; the dict gets its ``error`` and ``elapsed`` when it ends."""
    outcome: dict[str, Any] = {}

    def run():
        started = time.monotonic()
        try:
            outcome["result"] = work()
        except Exception as error:  # the test inspects what the statement saw
            outcome["error"] = error
        outcome["elapsed"] = time.monotonic() - started

    outcome["thread"] = threading.Thread(target=run, daemon=True)
    outcome["thread"].start()
    return outcome


def make_table(server: Server, rows: int = 2) -> None:
    with server.engine().begin() as connection:
        connection.exec_driver_sql("CREATE TABLE ops_rows (id INTEGER PRIMARY KEY, v INTEGER)")
        for i in range(1, rows + 1):
            connection.exec_driver_sql(f"INSERT INTO ops_rows VALUES ({i}, 0)")


def set_lock_timeout(server: Server, connection: sa.Connection) -> None:
    if server.kind == "postgresql":
        connection.exec_driver_sql("SET lock_timeout = '30s'")
    else:
        connection.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 30")


def test_sessions_idle_in_transaction_text_for_admins_only_and_filters(served):
    server = served()
    make_table(server)
    marker = f"ops_marker_{uuid.uuid4().hex[:8]}"
    application = f"ops-test-{uuid.uuid4().hex[:6]}"
    with server.engine(application=application).connect() as idle:
        pid = server.pid(idle)
        idle.exec_driver_sql(f"UPDATE ops_rows SET v = 1 WHERE id = 1 /* {marker} */")  # opens a transaction, left idle

        admin = wait_for(lambda: (s := server.session(pid)) and s["state"] == "idle_in_transaction" and s)
        assert SESSION_FIELDS <= set(admin)
        assert admin["client_addr"] == "127.0.0.1"
        if server.kind == "postgresql":  # its last statement; the MySQL family shows only a running one
            assert marker in admin["query"]
        assert admin["user"] == sa.make_url(server.url).username
        assert admin["transaction_start"].endswith("Z") and admin["duration_s"] >= 0 and admin["blocked_by"] == []
        if server.kind == "postgresql":
            assert admin["application"] == application and admin["backend_start"].endswith("Z")
        else:  # the MySQL family does not say when a connection opened, nor (without performance_schema) who
            assert admin["application"] is None and admin["backend_start"] is None

        response = server.get("/sessions")
        assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
        data = response.json["data"]
        assert SUMMARY_FIELDS <= set(data) and data["supported"] is True and data["component"] == "primary"
        assert set(data["by_state"]) == STATES and data["by_state"]["idle_in_transaction"] >= 1
        # The counts come from one read and the list from another: sessions may come and go in between.
        assert data["total"] == sum(data["by_state"].values()) and len(data["sessions"]) >= 1
        assert data["max_connections"] > 0 and data["oldest_transaction_s"] >= 0
        assert data["by_user"][admin["user"]] >= 1
        assert all(s["state"] in STATES for s in data["sessions"]) and len(data["sessions"]) <= 200
        durations = [s["duration_s"] for s in data["sessions"]]
        assert durations == sorted(durations, reverse=True)
        viewer = next(s for s in data["sessions"] if s["pid"] == pid)
        assert viewer["query"] is None and viewer["client_addr"] is None and viewer["user"] == admin["user"]
        assert all(s["query"] is None and s["client_addr"] is None for s in data["sessions"])

        def pids(query: str) -> set[int]:
            answer = server.get(f"/sessions?{query}")
            assert answer.status_code == 200, answer.json
            return {s["pid"] for s in answer.json["data"]["sessions"]}

        assert pid in pids("state=idle_in_transaction") and pid not in pids("state=active")
        assert pid in pids("min_duration_s=0") and pids("min_duration_s=100000000") == set()
        if server.kind == "postgresql":
            assert pids(f"application={application}") == {pid}
        else:
            assert pid not in pids(f"application={application}")
        for query in (
            "state=busy", "min_duration_s=abc", "min_duration_s=-1", "min_duration_s=nan", "component=nope",
            "application=ops%00test",  # PostgreSQL refuses a NUL in a string: this was a 500
        ):
            bad = server.get(f"/sessions?{query}")
            assert bad.status_code == 400 and bad.json["code"] == "invalid_parameter", query
        idle.rollback()


def test_blocking_chain_as_a_forest(served):
    server = served()
    make_table(server)
    holder = server.engine().connect()
    middle = server.engine().connect()
    last = server.engine().connect()
    waits: list[dict[str, Any]] = []
    try:
        a, b, c = server.pid(holder), server.pid(middle), server.pid(last)
        for connection in (middle, last):
            set_lock_timeout(server, connection)
        holder.exec_driver_sql("UPDATE ops_rows SET v = 1 WHERE id = 1")
        middle.exec_driver_sql("UPDATE ops_rows SET v = 2 WHERE id = 2")
        waits += [
            in_thread(lambda: middle.exec_driver_sql("UPDATE ops_rows SET v = 2 WHERE id = 1")),
            in_thread(lambda: last.exec_driver_sql("UPDATE ops_rows SET v = 3 WHERE id = 2")),
        ]

        def chain(role: str):
            response = server.get("/locks", role)
            assert response.status_code == 200, response.json
            found = [c for c in response.json["data"]["chains"] if c["pid"] == a]
            return found and found[0]["blocks"] and found[0]["blocks"][0]["blocks"] and (response.json["data"], found[0])

        data, root = wait_for(lambda: chain("viewer"))
        assert data["supported"] is True and data["waiting_total"] >= 2 and data["longest_wait_s"] >= 0
        assert root["state"] == "idle_in_transaction" and root["transaction_age_s"] >= 0 and root["query"] is None
        (second,) = root["blocks"]
        assert second["pid"] == b and second["waiting_s"] >= 0 and second["query"] is None
        assert second["lock_type"] and second["mode"] and "ops_rows" in second["relation"]
        (third,) = second["blocks"]
        assert third["pid"] == c and third["blocks"] == [] and "ops_rows" in third["relation"]
        _, root = chain("admin")
        assert "UPDATE ops_rows" in root["blocks"][0]["query"] and "v = 3" in root["blocks"][0]["blocks"][0]["query"]
        assert server.session(b)["blocked_by"] == [a] and server.session(c)["blocked_by"] == [b]
        assert server.session(a)["blocked_by"] == []
    finally:  # release in order: each waiter gets its lock, then lets go of its own
        for connection, wait in zip((holder, middle, last), [*waits, None]):
            connection.rollback()
            if wait:
                wait["thread"].join(30)
        for connection in (holder, middle, last):
            connection.close()
    assert wait_for(lambda: not [c for c in server.get("/locks").json["data"]["chains"] if c["pid"] == a])


def sleep_sql(server: Server, seconds: int) -> str:
    return f"SELECT pg_sleep({seconds})" if server.kind == "postgresql" else f"SELECT SLEEP({seconds})"


def audit_events(server: Server, action: str) -> list[dict[str, Any]]:
    response = server.get(f"/audit?action={action}&limit=20", "admin")
    assert response.status_code == 200
    return response.json["data"]["events"]


def test_cancel_a_long_statement_audited(served):
    server = served()
    with server.engine().connect() as sleeper:
        pid = server.pid(sleeper)
        outcome = in_thread(lambda: sleeper.exec_driver_sql(sleep_sql(server, 60)).all())
        session = wait_for(lambda: (s := server.session(pid)) and s["state"] == "active" and s)
        assert "sleep" in session["query"].lower() and session["query_start"].endswith("Z")
        assert server.post(f"/sessions/{pid}/cancel", role="viewer").status_code == 403

        response = server.post(f"/sessions/{pid}/cancel", json={"backend_start": session["backend_start"]})
        assert response.status_code == 200, response.json
        data = response.json["data"]
        assert data["action"] == "cancel" and data["pid"] == pid and data["signalled"] is True
        outcome["thread"].join(20)
        assert not outcome["thread"].is_alive() and outcome["elapsed"] < 20
        assert wait_for(lambda: (s := server.session(pid)) and s["state"] != "active")  # cancelled, not ended
        sleeper.rollback()
        assert sleeper.exec_driver_sql("SELECT 1").scalar() == 1

    (event,) = [e for e in audit_events(server, "session_cancel") if e["target"] == f"primary:{pid}"]
    assert event["outcome"] == "ok" and event["actor"] == "ops-admin"
    assert event["detail"]["user"] == session["user"] and "sleep" in event["detail"]["query"].lower()
    assert "application" in event["detail"] and event["detail"]["backend_start"] == session["backend_start"]


def test_terminate_guards_and_bad_input(served):
    server = served()
    victim = server.engine(application="ops-victim").connect()
    pid = server.pid(victim)
    session = wait_for(lambda: server.session(pid))
    try:
        stale = "2001-02-03T04:05:06.000007Z"
        changed = server.post(f"/sessions/{pid}/terminate", json={"backend_start": stale})
        assert changed.status_code == 409 and changed.json["code"] == "session_changed"
        assert server.session(pid) is not None
        for bad_pid in ("abc", "0", "-1", "1.5", "١٢", "99999999999999999999"):
            response = server.post(f"/sessions/{bad_pid}/terminate")
            assert response.status_code == 400 and response.json["code"] == "invalid_parameter", bad_pid
        for body in ({"backend_start": 5}, {"backend_start": "yesterday"}, {"pid": 1}, [1]):
            response = server.post(f"/sessions/{pid}/terminate", json=body)
            assert response.status_code == 400 and response.json["success"] is False, body
        response = server.post(f"/sessions/{pid}/terminate", data="{", content_type="application/json")
        assert response.status_code == 400
        missing = server.post("/sessions/2147483000/terminate")
        assert missing.status_code == 404 and missing.json["code"] == "session_not_found"

        response = server.post(f"/sessions/{pid}/terminate", json={"backend_start": session["backend_start"]})
        assert response.status_code == 200, response.json
        wait_for(lambda: server.session(pid) is None)
        with pytest.raises(sa.exc.DBAPIError):
            victim.exec_driver_sql("SELECT 1")
    finally:
        victim.invalidate()
        victim.close()
    outcomes = {e["outcome"] for e in audit_events(server, "session_terminate") if e["target"] == f"primary:{pid}"}
    assert outcomes == {"ok", "session_changed"}
    assert any(e["outcome"] == "session_not_found" for e in audit_events(server, "session_terminate"))


def test_kill_modes_and_the_service_own_connections(served, other_user):
    own = served()  # DB_SESSION_KILL=own is the default
    anyone = served(DB_SESSION_KILL="any")
    off = served(DB_SESSION_KILL="off")
    with own.engine(user=other_user).connect() as stranger, own.engine().connect() as colleague:
        stranger_pid, colleague_pid = own.pid(stranger), own.pid(colleague)
        wait_for(lambda: own.session(stranger_pid) and own.session(colleague_pid))

        refused = own.post(f"/sessions/{stranger_pid}/cancel")
        assert refused.status_code == 403 and refused.json["code"] == "kill_not_allowed"
        assert own.post(f"/sessions/{colleague_pid}/cancel").status_code == 200
        disabled = off.post(f"/sessions/{colleague_pid}/cancel")
        assert disabled.status_code == 403 and disabled.json["code"] == "kill_not_allowed"
        assert anyone.post(f"/sessions/{stranger_pid}/cancel").status_code == 200

        # The connection /sessions itself runs on, and the kept-open health probe, are never signalled.
        assert anyone.get("/health").json["data"]["status"] == "healthy"
        data = anyone.get("/sessions", "admin").json["data"]
        database = sa.make_url(anyone.url).database
        running = [s for s in data["sessions"] if s["state"] == "active" and s["database"] == database
                   and ("pg_stat_activity" in (s["query"] or "") or "PROCESSLIST" in (s["query"] or ""))]
        probe = anyone.app.extensions["dbhealth"].probe_connections[None].pooled.dbapi_connection
        probe_pid = probe.get_backend_pid() if anyone.kind == "postgresql" else probe.thread_id()
        for pid in {running[0]["pid"], probe_pid}:
            response = anyone.post(f"/sessions/{pid}/terminate")
            assert response.status_code == 403 and response.json["code"] == "kill_not_allowed", pid
        if anyone.kind == "postgresql":  # every worker's probe is known by its application name
            assert any(s["application"] == "dbhealth-probe" and s["pid"] == probe_pid for s in data["sessions"])
        assert anyone.get("/health?force=true").json["data"]["status"] == "healthy"

    events = audit_events(own, "session_cancel")
    assert {(e["target"], e["outcome"]) for e in events} >= {
        (f"primary:{stranger_pid}", "kill_not_allowed"), (f"primary:{colleague_pid}", "ok"),
        (f"primary:{stranger_pid}", "ok"),
    }
    assert all(e["detail"]["user"] in (other_user, sa.make_url(own.url).username) for e in events if e["outcome"] == "ok")


def test_sqlite_answers_unsupported_on_every_route(sqlite_app):
    client = sqlite_app.test_client()
    admin, viewer = bearer(sqlite_app, "admin"), bearer(sqlite_app, "viewer")
    for method, path, headers in (
        ("get", "/sessions", viewer), ("get", "/locks", viewer), ("get", "/sessions?state=idle", admin),
        ("post", "/sessions/1/cancel", admin), ("post", "/sessions/1/terminate", admin),
        ("post", "/sessions/abc/terminate", admin),
    ):
        response = getattr(client, method)(f"/api/database{path}", headers=headers)
        assert response.status_code == 200, (path, response.json)
        assert response.json["data"]["supported"] is False and "SQLite" in response.json["data"]["reason"]
    assert client.post("/api/database/sessions/1/cancel", headers=viewer).status_code == 403
    assert client.get("/api/database/sessions").status_code == 401


def test_a_frozen_server_is_503_within_the_deadline(make_app):
    url, drop = create_database("postgresql")
    proxy = Proxy(5432)
    try:
        app = make_app(DATABASE_URL=url.replace(":5432/", f":{proxy.port}/"), DB_HEALTH_TIMEOUT=1, DB_OPERATION_TIMEOUT=1)
        client, headers = app.test_client(), bearer(app, "admin")
        assert client.get("/api/database/sessions", headers=headers).status_code == 200
        proxy.set_mode("blackhole")
        for path in ("/api/database/sessions", "/api/database/locks"):
            started = time.monotonic()
            response = client.get(path, headers=headers)
            assert response.status_code == 503 and response.json["code"] == "db_unavailable", response.json
            assert time.monotonic() - started < 1 + 1.5  # DB_OPERATION_TIMEOUT, a margin for a busy machine
    finally:
        proxy.set_mode("pass")
        proxy.close()
        drop()
