"""What noticing edited weights costs: the content checksum per engine call.

Run on demand (not part of CI):

    python benchmarks/bench_staleness.py            # zoo:induction-2l and a GPT-2-small-shaped model, cpu
    python benchmarks/bench_staleness.py --quick    # the zoo model only

For each model: the time of one full read of the weights (identity: pointers and
version counters; content: a checksum of every byte), and the time of a warm
suite of four checks (sufficiency, necessity, an induction-head score, the logit
lens) once cold, then warm with the content checks as shipped and with them
turned off (as if the weights were unchanged and unread), interleaved
so that a loaded machine slows both alike. The GPT-2-small-shaped model has
random weights (its claims mostly raise a gap error after the runs they need,
which still measures their cost).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import circuitcheck as cc  # noqa: E402
from circuitcheck import tasks  # noqa: E402
from circuitcheck.engine import session as session_module  # noqa: E402


def _tolerant(check, *args, **kwargs) -> None:
    try:
        check(*args, **kwargs)
    except cc.CircuitCheckError:
        pass  # random weights: no gap; the runs were made all the same


def _suite(model, task) -> None:
    two_layer = model.cfg.n_layers == 2
    _tolerant(cc.check_sufficient, "L0H2 L1H1 L1H3" if two_layer else "L9H6 L9H9 L10H0", model=model, task=task, min_recovery=0.5)
    _tolerant(cc.check_necessary, "L1H3" if two_layer else "L9H9", model=model, task=task, min_drop=0.1)
    _tolerant(cc.check_head, 1, 3, "induction", model=model, min_score=0.5)
    _tolerant(cc.check_logit_lens_converges_by, model.cfg.n_layers - 1, model=model, tokens=task.clean[:4])


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(label: str, model, task, repeats: int) -> None:
    session = session_module.session_of(model)
    shipped = session_module.ModelSession.content
    n_params = sum(p.numel() for p in model.parameters())
    identity = _best(session.identity, 5)
    content = _best(session.content, 5)
    before = session.content_checks
    cold = _best(lambda: _suite(model, task), 1)  # the first time: every run made
    cold_reads = session.content_checks - before
    timings = {"with": [], "without": []}
    reads = 0
    for _ in range(repeats):
        before = session.content_checks
        timings["with"].append(_best(lambda: _suite(model, task), 1))
        reads = session.content_checks - before
        session_module.ModelSession.content = lambda self: self._content  # as if unchanged, unread
        try:
            timings["without"].append(_best(lambda: _suite(model, task), 1))
        finally:
            session_module.ModelSession.content = shipped
    with_, without = min(timings["with"]), min(timings["without"])
    print(
        f"{label}: {n_params / 1e6:.1f}M parameters on {next(model.parameters()).device}; one identity read {identity * 1e3:.2f} ms, "
        f"one content read {content * 1e3:.1f} ms; cold suite of 4 checks {cold:.3f} s ({cold_reads} reads); "
        f"warm suite: {with_:.3f} s with content checks "
        f"({reads} reads), {without:.3f} s without (best of {repeats})"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the zoo model only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    zoo = cc.load_model("zoo:induction-2l", device="cpu")
    measure("zoo:induction-2l", zoo, tasks.induction(zoo, n_prompts=32), args.repeats)
    if not args.quick:
        from conftest import build_native

        gpt2 = build_native(n_layers=12, n_heads=12, d_model=768, d_vocab=50257, n_ctx=1024, seed=0)
        measure("GPT-2-small shape", gpt2, tasks.induction(gpt2, n_prompts=8, seq_len=20), max(2, args.repeats // 2))


if __name__ == "__main__":
    main()
