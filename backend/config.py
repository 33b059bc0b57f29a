"""Settings read from the environment once, validated, and turned into Flask config.

Every variable of the service is declared in ``SETTINGS`` with its parser and
default; ``load_settings`` is the only place that reads them. A bad value raises
``ConfigError`` with one line naming the variable, which the factory turns into
exit status 3 (the "misconfigured" status of ``flask dbhealth check``).
"""
from __future__ import annotations

import os
import re
import secrets
import socket
import ssl
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

ENVIRONMENTS = ("development", "testing", "production")
SSL_MODES = ("disable", "prefer", "require", "verify-ca", "verify-full")  # libpq's, without "allow"
MIN_SECRET_LENGTH = 32
EXIT_MISCONFIGURED = 3


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names it."""


def _text(name: str, raw: str) -> str:
    return raw.strip()


def _integer(minimum: int, wording: str) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise ConfigError(f"{name} must be {wording}, got {raw!r}") from None
        if value < minimum:
            raise ConfigError(f"{name} must be {wording}, got {raw!r}")
        return value

    return parse


def _number(minimum: float, wording: str, allow_equal: bool) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(str(raw).strip())
        except ValueError:
            raise ConfigError(f"{name} must be {wording}, got {raw!r}") from None
        too_small = value < minimum if allow_equal else value <= minimum
        if too_small or value != value or value == float("inf"):
            raise ConfigError(f"{name} must be {wording}, got {raw!r}")
        return value

    return parse


def _percent(name: str, raw: str) -> float:
    value = _number(0, "a percentage between 1 and 100", allow_equal=False)(name, raw)
    if value > 100:
        raise ConfigError(f"{name} must be a percentage between 1 and 100, got {raw!r}")
    return value


def _boolean(name: str, raw: str) -> bool:
    value = str(raw).strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _choice(*choices: str, upper: bool = False) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = str(raw).strip()
        value = value.upper() if upper else value.lower()
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


INSTANCE_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
_default_instance_id: str | None = None


def _instance_id(name: str, raw: str) -> str:
    value = str(raw).strip()
    if not INSTANCE_ID_PATTERN.fullmatch(value):
        raise ConfigError(f"{name} must be 1-64 characters of A-Z a-z 0-9 . _ -, got {raw!r}")
    return value


def default_instance_id() -> str:
    """The host name and a short random suffix, chosen once per process.

    Under gunicorn the master sets INSTANCE_ID before it forks (gunicorn.conf.py),
    so every worker shares one; ``flask run`` gets one per process.
    """
    global _default_instance_id
    if _default_instance_id is None:
        host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname().split(".")[0])[:57] or "host"
        _default_instance_id = f"{host}-{secrets.token_hex(3)}"
    return _default_instance_id


def shown_url(url: str) -> str:
    """A webhook URL as it may be shown: scheme and host (and port); its path is often the secret."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if _port(parts) else "")


def _port(parts) -> int | None:
    try:
        return parts.port
    except ValueError:
        return None


def _webhook_urls(name: str, raw: str) -> tuple[str, ...]:
    urls = tuple(url.strip() for url in str(raw).split(",") if url.strip())
    for url in urls:
        try:
            parts = urlsplit(url)
        except ValueError:  # an IPv6 address without its closing bracket
            raise ConfigError(f"{name} must be comma-separated http(s) URLs, got one that cannot be parsed") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            shown = repr(shown_url(url)) if parts.scheme and parts.hostname else "one without http(s)://host"
            raise ConfigError(f"{name} must be comma-separated http(s) URLs, got {shown}")
        try:
            parts.port
        except ValueError:
            raise ConfigError(f"{name}: {shown_url(url)} has an invalid port") from None
    return urls
def _rate(name: str, raw: str) -> str:
    """One rate such as ``10/minute`` or ``5 per 2 hours`` (the ``limits`` notation Flask-Limiter reads)."""
    from limits import parse_many

    try:
        items = parse_many(str(raw).strip())
    except ValueError:
        items = []
    if len(items) != 1 or items[0].amount < 1:
        raise ConfigError(f"{name} must be one rate such as 10/minute or 5 per 2 hours, got {raw!r}")
    return f"{items[0].amount} per {items[0].multiples} {items[0].GRANULARITY.name}"


def file_problem(path: str) -> str | None:
    """Why ``path`` cannot serve as a certificate or key file, or None."""
    if not os.path.exists(path):
        return "names a file that does not exist"
    if os.path.isdir(path):
        return "names a folder, not a file"
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as error:
        return f"names a file that cannot be read ({error.strerror})"
    return None


