"""Runs of a circuit's subsets, shared by every causal claim on the same circuit and task.

Necessity, sufficiency, minimality (every method) and completeness are all
made of two kinds of variants of one circuit C (see :mod:`.subsets`):

- ``keep(S)``: the components S of C run intact, every other head and MLP output
  is ablated (``keep(C)`` is sufficiency's run, ``keep(∅)`` the fully ablated model);
- ``drop(K)``: the components K of C are ablated, everything else runs (``drop(∅)``
  is the full model, ``drop(C)`` necessity's run).

A :class:`CircuitLattice` turns masks over C into those variants and runs the
ones not yet measured in one batched :meth:`Patcher.run`. Measured variants are
remembered per (task runs, ablation, seed, patches): a suite asking necessity,
sufficiency, minimality and completeness of one circuit runs each variant
once. The memory belongs to the patcher's cached runs of the task, so it goes
with them (they are made again when the model's weights change).
"""

from __future__ import annotations

import threading
import weakref
from typing import Iterable, Sequence

import numpy as np

from ..model.components import Component
from . import stats

_lock = threading.Lock()
#: id(TaskRuns) -> (a weak reference to it, {(ablation, seed, variant key): per-example metric})
_memo: dict[int, tuple[weakref.ref, dict]] = {}


def _memo_of(runs) -> dict:
    with _lock:
        entry = _memo.get(id(runs))
        if entry is None or entry[0]() is not runs:
            key = id(runs)
            entry = (weakref.ref(runs, lambda _, key=key: _memo.pop(key, None)), {})
            _memo[key] = entry
        return entry[1]


def _variant_key(variant) -> frozenset | None:
    """A variant's patches as a set (their order does not matter); None when one holds a tensor (not memoised).

    Sources that say they may be (``memoisable``: hashable, no tensor; edge ablations) are remembered too.
    """
    if any(not isinstance(patch.source, str) and not getattr(patch.source, "memoisable", False) for patch in variant):
        return None
    return frozenset(variant)


def run_variants(setup, variants: Sequence, desc: str) -> tuple[list[np.ndarray], int]:
    """Per-example metrics ``[batch]`` of each variant on the clean input, measured once per setup and variant.

    ``setup`` is a causal claim's setup (model, task, patcher, ablation, seed).
    Only variants not measured before run, all in one batched call. Returns
    the metrics and how many variants ran now.
    """
    runs = setup.patcher.runs(setup.task)
    memo = _memo_of(runs)
    prefix = (str(getattr(setup.ablation, "name", setup.ablation)), int(setup.seed))
    keys = [_variant_key(v) for v in variants]
    missing: dict[object, int] = {}
    for i, key in enumerate(keys):
        if key is None or (prefix, key) not in memo:
            missing.setdefault(key if key is not None else ("unshared", i), i)
    if missing:
        todo = list(missing.values())
        values = setup.patcher.run(setup.task, [variants[i] for i in todo], base="clean", ablation=setup.ablation, seed=setup.seed, desc=desc)
        fresh = {}
        for row, i in enumerate(todo):
            fresh[i] = values[row].numpy().astype(np.float64)
            if keys[i] is not None:
                memo[(prefix, keys[i])] = fresh[i]
    else:
        fresh = {}
    return [fresh[i] if keys[i] is None else memo[(prefix, keys[i])] for i in range(len(variants))], len(missing)


def full_metric(setup) -> np.ndarray:
    """The full model's per-example metric m(M) on the clean input."""
    return setup.patcher.runs(setup.task).clean_metric.numpy().astype(np.float64)


