"""Ablations: what replaces a removed component.

- ``resample`` (default): the component's activation on the corrupted input
  (the same example index), from the cached corrupted run.
- ``mean``: the mean activation over a reference set of inputs, per position:
  the task's ``reference`` inputs when it has them, else its corrupted inputs
  (never silently the clean inputs being measured, whose own mean would leak
  what is being measured into the ablation). ``mean(corrupt)`` always averages
  over the corrupted inputs; ``mean(clean)`` over the clean inputs (the old
  default, available only when asked for by name).
- ``zero``: zeros.
- ``noise(std)``: the clean activation plus seeded Gaussian noise of ``std``.

Ablations are given as strings (``"noise(0.1)"``) or :class:`Ablation`
objects; plugins add kinds through the ``circuitcheck_make_ablation`` hook.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import CircuitCheckError

BUILTIN = ("resample", "mean", "zero", "noise(STD)", "mean(corrupt)", "mean(clean)")


@dataclass(frozen=True)
class Ablation:
    """What a removed activation becomes.

    ``needs`` names the runs its :meth:`value` reads: any of ``"clean"``,
    ``"corrupt"``, ``"reference"``. ``value(hook_name, runs)`` returns the
    replacement, ``[batch, ...]`` like the clean activation (or broadcastable).
    """

    name: str
    value: Callable[[str, "AblationInputs"], torch.Tensor]
    needs: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.name


@dataclass
class AblationInputs:
    """What an ablation can read: cached activations of the task's runs, by hook name."""

    clean: Callable[[str], torch.Tensor]
    corrupt: Callable[[str], torch.Tensor]
    reference: Callable[[str], torch.Tensor]
    seed: int


def resample() -> Ablation:
    return Ablation("resample", lambda hook, runs: runs.corrupt(hook), needs=("corrupt",))


#: What ``mean(SET)`` can average over: the run each reads (``reference`` is the task's
#: reference set, or its corrupted inputs when it has none).
MEAN_SETS = ("reference", "corrupt", "clean")


def mean(over: str = "reference") -> Ablation:
    """Per-position mean over ``over``: ``"reference"`` (default: the task's reference set, else its corrupted inputs), ``"corrupt"`` or ``"clean"``."""
    if over not in MEAN_SETS:
        raise CircuitCheckError(f"mean ablation over {over!r} is not valid: valid sets are {', '.join(MEAN_SETS)}")
    name = "mean" if over == "reference" else f"mean({over})"
    return Ablation(name, lambda hook, runs: getattr(runs, over)(hook).mean(0, keepdim=True), needs=(over,))


def zero() -> Ablation:
    return Ablation("zero", lambda hook, runs: torch.zeros_like(runs.clean(hook)), needs=("clean",))


def noise(std: float) -> Ablation:
    if not isinstance(std, (int, float)) or isinstance(std, bool) or not 0 < std < math.inf:
        raise CircuitCheckError(f"noise std {std!r} is not valid: it must be a positive finite number")

    def value(hook: str, runs: AblationInputs) -> torch.Tensor:
        clean = runs.clean(hook)
        # One generator per (seed, hook): the same noise wherever the hook is ablated.
        seed = int.from_bytes(hashlib.sha1(f"{runs.seed}:{hook}".encode()).digest()[:8], "little") & (2**63 - 1)
        generator = torch.Generator().manual_seed(seed)
        sample = torch.randn(clean.shape, generator=generator, dtype=torch.float32)
        return clean + std * sample.to(device=clean.device, dtype=clean.dtype)

    return Ablation(f"noise({std:g})", value, needs=("clean",))


_MEAN = re.compile(r"^mean\(\s*(?P<over>corrupt|clean)\s*\)$")
_NOISE = re.compile(r"^noise\(\s*(?P<std>[0-9.eE+-]+)\s*\)$")


def parse(ablation: "str | Ablation | None") -> Ablation:
    """An :class:`Ablation` from a string, an Ablation, or None (``resample``)."""
    if ablation is None:
        return resample()
    if isinstance(ablation, Ablation):
        return ablation
    if not isinstance(ablation, str):
        raise CircuitCheckError(f"ablation must be a string such as 'resample' or an Ablation, got {ablation!r}")
    text = ablation.strip()
    if text in ("resample", "mean", "zero"):
        return {"resample": resample, "mean": mean, "zero": zero}[text]()
    match = _MEAN.match(text)
    if match:
        return mean("corrupt" if match["over"] == "corrupt" else "clean")
    match = _NOISE.match(text)
    if match:
        try:
            std = float(match["std"])
        except ValueError:
            std = None
        if std is not None:
            if not 0 < std < math.inf:  # e.g. noise(1e400): inf, which would blame the metric later
                raise CircuitCheckError(f"ablation {ablation!r} is not valid: noise(STD) needs a positive finite std, "
                                        f"got {match['std']}")
            return noise(std)
    from ..model.sources import plugin_manager

    made = plugin_manager().hook.circuitcheck_make_ablation(spec=text)
    if made is not None:
        return made
    raise CircuitCheckError(f"unknown ablation {ablation!r}: valid ablations are {', '.join(BUILTIN)}, or one a plugin provides")


def describe(ablation: Ablation, task) -> str:
    """What the ablation puts in place of a removed activation on ``task``, in words (stated in every causal result)."""
    if "reference" in ablation.needs:
        return f"per-position mean over {reference_set(task)}"
    if ablation.name == "mean(corrupt)":
        return f"per-position mean over the task's corrupted inputs ({task.n_examples} examples)"
    if ablation.name == "mean(clean)":
        return f"per-position mean over the clean inputs being measured ({task.n_examples} examples)"
    if ablation.name == "resample":
        return "each example's activation on its corrupted input"
    if ablation.name == "zero":
        return "zeros"
    if ablation.name.startswith("noise("):
        return f"the clean activation plus seeded Gaussian noise of std {ablation.name[6:-1]}"
    return f"{ablation.name} (a plugin's ablation)"


def reference_set(task) -> str:
    """The inputs plain ``mean`` ablation averages over for ``task``: its reference set, else its corrupted inputs."""
    if task.reference is not None:
        return f"the task's reference set ({int(task.reference.shape[0])} inputs)"
    return f"the task's corrupted inputs ({task.n_examples} examples; the task has no reference set)"
