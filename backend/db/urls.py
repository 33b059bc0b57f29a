"""Database URLs: parsed and validated once, their drivers chosen, and never shown unmasked."""
from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import quote

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


# scheme://[userinfo@]hosts[/database][?query]: the libpq spelling of several hosts.
URL_PARTS = re.compile(r"^(?P<scheme>[^:/]+)://(?:(?P<userinfo>[^@/?]*)@)?(?P<hosts>[^/?]*)(?P<rest>.*)$", re.S)


def mask_url(url: URL | str | None) -> str | None:
    """Render a database URL with its password replaced by ``***`` (the user name stays)."""
    if url is None:
        return None
    if isinstance(url, str):
        try:
            parsed = sa.make_url(_hosts_into_query(url))
        except Exception:
            parsed = None
        if parsed is None or "@" in (parsed.host or ""):
            # Unparseable, or an unencoded "@" in the password (the parser would show part of it
            # as the host): keep the user name, hide the rest of what comes before the last "@".
            scheme, sep, rest = url.partition("://")
            if "@" not in rest:
                return url
            userinfo, _, where = rest.rpartition("@")
            return f"{scheme}{sep}{userinfo.partition(':')[0]}:***@{where}"
        url = parsed
    hosts = url.query.get("host")
    if isinstance(hosts, tuple) and len(hosts) > 1:
        # Several hosts: shown in libpq's spelling, h1:5432,h2:5432, as an operator writes them.
        query = {k: v for k, v in url.query.items() if k != "host"}
        shown = url.set(host=None, port=None, query=query).render_as_string(hide_password=True)
        scheme, _, rest = shown.partition("://")
        userinfo, at, rest = rest.rpartition("@") if "@" in rest.partition("/")[0] else ("", "", rest)
        listed = ",".join(f"{host}:{port}" for host, port in hosts_of(url))
        return f"{scheme}://{userinfo}{at}{listed}{rest}"
    return url.render_as_string(hide_password=True)


def hosts_of(url: URL) -> list[tuple[str, int | None]]:
    """Every (host, port) a URL names, in order: one for most URLs, several for libpq multi-host ones."""
    default = DEFAULT_PORTS.get(database_backend(url))
    hosts = url.query.get("host")
    if isinstance(hosts, tuple):
        return [_host_port(entry, default) for entry in hosts]
    if isinstance(hosts, str) and not url.host:
        return [(hosts, url.port or default)]
    return [(url.host, url.port or default)] if url.host else []


def _host_port(entry: str, default: int | None) -> tuple[str, int | None]:
    host, colon, port = entry.rpartition(":") if not entry.endswith("]") else (entry, "", "")
    if not colon:
        return entry.strip("[]"), default
    return host.strip("[]"), int(port) if port.isdecimal() else port or default


def _hosts_into_query(raw: str) -> str:
    """Rewrite libpq's ``h1:5432,h2:5433`` host list into the ``?host=h1:5432&host=h2:5433`` form SQLAlchemy reads."""
    parts = URL_PARTS.match(raw)
    if not parts or "," not in parts["hosts"]:
        return raw
    userinfo = f"{parts['userinfo']}@" if parts["userinfo"] is not None else ""
    path, question, query = parts["rest"].partition("?")
    added = "&".join(f"host={quote(entry.strip(), safe='[]:')}" for entry in parts["hosts"].split(","))
    return f"{parts['scheme']}://{userinfo}{path or '/'}?{added}{'&' + query if query else ''}"


def _normalise_hosts(url: URL, variable: str) -> URL:
    """Both multi-host spellings as one: ``host=h1:p1&host=h2:p2``, each entry with its port."""
    hosts, ports = url.query.get("host"), url.query.get("port")
    if hosts is None or (isinstance(hosts, str) and "," not in hosts):
        return url
    hosts = list(hosts) if isinstance(hosts, tuple) else hosts.split(",")
    ports = [] if ports is None else list(ports) if isinstance(ports, tuple) else ports.split(",")
    if ports and len(ports) not in (1, len(hosts)):
        raise ConfigError(f"{variable} lists {len(hosts)} hosts but {len(ports)} ports: {mask_url(url)!r}")
    if ports and any(":" in entry and not entry.endswith("]") for entry in hosts):
        raise ConfigError(f"{variable} gives ports both in host= and in port=: {mask_url(url)!r}")
    entries = []
    for index, host in enumerate(hosts):
        port = ports[index if len(ports) > 1 else 0] if ports else ""
        if port and not port.strip().isdecimal():
            raise ConfigError(f"{variable} has an invalid port {port!r}: {mask_url(url)!r}")
        if not host.strip():
            raise ConfigError(f"{variable} has an empty host in its host list: {mask_url(url)!r}")
        _, colon, own_port = host.rpartition(":") if not host.endswith("]") else ("", "", "")
        if colon and not own_port.strip().isdecimal():
            raise ConfigError(f"{variable} has an invalid port {own_port!r}: {mask_url(url)!r}")
        entries.append(f"{host.strip()}:{port.strip()}" if port else host.strip())
    query = {k: v for k, v in url.query.items() if k not in ("host", "port")}
    return url.set(host=None, port=None, query={**query, "host": tuple(entries)})


def scrub_secrets(text: str) -> str:
    """Remove the passwords of the app's databases from a driver message."""
    for engine in db.engines.values():
        if engine.url.password:
            text = text.replace(str(engine.url.password), "***")
    return text


def parse_url(raw: str, variable: str) -> URL:
    """Parse a database URL, choose its driver, and check the driver is installed."""
    parts = URL_PARTS.match(raw)
    if parts and "," in parts["hosts"] and not all(entry.strip() for entry in parts["hosts"].split(",")):
        raise ConfigError(f"{variable} has an empty host in its host list: {mask_url(raw)!r}")
    try:
        url = sa.make_url(_hosts_into_query(raw))
    except Exception:
        raise ConfigError(f"{variable} is not a valid database URL: {mask_url(raw)!r}") from None

    if "@" in (url.host or ""):
        raise ConfigError(
            f"{variable} has an '@' in its user or password: write it as %40 ({mask_url(raw)!r})"
        )
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

    if backend == "postgresql":
        url = _normalise_hosts(url, variable)
    elif isinstance(url.query.get("host"), tuple) or "," in str(url.query.get("host") or ""):
        raise ConfigError(f"{variable}: several hosts in one URL work for PostgreSQL only: {mask_url(url)!r}")
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
