"""What the console tests share: a canary table, and what a call may leave behind on the server."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.conftest import admin_engine
from tests.faults import wait_for

CANARY_ROWS = [(1, "one"), (2, "two"), (3, "three")]
LOCK_NAMES = ("x", "dbhealth")  # the MySQL named locks the attacks try to take
# Statements that outlast any console timeout the tests set, per dialect; the first is the plainest.
SLOW = {
    "postgresql": [
        "SELECT pg_sleep(30)",
        # A cursor's statement runs fetch by fetch: each fetch is short, the whole is not.
        "SELECT pg_sleep(0.3) FROM generate_series(1, 100)",
    ],
    "mariadb": ["SELECT SLEEP(30)", "SELECT SLEEP(0.3) FROM seq_1_to_100"],
    "sqlite": ["WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r"],
}


def kind_of(url: str) -> str:
    return url.split(":")[0]


def run(client, headers, query, **extra):
    return client.post("/api/database/test", headers=headers, json={"query": query, **extra})


@pytest.fixture
def canary(app):
    """A table with known rows, made directly with the driver; ``state()`` reads it back."""
    engine = sa.create_engine(app.config["SQLALCHEMY_DATABASE_URI"], poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE canary (id INTEGER PRIMARY KEY, name VARCHAR(20))")
        for row in CANARY_ROWS:
            connection.exec_driver_sql(f"INSERT INTO canary VALUES ({row[0]}, '{row[1]}')")

    def state():
        with engine.connect() as connection:
            rows = connection.exec_driver_sql("SELECT id, name FROM canary ORDER BY id").all()
            columns = [c["name"] for c in sa.inspect(connection).get_columns("canary")]
            tables = sorted(sa.inspect(connection).get_table_names())
        return [tuple(r) for r in rows], columns, tables

    before = state()
    yield state, before
    engine.dispose()


def leftovers(url: str) -> dict[str, int]:
    """What console calls left on the server for this database: locks, sessions, running statements."""
    kind = kind_of(url)
    name = sa.make_url(url).database
    if kind == "sqlite":
        return {}
    engine = admin_engine(kind)
    try:
        with engine.connect() as connection:
            if kind == "postgresql":
                locks = connection.exec_driver_sql(
                    "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                    "WHERE l.locktype = 'advisory' AND d.datname = %s", (name,)).scalar()
                sessions = connection.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name LIKE 'dbhealth-console%%'",
                    (name,)).scalar()
                running = connection.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state = 'active' "
                    "AND pid <> pg_backend_pid()", (name,)).scalar()
            else:
                locks = sum(
                    connection.exec_driver_sql("SELECT IS_USED_LOCK(%s) IS NOT NULL", (lock,)).scalar()
                    for lock in LOCK_NAMES
                )
                running = connection.exec_driver_sql(
                    "SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = %s AND COMMAND = 'Query' "
                    "AND ID <> CONNECTION_ID()", (name,)).scalar()
                sessions = 0
    finally:
        engine.dispose()
    return {"locks": locks, "console_sessions": sessions, "running": running}


def assert_nothing_left(url: str, within: float = 2.0) -> None:
    """No lock, console session or running statement, allowing a closed session ``within`` seconds to go."""
    wait_for(lambda: not any(leftovers(url).values()), lambda: f"nothing left on the server: {leftovers(url)}",
             timeout=within, interval=0.05)
