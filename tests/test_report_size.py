"""The HTML report stays small: big evidence drawn compactly and once per page, the JSON keeping every number.

Issue 16: the demo report was several MB, nearly all of it attention patterns
(a rect and a title per cell, drawn again for every claim on the same head and
prompt). Measured on real head claims of ``zoo:induction-2l``.
"""

from __future__ import annotations

import json
import re

import pytest

import circuitcheck as cc
from circuitcheck import report
from circuitcheck.report.frames import REPORT_TABLE_ROWS

HEADS = [(layer, head) for layer in (0, 1) for head in range(4)]
KINDS = ("previous_token", "duplicate_token", "induction")


@pytest.fixture(scope="module")
def results(induction_2l) -> dict[tuple[int, int, str], dict]:
    """Every head of zoo:induction-2l claimed as each kind, on each kind's default prompts (one seed: one input per kind)."""
    return {
        (layer, head, kind): cc.check_head(layer, head, kind, model=induction_2l, seed=0, n_prompts=4).to_dict()
        for layer, head in HEADS
        for kind in KINDS
    }


def document_of(tests: list[list[dict]]) -> dict:
    """A complete results document with one test per list of claims."""
    document = report.new_document({"python": "3.11", "seed": 0}, complete=True)
    document["tests"] = [
        {"nodeid": f"suite/test_heads.py::test_{i}", "outcome": "passed", "duration": 0.1, "claims": claims}
        for i, claims in enumerate(tests)
    ]
    return document


def html_bytes(tests: list[list[dict]]) -> int:
    return len(report.render_html(document_of(tests)).encode("utf-8"))


def test_the_evidence_is_a_full_size_attention_pattern(results):
    attention = results[1, 3, "induction"]["evidence"]["attention"]
    assert len(attention["index"]) == len(attention["columns"]) == 41  # BOS + 20 random tokens, twice


def test_claims_repeating_a_head_on_the_same_input_add_little_to_the_page(results):
    one = results[1, 3, "induction"]
    empty, first, many = html_bytes([]), html_bytes([[one]]), html_bytes([[one]] * 17)
    first_cost = first - empty
    further_cost = (many - first) / 16
    # before: every claim drew its 41 x 41 pattern again (about 120 kB each); now its row in the claims table and a reference
    assert first_cost > 8_000, first_cost
    assert further_cost < first_cost / 4, (first_cost, further_cost)


def test_claims_on_other_heads_of_the_same_input_share_its_tokens_and_legend(results):
    same_input = [results[layer, head, "induction"] for layer, head in HEADS]
    empty, first, all_heads = html_bytes([]), html_bytes([same_input[:1]]), html_bytes([same_input])
    further_cost = (all_heads - first) / (len(same_input) - 1)
    assert further_cost < 0.75 * (first - empty), (first - empty, further_cost)


def test_a_representative_report_is_well_under_a_megabyte(results):
    """48 head claims (every head as three kinds, then the same claims in a second test, as checkpoints repeat them)."""
    claims = [results[key] for key in sorted(results)]
    tests = [claims[i : i + 4] for i in range(0, len(claims), 4)] * 2
    assert sum(len(t) for t in tests) == 48
    size = html_bytes(tests)
    # 24 distinct patterns of 41 x 41 on three inputs: about 6 MB drawn cell by cell
    assert size < 500_000, size


def test_the_json_keeps_every_attention_weight_at_full_precision(results, tmp_path):
    one = results[0, 2, "previous_token"]
    document = document_of([[one], [one]])
    path = report.write_json(tmp_path / "results.json", document)
    html = report.write_html(tmp_path / "report.html", document).read_text(encoding="utf-8")
    written = json.loads(path.read_text(encoding="utf-8"))
    for test in written["tests"]:
        assert test["claims"][0]["evidence"]["attention"] == one["evidence"]["attention"]
    weights = [v for row in one["evidence"]["attention"]["data"] for v in row if v]
    assert any(len(repr(v)) > 8 for v in weights)  # not rounded on the way
    patterns = re.findall(r'<svg class="chart heatmap"[^>]*aria-label="attention pattern of L0H2.*?</svg>', html, re.S)
    assert len(patterns) == 2 and all('<rect class="cell"' not in svg for svg in patterns)
    assert "<use href=" in patterns[1] and len(patterns[1]) < len(patterns[0]) / 10  # the second claim refers to the first's


def test_a_long_evidence_table_shows_its_first_rows_and_keeps_every_row_in_the_json(induction_2l, tmp_path):
    prompt = " ".join(["the cat sat on the mat and the dog ran to the sun"] * 3)
    lens = cc.check_logit_lens_converges_by(0, prompt=prompt, model=induction_2l, seed=0).to_dict()
    rows = len(lens["evidence"]["lens_top_k"]["data"])
    assert rows > REPORT_TABLE_ROWS
    document = document_of([[lens]])
    html = report.write_html(tmp_path / "report.html", document).read_text(encoding="utf-8")
    table = re.search(r"<details class=\"evidence-table\"><summary>lens_top_k.*?</details>", html, re.S).group(0)
    assert f"lens_top_k ({rows} rows; the first {REPORT_TABLE_ROWS} here, all {rows} in the results JSON)" in table
    assert table.count("<tr>") == REPORT_TABLE_ROWS + 1  # the header and the first rows
    written = json.loads(report.write_json(tmp_path / "results.json", document).read_text(encoding="utf-8"))
    assert written["tests"][0]["claims"][0]["evidence"]["lens_top_k"] == lens["evidence"]["lens_top_k"]
