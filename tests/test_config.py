"""Settings: parsed once, refused with one line naming the variable."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from backend import create_app
from backend.config import ConfigError, load_settings
from backend.db.urls import hosts_of, mask_url, parse_url

ROOT = Path(__file__).resolve().parent.parent


def test_defaults():
    settings = load_settings({})
    assert settings["APP_ENV"] == "development"
    assert settings["DB_POOL_SIZE"] == 10
    assert settings["DB_MAX_OVERFLOW"] == 20
    assert settings["DB_HEALTH_TIMEOUT"] == 2.0
    assert settings["DB_RETRY_ATTEMPTS"] == 3
    assert settings["LOG_FORMAT"] == "text"
    assert len(settings["JWT_SECRET_KEY"]) >= 32
    assert settings["DB_HISTORY_RETENTION_DAYS"] == 30
    assert settings["INSTANCE_ID"] == load_settings({})["INSTANCE_ID"]  # chosen once per process
    assert settings["INSTANCE_ID"].rsplit("-", 1)[1].isalnum() and len(settings["INSTANCE_ID"]) <= 64
    assert load_settings({"INSTANCE_ID": "web-1"})["INSTANCE_ID"] == "web-1"
    assert (settings["DB_ALERT_WEBHOOK_URLS"], settings["DB_ALERT_FAILURES"], settings["DB_ALERT_RECOVERIES"]) == ((), 2, 2)
    assert settings["DB_ALERT_MIN_INTERVAL_S"] == 300
    urls = load_settings({"DB_ALERT_WEBHOOK_URLS": " https://hooks.slack.com/services/T/B/x , http://alerts:9093/hook "})
    assert urls["DB_ALERT_WEBHOOK_URLS"] == ("https://hooks.slack.com/services/T/B/x", "http://alerts:9093/hook")


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("DB_POOL_SIZE", "abc", "DB_POOL_SIZE must be a positive integer, got 'abc'"),
        ("DB_POOL_SIZE", "0", "DB_POOL_SIZE must be a positive integer, got '0'"),
        ("DB_MAX_OVERFLOW", "-1", "DB_MAX_OVERFLOW must be a non-negative integer, got '-1'"),
        ("DB_CONNECT_TIMEOUT", "-5", "DB_CONNECT_TIMEOUT must be a positive number of seconds, got '-5'"),
        ("DB_HEALTH_TIMEOUT", "nan", "DB_HEALTH_TIMEOUT must be a positive number of seconds, got 'nan'"),
        ("DB_HEALTH_CACHE_TTL", "-1", "DB_HEALTH_CACHE_TTL must be a non-negative number of seconds, got '-1'"),
        ("DB_ECHO", "maybe", "DB_ECHO must be true or false, got 'maybe'"),
        ("APP_ENV", "staging", "APP_ENV must be one of development, testing, production, got 'staging'"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT must be one of text, json, got 'xml'"),
        ("JWT_SECRET_KEY", "short", "JWT_SECRET_KEY must be at least 32 characters, got 5"),
        ("INSTANCE_ID", "web 1", "INSTANCE_ID must be 1-64 characters of A-Z a-z 0-9 . _ -, got 'web 1'"),
        ("INSTANCE_ID", "x" * 65, f"INSTANCE_ID must be 1-64 characters of A-Z a-z 0-9 . _ -, got '{'x' * 65}'"),
        ("DB_HISTORY_RETENTION_DAYS", "0", "DB_HISTORY_RETENTION_DAYS must be a positive integer, got '0'"),
        ("DB_ALERT_FAILURES", "0", "DB_ALERT_FAILURES must be a positive integer, got '0'"),
        ("DB_ALERT_RECOVERIES", "x", "DB_ALERT_RECOVERIES must be a positive integer, got 'x'"),
        ("DB_ALERT_MIN_INTERVAL_S", "-1", "DB_ALERT_MIN_INTERVAL_S must be a non-negative number of seconds, got '-1'"),
        # the path of a webhook URL is often its secret: never repeated
        ("DB_ALERT_WEBHOOK_URLS", "hooks.slack.com/services/T/B/secret",
         "DB_ALERT_WEBHOOK_URLS must be comma-separated http(s) URLs, got one without http(s)://host"),
        ("DB_ALERT_WEBHOOK_URLS", "ftp://files.example/secret",
         "DB_ALERT_WEBHOOK_URLS must be comma-separated http(s) URLs, got 'ftp://files.example'"),
        ("DB_ALERT_WEBHOOK_URLS", "https://[::1/services/T/B/secret",
         "DB_ALERT_WEBHOOK_URLS must be comma-separated http(s) URLs, got one that cannot be parsed"),
        ("AUTH_LOGIN_LIMIT", "lots", "AUTH_LOGIN_LIMIT must be one rate such as 10/minute or 5 per 2 hours, got 'lots'"),
        ("AUTH_LOGIN_LIMIT", "0/minute", "AUTH_LOGIN_LIMIT must be one rate such as 10/minute or 5 per 2 hours, got '0/minute'"),
        ("AUTH_LOGIN_LIMIT", "5/minute;1/second", "AUTH_LOGIN_LIMIT must be one rate such as 10/minute or 5 per 2 hours, got '5/minute;1/second'"),
        ("TRUSTED_PROXIES", "-1", "TRUSTED_PROXIES must be a non-negative integer, got '-1'"),
        ("TRUSTED_PROXIES", "two", "TRUSTED_PROXIES must be a non-negative integer, got 'two'"),
        ("DB_READYZ_CHECKS_DATABASE", "sometimes", "DB_READYZ_CHECKS_DATABASE must be true or false, got 'sometimes'"),
        ("DB_PGBOUNCER_ADMIN_URL", "mysql://u@h/pgbouncer",
         "DB_PGBOUNCER_ADMIN_URL must be postgresql://user@host:port/pgbouncer, got 'mysql://u@h/pgbouncer'"),
        ("DB_PGBOUNCER_ADMIN_URL", "postgresql://u:pw@h:6432/app",
         "DB_PGBOUNCER_ADMIN_URL must name pgbouncer's admin database (.../pgbouncer), got 'postgresql://u:***@h:6432/app'"),
        ("DB_PGBOUNCER_ADMIN_URL", "not a url",
         "DB_PGBOUNCER_ADMIN_URL is not a valid URL (postgresql://user@host:6432/pgbouncer)"),
    ],
)
def test_bad_values_name_the_variable(name, value, message):
    with pytest.raises(ConfigError) as info:
        load_settings({name: value})
    assert str(info.value) == message


def test_production_requires_database_url_and_secret():
    with pytest.raises(ConfigError, match="DATABASE_URL is required when APP_ENV=production"):
        load_settings({"APP_ENV": "production", "JWT_SECRET_KEY": "x" * 32})
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY is required"):
        load_settings({"APP_ENV": "production", "DATABASE_URL": "postgresql://u@h/db"})
    settings = load_settings({"APP_ENV": "production", "DATABASE_URL": "postgresql://u@h/db", "JWT_SECRET_KEY": "k" * 32})
    assert settings["JWT_SECRET_KEY"] == "k" * 32


@pytest.mark.parametrize(
    "raw, drivername",
    [
        ("postgresql://u:p@h/db", "postgresql+psycopg2"),
        ("postgres://u:p@h/db", "postgresql+psycopg2"),
        ("mysql://u:p@h/db", "mysql+pymysql"),
        ("mariadb://u:p@h/db", "mariadb+pymysql"),
        ("postgresql+psycopg2://u:p@h/db", "postgresql+psycopg2"),
        ("mysql+pymysql://u:p@h/db", "mysql+pymysql"),
    ],
)
def test_schemes_pick_our_drivers(raw, drivername):
    assert parse_url(raw, "DATABASE_URL").drivername == drivername


@pytest.mark.parametrize(
    "raw, message",
    [
        ("not a url", "DATABASE_URL is not a valid database URL"),
        ("oracle://u:p@h/db", "DATABASE_URL uses unsupported database 'oracle'"),
        ("postgresql:///db", "DATABASE_URL has no host"),
        ("mysql+mysqldb://u:p@h/db", "DATABASE_URL needs the mysqldb driver, which is not installed: pip install mysqlclient"),
        ("postgresql://u@/db?host=a&host=b&port=1&port=2&port=3", "DATABASE_URL lists 2 hosts but 3 ports"),
        ("postgresql://u@a:1,b:x/db", "DATABASE_URL has an invalid port 'x'"),
        ("postgresql://u@a,,b/db", "DATABASE_URL has an empty host in its host list"),
        ("mysql://u@a,b/db", "DATABASE_URL: several hosts in one URL work for PostgreSQL only"),
    ],
)
def test_bad_urls(raw, message):
    with pytest.raises(ConfigError) as info:
        parse_url(raw, "DATABASE_URL")
    assert str(info.value).startswith(message)
    assert "p@" not in str(info.value)


def test_mask_url_hides_the_password():
    assert mask_url("postgresql://app_user:s3cret@db.internal:5432/app") == "postgresql://app_user:***@db.internal:5432/app"
    assert mask_url("garbage://user:s3cret@host/x y z") == "garbage://user:***@host/x y z"
    assert "s3cret" not in mask_url("::://user:s3cret@host")


def test_relative_sqlite_paths_are_relative_to_the_project():
    url = parse_url("sqlite:///instance/app.db", "DATABASE_URL")
    assert url.database == str(ROOT / "instance" / "app.db")


def test_create_app_exits_3_with_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        create_app({"DB_POOL_SIZE": "abc"})
    assert info.value.code == 3
    assert capsys.readouterr().err == "error: DB_POOL_SIZE must be a positive integer, got 'abc'\n"


def test_unwritable_instance_folder_is_refused(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as info:
        create_app({"INSTANCE_PATH": str(blocker / "instance")})
    assert info.value.code == 3
    assert str(blocker / "instance") in capsys.readouterr().err


def test_bind_urls_are_validated(capsys):
    with pytest.raises(SystemExit):
        create_app({"APP_ENV": "testing", "DB_BIND_REPLICA": "nonsense"})
    assert "DB_BIND_REPLICA is not a valid database URL" in capsys.readouterr().err


def run_flask(*args, env=None, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,
    )


@pytest.mark.parametrize(
    "env, line",
    [
        ({"DB_POOL_SIZE": "abc"}, "error: DB_POOL_SIZE must be a positive integer, got 'abc'"),
        ({"DATABASE_URL": "oracle://u:pw@h/db"}, "error: DATABASE_URL uses unsupported database 'oracle'"),
        ({"APP_ENV": "production", "JWT_SECRET_KEY": "k" * 40}, "error: DATABASE_URL is required when APP_ENV=production"),
    ],
)
def test_the_command_line_refuses_with_one_line_and_no_traceback(tmp_path, env, line):
    result = run_flask("dbhealth", "check", env={"INSTANCE_PATH": str(tmp_path), **env})
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(line)
    assert "Traceback" not in result.stderr
    assert "pw" not in result.stderr


def test_real_environment_wins_over_development_env(tmp_path):
    env = {"INSTANCE_PATH": str(tmp_path), "DB_POOL_SIZE": "abc"}
    result = run_flask("--env-file", "development.env", "dbhealth", "check", env=env)
    assert result.returncode == 3
    assert "DB_POOL_SIZE" in result.stderr


def test_development_env_documents_every_variable():
    text = (ROOT / "development.env").read_text()
    from backend.config import SETTINGS

    for name in SETTINGS:
        assert f"{name}=" in text, name


@pytest.mark.parametrize(
    "raw",
    [
        "postgresql://app:s3cret@h1:5432,h2:5433/app?target_session_attrs=read-write",
        "postgresql://app:s3cret@/app?host=h1&host=h2&port=5432&port=5433&target_session_attrs=read-write",
        "postgresql://app:s3cret@/app?host=h1,h2&port=5432,5433&target_session_attrs=read-write",
        "postgresql://app:s3cret@/app?host=h1:5432&host=h2:5433&target_session_attrs=read-write",
    ],
)
def test_multi_host_urls_in_every_spelling(raw):
    url = parse_url(raw, "DATABASE_URL")
    assert hosts_of(url) == [("h1", 5432), ("h2", 5433)]
    assert mask_url(url) == "postgresql+psycopg2://app:***@h1:5432,h2:5433/app?target_session_attrs=read-write"
    assert mask_url(raw).startswith("postgresql://app:***@") and "s3cret" not in mask_url(raw)


def test_one_port_serves_every_host():
    assert hosts_of(parse_url("postgresql://u@/db?host=a,b&port=6000", "X")) == [("a", 6000), ("b", 6000)]
    assert hosts_of(parse_url("postgres://u@a,b/db", "X")) == [("a", 5432), ("b", 5432)]


def test_info_lists_every_host_and_masks_only_the_password(make_app):
    from tests.conftest import bearer

    app = make_app(migrate=False, DATABASE_URL="postgresql://app:s3cret@127.0.0.1:1,127.0.0.1:2/app?target_session_attrs=read-write")
    response = app.test_client().get("/api/database/info", headers=bearer(app))
    data = response.json["data"]
    assert data["hosts"] == [{"host": "127.0.0.1", "port": 1}, {"host": "127.0.0.1", "port": 2}]
    assert (data["host"], data["port"], data["user"], data["target_session_attrs"]) == ("127.0.0.1", 1, "app", "read-write")
    assert data["url"] == "postgresql+psycopg2://app:***@127.0.0.1:1,127.0.0.1:2/app?target_session_attrs=read-write"
    assert "s3cret" not in response.get_data(as_text=True)


def test_a_pgbouncer_admin_url_is_parsed():
    assert load_settings({"DB_PGBOUNCER_ADMIN_URL": "postgresql://admin@db:6432/pgbouncer"})["DB_PGBOUNCER_ADMIN_URL"].port == 6432


def test_login_limits_per_pair_and_per_address():
    settings = load_settings({"AUTH_LOGIN_LIMIT": "5/hour"})
    assert settings["AUTH_LOGIN_LIMIT"] == "5 per 1 hour"
    assert settings["AUTH_LOGIN_ADDRESS_LIMIT"] == "15 per 1 hour"
    defaults = load_settings({})
    assert (defaults["AUTH_LOGIN_LIMIT"], defaults["TRUSTED_PROXIES"], defaults["DB_READYZ_CHECKS_DATABASE"]) == (
        "10 per 1 minute", 0, False
    )


def test_an_unencoded_at_sign_in_the_password_is_refused_without_showing_it():
    with pytest.raises(ConfigError) as info:
        parse_url("postgresql://u:p@ss@h/x", "DATABASE_URL")
    message = str(info.value)
    assert message.startswith("DATABASE_URL has an '@' in its user or password: write it as %40")
    assert "p@ss" not in message and "@ss" not in message and "u:p" not in message
    assert mask_url("postgresql://u:p@ss@h/x") == "postgresql://u:***@h/x"
    assert mask_url("postgresql://u:p%40ss@h/x") == "postgresql://u:***@h/x"
    assert parse_url("postgresql://u:p%40ss@h/x", "DATABASE_URL").password == "p@ss"
