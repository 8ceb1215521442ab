"""The subset lattice's statistics against brute force written here from the definitions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from circuitcheck.claims import subsets


def random_game(n: int, seed: int) -> dict[frozenset, float]:
    rng = np.random.default_rng(seed)
    return {frozenset(s): float(rng.normal()) for r in range(n + 1) for s in itertools.combinations(range(n), r)}


def as_masks(game: dict[frozenset, float]) -> np.ndarray:
    n = max((max(s) for s in game if s), default=-1) + 1
    values = np.zeros(1 << n)
    for players, value in game.items():
        values[sum(1 << p for p in players)] = value
    return values


def shapley_by_orders(game: dict[frozenset, float], n: int) -> list[float]:
    """The definition: a player's marginal contribution averaged over every order of arrival."""
    totals = [0.0] * n
    for order in itertools.permutations(range(n)):
        before: set[int] = set()
        for player in order:
            totals[player] += game[frozenset(before | {player})] - game[frozenset(before)]
            before.add(player)
    return [t / math.factorial(n) for t in totals]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6])
def test_exact_shapley_values_equal_the_average_over_every_order(n):
    game = random_game(n, seed=n)
    got = subsets.shapley_coefficients(n) @ as_masks(game)
    assert got == pytest.approx(shapley_by_orders(game, n), abs=1e-12)


def test_shapley_values_add_up_to_the_whole_coalition():
    game = random_game(5, seed=9)
    values = as_masks(game)
    assert (subsets.shapley_coefficients(5) @ values).sum() == pytest.approx(values[-1] - values[0])


def test_every_order_sampled_once_gives_the_exact_values():
    n = 4
    game = random_game(n, seed=2)
    orders = np.array(list(itertools.permutations(range(n))))
    masks = subsets.prefix_masks(orders)
    index = {mask: i for i, mask in enumerate(masks)}
    values = as_masks(game)[masks]
    sampled = subsets.permutation_coefficients(orders, index).mean(axis=0) @ values
    assert sampled == pytest.approx(shapley_by_orders(game, n), abs=1e-12)


def test_sampled_orders_are_seeded_permutations():
    first = subsets.sample_permutations(7, 20, seed=3)
    assert (first == subsets.sample_permutations(7, 20, seed=3)).all()
    assert all(sorted(row) == list(range(7)) for row in first)


def test_ioi_scores_maximise_over_every_subset_left_out():
    n = 5
    game = random_game(n, seed=4)
    recovery = {mask: value for mask, value in enumerate(as_masks(game))}
    everyone = frozenset(range(n))
    for best in subsets.ioi_scores(recovery, n):
        v = best.player
        others = [p for p in range(n) if p != v]
        expected = max(
            game[everyone - set(k)] - game[everyone - set(k) - {v}]
            for r in range(n) for k in itertools.combinations(others, r)
        )
        assert best.score == pytest.approx(expected)
        kept = everyone - set(subsets.members(best.mask, n))
        assert game[kept] - game[kept - {v}] == pytest.approx(expected)
        assert not best.mask >> v & 1


def test_incompleteness_is_the_largest_gap_between_circuit_and_model_without_k():
    n = 4
    keep = random_game(n, seed=5)
    drop = random_game(n, seed=6)
    everyone = frozenset(range(n))
    ranked = subsets.incompleteness_scores(dict(enumerate(as_masks(keep))), dict(enumerate(as_masks(drop))), n)
    worst = max(abs(keep[everyone - set(k)] - drop[frozenset(k)]) for r in range(n + 1) for k in itertools.combinations(range(n), r))
    assert ranked[0][1] == pytest.approx(worst)
    assert [score for _, score in ranked] == sorted((score for _, score in ranked), reverse=True)


def test_greedy_search_climbs_until_no_candidate_helps():
    weights = {0: 0.5, 1: 0.3, 2: -0.2, 3: 0.1}

    def score(masks):
        return [sum(w for p, w in weights.items() if mask >> p & 1) for mask in masks]

    mask, best, scored = subsets.greedy_subsets([0, 1, 2, 3], score)
    assert subsets.members(mask, 4) == [0, 1, 3] and best == pytest.approx(0.9)
    assert 0 in scored
    limited, _, _ = subsets.greedy_subsets([1, 2, 3], score, max_size=1)
    assert subsets.members(limited, 4) == [1]
