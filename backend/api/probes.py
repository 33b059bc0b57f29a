"""Endpoints for machines, without a token: /livez, /readyz and /metrics."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from .. import metrics
from ..errors import ApiError, error_body
from ..health.monitor import monitor

bp = Blueprint("probes", __name__)


@bp.get("/livez")
def livez():
    """The process can serve; never touches a database."""
    return {"success": True, "data": {"status": "alive"}}


@bp.get("/readyz")
def readyz():
    """Ready when the primary database is not unhealthy, from the cached health."""
    snapshot = monitor().cached()
    if snapshot is None:
        snapshot, _ = monitor().health()
    headers = {"Cache-Control": "no-store"}
    if snapshot["components"]["primary"]["status"] == "unhealthy":
        return error_body("not_ready", "The primary database is unavailable", "Not ready"), 503, headers
    return {"success": True, "data": {"status": "ready"}}, 200, headers


@bp.get("/metrics")
def metrics_view():
    token = current_app.config.get("METRICS_TOKEN")
    if token and request.headers.get("Authorization", "") != f"Bearer {token}":
        raise ApiError(401, "auth_required", "/metrics needs Authorization: Bearer <METRICS_TOKEN>", "Authentication required")
    return Response(metrics.exposition(), mimetype=metrics.CONTENT_TYPE_LATEST)
