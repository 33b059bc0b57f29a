"""The status page in a real headless Chromium, against gunicorn and PostgreSQL.

One gunicorn server (two workers) serves a fresh PostgreSQL database of the
test's own: the primary through a fault proxy the tests can cut, and a second
component ("analytics") directly. A viewer and an admin log in through the
page itself. Set DASHBOARD_SCREENSHOTS=docs to refresh the README's screenshot.
"""
from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from functools import partial

import pytest
import sqlalchemy as sa
from flask_migrate import upgrade
from selenium.common.exceptions import WebDriverException

from backend import create_app
from backend.extensions import db
from tests import faults
from tests.browser import Browser, require_chromium
from tests.conftest import SERVERS, create_database, engine_for
from tests.faults import Gunicorn, Proxy

SECRET = "dashboard-tests-secret-key-0123456789abcdef"
PASSWORD = "correct horse battery staple"
RED = "rgba(207, 34, 46, 1)"  # --bad in dashboard.css
WAIT_S = 30  # a refresh is every 5 s; a busy machine gets a margin
# While the page is mid-refresh, elements come and go: a WebDriverException is "not yet".
wait_for = partial(faults.wait_for, timeout=WAIT_S, ignoring=(WebDriverException,))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    require_chromium()
    url, drop = create_database("postgresql")
    proxy = Proxy(sa.make_url(SERVERS["postgresql"]).port or 5432)
    instance = tmp_path_factory.mktemp("instance")
    env = {
        "APP_ENV": "production",
        "DATABASE_URL": sa.make_url(url).set(port=proxy.port).render_as_string(hide_password=False),
        "DB_BIND_ANALYTICS": url,
        "JWT_SECRET_KEY": SECRET,
        "INSTANCE_PATH": str(instance),
        "DB_HEALTH_CACHE_TTL": "1",
        "DB_HEALTH_TIMEOUT": "2",
        "DB_RETRY_BASE_DELAY": "0.1",
        "DB_CONSOLE_ALLOW_PRIMARY_ROLE": "true",
    }
    app = create_app({**env, "DATABASE_URL": url, "DB_HEALTH_CHECK_INTERVAL": 0})
    with app.app_context():
        upgrade()
        runner = app.test_cli_runner()
        for name, role in (("vera", "viewer"), ("ada", "admin")):
            result = runner.invoke(args=["auth", "create-user", name, "--role", role, "--password-stdin"], input=PASSWORD + "\n")
            assert result.exit_code == 0, result.output
        for engine in db.engines.values():
            engine.dispose()
    server = Gunicorn(env, workers=2)
    yield server, proxy, url
    server.stop()
    proxy.close()
    drop()


@pytest.fixture
def server(site):
    return site[0]


@pytest.fixture
def proxy(site):
    site[1].set_mode("pass")
    yield site[1]
    site[1].set_mode("pass")


@pytest.fixture
def browser():
    browser = Browser()
    yield browser
    browser.quit()


def api(server, path, token=None, body=None):
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server.url + path, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def by_id(browser, element_id):
    return browser.driver.find_element("id", element_id)


def css(browser, selector):
    return browser.driver.find_elements("css selector", selector)


def log_in(browser, server, username):
    browser.driver.get(server.url + "/dashboard")
    wait_for(lambda: by_id(browser, "login").is_displayed(), "the login form")
    by_id(browser, "username").send_keys(username)
    by_id(browser, "password").send_keys(PASSWORD)
    by_id(browser, "password").submit()
    wait_for(lambda: by_id(browser, "board").is_displayed(), "the board after logging in")


def banner_status(browser):
    return by_id(browser, "banner").get_attribute("data-status")


def card_status(browser, name):
    cards = css(browser, f'.card[data-component="{name}"]')
    return cards[0].get_attribute("data-status") if cards else None


def status_requests(urls):
    return [url for url in urls if url.endswith("/api/database/status")]


def assert_clean(browser, server):
    """Only this origin was asked for anything, and the page broke none of its CSP."""
    assert browser.foreign_requests(server.url) == []
    assert any(url.endswith("/dashboard/static/js/main.js") for url in browser.requests)
    assert browser.csp_violations() == []
    assert browser.script_errors() == []


