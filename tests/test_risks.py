"""Capacity risks (SPEC 10): each built for real, each turns its component degraded and back.

Session risks, sequences and AUTO_INCREMENT on a fresh database of the shared
servers; replication slots, transaction-ID age and replica lag on a PostgreSQL
cluster of the tests' own; a stopped replica on a MariaDB server of the tests'
own (the shared servers are never made replicas nor given slots).
"""
from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import bearer, create_database, engine_for
from tests.faults import PrivateCluster, PrivateMariaDB, wait_for

# Risks measured on every probe, every probe fresh.
EVERY_PROBE = {"DB_RISKS_EVERY_S": 0, "DB_HEALTH_CACHE_TTL": 0}
RISK_FIELDS = {"risk", "value", "threshold", "unit", "over", "message"}


class Watched:
    """An app and what an operator sees of it: health, /status risks, /metrics."""

    def __init__(self, app):
        self.app = app
        self.client = app.test_client()
        self.headers = bearer(app, "viewer")

    def health(self, query: str = "force=true") -> dict[str, Any]:
        response = self.client.get(f"/api/database/health?{query}", headers=self.headers)
        assert response.status_code == 200, response.json
        return response.json["data"]

    def warnings(self, component: str = "primary") -> list[str]:
        return self.health()["components"][component]["warnings"]

    def risk(self, name: str, component: str = "primary") -> dict[str, Any] | None:
        risks = self.client.get("/api/database/status", headers=self.headers).json["data"]["risks"][component]
        assert risks["supported"] is True and risks["checked_at"].endswith("Z")
        assert all(RISK_FIELDS <= set(item) for item in risks["items"])
        return next((item for item in risks["items"] if item["risk"] == name), None)

    def metric(self, name: str, risk: str) -> float | None:
        text = self.client.get("/metrics").get_data(as_text=True)
        match = re.search(rf'^{name}\{{component="primary",risk="{risk}"\}} (\S+)$', text, re.M)
        return float(match.group(1)) if match else None

    def degraded_by(self, words: str) -> bool:
        data = self.health()
        return data["status"] == "degraded" and any(words in w for w in data["components"]["primary"]["warnings"])

    def clear_of(self, words: str) -> bool:
        data = self.health()
        return not any(words in w for w in data["components"]["primary"]["warnings"])


@pytest.fixture(params=["postgresql", "mariadb"])
def shared(request, make_app):
    url, drop = create_database(request.param)
    engines: list[sa.Engine] = []

    def make(**settings):
        engines.append(engine_for(url))
        return Watched(make_app(DATABASE_URL=url, **EVERY_PROBE, **settings)), engines[-1]

    yield request.param, make
    for engine in engines:
        engine.dispose()
    drop()


def test_idle_in_transaction_and_lock_wait(shared):
    kind, make = shared
    watched, engine = make(DB_IDLE_IN_TX_WARN_S=0.5, DB_LOCK_WAIT_WARN_S=0.5)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE ops_rows (id INTEGER PRIMARY KEY, v INTEGER)")
        connection.exec_driver_sql("INSERT INTO ops_rows VALUES (1, 0)")
    assert watched.health()["status"] == "healthy"
    assert watched.risk("idle_in_transaction")["over"] is False

    holder, waiter = engine.connect(), engine.connect()
    waiter.exec_driver_sql("SET lock_timeout = '30s'" if kind == "postgresql" else "SET innodb_lock_wait_timeout = 30")
    holder.exec_driver_sql("UPDATE ops_rows SET v = 1 WHERE id = 1")
    blocked = threading.Thread(target=lambda: waiter.exec_driver_sql("UPDATE ops_rows SET v = 2 WHERE id = 1"))
    try:
        wait_for(lambda: watched.degraded_by("idle in transaction"))
        assert watched.clear_of("waiting for a lock")
        idle = watched.risk("idle_in_transaction")
        assert idle["over"] is True and idle["value"] > 0.5 and idle["threshold"] == 0.5 and idle["unit"] == "s"
        assert watched.metric("dbhealth_capacity_risk_over_threshold", "idle_in_transaction") == 1.0
        assert watched.metric("dbhealth_capacity_risk_value", "idle_in_transaction") > 0.5

        blocked.start()
        wait_for(lambda: watched.degraded_by("waiting for a lock"))
        wait = watched.risk("lock_wait")
        assert wait["over"] is True and wait["value"] > 0.5 and "for a lock" in wait["message"]
        assert watched.metric("dbhealth_capacity_risk_over_threshold", "lock_wait") == 1.0
    finally:
        holder.rollback()
        if blocked.ident:
            blocked.join(30)
        waiter.rollback()
        holder.close()
        waiter.close()
    wait_for(lambda: watched.health()["status"] == "healthy")
    assert watched.metric("dbhealth_capacity_risk_over_threshold", "idle_in_transaction") == 0.0
    assert watched.metric("dbhealth_capacity_risk_over_threshold", "lock_wait") == 0.0


