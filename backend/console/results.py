"""Console results: JSON-safe values, cut by rows and by bytes while they stream in.

Rows are taken one at a time from the driver, so a worker holds at most the
rows kept so far (at most DB_CONSOLE_MAX_BYTES of values) plus the row being
read. The row that would go over the budget is kept with its values cut to
what is left, and the answer says ``truncated``.
"""
from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import uuid
from collections.abc import Callable, Sequence
from typing import Any


def json_safe(value: Any) -> Any:
    """Values as JSON can carry them: ISO-8601 times, decimals as strings, bytes as hex, NaN as a string."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    return str(value)


def cut_value(value: Any, budget: int) -> tuple[Any, int, bool]:
    """``value`` made JSON-safe within ``budget`` bytes: (value, size, whether it was cut)."""
    budget = max(budget, 0)
    if isinstance(value, str):
        return value[:budget], min(len(value), budget), len(value) > budget
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value[: budget // 2])
        return raw.hex(), 2 * len(raw), len(value) > len(raw)
    safe = json_safe(value)
    if isinstance(safe, str):
        return safe[:budget], min(len(safe), budget), len(safe) > budget
    if isinstance(safe, (list, dict)):
        text = json.dumps(safe)
        if len(text) > budget:  # an array or a document too big: its text, cut
            return text[:budget], budget, True
        return safe, len(text), False
    return safe, len(json.dumps(safe)), False


def collect(fetch_one: Callable[[], Sequence[Any] | None], max_rows: int, max_bytes: int) -> tuple[list[list[Any]], bool]:
    """Take rows from ``fetch_one`` until the result, ``max_rows`` or ``max_bytes`` ends; (rows, truncated)."""
    rows: list[list[Any]] = []
    used = 0
    while True:
        row = fetch_one()
        if row is None:
            return rows, False
        if len(rows) == max_rows or used >= max_bytes:
            return rows, True
        kept, cut = [], False
        for value in row:
            safe, size, was_cut = cut_value(value, max_bytes - used)
            kept.append(safe)
            used += size
            cut = cut or was_cut
        rows.append(kept)
        if cut:
            return rows, True
