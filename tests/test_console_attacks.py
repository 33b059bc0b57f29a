"""Attacks on the query console, against the real servers: each must be refused or harmless.

Every attack asserts that the database is unchanged and that no lock, console
session or running statement is left on the server afterwards. The first
block is the corpus the console was once broken by; the rest are variations
found by attacking it again.
"""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tests.conftest import bearer, create_database, engine_for, execute
from tests.console_support import assert_nothing_left, canary, kind_of, run  # noqa: F401

REFUSED = (400,)

# (query, params): each must be refused with 400.
ATTACKS = {
    "postgresql": [
        # 1. A carriage return ends a -- comment for PostgreSQL.
        ("SELECT 1 --\r; COMMIT; DELETE FROM canary\n", None),
        ("SELECT 1 --\r; COMMIT; LOCK TABLE canary; SELECT pg_sleep(3)\n", None),
        # 2. Markers in comments and strings are text, never bound.
        ("SELECT 1 -- :p", {"p": "\n; COMMIT; DELETE FROM canary; --"}),
        ("SELECT ' :p' AS x", {"p": "; COMMIT; DELETE FROM canary; SELECT "}),
        ("SELECT 1 /* :p */", {"p": "*/ ; COMMIT; DELETE FROM canary; /*"}),
        # 3. Unicode-escaped, quoted and qualified names are the same names.
        ('SELECT U&"\\0070g_advisory_lock"(4242)', None),
        ("SELECT U&\"!0070g_advisory_lock\" UESCAPE '!'(4242)", None),
        ("SELECT U&\"!0070g_advisory_lock\" /* c */ UESCAPE\n-- c\n'!' (4242)", None),
        ('SELECT "pg_advisory_lock"(4242)', None),
        ("SELECT pg_catalog.pg_advisory_lock(4242)", None),
        ("SELECT pg_catalog . pg_try_advisory_lock /* x */ (4242)", None),
        ('SELECT U&"\\0070g_terminate_backend"(pg_backend_pid())', None),
        ("SELECT U&\"\\0070g_read_file\"('postgresql.conf')", None),
        ("SELECT * FROM U&\"\\0070g_ls_dir\"('.')", None),
        ('SELECT U&"\\0074xid_current"()', None),
        ('EXPLAIN (U&"\\0061nalyze") SELECT 1', None),
        ('EXPLAIN ("analyze") SELECT 1', None),
        # 4. Functions that run SQL given as a string, and file access.
        ("SELECT * FROM ts_stat($$SELECT to_tsvector(pg_advisory_lock(1)::text)$$)", None),
        ("SELECT ts_rewrite('a'::tsquery, $$SELECT 'a'::tsquery, pg_advisory_lock(1)::text::tsquery$$)", None),
        ("SELECT cursor_to_xml('c', 1, false, false, '')", None),
        ("SELECT U&\"\\0071uery_to_xml\"('SELECT pg_advisory_lock(1)', true, false, '')", None),
        ("SELECT table_to_xml('canary', true, false, '')", None),
        ("SELECT pg_stat_file('postgresql.conf')", None),
        ("SELECT * FROM dblink('dbname=postgres', 'DELETE FROM canary') AS t(x int)", None),
        ("SELECT set_config('standard_conforming_strings', 'off', false)", None),
        # Beyond the list: dollar quotes, nesting, continuation, odd characters.
        ("SELECT x$$ , pg_advisory_lock(1) -- $$ FROM canary", None),
        ("SELECT 1 /* outer /* inner */ still a comment */ ; DELETE FROM canary", None),
        ("SELECT 1\v; DELETE FROM canary", None),
        ("SELECT $1", None),
        ("SELECT 1 FROM canary FOR SHARE", None),
        ("WITH d AS (DELETE FROM canary RETURNING *) SELECT * FROM d", None),
        ("SELECT * INTO TEMP t FROM canary", None),
    ],
    "mariadb": [
        # 5. -- is a comment only when whitespace follows.
        ("SELECT 1 --1, GET_LOCK('x', 0)", None),
        ("SELECT 1 --1, LOAD_FILE('/etc/passwd')", None),
        ("SELECT 'x' --1 INTO OUTFILE '/tmp/dbhealth-console-attack'", None),
        ("SELECT 1 /* :p */", {"p": "*/ , @v := 42 /*"}),
        ("SELECT 1 -- :p", {"p": "\n, GET_LOCK('x', 0)"}),
        # Beyond the list: executable comments, quoted names, control characters.
        ("SELECT 1 /*! , GET_LOCK('x', 0) */", None),
        ("SELECT 1 /*M! , GET_LOCK('x', 0) */", None),
        ("/*!50000 SELECT GET_LOCK('x', 0) */", None),
        ("SELECT `GET_LOCK`('x', 0)", None),
        ("SELECT GET_LOCK /* c */ ('x', 0)", None),
        ("SELECT @v := 42", None),
        ("SELECT 1 FROM canary LOCK IN SHARE MODE", None),
        ("SELECT 1 --\t\n, GET_LOCK('x', 0) # ", None),
        ("SELECT LAST_INSERT_ID(42)", None),
        ("SELECT * FROM canary INTO @a, @b", None),
    ],
    "sqlite": [
        ("SELECT 1 -- :p", {"p": "\n; DELETE FROM canary; --"}),
        ("SELECT ' :p' AS x", {"p": "'; DELETE FROM canary; SELECT '"}),
        ("SELECT load_extension('/tmp/x')", None),
        ('SELECT "load_extension"(\'/tmp/x\')', None),
        ("SELECT 1; ATTACH DATABASE '/tmp/x.db' AS x", None),
        ("SELECT @p", None),
        ("SELECT 1\v; DELETE FROM canary", None),
    ],
}


