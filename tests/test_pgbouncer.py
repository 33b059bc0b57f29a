"""Behind a real pgbouncer (Debian's package, started here as the postgres user on a free port):
transaction and session mode, the `pooler` component, a full queue told apart from a frozen
server, RECONNECT, and the connection budget per worker.
"""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import psycopg2
import pytest
import sqlalchemy as sa

from backend.auth.users import create_user
from backend.state import state
from tests.conftest import bearer, create_database
from tests.faults import Gunicorn, PgBouncer, PrivateCluster, Proxy, postgres_execute, wait_for

SECRET = "pgbouncer-tests-secret-key-0123456789abcdef"
BUDGET = 2.0 + 0.5  # DB_HEALTH_TIMEOUT + the half second SPEC section 7 allows


@pytest.fixture(scope="module")
def upstream(cluster):
    """pgbouncer reaches the server through this proxy, so the server can be frozen behind it."""
    proxy = Proxy(cluster.port)
    yield proxy
    proxy.close()


def backends(cluster: PrivateCluster, database: str) -> set[int]:
    return {row["pid"] for row in cluster.execute(f"SELECT pid FROM pg_stat_activity WHERE datname = '{database}'")}


def prepared_app(make_app, cluster, bouncer, database, **settings):
    """An app on ``database`` through pgbouncer, migrated, with user alice; its own connections closed."""
    cluster.execute(f"CREATE DATABASE {database}")
    app = make_app(DATABASE_URL=bouncer.url(database), DB_PGBOUNCER_ADMIN_URL=bouncer.admin_url(), **settings)
    with app.app_context():
        create_user("alice", "correct horse", "admin")
        state(app).dispose_connections()
    return app


def call(server: Gunicorn, path: str, token: str | None = None, body: dict | None = None, method: str = "GET"):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server.url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
def test_everything_works_behind_pgbouncer(pool_mode, cluster, upstream, make_app, tmp_path):
    bouncer = PgBouncer(upstream.port, pool_mode=pool_mode, pool_size=10)
    server = None
    try:
        database = f"app_{pool_mode}"
        prepared_app(make_app, cluster, bouncer, database)
        env = {
            "APP_ENV": "production",
            "DATABASE_URL": bouncer.url(database),
            "DB_PGBOUNCER_ADMIN_URL": bouncer.admin_url(),
            "JWT_SECRET_KEY": SECRET,
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "DB_HEALTH_CACHE_TTL": "0",
            "DB_CONSOLE_ALLOW_PRIMARY_ROLE": "true",  # free-form console queries on the primary's role
        }
        workers = 2
        server = Gunicorn(env, workers=workers)

        status, body = call(server, "/api/auth/login", body={"username": "alice", "password": "correct horse"}, method="POST")
        assert status == 200, body
        token = body["data"]["access_token"]
        def forced_health():
            status, body = call(server, "/api/database/health?force=true", token)
            assert status == 200 and body["data"]["status"] == "healthy", body
            return body["data"]["components"]["pooler"]

        pooler = until_no_client_waits(forced_health)
        assert pooler["status"] == "healthy" and pooler["pool_mode"] == pool_mode, pooler
        assert pooler["longest_wait_s"] == 0
        assert isinstance(pooler["server_connections_in_use"], int)
        for _ in range(2 * workers):  # reach every worker
            assert call(server, "/api/database/status", token)[0] == 200
            status, body = call(server, "/api/database/test", token, {"query": "SELECT 41 + 1 AS answer"}, "POST")
            assert status == 200 and body["data"]["rows"] == [[42]], body
            assert call(server, "/api/database/audit?limit=1", token)[0] == 200

        # The budget per worker: the probe's connection, the console's, and the pool sized to its threads (1).
        in_use = backends(cluster, database)
        assert len(in_use) <= workers * 3, (pool_mode, bouncer.admin("SHOW CLIENTS"))

        status, body = call(server, "/api/database/reconnect", token, method="POST")
        assert status == 200 and body["data"]["pooler_reconnected"] == [database], body
        for _ in range(2 * workers):
            assert call(server, "/api/database/health?force=true", token)[0] == 200
            assert call(server, "/api/auth/login", body={"username": "alice", "password": "correct horse"}, method="POST")[0] == 200
        # pgbouncer replaced the server connections it held, not only ours to it.
        def replaced() -> bool:
            if in_use & backends(cluster, database):
                call(server, "/api/database/health?force=true", token)
                return False
            return True

        def still_held() -> str:
            """What to look at when it fails: the old server connections, and what pgbouncer says of them."""
            old = cluster.execute(
                "SELECT pid, state, backend_start, left(query, 80) AS query FROM pg_stat_activity "
                f"WHERE datname = '{database}' AND pid IN ({', '.join(str(pid) for pid in in_use)})"
            )
            return f"pgbouncer to replace the server connections it held; still there: {old}; " \
                   f"servers: {bouncer.admin('SHOW SERVERS')}; clients: {bouncer.admin('SHOW CLIENTS')}"

        wait_for(replaced, still_held, timeout=5, interval=0.2)
    finally:
        if server:
            server.stop()
        bouncer.close()


@pytest.fixture(scope="module")
def small_bouncer(upstream):
    """Transaction mode, two server connections: easy to fill."""
    bouncer = PgBouncer(upstream.port, pool_mode="transaction", pool_size=2)
    yield bouncer
    bouncer.close()


