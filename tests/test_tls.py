"""Encrypted connections, on real servers with certificates the tests make.

A private PostgreSQL cluster (ssl = on) and a private MariaDB (--ssl-*) present
a server certificate, signed by a test CA, valid for the name ``localhost``
only: connecting to 127.0.0.1 under verify-full is a host name mismatch. Each
TLS server has a user that the server lets in over TLS only (pg_hba
``hostssl``, MariaDB ``REQUIRE SSL``), so a working request as that user proves
every connection it needed was encrypted. A second server of each kind has no
TLS at all.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from backend import create_app
from backend.db.tls import is_local
from tests.certificates import make_ca, make_server_cert
from tests.conftest import IN_CI, bearer
from tests.faults import ROOT, PgBouncer, PrivateCluster, PrivateMariaDB

KINDS = ["postgresql", "mariadb"]


def external_address() -> str | None:
    """This machine's address on a network interface (not loopback), if it has one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("198.51.100.1", 9))  # no packet is sent: this only picks a route
            address = probe.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


@contextmanager
def readable_by(account: str, *files: str) -> Iterator[Path]:
    """Copies of ``files`` in a folder of their own that the server's user owns (when run as root), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="dbhealth-tls-"))
    try:
        for name in files:
            shutil.copy(name, folder)
        if os.geteuid() == 0:
            owner = pwd.getpwnam(account)
            for path in (folder, *folder.iterdir()):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def reached_at(kind: str, port: int, database: str, host: str, user: str) -> SimpleNamespace:
    """A server as the tests reach it: its kind, port, and ``url(host, user)``, by default the name and user
    it is meant to be reached by."""
    return SimpleNamespace(
        kind=kind, port=port, url=lambda host=host, user=user: f"{kind}://{user}@{host}:{port}/{database}"
    )


@pytest.fixture(scope="module")
def certs():
    folder = Path(tempfile.mkdtemp(prefix="dbhealth-tls-"))
    ca = make_ca(folder, "ca")
    other_ca = make_ca(folder, "other-ca")
    server = make_server_cert(folder, "server", ca, ("localhost",))
    yield SimpleNamespace(folder=folder, ca=str(ca[0]), other_ca=str(other_ca[0]), cert=str(server[0]), key=str(server[1]))
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_postgresql(certs):
    hba = certs.folder / "pg_hba.conf"
    hba.write_text(
        "local all all trust\n"
        "hostssl all tlsonly all trust\n"
        "hostnossl all tlsonly all reject\n"
        "host all all 127.0.0.1/32 trust\n"
    )
    # The cluster runs as postgres, which must own its key (mode 0600).
    with readable_by("postgres", certs.cert, certs.key, str(hba)) as folder, PrivateCluster(settings=(
        f"ssl = on\nssl_cert_file = '{folder}/server.crt'\nssl_key_file = '{folder}/server.key'\n"
        f"hba_file = '{folder}/pg_hba.conf'\n"
    )) as cluster:
        cluster.execute("CREATE ROLE tlsonly LOGIN SUPERUSER")
        yield reached_at("postgresql", cluster.port, "postgres", "localhost", "tlsonly")


@pytest.fixture(scope="module")
def plain_postgresql():
    external = external_address()
    with PrivateCluster(settings=f"listen_addresses = '127.0.0.1{',' + external if external else ''}'\n") as cluster:
        if external:
            with open(os.path.join(cluster.data, "pg_hba.conf"), "a") as hba:
                hba.write(f"host all all {external}/32 trust\n")
            cluster.pg_ctl("reload")
        yield reached_at("postgresql", cluster.port, "postgres", "127.0.0.1", "postgres")


@pytest.fixture(scope="module")
def tls_mariadb(certs):
    with readable_by("mysql", certs.ca, certs.cert, certs.key) as folder, PrivateMariaDB(options=tuple(
        f"--ssl-{option}={folder / Path(name).name}"
        for option, name in (("ca", certs.ca), ("cert", certs.cert), ("key", certs.key))
    )) as server:
        server.execute(
            "CREATE DATABASE app",
            "CREATE USER 'tlsonly'@'%' REQUIRE SSL",
            "GRANT ALL ON *.* TO 'tlsonly'@'%'",
            "CREATE USER 'plain'@'%'",
            "GRANT ALL ON *.* TO 'plain'@'%'",
        )
        yield reached_at("mariadb", server.port, "app", "localhost", "tlsonly")


@pytest.fixture(scope="module")
def plain_mariadb():
    with PrivateMariaDB() as server:
        server.execute("CREATE DATABASE app", "CREATE USER 'plain'@'%'", "GRANT ALL ON *.* TO 'plain'@'%'")
        yield reached_at("mariadb", server.port, "app", "127.0.0.1", "plain")


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def tls_server(kind, request):
    return request.getfixturevalue(f"tls_{kind}")


@pytest.fixture
def plain_server(kind, request):
    return request.getfixturevalue(f"plain_{kind}")


def check(app) -> tuple[int, str]:
    result = app.test_cli_runner().invoke(args=["dbhealth", "check"])
    return result.exit_code, result.output


def check_json(app) -> tuple[int, dict]:
    result = app.test_cli_runner().invoke(args=["dbhealth", "check", "--json"])
    return result.exit_code, json.loads(result.output)


def retries(app) -> float:
    """dbhealth_db_retries_total{outcome="retried"} as /metrics shows it."""
    for line in app.test_client().get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith('dbhealth_db_retries_total{outcome="retried"}'):
            return float(line.split()[-1])
    return 0.0


# The statement that shows, from the console's own connection, what the server sees.
OWN_TLS = {
    "postgresql": "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    "mariadb": "SHOW SESSION STATUS LIKE 'Ssl_version'",
}


def test_verify_full_encrypts_every_connection(make_app, tls_server, certs, kind):
    """As a user the server admits over TLS only: pool, probe, side reads, console, a bind, the CLI."""
    url = tls_server.url()
    app = make_app(DATABASE_URL=url, DB_BIND_REPORTS=url, DB_SSLMODE="verify-full", DB_SSLROOTCERT=certs.ca)

    code, health = check_json(app)
    assert code == 0, health
    for name in ("primary", "reports"):
        tls = health["components"][name]["tls"]
        assert tls["in_use"] is True and tls["version"].startswith("TLSv1"), health
        assert tls["cipher"], health

    runner = app.test_cli_runner()
    user = f"ops-{uuid.uuid4().hex[:8]}"
    created = runner.invoke(args=["auth", "create-user", user, "--role", "admin", "--password-stdin"], input="a long password\n")
    assert created.exit_code == 0, created.output
    client = app.test_client()
    login = client.post("/api/auth/login", json={"username": user, "password": "a long password"})
    assert login.status_code == 200, login.json
    headers = {"Authorization": f"Bearer {login.json['data']['access_token']}"}

    info = client.get("/api/database/info", headers=headers).json["data"]
    assert info["tls"] == {"mode": "verify-full", "root_cert": certs.ca}
    assert info["binds"]["reports"]["tls"] == {"mode": "verify-full", "root_cert": certs.ca}

    status = client.get("/api/database/status", headers=headers).json["data"]
    assert status["server"]["primary"]["tls"]["in_use"] is True
    assert "error" not in status["server"]["primary"], status["server"]  # side reads connected too
    assert status["health"]["components"]["reports"]["tls"]["in_use"] is True

    console = client.post("/api/database/test", headers=headers, json={"query": OWN_TLS[kind]})
    assert console.status_code == 200, console.json
    row = console.json["data"]["rows"][0]
    assert row[0] in (True, "Ssl_version") and row[1].startswith("TLSv1"), row


def test_a_wrong_certificate_authority_is_misconfigured(make_app, tls_server, certs):
    app = make_app(migrate=False, DATABASE_URL=tls_server.url(), DB_SSLMODE="verify-full", DB_SSLROOTCERT=certs.other_ca)
    code, output = check(app)
    assert code == 3, output
    assert "certificate verify failed" in output
    response = app.test_client().get("/api/database/health", headers=bearer(app))
    assert response.status_code == 503 and response.json["code"] == "db_misconfigured", response.json
    assert "certificate verify failed" in response.json["data"]["components"]["primary"]["message"]
    # The service's own database work says so too, and is not retried.
    retried = retries(app)
    login = app.test_client().post("/api/auth/login", json={"username": "nobody", "password": "whatever"})
    assert login.status_code == 503 and login.json["code"] == "db_misconfigured", login.json
    assert "retry_count" not in login.json and retries(app) == retried


def test_a_certificate_for_another_host_name_is_misconfigured(make_app, tls_server, certs):
    """The certificate names localhost only; 127.0.0.1 is the same server under another name."""
    app = make_app(migrate=False, DATABASE_URL=tls_server.url(host="127.0.0.1"), DB_SSLMODE="verify-full",
                   DB_SSLROOTCERT=certs.ca)
    code, output = check(app)
    assert code == 3, output
    assert "host name mismatch" in output and "127.0.0.1" in output
    # verify-ca checks the chain, not the name: the same connection passes.
    app = make_app(DATABASE_URL=tls_server.url(host="127.0.0.1"), DB_SSLMODE="verify-ca", DB_SSLROOTCERT=certs.ca)
    code, health = check_json(app)
    assert code == 0 and health["components"]["primary"]["tls"]["in_use"] is True, health


def test_require_against_a_server_without_tls_is_misconfigured(make_app, plain_server):
    app = make_app(migrate=False, DATABASE_URL=plain_server.url(), DB_SSLMODE="require")
    code, output = check(app)
    assert code == 3, output
    assert "server does not support SSL" in output


def test_prefer_falls_back_to_plain_and_disable_never_encrypts(make_app, plain_server, tls_server):
    """prefer: TLS where the server offers it, plain where it does not; disable: plain even where offered."""
    app = make_app(DATABASE_URL=plain_server.url())  # DB_SSLMODE defaults to prefer
    code, health = check_json(app)
    assert code == 0, health
    assert health["components"]["primary"]["tls"] == {"in_use": False, "version": None, "cipher": None}

    plain_user = "postgres" if tls_server.kind == "postgresql" else "plain"
    app = make_app(DATABASE_URL=tls_server.url(user=plain_user))
    code, health = check_json(app)
    assert code == 0 and health["components"]["primary"]["tls"]["in_use"] is True, health

    app = make_app(DATABASE_URL=tls_server.url(user=plain_user), DB_SSLMODE="disable")
    code, health = check_json(app)
    assert code == 0, health
    assert health["components"]["primary"]["tls"]["in_use"] is False
    info = app.test_client().get("/api/database/info", headers=bearer(app)).json["data"]
    assert info["tls"] == {"mode": "disable", "root_cert": None}


def test_a_urls_own_parameters_win(make_app, tls_server, certs, kind):
    """The settings point at the wrong CA; the URL's own TLS parameters decide for that URL."""
    if kind == "postgresql":
        url, expected = tls_server.url() + f"?sslrootcert={certs.ca}", {"mode": "verify-full", "root_cert": certs.ca}
    else:
        url, expected = tls_server.url() + f"?ssl_ca={certs.ca}", {"mode": "verify-full", "root_cert": certs.ca}
    app = make_app(DATABASE_URL=url, DB_SSLMODE="verify-full", DB_SSLROOTCERT=certs.other_ca)
    code, health = check_json(app)
    assert code == 0 and health["components"]["primary"]["tls"]["in_use"] is True, health
    assert app.test_client().get("/api/database/info", headers=bearer(app)).json["data"]["tls"] == expected


