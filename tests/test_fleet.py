"""Two gunicorn instances (2 workers each, each its own instance folder) on one database.

PostgreSQL runs as a private cluster with pg_stat_statements, so probes can be
counted on the server; MariaDB is the shared server. Each instance logs in as a
user of its own, so the server tells their connections and queries apart. Both
reach the database through one fault proxy, which takes it away for the outage.
"""
from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from flask_migrate import upgrade

from backend import create_app
from backend.state import state
from tests.conftest import SERVERS, admin_engine, bearer, engine_for
from tests.faults import Gunicorn, PrivateCluster, Proxy, wait_for

SECRET = "fleet-tests-secret-key-0123456789abcdef"
ROUND_TRIP_MARGIN_S = 1.5  # deadline assertions on a busy 2-core machine


@dataclass
class Fleet:
    kind: str
    a: Gunicorn
    b: Gunicorn
    users: dict[str, str]  # instance -> database user
    admin: sa.Engine  # on the database server, for counting
    database: str
    proxy: Proxy
    app: object  # an app of the test's own on the same database, for tokens

    def connections(self) -> dict[str, set[int]]:
        """Server-side connection ids of each instance's user."""
        with self.admin.connect() as connection:
            if self.kind == "postgresql":
                rows = connection.exec_driver_sql(
                    "SELECT usename, pid FROM pg_stat_activity WHERE datname = %s", (self.database,)
                ).all()
            else:
                rows = connection.exec_driver_sql(
                    "SELECT USER, ID FROM information_schema.PROCESSLIST WHERE DB = %s", (self.database,)
                ).all()
        by_user = {user: instance for instance, user in self.users.items()}
        found: dict[str, set[int]] = {instance: set() for instance in self.users}
        for user, pid in rows:
            if user in by_user:
                found[by_user[user]].add(pid)
        return found


def _gunicorn_env(url: str, folder, instance: str | None) -> dict[str, str]:
    env = {
        "APP_ENV": "production",
        "DATABASE_URL": url,
        "JWT_SECRET_KEY": SECRET,
        "INSTANCE_PATH": str(folder),
        "DB_HEALTH_CHECK_INTERVAL": "1",
        "DB_HEALTH_CACHE_TTL": "1",
        "DB_HEALTH_TIMEOUT": "1",
        "DB_RETRY_BASE_DELAY": "0.1",
    }
    if instance:
        env["INSTANCE_ID"] = instance
    return env


@pytest.fixture(scope="module", params=["postgresql", "mariadb"])
def fleet(request, tmp_path_factory):
    kind = request.param
    suffix = uuid.uuid4().hex[:8]
    users = {"a": f"fleet_a_{suffix}", "b": f"fleet_b_{suffix}"}
    cleanup = []
    try:
        if kind == "postgresql":
            cluster = PrivateCluster(settings="shared_preload_libraries = 'pg_stat_statements'\n")
            cleanup.append(cluster.close)
            database, port = "app", cluster.port
            cluster.execute("CREATE DATABASE app", *(f"CREATE ROLE {user} LOGIN SUPERUSER" for user in users.values()))
            cluster.execute("CREATE EXTENSION pg_stat_statements", database="app")
            admin = engine_for(cluster.url(database="app"), isolation_level="AUTOCOMMIT")

            def url(user: str, port_: int) -> str:
                return f"postgresql://{user}@127.0.0.1:{port_}/app"
        else:
            admin = admin_engine("mariadb")
            database, port = f"dbhealth_{suffix}", sa.make_url(SERVERS["mariadb"]).port or 3306
            with admin.connect() as connection:
                connection.exec_driver_sql(f"CREATE DATABASE {database}")
                for user in users.values():
                    for host in ("%%", "localhost"):  # %% is pymysql's escape for %
                        connection.exec_driver_sql(f"CREATE USER '{user}'@'{host}'")
                        connection.exec_driver_sql(f"GRANT ALL ON {database}.* TO '{user}'@'{host}'")
                        # What the README asks for the operator's view (sessions, locks, kill).
                        connection.exec_driver_sql(f"GRANT PROCESS ON *.* TO '{user}'@'{host}'")

            def drop_mariadb():
                with admin.connect() as connection:
                    connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {database}")
                    for user in users.values():
                        for host in ("%%", "localhost"):  # %% is pymysql's escape for %
                            connection.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'{host}'")

            cleanup.append(drop_mariadb)

            def url(user: str, port_: int) -> str:
                return f"mariadb://{user}@127.0.0.1:{port_}/{database}"

        app = create_app({"APP_ENV": "testing", "DATABASE_URL": url(users["a"], port), "JWT_SECRET_KEY": SECRET,
                          "INSTANCE_PATH": str(tmp_path_factory.mktemp("migrate")), "DB_HEALTH_CHECK_INTERVAL": 0})
        with app.app_context():
            upgrade()
            state(app).dispose_connections()
        proxy = Proxy(port)
        cleanup.append(proxy.close)
        a = Gunicorn(_gunicorn_env(url(users["a"], proxy.port), tmp_path_factory.mktemp("instance-a"), "fleet-a"))
        cleanup.append(a.stop)
        b = Gunicorn(_gunicorn_env(url(users["b"], proxy.port), tmp_path_factory.mktemp("instance-b"), None))
        cleanup.append(b.stop)
        yield Fleet(kind, a, b, users, admin, database, proxy, app)
    finally:
        for step in reversed(cleanup):
            step()


