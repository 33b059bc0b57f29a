"""The read-only query console behind POST /api/database/test: checker and runner."""
from .checker import DEFAULT_MAX_ROWS, DEFAULT_QUERY, MAX_QUERY_LENGTH, MAX_ROWS_CAP, check_statement, reject
from .runner import json_safe, parse_request, run_query, server_message

__all__ = [
    "DEFAULT_MAX_ROWS", "DEFAULT_QUERY", "MAX_QUERY_LENGTH", "MAX_ROWS_CAP",
    "check_statement", "json_safe", "parse_request", "reject", "run_query", "server_message",
]
