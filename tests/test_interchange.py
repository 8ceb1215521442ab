"""Edge circuits in TransformerLens's, auto-circuit's and EAP-IG / MIB's naming (circuitcheck.model.interchange).

Round trips cover every edge of small models (circuitcheck.engine.edges.all_edges
is the graph); TransformerLens 4.3 is the oracle for its own naming: its
``enumerate_edges`` (as ``attribution_patch``'s edge scores list them) maps one
to one onto circuitcheck's edges, and its ``faithfulness`` on a converted
circuit measures what circuitcheck's sufficiency measures. auto-circuit and
EAP-IG are not dependencies: their expected names are written out by hand here
from their sources (cited in the module's docstring).
"""

from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest
import torch
from transformer_lens.tools.analysis import attribution_patching as tl_ap

import circuitcheck as cc
from circuitcheck import tasks
from circuitcheck.engine.edges import all_edges
from circuitcheck.errors import ArgumentError, ComponentError
from circuitcheck.model import interchange as ic
from circuitcheck.zoo.tokenizer import build_tokenizer

from conftest import build_native


def whole(model) -> cc.Circuit:
    return cc.Circuit.of((), all_edges(model))


def without_pos_embed(circuit: cc.Circuit) -> cc.Circuit:
    return cc.Circuit.of((), [e for e in circuit.edges if e.sender.kind != "pos_embed"])


@pytest.fixture(scope="module")
def attn_only():
    return build_native(n_layers=2, n_heads=2, d_model=16, d_vocab=20, attn_only=True)


