"""The HTML report in a real browser: headless Chromium renders every section without console errors.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``.ci/run``
installs them). Without them the tests are skipped, except under CI (the
``CI`` environment variable is set), where a missing browser is a failure.
WebDriver is spoken by selenium (the ``test`` extra), which starts the
installed chromedriver itself.

Set ``CIRCUITCHECK_SCREENSHOT=/some/path.png`` to keep the screenshot
(1280 x 3000: the summary and the claims-across-checkpoints section with its charts).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as ChromeService
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.print_page_options import PrintOptions
except ImportError:  # the screenshot test needs no WebDriver; the others say what is missing
    webdriver = None

from circuitcheck import report

# tests/ is on sys.path (pytest's default "prepend" import mode); one document serves both files
from test_report import XSS, checkpoint_tests, document_with_every_section, head_claim

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
    skip_or_fail(message)


def require_selenium() -> None:
    if webdriver is None:
        skip_or_fail("selenium is not installed: pip install -e '.[test]'")


def skip_or_fail(message: str) -> None:
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


class Browser:
    """The selenium session these tests use: headless Chromium with its console log kept."""

    def __init__(self, driver):
        self.driver = driver

    def open(self, url: str) -> None:
        self.driver.get(url)

    def script(self, source: str):
        return self.driver.execute_script(source)

    def console(self) -> list[dict]:
        """Browser log entries since the last call (console messages, script errors, failed loads)."""
        return self.driver.get_log("browser")

    def print_pdf(self) -> bytes:
        options = PrintOptions()
        options.background = True
        return base64.b64decode(self.driver.print_page(options))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    require(CHROMIUM)
    require(CHROMEDRIVER)
    require_selenium()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}", "--window-size=1280,1600"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # both paths given: selenium starts this chromedriver and never asks Selenium Manager to download one
    driver = webdriver.Chrome(options=options, service=ChromeService(executable_path=CHROMEDRIVER))
    try:
        yield Browser(driver)
    finally:
        driver.quit()


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


def test_pictures_drawn_once_and_referenced_render_in_every_figure(browser, tmp_path):
    """Claims on the same head and prompt draw its pattern once; the later figures' <use> references render as the first."""
    claims = [head_claim(tokens=tuple(f"t{i}" for i in range(30))) for _ in range(3)]
    document = report.new_document({}, complete=True)
    document["tests"] = [{"nodeid": f"t{i}", "outcome": "passed", "claims": [c]} for i, c in enumerate(claims)]
    page = report.write_html(tmp_path / "shared.html", document)
    browser.console()
    browser.open(page.as_uri())
    figures = browser.driver.find_elements(By.CSS_SELECTOR, 'svg.heatmap[aria-label^="attention pattern"]')
    uses = [len(figure.find_elements(By.TAG_NAME, "use")) for figure in figures]
    assert uses == [0, 2, 2]  # the second and third refer to the first's labels and cells
    first, *others = [figure.screenshot_as_png for figure in figures]
    assert len(first) > 5_000 and all(other == first for other in others)  # and look exactly like it
    assert problems(browser.console()) == []
