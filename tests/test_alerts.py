"""Webhook alerts under gunicorn (2 workers), with a real receiver and the database taken away.

The receiver has three doors: ``ok`` answers 200, ``flaky`` answers 500 to its
first request and 200 after, ``hang`` never answers (until the test ends).
"""
from __future__ import annotations

import copy
import json
import re
import threading
import time
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from backend.alerts import notify
from backend.fleet import poller
from backend.health import shared
from backend.state import state
from tests import faults
from tests.conftest import bearer, create_database
from tests.faults import Gunicorn, Proxy

SECRET = "alerts-tests-secret-key-0123456789abcdef"
SECRET_PATH = "T000/B000/s3cr3tpathpart"
FIELDS = {"component", "from", "to", "at", "message", "instance", "consecutive_failures", "text"}
wait_for = partial(faults.wait_for, timeout=30)  # an alert needs 3 probes of 1 s, then a delivery that may be retried


class Receiver:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: dict[str, list[tuple[int, dict]]] = {"ok": [], "flaky": [], "hang": []}
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                door = self.path.split("/")[1]
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.lock:
                    status = 500 if door == "flaky" and not receiver.received["flaky"] else 200
                    receiver.received[door].append((status, body))
                if door == "hang":
                    receiver.release.wait(60)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self, door: str) -> list[dict]:
        with self.lock:
            return [body for status, body in self.received[door] if status == 200]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def database():
    url, drop = create_database("postgresql")
    proxy = Proxy(5432)
    yield url, proxy
    proxy.close()
    drop()


@pytest.fixture(scope="module")
def server(database, receiver, tmp_path_factory):
    from flask_migrate import upgrade

    from backend import create_app

    url, proxy = database
    app = create_app({"APP_ENV": "testing", "DATABASE_URL": url, "INSTANCE_PATH": str(tmp_path_factory.mktemp("m")),
                      "DB_HEALTH_CHECK_INTERVAL": 0})
    with app.app_context():
        upgrade()
        state(app).dispose_connections()
    hooks = ",".join(f"{receiver.url}/{door}/{SECRET_PATH}" for door in ("ok", "flaky", "hang"))
    server = Gunicorn({
        "APP_ENV": "production",
        "DATABASE_URL": url.replace(":5432/", f":{proxy.port}/"),
        "JWT_SECRET_KEY": SECRET,
        "INSTANCE_PATH": str(tmp_path_factory.mktemp("instance")),
        "INSTANCE_ID": "alerts-1",
        "DB_HEALTH_CHECK_INTERVAL": "1",
        "DB_HEALTH_CACHE_TTL": "0.5",
        "DB_HEALTH_TIMEOUT": "1",
        "DB_ALERT_FAILURES": "3",
        "DB_ALERT_RECOVERIES": "2",
        "DB_ALERT_WEBHOOK_URLS": hooks,
    })
    yield server
    server.stop(quick=True)


@pytest.fixture(scope="module")
def viewer(server):
    from backend import create_app

    app = create_app({"APP_ENV": "testing", "JWT_SECRET_KEY": SECRET, "DB_HEALTH_CHECK_INTERVAL": 0})
    return bearer(app, "viewer")


def health(server, viewer, force=False):
    started = time.monotonic()
    status, _, _ = server.get("/api/database/health" + ("?force=true" if force else ""), headers=viewer)
    return status, time.monotonic() - started


def test_nothing_is_sent_while_healthy_and_urls_show_only_scheme_and_host(server, receiver, viewer):
    status, body, _ = server.get("/api/database/status", headers=viewer)
    alerts = json.loads(body)["data"]["alerts"]
    assert alerts["webhooks"] == [receiver.url] * 3 and alerts["failures"] == 3 and alerts["recoveries"] == 2
    time.sleep(3)  # three probe intervals, healthy: what is tested is that nothing happens
    assert receiver.received == {"ok": [], "flaky": [], "hang": []}


def test_a_flap_shorter_than_the_thresholds_sends_nothing(server, database, receiver, viewer):
    _, proxy = database
    proxy.set_mode("reset")
    try:
        # A forced request can join a background probe that began before the reset (single flight)
        # and answer 200; the next one probes afresh. Stop at the first failure: one, not three.
        statuses = []
        while 503 not in statuses and len(statuses) < 3:
            statuses.append(health(server, viewer, force=True)[0])
        assert statuses[-1] == 503, statuses
    finally:
        proxy.set_mode("pass")
    wait_for(lambda: health(server, viewer, force=True)[0] == 200)
    time.sleep(2.5)  # two more background probes: still nothing to send
    assert receiver.received == {"ok": [], "flaky": [], "hang": []}