def test_the_attack_corpus_is_refused_and_leaves_nothing(app, canary, database_url):  # noqa: F811
    state, before = canary
    client, headers = app.test_client(), bearer(app, "admin")
    for query, params in ATTACKS[kind_of(database_url)]:
        response = run(client, headers, query, **({"params": params} if params else {}))
        assert response.status_code in REFUSED, (query, response.json)
        assert response.json["code"] in ("query_rejected", "query_error"), (query, response.json)
        assert state() == before, query
        assert_nothing_left(database_url)
    # Later calls see no session state: a fresh connection each time.
    if kind_of(database_url) == "mariadb":
        assert run(client, headers, "SELECT @v").json["data"]["rows"] == [[None]]


# Statements that lexers which do not read as the server does get wrong: each is
# a harmless read, and the answer proves how the server read it.
HARMLESS = {
    "postgresql": [
        ("SELECT E'a'\n'\\' ; DELETE FROM canary; --' AS x", [["a' ; DELETE FROM canary; --"]]),
        ("SELECT $a$ $b$ ; DELETE FROM canary; $b$ $a$ AS x", [[" $b$ ; DELETE FROM canary; $b$ "]]),
        ("SELECT 1 /* a /* b */ ; DELETE FROM canary; */ AS x", [[1]]),
        ("SELECT ' :p' AS x", [[" :p"]]),
        ("SELECT U&'d!0061t!+000061' UESCAPE '!' AS x", [["data"]]),
        ("SELECT 'a'\n-- comment\n'b' AS x", [["ab"]]),
        ("SELECT 2 --1\n AS x", [[2]]),
        ("SELECT '100%' AS x, 7 % 4 AS y", [["100%", 3]]),
    ],
    "mariadb": [
        ("SELECT 1 --1", [[2]]),
        ("SELECT 1 --\x01, GET_LOCK('x', 0)", [[1]]),
        ("SELECT 1 # x\r, GET_LOCK('x', 0)", [[1]]),
        ("SELECT 'a\\' , GET_LOCK(''x'', 0) -- ' AS x", [["a' , GET_LOCK('x', 0) -- "]]),
        ("SELECT \"a\\\" , GET_LOCK('x', 0) -- \" AS x", [["a\" , GET_LOCK('x', 0) -- "]]),
        ("SELECT ' :p' AS x", [[" :p"]]),
        ("SELECT '100%' AS x", [["100%"]]),
    ],
    "sqlite": [
        ("SELECT ' :p' AS x", [[" :p"]]),
        ("SELECT 1 -- c\r, 2", [[1]]),
        ("SELECT [a b] FROM (SELECT 1 AS [a b])", [[1]]),
    ],
}


