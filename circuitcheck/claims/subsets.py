"""The subset lattice of a circuit: Shapley values, IOI-style minimality and completeness.

A circuit C of n components is a set of players. A subset S of C is written as a
bit mask (bit i set: component i kept). Every quantity here is computed from
the per-example task metric of a few kinds of variants, which the causal
claims run in the batched engine:

- ``keep[S]``: S kept, every other head and MLP output ablated (so ``keep[C]``
  is the circuit's sufficiency run and ``keep[0]`` the fully ablated model ∅);
- ``drop[K]``: K ablated, everything else intact (``drop[0]`` is the full model M).

With recovery(X) = (m(X) - m(∅)) / (m(M) - m(∅)) (DESIGN.md), every statistic
below is a linear combination of mean metrics divided by the gap, a ratio of
means, so its interval is a seeded bootstrap over examples like every other
claim's. This module is pure numpy: it chooses subsets and combines numbers;
it runs nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: Circuits up to this size are enumerated exactly (2^n subsets); larger ones are sampled.
MAX_EXACT_PLAYERS = 12


def members(mask: int, n: int) -> list[int]:
    """The indices of the components in ``mask``."""
    return [i for i in range(n) if mask >> i & 1]


def full(n: int) -> int:
    return (1 << n) - 1


def shapley_coefficients(n: int) -> np.ndarray:
    """``[n, 2^n]`` weights: Shapley value of player v = ``coefficients[v] @ value[all masks]``.

    phi_v = sum over S not containing v of |S|! (n - |S| - 1)! / n! * (value(S + v) - value(S)).
    """
    if n > MAX_EXACT_PLAYERS + 8:
        raise ValueError(f"{n} players have 2^{n} subsets: too many to enumerate, sample permutations instead")
    weights = [math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)]
    sizes = np.array([bin(mask).count("1") for mask in range(1 << n)])
    coefficients = np.zeros((n, 1 << n))
    for v in range(n):
        bit = 1 << v
        without = np.array([mask for mask in range(1 << n) if not mask & bit])
        w = np.array([weights[s] for s in sizes[without]])
        coefficients[v, without | bit] += w
        coefficients[v, without] -= w
    return coefficients


def sample_permutations(n: int, count: int, seed: int) -> np.ndarray:
    """``[count, n]`` seeded random orders of the players (each row a permutation)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n) for _ in range(count)]) if count else np.zeros((0, n), dtype=int)


def prefix_masks(permutations: np.ndarray) -> list[int]:
    """Every subset a permutation walk visits (the prefixes of each order), each once, sorted."""
    found = {0}
    for order in permutations:
        mask = 0
        for player in order:
            mask |= 1 << int(player)
            found.add(mask)
    return sorted(found)


def permutation_coefficients(permutations: np.ndarray, index: dict[int, int]) -> np.ndarray:
    """``[P, n, len(index)]``: per permutation, the marginal contributions it measures.

    For order p and its i-th player v with prefix S, ``value(S + v) - value(S)``;
    the mean over permutations of ``coefficients[p] @ values`` estimates the
    Shapley values without bias.
    """
    count, n = permutations.shape
    coefficients = np.zeros((count, n, len(index)))
    for p, order in enumerate(permutations):
        mask = 0
        for player in order:
            player = int(player)
            coefficients[p, player, index[mask | 1 << player]] += 1.0
            coefficients[p, player, index[mask]] -= 1.0
            mask |= 1 << player
    return coefficients


@dataclass(frozen=True)
class BestSubset:
    """For one component v: the K (a mask over C without v) that maximises the IOI score, and that score."""

    player: int
    mask: int
    score: float


def ioi_scores(recovery: dict[int, float], n: int, candidates: dict[int, Sequence[int]] | None = None) -> list[BestSubset]:
    """IOI-style minimality from the recovery of circuit subsets.

    For each v: max over K in C without v of recovery(C \\ K) - recovery(C \\ (K + v)).
    ``recovery`` maps kept masks to recovery; ``candidates`` (v -> masks of K)
    limits the search, by default every K (exhaustive, 2^(n-1) per component).
    """
    everything = full(n)
    best = []
    for v in range(n):
        bit = 1 << v
        ks = candidates[v] if candidates is not None else [k for k in range(1 << n) if not k & bit]
        scored = [(recovery[everything & ~k] - recovery[everything & ~(k | bit)], -bin(k).count("1"), -k) for k in ks]
        score, _, negative_k = max(scored)  # ties: the smallest K, then the lowest mask
        best.append(BestSubset(v, -negative_k, float(score)))
    return best


def incompleteness_scores(keep_recovery: dict[int, float], drop_recovery: dict[int, float], n: int, ks: Sequence[int] | None = None) -> list[tuple[int, float]]:
    """|recovery(C \\ K) - recovery(M \\ K)| for each K (a mask over C), largest first.

    ``keep_recovery`` maps kept masks of C to recovery; ``drop_recovery`` maps
    ablated masks K to the recovery of the model with K ablated.
    """
    everything = full(n)
    ks = range(1 << n) if ks is None else ks
    scored = [(k, abs(keep_recovery[everything & ~k] - drop_recovery[k])) for k in ks]
    return sorted(scored, key=lambda item: (-item[1], bin(item[0]).count("1"), item[0]))


def greedy_subsets(players: Sequence[int], score, max_size: int | None = None) -> tuple[int, float, list[int]]:
    """Grow K from ``players`` one at a time, each time adding the one that raises ``score(K)`` most.

    ``score`` maps a batch of masks to their scores (a list of floats), so each
    step's candidates are measured together. Stops when no candidate improves
    the score or at ``max_size``. Returns the best K, its score and every mask scored.
    """
    k, best = 0, float(score([0])[0])
    scored = [0]
    limit = len(players) if max_size is None else max_size
    while bin(k).count("1") < limit:
        options = [k | 1 << int(i) for i in players if not k >> int(i) & 1]
        if not options:
            break
        values = score(options)
        scored.extend(options)
        top = int(np.argmax(values))
        if values[top] <= best:
            break
        k, best = options[top], float(values[top])
    return k, best, scored
