"""When a component's status is worth a notification: hysteresis, pure (no I/O, no clock of its own).

A component is reported worse (degraded, unhealthy) after DB_ALERT_FAILURES
probes in a row at that status, and better after DB_ALERT_RECOVERIES, while
/health always tells the last probe. Starting up healthy is not a change;
starting while a database is down is reported once. A "down" (to unhealthy)
is sent at most once per DB_ALERT_MIN_INTERVAL_S per component; a recovery
from unhealthy is sent only when its down was sent.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RANK = {"healthy": 0, "degraded": 1, "unhealthy": 2}


@dataclass(frozen=True)
class Rules:
    failures: int = 2
    recoveries: int = 2
    min_down_interval_s: float = 300.0


def advance(memory: dict[str, Any] | None, status: str, now: float, rules: Rules) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One probe of one component: the new memory, and the notification to send (or None).

    ``memory`` holds ``reported`` (the status as alerts know it), ``candidate``
    and ``streak`` (probes in a row at a status other than the reported one),
    ``failures`` (unhealthy probes in a row), ``down_sent`` and ``last_down_at``.
    """
    memory = dict(memory or {"reported": None, "candidate": None, "streak": 0, "failures": 0,
                             "down_sent": False, "last_down_at": None})
    memory["failures"] = memory["failures"] + 1 if status == "unhealthy" else 0
    reported = memory["reported"]
    if status == reported or (reported is None and status == "healthy"):
        memory.update(reported=status, candidate=None, streak=0)
        return memory, None
    memory["streak"] = memory["streak"] + 1 if status == memory["candidate"] else 1
    memory["candidate"] = status
    worse = reported is None or RANK[status] > RANK[reported]
    if memory["streak"] < (rules.failures if worse else rules.recoveries):
        return memory, None
    memory.update(reported=status, candidate=None, streak=0)
    change = {"from": reported, "to": status, "consecutive_failures": memory["failures"]}
    if status == "unhealthy":
        last = memory["last_down_at"]
        if last is not None and now - last < rules.min_down_interval_s:
            memory["down_sent"] = False  # suppressed: and so is its recovery
            return memory, None
        memory.update(down_sent=True, last_down_at=now)
        return memory, change
    if reported == "unhealthy":
        sent, memory["down_sent"] = memory["down_sent"], False
        return memory, change if sent else None
    return memory, change
