"""What a worker remembers of its own recent probes: counts, latencies, the last few (transitions are the fleet's: transitions.py)."""
from __future__ import annotations

import statistics
import threading
from collections import deque
from typing import Any

LATENCIES = 120
RECENT_PROBES = 60  # the status page's latency chart: five minutes at its 5 s refresh


class ProbeHistory:
    """Counters and bounded history of one process's probes, for /status."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: deque[float] = deque(maxlen=LATENCIES)
        self.recent_probes: deque[dict[str, Any]] = deque(maxlen=RECENT_PROBES)
        self.checks_total = 0
        self.failures_total = 0
        self.consecutive_failures = 0
        self.last_success: str | None = None
        self.last_failure: str | None = None
        self.last_error: str | None = None
        self.last_status: str | None = None

    def record(self, snapshot: dict[str, Any]) -> str | None:
        """Count a probe of every component; returns the overall status before it."""
        primary = snapshot["components"]["primary"]
        with self.lock:
            previous, self.last_status = self.last_status, snapshot["status"]
            self.checks_total += 1
            self.latencies.append(primary["response_time_ms"])
            self.recent_probes.append(
                {"at": snapshot["timestamp"], "status": snapshot["status"], "response_time_ms": primary["response_time_ms"]}
            )
            if primary["status"] == "unhealthy":
                self.failures_total += 1
                self.consecutive_failures += 1
                self.last_failure = snapshot["timestamp"]
                self.last_error = primary["message"]
            else:
                self.consecutive_failures = 0
                self.last_success = snapshot["timestamp"]
        return previous

    def report(self) -> dict[str, Any]:
        with self.lock:
            latencies = sorted(self.latencies)
            return {
                "checks_total": self.checks_total,
                "failures_total": self.failures_total,
                "consecutive_failures": self.consecutive_failures,
                "last_success": self.last_success,
                "last_failure": self.last_failure,
                "last_error": self.last_error,
                "latency_ms": {
                    "samples": len(latencies),
                    "p50": round(statistics.median(latencies), 2) if latencies else None,
                    "p95": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 2) if latencies else None,
                    "max": round(latencies[-1], 2) if latencies else None,
                },
                "recent_probes": list(self.recent_probes),
            }
