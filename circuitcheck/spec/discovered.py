"""A spec from a discovered circuit: ``python -m circuitcheck discover MODEL ... -o found.circuit.yaml``.

The spec holds the model, the task exactly as given, the found circuit and a
claim per exact check of :func:`circuitcheck.claims.discovery.discover`, each
with its threshold a stated ``margin`` outside the measured interval's
deciding bound (below a lower bound, above an upper bound), rounded outward
to 0.01, so it holds on the measured values and keeps holding under small
changes. A check is claimed only when its threshold, so placed, still makes
the claim its kind's default threshold makes (drop at least 0.5, faithfulness
error at most 0.1, incompleteness at most 0.2, every member contributing at
least 0.05): otherwise it is written as a comment with its numbers and why,
instead of a claim that says less than its name. Sufficiency, what the search
optimised, is always claimed. Every number a claim was derived from is in
the comment above it.
"""

from __future__ import annotations

import inspect
import math
import os
import tempfile
from pathlib import Path

import yaml

from ..claims.completeness import DEFAULT_MAX_INCOMPLETENESS
from ..claims.faithfulness import DEFAULT_MAX_ERROR
from ..claims.minimality import check_minimal
from ..errors import CircuitCheckError
from .load import SUFFIX
from .starter import yaml_scalar

DEFAULT_MARGIN = 0.05
#: pytest's --circuitcheck-seed default: claims measured at another seed pin theirs
DEFAULT_SEED = 0
#: the kinds' default thresholds: a claim whose margin-placed threshold is weaker than these is not written
MIN_USEFUL_DROP = 0.5  # check_necessary's default min_drop
MAX_USEFUL_ERROR = DEFAULT_MAX_ERROR
MAX_USEFUL_INCOMPLETENESS = DEFAULT_MAX_INCOMPLETENESS
MIN_USEFUL_CONTRIBUTION = inspect.signature(check_minimal).parameters["min_contribution"].default


def _down(value: float) -> float:
    return math.floor(value * 100 + 1e-9) / 100


def _up(value: float) -> float:
    return math.ceil(value * 100 - 1e-9) / 100


def _interval(result) -> str:
    return f"{result.value:.4f} (95% CI {result.ci_low:.4f} to {result.ci_high:.4f}, n={result.n})" if result.confidence == 0.95 else (
        f"{result.value:.4f} ({result.confidence:.0%} CI {result.ci_low:.4f} to {result.ci_high:.4f}, n={result.n})")


