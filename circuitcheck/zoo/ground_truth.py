"""Ground truth of a planted model, measured exhaustively with plain TransformerLens hooks.

Nothing here uses circuitcheck's engine or checks: every number comes from
``model.run_with_hooks`` with hand-written resample-ablation hooks, so the
planted models' cards are an independent reference for circuitcheck's own
measurements (tests compare the two) and for its test-power benchmark.

Definitions (DESIGN.md, resample ablation on ``tasks.induction``'s corrupted
inputs; the metric is the mean log-probability of the correct next token over
the second copy, computed here from the logits):

- m(X): the mean metric when only the components X run intact and every other
  head output (``hook_z``) and MLP output (``hook_mlp_out``) takes its value on
  the corrupted input; M is every component, ∅ none.
- necessity drop(C) = (m(M) - m(M\\C)) / (m(M) - m(∅)); recovery(C) =
  (m(C) - m(∅)) / (m(M) - m(∅)).
- leave-one-out contribution(v) = recovery(C) - recovery(C\\{v}); IOI
  contribution(v) = max over K ⊆ C\\{v} of recovery(C\\K) - recovery(C\\(K+v)),
  over **every** K (circuitcheck searches K greedily); Shapley value of v
  among the players C, exact over every subset; incompleteness(C) = max over
  K ⊆ C of |recovery(C\\K) - recovery(M\\K)|.
- head scores: TransformerLens's own ``head_detector.detect_head`` ("mul"
  measure) on the default head-score prompts, decoded to text.
"""

from __future__ import annotations

import itertools
import math

import torch

#: The ground truth's task: many prompts, and a seed no test's default task uses.
N_PROMPTS = 256
SEED = 12345
SEQ_LEN = 20
#: Head-score input: circuitcheck's default head-score prompts (16 x 'BOS r r', r of 20 tokens, seed 0).
HEAD_PROMPTS, HEAD_HALF_LEN, HEAD_SEED = 16, 20, 0
HEAD_KINDS = {"previous_token": "previous_token_head", "duplicate_token": "duplicate_token_head",
              "induction": "induction_head"}
DECIMALS = 4


def components(model) -> list[str]:
    """Every head and MLP of the model, in layer order: ``L0H0 ... L0.mlp L1H0 ...``."""
    cfg = model.cfg
    names = []
    for layer in range(cfg.n_layers):
        names += [f"L{layer}H{h}" for h in range(cfg.n_heads)]
        if not cfg.attn_only:
            names.append(f"L{layer}.mlp")
    return names


def _parse(name: str) -> tuple[int, int | None]:
    layer, _, rest = name[1:].partition("H") if "H" in name else (name[1:].split(".")[0], "", None)
    if rest is None:
        return int(layer), None
    return int(layer), int(rest)


class Measurer:
    """m(X) for sets of kept components, by plain hooks, memoised."""

    def __init__(self, model, clean: torch.Tensor, corrupt: torch.Tensor, first: int):
        self.model, self.clean, self.corrupt, self.first = model, clean, corrupt, first
        self.all = components(model)
        with torch.no_grad():
            _, cache = model.run_with_cache(corrupt)
        self.corrupted = {}
        for name in self.all:
            layer, head = _parse(name)
            if head is None:
                self.corrupted[name] = cache[f"blocks.{layer}.hook_mlp_out"].clone()
            else:
                self.corrupted[name] = cache[f"blocks.{layer}.attn.hook_z"][:, :, head].clone()
        self._memo: dict[frozenset, float] = {}

    def metric(self, logits: torch.Tensor) -> float:
        """Mean log-prob of the correct next token at positions first..-2 (predicting first+1..)."""
        logprobs = logits[:, self.first:-1].float().log_softmax(-1)
        target = self.clean[:, self.first + 1:]
        return float(logprobs.gather(-1, target[..., None]).mean())

    def m(self, kept) -> float:
        """The mean metric with only ``kept`` intact (a set of component names)."""
        kept = frozenset(kept)
        if kept not in self._memo:
            hooks, heads = [], {}
            for name in self.all:
                if name in kept:
                    continue
                layer, head = _parse(name)
                if head is None:
                    hooks.append((f"blocks.{layer}.hook_mlp_out", lambda x, hook, v=self.corrupted[name]: v))
                else:
                    heads.setdefault(layer, []).append(head)
            for layer, ablated in heads.items():  # one hook per layer: every ablated head's z from the corrupted run
                def patch(z, hook, ablated=ablated, v=torch.stack([self.corrupted[f"L{layer}H{h}"] for h in ablated], 2)):
                    z = z.clone()
                    z[:, :, ablated] = v
                    return z
                hooks.append((f"blocks.{layer}.attn.hook_z", patch))
            with torch.no_grad():
                self._memo[kept] = self.metric(self.model.run_with_hooks(self.clean, fwd_hooks=hooks))
        return self._memo[kept]

    @property
    def full(self) -> float:
        return self.m(self.all)

    @property
    def empty(self) -> float:
        return self.m(())

    def recovery(self, kept) -> float:
        return (self.m(kept) - self.empty) / (self.full - self.empty)

    def drop(self, removed) -> float:
        return (self.full - self.m(set(self.all) - set(removed))) / (self.full - self.empty)


