"""The console's limits, on the real servers: time (cancelled on the server), memory, and its audit policy."""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest
import sqlalchemy as sa

from tests.conftest import bearer, create_database, drop_roles, engine_for, execute
from tests.console_support import SLOW, assert_nothing_left, kind_of, run
from tests.faults import Gunicorn, Proxy

SECRET = "console-limits-tests-secret-key-0123456789"


def test_a_timeout_stops_the_statement_on_the_server(make_app, database_url):
    app = make_app(DATABASE_URL=database_url, DB_STATEMENT_TIMEOUT_MS=1000, DB_OPERATION_TIMEOUT=2)
    client, headers = app.test_client(), bearer(app, "admin")
    for query in SLOW[kind_of(database_url)]:
        started = time.monotonic()
        response = run(client, headers, query)
        elapsed = time.monotonic() - started
        assert response.status_code == 504, (query, response.json)
        assert response.json["code"] == "query_timeout"
        assert elapsed < 1.0 + 2 + 1.0, (query, elapsed)  # the console's whole budget
        assert_nothing_left(database_url, within=1.0)  # nothing of it runs 1 s after its 504
    assert run(client, headers, "SELECT 1").status_code == 200


def _post(server: Gunicorn, headers: dict[str, str], body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        server.url + "/api/database/test", data=json.dumps(body).encode(), method="POST",
        headers={**headers, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _peak_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


ROW_BYTES = 10_000_000
MEMORY_ATTACKS = {
    # Thirty 10 MB rows: without streaming and cutting, 300 MB and more in the worker.
    "postgresql": (f"SELECT repeat('x', {ROW_BYTES}) FROM generate_series(1, 30)", 100),
    "mariadb": (f"SELECT repeat('x', {ROW_BYTES}) FROM seq_1_to_30", 1),
    # SQLite refuses to build a value above DB_CONSOLE_MAX_BYTES at all.
    "sqlite": ("SELECT length(hex(randomblob(100000000)))", 100),
}


@pytest.mark.parametrize("kind", ["postgresql", "mariadb", "sqlite"])
def test_a_workers_memory_does_not_grow_with_the_result(make_app, tmp_path, kind):
    """Peak memory of a gunicorn worker: DB_CONSOLE_MAX_BYTES plus about one row, whatever the rows."""
    if kind == "sqlite":
        url, drop = f"sqlite:///{tmp_path}/app.db", (lambda: None)
    else:
        url, drop = create_database(kind)
    server = None
    try:
        env = {
            "APP_ENV": "testing", "DATABASE_URL": url, "JWT_SECRET_KEY": SECRET,
            "INSTANCE_PATH": str(tmp_path / "instance"), "DB_HEALTH_CHECK_INTERVAL": "0",
            "DB_STATEMENT_TIMEOUT_MS": "20000",
        }
        headers = bearer(make_app(**env), "admin")
        server = Gunicorn(env, workers=1)
        (pid,) = server.worker_pids()
        assert _post(server, headers, {"query": "SELECT 1"})[0] == 200
        before = _peak_kib(pid)
        query, max_rows = MEMORY_ATTACKS[kind]
        status, body = _post(server, headers, {"query": query, "max_rows": max_rows})
        grown = (_peak_kib(pid) - before) * 1024
        if kind == "sqlite":
            assert status == 400 and "too big" in body["error"], body
        else:
            assert status == 200 and body["data"]["truncated"] is True, body
            assert len(body["data"]["rows"][0][0]) == 1048576  # the value cut to DB_CONSOLE_MAX_BYTES
        # The budget, and the row as the driver delivers it (its bytes, then its text): far below 30 rows.
        assert grown < 1048576 + 3 * ROW_BYTES + 8_000_000, grown
    finally:
        if server is not None:
            server.stop(quick=True)
        drop()


def test_rows_are_cut_at_max_bytes(make_app, database_url):
    app = make_app(DATABASE_URL=database_url, DB_CONSOLE_MAX_BYTES=1000)
    query = {
        "postgresql": "SELECT repeat('y', 300) FROM generate_series(1, 10)",
        "mariadb": "SELECT repeat('y', 300) FROM seq_1_to_10",
        "sqlite": "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 10) "
                  "SELECT substr(printf('%.300c', 'y'), 1, 300) FROM r",
    }[kind_of(database_url)]
    data = run(app.test_client(), bearer(app, "admin"), query).json["data"]
    assert data["truncated"] is True
    assert [len(row[0]) for row in data["rows"]] == [300, 300, 300, 100]


TRIGGERS = {
    "postgresql": [
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit full'; END $$",
        "CREATE TRIGGER refuse BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION refuse()",
    ],
    "mariadb": [
        "CREATE TRIGGER refuse BEFORE INSERT ON audit_events FOR EACH ROW SIGNAL SQLSTATE '45000' "
        "SET MESSAGE_TEXT = 'audit full'",
    ],
    "sqlite": ["CREATE TRIGGER refuse BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit full'); END"],
}


def test_no_audit_row_no_run(make_app, database_url):
    app = make_app(DATABASE_URL=database_url, DB_STATEMENT_TIMEOUT_MS=3000)
    engine = sa.create_engine(app.config["SQLALCHEMY_DATABASE_URI"], poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        for statement in TRIGGERS[kind_of(database_url)]:
            connection.exec_driver_sql(statement)
    engine.dispose()
    slow = SLOW[kind_of(database_url)][0]
    started = time.monotonic()
    response = run(app.test_client(), bearer(app, "admin"), slow)
    assert response.status_code == 503 and response.json["code"] == "db_unavailable", response.json
    assert "not run" in response.json["error"]
    assert time.monotonic() - started < 2.0  # the slow statement never started
    assert_nothing_left(database_url)


def test_an_overlong_request_id_does_not_lose_the_audit_row(app, database_url):
    client, headers = app.test_client(), bearer(app, "admin")
    request_id = "r" * 128
    response = run(client, {**headers, "X-Request-ID": request_id}, "SELECT 1")
    assert response.status_code == 200, response.json
    event = client.get("/api/database/audit?limit=1&action=test", headers=headers).json["data"]["events"][0]
    assert event["outcome"] == "ok" and 1 <= len(event["request_id"]) <= 64


def test_an_unbuffered_result_is_cut_not_drained(make_app):
    """MariaDB: a 1.6 GB result cut after its first row answers at once, and stops on the server."""
    url, drop = create_database("mariadb")
    try:
        app = make_app(DATABASE_URL=url, DB_STATEMENT_TIMEOUT_MS=20000)
        started = time.monotonic()
        response = run(app.test_client(), bearer(app, "admin"), "SELECT repeat('x', 16000000) FROM seq_1_to_100",
                       max_rows=1)
        assert response.status_code == 200 and response.json["data"]["truncated"] is True
        assert time.monotonic() - started < 3.0  # reading the other 99 rows would take several seconds
        assert_nothing_left(url, within=1.0)
    finally:
        drop()


def test_a_frozen_server_costs_no_more_than_the_budget(make_app):
    """The console's server stops answering, before the statement and during it: answered within the budget."""
    url, drop = create_database("postgresql")
    name = sa.make_url(url).database
    role = f"ro_{name.rsplit('_', 1)[1]}"
    execute(engine_for(url, isolation_level="AUTOCOMMIT"),
            f"CREATE ROLE {role} LOGIN", f"REVOKE TEMPORARY ON DATABASE {name} FROM PUBLIC")
    proxy = Proxy(5432)
    try:
        readonly = url.replace("postgres@", f"{role}@").replace(":5432/", f":{proxy.port}/")
        app = make_app(DATABASE_URL=url, DATABASE_READONLY_URL=readonly, DB_STATEMENT_TIMEOUT_MS=1000,
                       DB_OPERATION_TIMEOUT=2)
        client, headers = app.test_client(), bearer(app, "admin")
        assert run(client, headers, "SELECT 1").status_code == 200
        budget = 1.0 + 2 + 1.0 + 0.5  # statement + operation + 1 s, and a margin for a busy machine

        proxy.set_mode("blackhole")
        started = time.monotonic()
        response = run(client, headers, "SELECT 1")
        assert response.status_code in (503, 504) and time.monotonic() - started < budget, response.json

        proxy.set_mode("pass")
        result: dict = {}
        worker = threading.Thread(target=lambda: result.update(
            response=run(client, headers, "SELECT pg_sleep(0.3) FROM generate_series(1, 20)"), at=time.monotonic()))
        started = time.monotonic()
        worker.start()
        time.sleep(0.5)
        proxy.set_mode("blackhole")
        worker.join(10)
        assert result["response"].status_code == 504 and result["at"] - started < budget, result["response"].json
        events = client.get("/api/database/audit?limit=2&action=test", headers=headers).json["data"]["events"]
        assert [event["outcome"] for event in events] == ["query_timeout", "db_unavailable"]
    finally:
        proxy.close()
        drop()
        drop_roles("postgresql", role)
