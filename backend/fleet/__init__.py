"""Many instances, many workers, one service: the instance id, the probing
worker, the poller thread, and the small files the workers of one instance share."""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Name the instance on every response and start the poller with the first request."""
    from . import poller  # it uses db/ and health/, which use this package's files

    instance = app.config["INSTANCE_ID"]

    @app.after_request
    def _instance_header(response):
        response.headers["X-Instance-ID"] = instance
        return response

    app.before_request(lambda: poller.start(app))


def start_background(app: Flask) -> None:
    """For gunicorn's post_worker_init: start the poller before the first request."""
    from . import poller

    poller.start(app)
