"""GET /api/openapi.json: the OpenAPI 3.1 document of every route, kept true by the tests."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app

from . import openapi_schemas as s

bp = Blueprint("openapi", __name__)

JSON = "application/json"
AUTH_ERRORS = {401: ["auth_required", "invalid_token", "token_expired", "token_revoked"], 403: ["forbidden"]}
DATABASE_ERRORS = {503: ["db_unavailable", "db_misconfigured"]}
BODY_ERRORS = {400: ["bad_request"], 413: ["payload_too_large"], 415: ["unsupported_media_type"]}
COMPONENT_ERRORS = {400: ["invalid_parameter"], 404: ["not_found"]}


def error_response(codes: list[str]) -> dict[str, Any]:
    schema = {**s.ERROR, "properties": {**s.ERROR["properties"], "code": {"enum": codes}}}
    return {"description": ", ".join(codes), "content": {JSON: {"schema": schema}}}


def responses(ok: dict[str, Any], *error_groups: dict[int, list[str]], status: int = 200) -> dict[str, Any]:
    """Success first, then each error status with every ``code`` it can carry."""
    merged: dict[int, list[str]] = {}
    for group in error_groups:
        for code, names in group.items():
            merged.setdefault(code, [])
            merged[code] += [name for name in names if name not in merged[code]]
    return {str(status): ok, **{str(code): error_response(names) for code, names in sorted(merged.items())}}


def ok(schema: dict[str, Any], description: str = "Success") -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": s.success(schema)}}}


def json_body(schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"required": required, "content": {JSON: {"schema": schema}}}


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


FORCE = query("force", {"type": "string", "enum": ["true", "false", "1", "0"]}, "Probe now instead of reusing the cache")
COMPONENT = query("component", {"type": "string", "default": "primary"}, "primary or a DB_BIND_* name")
PID = {"name": "pid", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}


def operation(summary: str, response_map: dict[str, Any], *, admin: bool = False, public: bool = False, **extra):
    op: dict[str, Any] = {"summary": summary + (" (admin)" if admin else ""), "responses": response_map, **extra}
    if public:
        op["security"] = []
    return op


def health_responses() -> dict[str, Any]:
    both = {
        JSON: {"schema": s.success(s.HEALTH)},
        "application/health+json": {"schema": s.HEALTH_JSON},
    }
    unhealthy = {
        JSON: {"schema": {**s.ERROR, "properties": {**s.ERROR["properties"], "data": s.HEALTH}}},
        "application/health+json": {"schema": s.HEALTH_JSON},
    }
    return {
        "200": {"description": "healthy or degraded", "content": both},
        "400": error_response(["invalid_parameter"]),
        **{str(code): error_response(names) for code, names in AUTH_ERRORS.items()},
        "503": {"description": "unhealthy (data still present)", "content": unhealthy},
    }


def kill_operation(verb: str) -> dict[str, Any]:
    return operation(
        f"{verb.capitalize()} a session",
        responses(
            ok(s.KILLED),
            AUTH_ERRORS,
            DATABASE_ERRORS,
            BODY_ERRORS,
            COMPONENT_ERRORS,
            {403: ["kill_not_allowed"], 404: ["session_not_found"], 409: ["session_changed"]},
        ),
        admin=True,
        parameters=[PID, COMPONENT],
        requestBody=json_body(s.KILL_REQUEST),
    )


PATHS: dict[str, dict[str, Any]] = {
    "/livez": {"get": operation("Liveness: the process can serve", responses(ok(s.OBJECT)), public=True)},
    "/readyz": {
        "get": operation("Readiness of this instance", responses(ok(s.OBJECT), {503: ["not_ready"]}), public=True)
    },
    "/metrics": {
        "get": operation(
            "Prometheus metrics",
            {
                "200": {"description": "text exposition format", "content": {"text/plain": {"schema": s.STRING}}},
                "401": error_response(["auth_required"]),
            },
            public=True,
        )
    },
    "/api/openapi.json": {
        "get": operation("This document", {"200": {"description": "OpenAPI 3.1", "content": {JSON: {"schema": s.OBJECT}}}}, public=True)
    },
    "/api/auth/login": {
        "post": operation(
            "Log in for a bearer token",
            responses(
                ok(s.TOKEN),
                BODY_ERRORS,
                DATABASE_ERRORS,
                {401: ["invalid_credentials"], 429: ["too_many_attempts"]},
            ),
            public=True,
            requestBody=json_body(s.LOGIN_REQUEST, required=True),
        )
    },
    "/api/auth/logout": {
        "post": operation(
            "Revoke the presented token",
            responses(ok(s.obj({"revoked": s.STRING})), AUTH_ERRORS, DATABASE_ERRORS),
        )
    },
    "/api/database/health": {
        "get": operation(
            "Health of every database",
            health_responses(),
            parameters=[FORCE, query("max_lag_s", {"type": "number", "minimum": 0}, "Replica lag limit for this request")],
        )
    },
    "/api/database/info": {"get": operation("Connection facts, never the password", responses(ok(s.INFO), AUTH_ERRORS))},
    "/api/database/status": {
        "get": operation("Everything on one page", responses(ok(s.STATUS), AUTH_ERRORS, DATABASE_ERRORS))
    },
    "/api/database/test": {
        "post": operation(
            "Run one read-only statement",
            responses(
                ok(s.QUERY_RESULT),
                AUTH_ERRORS,
                BODY_ERRORS,
                DATABASE_ERRORS,
                {
                    400: ["query_rejected", "query_error", "invalid_parameter"],
                    403: ["console_needs_readonly_role"],
                    504: ["query_timeout"],
                },
            ),
            admin=True,
            requestBody=json_body(s.QUERY_REQUEST),
        )
    },
    "/api/database/reconnect": {
        "post": operation(
            "Dispose pooled connections in every worker, then probe",
            responses(ok(s.RECONNECT), AUTH_ERRORS, DATABASE_ERRORS),
            admin=True,
        )
    },
    "/api/database/audit": {
        "get": operation(
            "Recent audit events, newest first",
            responses(ok(s.AUDIT), AUTH_ERRORS, DATABASE_ERRORS, {400: ["invalid_parameter"]}),
            admin=True,
            parameters=[
                query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "How many"),
                query("action", {"type": "string"}, "Only this action"),
            ],
        )
    },
    "/api/database/sessions": {
        "get": operation(
            "Who is connected",
            responses(ok(s.SESSIONS), AUTH_ERRORS, DATABASE_ERRORS, COMPONENT_ERRORS),
            parameters=[
                COMPONENT,
                query(
                    "state",
                    {"type": "string", "enum": ["active", "idle", "idle_in_transaction", "idle_in_transaction_aborted", "other"]},
                    "Only sessions in this state",
                ),
                query("min_duration_s", {"type": "number", "minimum": 0}, "Only sessions at least this old"),
                query("application", {"type": "string"}, "Only this application_name"),
            ],
        )
    },
    "/api/database/locks": {
        "get": operation(
            "Blocking chains",
            responses(ok(s.LOCKS), AUTH_ERRORS, DATABASE_ERRORS, COMPONENT_ERRORS),
            parameters=[COMPONENT],
        )
    },
    "/api/database/sessions/{pid}/cancel": {"post": kill_operation("cancel")},
    "/api/database/sessions/{pid}/terminate": {"post": kill_operation("terminate")},
    "/dashboard": {
        "get": operation(
            "The status page (HTML; its data comes from this API)",
            {"200": {"description": "HTML", "content": {"text/html": {"schema": s.STRING}}}},
            public=True,
        )
    },
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dbhealth",
            "version": "1",
            "description": "How the service's databases are doing, for operators and machines. "
            "Every error is `{success: false, code, error, message, request_id}`.",
        },
        "servers": [{"url": "/"}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
        "security": [{"bearer": []}],
        "paths": PATHS,
    }


@bp.get("/api/openapi.json")
def openapi_json():
    return current_app.response_class(
        current_app.json.dumps(document()), mimetype="application/json", headers={"Cache-Control": "public, max-age=300"}
    )
