"""Edge circuits in the causal claims: sufficiency equals TransformerLens's ``faithfulness`` on the same edges.

An edge circuit (``Circuit.parse("L0H0 -> L1H0.k, L1H0 -> logits")``) keeps only
its edges: every other edge's receiver reads the sender's ablated output in
place of its own (circuitcheck.engine.edges). The oracle is TransformerLens
4.3's ``tools.analysis.attribution_patching.faithfulness``, which runs on
bridges with per-head results (Hugging Face GPT-2); the zoo's native models are
compared through a GPT-2 twin that computes what they compute.
"""

from __future__ import annotations

import dataclasses
import random
import textwrap

import numpy as np
import pytest
import torch
from transformer_lens.tools.analysis import attribution_patching as tl_ap

import circuitcheck as cc
from circuitcheck import tasks
from circuitcheck.engine import edges, fastpath
from circuitcheck.engine.patcher import Patcher
from circuitcheck.errors import CircuitCheckError, ComponentError
from circuitcheck.zoo.tokenizer import build_tokenizer

ATOL = 1e-4


# Models and tasks ---------------------------------------------------------------------------------


def _save_gpt2(hf_model, directory):
    hf_model.save_pretrained(directory)
    build_tokenizer().save_pretrained(directory)
    return cc.load_model(str(directory), device="cpu")


