"""Judging health is a pure function: facts in, status and messages out, no database."""
from __future__ import annotations

from backend.health.judge import component_verdict, component_warnings, overall

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
