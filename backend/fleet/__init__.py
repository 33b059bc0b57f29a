"""Many instances, many workers, one service: the probing worker, the poller
thread, and the small files the workers of one instance share (every response
names its instance: logs.py sets X-Instance-ID beside X-Request-ID)."""
from __future__ import annotations

from flask import Flask

from ..state import state


def init_app(app: Flask) -> None:
    """Start the background with the first request (``flask run``; gunicorn starts it before).

    Once started in this process the hook removes itself: every request would
    otherwise pay for a check that can no longer do anything. A child forked
    from a process that never served keeps the hook in its own copy of the list.
    """

    def _start_background_once() -> None:
        start_background(app)
        app.before_request_funcs[None] = [hook for hook in app.before_request_funcs[None] if hook is not _start_background_once]

    app.before_request(_start_background_once)


def start_background(app: Flask) -> None:
    """This process's background threads, once each: the revocation reload timer (its first load
    before serving, SPEC 4) and the poller (reconnects, probe lock, transitions). gunicorn's
    post_worker_init calls it before a worker serves."""
    from . import poller  # it uses db/ and health/, which use this package's files

    state(app).revoked.start()
    poller.start(app)
