"""Request bodies that cannot crash a worker: bounded size, chunked too; bounded nesting; valid Unicode.

A chunked body has no Content-Length for MAX_CONTENT_LENGTH to refuse up front:
werkzeug then reads at most that many bytes and stops, without telling, so a
longer body would be parsed cut short. ``BoundedRequest`` reads one byte more,
which raises the 413 it should have been.

Python's parser raises RecursionError (not ValueError) on deeply nested input,
accepts lone surrogates (``"\\ud800"``, which no database or log can encode)
and the non-JSON constants NaN and Infinity. Each becomes a ValueError here, which
Flask's ``get_json`` turns into a 400 like any other malformed body.
"""
from __future__ import annotations

import json
from typing import Any

from flask import Request
from flask.json.provider import DefaultJSONProvider


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_text(value: Any) -> None:
    """Raise ValueError if any string or key holds a lone surrogate (iteratively: no recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("the body holds a lone surrogate, which is not valid Unicode") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


class SafeJSONProvider(DefaultJSONProvider):
    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        kwargs.setdefault("parse_constant", _refuse_constant)
        try:
            value = json.loads(s, **kwargs)
        except RecursionError:
            raise ValueError("the body is nested too deeply") from None
        _check_text(value)
        return value


class BoundedRequest(Request):
    def get_data(self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False):  # type: ignore[override]
        data = super().get_data(cache=cache, as_text=False, parse_form_data=parse_form_data)
        limit = self.max_content_length
        if self.content_length is None and limit is not None and len(data) >= limit:
            self.stream.read(1)  # past the limit: werkzeug raises RequestEntityTooLarge (413)
        return data.decode(errors="replace") if as_text else data