def spec_text(found, task_yaml: str, margin: float = DEFAULT_MARGIN, command: str | None = None) -> str:
    """The spec of ``found`` (a :class:`~circuitcheck.claims.discovery.Discovery` with its checks).

    ``task_yaml``: the task as the spec writes it (a built-in name or a flow
    mapping, as the user gave it); ``margin``: how far outside the measured
    bound each threshold sits.
    """
    if not found.checks:
        raise CircuitCheckError("the discovery has no exact checks (verify=False): a spec needs them for its thresholds")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < 1:
        raise CircuitCheckError(f"margin={margin!r} is not valid: a number in [0, 1)")
    checks = found.checks
    level = found.level
    lines = [
        f"# circuitcheck spec: a circuit found by `circuitcheck discover` on {found.model}.",
        f"# Run:    pytest <this file>      (schema: circuitcheck/spec/spec_schema.md)",
    ]
    if command:
        lines.append(f"# Made by: {command}")
    lines += [
        "#",
        f"# Search: {found.scores.label} scores of every {level[:-1]} ({len(found.curve.ranking.items)} {level}); recovery of the",
        f"# top n for n up to {found.budget} peaked at {found.best:.4f}; cut at n = {found.cut}, the first within {found.tolerance:g} of",
        f"# the peak; pruned to {len(found.members)} {level} while recovery stayed >= {found.target:.4f}.",
        f"# Measured with ablation {found.ablation}, seed {found.seed}; each threshold is {margin:g} outside the measured",
        "# interval's deciding bound, rounded outward to 0.01.",
    ]
    if level == "edges":
        lines.append(f"# The edges touch {' '.join(map(str, found.nodes()))}.")
    lines += ["", f"model: {yaml_scalar(found.model)}", f"task: {task_yaml}", "", "circuits:", "  found:"]
    if level == "edges":
        lines += [f"    - {yaml_scalar(str(edge))}" for edge in found.circuit.edges]
    else:
        lines[-1] += " " + yaml_scalar(" ".join(map(str, found.circuit.components)))
    lines += ["", "claims:"]
    ablation = [f"    ablation: {yaml_scalar(found.ablation)}"] if found.ablation != "resample" else []
    if found.seed != DEFAULT_SEED:  # the claims run at the seed they were measured at, whatever --circuitcheck-seed says
        ablation.append(f"    seed: {found.seed}")

    def claim(kind: str, comment: list[str], body: list[str]) -> None:
        lines.extend(["", *(f"  # {c}" for c in comment), f"  - kind: {kind}", *body, *ablation])

    def skipped(kind: str, comment: list[str], why: str) -> None:
        lines.extend(["", *(f"  # {c}" for c in comment), f"  # not claimed ({kind}): {why}"])

    result = checks["sufficient"]
    claim("sufficient", [f"recovery {_interval(result)}"],
          ["    circuit: found", f"    min_recovery: {_down(result.ci_low - margin):.2f}"])
    result = checks["necessary"]
    bound = _down(result.ci_low - margin)
    if bound >= MIN_USEFUL_DROP:
        claim("necessary", [f"drop {_interval(result)}"], ["    circuit: found", f"    min_drop: {bound:.2f}"])
    else:
        skipped("necessary", [f"drop {_interval(result)}"],
                f"the lower bound less the margin is {bound:.2f}, below the default {MIN_USEFUL_DROP:g}")
    result = checks["faithful"]
    bound = _up(result.ci_high + margin)
    if bound <= MAX_USEFUL_ERROR:
        claim("faithful", [f"faithfulness error |1 - recovery| {_interval(result)}"], ["    circuit: found", f"    max_error: {bound:.2f}"])
    else:
        skipped("faithful", [f"faithfulness error |1 - recovery| {_interval(result)}"],
                f"the upper bound plus the margin is {bound:.2f}, above the default {MAX_USEFUL_ERROR:g}")
    if "minimal" in checks:
        result = checks["minimal"]
        method = result.parameters.get("method", "ioi")
        bound = _down(result.ci_low - margin)
        comment = [f"weakest member's contribution ({method}) {_interval(result)}"]
        if bound >= MIN_USEFUL_CONTRIBUTION:
            claim("minimal", comment, ["    circuit: found", f"    method: {method}", f"    min_contribution: {bound:.2f}"])
        else:
            skipped("minimal", comment, f"the weakest lower bound less the margin is {bound:.2f}, below the default "
                                        f"{MIN_USEFUL_CONTRIBUTION:g}: some member adds little (a larger --tolerance prunes further)")
    if "complete" in checks:
        result = checks["complete"]
        bound = _up(result.ci_high + margin)
        if bound <= MAX_USEFUL_INCOMPLETENESS:
            claim("complete", [f"incompleteness {_interval(result)}"], ["    circuit: found", f"    max_incompleteness: {bound:.2f}"])
        else:
            skipped("complete", [f"incompleteness {_interval(result)}"],
                    f"the upper bound plus the margin is {bound:.2f}, above the default {MAX_USEFUL_INCOMPLETENESS:g}: "
                    "the circuit misses a path the model has (a backup head?)")
    result = checks["curve"]
    claim("faithfulness_curve", [f"CPR of the {found.scores.label} ranking at MIB's fractions {_interval(result)}"],
          [f"    scores: {found.method}", f"    level: {level}", f"    min_cpr: {_down(result.ci_low - margin):.2f}"])
    return "\n".join(lines) + "\n"


def write_spec(found, path: str | os.PathLike, task_yaml: str, margin: float = DEFAULT_MARGIN, command: str | None = None) -> Path:
    """Write the spec of ``found`` to ``path`` (``*.circuit.yaml``); an existing file is never overwritten."""
    path = Path(path)
    if not path.name.endswith(SUFFIX):
        raise CircuitCheckError(f"{path}: a spec file's name ends in {SUFFIX} (pytest collects those), e.g. found{SUFFIX}")
    if path.exists():
        raise CircuitCheckError(f"{path} exists; circuitcheck never overwrites a spec: choose another -o path or move it away")
    text = spec_text(found, task_yaml, margin, command)
    yaml.safe_load(text)  # what we write parses
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.link(staging, path)  # fails if the file appeared meanwhile: never replaces it
    except FileExistsError:
        raise CircuitCheckError(f"{path} appeared while writing; circuitcheck never overwrites a spec") from None
    finally:
        os.unlink(staging)
    return path