@pytest.fixture(scope="module")
def rotary():
    return build_native(n_layers=2, n_heads=2, d_model=16, d_vocab=20, positional_embedding_type="rotary")


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """A random Hugging Face GPT-2 with MLPs (large weights, so that edges move the metric): TransformerLens's edge tools run on it."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    config = GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=64, n_positions=32, initializer_range=0.3)
    directory = tmp_path_factory.mktemp("gpt2-interchange")
    GPT2LMHeadModel(config).save_pretrained(directory)
    build_tokenizer().save_pretrained(directory)
    return cc.load_model(str(directory), device="cpu")


def random_task(vocab, n=3, seq=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    draw = lambda *shape: torch.randint(3, vocab, shape, generator=g)  # noqa: E731
    return tasks.from_tokens(draw(n, seq), draw(n, seq), answers=draw(n), wrong_answers=draw(n), d_vocab=vocab)


def one(task, i):
    pick = lambda t: None if t is None else t[i : i + 1]  # noqa: E731
    return dataclasses.replace(task, clean=pick(task.clean), corrupt=pick(task.corrupt), answers=pick(task.answers),
                               wrong_answers=pick(task.wrong_answers))


def transformer_lens_edges(model, task) -> list:
    """TransformerLens's attribution at edge granularity on the task's first example.

    The keys of its ``edge_scores`` are ``enumerate_edges``'s output, in its order.
    """
    sub = one(task, 0)
    model.requires_grad_(True)
    try:
        result = tl_ap.attribution_patch(model, sub.clean, sub.corrupt, lambda logits: sub.metric(logits, sub).mean(),
                                         tl_ap.EdgeAttributionConfig(granularity="edge"))
    finally:
        model.requires_grad_(False)
    return result


# Round trips on every edge ---------------------------------------------------------------------------


def test_every_edge_round_trips_through_transformer_lens_naming(random_model):
    circuit = whole(random_model)
    pairs = ic.to_transformer_lens(circuit, random_model, seq_len=4)
    assert len(pairs) == 4 * len(without_pos_embed(circuit).edges)  # one pair per position, no pos_embed writer
    assert ic.from_transformer_lens(pairs, random_model, seq_len=4) == circuit


@pytest.mark.parametrize("separate_qkv", [True, False])
def test_every_edge_round_trips_through_auto_circuit_naming(random_model, separate_qkv):
    circuit = whole(random_model)
    names = ic.to_auto_circuit(circuit, random_model, separate_qkv=separate_qkv)
    assert ic.from_auto_circuit(names, random_model) == circuit
    by_position = ic.to_auto_circuit(circuit, random_model, seq_len=3, separate_qkv=separate_qkv)
    assert list(by_position) == names and all(p == [0, 1, 2] for p in by_position.values())
    assert ic.from_auto_circuit(by_position, random_model, seq_len=3) == circuit


@pytest.mark.parametrize("suffix", ["dict", ".json", ".pt", "text"])
def test_every_edge_round_trips_through_an_eap_graph(random_model, tmp_path, suffix):
    circuit = whole(random_model)
    path = None if suffix in ("dict", "text") else tmp_path / f"circuit{suffix}"
    graph = ic.to_eap_graph(circuit, random_model, path=path)
    source = {"dict": graph, "text": json.dumps(graph)}.get(suffix, path)
    assert ic.from_eap_graph(source, random_model) == circuit


@pytest.mark.parametrize("fixture", ["random_model", "attn_only", "rotary"])
def test_the_whole_graph_of_each_format_is_circuitchecks_graph(fixture, request):
    model = request.getfixturevalue(fixture)
    circuit = whole(model)
    assert ic.from_transformer_lens(ic.to_transformer_lens(circuit, model, 2), model, 2) == circuit
    assert ic.from_auto_circuit(ic.to_auto_circuit(circuit, model), model) == circuit
    everything = ic.to_eap_graph(circuit, model)
    assert sum(edge["in_graph"] for edge in everything["edges"].values()) == len(without_pos_embed(circuit).edges)
    assert ic.from_eap_graph(everything, model) == circuit


# TransformerLens: its own graph and faithfulness --------------------------------------------------------


def test_every_transformer_lens_edge_maps_to_one_of_ours_and_back(gpt2):
    task = random_task(gpt2.cfg.d_vocab, seq=4)
    theirs = list(transformer_lens_edges(gpt2, task).edge_scores)
    assert ic.to_transformer_lens(whole(gpt2), gpt2, task.seq_len) == theirs  # the same edges in enumerate_edges' order
    assert ic.from_transformer_lens(theirs, gpt2, task.seq_len) == whole(gpt2)
    ours = set()
    for pair in theirs:
        circuit = ic.from_transformer_lens([pair], gpt2, task.seq_len, pos_embed="omitted")
        (edge,) = circuit.edges
        ours.add(edge)
        assert ic.to_transformer_lens(circuit, gpt2, task.seq_len, pos_embed="omitted") == [pair]
    assert len(ours) == len(theirs)


def test_transformer_lens_top_edges_read_as_the_circuit_of_their_pairs(gpt2):
    task = random_task(gpt2.cfg.d_vocab, seq=4)
    result = transformer_lens_edges(gpt2, task)
    top = result.top_edges(k=12)
    assert len(top) == 12 and all(len(t) == 3 for t in top)
    assert ic.from_transformer_lens(top, gpt2, task.seq_len) == ic.from_transformer_lens([t[:2] for t in top], gpt2, task.seq_len)


def test_transformer_lens_faithfulness_of_a_converted_circuit_is_circuitchecks_recovery(gpt2):
    task = random_task(gpt2.cfg.d_vocab)
    everything = all_edges(gpt2)
    chosen = random.Random(4).sample([e for e in everything if e.sender.kind != "pos_embed"], 40)
    circuit = cc.Circuit.of((), chosen + [e for e in everything if e.sender.kind == "pos_embed"] + [cc.Edge.parse("L0H1 -> L1H2.k@3")])
    pairs = ic.to_transformer_lens(circuit, gpt2, task.seq_len)
    rows = []
    for i in range(task.n_examples):
        sub = one(task, i)
        result = tl_ap.faithfulness(gpt2, sub.clean, sub.corrupt, lambda logits, sub=sub: sub.metric(logits, sub).mean(), pairs)
        assert result.circuit_size == len(pairs)
        gap = result.full_metric - result.corrupt_metric
        rows.append((result.full_metric, result.corrupt_metric, result.corrupt_metric + result.recovered * gap))
    clean, corrupt, kept = np.array(rows).mean(0)
    ours = cc.check_sufficient(circuit, model=gpt2, task=task, min_recovery=0.0)
    assert ours.value == pytest.approx((kept - corrupt) / (clean - corrupt), abs=1e-4)


# Positions ---------------------------------------------------------------------------------------------


def test_narrowed_edges_come_back_on_their_receiver_one_edge_per_contiguous_run(random_model):
    given = cc.Circuit.parse("L0H1 -> L1H2.k@3, L0H1@1 -> L1H2.k, L0H2 -> L1.mlp@-1, L0.mlp -> logits@0:2, "
                             "L0H3 -> L1H0.v@0, L0H3 -> L1H0.v@2, L0H0 -> L1H1.q@0:2, L0H0 -> L1H1.q@2:", name="narrow")
    expected = cc.Circuit.parse("L0H0 -> L1H1.q, L0H1 -> L1H2.k@1, L0H1 -> L1H2.k@3, L0H3 -> L1H0.v@0, L0H3 -> L1H0.v@2, "
                                "L0H2 -> L1.mlp@3, L0.mlp -> logits@0:2")
    pairs = ic.to_transformer_lens(given, random_model, 4, pos_embed="omitted")
    assert ic.from_transformer_lens(pairs, random_model, 4, pos_embed="omitted") == expected
    names = ic.to_auto_circuit(given, random_model, seq_len=4)
    assert names["A0.1->A1.2.K"] == [1, 3] and names["MLP 0->Resid End"] == [0, 1] and names["A0.0->A1.1.Q"] == [0, 1, 2, 3]
    assert ic.from_auto_circuit(names, random_model, seq_len=4) == expected
    assert ic.from_auto_circuit(ic.to_auto_circuit(expected, random_model, seq_len=4), random_model, seq_len=4) == expected


def test_auto_circuit_edges_with_seq_idx_read_position_by_position(random_model):
    class AutoCircuitEdge:  # the two attributes of auto_circuit.types.Edge that name it
        def __init__(self, name, seq_idx):
            self.name, self.seq_idx = name, seq_idx

    edges = [AutoCircuitEdge("A0.1->A1.2.K", 0), AutoCircuitEdge("A0.1->A1.2.K", 1), ("MLP 0->Resid End", 2),
             AutoCircuitEdge("A0.3->MLP 1", None)]
    assert ic.from_auto_circuit(edges, random_model, seq_len=3) == cc.Circuit.parse(
        "L0H1 -> L1H2.k@0:2, L0H3 -> L1.mlp, L0.mlp -> logits@2")


def test_an_empty_position_list_is_no_edge_by_position_and_every_position_without_seq_len(random_model):
    given = {"A0.1->A1.2.K": [], "A0.0->MLP 1": [1]}
    assert ic.from_auto_circuit(given, random_model, seq_len=3) == cc.Circuit.parse("L0H0 -> L1.mlp@1")
    assert ic.from_auto_circuit(given, random_model) == cc.Circuit.parse("L0H1 -> L1H2.k, L0H0 -> L1.mlp")


# The embedding senders ----------------------------------------------------------------------------------


def test_resid_start_is_the_token_and_positional_embeddings_together(random_model, rotary):
    assert ic.from_auto_circuit(["Resid Start->A1.0.Q"], random_model) == cc.Circuit.parse("embed -> L1H0.q, pos_embed -> L1H0.q")
    assert ic.from_auto_circuit(["Resid Start->A1.0.Q"], rotary) == cc.Circuit.parse("embed -> L1H0.q")
    assert ic.to_auto_circuit(cc.Circuit.parse("embed -> logits, pos_embed -> logits"), random_model) == ["Resid Start->Resid End"]
    assert ic.to_auto_circuit(cc.Circuit.parse("embed -> logits"), rotary) == ["Resid Start->Resid End"]
    with pytest.raises(ComponentError,
                       match=r"Resid Start->Resid End is embed -> logits, pos_embed -> logits.*the circuit has embed -> logits$"):
        ic.to_auto_circuit(cc.Circuit.parse("embed -> logits"), random_model)


def test_separate_qkv_false_names_a_heads_three_inputs_as_one_destination(random_model):
    three = cc.Circuit.parse("L0H1 -> L1H2.q, L0H1 -> L1H2.k, L0H1 -> L1H2.v")
    assert ic.to_auto_circuit(three, random_model, separate_qkv=False) == ["A0.1->A1.2"]
    assert ic.from_auto_circuit(["A0.1->A1.2"], random_model) == three
    with pytest.raises(ComponentError, match=r"A0.1->A1.2 is L0H1 -> L1H2.q, L0H1 -> L1H2.k, L0H1 -> L1H2.v.*one destination"):
        ic.to_auto_circuit(cc.Circuit.parse("L0H1 -> L1H2.q"), random_model, separate_qkv=False)


def test_eap_input_is_the_token_embedding_and_pos_embed_edges_are_kept_by_default(random_model):
    graph = ic.to_eap_graph(cc.Circuit.of((), all_edges(random_model)), random_model)
    assert "input->a0.h0<q>" in graph["edges"] and not any("pos" in name for name in graph["edges"])
    read = ic.from_eap_graph({**graph, "edges": {k: {**v, "in_graph": k == "input->logits"} for k, v in graph["edges"].items()}},
                             random_model)
    pos = [e for e in all_edges(random_model) if e.sender.kind == "pos_embed"]
    assert set(read.edges) == {cc.Edge.parse("embed -> logits"), *pos} and len(read.edges) == 1 + len(pos)
    assert len(pos) == 4 * 3 * 2 + 2 + 1  # q/k/v of 8 heads, 2 MLPs, logits
    omitted = ic.from_eap_graph({**graph, "edges": {k: {**v, "in_graph": k == "input->logits"} for k, v in graph["edges"].items()}},
                                random_model, pos_embed="omitted")
    assert omitted == cc.Circuit.parse("embed -> logits")


def test_writing_a_circuit_that_ablates_pos_embed_edges_needs_pos_embed_omitted(random_model):
    circuit = cc.Circuit.parse("L0H1 -> L1H2.k, L1H2 -> logits")
    for write in (lambda **kw: ic.to_eap_graph(circuit, random_model, **kw),
                  lambda **kw: ic.to_transformer_lens(circuit, random_model, 3, **kw)):
        with pytest.raises(ComponentError,
                           match=r"ablates pos_embed -> L0H0.q \(27 of the model's 27 pos_embed edges.*pos_embed='omitted'"):
            write()
        assert write(pos_embed="omitted")
    kept = ic.from_eap_graph(ic.to_eap_graph(circuit, random_model, pos_embed="omitted"), random_model)
    partly = cc.Circuit.of((), [*kept.without("pos_embed -> logits").edges, cc.Edge.parse("pos_embed -> logits@0")])
    with pytest.raises(ComponentError, match=r"keeps pos_embed -> logits only at positions \[0\] \(1 of the model's 27"):
        ic.to_transformer_lens(partly, random_model, 3)


# EAP-IG / MIB graphs -------------------------------------------------------------------------------------


def eap_file(model, scored: dict[str, float], in_graph=()) -> dict:
    """An EAP-IG graph of ``model`` with the given scores (others 0) and in_graph edges, written independently of the module."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    stream, names = ["input"], []
    for layer in range(n_layers):
        heads = [f"a{layer}.h{h}" for h in range(n_heads)]
        names += [f"{s}->{h}<{x}>" for s in stream for h in heads for x in "qkv"]
        stream += heads
        names += [f"{s}->m{layer}" for s in stream]
        stream.append(f"m{layer}")
    names += [f"{s}->logits" for s in stream]
    assert set(scored) <= set(names) and set(in_graph) <= set(names)
    return {"cfg": {"n_layers": n_layers, "n_heads": n_heads, "parallel_attn_mlp": False, "d_model": model.cfg.d_model},
            "nodes": {}, "edges": {n: {"score": scored.get(n, 0.0), "in_graph": n in in_graph} for n in names}}