def until_no_client_waits(pooler_now):
    """The pooler component once no client waits: a worker's own connection may queue for a moment."""
    return wait_for(lambda: (pooler := pooler_now())["clients_waiting"] == 0 and pooler,
                    lambda: f"no client waiting in the pooler: {pooler_now()}", timeout=10, interval=0.2)


def test_a_full_queue_is_named_and_a_frozen_server_is_not(cluster, upstream, small_bouncer, make_app):
    app = prepared_app(make_app, cluster, small_bouncer, "app_queue", DB_HEALTH_CACHE_TTL=0, DB_OPERATION_TIMEOUT=2)
    client, viewer, admin = app.test_client(), bearer(app), bearer(app, "admin")

    def forced_health():
        data = client.get("/api/database/health?force=true", headers=viewer).json["data"]
        assert data["status"] == "healthy", data
        return data["components"]["pooler"]

    until_no_client_waits(forced_health)

    clients = []

    def run(statement: str) -> None:
        connection = psycopg2.connect(small_bouncer.url("app_queue"))
        clients.append(connection)
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement)
        except psycopg2.Error:
            pass  # ended below

    threads = [threading.Thread(target=run, args=("SELECT pg_sleep(60)",), daemon=True) for _ in range(2)]
    threads += [threading.Thread(target=run, args=("SELECT 1",), daemon=True) for _ in range(2)]
    try:
        for thread in threads[:2]:
            thread.start()
        time.sleep(0.3)
        for thread in threads[2:]:
            thread.start()

        def queued() -> bool:
            pool = next(p for p in small_bouncer.admin("SHOW POOLS") if p["database"] == "app_queue")
            return pool["cl_waiting"] >= 2 and pool["maxwait"] >= 1

        wait_for(queued, lambda: f"two clients queued: {small_bouncer.admin('SHOW POOLS')}", timeout=10)

        started = time.monotonic()
        response = client.get("/api/database/health?force=true", headers=viewer)
        elapsed = time.monotonic() - started
        assert response.status_code == 503 and elapsed <= BUDGET, elapsed
        data = response.json["data"]
        assert data["message"].startswith("pooler queue full: "), data["message"]
        pooler = data["components"]["pooler"]
        assert pooler["status"] == "degraded" and pooler["clients_waiting"] >= 2 and pooler["longest_wait_s"] >= 1
        assert pooler["server_connections_in_use"] == 2
        assert pooler["warnings"][0].startswith(f"pooler queue full: {pooler['clients_waiting']} clients waiting, longest ")

        # Requests whose database work queues behind them answer within their budget (DB_OPERATION_TIMEOUT + 1 s).
        for method, path, body in [
            ("post", "/api/auth/login", {"username": "alice", "password": "correct horse"}),
            ("get", "/api/database/audit?limit=1", None),
        ]:
            started = time.monotonic()
            response = getattr(client, method)(path, json=body, headers=admin if body is None else None)
            elapsed = time.monotonic() - started
            assert response.status_code == 503 and response.json["code"] == "db_unavailable", response.json
            assert elapsed <= 2 + 1 + 0.5, (path, elapsed)
    finally:
        cluster.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'")
        for thread in threads:
            thread.join(10)
        for connection in clients:
            connection.close()

    data = client.get("/api/database/health?force=true", headers=viewer).json["data"]
    assert data["status"] == "healthy", data["message"]

    upstream.set_mode("blackhole")  # the server stops answering; pgbouncer's queue is empty
    try:
        response = client.get("/api/database/health?force=true", headers=viewer)
        data = response.json["data"]
        assert response.status_code == 503
        assert data["message"] == "No answer from the database within 2s", data["message"]
        assert data["components"]["pooler"]["status"] == "healthy"
    finally:
        upstream.set_mode("pass")


def test_the_system_identifier_follows_the_server_behind_the_pooler(cluster, make_app):
    """pgbouncer pointed at another cluster (a RELOAD): the app's connection to pgbouncer stays
    open and now reaches another server, and health names that server's system identifier, not
    the one it learnt from the first (it is asked once per server, not once per connection)."""
    shared_url, drop = create_database("postgresql")
    name = sa.make_url(shared_url).database
    shared_port = sa.make_url(shared_url).port or 5432
    cluster.execute(f"CREATE DATABASE {name}")
    bouncer = PgBouncer(cluster.port)
    try:
        app = make_app(migrate=False, DATABASE_URL=bouncer.url(name))
        identifiers = {
            cluster.port: cluster.execute("SELECT system_identifier::text AS id FROM pg_control_system()")[0]["id"],
            shared_port: postgres_execute(shared_url, "SELECT system_identifier::text AS id FROM pg_control_system()")[0]["id"],
        }
        assert identifiers[cluster.port] != identifiers[shared_port]
        servers = []
        for port in (cluster.port, shared_port):
            bouncer.point_at(port)
            with app.app_context():
                snapshot, _ = state(app).monitor.health(force=True)
            servers.append(snapshot["components"]["primary"]["server"])
    finally:
        bouncer.close()
        cluster.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        drop()
    assert [server["port"] for server in servers] == [cluster.port, shared_port]
    assert [server["system_identifier"] for server in servers] == [identifiers[cluster.port], identifiers[shared_port]]
