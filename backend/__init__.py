"""A Flask service that tells operators, over authenticated HTTP, how its databases are doing."""
from __future__ import annotations

import os
import sys
from collections import ChainMap
from collections.abc import Mapping
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from . import alerts, logs
from .api import register_blueprints
from .auth import cli as auth_cli
from .auth import throttle, tokens
from .auth.revocation import RevokedTokens
from .bodies import BoundedRequest, SafeJSONProvider
from .cli_errors import guard_group
from .config import BIND_PREFIX, EXIT_MISCONFIGURED, SETTINGS, ConfigError, load_settings
from .console import guard as console_guard
from .db import reconnect
from .db.engines import engine_options, prepare_engine
from .db.urls import PROJECT_ROOT, parse_url
from .errors import register_error_handlers
from .extensions import db, jwt, migrate
from .fleet import init_app as init_fleet
from .fleet.leader import ProbeLeader
from .health import cli as health_cli
from .health.monitor import HealthMonitor
from .state import DbHealth, forget_connections_after_fork


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: settings -> extensions -> blueprints -> error handlers.

    ``test_config`` overrides environment variables by the same names (and
    sets any other Flask key). Invalid settings print one line on stderr and
    exit with status 3, the "misconfigured" status of ``flask dbhealth check``.
    """
    overrides = dict(test_config or {})
    try:
        settings = load_settings(ChainMap(overrides, os.environ))
        app = Flask(__name__, instance_path=_instance_path(overrides))
        app.config.from_mapping(settings)
        app.config.update(_database_config(app, settings))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_MISCONFIGURED) from None
    app.config.update({k: v for k, v in overrides.items() if k not in SETTINGS and not k.startswith(BIND_PREFIX)})
    app.request_class = BoundedRequest
    app.json = SafeJSONProvider(app)
    if app.config["TRUSTED_PROXIES"]:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=app.config["TRUSTED_PROXIES"])  # type: ignore[method-assign]
    app.json.sort_keys = False

    logs.init_app(app)
    db.init_app(app)
    migrate.init_app(app, db, directory=str(PROJECT_ROOT / "migrations"), render_as_batch=True)
    guard_group(app.cli.commands["db"])  # flask db ...: one line, not a traceback, when the database is away
    jwt.init_app(app)
    app.extensions["dbhealth"] = DbHealth(
        app=app,
        engine_options={None: app.config["SQLALCHEMY_ENGINE_OPTIONS"], **app.config["SQLALCHEMY_BINDS"]},
        monitor=HealthMonitor(app),
        revoked=RevokedTokens(app),
        leader=ProbeLeader(app.instance_path),
    )
    with app.app_context():
        for engine in db.engines.values():
            prepare_engine(engine)
    forget_connections_after_fork(app)
    tokens.init_app(app)
    throttle.init_app(app)
    reconnect.init_app(app)
    init_fleet(app)
    alerts.init_app(app)
    auth_cli.init_app(app)
    health_cli.init_app(app)

    register_blueprints(app)
    with app.app_context():
        console_guard.verify_at_startup(app)  # a DATABASE_READONLY_URL role that can write stops start-up

    register_error_handlers(app)
    return app


def _instance_path(overrides: Mapping[str, Any]) -> str | None:
    path = overrides.get("INSTANCE_PATH") or os.environ.get("INSTANCE_PATH")
    return os.path.abspath(path) if path else None


def _database_config(app: Flask, settings: dict[str, Any]) -> dict[str, Any]:
    """Flask-SQLAlchemy's settings, from validated URLs, with our options per dialect."""
    try:
        os.makedirs(app.instance_path, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"instance folder {app.instance_path} cannot be created: {error.strerror}") from None
    if not os.access(app.instance_path, os.W_OK):
        raise ConfigError(f"instance folder {app.instance_path} is not writable")
    primary = parse_url(settings["DATABASE_URL"] or f"sqlite:///{app.instance_path}/app.db", "DATABASE_URL")
    binds = {name: parse_url(url, f"{BIND_PREFIX}{name.upper()}") for name, url in settings["DB_BINDS"].items()}
    readonly = settings["DATABASE_READONLY_URL"]
    primary_options = engine_options(primary, settings)
    return {
        "SQLALCHEMY_DATABASE_URI": primary_options.pop("url"),
        "SQLALCHEMY_ENGINE_OPTIONS": primary_options,
        "SQLALCHEMY_BINDS": {name: engine_options(url, settings) for name, url in binds.items()},
        "READONLY_URL": parse_url(readonly, "DATABASE_READONLY_URL") if readonly else None,
        "MAX_CONTENT_LENGTH": 1024 * 1024,
    }
