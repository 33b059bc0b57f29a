"""TLS to the server databases: one setting for all, turned into each driver's arguments.

DB_SSLMODE, DB_SSLROOTCERT, DB_SSLCERT and DB_SSLKEY apply to every server
database and bind; a URL's own TLS parameters win for that URL. libpq (psycopg2)
takes the modes natively. PyMySQL gets an ``ssl.SSLContext`` built here with the
same meaning, so one setting means the same on both drivers:

| mode        | libpq                                 | PyMySQL                                          |
|-------------|---------------------------------------|--------------------------------------------------|
| disable     | plain                                 | ``ssl_disabled``                                 |
| prefer      | TLS if offered, else plain            | its own default: TLS if offered (unverified), else plain |
| require     | TLS, chain checked only with a root   | TLS, chain checked only with a root cert         |
| verify-ca   | TLS, chain checked                    | TLS, chain checked                               |
| verify-full | TLS, chain and host name checked      | TLS, chain and host name checked                 |

Without a root certificate the verify modes use libpq's ``~/.postgresql/root.crt``
and the system's trusted roots for PyMySQL; ``system`` asks both for the
system's roots. Under ``prefer`` PyMySQL presents no client certificate.
"""
from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import URL

from ..config import ConfigError
from ..config.values import file_problem

SYSTEM_ROOTS = "system"
SETTING_NAMES = {"root_cert": "DB_SSLROOTCERT", "cert": "DB_SSLCERT", "key": "DB_SSLKEY"}
# libpq parameters a URL may carry, by our name.
POSTGRES_PARAMETERS = {"mode": "sslmode", "root_cert": "sslrootcert", "cert": "sslcert", "key": "sslkey"}
# What SQLAlchemy turns into PyMySQL's ``ssl`` dict; any of them makes the URL's TLS its own.
MYSQL_PARAMETERS = ("ssl_ca", "ssl_cert", "ssl_key", "ssl_capath", "ssl_cipher", "ssl_check_hostname")
FILE_PARAMETERS = ("sslrootcert", "sslcert", "sslkey", "ssl_ca", "ssl_cert", "ssl_key", "ssl_capath")


def check_url_files(url: URL, variable: str) -> None:
    """Refuse a URL whose own certificate or key parameters name unreadable files."""
    for parameter in FILE_PARAMETERS:
        value = url.query.get(parameter)
        if isinstance(value, str) and value and not (parameter == "sslrootcert" and value == SYSTEM_ROOTS):
            problem = file_problem(value)
            if problem:
                raise ConfigError(f"{variable}: {parameter} {problem}: {value!r}")


