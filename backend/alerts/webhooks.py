"""Delivering notifications: one POST per URL, off every request's path.

Each webhook URL gets a daemon thread and a queue of its own in the process
that sends (the instance's probing worker), so a receiver that hangs delays
only its own notifications. A delivery has a 5 s timeout and is retried 3
times with backoff (1, 2, 4 s) on a network error, a timeout, 429 or 5xx. A
URL is only ever shown as its scheme and host (``shown_url``): its path is
often the secret.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from .. import metrics
from ..config.values import shown_url

TIMEOUT_S = 5.0
RETRIES = 3
BACKOFF_S = (1.0, 2.0, 4.0)
log = logging.getLogger(__name__)


def post(url: str, body: dict[str, Any], timeout: float = TIMEOUT_S) -> int:
    """POST ``body`` as JSON; the HTTP status (raises OSError on a network error or timeout)."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def deliver(url: str, body: dict[str, Any], sleep: Callable[[float], None] = time.sleep) -> bool:
    """Send one notification, retrying transient failures; True if the receiver took it."""
    target = shown_url(url)
    for attempt in range(RETRIES + 1):
        try:
            status = post(url, body)
            outcome = f"HTTP {status}"
            if 200 <= status < 300:
                metrics.ALERT_DELIVERIES.labels(target, "delivered").inc()
                log.info("alert delivered to %s: %s", target, body["text"])
                return True
            transient = status == 429 or status >= 500
        except OSError as error:  # refused, reset, timed out (socket.timeout is an OSError)
            outcome, transient = type(error).__name__, True
        if not transient or attempt == RETRIES:
            metrics.ALERT_DELIVERIES.labels(target, "failed").inc()
            log.error("alert to %s failed after %d attempt(s) (%s): %s", target, attempt + 1, outcome, body["text"])
            return False
        metrics.ALERT_DELIVERIES.labels(target, "retried").inc()
        log.warning("alert to %s: %s, retrying in %gs", target, outcome, BACKOFF_S[attempt])
        sleep(BACKOFF_S[attempt])
    return False


class Senders:
    """One queue and thread per URL, in this process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queues: dict[str, queue.Queue] = {}

    def send(self, urls: tuple[str, ...], body: dict[str, Any]) -> None:
        for url in urls:
            self._queue(url).put(body)

    def _queue(self, url: str) -> queue.Queue:
        with self.lock:
            found = self.queues.get(url)
            if found is None:
                found = self.queues[url] = queue.Queue()
                name = f"alerts-{shown_url(url)}"
                threading.Thread(target=self._run, args=(url, found), name=name, daemon=True).start()
            return found

    def _run(self, url: str, bodies: queue.Queue) -> None:
        while True:
            body = bodies.get()
            try:
                deliver(url, body)
            except Exception:
                log.exception("alert to %s failed unexpectedly", shown_url(url))