def test_sequence_and_auto_increment_near_their_range(shared):
    kind, make = shared
    watched, engine = make()
    risk = "sequence" if kind == "postgresql" else "auto_increment"
    with engine.begin() as connection:
        if kind == "postgresql":
            connection.exec_driver_sql("CREATE TABLE ops_small (id smallserial PRIMARY KEY, v integer)")
            connection.exec_driver_sql("SELECT setval('ops_small_id_seq', 30000)")  # 91.6% of smallint
        else:
            connection.exec_driver_sql("CREATE TABLE ops_signed (id SMALLINT AUTO_INCREMENT PRIMARY KEY) AUTO_INCREMENT = 20000")
            connection.exec_driver_sql("CREATE TABLE ops_small (id SMALLINT UNSIGNED AUTO_INCREMENT PRIMARY KEY) AUTO_INCREMENT = 60000")
            connection.exec_driver_sql("INSERT INTO ops_signed VALUES ()")  # 61% of its range: fine
            connection.exec_driver_sql("INSERT INTO ops_small VALUES ()")  # 91.6% of SMALLINT UNSIGNED
    data = watched.health()
    assert data["status"] == "degraded", data
    item = watched.risk(risk)
    assert item["over"] is True and 91 < item["value"] < 92 and item["threshold"] == 80 and item["unit"] == "percent"
    assert "ops_small" in item["message"] and any("ops_small" in w for w in data["components"]["primary"]["warnings"])
    assert watched.metric("dbhealth_capacity_risk_value", risk) == pytest.approx(item["value"])

    with engine.begin() as connection:
        if kind == "postgresql":
            connection.exec_driver_sql("ALTER SEQUENCE ops_small_id_seq AS integer")
            assert watched.degraded_by("ops_small")  # the smallint column still limits it
            connection.exec_driver_sql("ALTER TABLE ops_small ALTER COLUMN id TYPE integer")
        else:
            connection.exec_driver_sql("ALTER TABLE ops_small MODIFY id INT UNSIGNED AUTO_INCREMENT")
    assert watched.health()["status"] == "healthy"
    assert watched.risk(risk)["over"] is False and watched.metric("dbhealth_capacity_risk_over_threshold", risk) == 0.0


@pytest.fixture(scope="module")
def cluster():
    """A PostgreSQL cluster of the tests' own; slots may not keep more than 16 MB of WAL."""
    cluster = PrivateCluster(settings="max_slot_wal_keep_size = 16MB\nmax_wal_size = 64MB\nmin_wal_size = 32MB\n")
    yield cluster
    cluster.close()


@pytest.fixture
def on_cluster(cluster, make_app):
    name = f"ops_{int(time.time() * 1000) % 10**9}"
    admin = engine_for(cluster.url()).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")

    def make(**settings):
        return Watched(make_app(DATABASE_URL=cluster.url(database=name), **EVERY_PROBE, **settings))

    yield make, admin
    with admin.connect() as connection:
        connection.exec_driver_sql("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active")
    admin.dispose()


