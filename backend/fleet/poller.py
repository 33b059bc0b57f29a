"""Every worker's poller thread: what the instances share, looked at once a second.

Each step, under hard deadlines: take the probe lock if it is free (leader.py);
apply a reconnect asked by any worker of any instance (db/reconnect.py); write
spooled transitions to the database once it answers (health/transitions.py);
prune old history (the probing worker only); and rewrite this worker's line in
the instance's list of workers (workers.py). Started in each gunicorn worker
as soon as it boots (gunicorn.conf.py ``post_worker_init``) and by the first
request otherwise (``flask run``), never in a master before it forks.
"""
from __future__ import annotations

import logging
import os

from flask import Flask
from sqlalchemy.exc import SQLAlchemyError

from .. import alerts, process
from ..db import reconnect
from ..db.deadline import DeadlineExceeded
from ..health import transitions
from ..state import state
from .workers import heartbeat

POLL_S = reconnect.GENERATION_POLL_S
log = logging.getLogger(__name__)


def start(app: Flask) -> None:
    """Start this process's poller (and the background monitor when an interval is set), once."""
    current = state(app)
    if current.poller.start(_loop, app) and app.config["DB_HEALTH_CHECK_INTERVAL"] > 0:
        current.monitor.start_background()


def _loop(app: Flask) -> None:
    current = state(app)
    failing = False
    while not current.monitor.background.stopped.is_set():
        try:
            with app.app_context():
                step(app)
            if failing:
                log.info("database reachable again from the poller")
            failing = False
        except (SQLAlchemyError, DeadlineExceeded, OSError) as error:
            if not failing:
                log.warning("poller: database unavailable, using the instance folder: %s", type(error).__name__)
            failing = True
        except Exception:
            log.exception("poller step failed")
        current.wake.wait(POLL_S)
        current.wake.clear()


def step(app: Flask) -> None:
    """One look at what the instances share; raises when the database cannot be reached."""
    current = state(app)
    leader = current.leader.holds()
    if leader:
        alerts.dispatch(app)  # before any database work: alerts matter most while it is down
    try:
        reconnect.poll(app)
        budget = min(app.config["DB_HEALTH_TIMEOUT"], 2.0)
        transitions.flush(app, budget)
        if leader:
            transitions.prune(app, budget)
    finally:
        heartbeat(
            app.instance_path,
            {
                "pid": os.getpid(),
                "probing": leader,
                "pool_generation": current.generation,
                "local_reconnects": current.generation_local,
                "last_probe": current.last_probe,
                "started_at": process.started_iso(),
                "probe_pids": {
                    key or "primary": server_pid
                    for key, connection in list(current.probe_connections.items())
                    if (server_pid := connection.server_pid()) is not None
                },
            },
        )
