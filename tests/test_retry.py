"""with_db_retry and is_transient, against errors provoked on real servers."""
from __future__ import annotations

import sqlite3
import threading

import pytest
import sqlalchemy as sa

from backend.db.classify import is_transient
from backend.db.retry import with_db_retry
from backend.extensions import db
from backend.models import User
from tests.conftest import admin_engine, create_database
from tests.faults import free_port


class FakeSleep:
    def __init__(self):
        self.delays = []

    def __call__(self, seconds):
        self.delays.append(seconds)


def test_backoff_doubles_with_jitter_and_stops(sqlite_app):
    sleep = FakeSleep()
    calls = []

    @with_db_retry(max_retries=3, base_delay=1.0, sleep=sleep)
    def always_locked():
        calls.append(1)
        raise sa.exc.OperationalError("UPDATE x", {}, sqlite3.OperationalError("database is locked"))

    with sqlite_app.app_context(), pytest.raises(sa.exc.OperationalError) as info:
        always_locked()
    assert len(calls) == 4
    assert [int(d) for d in sleep.delays] == [1, 2, 4]
    assert all(0 <= d - base <= 0.5 for d, base in zip(sleep.delays, [1, 2, 4], strict=True))
    assert info.value.retry_count == 3 and info.value.last_attempt.endswith("Z")


def test_postgres_backend_killed_mid_transaction_is_retried(make_app):
    url, drop = create_database("postgresql")
    killer = admin_engine("postgresql")
    try:
        app = make_app(DATABASE_URL=url)
        sleep = FakeSleep()
        attempts = []

        @with_db_retry(max_retries=2, base_delay=0.01, sleep=sleep)
        def count_users():
            pid = db.session.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            attempts.append(pid)
            if len(attempts) == 1:
                with killer.connect() as connection:
                    connection.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
            return db.session.execute(sa.select(sa.func.count()).select_from(User)).scalar()

        with app.app_context():
            assert count_users() == 0
        assert len(attempts) == 2 and attempts[0] != attempts[1]
        assert len(sleep.delays) == 1
    finally:
        killer.dispose()
        drop()


DEADLOCK_TABLE = "CREATE TABLE pair (id INTEGER PRIMARY KEY, n INTEGER)"


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_real_deadlock_is_transient_and_retried(make_app, kind):
    url, drop = create_database(kind)
    try:
        app = make_app(DATABASE_URL=url)
        with app.app_context():
            db.session.execute(sa.text(DEADLOCK_TABLE + (" ENGINE=InnoDB" if kind == "mariadb" else "")))
            db.session.execute(sa.text("INSERT INTO pair VALUES (1, 0), (2, 0)"))
            db.session.commit()
        barrier = threading.Barrier(2)
        errors, tries = [], []

        def transfer(first, second):
            with app.app_context():

                @with_db_retry(max_retries=3, base_delay=0.05)
                def move():
                    tries.append(first)
                    db.session.execute(sa.text("UPDATE pair SET n = n + 1 WHERE id = :i"), {"i": first})
                    if len(tries) <= 2:
                        barrier.wait(timeout=10)  # both hold one row: the next update deadlocks
                    db.session.execute(sa.text("UPDATE pair SET n = n + 1 WHERE id = :i"), {"i": second})
                    db.session.commit()

                try:
                    move()
                except Exception as error:  # recorded for the assertion below
                    errors.append(error)

        threads = [threading.Thread(target=transfer, args=(1, 2)), threading.Thread(target=transfer, args=(2, 1))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == []
        assert len(tries) == 3  # one of the two was chosen as the deadlock victim and retried
        with app.app_context():
            assert db.session.execute(sa.text("SELECT sum(n) FROM pair")).scalar() == 4
    finally:
        drop()


def test_mysql_errors_are_classified_from_driver_codes():
    import pymysql

    assert is_transient(pymysql.err.OperationalError(1213, "Deadlock found"))
    assert is_transient(pymysql.err.OperationalError(2003, "Can't connect"))
    assert not is_transient(pymysql.err.OperationalError(1045, "Access denied"))


def test_locked_sqlite_file_is_transient(tmp_path, make_app):
    path = tmp_path / "locked.db"
    app = make_app(DATABASE_URL=f"sqlite:///{path}")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    waiter = sqlite3.connect(path, timeout=0)
    with pytest.raises(sqlite3.OperationalError) as info:
        waiter.execute("INSERT INTO audit_events (created_at, action, outcome) VALUES ('2026-01-01', 'x', 'y')")
    assert is_transient(info.value)

    attempts = []

    @with_db_retry(max_retries=3, base_delay=0.01)
    def write():
        attempts.append(1)
        if len(attempts) == 1:
            try:
                waiter.execute("INSERT INTO audit_events (created_at, action, outcome) VALUES ('2026-01-01', 'x', 'y')")
            finally:
                holder.execute("ROLLBACK")  # the lock goes away: the retry succeeds
        else:
            waiter.execute("INSERT INTO audit_events (created_at, action, outcome) VALUES ('2026-01-01', 'x', 'y')")
            waiter.commit()

    with app.app_context():
        write()
    assert len(attempts) == 2


def test_integrity_errors_are_not_retried(app):
    calls = []

    @with_db_retry(max_retries=3, base_delay=0)
    def add_twice():
        calls.append(1)
        db.session.add(User(username="dup", password_hash="x", role="viewer"))
        db.session.add(User(username="dup", password_hash="x", role="viewer"))
        db.session.commit()

    with app.app_context(), pytest.raises(sa.exc.IntegrityError) as info:
        add_twice()
    assert len(calls) == 1
    assert not hasattr(info.value, "retry_count")


def test_syntax_errors_are_not_retried(app):
    calls = []

    @with_db_retry(max_retries=3, base_delay=0)
    def broken():
        calls.append(1)
        db.session.execute(sa.text("SELEC 1"))

    with app.app_context(), pytest.raises(sa.exc.DBAPIError):
        broken()
    assert len(calls) == 1


def test_database_down_after_retries_is_503_with_retry_facts(make_app):
    app = make_app(migrate=False, DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/x", DB_RETRY_ATTEMPTS=2)
    response = app.test_client().post("/api/auth/login", json={"username": "a", "password": "b"})
    assert response.status_code == 503
    body = response.json
    assert body["code"] == "db_unavailable" and body["retry_count"] == 2
    assert body["last_attempt"].endswith("Z") and body["request_id"]
    assert "127.0.0.1" not in response.get_data(as_text=True)
