"""Apps measured beside ours, on the same gunicorn config and the same database.

``baseline_app``: bare Flask-SQLAlchemy with pool_pre_ping and one route that
runs ``SELECT 1``: the floor a database-touching endpoint can reach.
``healthz_app``: flask-healthz with a ``SELECT 1`` readiness check, the peer a
Flask user would pick today.
"""
from __future__ import annotations

import os

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy


def _app() -> tuple[Flask, SQLAlchemy]:
    app = Flask(__name__)
    url = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg2://", 1)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=url,
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True, "pool_size": 10, "max_overflow": 20},
    )
    db = SQLAlchemy(app)

    @app.get("/hello")
    def hello():
        return {"hello": "world"}

    return app, db


def baseline_app() -> Flask:
    app, db = _app()

    @app.get("/select1")
    def select1():
        db.session.execute(sa.text("SELECT 1"))
        return {"ok": True}

    return app


def healthz_app() -> Flask:
    from flask_healthz import HealthError, Healthz

    app, db = _app()

    def ready():
        try:
            db.session.execute(sa.text("SELECT 1"))
        except Exception as error:
            raise HealthError(str(error)) from error

    app.config["HEALTHZ"] = {"live": lambda: None, "ready": ready}
    Healthz(app)
    return app
