"""A real headless Chromium for the status page tests: Debian's chromium and
chromium-driver, driven by Selenium, with nothing downloaded and no network.

Without chromium the browser tests skip with the reason; under CI=true (where
`.ci/run` installs it) they fail instead.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from urllib.parse import urlsplit

import pytest

from tests.conftest import IN_CI

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = (
    "--headless=new",
    "--no-sandbox",  # as root, Chromium refuses to start with its sandbox
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
)
# Runs before the page's own scripts (CDP-injected scripts are not subject to
# the page's CSP) and records every violation the page's CSP reports.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.effectiveDirective + " " + (e.blockedURI || "inline"));
});
"""


def require_chromium() -> None:
    if CHROMIUM and CHROMEDRIVER:
        return
    missing = " and ".join(name for name, path in (("chromium", CHROMIUM), ("chromium-driver", CHROMEDRIVER)) if not path)
    reason = f"{missing} not installed (apt-get install -y chromium chromium-driver); the browser tests need them"
    if IN_CI:
        pytest.fail(f"{reason} (CI=true requires them)")
    pytest.skip(reason)


class Browser:
    """One Chromium with a fresh profile, its performance log kept for origin checks."""

    def __init__(self, width: int = 1280, height: int = 900):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        require_chromium()
        os.environ.setdefault("SE_AVOID_STATS", "true")
        self.profile = tempfile.mkdtemp(prefix="dbhealth-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        self.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_CSP_VIOLATIONS})
        self.requests: list[str] = []
        self.console: list[dict] = []
        self.driver.get("about:blank")
        self.driver.get_log("performance")  # the browser's own start-up (its new tab page) is not ours
        self.driver.get_log("browser")

    def drain_logs(self) -> list[str]:
        """URLs requested since the last call (also kept in ``self.requests``)."""
        fresh = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                fresh.append(message["params"]["request"]["url"])
        self.requests += fresh
        self.console += self.driver.get_log("browser")
        return fresh

    def foreign_requests(self, base_url: str) -> list[str]:
        """Every request so far that did not go to ``base_url``'s origin."""
        self.drain_logs()
        origin = urlsplit(base_url)[:2]
        return [url for url in self.requests if urlsplit(url)[:2] != origin]

    def csp_violations(self) -> list[str]:
        return self.driver.execute_script("return window.__cspViolations || []")

    def script_errors(self) -> list[str]:
        self.drain_logs()
        return [e["message"] for e in self.console if "Uncaught" in e["message"] or "Content Security Policy" in e["message"]]

    def screenshot(self, name: str, folder) -> bytes:
        """A PNG of the whole page, saved as ``folder/name``."""
        png = self.driver.get_screenshot_as_png()
        path = os.path.join(str(folder), name)
        with open(path, "wb") as out:
            out.write(png)
        return png

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)
