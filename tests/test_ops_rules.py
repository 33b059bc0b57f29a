"""The operator's view's rules that need no database: the blocking forest, the kill policy, judging again."""
from __future__ import annotations

import pytest

from backend.health.judge import again, component_warnings
from backend.ops.kill import Refusal, decide
from backend.ops.locks import forest

LIMITS = {"DB_CONNECTIONS_WARN_PERCENT": 80, "DB_POOL_WARN_PERCENT": 90, "DB_REPLICA_MAX_LAG_S": 30}


def wait(pid: int, blocked_by: int, seconds: float = 1.0) -> dict:
    return {"pid": pid, "blocked_by": blocked_by, "lock_type": "transactionid", "mode": "ShareLock",
            "relation": "t", "waiting_s": seconds}


def test_forest_roots_wait_for_no_one_and_shared_waiters_appear_under_each():
    waits = [wait(2, 1, 5.0), wait(3, 2, 2.0), wait(4, 1, 9.0), wait(4, 7, 9.0)]
    sessions = {1: {"state": "idle_in_transaction", "transaction_age_s": 60.0, "query": "UPDATE t"}}
    data = forest(waits, sessions)
    assert data["waiting_total"] == 3 and data["longest_wait_s"] == 9.0 and data["truncated"] is False
    first, second = data["chains"]
    assert first["pid"] == 1 and first["state"] == "idle_in_transaction" and first["transaction_age_s"] == 60.0
    assert [node["pid"] for node in first["blocks"]] == [4, 2]  # longest wait first
    assert first["blocks"][1]["blocks"][0]["pid"] == 3
    assert second["pid"] == 7 and second["state"] == "other" and [n["pid"] for n in second["blocks"]] == [4]


def test_a_deadlock_not_yet_broken_is_rooted_at_its_lowest_pid():
    data = forest([wait(5, 6), wait(6, 5)], {})
    (chain,) = data["chains"]
    assert chain["pid"] == 5 and chain["blocks"][0]["pid"] == 6 and chain["blocks"][0]["blocks"] == []


SESSION = {"pid": 42, "user": "app", "backend_start": "2026-11-30T16:16:13.562607Z", "application": "web"}


@pytest.mark.parametrize(
    ("session", "settings", "code"),
    [
        (SESSION, {"mode": "off"}, "kill_not_allowed"),
        (None, {}, "session_not_found"),
        (SESSION, {"backend_start": "2026-11-30T16:16:13Z"}, "session_changed"),
        (SESSION, {"backend_start": None}, "session_changed"),
        (SESSION, {"protected": {42}}, "kill_not_allowed"),
        ({**SESSION, "application": "dbhealth-probe"}, {}, "kill_not_allowed"),
        ({**SESSION, "user": "someone_else"}, {}, "kill_not_allowed"),
    ],
)
def test_kill_policy_refusals(session, settings, code):
    arguments = {"mode": "own", "user": "app", "protected": set(), "protected_applications": frozenset({"dbhealth-probe"})}
    with pytest.raises(Refusal) as refusal:
        decide(session, **{**arguments, **settings})
    assert refusal.value.code == code


def test_kill_policy_allows():
    decide(SESSION, mode="own", user="app", protected={1})
    decide({**SESSION, "user": "other"}, mode="any", user="app", protected=set())
    decide(SESSION, mode="own", user="app", protected=set(), backend_start="2026-11-30T17:16:13.562607+01:00")
    decide({**SESSION, "backend_start": None}, mode="own", user="app", protected=set(), backend_start=None)


def test_risks_over_their_threshold_are_warnings():
    risks = [
        {"risk": "xid_age", "over": True, "message": "database app is 5 transactions from its last freeze"},
        {"risk": "lock_wait", "over": False, "message": "no session waiting for a lock"},
    ]
    assert component_warnings({}, {}, LIMITS, None, risks) == ["database app is 5 transactions from its last freeze"]


def test_judging_again_with_a_request_lag_limit():
    replica = {"status": "healthy", "database_type": "postgresql", "replication_lag_s": 4.0, "pool_status": {},
               "message": "PostgreSQL connection healthy", "warnings": []}
    primary = {**replica, "replication_lag_s": None}
    snapshot = {**primary, "components": {"primary": primary, "replica": replica}}
    strict = again(snapshot, {**LIMITS, "DB_REPLICA_MAX_LAG_S": 1}, {"up_to_date": True})
    assert strict["status"] == "degraded" and strict["components"]["replica"]["warnings"] == ["replica 4s behind its primary"]
    assert strict["components"]["primary"] is primary and snapshot["components"]["replica"]["status"] == "healthy"
    assert again(snapshot, {**LIMITS, "DB_REPLICA_MAX_LAG_S": 10}, {"up_to_date": True})["status"] == "healthy"