def write_wal(connection: sa.Connection, switches: int = 0) -> None:
    connection.exec_driver_sql("CREATE TABLE IF NOT EXISTS ops_wal (n integer, pad text)")
    connection.exec_driver_sql("INSERT INTO ops_wal SELECT n, repeat('x', 100) FROM generate_series(1, 20000) n")
    for _ in range(switches):
        connection.exec_driver_sql("INSERT INTO ops_wal VALUES (0, 'x')")
        connection.exec_driver_sql("SELECT pg_switch_wal()")


def test_inactive_slot_retaining_wal(on_cluster):
    make, admin = on_cluster
    watched = make(DB_SLOT_RETAINED_WARN_BYTES=1048576)
    assert watched.health()["status"] == "healthy"
    with admin.connect() as connection:
        connection.exec_driver_sql("SELECT pg_create_physical_replication_slot('ops_idle_slot', true)")
        write_wal(connection)  # a few MB, all kept for a replica that never comes
    wait_for(lambda: watched.degraded_by("inactive replication slot ops_idle_slot retains"))
    item = watched.risk("replication_slot")
    assert item["over"] is True and item["value"] > 1048576 and item["unit"] == "bytes"
    assert watched.metric("dbhealth_capacity_risk_value", "replication_slot") > 1048576
    with admin.connect() as connection:
        connection.exec_driver_sql("SELECT pg_drop_replication_slot('ops_idle_slot')")
    assert watched.health()["status"] == "healthy"
    assert watched.metric("dbhealth_capacity_risk_over_threshold", "replication_slot") == 0.0


def test_slot_whose_wal_is_lost(on_cluster):
    make, admin = on_cluster
    watched = make()  # 1 GiB retained would be fine: wal_status alone decides here
    with admin.connect() as connection:
        connection.exec_driver_sql("SELECT pg_create_physical_replication_slot('ops_lost_slot', true)")
        write_wal(connection, switches=4)  # past max_slot_wal_keep_size
        connection.exec_driver_sql("CHECKPOINT")
    wait_for(lambda: watched.degraded_by("replication slot ops_lost_slot wal_status is"))
    assert re.search(r"wal_status is (lost|unreserved)", watched.risk("replication_slot")["message"])
    with admin.connect() as connection:
        connection.exec_driver_sql("SELECT pg_drop_replication_slot('ops_lost_slot')")
    assert watched.health()["status"] == "healthy"


