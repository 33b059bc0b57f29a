"""Judging health is a pure function: facts in, status and messages out, no database."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy.engine import make_url

from backend.health.judge import (
    component_verdict,
    component_warnings,
    explain_timeout,
    meant_as_replica,
    overall,
    pooler_queue,
    pooler_warnings,
    replica_warnings,
    same_server,
)
from backend.health.servers import change, detect_change, postgres_server

LIMITS = {"DB_CONNECTIONS_WARN_PERCENT": 80, "DB_POOL_WARN_PERCENT": 90, "DB_REPLICA_MAX_LAG_S": 30}
QUIET_POOL = {"utilization_percent": 10.0}


def test_a_quiet_database_is_healthy():
    facts = {"connections": {"percent": 12.0}, "replication_lag_s": 0, "read_only": False}
    warnings = component_warnings(facts, QUIET_POOL, LIMITS, {"up_to_date": True})
    assert warnings == []
    assert component_verdict("postgresql", warnings) == ("healthy", "PostgreSQL connection healthy")


def test_each_threshold_gives_its_own_warning():
    facts = {"connections": {"percent": 85.0}, "replication_lag_s": 31.5, "read_only": True}
    migrations = {"up_to_date": False, "current": "a1", "head": "b2"}
    warnings = component_warnings(facts, {"utilization_percent": 95.0}, LIMITS, migrations)
    assert warnings == [
        "85.0% of max_connections in use",
        "connection pool 95.0% in use",
        "replica 31.5s behind its primary",
        "the primary database is read-only",
        "migrations pending (database at a1, code at b2)",
    ]
    status, message = component_verdict("mariadb", warnings)
    assert status == "degraded" and message.startswith("MariaDB needs attention: 85.0% of max_connections")


def test_read_only_and_migrations_concern_the_primary_only():
    facts = {"read_only": True}
    assert component_warnings(facts, QUIET_POOL, LIMITS, migrations=None) == []


def test_unknown_migration_state_is_not_a_warning():
    assert component_warnings({}, QUIET_POOL, LIMITS, {"up_to_date": None}) == []


def test_the_primary_decides_up_or_down_and_a_bind_can_degrade():
    up = {"status": "healthy", "message": "PostgreSQL connection healthy"}
    down = {"status": "unhealthy", "message": "Database unreachable (OperationalError)"}
    assert overall({"primary": up}) == ("healthy", up["message"])
    assert overall({"primary": up, "replica": down}) == (
        "degraded",
        "PostgreSQL connection healthy; needs attention: replica",
    )
    assert overall({"primary": down, "replica": up}) == ("unhealthy", down["message"])
    degraded = {"status": "degraded", "message": "PostgreSQL needs attention: x"}
    assert overall({"primary": degraded, "replica": up}) == ("degraded", degraded["message"])


PRODUCTION = {**LIMITS, "APP_ENV": "production"}
PLAIN = {"tls": {"in_use": False, "version": None, "cipher": None}}


def test_production_warns_about_a_plain_connection_across_a_network():
    assert component_warnings(PLAIN, QUIET_POOL, PRODUCTION, local=False) == [
        "the connection to this database is not encrypted (no TLS) and crosses a network"
    ]


def test_no_tls_warning_for_loopback_encrypted_sqlite_or_outside_production():
    encrypted = {"tls": {"in_use": True, "version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384"}}
    assert component_warnings(PLAIN, QUIET_POOL, PRODUCTION, local=True) == []
    assert component_warnings(encrypted, QUIET_POOL, PRODUCTION, local=False) == []
    assert component_warnings({"tls": None}, QUIET_POOL, PRODUCTION, local=False) == []
    assert component_warnings(PLAIN, QUIET_POOL, {**LIMITS, "APP_ENV": "development"}, local=False) == []


PRIMARY = {"address": "10.0.0.1", "port": 5432, "in_recovery": False, "postmaster_start_time": "2026-01-01T00:00:00.000001Z",
           "timeline": 1, "system_identifier": "7000"}
STANDBY = {"address": "10.0.0.2", "port": 5432, "in_recovery": True, "postmaster_start_time": "2026-01-01T00:05:00.000001Z",
           "timeline": 1, "system_identifier": "7000"}


def test_a_replica_shares_the_identifier_but_is_another_server():
    assert same_server(PRIMARY, dict(PRIMARY, address="192.168.0.1"))  # reached through another interface
    assert not same_server(PRIMARY, STANDBY)
    assert not same_server(PRIMARY, dict(PRIMARY, postmaster_start_time="2026-02-01T00:00:00Z"))
    mariadb = {"address": "db-1", "port": 3306, "server_id": "1"}
    assert same_server(mariadb, dict(mariadb)) and not same_server(mariadb, dict(mariadb, address="db-2"))


def test_a_replica_bind_that_is_writable_or_the_primary_is_flagged():
    standby = {"read_only": True, "server": STANDBY}
    assert replica_warnings("replica", standby, {"server": PRIMARY}) == []
    promoted = {"read_only": False, "server": dict(STANDBY, in_recovery=False)}
    assert replica_warnings("replica", promoted, {"server": PRIMARY}) == [
        "replica replica is writable: 10.0.0.2:5432 is not in recovery (a primary)"
    ]
    assert replica_warnings("replica", {"read_only": False, "server": PRIMARY}, {"server": PRIMARY}) == [
        "replica replica is writable: 10.0.0.1:5432 is not in recovery (a primary)",
        "replica replica is the same server as the primary (10.0.0.1:5432)",
    ]


def test_which_binds_are_meant_as_replicas():
    assert meant_as_replica("replica", None, False) and meant_as_replica("standby_eu", None, False)
    assert meant_as_replica("reports", "read-only", False) and meant_as_replica("reports", None, True)
    assert not meant_as_replica("analytics", None, False) and not meant_as_replica("analytics", "read-write", False)


def test_a_full_pooler_queue_is_told_from_waiting_on_a_server_that_does_not_answer():
    full = {"clients_waiting": 3, "longest_wait_s": 4.23, "server_connections_in_use": 2, "server_connections_idle": 0, "pool_size": 2}
    assert pooler_queue(full) == "pooler queue full: 3 clients waiting, longest 4.2 s"
    assert pooler_warnings(full) == ["pooler queue full: 3 clients waiting, longest 4.2 s"]
    assert pooler_warnings(dict(full, longest_wait_s=0.2)) == []  # brief queueing is what a pooler is for
    assert pooler_queue(dict(full, server_connections_idle=1)) is None
    logging_in = dict(full, clients_waiting=1, server_connections_in_use=0)  # pgbouncer still logging in to a frozen server
    assert pooler_queue(logging_in) is None
    assert explain_timeout({"status": "degraded", **full}) == "pooler queue full: 3 clients waiting, longest 4.2 s"
    assert explain_timeout({"status": "unhealthy"}) is None and explain_timeout(None) is None


def test_a_change_of_server_is_put_in_words():
    assert change(None, PRIMARY) is None
    assert change(PRIMARY, dict(PRIMARY)) is None
    promoted = dict(STANDBY, in_recovery=False, timeline=2)
    assert change(PRIMARY, promoted) == "primary changed from 10.0.0.1:5432 to 10.0.0.2:5432, timeline 1 -> 2"
    assert change(STANDBY, dict(STANDBY, in_recovery=False)) == "replica 10.0.0.2:5432 left recovery (promoted)"
    restarted = dict(PRIMARY, postmaster_start_time="2026-01-02T00:00:00Z")
    assert change(PRIMARY, restarted) == "primary 10.0.0.1:5432 restarted (postmaster started 2026-01-02T00:00:00Z)"
    before, after = {"address": "db", "port": 3306, "server_uuid": "a"}, {"address": "db", "port": 3306, "server_uuid": "b"}
    assert change(before, after) == "primary changed from db:3306 (server_uuid a) to db:3306 (server_uuid b)"


def test_a_failover_seen_across_an_outage_is_detected():
    down = {"status": "unhealthy", "server": {"address": None, "unreachable_hosts": ["10.0.0.1:5432"], "last_answered": PRIMARY}}
    up = {"status": "healthy", "server": dict(STANDBY, in_recovery=False)}
    assert detect_change(down, up) == "primary changed from 10.0.0.1:5432 to 10.0.0.2:5432"
    assert detect_change(up, down) is None and detect_change(None, up) is None


def test_the_postmaster_start_is_told_in_utc_and_follows_a_restart():
    """Each probe's start time is written in UTC; the text of the last one is reused while it stays the same."""
    started = datetime(2026, 1, 1, 12, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))

    def told(value):
        return postgres_server(("10.0.0.1", 5432, value), False, None, make_url("postgresql://u@10.0.0.1/db"))["postmaster_start_time"]

    assert told(started) == "2026-01-01T10:00:00.000005Z"
    assert told(started.astimezone(timezone.utc)) == "2026-01-01T10:00:00.000005Z"  # the same instant
    assert told(started + timedelta(seconds=1)) == "2026-01-01T10:00:01.000005Z"  # restarted
    assert told(started) == "2026-01-01T10:00:00.000005Z"
