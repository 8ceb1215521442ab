"""A claim kind defined by a plugin is a kind like the built-in ones: Python tests, spec files, JSON, HTML report."""

from __future__ import annotations

import json
import textwrap

# Imported before any inner pytester run (modules first imported inside one are dropped afterwards).
import circuitcheck.claims.causal  # noqa: F401
import circuitcheck.model.tasks  # noqa: F401

PLUGIN = '''
import pandas as pd

import circuitcheck as cc
from circuitcheck.claims.decision import conclude, within
from circuitcheck.model import context


def check_embedding_norm(*, min_norm=None, max_norm=None, model=None):
    """The mean L2 norm of the token embeddings (weights only)."""
    model = context.resolve_model(model)
    norms = model.W_E.detach().norm(dim=-1)
    value = float(norms.mean())
    return cc.CheckResult(
        kind="embedding_norm",
        claim="the token embeddings have a moderate norm",
        value=value,
        passed=within(value, min_norm, max_norm),
        n=int(norms.numel()),
        metric="mean embedding norm",
        min_value=min_norm,
        max_value=max_norm,
        decided_on="value",
        evidence={"embedding_norms": pd.DataFrame({"norm": norms.numpy()})},
    )


def assert_embedding_norm(tolerance=None, **kwargs):
    __tracebackhide__ = True
    return conclude(check_embedding_norm(**kwargs), tolerance)


EMBEDDING_NORM = cc.ClaimKind(
    name="embedding_norm",
    check=check_embedding_norm,
    assertion=assert_embedding_norm,
    metric="mean embedding norm",
    params=(cc.Param("min_norm", "number", doc="at least this norm"), cc.Param("max_norm", "number", doc="at most this norm")),
    thresholds=("min_norm", "max_norm"),
    definition="Embedding norm: the mean L2 norm of the rows of W_E.",
    section="weights",
    evidence=("embedding_norms",),
)


def circuitcheck_claim_kinds():
    return [EMBEDDING_NORM]
'''

PYTHON_TEST = '''
from conftest import assert_embedding_norm


def test_the_embeddings_have_a_moderate_norm(model):
    assert_embedding_norm(min_norm=0.01, max_norm=1000.0)
'''

SPEC = """\
model: zoo:induction-2l
claims:
  - kind: embedding_norm
    min_norm: 0.01
    max_norm: 1000.0
  - id: a misspelled key of the plugin's kind
    kind: embedding_norm
    min_nrom: 0.01
"""


def test_a_plugin_defined_claim_kind_runs_in_python_tests_spec_files_the_json_and_the_report(pytester):
    pytester.makeconftest(PLUGIN)
    pytester.makepyfile(test_norms=PYTHON_TEST)
    (pytester.path / "norms.circuit.yaml").write_text(SPEC.split("  - id:")[0])
    (pytester.path / "bad").mkdir()
    (pytester.path / "bad" / "typo.circuit.yaml").write_text(SPEC)

    result = pytester.runpytest("-v", "--circuitcheck-json=out.json", "--circuitcheck-report=out.html", "norms.circuit.yaml",
                                "test_norms.py")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*norms.circuit.yaml::embedding_norm PASSED*", "*test_norms.py::test_the_embeddings_have_a_moderate_norm PASSED*"])

    tests = json.loads((pytester.path / "out.json").read_text())["tests"]
    claims = [claim for test in tests for claim in test["claims"]]
    assert [claim["kind"] for claim in claims] == ["embedding_norm", "embedding_norm"]
    assert all(claim["passed"] and "embedding_norms" in claim["evidence"] for claim in claims)

    html = (pytester.path / "out.html").read_text()
    assert "the token embeddings have a moderate norm" in html
    assert "embedding_norms" in html  # no section of its own: the report shows its evidence table

    # the plugin's parameters are the spec schema, with did-you-mean
    typo = pytester.runpytest("bad/typo.circuit.yaml")
    typo.assert_outcomes(errors=1)
    typo.stdout.fnmatch_lines(["*typo.circuit.yaml:8: claims[[]1[]]: unknown key 'min_nrom' (did you mean 'min_norm'?)*"])