def _subsets(items):
    for r in range(len(items) + 1):
        yield from itertools.combinations(items, r)


def circuit_truth(measure: Measurer, circuit: list[str]) -> dict:
    """Recovery, necessity, every minimality definition and incompleteness of one circuit, exhaustively."""
    C = list(circuit)
    rec = measure.recovery
    loo, ioi, shapley = {}, {}, {}
    n = len(C)
    for v in C:
        rest = [u for u in C if u != v]
        loo[v] = rec(C) - rec(rest)
        best, best_k = -math.inf, ()
        for K in _subsets(rest):
            keep = [u for u in C if u not in K]
            value = rec(keep) - rec([u for u in keep if u != v])
            if value > best + 1e-12:
                best, best_k = value, K
        ioi[v] = (best, " ".join(best_k))
        total = 0.0
        for S in _subsets(rest):  # Shapley: v joins S
            weight = math.factorial(len(S)) * math.factorial(n - len(S) - 1) / math.factorial(n)
            total += weight * (rec(list(S) + [v]) - rec(list(S)))
        shapley[v] = total
    worst, worst_k = -1.0, ()
    for K in _subsets(C):
        if not K:
            continue
        gap = abs(rec([u for u in C if u not in K]) - rec([u for u in measure.all if u not in K]))
        if gap > worst:
            worst, worst_k = gap, K
    r = lambda x: round(float(x), DECIMALS)  # noqa: E731
    return {
        "components": " ".join(C),
        "recovery": r(rec(C)),
        "faithfulness_error": r(abs(1 - rec(C))),
        "drop": r(measure.drop(C)),
        "leave_one_out": {v: r(loo[v]) for v in C},
        "ioi": {v: {"contribution": r(ioi[v][0]), "K": ioi[v][1]} for v in C},
        "shapley": {v: r(shapley[v]) for v in C},
        "incompleteness": r(worst),
        "worst_k": " ".join(worst_k),
    }


def head_scores(model) -> dict[str, list[list[float]]]:
    """Every head's previous-token, duplicate-token and induction score by TransformerLens's head detector."""
    from transformer_lens.head_detector import detect_head

    from ..model.inputs import repeated_random_tokens

    tokens = repeated_random_tokens(model, n_prompts=HEAD_PROMPTS, half_len=HEAD_HALF_LEN, seed=HEAD_SEED)
    texts = [model.tokenizer.decode(row[1:].tolist()) for row in tokens]  # detect_head prepends BOS itself
    scores = {}
    for kind, detector in HEAD_KINDS.items():
        per_prompt = [detect_head(model, text, detector, exclude_bos=True, error_measure="mul") for text in texts]
        mean = torch.stack([s.float() for s in per_prompt]).mean(0)
        scores[kind] = [[round(float(v), DECIMALS) for v in row] for row in mean]
    return scores


def measurer(model, n_prompts: int = N_PROMPTS, seed: int = SEED) -> Measurer:
    """A :class:`Measurer` on ``tasks.induction(model, n_prompts, seq_len=20, seed)``'s inputs."""
    from ..model import tasks

    task = tasks.induction(model, n_prompts=n_prompts, seq_len=SEQ_LEN, seed=seed)
    return Measurer(model, task.clean, task.corrupt, first=task.clean.shape[1] - SEQ_LEN)