def test_eap_names_map_to_circuitchecks(random_model):
    names = ["input->a0.h1<q>", "a0.h1->a1.h2<k>", "a0.h3->m0", "m0->a1.h0<v>", "m1->logits", "input->m1"]
    read = ic.from_eap_graph(eap_file(random_model, {}, names), random_model, pos_embed="omitted")
    assert read == cc.Circuit.parse("embed -> L0H1.q, L0H3 -> L0.mlp, L0H1 -> L1H2.k, L0.mlp -> L1H0.v, embed -> L1.mlp, L1.mlp -> logits")
    written = ic.to_eap_graph(read, random_model, pos_embed="omitted")
    assert {n for n, e in written["edges"].items() if e["in_graph"]} == set(names)


def test_top_n_and_threshold_select_edges_by_score_as_eap_ig_does(random_model):
    scored = {"a0.h1->a1.h2<k>": 0.9, "a1.h2->logits": -0.8, "input->a0.h1<q>": 0.5, "a0.h0->logits": 0.5, "m1->logits": -0.1}
    graph = eap_file(random_model, scored, in_graph=["m1->logits"])
    pick = lambda **kw: ic.from_eap_graph(graph, random_model, pos_embed="omitted", **kw)  # noqa: E731
    assert pick() == cc.Circuit.parse("L1.mlp -> logits")
    assert pick(top_n=2) == cc.Circuit.parse("L0H1 -> L1H2.k, L1H2 -> logits")
    assert pick(top_n=3) == cc.Circuit.parse("embed -> L0H1.q, L0H1 -> L1H2.k, L1H2 -> logits")  # a tie goes to the file's first
    assert pick(threshold=0.5) == cc.Circuit.parse("embed -> L0H1.q, L0H1 -> L1H2.k, L0H0 -> logits, L1H2 -> logits")
    assert pick(top_n=2, absolute=False) == cc.Circuit.parse("embed -> L0H1.q, L0H1 -> L1H2.k")
    assert pick(top_n=0) == cc.Circuit.of((), ())


