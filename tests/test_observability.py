"""Prometheus metrics across gunicorn workers, JSON logs with request ids, replica awareness."""
from __future__ import annotations

import json
import os
import re
import signal

import pytest

from tests.conftest import bearer, create_database
from tests.faults import Gunicorn, PrivateCluster, wait_for

SECRET = "observability-tests-secret-key-0123456789"


def sample(metrics_text: str, name: str, **labels: str) -> float:
    """The value of one sample, 0 when absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in metrics_text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            sample_labels = line[len(name):].split(" ")[0]
            if all(f'{k}="{v}"' in sample_labels for k, v in labels.items()) or not wanted:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture
def served(make_app, tmp_path):
    url, drop = create_database("postgresql")
    env = {
        "APP_ENV": "production", "DATABASE_URL": url, "JWT_SECRET_KEY": SECRET,
        "INSTANCE_PATH": str(tmp_path / "instance"), "DB_HEALTH_CACHE_TTL": "0",
        "DB_POOL_SIZE": "10",  # not gunicorn.conf.py's default (the threads): the sums below count tens
    }
    app = make_app(**env)
    servers = []

    def start(**extra):
        server = Gunicorn({**env, **extra}, workers=2)
        servers.append(server)
        return server

    yield start, bearer(app, "viewer")
    for server in servers:
        server.stop()
    with app.app_context():
        from backend.state import state

        state(app).dispose_connections()
    drop()


def test_metrics_add_up_over_workers_and_forget_dead_ones(served):
    start, viewer = served
    server = start()
    already = sample(server.get("/metrics")[1].decode(), "dbhealth_http_requests_total", method="GET", route="/livez", status="200")
    for _ in range(40):
        assert server.get("/livez")[0] == 200
    for _ in range(20):
        assert server.get("/api/database/health?force=true", headers=viewer)[0] == 200
    status, body, headers = server.get("/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert sample(text, "dbhealth_http_requests_total", method="GET", route="/livez", status="200") == already + 40
    assert sample(text, "dbhealth_probe_results_total", component="primary", status="healthy") == 20
    assert sample(text, "dbhealth_probe_duration_seconds_count", component="primary") == 20
    assert 'route="/api/database/health"' in text and "/api/database/health?force" not in text

    # Both workers have probed: their pool sizes add up; a dead worker's gauges go away.
    def pool_size() -> float:
        return sample(server.get("/metrics")[1].decode(), "dbhealth_pool_size", component="primary")

    def both_probed() -> bool:
        if pool_size() == 20:
            return True
        server.get("/api/database/health?force=true", headers=viewer)  # reaches one worker or the other
        return False

    wait_for(both_probed, "both workers to probe", interval=0)
    os.kill(server.worker_pids()[0], signal.SIGTERM)
    wait_for(lambda: pool_size() == 10, "the dead worker's gauge to go", interval=0.2)
    counters = server.get("/metrics")[1].decode()
    assert sample(counters, "dbhealth_http_requests_total", method="GET", route="/livez", status="200") == already + 40


def test_metrics_token(served):
    start, _ = served
    server = start(METRICS_TOKEN="scrape-me")
    assert server.get("/metrics")[0] == 401
    assert server.get("/metrics", headers={"Authorization": "Bearer scrape-me"})[0] == 200


def test_json_logs_carry_the_request_id(served):
    start, viewer = served
    server = start(LOG_FORMAT="json")
    for number in range(5):
        headers = {**viewer, "X-Request-ID": f"trace-{number}"}
        assert server.get("/api/database/info", headers=headers)[0] == 200
    assert server.get("/nope", headers={"X-Request-ID": "trace-404"})[0] == 404
    server.get("/livez", headers={"X-Request-ID": "trace-quiet"})
    server.get("/api/database/health", headers={**viewer, "X-Request-ID": "trace-polled"})
    server.stop()
    lines = [line for line in server.logs().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is JSON
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    requests = [r for r in records if r["logger"] == "backend.request"]
    ids = [r["request_id"] for r in requests]
    assert ids == [f"trace-{n}" for n in range(5)] + ["trace-404"]
    first = requests[0]
    assert first["route"] == "/api/database/info" and first["status"] == 200
    assert first["identity"] == "test-viewer" and first["method"] == "GET" and first["duration_ms"] > 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert any(r["logger"].startswith("gunicorn") for r in records)


@pytest.fixture(scope="module")
def replication():
    primary = PrivateCluster()
    replica = PrivateCluster(primary=primary)
    yield primary, replica
    replica.close()
    primary.close()


def test_replica_lag_degrades_and_recovers(make_app, replication):
    primary, replica = replication
    primary.execute("CREATE TABLE IF NOT EXISTS ticks (n integer)", "INSERT INTO ticks VALUES (1)")
    app = make_app(DATABASE_URL=primary.url(), DB_BIND_REPLICA=replica.url(), DB_REPLICA_MAX_LAG_S=1, DB_HEALTH_CACHE_TTL=0)
    client = app.test_client()
    headers = bearer(app)

    def replica_health():
        return client.get("/api/database/health", headers=headers).json["data"]

    wait_for(lambda: replica_health()["components"]["replica"].get("replication_lag_s") == 0)
    data = replica_health()
    assert data["status"] == "healthy"
    assert data["components"]["replica"]["replica"] is True
    assert data["components"]["primary"]["replica"] is False

    replica.execute("SELECT pg_wal_replay_pause()")
    try:
        primary.execute("INSERT INTO ticks VALUES (2)")
        wait_for(lambda: replica_health()["status"] == "degraded")
        lagging = replica_health()["components"]["replica"]
        assert lagging["status"] == "degraded" and lagging["replication_lag_s"] > 1
        assert "behind its primary" in lagging["message"]
        status = client.get("/api/database/status", headers=headers).json["data"]
        assert status["server"]["replica"]["replica"] is True and status["server"]["replica"]["replication_lag_s"] > 1
    finally:
        replica.execute("SELECT pg_wal_replay_resume()")
    wait_for(lambda: replica_health()["status"] == "healthy")
