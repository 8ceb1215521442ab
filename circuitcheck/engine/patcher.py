"""The batched intervention engine.

Many interventions ("variants") run in one forward pass: the base input is
repeated once per variant along the batch dimension, and one hook per hook
point writes each variant's slice. Variants are chunked so that no forward
holds more than ``max_batch`` rows, and a chunk that runs out of memory is
halved and retried.

An intervention is a list of :class:`Patch` es. A patch replaces part of one
activation (some positions, some heads) with the same part of a source:

- ``"clean"`` / ``"corrupt"``: the task's cached clean / corrupted run;
- ``"ablated"``: the ablation's replacement (resample, mean, zero, noise...);
- an explicit tensor ``[batch, ...]`` (path patching computes these).

Clean and corrupted runs are cached per task. Every batched result equals the
one-forward-per-patch result (tested against ``transformer_lens.patching``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from . import ablation as _ablation
from . import fastpath as _fastpath
from ..model.components import Component, Edge, model_label
from ..model.context import require_eval
from ..errors import CircuitCheckError, ComponentError
from ..model.tasks import Task

DEFAULT_MAX_BATCH = 256

_HEAD_HOOKS = ("hook_z", "hook_q", "hook_k", "hook_v", "hook_result")
_PATTERN_HOOKS = ("hook_pattern", "hook_attn_scores")


def index_dims(hook: str) -> str:
    """How a hook's activation is indexed past the batch: ``"ph"`` (pos, head), ``"hqk"`` or ``"p"``."""
    last = hook.rsplit(".", 1)[-1]
    if last in _HEAD_HOOKS:
        return "ph"
    if last in _PATTERN_HOOKS:
        return "hqk"
    return "p"


@dataclass(frozen=True)
class Patch:
    """Replace ``hook``'s activation at ``index`` with ``source``'s.

    ``index`` maps each index dimension (``"p"`` position, ``"h"`` head, ``"q"``/``"k"``
    query/key position) to a list of indices; a missing dimension means all.
    ``source`` is ``"clean"``, ``"corrupt"``, ``"ablated"``, or a tensor
    ``[batch, ...]`` shaped like the activation.
    """

    hook: str
    index: tuple[tuple[str, tuple[int, ...]], ...] = ()
    source: object = "ablated"

    @classmethod
    def at(cls, hook: str, source="ablated", **index: Sequence[int] | int | None) -> "Patch":
        items = []
        for dim, value in index.items():
            if value is None:
                continue
            values = (int(value),) if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)
            items.append((dim, values))
        return cls(hook, tuple(sorted(items)), source)


Variant = Sequence[Patch]


@dataclass
class _RunCache:
    """Activations of one input batch, cached by hook name, computed on demand."""

    model: object
    tokens: torch.Tensor
    logits: torch.Tensor | None = None
    acts: dict[str, torch.Tensor] = field(default_factory=dict)

    def ensure(self, hooks: Iterable[str]) -> None:
        missing = sorted(set(hooks) - set(self.acts))
        if not missing and self.logits is not None:
            return
        wanted = set(missing)
        with torch.no_grad():
            logits, cache = self.model.run_with_cache(self.tokens, names_filter=lambda name: name in wanted)
        self.logits = logits.detach()
        for name in missing:
            if name not in cache:
                raise CircuitCheckError(f"hook {name!r} did not fire: this model has no such activation")
            self.acts[name] = cache[name].detach()

    def __getitem__(self, hook: str) -> torch.Tensor:
        self.ensure([hook])
        return self.acts[hook]


