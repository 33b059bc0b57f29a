"""Database URLs, engine options per dialect, and the facts operators read about pools.

Flask-SQLAlchemy owns the engines and sessions; this module only decides how
they are built (drivers, pool sizes, timeouts) and how they are described
(masked URLs, pool numbers), so nothing else needs to know about dialects.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from .config import ConfigError
from .extensions import db

PROJECT_ROOT = Path(__file__).resolve().parent.parent
APPLICATION_NAME = "dbhealth"

# Plain schemes pick our drivers; SQLAlchemy 2.1 would pick psycopg 3 or mysqlclient.
DEFAULT_DRIVERS = {"postgresql": "psycopg2", "mysql": "pymysql", "mariadb": "pymysql"}
DRIVER_PACKAGES = {
    "psycopg2": "psycopg2-binary",
    "pymysql": "PyMySQL",
    "psycopg": "psycopg[binary]",
    "mysqldb": "mysqlclient",
    "mariadbconnector": "mariadb",
}
SUPPORTED = ("postgresql", "mysql", "mariadb", "sqlite")
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}
# Socket timeouts for PyMySQL: no ordinary query of this service runs longer.
MYSQL_READ_WRITE_TIMEOUT = 30
SQLITE_BUSY_TIMEOUT = 5.0


def mask_url(url: URL | str | None) -> str | None:
    """Render a database URL with its password replaced by ``***``."""
    if url is None:
        return None
    if isinstance(url, str):
        try:
            url = sa.make_url(url)
        except Exception:
            # Unparseable: hide everything between "://" and "@".
            scheme, sep, rest = url.partition("://")
            return f"{scheme}{sep}***@{rest.rpartition('@')[2]}" if "@" in rest else url
    return url.render_as_string(hide_password=True)


def scrub_secrets(text: str) -> str:
    """Remove the passwords of the app's databases from a driver message."""
    for engine in db.engines.values():
        if engine.url.password:
            text = text.replace(str(engine.url.password), "***")
    return text


def parse_url(raw: str, variable: str) -> URL:
    """Parse a database URL, choose its driver, and check the driver is installed."""
    try:
        url = sa.make_url(raw)
    except Exception:
        raise ConfigError(f"{variable} is not a valid database URL: {mask_url(raw)!r}") from None

    backend, _, driver = url.drivername.partition("+")
    if backend == "postgres":
        backend = "postgresql"
    if backend not in SUPPORTED:
        raise ConfigError(
            f"{variable} uses unsupported database {backend!r} "
            f"(supported: postgresql, mysql, mariadb, sqlite)"
        )
    driver = driver or DEFAULT_DRIVERS.get(backend, "")
    url = url.set(drivername=f"{backend}+{driver}" if driver else backend)

    if backend == "sqlite":
        url = _sqlite_file(url, variable)
    elif not url.host and not url.query.get("host") and not url.query.get("unix_socket"):
        raise ConfigError(f"{variable} has no host: {mask_url(url)!r}")

    try:
        url.get_dialect().import_dbapi()
    except ImportError:
        package = DRIVER_PACKAGES.get(driver, driver)
        raise ConfigError(
            f"{variable} needs the {driver} driver, which is not installed: pip install {package}"
        ) from None
    except Exception:
        raise ConfigError(f"{variable} names an unknown driver {driver!r}") from None
    return url


def _sqlite_file(url: URL, variable: str) -> URL:
    """Resolve a relative SQLite path against the project folder and make sure it is writable."""
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return url
    path = Path(database)
    if not path.is_absolute():
        path = PROJECT_ROOT / path
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"{variable}: cannot create folder {folder}: {error.strerror}") from None
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"{variable}: {path if path.exists() else folder} is not writable")
    return url.set(database=str(path))


def database_backend(url: URL) -> str:
    """The SQLAlchemy backend name: postgresql, mysql, mariadb or sqlite."""
    return url.get_backend_name()


def engine_options(url: URL, settings: dict[str, Any]) -> dict[str, Any]:
    """Engine options for one database: pool, timeouts and driver arguments per dialect."""
    # hide_parameters: bound values (password hashes, user input) stay out of error messages.
    options: dict[str, Any] = {"url": url, "echo": settings["DB_ECHO"], "hide_parameters": True}
    backend = database_backend(url)
    if backend == "sqlite":
        options["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT}
        return options

    options.update(
        pool_size=settings["DB_POOL_SIZE"],
        max_overflow=settings["DB_MAX_OVERFLOW"],
        pool_timeout=settings["DB_POOL_TIMEOUT"],
        pool_recycle=settings["DB_POOL_RECYCLE"],
        pool_pre_ping=True,
        connect_args=connect_args(url, settings["DB_CONNECT_TIMEOUT"]),
    )
    return options


def connect_args(url: URL, connect_timeout: float) -> dict[str, Any]:
    """Driver arguments that bound connecting and notice dead peers."""
    if url.get_driver_name() == "psycopg2":
        return {
            # libpq takes whole seconds and treats 1 as 2.
            "connect_timeout": max(2, math.ceil(connect_timeout)),
            "application_name": APPLICATION_NAME,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "tcp_user_timeout": 30_000,
        }
    if url.get_driver_name() == "pymysql":
        return {
            "connect_timeout": connect_timeout,
            "read_timeout": MYSQL_READ_WRITE_TIMEOUT,
            "write_timeout": MYSQL_READ_WRITE_TIMEOUT,
            "charset": "utf8mb4",
        }
    return {}


def sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    """Foreign keys on, WAL for files, a busy timeout: set on every new SQLite connection."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
    cursor.execute("PRAGMA journal_mode")
    if cursor.fetchone()[0] not in ("memory", "wal"):
        cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def prepare_engine(engine: Engine) -> None:
    """Attach dialect-specific connection set-up to an engine Flask-SQLAlchemy built."""
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", sqlite_pragmas)


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
    return {
        "database_type": database_backend(url),
        "driver": url.get_driver_name(),
        "host": url.host,
        "port": url.port or DEFAULT_PORTS.get(database_backend(url)),
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
