"""Alerts: a webhook POST when a component's status changes, after hysteresis, once per instance.

Decided when a probe's result is published (a publish hook of health/shared.py,
under the instance's lock, with the hysteresis memory kept in the same file),
queued in the instance folder (outbox.py), and sent by the probing worker's
background threads (webhooks.py): never on a request's path. ``notify`` is the
hook for other code (a change of server, a capacity risk): call it once per
change per instance, from a detector registered in ``health.shared.DETECTORS``
(whose changes are notified at once, without hysteresis) or where only one
worker decides.
"""
from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask, current_app

from ..config.values import shown_url
from ..health import shared
from . import outbox
from .hysteresis import Rules, advance
from .webhooks import Senders

_senders: tuple[int, Senders] | None = None


def rules(app: Flask) -> Rules:
    return Rules(app.config["DB_ALERT_FAILURES"], app.config["DB_ALERT_RECOVERIES"], app.config["DB_ALERT_MIN_INTERVAL_S"])


def body(app: Flask, component: str, from_status: str | None, to_status: str, message: str | None,
         consecutive_failures: int, at: str) -> dict[str, Any]:
    """The JSON a webhook receives: SPEC section 11's fields and one line of ``text`` for chat."""
    instance = app.config["INSTANCE_ID"]
    was = f" (was {from_status})" if from_status else ""
    failures = f"; {consecutive_failures} failed probes in a row" if consecutive_failures else ""
    return {
        "component": component,
        "from": from_status,
        "to": to_status,
        "at": at,
        "message": message,
        "instance": instance,
        "consecutive_failures": consecutive_failures,
        "text": f"[dbhealth {instance}] {component} database {to_status.upper()}{was}: {message}{failures}",
    }


def notify(component: str, from_status: str | None, to_status: str, message: str, *, app: Flask | None = None,
           consecutive_failures: int = 0) -> None:
    """Queue a notification for every webhook (e.g. "primary changed from h1:5432 to h2:5432"), without hysteresis."""
    app = app or current_app._get_current_object()
    if app.config["DB_ALERT_WEBHOOK_URLS"]:
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        outbox.put(app.instance_path, body(app, component, from_status, to_status, message, consecutive_failures, at))


def _on_publish(app: Flask, previous: dict[str, Any] | None, document: dict[str, Any], changes: list[dict]) -> None:
    """Advance every component's hysteresis with this probe; queue what is worth sending."""
    if not app.config["DB_ALERT_WEBHOOK_URLS"]:
        return
    memories = dict((previous or {}).get("alerts") or {})
    now = document["probed_at"]
    for name, component in document["snapshot"]["components"].items():
        memories[name], change = advance(memories.get(name), component["status"], now, rules(app))
        if change:
            outbox.put(app.instance_path, body(app, name, change["from"], change["to"], component["message"],
                                               change["consecutive_failures"], component["timestamp"]))
    for change in changes:
        if change["kind"] != "status":  # a change of server, or what another detector found: sent as it is
            failures = memories.get(change["component"], {}).get("failures", 0)
            at = document["snapshot"]["components"][change["component"]]["timestamp"]
            outbox.put(app.instance_path, body(app, change["component"], change["from"], change["to"],
                                               change["message"], failures, at))
    document["alerts"] = memories


def dispatch(app: Flask) -> int:
    """In the probing worker: hand the outbox's notifications to the senders; how many."""
    global _senders
    urls = app.config["DB_ALERT_WEBHOOK_URLS"]
    if not urls:
        return 0
    bodies = outbox.take(app.instance_path)
    if bodies:
        if _senders is None or _senders[0] != os.getpid():  # threads do not survive a fork
            _senders = (os.getpid(), Senders())
        for one in bodies:
            _senders[1].send(urls, one)
    return len(bodies)


def report(app: Flask) -> dict[str, Any]:
    """The alert settings for /status, URLs shown as scheme and host only."""
    return {
        "webhooks": [shown_url(url) for url in app.config["DB_ALERT_WEBHOOK_URLS"]],
        "failures": app.config["DB_ALERT_FAILURES"],
        "recoveries": app.config["DB_ALERT_RECOVERIES"],
        "min_interval_s": app.config["DB_ALERT_MIN_INTERVAL_S"],
    }


def init_app(app: Flask) -> None:
    if _on_publish not in shared.PUBLISH_HOOKS:
        shared.PUBLISH_HOOKS.append(_on_publish)
