"""Flask-Migrate revisions upgrade, downgrade and match the models on every dialect."""
from __future__ import annotations

import sqlalchemy as sa

from backend.state import state

TABLES = {
    "users", "revoked_tokens", "audit_events", "alembic_version",
    "reconnect_generations", "reconnect_applied", "health_transitions",
}


def tables(app):
    from backend.extensions import db

    with app.app_context():
        return set(sa.inspect(db.engine).get_table_names())


def test_upgrade_check_downgrade_upgrade(make_app, database_url):
    app = make_app(migrate=False, DATABASE_URL=database_url)
    runner = app.test_cli_runner()
    assert runner.invoke(args=["db", "upgrade"]).exit_code == 0
    assert TABLES <= tables(app)
    check = runner.invoke(args=["db", "check"])
    assert check.exit_code == 0, check.output
    assert runner.invoke(args=["db", "current"]).exit_code == 0
    with app.app_context():
        migrations = state(app).monitor.migration_state(force=True)
    assert migrations["up_to_date"] is True and migrations["current"] == migrations["head"]
    assert runner.invoke(args=["db", "downgrade", "base"]).exit_code == 0
    assert tables(app) & (TABLES - {"alembic_version"}) == set()
    assert runner.invoke(args=["db", "upgrade"]).exit_code == 0
    assert TABLES <= tables(app)
    check = runner.invoke(args=["db", "check"])  # the indexes are back too: a downgrade drops them with their tables
    assert check.exit_code == 0, check.output