@dataclass
class TaskRuns:
    """The cached clean, corrupted and reference runs of one task on one model."""

    task: Task
    clean: _RunCache
    corrupt: _RunCache
    reference: _RunCache
    score: object  # (logits, task, clean_logits) -> [batch]
    ablated: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    _metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    weights: tuple = ()  # the model's weights fingerprint when these runs were made
    fast_traces: dict[str, object] = field(default_factory=dict)  # base -> the fast path's run of it
    fast_read: dict[str, list[int]] = field(default_factory=dict)  # base -> logit positions the fast path computes

    # The metrics are computed lazily, so that the first forward of each run
    # can also cache every activation the first check needs.
    @property
    def clean_metric(self) -> torch.Tensor:
        """Per-example metric of the clean run, ``[batch]``."""
        return self._metric_of("clean")

    @property
    def corrupt_metric(self) -> torch.Tensor:
        """Per-example metric of the corrupted run, ``[batch]``."""
        return self._metric_of("corrupt")

    def _metric_of(self, which: str) -> torch.Tensor:
        if which not in self._metrics:
            run = getattr(self, which)
            run.ensure([])
            self.clean.ensure([])
            self._metrics[which] = self.score(run.logits, self.task, self.clean.logits)
        return self._metrics[which]


class Patcher:
    """Batched interventions on one model.

    >>> patcher = Patcher(model)                                   # doctest: +SKIP
    >>> values = patcher.run(task, [[Patch.at("blocks.1.attn.hook_z", h=[3])]])   # [variants, batch]
    """

    def __init__(self, model, max_batch: int | None = None, progress: bool | None = None, fast: bool | None = None):
        require_eval(model)
        # fast: None = the verified fast path where it applies (see circuitcheck.fastpath),
        # False = always the general path, True = also try architectures it does not list
        # (and half-precision weights); still verified.
        if fast not in (None, True, False):
            raise ValueError(f"fast={fast!r} is not valid: use None (where it applies), True (also unlisted architectures) or False")
        self.fast = fast
        self.fast_passes = 0
        # What the fast path computed: tokens through one block, tokens of the last block
        # needed only as keys and values, and unembedded logit rows.
        self.fast_work = {"token_layers": 0, "kv_only": 0, "unembedded": 0}
        self.model = model
        if max_batch is not None and (not isinstance(max_batch, int) or max_batch < 1):
            raise ValueError(f"max_batch={max_batch!r} is not valid: it must be a positive number of rows")
        self.max_batch = max_batch or DEFAULT_MAX_BATCH
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.device = getattr(model.cfg, "device", None) or "cpu"
        self._runs: dict[str, TaskRuns] = {}
        self.forward_passes = 0

    # Cached runs --------------------------------------------------------------

    def runs(self, task: Task) -> TaskRuns:
        """Clean/corrupted runs of ``task``, computed once per (patcher, task) and again if the weights change."""
        require_eval(self.model)
        key = task.digest
        weights = _fastpath.weights_fingerprint(self.model)
        if key in self._runs and self._runs[key].weights != weights:
            del self._runs[key]  # the weights changed in place since: the cached runs are stale
        if key not in self._runs:
            task.validate(self.model)
            clean = _RunCache(self.model, task.clean.to(self.device))
            corrupt = _RunCache(self.model, task.corrupt.to(self.device))
            reference = clean if task.reference is None else _RunCache(self.model, task.reference.to(self.device))
            self._runs[key] = TaskRuns(task, clean, corrupt, reference, self._metric, weights=weights)
        return self._runs[key]

    def _metric(self, logits: torch.Tensor, task: Task, clean_logits: torch.Tensor) -> torch.Tensor:
        values = task.metric(logits, task, clean_logits).detach().float().cpu()
        bad = torch.nonzero(~torch.isfinite(values)).flatten()
        if len(bad):
            raise CircuitCheckError(
                f"metric {task.metric.name!r} gave NaN or infinite values for {len(bad)} of {len(values)} examples "
                f"(first: example {int(bad[0])}, value {float(values[bad[0]])})"
            )
        return values

    def ablated_value(self, task: Task, ablation: _ablation.Ablation, hook: str, seed: int = 0) -> torch.Tensor:
        runs = self.runs(task)
        key = (f"{ablation.name}#{seed}", hook)
        if key not in runs.ablated:
            inputs = _ablation.AblationInputs(
                clean=lambda h: runs.clean[h], corrupt=lambda h: runs.corrupt[h], reference=lambda h: runs.reference[h], seed=seed
            )
            runs.ablated[key] = ablation.value(hook, inputs).detach()
        return runs.ablated[key]

    # The engine ---------------------------------------------------------------

    def run(
        self,
        task: Task,
        variants: Sequence[Variant],
        *,
        base: str = "clean",
        ablation: "str | _ablation.Ablation | None" = None,
        seed: int = 0,
        desc: str = "patching",
    ) -> torch.Tensor:
        """Run each variant on the ``base`` input (``"clean"`` or ``"corrupt"``); per-example metric ``[variants, batch]``."""
        if base not in ("clean", "corrupt"):
            raise ValueError(f"base={base!r} is not valid: use 'clean' or 'corrupt'")
        runs = self.runs(task)
        abl = _ablation.parse(ablation)
        n_variants, batch = len(variants), task.n_examples
        out = torch.empty(n_variants, batch)
        if n_variants == 0:
            return out
        fast = self.fast is not False and _fastpath.supports(self.model, forced=self.fast is True)
        self._prefetch(runs, variants, abl, base, fast)
        order = list(range(n_variants))
        if fast:
            # Variants that start at similar layers share chunks, so that each chunk skips more blocks.
            layers = [_fastpath.start_layer([variant]) for variant in variants]
            order = sorted(order, key=layers.__getitem__)
        per_chunk = max(1, self.max_batch // batch)
        start = 0
        shown = self._progress_start(desc, n_variants)
        while start < n_variants:
            stop = min(n_variants, start + per_chunk)
            rows = order[start:stop]
            try:
                out[rows] = self._run_chunk(runs, [variants[i] for i in rows], base, abl, seed)
            except (torch.OutOfMemoryError, RuntimeError) as error:
                if not _is_oom(error) or stop - start == 1:
                    raise
                per_chunk = max(1, (stop - start) // 2)
                _free_memory()
                continue
            start = stop
            self._progress_update(shown, desc, start, n_variants)
        self._progress_end(shown)
        return out

    def _prefetch(self, runs: TaskRuns, variants: Sequence[Variant], abl: _ablation.Ablation, base: str, fast: bool) -> None:
        by_source: dict[str, set[str]] = {"clean": set(), "corrupt": set(), "ablated": set()}
        for variant in variants:
            for patch in variant:
                if isinstance(patch.source, str):
                    if patch.source not in by_source:
                        raise ValueError(f"patch source {patch.source!r} is not valid: use 'clean', 'corrupt', 'ablated' or a tensor")
                    by_source[patch.source].add(patch.hook)
        if by_source["ablated"]:
            for need in abl.needs:
                getattr(runs, need).ensure(by_source["ablated"])
        if fast:
            by_source[base].add("blocks.0.hook_resid_pre")  # where the fast path's own run of the base input starts
        runs.clean.ensure(by_source["clean"])
        if base == "corrupt" or by_source["corrupt"]:
            runs.corrupt.ensure(by_source["corrupt"])

    def _run_chunk(self, runs: TaskRuns, variants: Sequence[Variant], base: str, abl, seed: int) -> torch.Tensor:
        task = runs.task
        n, batch = len(variants), task.n_examples
        logits = None
        if self.fast is not False:
            logits = _fastpath.chunk_logits(
                self, runs, variants, base, lambda vs: self._chunk_hooks(runs, vs, abl, seed),
                lambda vs: self._general_logits(runs, vs, base, abl, seed),
                lambda lg: self._metric(lg, task, runs.clean.logits),
            )
        if logits is None:
            logits = self._general_logits(runs, variants, base, abl, seed)
        self.forward_passes += 1
        logits = logits.view(n, batch, *logits.shape[1:])
        return torch.stack([self._metric(logits[v], task, runs.clean.logits) for v in range(n)])

    def _chunk_hooks(self, runs: TaskRuns, variants: Sequence[Variant], abl, seed: int):
        """The chunk's (hook name, function) list and its plans."""
        task = runs.task
        n, batch = len(variants), task.n_examples
        # Per hook: a boolean mask [n, *index] per named source, and explicit-tensor patches.
        plans: dict[str, _HookPlan] = {}
        for v, variant in enumerate(variants):
            for patch in variant:
                plan = plans.setdefault(patch.hook, _HookPlan(patch.hook, n))
                plan.add(v, patch)

        sources = {
            "clean": lambda hook: runs.clean[hook],
            "corrupt": lambda hook: runs.corrupt[hook],
            "ablated": lambda hook: self.ablated_value(task, abl, hook, seed),
        }
        return [(hook, plan.hook_fn(batch, sources)) for hook, plan in plans.items()], plans

    def _general_logits(self, runs: TaskRuns, variants: Sequence[Variant], base: str, abl, seed: int) -> torch.Tensor:
        """One full forward of the base input repeated per variant, with the variants' hooks."""
        base_tokens = (runs.clean if base == "clean" else runs.corrupt).tokens
        tokens = base_tokens.repeat(len(variants), 1)
        hooks, plans = self._chunk_hooks(runs, variants, abl, seed)
        with torch.no_grad():
            logits = self.model.run_with_hooks(tokens, fwd_hooks=hooks)
        for hook, plan in plans.items():
            if not plan.fired:
                raise CircuitCheckError(f"hook {hook!r} never fired: model {model_label(self.model)} has no such activation")
        return logits

    # Progress on a terminal only ------------------------------------------------

    def _progress_start(self, desc: str, total: int) -> bool:
        return self.progress and total * self.max_batch > 0 and total > max(1, self.max_batch) // 4

    def _progress_update(self, shown: bool, desc: str, done: int, total: int) -> None:
        if shown:
            width = 30
            filled = int(width * done / total)
            sys.stderr.write(f"\r{desc} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} variants")
            sys.stderr.flush()

    def _progress_end(self, shown: bool) -> None:
        if shown:
            sys.stderr.write("\n")
            sys.stderr.flush()

    # Sweeps ---------------------------------------------------------------------

    def sweep(self, task: Task, what: str, *, direction: str = "denoise") -> "Sweep":
        """Activation patching of one kind of activation at every index.

        ``what``: ``resid_pre``, ``resid_mid``, ``resid_post``, ``attn_out``, ``mlp_out``
        (layer x position); ``head_out`` (layer x head, all positions);
        ``head_out_by_pos`` (layer x position x head); ``head_q``, ``head_k``, ``head_v``
        (layer x head; for ``head_k`` and ``head_v`` of a grouped-query model, layer x
        key-value head); ``pattern`` (layer x head).

        ``direction="denoise"`` (default, as TransformerLens's ``get_act_patch_*``):
        run the corrupted input and patch in each clean activation.
        ``"noise"``: run the clean input and patch in each corrupted activation.
        Values are the mean metric; ``normalized`` rescales them so that the
        corrupted run is 0 and the clean run 1.
        """
        if direction not in ("denoise", "noise"):
            raise ValueError(f"direction={direction!r} is not valid: use 'denoise' or 'noise'")
        base, source = ("corrupt", "clean") if direction == "denoise" else ("clean", "corrupt")
        cfg = self.model.cfg
        layers, heads, positions = range(cfg.n_layers), range(cfg.n_heads), range(task.seq_len)
        layer_pos = {"resid_pre": "hook_resid_pre", "resid_mid": "hook_resid_mid", "resid_post": "hook_resid_post",
                     "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out"}
        layer_head = {"head_out": "attn.hook_z", "head_q": "attn.hook_q", "head_k": "attn.hook_k", "head_v": "attn.hook_v",
                      "pattern": "attn.hook_pattern"}
        if what in layer_pos:
            if what in ("mlp_out", "resid_mid") and getattr(cfg, "attn_only", False):
                raise ComponentError(f"model {model_label(self.model)} is attention-only: it has no {what}")
            axes = ("layer", "pos")
            index = [(layer, pos) for layer in layers for pos in positions]
            if what == "resid_mid":
                variants = self._resid_mid_variants(task, index, base, source)
            else:
                variants = [[Patch.at(f"blocks.{layer}.{layer_pos[what]}", source, p=[pos])] for layer, pos in index]
        elif what in layer_head:
            axes = ("layer", "head")
            if what in ("head_k", "head_v"):  # grouped-query attention: one key/value per key-value head
                heads = range(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads)
            index = [(layer, head) for layer in layers for head in heads]
            variants = [[Patch.at(f"blocks.{layer}.{layer_head[what]}", source, h=[head])] for layer, head in index]
        elif what == "head_out_by_pos":
            axes = ("layer", "pos", "head")
            index = [(layer, pos, head) for layer in layers for pos in positions for head in heads]
            variants = [[Patch.at(f"blocks.{layer}.attn.hook_z", source, p=[pos], h=[head])] for layer, pos, head in index]
        else:
            raise ValueError(
                f"unknown sweep {what!r}: valid sweeps are {', '.join([*layer_pos, *layer_head, 'head_out_by_pos'])}"
            )
        values = self.run(task, variants, base=base, desc=f"sweep {what}")
        runs = self.runs(task)
        sweep = Sweep(what, axes, index, values, runs.clean_metric, runs.corrupt_metric, direction)
        if len(axes) == 2:
            from ..model import context

            context.record_sweep(sweep.to_dict(title=f"{what} patching ({direction}) on {task.name}, model {model_label(self.model)}"))
        return sweep

    def _resid_mid_variants(self, task: Task, index, base: str, source: str) -> list[list[Patch]]:
        # In TransformerBridge, hook_resid_mid is an alias of ln2's input: writing it
        # would change what the MLP reads but not the residual stream itself. The
        # residual after attention is resid_pre + attn_out, and with one patch per
        # variant resid_pre at that layer is the base run's, so writing
        # attn_out = source_mid - base_pre sets the true residual exactly.
        runs = self.runs(task)
        base_run, source_run = getattr(runs, base), getattr(runs, source)
        n_layers = self.model.cfg.n_layers
        base_run.ensure([f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)])
        source_run.ensure([f"blocks.{layer}.hook_resid_mid" for layer in range(n_layers)])
        writes = {
            layer: source_run[f"blocks.{layer}.hook_resid_mid"] - base_run[f"blocks.{layer}.hook_resid_pre"] for layer in range(n_layers)
        }
        return [[Patch.at(f"blocks.{layer}.hook_attn_out", writes[layer], p=[pos])] for layer, pos in index]

    # Path patching ------------------------------------------------------------------

    def sender_delta(self, task: Task, senders: Sequence[Component], direction: str = "denoise") -> torch.Tensor:
        """The change in what the senders write to the residual stream, ``[batch, pos, d_model]``.

        ``"denoise"``: clean write minus corrupted write (added on the corrupted run);
        ``"noise"``: corrupted minus clean (added on the clean run).
        """
        runs = self.runs(task)
        source, base = _path_runs(runs, direction)
        delta = None
        for sender in senders:
            hook = sender.hook_name
            runs.clean.ensure([hook])
            runs.corrupt.ensure([hook])
            if sender.kind == "head":
                if sender.port is not None:
                    raise ComponentError(f"a path's sender must be an output, not the input {sender}")
                W_O = self.model.blocks[sender.layer].attn.W_O[sender.head]  # [d_head, d_model]
                diff = source[hook][:, :, sender.head] - base[hook][:, :, sender.head]
                write = diff @ W_O.to(diff.dtype)
            else:
                write = source[hook] - base[hook]
                if write.shape[0] != task.n_examples:  # e.g. a positional embedding without a batch dim
                    write = write.expand(task.n_examples, *write.shape[1:])
            if sender.positions is not None:
                keep = torch.zeros(task.seq_len, dtype=write.dtype, device=write.device)
                keep[sender.positions.indices(task.seq_len)] = 1
                write = write * keep[None, :, None]
            delta = write if delta is None else delta + write
        if delta is None:
            raise CircuitCheckError("a path needs at least one sender")
        return delta

    def path_patch(
        self, task: Task, senders: Sequence[Component], receivers: Sequence["Component | str"], direction: str = "denoise"
    ) -> torch.Tensor:
        """Per-example metric ``[receivers, batch]`` with each path sender(s) -> receiver patched.

        ``direction="denoise"`` is TransformerLens's ``get_act_patch_direct_path``:
        run the corrupted input; only the receiver reads the senders' clean output
        (their clean-minus-corrupted write is added to the receiver's own copy of
        its input residual, before its LayerNorm); every other path stays
        corrupted, and everything downstream of the receiver is recomputed.
        ``"noise"`` is the IOI paper's direction: run the clean input and let only
        the receiver read the senders' corrupted output.
        Receivers: a head input (``L1H3.q``/``.k``/``.v``), an MLP (``L2.mlp``, its
        input), or ``"logits"`` (the unembedding's input).
        """
        runs = self.runs(task)
        delta = self.sender_delta(task, senders, direction)
        base_name = "corrupt" if direction == "denoise" else "clean"
        out = torch.empty(len(receivers), task.n_examples)
        variants: list[list[Patch]] = []
        rows: list[int] = []
        cache: dict[tuple, torch.Tensor] = {}
        for i, receiver in enumerate(receivers):
            if isinstance(receiver, str) and receiver == "logits":
                out[i] = self._logits_path(runs, delta, base_name)
                continue
            receiver = Component.parse(receiver)
            for sender in senders:
                Edge.parse(f"{sender} -> {receiver}")  # the receiver must read after the sender writes
            variants.append([self._receiver_patch(runs, receiver, delta, cache, base_name)])
            rows.append(i)
        if variants:
            out[rows] = self.run(task, variants, base=base_name, desc="path patching")
        return out

    def _receiver_patch(self, runs: TaskRuns, receiver: Component, delta: torch.Tensor, cache: dict, base_name: str) -> Patch:
        layer = receiver.layer
        base = getattr(runs, base_name)
        if receiver.kind == "head" and receiver.port in ("q", "k", "v"):
            key = ("head", layer, receiver.port)
            if key not in cache:
                resid = base[f"blocks.{layer}.hook_resid_pre"]
                cache[key] = self._head_input(layer, receiver.port, resid + delta, runs)
            return Patch.at(f"blocks.{layer}.attn.hook_{receiver.port}", cache[key], h=[receiver.head])
        if receiver.kind == "mlp":
            key = ("mlp", layer)
            if key not in cache:
                mid = base[f"blocks.{layer}.hook_resid_mid"]
                cache[key] = self._mlp_input(layer, mid + delta, runs)
            return Patch.at(f"blocks.{layer}.mlp.hook_in", cache[key])
        raise ComponentError(
            f"{receiver} cannot receive a path: receivers are head inputs (L{layer}H0.q, .k, .v), MLPs (L{layer}.mlp) or 'logits'"
        )

    def _head_input(self, layer: int, port: str, resid: torch.Tensor, runs: TaskRuns) -> torch.Tensor:
        attn = self.model.blocks[layer].attn
        W = getattr(attn, f"W_{port.upper()}")
        b = getattr(attn, f"b_{port.upper()}")
        if W.shape[0] != self.model.cfg.n_heads:
            raise CircuitCheckError(
                f"path patching into .{port} needs one {port} projection per head; layer {layer} has {W.shape[0]} for {self.model.cfg.n_heads} heads (grouped-query attention)"
            )
        ln1 = self.model.blocks[layer].ln1

        def project(x):
            return torch.einsum("bpd,hde->bphe", ln1(x), W.to(x.dtype)) + b.to(x.dtype)

        self._verify(("head", layer, port), lambda: project(runs.corrupt[f"blocks.{layer}.hook_resid_pre"]),
                     runs.corrupt[f"blocks.{layer}.attn.hook_{port}"], f"the {port} input of layer {layer}'s heads")
        return project(resid)

    def _mlp_input(self, layer: int, resid_mid: torch.Tensor, runs: TaskRuns) -> torch.Tensor:
        ln2 = self.model.blocks[layer].ln2
        self._verify(("mlp", layer), lambda: ln2(runs.corrupt[f"blocks.{layer}.hook_resid_mid"]),
                     runs.corrupt[f"blocks.{layer}.mlp.hook_in"], f"layer {layer}'s MLP input")
        return ln2(resid_mid)

    def _logits_path(self, runs: TaskRuns, delta: torch.Tensor, base_name: str) -> torch.Tensor:
        last = f"blocks.{self.model.cfg.n_layers - 1}.hook_resid_post"
        base = getattr(runs, base_name)

        def unembed(x):
            return self.model.unembed(self.model.ln_final(x))

        self._verify(("logits",), lambda: unembed(runs.corrupt[last]), runs.corrupt.logits, "the unembedding")
        with torch.no_grad():
            logits = unembed(base[last] + delta)
        return self._metric(logits, runs.task, runs.clean.logits)

    def _verify(self, key: tuple, recompute, cached: torch.Tensor, what: str) -> None:
        """Check once per model that recomputing ``what`` from the residual reproduces the model's own value."""
        verified = self.__dict__.setdefault("_verified", set())
        if key in verified:
            return
        with torch.no_grad():
            diff = float((recompute() - cached).abs().max())
        if diff > 1e-4 * max(1.0, float(cached.abs().max())):
            raise CircuitCheckError(
                f"path patching cannot reach {what} on model {model_label(self.model)}: recomputing it from the residual stream "
                f"differs from the model's own activation by {diff:.2e}, so this architecture is not supported"
            )
        verified.add(key)

    def path_sweep(self, task: Task, sender: "Component | str", port: str = "q", direction: str = "denoise") -> pd.DataFrame:
        """Path patching from ``sender`` into the ``port`` input of every later head: mean metric, ``[layer, head]``.

        Layers at or before the sender's are NaN (not measured). Same layout as
        TransformerLens's ``get_act_patch_direct_path`` (which writes 0.0 there).
        """
        sender = Component.parse(sender)
        cfg = self.model.cfg
        first = 0 if sender.layer is None else sender.layer + 1
        receivers = [Component("head", layer, head, port) for layer in range(first, cfg.n_layers) for head in range(cfg.n_heads)]
        values = self.path_patch(task, [sender], receivers, direction).mean(1)
        matrix = torch.full((cfg.n_layers, cfg.n_heads), float("nan"))
        for receiver, value in zip(receivers, values):
            matrix[receiver.layer, receiver.head] = value
        frame = pd.DataFrame(matrix.numpy())
        frame.index.name, frame.columns.name = "layer", "head"
        return frame


@dataclass
class Sweep:
    """Result of :meth:`Patcher.sweep`: per-example values ``[variants, batch]`` and their index."""

    what: str
    axes: tuple[str, ...]
    index: list[tuple[int, ...]]
    values: torch.Tensor
    clean_metric: torch.Tensor
    corrupt_metric: torch.Tensor
    direction: str

    @property
    def mean(self) -> torch.Tensor:
        """Mean metric per variant, shaped by the sweep's axes (e.g. ``[layer, pos]``)."""
        shape = tuple(max(i[a] for i in self.index) + 1 for a in range(len(self.axes)))
        return self.values.mean(1).reshape(shape)

    @property
    def normalized(self) -> torch.Tensor:
        """``(mean - corrupted) / (clean - corrupted)``: 0 = corrupted run, 1 = clean run."""
        clean, corrupt = float(self.clean_metric.mean()), float(self.corrupt_metric.mean())
        if clean == corrupt:
            raise CircuitCheckError("clean and corrupted runs score the same mean metric: a normalised sweep is undefined")
        return (self.mean - corrupt) / (clean - corrupt)

    def frame(self) -> pd.DataFrame:
        """Tidy: one row per patched index, with ``value`` (mean metric) and ``normalized``."""
        frame = pd.DataFrame(self.index, columns=list(self.axes))
        frame["value"] = self.values.mean(1).numpy()
        clean, corrupt = float(self.clean_metric.mean()), float(self.corrupt_metric.mean())
        frame["normalized"] = (frame["value"] - corrupt) / (clean - corrupt) if clean != corrupt else np.nan
        return frame

    def to_dict(self, title: str = "") -> dict:
        """JSON-safe, for the report: the mean and normalised matrices."""
        from ..claims.result import frame_to_json

        clean, corrupt = float(self.clean_metric.mean()), float(self.corrupt_metric.mean())
        return {
            "what": self.what,
            "axes": list(self.axes),
            "direction": self.direction,
            "title": title or f"{self.what} patching ({self.direction})",
            "matrix": frame_to_json(self.matrix()),
            "normalized": frame_to_json(self.matrix(normalized=True)) if clean != corrupt else None,
        }

    def matrix(self, normalized: bool = False) -> pd.DataFrame:
        """The heatmap: first axis as rows, second as columns (2-axis sweeps)."""
        if len(self.axes) != 2:
            raise ValueError(f"sweep {self.what} has axes {self.axes}: use .frame() for more than two")
        values = (self.normalized if normalized else self.mean).numpy()
        frame = pd.DataFrame(values)
        frame.index.name, frame.columns.name = self.axes
        return frame


class _HookPlan:
    """What one hook writes for each variant of a chunk."""

    def __init__(self, hook: str, n_variants: int):
        self.hook = hook
        self.dims = index_dims(hook)
        self.n = n_variants
        self.named: dict[str, list[tuple[int, dict]]] = {}
        self.explicit: list[tuple[int, dict, torch.Tensor]] = []
        self.fired = False

    def add(self, variant: int, patch: Patch) -> None:
        index = dict(patch.index)
        unknown = set(index) - set(self.dims)
        if unknown:
            raise ValueError(f"patch on {self.hook} indexes {sorted(unknown)}, but its activation is indexed by {list(self.dims)}")
        if isinstance(patch.source, str):
            self.named.setdefault(patch.source, []).append((variant, index))
        else:
            self.explicit.append((variant, index, patch.source))

    def _mask(self, entries, index_shape, device) -> torch.Tensor:
        mask = torch.zeros((self.n, *index_shape), dtype=torch.bool, device=device)
        for variant, index in entries:
            mask[(variant, *self._selector(index, index_shape, device))] = True
        return mask

    def _selector(self, index: dict, index_shape, device) -> tuple:
        """Broadcastable index tensors selecting the product of the listed indices."""
        parts = []
        k = len(self.dims)
        for axis, dim in enumerate(self.dims):
            values = index.get(dim)
            size = index_shape[axis]
            if values is None:
                values = range(size)
            values = [v + size if v < 0 else v for v in values]
            for v in values:
                if not 0 <= v < size:
                    raise CircuitCheckError(f"index {v} is out of range for dimension {dim!r} of {self.hook} (size {size})")
            shape = [1] * k
            shape[axis] = len(values)
            parts.append(torch.tensor(values, device=device).reshape(shape))
        return tuple(parts)

    def hook_fn(self, batch: int, sources):
        def fn(activation: torch.Tensor, hook=None) -> torch.Tensor:
            self.fired = True
            n = activation.shape[0] // batch
            acts = activation.reshape(n, batch, *activation.shape[1:])
            n_index = len(self.dims)
            index_shape = tuple(acts.shape[2 : 2 + n_index])
            features = acts.ndim - 2 - n_index
            for name, entries in self.named.items():
                mask = self._mask(entries, index_shape, acts.device)
                mask = mask.reshape(n, 1, *index_shape, *([1] * features))
                source = sources[name](self.hook).to(acts.device, acts.dtype)
                acts = torch.where(mask, source.unsqueeze(0), acts)
            if self.explicit:
                acts = acts.clone()
                for variant, index, value in self.explicit:
                    sel = self._selector(index, index_shape, acts.device)
                    value = value.to(acts.device, acts.dtype).expand(batch, *acts.shape[2:])
                    acts[variant][(slice(None), *sel)] = value[(slice(None), *sel)]
            return acts.reshape(activation.shape)

        return fn


def _path_runs(runs: TaskRuns, direction: str):
    """(source, base) runs of a path patch."""
    if direction == "denoise":
        return runs.clean, runs.corrupt
    if direction == "noise":
        return runs.corrupt, runs.clean
    raise ValueError(f"direction={direction!r} is not valid: use 'denoise' (TransformerLens's direct path) or 'noise' (the IOI paper's)")


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def _free_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def component_patch(component: Component, source="ablated", seq_len: int | None = None) -> Patch:
    """The patch that replaces ``component``'s activation (all positions unless narrowed)."""
    positions = component.positions.indices(seq_len) if component.positions is not None and seq_len is not None else None
    if component.positions is not None and seq_len is None:
        raise ValueError("a position-narrowed component needs the input length")
    if component.kind == "head":
        return Patch.at(component.hook_name, source, p=positions, h=[component.head])
    return Patch.at(component.hook_name, source, p=positions)