def test_an_outage_sends_one_unhealthy_and_one_healthy_notification(server, database, receiver, viewer):
    _, proxy = database
    # The instance has seen the database healthy (run alone, this test could start before its first probe).
    wait_for(lambda: health(server, viewer, force=True)[0] == 200)
    proxy.set_mode("reset")
    try:
        wait_for(lambda: len(receiver.accepted("ok")) == 1)
    finally:
        proxy.set_mode("pass")
    wait_for(lambda: len(receiver.accepted("ok")) == 2)
    wait_for(lambda: len(receiver.accepted("flaky")) == 2)

    # The "hang" receiver holds a delivery open; requests do not wait for it.
    assert receiver.received["hang"]
    timings = [health(server, viewer)[1] for _ in range(10)] + [health(server, viewer, force=True)[1] for _ in range(3)]
    # A webhook on the path would cost 5 s; health's own budget is DB_HEALTH_TIMEOUT + 0.5 s.
    assert max(timings) < 2.5, timings

    time.sleep(2)  # a duplicate, from the other worker or a later probe, would arrive by now
    down, up = receiver.accepted("ok")
    assert set(down) == FIELDS and set(up) == FIELDS
    assert (down["component"], down["from"], down["to"], down["instance"]) == ("primary", "healthy", "unhealthy", "alerts-1")
    assert down["consecutive_failures"] >= 3 and down["message"] and down["at"].endswith("Z")
    assert "primary" in down["text"] and "UNHEALTHY" in down["text"] and "alerts-1" in down["text"]
    assert (up["from"], up["to"], up["consecutive_failures"]) == ("unhealthy", "healthy", 0)
    assert up["at"] > down["at"]

    flaky = receiver.received["flaky"]  # the first attempt got a 500 and was retried
    assert [status for status, _ in flaky] == [500, 200, 200]
    assert flaky[0][1] == flaky[1][1] == down and flaky[2][1] == up

    metrics = server.get("/metrics")[1].decode()
    target = re.escape(receiver.url)
    # The three doors share one label (scheme and host): the flaky door's retry is one, and the
    # hanging door adds one more each time its 5 s timeout passes, which it may have by now.
    retried = re.search(rf'dbhealth_alert_deliveries_total{{outcome="retried",target="{target}"}} ([0-9.]+)', metrics)
    assert retried and float(retried.group(1)) >= 1, metrics
    assert re.search(rf'dbhealth_alert_deliveries_total{{outcome="delivered",target="{target}"}} 4\.0', metrics)
    logs = server.logs()
    assert "alert delivered to " + receiver.url in logs and "retrying in 1s" in logs
    assert SECRET_PATH not in logs and SECRET_PATH not in metrics


def test_other_code_can_notify_a_change_of_server(make_app, receiver):
    app = make_app(DB_ALERT_WEBHOOK_URLS=f"{receiver.url}/ok/{SECRET_PATH}", INSTANCE_ID="web-9")
    before = len(receiver.accepted("ok"))
    with app.app_context():
        notify("primary", "healthy", "healthy", "primary changed from h1:5432 to h2:5432")
        poller.step(app)  # the probing worker's poller sends what was queued
    wait_for(lambda: len(receiver.accepted("ok")) == before + 1)
    sent = receiver.accepted("ok")[-1]
    assert set(sent) == FIELDS and sent["instance"] == "web-9"
    assert sent["message"] == "primary changed from h1:5432 to h2:5432"


def test_a_change_of_server_is_recorded_once_and_notified(make_app, receiver):
    """What the failover support reports (health's ``server``) becomes a transition and an alert, once."""
    app = make_app(DB_ALERT_WEBHOOK_URLS=f"{receiver.url}/ok/{SECRET_PATH}", INSTANCE_ID="web-8")
    client = app.test_client()
    client.get("/livez")
    state(app).monitor.stop()  # this test takes the poller's steps itself
    before = len(receiver.accepted("ok"))
    with app.app_context():
        snapshot, _ = state(app).monitor.health(force=True)
        for address in ("h1", "h1", "h2"):
            answered = copy.deepcopy(snapshot)
            answered["components"]["primary"]["server"] = {"address": address, "port": 5432}
            shared.publish(app, answered, time.time())
        poller.step(app)
    wait_for(lambda: len(receiver.accepted("ok")) == before + 1)
    sent = receiver.accepted("ok")[-1]
    assert (sent["instance"], sent["from"], sent["to"]) == ("web-8", "healthy", "healthy")
    assert sent["message"] == "primary changed from h1:5432 to h2:5432"
    transitions = client.get("/api/database/status", headers=bearer(app)).json["data"]["monitor"]["transitions"]
    assert [(t["message"], t["stored"]) for t in transitions] == [("primary changed from h1:5432 to h2:5432", True)]