def measure(model, circuits: dict[str, str], true_circuit: str) -> dict:
    """The card's ground truth: gap, every component's necessity, named circuits, one-swap neighbours, head scores."""
    meas = measurer(model)
    r = lambda x: round(float(x), DECIMALS)  # noqa: E731
    true = true_circuit.split()
    outside = [c for c in meas.all if c not in true]
    swaps = {}
    for member in true:
        for other in outside:
            swapped = [other if c == member else c for c in true]
            swaps[f"{member} -> {other}"] = r(meas.recovery(swapped))
    return {
        "task": f"tasks.induction(model, n_prompts={N_PROMPTS}, seq_len={SEQ_LEN}, seed={SEED}); resample ablation",
        "method": "plain TransformerLens hooks (circuitcheck.zoo.ground_truth), every subset enumerated",
        "m_full": r(meas.full),
        "m_empty": r(meas.empty),
        "necessity": {c: r(meas.drop([c])) for c in meas.all},
        "circuits": {name: circuit_truth(meas, text.split()) for name, text in circuits.items()},
        "one_swap_recovery": swaps,
        "head_scores": head_scores(model),
    }


#: A claim whose true value is within this of its threshold is "borderline": the card records it, the
#: power benchmark leaves it out (no finite sample can be asked to decide it). Contributions are
#: differences of recoveries with a threshold of 0.05, so their margin is smaller.
MARGIN = 0.03
CONTRIBUTION_MARGIN = 0.02


def _defaults() -> dict[str, float]:
    from ..claims.completeness import DEFAULT_MAX_INCOMPLETENESS
    from ..claims.faithfulness import DEFAULT_MAX_ERROR
    from ..claims.heads import DEFAULT_MIN_SCORE

    return {"min_score": DEFAULT_MIN_SCORE, "min_drop": 0.5, "min_recovery": 0.8, "min_contribution": 0.05,
            "max_incompleteness": DEFAULT_MAX_INCOMPLETENESS, "max_error": DEFAULT_MAX_ERROR}


def claims(truth: dict) -> list[dict]:
    """Every claim the card states about the model at circuitcheck's default thresholds, with its truth.

    Each claim: ``kind``, ``args`` (what the check takes), ``claim`` (words), ``value`` (the true
    value: for minimality the smallest member's contribution), ``threshold`` ("min_drop >= 0.5"), ``true``,
    and ``borderline`` (true value within :data:`MARGIN`, for contributions :data:`CONTRIBUTION_MARGIN`, of the threshold).
    """
    d = _defaults()
    out = []

    def add(kind, args, words, value, key):
        limit = d[key]
        holds = value >= limit if key.startswith("min") else value <= limit
        out.append({"kind": kind, "args": args, "claim": words, "value": round(float(value), DECIMALS),
                    "threshold": f"{key} {'>=' if key.startswith('min') else '<='} {limit:g}", "true": bool(holds),
                    "borderline": bool(abs(value - limit) < (CONTRIBUTION_MARGIN if key == "min_contribution" else MARGIN))})

    for kind, table in truth["head_scores"].items():
        for layer, row in enumerate(table):
            for head, score in enumerate(row):
                add(f"{kind}_head", {"layer": layer, "head": head}, f"L{layer}H{head} is a {kind.replace('_', '-')} head",
                    score, "min_score")
    for component, drop in truth["necessity"].items():
        add("necessary", {"circuit": component}, f"{component} is necessary", drop, "min_drop")
    for name, c in truth["circuits"].items():
        comps = c["components"]
        add("necessary", {"circuit": comps}, f"{name} ({comps}) is necessary", c["drop"], "min_drop")
        add("sufficient", {"circuit": comps}, f"{name} is sufficient", c["recovery"], "min_recovery")
        add("faithful", {"circuit": comps}, f"{name} is faithful", c["faithfulness_error"], "max_error")
        add("complete", {"circuit": comps}, f"{name} is complete", c["incompleteness"], "max_incompleteness")
        if len(comps.split()) > 1:
            for method, values in (("leave-one-out", c["leave_one_out"]), ("shapley", c["shapley"]),
                                   ("ioi", {v: x["contribution"] for v, x in c["ioi"].items()})):
                weakest = min(values, key=values.get)
                add("minimal", {"circuit": comps, "method": method},
                    f"{name} is minimal ({method}; weakest {weakest})", values[weakest], "min_contribution")
    return out