@pytest.fixture(scope="module")
def gpt2_mlp(tmp_path_factory):
    """A random Hugging Face GPT-2 with MLPs (large weights, so that edges move the metric): TransformerLens's faithfulness runs on it."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    config = GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=64, n_positions=32, initializer_range=0.3)
    return _save_gpt2(GPT2LMHeadModel(config), tmp_path_factory.mktemp("gpt2-mlp"))


@pytest.fixture(scope="module")
def induction_twin(induction_2l, tmp_path_factory):
    """A GPT-2 computing what zoo:induction-2l computes (its MLPs zero, no unembedding bias: the zoo's is added by the metric)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    zoo = induction_2l
    cfg = zoo.cfg
    d, h, dh = cfg.d_model, cfg.n_heads, cfg.d_head
    config = GPT2Config(n_layer=cfg.n_layers, n_head=h, n_embd=d, vocab_size=cfg.d_vocab, n_positions=cfg.n_ctx,
                        layer_norm_epsilon=cfg.eps, tie_word_embeddings=False)
    hf = GPT2LMHeadModel(config)
    with torch.no_grad():
        body = hf.transformer
        body.wte.weight.copy_(zoo.W_E)
        body.wpe.weight.copy_(zoo.W_pos[: cfg.n_ctx])
        for layer, block in enumerate(body.h):
            attn, ln1 = zoo.blocks[layer].attn, zoo.blocks[layer].ln1.original_component
            block.ln_1.weight.copy_(ln1.weight)
            block.ln_1.bias.copy_(ln1.bias)
            block.attn.c_attn.weight.copy_(torch.cat([W.permute(1, 0, 2).reshape(d, h * dh) for W in (attn.W_Q, attn.W_K, attn.W_V)], 1))
            block.attn.c_attn.bias.copy_(torch.cat([b.reshape(-1) for b in (attn.b_Q, attn.b_K, attn.b_V)]))
            block.attn.c_proj.weight.copy_(attn.W_O.reshape(h * dh, d))
            block.attn.c_proj.bias.copy_(attn.b_O)
            for weight in (block.mlp.c_fc.weight, block.mlp.c_fc.bias, block.mlp.c_proj.weight, block.mlp.c_proj.bias):
                weight.zero_()
        ln_final = zoo.ln_final.original_component
        body.ln_f.weight.copy_(ln_final.weight)
        body.ln_f.bias.copy_(ln_final.bias)
        hf.lm_head.weight.copy_(zoo.W_U.T)
    twin = _save_gpt2(hf, tmp_path_factory.mktemp("induction-twin"))
    tokens = tasks.induction(zoo, n_prompts=3, seq_len=6).clean
    with torch.no_grad():
        assert float((twin(tokens) + zoo.b_U - zoo(tokens)).abs().max()) < 1e-4  # the twin is the zoo model
    return twin


def random_task(vocab, n=3, seq=6, seed=0, reference=False):
    g = torch.Generator().manual_seed(seed)
    draw = lambda *shape: torch.randint(3, vocab, shape, generator=g)  # noqa: E731
    clean, corrupt, answers, wrong = draw(n, seq), draw(n, seq), draw(n), draw(n)
    return tasks.from_tokens(clean, corrupt, answers=answers, wrong_answers=wrong, d_vocab=vocab,
                             reference=draw(5, seq) if reference else None)


def one(task, i):
    """Example ``i`` of ``task`` as a task of its own (TransformerLens's faithfulness measures one pair at a time)."""
    pick = lambda t: None if t is None else t[i : i + 1]  # noqa: E731
    return dataclasses.replace(task, clean=pick(task.clean), corrupt=pick(task.corrupt), answers=pick(task.answers),
                               wrong_answers=pick(task.wrong_answers))


def random_edge_circuit(model, seq_len, share=0.35, seed=0):
    """A seeded random subset of the model's edges, plus one edge narrowed to a position."""
    everything = edges.all_edges(model, seq_len)
    chosen = random.Random(seed).sample(everything, int(share * len(everything)))
    return cc.Circuit.of((), [*chosen, cc.Edge.parse("L0H1 -> L1H2.k@3")], name="random edges")


# The oracle --------------------------------------------------------------------------------------


def transformer_lens_edges(graph: edges.Graph, circuit) -> list:
    """The circuit's edges as TransformerLens (writer, reader) node pairs, one per position (pos_embed: no TL writer)."""
    readers = {"q": "q_input", "k": "k_input", "v": "v_input"}
    pairs = []
    for sender, receiver, positions in graph.atoms(list(circuit.edges)):
        for p in positions if positions is not None else range(graph.seq_len):
            if sender[0] == "pos_embed":  # TransformerLens never ablates it; resample and mean leave it as it is
                continue
            writer = (tl_ap.Node("embed", p) if sender[0] == "embed" else
                      tl_ap.Node("attn_head_out", p, sender[1], sender[2]) if sender[0] == "head" else tl_ap.Node("mlp_out", p, sender[1]))
            reader = (tl_ap.Node(readers[receiver[0]], p, receiver[1], receiver[2]) if receiver[0] in readers else
                      tl_ap.Node("mlp_in", p, receiver[1]) if receiver[0] == "mlp" else tl_ap.Node("logits", p, graph.n_layers - 1))
            pairs.append((writer, reader))
    return pairs


def transformer_lens_faithfulness(model, task, circuit, *, ablation="corrupt", logit_bias=None):
    """Per example: (m(clean), m(corrupt), m(circuit)) and TransformerLens's recovered fraction."""
    graph = edges.Graph.of(model, task.seq_len)
    pairs = transformer_lens_edges(graph, circuit)
    config = tl_ap.FaithfulnessConfig(ablation=ablation)
    rows = []
    for i in range(task.n_examples):
        sub = one(task, i)
        metric = lambda logits, sub=sub: sub.metric(logits if logit_bias is None else logits + logit_bias, sub).mean()  # noqa: E731
        result = tl_ap.faithfulness(model, sub.clean, sub.corrupt, metric, pairs, config,
                                    mean_tokens=task.reference if ablation == "mean" else None)
        gap = result.full_metric - result.corrupt_metric
        rows.append((result.full_metric, result.corrupt_metric, result.corrupt_metric + result.recovered * gap, result.recovered))
    return np.array(rows)


def our_metrics(model, task, circuit, *, fast, ablation=None):
    """Per-example m(C) and m(∅) from the batched patcher (``fast=False``: the hook path)."""
    graph = edges.Graph.of(model, task.seq_len)
    patcher = Patcher(model, fast=fast)
    values = patcher.run(task, [graph.keep(circuit.edges).patches(), graph.keep().patches()], ablation=ablation)
    return values.numpy(), patcher


# Sufficiency equals TransformerLens's faithfulness -------------------------------------------------


@pytest.mark.parametrize("fast", [False, None], ids=["hook path", "fast path"])
def test_edge_sufficiency_equals_transformer_lens_faithfulness_on_a_model_with_mlps(gpt2_mlp, fast):
    task = random_task(gpt2_mlp.cfg.d_vocab)
    circuit = random_edge_circuit(gpt2_mlp, task.seq_len)
    theirs = transformer_lens_faithfulness(gpt2_mlp, task, circuit)
    (ours, empty), patcher = our_metrics(gpt2_mlp, task, circuit, fast=fast)
    np.testing.assert_allclose(ours, theirs[:, 2], atol=ATOL, rtol=0)  # m(C), example by example
    np.testing.assert_allclose(empty, theirs[:, 1], atol=ATOL, rtol=0)  # ∅ under resample ablation is the corrupted run
    assert (patcher.fast_passes > 0) == (fast is None) and fastpath.state(gpt2_mlp).disabled is None
    result = cc.check_sufficient(circuit, model=gpt2_mlp, task=task, min_recovery=0.0)
    clean, corrupt, kept = theirs[:, :3].mean(0)  # circuitcheck's recovery is a ratio of means over examples
    assert result.value == pytest.approx((kept - corrupt) / (clean - corrupt), abs=ATOL)


@pytest.mark.parametrize("fast", [False, None], ids=["hook path", "fast path"])
def test_edge_sufficiency_equals_transformer_lens_faithfulness_on_the_zoo(induction_2l, induction_twin, fast):
    task = tasks.induction(induction_2l, n_prompts=3, seq_len=5)
    circuit = random_edge_circuit(induction_2l, task.seq_len, share=0.5, seed=3)
    theirs = transformer_lens_faithfulness(induction_twin, task, circuit, logit_bias=induction_2l.b_U)
    (ours, empty), patcher = our_metrics(induction_2l, task, circuit, fast=fast)
    np.testing.assert_allclose(ours, theirs[:, 2], atol=ATOL, rtol=0)
    np.testing.assert_allclose(empty, theirs[:, 1], atol=ATOL, rtol=0)
    assert (patcher.fast_passes > 0) == (fast is None) and fastpath.state(induction_2l).disabled is None
    if task.n_examples == 1:
        return
    result = cc.check_sufficient(circuit, model=induction_2l, task=task, min_recovery=0.0)
    clean, corrupt, kept = theirs[:, :3].mean(0)
    assert result.value == pytest.approx((kept - corrupt) / (clean - corrupt), abs=ATOL)


def test_mean_ablation_gives_transformer_lens_metric_and_its_recovery_by_the_stated_relation(gpt2_mlp):
    task = random_task(gpt2_mlp.cfg.d_vocab, reference=True)
    circuit = random_edge_circuit(gpt2_mlp, task.seq_len, seed=1)
    theirs = transformer_lens_faithfulness(gpt2_mlp, task, circuit, ablation="mean")
    (ours, empty), _ = our_metrics(gpt2_mlp, task, circuit, fast=None, ablation="mean")
    np.testing.assert_allclose(ours, theirs[:, 2], atol=ATOL, rtol=0)  # m(C) is the same number
    result = cc.check_sufficient(circuit, model=gpt2_mlp, task=task, ablation="mean", min_recovery=-10.0)
    full, corrupt, m_empty = theirs[:, 0].mean(), theirs[:, 1].mean(), empty.mean()
    # TransformerLens divides by m(clean) - m(corrupt); circuitcheck by m(M) - m(∅), ∅ = every edge mean-ablated.
    theirs_recovery = (theirs[:, 2].mean() - corrupt) / (full - corrupt)
    assert theirs_recovery == pytest.approx((m_empty - corrupt + result.value * (full - m_empty)) / (full - corrupt), abs=ATOL)


# What every edge and no edge recover ---------------------------------------------------------------


@pytest.mark.parametrize("which", ["random_model", "induction_2l", "planted_4l"])
def test_every_edge_recovers_one_and_no_edge_is_the_corrupted_run(which, request):
    model = request.getfixturevalue(which) if which != "planted_4l" else cc.load_model("zoo:planted-4l", device="cpu")
    task = tasks.induction(model, n_prompts=4, seq_len=5)
    everything = cc.Circuit.of((), edges.all_edges(model, task.seq_len), name="the whole model")
    if which != "random_model":  # (a random model does not do induction: no gap to divide by)
        result = cc.check_sufficient(everything, model=model, task=task, min_recovery=0.99)
        assert result.passed and result.value == pytest.approx(1.0, abs=1e-5)
    graph = edges.Graph.of(model, task.seq_len)
    patcher = Patcher(model)
    nothing, full = patcher.run(task, [graph.keep().patches(), graph.keep(everything.edges).patches()])
    runs = patcher.runs(task)
    torch.testing.assert_close(nothing, runs.corrupt_metric, atol=ATOL, rtol=0)  # recovery(∅) = 0 by construction
    torch.testing.assert_close(full, runs.clean_metric, atol=ATOL, rtol=0)


@pytest.mark.parametrize("which", ["random_model", "planted_4l"])
def test_fast_path_equals_hook_path_for_edge_variants_with_mlps_and_positions(which, request):
    model = request.getfixturevalue(which) if which != "planted_4l" else cc.load_model("zoo:planted-4l", device="cpu")
    task = tasks.induction(model, n_prompts=3, seq_len=4)
    graph = edges.Graph.of(model, task.seq_len)
    some = random.Random(5).sample(graph.edges(), 12)
    narrowed = ["L0.attn -> L1.mlp@-2:", "embed@3 -> logits", "L0.mlp -> L1H1.v@2"]
    variants = [graph.keep(some + narrowed).patches(), graph.drop(some + narrowed).patches(), graph.drop(narrowed).patches(),
                graph.keep(narrowed).patches()]
    for ablation in ("resample", "mean", "zero"):
        general = Patcher(model, fast=False).run(task, variants, ablation=ablation)
        fast = Patcher(model)
        torch.testing.assert_close(fast.run(task, variants, ablation=ablation), general, atol=ATOL, rtol=0)
        assert fast.fast_passes > 0
    assert fastpath.state(model).disabled is None


def test_edge_variants_run_batched_in_one_forward(random_model):
    task = tasks.induction(random_model, n_prompts=3, seq_len=4)
    circuit = random_edge_circuit(random_model, task.seq_len)
    patcher = Patcher(random_model, max_batch=10_000, fast=False)
    graph = edges.Graph.of(random_model, task.seq_len)
    alone = [patcher.run(task, [graph.keep(circuit.edges[:k]).patches()])[0] for k in (3, 9)]
    before = patcher.forward_passes
    together = patcher.run(task, [graph.keep(circuit.edges[:k]).patches() for k in (3, 9)])
    assert patcher.forward_passes == before + 1
    torch.testing.assert_close(together, torch.stack(alone), atol=ATOL, rtol=0)


# Edge circuits and node circuits --------------------------------------------------------------------


def test_the_edges_out_of_a_node_circuit_run_like_it_with_their_own_empty_run(induction_2l):
    """Node ablation of s is ablating every edge out of s, so node_edges(C) has the node circuit's m(C).

    Recovery differs: a node circuit's ∅ keeps the embeddings, an edge circuit's ∅
    ablates them too; the node recovery is the edge circuits' m values normalised
    by node_edges(∅) (the embeddings' edges alone).
    """
    task = tasks.induction(induction_2l, n_prompts=6, seq_len=6)
    nodes = cc.Circuit.parse("L0H0 L0H2 L1H0 L1H2 L1H3", name="induction")
    node = cc.check_sufficient(nodes, model=induction_2l, task=task)
    edge = cc.check_sufficient(edges.node_edges(induction_2l, nodes.components), model=induction_2l, task=task)
    graph = edges.Graph.of(induction_2l, task.seq_len)
    m_node_empty = Patcher(induction_2l).run(task, [graph.keep(edges.node_edges(induction_2l, [])).patches()])[0].mean()
    means = lambda r: dict(zip(r.evidence["means"]["run"], r.evidence["means"]["mean_metric"]))  # noqa: E731
    assert means(edge)["circuit only m(C)"] == pytest.approx(means(node)["circuit only m(C)"], abs=ATOL)
    assert float(m_node_empty) == pytest.approx(means(node)["everything ablated m(∅)"], abs=ATOL)
    full, kept = means(edge)["full model m(M)"], means(edge)["circuit only m(C)"]
    assert node.value == pytest.approx((kept - float(m_node_empty)) / (full - float(m_node_empty)), abs=ATOL)
    runs = Patcher(induction_2l).runs(task)
    assert means(edge)["everything ablated m(∅)"] == pytest.approx(float(runs.corrupt_metric.mean()), abs=ATOL)  # not the node ∅
    assert abs(means(edge)["everything ablated m(∅)"] - float(m_node_empty)) > 1e-3


def test_necessity_of_edges_ablates_them_and_keeps_the_rest(induction_2l):
    task = tasks.induction(induction_2l, n_prompts=6, seq_len=6)
    out_of_L1H0 = [f"L1H0 -> logits"]  # L1H0's only reader in a 2-layer model
    node = cc.check_necessary("L1H0", model=induction_2l, task=task, min_drop=0.0)
    edge = cc.check_necessary(cc.Circuit.parse(", ".join(out_of_L1H0)), model=induction_2l, task=task, min_drop=0.0)
    ablated = lambda r: dict(zip(r.evidence["means"]["run"], r.evidence["means"]["mean_metric"]))["ablated m(M\\C)"]  # noqa: E731
    assert ablated(edge) == pytest.approx(ablated(node), abs=ATOL)  # the same run: L1H0's output ablated everywhere it is read
    everything = cc.Circuit.of((), edges.all_edges(induction_2l, task.seq_len))
    assert cc.check_necessary(everything, model=induction_2l, task=task).value == pytest.approx(1.0, abs=1e-5)
    assert "edge circuit: 1 of the model's" in "\n".join(edge.notes)


def test_minimality_and_faithfulness_take_edges_as_members(induction_2l):
    task = tasks.induction(induction_2l, n_prompts=6, seq_len=6)
    circuit = cc.Circuit.parse(
        "L0H0 -> L1H0.k, L0H2 -> L1H0.k, embed -> L1H0.q, embed -> L1H0.v, embed -> L0H0.v, embed -> L0H2.v, "
        "pos_embed -> L0H0.q, pos_embed -> L0H0.k, pos_embed -> L0H2.q, pos_embed -> L0H2.k, L1H0 -> logits", name="L1H0's edges")
    minimal = cc.check_minimal(circuit, model=induction_2l, task=task, min_contribution=0.0)
    table = minimal.evidence["minimality"].set_index("component")
    whole = cc.check_sufficient(circuit, model=induction_2l, task=task, min_recovery=0.0).value
    without = cc.check_sufficient(circuit.without("L1H0 -> logits"), model=induction_2l, task=task, min_recovery=-1.0).value
    assert table.loc["L1H0 -> logits", "contribution"] == pytest.approx(whole - without, abs=1e-9)
    assert table.loc["pos_embed -> L0H0.q", "contribution"] == pytest.approx(0.0, abs=1e-6)  # same value on both inputs
    faithful = cc.check_faithful(circuit, model=induction_2l, task=task, max_error=1.0)
    assert faithful.value == pytest.approx(abs(1 - whole), abs=1e-9)


def test_completeness_searches_subsets_of_edges(induction_2l):
    task = tasks.induction(induction_2l, n_prompts=6, seq_len=6)
    circuit = cc.Circuit.parse("L0H0 -> L1H0.k, L0H2 -> L1H0.k, embed -> L1H0.q, L1H0 -> logits", name="four edges")
    result = cc.check_complete(circuit, model=induction_2l, task=task, max_incompleteness=2.0)
    table = result.evidence[next(iter(result.evidence))]
    assert "L0H2 -> L1H0.k, embed -> L1H0.q" in list(table["K"])  # the knocked-out sets K are sets of edges
    recovery = cc.check_sufficient(circuit, model=induction_2l, task=task, min_recovery=-1.0).value
    assert result.value >= abs(recovery - 1) - 1e-9  # K = ∅ is searched: |recovery(C) - recovery(M)|


# Parsing and errors ----------------------------------------------------------------------------------


def test_edges_parse_with_spaces_commas_and_lists():
    text = cc.Circuit.parse("L0H0->L1H0.k L1H0->logits")
    assert [str(e) for e in text.edges] == ["L0H0 -> L1H0.k", "L1H0 -> logits"] and text.is_edge_circuit
    assert cc.Circuit.parse(["L0H0 -> L1H0.k", "L1H0 -> logits"]) == text
    assert str(cc.Circuit.parse("L0.attn -> L1.mlp@-1, embed@2 -> logits")) == "L0.attn -> L1.mlp@-1, embed@2 -> logits"


@pytest.mark.parametrize("text, message", [
    ("L0H0 -> L1H0", "L1H0 cannot receive an edge .a head reads its input through L1H0.q, .k or .v.; receivers are inputs"),
    ("logits -> L1H0.q", "logits is a receiver only"),
    ("L1H0 -> L0H0.q", "the receiver must read the residual stream after the sender writes it"),
    ("L0H0 -> L1H0.k -> logits", "an edge has one arrow"),
    ("L0H0 -> L1.attn", "L1.attn cannot receive an edge; receivers are inputs: .*logits"),
])
def test_a_bad_edge_is_an_error_naming_it_and_what_is_valid(text, message):
    with pytest.raises(ComponentError, match=message):
        cc.Circuit.parse(text)


@pytest.mark.parametrize("text, message", [
    ("L0.mlp -> logits", "edge L0.mlp -> logits: L0.mlp does not exist: model .* is attention-only"),
    ("L2H0 -> logits", "edge L2H0 -> logits: layer 2 does not exist .*layers 0-1"),
    ("L0H0 -> L1H9.k", "edge L0H0 -> L1H9.k: head 9 does not exist .*heads 0-3"),
])
def test_an_edge_the_model_lacks_is_an_error_naming_it(induction_2l, text, message):
    task = tasks.induction(induction_2l, n_prompts=2, seq_len=4)
    with pytest.raises(ComponentError, match=message):
        cc.check_sufficient(cc.Circuit.parse(text), model=induction_2l, task=task)


def test_circuits_mixing_nodes_and_edges_and_keep_with_edges_are_refused(induction_2l):
    task = tasks.induction(induction_2l, n_prompts=2, seq_len=4)
    with pytest.raises(CircuitCheckError, match="lists components .L1H3. and edges: a causal claim takes a node circuit or an edge circuit"):
        cc.check_sufficient(cc.Circuit.parse("L0H0 -> L1H3.k, L1H3"), model=induction_2l, task=task)
    with pytest.raises(CircuitCheckError, match="keep='L0H1' applies to node circuits"):
        cc.check_sufficient(cc.Circuit.parse("L0H0 -> L1H3.k"), model=induction_2l, task=task, keep="L0H1")
    with pytest.raises(CircuitCheckError, match="selects no position"):
        cc.check_sufficient(cc.Circuit.parse("L0H0@1 -> L1H3.k@2"), model=induction_2l, task=task)
    with pytest.raises(CircuitCheckError, match="a path's senders are components"):
        cc.check_path(cc.Circuit.parse("L0H0 -> L1H3.k"), "logits", model=induction_2l, task=task)


# Spec files ---------------------------------------------------------------------------------------------


SPEC = """\
model: zoo:induction-2l
task:
  name: induction
  n_prompts: 6
  seq_len: 6
circuits:
  heads: L0H0 L0H2 L1H0 L1H2 L1H3
  induction_edges: >-
    L0H0 -> L1H0.k, L0H2 -> L1H0.k, L0H0 -> L1H3.k, L0H2 -> L1H3.k,
    embed -> L1H0.q, embed -> L1H0.v, embed -> L1H3.q, embed -> L1H3.v, embed -> L0H0.v, embed -> L0H2.v,
    pos_embed -> L0H0.q, pos_embed -> L0H0.k, pos_embed -> L0H2.q, pos_embed -> L0H2.k,
    L1H0 -> logits, L1H3 -> logits
claims:
  - kind: sufficient
    circuit: induction_edges
    min_recovery: 0.5
  - kind: necessary
    circuit: induction_edges
    min_drop: 0.3
  - kind: faithful
    circuit: induction_edges
    max_error: 0.6
  - kind: sufficient
    circuit: L1H0 -> logits
    max_recovery: 0.2
"""


def test_a_spec_with_an_edge_circuit_runs_end_to_end(pytester):
    from test_spec import write_spec

    write_spec(pytester, SPEC)
    result = pytester.runpytest("-v", "--circuitcheck-json=out.json")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*::sufficient induction_edges PASSED*", "*::necessary induction_edges PASSED*",
                                 "*::faithful induction_edges PASSED*", "*::not sufficient L1H0 -> logits PASSED*"])


def test_a_spec_with_a_bad_edge_names_the_file_line_and_the_edge():
    from test_spec import spec_error

    text = SPEC.replace("L1H3 -> logits", "L1H3 -> L0H0.q").replace("circuit: L1H0 -> logits", "circuit: L0.mlp -> logits")
    message = spec_error(text)
    assert "s.circuit.yaml:8: circuits.induction_edges edge 'L1H3 -> L0H0.q': the receiver must read" in message
    assert "edge L0.mlp -> logits: L0.mlp does not exist: model zoo:induction-2l is attention-only" in message