@contextlib.contextmanager
def users_locked(fleet: Fleet):
    """The users table locked against reads, from a connection of the test's own, for the block."""
    with fleet.admin.connect() as locker:
        if fleet.kind == "postgresql":
            with locker.execution_options(isolation_level="READ COMMITTED").begin():
                locker.exec_driver_sql("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
                yield
        else:
            locker.exec_driver_sql(f"LOCK TABLES {fleet.database}.users WRITE")
            try:
                yield
            finally:
                locker.exec_driver_sql("UNLOCK TABLES")


def waiting_on_users(fleet: Fleet) -> set[int]:
    """Connection ids of instance a's user whose query on users waits for the table lock."""
    with fleet.admin.connect() as connection:
        if fleet.kind == "postgresql":
            rows = connection.exec_driver_sql(
                "SELECT pid FROM pg_stat_activity WHERE usename = %s AND wait_event_type = 'Lock' "
                "AND query LIKE '%%users%%'", (fleet.users["a"],)
            ).all()
        else:
            rows = connection.exec_driver_sql(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s "
                "AND STATE LIKE 'Waiting for table%%lock' AND INFO LIKE '%%users%%'", (fleet.users["a"],)
            ).all()
    return {row[0] for row in rows}


def call(server: Gunicorn, path: str, headers=None, method: str = "GET"):
    status, body, response_headers = server.get(path, headers=headers, method=method)
    return status, json.loads(body or b"{}"), response_headers


def status_of(server: Gunicorn, app) -> dict:
    answer, body, _ = call(server, "/api/database/status", bearer(app, "admin"))
    assert answer in (200, 503), body
    return body["data"]


def instance_id(server: Gunicorn) -> str:
    return call(server, "/livez")[2]["X-Instance-ID"]


def test_every_response_names_its_instance_and_status_lists_its_workers(fleet):
    assert instance_id(fleet.a) == "fleet-a"
    default = instance_id(fleet.b)  # chosen once by the master: host name and a short random suffix
    assert re.fullmatch(re.escape(socket.gethostname().split(".")[0][:57]) + r"-[0-9a-f]{6}", default), default
    viewer = bearer(fleet.app, "viewer")
    for server, name in ((fleet.a, "fleet-a"), (fleet.b, default)):
        seen = set()
        for _ in range(12):  # both workers answer, with the same id, errors included
            answer, body, headers = call(server, "/api/database/status", viewer)
            assert answer == 200 and headers["X-Instance-ID"] == name and body["data"]["instance"] == name
            seen.add(body["data"]["process"]["pid"])
            assert call(server, "/api/database/nothing", viewer)[2]["X-Instance-ID"] == name

        def listed():  # each worker rewrites its line once a second
            workers = status_of(server, fleet.app)["workers"]
            return len(workers) == 2 and any(worker["last_probe"] for worker in workers) and workers

        workers = wait_for(listed)
        assert {worker["pid"] for worker in workers} == set(server.worker_pids())
        assert seen <= set(server.worker_pids())
        assert sum(worker["probing"] for worker in workers) == 1
        probes = [worker["last_probe"] for worker in workers if worker["last_probe"]]  # each worker's own
        assert all(probe["status"] == "healthy" and probe["at"].endswith("Z") for probe in probes)
        assert all("pool_generation" in worker for worker in workers)


@pytest.mark.parametrize("fleet", ["postgresql"], indirect=True)
def test_one_background_probe_per_interval_per_instance(fleet):
    """Counted by pg_stat_statements, per database user, while no request arrives."""
    probes = "SELECT userid::regrole::text, sum(calls) FROM pg_stat_statements WHERE strpos(query, 'pg_is_in_recovery()') > 0 GROUP BY 1"
    connections = fleet.connections()
    with fleet.admin.connect() as connection:
        connection.exec_driver_sql("SELECT pg_stat_statements_reset()")
        started = time.monotonic()
        time.sleep(8)  # what is measured is the passing of time: 8 intervals of 1 s
        counts = dict(connection.exec_driver_sql(probes).all())
        elapsed = time.monotonic() - started
    per_instance = {instance: int(counts.get(user, 0)) for instance, user in fleet.users.items()}
    print(f"probes in {elapsed:.1f}s: {per_instance}; connections: { {k: len(v) for k, v in connections.items()} }")
    for instance, count in per_instance.items():
        # one probing worker: about one probe a second; two would make about 16
        assert elapsed - 3 <= count <= elapsed + 1, (instance, count, elapsed)


def test_a_connection_in_use_during_reconnect_is_closed_when_it_comes_back(fleet):
    """A login waits on a locked users table, holding a pooled connection, while /reconnect throws the
    pools away: when it finishes, its connection is closed, not kept by the pool it came from. Here
    (before any other reconnect of the module) that pool was made before the worker froze the garbage
    collector, which would otherwise keep it, and the connection, for good."""
    admin = bearer(fleet.app, "admin")
    answers: list[int] = []

    def log_in() -> None:
        body = b'{"username": "nobody", "password": "x"}'
        answers.append(fleet.a.get("/api/auth/login", {"Content-Type": "application/json"}, "POST", body=body)[0])

    login = threading.Thread(target=log_in)
    with users_locked(fleet):
        locked_at = time.monotonic()
        before = fleet.connections()["a"]
        login.start()
        waiting = wait_for(lambda: waiting_on_users(fleet), "the login to wait on the locked table", timeout=5, interval=0.02)
        assert len(waiting) == 1, waiting
        assert call(fleet.a, "/api/database/reconnect", admin, "POST")[0] == 200
        # Every worker has thrown its pools away: nothing from before is left but the waiting login's.
        wait_for(lambda: not (fleet.connections()["a"] & (before - waiting)), "both workers to reconnect", timeout=5)
    locked_for = time.monotonic() - locked_at
    login.join(timeout=10)
    assert answers == [401], f"{answers} after the table was locked {locked_for:.2f} s (the login's own budget: 5 s)"
    wait_for(lambda: not (fleet.connections()["a"] & waiting), lambda: f"the login's connection {waiting} to be closed",
             timeout=2 + ROUND_TRIP_MARGIN_S, interval=0.05)


def test_reconnect_reaches_every_worker_of_both_instances(fleet):
    admin = bearer(fleet.app, "admin")
    for server in (fleet.a, fleet.b):
        for _ in range(6):  # the pools of both workers hold connections
            assert call(server, "/api/database/audit?limit=1", admin)[0] == 200
    before = fleet.connections()
    assert len(before["a"]) >= 2 and len(before["b"]) >= 2, before
    print(f"connections per instance before reconnect: { {k: len(v) for k, v in before.items()} }")

    started = time.monotonic()
    answer, body, _ = call(fleet.a, "/api/database/reconnect", admin, "POST")
    assert answer == 200, body
    data = body["data"]
    generation = data["generation"]
    assert generation >= 1 and data["disposed_connections"] >= 1 and data["fallback"] is False
    # The answering instance has applied it; the other may already have too (it polls every second).
    answered = {entry["instance"]: entry for entry in data["applied_by"]}
    assert "fleet-a" in answered and answered["fleet-a"]["at"].endswith("Z")

    def old_connections_gone():
        now = fleet.connections()
        return all(not (before[name] & now[name]) for name in before)

    wait_for(old_connections_gone, timeout=10, interval=0.05)
    elapsed = time.monotonic() - started
    assert elapsed <= 2 + ROUND_TRIP_MARGIN_S, elapsed

    b_id = instance_id(fleet.b)
    for server in (fleet.a, fleet.b):  # asked of either instance, the fleet's answer
        def applied():
            report = status_of(server, fleet.app)["reconnect"]
            return report["generation"] == generation and {e["instance"]: e["workers"] for e in report["applied_by"]}

        assert wait_for(lambda: applied() == {"fleet-a": 2, b_id: 2})
        assert wait_for(lambda: {w["pool_generation"] for w in status_of(server, fleet.app)["workers"]} == {generation})


def test_an_outage_appears_once_per_instance_from_either_instance(fleet):
    viewer = bearer(fleet.app, "viewer")
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 1))
    fleet.proxy.set_mode("reset")
    try:
        for server in (fleet.a, fleet.b):
            wait_for(lambda: call(server, "/api/database/health", viewer)[0] == 503)
        # While the database is down, /reconnect falls back to the instance folder.
        started = time.monotonic()
        answer, body, _ = call(fleet.a, "/api/database/reconnect", bearer(fleet.app, "admin"), "POST")
        assert answer == 503 and body["data"]["fallback"] is True and body["data"]["applied_by"] == []
        wait_for(lambda: {w["local_reconnects"] for w in status_of(fleet.a, fleet.app)["workers"]} == {1})
        assert time.monotonic() - started <= 2 + 2 + ROUND_TRIP_MARGIN_S  # the request (1 s budget) + 2 s
        pending = status_of(fleet.a, fleet.app)["monitor"]["transitions"]
        assert [(t["from"], t["to"], t["stored"]) for t in pending if t["at"] >= since] == [("healthy", "unhealthy", False)]
    finally:
        fleet.proxy.set_mode("pass")
    for server in (fleet.a, fleet.b):
        wait_for(lambda: call(server, "/api/database/health", viewer)[0] == 200)

    b_id = instance_id(fleet.b)
    expected = {
        (instance, "primary", "healthy", "unhealthy") for instance in ("fleet-a", b_id)
    } | {(instance, "primary", "unhealthy", "healthy") for instance in ("fleet-a", b_id)}

    def history(server):
        transitions = status_of(server, fleet.app)["monitor"]["transitions"]
        return [(t["instance"], t["component"], t["from"], t["to"]) for t in transitions if t["at"] >= since and t["stored"]]

    for server in (fleet.a, fleet.b):
        wait_for(lambda: set(history(server)) == expected)
    time.sleep(1.5)  # a duplicate would be written by a poller within a second
    for server in (fleet.a, fleet.b):
        assert sorted(history(server)) == sorted(expected)


