"""Starter specs: ``python -m circuitcheck spec new MODEL`` writes a commented ``*.circuit.yaml``.

Zoo models get their card's circuits, head claims for the best heads and
causal claims for the card's circuit (thresholds a margin from the card's
measured values, so the starter passes); every other kind of the registry is
listed in comments with its keys. Other models get a commented template
(nothing is loaded).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from ..claims import registry
from ..errors import CircuitCheckError
from .load import SUFFIX, ZOO

_HEAD_KIND_OF_SCORE = {"previous_token": "previous_token_head", "duplicate_token": "duplicate_token_head",
                       "induction": "induction_head", "bos": "bos_head"}


def _floor(value: float, margin: float = 0.05, step: float = 0.05) -> float:
    return round(max(0.0, math.floor((value - margin) / step + 1e-9) * step), 2)


def _ceil(value: float, margin: float = 0.05, step: float = 0.05) -> float:
    return round(min(1.0, math.ceil((value + margin) / step - 1e-9) * step), 2)


def new_spec_text(model: str) -> str:
    """A commented starter spec for ``model``.

    Zoo models get their card's circuits and head claims for the best heads
    (thresholds a margin below the card's measured scores, so the starter
    passes); other models get a commented template (nothing is loaded).
    """
    if not isinstance(model, str) or not model.strip():
        raise CircuitCheckError(f"model spec {model!r} is not valid: give a string such as 'zoo:induction-2l'")
    model = model.strip()
    match = ZOO.match(model)
    if match:
        return _zoo_spec_text(model, match["name"], match["checkpoint"])
    return _generic_spec_text(model)


_HEADER = """\
# circuitcheck spec: claims about {model} that pytest runs (one test per claim).
# Run:    pytest {filename}      (schema: circuitcheck/spec/spec_schema.md)
# Every claim is measured on seeded inputs and decided with stated statistics;
# a failing claim prints a lab note with this file's line.
"""


def _zoo_spec_text(model: str, name: str, checkpoint: str | None) -> str:
    from .. import zoo

    card = zoo.card(name)  # ModelSpecError listing the zoo for an unknown name
    if checkpoint:
        found = [c for c in card.get("checkpoints", []) if c.get("name") == checkpoint]
        if checkpoint not in zoo.checkpoints(name):
            zoo.checkpoint_path(name, checkpoint)  # raises, listing the checkpoints
        scores = found[0]["scores"] if found else card["scores"]
    else:
        scores = card["scores"]
    lines = [_HEADER.format(model=yaml_scalar(model), filename=f"{name}.circuit.yaml").rstrip("\n")]
    description = " ".join(str(card.get("description", "")).split())
    if description:
        lines.append("#")
        lines += ["# " + chunk for chunk in _wrap(description, 86)]
    lines += ["", f"model: {yaml_scalar(model)}"]
    available = zoo.checkpoints(name)
    if not checkpoint and available:
        lines += [
            "",
            "# Check the claims across training checkpoints (one test per claim per checkpoint):",
            f"# checkpoints: [{', '.join(available)}]   # or: checkpoints: all",
        ]
    circuits = card.get("circuits") or {}
    rule = card.get("circuit_rule")
    lines += ["", "# The task that causal claims are measured on (built-in: induction on repeated random tokens).",
              "task:", "  name: induction", "  n_prompts: 32", "  seq_len: 20"]
    if circuits:
        lines += ["", "# Circuits from the model card."]
        if rule:
            lines += ["# " + chunk for chunk in _wrap(f"How they were found: {' '.join(str(rule).split())}", 86)]
        lines.append("circuits:")
        lines += [f"  {cname}: {ctext}" for cname, ctext in circuits.items()]
    lines += ["", "claims:", "  # Attention-head claims: thresholds sit a margin from the card's measured scores (below",
              "  # for 'is', above for 'is not' claims; head_scores at its defaults: 16 prompts 'BOS r r', seed 0)."]
    for score_kind, kind in _HEAD_KIND_OF_SCORE.items():
        table = scores.get(score_kind)
        if not table:
            continue
        ranked = sorted(((value, layer, head) for layer, row in enumerate(table) for head, value in enumerate(row)), reverse=True)
        strong = [entry for entry in ranked if entry[0] >= 0.5]
        if strong:
            for value, layer, head in strong:
                lines += [f"  - kind: {kind}  # measured {value:.3f}", f"    layer: {layer}", f"    head: {head}",
                          f"    min_score: {_floor(value)}"]
        else:
            value, layer, head = ranked[0]
            lines += [f"  - kind: {kind}  # no head scores >= 0.5; the best, L{layer}H{head}, measured {value:.3f}",
                      f"    layer: {layer}", f"    head: {head}", f"    max_score: {_ceil(value)}"]
    evidence = card.get("circuit_evidence") or {}
    if circuits:
        first = next(iter(circuits))
        drop = (evidence.get("drop_ci") or [None])[0]
        recovery = (evidence.get("recovery_ci") or [None])[0]
        lines += ["", f"  # Causal claims about the {first!r} circuit (resample ablation by default)."]
        lines += ["  - kind: necessary", f"    circuit: {first}", f"    min_drop: {_floor(drop, 0.02) if drop else 0.5}"]
        lines += ["  - kind: sufficient", f"    circuit: {first}", f"    min_recovery: {_floor(recovery, 0.02) if recovery else 0.8}"]
        lines += ["  - kind: minimal", f"    circuit: {first}", "    min_contribution: 0.05"]
        if evidence.get("minimality_method"):  # the method the card's circuit was pruned by (ioi: backup heads count)
            lines += [f"    method: {evidence['minimality_method']}"]
    written = {line.split("kind: ", 1)[1].split()[0] for line in lines if line.startswith("  - kind: ")}
    lines += ["", "  # More claim kinds (keys and defaults: circuitcheck/spec/spec_schema.md):"]
    lines += _other_kinds(written)
    lines += [
        "  # - id: a documented false claim",
        "  #   kind: induction_head",
        "  #   layer: 0",
        "  #   head: 1",
        "  #   min_score: 0.5",
        '  #   xfail: "why it is expected to fail"',
    ]
    return "\n".join(lines) + "\n"


def _generic_spec_text(model: str) -> str:
    filename = re.sub(r"[^\w.-]+", "-", model.rstrip("/").split("/")[-1]).strip("-.") or "model"
    return _HEADER.format(model=yaml_scalar(model), filename=f"{filename}.circuit.yaml") + f"""
