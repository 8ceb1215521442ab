"""Attribution patching (node attribution, EAP, EAP-IG) as sweeps: equal to TransformerLens and to the derivative of patching.

Oracles:

- TransformerLens 4.3's ``attribution_patch`` (node and edge granularity), where it
  runs: its node graph needs MLPs, and its edge graph needs per-head attention
  results, which only its Hugging Face attention bridges offer (not the native
  bridge of the zoo and ``boot_native``). So: node attribution on planted-4l and a
  random model with LayerNorm and MLPs, node and edge attribution on a random
  GPT-2 (Hugging Face architecture: LayerNorm, MLPs, fused QKV);
- everywhere, including the attention-only zoo model: the derivative of
  patching, by autograd through the model's own modules. For an edge, the
  receiver alone reads ``eps`` times the sender's clean-minus-corrupted write
  (its input recomputed by its own LayerNorm and projection), and
  ``d mean metric / d eps`` at 0 is the edge's EAP score; for a node, its output
  moves by ``eps`` times its clean-minus-corrupted change.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import circuitcheck as cc
from circuitcheck.engine import attribution_patching as ap
from circuitcheck.engine.patcher import Patcher
from circuitcheck.errors import ArgumentError, CircuitCheckError
from circuitcheck.model import context

ATOL = 1e-4


# Models and tasks ------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted_4l():
    return cc.load_model("zoo:planted-4l", device="cpu")


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """A randomly initialised GPT-2 (Hugging Face architecture) with 2 layers, 4 heads, d_model 32, vocabulary 64."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from circuitcheck.zoo.tokenizer import build_tokenizer

    directory = tmp_path_factory.mktemp("eap-gpt2")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=64, n_positions=64, bos_token_id=0,
                               eos_token_id=0)).save_pretrained(directory)
    build_tokenizer().save_pretrained(directory)
    return cc.load_model(str(directory), device="cpu")


