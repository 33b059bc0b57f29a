"""One probe in flight per instance: a worker that finds a sibling probing shares its result.

A sibling worker is played by a second open file description of the instance's
flight lock (flock locks belong to one, so this process then contends with
itself exactly as two workers do); the end-to-end test runs two sync workers.
"""
from __future__ import annotations

import copy
import fcntl
import json
import os
import threading
import time

import pytest

from backend.fleet import folder
from backend.health import flight, shared
from backend.state import state
from tests.conftest import bearer

TIMEOUT_S = 1.0
MARGIN_S = 0.5  # a busy 2-core machine


@pytest.fixture
def app(make_app):
    return make_app(DB_HEALTH_TIMEOUT=TIMEOUT_S)


class Sibling:
    """Holds the instance's flight lock as another worker probing would."""

    def __init__(self, app):
        self.app = app
        self.fd = os.open(os.path.join(app.instance_path, flight.FLIGHT_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.started = time.time()
        os.utime(self.fd, (self.started, self.started))  # when its probe began, as a probing worker stamps it

    def publish(self, snapshot, probed_at=None):
        """As its probe would: ``probed_at`` (when it began asking) is after it took the flight."""
        with self.app.app_context():
            shared.publish(self.app, snapshot, probed_at or self.started)

    def land(self):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def forced_in_background(app):
    answer = {}

    def ask():
        started = time.monotonic()
        with app.app_context():
            answer["snapshot"], answer["cached"] = state(app).monitor.health(force=True)
        answer["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=ask)
    thread.start()
    return thread, answer


def forced_while_a_sibling_lands_without_publishing(app):
    sibling = Sibling(app)
    thread, answer = forced_in_background(app)
    time.sleep(0.1)
    sibling.land()
    thread.join(5)
    return answer


def checks_total(app) -> int:
    return state(app).monitor.report()["checks_total"]


@pytest.mark.parametrize("probe_takes", [0.2, 0.9 * TIMEOUT_S], ids=["quick", "slow database"])
def test_a_forced_probe_waits_for_a_siblings_probe_and_answers_with_its_result(app, probe_takes):
    """However long the sibling's probe takes within its deadline, the waiter takes its result."""
    with app.app_context():
        first, _ = state(app).monitor.health(force=True)
    probes = checks_total(app)
    sibling = Sibling(app)
    try:
        thread, answer = forced_in_background(app)
        time.sleep(probe_takes)
        assert thread.is_alive(), "answered without waiting for the probe in flight"
        theirs = copy.deepcopy(first)
        theirs["message"] = theirs["components"]["primary"]["message"] = "probed by a sibling"
        theirs["components"]["primary"]["server"] = {"address": "sibling", "port": 1}  # something new: written
        sibling.publish(theirs)
    finally:
        sibling.land()
    thread.join(5)
    assert answer["snapshot"]["message"] == "probed by a sibling"
    assert answer["cached"] is False
    assert checks_total(app) == probes, "probed although a sibling's probe was in flight"

    client = app.test_client()  # and the worker keeps it as its latest result
    assert client.get("/api/database/health", headers=bearer(app)).json["data"]["message"] == "probed by a sibling"


def test_a_sibling_that_lands_without_publishing_leaves_the_probe_to_the_waiter(app):
    with app.app_context():
        state(app).monitor.health(force=True)
    probes = checks_total(app)
    answer = forced_while_a_sibling_lands_without_publishing(app)
    assert answer["snapshot"]["status"] == "healthy"
    assert checks_total(app) == probes + 1


def test_a_sibling_that_has_published_and_still_holds_the_flight_is_not_a_probe_in_flight(app):
    """A worker that took the flight only to read the result its sibling published (the sibling
    serving its next request meanwhile): a forced probe arriving then probes rather than take a
    result that was complete before it arrived."""
    with app.app_context():
        first, _ = state(app).monitor.health(force=True)
    probes = checks_total(app)
    sibling = Sibling(app)
    try:
        done = copy.deepcopy(first)
        done["message"] = done["components"]["primary"]["message"] = "published before the request"
        done["components"]["primary"]["server"] = {"address": "sibling", "port": 1}
        sibling.publish(done, probed_at=time.time())
        thread, answer = forced_in_background(app)
        time.sleep(0.1)
    finally:
        sibling.land()
    thread.join(5)
    assert answer["snapshot"]["message"] != "published before the request"
    assert checks_total(app) == probes + 1


def test_a_holder_stuck_after_another_worker_published_is_given_up_on_at_once(app):
    """A sibling stuck holding the flight past its deadline, and a result published since by a
    worker that probed without it: a forced request does not wait for the stuck holder again."""
    sibling = Sibling(app)
    try:
        stuck_since = time.time() - TIMEOUT_S - 1
        os.utime(sibling.fd, (stuck_since, stuck_since))
        with app.app_context():
            first, _ = state(app).monitor.health(force=True)  # gives up on the holder, probes, publishes
            probes = checks_total(app)
            started = time.monotonic()
            state(app).monitor.health(force=True)
            elapsed = time.monotonic() - started
    finally:
        sibling.land()
    assert checks_total(app) == probes + 1
    assert elapsed < 0.5, elapsed


def test_a_stuck_sibling_does_not_hold_a_forced_probe_past_its_budget(app):
    """The sibling never lands: the waiter gives it until its deadline, then probes on its own with
    what is left, and answers within DB_HEALTH_TIMEOUT + 0.5 s (SPEC 7) with a result of its own."""
    sibling = Sibling(app)
    try:
        thread, answer = forced_in_background(app)
        thread.join(TIMEOUT_S + 5)
    finally:
        sibling.land()
    assert answer["snapshot"]["status"] == "healthy"
    assert TIMEOUT_S <= answer["elapsed"] <= TIMEOUT_S + 0.5 + MARGIN_S, answer["elapsed"]


def test_a_cli_check_never_waits_for_the_instances_workers(app):
    """`flask dbhealth check` is not one of the instance's workers: it probes on its own at once."""
    sibling = Sibling(app)
    try:
        started = time.monotonic()
        result = app.test_cli_runner().invoke(args=["dbhealth", "check", "--force"])
        elapsed = time.monotonic() - started
    finally:
        sibling.land()
    assert result.exit_code == 0, result.output
    assert elapsed < TIMEOUT_S, elapsed


def test_a_forked_worker_opens_the_flight_lock_of_its_own(app):
    """A descriptor inherited across a fork shares its lock with the parent: the child must not use it."""
    with app.app_context():
        state(app).monitor.health(force=True)  # this process now has its descriptor
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: take the flight and hold it until told
        try:
            with app.app_context():
                fd = folder.kept_descriptor(os.path.join(app.instance_path, flight.FLIGHT_FILE))
                os.write(write, b"1" if flight._take(fd) else b"0")
                time.sleep(1.5)
        finally:
            os._exit(0)
    try:
        assert os.read(read, 1) == b"1"
        started = time.monotonic()
        with app.app_context():
            state(app).monitor.health(force=True)
        assert time.monotonic() - started >= 0.5, "the parent did not see the child's probe in flight"
    finally:
        os.waitpid(pid, 0)
        os.close(read)
        os.close(write)


def test_reconnect_answers_with_a_probe_of_its_own_not_one_already_in_flight(app):
    """A sibling's probe that began before the reconnect ran on the old connections: /reconnect
    waits for it to land and then probes on the new ones."""
    with app.app_context():
        first, _ = state(app).monitor.health(force=True)
    probes = checks_total(app)
    sibling = Sibling(app)
    answer = {}
    client = app.test_client()
    thread = threading.Thread(target=lambda: answer.update(
        response=client.post("/api/database/reconnect", headers=bearer(app, "admin"))))
    try:
        thread.start()
        time.sleep(0.2)
        down = copy.deepcopy(first)
        down["status"] = down["components"]["primary"]["status"] = "unhealthy"
        down["message"] = down["components"]["primary"]["message"] = "down, seen on the old connections"
        sibling.publish(down)
    finally:
        sibling.land()
    thread.join(5)
    response = answer["response"]
    assert response.status_code == 200, response.json
    assert response.json["data"]["health"]["status"] == "healthy"
    assert checks_total(app) == probes + 1


def test_an_old_result_is_not_taken_for_the_siblings(app):
    """A result published long ago (and never stamped by a newer probe) is not what a sibling
    that landed without publishing found: the waiter probes itself."""
    from backend.fleet.folder import read_json

    with app.app_context():
        state(app).monitor.health(force=True)
    path = os.path.join(app.instance_path, shared.SHARED_FILE)
    document = read_json(path)
    document["probed_at"] -= 3600
    document["snapshot"]["message"] = "an hour old"
    with open(path, "w") as handle:
        json.dump(document, handle)
    os.utime(path, (document["probed_at"], document["probed_at"]))
    os.remove(os.path.join(app.instance_path, shared.STAMP_FILE))
    probes = checks_total(app)
    answer = forced_while_a_sibling_lands_without_publishing(app)
    assert answer["snapshot"]["message"] != "an hour old"
    assert checks_total(app) == probes + 1


def test_without_a_usable_flight_file_each_worker_probes_on_its_own(app):
    os.makedirs(os.path.join(app.instance_path, flight.FLIGHT_FILE))  # not a file
    response = app.test_client().get("/api/database/health?force=true", headers=bearer(app))
    assert response.status_code == 200 and response.json["data"]["status"] == "healthy"


def taken_in_background(path):
    took = threading.Event()

    def take():
        with folder.locked_kept(path):
            took.set()

    thread = threading.Thread(target=take)
    thread.start()
    return thread, took


@pytest.mark.parametrize("how", ["removed", "moved away"])
def test_a_kept_lock_whose_file_is_gone_still_excludes_a_sibling(app, how):
    """The flight's and the publish lock's files are opened once per worker; a lock on a file removed
    or moved meanwhile (the folder emptied or replaced) would exclude nobody, so the file is opened again."""
    path = os.path.join(app.instance_path, "example.lock")
    with folder.locked_kept(path):
        pass
    if how == "removed":
        os.remove(path)
    else:
        os.rename(path, path + ".old")
    sibling = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(sibling, fcntl.LOCK_EX)
    thread, took = taken_in_background(path)
    try:
        assert not took.wait(0.3), "took the lock a sibling holds"
    finally:
        fcntl.flock(sibling, fcntl.LOCK_UN)
        os.close(sibling)
    assert took.wait(5)
    thread.join()


def test_a_kept_lock_excludes_the_other_threads_of_its_worker(app):
    """flock locks belong to an open file, which a worker's threads share: they also take a lock of the process."""
    path = os.path.join(app.instance_path, "example.lock")
    with folder.locked_kept(path):
        thread, took = taken_in_background(path)
        assert not took.wait(0.3), "another thread took the lock this one holds"
    assert took.wait(5)
    thread.join()


def test_a_worker_counts_its_probes_in_the_order_they_ran(app, monkeypatch):
    """A forced probe asked while the previous one is still being counted (history, last probe,
    metrics) shares it: it cannot run, and be counted, before the one it follows."""
    health_monitor = state(app).monitor
    count = health_monitor._count
    counting = threading.Event()

    def slow_first_count(snapshot):
        if not counting.is_set():
            counting.set()
            time.sleep(0.3)  # as a thread pre-empted right there would
        count(snapshot)

    monkeypatch.setattr(health_monitor, "_count", slow_first_count)
    first, _ = forced_in_background(app)
    assert counting.wait(5)
    with app.app_context():
        second, _ = health_monitor.health(force=True)
    first.join(5)
    last = health_monitor.history.report()["recent_probes"][-1]
    assert last["response_time_ms"] == second["components"]["primary"]["response_time_ms"]
    assert state(app).last_probe["response_time_ms"] == second["components"]["primary"]["response_time_ms"]