def test_what_the_server_reads_is_what_was_checked(app, canary, database_url):  # noqa: F811
    state, before = canary
    client, headers = app.test_client(), bearer(app, "admin")
    for query, rows in HARMLESS[kind_of(database_url)]:
        response = run(client, headers, query)
        assert response.status_code == 200, (query, response.json)
        assert response.json["data"]["rows"] == rows, query
    assert state() == before
    assert_nothing_left(database_url)


def test_session_settings_change_how_the_statement_is_read(make_app):
    """standard_conforming_strings off: backslash escapes in '...' (PostgreSQL reads it so, and so must we)."""
    url, drop = create_database("postgresql")
    try:
        execute(engine_for(url, isolation_level="AUTOCOMMIT"),
                f"ALTER DATABASE {sa.make_url(url).database} SET standard_conforming_strings = off")
        app = make_app(DATABASE_URL=url)
        client, headers = app.test_client(), bearer(app, "admin")
        smuggled = run(client, headers, "SELECT 'a\\' , pg_advisory_lock(1) -- ' AS x")
        assert smuggled.status_code == 200, smuggled.json  # one string when backslash escapes
        assert smuggled.json["data"]["rows"] == [["a' , pg_advisory_lock(1) -- "]]
        refused = run(client, headers, "SELECT 'a\\'' , pg_advisory_lock(1) -- ' AS x")
        assert refused.status_code == 400 and refused.json["code"] == "query_rejected", refused.json
        assert run(client, headers, "SELECT U&'a' AS x").status_code == 400  # needs standard strings
        assert_nothing_left(url)
    finally:
        drop()


@pytest.mark.parametrize("sql_mode, query, rows", [
    # NO_BACKSLASH_ESCAPES: 'a\' ends at the second quote, so GET_LOCK is code.
    ("NO_BACKSLASH_ESCAPES", "SELECT 'a\\' , GET_LOCK('x', 0) -- '", None),
    # ANSI_QUOTES: "..." is a name without escapes, so GET_LOCK is code.
    ("ANSI_QUOTES", "SELECT \"\\\" , GET_LOCK('x', 0) -- \" FROM (SELECT 1 AS \"\\\") t", None),
    ("ANSI_QUOTES", "SELECT \"a\" FROM (SELECT 5 AS a) t", [[5]]),
])
def test_sql_mode_changes_how_the_statement_is_read(make_app, sql_mode, query, rows):
    url, drop = create_database("mariadb")
    try:
        app = make_app(DATABASE_URL=f"{url}?sql_mode={sql_mode}")
        response = run(app.test_client(), bearer(app, "admin"), query)
        if rows is None:
            assert response.status_code == 400 and response.json["code"] == "query_rejected", response.json
        else:
            assert response.status_code == 200 and response.json["data"]["rows"] == rows, response.json
        assert_nothing_left(url)
    finally:
        drop()


