"""POST /api/database/test: reads only, within limits, audited, on every dialect."""
from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from backend.console.checker import check_statement
from backend.errors import ApiError
from tests.conftest import admin_engine, bearer, create_database
from tests.console_support import SLOW, canary, kind_of, run  # noqa: F401  (canary: a fixture)


def test_default_query(client, admin):
    response = client.post("/api/database/test", headers=admin)
    assert response.status_code == 200
    data = response.json["data"]
    assert data["query"] == "SELECT 1"
    assert data["rows"] == [[1]] and data["row_count"] == 1 and data["truncated"] is False
    assert data["elapsed_ms"] >= 0 and len(data["columns"]) == 1


def test_reads_with_bound_parameters_and_truncation(client, admin, canary):
    response = run(client, admin, "SELECT id, name FROM canary WHERE id >= :low ORDER BY id", params={"low": 2})
    assert response.status_code == 200, response.json
    assert response.json["data"]["columns"] == ["id", "name"]
    assert response.json["data"]["rows"] == [[2, "two"], [3, "three"]]
    response = run(client, admin, "SELECT id FROM canary ORDER BY id", max_rows=2)
    data = response.json["data"]
    assert data["rows"] == [[1], [2]] and data["row_count"] == 2 and data["truncated"] is True
    injection = run(client, admin, "SELECT count(*) FROM canary WHERE name = :name", params={"name": "x' OR '1'='1"})
    assert injection.json["data"]["rows"] == [[0]]


WRITES = [
    "DROP TABLE canary",
    "DELETE FROM canary",
    "UPDATE canary SET name = 'x'",
    "INSERT INTO canary VALUES (9, 'nine')",
    "CREATE TABLE other (id INTEGER)",
    "TRUNCATE TABLE canary",
    "SELECT 1; DROP TABLE canary",
    "SELECT 1; DELETE FROM canary;",
    "SELECT * FROM canary FOR UPDATE",
    "select 1 /* a comment */ ; drop table canary",
    "SELECT * INTO canary_copy FROM canary",
    "ALTER TABLE canary ADD COLUMN x INTEGER",
    "EXPLAIN ANALYZE DELETE FROM canary",
]
POSTGRES_ONLY = [
    "WITH d AS (DELETE FROM canary RETURNING *) SELECT * FROM d",
    "SELECT pg_terminate_backend(pg_backend_pid())",
    "SELECT pg_cancel_backend(1)",
    "SELECT pg_reload_conf()",
    "SELECT pg_advisory_lock(1)",
    "SELECT set_config('statement_timeout', '0', false)",
    "SELECT pg_notify('x', 'y')",
    "SELECT lo_import('/etc/passwd')",
    "SELECT \"pg_terminate_backend\"(1)",
    "SELECT $$a$$; DROP TABLE canary",
    "SELECT E'\\''; DROP TABLE canary; --'",
    "SELECT nextval('canary_seq')",
]
MYSQL_ONLY = [
    "SELECT GET_LOCK('x', 1)",
    "SELECT RELEASE_LOCK('x')",
    "SELECT BENCHMARK(1000000, MD5('x'))",
    "SELECT LOAD_FILE('/etc/passwd')",
    "SELECT 1 /*! ; DROP TABLE canary */",
    "SELECT '\\''; DROP TABLE canary; -- '",
    "SELECT 1 # ; DROP TABLE canary\n; DROP TABLE canary",
    "REPLACE INTO canary VALUES (1, 'x')",
]


def test_writes_are_refused_and_change_nothing(app, client, admin, canary, database_url):
    state, before = canary
    queries = WRITES + {"postgresql": POSTGRES_ONLY, "mariadb": MYSQL_ONLY}.get(kind_of(database_url), [])
    for query in queries:
        response = run(client, admin, query)
        assert response.status_code == 400, (query, response.json)
        assert response.json["code"] == "query_rejected", (query, response.json)
    assert state() == before


WRITING_FUNCTIONS = {
    "postgresql": "CREATE FUNCTION bump() RETURNS int AS $$ INSERT INTO canary VALUES (7, 'seven') RETURNING id $$ LANGUAGE sql",
    "mariadb": "CREATE FUNCTION bump() RETURNS INT MODIFIES SQL DATA BEGIN INSERT INTO canary VALUES (7, 'seven'); RETURN 7; END",
}


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_the_database_itself_refuses_what_the_parser_lets_through(make_app, kind):
    """A function that writes looks like a read to any parser; the read-only transaction stops it."""
    url, drop = create_database(kind)
    try:
        app = make_app(DATABASE_URL=url)
        engine = sa.create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE canary (id INTEGER PRIMARY KEY, name VARCHAR(20))")
            connection.exec_driver_sql(WRITING_FUNCTIONS[kind])
        response = run(app.test_client(), bearer(app, "admin"), "SELECT bump()")
        assert response.status_code == 400, response.json
        assert response.json["code"] == "query_rejected"
        assert "refused a write" in response.json["error"]
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM canary").scalar() == 0
        engine.dispose()
    finally:
        drop()


