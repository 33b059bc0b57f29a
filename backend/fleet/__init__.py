"""Many instances, many workers, one service: the instance id, the probing
worker, the poller thread, and the small files the workers of one instance share."""
from __future__ import annotations

import os

from flask import Flask

from ..state import state


def init_app(app: Flask) -> None:
    """Name the instance on every response; under ``flask run``, start the background with the first request."""
    instance = app.config["INSTANCE_ID"]

    @app.after_request
    def _instance_header(response):
        response.headers["X-Instance-ID"] = instance
        return response

    app.before_request(lambda: start_background(app))


def start_background(app: Flask) -> None:
    """This process's background threads, once: the revocation reload timer (its first load
    before serving, SPEC 4) and the poller (reconnects, probe lock, transitions). gunicorn's
    post_worker_init calls it before a worker serves; on every request it costs one comparison."""
    current = state(app)
    if current.background_pid == os.getpid():
        return
    from . import poller  # it uses db/ and health/, which use this package's files

    current.revoked.start()
    poller.start(app)
    current.background_pid = os.getpid()
