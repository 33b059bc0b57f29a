"""Hysteresis of alerts, as a pure function: probes in, notifications out."""
from __future__ import annotations

from backend.alerts.hysteresis import Rules, advance

RULES = Rules(failures=2, recoveries=2, min_down_interval_s=300)


def run(statuses, rules=RULES, start=0.0, step=10.0, memory=None):
    sent = []
    for index, status in enumerate(statuses):
        memory, change = advance(memory, status, start + index * step, rules)
        if change:
            sent.append((change["from"], change["to"], change["consecutive_failures"]))
    return sent, memory


def test_starting_healthy_and_staying_healthy_sends_nothing():
    assert run(["healthy"] * 10)[0] == []


def test_a_down_after_two_failures_and_a_recovery_after_two_successes():
    sent, _ = run(["healthy", "unhealthy", "unhealthy", "unhealthy", "healthy", "healthy", "healthy"])
    assert sent == [("healthy", "unhealthy", 2), ("unhealthy", "healthy", 0)]


def test_a_flap_shorter_than_the_thresholds_sends_nothing():
    assert run(["healthy", "unhealthy", "healthy", "unhealthy", "healthy"])[0] == []
    # and a single good probe inside an outage does not end it
    sent, _ = run(["healthy", "unhealthy", "unhealthy", "healthy", "unhealthy", "healthy", "healthy"])
    assert sent == [("healthy", "unhealthy", 2), ("unhealthy", "healthy", 0)]


def test_starting_while_down_notifies_once():
    sent, _ = run(["unhealthy"] * 5)
    assert sent == [(None, "unhealthy", 2)]


def test_degraded_is_a_change_too():
    sent, _ = run(["healthy", "degraded", "degraded", "healthy", "healthy"])
    assert sent == [("healthy", "degraded", 0), ("degraded", "healthy", 0)]


def test_one_down_per_interval_and_no_recovery_for_a_suppressed_down():
    outage = ["unhealthy", "unhealthy", "healthy", "healthy"]
    sent, memory = run(["healthy", *outage], step=10)  # t = 0..40
    assert sent == [("healthy", "unhealthy", 2), ("unhealthy", "healthy", 0)]
    sent, memory = run(outage, start=100, memory=memory)  # 100 s later: within 300 s of the first down
    assert sent == []
    sent, _ = run(outage, start=400, memory=memory)  # past the interval
    assert sent == [("healthy", "unhealthy", 2), ("unhealthy", "healthy", 0)]


def test_thresholds_are_settings():
    sent, _ = run(["healthy", "unhealthy", "unhealthy", "unhealthy", "healthy"], Rules(3, 1, 0))
    assert sent == [("healthy", "unhealthy", 3), ("unhealthy", "healthy", 0)]
