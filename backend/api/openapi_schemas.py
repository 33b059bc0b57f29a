"""JSON Schemas of what the API sends: the envelopes and the data of each route.

Kept beside the document (openapi.py) rather than generated from the views:
the views return plain dicts in one envelope, and the tests hold the document
true (every route is in it, every response the suite sees validates, and a
property-based run finds nothing outside it). Objects allow fields beyond the
ones listed, so adding a field never breaks a client; the listed ones are
required where the contract promises them.
"""
from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

STATUSES = ["healthy", "degraded", "unhealthy"]


def nullable(schema: Schema) -> Schema:
    """The schema, or null."""
    return {"anyOf": [schema, {"type": "null"}]}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """An object with these required properties (others allowed)."""
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
    }


STRING: Schema = {"type": "string"}
NUMBER: Schema = {"type": "number"}
INTEGER: Schema = {"type": "integer"}
BOOLEAN: Schema = {"type": "boolean"}
OBJECT: Schema = {"type": "object"}
TIMESTAMP: Schema = {"type": "string", "format": "date-time"}

ERROR: Schema = obj(
    {
        "success": {"const": False},
        "code": STRING,
        "error": STRING,
        "message": STRING,
        "request_id": STRING,
    },
    {
        "retry_count": INTEGER,
        "last_attempt": TIMESTAMP,
        "data": OBJECT,
    },
)


def success(data: Schema) -> Schema:
    return obj({"success": {"const": True}, "data": data})


POOL = obj(
    {},
    {
        "pool_size": nullable(INTEGER),
        "checked_in": nullable(INTEGER),
        "checked_out": nullable(INTEGER),
        "overflow": nullable(INTEGER),
    },
)

# What the server sees on this connection (null: SQLite, or no connection made).
TLS_IN_USE = nullable(obj({"in_use": BOOLEAN, "version": nullable(STRING), "cipher": nullable(STRING)}))
# The configured TLS of a URL (null for SQLite): a mode and the root certificate's file name.
TLS_SETTINGS = nullable(obj({"mode": STRING, "root_cert": nullable(STRING)}))

COMPONENT = obj(
    {
        "status": {"enum": STATUSES},
        "database_type": STRING,
        "version": nullable(STRING),
        "timestamp": TIMESTAMP,
        "response_time_ms": NUMBER,
        "cached": BOOLEAN,
        "pool_status": POOL,
        "message": STRING,
    },
    {"warnings": {"type": "array", "items": STRING}, "error": nullable(STRING), "tls": TLS_IN_USE},
)

HEALTH = {
    **COMPONENT,
    "required": [*COMPONENT["required"], "components"],
    "properties": {
        **COMPONENT["properties"],
        "components": {"type": "object", "required": ["primary"], "additionalProperties": COMPONENT},
    },
}

HEALTH_JSON = obj(
    {"status": {"enum": ["pass", "warn", "fail"]}, "checks": {"type": "object"}},
    {"description": STRING, "output": STRING},
)

CONNECTION_FACTS = obj(
    {
        "database_type": STRING,
        "driver": nullable(STRING),
        "host": nullable(STRING),
        "port": nullable(INTEGER),
        "database": nullable(STRING),
        "user": nullable(STRING),
        "url": STRING,
        "pool_size": nullable(INTEGER),
        "max_overflow": nullable(INTEGER),
        "pool_timeout": nullable(NUMBER),
        "pool_recycle": nullable(NUMBER),
        "tls": TLS_SETTINGS,
    }
)

CONSOLE_GUARD = obj(
    {
        "guard": {"enum": ["readonly_role", "read_only_transaction", "read_only_file", "disabled"]},
        "role": nullable(STRING),
    },
    {"verified": BOOLEAN},
)

INFO = {
    **CONNECTION_FACTS,
    "required": [*CONNECTION_FACTS["required"], "binds", "console"],
    "properties": {
        **CONNECTION_FACTS["properties"],
        "binds": {"type": "object", "additionalProperties": CONNECTION_FACTS},
        "console": CONSOLE_GUARD,
    },
}

TRANSITION = obj({"to": STRING, "at": TIMESTAMP}, {"from": nullable(STRING)})

LATENCY = obj({"p50": nullable(NUMBER), "p95": nullable(NUMBER), "max": nullable(NUMBER)})

