"""POST /api/database/test: the query console, and what it writes to the audit log."""
from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from .. import audit, console
from ..auth.tokens import admin_only
from ..errors import ApiError, json_object_body
from .blueprint import bp

log = logging.getLogger(__name__)


@bp.post("/test")
@admin_only
def test_query():
    body = json_object_body(optional=True)
    detail: dict[str, Any] = {"query": body.get("query", console.DEFAULT_QUERY)}
    if isinstance(body.get("params"), dict):
        detail["params"] = sorted(map(str, body["params"]))
    try:
        query, params, max_rows = console.parse_request(body)
        result = console.run_query(query, params, max_rows)
    except ApiError as error:
        detail["code"] = error.code
        _audit_query("rejected" if error.status == 400 and error.code == "query_rejected" else error.code, detail)
        raise
    except SQLAlchemyError:
        detail["code"] = "db_unavailable"
        _audit_query("db_unavailable", detail)
        raise
    detail.update(row_count=result["row_count"], elapsed_ms=result["elapsed_ms"], truncated=result["truncated"])
    _audit_query("ok", detail)
    return {"success": True, "data": result}


def _audit_query(outcome: str, detail: dict[str, Any]) -> None:
    query = detail["query"] if isinstance(detail["query"], str) else repr(detail["query"])
    detail["query"] = query[: console.MAX_QUERY_LENGTH]
    try:
        audit.record("test", outcome, target=query[:255], detail=detail)
    except SQLAlchemyError:
        log.error("audit event lost: action=test outcome=%s detail=%s", outcome, detail)
        if outcome == "ok":
            raise
