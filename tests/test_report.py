"""The report: JSON document, self-contained HTML page with SVG charts, the CLI and load()."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys

import pandas as pd
import pytest

from circuitcheck import report
from circuitcheck.errors import CircuitCheckError
from circuitcheck.report.charts import ColorScale, format_number, nice_ticks
from circuitcheck.claims.result import CheckResult, frame_to_json

XSS = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


# Documents built by hand, shaped as the checks record them ----------------------------------


def claim(kind: str, text: str, *, passed: bool = True, value: float = 0.9, low: float = 0.85, high: float = 0.95,
          min_value: float | None = 0.5, max_value: float | None = None, model: str = "zoo:induction-2l",
          evidence: dict | None = None, parameters: dict | None = None, notes: list[str] | None = None,
          metric: str = "score", decided_on: str = "lower bound") -> dict:
    return CheckResult(
        kind=kind, claim=text, value=value, passed=passed, n=16, metric=metric, min_value=min_value, max_value=max_value,
        ci_low=low, ci_high=high, confidence=0.95, decided_on=decided_on, model=model, parameters=parameters or {},
        evidence=evidence or {}, notes=notes or [],
    ).to_dict()


def head_claim(layer=1, head=3, tokens=("<bos>", "4", "z", "4", "z"), **kwargs) -> dict:
    labels = [f"{i}:{t}" for i, t in enumerate(tokens)]
    n = len(labels)
    pattern = [[1.0 / (i + 1) if j <= i else 0.0 for j in range(n)] for i in range(n)]
    scores = pd.DataFrame([[0.01, 0.03, 0.0, 0.04], [0.84, 0.80, 0.84, 0.83]], index=pd.Index([0, 1], name="layer"),
                          columns=pd.Index([0, 1, 2, 3], name="head"))
    evidence = {
        "head_scores": scores,
        "per_prompt": pd.DataFrame({"score": [0.81, 0.84]}, index=pd.RangeIndex(2, name="prompt")),
        "attention": pd.DataFrame(pattern, index=pd.Index(labels, name="query"), columns=pd.Index(labels, name="key")),
    }
    kwargs.setdefault("notes", ["highest-scoring heads: L1H0 0.845, L1H2 0.844, L1H3 0.827"])
    return claim("induction_head", f"L{layer}H{head} is an induction head", metric="induction score", decided_on="mean",
                 parameters={"component": f"L{layer}H{head}", "layer": layer, "head": head, "seed": 0}, evidence=evidence, **kwargs)


def necessary_claim(**kwargs) -> dict:
    table = pd.DataFrame({"ablated": ["L0H0 L1H3", "L0H0", "L1H3"], "drop": [0.8, 0.39, 0.45], "ci_low": [0.76, 0.33, 0.39],
                          "ci_high": [0.84, 0.46, 0.52], "metric_ablated": [-4.8, -2.5, -2.9]})
    means = pd.DataFrame({"run": ["full model m(M)", "ablated m(M\\C)", "everything ablated m(∅)"], "mean_metric": [-0.35, -4.8, -5.96]})
    kwargs.setdefault("parameters", {"components": "L0H0 L1H3", "task": "induction", "ablation": "resample"})
    return claim("necessary", "L0H0 L1H3 are necessary for induction", metric="drop", value=0.8, low=0.76, high=0.84, min_value=0.7,
                 evidence={"necessity": table, "means": means}, **kwargs)


def sufficient_claim(circuit="'induction' (L0H0 L1H3)", value=0.95, low=0.93, high=0.97, min_value=0.9, passed=True, **kwargs) -> dict:
    table = pd.DataFrame({"circuit": [circuit], "recovery": [value], "ci_low": [low], "ci_high": [high]})
    means = pd.DataFrame({"run": ["full model m(M)", "circuit only m(C)", "everything ablated m(∅)"],
                          "mean_metric": [-0.35, -0.63, -5.96]})
    return claim("sufficient", f"{circuit} is sufficient for induction", metric="recovery", value=value, low=low, high=high,
                 min_value=min_value, passed=passed, evidence={"sufficiency": table, "means": means}, **kwargs)


def minimal_claim(components=("L1H2", "L0H0", "L1H3"), contributions=(0.02, 0.44, 0.49), min_value=0.05, **kwargs) -> dict:
    table = pd.DataFrame({"component": list(components), "contribution": list(contributions),
                          "ci_low": [c - 0.03 for c in contributions], "ci_high": [c + 0.03 for c in contributions],
                          "recovery_without": [0.95 - c for c in contributions]})
    return claim("minimal", "the circuit is minimal for induction (every component contributes)", passed=False,
                 metric=f"contribution of the weakest component ({components[0]})", value=contributions[0], low=contributions[0] - 0.03,
                 high=contributions[0] + 0.03, min_value=min_value, decided_on="lower bound of every component",
                 evidence={"minimality": table}, notes=[f"below the threshold: {components[0]}"], **kwargs)


def path_claim(**kwargs) -> dict:
    table = pd.DataFrame({"run": ["clean", "corrupted", "path patched (noise)"], "mean_metric": [-0.35, -6.01, -1.84]})
    return claim("path", "the path L0H0 -> L1H3.k carries the effect on induction", metric="path effect", value=0.26, low=0.22,
                 high=0.30, min_value=0.1, parameters={"components": "L0H0 -> L1H3.k", "direction": "noise"},
                 evidence={"path": table}, **kwargs)


def lens_claim(**kwargs) -> dict:
    """A claim kind this report does not know yet: its evidence must still show, as a plain table."""
    table = pd.DataFrame({"layer": [0, 1], "kl": [2.5, 0.01], "top1_agrees": [False, True]})
    return claim("logit_lens_converges", "the logit lens has converged by layer 1", metric="layer", value=1.0, low=None, high=None,
                 min_value=None, max_value=1.0, evidence={"lens_by_layer": table}, **kwargs)


def sweep(what="resid_pre", axes=("layer", "pos"), rows=2, cols=5, title=None) -> dict:
    values = [[(i * cols + j) / (rows * cols - 1) * 2 - 1 for j in range(cols)] for i in range(rows)]
    matrix = pd.DataFrame([[v * 3 for v in row] for row in values])
    normalized = pd.DataFrame(values)
    for frame in (matrix, normalized):
        frame.index.name, frame.columns.name = axes
    return {"what": what, "axes": list(axes), "direction": "denoise", "title": title or f"{what} patching (denoise)",
            "matrix": frame_to_json(matrix), "normalized": frame_to_json(normalized)}


def document_with_every_section(complete: bool = True) -> dict:
    """Every section populated: head, necessity, sufficiency (held and failed), minimality, path, unknown kind, sweeps, checkpoints."""
    document = report.new_document({"python": "3.11.9", "seed": 0, "device": "cpu", "models loaded": "zoo:induction-2l on cpu"})
    document["complete"] = complete
    document["tests"] = [
        {"nodeid": "tests/test_heads.py::test_induction_heads", "outcome": "passed", "duration": 0.42,
         "claims": [head_claim(), head_claim(layer=0, head=0, passed=False, value=0.01, low=0.0, high=0.02)]},
        {"nodeid": "tests/test_circuit.py::test_induction_circuit", "outcome": "failed", "duration": 3.1,
         "claims": [necessary_claim(), sufficient_claim(), minimal_claim(), path_claim()],
         "sweeps": [sweep(), sweep("head_out", ("layer", "head"), rows=2, cols=4)]},
        {"nodeid": "tests/test_checkpoints.py::test_sufficient[step800]", "outcome": "failed", "duration": 1.0,
         "claims": [sufficient_claim(model="zoo:induction-2l@step800", value=0.4, low=0.3, high=0.5, passed=False)]},
        {"nodeid": "tests/test_checkpoints.py::test_sufficient[step1000]", "outcome": "passed", "duration": 1.0,
         "claims": [sufficient_claim(model="zoo:induction-2l@step1000")]},
        {"nodeid": "tests/test_lens.py::test_lens", "outcome": "passed", "duration": 0.2, "claims": [lens_claim()]},
        {"nodeid": "tests/test_plain.py::test_no_claims", "outcome": "skipped", "duration": 0.0, "claims": []},
    ]
    return document


# L1H0's induction score in zoo:induction-2l over training (as check_head measures it): it fails until step1000
# and holds from step2400, the phase change; listed out of order, as xdist may deliver them
INDUCTION_OVER_TRAINING = {
    "step2400": (0.836, 0.821, 0.852), "step0": (0.032, 0.028, 0.036), "step600": (0.390, 0.365, 0.415),
    "step3000": (0.844, 0.827, 0.860), "step300": (0.023, 0.019, 0.027), "step1000": (0.734, 0.711, 0.758),
    "step550": (0.128, 0.117, 0.138),
}
CHECKPOINT_ORDER = ["step0", "step300", "step550", "step600", "step1000", "step2400", "step3000"]


def checkpoint_tests(test: str = "tests/test_training.py::test_induction_forms") -> list[dict]:
    """Test records of a run with ``--circuitcheck-checkpoints``: one per checkpoint, each with three claims.

    L1H0 is an induction head (min 0.8: fails, then holds), L0H0 is not one (max 0.2: holds throughout), and a
    claim measured on one checkpoint only. Baselines: step3000 regressed, step2400 within tolerance, step0 new.
    """
    records = []
    for checkpoint, (value, low, high) in INDUCTION_OVER_TRAINING.items():
        model = f"zoo:induction-2l@{checkpoint}"
        induction = head_claim(layer=1, head=0, value=value, low=low, high=high, min_value=0.8, passed=low >= 0.8, model=model)
        induction["checkpoint"] = checkpoint
        not_induction = claim("induction_head", "L0H0 is not an induction head", value=value / 8, low=low / 8, high=high / 8,
                              min_value=None, max_value=0.2, model=model, metric="induction score", decided_on="mean")
        claims = [induction, not_induction]
        if checkpoint == "step3000":
            induction["baseline"] = {"status": "regressed", "stored": 0.95, "measured": value, "allowed": 0.05,
                                     "delta": round(value - 0.95, 6)}
            claims.append(claim("previous_token_head", "L0H1 is a previous-token head", model=model))
        elif checkpoint == "step2400":
            induction["baseline"] = {"status": "ok", "stored": 0.835, "measured": value, "allowed": 0.05, "delta": round(value - 0.835, 6)}
        elif checkpoint == "step0":
            induction["baseline"] = {"status": "new", "stored": None, "measured": value, "allowed": None, "delta": None}
        for c in claims:
            if "baseline" in c:
                c["baseline_key"] = f"{test}[{checkpoint}] :: {c['claim']}"
                c["baseline_test"] = f"{test}[{checkpoint}]"
        records.append({"nodeid": f"{test}[{checkpoint}]", "test": test, "test_id": f"{test}[{checkpoint}]", "checkpoint": checkpoint,
                        "outcome": "passed" if all(c["passed"] for c in claims) else "failed", "duration": 0.5, "claims": claims})
    return records


def document_across_checkpoints(**kwargs) -> dict:
    document = report.new_document({"python": "3.11.9"})
    document["complete"] = True
    document["tests"] = checkpoint_tests(**kwargs)
    return document


def checkpoint_charts(html: str) -> list[str]:
    return re.findall(r'<svg class="chart checkpoint-chart".*?</svg>', section(html, "checkpoints"), re.S)


def section(html: str, name: str) -> str:
    match = re.search(rf'<section id="{name}">(.*?)</section>', html, re.S)
    assert match, f"no section {name!r}"
    return match.group(1)


@pytest.fixture(scope="module")
def html() -> str:
    return report.render_html(document_with_every_section())


# The page ------------------------------------------------------------------------------------------


def test_every_section_has_a_stable_id(html):
    for name in ("summary", "tests", "necessity", "sufficiency", "minimality", "heatmaps", "paths", "environment"):
        assert f'<section id="{name}">' in html


def test_a_document_without_claims_still_renders_every_section():
    html = report.render_html(report.new_document({}))
    for name in ("summary", "necessity", "sufficiency", "minimality", "heatmaps", "environment"):
        assert "<svg" not in section(html, name)
    assert "No circuitcheck claims were recorded" in html


def test_the_summary_counts_claims_and_tests(html):
    summary = section(html, "summary")
    assert re.search(r'<span class="big">6</span>claims held', summary)
    assert re.search(r'<span class="big">3</span>claims failed', summary)
    assert "outcome-skipped" in summary
    for kind in ("induction_head", "necessary", "sufficient", "minimal", "path", "logit_lens_converges"):
        assert f"<td>{kind}</td>" in summary


def test_failed_claims_are_listed_first_with_links(html):
    summary = section(html, "summary")
    failed = re.findall(r'<li><a href="#(claim-\d+)">', summary)
    assert len(failed) == 3
    for anchor in failed:
        assert f'id="{anchor}"' in html


def test_claims_are_grouped_by_the_checkpoint_after_the_at_sign():
    summary = report.summarize(document_with_every_section())
    assert summary["by_checkpoint"] == {"step800": {"passed": 0, "failed": 1}, "step1000": {"passed": 1, "failed": 0}}
    assert "zoo:induction-2l@step800" in summary["by_model"]


def test_a_claim_measured_on_several_checkpoints_is_one_row_in_checkpoint_order(html):
    table = re.search(r'<table class="checkpoints">(.*?)</table>', html, re.S).group(1)
    assert table.index(">step800<") < table.index(">step1000<")
    row = re.search(r'<td class="cp-claim">&#39;induction&#39; \(L0H0 L1H3\) is sufficient for induction<br>(.*?)</tr>', table,
                    re.S).group(1)
    assert re.findall(r'class="cp (held|failed)"', row) == ["failed", "held"]


def test_a_claims_own_checkpoint_key_wins_over_the_model_spec():
    document = report.new_document({})
    tagged = head_claim()
    tagged["checkpoint"] = "step400"
    document["tests"] = [{"nodeid": "t", "outcome": "passed", "claims": [tagged]}]
    assert report.summarize(document)["by_checkpoint"] == {"step400": {"passed": 1, "failed": 0}}
    assert report.Results(document).frame()["checkpoint"].tolist() == ["step400"]


def test_claim_keys_the_page_does_not_know_are_shown_as_text():
    document = report.new_document({})
    extended = head_claim()
    extended["drift"] = {"status": "large", "value": 0.91}
    document["tests"] = [{"nodeid": "t", "outcome": "failed", "claims": [extended]}]
    tests = section(report.render_html(document), "tests")
    assert '<b>drift</b> {&#34;status&#34;: &#34;large&#34;, &#34;value&#34;: 0.91}' in tests


def test_without_checkpoints_there_is_no_checkpoint_table():
    document = report.new_document({})
    document["tests"] = [{"nodeid": "t", "outcome": "passed", "claims": [head_claim()]}]
    assert report.summarize(document)["by_checkpoint"] == {}
    assert 'class="checkpoints"' not in report.render_html(document)


# Claims across checkpoints ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoints_html() -> str:
    return report.render_html(document_across_checkpoints())


def test_the_checkpoints_section_has_one_line_chart_per_claim_measured_on_several_checkpoints(checkpoints_html):
    assert '<a href="#checkpoints">' in checkpoints_html
    charts = checkpoint_charts(checkpoints_html)
    assert len(charts) == 2  # L1H0 and L0H0; the previous-token claim was measured on step3000 only
    assert 'aria-label="L1H0 is an induction head over checkpoints"' in charts[0]
    assert 'aria-label="L0H0 is not an induction head over checkpoints"' in charts[1]
    for chart in charts:
        assert chart.count('<g class="point ') == len(CHECKPOINT_ORDER)
        assert chart.count('class="whisker"') == len(CHECKPOINT_ORDER)
        assert 'class="value-line"' in chart


def test_checkpoints_are_in_natural_order_in_the_matrix_and_the_charts(checkpoints_html):
    checkpoints = section(checkpoints_html, "checkpoints")
    header = re.search(r'<table class="checkpoints">\s*<thead>(.*?)</thead>', checkpoints, re.S).group(1)
    assert re.findall(r'<th class="num">([^<]+)</th>', header) == CHECKPOINT_ORDER
    for chart in checkpoint_charts(checkpoints_html):
        assert re.findall(r'class="tick mono checkpoint-label">([^<]+)</text>', chart) == CHECKPOINT_ORDER
        xs = [float(x) for x in re.findall(r'<circle cx="([\d.]+)"', chart)]
        gaps = {round(b - a, 1) for a, b in zip(xs, xs[1:])}
        assert len(gaps) == 1  # evenly spaced, whatever the step numbers


def test_the_induction_chart_switches_from_failed_to_held_points_across_the_threshold(checkpoints_html):
    chart = checkpoint_charts(checkpoints_html)[0]
    assert re.findall(r'<g class="point (held|failed)">', chart) == ["failed"] * 5 + ["held"] * 2
    assert 'class="threshold min"' in chart and ">min 0.800</text>" in chart and 'stroke-dasharray="5 3"' in chart
    assert 'class="fail-region"' in chart
    assert "<title>step600: induction score 0.390 [0.365, 0.415] (95%), required ≥ 0.8: failed</title>" in chart
    assert "<title>step3000: induction score 0.844 [0.827, 0.860] (95%), required ≥ 0.8: held (baseline regressed)</title>" in chart
    # failing points sit below the dashed line, passing ones above it (SVG y grows downwards)
    y_threshold = float(re.search(r'<polyline points="[\d.]+,([\d.]+) [^"]*"[^>]*class="threshold min"', chart).group(1))
    ys = [float(y) for y in re.findall(r'<circle cx="[\d.]+" cy="([\d.]+)"', chart)]
    assert all(y > y_threshold for y in ys[:5]) and all(y < y_threshold for y in ys[5:])
    figure = re.search(r'<figure class="block checkpoint-figure" id="checkpoint-chart-0">(.*?)</figure>', checkpoints_html, re.S).group(1)
    assert "failed step0–step1000 · held step2400–step3000" in figure and "whiskers: 95% interval" in figure


def test_an_is_not_claim_over_checkpoints_draws_its_maximum(checkpoints_html):
    chart = checkpoint_charts(checkpoints_html)[1]
    assert 'class="threshold max"' in chart and ">max 0.200</text>" in chart and 'class="threshold min"' not in chart
    assert set(re.findall(r'<g class="point (held|failed)">', chart)) == {"held"}


def test_points_link_to_their_claims_and_claims_to_their_chart(checkpoints_html):
    chart = checkpoint_charts(checkpoints_html)[0]
    for anchor in re.findall(r'<a href="#(claim-\d+)"><g class="point', chart):
        assert f'id="{anchor}"' in checkpoints_html
    assert checkpoints_html.count('<a href="#checkpoint-chart-0">over checkpoints</a>') == len(CHECKPOINT_ORDER)


def test_the_matrix_cells_show_verdict_and_value(checkpoints_html):
    table = re.search(r'<table class="checkpoints">(.*?)</table>', checkpoints_html, re.S).group(1)
    row = re.search(r'<td class="cp-claim">L1H0 is an induction head<br>(.*?)</tr>', table, re.S).group(1)
    assert re.findall(r'class="cp (held|failed)"', row) == ["failed"] * 5 + ["held"] * 2
    assert "✗</span> 0.390" in row and "✓</span> 0.844" in row and 'class="regressed-mark"' in row
    single = re.search(r'<td class="cp-claim">L0H1 is a previous-token head<br>(.*?)</tr>', table, re.S).group(1)
    assert single.count('<td class="cp muted">–</td>') == len(CHECKPOINT_ORDER) - 1


def test_the_same_claim_is_found_by_test_id_or_by_the_nodeid_without_its_checkpoint():
    by_nodeid = [{k: v for k, v in record.items() if k not in ("test", "test_id", "checkpoint")} for record in checkpoint_tests()]
    for record in by_nodeid:
        for c in record["claims"]:
            c.pop("checkpoint", None)  # only the model spec says it: zoo:induction-2l@step600
    document = report.new_document({})
    document["tests"] = by_nodeid + checkpoint_tests(test="tests/test_other.py::test_again")
    html = report.render_html(document)
    assert len(checkpoint_charts(html)) == 4  # two claims in each of two tests
    table = re.search(r'<table class="checkpoints">(.*?)</table>', html, re.S).group(1)
    assert table.count('<td class="cp-claim">L1H0 is an induction head<br>') == 2
    assert "tests/test_training.py::test_induction_forms</span>" in table and "tests/test_other.py::test_again</span>" in table


def test_checkpoint_text_is_escaped_in_the_chart():
    document = report.new_document({})
    records = []
    for checkpoint, value in ((f"{XSS}1", 0.2), (f"{XSS}2", 0.9)):
        hostile = head_claim(value=value, low=value - 0.01, high=value + 0.01, min_value=0.8, passed=value > 0.8)
        hostile["checkpoint"], hostile["claim"] = checkpoint, XSS
        records.append({"nodeid": f"t[{checkpoint}]", "outcome": "passed", "claims": [hostile]})
    document["tests"] = records
    html = report.render_html(document)
    assert "<script" not in html
    chart = checkpoint_charts(html)[0]
    assert f'aria-label="{ESCAPED} over checkpoints"' in chart and ">&lt;script&gt;alert…<title>" in chart
    assert f"<title>{ESCAPED}1: induction score 0.200" in chart


def test_baseline_status_shows_in_the_claim_row_and_regressions_are_counted(checkpoints_html):
    summary, tests = section(checkpoints_html, "summary"), section(checkpoints_html, "tests")
    assert re.search(r'<div class="stat failed baseline-stat"><span class="big">1</span>baseline regression<br>', summary)
    assert "3 compared: regressed 1 · ok 1 · new 1" in summary
    regressions = re.search(r'<ul class="regressed-list">(.*?)</ul>', summary, re.S).group(1)
    assert regressions.count("<li>") == 1 and "L1H0 is an induction head" in regressions and "stored 0.950, down 0.106" in regressions
    regressed = re.search(r'<tr class="claim-row held-claim regressed-claim" id="claim-\d+">.*?<tr class="note-row[^"]*">(.*?)</tr>',
                          tests, re.S)
    assert regressed is not None
    key = "tests/test_training.py::test_induction_forms[step3000] :: L1H0 is an induction head"
    assert f'<span class="baseline regressed" title="baseline entry: {key}">baseline regressed</span>' in regressed.group(1)
    assert '<span class="baseline-text">stored 0.950, down 0.106, allowed ±0.050</span>' in regressed.group(1)
    assert '<span class="baseline ok"' in tests and "stored 0.835, up 0.001, allowed ±0.050" in tests
    assert '<span class="baseline new"' in tests and "not in the baseline yet" in tests
    assert "<b>baseline</b>" not in tests and "<b>baseline_key</b>" not in tests  # not repeated as unknown keys


def test_without_a_baseline_the_summary_has_no_baseline_count(html):
    assert "baseline-stat" not in html and "regressed-list" not in html


def test_real_induction_claims_over_checkpoints_switch_from_failing_to_passing():
    import circuitcheck as cc

    records = []
    for checkpoint in ("step3000", "step0", "step600", "step2400"):  # out of order on purpose
        result = cc.check_head(1, 0, "induction", model=cc.load_model(f"zoo:induction-2l@{checkpoint}", device="cpu"), min_score=0.8,
                               n_prompts=8)
        record = result.to_dict()
        record["checkpoint"] = checkpoint
        nodeid = f"tests/test_zoo.py::test_l1h0[{checkpoint}]"
        records.append({"nodeid": nodeid, "test": "tests/test_zoo.py::test_l1h0", "test_id": nodeid, "checkpoint": checkpoint,
                        "outcome": "passed" if result.passed else "failed", "claims": [record]})
    document = report.new_document({})
    document["tests"] = json.loads(json.dumps(records))
    html = report.render_html(document)
    [chart] = checkpoint_charts(html)
    assert re.findall(r'class="tick mono checkpoint-label">([^<]+)</text>', chart) == ["step0", "step600", "step2400", "step3000"]
    assert re.findall(r'<g class="point (held|failed)">', chart) == ["failed", "failed", "held", "held"]
    assert ">min 0.800</text>" in chart


def test_each_claim_shows_value_interval_threshold_verdict_and_lab_note(html):
    tests = section(html, "tests")
    row = re.search(r'<tr class="claim-row held-claim" id="claim-0">(.*?)</tr>\s*<tr class="note-row[^"]*">(.*?)</tr>', tests, re.S)
    claim_cells, note = row.groups()
    assert "L1H3 is an induction head" in claim_cells
    assert "0.900" in claim_cells and "[0.850, 0.950] (95%)" in claim_cells
    assert "≥ 0.5" in claim_cells and "on the mean" in claim_cells and 'class="pill held"' in claim_cells
    assert "highest-scoring heads: L1H0 0.845" in note


def test_necessity_has_a_table_and_chart_per_claim(html):
    necessity = section(html, "necessity")
    assert necessity.count('<table class="evidence">') == 1
    assert necessity.count('<svg class="chart interval-chart"') == 1
    for text in ("all together", "L0H0", "L1H3", "0.800", "metric_ablated", "everything ablated m(∅) = -5.960"):
        assert text in necessity


def test_sufficiency_is_one_bar_per_claim_with_interval_and_threshold(html):
    sufficiency = section(html, "sufficiency")
    chart = re.search(r'<svg class="chart interval-chart".*?</svg>', sufficiency, re.S).group(0)
    assert chart.count('<g class="bar-row">') == 3
    assert chart.count('class="threshold"') == 3
    assert "0.400  [0.300, 0.500]" in chart
    assert "induction · step800" in chart  # several models: the label says which


def test_minimality_chart_shows_every_component_sorted_with_the_threshold_line(html):
    minimality = section(html, "minimality")
    chart = re.search(r'<svg class="chart interval-chart".*?</svg>', minimality, re.S).group(0)
    labels = re.findall(r'class="bar-label mono">([^<]+)</text>', chart)
    assert labels == ["L1H2", "L0H0", "L1H3"]
    assert "min 0.050" in chart and 'stroke-dasharray="5 3" class="threshold"' in chart
    assert chart.count("<circle") == 3 and chart.count('class="interval"') == 3  # a whisker (with its two caps) per component


def test_minimality_sorts_components_even_when_recorded_unsorted():
    document = report.new_document({})
    unsorted = minimal_claim(components=("B", "A", "C"), contributions=(0.3, 0.1, 0.2))
    document["tests"] = [{"nodeid": "t", "outcome": "passed", "claims": [unsorted]}]
    chart = section(report.render_html(document), "minimality")
    assert re.findall(r'class="bar-label mono">([^<]+)</text>', chart) == ["A", "C", "B"]


def test_patching_heatmaps_have_a_cell_per_entry_with_hover_values_and_a_legend(html):
    heatmaps = section(html, "heatmaps")
    layer_pos = re.search(r'<svg class="chart heatmap"[^>]*aria-label="resid_pre patching \(denoise\)".*?</svg>', heatmaps, re.S).group(0)
    assert layer_pos.count('<rect class="cell"') == 2 * 5
    assert "<title>layer 1, pos 4: normalised 1.000 (mean metric 3.000)</title>" in layer_pos
    assert "pos &#8594;" in layer_pos and "layer &#8595;" in layer_pos
    assert heatmaps.count('class="chart legend"') >= 2
    assert "normalised (0 = corrupted, 1 = clean)" in heatmaps


def test_patching_colours_diverge_from_white_at_zero():
    scale = ColorScale.diverging([[-0.5, 0.0, 2.0]])
    assert (scale.vmin, scale.vmax) == (-2.0, 2.0)
    assert scale.color(0.0) == "#f7f7f7"
    red, blue = scale.color(2.0), scale.color(-2.0)
    assert int(red[1:3], 16) > int(red[5:7], 16) and int(blue[5:7], 16) > int(blue[1:3], 16)
    assert ColorScale.diverging([[0.0]]).vmax == 1.0  # no division by zero on an all-zero sweep


def test_a_sweep_without_normalised_values_shows_the_mean_metric():
    document = report.new_document({})
    raw = sweep()
    raw["normalized"] = None
    document["tests"] = [{"nodeid": "t", "outcome": "passed", "claims": [], "sweeps": [raw]}]
    heatmaps = section(report.render_html(document), "heatmaps")
    assert "<title>layer 1, pos 4: mean metric 3.000</title>" in heatmaps


def test_attention_heatmaps_label_their_axes_with_position_and_token(html):
    heatmaps = section(html, "heatmaps")
    assert heatmaps.count('aria-label="attention pattern of L1H3 on the first prompt"') == 1
    assert ">0:&lt;bos&gt;<" in heatmaps and ">3:4<" in heatmaps
    assert "<title>query 2:z, key 1:4: attention 0.333</title>" in heatmaps


def test_long_attention_patterns_are_cropped_and_masked_cells_are_not_drawn_one_by_one():
    document = report.new_document({})
    document["tests"] = [{"nodeid": "t", "outcome": "passed", "claims": [head_claim(tokens=tuple(f"t{i}" for i in range(200)))]}]
    heatmaps = section(report.render_html(document), "heatmaps")
    attention = re.search(r'<svg class="chart heatmap"[^>]*aria-label="attention pattern.*?</svg>', heatmaps, re.S).group(0)
    assert "first 80 of 200 positions" in heatmaps
    # compact: no rect per cell, the causal mask (and weights within half a colour step of 0) left to the background
    assert '<rect class="cell"' not in attention and attention.count("<title>query ") == 80


def test_the_head_score_grid_outlines_the_claimed_head(html):
    heatmaps = section(html, "heatmaps")
    grid = re.search(r'<svg class="chart heatmap"[^>]*aria-label="induction score of every head".*?</svg>', heatmaps, re.S).group(0)
    assert grid.count('<rect class="cell"') == 8 and grid.count('class="highlight"') == 1
    assert ">0.83<" in grid  # small grids print their values


def test_path_claims_are_a_table(html):
    paths = section(html, "paths")
    assert "L0H0 -&gt; L1H3.k" in paths and "noise" in paths and "path patched (noise) = -1.840" in paths


def test_evidence_of_an_unknown_claim_kind_is_a_plain_table(html):
    other = section(html, "other")
    assert "the logit lens has converged by layer 1" in other
    assert "<caption>lens_by_layer</caption>" in other and "<th>top1_agrees</th>" in other and "<td>True</td>" in other


def test_the_reports_copy_of_the_claim_kinds_is_the_registrys():
    from circuitcheck.report import kinds

    assert kinds.catalogue_text(kinds.catalogue_from_registry()) == kinds.CATALOGUE_PATH.read_text(encoding="utf-8"), (
        "circuitcheck/report/kind_catalogue.py is out of date: run python -m circuitcheck.report.kinds"
    )


def test_every_built_in_kind_has_a_section_the_page_draws():
    from circuitcheck.report import kinds
    from circuitcheck.report.attribution_sections import SECTIONS

    drawn = {"necessity", "sufficiency", "minimality", "completeness", "curves", "attention", "paths", *SECTIONS}
    assert {name: entry["section"] for name, entry in kinds.KINDS.items() if entry["section"] not in drawn} == {}


def test_section_definitions_are_the_records_definitions():
    from circuitcheck.claims import registry

    from circuitcheck.report.sections import section_definitions

    shown = section_definitions()
    paragraphs = [text for value in shown.values() for text in ([value] if isinstance(value, str) else value)]
    for kind in registry.kinds().values():
        assert any(kind.definition in text for text in paragraphs), kind.name
    assert escape_html(shown["necessity"]) in report.render_html(report.new_document({}))


def test_a_kind_without_a_section_is_shown_with_its_evidence_tables():
    table = pd.DataFrame({"score": [0.4, 0.6]}, index=pd.Index(["a", "b"], name="item"))
    document = report.new_document({})
    document["tests"].append({"nodeid": "t.py::test_mine", "outcome": "passed",
                              "claims": [claim("my_plugin_kind", "the widget is calibrated", evidence={"calibration": table})]})
    html = report.render_html(document)
    assert "the widget is calibrated" in section(html, "tests") and "my_plugin_kind" in section(html, "tests")
    assert "<caption>calibration</caption>" in section(html, "other") and "<th>item</th>" in section(html, "other")


def escape_html(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


def test_the_environment_lists_every_entry(html):
    environment = section(html, "environment")
    assert "<th>models loaded</th>" in environment and "zoo:induction-2l on cpu" in environment


def test_an_incomplete_run_shows_a_banner():
    assert 'class="banner incomplete"' in report.render_html(document_with_every_section(complete=False))


def test_a_complete_run_has_no_banner(html):
    assert 'class="banner incomplete"' not in html


def test_missing_and_non_finite_numbers_show_as_a_dash():
    document = report.new_document({})
    not_measured = claim("induction_head", "x", value=float("nan"), low=None, high=None)
    document["tests"] = [{"nodeid": "t", "outcome": "failed", "claims": [not_measured]}]
    tests = section(report.render_html(document), "tests")
    assert '<td class="num measured">–' in tests


def test_text_from_prompts_tokens_and_claims_is_escaped_everywhere_including_svg():
    document = report.new_document({"note": XSS})
    hostile = head_claim(tokens=("<bos>", XSS, "z"), notes=[XSS])
    hostile["claim"] = XSS
    document["tests"] = [
        {"nodeid": f"test_x.py::test[{XSS}]", "outcome": "passed", "claims": [
            hostile,
            minimal_claim(components=(XSS, "L0H0", "L1H3")),
            sufficient_claim(circuit=XSS),
            necessary_claim(parameters={"task": XSS}),
        ], "sweeps": [sweep(title=XSS)]},
    ]
    html = report.render_html(document)
    assert "<script" not in html
    assert html.count(ESCAPED) >= 10
    heatmaps, minimality = section(html, "heatmaps"), section(html, "minimality")
    assert f"<title>query 1:{ESCAPED}, key 0:&lt;bos&gt;: attention 0.500</title>" in heatmaps  # SVG <title>
    assert ">1:&lt;script&gt;alert…<" in heatmaps  # SVG <text>, clipped to fit the axis
    assert f'class="bar-label mono">{ESCAPED[:4]}' in minimality


def test_the_page_loads_nothing_from_outside(html):
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"<(script|link|iframe|img|object|embed)\b", html)
    assert not re.search(r"\b(src|href)=\"(?!#)", html)  # only in-page links
    assert "@import" not in html and "url(" not in html


# Writing, reading, load() ---------------------------------------------------------------------------


def test_json_round_trips_and_load_gives_one_row_per_claim(tmp_path):
    document = document_with_every_section()
    path = report.write_json(tmp_path / "results.json", document)
    results = report.load(path)
    assert results.document == document
    frame = results.frame()
    assert len(frame) == 9
    assert list(frame.columns[:16]) == ["nodeid", "outcome", "kind", "claim", "model", "checkpoint", "metric", "value", "ci_low", "ci_high",
                                        "confidence", "min_value", "max_value", "decided_on", "passed", "n"]
    assert frame["passed"].dtype == bool and frame["value"].dtype == float
    first = frame.iloc[0]
    assert (first["nodeid"], first["outcome"], first["kind"], first["param_layer"]) == (
        "tests/test_heads.py::test_induction_heads", "passed", "induction_head", 1)
    assert frame.set_index("model").loc["zoo:induction-2l@step800", "checkpoint"] == "step800"
    assert sorted(frame.loc[~frame["passed"], "kind"]) == ["induction_head", "minimal", "sufficient"]


def test_load_gives_each_claims_evidence_as_a_dataframe(tmp_path):
    results = report.load(report.write_json(tmp_path / "results.json", document_with_every_section()))
    minimality = results.evidence(4, "minimality")
    assert list(minimality["component"]) == ["L1H2", "L0H0", "L1H3"]
    with pytest.raises(KeyError, match="has no evidence 'nope'; it has: minimality"):
        results.evidence(4, "nope")


def test_a_run_without_claims_loads_as_an_empty_frame_with_the_columns():
    frame = report.Results(report.new_document({})).frame()
    assert frame.empty and "claim" in frame.columns and "passed" in frame.columns


def test_a_corrupt_results_file_error_names_the_path_and_line(tmp_path):
    path = tmp_path / "results.json"
    path.write_text('{\n  "circuitcheck_report": 1,\n  "tests": [\n    {"nodeid": "t",,}\n  ]\n}\n')
    with pytest.raises(CircuitCheckError, match=r"results\.json:4:20: not valid JSON at line 4, column 20"):
        report.load(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"something": "else"}', "is not a circuitcheck results file"),
        ('{"circuitcheck_report": 99, "tests": []}', "has results schema 99, newer than this circuitcheck reads"),
        ('{"circuitcheck_report": 1, "tests": {}}', "'tests' must be a list"),
        ('{"circuitcheck_report": 1, "tests": [{"nodeid": "a::b", "outcome": "passed", "claims": [{"kind": "x"}]}]}',
         r"tests\[0\]\.claims\[0\] \(a::b\) has no 'claim', 'passed'"),
    ],
)
def test_a_results_file_with_the_wrong_structure_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "results.json"
    path.write_text(content)
    with pytest.raises(CircuitCheckError, match=message):
        report.read_json(path)


def test_a_missing_results_file_is_a_clear_error(tmp_path):
    with pytest.raises(CircuitCheckError, match="results file '.*nope.json' does not exist"):
        report.load(tmp_path / "nope.json")


def test_reports_are_written_atomically_readable_and_overwrite_only_their_own(tmp_path):
    path = tmp_path / "report.html"
    report.write_html(path, document_with_every_section())
    report.write_html(path, document_with_every_section(complete=False))  # our own file: replaced
    assert 'class="banner incomplete"' in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    foreign = tmp_path / "results.json"
    foreign.write_text('{"mine": true}')
    with pytest.raises(CircuitCheckError, match="refusing to overwrite"):
        report.write_json(foreign, report.new_document({}))
    assert foreign.read_text() == '{"mine": true}'


# The command line ------------------------------------------------------------------------------------


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "circuitcheck", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_cli_rerenders_the_same_html_from_json(tmp_path):
    document = document_with_every_section()
    report.write_json(tmp_path / "results.json", document)
    result = run_cli("report", "results.json", "-o", "out/report.html", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wrote out/report.html: 9 claims, 6 held, 3 failed" in result.stdout
    assert (tmp_path / "out/report.html").read_text() == report.render_html(document)


def test_cli_writes_next_to_the_results_by_default_and_imports_nothing_heavy(tmp_path):
    report.write_json(tmp_path / "results.json", document_with_every_section())
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "circuitcheck", "report", "results.json"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0 and (tmp_path / "results.html").exists()
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "pandas", "numpy", "transformer_lens"}


def test_cli_corrupt_json_is_a_usage_error_naming_path_and_line(tmp_path):
    (tmp_path / "results.json").write_text('{\n  "circuitcheck_report": 1,\n  oops\n}\n')
    result = run_cli("report", "results.json", "-o", "report.html", cwd=tmp_path)
    assert result.returncode == 2
    assert "error: results.json:3:3: not valid JSON at line 3" in result.stderr
    assert not (tmp_path / "report.html").exists()


def test_cli_missing_results_file_is_a_usage_error(tmp_path):
    result = run_cli("report", "missing.json", cwd=tmp_path)
    assert result.returncode == 2 and "results file 'missing.json' does not exist" in result.stderr


def test_cli_refuses_to_overwrite_a_file_it_did_not_write(tmp_path):
    report.write_json(tmp_path / "results.json", document_with_every_section())
    (tmp_path / "notes.html").write_text("<p>my notes</p>")
    result = run_cli("report", "results.json", "-o", "notes.html", cwd=tmp_path)
    assert result.returncode == 2 and "refusing to overwrite 'notes.html'" in result.stderr
    assert (tmp_path / "notes.html").read_text() == "<p>my notes</p>"


@pytest.mark.parametrize("args", [[], ["report"], ["report", "a.json", "--bogus"], ["unknown-command"]])
def test_cli_usage_errors_exit_2(tmp_path, args):
    assert run_cli(*args, cwd=tmp_path).returncode == 2


# Helpers of the charts --------------------------------------------------------------------------------


@pytest.mark.parametrize(("lo", "hi"), [(0.0, 1.0), (-0.02, 0.61), (-6.0, -0.3), (0.5, 0.5), (0.0, 1e-7)])
def test_axis_ticks_are_round_and_cover_the_range(lo, hi):
    ticks = nice_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi and 2 <= len(ticks) <= 12
    assert ticks == sorted(ticks)


def test_numbers_are_formatted_for_people():
    assert [format_number(v) for v in (0.8123, 12.0, 3, None, float("nan"), 2e-5, 123456.0)] == [
        "0.812", "12.000", "3", "–", "–", "2e-05", "1.23e+05"]


# Real results from the zoo model -------------------------------------------------------------------------


def test_real_check_results_render_in_every_section(induction_2l, tmp_path):
    import circuitcheck as cc
    from circuitcheck import tasks

    task = tasks.induction(induction_2l, n_prompts=8, seq_len=8, seed=0)
    circuit = cc.Circuit.parse("L0H0 L1H3", name="induction")
    common = {"model": induction_2l, "task": task}
    claims = [
        cc.check_head(1, 3, "induction", model=induction_2l, n_prompts=2, half_len=6),
        cc.check_necessary(circuit, min_drop=0.1, **common),
        cc.check_sufficient(circuit, min_recovery=0.1, **common),
        cc.check_minimal(circuit, min_contribution=0.01, **common),
        cc.check_path("L0H0", "L1H3.k", **common),
    ]
    sweeps = [cc.Patcher(induction_2l).sweep(task, "head_out").to_dict(title="head_out")]
    document = report.new_document({"python": sys.version.split()[0]})
    document["complete"] = True
    document["tests"] = [
        {"nodeid": "t::real", "outcome": "passed", "duration": 1.0, "claims": [c.to_dict() for c in claims], "sweeps": sweeps}
    ]
    path = report.write_html(tmp_path / "report.html", json.loads(json.dumps(document)))
    html = path.read_text()
    for name in ("sufficiency", "minimality", "heatmaps", "necessity"):
        assert "<svg" in section(html, name), name
    assert "L0H0 -&gt; L1H3.k" in section(html, "paths")
    assert "other" not in re.findall(r'<section id="(\w+)">', html)  # every evidence table of the checks has its place


# Lenses, direct effects, composition, copying heads, probes ---------------------------------------

HEADS = ["L0H0", "L0H1", "L1H0", "L1H1"]


def attribution_claims() -> list[dict]:
    """One claim of each attribution-style kind, with evidence named and shaped as the checks record it."""
    lens_by_layer = pd.DataFrame({"mean_kl": [4.3, 0.02], "max_kl": [9.0, 0.05], "top1_agreement": [0.2, 1.0],
                                  "mean_p_final_top1": [0.12, 0.5], "converged": [False, True], "converged_from_here": [False, True]},
                                 index=pd.Index([0, 1], name="layer"))
    lens_top_k = pd.DataFrame({"layer": [0, 1], "position": [1, 1], "token": ["a", "a"], "final_top1": ["b", "b"],
                               "lens_top_k": [f"{XSS} 0.06", "b 0.9"], "p_final_top1": [0.03, 0.9], "kl": [0.36, 0.01]})
    dla = pd.DataFrame({"kind": ["embed", "head", "head", "attn_bias", "attn", "head", "head", "attn", "total"],
                        "layer": [None, 0, 0, 0, 0, 1, 1, 1, None], "head": [None, 0, 1, None, None, 0, 1, None, None],
                        "in_total": [True, False, False, False, True, False, False, True, False],
                        "mean": [0.5, -1.5, 0.2, 0.01, -1.29, 3.0, 0.1, 3.1, 2.3], "std": [0.1] * 9,
                        "share": [0.22, -0.65, 0.09, 0.0, -0.56, 1.3, 0.04, 1.35, 1.0]},
                       index=pd.Index(["embed", "L0H0", "L0H1", "L0.attn.b_O", "L0.attn", "L1H0", "L1H1", "L1.attn", "total"],
                                      name="component"))
    per_example = pd.DataFrame({"dla": [3.1, 2.9], "logit_diff": [2.4, 2.2]}, index=pd.Index([0, 1], name="example"))
    ranking = pd.DataFrame({"rank": [1, 2], "mean_dla": [3.0, -1.5], "share": [1.3, -0.65], "listed": [True, False]},
                           index=pd.Index(["L1H0", "L0H0"], name="component"))
    matrix = pd.DataFrame([[None, None, 0.23, 0.21], [None, None, 0.14, 0.15], [None] * 4, [None] * 4], index=HEADS, columns=HEADS,
                          dtype=float)
    matrix.index.name, matrix.columns.name = "sender", "receiver"
    baseline = pd.DataFrame({"value": [0.124, 0.007, 0.135, 200.0]}, index=pd.Index(["mean", "std", "q0.95", "samples"], name="statistic"))
    copying = pd.DataFrame([[0.87, -0.4], [0.27, 0.82]], index=pd.Index([0, 1], name="layer"), columns=pd.Index([0, 1], name="head"))
    probe = pd.DataFrame({"accuracy": [0.97], "ci_low": [0.95], "ci_high": [0.99], "majority_baseline": [0.05], "chance": [0.016],
                          "control_accuracy": [0.04], "selectivity": [0.93], "selectivity_ci_low": [0.9], "selectivity_ci_high": [0.96],
                          "train_accuracy": [1.0], "n_train": [90], "n_test": [30]}, index=pd.Index(["blocks.0.hook_resid_post"], name="hook"))
    per_class = pd.DataFrame({"n_train": [3.0, 2.0], "n_test": [1.0, 1.0], "accuracy": [1.0, None]}, index=pd.Index(["3", "4"], name="label"))
    return [
        claim("logit_lens", "the logit lens converges by layer 1", metric="KL(final || lens)", value=0.02, low=None, high=None,
              min_value=None, max_value=0.1, parameters={"layer": 1, "max_kl": 0.1},
              evidence={"lens_by_layer": lens_by_layer, "lens_top_k": lens_top_k}),
        claim("direct_effect", "L1H0 carries at least 10% of the direct effect on the answer logit", metric="direct-effect share",
              value=1.3, min_value=0.1, parameters={"component": "L1H0"}, evidence={"direct_logit_attribution": dla, "per_example": per_example}),
        claim("top_direct_effects", "L1H0, L0H0 are among the top 2 direct effects", value=1.0, low=None, high=None, min_value=1.0,
              parameters={"components": ["L1H0", "L0H0"], "k": 2}, evidence={"direct_logit_attribution": dla, "ranking": ranking}),
        claim("composition", "L0H0 K-composes with L1H0", metric="K-composition score", value=0.23, low=None, high=None, min_value=0.1,
              parameters={"sender": "L0H0", "receiver": "L1H0", "composition": "k"},
              evidence={"k_composition": matrix, "random_baseline": baseline}),
        claim("copying_head", "L1H1 is a copying head", metric="OV copying score", value=0.82, low=None, high=None, min_value=0.5,
              parameters={"component": "L1H1", "layer": 1, "head": 1}, evidence={"copying_scores": copying}),
        claim("probe", "blocks.0.hook_resid_post linearly encodes the previous token", metric="probe test accuracy", value=0.97,
              low=0.95, high=0.99, min_value=0.9, parameters={"hook": "blocks.0.hook_resid_post", "min_selectivity": 0.8},
              evidence={"probe": probe, "per_class": per_class}),
    ]


def attribution_document(claims: list[dict]) -> dict:
    document = report.new_document({})
    document["tests"] = [{"nodeid": "tests/test_attribution.py::test_x", "outcome": "passed", "duration": 0.1, "claims": claims}]
    return document


@pytest.fixture(scope="module")
def attribution_html() -> str:
    return report.render_html(attribution_document(attribution_claims()))


def svg_of(html: str, css_class: str) -> list[str]:
    return re.findall(rf'<svg class="chart [^"]*\b{css_class}\b[^"]*".*?</svg>', html, re.S)


def test_each_attribution_kind_gets_its_chart_and_keeps_every_table(attribution_html):
    part = section(attribution_html, "attribution")
    for css_class, count in (("lens-chart", 1), ("direct-effect-chart", 2), ("composition-chart", 1), ("copying-chart", 1),
                             ("probe-chart", 1)):
        assert len(svg_of(part, css_class)) == count, css_class
    for name in ("lens_by_layer", "lens_top_k", "direct_logit_attribution", "per_example", "ranking", "k_composition",
                 "random_baseline", "copying_scores", "probe", "per_class"):
        assert f"<caption>{name}</caption>" in part, name
    assert '<section id="other">' not in attribution_html  # every table has its place
    assert 'href="#attribution"' in attribution_html and 'href="#lens-0"' in attribution_html  # nav and the claim's link


def test_the_lens_chart_draws_mean_kl_per_layer_with_the_maximum_and_top1_agreement(attribution_html):
    (chart,) = svg_of(attribution_html, "lens-chart")
    assert chart.count('class="bar-row') == 2 and "layer 0" in chart and "layer 1" in chart
    assert 'class="threshold"' in chart and "max 0.100" in chart
    assert "top-1 0.20" in chart and "top-1 1.00" in chart
    assert chart.count('class="highlight"') == 1  # the claimed layer


def test_direct_effects_are_sorted_by_magnitude_coloured_by_sign_and_the_claim_outlined(attribution_html):
    one, top = svg_of(attribution_html, "direct-effect-chart")
    labels = re.findall(r'class="bar-label mono"[^>]*>([^<]*)<', one)
    assert labels == ["L1H0", "L0H0", "embed", "L0H1", "L1H1", "L0.attn.b_O"]  # no total, no layer sums next to their heads
    assert "#b2182b" in one and "#2166ac" in one  # positive red, negative blue
    assert one.count('class="highlight"') == 1 and top.count('class="highlight"') == 2


def test_the_composition_heatmap_outlines_the_pair_and_states_the_random_baseline(attribution_html):
    (chart,) = svg_of(attribution_html, "composition-chart")
    assert chart.count('class="cell"') == 4  # pairs that cannot compose are only in the table
    assert chart.count('class="highlight"') == 1 and "sender L0H0, receiver L1H0" in chart
    part = section(attribution_html, "attribution")
    assert "random baseline mean 0.124" in part and "0.95 quantile 0.135" in part


def test_the_copying_scores_are_a_diverging_heatmap_with_the_head_outlined(attribution_html):
    (chart,) = svg_of(attribution_html, "copying-chart")
    assert chart.count('class="cell"') == 4 and chart.count('class="highlight"') == 1
    assert "layer 1, head 1: OV copying score 0.820" in chart
    assert "-1.00" in section(attribution_html, "attribution")  # the legend runs from -1 to 1


def test_the_probe_chart_compares_accuracy_with_the_baselines_and_the_threshold(attribution_html):
    (chart,) = svg_of(attribution_html, "probe-chart")
    for label in ("test accuracy", "majority class", "chance", "control (shuffled)", "selectivity"):
        assert f">{label}</text>" in chart
    assert "required 0.900" in chart


def test_attribution_text_is_escaped_and_a_malformed_claim_falls_back_to_a_table():
    claims = attribution_claims()
    claims[3]["parameters"]["sender"] = XSS
    broken = claim("direct_effect", "no mean column", evidence={"direct_logit_attribution": pd.DataFrame({"x": [1]})})
    html = report.render_html(attribution_document([*claims, broken]))
    assert XSS not in html and ESCAPED in html
    assert "no mean column" in section(html, "other")


def test_real_attribution_results_render_as_charts():
    import circuitcheck as cc

    model = cc.load_model("zoo:induction-2l", device="cpu")
    results = [
        cc.check_logit_lens_converges_by(0, prompt="a b c d e a b c d e", model=model),
        cc.check_direct_effect("L1H3", min_share=0.1, task=cc.tasks.induction(model), answers="next", positions=-2, model=model),
        cc.check_composition("L0H0", "L1H0", kind="k", min_score=0.1, model=model),
        cc.check_copying_head(1, 1, min_score=0.5, model=model),
    ]
    html = report.render_html(attribution_document([r.to_dict() for r in results]))
    for css_class in ("lens-chart", "direct-effect-chart", "composition-chart", "copying-chart"):
        assert len(svg_of(html, css_class)) == 1, css_class
    assert '<section id="other">' not in html


def test_failed_claims_of_xfail_tests_are_listed_as_expected_not_as_failures():
    document = report.new_document({})
    document["tests"] = [
        {"nodeid": "t.py::test_real", "outcome": "failed", "duration": 0.1, "claims": [claim("induction_head", "L1H0 is an induction head", passed=False)]},
        {"nodeid": "t.py::test_documented", "outcome": "xfailed", "duration": 0.1, "claims": [claim("induction_head", "L0H1 is an induction head", passed=False)]},
    ]
    summary = section(report.render_html(document), "summary")
    failed, _, expected = summary.partition("Failed as expected")
    assert "L1H0 is an induction head" in failed and "L0H1 is an induction head" not in failed
    assert "L0H1 is an induction head" in expected
