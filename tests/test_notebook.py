"""Notebooks: short reprs, HTML views drawn by the report, plots, a report from a notebook's results, path sweeps as Sweeps.

The example notebook (``example_suites/notebook.ipynb``) runs in a real Jupyter
kernel (``nbclient``), and its HTML outputs are opened in headless Chromium
through selenium (the Debian packages ``chromium`` and ``chromium-driver``; as
in ``test_report_browser.py`` the browser tests are skipped without them,
except under CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from markupsafe import escape

import circuitcheck as cc
from circuitcheck import report
from circuitcheck.claims.format import number
from circuitcheck.engine.patcher import Patcher
from circuitcheck.engine.sweeps import Sweep
from circuitcheck.errors import ArgumentError, CircuitCheckError, ComponentError
from circuitcheck.model import context
from circuitcheck.report import heatmaps, notebook
from circuitcheck.report.sections import build_page

# tests/ is on sys.path (pytest's "prepend" import mode): the hand-written path-patching reference
from test_patcher_exactness import one_forward_path_reference

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "example_suites" / "notebook.ipynb"
XSS = "<script>alert(1)</script>"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def task(induction_2l):
    return cc.tasks.induction(induction_2l, n_prompts=4, seq_len=6)


@pytest.fixture(scope="module")
def patcher(induction_2l):
    return Patcher(induction_2l)


@pytest.fixture(scope="module")
def head(induction_2l):
    return cc.check_head(1, 3, "induction", min_score=0.7, model=induction_2l, n_prompts=4, half_len=8)


@pytest.fixture(scope="module")
def head_sweep(patcher, task):
    return patcher.sweep(task, "head_out")


class RecordingContext:
    """The few methods of a running test's context that a sweep uses (the pytest plugin installs the real one)."""

    def __init__(self, model, task):
        self.model, self.task, self.sweeps = model, task, []

    def get_model(self):
        return self.model

    def get_task(self, model):
        return self.task

    def get_patcher(self, model):
        return None

    def default_seed(self):
        return 0

    def record(self, result, tolerance=None):
        return None

    def record_sweep(self, sweep):
        self.sweeps.append(sweep)


def claim_with_table(claim: str = "L0H1 does the custom thing", rows: int = 41) -> cc.CheckResult:
    """A claim of a kind the report has no chart for (as a plugin's), with one long evidence table."""
    evidence = pd.DataFrame({"position": range(rows), "score": np.linspace(0, 1, rows), "token": [f"t{i}" for i in range(rows)]})
    return cc.CheckResult(kind="custom_kind", claim=claim, value=0.42, passed=False, n=rows, metric="custom score",
                          min_value=0.5, ci_low=0.40, ci_high=0.44, confidence=0.95, decided_on="lower bound",
                          evidence={"per_position": evidence}, notes=["a note"])


# CheckResult ---------------------------------------------------------------------------------


def test_a_check_result_repr_is_one_line_with_kind_claim_value_and_verdict(head):
    assert repr(head) == f"CheckResult(kind='induction_head', claim='L1H3 is an induction head', value={number(head.value)}, verdict='held')"


def test_str_of_a_check_result_is_its_lab_note(head):
    assert str(head) == head.message()
    assert str(head).startswith("claim held: L1H3 is an induction head (model zoo:induction-2l)\n  measured: induction score")


def test_a_check_result_in_a_notebook_shows_the_verdict_value_interval_deciding_bound_and_requirement(head):
    html = head._repr_html_()
    assert 'class="cc-pill held">held<' in html and "L1H3 is an induction head" in html
    assert f"induction score {number(head.value)}" in html
    assert f"[{number(head.ci_low)}, {number(head.ci_high)}] (95%)" in html
    assert f"lower bound {number(head.ci_low)}" in html and "induction score ≥ 0.7" in html
    assert "<script" not in html


def test_a_check_result_in_a_notebook_draws_the_reports_own_charts(head):
    html = head._repr_html_()
    document = {"circuitcheck_report": 1, "tests": [{"nodeid": "n", "outcome": "passed", "claims": [head.to_dict()]}]}
    figure = build_page(document, report.summarize(document))["attention"][0]
    assert str(figure["scores"]) in html and str(figure["attention"]) in html  # the page's score grid and attention map
    assert 'class="highlight"' in html  # the claimed head outlined