def test_prune_drops_edges_out_of_unreached_nodes_and_into_dead_ends(random_model):
    graph = eap_file(random_model, {}, in_graph=["input->a0.h0<q>", "a0.h0->logits",  # reached and read: kept
                                                  "a0.h1->a1.h2<q>", "a1.h2->logits",  # a0.h1 has nothing entering it
                                                  "input->a1.h1<k>"])  # a1.h1 has nothing leaving it
    assert ic.from_eap_graph(graph, random_model, prune=True, pos_embed="omitted") == cc.Circuit.parse("embed -> L0H0.q, L0H0 -> logits")
    assert len(ic.from_eap_graph(graph, random_model, pos_embed="omitted").edges) == 5


def test_scores_are_written_and_read_in_circuitcheck_naming(random_model, tmp_path):
    scores = {"L0H1 -> L1H2.k": 0.25, cc.Edge.parse("L1.mlp -> logits"): -1.5}
    circuit = cc.Circuit.parse("L0H1 -> L1H2.k")
    path = tmp_path / "scored.json"
    graph = ic.to_eap_graph(circuit, random_model, scores=scores, pos_embed="omitted", path=path)
    assert graph["edges"]["a0.h1->a1.h2<k>"] == {"score": 0.25, "in_graph": True}
    assert graph["edges"]["m1->logits"] == {"score": -1.5, "in_graph": False}
    assert graph["edges"]["input->logits"] == {"score": 0.0, "in_graph": False}
    read = ic.eap_scores(path, random_model)
    assert read[cc.Edge.parse("L0H1 -> L1H2.k")] == 0.25 and read[cc.Edge.parse("L1.mlp -> logits")] == -1.5
    assert ic.to_eap_graph(circuit, random_model, scores=read, pos_embed="omitted") == graph
    assert json.loads(path.read_text()) == graph
    assert ic.from_eap_graph(path, random_model).name == "scored"


