"""pytest-html integration: each test's circuitcheck claims as an extra in its pytest-html row.

Registered through the ``pytest11`` entry point; it does nothing unless
pytest-html is active (``--html=...``). It reads only what circuitcheck puts on
the test report (the JSON-safe claim records), so it stays a plain consumer.
"""

from __future__ import annotations

from html import escape

import pytest


@pytest.hookimpl(hookwrapper=True, tryfirst=True)  # outermost: circuitcheck's own wrapper has set the claims by now
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    claims = getattr(report, "circuitcheck", None)
    if report.when != "call" or not claims:
        return
    html_plugin = item.config.pluginmanager.getplugin("html")
    if html_plugin is None or not hasattr(html_plugin, "extras"):
        return
    extras = list(getattr(report, "extras", []) or [])
    extras.append(html_plugin.extras.html(claims_html(claims)))
    report.extras = extras


def claims_html(claims: list[dict]) -> str:
    """A small table of the claims, in the words of :func:`circuitcheck.claims.format.row`: verdict, claim, measured value
    with interval, requirement with the bound that decided, model."""
    from circuitcheck.claims.format import FAILED, row  # light: no torch, pandas or numpy

    rows = []
    for claim in claims:
        cells = row(claim)
        colour = "#a4161a" if cells.verdict == FAILED else "#17603a"
        rows.append(
            f'<tr><td style="color:{colour};font-weight:600">{cells.verdict}</td><td>{escape(cells.claim)}</td>'
            f"<td>{escape(cells.measured)}</td><td>{escape(cells.required)}<br><small>decided on the {escape(cells.decision)}</small></td>"
            f"<td>{escape(cells.model)}</td></tr>"
        )
    return (
        '<div class="circuitcheck"><p><strong>circuitcheck claims</strong></p>'
        "<table><tr><th>verdict</th><th>claim</th><th>measured [interval]</th><th>required</th><th>model</th></tr>"
        + "".join(rows)
        + "</table></div>"
    )
