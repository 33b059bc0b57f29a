"""Endpoints for machines, without a token: /livez, /readyz and /metrics."""
from __future__ import annotations

import json

from flask import Blueprint, Response, current_app, request

from .. import metrics
from ..errors import ApiError, error_body
from ..health.monitor import monitor

bp = Blueprint("probes", __name__)


# Polled constantly and never different: encoded once (JSON encoding was a tenth of its cost).
LIVEZ_BODY = json.dumps({"success": True, "data": {"status": "alive"}}, separators=(",", ":")).encode() + b"\n"


@bp.get("/livez")
def livez():
    """The process can serve; never touches a database."""
    return current_app.response_class(LIVEZ_BODY, mimetype="application/json")


@bp.get("/readyz")
def readyz():
    """Ready while this instance can serve (SPEC 6).

    The database is shared by every instance: failing readiness on its outage
    would take them all out of the load balancer at once, and the API that
    reports the outage with them. With DB_READYZ_CHECKS_DATABASE=true, 503 while
    the cached health of the primary is unhealthy.
    """
    headers = {"Cache-Control": "no-store"}
    if current_app.config["DB_READYZ_CHECKS_DATABASE"]:
        snapshot = monitor().cached()
        if snapshot is None:
            snapshot, _ = monitor().health()
        if snapshot["components"]["primary"]["status"] == "unhealthy":
            return error_body("not_ready", "The primary database is unavailable", "Not ready"), 503, headers
    return {"success": True, "data": {"status": "ready"}}, 200, headers


@bp.get("/metrics")
def metrics_view():
    token = current_app.config.get("METRICS_TOKEN")
    if token and request.headers.get("Authorization", "") != f"Bearer {token}":
        raise ApiError(401, "auth_required", "/metrics needs Authorization: Bearer <METRICS_TOKEN>", "Authentication required")
    return Response(metrics.exposition(), mimetype=metrics.CONTENT_TYPE_LATEST)
