"""The HTTP API: /api/database and /api/auth for operators, /livez /readyz /metrics for machines,
and /api/openapi.json describing them all.

register_blueprints also registers the status page (backend/dashboard), the API's one page for people.
"""
from __future__ import annotations

from flask import Blueprint, Flask

from .. import dashboard
from . import auth, console, database, openapi, probes, sessions  # noqa: F401  (console, database, sessions add routes to blueprint.bp)
from .blueprint import bp as database_bp

BLUEPRINTS: tuple[Blueprint, ...] = (probes.bp, auth.bp, database_bp, openapi.bp, dashboard.bp)


def register_blueprints(app: Flask) -> None:
    """Register every blueprint; the route modules above have added their routes to them."""
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
