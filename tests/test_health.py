"""The health administration API, on SQLite, PostgreSQL and MariaDB."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import threading

import pytest
from flask_migrate import downgrade

from backend.state import state
from tests.conftest import bearer, create_database
from tests.faults import ROOT, Proxy, free_port, wait_for

HEALTH_FIELDS = {
    "status", "database_type", "version", "timestamp", "response_time_ms", "cached", "pool_status", "message", "components",
}
POOL_FIELDS = {"pool_size", "checked_in", "checked_out", "overflow"}
VERSION_PREFIX = {"sqlite": "SQLite ", "postgresql": "PostgreSQL ", "mariadb": "MariaDB "}


def kind_of(url: str) -> str:
    return url.split(":")[0]


def test_health_fields_and_cache(app, client, viewer, database_url):
    kind = kind_of(database_url)
    first = client.get("/api/database/health", headers=viewer)
    assert first.status_code == 200
    assert first.headers["Cache-Control"] == "no-store"
    data = first.json["data"]
    assert first.json["success"] is True
    assert HEALTH_FIELDS <= set(data)
    assert data["status"] == "healthy", data
    assert data["database_type"] == kind
    assert data["version"].startswith(VERSION_PREFIX[kind])
    assert data["timestamp"].endswith("Z")
    assert data["response_time_ms"] > 0
    assert data["cached"] is False
    assert POOL_FIELDS <= set(data["pool_status"])
    assert data["message"].endswith("connection healthy")
    assert set(data["components"]) == {"primary"}
    assert data["components"]["primary"]["status"] == "healthy"
    if kind != "sqlite":
        assert data["pool_status"]["pool_size"] == 10
        assert data["pool_status"]["overflow"] >= 0
        assert 0 < data["connections"]["used"] <= data["connections"]["max"]
    else:
        assert data["journal_mode"] == "wal"

    second = client.get("/api/database/health", headers=viewer).json["data"]
    assert second["cached"] is True and second["components"]["primary"]["cached"] is True
    assert second["timestamp"] == data["timestamp"]
    forced = client.get("/api/database/health?force=true", headers=viewer).json["data"]
    assert forced["cached"] is False


def test_force_parameter_is_validated(sqlite_app):
    client = sqlite_app.test_client()
    headers = bearer(sqlite_app)
    for value in ("true", "false", "1", "0", "TRUE"):
        assert client.get(f"/api/database/health?force={value}", headers=headers).status_code == 200
    response = client.get("/api/database/health?force=yes", headers=headers)
    assert response.status_code == 400 and response.json["code"] == "invalid_parameter"
    assert client.get("/api/database/health?unknown=1", headers=headers).status_code == 200


def test_the_same_query_asked_again_is_read_the_same(sqlite_app):
    """Query strings are parsed once and remembered: asked again (and past the number kept), each
    still means what it says, the first of a repeated parameter winning as with request.args."""
    client = sqlite_app.test_client()
    headers = bearer(sqlite_app)
    client.get("/api/database/health", headers=headers)
    for _ in range(2):
        assert client.get("/api/database/health?force=false&force=true", headers=headers).json["data"]["cached"] is True
        assert client.get("/api/database/health?force=true&force=false", headers=headers).json["data"]["cached"] is False
        assert client.get("/api/database/health?force=yes", headers=headers).status_code == 400
        assert client.get("/api/database/health?max_lag_s=-1", headers=headers).status_code == 400
        for number in range(100):  # more different ones than are kept
            assert client.get(f"/api/database/health?n={number}", headers=headers).status_code == 200


def test_info_never_shows_the_password(make_app):
    url, drop = create_database("postgresql")
    try:
        with_password = url.replace("postgres@", "postgres:hunter2secret@")  # trust auth ignores it
        app = make_app(DATABASE_URL=with_password, DB_POOL_SIZE=7)
        client = app.test_client()
        response = client.get("/api/database/info", headers=bearer(app))
        data = response.json["data"]
        assert data["database_type"] == "postgresql" and data["driver"] == "psycopg2"
        assert data["host"] == "127.0.0.1" and data["port"] == 5432 and data["user"] == "postgres"
        assert data["url"].startswith("postgresql+psycopg2://postgres:***@127.0.0.1")
        assert data["pool_size"] == 7 and data["max_overflow"] == 20 and data["pool_timeout"] == 20 and data["pool_recycle"] == 3600
        for path in ("/api/database/info", "/api/database/status", "/api/database/health"):
            assert "hunter2secret" not in client.get(path, headers=bearer(app, "admin")).get_data(as_text=True)
    finally:
        drop()


def test_status_page(client, viewer, database_url):
    response = client.get("/api/database/status", headers=viewer)
    assert response.status_code == 200
    data = response.json["data"]
    assert data["health"]["status"] == "healthy"
    assert POOL_FIELDS <= set(data["pool"]["primary"])
    server = data["server"]["primary"]
    assert server["version"] and "database_size_bytes" in server and server["database_size_bytes"] > 0
    if kind_of(database_url) != "sqlite":
        assert server["uptime_seconds"] > 0
        assert server["connections"]["max"] > 0
        assert server["replica"] is False
    assert data["migrations"]["up_to_date"] is True
    assert data["migrations"]["current"] == data["migrations"]["head"]
    monitor = data["monitor"]
    assert monitor["checks_total"] >= 1 and monitor["failures_total"] == 0
    assert monitor["latency_ms"]["p50"] > 0
    assert monitor["transitions"] == []  # starting up healthy is not a change
    assert data["process"]["pid"] > 0 and data["process"]["started_at"].endswith("Z")
    assert data["instance"] and data["reconnect"] == {"generation": 0, "applied_by": []}


def test_status_latency_percentiles_come_from_the_probes_made(sqlite_app):
    """p50, p95 (nearest rank) and max of the probes this process made, as their answers reported them."""
    client = sqlite_app.test_client()
    viewer = bearer(sqlite_app)
    times = [
        client.get("/api/database/health?force=true", headers=viewer).json["data"]["components"]["primary"]["response_time_ms"]
        for _ in range(21)
    ]
    latency = client.get("/api/database/status", headers=viewer).json["data"]["monitor"]["latency_ms"]
    ordered = sorted(times)
    assert latency["samples"] == 21
    assert latency["p50"] == ordered[10]
    assert latency["p95"] == ordered[math.ceil(0.95 * 21) - 1]
    assert latency["max"] == ordered[-1]


def test_a_bind_down_degrades_while_the_primary_is_healthy(make_app):
    primary, drop_primary = create_database("postgresql")
    analytics, drop_analytics = create_database("postgresql")
    try:
        app = make_app(DATABASE_URL=primary, DB_BIND_ANALYTICS=analytics)  # writable, so not named a replica
        client = app.test_client()
        data = client.get("/api/database/health", headers=bearer(app)).json["data"]
        assert data["status"] == "healthy"
        assert set(data["components"]) == {"primary", "analytics"}
        assert data["components"]["analytics"]["status"] == "healthy"
        info = client.get("/api/database/info", headers=bearer(app)).json["data"]
        assert info["binds"]["analytics"]["database"] == analytics.rsplit("/", 1)[1]

        closed = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
        app = make_app(migrate=False, DATABASE_URL=primary, DB_BIND_ANALYTICS=closed)
        response = app.test_client().get("/api/database/health", headers=bearer(app))
        assert response.status_code == 200
        data = response.json["data"]
        assert data["status"] == "degraded"
        assert data["components"]["primary"]["status"] == "healthy"
        assert data["components"]["analytics"]["status"] == "unhealthy"
        assert "analytics" in data["message"]
    finally:
        drop_primary()
        drop_analytics()


def test_primary_down_is_503_and_still_ready(make_app):
    port = free_port()
    app = make_app(migrate=False, DATABASE_URL=f"postgresql://postgres@127.0.0.1:{port}/x")
    client = app.test_client()
    response = client.get("/api/database/health", headers=bearer(app, "viewer"))
    assert response.status_code == 503
    body = response.json
    assert body["success"] is False and body["code"] == "db_unavailable"
    assert body["data"]["status"] == "unhealthy"
    assert "error" not in body["data"]["components"]["primary"]
    # The driver's words stay with admins; the configured host is named only as the one that did not answer.
    text = response.get_data(as_text=True)
    assert "refused" not in text.lower() and "connection to server" not in text
    assert body["data"]["components"]["primary"]["server"]["unreachable_hosts"] == [f"127.0.0.1:{port}"]
    assert text.count("127.0.0.1") == 2  # server.unreachable_hosts, of the primary and of the top level
    admin_view = client.get("/api/database/health", headers=bearer(app, "admin")).json
    assert "refused" in admin_view["data"]["components"]["primary"]["error"].lower()
    assert client.get("/readyz").status_code == 200  # SPEC 6: the instance can still serve (see test_input)


def test_readyz_is_200_without_details(sqlite_app):
    response = sqlite_app.test_client().get("/readyz")
    assert response.status_code == 200
    assert response.json == {"success": True, "data": {"status": "ready"}}


def test_pending_migrations_degrade(make_app, database_url):
    app = make_app(DATABASE_URL=database_url)
    with app.app_context():
        downgrade(revision="base")
    fresh = make_app(migrate=False, DATABASE_URL=database_url)
    response = fresh.test_client().get("/api/database/health", headers=bearer(fresh))
    assert response.status_code == 200
    data = response.json["data"]
    assert data["status"] == "degraded"
    assert "migrations pending" in data["message"]


def test_concurrent_requests_share_one_probe(make_app):
    url, drop = create_database("postgresql")
    proxy = Proxy(5432)
    try:
        app = make_app(DATABASE_URL=url.replace(":5432/", f":{proxy.port}/"), DB_HEALTH_CACHE_TTL=60)
        headers = bearer(app)
        monitor = state(app).monitor
        client = app.test_client()
        client.get("/api/database/health", headers=headers)
        before = monitor.history.checks_total
        proxy.delay = 0.2  # every probe now takes a while, so the requests overlap
        answers = []
        barrier = threading.Barrier(20)

        def ask():
            barrier.wait()
            answers.append(app.test_client().get("/api/database/health?force=true", headers=headers).status_code)

        threads = [threading.Thread(target=ask) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers == [200] * 20
        assert monitor.history.checks_total - before <= 2  # one probe, or two if a request arrived as the first ended
    finally:
        proxy.close()
        drop()


def test_health_json_format(client, viewer):
    response = client.get("/api/database/health", headers={**viewer, "Accept": "application/health+json"})
    assert response.status_code == 200
    assert response.mimetype == "application/health+json"
    body = json.loads(response.get_data())
    assert body["status"] == "pass"
    check = body["checks"]["primary:responseTime"][0]
    assert check["observedUnit"] == "ms" and check["observedValue"] > 0 and check["status"] == "pass"
    assert check["time"].endswith("Z")


def test_text_in_the_health_body_comes_back_as_written(sqlite_app):
    """Any text a snapshot holds (a server's message in another language): UTF-8 JSON, read back as it was."""
    viewer = bearer(sqlite_app)
    client = sqlite_app.test_client()
    assert client.get("/api/database/health", headers=viewer).status_code == 200
    monitor = state(sqlite_app).monitor
    odd = json.loads(json.dumps(monitor.snapshot))
    odd["message"] = odd["components"]["primary"]["message"] = "Datenbank geprüft ✓ \"ok\" \\ \u2028"
    monitor.snapshot = odd  # still within the cache's time to live: answered as it is

    response = client.get("/api/database/health", headers=viewer)

    assert response.mimetype == "application/json"
    data = json.loads(response.get_data().decode("utf-8"))["data"]
    assert data["cached"] is True
    assert data["message"] == data["components"]["primary"]["message"] == odd["message"]


@pytest.mark.parametrize(
    "accept, mimetype",
    [
        ("application/health+json; charset=utf-8", "application/health+json"),
        ("application/json, application/health+json", "application/health+json"),
        ("application/health+json;q=0, application/json", "application/json"),  # q=0: "not this"
        ("application/json, application/health+json;q=0.5", "application/json"),
        ("*/*", "application/json"),
    ],
)
def test_health_json_only_when_the_client_prefers_it(client, viewer, accept, mimetype):
    response = client.get("/api/database/health", headers={**viewer, "Accept": accept})
    assert response.status_code == 200 and response.mimetype == mimetype


def test_dbhealth_check_exit_codes(make_app, tmp_path):
    healthy = make_app()
    result = healthy.test_cli_runner().invoke(args=["dbhealth", "check"])
    assert result.exit_code == 0 and result.output.startswith("healthy:")
    result = healthy.test_cli_runner().invoke(args=["dbhealth", "check", "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["status"] == "healthy"

    pending = make_app(migrate=False, DATABASE_URL=f"sqlite:///{tmp_path}/empty.db")
    assert pending.test_cli_runner().invoke(args=["dbhealth", "check"]).exit_code == 1

    down = make_app(migrate=False, DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    result = down.test_cli_runner().invoke(args=["dbhealth", "check", "--force"])
    assert result.exit_code == 2 and result.output.startswith("unhealthy:")


def test_dbhealth_check_exit_codes_as_a_process(tmp_path):
    def run(**env):
        return subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", "dbhealth", "check"],
            cwd=ROOT, env={"PATH": "/usr/bin:/bin", "INSTANCE_PATH": str(tmp_path), **env},
            capture_output=True, text=True, timeout=60,
        )

    assert run(DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/x").returncode == 2
    assert run(DB_HEALTH_TIMEOUT="soon").returncode == 3


def test_monitor_runs_in_the_background_and_logs_transitions_once(make_app, caplog):
    url, drop = create_database("postgresql")
    proxy = Proxy(5432)
    try:
        app = make_app(DATABASE_URL=url.replace(":5432/", f":{proxy.port}/"), DB_HEALTH_CHECK_INTERVAL=0.2, DB_HEALTH_TIMEOUT=1)
        client = app.test_client()
        client.get("/livez")  # the first request starts the monitor in this process
        monitor = state(app).monitor
        wait_for(lambda: monitor.history.checks_total >= 2)
        proxy.set_mode("reset")
        wait_for(lambda: monitor.history.consecutive_failures >= 3)
        proxy.set_mode("pass")
        wait_for(lambda: monitor.snapshot["status"] == "healthy" and monitor.history.consecutive_failures == 0)

        def stored():
            data = client.get("/api/database/status", headers=bearer(app)).json["data"]
            return [t for t in data["monitor"]["transitions"] if t["stored"]]

        wait_for(lambda: len(stored()) == 2)  # the outage was spooled, and written once the database was back
        assert [(t["component"], t["from"], t["to"]) for t in reversed(stored())] == [
            ("primary", "healthy", "unhealthy"), ("primary", "unhealthy", "healthy")
        ]
        assert {t["instance"] for t in stored()} == {app.config["INSTANCE_ID"]}
        logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("primary: ")]
        assert len(logged) == 2
        report = monitor.report()
        assert report["failures_total"] >= 3 and report["last_error"]
    finally:
        proxy.close()
        drop()


def test_forced_probes_rewrite_the_shared_result_only_when_it_says_something_new(sqlite_app, monkeypatch):
    """A forced probe answers from a probe of its own, but one result like the last (but for timings)
    is written to the instance folder at most once per REWRITE_AFTER_S; a change is written at once."""
    from backend.fleet.folder import read_json
    from backend.health import shared

    monkeypatch.setattr(shared, "REWRITE_AFTER_S", 0.5)
    path = f"{sqlite_app.instance_path}/{shared.SHARED_FILE}"
    client, headers = sqlite_app.test_client(), bearer(sqlite_app)
    client.get("/api/database/health?force=true", headers=headers)
    published = read_json(path)["probed_at"]
    answers = [client.get("/api/database/health?force=true", headers=headers).json["data"] for _ in range(3)]
    assert [answer["cached"] for answer in answers] == [False, False, False]
    assert read_json(path)["probed_at"] == published  # alike and within 0.5 s: not written again

    with sqlite_app.app_context():
        snapshot, _ = state(sqlite_app).monitor.health(force=True)
        changed = json.loads(json.dumps(snapshot))
        changed["components"]["primary"]["server"] = {"address": "elsewhere", "port": 5432}
        shared.publish(sqlite_app, changed, published + 0.1)
    assert read_json(path)["snapshot"]["components"]["primary"]["server"]["address"] == "elsewhere"

    wait_for(lambda: client.get("/api/database/health?force=true", headers=headers).status_code == 200
             and read_json(path)["probed_at"] > published + 0.5, "an unchanged result written again after 0.5 s")


def test_results_alike_but_for_measurements_are_not_written_again(sqlite_app):
    """Each worker measures capacity risks at its own times: two results that differ only in those
    measurements (and timings) say nothing new, and leave the published file as it is, so the
    other workers need not read it again; a different verdict is written at once."""
    import copy
    import os

    from backend.fleet.folder import read_json
    from backend.health import shared

    path = f"{sqlite_app.instance_path}/{shared.SHARED_FILE}"
    with sqlite_app.app_context():
        snapshot, _ = state(sqlite_app).monitor.health(force=True)
        t0 = read_json(path)["probed_at"]
        identity = os.stat(path)
        risk = {"risk": "xid_age", "value": 47, "threshold": 10**9, "unit": "transactions", "over": False, "message": "fine"}
        for step, (value, checked_at) in enumerate([(47, "2026-01-01T00:00:00Z"), (49, "2026-01-01T00:00:07Z")]):
            worker = copy.deepcopy(snapshot)
            worker["components"]["primary"]["risks"] = {"checked_at": checked_at, "items": [{**risk, "value": value}]}
            worker["components"]["primary"]["response_time_ms"] = 1.0 + step
            assert shared.publish(sqlite_app, worker, t0 + 0.1 * (step + 1)) == []
        after = os.stat(path)
        assert (after.st_ino, after.st_mtime_ns) == (identity.st_ino, identity.st_mtime_ns)
        assert read_json(path)["probed_at"] == t0

        warned = copy.deepcopy(snapshot)
        warned["components"]["primary"]["warnings"] = ["xid_age: database test is 1500000000 transactions from its last freeze"]
        shared.publish(sqlite_app, warned, t0 + 0.3)
    assert read_json(path)["snapshot"]["components"]["primary"]["warnings"] == warned["components"]["primary"]["warnings"]


def test_a_slow_probe_overtaken_by_one_that_said_nothing_new_is_not_published(sqlite_app):
    """Probes start at t0, t0 + 0.5 (alike: not written again) and t0 + 0.2 (down, finishing last):
    the last one is older than what the instance already knows, so it is dropped, not published
    as a change; a down result newer than both is published at once."""
    import copy

    from backend.fleet.folder import read_json
    from backend.health import shared

    path = f"{sqlite_app.instance_path}/{shared.SHARED_FILE}"
    with sqlite_app.app_context():
        snapshot, _ = state(sqlite_app).monitor.health(force=True)
        down = copy.deepcopy(snapshot)
        down["components"]["primary"].update(status="unhealthy", message="down")
        t0 = read_json(path)["probed_at"] + 10
        assert shared.publish(sqlite_app, snapshot, t0) == []
        assert shared.publish(sqlite_app, snapshot, t0 + 0.5) == []
        assert shared.publish(sqlite_app, down, t0 + 0.2) == []
        assert read_json(path)["snapshot"]["components"]["primary"]["status"] == snapshot["status"]
        changes = shared.publish(sqlite_app, down, t0 + 0.6)
    assert [(change["component"], change["to"]) for change in changes] == [("primary", "unhealthy")]