def test_node_in_graph_follows_eap_igs_rule(random_model):
    graph = ic.to_eap_graph(cc.Circuit.parse("L0H1 -> L1H2.k, L1H2 -> logits, L1H3 -> logits"), random_model, pos_embed="omitted")
    nodes = {n for n, v in graph["nodes"].items() if v["in_graph"]}
    assert nodes == {"a1.h2", "logits"}  # a0.h1 and a1.h3: nothing enters them; input: nothing leaves it
    assert list(graph["nodes"]) == ["input", "a0.h0", "a0.h1", "a0.h2", "a0.h3", "m0", "a1.h0", "a1.h1", "a1.h2", "a1.h3", "m1", "logits"]


def test_an_attention_only_model_keeps_eap_igs_mlp_nodes_out_of_the_graph(attn_only):
    graph = ic.to_eap_graph(whole(attn_only), attn_only)
    assert graph["nodes"]["m0"] == {"in_graph": False} and graph["edges"]["a0.h1->m0"]["in_graph"] is False
    assert ic.from_eap_graph(graph, attn_only) == whole(attn_only)
    graph["edges"]["a0.h1->m0"]["in_graph"] = True
    with pytest.raises(ComponentError, match=r"EAP-IG edge 'a0.h1->m0': model .* is attention-only and has no MLPs"):
        ic.from_eap_graph(graph, attn_only)