def test_parameters_are_bound_by_the_driver_and_recorded(app, canary, database_url):  # noqa: F811
    state, before = canary
    client, headers = app.test_client(), bearer(app, "admin")
    value = "x'); DELETE FROM canary; --\\"
    response = run(client, headers, "SELECT :v AS v, count(*) AS n FROM canary WHERE name = :v", params={"v": value})
    assert response.status_code == 200, response.json
    assert response.json["data"]["rows"] == [[value, 0]]
    missing = run(client, headers, "SELECT :a AS a")
    assert missing.status_code == 400 and ":a" in missing.json["error"]
    unused = run(client, headers, "SELECT 1 -- :a", params={"a": 1})
    assert unused.status_code == 400 and "not used" in unused.json["error"]
    assert state() == before
    events = client.get("/api/database/audit?limit=3&action=test", headers=headers).json["data"]["events"]
    assert events[2]["detail"]["params"] == {"v": value} and events[2]["outcome"] == "ok"
    assert events[0]["detail"]["params"] == {"a": 1} and events[0]["outcome"] == "rejected"


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_each_call_has_a_connection_of_its_own(make_app, kind):
    url, drop = create_database(kind)
    try:
        app = make_app(DATABASE_URL=url)
        client, headers = app.test_client(), bearer(app, "admin")
        query = "SELECT pg_backend_pid()" if kind == "postgresql" else "SELECT CONNECTION_ID()"
        first = run(client, headers, query).json["data"]["rows"][0][0]
        second = run(client, headers, query).json["data"]["rows"][0][0]
        assert first != second
        assert_nothing_left(url)
    finally:
        drop()


def test_text_no_database_can_store_is_refused_not_a_crash(app, database_url):
    """NUL characters and lone surrogates, in the query and in values: never a 500, and on record when run."""
    client, headers = app.test_client(), bearer(app, "admin")
    calls = [("SELECT 1 AS \"x\u0000\"", None), ("SELECT \ud800", None),
             ("SELECT :a AS a", {"a": "x\u0000y"}), ("SELECT :a AS a", {"a": "\ud800"})]
    reached = []
    for query, params in calls:
        response = run(client, headers, query, **({"params": params} if params else {}))
        # In the query: refused. In a value: the database decides (SQLite and MariaDB store NUL).
        assert response.status_code in ((200, 400) if params else (400,)), (query, response.json)
        if response.json.get("code") != "bad_request":  # a body JSON cannot hold never reaches the console
            reached.append("ok" if response.status_code == 200 else response.json["code"])
    events = client.get(f"/api/database/audit?limit={len(reached)}&action=test", headers=headers).json["data"]["events"]
    outcomes = [event["outcome"] for event in reversed(events)]
    assert outcomes == [{"query_rejected": "rejected"}.get(code, code) for code in reached], events
    assert "\\x00" in events[-1]["detail"]["query"]


JSON_SAFE = {
    "postgresql": ("SELECT 'NaN'::float8, 'Infinity'::float8, '-Infinity'::float8, 'NaN'::numeric, 1.50::numeric, "
                   "'\\x00ff'::bytea, timestamptz '2026-01-15 10:30:00+00'",
                   ["NaN", "Infinity", "-Infinity", "NaN", "1.50", "00ff", "2026-01-15T10:30:00+00:00"]),
    "mariadb": ("SELECT CAST(1.5 AS DECIMAL(5,2)), x'00ff', TIMESTAMP '2026-01-15 10:30:00', NULL",
                ["1.50", "00ff", "2026-01-15T10:30:00", None]),
    "sqlite": ("SELECT 9e999, -9e999, x'00ff', 1.5", ["Infinity", "-Infinity", "00ff", 1.5]),
}


def test_values_are_json_safe(app, database_url):
    """NaN and infinities as strings, decimals as strings, bytes as hex: the body is always valid JSON."""
    query, row = JSON_SAFE[kind_of(database_url)]
    response = run(app.test_client(), bearer(app, "admin"), query)
    assert response.status_code == 200, response.json
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    json.loads(response.get_data(as_text=True), parse_constant=refuse)  # strict JSON: no NaN or Infinity
    assert response.json["data"]["rows"] == [row]
