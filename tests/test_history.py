"""Health transitions: spooled in the instance folder, stored in the database, pruned after the retention."""
from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from backend.extensions import db
from backend.fleet import poller
from backend.health.transitions import record_transition
from backend.models import HealthTransition, utcnow
from backend.state import state
from tests.conftest import bearer


def history(client, app):
    return client.get("/api/database/status", headers=bearer(app)).json["data"]["monitor"]["transitions"]


def test_transitions_are_spooled_stored_and_pruned(make_app, database_url, tmp_path):
    app = make_app(DATABASE_URL=database_url, DB_HISTORY_RETENTION_DAYS=2, INSTANCE_ID="web-1")
    client = app.test_client()
    client.get("/livez")  # starts this process's poller ...
    state(app).monitor.stop()  # ... stopped, so this test takes its steps itself
    with app.app_context():
        record_transition("primary", "healthy", "healthy", "primary changed from h1:5432 to h2:5432")
    shown = history(client, app)
    assert [(t["instance"], t["message"], t["stored"]) for t in shown] == [
        ("web-1", "primary changed from h1:5432 to h2:5432", False)
    ]
    with app.app_context():
        db.session.add(HealthTransition(at=utcnow() - timedelta(days=3), instance="web-0", component="primary",
                                        from_status="healthy", to_status="unhealthy", message="long ago"))
        db.session.commit()
        poller.step(app)  # what every worker's poller does once a second: store what was spooled
    other = make_app(migrate=False, DATABASE_URL=database_url, DB_HISTORY_RETENTION_DAYS=2,
                     INSTANCE_PATH=str(tmp_path / "other"))
    with other.app_context():
        poller.step(other)  # the probing worker of an instance prunes when it starts, then hourly
        remaining = db.session.scalars(sa.select(HealthTransition.message)).all()
    assert remaining == ["primary changed from h1:5432 to h2:5432"]
    shown = history(client, app)
    assert [(t["instance"], t["component"], t["from"], t["to"], t["stored"]) for t in shown] == [
        ("web-1", "primary", "healthy", "healthy", True)
    ]
    assert shown[0]["at"].endswith("Z")
