"""Misconfiguration is not an outage: 503 db_misconfigured, unhealthy with what to fix,
`flask dbhealth check` exit 3, never retried. On real servers: a private PostgreSQL
cluster that wants a password, pgbouncer refusing a startup parameter, MariaDB.
"""
from __future__ import annotations

import os
import time

import pytest
import sqlalchemy as sa

from tests.conftest import SERVERS, admin_engine
from tests.faults import PgBouncer, PrivateCluster

RETRY_DELAY = 1.0  # a retried failure would sleep at least this long before its second attempt


@pytest.fixture(scope="module")
def cluster():
    """A cluster where the role ``keeper`` must give its password (scram), everyone else is trusted."""
    cluster = PrivateCluster()
    with open(os.path.join(cluster.data, "pg_hba.conf")) as hba:
        rules = hba.read()
    with open(os.path.join(cluster.data, "pg_hba.conf"), "w") as hba:
        hba.write("host all keeper 127.0.0.1/32 scram-sha-256\n" + rules)
    cluster.pg_ctl("reload")
    cluster.execute("CREATE ROLE keeper LOGIN PASSWORD 'the-right-one'")
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def pgbouncer(cluster):
    """pgbouncer in transaction mode in front of the cluster; returns its port."""
    with PgBouncer(cluster.port, pool_mode="transaction") as bouncer:
        yield bouncer.port


def mariadb_wrong_password() -> str:
    admin_engine("mariadb").dispose()  # skips (fails under CI) when MariaDB is not reachable
    return sa.make_url(SERVERS["mariadb"]).set(password="not-the-password").render_as_string(hide_password=False)


CASES = {
    "wrong password": (lambda c, p: f"postgresql://keeper:wrong@127.0.0.1:{c.port}/postgres", "refused the password"),
    "no password": (lambda c, p: f"postgresql://keeper@127.0.0.1:{c.port}/postgres", "wants a password"),
    "unknown database": (lambda c, p: c.url(database="no_such_database"), "database does not exist"),
    "unknown role": (lambda c, p: f"postgresql://nobody@127.0.0.1:{c.port}/postgres", "role) does not exist"),
    "parameter refused by pgbouncer": (
        lambda c, p: f"postgresql://postgres@127.0.0.1:{p}/postgres?options=-c%20statement_timeout%3D1000",
        "refused a startup parameter",
    ),
    "mariadb wrong password": (lambda c, p: mariadb_wrong_password(), "refused the user or password"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_misconfiguration_is_not_an_outage(case, cluster, pgbouncer, make_app):
    url_of, cause = CASES[case]
    app = make_app(migrate=False, DATABASE_URL=url_of(cluster, pgbouncer), DB_RETRY_BASE_DELAY=RETRY_DELAY)
    client = app.test_client()

    from tests.conftest import bearer

    response = client.get("/api/database/health?force=true", headers=bearer(app, "admin"))
    assert response.status_code == 503 and response.json["code"] == "db_misconfigured", response.json
    data = response.json["data"]
    assert data["status"] == "unhealthy" and data["components"]["primary"]["misconfigured"] is True
    assert cause in data["message"] and "DATABASE_URL" in data["message"], data["message"]

    started = time.monotonic()
    response = client.post("/api/auth/login", json={"username": "someone", "password": "a password"})
    assert response.status_code == 503 and response.json["code"] == "db_misconfigured", response.json
    assert cause in response.json["error"] and "retry_count" not in response.json
    assert time.monotonic() - started < RETRY_DELAY, "a misconfiguration was retried"

    result = app.test_cli_runner().invoke(args=["dbhealth", "check"])
    assert result.exit_code == 3 and "misconfigured" in result.output, result.output


def test_the_right_password_is_healthy(cluster, make_app):
    """The cluster above really checks passwords: the right one is let in."""
    app = make_app(migrate=False, DATABASE_URL=f"postgresql://keeper:the-right-one@127.0.0.1:{cluster.port}/postgres")
    assert app.test_cli_runner().invoke(args=["dbhealth", "check"]).exit_code in (0, 1)
