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
   attention results, which its native bridge does not offer); the ratio is of the fastest runs (min of the repeats).

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

BATCH, SEQ_LEN = 8, 16

FULL_CONFIG = dict(d_model=768, d_head=64, n_heads=12, n_layers=12, n_ctx=1024, d_vocab=50257, d_mlp=3072)
QUICK_CONFIG = dict(d_model=128, d_head=32, n_heads=4, n_layers=2, n_ctx=64, d_vocab=1000, d_mlp=512)

WORKLOADS = {
    # name: (circuitcheck sweep, TransformerLens function, axes)
    "resid_pre": ("resid_pre", tl_patching.get_act_patch_resid_pre, "layer x pos"),
    "head_out": ("head_out", tl_patching.get_act_patch_attn_head_out_all_pos, "layer x head"),
}


#: workloads that are not sweeps: name -> what is compared
OTHER_WORKLOADS = {"eap": "edge attribution of every edge and position"}


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
                    "eap_ratio": TARGET_EAP_RATIO},
        "workloads": results,
    }
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
