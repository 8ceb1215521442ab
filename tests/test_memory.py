"""A run over many checkpoints holds one checkpoint model at a time.

Everything circuitcheck caches per model (patchers, tasks, activation caches,
attention patterns, lens and fast-path state) lives in the model's session and
is freed with the model; nothing else keeps a finished checkpoint alive.
"""

from __future__ import annotations

import pytest

from circuitcheck import zoo

STEPS = zoo.checkpoints("induction-2l")[:8]

# Each checkpoint runs every kind of claim that caches something per model; the last
# test of each checkpoint counts the models alive in its process.
SUITE = '''
import gc
import os

import circuitcheck as cc


def test_causal(model, induction_task):
    try:
        cc.check_sufficient("L0H2 L1H1 L1H3", min_recovery=0.5)
        cc.check_necessary("L1H3", min_drop=0.1)
    except cc.CircuitCheckError as error:  # untrained: no gap to divide by (its runs are cached all the same)
        assert "gap" in str(error) and model.circuitcheck_checkpoint == "step0", error


def test_cache(model, induction_task, cache):
    assert cache["blocks.0.hook_resid_post"].shape[0] == induction_task.n_examples


def test_patcher_sweep(model, patcher, induction_task):
    patcher.sweep(induction_task, "head_out")


def test_lens(model, induction_task):
    cc.check_logit_lens_converges_by(0, tokens=induction_task.clean[:4])


def test_probe(model, induction_task, probe):
    tokens = induction_task.clean
    cc.check_probe_accuracy("blocks.0.hook_resid_post", tokens.roll(1, dims=1), inputs=tokens,
                            positions=list(range(2, 12)), min_accuracy=0.5, prober=probe)


def test_heads(model):
    cc.check_head(1, 3, "induction", min_score=0.5)
    cc.check_head(0, 2, "previous_token", min_score=0.5)


def test_zz_models_alive(model):
    gc.collect()
    alive = sum(type(o).__name__ == "TransformerBridge" for o in gc.get_objects())
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(os.path.join(os.environ["MEMORY_LOG_DIR"], f"alive-{worker}.txt"), "a") as log:
        log.write(f"{model.circuitcheck_checkpoint} {alive}\\n")
'''


def _counts(directory) -> dict[str, list[tuple[str, int]]]:
    counts = {}
    for path in sorted(directory.glob("alive-*.txt")):
        lines = [line.split() for line in path.read_text().splitlines()]
        counts[path.stem] = [(step, int(alive)) for step, alive in lines]
    return counts


@pytest.mark.parametrize("workers", [None, 2], ids=["serial", "xdist-2"])
def test_one_checkpoint_model_is_alive_at_a_time(pytester, monkeypatch, workers):
    pytester.makepyfile(test_checkpoints_suite=SUITE)
    log_dir = pytester.path / "logs"
    log_dir.mkdir()
    monkeypatch.setenv("MEMORY_LOG_DIR", str(log_dir))
    args = [f"--circuitcheck-checkpoints={','.join(STEPS)}", "-p", "no:cacheprovider"]
    if workers:
        args += ["-n", str(workers)]
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=7 * len(STEPS))
    counts = _counts(log_dir)
    seen = sorted(step for log in counts.values() for step, _ in log)
    assert seen == sorted(STEPS)  # every checkpoint counted once
    if workers:
        assert 1 <= len(counts) <= workers  # how xdist shares the checkpoint groups depends on timing
    for log in counts.values():
        assert [alive for _, alive in log] == [1] * len(log), f"models alive after each checkpoint: {log}"


# The model session -----------------------------------------------------------------------------


@pytest.fixture
def small_model(zoo_tokenizer_dir):
    from conftest import build_native

    return build_native(n_layers=2, n_heads=4, d_model=32, d_vocab=64, seed=5, tokenizer_dir=zoo_tokenizer_dir)


def test_a_model_has_one_session_and_it_is_freed_with_the_model(zoo_tokenizer_dir):
    import gc
    import weakref

    from conftest import build_native
    from circuitcheck.engine.patcher import shared_patcher
    from circuitcheck.engine.session import session_of

    small_model = build_native(n_layers=2, n_heads=4, d_model=32, d_vocab=64, seed=5, tokenizer_dir=zoo_tokenizer_dir)
    session = session_of(small_model)
    assert session_of(small_model) is session and session.model is small_model
    patcher = shared_patcher(small_model)
    assert shared_patcher(small_model) is patcher and shared_patcher(small_model, 8) is not patcher
    gone = weakref.ref(small_model)
    session_gone = weakref.ref(session)
    del small_model, patcher, session
    gc.collect()
    assert gone() is None and session_gone() is None  # the patchers it held did not keep the model alive


def test_edited_weights_drop_every_derived_cache_but_keep_tasks(small_model):
    import torch

    from circuitcheck.engine.session import session_of

    session = session_of(small_model)
    tokens = torch.zeros(1, 3, dtype=torch.long)
    session.activations(tokens, lambda: "before")
    session.derived("attention-patterns")["key"] = "before"
    task = session.task("a task", object)
    generation = session.generation
    with torch.no_grad():
        next(small_model.parameters()).mul_(2.0)  # in place
    assert session.generation == generation + 1
    assert session.activations(tokens, lambda: "after") == "after"
    assert session.derived("attention-patterns") == {}
    assert session.task("a task", object) is task  # a task is its inputs and metric, not the weights


def test_a_copied_model_gets_a_session_of_its_own(small_model):
    import copy

    from circuitcheck.engine.session import session_of

    session = session_of(small_model)
    session.task("a task", object)
    twin = copy.deepcopy(small_model)
    assert session_of(twin) is not session and session_of(twin).model is twin
    assert session_of(small_model) is session