# Errors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, message", [
    ("A0.1->A1.2.X", r"cannot read auto-circuit edge 'A0.1->A1.2.X': destination 'A1.2.X' is not .*e.g. 'A0.1->A1.2.Q'"),
    ("Resid Begin->A1.2.Q", r"source 'Resid Begin' is not 'Resid Start'.*e.g. 'A0.1->A1.2.Q'"),
    ("A0.1 A1.2.Q", r"cannot read auto-circuit edge 'A0.1 A1.2.Q': write 'SRC->DEST', e.g. 'A0.1->A1.2.Q'"),
    ("A0.9->A1.2.Q", r"'A0.9->A1.2.Q': head 9 does not exist: model .* has heads 0-3 in each layer; valid edges look like 'A0.1->A1.2.Q'"),
    ("A1.0->A0.2.Q", r"'A1.0->A0.2.Q': edge 'L1H0 -> L0H2.q': the receiver must read the residual stream after the sender writes it"),
    ("MLP 1->MLP 1", r"'MLP 1->MLP 1'.*L1.mlp reads before L1.mlp writes"),
])
def test_a_bad_auto_circuit_name_is_named_with_a_valid_example(random_model, name, message):
    with pytest.raises(ComponentError, match=message):
        ic.from_auto_circuit([name], random_model)


@pytest.mark.parametrize("name, message", [
    ("a0.h1->a1.h2", r"cannot read EAP-IG edge 'a0.h1->a1.h2': child 'a1.h2' is not .*"
                     r"\(an edge into a head names its input: <q>, <k> or <v>\); e.g. 'a0.h1->a1.h2<q>'"),
    ("embed->m0", r"parent 'embed' is not 'input'.*e.g. 'a0.h1->a1.h2<q>'"),
    ("a0.h1-a1.h2<q>", r"write 'PARENT->CHILD'"),
])
def test_a_bad_eap_name_is_named_with_a_valid_example(random_model, name, message):
    graph = eap_file(random_model, {})
    graph["edges"][name] = {"score": 0.0, "in_graph": False}
    with pytest.raises(ComponentError, match=message):
        ic.from_eap_graph(graph, random_model)


def test_a_bad_transformer_lens_edge_is_named_with_a_valid_example(random_model):
    Node = tl_ap.Node
    cases = [
        ((Node("q_input", 0, 0, 1), Node("k_input", 0, 1, 2)),
         r"the writer's kind 'q_input' is not a writer.*e.g. \(Node\('attn_head_out'"),
        ((Node("attn_head_out", 0, 0, 1), Node("mlp_out", 0, 1)), r"the reader's kind 'mlp_out' is not a reader"),
        ((Node("attn_head_out", 0, 0, 1), Node("k_input", 1, 1, 2)), r"different positions \(0, 1\)"),
        ((Node("embed", 0), Node("logits", 0, 0)), r"the logits reader sits at the last layer, layer=1 .* not layer=0"),
        ((Node("embed", 5), Node("logits", 5, 1)), r"position 5 is outside an input of seq_len=3 \(positions 0-2\)"),
        (("embed", "logits"), r"'embed' is not an attribution_patching.Node"),
        ((Node("embed", 0),), r"is not a \(writer, reader\) or \(writer, reader, score\) tuple"),
    ]
    for pair, message in cases:
        with pytest.raises(ComponentError, match=message):
            ic.from_transformer_lens([pair], random_model, 3)


