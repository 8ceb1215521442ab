"""Speed: circuitcheck's batched Patcher vs TransformerLens's one-forward-per-patch patching.

Run on demand (not part of CI):

    python benchmarks/bench_patching.py                 # GPT-2-small shape, cuda if available
    python benchmarks/bench_patching.py --quick         # tiny model: a smoke test in seconds
    python benchmarks/bench_patching.py --device cpu --threads 2 --repeats 1 --max-batch 128 --json out.json

Workloads, each computed both ways on the same model and task:

1. ``resid_pre`` layer x position sweep:
   ``Patcher.sweep(task, "resid_pre").mean`` vs ``transformer_lens.patching.get_act_patch_resid_pre``;
2. head-output layer x head sweep:
   ``Patcher.sweep(task, "head_out").mean`` vs ``transformer_lens.patching.get_act_patch_attn_head_out_all_pos``;
3. ``eap``: edge attribution of every edge at every position,
   ``circuitcheck.attribution_sweep(model, task, method="eap").position_mean`` vs
   ``transformer_lens.tools.analysis.attribution_patching.attribution_patch(..., EdgeAttributionConfig(granularity="edge"))``,
   on a GPT-2 of the same shape in the Hugging Face architecture (TransformerLens's edge attribution needs per-head
   attention results, which its native bridge does not offer); the ratio is of the fastest runs (min of the repeats);
4. ``edge_circuit``: sufficiency (recovery under resample ablation of every other edge) of the top-300 (edge, position)
   pairs by |EAP score|, ``circuitcheck.check_sufficient(circuit)`` vs TransformerLens's
   ``tools.analysis.attribution_patching.faithfulness`` once per example (it measures one pair at a time), on the
   eap workload's model and its first ``--edge-examples`` prompt pairs answered by the clean run's top and bottom
   token; and a faithfulness curve of 8 nested top-n circuits, one batched ``Patcher.run`` vs ``faithfulness`` once
   per circuit and example. Ratios of medians; recovery is a ratio of means over examples on both sides.

Both sides pay for their own clean (and corrupted) runs inside the timed region:
a fresh ``Patcher`` per repeat, and ``model.run_with_cache(clean)`` per TransformerLens repeat.

Targets: max abs difference <= 1e-4; ratio (TL time / circuitcheck time) >= 1.1x on
2 CPU cores and >= 20x on one H100 for the general path; >= 3x on 2 CPU cores and >= 50x
on one H100 for the fast path.

``--profile`` also prints where the fast path's time goes (torch.profiler, top operators).
"""

from __future__ import annotations

import os

# TransformerLens's get_act_patch_* draw tqdm bars; keep them off the timings.
os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Sequence  # noqa: E402

import numpy as np  # noqa: E402

import torch  # noqa: E402
import transformer_lens  # noqa: E402
import transformer_lens.model_bridge.sources.native  # noqa: E402,F401  (attaches boot_native)
import transformer_lens.patching as tl_patching  # noqa: E402
from transformer_lens.config import TransformerBridgeConfig  # noqa: E402
from transformer_lens.model_bridge import TransformerBridge  # noqa: E402

import circuitcheck.engine.fastpath  # noqa: E402
import circuitcheck.engine.patcher as cc_patcher  # noqa: E402
from circuitcheck.engine.patcher import Patcher  # noqa: E402
from circuitcheck.model.tasks import from_tokens  # noqa: E402

TARGET_MAX_DIFF = 1e-4
TARGET_RATIO_CPU = 1.1  # general path, on 2 CPU cores
TARGET_RATIO_H100 = 20.0  # general path, on one H100
TARGET_FAST_CPU = 3.0  # fast path, on 2 CPU cores
TARGET_FAST_H100 = 50.0  # fast path, on one H100
TARGET_EAP_RATIO = 1.0  # EAP: at least TransformerLens's speed, with the same numbers
TARGET_EDGE_RATIO = 5.0  # edge circuit sufficiency: at least 5x TransformerLens's faithfulness, on 2 CPU cores

#: edge_circuit: the circuit's (edge, position) pairs, the curve's nested circuits, and the prompt pairs.
EDGE_CIRCUIT_EDGES = 300
EDGE_CURVE_CIRCUITS = 8
# TransformerLens's faithfulness takes about a minute per example and circuit on the full model on 2 cores
# (a Python loop over the ~520k ablated edges, in 5 ablated forwards): 2 examples keep the run near 20 minutes.
EDGE_EXAMPLES = 2

BATCH, SEQ_LEN = 8, 16

FULL_CONFIG = dict(d_model=768, d_head=64, n_heads=12, n_layers=12, n_ctx=1024, d_vocab=50257, d_mlp=3072)
QUICK_CONFIG = dict(d_model=128, d_head=32, n_heads=4, n_layers=2, n_ctx=64, d_vocab=1000, d_mlp=512)

WORKLOADS = {
    # name: (circuitcheck sweep, TransformerLens function, axes)
    "resid_pre": ("resid_pre", tl_patching.get_act_patch_resid_pre, "layer x pos"),
    "head_out": ("head_out", tl_patching.get_act_patch_attn_head_out_all_pos, "layer x head"),
}


#: workloads that are not sweeps: name -> what is compared
OTHER_WORKLOADS = {
    "eap": "edge attribution of every edge and position",
    "edge_circuit": "sufficiency of top-EAP edge circuits (one, and a curve of nested ones)",
}


def _no_tqdm(iterable=None, *args, **kwargs):
    return iterable