def test_viewer_sees_cards_chart_and_transitions_without_admin_tools(server, browser):
    log_in(browser, server, "vera")
    wait_for(lambda: banner_status(browser) == "healthy", "a healthy banner")
    wait_for(lambda: card_status(browser, "primary") == "healthy" and card_status(browser, "analytics") == "healthy",
             "healthy cards for primary and analytics")
    primary = css(browser, '.card[data-component="primary"]')[0]
    assert "PostgreSQL 15" in primary.text or "PostgreSQL 1" in primary.text
    for label in ("Version", "Server", "Response time", "Pool", "Connections", "Replica lag"):
        assert label in primary.text
    assert "127.0.0.1:" in primary.text
    assert len(primary.find_elements("css selector", "meter")) == 2  # pool and connections
    wait_for(lambda: css(browser, "#chart svg circle.dot.healthy"), "a probe on the latency chart")
    assert by_id(browser, "transitions").find_elements("css selector", "li")  # changes, or "No changes seen yet"
    assert "vera (viewer)" in by_id(browser, "who").text

    # A viewer gets no console and no reconnect button.
    assert not by_id(browser, "admin-panel").is_displayed()
    assert not by_id(browser, "reconnect").is_displayed()
    assert not by_id(browser, "console-form").is_displayed()

    token = json.loads(browser.driver.execute_script("return sessionStorage.getItem('dbhealth.session')"))["token"]

    # The token lives in this tab's sessionStorage only.
    assert browser.driver.execute_script("return window.localStorage.length") == 0
    assert browser.driver.get_cookies() == []

    # Refreshes every 5 s while visible, none while hidden, one at once when visible again.
    def refreshes():
        browser.drain_logs()
        return len(status_requests(browser.requests))

    seen = refreshes()
    wait_for(lambda: refreshes() >= seen + 2, "two refreshes while visible", timeout=16)
    browser.driver.execute_script(
        "Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'hidden'});"
        "document.dispatchEvent(new Event('visibilitychange'));"
    )
    seen = refreshes()
    time.sleep(7)  # longer than one refresh interval: nothing may be asked meanwhile
    assert refreshes() - seen <= 1, "refreshed while the tab was hidden"  # one may have been in flight
    seen = refreshes()
    browser.driver.execute_script(
        "Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'visible'});"
        "document.dispatchEvent(new Event('visibilitychange'));"
    )
    wait_for(lambda: refreshes() > seen, "a refresh as soon as the tab is visible again", timeout=3)
    assert_clean(browser, server)

    # Logging out revokes the token and forgets it.
    by_id(browser, "logout").click()
    wait_for(lambda: by_id(browser, "login").is_displayed(), "the login form after logging out")
    assert browser.driver.execute_script("return sessionStorage.getItem('dbhealth.session')") is None
    # Every worker refuses a revoked token within 2 s of the revocation.
    def refused():
        answer = api(server, "/api/database/status", token)
        return answer if answer[0] == 401 else None

    _, body = wait_for(refused, "the token to be refused", timeout=5)
    assert body["code"] == "token_revoked"


def test_sessions_and_blocking_chains_or_no_panel(site, browser):
    """With /sessions and /locks (SPEC 10) the panel shows a real lock wait; where they answer 404 it is hidden."""
    server, _, url = site
    engine = engine_for(url)
    with engine.connect() as holder, engine.connect() as waiter:
        holder.exec_driver_sql("CREATE TABLE IF NOT EXISTS held (id int)")
        holder.commit()
        holder.exec_driver_sql("LOCK TABLE held IN ACCESS EXCLUSIVE MODE")  # held until the rollback below
        holder_pid = holder.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        waiter_pid = waiter.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        waiter.exec_driver_sql("SET statement_timeout = '60s'")
        blocked = threading.Thread(target=lambda: _wait_quietly(waiter), daemon=True)
        blocked.start()
        try:
            log_in(browser, server, "ada")
            wait_for(lambda: card_status(browser, "primary"), "the cards")
            token = json.loads(browser.driver.execute_script("return sessionStorage.getItem('dbhealth.session')"))["token"]
            sessions_status, _ = api(server, "/api/database/sessions", token)
            if sessions_status == 404:
                wait_for(lambda: "Updated" in by_id(browser, "updated").text, "a refresh")
                assert not by_id(browser, "sessions-panel").is_displayed()
            else:
                wait_for(lambda: by_id(browser, "sessions-panel").is_displayed(), "the sessions panel")
                assert "sessions of" in by_id(browser, "sessions-summary").text
                assert "idle in transaction" in by_id(browser, "sessions-by-state").text
                wait_for(lambda: f"pid {waiter_pid}" in by_id(browser, "locks").text, "the blocked session in a chain")
                chains = by_id(browser, "locks").text
                assert f"pid {holder_pid}" in chains
                assert "held" in chains  # the relation waited for
        finally:
            holder.rollback()
            blocked.join(timeout=10)
    engine.dispose()
    assert_clean(browser, server)


def _wait_quietly(connection):
    """Wait for the lock; the holder's rollback lets it through."""
    connection.exec_driver_sql("SELECT count(*) FROM held").scalar()
    connection.rollback()


