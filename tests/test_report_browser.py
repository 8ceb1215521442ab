"""The HTML report in a real browser: headless Chromium renders every section without console errors.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``.ci/run``
installs them). Without them the tests are skipped, except under CI (the
``CI`` environment variable is set), where a missing browser is a failure.
WebDriver is spoken over HTTP with ``urllib``: no Python package needed.

Set ``CIRCUITCHECK_SCREENSHOT=/some/path.png`` to keep the screenshot
(1280 x 3000: the summary and the claims-across-checkpoints section with its charts).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from circuitcheck import report

# tests/ is on sys.path (pytest's default "prepend" import mode); one document serves both files
from test_report import XSS, checkpoint_tests, document_with_every_section

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]
SCREENSHOT_HEIGHT = 3000
SECTIONS = ["summary", "checkpoints", "tests", "necessity", "sufficiency", "minimality", "heatmaps", "paths", "environment"]


def require(path: str) -> None:
    if os.path.exists(path):
        return
    message = f"{path} is not installed: apt-get install chromium chromium-driver"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must run the browser checks)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def report_file(tmp_path_factory) -> Path:
    """A report with every section populated (and the incomplete-run banner, hostile text, claims over 7 checkpoints)."""
    document = document_with_every_section(complete=False)
    document["tests"][0]["claims"][0]["notes"].append(XSS)
    document["tests"] += checkpoint_tests()
    return report.write_html(tmp_path_factory.mktemp("report") / "report.html", document)


# Screenshot through the command line ------------------------------------------------------------------


def test_the_report_renders_to_a_non_trivial_screenshot(report_file, tmp_path):
    require(CHROMIUM)
    screenshot = tmp_path / "report.png"
    result = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={screenshot}",
         f"--window-size=1280,{SCREENSHOT_HEIGHT}", report_file.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert screenshot.exists(), f"chromium wrote no screenshot (exit {result.returncode}):\n{result.stderr[-3000:]}"
    png = screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (1280, SCREENSHOT_HEIGHT)
    if os.environ.get("CIRCUITCHECK_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["CIRCUITCHECK_SCREENSHOT"])
    # a blank page of this size compresses to a few kB; text, tables and charts do not
    assert len(png) > 60_000, f"suspiciously small screenshot ({len(png)} bytes): {screenshot}"


# Console, layout and print through WebDriver -----------------------------------------------------------


class WebDriver:
    """The few WebDriver commands these tests need, over HTTP."""

    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"
        self.session: str | None = None

    def call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as error:
            raise AssertionError(f"WebDriver {method} {path} failed: {error.read()[:2000]!r}") from None

    def start(self, profile: Path) -> None:
        options = {"binary": CHROMIUM, "args": [*FLAGS, f"--user-data-dir={profile}", "--window-size=1280,1600"]}
        capabilities = {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options, "goog:loggingPrefs": {"browser": "ALL"}}}
        self.session = self.call("POST", "/session", {"capabilities": capabilities})["sessionId"]

    def open(self, url: str) -> None:
        self.call("POST", f"/session/{self.session}/url", {"url": url})

    def script(self, source: str):
        return self.call("POST", f"/session/{self.session}/execute/sync", {"script": source, "args": []})

    def console(self) -> list[dict]:
        """Browser log entries since the last call (console messages, script errors, failed loads)."""
        return self.call("POST", f"/session/{self.session}/se/log", {"type": "browser"})

    def print_pdf(self) -> bytes:
        return base64.b64decode(self.call("POST", f"/session/{self.session}/print", {"background": True}))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    require(CHROMIUM)
    require(CHROMEDRIVER)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    driver = WebDriver(port)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                driver.call("GET", "/status")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline or process.poll() is not None:
                    raise AssertionError(f"chromedriver did not start on port {port}") from None
                time.sleep(0.1)
        driver.start(tmp_path_factory.mktemp("chromium-profile"))
        yield driver
    finally:
        if driver.session is not None:
            try:
                driver.call("DELETE", f"/session/{driver.session}")
            except Exception:  # the browser may already be gone; the driver is stopped below
                pass
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def problems(entries: list[dict]) -> list[str]:
    return [f"{entry['level']} {entry['message']}" for entry in entries if entry.get("level") in ("SEVERE", "WARNING")]


def test_the_report_has_no_console_errors(browser, report_file):
    browser.console()  # drop anything from before
    browser.open(report_file.as_uri())
    assert browser.script("return document.readyState") == "complete"
    assert problems(browser.console()) == []


def test_every_section_renders_visibly_and_the_page_fits_the_window(browser, report_file):
    browser.open(report_file.as_uri())
    layout = browser.script(
        """
        const box = (el) => { const r = el.getBoundingClientRect(); return [r.width, r.height]; };
        return {
          sections: Object.fromEntries(%s.map((id) => [id, document.getElementById(id) ? box(document.getElementById(id)) : null])),
          charts: Array.from(document.querySelectorAll('svg.chart')).map(box),
          lineCharts: Array.from(document.querySelectorAll('svg.checkpoint-chart')).map(
            (el) => { const r = el.getBoundingClientRect(); return [r.width, r.height, r.bottom + window.scrollY]; }),
          summary: document.getElementById('summary').innerText,
          banner: document.querySelector('.banner.incomplete') ? box(document.querySelector('.banner.incomplete')) : null,
          scrollWidth: document.documentElement.scrollWidth,
          innerWidth: window.innerWidth,
          scripts: document.scripts.length,
          alerts: document.body.innerText.includes('alert(1)'),
        };
        """ % json.dumps(SECTIONS)
    )
    for name, size in layout["sections"].items():
        assert size is not None and size[0] > 500 and size[1] > 40, f"section {name} is missing or empty: {size}"
    assert len(layout["charts"]) >= 10 and all(w > 50 and h > 30 for w, h in layout["charts"])
    # one line chart per claim measured on several checkpoints; the first two (L1H0's phase change) are in the screenshot
    assert len(layout["lineCharts"]) == 3 and all(w > 300 and h > 150 for w, h, _ in layout["lineCharts"])
    assert layout["lineCharts"][1][2] < SCREENSHOT_HEIGHT, f"the checkpoint charts are below the screenshot: {layout['lineCharts']}"
    assert "claims held" in layout["summary"] and "claims failed" in layout["summary"]
    assert layout["banner"] is not None and layout["banner"][1] > 20
    assert layout["scrollWidth"] <= layout["innerWidth"], "the page scrolls sideways"
    assert layout["scripts"] == 0 and layout["alerts"]  # hostile text shows as text and never runs


def test_the_report_prints(browser, report_file):
    browser.open(report_file.as_uri())
    pdf = browser.print_pdf()
    assert pdf.startswith(b"%PDF") and len(pdf) > 20_000


def test_the_console_check_would_catch_an_error(browser, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!doctype html><p>x</p><script>console.error("boom"); missingFunction();</script><img src="missing.png">')
    browser.console()
    browser.open(page.as_uri())
    found = "\n".join(problems(browser.console()))
    assert "boom" in found and "missingFunction" in found and "missing.png" in found
