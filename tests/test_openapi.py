"""The OpenAPI document: valid, complete, and true of what the app sends.

Besides these tests, every response the suite sees through Flask's test client
is checked against the document (tests/contract.py).
"""
from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from backend.api import BLUEPRINTS
from tests.contract import CONVERTER

IGNORED_METHODS = {"HEAD", "OPTIONS"}


def test_the_document_is_served_without_a_token_and_is_valid_openapi_3_1(sqlite_app):
    response = sqlite_app.test_client().get("/api/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    document = response.get_json()
    assert document["openapi"] == "3.1.0"
    validate(document)
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }


def test_every_route_the_app_serves_is_in_the_document_and_nothing_else(sqlite_app):
    product = {blueprint.name for blueprint in BLUEPRINTS}
    served = {
        (CONVERTER.sub(r"{\1}", rule.rule), method.lower())
        for rule in sqlite_app.url_map.iter_rules()
        if rule.endpoint.rpartition(".")[0] in product and not rule.endpoint.endswith(".static")
        for method in rule.methods - IGNORED_METHODS
    }
    paths = sqlite_app.test_client().get("/api/openapi.json").get_json()["paths"]
    documented = {(path, method) for path, operations in paths.items() for method in operations}
    assert served - documented == set(), "routes missing from the document"
    assert documented - served == set(), "documented operations the app does not serve"


@pytest.mark.parametrize("path", ["/api/database/health", "/api/database/test", "/api/auth/logout"])
def test_protected_operations_need_the_bearer_scheme_and_public_ones_do_not(sqlite_app, path):
    paths = sqlite_app.test_client().get("/api/openapi.json").get_json()["paths"]
    for operation in paths[path].values():
        assert "security" not in operation  # inherits the document's bearer requirement
        assert {"401", "403"} <= set(operation["responses"])
    assert paths["/livez"]["get"]["security"] == []
    assert paths["/api/auth/login"]["post"]["security"] == []