class CircuitLattice:
    """The keep/drop runs of the subsets of one circuit, by bit mask (bit i: component i).

    ``ablate_all_but(kept)`` and ``ablate(components)`` build the variants (the
    causal claims' own builders, so ablation options such as ``keep=`` apply).
    """

    def __init__(self, setup, components: Sequence[Component], *, ablate_all_but, ablate):
        self.setup = setup
        self.components = list(components)
        self.n = len(self.components)
        self._ablate_all_but = ablate_all_but
        self._ablate = ablate
        self.variants_run = 0  # variants this lattice ran (the rest were measured before, by this claim or another)
        self.variants_used = 0

    def members(self, mask: int) -> list[Component]:
        return [c for i, c in enumerate(self.components) if mask >> i & 1]

    def _measure(self, masks: Iterable[int], build, desc: str) -> dict[int, np.ndarray]:
        masks = list(dict.fromkeys(int(m) for m in masks))
        variants = [build(self.members(m)) for m in masks]
        values, ran = run_variants(self.setup, variants, desc)
        self.variants_run += ran
        self.variants_used += len(masks)
        return dict(zip(masks, values))

    def keep(self, masks: Iterable[int], desc: str = "circuit subsets") -> dict[int, np.ndarray]:
        """m(S) per mask S: S kept, every other head and MLP output ablated."""
        return self._measure(masks, self._ablate_all_but, desc)

    def drop(self, masks: Iterable[int], desc: str = "ablated subsets") -> dict[int, np.ndarray]:
        """m(M \\ K) per mask K: K ablated, the rest of the model intact (K = 0 is the full model, not run)."""
        masks = list(masks)
        out = self._measure([m for m in masks if m], self._ablate, desc)
        if 0 in masks:
            out[0] = full_metric(self.setup)
        return out


def bootstrap(samples: np.ndarray, statistic, *, confidence: float, seed: int, resamples: int = stats.DEFAULT_RESAMPLES) -> list[stats.Estimate]:
    """Like :func:`stats.bootstrap_statistics` (the same seeded resamples), for thousands of paired quantities.

    ``samples`` ``[k, n]``; ``statistic`` maps means ``[R, k]`` to ``[R, m]`` and is
    called once with ``R = 1`` (the point estimate, from the plain means) and
    once with ``R = resamples``. Resample means are taken as a weighted sum
    (counts @ samples), so memory is ``[R, k]``, not ``[R, k, n]``.
    """
    stats.check_confidence(confidence)
    data = np.asarray(samples, dtype=np.float64)
    if data.ndim != 2 or not np.isfinite(data).all():
        raise ValueError(f"samples must be finite [quantities, examples], got shape {data.shape}")
    n = data.shape[1]
    stats._require_examples(n)
    point = np.asarray(statistic(data.mean(axis=1)[None, :]), dtype=np.float64).reshape(-1)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, size=(resamples, n))
    counts = np.zeros((resamples, n))
    np.add.at(counts, (np.arange(resamples)[:, None], index), 1.0)
    means = counts @ data.T / n
    with np.errstate(divide="ignore", invalid="ignore"):  # a resample with a zero gap is NaN, skipped below
        values = np.asarray(statistic(means), dtype=np.float64).reshape(resamples, -1)
    alpha = (1 - confidence) / 2
    low = np.nanquantile(values, alpha, axis=0)
    high = np.nanquantile(values, 1 - alpha, axis=0)
    return [stats.Estimate(float(p), float(lo), float(hi), n, confidence, values[:, j].copy())
            for j, (p, lo, hi) in enumerate(zip(point, low, high))]


class Samples:
    """Per-example metrics of named runs stacked ``[k, n]``, and recovery of each from sample means."""

    def __init__(self, full: np.ndarray, empty: np.ndarray, runs: dict):
        names = ["M", "empty", *runs]
        self.rows = {name: i for i, name in enumerate(names)}
        self.data = np.stack([full, empty, *runs.values()])

    def recovery(self, means: np.ndarray) -> np.ndarray:
        """``[R, k]`` means -> ``[R, k]`` recovery (m(X) - m(∅)) / (m(M) - m(∅)) of every run."""
        gap = means[:, 0] - means[:, 1]
        return (means - means[:, 1:2]) / gap[:, None]

    def columns(self, names) -> np.ndarray:
        return np.array([self.rows[name] for name in names], dtype=int)

    def point_recovery(self) -> dict:
        r = self.recovery(self.data.mean(axis=1)[None, :])[0]
        return {name: float(r[i]) for name, i in self.rows.items()}
