"""Fixtures in the Flask tutorial's style: app, client, runner, and tokens by role.

Database tests run on SQLite, PostgreSQL and MariaDB through the parametrized
``database_url`` fixture. Each server test gets a database of its own, created
on the shared server and dropped afterwards. A server that cannot be reached is
skipped with a reason naming it, except under CI=true, where it is a failure.
"""
from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa
from flask_migrate import upgrade

from backend import create_app
from backend.auth.tokens import issue_token
from backend.config import BIND_PREFIX, SETTINGS
from backend.db.urls import mask_url
from backend.extensions import db
from backend.state import state
from tests.contract import ContractClient
from tests.faults import PrivateCluster, Proxy

SERVERS = {
    "postgresql": os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    "mariadb": os.environ.get("TEST_MARIADB_URL", "mariadb://root@127.0.0.1:3306/test"),
}
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Tests see only the settings they pass, never the developer's shell."""
    for name in list(os.environ):
        if name in SETTINGS or name.startswith(BIND_PREFIX) or name in ("INSTANCE_PATH", "PROMETHEUS_MULTIPROC_DIR"):
            monkeypatch.delenv(name)


def engine_for(url: str, **options) -> sa.Engine:
    """An engine without a pool on a test URL, with the drivers the service uses (psycopg2, pymysql)."""
    url = url.replace("postgresql://", "postgresql+psycopg2://").replace("mariadb://", "mariadb+pymysql://")
    return sa.create_engine(url, poolclass=sa.pool.NullPool, **options)


def execute(engine: sa.Engine, *statements: str) -> None:
    """Run statements as given (set-up and clean-up behind the service's back), then close the engine."""
    try:
        with engine.connect() as connection:
            for statement in statements:
                connection.exec_driver_sql(statement)
    finally:
        engine.dispose()


def admin_engine(kind: str) -> sa.Engine:
    """An engine on the shared server, or skip (fail under CI) naming the server."""
    url = SERVERS[kind]
    engine = engine_for(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        engine.connect().close()
    except sa.exc.OperationalError as error:
        reason = f"{kind} is not reachable at {mask_url(url)}: {str(error.orig).strip().splitlines()[0]}"
        if IN_CI:
            pytest.fail(f"{reason} (CI=true requires every database)")
        pytest.skip(reason)
    return engine


def create_database(kind: str) -> tuple[str, callable]:
    """A fresh, uniquely named database on a shared server; returns (url, drop)."""
    engine = admin_engine(kind)
    name = f"dbhealth_{uuid.uuid4().hex[:12]}"
    execute(engine, f"CREATE DATABASE {name}")
    url = sa.make_url(SERVERS[kind]).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        execute(engine, f"DROP DATABASE IF EXISTS {name}" + (" WITH (FORCE)" if kind == "postgresql" else ""))

    return url, drop


def drop_roles(kind: str, *roles: str) -> None:
    """Drop login roles a test made on a shared server, if they exist."""
    if kind == "postgresql":
        execute(admin_engine(kind), f"DROP ROLE IF EXISTS {', '.join(roles)}")
    else:
        execute(admin_engine(kind), "DROP USER IF EXISTS " + ", ".join(f"'{role}'@'%%'" for role in roles))


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/app.db"
        return
    url, drop = create_database(request.param)
    yield url
    drop()


@pytest.fixture
def make_app(tmp_path):
    """Build apps with settings of the test's own; engines are closed afterwards."""
    apps = []

    def make(migrate: bool = True, **settings):
        config = {
            "APP_ENV": "testing",
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "DATABASE_URL": f"sqlite:///{tmp_path}/app.db",
            "DB_HEALTH_CHECK_INTERVAL": 0,
            "DB_RETRY_BASE_DELAY": 0,
            "TESTING": True,
            **settings,
        }
        app = create_app(config)
        app.test_client_class = ContractClient
        apps.append(app)
        if migrate:
            with app.app_context():
                upgrade()
        return app

    yield make
    for app in apps:
        state(app).monitor.stop()
        state(app).revoked.stop()
        with app.app_context():
            db.session.remove()
            state(app).dispose_connections()


@pytest.fixture
def app(make_app, database_url):
    return make_app(DATABASE_URL=database_url)


@pytest.fixture
def sqlite_app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def bearer(app, role: str = "viewer", identity: str | None = None, expires_in: int | None = None) -> dict[str, str]:
    with app.app_context():
        token, _ = issue_token(identity or f"test-{role}", role, expires_in)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def viewer(app):
    return bearer(app, "viewer")


@pytest.fixture
def admin(app):
    return bearer(app, "admin")


@pytest.fixture(scope="module")
def cluster():
    """A PostgreSQL cluster of the tests' own, for faults (a module may define its own with other settings)."""
    with PrivateCluster() as cluster:
        yield cluster


@pytest.fixture
def proxy(cluster):
    """A fault proxy in front of ``cluster``."""
    with Proxy(cluster.port) as proxy:
        yield proxy