def random_task(model, n=4, seq_len=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    vocab = model.cfg.d_vocab
    answers = torch.randint(0, vocab, (n,), generator=gen)
    return cc.tasks.from_tokens(torch.randint(0, vocab, (n, seq_len), generator=gen), torch.randint(0, vocab, (n, seq_len), generator=gen),
                                answers=answers, wrong_answers=(answers + 1 + torch.randint(0, vocab - 1, (n,), generator=gen)) % vocab)


def small_induction(model):
    return cc.tasks.induction(model, n_prompts=4, seq_len=5)


# TransformerLens as the oracle --------------------------------------------------------


def tl_label(node) -> str:
    if node.kind == "embed":
        return "embed"
    if node.kind in ("attn_head_out",):
        return f"L{node.layer}H{node.head}"
    if node.kind in ("mlp_out", "mlp_in"):
        return f"L{node.layer}.mlp"
    if node.kind == "logits":
        return "logits"
    return f"L{node.layer}H{node.head}.{node.kind[0]}"  # q_input -> .q


def transformer_lens_scores(model, task, granularity, swap=False):
    """TransformerLens's ``attribution_patch`` per example (each with its own answers), mean over examples: {(label, pos): score}.

    Its gradients flow from the parameters, so they are switched on for the call (and restored).
    """
    from transformer_lens.tools.analysis.attribution_patching import EdgeAttributionConfig, attribution_patch

    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(True)
    try:
        totals: dict = {}
        for i in range(task.n_examples):
            one = dataclasses.replace(task, clean=task.clean[i : i + 1], corrupt=task.corrupt[i : i + 1],
                                      answers=task.answers[i : i + 1] if task.answers is not None else None,
                                      wrong_answers=task.wrong_answers[i : i + 1] if task.wrong_answers is not None else None)
            clean, corrupt = (one.corrupt, one.clean) if swap else (one.clean, one.corrupt)
            result = attribution_patch(model, clean, corrupt, lambda logits: one.metric(logits, one)[0],
                                       EdgeAttributionConfig(granularity=granularity))
            if granularity == "edge":
                items = {(f"{tl_label(u)} -> {tl_label(v)}", u.position): s for (u, v), s in result.edge_scores.items()}
            else:
                items = {(tl_label(n), n.position): s for n, s in result.node_scores.items()}
            for key, score in items.items():
                totals[key] = totals.get(key, 0.0) + score / task.n_examples
        return totals
    finally:
        for parameter, flag in zip(model.parameters(), flags):
            parameter.requires_grad_(flag)


def assert_equals_transformer_lens(ours: ap.GraphSweep, theirs: dict) -> None:
    row = {label: i for i, label in enumerate(ours.index)}
    assert {label for label, _ in theirs} == set(ours.index), "the two graphs differ"
    assert len(theirs) == ours.position_mean.numel(), "TransformerLens scores every (node or edge, position) once"
    got = torch.tensor([float(ours.position_mean[row[label], pos]) for label, pos in theirs])
    want = torch.tensor(list(theirs.values()))
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    assert want.abs().max() > 1e-2, "a comparison of zeros says nothing"


@pytest.mark.parametrize("which", ["planted_4l", "gpt2", "random_model"])
def test_node_attribution_equals_transformer_lens_per_position(which, request):
    model = request.getfixturevalue(which)
    task = small_induction(model) if which == "planted_4l" else random_task(model)
    ours = ap.attribution_sweep(model, task, method="node")
    assert_equals_transformer_lens(ours, transformer_lens_scores(model, task, "node"))


def test_eap_equals_transformer_lens_per_edge_and_position(gpt2):
    task = random_task(gpt2)
    ours = ap.attribution_sweep(gpt2, task, method="eap")
    assert_equals_transformer_lens(ours, transformer_lens_scores(gpt2, task, "edge"))


def test_noise_direction_is_transformer_lens_with_clean_and_corrupted_swapped(gpt2):
    """Nanda's form, (corrupted - clean) . gradient at the clean run, is TransformerLens's convention with the inputs swapped."""
    task = random_task(gpt2, seed=1)
    ours = ap.attribution_sweep(gpt2, task, method="eap", direction="noise")
    assert_equals_transformer_lens(ours, transformer_lens_scores(gpt2, task, "edge", swap=True))


# The derivative of patching as the oracle ----------------------------------------------


class Derivative:
    """``d mean metric / d eps`` at 0 of patching one node or edge by ``eps`` times its clean-minus-corrupted change."""

    def __init__(self, model, task):
        self.model, self.task = model, task
        with torch.no_grad():
            self.clean_logits, self.clean = model.run_with_cache(task.clean)
            _, self.corrupt = model.run_with_cache(task.corrupt)

    def write(self, cache, sender: str) -> torch.Tensor:
        c = cc.Component.parse(sender)
        if c.kind == "head":
            return cache[f"blocks.{c.layer}.attn.hook_z"][:, :, c.head] @ self.model.blocks[c.layer].attn.W_O[c.head]
        return cache[c.hook_name]

    def _run(self, hooks, eps) -> float:
        with torch.enable_grad(), self.model.hooks(fwd_hooks=hooks):
            logits = self.model(self.task.corrupt)
            value = self.task.metric(logits, self.task, self.clean_logits).mean()
            (grad,) = torch.autograd.grad(value, eps)
        return float(grad)

    def node(self, label: str) -> float:
        c = cc.Component.parse(label)
        name = c.hook_name if c.kind != "head" else f"blocks.{c.layer}.attn.hook_z"
        delta = self.clean[name] - self.corrupt[name]
        eps = torch.zeros((), requires_grad=True)

        def move(tensor, hook):
            if c.kind != "head":
                return tensor + eps * delta
            out = tensor.clone()
            out[:, :, c.head] = tensor[:, :, c.head] + eps * delta[:, :, c.head]
            return out

        return self._run([(name, move)], eps)

    def edge(self, sender: str, receiver: str) -> float:
        model = self.model
        delta = self.write(self.clean, sender) - self.write(self.corrupt, sender)
        eps = torch.zeros((), requires_grad=True)
        live = {}

        def keep(name):
            def fn(tensor, hook):
                live[name] = tensor

            return fn

        if receiver == "logits":
            return self._run([(f"blocks.{model.cfg.n_layers - 1}.hook_resid_post", lambda t, hook: t + eps * delta)], eps)
        r = cc.Component.parse(receiver)
        block = model.blocks[r.layer]
        if r.kind == "mlp":
            resid = f"blocks.{r.layer}.hook_resid_mid"
            return self._run([(resid, keep(resid)),
                              (f"blocks.{r.layer}.mlp.hook_in", lambda t, hook: block.ln2(live[resid] + eps * delta))], eps)
        resid = f"blocks.{r.layer}.hook_resid_pre"
        W, b = getattr(block.attn, f"W_{r.port.upper()}")[r.head], getattr(block.attn, f"b_{r.port.upper()}")[r.head]

        def read(tensor, hook):
            out = tensor.clone()
            out[:, :, r.head] = block.ln1(live[resid] + eps * delta) @ W + b
            return out

        return self._run([(resid, keep(resid)), (f"blocks.{r.layer}.attn.hook_{r.port}", read)], eps)


def sample_edges(sweep: ap.GraphSweep, about: int) -> list[int]:
    """About ``about`` edges spread over the graph, and the first and last edge into each of a few receivers of every kind."""
    n = len(sweep.index)
    rows = set(range(0, n, max(1, n // about)))
    for receiver in ("L1H0.q", "L1H0.k", "L1H0.v", "L1H3.k", "L0.mlp", "L1.mlp", "logits"):
        into = [i for i, r in enumerate(sweep.receivers) if r == receiver]
        rows |= {into[0], into[-1]} if into else set()
    return sorted(rows)


@pytest.mark.parametrize("which", ["induction_2l", "planted_4l", "random_model"])
def test_eap_is_the_derivative_of_path_patching_each_edge(which, request):
    model = request.getfixturevalue(which)
    task = small_induction(model) if which != "random_model" else random_task(model)
    ours = ap.attribution_sweep(model, task, method="eap")
    oracle = Derivative(model, task)
    rows = sample_edges(ours, about=20)
    got = torch.tensor([float(ours.effects[i].mean()) for i in rows])
    want = torch.tensor([oracle.edge(ours.senders[i], ours.receivers[i]) for i in rows])
    torch.testing.assert_close(got, want, atol=ATOL, rtol=1e-4)
    assert want.abs().max() > 1e-2
    assert {"logits", "L1H0.k", "L1H0.v"} <= {ours.receivers[i] for i in rows}


@pytest.mark.parametrize("which", ["induction_2l", "planted_4l"])
def test_node_attribution_is_the_derivative_of_activation_patching_each_node(which, request):
    model = request.getfixturevalue(which)  # induction-2l is attention-only: TransformerLens's node graph needs MLPs
    task = small_induction(model)
    ours = ap.attribution_sweep(model, task, method="node")
    oracle = Derivative(model, task)
    rows = range(0, len(ours.index), 1 if len(ours.index) < 10 else 2)  # planted-4l: every other one of its 21 nodes
    got = ours.effects.mean(1)[list(rows)]
    want = torch.tensor([oracle.node(ours.index[i]) for i in rows])
    torch.testing.assert_close(got, want, atol=ATOL, rtol=1e-4)
    assert want.abs().max() > 1e-2


# Relations between the methods ----------------------------------------------------------


@pytest.mark.parametrize("which", ["planted_4l", "gpt2"])
def test_a_senders_edges_sum_to_its_node_attribution(which, request):
    """Every sender also writes to the logits, so its outgoing EAP scores add up to its node score (TransformerLens's identity)."""
    model = request.getfixturevalue(which)
    task = small_induction(model) if which == "planted_4l" else random_task(model)
    nodes = ap.attribution_sweep(model, task, method="node")
    summed = ap.attribution_sweep(model, task, method="eap").nodes()
    assert summed.index == nodes.index
    torch.testing.assert_close(summed.values, nodes.values, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(summed.position_mean, nodes.position_mean, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_eap_ig_at_one_step_is_eap_at_the_base_run(direction, planted_4l):
    """The Riemann sum starts at the base run (the corrupted one for denoise): one point is the base-run gradient."""
    task = small_induction(planted_4l)
    eap = ap.attribution_sweep(planted_4l, task, method="eap", direction=direction)
    one = ap.attribution_sweep(planted_4l, task, method="eap-ig", steps=1, direction=direction)
    torch.testing.assert_close(one.values, eap.values, atol=1e-6, rtol=0)
    five = ap.attribution_sweep(planted_4l, task, method="eap-ig", steps=5, direction=direction)
    assert (five.values - eap.values).abs().max() > 1e-2  # more steps are another estimate, not the same one


@pytest.mark.parametrize("which", ["induction_2l", "planted_4l"])
def test_eap_ig_of_the_embedding_converges_to_the_whole_gap(which, request):
    """Integrated gradients are complete: the embedding's score tends to m(clean) - m(corrupted) as steps grow."""
    model = request.getfixturevalue(which)
    task = cc.tasks.induction(model, n_prompts=8, seq_len=8)
    errors = []
    for steps in (1, 5, 20):
        sweep = ap.attribution_sweep(model, task, method="eap-ig", steps=steps).nodes()
        gap = float(sweep.clean_metric.mean() - sweep.corrupt_metric.mean())
        errors.append(abs(sweep.effect_of("embed") - gap) / abs(gap))
    # Measured (share of the gap missed at 1, 5, 20 steps): induction-2l 92%, 22%, 1.4%; planted-4l 80%, 35%, 6.8%.
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.1 and errors[2] < errors[0] / 10


def test_eap_ig_ranks_like_exact_patching_on_induction_2l(induction_2l):
    """Measured on the default induction task (32 prompts x 20 tokens): nodes rho 0.93, top-5 4/5; edges rho 0.67, top-10 9/10.

    Plain EAP on the same task: nodes rho 0.73, edges rho 0.11 and top-10 3/10 (gradients saturate).
    """
    task = cc.tasks.induction(induction_2l)
    ig = ap.attribution_sweep(induction_2l, task, method="eap-ig", steps=5)
    eap = ap.attribution_sweep(induction_2l, task, method="eap")
    exact_nodes = ap.patching_sweep(induction_2l, task, what="nodes")
    exact_edges = ap.patching_sweep(induction_2l, task, what="edges")
    nodes = ap.rank_agreement(ig.nodes(), exact_nodes, k=5)
    edges = ap.rank_agreement(ig, exact_edges, k=10)
    assert nodes.n == 9 and edges.n == 81
    assert nodes.spearman > 0.85 and nodes.top_k_overlap >= 0.8
    assert edges.spearman > 0.6 and edges.top_k_overlap >= 0.8
    assert {"L1H3", "L1H0"} <= set(nodes.top_k_estimate[:3]) | {"embed"}  # the induction heads are near the top
    plain = ap.rank_agreement(eap, exact_edges, k=10)
    assert edges.spearman > plain.spearman + 0.3 and edges.top_k_overlap > plain.top_k_overlap
    frame = edges.to_frame()
    assert frame.loc[0, "estimate"] == "attribution (EAP-IG, 5 steps)" and frame.loc[0, "exact"] == "path patching (exact)"


def test_eap_ig_ranks_planted_4l_nodes_like_exact_patching(planted_4l):
    task = cc.tasks.induction(planted_4l, n_prompts=8, seq_len=8)
    agreement = ap.rank_agreement(ap.attribution_sweep(planted_4l, task, method="eap-ig").nodes(),
                                  ap.patching_sweep(planted_4l, task, what="nodes"), k=5)
    assert agreement.spearman > 0.9  # measured 0.99
    assert {"L3.mlp", "L2H2", "L3H3"} <= set(agreement.top_k_estimate)  # the planted circuit's MLP, induction and mover heads


def test_the_exact_counterparts_are_the_same_on_both_paths_of_the_patcher(induction_2l):
    task = small_induction(induction_2l)
    for what in ("nodes", "edges"):
        general = ap.patching_sweep(task=task, what=what, patcher=Patcher(induction_2l, fast=False))
        fast = Patcher(induction_2l)
        quick = ap.patching_sweep(task=task, what=what, patcher=fast)
        torch.testing.assert_close(quick.values, general.values, atol=ATOL, rtol=0)
        assert fast.fast_passes > 0


# Cost, batching and side effects ---------------------------------------------------------


def count_forwards(model, fn):
    calls = [0]
    handle = model.blocks[0].register_forward_pre_hook(lambda module, inputs: calls.__setitem__(0, calls[0] + 1))
    try:
        return fn(), calls[0]
    finally:
        handle.remove()


def test_every_edge_costs_one_forward_and_one_forward_backward(planted_4l):
    task = small_induction(planted_4l)
    ap.attribution_sweep(planted_4l, task, method="eap")  # first call also verifies the graph against the model
    sweep, forwards = count_forwards(planted_4l, lambda: ap.attribution_sweep(planted_4l, task, method="eap"))
    assert len(sweep.index) == 479 and forwards == 2
    _, forwards = count_forwards(planted_4l, lambda: ap.attribution_sweep(planted_4l, task, method="eap-ig", steps=5))
    assert forwards == 2  # the five interpolation points ride along the batch
    _, forwards = count_forwards(planted_4l, lambda: ap.attribution_sweep(planted_4l, task, method="eap", max_batch=2))
    assert forwards == 4  # 4 examples, 2 rows per forward


@pytest.mark.parametrize("method", ["node", "eap", "eap-ig"])
def test_chunks_of_examples_give_the_same_numbers(method, random_model):
    task = random_task(random_model, n=5)
    whole = ap.attribution_sweep(random_model, task, method=method)
    chunked = ap.attribution_sweep(random_model, task, method=method, max_batch=2 if method != "eap-ig" else 7)
    torch.testing.assert_close(chunked.values, whole.values, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked.position_mean, whole.position_mean, atol=1e-5, rtol=1e-5)


def test_the_model_is_left_as_it_was(gpt2):
    flags = dict(use_attn_result=gpt2.cfg.use_attn_result, use_split_qkv_input=gpt2.cfg.use_split_qkv_input,
                 use_hook_mlp_in=gpt2.cfg.use_hook_mlp_in)
    requires = [p.requires_grad for p in gpt2.parameters()]
    before = {k: v.clone() for k, v in gpt2.state_dict().items()}
    task = random_task(gpt2)
    logits = gpt2(task.clean)
    ap.attribution_sweep(gpt2, task, method="eap-ig")
    assert all(not hook.fwd_hooks and not hook.bwd_hooks for hook in gpt2.hook_dict.values())
    assert [p.requires_grad for p in gpt2.parameters()] == requires and all(p.grad is None for p in gpt2.parameters())
    assert flags == dict(use_attn_result=gpt2.cfg.use_attn_result, use_split_qkv_input=gpt2.cfg.use_split_qkv_input,
                         use_hook_mlp_in=gpt2.cfg.use_hook_mlp_in)
    assert all(torch.equal(before[k], v) for k, v in gpt2.state_dict().items())
    torch.testing.assert_close(gpt2(task.clean), logits, atol=0, rtol=0)


# The result: frame, matrix, report -----------------------------------------------------


def test_an_edge_sweep_has_the_frame_matrix_and_labels_of_a_sweep(induction_2l):
    task = small_induction(induction_2l)
    sweep = ap.attribution_sweep(induction_2l, task, method="eap-ig")
    assert sweep.label == "attribution (EAP-IG, 5 steps)" and sweep.approximation and sweep.steps == 5
    frame = sweep.frame()
    assert list(frame.columns) == ["edge", "sender", "receiver", "value", "normalized", "effect"]
    assert frame.attrs["label"] == "attribution (EAP-IG, 5 steps)" and frame.attrs["approximation"] is True
    assert len(frame) == 81 and frame.loc[0, "edge"] == "embed -> L0H0.q"
    gap = float(sweep.clean_metric.mean() - sweep.corrupt_metric.mean())
    torch.testing.assert_close(torch.tensor(frame["normalized"].to_numpy()), torch.tensor(frame["effect"].to_numpy()) / gap)
    matrix = sweep.matrix()
    assert matrix.shape == (9, 25) and matrix.index.name == "sender" and matrix.columns.name == "receiver"
    assert matrix.isna().sum().sum() == 9 * 25 - 81  # no edge from a later sender into an earlier receiver
    assert matrix.loc["L0H1", "L1H3.k"] == pytest.approx(float(sweep.values[sweep.index.index("L0H1 -> L1H3.k")].mean()))
    assert sweep.top(3)["effect"].abs().is_monotonic_decreasing
    data = json.loads(json.dumps(sweep.to_dict()))
    assert data["approximation"] is True and data["label"] == "attribution (EAP-IG, 5 steps)" and data["steps"] == 5
    assert data["title"].startswith("attribution (EAP-IG, 5 steps)")


def test_a_node_sweep_is_a_layer_by_head_heatmap_with_an_mlp_column(planted_4l):
    task = small_induction(planted_4l)
    sweep = ap.attribution_sweep(planted_4l, task, method="node")
    assert sweep.label == "attribution (node)"
    matrix = sweep.matrix(normalized=True)
    assert list(matrix.columns) == [0, 1, 2, 3, "mlp"] and list(matrix.index) == [0, 1, 2, 3]
    assert matrix.loc[2, 2] == pytest.approx(float(sweep.normalized[sweep.index.index("L2H2")]))
    frame = sweep.frame()
    assert frame.loc[0, "component"] == "embed" and frame.loc[0, "kind"] == "embed"
    assert frame.set_index("component").loc["L3.mlp", "layer"] == 3
    exact = ap.patching_sweep(planted_4l, task, what="nodes")
    assert exact.label == "activation patching (exact)" and not exact.approximation
    assert list(exact.matrix().columns) == list(matrix.columns)


def test_a_large_edge_matrix_keeps_the_largest_edges_for_the_report(planted_4l, monkeypatch):
    monkeypatch.setattr(ap, "MAX_REPORT_CELLS", 60)
    sweep = ap.attribution_sweep(planted_4l, small_induction(planted_4l), method="eap")
    data = sweep.to_dict()
    shown = len(data["matrix"]["index"]) * len(data["matrix"]["columns"])
    assert shown <= 60 and "largest edges" in data["title"]
    biggest = sweep.top(1).loc[0]
    assert biggest["sender"] in data["matrix"]["index"] and biggest["receiver"] in data["matrix"]["columns"]


class _Context:
    """A running test's context (what the pytest plugin installs)."""

    def __init__(self, model, task):
        self.model, self.task, self.sweeps = model, task, []

    def get_model(self):
        return self.model

    def get_task(self, model):
        return self.task

    def get_patcher(self, model):
        return None

    def default_seed(self):
        return 0

    def record(self, result, tolerance=None):
        return None

    def record_sweep(self, sweep):
        self.sweeps.append(sweep)


def test_inside_a_test_the_model_and_task_come_from_its_context_and_the_heatmap_is_labelled(induction_2l):
    from circuitcheck.report.heatmaps import patching

    task = small_induction(induction_2l)
    running = _Context(induction_2l, task)
    with context.active(running):
        sweep = cc.attribution_sweep(method="eap")
    assert len(sweep.index) == 81 and len(running.sweeps) == 1
    recorded = running.sweeps[0]
    assert recorded["title"].startswith("attribution (EAP) of every edge (denoise) on induction")
    maps = patching([{"nodeid": "t::x", "sweeps": [recorded]}])
    assert maps[0]["title"] == recorded["title"]
    assert "estimate" in str(maps[0]["legend"]) and "attribution (EAP)" in str(maps[0]["svg"])
    with pytest.raises(CircuitCheckError, match="no task"):
        cc.attribution_sweep(induction_2l)


# Errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="acdc"), r"method='acdc' is not valid: use one of 'node', 'eap', 'eap-ig'"),
        (dict(method="eap-ig", steps=0), r"steps=0 is not valid: .* 1 or more"),
        (dict(method="eap-ig", steps=2.5), r"steps=2.5 is not valid"),
        (dict(method="eap", steps=3), r"steps=3 is only for method='eap-ig'"),
        (dict(method="eap-ig", ig="activations"), r"ig='activations' is not valid: use one of 'inputs'"),
        (dict(direction="sideways"), r"direction='sideways' is not valid: use 'denoise' .* or 'noise'"),
        (dict(max_batch=0), r"max_batch=0 is not valid"),
    ],
)
def test_bad_arguments_name_the_value_and_the_choices(kwargs, message, induction_2l):
    with pytest.raises(ArgumentError, match=message):
        ap.attribution_sweep(induction_2l, small_induction(induction_2l), **kwargs)


def test_comparing_sweeps_of_different_kinds_is_an_error(induction_2l):
    task = small_induction(induction_2l)
    edges = ap.attribution_sweep(induction_2l, task, method="eap")
    nodes = ap.attribution_sweep(induction_2l, task, method="node")
    with pytest.raises(ArgumentError, match="a sweep of edges with one of nodes: use .nodes()"):
        ap.rank_agreement(edges, nodes)
    with pytest.raises(ArgumentError, match="k=0 is not valid"):
        ap.rank_agreement(nodes, nodes, k=0)
    with pytest.raises(ArgumentError, match="'L9H9' is not a node of this sweep"):
        nodes.effect_of("L9H9")
    with pytest.raises(CircuitCheckError, match="exact edge effects do not add up"):
        ap.patching_sweep(induction_2l, task, what="edges").nodes()
    with pytest.raises(ArgumentError, match="what='heads' is not valid"):
        ap.patching_sweep(induction_2l, task, what="heads")