def test_a_claim_the_report_draws_no_chart_for_shows_its_evidence_as_a_compact_table():
    html = claim_with_table(claim=XSS)._repr_html_()
    assert "per_position (first 8 of 41 rows)" in html
    table = html[html.index("per_position (first"):]
    assert table[: table.index("</table>")].count("<tr>") == 1 + notebook.MAX_TABLE_ROWS  # header + 8 rows
    assert XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_a_failed_claim_in_a_notebook_says_failed_and_the_bound_below_the_threshold():
    html = claim_with_table()._repr_html_()
    assert 'class="cc-pill failed">failed<' in html and "lower bound 0.400" in html and "custom score ≥ 0.5" in html


# Sweeps --------------------------------------------------------------------------------------


def test_a_sweep_repr_is_one_line_and_names_the_largest_change_not_every_index(head_sweep):
    text = repr(head_sweep)
    assert "\n" not in text and len(text) < 300 and "(0, 0)" not in text
    assert text.startswith("<Sweep head_out (denoise) over layer 0-1 x head 0-3: 8 variants x 4 examples")
    means = head_sweep.values.mean(1).numpy()
    clean, corrupt = float(head_sweep.clean_metric.mean()), float(head_sweep.corrupt_metric.mean())
    layer, head = head_sweep.index[int(np.abs((means - corrupt) / (clean - corrupt)).argmax())]
    assert text.endswith(f"at layer {layer}, head {head}>")


def test_a_sweep_in_a_notebook_is_the_reports_heatmap(head_sweep):
    drawn = heatmaps.patching([{"nodeid": "t", "sweeps": [head_sweep.to_dict()]}])[0]
    html = head_sweep._repr_html_()
    assert str(drawn["svg"]) in html and str(drawn["legend"]) in html and "head_out patching (denoise)" in html


