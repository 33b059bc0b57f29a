"""The HTTP API: /api/database and /api/auth for operators, /livez /readyz /metrics for machines.

register_blueprints also registers the status page (backend/dashboard), the API's one page for people.
"""
from __future__ import annotations

from flask import Flask

from .. import dashboard
from . import auth, console, database, probes, sessions  # noqa: F401  (they add their routes to blueprint.bp)
from .blueprint import bp as database_bp


def register_blueprints(app: Flask) -> None:
    """Register every blueprint; the route modules above have added their routes to them."""
    app.register_blueprint(probes.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(database_bp)
    app.register_blueprint(dashboard.bp)

