"""Prometheus metrics, correct under several gunicorn workers.

Under gunicorn, ``gunicorn.conf.py`` sets PROMETHEUS_MULTIPROC_DIR before any
worker imports prometheus_client, so every worker writes its samples to files
that ``/metrics`` aggregates; under ``flask run`` the default registry is used.
"""
from __future__ import annotations

import os
from typing import Any

from prometheus_client import (  # noqa: F401 - CONTENT_TYPE_LATEST is used by probes
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

PROBE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

PROBE_DURATION = Histogram(
    "dbhealth_probe_duration_seconds", "Time one database probe took.", ["component"], buckets=PROBE_BUCKETS
)
PROBE_RESULTS = Counter(
    "dbhealth_probe_results_total", "Database probes by outcome.", ["component", "status"]
)
COMPONENT_STATUS = Gauge(
    "dbhealth_component_status",
    "1 for the component's current status as last probed by a worker.",
    ["component", "status"],
    multiprocess_mode="livemax",
)
POOL_SIZE = Gauge("dbhealth_pool_size", "Configured pool size, summed over workers.", ["component"], multiprocess_mode="livesum")
POOL_CHECKED_OUT = Gauge(
    "dbhealth_pool_checked_out", "Connections in use, summed over workers.", ["component"], multiprocess_mode="livesum"
)
POOL_OVERFLOW = Gauge(
    "dbhealth_pool_overflow", "Overflow connections open, summed over workers.", ["component"], multiprocess_mode="livesum"
)
POOL_UTILIZATION = Gauge(
    "dbhealth_pool_utilization_ratio",
    "Checked-out share of pool capacity, highest over workers.",
    ["component"],
    multiprocess_mode="livemax",
)
RISK_VALUE = Gauge(
    "dbhealth_capacity_risk_value",
    "A capacity risk as last measured, in its unit (s, transactions, bytes, percent, stopped threads).",
    ["component", "risk"],
    multiprocess_mode="livemostrecent",
)
RISK_THRESHOLD = Gauge(
    "dbhealth_capacity_risk_threshold", "The threshold a capacity risk is judged against.", ["component", "risk"],
    multiprocess_mode="livemostrecent",
)
RISK_OVER = Gauge(
    "dbhealth_capacity_risk_over_threshold", "1 while a capacity risk is over its threshold.", ["component", "risk"],
    multiprocess_mode="livemostrecent",
)
RETRIES = Counter("dbhealth_db_retries_total", "Transient database failures by what followed.", ["outcome"])
RECONNECTS = Counter("dbhealth_reconnects_total", "Pool disposals asked for through /reconnect.")
ALERT_DELIVERIES = Counter(
    "dbhealth_alert_deliveries_total",
    "Webhook notifications by target (scheme and host) and outcome: delivered, retried, failed.",
    ["target", "outcome"],
)
HTTP_REQUESTS = Counter(
    "dbhealth_http_requests_total", "HTTP requests by route template and status.", ["method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "dbhealth_http_request_duration_seconds", "HTTP request duration by route template.", ["method", "route"]
)
STATUSES = ("healthy", "degraded", "unhealthy")
# Label values come from a fixed set, so made-up methods and paths cannot grow /metrics.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
OTHER_METHOD = "other"
UNMATCHED = "<unmatched>"


# Gauge values last written by this process: in multiprocess mode every write
# goes to a shared file, so unchanged values are not written again.
_written: dict[tuple[Any, ...], float] = {}
_written_pid = 0


def _set(gauge: Gauge, component: str, value: float, *labels: str) -> None:
    global _written_pid
    if _written_pid != os.getpid():  # a forked child starts with empty files
        _written.clear()
        _written_pid = os.getpid()
    key = (gauge, component, *labels)
    if _written.get(key) != value:
        gauge.labels(component, *labels).set(value)
        _written[key] = value


# Labelled children of the probe metrics, by their labels: ``labels()`` costs as much as the write.
_probe_children: dict[tuple[Any, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    child = _probe_children.get((metric, *labels))
    if child is None:
        child = _probe_children[(metric, *labels)] = metric.labels(*labels)
    return child


def record_probe(component: str, status: str, seconds: float, pool: dict[str, Any] | None) -> None:
    """Record one probe's outcome and the component's pool numbers."""
    _child(PROBE_DURATION, component).observe(seconds)
    _child(PROBE_RESULTS, component, status).inc()
    for name in STATUSES:
        _set(COMPONENT_STATUS, component, 1 if name == status else 0, name)
    if pool and pool.get("pool_size") is not None:
        _set(POOL_SIZE, component, pool["pool_size"])
        _set(POOL_CHECKED_OUT, component, pool["checked_out"])
        _set(POOL_OVERFLOW, component, pool["overflow"])
        if pool.get("utilization_percent") is not None:
            _set(POOL_UTILIZATION, component, pool["utilization_percent"] / 100)


def record_risks(component: str, risks: list[dict[str, Any]]) -> None:
    """One gauge series per measured capacity risk (a risk the server did not tell has no value)."""
    for risk in risks:
        if risk["value"] is not None:
            _set(RISK_VALUE, component, float(risk["value"]), risk["risk"])
        _set(RISK_THRESHOLD, component, float(risk["threshold"]), risk["risk"])
        _set(RISK_OVER, component, 1 if risk["over"] else 0, risk["risk"])


# Labelled children by (method, route, status): ``labels()`` costs as much as the
# multiprocess write itself, on every request.
_request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def record_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count one request; ``route`` is a route template or UNMATCHED, an unknown method counts as ``other``."""
    method = method if method in METHODS else OTHER_METHOD
    children = _request_children.get((method, route, status))
    if children is None:
        children = _request_children[(method, route, status)] = (
            HTTP_REQUESTS.labels(method, route, str(status)),
            HTTP_DURATION.labels(method, route),
        )
    children[0].inc()
    children[1].observe(seconds)


def exposition() -> bytes:
    """The text format, summed over every live worker when running multiprocess."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)