STATUS = obj(
    {
        "health": HEALTH,
        "pool": {"type": "object", "additionalProperties": OBJECT},
        "server": {"type": "object", "additionalProperties": OBJECT},
        "migrations": obj(
            {"current": nullable(STRING), "head": nullable(STRING), "up_to_date": nullable(BOOLEAN)}
        ),
        "monitor": obj(
            {
                "checks_total": INTEGER,
                "failures_total": INTEGER,
                "consecutive_failures": INTEGER,
                "last_success": nullable(TIMESTAMP),
                "last_failure": nullable(TIMESTAMP),
                "last_error": nullable(STRING),
                "latency_ms": LATENCY,
                "transitions": {"type": "array", "items": TRANSITION},
            }
        ),
        "process": obj({"pid": INTEGER, "started_at": TIMESTAMP}),
    }
)

QUERY_RESULT = obj(
    {
        "query": STRING,
        "columns": {"type": "array", "items": STRING},
        "rows": {"type": "array", "items": {"type": "array"}},
        "row_count": INTEGER,
        "truncated": BOOLEAN,
        "elapsed_ms": NUMBER,
    }
)

QUERY_REQUEST = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "maxLength": 10000, "example": "SELECT count(*) AS n FROM users WHERE role = :role"},
        "params": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean", "null"]}},
        "max_rows": {"type": "integer", "minimum": 1, "maximum": 1000},
    },
}

RECONNECT = obj({"generation": INTEGER, "disposed_connections": INTEGER, "health": HEALTH})

AUDIT = obj(
    {
        "events": {
            "type": "array",
            "items": obj(
                {"action": STRING, "outcome": STRING, "at": TIMESTAMP},
                {"actor": nullable(STRING), "target": nullable(STRING), "request_id": nullable(STRING)},
            ),
        }
    }
)

LOGIN_REQUEST = {
    "type": "object",
    "required": ["username", "password"],
    "properties": {"username": {"type": "string", "example": "admin"}, "password": {"type": "string"}},
}

TOKEN = obj(
    {
        "access_token": STRING,
        "token_type": {"const": "Bearer"},
        "expires_in": INTEGER,
        "role": {"enum": ["viewer", "admin"]},
    }
)

UNSUPPORTED = obj({"supported": {"const": False}, "reason": STRING})


def or_unsupported(required: dict[str, Schema]) -> Schema:
    """These fields with ``supported: true``, or UNSUPPORTED where the database cannot answer."""
    return {"anyOf": [obj({"supported": {"const": True}, **required}), UNSUPPORTED]}


SESSION = obj(
    {
        "pid": INTEGER,
        "user": nullable(STRING),
        "application": nullable(STRING),
        "client_addr": nullable(STRING),
        "state": STRING,
        "backend_start": nullable(STRING),
        "transaction_start": nullable(STRING),
        "query_start": nullable(STRING),
        "duration_s": nullable(NUMBER),
        "wait_event": nullable(STRING),
        "blocked_by": {"type": "array", "items": INTEGER},
        "query": nullable(STRING),
    }
)

SESSIONS = or_unsupported(
    {
        "component": STRING,
        "max_connections": nullable(INTEGER),
        "total": INTEGER,
        "by_state": {"type": "object", "additionalProperties": INTEGER},
        "by_application": {"type": "object", "additionalProperties": INTEGER},
        "by_user": {"type": "object", "additionalProperties": INTEGER},
        "oldest_transaction_s": nullable(NUMBER),
        "sessions": {"type": "array", "items": SESSION},
    }
)

WAITER: Schema = obj(
    {
        "pid": INTEGER,
        "waiting_s": nullable(NUMBER),
        "lock_type": nullable(STRING),
        "mode": nullable(STRING),
        "relation": nullable(STRING),
        "query": nullable(STRING),
        "blocks": {"type": "array"},
    }
)

LOCKS = or_unsupported(
    {
        "waiting_total": INTEGER,
        "longest_wait_s": nullable(NUMBER),
        "chains": {
            "type": "array",
            "items": obj(
                {
                    "pid": INTEGER,
                    "state": nullable(STRING),
                    "transaction_age_s": nullable(NUMBER),
                    "query": nullable(STRING),
                    "blocks": {"type": "array", "items": WAITER},
                }
            ),
        },
    }
)

KILL_REQUEST = {"type": "object", "properties": {"backend_start": {"type": "string"}}}

KILLED = or_unsupported({"pid": INTEGER})