def test_production_warns_about_plain_connections_across_a_network(make_app, plain_postgresql):
    external = external_address()
    if external is None:
        message = "this machine has no network address besides loopback"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    production = {"APP_ENV": "production", "JWT_SECRET_KEY": "k" * 40}
    app = make_app(DATABASE_URL=plain_postgresql.url(host=external), **production)
    code, health = check_json(app)
    assert code == 1, health
    primary = health["components"]["primary"]
    assert primary["status"] == "degraded" and primary["tls"]["in_use"] is False
    assert any("not encrypted" in warning for warning in primary["warnings"]), primary
    # The same server over loopback: nothing crosses a network, nothing to warn about.
    app = make_app(DATABASE_URL=plain_postgresql.url(host="127.0.0.1"), **production)
    code, health = check_json(app)
    assert code == 0, health


def test_the_pooler_console_honours_the_same_settings(make_app, plain_postgresql, certs):
    """pgbouncer's admin console (the pooler component) is reached with the same TLS as the databases."""
    with readable_by("postgres", certs.cert, certs.key) as folder, PgBouncer(plain_postgresql.port, settings=(
        f"client_tls_sslmode = require\nclient_tls_cert_file = {folder}/server.crt\n"
        f"client_tls_key_file = {folder}/server.key\n"
    )) as with_tls, PgBouncer(plain_postgresql.port) as without_tls:
        app = make_app(DB_PGBOUNCER_ADMIN_URL=with_tls.admin_url().replace("127.0.0.1", "localhost"),
                       DB_SSLMODE="verify-full", DB_SSLROOTCERT=certs.ca)
        code, health = check_json(app)
        assert health["components"]["pooler"]["status"] == "healthy", health["components"]["pooler"]
        app = make_app(DB_PGBOUNCER_ADMIN_URL=with_tls.admin_url(), DB_SSLMODE="verify-full", DB_SSLROOTCERT=certs.other_ca)
        code, health = check_json(app)
        pooler = health["components"]["pooler"]
        assert pooler["status"] == "unhealthy" and "certificate verify failed" in pooler["error"], pooler
        app = make_app(DB_PGBOUNCER_ADMIN_URL=without_tls.admin_url(), DB_SSLMODE="require")
        code, health = check_json(app)
        pooler = health["components"]["pooler"]
        assert pooler["status"] == "unhealthy" and "server does not support SSL" in pooler["error"], pooler