# Belt and braces: TQDM_DISABLE needs tqdm >= 4.66, and the env may have been set otherwise.
tl_patching.tqdm = _no_tqdm


def build_model(quick: bool, device: str):
    shape = QUICK_CONFIG if quick else FULL_CONFIG
    cfg = TransformerBridgeConfig(**shape, act_fn="gelu", normalization_type="LN", seed=0)
    model = TransformerBridge.boot_native(cfg)
    model.eval()
    model.requires_grad_(False)
    return model.to(device, print_details=False)


def build_task(d_vocab: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, d_vocab, (BATCH, SEQ_LEN), generator=gen)
    corrupt = torch.randint(0, d_vocab, (BATCH, SEQ_LEN), generator=gen)
    answers = torch.randint(0, d_vocab, (BATCH,), generator=gen)
    # A wrong answer always differs from the right one.
    wrong = (answers + torch.randint(1, d_vocab, (BATCH,), generator=gen)) % d_vocab
    return from_tokens(clean, corrupt, answers=answers, wrong_answers=wrong)


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _version(dist: str, module) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return getattr(module, "__version__", "unknown")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str) -> dict:
    info = {
        "device": str(device),
        "torch": torch.__version__,
        "transformer_lens": _version("transformer-lens", transformer_lens),
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": _cpu_name(),
    }
    if str(device).startswith("cuda"):
        info["device_name"] = torch.cuda.get_device_name(torch.device(device))
    else:
        info["device_name"] = f"CPU {info['cpu']} ({info['cpu_count']} cores visible, {info['torch_threads']} torch threads)"
    return info


def run_tl(model, task, tl_fn, device):
    clean = task.clean.to(device)
    corrupt = task.corrupt.to(device)

    def metric(logits):
        return task.metric(logits, task).mean()

    _, clean_cache = model.run_with_cache(clean)
    return tl_fn(model, corrupt, clean_cache, metric)


def run_cc(model, task, what, max_batch, fast=False):
    patcher = Patcher(model, max_batch=max_batch, progress=False, fast=fast)
    sweep = patcher.sweep(task, what)
    return sweep.mean, patcher.forward_passes, patcher.fast_passes, dict(patcher.fast_work)


def flops_fraction(model, work, n_variants):
    """The fast path's multiply-adds as a fraction of one full forward per variant (projections, MLPs, unembedding).

    Attention scores and the pattern-value product are left out of both (under 1% here).
    """
    cfg = model.cfg
    d, d_mlp = cfg.d_model, (0 if cfg.attn_only else cfg.d_mlp)
    per_token_layer = 4 * d * d + 2 * d * d_mlp  # Q, K, V, O and the MLP's two matrices
    per_logit_row = d * cfg.d_vocab
    tokens = n_variants * BATCH * SEQ_LEN
    full = tokens * (cfg.n_layers * per_token_layer + per_logit_row)
    d_kv = (getattr(cfg, "n_key_value_heads", None) or cfg.n_heads) * cfg.d_head
    fast = work["token_layers"] * per_token_layer + work["kv_only"] * 2 * d * d_kv + work["unembedded"] * per_logit_row
    return fast / full


def profile_fast(model, task, what, max_batch, rows=14):
    """The fast path's top operators by self time (one run, already verified)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        run_cc(model, task, what, max_batch, fast=None)
    key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def count_forwards(model, fn):
    """Run ``fn`` once, counting model forwards (calls into the first block); returns (result, count)."""
    calls = [0]

    def bump(module, inputs):
        calls[0] += 1

    handle = model.blocks[0].register_forward_pre_hook(bump)
    try:
        result = fn()
    finally:
        handle.remove()
    return result, calls[0]


def timed(model, fn, device, repeats):
    """Warm up once (counting forwards), then time ``repeats`` runs.

    Returns (median seconds, all seconds, last result, forwards per run).
    """
    result, forwards = count_forwards(model, fn)  # warm-up
    sync(device)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result, forwards


# EAP: edge attribution patching -----------------------------------------------------------


def build_hf_gpt2(quick: bool, device: str):
    """The benchmark's shape as a Hugging Face GPT-2 (LayerNorm, GELU MLPs, fused QKV), randomly initialised offline (seed 0)."""
    import tempfile

    from transformers import GPT2Config

    from circuitcheck.zoo.tokenizer import build_tokenizer

    shape = QUICK_CONFIG if quick else FULL_CONFIG
    config = GPT2Config(n_layer=shape["n_layers"], n_head=shape["n_heads"], n_embd=shape["d_model"], n_inner=shape["d_mlp"],
                        vocab_size=shape["d_vocab"], n_positions=shape["n_ctx"])
    with tempfile.TemporaryDirectory() as directory:
        config.save_pretrained(directory)  # the config only: load_weights=False initialises at random
        build_tokenizer().save_pretrained(directory)
        torch.manual_seed(0)
        model = TransformerBridge.boot_transformers(directory, device=device, load_weights=False)
    model.eval()
    model.requires_grad_(False)
    return model.to(device)


