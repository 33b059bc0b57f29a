"""A property-based run over every operation of the document, as a viewer and as an admin.

Schemathesis generates requests from /api/openapi.json and checks each answer:
no 500, and no status, content type or body outside the document. The app runs
on a real PostgreSQL database with DB_SESSION_KILL=off, so the run never ends a
session it does not own; logout gets a throwaway token on every call.
"""
from __future__ import annotations

import pytest
import schemathesis
from flask_migrate import upgrade
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from backend import create_app
from backend.api.openapi import PATHS
from backend.auth.tokens import issue_token
from backend.extensions import db
from backend.state import state
from tests.conftest import create_database

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 20


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory):
    url, drop = create_database("postgresql")
    app = create_app(
        {
            "APP_ENV": "testing",
            "DATABASE_URL": url,
            "INSTANCE_PATH": str(tmp_path_factory.mktemp("instance")),
            "DB_HEALTH_CHECK_INTERVAL": 0,
            "DB_RETRY_BASE_DELAY": 0,
            "DB_SESSION_KILL": "off",
            "TESTING": True,
        }
    )
    with app.app_context():
        upgrade()
    yield app
    state(app).monitor.stop()
    with app.app_context():
        db.session.remove()
        state(app).dispose_connections()
    drop()


@pytest.fixture(scope="module")
def api_schema(fuzzed_app):
    return schemathesis.openapi.from_wsgi("/api/openapi.json", fuzzed_app)


def token(app, role: str) -> str:
    with app.app_context():
        return issue_token(f"fuzz-{role}", role, 600)[0]


def runs() -> list:
    """Every operation with valid input, and those that take input with invalid input too."""
    cases = []
    for path, methods in PATHS.items():
        for method, operation in methods.items():
            label = f"{method.upper()} {path}"
            cases.append(pytest.param(label, GenerationMode.POSITIVE, id=f"{label} valid"))
            if operation.get("parameters") or operation.get("requestBody"):
                cases.append(pytest.param(label, GenerationMode.NEGATIVE, id=f"{label} invalid"))
    return cases


@pytest.mark.parametrize("role", ["viewer", "admin"])
@pytest.mark.parametrize(("label", "mode"), runs())
def test_every_answer_is_in_the_document(api_schema, fuzzed_app, label, role, mode):
    """Valid requests and requests that break the document's own rules alike get documented answers."""
    operation = api_schema.find_operation_by_label(label)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case):
        # A token per call: logout revokes the one it is given.
        headers = {**(case.headers or {}), "Authorization": f"Bearer {token(fuzzed_app, role)}"}
        response = case.call(headers=headers)
        case.validate_response(response, checks=CHECKS)

    check()