def freeze_every_database(cluster: PrivateCluster) -> None:
    admin = engine_for(cluster.url()).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        databases = connection.exec_driver_sql("SELECT datname, datallowconn FROM pg_database").all()
        for name, allowed in databases:
            if not allowed:
                connection.exec_driver_sql(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")
            engine = engine_for(cluster.url(database=name)).execution_options(isolation_level="AUTOCOMMIT")
            with engine.connect() as database:
                database.exec_driver_sql("VACUUM FREEZE")
            engine.dispose()
            if not allowed:
                connection.exec_driver_sql(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false")
    admin.dispose()


def test_transaction_id_age(on_cluster, cluster):
    make, admin = on_cluster
    low = make(DB_XID_AGE_WARN=1)
    assert low.degraded_by("transactions from its last freeze")
    age = low.risk("xid_age")["value"]
    assert age > 1 and low.metric("dbhealth_capacity_risk_over_threshold", "xid_age") == 1.0

    watched = make(DB_XID_AGE_WARN=age + 3000)
    assert watched.clear_of("transactions from its last freeze")
    with admin.connect() as connection:  # 4000 transactions, each with an id of its own
        connection.exec_driver_sql("DO $$ BEGIN FOR i IN 1..4000 LOOP PERFORM txid_current(); COMMIT; END LOOP; END $$")
    assert watched.degraded_by("transactions from its last freeze")
    freeze_every_database(cluster)
    assert wait_for(lambda: watched.health()["status"] == "healthy")
    assert watched.risk("xid_age")["value"] < age


@pytest.fixture(scope="module")
def replica(cluster):
    replica = PrivateCluster(primary=cluster)
    yield replica
    replica.close()


def test_max_lag_s_judges_replicas_for_one_request(cluster, replica, make_app):
    admin = engine_for(cluster.url()).execution_options(isolation_level="AUTOCOMMIT")
    standby = engine_for(replica.url()).execution_options(isolation_level="AUTOCOMMIT")
    watched = Watched(make_app(DATABASE_URL=cluster.url(), DB_BIND_REPLICA=replica.url(), DB_HEALTH_CACHE_TTL=0))
    with admin.connect() as connection:
        connection.exec_driver_sql("CREATE TABLE IF NOT EXISTS ops_ticks (n integer)")
    wait_for(lambda: watched.health()["components"]["replica"].get("replication_lag_s") == 0)
    for bad in ("abc", "-1", "nan", "inf"):
        response = watched.client.get(f"/api/database/health?max_lag_s={bad}", headers=watched.headers)
        assert response.status_code == 400 and response.json["code"] == "invalid_parameter"

    # A transaction replayed before the pause gives the replica a replay timestamp to measure lag from.
    with admin.connect() as connection:
        ticks = connection.exec_driver_sql("INSERT INTO ops_ticks VALUES (0) RETURNING (SELECT count(*) FROM ops_ticks)").scalar()
    with standby.connect() as connection:
        wait_for(lambda: connection.exec_driver_sql("SELECT count(*) FROM ops_ticks").scalar() > ticks)
        connection.exec_driver_sql("SELECT pg_wal_replay_pause()")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql("INSERT INTO ops_ticks VALUES (1)")
        wait_for(lambda: (watched.health()["components"]["replica"]["replication_lag_s"] or 0) > 1)
        assert watched.health()["status"] == "healthy"  # within DB_REPLICA_MAX_LAG_S (30)
        strict = watched.health("max_lag_s=0.5")
        assert strict["status"] == "degraded" and strict["components"]["primary"]["status"] == "healthy"
        assert strict["components"]["replica"]["status"] == "degraded"
        assert any("behind its primary" in w for w in strict["components"]["replica"]["warnings"])
        assert watched.health("max_lag_s=3600")["status"] == "healthy"
        cached = watched.client.get("/api/database/health", headers=watched.headers).json["data"]
        assert cached["status"] == "healthy"  # the strict judgement was for that request only
    finally:
        with standby.connect() as connection:
            connection.exec_driver_sql("SELECT pg_wal_replay_resume()")
        admin.dispose()
        standby.dispose()


@pytest.fixture(scope="module")
def private_mariadb():
    server = PrivateMariaDB()
    yield server
    server.close()


def test_replica_with_stopped_threads(private_mariadb, make_app):
    admin = engine_for(private_mariadb.url()).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql("CREATE DATABASE IF NOT EXISTS ops_app")
    watched = Watched(make_app(DATABASE_URL=private_mariadb.url("ops_app"), **EVERY_PROBE))
    assert watched.health()["status"] == "healthy" and watched.risk("replica_threads") is None
    try:
        with admin.connect() as connection:  # a replica of a primary that is not there: both threads stopped
            connection.exec_driver_sql("CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = 1, MASTER_USER = 'none'")
        assert watched.degraded_by("IO thread")
        item = watched.risk("replica_threads")
        assert item["over"] is True and item["value"] == 2 and "SQL thread" in item["message"]
        with admin.connect() as connection:
            connection.exec_driver_sql("START SLAVE SQL_THREAD")
        wait_for(lambda: watched.risk("replica_threads") and watched.risk("replica_threads")["value"] == 1)
        assert watched.degraded_by("IO thread") and watched.clear_of("SQL thread")
        assert watched.metric("dbhealth_capacity_risk_over_threshold", "replica_threads") == 1.0
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql("STOP SLAVE")
            connection.exec_driver_sql("RESET SLAVE ALL")
    assert watched.health()["status"] == "healthy" and watched.risk("replica_threads") is None
    admin.dispose()


def test_sqlite_has_no_risks(sqlite_app):
    watched = Watched(sqlite_app)
    assert watched.health()["status"] == "healthy"
    risks = watched.client.get("/api/database/status", headers=watched.headers).json["data"]["risks"]
    assert risks == {"primary": {"supported": False, "checked_at": None, "items": []}}