def _readable_file(name: str, raw: str) -> str:
    """A certificate or key file that exists and can be read; DB_SSLROOTCERT may be ``system``."""
    path = str(raw).strip()
    if name == "DB_SSLROOTCERT" and path == "system":
        return path
    problem = file_problem(path)
    if problem:
        raise ConfigError(f"{name} {problem}: {path!r}")
    return path
def _pgbouncer_admin_url(name: str, raw: str) -> Any:
    """pgbouncer's admin console: postgresql://user[:password]@host:port/pgbouncer."""
    import sqlalchemy as sa  # only when the variable is set

    try:
        url = sa.make_url(raw.strip())
    except Exception:
        raise ConfigError(f"{name} is not a valid URL (postgresql://user@host:6432/pgbouncer)") from None
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() not in ("postgresql", "postgres") or not url.host:
        raise ConfigError(f"{name} must be postgresql://user@host:port/pgbouncer, got {shown!r}")
    if url.database != "pgbouncer":
        raise ConfigError(f"{name} must name pgbouncer's admin database (.../pgbouncer), got {shown!r}")
    from .db.tls import check_url_files  # it imports this module

    check_url_files(url, name)
    return url


positive_int = _integer(1, "a positive integer")
non_negative_int = _integer(0, "a non-negative integer")
positive_seconds = _number(0, "a positive number of seconds", allow_equal=False)
non_negative_seconds = _number(0, "a non-negative number of seconds", allow_equal=True)

# name -> (parser, default). None means "not set".
SETTINGS: dict[str, tuple[Callable[[str, str], Any], Any]] = {
    "APP_ENV": (_choice(*ENVIRONMENTS), "development"),
    "DATABASE_URL": (_text, None),
    "DATABASE_READONLY_URL": (_text, None),
    "DB_POOL_SIZE": (positive_int, 10),
    "DB_MAX_OVERFLOW": (non_negative_int, 20),
    "DB_POOL_TIMEOUT": (positive_seconds, 20.0),
    "DB_POOL_RECYCLE": (positive_int, 3600),
    "DB_CONNECT_TIMEOUT": (positive_seconds, 5.0),
    "DB_HEALTH_TIMEOUT": (positive_seconds, 2.0),
    "DB_HEALTH_CACHE_TTL": (non_negative_seconds, 5.0),
    "DB_HEALTH_CHECK_INTERVAL": (non_negative_seconds, 60.0),
    "DB_STATEMENT_TIMEOUT_MS": (positive_int, 5000),
    "DB_OPERATION_TIMEOUT": (positive_seconds, 5.0),
    "DB_CONSOLE_MAX_BYTES": (positive_int, 1048576),
    "DB_CONSOLE_ALLOW_PRIMARY_ROLE": (_boolean, False),
    "DB_RETRY_ATTEMPTS": (non_negative_int, 3),
    "DB_RETRY_BASE_DELAY": (non_negative_seconds, 1.0),
    "DB_ECHO": (_boolean, False),
    "DB_CONNECTIONS_WARN_PERCENT": (_percent, 80.0),
    "DB_POOL_WARN_PERCENT": (_percent, 90.0),
    "DB_REPLICA_MAX_LAG_S": (positive_seconds, 30.0),
    "DB_SESSION_KILL": (_choice("own", "any", "off"), "own"),
    "DB_IDLE_IN_TX_WARN_S": (positive_seconds, 60.0),
    "DB_LOCK_WAIT_WARN_S": (positive_seconds, 30.0),
    "DB_XID_AGE_WARN": (positive_int, 1_000_000_000),
    "DB_SLOT_RETAINED_WARN_BYTES": (positive_int, 1_073_741_824),
    "DB_SSLMODE": (_choice(*SSL_MODES), "prefer"),
    "DB_SSLROOTCERT": (_readable_file, None),
    "DB_SSLCERT": (_readable_file, None),
    "DB_SSLKEY": (_readable_file, None),
    "DB_PGBOUNCER_ADMIN_URL": (_pgbouncer_admin_url, None),
    "JWT_SECRET_KEY": (_text, None),
    "JWT_ACCESS_TOKEN_EXPIRES": (positive_int, 3600),
    "METRICS_TOKEN": (_text, None),
    "INSTANCE_ID": (_instance_id, None),
    "DB_HISTORY_RETENTION_DAYS": (positive_int, 30),
    "DB_ALERT_WEBHOOK_URLS": (_webhook_urls, ()),
    "DB_ALERT_FAILURES": (positive_int, 2),
    "DB_ALERT_RECOVERIES": (positive_int, 2),
    "DB_ALERT_MIN_INTERVAL_S": (non_negative_seconds, 300.0),
    "DB_READYZ_CHECKS_DATABASE": (_boolean, False),
    "AUTH_LOGIN_LIMIT": (_rate, "10 per 1 minute"),
    "TRUSTED_PROXIES": (non_negative_int, 0),
    "LOG_LEVEL": (_choice("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", upper=True), "INFO"),
    "LOG_FORMAT": (_choice("text", "json"), "text"),
}
BIND_PREFIX = "DB_BIND_"


