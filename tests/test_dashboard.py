"""The status page over HTTP: no token to load it, a strict CSP, every asset from the
app, no way for data to become markup, and the probe history its chart draws.

The page in a real browser is tests/test_dashboard_browser.py.
"""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import bearer

STATIC = Path(__file__).resolve().parent.parent / "backend" / "dashboard" / "static"
UNSAFE_SOURCES = ("'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'", "'wasm-unsafe-eval'", "*", "http:", "https:",
                  "data:", "blob:", "filesystem:", "ws:", "wss:")


class Assets(HTMLParser):
    """The URLs a page loads (src and href), and whether it has any inline script or style."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self.in_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href"):
            if attrs.get(name):
                self.urls.append(attrs[name])
        if "style" in attrs or any(name.startswith("on") for name in attrs):
            self.inline.append(f"<{tag}> with {sorted(attrs)}")
        if tag == "style":
            self.inline.append("<style>")
        self.in_script = tag == "script"

    def handle_endtag(self, tag):
        self.in_script = False

    def handle_data(self, data):
        if self.in_script and data.strip():
            self.inline.append("inline <script>")


def csp(response) -> dict[str, list[str]]:
    policy = response.headers["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}


def fetch(client, url):
    """GET ``url``, its body read and the file behind it closed (static files are streamed)."""
    with client.get(url) as response:
        response.get_data()
        return response


def page_assets(client) -> list[str]:
    """Every file the page loads: the HTML's links and scripts, then the modules they import."""
    parser = Assets()
    parser.feed(client.get("/dashboard").get_data(as_text=True))
    found, queue = [], list(parser.urls)
    while queue:
        url = queue.pop(0)
        if url in found:
            continue
        found.append(url)
        if url.endswith(".js"):
            source = fetch(client, url).get_data(as_text=True)
            base = url.rsplit("/", 1)[0]
            queue += [f"{base}/{name.removeprefix('./')}" for name in re.findall(r'from\s+"(\./[\w./-]+\.js)"', source)]
    return found


def test_page_loads_without_a_token_and_its_data_does_not(sqlite_app):
    client = sqlite_app.test_client()
    response = client.get("/dashboard")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert "<title>Database status</title>" in response.get_data(as_text=True)
    data = client.get("/api/database/status")
    assert (data.status_code, data.json["code"]) == (401, "auth_required")


def test_strict_content_security_policy(sqlite_app):
    response = sqlite_app.test_client().get("/dashboard")
    policy = csp(response)
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["default-src"] == ["'none'"]
    assert policy["connect-src"] == ["'self'"]
    for directive, sources in policy.items():
        assert not set(sources) & set(UNSAFE_SOURCES), directive
        assert all(source.startswith("'") for source in sources), directive  # keywords only, no hosts
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_every_asset_is_served_by_the_app(sqlite_app):
    client = sqlite_app.test_client()
    assets = page_assets(client)
    assert {"/dashboard/static/dashboard.css", "/dashboard/static/js/main.js", "/dashboard/static/js/chart.js"} <= set(assets)
    weight = len(client.get("/dashboard").data)
    for url in assets:
        assert url.startswith("/dashboard/static/"), url  # this origin, no CDN
        response = fetch(client, url)
        assert response.status_code == 200, url
        assert response.mimetype in ("text/css", "text/javascript", "application/javascript", "image/svg+xml"), url
        assert "Content-Security-Policy" in response.headers
        weight += len(response.data)
        body = response.get_data(as_text=True)
        # The one absolute URL allowed is SVG's XML namespace, a name that is never fetched.
        remote = [u for u in re.findall(r"(?:https?:)?//[\w.-]+\.\w+[^\s\"')]*", body) if "www.w3.org/2000/svg" not in u]
        assert remote == [], url
    assert weight < 64 * 1024, f"the page weighs {weight} bytes"


def test_page_has_no_inline_script_or_style():
    html = (STATIC.parent / "templates" / "dashboard" / "index.html").read_text()
    parser = Assets()
    parser.feed(html)
    assert parser.inline == []


@pytest.mark.parametrize("script", sorted(p.name for p in (STATIC / "js").glob("*.js")))
def test_scripts_never_turn_data_into_markup_or_code(script):
    source = (STATIC / "js" / script).read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 "setAttribute(\"style\"", "setAttribute('style'", ".cssText"):
        assert sink not in source, f"{script} uses {sink}"


def test_status_keeps_a_short_history_of_probes(sqlite_app):
    client = sqlite_app.test_client()
    viewer = bearer(sqlite_app, "viewer")
    for _ in range(3):
        assert client.get("/api/database/health?force=true", headers=viewer).status_code == 200
    recent = client.get("/api/database/status", headers=viewer).json["data"]["monitor"]["recent_probes"]
    assert len(recent) == 3
    assert set(recent[0]) == {"at", "status", "response_time_ms"}
    assert [probe["status"] for probe in recent] == ["healthy"] * 3
    assert recent[0]["at"] <= recent[-1]["at"]
    for _ in range(70):
        client.get("/api/database/health?force=true", headers=viewer)
    recent = client.get("/api/database/status", headers=viewer).json["data"]["monitor"]["recent_probes"]
    assert len(recent) == 60  # bounded: the last 60 probes of this process