def test_sweep_plot_gives_the_reports_svg_and_saves_it_as_an_svg_file(head_sweep, tmp_path):
    figure = head_sweep.plot()
    assert figure.svg == str(heatmaps.patching([{"nodeid": "t", "sweeps": [head_sweep.to_dict()]}])[0]["svg"])
    assert figure.svg in figure._repr_html_()
    root = ElementTree.parse(figure.save(tmp_path / "sweep.svg")).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg" and root.find("{http://www.w3.org/2000/svg}style") is not None
    cells = root.findall(".//{http://www.w3.org/2000/svg}rect[@class='cell']")
    assert len(cells) == 8
    with pytest.raises(ArgumentError, match=r"saved as \.svg or \.html, not \.png"):
        figure.save(tmp_path / "sweep.png")


def test_sweep_plot_of_the_mean_metric_colours_the_raw_values(head_sweep):
    figure = head_sweep.plot(normalized=False)
    assert "mean metric" in figure.legend and "normalised" not in figure.legend


def test_sweep_plot_with_matplotlib_draws_the_normalised_matrix_on_a_symmetric_scale(head_sweep):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    ax = head_sweep.plot(backend="matplotlib")
    image = ax.images[0]
    clean, corrupt = float(head_sweep.clean_metric.mean()), float(head_sweep.corrupt_metric.mean())
    expected = ((head_sweep.values.mean(1) - corrupt) / (clean - corrupt)).reshape(2, 4).numpy()
    np.testing.assert_allclose(np.asarray(image.get_array()), expected, atol=1e-6)
    low, high = image.get_clim()
    assert low == -high and high >= 1.0
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1"] and ax.get_ylabel() == "layer"


def test_sweep_plot_with_matplotlib_missing_says_how_to_get_it(head_sweep, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ArgumentError, match=r"needs matplotlib, which is not installed: pip install matplotlib, or use backend='svg'"):
        head_sweep.plot(backend="matplotlib")


def test_sweep_plot_refuses_an_unknown_backend(head_sweep):
    with pytest.raises(ArgumentError, match=r"backend='plotly' is not valid: use 'svg' .* or 'matplotlib'"):
        head_sweep.plot(backend="plotly")


def test_a_three_axis_sweep_shows_its_largest_changes_and_cannot_be_plotted(patcher, task):
    by_pos = patcher.sweep(task, "head_out_by_pos")
    frame = by_pos.frame()
    top = frame.loc[frame["normalized"].abs().idxmax()]
    html = by_pos._repr_html_()
    assert f"largest changes of {2 * task.seq_len * 4} cells" in html
    first_row = html[html.index("<tbody><tr>"):].split("</tr>")[0]
    assert [f">{int(top[a])}<" in first_row for a in ("layer", "pos", "head")] == [True] * 3
    with pytest.raises(ArgumentError, match=r"has 3 axes \(layer, pos, head\): a heatmap shows two"):
        by_pos.plot()


def test_a_graph_sweep_repr_is_one_line_and_its_view_is_the_reports_heatmap(induction_2l, task):
    graph = cc.attribution_sweep(induction_2l, task, method="eap", record=False)
    effects = graph.effects.mean(1)
    largest = int(effects.abs().argmax())
    assert repr(graph) == (f"<GraphSweep attribution (EAP) of {len(graph.index)} edges (denoise), 4 examples; "
                           f"largest effect {float(effects[largest]):+.3f} ({graph.index[largest]})>")
    drawn = heatmaps.patching([{"nodeid": "t", "sweeps": [graph.to_dict()]}])[0]
    assert str(drawn["svg"]) in graph._repr_html_() and graph.plot().svg == str(drawn["svg"])


# The patcher ---------------------------------------------------------------------------------


def test_a_patcher_repr_names_its_model_fast_path_and_cached_tasks(induction_2l, task):
    patcher = Patcher(induction_2l, max_batch=64)
    assert repr(patcher) == "<Patcher of zoo:induction-2l on cpu: fast path where it applies; max_batch 64; cached runs of 0 tasks>"
    patcher.sweep(task, "head_out")
    assert repr(patcher) == (f"<Patcher of zoo:induction-2l on cpu: fast path where it applies, {patcher.fast_passes} of "
                             f"{patcher.forward_passes} forwards; 64 rows per forward (max_batch); cached runs of 1 task (induction)>")
    assert "fast path off;" in repr(Patcher(induction_2l, fast=False))
    assert "; rows per forward from free memory;" in repr(Patcher(induction_2l))


# Path sweeps ---------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_a_path_sweep_is_a_sweep_normalised_like_every_sweep(induction_2l, task, direction):
    paths = Patcher(induction_2l).path_sweep(task, "L0H2", "k", direction=direction)
    assert isinstance(paths, Sweep) and paths.axes == ("layer", "head") and paths.axis_values == [[1], [0, 1, 2, 3]]
    with torch.no_grad():
        clean = float(task.metric(induction_2l(task.clean), task, None).mean())
        corrupt = float(task.metric(induction_2l(task.corrupt), task, None).mean())
        reference = torch.tensor([[float(one_forward_path_reference(induction_2l, task, "L0H2", f"L1H{h}.k", direction).mean())
                                   for h in range(4)]])
    torch.testing.assert_close(paths.mean, reference, atol=1e-4, rtol=0)
    torch.testing.assert_close(paths.normalized, (reference - corrupt) / (clean - corrupt), atol=1e-4, rtol=0)
    assert not paths.matrix().isna().any().any() and list(paths.matrix().index) == [1]  # no row of NaN for layer 0


def test_a_path_sweep_in_a_test_reaches_the_report_as_a_heatmap(induction_2l, task):
    running = RecordingContext(induction_2l, task)
    with context.active(running):
        paths = Patcher(induction_2l).path_sweep(task, "L0H2", "q")
    assert len(running.sweeps) == 1
    recorded = json.loads(json.dumps(running.sweeps[0], allow_nan=False))  # JSON-safe, as the report stores it
    assert recorded["title"] == "path patching from L0H2 into every later head's q (denoise) on induction, model zoo:induction-2l"
    assert recorded["sender"] == "L0H2" and recorded["normalized"]["index"] == [1]
    np.testing.assert_allclose(recorded["normalized"]["data"], paths.normalized.numpy(), atol=1e-6)
    document = report.new_document({}, complete=True)
    document["tests"] = [{"nodeid": "t::paths", "outcome": "passed", "claims": [], "sweeps": [recorded]}]
    assert str(escape(recorded["title"])) in report.render_html(document)


def test_a_path_sweep_names_a_bad_port_and_a_sender_no_later_head_reads(induction_2l, task):
    with pytest.raises(ArgumentError, match=r"port='z' is not valid: a path sweep patches the 'q', 'k' or 'v' input"):
        Patcher(induction_2l).path_sweep(task, "L0H2", "z")
    with pytest.raises(ComponentError, match=r"L1H0 is in the last layer of model zoo:induction-2l \(layers 0-1\)"):
        Patcher(induction_2l).path_sweep(task, "L1H0", "q")


# Probes and composition ----------------------------------------------------------------------


def test_a_probe_result_shows_its_accuracies_beside_its_baselines(induction_2l):
    tokens = torch.randint(1, induction_2l.cfg.d_vocab, (24, 6), generator=torch.Generator().manual_seed(0))
    fit = cc.Prober(induction_2l).fit("blocks.0.hook_resid_post", tokens, tokens % 2, positions=[2, 3])
    html = fit._repr_html_()
    assert "blocks.0.hook_resid_post" in html and 'class="chart interval-chart probe-chart"' in html
    for label in ("test accuracy", "train accuracy", "majority class", "chance", "per class"):
        assert label in html


def test_a_random_composition_baseline_shows_its_numbers_and_its_repr_leaves_out_the_samples(induction_2l):
    baseline = cc.random_composition_baseline(induction_2l, "k", n_samples=50)
    assert " samples=" not in repr(baseline) and "array(" not in repr(baseline) and len(repr(baseline)) < 200
    html = baseline._repr_html_()
    assert f"{number(baseline.mean)} ± {number(baseline.std)}" in html and "k-composition" in html


# A report from a notebook's results -----------------------------------------------------------


def test_from_results_makes_a_complete_report_without_the_incomplete_banner(head, head_sweep, tmp_path):
    failed = claim_with_table()
    document = report.from_results([head, failed, head_sweep])
    assert document["complete"] is True and "in_progress" not in document
    report.validate(document)
    [test] = document["tests"]
    assert test["nodeid"] == "notebook" and test["outcome"] == "failed"
    assert [c["claim"] for c in test["claims"]] == [head.claim, failed.claim] and test["sweeps"][0]["what"] == "head_out"
    assert document["environment"]["models"] == "zoo:induction-2l"
    html = document.html()
    assert 'class="banner incomplete"' not in html and "head_out patching (denoise)" in html
    assert document.write_html(tmp_path / "notebook.html").read_text(encoding="utf-8") == html
    assert report.read_json(document.write_json(tmp_path / "notebook.json"))["complete"] is True
    assert repr(document) == "<ReportDocument 2 claims: 1 held, 1 failed; 1 sweep>"


def test_from_results_groups_results_by_name_and_shows_the_page_in_a_frame(head, head_sweep):
    document = report.from_results({"heads": [head], "sweeps": [head_sweep]}, environment={"notebook": "analysis.ipynb"})
    assert [(t["nodeid"], t["outcome"], len(t["claims"]), len(t["sweeps"])) for t in document["tests"]] == [
        ("heads", "passed", 1, 0), ("sweeps", "passed", 0, 1)]
    assert document["environment"]["notebook"] == "analysis.ipynb"
    html = document._repr_html_()
    assert html.count("<iframe srcdoc=") == 1 and "1 claim: 1 held, 0 failed; 1 sweep" in html


def test_from_results_names_what_cannot_go_in_a_report(head, patcher, task):
    with pytest.raises(CircuitCheckError, match=r"DataFrame cannot go in a report: give CheckResults"):
        report.from_results([head, head.to_frame()])
    with pytest.raises(CircuitCheckError, match=r"sweep head_out_by_pos has 3 axes"):
        report.from_results([patcher.sweep(task, "head_out_by_pos")])


def test_a_new_document_is_incomplete_unless_told_it_is_complete():
    assert report.new_document({})["complete"] is False
    assert report.new_document({}, complete=True)["complete"] is True


def test_cc_report_is_reachable_from_the_package_without_importing_it_first():
    code = "import circuitcheck as cc; print(cc.report.from_results.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "from_results", out.stderr[-2000:]


# The example notebook in a real kernel -------------------------------------------------------


def test_the_example_notebook_is_valid_and_checked_in_without_outputs():
    document = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(document)
    code = [cell for cell in document.cells if cell.cell_type == "code"]
    assert len(code) == 9 and all(cell.outputs == [] and cell.execution_count is None for cell in code)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The example notebook run top to bottom in a fresh ipykernel (its working directory a temporary one).

    The kernel imports circuitcheck from this checkout (``PYTHONPATH``), the code these tests test, whatever is installed.
    """
    from nbclient import NotebookClient

    directory = tmp_path_factory.mktemp("notebook")
    document = nbformat.read(NOTEBOOK, as_version=4)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        NotebookClient(document, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(directory)}}).execute()
    return document, directory


def outputs_of(executed, source: str) -> list[dict]:
    """The outputs of the code cell whose source is ``source`` (or starts with it, for a ``source`` ending in a space)."""
    document, _ = executed
    [cell] = [cell for cell in document.cells if cell.cell_type == "code" and (
        cell.source == source or (source.endswith(" ") and cell.source.startswith(source)))]
    return cell.outputs


def test_in_a_kernel_a_claim_shows_as_html_and_its_repr_and_print_are_short(executed):
    [shown] = outputs_of(executed, "head = ")
    html = shown["data"]["text/html"]
    assert 'class="circuitcheck-view held"' in html and "L1H3 is an induction head" in html and "<svg" in html
    assert shown["data"]["text/plain"].startswith("CheckResult(kind='induction_head', claim='L1H3 is an induction head'")
    [text] = outputs_of(executed, "repr(head)")
    assert "\n" not in text["data"]["text/plain"]
    [printed] = outputs_of(executed, "print(sufficient)")
    assert printed["name"] == "stdout" and printed["text"].startswith("claim held: 'induction' (L0H0 L0H2 L1H0 L1H1 L1H2 L1H3) is sufficient")


def test_in_a_kernel_sweeps_show_as_heatmaps_and_the_patcher_in_one_line(executed):
    [sweep] = outputs_of(executed, "patcher = ")
    assert "head_out patching (denoise)" in sweep["data"]["text/html"] and 'class="chart heatmap' in sweep["data"]["text/html"]
    [paths] = outputs_of(executed, "paths = ")
    assert escape("path patching from L0H2 into every later head's k") in paths["data"]["text/html"]
    [patcher] = outputs_of(executed, "patcher")
    assert patcher["data"]["text/plain"].startswith("<Patcher of zoo:induction-2l on cpu: fast path where it applies")
    assert "cached runs of 1 task (induction)" in patcher["data"]["text/plain"]


def test_in_a_kernel_from_results_writes_a_complete_report(executed):
    _, directory = executed
    [shown] = outputs_of(executed, "report = ")
    assert "<iframe srcdoc=" in shown["data"]["text/html"] and "2 claims: 2 held, 0 failed; 2 sweeps" in shown["data"]["text/html"]
    page = (directory / "notebook-report.html").read_text(encoding="utf-8")
    assert 'class="banner incomplete"' not in page and "path patching from L0H2" in page and "L1H3 is an induction head" in page


# ... and its HTML in a browser ----------------------------------------------------------------


def require_browser() -> None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            message = f"{path} is not installed: apt-get install chromium chromium-driver"
            if os.environ.get("CI"):
                pytest.fail(f"{message} (CI must run the browser checks)")
            pytest.skip(message)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1600",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_notebooks_html_outputs_render_in_a_browser_with_visible_charts_and_no_errors(executed, browser, tmp_path):
    document, _ = executed
    views = [output["data"]["text/html"] for cell in document.cells if cell.cell_type == "code"
             for output in cell.outputs if "text/html" in output.get("data", {})]
    assert len(views) == 5  # head, sufficient, sweep, paths (plot), report
    # each output in a box of its own, as Jupyter shows them
    page = tmp_path / "outputs.html"
    page.write_text('<!doctype html><meta charset="utf-8"><title>outputs</title>'
                    + "".join(f'<div class="output" id="output-{i}">{html}</div>' for i, html in enumerate(views)), encoding="utf-8")
    browser.get_log("browser")
    browser.get(page.as_uri())
    layout = browser.execute_script(
        """
        const box = (el) => { const r = el.getBoundingClientRect(); return [r.width, r.height]; };
        return Array.from(document.querySelectorAll('div.output')).map((out) => ({
          charts: Array.from(out.querySelectorAll('.circuitcheck-view svg.chart')).map(box),
          text: out.innerText,
          scripts: out.querySelectorAll('script').length,
          scrolls: out.scrollWidth > window.innerWidth,
          frame: out.querySelector('iframe') ? box(out.querySelector('iframe')) : null,
        }));
        """
    )
    assert [len(view["charts"]) > 0 for view in layout[:4]] == [True] * 4, layout
    assert all(w > 50 and h > 30 for view in layout[:4] for w, h in view["charts"])
    assert all(view["scripts"] == 0 and not view["scrolls"] for view in layout)
    assert "HELD" in layout[0]["text"].upper() and "lower bound" in layout[0]["text"]
    assert layout[4]["frame"][0] > 500 and layout[4]["frame"][1] > 300
    # the scoped stylesheet: chart text takes the report's colours, the page around it is not restyled
    colours = browser.execute_script(
        "return [getComputedStyle(document.querySelector('.circuitcheck-view svg.chart text.tick')).fill,"
        " getComputedStyle(document.body).fontFamily];"
    )
    assert colours[0] == "rgb(91, 101, 115)" and "system-ui" not in colours[1]
    browser.switch_to.frame(browser.find_element("css selector", "#output-4 iframe"))
    inside = browser.execute_script(
        "return [document.getElementById('summary') !== null, document.querySelector('.banner.incomplete') === null,"
        " document.querySelectorAll('svg.chart').length];"
    )
    browser.switch_to.default_content()
    assert inside[0] and inside[1] and inside[2] >= 4
    problems = [entry["message"] for entry in browser.get_log("browser") if entry.get("level") in ("SEVERE", "WARNING")]
    assert problems == []