def run_tl_eap(model, task, device):
    """TransformerLens's edge attribution on the whole batch: {(edge label, position): mean over examples}.

    ``attribution_patch`` calls the metric on one example's logits, twice per example (its clean run,
    then its corrupted run), in order; the metric reads that example's answers.
    """
    import dataclasses

    from transformer_lens.tools.analysis.attribution_patching import EdgeAttributionConfig, attribution_patch

    ones = [dataclasses.replace(task, clean=task.clean[i : i + 1], corrupt=task.corrupt[i : i + 1],
                                answers=task.answers[i : i + 1], wrong_answers=task.wrong_answers[i : i + 1])
            for i in range(task.n_examples)]
    calls = [0]

    def metric(logits):
        one = ones[calls[0] // 2]
        calls[0] += 1
        return one.metric(logits, one)[0]

    with torch.enable_grad():
        result = attribution_patch(model, task.clean.to(device), task.corrupt.to(device), metric,
                                   EdgeAttributionConfig(granularity="edge"))
    if calls[0] != 2 * task.n_examples:
        raise RuntimeError(f"attribution_patch called the metric {calls[0]} times for {task.n_examples} examples, not twice each")
    return result


def _tl_edge_label(node) -> str:
    if node.kind == "embed":
        return "embed"
    if node.kind == "attn_head_out":
        return f"L{node.layer}H{node.head}"
    if node.kind in ("mlp_out", "mlp_in"):
        return f"L{node.layer}.mlp"
    if node.kind == "logits":
        return "logits"
    return f"L{node.layer}H{node.head}.{node.kind[0]}"  # q_input -> .q


def eap_workload(quick: bool, device: str, repeats: int) -> dict:
    import circuitcheck as cc

    model = build_hf_gpt2(quick, device)
    task = build_task(model.cfg.d_vocab)
    # TransformerLens's gradients flow from the parameters: on for both sides, so that they run the same model.
    model.requires_grad_(True)
    try:
        def run_cc_eap():
            return cc.attribution_sweep(model, task, method="eap", record=False)

        tl_time, tl_times, tl_out, tl_forwards = timed(model, lambda: run_tl_eap(model, task, device), device, repeats)
        cc_time, cc_times, cc_out, cc_forwards = timed(model, run_cc_eap, device, repeats)
    finally:
        model.requires_grad_(False)
    row = {label: i for i, label in enumerate(cc_out.index)}
    theirs = {(f"{_tl_edge_label(u)} -> {_tl_edge_label(v)}", u.position): score for (u, v), score in tl_out.edge_scores.items()}
    same_graph = {label for label, _ in theirs} == set(cc_out.index) and len(theirs) == cc_out.position_mean.numel()
    ours = cc_out.position_mean
    diff = max(abs(float(ours[row[label], pos]) - score) for (label, pos), score in theirs.items())
    largest = max(abs(score) for score in theirs.values())
    ratio = min(tl_times) / min(cc_times)
    result = {
        "model": (f"Hugging Face GPT-2 architecture, {model.cfg.n_layers}L x {model.cfg.n_heads}H, "
                  f"d_model {model.cfg.d_model} (random init)"),
        "edges": len(cc_out.index),
        "edge_positions": ours.numel(),
        "tl_seconds": min(tl_times),
        "tl_median_seconds": tl_time,
        "tl_all_seconds": tl_times,
        "tl_forwards": tl_forwards,
        "cc_seconds": min(cc_times),
        "cc_median_seconds": cc_time,
        "cc_all_seconds": cc_times,
        "cc_forwards": cc_forwards,
        "ratio": ratio,
        "max_abs_diff": diff,
        "largest_score": largest,
        "same_graph": same_graph,
        "target_met": ratio >= TARGET_EAP_RATIO and diff <= TARGET_MAX_DIFF and same_graph,
    }
    print(f"eap: edge attribution of {len(cc_out.index)} edges x {task.seq_len} positions ({result['model']}):")
    print(f"  TransformerLens : {min(tl_times):9.3f} s  (min of {repeats}; median {tl_time:.3f} s; {tl_forwards} forwards)")
    print(f"  circuitcheck    : {min(cc_times):9.3f} s  (min of {repeats}; median {cc_time:.3f} s; {cc_forwards} forwards)")
    print(f"  ratio           : {ratio:9.2f} x  (TL / circuitcheck, fastest runs)")
    print(f"  max abs diff    : {diff:9.2e}  (largest score {largest:.2e}; same graph: {same_graph})"
          f"  [{'ok' if diff <= TARGET_MAX_DIFF else 'ABOVE TARGET'} <= {TARGET_MAX_DIFF:g}]")
    print()
    return result


# Edge circuits: sufficiency of top-EAP edge circuits ---------------------------------------


def build_edge_task(model, examples: int):
    """The eap workload's first ``examples`` prompt pairs, answered by the clean run: right = its top-1 token, wrong = its bottom-1.

    The eap task's random answers leave m(clean) - m(corrupt) indistinguishable from zero
    (95% interval [-0.35, 0.13] on the quick model), which sufficiency refuses and which would
    make TransformerLens's recovered fraction noise over noise; the clean run's own top and
    bottom tokens give every example a clear gap, as in bench_verdicts.py.
    """
    base = build_task(model.cfg.d_vocab)
    if not 1 <= examples <= base.n_examples:
        raise ValueError(f"--edge-examples {examples} is not valid: use 1 to {base.n_examples} (the eap task's prompt pairs)")
    clean, corrupt = base.clean[:examples], base.corrupt[:examples]
    with torch.no_grad():
        last = model(clean)[:, -1]
    return from_tokens(clean, corrupt, answers=last.argmax(-1), wrong_answers=last.argmin(-1))


def curve_sizes(largest: int, count: int) -> list[int]:
    """``count`` nested circuit sizes from ``largest`` down by factors of sqrt(2), smallest first."""
    return sorted({max(1, round(largest * 2 ** (-k / 2))) for k in range(count)})


def top_edge_circuits(model, task, sizes: Sequence[int]):
    """Nested circuits of the top-n (edge, position) pairs by |EAP score| (circuitcheck's attribution_sweep), one per size.

    An edge at a position keeps the sender's write into the receiver at that position
    (``"L0H3 -> L1.mlp@15"``), as TransformerLens's ``top_edges(k)`` feeds ``faithfulness``.
    Ties keep the sweep's order (a stable sort), so the circuits are the same on every run.
    Returns (circuits, scores of the largest circuit's pairs in order).
    """
    import circuitcheck as cc

    model.requires_grad_(True)  # the sweep's gradients, as in the eap workload
    try:
        sweep = cc.attribution_sweep(model, task, method="eap", record=False)
    finally:
        model.requires_grad_(False)
    scores = sweep.position_mean
    n_pos = scores.shape[1]
    order = torch.argsort(scores.abs().flatten(), descending=True, stable=True)[: max(sizes)].tolist()
    pairs = [cc.Edge.parse(f"{sweep.index[i // n_pos]}@{i % n_pos}") for i in order]
    circuits = [cc.Circuit.of((), pairs[:n], name=f"top {n} EAP edges") for n in sizes]
    return circuits, [float(scores.flatten()[i]) for i in order]


def tl_edge_pairs(graph, circuit) -> list:
    """The circuit's edges as TransformerLens (writer, reader) node pairs, one per position (tests/test_edge_circuits.py's alignment).

    ``pos_embed`` edges are left out: TransformerLens's graph has no positional writer, and under
    resample ablation its value is the same on both inputs.
    """
    from transformer_lens.tools.analysis.attribution_patching import Node

    readers = {"q": "q_input", "k": "k_input", "v": "v_input"}
    pairs = []
    for sender, receiver, positions in graph.atoms(list(circuit.edges)):
        for p in positions if positions is not None else range(graph.seq_len):
            if sender[0] == "pos_embed":
                continue
            writer = (Node("embed", p) if sender[0] == "embed" else
                      Node("attn_head_out", p, sender[1], sender[2]) if sender[0] == "head" else Node("mlp_out", p, sender[1]))
            reader = (Node(readers[receiver[0]], p, receiver[1], receiver[2]) if receiver[0] in readers else
                      Node("mlp_in", p, receiver[1]) if receiver[0] == "mlp" else Node("logits", p, graph.n_layers - 1))
            pairs.append((writer, reader))
    return pairs


def _one_example(task, i: int):
    import dataclasses

    pick = lambda t: None if t is None else t[i : i + 1]  # noqa: E731
    return dataclasses.replace(task, clean=pick(task.clean), corrupt=pick(task.corrupt), answers=pick(task.answers),
                               wrong_answers=pick(task.wrong_answers))


def run_tl_faithfulness(model, task, pairs, device, examples=None):
    """TransformerLens's ``faithfulness`` once per example (it measures one pair at a time), resample ("corrupt") ablation.

    Returns ``[examples, 3]``: m(clean), m(corrupt) and the circuit's m(C) = m(corrupt) +
    recovered * (m(clean) - m(corrupt)), per example.
    """
    from transformer_lens.tools.analysis.attribution_patching import FaithfulnessConfig, faithfulness

    rows = []
    for i in range(task.n_examples) if examples is None else examples:
        one = _one_example(task, i)
        result = faithfulness(model, one.clean.to(device), one.corrupt.to(device), lambda logits, one=one: one.metric(logits, one).mean(),
                              pairs, FaithfulnessConfig(ablation="corrupt"))
        gap = result.full_metric - result.corrupt_metric
        rows.append((result.full_metric, result.corrupt_metric, result.corrupt_metric + result.recovered * gap))
    return np.array(rows)


def run_tl_core(model, task, pairs, device):
    """TransformerLens's ablate-outside forward without ``faithfulness``'s per-edge-class breakdown (its private steps, in its order).

    ``faithfulness`` also runs one more ablated forward per edge class the circuit touches
    (``edge_class_recovered``), which circuitcheck does not compute; this is the rest:
    the corrupted run's cache and graph, the writers' replacements, the clean run and one
    ablated forward per example. Returns ``[examples]`` m(C).
    """
    from transformer_lens.tools.analysis import attribution_patching as tl_ap

    n_layers = int(model.cfg.n_layers)
    hook_names = tl_ap._edge_hook_names(n_layers) + tl_ap._attn_write_hook_names(n_layers)
    kept = []
    for i in range(task.n_examples):
        one = _one_example(task, i)
        clean, corrupt = one.clean.to(device), one.corrupt.to(device)

        def metric(logits, one=one):
            return one.metric(logits, one).mean()

        with torch.no_grad(), tl_ap._edge_hook_flags(model):
            cache = tl_ap.cache_activation_and_gradient(model, corrupt, metric, names_filter=hook_names, compute_gradient=False)
            graph = tl_ap.enumerate_edges(model, cache)
            replacements = tl_ap.capture_writer_outputs(model, corrupt)
            float(metric(model(clean)))
            kept.append(float(metric(tl_ap._ablate_edges(model, clean, graph, pairs, replacements))))
    return np.array(kept)


class _OwnPatcher:
    """A test context that gives the checks one patcher of our making (so that every timed run pays for its own cached runs)."""

    def __init__(self, patcher):
        self.patcher = patcher

    def get_model(self):
        raise RuntimeError("the benchmark passes model= explicitly")

    def default_seed(self) -> int:
        return 0

    def get_task(self, model):
        return None

    def get_patcher(self, model):
        return self.patcher

    def record(self, result, tolerance=None):
        return None

    def record_sweep(self, sweep: dict) -> None:
        return None


def _recovery(full, empty, kept) -> float:
    """circuitcheck's recovery: a ratio of means over examples, (m(C) - m(∅)) / (m(M) - m(∅))."""
    return float((np.mean(kept) - np.mean(empty)) / (np.mean(full) - np.mean(empty)))


def _receiver_classes(circuit) -> dict:
    """How many of the circuit's edges read into each of TransformerLens's edge classes (its extra forwards: one per class)."""
    classes: dict[str, int] = {}
    for edge in circuit.edges:
        r = edge.receiver
        name = "into_qk" if r.port in ("q", "k") else "into_v" if r.port == "v" else "into_mlp" if r.kind == "mlp" else "into_logits"
        classes[name] = classes.get(name, 0) + 1
    return classes


def edge_circuit_workload(quick: bool, device: str, repeats: int, examples: int = EDGE_EXAMPLES,
                          n_edges: int = EDGE_CIRCUIT_EDGES, n_circuits: int = EDGE_CURVE_CIRCUITS) -> dict:
    """Sufficiency of a top-EAP edge circuit, and of a faithfulness curve of nested ones: TransformerLens's faithfulness vs circuitcheck."""
    import circuitcheck as cc
    from circuitcheck.engine import edges as cc_edges
    from circuitcheck.model import context

    load_start = os.getloadavg()
    model = build_hf_gpt2(quick, device)
    task = build_edge_task(model, examples)
    sizes = curve_sizes(n_edges, n_circuits)
    circuits, scores = top_edge_circuits(model, task, sizes)
    circuit = circuits[-1]  # the largest: top n_edges
    graph = cc_edges.Graph.of(model, task.seq_len)
    tl_pairs = [tl_edge_pairs(graph, c) for c in circuits]
    # TransformerLens's graph: circuitcheck's less the positional embedding's edges, at every position.
    tl_graph_edges = sum(edge.sender.kind != "pos_embed" for edge in graph.edges()) * task.seq_len

    # circuitcheck, one circuit: check_sufficient on a fresh patcher per run (its cached clean and corrupted runs count).
    holder = {}

    def run_cc_single():
        holder["patcher"] = patcher = Patcher(model, progress=False)
        with context.active(_OwnPatcher(patcher)):
            return cc.check_sufficient(circuit, model=model, task=task, ablation="resample", min_recovery=0.0, seed=0)

    sync(device)
    start = time.perf_counter()
    run_cc_single()  # first use: verifies the fast path and the receivers' recomputation on this model
    sync(device)
    cc_first = time.perf_counter() - start
    cc_time, cc_times, cc_result, cc_forwards = timed(model, run_cc_single, device, repeats)
    cc_chunks, cc_fast_chunks = holder["patcher"].forward_passes, holder["patcher"].fast_passes

    # circuitcheck, the curve: every circuit and ∅ as variants of one batched Patcher.run.
    def run_cc_curve():
        holder["curve"] = patcher = Patcher(model, progress=False)
        values = patcher.run(task, [graph.keep(c.edges).patches() for c in circuits] + [graph.keep().patches()], ablation="resample")
        runs = patcher.runs(task)
        return values.numpy().astype(np.float64), runs.clean_metric.numpy().astype(np.float64)

    cc_curve_time, cc_curve_times, (cc_values, cc_full), cc_curve_forwards = timed(model, run_cc_curve, device, repeats)
    cc_curve_chunks = holder["curve"].forward_passes

    # circuitcheck, the curve one check at a time (one patcher shared by the checks, as in a test session).
    def run_cc_one_by_one():
        patcher = Patcher(model, progress=False)
        with context.active(_OwnPatcher(patcher)):
            return [cc.check_sufficient(c, model=model, task=task, ablation="resample", min_recovery=0.0, seed=0).value
                    for c in circuits]

    cc_each_time, cc_each_times, cc_each_values, _ = timed(model, run_cc_one_by_one, device, repeats)

    # TransformerLens, after circuitcheck (seconds, not minutes): faithfulness once per circuit and example. Each
    # repeat measures every circuit of the curve, the single circuit first: its time is the single-circuit measurement.
    # No warm-up run: faithfulness keeps nothing between calls, and one call on the full model takes about a minute
    # per example.
    tl_circuit_times, tl_curve_times, tl_forwards = [], [], None
    for _ in range(repeats):
        per_circuit = []
        tl_rows = []
        for pairs in reversed(tl_pairs):  # the single circuit first
            sync(device)
            start = time.perf_counter()
            if tl_forwards is None:
                rows, forwards = count_forwards(model, lambda: run_tl_faithfulness(model, task, pairs, device))
                tl_forwards = forwards // task.n_examples
            else:
                rows = run_tl_faithfulness(model, task, pairs, device)
            sync(device)
            per_circuit.append(time.perf_counter() - start)
            tl_rows.append(rows)
            print(f"  (TransformerLens faithfulness of {len(pairs)} edges: {per_circuit[-1]:.1f} s)")  # progress: minutes per circuit
        tl_circuit_times.append(per_circuit[0])
        tl_curve_times.append(sum(per_circuit))
    tl_rows = tl_rows[::-1]  # smallest circuit first, as sizes
    start = time.perf_counter()
    tl_core = run_tl_core(model, task, tl_pairs[-1], device)
    tl_core_seconds = time.perf_counter() - start

    # The numbers: per-example metrics and per-circuit recoveries, both ways.
    tl_recoveries = [_recovery(rows[:, 0], rows[:, 1], rows[:, 2]) for rows in tl_rows]
    cc_empty = cc_values[-1]
    cc_recoveries = [_recovery(cc_full, cc_empty, kept) for kept in cc_values[:-1]]
    metric_diff = max(float(np.abs(cc_values[:-1] - np.stack([rows[:, 2] for rows in tl_rows])).max()),
                      float(np.abs(cc_full - tl_rows[-1][:, 0]).max()), float(np.abs(cc_empty - tl_rows[-1][:, 1]).max()))
    single_diff = abs(cc_result.value - tl_recoveries[-1])
    curve_diff = max(abs(a - b) for a, b in zip(cc_recoveries, tl_recoveries))
    each_diff = max(abs(a - b) for a, b in zip(cc_each_values, cc_recoveries))
    core_diff = float(np.abs(tl_core - tl_rows[-1][:, 2]).max())
    diff = max(single_diff, curve_diff, metric_diff)

    tl_time = statistics.median(tl_circuit_times)
    tl_curve_time = statistics.median(tl_curve_times)
    ratio = tl_time / cc_time
    curve_ratio = tl_curve_time / cc_curve_time
    classes = _receiver_classes(circuit)
    result = {
        "model": (f"Hugging Face GPT-2 architecture, {model.cfg.n_layers}L x {model.cfg.n_heads}H, "
                  f"d_model {model.cfg.d_model} (random init)"),
        "task": (f"the eap task's first {task.n_examples} prompt pairs ({task.seq_len} tokens); answer the clean run's top-1 token, "
                 "wrong answer its bottom-1; metric logit difference at the last position"),
        "examples": task.n_examples,
        "graph_edge_positions": tl_graph_edges,
        "circuit": f"top {len(circuit.edges)} (edge, position) pairs by |EAP score| (circuitcheck attribution_sweep, stable order)",
        "circuit_edges": len(circuit.edges),
        "circuit_receiver_classes": classes,
        "smallest_kept_score": abs(scores[-1]),
        "ablation": "resample (TransformerLens: 'corrupt'), every edge outside the circuit",
        "tl_seconds": tl_time,
        "tl_all_seconds": tl_circuit_times,
        "tl_forwards_per_example": tl_forwards,
        "tl_core_seconds": tl_core_seconds,
        "cc_seconds": cc_time,
        "cc_all_seconds": cc_times,
        "cc_first_use_seconds": cc_first,
        "cc_forwards": cc_forwards,
        "cc_patched_chunks": cc_chunks,
        "cc_fast_chunks": cc_fast_chunks,
        "ratio": ratio,
        "ratio_fastest": min(tl_circuit_times) / min(cc_times),
        "ratio_core": tl_core_seconds / cc_time,
        "tl_recovery": tl_recoveries[-1],
        "cc_recovery": cc_result.value,
        "cc_recovery_ci": [cc_result.ci_low, cc_result.ci_high],
        "max_abs_diff": diff,
        "max_abs_diff_recovery": single_diff,
        "max_abs_diff_metric": metric_diff,
        "tl_core_max_abs_diff_metric": core_diff,
        "curve": {
            "sizes": sizes,
            "tl_seconds": tl_curve_time,
            "tl_all_seconds": tl_curve_times,
            "cc_seconds": cc_curve_time,
            "cc_all_seconds": cc_curve_times,
            "cc_forwards": cc_curve_forwards,
            "cc_patched_chunks": cc_curve_chunks,
            "cc_one_check_per_circuit_seconds": cc_each_time,
            "cc_one_check_per_circuit_all_seconds": cc_each_times,
            "ratio": curve_ratio,
            "ratio_fastest": min(tl_curve_times) / min(cc_curve_times),
            "tl_recovery": tl_recoveries,
            "cc_recovery": cc_recoveries,
            "max_abs_diff": curve_diff,
            "one_check_per_circuit_max_abs_diff": each_diff,
        },
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
    }
    result["target_met"] = ratio >= TARGET_EDGE_RATIO and diff <= TARGET_MAX_DIFF
    ok = lambda d: "ok" if d <= TARGET_MAX_DIFF else "ABOVE TARGET"  # noqa: E731
    print(f"edge_circuit: sufficiency of the top {len(circuit.edges)} EAP (edge, position) pairs of {tl_graph_edges} "
          f"({tl_graph_edges // task.seq_len} edges x {task.seq_len} positions; {result['model']}; {task.n_examples} examples; receivers {classes}):")
    print(f"  TransformerLens : {tl_time:9.3f} s  (median of {repeats}; faithfulness once per example, "
          f"{tl_forwards} forwards each, {len(classes)} of them for its per-class breakdown)")
    print(f"  TL without the per-class breakdown: {tl_core_seconds:.3f} s (one run; max abs diff of m(C) {core_diff:.1e})")
    print(f"  circuitcheck    : {cc_time:9.3f} s  (median of {repeats}; check_sufficient on a fresh patcher, {cc_forwards} calls into "
          f"block 0, {cc_chunks} patched chunk(s), {cc_fast_chunks} fast); first use {cc_first:.3f} s")
    print(f"  ratio           : {ratio:9.2f} x  (TL / circuitcheck, medians; fastest runs {result['ratio_fastest']:.2f} x; "
          f"TL without its breakdown {result['ratio_core']:.2f} x)")
    print(f"  recovery        : TL {tl_recoveries[-1]:.6f}, circuitcheck {cc_result.value:.6f} [{cc_result.ci_low:.3f}, {cc_result.ci_high:.3f}]; "
          f"max abs diff {single_diff:.2e} (per-example metrics {metric_diff:.2e})  [{ok(max(single_diff, metric_diff))} <= {TARGET_MAX_DIFF:g}]")
    print(f"  curve of {len(sizes)} nested circuits ({', '.join(map(str, sizes))} edges):")
    print(f"    TransformerLens : {tl_curve_time:9.3f} s  (faithfulness per circuit and example: {len(sizes) * task.n_examples} calls)")
    print(f"    circuitcheck    : {cc_curve_time:9.3f} s  (one Patcher.run of {len(sizes) + 1} variants: {cc_curve_chunks} patched chunk(s)); "
          f"one check_sufficient per circuit {cc_each_time:.3f} s")
    print(f"    ratio           : {curve_ratio:9.2f} x  (fastest runs {result['curve']['ratio_fastest']:.2f} x)")
    print(f"    recoveries      : TL {', '.join(f'{r:.4f}' for r in tl_recoveries)}")
    print(f"                      cc {', '.join(f'{r:.4f}' for r in cc_recoveries)}")
    print(f"    max abs diff    : {curve_diff:9.2e}  [{ok(curve_diff)} <= {TARGET_MAX_DIFF:g}]; one check per circuit vs batched {each_diff:.1e}")
    print(f"  load average    : {', '.join(f'{x:.2f}' for x in load_start)} at the start, "
          f"{', '.join(f'{x:.2f}' for x in result['load_average']['end'])} at the end (1, 5, 15 min)")
    print()
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side per workload (median reported)")
    parser.add_argument("--max-batch", type=int, default=None,
                        help=f"rows per circuitcheck forward (default: the Patcher default, {cc_patcher.DEFAULT_MAX_BATCH})")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave torch's choice)")
    parser.add_argument("--quick", action="store_true", help="tiny model (2 layers, d_model 128, vocab 1000): a smoke test")
    parser.add_argument("--workloads", nargs="+", choices=[*WORKLOADS, *OTHER_WORKLOADS], default=[*WORKLOADS, *OTHER_WORKLOADS])
    parser.add_argument("--json", metavar="PATH", help="also write the numbers here")
    parser.add_argument("--profile", action="store_true", help="print the fast path's top operators (torch.profiler)")
    parser.add_argument("--edge-examples", type=int, default=EDGE_EXAMPLES,
                        help=f"edge_circuit: prompt pairs (default {EDGE_EXAMPLES}; TransformerLens takes about a minute per pair "
                             "and circuit on the full model on 2 CPU cores)")
    args = parser.parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # progress shows when piped to a file
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    device = args.device
    max_batch = args.max_batch or cc_patcher.DEFAULT_MAX_BATCH
    info = machine(device)
    on_gpu = device.startswith("cuda")

    print("circuitcheck Patcher vs transformer_lens.patching")
    print(f"  machine : {info['device_name']}")
    print(f"  versions: torch {info['torch']}, transformer_lens {info['transformer_lens']}, python {info['python']}")
    shape = QUICK_CONFIG if args.quick else FULL_CONFIG
    print(f"  model   : {'QUICK ' if args.quick else 'GPT-2-small shape '}"
          f"{shape['n_layers']}L x {shape['n_heads']}H, d_model {shape['d_model']}, d_vocab {shape['d_vocab']} (random init)")
    print(f"  inputs  : {BATCH} prompts x {SEQ_LEN} tokens; max_batch {max_batch}; repeats {args.repeats} (median, after 1 warm-up)")
    print(f"  targets : max abs diff <= {TARGET_MAX_DIFF:g}; ratio general >= {TARGET_RATIO_CPU}x on 2 CPU cores, "
          f">= {TARGET_RATIO_H100:g}x on one H100; fast >= {TARGET_FAST_CPU:g}x / >= {TARGET_FAST_H100:g}x")
    print()

    start_all = time.perf_counter()
    if any(name in WORKLOADS for name in args.workloads):
        model = build_model(args.quick, device)
        task = build_task(model.cfg.d_vocab)

    results = {}
    for name in args.workloads:
        if name == "eap":
            results[name] = eap_workload(args.quick, device, args.repeats)
            continue
        if name == "edge_circuit":
            results[name] = edge_circuit_workload(args.quick, device, args.repeats, examples=args.edge_examples)
            continue
        what, tl_fn, axes = WORKLOADS[name]
        tl_time, tl_times, tl_out, tl_forwards = timed(model, lambda: run_tl(model, task, tl_fn, device), device, args.repeats)
        cc_time, cc_times, (cc_out, cc_patched, _, _), cc_forwards = timed(
            model, lambda: run_cc(model, task, what, args.max_batch, fast=False), device, args.repeats
        )
        # The fast path (circuitcheck.engine.fastpath), verified on first use: the warm-up run verifies
        # (against the general path) and is timed apart.
        circuitcheck.engine.fastpath.reset(model)
        sync(device)
        first_start = time.perf_counter()
        run_cc(model, task, what, args.max_batch, fast=None)
        sync(device)
        fp_first = time.perf_counter() - first_start
        fp_time, fp_times, (fp_out, fp_patched, fp_fast, fp_work), fp_forwards = timed(
            model, lambda: run_cc(model, task, what, args.max_batch, fast=None), device, args.repeats
        )
        fraction = flops_fraction(model, fp_work, tl_out.numel())
        diff = float((tl_out.detach().float().cpu() - cc_out.detach().float().cpu()).abs().max())
        fp_diff = float((tl_out.detach().float().cpu() - fp_out.detach().float().cpu()).abs().max())
        shape_ok = tuple(tl_out.shape) == tuple(cc_out.shape) == tuple(fp_out.shape)
        ratio = tl_time / cc_time
        fp_ratio = tl_time / fp_time
        n_patches = tl_out.numel()
        results[name] = {
            "axes": axes,
            "shape": list(cc_out.shape),
            "patches": n_patches,
            "tl_seconds": tl_time,
            "tl_all_seconds": tl_times,
            "tl_forwards": tl_forwards,
            "cc_seconds": cc_time,
            "cc_all_seconds": cc_times,
            "cc_forwards": cc_forwards,  # all forwards: patched chunks + cached clean/corrupted runs
            "cc_patched_forwards": cc_patched,
            "ratio": ratio,
            "max_abs_diff": diff,
            "fast_seconds": fp_time,
            "fast_all_seconds": fp_times,
            "fast_forwards": fp_forwards,  # block-0 calls: full forwards only (fast chunks skip block 0)
            "fast_patched_chunks": fp_patched,
            "fast_chunks": fp_fast,
            "fast_ratio": fp_ratio,
            "fast_first_use_seconds": fp_first,
            "fast_work": fp_work,
            "fast_flops_fraction": fraction,
            "fast_max_abs_diff": fp_diff,
            "shapes_match": shape_ok,
            "diff_ok": max(diff, fp_diff) <= TARGET_MAX_DIFF and shape_ok,
        }
        print(f"{name} sweep ({axes}, {n_patches} patches, shape {tuple(cc_out.shape)}):")
        print(f"  TransformerLens : {tl_time:9.3f} s  ({tl_forwards} forwards)")
        print(f"  circuitcheck    : {cc_time:9.3f} s  ({cc_forwards} forwards, {cc_patched} of them patched; max_batch {max_batch})")
        print(f"  cc fast path    : {fp_time:9.3f} s  ({fp_patched} patched chunks, {fp_fast} of them fast; "
              f"{fp_forwards} calls into block 0); first use, with verification: {fp_first:.3f} s")
        print(f"  fast path work  : {fp_work['token_layers']} token-layers (+{fp_work['kv_only']} keys/values only), "
              f"{fp_work['unembedded']} logit rows: "
              f"{fraction:.1%} of the multiply-adds of a full forward per patch (bound {1 / fraction:.2f}x)")
        print(f"  ratio           : {ratio:9.2f} x  (TL / circuitcheck general), {fp_ratio:.2f} x (TL / fast path)")
        if args.profile:
            print(profile_fast(model, task, what, args.max_batch))
        print(f"  max abs diff    : {diff:9.2e}  general, {fp_diff:.2e} fast  "
              f"[{'ok' if results[name]['diff_ok'] else 'ABOVE TARGET'} <= {TARGET_MAX_DIFF:g}]"
              + ("" if shape_ok else f"  SHAPES DIFFER: TL {tuple(tl_out.shape)}"))
        print()

    target = TARGET_RATIO_H100 if on_gpu else TARGET_RATIO_CPU
    fast_target = TARGET_FAST_H100 if on_gpu else TARGET_FAST_CPU
    target_note = ("one H100" if on_gpu else "2 CPU cores")
    if any(n in WORKLOADS for n in results):
        print(f"ratio targets for {target_note}: general >= {target}x, fast >= {fast_target}x; "
              + ", ".join(f"{n} {r['ratio']:.2f}x general ({'met' if r['ratio'] >= target else 'NOT met'}) / "
                          f"{r['fast_ratio']:.2f}x fast ({'met' if r['fast_ratio'] >= fast_target else 'NOT met'})"
                          for n, r in results.items() if n in WORKLOADS))
    if "eap" in results:
        r = results["eap"]
        print(f"eap target: >= {TARGET_EAP_RATIO:g}x with max abs diff <= {TARGET_MAX_DIFF:g}: {r['ratio']:.2f}x, "
              f"{r['max_abs_diff']:.1e} ({'met' if r['target_met'] else 'NOT met'})")
    if "edge_circuit" in results:
        r = results["edge_circuit"]
        print(f"edge_circuit target: >= {TARGET_EDGE_RATIO:g}x TransformerLens's faithfulness with max abs diff <= {TARGET_MAX_DIFF:g}: "
              f"{r['ratio']:.2f}x, {r['max_abs_diff']:.1e} ({'met' if r['target_met'] else 'NOT met'}); "
              f"curve of {len(r['curve']['sizes'])} circuits {r['curve']['ratio']:.2f}x")
    print(f"total wall time: {time.perf_counter() - start_all:.1f} s (incl. model build and warm-ups)")

    report = {
        "machine": info,
        "quick": args.quick,
        "model": shape,
        "batch": BATCH,
        "seq_len": SEQ_LEN,
        "max_batch": max_batch,
        "repeats": args.repeats,
        "targets": {"max_abs_diff": TARGET_MAX_DIFF, "ratio_2_cpu_cores": TARGET_RATIO_CPU, "ratio_h100": TARGET_RATIO_H100,
                    "fast_ratio_2_cpu_cores": TARGET_FAST_CPU, "fast_ratio_h100": TARGET_FAST_H100,
                    "eap_ratio": TARGET_EAP_RATIO, "edge_circuit_ratio": TARGET_EDGE_RATIO},
        "workloads": results,
    }
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
