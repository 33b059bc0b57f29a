"""What operators read about a database's connections: pool numbers and where it is."""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .urls import database_backend, hosts_of, mask_url


def pool_facts(engine: Engine) -> dict[str, Any]:
    """Pool numbers for people: overflow never negative, and no invented numbers."""
    pool = engine.pool
    if not isinstance(pool, sa.pool.QueuePool):
        return {
            "pool_class": type(pool).__name__,
            "pool_size": None,
            "checked_in": None,
            "checked_out": None,
            "overflow": None,
            "max_overflow": None,
            "utilization_percent": None,
        }
    size = pool.size()
    checked_out = pool.checkedout()
    max_overflow = pool._max_overflow
    capacity = size + max(max_overflow, 0)
    return {
        "pool_class": type(pool).__name__,
        "pool_size": size,
        "checked_in": pool.checkedin(),
        "checked_out": checked_out,
        "overflow": max(pool.overflow(), 0),
        "max_overflow": max_overflow,
        "utilization_percent": round(100.0 * checked_out / capacity, 1) if capacity else None,
    }


def connection_facts(engine: Engine, options: dict[str, Any]) -> dict[str, Any]:
    """What /info shows about one database: where it is and how it is pooled, never the password."""
    url = engine.url
    pool = engine.pool
    queue_pool = isinstance(pool, sa.pool.QueuePool)
    hosts = hosts_of(url)
    return {
        "database_type": database_backend(url),
        "driver": url.get_driver_name(),
        "host": hosts[0][0] if hosts else None,  # the first of ``hosts``
        "port": hosts[0][1] if hosts else None,
        "hosts": [{"host": host, "port": port} for host, port in hosts],
        "target_session_attrs": url.query.get("target_session_attrs"),
        "database": url.database,
        "user": url.username,
        "url": mask_url(url),
        "pool_class": type(pool).__name__,
        "pool_size": pool.size() if queue_pool else None,
        "max_overflow": pool._max_overflow if queue_pool else None,
        "pool_timeout": pool._timeout if queue_pool else None,
        "pool_recycle": pool._recycle if pool._recycle >= 0 else None,
        "pool_pre_ping": bool(pool._pre_ping),
        "connect_timeout": options.get("connect_args", {}).get("connect_timeout"),
    }
