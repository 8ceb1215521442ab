"""Property-based tests of the patcher and the causal checks (hypothesis)."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import circuitcheck as cc
from circuitcheck import strategies as cst
from circuitcheck import tasks
from circuitcheck.claims.causal import _ablate_all_but
from circuitcheck.claims.robustness import GapError
from circuitcheck.model.components import Component
from circuitcheck.engine.patcher import Patch, Patcher, component_patch

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
VOCAB = {"vocab": 64, "exclude": [0, 1, 2], "bos": 0}


def make_task(pair):
    clean, corrupt = pair
    return tasks.from_tokens(clean, corrupt, metric=cc.metrics.logit_diff(-1), answers=clean[:, -1], wrong_answers=corrupt[:, -1], d_vocab=64)


@SETTINGS
@given(pair=cst.clean_corrupt_pairs(**VOCAB, min_len=3, max_len=10, min_batch=2), ablation=st.sampled_from(["resample", "mean", "zero", "noise(0.5)"]))  # a claim needs 2 examples
def test_recovery_of_the_full_model_is_one_and_of_nothing_is_zero(random_model, pair, ablation):
    task = make_task(pair)
    patcher = Patcher(random_model)
    everything = [Component("head", layer, head) for layer in range(2) for head in range(4)] + [Component("mlp", layer) for layer in range(2)]
    assert _ablate_all_but(everything, random_model, task.seq_len) == []
    # ∅ built two ways: the complement of nothing, and every component ablated one by one
    empty, one_by_one = patcher.run(
        task, [_ablate_all_but([], random_model, task.seq_len), [component_patch(c) for c in everything]], ablation=ablation
    )
    torch.testing.assert_close(empty, one_by_one, atol=1e-4, rtol=0)
    full, nothing = patcher.runs(task).clean_metric.mean(), empty.mean()
    if abs(full - nothing) > 1e-3:
        try:
            result = cc.check_sufficient(everything, model=random_model, task=task, ablation=ablation)
        except GapError:  # a gap whose interval includes 0 (2 examples, one unchanged) is an error, never a ratio
            return
        assert result.value == pytest.approx(1.0, abs=1e-4)


@SETTINGS
@given(pair=cst.clean_corrupt_pairs(**VOCAB, min_len=2, max_len=10))
def test_patching_every_clean_activation_back_reproduces_the_clean_output(random_model, pair):
    task = make_task(pair)
    hooks = ["hook_embed", "hook_pos_embed"] + [f"blocks.{layer}.{h}" for layer in range(2) for h in ("attn.hook_z", "hook_mlp_out")]
    restored = Patcher(random_model).run(task, [[Patch.at(h, "clean") for h in hooks]], base="corrupt")[0]
    torch.testing.assert_close(restored, Patcher(random_model).runs(task).clean_metric, atol=1e-4, rtol=0)


def reference_ablation(model, task, patcher, components, ablation):
    """One forward with a hand-written hook per ablated component: the one-at-a-time oracle."""
    values = {c: patcher.ablated_value(task, cc.ablation.parse(ablation), c.hook_name) for c in components}

    def hook_for(c):
        def hook(act, hook):
            act = act.clone()
            value = values[c].expand_as(act)
            if c.kind == "head":
                act[:, :, c.head] = value[:, :, c.head]
            else:
                act[:] = value
            return act

        return hook

    logits = model.run_with_hooks(task.clean, fwd_hooks=[(c.hook_name, hook_for(c)) for c in components])
    return task.metric(logits, task)


@SETTINGS
@given(
    pair=cst.clean_corrupt_pairs(**VOCAB, min_len=3, max_len=8, max_batch=3),
    subsets=st.lists(cst.head_subsets(2, 4, min_size=1, max_size=4), min_size=1, max_size=4),
    ablation=st.sampled_from(["resample", "mean", "zero", "noise(0.3)"]),
)
def test_batched_equals_one_at_a_time(random_model, pair, subsets, ablation):
    task = make_task(pair)
    patcher = Patcher(random_model, max_batch=1000)
    batched = patcher.run(task, [[component_patch(c) for c in subset] for subset in subsets], ablation=ablation)
    for row, subset in zip(batched, subsets):
        expected = reference_ablation(random_model, task, patcher, subset, ablation)
        torch.testing.assert_close(row, expected.float(), atol=1e-4, rtol=0)


@SETTINGS
@given(tokens=cst.repeated_sequences(**VOCAB, min_half=3, max_half=10))
def test_repeated_sequences_repeat(tokens):
    body = tokens[0, 1:]
    half = body.shape[0] // 2
    assert torch.equal(body[:half], body[half:]) and tokens[0, 0] == 0
    assert not any(int(t) in (0, 1, 2) for t in body)
