"""Parsers of one setting's value: each takes (name, raw) and returns the value, or raises
ConfigError with one line that names the variable."""
from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names it."""


def text(name: str, raw: str) -> str:
    return raw.strip()


def integer(minimum: int, wording: str) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise ConfigError(f"{name} must be {wording}, got {raw!r}") from None
        if value < minimum:
            raise ConfigError(f"{name} must be {wording}, got {raw!r}")
        return value

    return parse


def number(minimum: float, wording: str, allow_equal: bool) -> Callable[[str, str], float]:
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


def percent(name: str, raw: str) -> float:
    value = number(0, "a percentage between 1 and 100", allow_equal=False)(name, raw)
    if value > 100:
        raise ConfigError(f"{name} must be a percentage between 1 and 100, got {raw!r}")
    return value


def boolean(name: str, raw: str) -> bool:
    value = str(raw).strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def choice(*choices: str, upper: bool = False) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = str(raw).strip()
        value = value.upper() if upper else value.lower()
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


INSTANCE_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
_default_instance_id: str | None = None


def instance_id(name: str, raw: str) -> str:
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


def webhook_urls(name: str, raw: str) -> tuple[str, ...]:
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


def rate(name: str, raw: str) -> str:
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


def readable_file(name: str, raw: str) -> str:
    """A certificate or key file that exists and can be read; DB_SSLROOTCERT may be ``system``."""
    path = str(raw).strip()
    if name == "DB_SSLROOTCERT" and path == "system":
        return path
    problem = file_problem(path)
    if problem:
        raise ConfigError(f"{name} {problem}: {path!r}")
    return path


def pgbouncer_admin_url(name: str, raw: str) -> Any:
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
    from ..db.tls import check_url_files  # it imports this module

    check_url_files(url, name)
    return url


positive_int = integer(1, "a positive integer")
non_negative_int = integer(0, "a non-negative integer")
positive_seconds = number(0, "a positive number of seconds", allow_equal=False)
non_negative_seconds = number(0, "a non-negative number of seconds", allow_equal=True)
