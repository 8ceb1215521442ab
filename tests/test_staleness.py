"""Nothing stale: edited weights and edited tasks are always noticed, and threads get the sequential values.

The rule under test (``circuitcheck.engine.session``): a cached value is reused
only after the weights were compared with the last look, in full (identity and
a checksum of every byte), once at the start of each engine call. Tasks are
frozen, and their runs are keyed by their contents.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import circuitcheck as cc
from circuitcheck import metrics, tasks
from circuitcheck.engine import checksum
from circuitcheck.engine.patcher import Patcher, component_patch
from circuitcheck.engine.probe import Prober
from circuitcheck.engine.session import session_of
from circuitcheck.model.components import Component
from circuitcheck.model.tasks import FrozenTaskError


HEADS = [f"L{layer}H{head}" for layer in range(2) for head in range(4)]


@pytest.fixture(scope="module")
def pristine():
    """zoo:induction-2l as loaded; tests edit deep copies of it (each with a session of its own)."""
    return cc.load_model("zoo:induction-2l", device="cpu")


@pytest.fixture
def model(pristine):
    return copy.deepcopy(pristine)


def _fresh(pristine, edit):
    """A model that never saw a check, given ``edit``: the truth a cached model must agree with."""
    fresh = copy.deepcopy(pristine)
    edit(fresh)
    return fresh


def _q_weight(model, layer=1):
    return model.blocks[layer].attn.q.weight


def _o_weight(model, layer=1):
    return model.blocks[layer].attn.o.weight


# Weights edited behind autograd's back --------------------------------------------------------


def test_a_head_score_after_a_data_edit_equals_a_fresh_model_given_the_same_edit(model, pristine):
    def edit(m):
        _q_weight(m).data.zero_()

    before = cc.check_head(1, 0, "induction", model=model, min_score=0.5).value
    edit(model)
    after = cc.check_head(1, 0, "induction", model=model, min_score=0.5).value
    truth = cc.check_head(1, 0, "induction", model=_fresh(pristine, edit), min_score=0.5).value
    assert after == pytest.approx(truth, abs=1e-9)
    assert abs(before - truth) > 0.5  # the edit matters: 0.844 before, 0.024 after


def test_a_causal_check_after_a_data_edit_equals_a_fresh_model_given_the_same_edit(model, pristine):
    def edit(m):
        _o_weight(m).data.mul_(0.1)

    def necessity(m, task):
        return [cc.check_necessary(c, model=m, task=task, min_drop=0.1).value for c in ("L1H3", "L1H1", "L0H2")]

    task = tasks.induction(model, n_prompts=16, seq_len=12)
    before = necessity(model, task)  # caches the task's runs
    edit(model)
    after = necessity(model, task)
    truth = necessity(_fresh(pristine, edit), tasks.induction(model, n_prompts=16, seq_len=12))
    assert after == pytest.approx(truth, abs=1e-9)
    assert max(abs(a - b) for a, b in zip(before, truth)) > 0.05


@pytest.mark.parametrize("fast", [None, False], ids=["fast-path", "general-path"])
def test_patched_runs_after_a_data_edit_equal_a_fresh_models(model, pristine, fast):
    def edit(m):
        m.blocks[0].attn.v.weight.data.mul_(0.1)  # changes the cached activations that patches read

    def values(patcher, task):
        variants = [[component_patch(Component.parse(head), "ablated")] for head in HEADS]
        return patcher.run(task, variants, ablation="resample")

    task = tasks.induction(model, n_prompts=8, seq_len=10)
    patcher = Patcher(model, fast=fast)
    before = values(patcher, task)
    edit(model)
    after = values(patcher, task)
    fresh = _fresh(pristine, edit)
    truth = values(Patcher(fresh, fast=fast), tasks.induction(fresh, n_prompts=8, seq_len=10))
    assert torch.allclose(after, truth, atol=1e-5) and not torch.allclose(before, truth, atol=1e-2)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda m: _q_weight(m).data.zero_(), id="data-in-place"),
        pytest.param(lambda m: _q_weight(m).data.__setitem__((0, 0), 7.0), id="data-one-element"),
        pytest.param(lambda m: _q_weight(m).data.copy_(_q_weight(m).data.flip(0)), id="data-permuted-rows"),
        pytest.param(lambda m: torch.no_grad()(lambda: _q_weight(m).mul_(2.0))(), id="no-grad-in-place"),
        pytest.param(lambda m: setattr(_q_weight(m), "data", _q_weight(m).data * 2.0), id="data-replaced"),
        pytest.param(lambda m: m.load_state_dict({k: v * 0.5 for k, v in m.state_dict().items()}), id="load-state-dict"),
        pytest.param(
            lambda m: m.load_state_dict({k: v * 0.5 for k, v in m.state_dict().items()}, assign=True), id="load-state-dict-assign"
        ),
        pytest.param(lambda m: next(m.buffers()).data.logical_not_(), id="buffer-data"),
    ],
)
def test_every_kind_of_weight_edit_drops_the_derived_caches(model, edit):
    session = session_of(model)
    session.derived("attention-patterns")["key"] = "before"
    generation = session.generation
    edit(model)
    assert session.generation == generation + 1
    assert session.derived("attention-patterns") == {}


def test_unchanged_weights_keep_every_cache(model):
    session = session_of(model)
    session.derived("attention-patterns")["key"] = "kept"
    generation = session.generation
    _q_weight(model).data.mul_(1.0)  # same bytes
    assert session.generation == generation
    assert session.derived("attention-patterns") == {"key": "kept"}


def test_the_weights_hash_after_a_data_edit_is_the_edited_models(model, pristine):
    # The tuned-lens cache on disk is named by this hash: a stale one loads a lens trained for other weights.
    from circuitcheck.engine.lens import weights_hash

    def edit(m):
        m.blocks[0].attn.v.weight.data.mul_(-3.0)

    before = weights_hash(model)
    edit(model)
    assert weights_hash(model) == weights_hash(_fresh(pristine, edit)) != before


def test_probe_activations_after_a_data_edit_are_the_edited_models(model, pristine):
    def edit(m):
        m.blocks[0].attn.o.weight.data.zero_()

    tokens = tasks.induction(model, n_prompts=4, seq_len=8).clean
    prober = Prober(model)
    before = prober.activations("blocks.0.hook_resid_post", tokens)
    edit(model)
    after = prober.activations("blocks.0.hook_resid_post", tokens)
    truth = Prober(_fresh(pristine, edit)).activations("blocks.0.hook_resid_post", tokens)
    assert torch.equal(after, truth) and not torch.equal(before, truth)


def test_the_weights_are_read_in_full_once_per_engine_call(model):
    task = tasks.induction(model, n_prompts=4, seq_len=8)
    patcher = Patcher(model)
    session = session_of(model)
    patcher.run(task, [[component_patch(Component.parse("L1H3"), "ablated")]])  # the first look
    reads = session.content_checks
    # One call with many chunks (each chunk asks the session about the weights again).
    chunked = Patcher(model, max_batch=task.n_examples)
    chunked.run(task, [[component_patch(Component.parse(head), "ablated")] for head in HEADS])
    assert session.content_checks == reads + 1
    patcher.path_patch(task, [Component.parse("L0H2")], [Component.parse("L1H3.k")])  # nests runs, sender_delta and run
    assert session.content_checks == reads + 2
    cc.check_head(1, 3, "induction", model=model, min_score=0.5)
    assert session.content_checks == reads + 3
    # A causal claim holds the model for its whole length: its engine calls share one read.
    cc.check_sufficient("L1H3 L0H2", model=model, task=task, min_recovery=0.0)
    assert session.content_checks == reads + 4
    cc.check_necessary("L1H3", model=model, task=task, ablation=["resample", "zero"], min_drop=0.0)
    assert session.content_checks == reads + 5


# The checksum ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.uint8, torch.bool])
@pytest.mark.parametrize("where", ["host", "device"])
def test_any_one_changed_element_changes_the_checksum(dtype, where):
    # "device" runs the accelerator's formula on CPU tensors: same code, any device.
    compute = checksum._host_checksum if where == "host" else (lambda t: int(checksum._device_checksum(t)))
    generator = torch.Generator().manual_seed(0)
    tensor = (torch.randn(3, (1 << 16) + 77, generator=generator) * 50).to(dtype)  # more than one row, and a remainder
    base = compute(tensor)
    flat_size = tensor.numel()
    for position in torch.randint(0, flat_size, (40,), generator=generator).tolist() + [0, flat_size - 1]:
        edited = tensor.clone().reshape(-1)
        old = edited[position].clone()
        edited[position] = ~old if dtype == torch.bool else old + 1
        assert not torch.equal(edited[position], old)
        assert compute(edited.reshape(tensor.shape)) != base, f"{dtype} position {position}"
    assert compute(tensor.clone()) == base  # the same bytes give the same checksum


def test_swapped_rows_change_the_checksum():
    tensor = torch.randn(12, 16)
    swapped = tensor[[1, 0, *range(2, 12)]]
    assert checksum.content_checksums([tensor]) != checksum.content_checksums([swapped])
    assert checksum._device_checksum(tensor) != checksum._device_checksum(swapped)


def test_a_tensor_without_data_has_no_checksum():
    assert checksum.content_checksums([torch.empty(3, device="meta"), torch.zeros(0)])[0] is None


# Threads ------------------------------------------------------------------------------------


def _claims(model, task):
    """Sufficiency (mean and resample ablation), necessity and head claims: all differed under threads once."""
    circuits = [" ".join(c) for c in itertools.combinations(HEADS, 3)][:12]
    jobs = [lambda c=c, a=a: cc.check_sufficient(c, model=model, task=task, min_recovery=0.5, ablation=a).value
            for c in circuits for a in ("mean", "resample")]
    jobs += [lambda c=c: cc.check_necessary(c, model=model, task=task, min_drop=0.1).value for c in HEADS[4:]]
    jobs += [lambda a=a: cc.check_head(*a, model=model, min_score=0.5).value
             for a in itertools.product(range(2), range(4), ("induction", "previous_token"))]
    return jobs


def test_checks_from_several_threads_give_the_sequential_values(pristine):
    sequential_model = copy.deepcopy(pristine)
    sequential = [job() for job in _claims(sequential_model, tasks.induction(sequential_model, n_prompts=16, seq_len=20))]
    threaded_model = copy.deepcopy(pristine)
    jobs = _claims(threaded_model, tasks.induction(threaded_model, n_prompts=16, seq_len=20))
    start = threading.Barrier(16)

    def run(job):
        try:
            start.wait(timeout=0.2)  # the first sixteen start together
        except threading.BrokenBarrierError:
            pass
        return job()

    # Before the model's lock, every sufficiency value here differed or raised, and most head scores.
    with ThreadPoolExecutor(16) as pool:
        threaded = list(pool.map(run, jobs))
    assert threaded == pytest.approx(sequential, abs=1e-9)


def test_a_check_waits_while_another_thread_holds_the_model(model):
    held, release, done = threading.Event(), threading.Event(), threading.Event()
    values = []

    def holder():
        with session_of(model).exclusive():
            held.set()
            release.wait(timeout=30)

    def checker():
        values.append(cc.check_head(1, 3, "induction", model=model, min_score=0.5).value)
        done.set()

    first = threading.Thread(target=holder)
    first.start()
    assert held.wait(timeout=30)
    second = threading.Thread(target=checker)
    second.start()
    assert not done.wait(timeout=0.5)  # it waits for the model
    release.set()
    assert done.wait(timeout=120) and len(values) == 1
    first.join(), second.join()


def test_checks_on_different_models_do_not_wait_for_each_other(model, pristine):
    other = copy.deepcopy(pristine)
    held, release = threading.Event(), threading.Event()

    def holder():
        with session_of(model).exclusive():
            held.set()
            release.wait(timeout=30)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(timeout=30)
        cc.check_head(1, 3, "induction", model=other, min_score=0.5)  # would hang if models shared a lock
    finally:
        release.set()
        thread.join()


# Tasks --------------------------------------------------------------------------------------


@pytest.fixture
def task(pristine):
    return tasks.induction(pristine, n_prompts=16, seq_len=12)


def test_a_task_attribute_cannot_be_reassigned_and_the_error_says_how_to_change_it(task):
    with pytest.raises(FrozenTaskError, match=r"'clean' cannot be assigned .* dataclasses\.replace\(task, clean=\.\.\.\)"):
        task.clean = task.corrupt
    with pytest.raises(AttributeError):  # FrozenTaskError is one
        task.name = "other"
    with pytest.raises(cc.CircuitCheckError, match="frozen"):  # and a circuitcheck error
        del task.answers


def test_a_task_keeps_its_own_copies_of_the_inputs_it_was_given():
    clean = torch.tensor([[0, 1, 2, 3]])
    corrupt = torch.tensor([[0, 3, 2, 1]])
    answers = torch.tensor([4])
    task = tasks.from_tokens(clean, corrupt, answers=answers, wrong_answers=[5])
    clean[0, 1], answers[0] = 9, 9
    assert task.clean.tolist() == [[0, 1, 2, 3]] and task.answers.tolist() == [4]


def _recovery(model, task):
    return cc.check_sufficient("L0H2 L1H1 L1H3", model=model, task=task, min_recovery=0.5).value


def test_a_task_edited_in_place_gets_new_runs_equal_to_a_fresh_task(model, task):
    before = _recovery(model, task)  # the runs of the original inputs are cached
    other = tasks.induction(model, n_prompts=16, seq_len=12, seed=7)
    task.clean[:8] = other.clean[:8]  # in place: half the examples are another seed's
    edited = _recovery(model, task)
    fresh_task = tasks.from_tokens(task.clean.clone(), task.corrupt.clone(), task.metric)
    truth = _recovery(copy.deepcopy(model), fresh_task)
    assert edited == pytest.approx(truth, abs=1e-9) and abs(before - truth) > 1e-3


def test_a_replaced_task_has_its_own_runs(model, task):
    original = _recovery(model, task)
    replaced = dataclasses.replace(task, clean=task.clean.flip(0), corrupt=task.corrupt)
    assert replaced.digest != task.digest
    value = _recovery(model, replaced)
    assert value == pytest.approx(_recovery(copy.deepcopy(model), replaced), abs=1e-9)
    assert _recovery(model, task) == original  # the original task is untouched


def test_the_digest_changes_with_any_edited_tensor_and_not_otherwise(task):
    digest = task.digest
    assert task.digest == digest
    task.clean[0, 3] += 1
    assert task.digest != digest
    task.clean[0, 3] -= 1
    assert task.digest == digest


def test_equal_tasks_with_equal_built_in_metrics_share_a_digest(pristine):
    first, second = (tasks.induction(pristine, n_prompts=4, seq_len=6, seed=3) for _ in range(2))
    assert first.digest == second.digest
    assert tasks.induction(pristine, n_prompts=4, seq_len=6, seed=4).digest != first.digest
    clean = torch.tensor([[0, 1, 2, 3]])
    digests = {tasks.from_tokens(clean, clean, metric, answers=[1], wrong_answers=[2]).digest
               for metric in (metrics.logit_diff(-1), metrics.logit_diff(-2), metrics.answer_prob(-1), metrics.kl_to_clean(-1))}
    assert len(digests) == 4


def test_a_freed_metric_functions_id_is_never_taken_for_another_metric():
    clean = torch.tensor([[0, 1, 2, 3]])
    seen_ids, digests = set(), set()
    reused = False
    for value in range(200):
        metric = metrics.as_metric(lambda logits, value=value: logits[:, -1, 0] * value)
        reused = reused or id(metric.fn) in seen_ids
        seen_ids.add(id(metric.fn))
        digests.add(tasks.from_tokens(clean, clean, metric).digest)
        del metric  # freed at once (no cycle): the next function may get its id
    assert reused  # CPython gave a freed function's id to a new one: an id() key would have collided
    assert len(digests) == 200