def test_eap_graph_files_of_another_model_or_shape_are_refused(random_model, tmp_path):
    graph = eap_file(random_model, {})
    with pytest.raises(ComponentError, match=r"graph of another model: its cfg has n_heads=12, model .* has n_heads=4"):
        ic.from_eap_graph({**graph, "cfg": {**graph["cfg"], "n_heads": 12}}, random_model)
    with pytest.raises(ComponentError, match=r"parallel_attn_mlp=True"):
        ic.from_eap_graph({**graph, "cfg": {**graph["cfg"], "parallel_attn_mlp": True}}, random_model)
    with pytest.raises(ArgumentError, match=r"not an EAP-IG graph: missing edges"):
        ic.from_eap_graph({"cfg": graph["cfg"], "nodes": {}}, random_model)
    with pytest.raises(ComponentError, match=r"node 'm0' keeps only some of its neurons"):
        ic.from_eap_graph({**graph, "nodes": {"m0": {"in_graph": True, "neurons": [True, False]}}}, random_model)
    with pytest.raises(ArgumentError, match=r"missing.json' does not exist"):
        ic.from_eap_graph(str(tmp_path / "missing.json"), random_model)
    unscored = {**graph, "edges": {k: {"in_graph": v["in_graph"]} for k, v in graph["edges"].items()}}
    assert ic.from_eap_graph(unscored, random_model, pos_embed="omitted") == cc.Circuit.of((), ())
    with pytest.raises(ArgumentError, match=r"has no score: top_n and threshold select edges by score"):
        ic.from_eap_graph(unscored, random_model, top_n=3)
    with pytest.raises(ArgumentError, match=r"give one of them"):
        ic.from_eap_graph(graph, random_model, top_n=3, threshold=0.1)
    with pytest.raises(ArgumentError, match=r"top_n=10000 is not valid: the graph has 110 edges"):
        ic.from_eap_graph(graph, random_model, top_n=10000)


def test_what_a_format_cannot_hold_is_an_error_that_says_so(random_model):
    with pytest.raises(ComponentError, match=r"lists components \(L0H1 L1H2\).*node_edges"):
        ic.to_auto_circuit(cc.Circuit.parse("L0H1 L1H2"), random_model)
    with pytest.raises(ComponentError, match=r"edge L0H1 -> L1H2.k@3 is narrowed to positions: EAP-IG has no positions"):
        ic.to_eap_graph(cc.Circuit.parse("L0H1 -> L1H2.k@3"), random_model, pos_embed="omitted")
    with pytest.raises(ComponentError, match=r"auto-circuit has no positions unless given seq_len="):
        ic.to_auto_circuit(cc.Circuit.parse("L0H1 -> L1H2.k@3"), random_model)
    with pytest.raises(ArgumentError, match=r"'A0.1->A1.2.K' is at token position 2: give seq_len="):
        ic.from_auto_circuit([("A0.1->A1.2.K", 2)], random_model)
    with pytest.raises(ComponentError, match=r"score for edge pos_embed -> logits has no place in an EAP-IG graph"):
        ic.to_eap_graph(cc.Circuit.parse("L0H1 -> L1H2.k"), random_model, pos_embed="omitted", scores={"pos_embed -> logits": 1.0})
    with pytest.raises(ComponentError, match=r"layer 5 does not exist"):
        ic.to_transformer_lens(cc.Circuit.parse("L0H1 -> L5H2.k"), random_model, 3, pos_embed="omitted")
    with pytest.raises(ArgumentError, match=r"pos_embed='none' is not valid: use 'kept'.*or 'omitted'"):
        ic.from_transformer_lens([], random_model, 3, pos_embed="none")
    with pytest.raises(ArgumentError, match=r"seq_len=0 is not valid"):
        ic.to_transformer_lens(cc.Circuit.parse("L0H1 -> L1H2.k"), random_model, 0)


def test_an_attention_layer_sender_is_written_head_by_head(random_model):
    assert ic.to_auto_circuit(cc.Circuit.parse("L0.attn -> L1H1.v"), random_model) == [f"A0.{h}->A1.1.V" for h in range(4)]


def test_interchange_is_a_lazy_attribute_of_the_package():
    assert cc.interchange is ic
