"""Thresholds and tolerances must be finite numbers: an infinite one decides every claim alike, so a false claim passes.

Each claim kind is checked where thresholds enter: the Python checks (through
``check_thresholds`` or their own validation), the spec's number validator for
every threshold of every kind in the registry, and the baseline tolerance.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

import circuitcheck as cc
from circuitcheck import CircuitCheckError, tasks
from circuitcheck.claims import registry
from circuitcheck.claims.baseline import Tolerance
from circuitcheck.claims.decision import ThresholdError, check_thresholds, is_finite_number
from circuitcheck.spec import schema
from circuitcheck.spec.load import SpecError, load_spec
from circuitcheck.zoo import circuits as zoo_circuits

EVERY_KIND = Path(__file__).parent.parent / "example_suites" / "induction-2l-every-kind.circuit.yaml"
NOT_FINITE = [float("inf"), float("-inf"), float("nan"), 10**400]


@pytest.mark.parametrize("value", NOT_FINITE, ids=["inf", "-inf", "nan", "10**400"])
@pytest.mark.parametrize("side", ["min", "max"])
def test_a_non_finite_threshold_is_an_error_naming_it(value, side):
    pair = (value, None) if side == "min" else (None, value)
    with pytest.raises(ThresholdError, match=rf"^{side}_drop=.* is not valid: it must be a finite number") as info:
        check_thresholds(*pair, names=("min_drop", "max_drop"))
    assert isinstance(info.value, ValueError) and isinstance(info.value, CircuitCheckError)


def test_a_bounded_metric_names_its_range_in_the_error():
    with pytest.raises(ThresholdError, match=r"min_score=inf is not valid: it must be a finite number between 0 and 1"):
        check_thresholds(float("inf"), None, low=0.0, high=1.0, names=("min_score", "max_score"))


@pytest.mark.parametrize("value", [0, -3, 0.5, 1e300, -1e300, 10**300])
def test_finite_thresholds_of_any_size_are_accepted(value):
    check_thresholds(value, None, names=("min_drop", "max_drop"))
    assert is_finite_number(value)


def test_is_finite_number_refuses_bools_and_non_numbers():
    assert not any(is_finite_number(v) for v in (True, False, "1", None, [1], float("nan"), -math.inf, 10**400))


# The Python checks: each public check refuses an infinite threshold before it measures --------


@pytest.fixture(scope="module")
def task_2l(induction_2l):
    return tasks.induction(induction_2l, **zoo_circuits.TASK)


INF, NINF = float("inf"), float("-inf")
CHECKS = {
    "necessary min_drop=-inf": (lambda m, t: cc.check_necessary("L1H0 L1H3", min_drop=NINF, model=m, task=t), "min_drop=-inf"),
    "necessary max_drop=inf": (lambda m, t: cc.check_necessary("L1H0", max_drop=INF, model=m, task=t), "max_drop=inf"),
    "sufficient max_recovery=inf": (lambda m, t: cc.check_sufficient("L1H0", max_recovery=INF, model=m, task=t), "max_recovery=inf"),
    "sufficient min_recovery=-inf": (lambda m, t: cc.check_sufficient("L1H0", min_recovery=NINF, model=m, task=t), "min_recovery=-inf"),
    "minimal min_contribution=-inf": (
        lambda m, t: cc.check_minimal("L0H0 L1H3", min_contribution=NINF, model=m, task=t),
        "min_contribution=-inf",
    ),
    "path min_effect=-inf": (lambda m, t: cc.check_path("L0H0", "L1H3.k", min_effect=NINF, model=m, task=t), "min_effect=-inf"),
    "direct effect min_share=-inf": (
        lambda m, t: cc.check_direct_effect("L1H3", min_share=NINF, task=t, answers="next", positions=9, model=m),
        "min_share=-inf",
    ),
    "direct effect max_share=nan": (
        lambda m, t: cc.check_direct_effect("L1H3", max_share=float("nan"), task=t, answers="next", positions=9, model=m),
        "max_share=nan",
    ),
    "lens max_kl=inf": (lambda m, t: cc.check_logit_lens_converges_by(1, prompt="a b c d a b c", max_kl=INF, model=m), "max_kl=inf"),
    "head min_score=10**400": (lambda m, t: cc.check_head(1, 3, "induction", min_score=10**400, model=m), "min_score=1000"),
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_every_check_refuses_an_infinite_threshold(name, induction_2l, task_2l):
    call, shown = CHECKS[name]
    with pytest.raises(ThresholdError, match="finite") as info:
        call(induction_2l, task_2l)
    assert str(info.value).startswith(shown)


# Spec files: every threshold of every kind --------------------------------------------------------


def _example_claims() -> tuple[dict, list[dict]]:
    document = yaml.safe_load(EVERY_KIND.read_text(encoding="utf-8"))
    return document, document["claims"]


def _threshold_cases():
    _, claims = _example_claims()
    cases = []
    for index, claim in enumerate(claims):
        kind = registry.get(claim["kind"])
        for key in filter(None, kind.thresholds):
            for value in (INF, NINF, float("nan")):
                cases.append(pytest.param(index, key, value, id=f"{index}-{claim['kind']}-{key}-{value}"))
    return cases


def _registry_thresholds():
    return [
        pytest.param(kind, key, id=f"{name}-{key}")
        for name, kind in registry.kinds().items()
        for key in filter(None, kind.thresholds)
    ]


@pytest.mark.parametrize("kind, key", _registry_thresholds())
@pytest.mark.parametrize("value", [INF, NINF, float("nan"), 10**400], ids=["inf", "-inf", "nan", "10**400"])
def test_every_threshold_of_every_kind_refuses_a_non_finite_spec_value(kind, key, value):
    param = kind.param(key)
    with pytest.raises(schema.Bad, match="must be a finite number"):
        schema.VALIDATORS[param.type](value, param, None)


@pytest.mark.parametrize("index, key, value", _threshold_cases())
def test_a_spec_threshold_of_inf_or_nan_is_a_validation_error_at_its_line(index, key, value):
    document, claims = _example_claims()
    claim = dict(claims[index])
    for other in filter(None, registry.get(claim["kind"]).thresholds):
        claim.pop(other, None)  # alone, so that min-above-max cannot be the reason
    claim[key] = value
    document["claims"] = [claim]
    text = yaml.safe_dump(document, sort_keys=False)
    spelled = {INF: ".inf", NINF: "-.inf"}.get(value, ".nan")
    assert spelled in text  # YAML's own spelling reaches the loader
    with pytest.raises(SpecError) as info:
        load_spec(str(EVERY_KIND.parent / "s.circuit.yaml"), text=text)
    assert f"claims[0].{key} must be a finite number, got {spelled}" in str(info.value)


def test_a_spec_tolerance_of_inf_is_a_validation_error():
    text = "model: zoo:induction-2l\nclaims:\n  - kind: induction_head\n    layer: 1\n    head: 0\n    tolerance: {abs: .inf}\n"
    with pytest.raises(SpecError, match=r"s.circuit.yaml:6: claims\[0\].tolerance must be a finite number, got .inf"):
        load_spec("s.circuit.yaml", text=text)


# Baseline tolerances --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, shown",
    [
        (float("inf"), "abs=inf"),
        ({"rel": float("inf")}, "rel=inf"),
        ({"abs": float("nan")}, "abs=nan"),
        ({"abs": "x"}, "abs='x'"),
        ({"abs": None}, "abs=None"),
        (10**400, "abs=an integer of 1329 bits"),
        ({"abs": True}, "abs=True"),
    ],
)
def test_a_tolerance_that_is_not_a_finite_number_is_an_error_naming_it(value, shown):
    with pytest.raises(ValueError, match=f"tolerance {shown} is not valid: it must be a finite number >= 0") as info:
        Tolerance.parse(value)
    assert isinstance(info.value, CircuitCheckError)


def test_a_tolerance_built_directly_is_validated_too():
    with pytest.raises(ValueError, match="tolerance abs=inf is not valid"):
        Tolerance(abs=float("inf"))
    assert Tolerance(abs=1, rel=0) == Tolerance(1.0, 0.0)


def test_an_assertion_given_an_infinite_tolerance_refuses_it(induction_2l):
    with pytest.raises(ValueError, match="tolerance abs=inf is not valid"):
        cc.assert_induction_head(1, 3, min_score=0.5, tolerance=float("inf"), model=induction_2l)
