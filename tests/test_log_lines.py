"""Text log lines hold what a client sent, but a client cannot forge a line of its own."""
from __future__ import annotations

import logging
import sys

from backend.logs import TextFormatter


def test_a_path_with_line_breaks_stays_on_one_line(make_app, capsys):
    app = make_app(LOG_FORMAT="text", LOG_LEVEL="INFO")
    forged = "2026-01-01 00:00:00,000 ERROR backend.auth [x] admin logged in"
    app.test_client().get(f"/nope%0A{forged.replace(' ', '%20')}%0D%00%E2%80%A8end", headers={"X-Request-ID": "forge-1"})
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).splitlines()
    ours = [line for line in lines if "[forge-1]" in line]
    assert len(ours) == 1, lines
    assert "/nope\\x0a2026-01-01" in ours[0] and "\\x0d\\x00\\u2028end 404" in ours[0]
    assert not any(line.startswith("2026-01-01") for line in lines)


def test_tracebacks_keep_their_lines():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed:\n%s", ("a\rb",), exc_info=True)
        record.exc_info = sys.exc_info()
    text = TextFormatter("%(levelname)s %(message)s").format(record)
    first, *rest = text.splitlines()
    assert first == "ERROR failed:\\x0aa\\x0db"
    assert rest[0].startswith("Traceback") and rest[-1] == "ValueError: boom"


def test_a_failing_metric_costs_a_log_line_not_the_response(make_app, monkeypatch, caplog, capsys):
    app = make_app(LOG_FORMAT="text", LOG_LEVEL="INFO")
    from backend import metrics

    def broken(*args):
        raise OSError("no space left on device")

    monkeypatch.setattr(metrics, "record_request", broken)
    response = app.test_client().get("/nope", headers={"X-Request-ID": "still-here"})
    assert response.status_code == 404 and response.json["code"] == "not_found"
    assert response.headers["X-Request-ID"] == "still-here" and response.headers["X-Instance-ID"]
    assert any("request accounting failed" in record.getMessage() for record in caplog.records)
    assert [line for line in capsys.readouterr().out.splitlines() if "[still-here] GET /nope 404" in line]  # the access line too


def test_the_access_log_names_the_method_as_the_app_read_it(make_app, capsys):
    app = make_app(LOG_FORMAT="text", LOG_LEVEL="INFO")
    app.test_client().open("/nope", method="get", headers={"X-Request-ID": "lower-1"})
    lines = [line for line in capsys.readouterr().out.splitlines() if "[lower-1]" in line]
    assert len(lines) == 1 and " GET /nope 404 " in lines[0]