def test_a_revoked_token_is_refused_by_an_idle_instance(fleet):
    token = bearer(fleet.app, "viewer")
    assert call(fleet.b, "/api/database/status", token)[0] == 200
    answer, body, _ = call(fleet.a, "/api/auth/logout", token, "POST")
    assert answer == 200, body
    revoked_at = time.monotonic()
    time.sleep(2.0 - (time.monotonic() - revoked_at))  # instance b gets no request for 2 s
    for _ in range(6):  # whichever worker answers
        answer, body, _ = call(fleet.b, "/api/database/status", token)
        assert answer == 401 and body["code"] == "token_revoked", body


def test_no_worker_can_end_a_sibling_workers_probe_connection(fleet):
    """On the MySQL family nothing on the server names a probe connection: the workers list theirs."""
    admin = bearer(fleet.app, "admin")

    def probe_pids():
        for _ in range(4):  # every worker probes at least once (its kept connection opens)
            call(fleet.a, "/api/database/health?force=true", admin)
        workers = status_of(fleet.a, fleet.app)["workers"]
        pids = {worker.get("probe_pids", {}).get("primary") for worker in workers}
        return len(workers) == 2 and None not in pids and len(pids) == 2 and pids

    pids = wait_for(probe_pids)
    assert pids, "every worker lists its probe connection"
    for pid in pids:
        for _ in range(4):  # answered by either worker, its own probe or its sibling's
            status, body, _ = call(fleet.a, f"/api/database/sessions/{pid}/terminate", admin, "POST")
            assert status == 403 and body["code"] == "kill_not_allowed", (pid, body)
    assert call(fleet.a, "/api/database/health?force=true", admin)[0] == 200


