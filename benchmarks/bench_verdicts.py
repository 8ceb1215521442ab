"""Speed of the verdict claims on an IOI-sized circuit: necessity, sufficiency, minimality (three methods), completeness.

Run on demand (not part of CI):

    python benchmarks/bench_verdicts.py                        # GPT-2-small shape, 2 torch threads, cpu
    python benchmarks/bench_verdicts.py --quick                # tiny model: a smoke test in seconds
    python benchmarks/bench_verdicts.py --threads 2 --json out.json

The circuit is the IOI paper's 26 heads (name movers, backup and negative name
movers, S-inhibition, induction, duplicate-token and previous-token heads) on
a randomly initialised GPT-2-small-shaped model (12 x 12 heads, d_model 768),
8 prompts x 16 tokens. The weights are random, so the numbers mean nothing;
what is measured is the cost. The task's answer is the clean run's top-1 token
at the last position and its wrong answer the bottom-1 token, so the gap
m(M) - m(∅) is clearly non-zero.

The claims run in this order on one patcher, as a suite would: necessity,
sufficiency, leave-one-out, IOI-style (greedy: 26 components is above the
exact size), sampled Shapley and completeness. Each claim reuses the subsets
the earlier ones measured (claims/lattice.py); printed per claim: seconds,
the circuit subsets it used and how many it ran itself.

Target: the whole workload within 2 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import bench_patching as bp  # noqa: E402  (the same model and machine description)

from circuitcheck.claims import causal, completeness, minimality  # noqa: E402
from circuitcheck.model.tasks import from_tokens  # noqa: E402

TARGET_SECONDS = 120.0
IOI_HEADS = (
    "L9H9 L10H0 L9H6 "  # name movers
    "L10H10 L10H6 L10H2 L10H1 L11H2 L9H7 L9H0 L11H9 "  # backup name movers
    "L10H7 L11H10 "  # negative name movers
    "L7H3 L7H9 L8H6 L8H10 "  # S-inhibition
    "L5H5 L6H9 L5H8 L5H9 "  # induction
    "L0H1 L0H10 L3H0 "  # duplicate token
    "L2H2 L4H11"  # previous token
)
QUICK_HEADS = "L0H0 L0H1 L0H2 L0H3 L1H0 L1H1 L1H2 L1H3"


def build_task(model, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    d_vocab = model.cfg.d_vocab
    clean = torch.randint(0, d_vocab, (bp.BATCH, bp.SEQ_LEN), generator=gen)
    corrupt = torch.randint(0, d_vocab, (bp.BATCH, bp.SEQ_LEN), generator=gen)
    with torch.no_grad():
        last = model(clean)[:, -1]
    return from_tokens(clean, corrupt, answers=last.argmax(-1), wrong_answers=last.argmin(-1))


def workload(circuit: str) -> list[tuple[str, object, dict]]:
    return [
        ("necessity", causal.check_necessary, {"min_drop": 0.5}),
        ("sufficiency", causal.check_sufficient, {"min_recovery": 0.8}),
        ("minimality (leave-one-out)", minimality.check_minimal, {"method": "leave-one-out"}),
        ("minimality (ioi, greedy)", minimality.check_minimal, {"method": "ioi"}),
        ("minimality (shapley, sampled)", minimality.check_minimal, {"method": "shapley"}),
        ("completeness (greedy)", completeness.check_complete, {}),
    ]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2: the target's 2 cores)")
    parser.add_argument("--quick", action="store_true", help="tiny model and an 8-head circuit: a smoke test")
    parser.add_argument("--max-batch", type=int, default=None)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    model = bp.build_model(args.quick, args.device)
    task = build_task(model)
    circuit = QUICK_HEADS if args.quick else IOI_HEADS
    patcher = causal.get_patcher(model)  # the patcher every claim on this model shares (as in a test session)
    patcher.progress = False
    if args.max_batch:
        patcher.max_batch = args.max_batch
    info = bp.machine(args.device)
    print("circuitcheck verdict claims on an IOI-sized circuit")
    print(f"  machine : {info['device_name']}")
    print(f"  model   : {'QUICK' if args.quick else 'GPT-2-small shape'} (random init); {bp.BATCH} prompts x {bp.SEQ_LEN} tokens; "
          f"circuit of {len(circuit.split())} heads; max_batch {patcher.max_batch}")
    rows = []
    start_all = time.perf_counter()
    for name, check, kwargs in workload(circuit):
        before_passes = patcher.forward_passes
        start = time.perf_counter()
        result = check(circuit, model=model, task=task, **kwargs)
        seconds = time.perf_counter() - start
        runs = next((n for n in result.notes if n.startswith("runs: ")), "")
        rows.append({"claim": name, "seconds": seconds, "forward_chunks": patcher.forward_passes - before_passes,
                     "runs": runs, "value": result.value, "passed": result.passed})
        print(f"  {name:32s} {seconds:7.2f} s  {patcher.forward_passes - before_passes:4d} chunks  {runs}")
    total = time.perf_counter() - start_all
    met = total <= TARGET_SECONDS
    print(f"total: {total:.1f} s for the six claims (target <= {TARGET_SECONDS:.0f} s on 2 CPU cores: {'met' if met else 'NOT met'})")
    report = {"machine": info, "quick": args.quick, "circuit": circuit, "batch": bp.BATCH, "seq_len": bp.SEQ_LEN,
              "claims": rows, "total_seconds": total, "target_seconds": TARGET_SECONDS}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return report


if __name__ == "__main__":
    main()