def test_banner_turns_red_when_the_database_is_taken_away(server, proxy, browser):
    status, body = api(server, "/api/auth/login", body={"username": "vera", "password": PASSWORD})
    assert status == 200
    browser.driver.get(server.url + "/dashboard")
    wait_for(lambda: by_id(browser, "token").is_displayed(), "the token field")
    by_id(browser, "token").send_keys(body["data"]["access_token"])
    by_id(browser, "token").submit()
    wait_for(lambda: banner_status(browser) == "healthy", "a healthy banner")

    proxy.set_mode("reset")
    wait_for(lambda: banner_status(browser) == "unhealthy", "the banner to turn red")
    banner = by_id(browser, "banner")
    assert banner.value_of_css_property("background-color") == RED
    assert "Unhealthy" in banner.text
    wait_for(lambda: card_status(browser, "primary") == "unhealthy", "the primary's card to turn red")
    assert card_status(browser, "analytics") == "healthy"  # reached directly, not through the proxy
    wait_for(lambda: css(browser, "#chart svg circle.dot.unhealthy"), "a red probe on the chart")
    wait_for(lambda: "primary Healthy → Unhealthy" in by_id(browser, "transitions").text, "the transition to unhealthy")

    proxy.set_mode("pass")
    wait_for(lambda: banner_status(browser) == "healthy", "the banner back to healthy")
    wait_for(lambda: "primary Unhealthy → Healthy" in by_id(browser, "transitions").text, "the transition back")
    assert_clean(browser, server)


def test_page_reads_on_a_phone(server, browser, tmp_path):
    browser.driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}
    )
    log_in(browser, server, "ada")
    wait_for(lambda: card_status(browser, "analytics"), "the cards")
    wait_for(lambda: css(browser, "#chart svg circle"), "the chart")
    width = browser.driver.execute_script("return window.innerWidth")
    assert width == 390
    assert browser.driver.execute_script("return document.documentElement.scrollWidth") <= width
    cards = css(browser, ".card")
    assert len({card.rect["x"] for card in cards}) == 1  # stacked, one column
    assert all(card.rect["width"] <= width for card in cards)
    assert by_id(browser, "console-form").is_displayed()
    assert by_id(browser, "console-query").rect["width"] <= width
    browser.screenshot("dashboard-phone.png", tmp_path)
    assert_clean(browser, server)


def test_admin_runs_a_query_and_reconnects(server, browser, tmp_path):
    log_in(browser, server, "ada")
    wait_for(lambda: banner_status(browser) == "healthy", "a healthy banner")
    assert by_id(browser, "admin-panel").is_displayed()

    query = by_id(browser, "console-query")
    query.clear()
    query.send_keys("SELECT 41 + 1 AS answer, '<b id=\"injected\">bold</b>' AS markup, NULL AS nothing")
    by_id(browser, "console-run").click()
    wait_for(lambda: css(browser, "#console-result td"), "the console's result")
    assert [th.text for th in css(browser, "#console-result th")] == ["answer", "markup", "nothing"]
    assert [td.text for td in css(browser, "#console-result td")] == ["42", '<b id="injected">bold</b>', "NULL"]
    assert css(browser, "#injected") == []  # shown as text, never parsed as HTML
    assert "1 row" in by_id(browser, "console-result").text
    query.clear()
    query.send_keys("SELECT username, role FROM users ORDER BY username")
    by_id(browser, "console-run").click()
    wait_for(lambda: "vera" in by_id(browser, "console-result").text, "the users in the console")
    assert [td.text for td in css(browser, "#console-result td")] == ["ada", "admin", "vera", "viewer"]

    # Reconnect asks first; Cancel does nothing.
    by_id(browser, "reconnect").click()
    wait_for(lambda: by_id(browser, "reconnect-dialog").is_displayed(), "the confirmation")
    by_id(browser, "reconnect-cancel").click()
    wait_for(lambda: not by_id(browser, "reconnect-dialog").is_displayed(), "the confirmation to close")
    assert by_id(browser, "reconnect-result").text == ""
    by_id(browser, "reconnect").click()
    wait_for(lambda: by_id(browser, "reconnect-dialog").is_displayed(), "the confirmation")
    by_id(browser, "reconnect-confirm").click()
    wait_for(lambda: "generation 1" in by_id(browser, "reconnect-result").text, "the reconnect result")
    assert "database healthy" in by_id(browser, "reconnect-result").text

    # The README's screenshot: the whole page at a desktop width.
    wait_for(lambda: len(css(browser, "#chart svg circle")) >= 3, "a few probes on the chart")
    height = browser.driver.execute_script("return document.documentElement.scrollHeight")
    browser.driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 1100, "height": height, "deviceScaleFactor": 1, "mobile": False}
    )
    png = browser.screenshot("dashboard.png", os.environ.get("DASHBOARD_SCREENSHOTS") or tmp_path)
    assert png.startswith(b"\x89PNG") and len(png) < 400_000
    assert_clean(browser, server)

    # The CSP check can fail: a style attribute set from a script is reported.
    browser.driver.execute_script("document.body.setAttribute('style', 'color: red')")
    wait_for(lambda: any(v.startswith("style-src") for v in browser.csp_violations()), "the CSP to report an inline style")
