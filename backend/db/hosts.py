"""Connecting to a libpq multi-host URL without spending the budget on a dead host.

libpq tries the hosts of ``h1:5432,h2:5432`` one after the other and gives each
the whole connect_timeout, so a frozen first host (a VM that stopped answering,
a blackholing firewall) costs every new connection its full timeout before the
healthy host is even tried. Here the hosts are raced instead, the way browsers
race addresses (RFC 8305, "happy eyeballs"): the host that answered last is
tried first, and each next host starts HEAD_START_S later, or at once when the
one before fails. The first connection that succeeds wins; any later one is
closed. Each attempt keeps libpq's own per-host connect_timeout and
target_session_attrs, so a standby still refuses a read-write session.

Whether each host answered the latest attempt that tried it is kept for
health's ``server.unreachable_hosts``: a host not tried since it failed stays
listed, with the time it failed.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Any

from sqlalchemy.engine import Engine

HEAD_START_S = 0.25
# libpq's words when a host answered but is not the kind target_session_attrs asks for.
WRONG_KIND = ("read-only", "read only", "hot standby", "not in recovery", "is in recovery")

_lock = threading.Lock()
_preferred: dict[tuple[str, ...], str] = {}  # host list -> "host:port" that answered last
_failed_at: dict[str, float] = {}  # "host:port" -> when its latest attempt failed (absent: it answered)


def split_hosts(cparams: dict[str, Any]) -> list[tuple[str, str]] | None:
    """[(host, port)] from the driver arguments of a multi-host URL; None for one host."""
    hosts = str(cparams.get("host") or "")
    if "," not in hosts:
        return None
    names = hosts.split(",")
    ports = str(cparams.get("port") or "").split(",")
    ports = ports * len(names) if len(ports) == 1 else ports
    return list(zip(names, ports))


def unreachable(hosts: list[tuple[str, Any]]) -> list[str]:
    """The ``host:port`` of each of ``hosts`` whose latest connection attempt failed."""
    with _lock:
        return [f"{host}:{port}" for host, port in hosts if f"{host}:{port}" in _failed_at]


def connect_racing(dialect: Any, cparams: dict[str, Any], hosts: list[tuple[str, str]]) -> Any:
    """Connect to the first of ``hosts`` that accepts, racing them with head starts."""
    names = [f"{host}:{port}" for host, port in hosts]
    key = tuple(names)
    with _lock:
        preferred = _preferred.get(key)
    order = sorted(range(len(hosts)), key=lambda index: names[index] != preferred)
    attrs = cparams.get("target_session_attrs")
    # prefer-standby: a standby if any answers, then any server, as libpq does.
    passes = ["standby", "any"] if attrs == "prefer-standby" else [attrs]
    failures: dict[str, Exception] = {}
    for attrs in passes:
        params = {**cparams, **({"target_session_attrs": attrs} if attrs else {})}
        winner, failures = _race(dialect, params, hosts, order, _failed)
        if winner is not None:
            index, connection = winner
            with _lock:
                _preferred[key] = names[index]
                _failed_at.pop(names[index], None)
            return connection
    errors = [failures[name] for name in names if name in failures]
    first = errors[0]
    raise type(first)("\n".join(str(error).strip() for error in errors)) from first


def _race(dialect, params, hosts, order, late_failure):
    """(index, connection) of the first host to accept, or None; and the failures seen until then."""
    results: queue.Queue = queue.Queue()
    state = {"done": False}
    guard = threading.Lock()

    def attempt(index: int) -> None:
        host, port = hosts[index]
        try:
            connection = dialect.loaded_dbapi.connect(**{**params, "host": host, "port": port})
        except Exception as error:
            with guard:
                if state["done"]:  # lost the race, and did not answer at all
                    late_failure(f"{host}:{port}", error)
                    return
            results.put((index, None, error))
            return
        with guard:
            if not state["done"]:
                results.put((index, connection, None))
                return
        connection.close()  # another host won meanwhile; this one did answer
        with _lock:
            _failed_at.pop(f"{host}:{port}", None)

    started = pending = 0
    failures: dict[str, Exception] = {}
    winner = None

    def start_next() -> None:
        nonlocal started, pending
        threading.Thread(target=attempt, args=(order[started],), daemon=True, name="db-connect").start()
        started, pending = started + 1, pending + 1

    start_next()
    while pending:
        try:
            index, connection, error = results.get(timeout=HEAD_START_S if started < len(order) else None)
        except queue.Empty:  # no answer yet: the next host starts alongside
            start_next()
            continue
        pending -= 1
        if connection is not None:
            winner = (index, connection)
            break
        failures[f"{hosts[index][0]}:{hosts[index][1]}"] = error
        late_failure(f"{hosts[index][0]}:{hosts[index][1]}", error)
        if started < len(order):  # a failure hands over at once
            start_next()
    with guard:
        state["done"] = True
    while True:  # close connections that succeeded after the winner
        try:
            _, late, _ = results.get_nowait()
        except queue.Empty:
            break
        if late is not None:
            late.close()
    return winner, failures


def _failed(name: str, error: Exception) -> None:
    """Note a host that did not answer (one that answered as the wrong kind of server did answer)."""
    if not any(words in str(error) for words in WRONG_KIND):
        with _lock:
            _failed_at[name] = time.time()


def race_hosts(engine: Engine) -> None:
    """Connect this psycopg2 engine's multi-host URLs by racing the hosts (one host: libpq as usual).

    The engine's own dialect does the racing in ``connect``, below SQLAlchemy's
    ``do_connect`` event, so whatever bounds a connect there bounds the race too.
    """
    if engine.dialect.driver != "psycopg2" or getattr(engine.dialect, "races_hosts", False):
        return
    dialect, plain = engine.dialect, engine.dialect.connect

    def connect(*cargs: Any, **cparams: Any) -> Any:
        hosts = split_hosts(cparams)
        if hosts is None or cargs:
            return plain(*cargs, **cparams)
        return connect_racing(dialect, cparams, hosts)

    dialect.connect, dialect.races_hosts = connect, True
