"""The workers of this instance, as /status lists them: one small file per worker.

Each worker rewrites ``INSTANCE_PATH/workers/<pid>.json`` once a second from its
poller thread (pid, the pool generation it applied, its last probe, whether it
is the probing worker). Any worker can then list its siblings without a
database or a message bus; files of workers that exited are removed.
"""
from __future__ import annotations

import os
import time
from typing import Any

from .folder import read_json, write_json

FOLDER = "workers"
STALE_AFTER_S = 10.0  # a worker that has not written for this long is gone (or stuck)


def _folder(instance_path: str) -> str:
    return os.path.join(instance_path, FOLDER)


def heartbeat(instance_path: str, facts: dict[str, Any]) -> None:
    os.makedirs(_folder(instance_path), exist_ok=True)
    write_json(os.path.join(_folder(instance_path), f"{os.getpid()}.json"), {**facts, "heartbeat": time.time()})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_workers(instance_path: str) -> list[dict[str, Any]]:
    """Every worker that wrote recently, by pid; files of exited workers are removed."""
    folder = _folder(instance_path)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    workers = []
    now = time.time()
    for name in names:
        if not name.endswith(".json") or not name[:-5].isdigit():
            continue
        pid = int(name[:-5])
        facts = read_json(os.path.join(folder, name))
        if not _alive(pid):
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass
            continue
        if not isinstance(facts, dict) or now - facts.get("heartbeat", 0) > STALE_AFTER_S:
            continue
        facts["heartbeat_age_s"] = round(now - facts.pop("heartbeat"), 1)
        workers.append(facts)
    return sorted(workers, key=lambda facts: facts.get("pid", 0))
