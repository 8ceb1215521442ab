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
    """A small table of the claims: verdict, measured value with interval, threshold, claim."""
    rows = []
    for claim in claims:
        verdict = "held" if claim.get("passed") else "failed"
        colour = "#17603a" if claim.get("passed") else "#a4161a"
        value = claim.get("value")
        measured = "nan" if value is None else f"{value:.3f}"
        if claim.get("ci_low") is not None and claim.get("ci_high") is not None:
            measured += f" [{claim['ci_low']:.3f}, {claim['ci_high']:.3f}]"
        bounds = [f"&ge; {claim['min_value']:.3g}" if claim.get("min_value") is not None else "",
                  f"&le; {claim['max_value']:.3g}" if claim.get("max_value") is not None else ""]
        rows.append(
            f'<tr><td style="color:{colour};font-weight:600">{verdict}</td><td>{escape(str(claim.get("claim", "")))}</td>'
            f"<td>{escape(str(claim.get('metric', '')))} {measured}</td><td>{' '.join(b for b in bounds if b)}</td>"
            f"<td>{escape(str(claim.get('model') or ''))}</td></tr>"
        )
    return (
        '<div class="circuitcheck"><p><strong>circuitcheck claims</strong></p>'
        '<table><tr><th>verdict</th><th>claim</th><th>measured [95% CI]</th><th>required</th><th>model</th></tr>'
        + "".join(rows)
        + "</table></div>"
    )
