"""Probing claims: "blocks.0.hook_resid_post linearly encodes the previous token".

The measurement is :meth:`circuitcheck.probe.Prober.fit` (a seeded, held-out
linear probe with a majority baseline and a control task). The claim is decided
on the test accuracy's bootstrap interval, resampling *test prompts* (the
positions of one prompt move together, as they are not independent):

- ``min_accuracy``: the lower bound must be >= it ("encodes");
- ``max_accuracy``: the upper bound must be <= it ("does not encode");
- ``min_selectivity`` (optional): the lower bound of accuracy minus control
  accuracy, paired on the same resampled prompts, must be >= it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..model import context
from . import stats
from ..model.components import model_checkpoint, model_label
from ..errors import CircuitCheckError
from ..engine import probe as _engine_probe
from ..engine.probe import Prober as _EngineProber, ProbeResult, _positions_text, labels_digest
from .result import CheckResult
from .decision import check_thresholds, conclude


def check_probe_accuracy(
    hook: str,
    labels,
    *,
    inputs=None,
    min_accuracy: float | None = None,
    max_accuracy: float | None = None,
    min_selectivity: float | None = None,
    positions: int | Sequence[int] | None = None,
    test_fraction: float = 0.25,
    control: str | None = "shuffle",
    what: str = "the labels",
    weight_decay: float | None = None,
    model=None,
    seed: int | None = None,
    prober: _EngineProber | None = None,
    confidence: float = stats.DEFAULT_CONFIDENCE,
) -> CheckResult:
    """Fit a linear probe for ``labels`` at ``hook`` and decide the claim (never raises on failure).

    ``inputs``: ``[batch, pos]`` tokens, prompts, or a Task; left out, the
    running test's task (its clean inputs). ``what`` names the labels in the
    claim ("the previous token"). ``prober``: reuse a :class:`Prober`'s model,
    seed and activation cache (the ``probe`` fixture). Other arguments as in
    :meth:`Prober.fit`.
    """
    if prober is not None:
        if not isinstance(prober, _EngineProber):
            raise CircuitCheckError(f"prober must be a circuitcheck Prober, got {type(prober).__name__}")
        if model is not None and model is not prober.model:
            raise CircuitCheckError("model= and prober= name different models: pass one of them")
        model = prober.model
    model = context.resolve_model(model)
    if seed is None and prober is not None:
        seed = prober.seed
    seed = context.resolve_seed(seed)
    confidence = stats.check_confidence(confidence)
    if min_accuracy is None and max_accuracy is None:
        raise CircuitCheckError(
            "give min_accuracy= (the claim 'the hook encodes the labels') or max_accuracy= (the claim 'it does not')"
        )
    check_thresholds(min_accuracy, max_accuracy, low=0.0, high=1.0, names=("min_accuracy", "max_accuracy"))
    check_thresholds(min_selectivity, None, low=-1.0, high=1.0, names=("min_selectivity", "max_selectivity"))
    if min_selectivity is not None and control is None:
        raise CircuitCheckError("min_selectivity= needs a control task: leave control='shuffle' or use 'hewitt-liang'")
    if inputs is None:
        task = context.current().get_task(model) if context.current() is not None else None
        if task is None:
            raise CircuitCheckError("no inputs: pass inputs=... (tokens, prompts or a Task), or run inside a test with a task")
        inputs = task
    if prober is None:
        prober = _EngineProber(model, seed=seed)

    result = prober.fit(hook, inputs, labels, positions, test_fraction, control=control, weight_decay=weight_decay, seed=seed)
    accuracy, selectivity = _estimates(result, confidence, seed)

    passed = True
    if min_accuracy is not None:
        passed &= accuracy.low >= min_accuracy
    if max_accuracy is not None:
        passed &= accuracy.high <= max_accuracy
    if min_selectivity is not None:
        passed &= selectivity.low >= min_selectivity
    decided = "lower bound" if max_accuracy is None else "upper bound" if min_accuracy is None else "interval"
    if min_selectivity is not None:
        decided += " (and selectivity's lower bound)"
    parts = [accuracy.p_value(min_accuracy, max_accuracy)]
    if min_selectivity is not None:
        parts.append(selectivity.p_value(min_selectivity, None))
    p = stats.combine(parts)

    negative = min_accuracy is None
    claim = f"{hook} {'does not linearly encode' if negative else 'linearly encodes'} {what}"
    chance = 1 / result.n_classes
    summary = pd.DataFrame(
        {
            "accuracy": [result.accuracy],
            "ci_low": [accuracy.low],
            "ci_high": [accuracy.high],
            "majority_baseline": [result.majority_accuracy],
            "chance": [chance],
            "control_accuracy": [result.control_accuracy],
            "selectivity": [result.selectivity],
            "selectivity_ci_low": [None if selectivity is None else selectivity.low],
            "selectivity_ci_high": [None if selectivity is None else selectivity.high],
            "train_accuracy": [result.train_accuracy],
            "n_train": [result.n_train],
            "n_test": [result.n_test],
        },
        index=pd.Index([hook], name="hook"),
    )
    notes = [
        f"baselines: majority class {result.majority_accuracy:.3f}, chance 1/{result.n_classes} = {chance:.3f}, "
        + (
            f"control ({result.control}) {result.control_accuracy:.3f}; selectivity {selectivity.describe()}"
            if selectivity is not None
            else "no control task"
        ),
        f"probe:    linear (multinomial logistic regression, standardised features, L2 {result.weight_decay:g}), "
        f"train accuracy {result.train_accuracy:.3f}",
        f"input:    {result.n_train_prompts} train / {result.n_test_prompts} test prompts (split by prompt, seed {seed}), "
        f"positions {_positions_text(result.positions)}: {result.n_train} / {result.n_test} examples; "
        f"interval by bootstrap over test prompts",
    ]
    worst = result.per_class.dropna(subset=["accuracy"]).sort_values(["accuracy", "n_test"], ascending=[True, False])
    if len(worst) and (negative is False and not passed):
        worst_text = ", ".join(f"{label} {row.accuracy:.2f} (n={int(row.n_test)})" for label, row in worst.head(3).iterrows())
        notes.append(f"worst-decoded labels: {worst_text}")
    per_class = result.per_class.copy()
    per_class.index = per_class.index.map(str)
    per_class.index.name = "label"
    return CheckResult(
        kind="probe",
        claim=claim,
        value=accuracy.mean,
        passed=bool(passed),
        n=result.n_test,
        metric="probe test accuracy",
        min_value=min_accuracy,
        max_value=max_accuracy,
        ci_low=accuracy.low,
        ci_high=accuracy.high,
        confidence=accuracy.confidence,
        decided_on=decided,
        **p.fields(),
        model=model_label(model),
        checkpoint=model_checkpoint(model),
        parameters={
            "hook": hook,
            "what": what,
            "positions": _positions_text(result.positions),
            "test_fraction": float(test_fraction),
            "control": result.control,
            "min_selectivity": min_selectivity,
            "seed": seed,
            "weight_decay": result.weight_decay,
            "n_classes": result.n_classes,
            "n_prompts": result.n_train_prompts + result.n_test_prompts,
            "labels_digest": labels_digest(labels),
            **{k: v for k, v in result.summary().items() if k in ("majority_accuracy", "control_accuracy", "selectivity",
                                                                  "train_accuracy")},
        },
        evidence={"probe": summary, "per_class": per_class},
        notes=notes,
    )


def assert_probe_accuracy(
    hook: str,
    labels,
    tolerance=None,
    **kwargs,
) -> CheckResult:
    """Assert that ``labels`` can be read off ``hook``'s activations by a linear probe.

    ::

        cc.assert_probe_accuracy("blocks.0.hook_resid_post", previous_token, inputs=tokens,
                                 min_accuracy=0.9, min_selectivity=0.5, what="the previous token")

    Passes when the held-out accuracy's lower bound is >= ``min_accuracy`` and,
    if given, selectivity's (accuracy minus control-task accuracy) lower bound
    is >= ``min_selectivity``; with only ``max_accuracy=`` it is a "does not
    encode" claim (upper bound <= ``max_accuracy``). Keyword arguments as in
    :func:`check_probe_accuracy` (``inputs``, ``positions``, ``model``, ``seed``,
    ``prober``, ``control``, ``what``...). Returns the :class:`CheckResult`;
    raises :class:`CircuitAssertionError` if the claim fails.
    """
    __tracebackhide__ = True
    return conclude(check_probe_accuracy(hook, labels, **kwargs), tolerance)


def _estimates(result: ProbeResult, confidence: float, seed: int):
    """Accuracy (and selectivity) with intervals from a bootstrap over test prompts."""
    prompts, index = np.unique(result.test_prompt, return_inverse=True)
    count = np.bincount(index, minlength=len(prompts)).astype(np.float64)
    correct = np.bincount(index, weights=result.test_correct, minlength=len(prompts))
    if result.control_correct is None:
        control = np.zeros_like(correct)
    else:
        control = np.bincount(index, weights=result.control_correct, minlength=len(prompts))

    def statistic(means):
        return np.stack([means[..., 0] / means[..., 2], (means[..., 0] - means[..., 1]) / means[..., 2]], axis=-1)

    accuracy, selectivity = stats.bootstrap_statistics(
        np.stack([correct, control, count]), statistic, confidence=confidence, seed=seed
    )
    return accuracy, (selectivity if result.control_correct is not None else None)


# The prober the `probe` fixture hands out --------------------------------------------------


class Prober(_EngineProber):
    """:class:`circuitcheck.engine.probe.Prober` with the claims on top: ``assert_accuracy`` / ``check_accuracy``.

    The engine's prober fits probes; deciding a claim is this layer's job, so
    the two claim methods live here (the ``probe`` fixture and
    ``circuitcheck.Prober`` are this class).
    """

    def assert_accuracy(self, hook: str, labels, inputs, **kwargs) -> CheckResult:
        """:func:`assert_probe_accuracy` with this prober (its model, seed and activation cache)."""
        __tracebackhide__ = True
        return assert_probe_accuracy(hook, labels, inputs=inputs, prober=self, **kwargs)

    def check_accuracy(self, hook: str, labels, inputs, **kwargs) -> CheckResult:
        """:func:`check_probe_accuracy` with this prober."""
        return check_probe_accuracy(hook, labels, inputs=inputs, prober=self, **kwargs)


# Built-in labellers: labels of every position from a [batch, pos] token tensor ----------------


def previous_token(tokens: torch.Tensor) -> torch.Tensor:
    """``labels[b, p] = tokens[b, p - 1]`` (position 0 gets the last token; BOS is not probed by default)."""
    return tokens.roll(1, dims=1)


def current_token(tokens: torch.Tensor) -> torch.Tensor:
    """``labels[b, p] = tokens[b, p]``."""
    return tokens.clone()


def position(tokens: torch.Tensor) -> torch.Tensor:
    """``labels[b, p] = p``."""
    return torch.arange(tokens.shape[1]).expand(tokens.shape[0], -1).clone()


#: name -> labeller, for spec files (``labels: previous_token``)
LABELLERS = {"previous_token": previous_token, "current_token": current_token, "position": position}


# The claim kind (circuitcheck.claims.registry) ----------------------------------------------

from .registry import ClaimKind, Param, declare  # noqa: E402


def _spec_probe(assertion, params: dict, *, model, task=None):
    """Inputs from ``prompts`` or the task; labels from a built-in labeller or a ``module:function`` one."""
    __tracebackhide__ = True
    prompts = params.pop("prompts", None)
    tokens = _engine_probe.as_tokens(model, prompts if prompts is not None else task)
    labels = params.pop("labels")
    if isinstance(labels, str):
        params.setdefault("what", f"the {labels.replace('_', ' ')}")
        labels = LABELLERS[labels]
    if isinstance(params.get("positions"), slice):  # the prober takes positions as a list
        params["positions"] = list(range(tokens.shape[1]))[params["positions"]]
    if params.get("control") == "none":
        params["control"] = None
    return assertion(params.pop("hook"), labels(tokens), inputs=tokens, model=model, **params)


PROBE = declare(ClaimKind(
    name="probe",
    aliases=("probe_accuracy",),
    check=check_probe_accuracy,
    assertion=assert_probe_accuracy,
    metric="probe test accuracy",
    params=(
        Param("hook", "string", required=True, doc="a hook point, e.g. blocks.0.hook_resid_post"),
        Param("labels", "reference", required=True, choices=tuple(LABELLERS),
              doc="previous_token, current_token, position, or module:function from [batch, pos] tokens to labels"),
        Param("min_accuracy", "score", doc='passes when the lower bound of test accuracy is >= it ("encodes")'),
        Param("max_accuracy", "score", doc='with only max_accuracy, a "does not encode" claim (upper bound <= it)'),
        Param("min_selectivity", "number", doc="lower bound of accuracy minus control accuracy"),
        Param("positions", "positions", doc="default: every position but BOS"),
        Param("prompts", "strings", doc="prompts of one token length to probe on (default: the task's clean inputs)"),
        Param("test_fraction", "probability", 0.25, doc="share of the prompts held out"),
        Param("control", "choice", "shuffle", choices=("shuffle", "hewitt-liang", "none"), doc="the control task"),
        Param("what", "string", doc="names the labels in the claim (default from the labeller)"),
        Param("weight_decay", "number", doc="L2 weight of the probe"),
        Param("seed", "seed", doc="default: --circuitcheck-seed"),
        Param("confidence", "probability", stats.DEFAULT_CONFIDENCE, doc="of the bootstrap interval over test prompts"),
    ),
    thresholds=("min_accuracy", "max_accuracy"),
    evidence=("probe", "per_class"),
    definition="Probes: test accuracy of a linear probe next to the majority class and a probe trained on shuffled labels.",
    section="probe",
    needs_task=True,
    replaces_task=("prompts",),
    spec_call=_spec_probe,
    subject=lambda params: f"{params['hook']} {params['labels']}",
))
