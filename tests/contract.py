"""The OpenAPI document as a test oracle: does a response belong to the document?

Every app the suite builds uses ``ContractClient``, so every response the tests
see through Flask's test client is checked against /api/openapi.json.
"""
from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from werkzeug.exceptions import HTTPException

from backend.api import BLUEPRINTS
from backend.api.openapi import document

CONVERTER = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")
PRODUCT_BLUEPRINTS = {blueprint.name for blueprint in BLUEPRINTS}


def template(app: Flask, method: str, path: str) -> str | None:
    """The document's path template for a request's route, or None where the document has no say.

    Routing's own answers (404, 405), static files and routes a test adds to
    its app are not operations; every blueprint route is (test_openapi.py
    checks that each one is in the document).
    """
    try:
        rule, _ = app.url_map.bind("localhost").match(path, method=method, return_rule=True)
    except HTTPException:
        return None
    blueprint, _, view = rule.endpoint.rpartition(".")
    if blueprint not in PRODUCT_BLUEPRINTS or view == "static":
        return None  # Flask's static files, or a route a test added to its own app
    return CONVERTER.sub(r"{\1}", rule.rule)


def problems(app: Flask, method: str, path: str, response) -> list[str]:
    """What, if anything, puts this response outside the document."""
    if method in ("HEAD", "OPTIONS"):
        return []
    route = template(app, method, path)
    if route is None:
        return []
    paths = document()["paths"]
    if route not in paths or method.lower() not in paths[route]:
        return [f"{method} {route} is not in the document"]
    described = paths[route][method.lower()]["responses"].get(str(response.status_code))
    if described is None:
        return [f"{method} {route} answered {response.status_code}, which the document does not list"]
    content = described.get("content", {})
    if response.mimetype not in content:
        return [f"{method} {route} {response.status_code} sent {response.mimetype}, not one of {sorted(content)}"]
    if "json" not in response.mimetype:
        return []
    validator = Draft202012Validator(content[response.mimetype]["schema"])
    return [
        f"{method} {route} {response.status_code} at {'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(response.get_json())
    ]


class ContractClient(FlaskClient):
    """Flask's test client, failing any response that the document does not describe."""

    def open(self, *args, **kwargs):
        response = super().open(*args, **kwargs)
        request = response.request
        found = problems(self.application, request.method, request.path, response)
        assert not found, "response outside the OpenAPI document: " + "; ".join(found)
        return response