def test_sqlite_has_no_tls(make_app):
    app = make_app(DB_SSLMODE="verify-full")
    code, health = check_json(app)
    assert code == 0 and health["components"]["primary"]["tls"] is None
    assert app.test_client().get("/api/database/info", headers=bearer(app)).json["data"]["tls"] is None



@pytest.mark.parametrize(
    "settings, line",
    [
        ({"DB_SSLMODE": "on"}, "DB_SSLMODE must be one of disable, prefer, require, verify-ca, verify-full, got 'on'"),
        ({"DB_SSLROOTCERT": "/nonexistent/ca.pem"}, "DB_SSLROOTCERT names a file that does not exist: '/nonexistent/ca.pem'"),
        ({"DB_SSLCERT": "{folder}"}, "DB_SSLCERT names a folder, not a file: '{folder}'"),
        ({"DB_SSLROOTCERT": "{garbage}"}, "DB_SSLROOTCERT holds no PEM certificate: '{garbage}'"),
        ({"DB_SSLROOTCERT": "system"}, "DB_SSLROOTCERT=system needs DB_SSLMODE=verify-full, got 'prefer'"),
        ({"DB_SSLKEY": "{key}"}, "DB_SSLKEY is set without DB_SSLCERT (a client key needs its certificate)"),
        ({"DB_SSLCERT": "{cert}", "DB_SSLKEY": "{ca_key}"}, "DB_SSLCERT and DB_SSLKEY do not hold a certificate and its unencrypted private key"),
        ({"DATABASE_URL": "postgresql://u@db.internal/app?sslrootcert=/nonexistent/ca.pem"},
         "DATABASE_URL: sslrootcert names a file that does not exist: '/nonexistent/ca.pem'"),
        ({"DB_BIND_REPORTS": "mariadb://u@db.internal/app?ssl_ca=/nonexistent/ca.pem"},
         "DB_BIND_REPORTS: ssl_ca names a file that does not exist: '/nonexistent/ca.pem'"),
    ],
)
def test_bad_tls_settings_stop_start_up_with_one_line(certs, tmp_path, capsys, settings, line):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    names = {"folder": str(tmp_path), "garbage": str(garbage), "key": certs.key, "cert": certs.cert,
             "ca_key": str(certs.folder / "other-ca.key")}
    settings = {name: value.format(**names) for name, value in settings.items()}
    with pytest.raises(SystemExit) as info:
        create_app({"APP_ENV": "testing", "INSTANCE_PATH": str(tmp_path / "instance"), **settings})
    assert info.value.code == 3
    error = capsys.readouterr().err
    assert error.startswith("error: " + line.format(**names)) and error.count("\n") == 1, error


def test_a_missing_certificate_stops_the_command_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "dbhealth", "check"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "INSTANCE_PATH": str(tmp_path), "DB_SSLROOTCERT": "/nonexistent/ca.pem"},
    )
    assert result.returncode == 3
    assert result.stderr == "error: DB_SSLROOTCERT names a file that does not exist: '/nonexistent/ca.pem'\n"


@pytest.mark.parametrize(
    "url, local",
    [
        ("postgresql://u@127.0.0.1/app", True),
        ("postgresql://u@localhost/app", True),
        ("postgresql://u@[::1]:5432/app", True),
        ("postgresql://u@/app?host=/var/run/postgresql", True),
        ("mariadb://u@/app?unix_socket=/run/mysqld/mysqld.sock", True),
        ("postgresql://u@db.internal/app", False),
        ("postgresql://u@10.0.0.5/app", False),
        ("postgresql://u@/app?host=127.0.0.1:5432,10.0.0.5:5432", False),
    ],
)
def test_what_counts_as_local(url, local):
    assert is_local(sa.make_url(url)) is local