def test_slow_query_times_out(make_app, database_url):
    app = make_app(DATABASE_URL=database_url, DB_STATEMENT_TIMEOUT_MS=1000)
    slow = SLOW[kind_of(database_url)][0]
    started = time.monotonic()
    response = run(app.test_client(), bearer(app, "admin"), slow)
    elapsed = time.monotonic() - started
    assert response.status_code == 504, response.json
    assert response.json["code"] == "query_timeout"
    assert elapsed < 1.0 + 1.0
    # The connection is usable afterwards.
    assert run(app.test_client(), bearer(app, "admin"), "SELECT 1").status_code == 200


def test_server_errors_are_query_error(client, admin):
    response = run(client, admin, "SELECT nope FROM no_such_table")
    assert response.status_code == 400
    assert response.json["code"] == "query_error"
    assert "no_such_table" in response.json["error"]


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"query": 42}, 400, "query_rejected"),
        ({"query": "SELECT 1", "max_rows": 0}, 400, "query_rejected"),
        ({"query": "SELECT 1", "max_rows": "ten"}, 400, "query_rejected"),
        ({"query": "SELECT :x", "params": {"x": {"nested": 1}}}, 400, "query_rejected"),
        ({"query": "SELECT :x"}, 400, "query_rejected"),
        ({"query": "SELECT 1 " + "x" * 10_001}, 400, "query_rejected"),
        ({"query": "   "}, 400, "query_rejected"),
    ],
)
def test_bad_requests(sqlite_app, body, status, code):
    response = sqlite_app.test_client().post("/api/database/test", headers=bearer(sqlite_app, "admin"), json=body)
    assert response.status_code == status, response.json
    assert response.json["code"] == code


def test_max_rows_is_capped(sqlite_app):
    query = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 1500) SELECT i FROM r"
    data = run(sqlite_app.test_client(), bearer(sqlite_app, "admin"), query, max_rows=5000).json["data"]
    assert data["row_count"] == 1000 and data["truncated"] is True


def test_json_safe_values(make_app):
    url, drop = create_database("postgresql")
    try:
        app = make_app(DATABASE_URL=url)
        query = (
            "SELECT now()::timestamp AS t, current_date AS d, 1.50::numeric AS n, '\\xdead'::bytea AS b, "
            "'7d444840-9dc0-11d1-b245-5ffdce74fad2'::uuid AS u, interval '1 minute' AS i"
        )
        row = run(app.test_client(), bearer(app, "admin"), query).json["data"]["rows"][0]
        assert "T" in row[0] and len(row[1]) == 10 and row[2] == "1.50" and row[3] == "dead"
        assert row[4] == "7d444840-9dc0-11d1-b245-5ffdce74fad2" and row[5] == 60.0
    finally:
        drop()


def test_every_call_is_audited(app, client, admin):
    run(client, admin, "SELECT 1")
    run(client, admin, "DROP TABLE users")
    run(client, admin, "SELECT :a + 1", params={"a": 1})
    response = client.get("/api/database/audit?limit=10&action=test", headers=admin)
    events = response.json["data"]["events"]
    assert [e["outcome"] for e in events] == ["ok", "rejected", "ok"]
    newest = events[0]
    assert newest["actor"] == "test-admin" and newest["detail"]["params"] == {"a": 1}
    assert newest["detail"]["statement"].replace("%(a)s", ":a") == "SELECT :a + 1"
    assert newest["detail"]["row_count"] == 1 and "elapsed_ms" in newest["detail"]
    assert newest["request_id"] and newest["target"] == "SELECT :a + 1"
    assert events[1]["detail"]["query"] == "DROP TABLE users"


@pytest.mark.parametrize(
    "query", ["SELECT 'a;b' AS x", "SELECT 1 -- trailing ; comment", "SELECT 1;", "WITH a AS (SELECT 1) SELECT * FROM a"]
)
def test_parser_accepts_reads(query):
    assert check_statement(query, "postgresql").first in ("select", "with")


def test_parser_errs_on_the_safe_side_with_quoted_write_words():
    with pytest.raises(ApiError):
        check_statement('SELECT "update" FROM t', "postgresql")


def test_readonly_url_runs_queries_as_that_role(make_app):
    url, drop = create_database("postgresql")
    server = admin_engine("postgresql")
    role = f"ro_{url.rsplit('_', 1)[1]}"
    with server.connect() as connection:
        connection.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        # Every role may create temporary tables unless the database says otherwise.
        connection.exec_driver_sql(f"REVOKE TEMPORARY ON DATABASE {url.rsplit('/', 1)[1]} FROM PUBLIC")
    try:
        app = make_app(DATABASE_URL=url, DATABASE_READONLY_URL=url.replace("postgres@", f"{role}@"))
        database = sa.create_engine(app.config["SQLALCHEMY_DATABASE_URI"], isolation_level="AUTOCOMMIT")
        with database.connect() as connection:
            connection.exec_driver_sql(f"GRANT SELECT ON users TO {role}")
        database.dispose()
        client, headers = app.test_client(), bearer(app, "admin")
        assert run(client, headers, "SELECT current_user").json["data"]["rows"] == [[role]]
        assert run(client, headers, "SELECT count(*) FROM users").json["data"]["rows"] == [[0]]
        denied = run(client, headers, "SELECT count(*) FROM audit_events")
        assert denied.status_code == 400 and denied.json["code"] == "query_error"
        assert "permission denied" in denied.json["error"]
    finally:
        drop()
        with server.connect() as connection:
            connection.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")
        server.dispose()