def _check_tls_files(settings: dict[str, Any]) -> None:
    """Certificates that exist but are no certificates stop start-up too, not the first connection."""
    root, cert, key = settings["DB_SSLROOTCERT"], settings["DB_SSLCERT"], settings["DB_SSLKEY"]
    if key and not cert:
        raise ConfigError("DB_SSLKEY is set without DB_SSLCERT (a client key needs its certificate)")
    if root == "system" and settings["DB_SSLMODE"] != "verify-full":
        # libpq refuses weaker modes with the system's roots; PyMySQL is held to the same.
        raise ConfigError(f"DB_SSLROOTCERT=system needs DB_SSLMODE=verify-full, got {settings['DB_SSLMODE']!r}")
    if root and root != "system":
        try:
            ssl.create_default_context(cafile=root)
        except ssl.SSLError:
            raise ConfigError(f"DB_SSLROOTCERT holds no PEM certificate: {root!r}") from None
    if cert:
        try:
            # An empty password makes an encrypted key fail here instead of prompting.
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, keyfile=key, password=b"")
        except ssl.SSLError as error:
            names = "DB_SSLCERT and DB_SSLKEY do" if key else "DB_SSLCERT does"
            raise ConfigError(
                f"{names} not hold a certificate and its unencrypted private key ({error.reason or error})"
            ) from None


def load_settings(environ: Mapping[str, Any]) -> dict[str, Any]:
    """Parse and validate every setting from ``environ``; raise ConfigError on the first bad one."""
    settings: dict[str, Any] = {}
    for name, (parse, default) in SETTINGS.items():
        raw = environ.get(name)
        if raw is None or str(raw).strip() == "":
            settings[name] = default
        else:
            settings[name] = parse(name, raw)

    settings["INSTANCE_ID"] = settings["INSTANCE_ID"] or default_instance_id()
    settings["DB_BINDS"] = {
        name[len(BIND_PREFIX):].lower(): str(value).strip()
        for name, value in sorted(environ.items())
        if name.startswith(BIND_PREFIX) and len(name) > len(BIND_PREFIX)
    }
    for bind, url in settings["DB_BINDS"].items():
        if not url:
            raise ConfigError(f"{BIND_PREFIX}{bind.upper()} is set but empty")
        if bind == "primary" or not bind.replace("_", "").isalnum():
            raise ConfigError(
                f"{BIND_PREFIX}{bind.upper()}: the name must be letters, digits or _ and not PRIMARY"
            )

    _check_tls_files(settings)

    production = settings["APP_ENV"] == "production"
    if production and not settings["DATABASE_URL"]:
        raise ConfigError("DATABASE_URL is required when APP_ENV=production")

    secret = settings["JWT_SECRET_KEY"]
    if secret is None:
        if production:
            raise ConfigError(
                f"JWT_SECRET_KEY is required when APP_ENV=production "
                f"(at least {MIN_SECRET_LENGTH} characters)"
            )
        # Development and tests get a random key: tokens die with the process.
        settings["JWT_SECRET_KEY"] = secrets.token_urlsafe(48)
        settings["JWT_SECRET_KEY_GENERATED"] = True
    elif len(secret) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"JWT_SECRET_KEY must be at least {MIN_SECRET_LENGTH} characters, got {len(secret)}"
        )

    # Failed logins per client address alone: three times the budget per (username, address).
    amount, per = settings["AUTH_LOGIN_LIMIT"].split(" per ", 1)
    settings["AUTH_LOGIN_ADDRESS_LIMIT"] = f"{int(amount) * 3} per {per}"
    settings["JWT_ACCESS_TOKEN_EXPIRES"] = timedelta(seconds=settings["JWT_ACCESS_TOKEN_EXPIRES"])
    return settings
