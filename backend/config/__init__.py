"""Settings read from the environment once, validated, and turned into Flask config.

Every variable of the service is declared in ``SETTINGS`` with its parser and
default; ``load_settings`` is the only place that reads them. A bad value raises
``ConfigError`` with one line naming the variable, which the factory turns into
exit status 3 (the "misconfigured" status of ``flask dbhealth check``).
"""
from __future__ import annotations

import secrets
import ssl
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from . import values
from .values import ConfigError

ENVIRONMENTS = ("development", "testing", "production")
SSL_MODES = ("disable", "prefer", "require", "verify-ca", "verify-full")  # libpq's, without "allow"
MIN_SECRET_LENGTH = 32
EXIT_MISCONFIGURED = 3


# name -> (parser, default). None means "not set".
SETTINGS: dict[str, tuple[Callable[[str, str], Any], Any]] = {
    "APP_ENV": (values.choice(*ENVIRONMENTS), "development"),
    "DATABASE_URL": (values.text, None),
    "DATABASE_READONLY_URL": (values.text, None),
    "DB_POOL_SIZE": (values.positive_int, 10),
    "DB_MAX_OVERFLOW": (values.non_negative_int, 20),
    "DB_POOL_TIMEOUT": (values.positive_seconds, 20.0),
    "DB_POOL_RECYCLE": (values.positive_int, 3600),
    "DB_CONNECT_TIMEOUT": (values.positive_seconds, 5.0),
    "DB_HEALTH_TIMEOUT": (values.positive_seconds, 2.0),
    "DB_HEALTH_CACHE_TTL": (values.non_negative_seconds, 5.0),
    "DB_HEALTH_CHECK_INTERVAL": (values.non_negative_seconds, 60.0),
    "DB_STATEMENT_TIMEOUT_MS": (values.positive_int, 5000),
    "DB_OPERATION_TIMEOUT": (values.positive_seconds, 5.0),
    "DB_CONSOLE_MAX_BYTES": (values.positive_int, 1048576),
    "DB_CONSOLE_ALLOW_PRIMARY_ROLE": (values.boolean, False),
    "DB_RETRY_ATTEMPTS": (values.non_negative_int, 3),
    "DB_RETRY_BASE_DELAY": (values.non_negative_seconds, 1.0),
    "DB_ECHO": (values.boolean, False),
    "DB_CONNECTIONS_WARN_PERCENT": (values.percent, 80.0),
    "DB_POOL_WARN_PERCENT": (values.percent, 90.0),
    "DB_REPLICA_MAX_LAG_S": (values.positive_seconds, 30.0),
    "DB_SESSION_KILL": (values.choice("own", "any", "off"), "own"),
    "DB_IDLE_IN_TX_WARN_S": (values.positive_seconds, 60.0),
    "DB_LOCK_WAIT_WARN_S": (values.positive_seconds, 30.0),
    "DB_XID_AGE_WARN": (values.positive_int, 1_000_000_000),
    "DB_SLOT_RETAINED_WARN_BYTES": (values.positive_int, 1_073_741_824),
    "DB_SSLMODE": (values.choice(*SSL_MODES), "prefer"),
    "DB_SSLROOTCERT": (values.readable_file, None),
    "DB_SSLCERT": (values.readable_file, None),
    "DB_SSLKEY": (values.readable_file, None),
    "DB_PGBOUNCER_ADMIN_URL": (values.pgbouncer_admin_url, None),
    "JWT_SECRET_KEY": (values.text, None),
    "JWT_ACCESS_TOKEN_EXPIRES": (values.positive_int, 3600),
    "METRICS_TOKEN": (values.text, None),
    "INSTANCE_ID": (values.instance_id, None),
    "DB_HISTORY_RETENTION_DAYS": (values.positive_int, 30),
    "DB_ALERT_WEBHOOK_URLS": (values.webhook_urls, ()),
    "DB_ALERT_FAILURES": (values.positive_int, 2),
    "DB_ALERT_RECOVERIES": (values.positive_int, 2),
    "DB_ALERT_MIN_INTERVAL_S": (values.non_negative_seconds, 300.0),
    "DB_READYZ_CHECKS_DATABASE": (values.boolean, False),
    "AUTH_LOGIN_LIMIT": (values.rate, "10 per 1 minute"),
    "TRUSTED_PROXIES": (values.non_negative_int, 0),
    "LOG_LEVEL": (values.choice("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", upper=True), "INFO"),
    "LOG_FORMAT": (values.choice("text", "json"), "text"),
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

    settings["INSTANCE_ID"] = settings["INSTANCE_ID"] or values.default_instance_id()
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
