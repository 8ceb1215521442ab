"""Faithfulness both ways: the circuit recovers the model's performance, no less and no more.

faithfulness error(C) = |1 - recovery(C)|, recovery(C) = (m(C) - m(∅)) / (m(M) - m(∅))

Sufficiency (``min_recovery``) passes a circuit that recovers 1.6 of the
model's performance; but recovery well above 1 means the circuit leaves out
components that hurt the task (negative heads), so it is not the model's
mechanism either. The error is MIB's CMD idea for one circuit. The claim
"error at most ``max_error``" is decided on the upper bound of the error's
interval.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import causal, robustness, stats, subsets
from .causal import Components, _base, _circuit, _label, _lines, _setup
from .decision import check_thresholds, conclude
from .lattice import Samples, bootstrap, full_metric
from .minimality import lattice_of
from .result import CheckResult
from ..model.tasks import Task

DEFAULT_MAX_ERROR = 0.1


@robustness.over_ablations
def check_faithful(
    circuit: Components,
    *,
    max_error: float = DEFAULT_MAX_ERROR,
    model=None,
    task: Task | None = None,
    ablation=None,
    keep=None,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int | None = None,
) -> CheckResult:
    """Measure the faithfulness error |1 - recovery(C)| and decide on its upper bound (never raises on failure)."""
    check_thresholds(None, max_error, low=0.0, names=("min", "max_error"))
    setup = _setup(model, task, ablation, seed, confidence, keep)
    comps, name = _circuit(circuit, setup.model)
    lattice = lattice_of(setup, comps)
    everything = subsets.full(len(comps))
    runs = lattice.keep([everything, 0], desc="faithfulness")
    causal._check_gap(full_metric(setup), runs[0], setup)
    samples = Samples(full_metric(setup), runs[0], {"C": runs[everything]})
    column = samples.columns(["C"])
    error, recovery = bootstrap(
        samples.data, lambda m: np.concatenate([np.abs(1 - samples.recovery(m)[:, column]), samples.recovery(m)[:, column]], axis=1),
        confidence=setup.confidence, seed=setup.seed,
    )
    decision = stats.decide(error, None, max_error)
    label = _label(comps, name)
    direction = "over-recovers (it leaves out components that work against the task)" if recovery.mean > 1 else "under-recovers"
    table = pd.DataFrame({"circuit": [label], "recovery": [recovery.mean], "recovery_ci_low": [recovery.low],
                          "recovery_ci_high": [recovery.high], "error": [error.mean], "ci_low": [error.low], "ci_high": [error.high]})
    return CheckResult(
        **_base(setup, label, "faithful", "faithfulness error |1 - recovery|"),
        claim=f"{label} is faithful to the model on {setup.task.name} (recovery within {max_error:g} of 1)",
        value=error.mean,
        **error.interval_fields(),
        max_value=max_error,
        evidence={"faithfulness": table},
        notes=[f"recovery {recovery.describe()}: the circuit {direction}",
               f"m(M) = {samples.data[0].mean():.4g}, m(C) = {samples.data[2].mean():.4g}, m(∅) = {samples.data[1].mean():.4g} ({setup.task.metric})"]
        + _lines(setup),
        **decision.fields(),
    )


def assert_faithful(circuit: Components, max_error: float = DEFAULT_MAX_ERROR, **kwargs) -> CheckResult:
    """Assert that the circuit's recovery is within ``max_error`` of 1, from both sides (upper bound of |1 - recovery|).

    Unlike ``assert_sufficient(min_recovery=...)``, over-recovery fails too.
    (``tolerance=`` is, as for every assertion, the baseline tolerance; the
    faithfulness threshold is ``max_error``.)
    """
    __tracebackhide__ = True
    tolerance = kwargs.pop("tolerance", None)
    return conclude(check_faithful(circuit, max_error=max_error, **kwargs), tolerance)


# The claim kind (circuitcheck.claims.registry) ---------------------------------------------

from .registry import ClaimKind, Param, declare  # noqa: E402

FAITHFUL = declare(ClaimKind(
    name="faithful",
    check=check_faithful,
    assertion=assert_faithful,
    metric="faithfulness error",
    params=(causal._CIRCUIT,
            Param("max_error", "number", DEFAULT_MAX_ERROR, doc="the upper bound of |1 - recovery| must be <= it"),
            *causal._CAUSAL_PARAMS),
    thresholds=(None, "max_error"),
    evidence=("faithfulness",),
    definition="faithfulness error(C) = |1 − recovery(C)|: recovery below 1 misses performance, recovery above 1 means the "
    "circuit leaves out components that work against the task (MIB's CMD idea). recovery as in sufficiency: a node circuit "
    "keeps its components, an edge circuit only its edges (every receiver's input rebuilt from its kept senders). Decided "
    "on the upper bound.",
    section="completeness",
    needs_task=True,
    spec_call=causal._spec_circuit,
    subject=causal._circuit_subject,
))
