"""What only shows under gunicorn: chunked bodies, the metrics folder, a worker's own start time."""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from tests.conftest import bearer
from tests.faults import Gunicorn, wait_for

SECRET = "served-tests-secret-key-0123456789abcdefgh"


@pytest.fixture
def serve(make_app, tmp_path):
    database = f"sqlite:///{tmp_path}/served.db"
    env = {"APP_ENV": "testing", "DATABASE_URL": database, "JWT_SECRET_KEY": SECRET,
           "INSTANCE_PATH": str(tmp_path / "instance")}
    app = make_app(**env)  # migrates
    servers = []

    def start(workers=1, **extra) -> Gunicorn:
        server = Gunicorn({**env, **extra}, workers=workers)
        servers.append(server)
        return server

    yield start, bearer(app, "admin")
    for server in servers:
        server.stop()


def chunked_post(server: Gunicorn, path: str, size: int) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.putrequest("POST", path)
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    chunk = b" " * 65536
    try:
        for _ in range(size // len(chunk)):
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        connection.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may answer and close before reading it all
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    return response.status, body


def test_a_chunked_body_over_1_mib_is_413(serve):
    start, admin = serve
    server = start()
    status, body = chunked_post(server, "/api/auth/login", 2 * 1024 * 1024)
    assert status == 413 and body["code"] == "payload_too_large", body
    status, body = chunked_post(server, "/api/auth/login", 64 * 1024)  # under the limit: only not an object
    assert status == 400 and body["code"] == "bad_request", body


def test_an_operators_metrics_folder_keeps_what_is_not_ours(serve, tmp_path):
    start, _ = serve
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "keep-me.txt").write_text("not ours")
    other = subprocess.run(  # another program's metrics in the same folder
        [sys.executable, "-c", "import os; from prometheus_client import Counter; Counter('other', 'x').inc(); print(os.getpid())"],
        env={"PROMETHEUS_MULTIPROC_DIR": str(folder)}, capture_output=True, text=True, check=True,
    )
    theirs = f"counter_{other.stdout.strip()}.db"
    server = start(workers=2, PROMETHEUS_MULTIPROC_DIR=str(folder))
    pids = {server.process.pid, *server.worker_pids()}
    for _ in range(5):
        assert server.get("/livez")[0] == 200
    assert server.get("/metrics")[0] == 200
    assert (folder / "keep-me.txt").exists() and (folder / theirs).exists()
    assert any(str(pid) in name for name in os.listdir(folder) for pid in pids)  # ours are there while it runs
    server.stop()
    left = sorted(os.listdir(folder))
    assert left == [theirs, "keep-me.txt"], left


def test_started_at_is_the_workers_own_start(serve):
    start, admin = serve
    server = start(LOG_FORMAT="json")  # the master imports the package for its log formatter
    (first,) = server.worker_pids()
    while datetime.now(timezone.utc).timestamp() - server.started < 1.5:  # a second later by the clock
        time.sleep(0.05)
    killed_at = datetime.now(timezone.utc).replace(microsecond=0)
    os.kill(first, signal.SIGTERM)

    def status_from_a_new_worker() -> bytes | None:
        if server.worker_pids() not in ([], [first]):
            status, body, _ = server.get("/api/database/status", headers=admin)
            return body if status == 200 else None
        return None

    body = wait_for(status_from_a_new_worker, "a new worker", interval=0.05)
    process = json.loads(body)["data"]["process"]
    assert process["pid"] != first
    started = datetime.fromisoformat(process["started_at"].replace("Z", "+00:00"))
    assert started >= killed_at, (started, killed_at)
    assert process["uptime_seconds"] <= 5


def test_dbhealth_check_force_is_documented_as_what_it_does(sqlite_app):
    """--force is accepted for symmetry with ?force=true; a command has no cache, so it always probes."""
    from pathlib import Path

    runner = sqlite_app.test_cli_runner()
    for args in (["dbhealth", "check", "--json"], ["dbhealth", "check", "--json", "--force"]):
        result = runner.invoke(args=args)
        assert result.exit_code == 0
        assert json.loads(result.output)["cached"] is False
    assert "always probes" in runner.invoke(args=["dbhealth", "check", "--help"]).output
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "`--force` changes nothing" in readme