model: {yaml_scalar(model)}

# Optional: check every claim at several checkpoints (model@checkpoint specs).
# checkpoints: [step1000, step2000]

# The task that {_task_kinds()} claims are measured on:
# `task: induction` (repeated random tokens), or your own prompts with one-token
# answers (metric: logit difference answer - wrong answer at the last position):
# task:
#   name: my-task
#   clean:         ["When Mary and John went to the store, John gave a drink to"]
#   corrupt:       ["When Mary and John went to the store, Anne gave a drink to"]
#   answers:       [" Mary"]
#   wrong_answers: [" John"]

# Named circuits: components such as L0H2, L1H3.k, L2.mlp, embed.
# circuits:
#   my_circuit: L0H2 L1H3

claims: []
  # Replace [] with your claims, e.g.:
  # - kind: induction_head
  #   layer: 1
  #   head: 3
  #   min_score: 0.7              # or max_score: 0.2 for "is not"
  #   xfail: "expected to fail because ..."   # any claim: a documented false claim
  # The kinds and their keys (details: circuitcheck/spec/spec_schema.md):
""" + "\n".join(_other_kinds(set())) + "\n"


_LINE_BREAKS = ("\n", "\r", "\x85", "\u2028", "\u2029")


def yaml_scalar(text: str) -> str:
    """``text`` as one line of YAML that reads back as exactly ``text``: plain when YAML allows, else double-quoted.

    PyYAML picks the style (its plain-scalar rules know every indicator: ``#``,
    ``: ``, leading ``-``/``@``/quotes, ``true``, numbers...); anything it would
    write over several lines, or with a YAML line break inside, is written
    double-quoted with escapes, so the value can sit after ``model:`` or in a
    comment without ending the line.
    """
    import yaml

    plain = yaml.safe_dump(text, allow_unicode=True, width=float("inf"))
    if plain.endswith("\n...\n") and not any(mark in plain[:-5] for mark in _LINE_BREAKS) and "'" not in plain[:1]:
        return plain[:-5]
    quoted = yaml.safe_dump(text, default_style='"', allow_unicode=True, width=float("inf")).rstrip("\n")
    assert not any(mark in quoted for mark in _LINE_BREAKS), quoted  # PyYAML escapes them in double quotes
    return quoted


def _task_kinds() -> str:
    return ", ".join(kind.name for kind in registry.kinds().values() if kind.needs_task)


def _other_kinds(written: set[str]) -> list[str]:
    """One comment line per kind of the registry not in ``written``: its required keys and thresholds."""
    lines = []
    for kind in registry.kinds().values():
        if kind.name in written:
            continue
        keys = [f"{name}: ..." for name in kind.required]
        keys += [f"{key}: ..." for key in kind.thresholds if key is not None][:1]
        lines.append(f"  # - kind: {kind.name}" + (f"   {', '.join(keys)}" if keys else ""))
    return lines


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


_EXISTS = "{path!r} already exists: a spec is never overwritten; choose another path or remove the file first"


def write_new_spec(path: str | os.PathLike, model: str) -> Path:
    """Write :func:`new_spec_text` for ``model`` to ``path`` (never overwrites; a directory gets ``NAME.circuit.yaml``)."""
    path = Path(path)
    if path.is_dir():
        match = ZOO.match(model.strip()) if isinstance(model, str) else None
        stem = match["name"] if match else re.sub(r"[^\w.-]+", "-", str(model).rstrip("/").split("/")[-1]).strip("-.") or "model"
        path = path / f"{stem}{SUFFIX}"
    if not path.name.endswith(SUFFIX):
        raise CircuitCheckError(
            f"{str(path)!r} does not end with {SUFFIX}: pytest collects spec files by that suffix; name it e.g. {path.stem}{SUFFIX}"
        )
    if path.exists():
        raise CircuitCheckError(_EXISTS.format(path=str(path)))
    text = new_spec_text(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise CircuitCheckError(_EXISTS.format(path=str(path))) from None
    return path
