"""Database URLs: parsed and validated once, their drivers chosen, and never shown unmasked."""
from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL

from ..config import ConfigError
from ..extensions import db
from . import tls

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent

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
    else:
        tls.check_url_files(url, variable)

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