@pytest.mark.parametrize("fleet", ["postgresql"], indirect=True)
def test_concurrent_forced_probes_share_one_probe_across_sync_workers(fleet, tmp_path):
    """SPEC 5: concurrent requests share one in-flight probe. Sync workers serve one request each, so
    that takes the instance's flight lock: forced requests from 8 clients to 2 sync workers make
    fewer probes than answers, counted by pg_stat_statements, and every answer is a healthy probe."""
    user = f"fleet_sync_{uuid.uuid4().hex[:8]}"
    with fleet.admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE ROLE {user} LOGIN SUPERUSER")
    env = {**_gunicorn_env(f"postgresql://{user}@127.0.0.1:{fleet.proxy.port}/app", tmp_path, None),
           "DB_HEALTH_CHECK_INTERVAL": "0", "DB_HEALTH_TIMEOUT": "2"}
    server = Gunicorn(env, workers=2, extra=("--worker-class", "sync"))
    try:
        viewer = bearer(fleet.app, "viewer")
        assert call(server, "/api/database/health?force=true", viewer)[0] == 200
        answers: list[tuple[int, bool]] = []
        until = time.monotonic() + 3

        def ask():
            while time.monotonic() < until:
                status, body, _ = call(server, "/api/database/health?force=true", viewer)
                answers.append((status, body["data"]["cached"], body["data"]["status"]))

        with fleet.admin.connect() as connection:
            connection.exec_driver_sql("SELECT pg_stat_statements_reset()")
            clients = [threading.Thread(target=ask) for _ in range(8)]
            for client in clients:
                client.start()
            for client in clients:
                client.join()
            probes = connection.exec_driver_sql(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
                "WHERE strpos(query, 'pg_is_in_recovery()') > 0 AND userid::regrole::text = %s", (user,)
            ).scalar()
    finally:
        server.stop()
    print(f"{len(answers)} forced answers, {probes} probes")
    assert set(answers) == {(200, False, "healthy")}
    assert len(answers) >= 100
    assert probes <= 0.85 * len(answers), (probes, len(answers))
