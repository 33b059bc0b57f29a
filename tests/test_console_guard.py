"""What keeps the console from writing when the checker is wrong: the role, the transaction, the file."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from backend.console.runner import open_session
from tests.conftest import admin_engine, bearer, create_database, drop_roles, engine_for, execute
from tests.console_support import run
from tests.faults import ROOT, Proxy

SECRET = "console-guard-tests-secret-key-0123456789"


@pytest.fixture
def readonly_role():
    """A database and a login role on a shared server; ``grant`` gives it privileges; returns its URL."""
    made = []

    def make(kind: str, *grants: str) -> tuple[str, str]:
        url, drop = create_database(kind)
        name = sa.make_url(url).database
        role = f"ro_{name.rsplit('_', 1)[1]}"
        made.append((kind, role, drop))
        if kind == "postgresql":
            execute(admin_engine(kind), f"CREATE ROLE {role} LOGIN", f"REVOKE TEMPORARY ON DATABASE {name} FROM PUBLIC")
        else:
            execute(admin_engine(kind), f"CREATE USER '{role}'@'%%'", f"GRANT SELECT ON {name}.* TO '{role}'@'%%'")
        grantee = role if kind == "postgresql" else f"'{role}'@'%%'"
        execute(engine_for(url, isolation_level="AUTOCOMMIT"), "CREATE TABLE canary (id INTEGER PRIMARY KEY)",
                *(grant.format(role=grantee, db=name) for grant in grants))
        user = sa.make_url(url).username
        return url, url.replace(f"{user}@", f"{role}@")

    yield make
    for kind, role, drop in made:
        drop()
        drop_roles(kind, role, f"{role}_w")  # the role a grant above may have made for it


def flask_check(env: dict[str, str]) -> subprocess.CompletedProcess:
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DB_HEALTH_CHECK_INTERVAL": "0", **env}
    return subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "dbhealth", "check"], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("kind, grant, privilege", [
    ("postgresql", "GRANT INSERT ON canary TO {role}", "INSERT on table canary"),
    ("postgresql", "GRANT UPDATE (id) ON canary TO {role}", "UPDATE on table canary"),
    ("postgresql", "GRANT pg_signal_backend TO {role}", "pg_signal_backend"),
    ("postgresql", "GRANT CREATE ON DATABASE {db} TO {role}", "CREATE on the database"),
    # A role it may SET ROLE to counts, inherited or not.
    ("postgresql", "CREATE ROLE {role}_w NOLOGIN; GRANT INSERT ON canary TO {role}_w; "
                   "ALTER ROLE {role} NOINHERIT; GRANT {role}_w TO {role}", "INSERT on table canary"),
    ("mariadb", "GRANT INSERT ON {db}.canary TO {role}", "INSERT on"),
])
def test_a_readonly_role_that_can_write_stops_start_up(readonly_role, tmp_path, kind, grant, privilege):
    url, readonly = readonly_role(kind, grant)
    env = {"DATABASE_URL": url, "DATABASE_READONLY_URL": readonly, "INSTANCE_PATH": str(tmp_path)}
    result = flask_check(env)
    assert result.returncode == 3, result.stderr
    lines = [line for line in result.stderr.splitlines() if "DATABASE_READONLY_URL" in line]
    assert len(lines) == 1 and privilege in lines[0] and "Traceback" not in result.stderr, result.stderr
    gunicorn = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", "127.0.0.1:0", "--workers", "1"],
        cwd=ROOT, env={"PATH": os.environ["PATH"], "JWT_SECRET_KEY": SECRET, **env},
        capture_output=True, text=True, timeout=60,
    )
    assert gunicorn.returncode != 0 and privilege in gunicorn.stderr


def test_a_superuser_is_not_a_readonly_role(make_app, tmp_path):
    url, drop = create_database("postgresql")
    try:
        result = flask_check({"DATABASE_URL": url, "DATABASE_READONLY_URL": url, "INSTANCE_PATH": str(tmp_path)})
        assert result.returncode == 3 and "SUPERUSER" in result.stderr, result.stderr
    finally:
        drop()


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_a_readonly_role_runs_the_console_and_info_says_so(make_app, readonly_role, kind):
    url, readonly = readonly_role(kind, *(["GRANT SELECT ON canary TO {role}"] if kind == "postgresql" else []))
    app = make_app(DATABASE_URL=url, DATABASE_READONLY_URL=readonly)
    client, headers = app.test_client(), bearer(app, "admin")
    console = client.get("/api/database/info", headers=headers).json["data"]["console"]
    assert console == {"guard": "readonly_role", "role": sa.make_url(readonly).username, "verified": True}
    assert run(client, headers, "SELECT count(*) FROM canary").json["data"]["rows"] == [[0]]


def test_an_unverified_role_is_checked_at_first_use(make_app, readonly_role):
    """The database did not answer at start-up: the first free-form query verifies the role."""
    url, readonly = readonly_role("postgresql", "GRANT INSERT ON canary TO {role}")
    proxy = Proxy(5432)
    try:
        proxy.set_mode("reset")
        app = make_app(DATABASE_URL=url, DATABASE_READONLY_URL=readonly.replace(":5432/", f":{proxy.port}/"))
        client, headers = app.test_client(), bearer(app, "admin")
        assert client.get("/api/database/info", headers=headers).json["data"]["console"]["verified"] is False
        assert run(client, headers, "SELECT 1").status_code == 503
        proxy.set_mode("pass")
        refused = run(client, headers, "SELECT 1")
        assert refused.status_code == 403 and refused.json["code"] == "console_needs_readonly_role"
        assert "INSERT on table canary" in refused.json["error"]
        assert client.post("/api/database/test", headers=headers).status_code == 200  # no query: always
    finally:
        proxy.close()


def test_production_needs_a_readonly_role_for_free_form_queries(make_app):
    url, drop = create_database("postgresql")
    try:
        common = {"DATABASE_URL": url, "APP_ENV": "production", "JWT_SECRET_KEY": SECRET}
        app = make_app(**common)
        client, headers = app.test_client(), bearer(app, "admin")
        assert client.get("/api/database/info", headers=headers).json["data"]["console"]["guard"] == "disabled"
        refused = run(client, headers, "SELECT 1")
        assert refused.status_code == 403 and refused.json["code"] == "console_needs_readonly_role"
        assert client.post("/api/database/test", headers=headers).json["data"]["rows"] == [[1]]
        allowed = make_app(**common, DB_CONSOLE_ALLOW_PRIMARY_ROLE="true")
        client, headers = allowed.test_client(), bearer(allowed, "admin")
        assert client.get("/api/database/info", headers=headers).json["data"]["console"] == {
            "guard": "read_only_transaction", "role": "postgres"}
        assert run(client, headers, "SELECT 1").status_code == 200
        events = client.get("/api/database/audit?action=test", headers=headers).json["data"]["events"]
        assert [e["outcome"] for e in events][-3:] == ["ok", "ok", "console_needs_readonly_role"]
    finally:
        drop()


def test_sqlite_console_opens_the_file_read_only(sqlite_app):
    """The file layer alone: even a statement no check stopped cannot write through it."""
    client, headers = sqlite_app.test_client(), bearer(sqlite_app, "admin")
    assert client.get("/api/database/info", headers=headers).json["data"]["console"] == {
        "guard": "read_only_file", "role": None}
    session = open_session(sa.make_url(sqlite_app.config["SQLALCHEMY_DATABASE_URI"]), 1.0, 1024)
    try:
        with pytest.raises(Exception, match="readonly|read-only|query_only"):
            session.connection.execute("CREATE TABLE smuggled (a)")
        with pytest.raises(Exception, match="too big"):
            session.connection.execute("SELECT randomblob(2048)").fetchall()
    finally:
        session.connection.close()
    started = time.monotonic()
    assert run(client, headers, "SELECT count(*) FROM users").status_code == 200
    assert time.monotonic() - started < 2


def _recipe(kind: str) -> list[str]:
    """The least-privilege recipe of the README, for this kind of server."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("-- PostgreSQL (as the owner of the tables)")[1].split("Grant new tables")[0]
    postgres, mysql = block.split("-- MariaDB / MySQL")
    lines = [line.split("--")[0].strip() for line in (postgres if kind == "postgresql" else mysql).splitlines()]
    return [line.rstrip(";") for line in lines if line and "app_user" not in line]


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_the_readme_recipe_passes_and_hides_password_hashes(make_app, kind):
    url, drop = create_database(kind)
    name = sa.make_url(url).database
    role = f"ro_{name.rsplit('_', 1)[1]}"
    try:
        make_app(DATABASE_URL=url)  # the tables
        statements = []
        for statement in _recipe(kind):
            statement = statement.replace("dbhealth_ro", role).replace("'...'", "'secret'")
            statement = statement.replace(" app ", f" {name} ").replace(" app.", f" {name}.")
            statements.append(statement.replace("%", "%%") if kind == "mariadb" else statement)
        execute(engine_for(url, isolation_level="AUTOCOMMIT"), *statements)
        readonly = sa.make_url(url).set(username=role, password="secret").render_as_string(hide_password=False)
        app = make_app(DATABASE_URL=url, DATABASE_READONLY_URL=readonly)
        client, headers = app.test_client(), bearer(app, "admin")
        assert client.get("/api/database/info", headers=headers).json["data"]["console"]["verified"] is True
        assert run(client, headers, "SELECT username, role FROM users").status_code == 200
        denied = run(client, headers, "SELECT password_hash FROM users")
        assert denied.status_code == 400 and denied.json["code"] == "query_error", denied.json
    finally:
        drop()
        drop_roles(kind, role)