def effective(url: URL, settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """The TLS settings one URL really gets: mode and files, and whether its URL chose them.

    None for SQLite. PostgreSQL URLs win parameter by parameter (libpq's own);
    a MySQL-family URL with any ``ssl_*`` parameter takes its TLS from the URL alone,
    with the mode those parameters amount to.
    """
    backend = url.get_backend_name()
    configured = {
        "mode": settings.get("DB_SSLMODE") or "prefer",
        **{ours: settings.get(name) for ours, name in SETTING_NAMES.items()},
    }
    if backend == "postgresql":
        own = {ours: url.query[theirs] for ours, theirs in POSTGRES_PARAMETERS.items() if theirs in url.query}
        return {**configured, **own, "from_url": sorted(POSTGRES_PARAMETERS[name] for name in own)}
    if backend in ("mysql", "mariadb"):
        own = [name for name in MYSQL_PARAMETERS if name in url.query]
        if not own:
            return {**configured, "from_url": []}
        ca = url.query.get("ssl_ca") or url.query.get("ssl_capath")
        check_host = str(url.query.get("ssl_check_hostname", "true")).lower() not in ("false", "0", "no", "off")
        mode = "require" if not ca else "verify-full" if check_host else "verify-ca"
        return {
            "mode": mode,
            "root_cert": ca,
            "cert": url.query.get("ssl_cert"),
            "key": url.query.get("ssl_key"),
            "from_url": own,
        }
    return None


def describe(url: URL, settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """What /info shows: the mode and the root certificate's file name, never a file's content."""
    tls = effective(url, settings)
    if tls is None:
        return None
    return {"mode": tls["mode"], "root_cert": tls["root_cert"]}


def driver_arguments(url: URL, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The driver's connect arguments for the configured TLS; nothing where the URL decides."""
    tls = effective(url, settings)
    if tls is None:
        return {}
    driver = url.get_driver_name()
    if driver == "psycopg2":
        # connect_args override URL parameters in SQLAlchemy, so give libpq only what the URL lacks.
        return {
            libpq: tls[ours]
            for ours, libpq in POSTGRES_PARAMETERS.items()
            if libpq not in url.query and tls[ours] is not None
        }
    if driver == "pymysql" and not tls["from_url"]:
        return mysql_arguments(tls)
    return {}


def libpq_parameters(url: URL, settings: Mapping[str, Any]) -> dict[str, Any]:
    """sslmode, sslrootcert, sslcert, sslkey for a psycopg2 connection made without SQLAlchemy (the pooler console)."""
    tls = effective(url, settings) or {}
    return {libpq: tls[ours] for ours, libpq in POSTGRES_PARAMETERS.items() if tls.get(ours) is not None}


def mysql_arguments(tls: Mapping[str, Any]) -> dict[str, Any]:
    """PyMySQL's arguments for a mode: nothing for prefer (its own default), a context for the strict ones."""
    mode = tls["mode"]
    if mode == "disable":
        return {"ssl_disabled": True}
    if mode == "prefer":
        return {}
    root = tls.get("root_cert")
    verify = mode in ("verify-ca", "verify-full") or bool(root)  # require with a root checks it, as libpq does
    context = ssl.create_default_context(cafile=None if root in (None, SYSTEM_ROOTS) else root)
    # PyMySQL relaxes this too: MySQL's own generated certificates fail the strict checks.
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    context.check_hostname = mode == "verify-full"
    context.verify_mode = ssl.CERT_REQUIRED if verify else ssl.CERT_NONE
    if tls.get("cert"):
        context.load_cert_chain(tls["cert"], keyfile=tls.get("key"), password=b"")  # never a prompt
    return {"ssl": context}


# Asked on every probe of the same engine URLs: remembered by identity (hashing a URL costs more).
_local_urls: dict[int, tuple[URL, bool]] = {}


def is_local(url: URL) -> bool:
    """True for a Unix socket or loopback addresses only: traffic that never crosses a network."""
    known = _local_urls.get(id(url))
    if known is not None and known[0] is url:
        return known[1]
    if url.query.get("unix_socket"):
        local = True
    else:
        query_host = url.query.get("host")
        hosts = [url.host] if url.host else list(query_host) if isinstance(query_host, tuple) else [query_host]
        local = all(_loopback(name.strip()) for host in hosts for name in str(host or "").split(","))
    if len(_local_urls) > 64:
        _local_urls.clear()
    _local_urls[id(url)] = (url, local)
    return local


def _loopback(host: str) -> bool:
    if not host or host.startswith("/"):  # no host (the default socket) or a socket folder
        return True
    if host.startswith("[") and "]" in host:
        host = host[1:host.index("]")]
    elif host.count(":") == 1:
        host = host.split(":")[0]  # host:port in a multi-host list
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# libpq's words for a connection it could not set up over TLS; only in a failed connection attempt.
LIBPQ_CONNECT_FAILED = re.compile(r"connection to server (?:at|on) .*? failed: (.*)", re.DOTALL)
LIBPQ_FAILURES = [
    (re.compile(pattern, re.IGNORECASE), cause)
    for pattern, cause in (
        (r'server certificate for "([^"]*)".* does not match host name "([^"]*)"',
         "TLS host name mismatch: the server's certificate is for {0}, not {1}"),
        (r"server does not support ssl, but ssl was required",
         "the server does not support SSL, but the TLS mode (DB_SSLMODE or sslmode) requires it"),
        (r'root certificate file "([^"]*)" does not exist',
         "TLS root certificate missing: {0} does not exist (set DB_SSLROOTCERT)"),
        (r"ssl error: certificate verify failed",
         "TLS certificate verify failed: the server's certificate is not signed by the root certificate "
         "(DB_SSLROOTCERT), or has expired"),
        (r"(could not (?:read|load|open) (?:certificate|private key|root certificate) file.*"
         r"|certificate present, but not private key file.*|private key file .* has group or world access.*)",
         "the client certificate or key cannot be used: {0}"),
        (r"ssl error: (?!unexpected eof)(.*)", "TLS handshake failed: {0}"),
    )
]


def handshake_failure(error: BaseException) -> str | None:
    """The cause in words when a connection failed to set up TLS or check a certificate; else None.

    A misconfiguration, never retried (see classify.py): certificate verify
    failed, host name mismatch, server does not support SSL, unusable files.
    A connection lost in the middle of a handshake is not one of these.
    """
    error = getattr(error, "orig", None) or error
    module = type(error).__module__
    if module.startswith("psycopg2"):
        if getattr(error, "pgcode", None):
            return None
        attempt = LIBPQ_CONNECT_FAILED.search(str(error))
        if attempt is None:
            return None
        said = attempt.group(1).strip()
        for pattern, cause in LIBPQ_FAILURES:
            found = pattern.search(said)
            if found:
                return cause.format(*found.groups())
        return None
    if module.startswith("pymysql"):
        code = error.args[0] if error.args and isinstance(error.args[0], int) else None
        if code == 2026 and "doesn't support" in str(error):
            return "the server does not support SSL, but the TLS mode (DB_SSLMODE or ssl_* in the URL) requires it"
        return _ssl_cause(error)
    return None


def _ssl_cause(error: BaseException) -> str | None:
    """From the ssl module's error PyMySQL wrapped (its context): verification or handshake."""
    seen = error.__cause__ or error.__context__
    while seen is not None and not isinstance(seen, ssl.SSLError):
        seen = seen.__cause__ or seen.__context__
    if isinstance(seen, ssl.SSLCertVerificationError):
        detail = str(seen.verify_message or seen.reason or "").rstrip(".")
        if "mismatch" in detail.lower():
            return f"TLS host name mismatch: {detail}"
        return f"TLS certificate verify failed: {detail or 'untrusted'} (is DB_SSLROOTCERT the CA that signed it?)"
    if isinstance(seen, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)):
        return None  # the peer went away mid-handshake: an outage, not a setting
    if isinstance(seen, ssl.SSLError):
        return f"TLS handshake failed: {seen.reason or seen}"
    return None
