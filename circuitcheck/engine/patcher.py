"""The batched intervention engine.

Many interventions ("variants") run in one forward pass: the base input is
repeated once per variant along the batch dimension, and one hook per hook
point writes each variant's slice. Variants are chunked so that no forward
holds more rows than fit: ``max_batch`` where the user gives it, else as many
as the device's free memory holds by an estimate from the model's config
(:func:`activation_bytes_per_row`, :func:`available_memory`; the choice is
:attr:`Patcher.chunk`, a :class:`ChunkPlan`). A chunk that runs out of memory
anyway is halved and retried, and the patcher keeps the smaller size.

An intervention is a list of :class:`~circuitcheck.engine.patches.Patch` es
(``"clean"``, ``"corrupt"``, ``"ablated"`` or an explicit tensor as the source).
Where it applies, a chunk runs through the verified fast forward
(:mod:`circuitcheck.engine.fastpath`), else as one full forward with hooks.
Sweeps (:mod:`circuitcheck.engine.sweeps`) and path patching
(:mod:`circuitcheck.engine.paths`) are built on :meth:`Patcher.run`.

Clean and corrupted runs are cached per task content (a task edited in place
gets new runs), and made again when the model's weights change (its
:func:`~circuitcheck.engine.session.session_of` says when, reading them in full
at the start of each public call). Each public call holds the model for its
whole length, so calls from several threads run one at a time.
Every batched result equals the one-forward-per-patch result (tested against
``transformer_lens.patching``).
"""

from __future__ import annotations

import functools
import math
import os
import sys
import weakref
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch

from . import ablation as _ablation
from . import fastpath as _fastpath
from . import paths as _paths
from . import sweeps as _sweeps
from ..errors import ArgumentError, CircuitCheckError
from ..model.components import Component, model_label
from ..model.context import require_eval
from ..model.tasks import Task
from .hooks import index_dims, start_layer  # index_dims: public here before hooks.py existed
from .patches import HookPlan, Patch, Variant, component_patch, is_live  # noqa: F401
from .session import session_of
from .sweeps import Sweep  # noqa: F401 (circuitcheck.patcher.Sweep)

#: Rows per forward where the free memory cannot be read.
DEFAULT_MAX_BATCH = 256
#: The most rows an automatic choice puts in one forward: beyond a few thousand rows a forward
#: costs as much per row as two smaller ones, and a chunk that fails loses less work.
MAX_AUTO_ROWS = 4096
#: Share of the free memory one chunk's activations may take (the rest: the cached runs, the
#: ablations' values, other processes, the allocator's fragmentation).
MEMORY_SHARE = 0.5
#: Headroom on the per-row estimate, for what it does not list (the framework's own temporaries).
ESTIMATE_SLACK = 2.0


def activation_bytes_per_row(cfg, seq_len: int, dtype: torch.dtype = torch.float32, live: bool = False) -> int:
    """Estimated peak memory of one row (one input of ``seq_len`` tokens) in a patched forward, in bytes.

    From the config (``n_layers``, ``d_model``, ``n_heads``, ``d_head``, ``d_mlp``,
    ``d_vocab``) and the activations' ``dtype``, counted in values per token:

    - one block at a time (under ``no_grad`` a block's temporaries are freed before
      the next): ``6 d_model`` (residual in and out, normalised input, attention
      output, MLP input and output), ``6 n_heads d_head`` (queries, keys, values,
      rotated queries and keys, head outputs; grouped-query keys and values are
      counted expanded to every head, as attention reads them),
      ``3 n_heads seq_len`` (attention scores, masked scores, pattern) and
      ``3 d_mlp`` (pre- and post-activation, the gated MLP's linear branch);
    - the logits: ``d_vocab`` (the metric scores one variant at a time, so its
      float32 copies are not per row);
    - with a live patch source (``live``: edge ablation), what it keeps for the
      whole forward in every layer: ``n_layers (3 d_model + n_heads d_head)``
      (residuals and head outputs) and ``n_layers (n_heads + 1) d_model`` (each
      sender's write).

    The sum times the dtype's size, times ``seq_len``, times :data:`ESTIMATE_SLACK`.
    The weights and cached runs are not in it: free memory is read with them
    already in place. Measured on a GPT-2-small-shaped model (16 tokens, float32,
    CPU, peak resident memory over 64 vs 256 rows): 3.7 MiB per row on the general
    path, 1.7 MiB on the fast path; estimated 8.5 MiB.
    """
    d_model, n_heads, n_layers = int(cfg.d_model), int(cfg.n_heads), int(cfg.n_layers)
    d_head = int(getattr(cfg, "d_head", 0) or d_model // n_heads)
    d_mlp = 0 if getattr(cfg, "attn_only", False) else int(getattr(cfg, "d_mlp", 0) or 0)
    block = 6 * d_model + 6 * n_heads * d_head + 3 * n_heads * seq_len + 3 * d_mlp
    kept = n_layers * (3 * d_model + n_heads * d_head + (n_heads + 1) * d_model) if live else 0
    size = torch.empty((), dtype=dtype).element_size()
    return int(math.ceil(ESTIMATE_SLACK * (block + int(cfg.d_vocab) + kept) * size * seq_len))


def available_memory(device) -> int | None:
    """Bytes free for activations on ``device``, or None where it cannot be read.

    CUDA: ``torch.cuda.mem_get_info`` plus what PyTorch's allocator holds but does
    not use. CPU: the smaller of ``MemAvailable`` in ``/proc/meminfo`` (else
    ``os.sysconf`` available pages) and the room left under the process's cgroup
    (v2) memory limit. MPS: the recommended working set less what is allocated.
    """
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return None
        index = device.index if device.index is not None else torch.cuda.current_device()
        free, _ = torch.cuda.mem_get_info(index)
        return int(free + torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index))
    if device.type == "mps":
        mps = getattr(torch, "mps", None)
        if mps is None or not hasattr(mps, "recommended_max_memory"):
            return None
        return max(0, int(mps.recommended_max_memory() - mps.current_allocated_memory()))
    if device.type != "cpu":
        return None
    found = [value for value in (_meminfo_available(), _cgroup_room()) if value is not None]
    return min(found) if found else None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup v2 memory limit (None: no limit, or not readable)."""
    try:
        with open("/proc/self/cgroup") as groups:
            path = next((line.strip().split("::", 1)[1] for line in groups if line.startswith("0::")), None)
        if path is None:
            return None
        base = os.path.join("/sys/fs/cgroup", path.lstrip("/"))
        with open(os.path.join(base, "memory.max")) as limit_file:
            limit = limit_file.read().strip()
        if limit == "max":
            return None
        with open(os.path.join(base, "memory.current")) as current_file:
            current = int(current_file.read().strip())
        return max(0, int(limit) - current)
    except (OSError, ValueError, StopIteration):
        return None


@dataclass
class ChunkPlan:
    """How many rows (variants x examples) a patcher puts in one forward, and why.

    ``source``: ``"max_batch"`` (the user's limit), ``"memory"`` (from
    :func:`available_memory` and :func:`activation_bytes_per_row`) or ``"default"``
    (the free memory could not be read: :data:`DEFAULT_MAX_BATCH`). ``halved``:
    how often a chunk ran out of memory and was halved in this run (``rows`` is then
    what ran). ``variants``: variants per forward for ``examples`` examples a variant.
    """

    rows: int
    source: str
    examples: int
    seq_len: int
    bytes_per_row: int | None = None
    available: int | None = None
    halved: int = 0

    @property
    def variants(self) -> int:
        return max(1, self.rows // max(1, self.examples))

    def __str__(self) -> str:
        text = f"{self.rows} rows per forward ({self.variants} variants x {self.examples} examples)"
        if self.source == "max_batch":
            text += ", the max_batch limit"
        elif self.source == "memory":
            text += (f", from memory: {_bytes_text(self.bytes_per_row)} per row of {self.seq_len} tokens, "
                     f"{_bytes_text(self.available)} free, {MEMORY_SHARE:.0%} of it for activations")
            if self.rows >= MAX_AUTO_ROWS and not self.halved:
                text += f" (capped at {MAX_AUTO_ROWS} rows)"
        else:
            text += ", the default (free memory unknown)"
        if self.halved:
            text += f"; halved {self.halved}x after running out of memory"
        return text

    def to_dict(self) -> dict:
        return {"rows": self.rows, "source": self.source, "variants": self.variants, "examples": self.examples,
                "seq_len": self.seq_len, "bytes_per_row": self.bytes_per_row, "available": self.available, "halved": self.halved}


def _bytes_text(count: int | None) -> str:
    if count is None:
        return "?"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


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
        # Holding the model: another thread's hooks must not fire in this forward (nor ours in its).
        with session_of(self.model).exclusive(check=False):
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
    weights: int = 0  # the weights generation (session) these runs were made at
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


def _holding_model(method):
    """``method`` as one engine call: it holds the patcher's model, and the weights are checked once at its start."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        with session_of(self.model).exclusive():
            return method(self, *args, **kwargs)

    return call


class Patcher:
    """Batched interventions on one model.

    >>> patcher = Patcher(model)                                   # doctest: +SKIP
    >>> values = patcher.run(task, [[Patch.at("blocks.1.attn.hook_z", h=[3])]])   # [variants, batch]
    """

    def __init__(self, model, max_batch: int | None = None, progress: bool | None = None, fast: bool | None = None):
        require_eval(model)
        # fast: None = the verified fast path where it applies (see circuitcheck.fastpath),
        # False = always the general path, True = also try architectures it does not list;
        # still verified (at the tolerance of the weights' precision).
        if fast not in (None, True, False):
            raise ArgumentError(f"fast={fast!r} is not valid: use None (where it applies), True (also unlisted architectures) or False")
        self.fast = fast
        self.fast_passes = 0
        # What the fast path computed: tokens through one block, tokens of the last block
        # needed only as keys and values, and unembedded logit rows.
        self.fast_work = {"token_layers": 0, "kv_only": 0, "unembedded": 0}
        self.model = model
        if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
            raise ArgumentError(f"max_batch={max_batch!r} is not valid: it must be a positive number of rows")
        #: The user's limit on rows (variants x examples) per forward; None: chosen from free memory per run.
        self.max_batch = max_batch
        #: How the latest run chunked its variants (None before the first run).
        self.chunk: ChunkPlan | None = None
        self._oom_tokens: int | None = None  # rows x tokens of the largest chunk known to fit, after an out-of-memory
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.device = getattr(model.cfg, "device", None) or "cpu"
        self._runs: dict[str, TaskRuns] = {}
        self._digest_of: "weakref.WeakKeyDictionary[Task, str]" = weakref.WeakKeyDictionary()  # task -> digest of its runs
        self.forward_passes = 0

    def __repr__(self) -> str:
        """One line: the model, the fast path's setting and use, the rows per forward and the tasks whose runs are cached."""
        fast = {None: "where it applies", True: "forced", False: "off"}[self.fast]
        if self.forward_passes:
            fast += f", {self.fast_passes} of {self.forward_passes} forwards"
        if self.chunk is not None:
            rows = f"{self.chunk.rows} rows per forward ({'max_batch' if self.chunk.source == 'max_batch' else self.chunk.source})"
        else:
            rows = f"max_batch {self.max_batch}" if self.max_batch is not None else "rows per forward from free memory"
        tasks = [runs.task.name for runs in self._runs.values()]
        cached = f"{len(tasks)} task{'s' if len(tasks) != 1 else ''}" + (f" ({', '.join(tasks[:3])}{', ...' if len(tasks) > 3 else ''})" if tasks else "")
        return f"<Patcher of {model_label(self.model)} on {self.device}: fast path {fast}; {rows}; cached runs of {cached}>"

    # Cached runs --------------------------------------------------------------

    @_holding_model
    def runs(self, task: Task) -> TaskRuns:
        """Clean/corrupted runs of ``task``, computed once per (patcher, task contents) and again if the weights change.

        Keyed by the task's digest, read from its contents on every call: a task whose
        tensors were edited in place gets new runs (and its old ones are dropped).
        """
        require_eval(self.model)
        task.validate(self.model)  # on every call: a task sharing another's runs is still checked against this model
        key = task.digest
        before = self._digest_of.get(task)
        if before is not None and before != key:
            self._runs.pop(before, None)  # the task was edited in place since: its old runs are of other inputs
        self._digest_of[task] = key
        weights = session_of(self.model).generation
        if key in self._runs and self._runs[key].weights != weights:
            del self._runs[key]  # the weights changed since: the cached runs are stale
        if key not in self._runs:
            # Copies: the runs keep the inputs they were made from, whatever happens to the task's tensors.
            clean = _RunCache(self.model, task.clean.to(self.device, copy=True))
            corrupt = _RunCache(self.model, task.corrupt.to(self.device, copy=True))
            # Mean ablation's reference: the task's reference set, else its corrupted inputs (never the clean inputs measured).
            reference = corrupt if task.reference is None else _RunCache(self.model, task.reference.to(self.device, copy=True))
            self._runs[key] = TaskRuns(task, clean, corrupt, reference, self.score, weights=weights)
        return self._runs[key]

    def score(self, logits: torch.Tensor, task: Task, clean_logits: torch.Tensor) -> torch.Tensor:
        """The task's per-example metric of ``logits`` ``[batch, pos, vocab]``, ``[batch]`` on CPU; NaN or inf is an error."""
        values = task.metric(logits, task, clean_logits).detach().float().cpu()
        bad = torch.nonzero(~torch.isfinite(values)).flatten()
        if len(bad):
            raise CircuitCheckError(
                f"metric {task.metric.name!r} gave NaN or infinite values for {len(bad)} of {len(values)} examples "
                f"(first: example {int(bad[0])}, value {float(values[bad[0]])})"
            )
        return values

    @_holding_model
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

    @_holding_model
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
            raise ArgumentError(f"base={base!r} is not valid: use 'clean' or 'corrupt'")
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
            layers = [start_layer([variant]) for variant in variants]
            order = sorted(order, key=layers.__getitem__)
        live = any(is_live(patch.source) for variant in variants for patch in variant)
        self.chunk = plan = self.plan_chunk(task, live=live)
        per_chunk = plan.variants
        start = 0
        shown = self._progress_start(desc, n_variants, plan.rows)
        while start < n_variants:
            stop = min(n_variants, start + per_chunk)
            rows = order[start:stop]
            try:
                out[rows] = self._run_chunk(runs, [variants[i] for i in rows], base, abl, seed)
            except (torch.OutOfMemoryError, RuntimeError) as error:
                if not _is_oom(error) or stop - start == 1:
                    raise
                per_chunk = max(1, (stop - start) // 2)
                plan.rows, plan.halved = per_chunk * batch, plan.halved + 1
                self._oom_tokens = plan.rows * task.seq_len  # later runs start at a size known to fit
                _free_memory()
                continue
            start = stop
            self._progress_update(shown, desc, start, n_variants)
        self._progress_end(shown)
        return out

    def plan_chunk(self, task: Task, live: bool = False) -> ChunkPlan:
        """How :meth:`run` chunks ``task``'s variants: ``max_batch`` if given, else from free memory.

        From memory: ``MEMORY_SHARE`` of :func:`available_memory` on the model's device
        over :func:`activation_bytes_per_row` for the task's length (``live``: variants
        with live patch sources, such as edge ablation), between one variant and
        :data:`MAX_AUTO_ROWS` rows; :data:`DEFAULT_MAX_BATCH` where the free memory
        cannot be read. After an out-of-memory, never more rows x tokens than the
        chunk that fit.
        """
        batch, seq_len = task.n_examples, task.seq_len
        if self.max_batch is not None:
            plan = ChunkPlan(self.max_batch, "max_batch", batch, seq_len)
        else:
            dtype = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), torch.float32)
            per_row = activation_bytes_per_row(self.model.cfg, seq_len, dtype, live=live)
            free = available_memory(self.device)
            if free is None:
                plan = ChunkPlan(DEFAULT_MAX_BATCH, "default", batch, seq_len, per_row)
            else:
                rows = min(MAX_AUTO_ROWS, int(MEMORY_SHARE * free) // per_row)
                plan = ChunkPlan(max(batch, rows), "memory", batch, seq_len, per_row, free)
        if self._oom_tokens is not None:
            plan.rows = min(plan.rows, max(batch, self._oom_tokens // seq_len))
        return plan

    def _prefetch(self, runs: TaskRuns, variants: Sequence[Variant], abl: _ablation.Ablation, base: str, fast: bool) -> None:
        by_source: dict[str, set[str]] = {"clean": set(), "corrupt": set(), "ablated": set()}
        live = []
        for variant in variants:
            for patch in variant:
                if isinstance(patch.source, str):
                    if patch.source not in by_source:
                        raise ArgumentError(f"patch source {patch.source!r} is not valid: use 'clean', 'corrupt', 'ablated' or a tensor")
                    by_source[patch.source].add(patch.hook)
                elif is_live(patch.source):
                    live.append(patch.source)
        by_kind: dict[type, list] = {}
        for source in dict.fromkeys(live):  # what a live source reads during the forward must be cached before it
            needs = source.needs()
            by_source["ablated"] |= needs.get("ablated", set())
            by_source[base] |= needs.get("base", set())
            by_kind.setdefault(type(source), []).append(source)
        for kind, sources in by_kind.items():
            kind.prepare(self.model, runs, sources)  # e.g. verify what it recomputes, before any forward
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
            logits = self._fast_logits(runs, variants, base, abl, seed)
        if logits is None:
            logits = self._general_logits(runs, variants, base, abl, seed)
        self.forward_passes += 1
        logits = logits.view(n, batch, *logits.shape[1:])
        return torch.stack([self.score(logits[v], task, runs.clean.logits) for v in range(n)])

    def _fast_logits(self, runs: TaskRuns, variants: Sequence[Variant], base: str, abl, seed: int) -> torch.Tensor | None:
        """The chunk's logits by the fast forward, or None where it does not apply (or failed its check)."""
        fast = _fastpath.FastForward.of(self.model, forced=self.fast is True)
        if fast is None or not fast.patches({patch.hook for variant in variants for patch in variant}):
            return None
        base_run = getattr(runs, base)
        if base not in runs.fast_traces:  # the runs are remade when the weights change, and their traces with them
            trace = fast.trace(base_run["blocks.0.hook_resid_pre"], base_run.logits)
            if trace is None:
                return None
            runs.fast_traces[base] = trace
        if base not in runs.fast_read:
            runs.fast_read[base] = _fastpath.metric_positions(runs.task, base_run.logits, runs.clean.logits)
        hooks, _ = self._chunk_hooks(runs, variants, abl, seed, base)
        chunk = fast.run(runs.fast_traces[base], variants, hooks, runs.fast_read[base])
        for name, count in chunk.work.items():
            self.fast_work[name] = self.fast_work.get(name, 0) + count
        if chunk.check:  # first use of a kind of hook point: the listed variants also run the general way
            expected = self._general_logits(runs, [variants[i] for i in chunk.check], base, abl, seed)
            if not fast.confirm(chunk, expected, lambda logits: self.score(logits, runs.task, runs.clean.logits)):
                return None
        self.fast_passes += 1
        return chunk.logits

    def _chunk_hooks(self, runs: TaskRuns, variants: Sequence[Variant], abl, seed: int, base: str = "clean"):
        """The chunk's (hook name, function) list and its plans (live sources share one dict per forward)."""
        task = runs.task
        n, batch = len(variants), task.n_examples
        # Per hook: a boolean mask [n, *index] per named source, and explicit-tensor patches.
        plans: dict[str, HookPlan] = {}
        for v, variant in enumerate(variants):
            for patch in variant:
                plan = plans.setdefault(patch.hook, HookPlan(patch.hook, n))
                plan.add(v, patch)

        sources = {
            "clean": lambda hook: runs.clean[hook],
            "corrupt": lambda hook: runs.corrupt[hook],
            "ablated": lambda hook: self.ablated_value(task, abl, hook, seed),
        }
        base_run = getattr(runs, base)
        shared = {"model": self.model, "base": lambda hook: base_run[hook], "ablated": sources["ablated"], "seq_len": task.seq_len}
        return [(hook, plan.hook_fn(batch, sources, shared)) for hook, plan in plans.items()], plans

    def _general_logits(self, runs: TaskRuns, variants: Sequence[Variant], base: str, abl, seed: int) -> torch.Tensor:
        """One full forward of the base input repeated per variant, with the variants' hooks."""
        base_tokens = (runs.clean if base == "clean" else runs.corrupt).tokens
        tokens = base_tokens.repeat(len(variants), 1)
        hooks, plans = self._chunk_hooks(runs, variants, abl, seed, base)
        with torch.no_grad():
            logits = self.model.run_with_hooks(tokens, fwd_hooks=hooks)
        for hook, plan in plans.items():
            if not plan.fired:
                raise CircuitCheckError(f"hook {hook!r} never fired: model {model_label(self.model)} has no such activation")
        return logits

    # Progress on a terminal only ------------------------------------------------

    def _progress_start(self, desc: str, total: int, rows: int) -> bool:
        return self.progress and total * rows > 0 and total > max(1, rows) // 4

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

    # Sweeps and path patching (their own modules) ---------------------------------

    @_holding_model
    def sweep(self, task: Task, what: str, *, direction: str = "denoise") -> Sweep:
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
        return _sweeps.sweep(self, task, what, direction=direction)

    @_holding_model
    def sender_delta(self, task: Task, senders: Sequence[Component], direction: str = "denoise") -> torch.Tensor:
        """The change in what the senders write to the residual stream, ``[batch, pos, d_model]``.

        ``"denoise"``: clean write minus corrupted write (added on the corrupted run);
        ``"noise"``: corrupted minus clean (added on the clean run).
        """
        return _paths.sender_delta(self, task, senders, direction)

    @_holding_model
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
        return _paths.path_patch(self, task, senders, receivers, direction)

    @_holding_model
    def path_sweep(self, task: Task, sender: "Component | str", port: str = "q", direction: str = "denoise") -> Sweep:
        """Path patching from ``sender`` into the ``port`` input of every later head: a :class:`Sweep` over ``(layer, head)``.

        Only the layers after the sender's are in it (TransformerLens's
        ``get_act_patch_direct_path`` writes 0.0 there); ``.mean`` is the mean
        metric, ``.normalized`` 0 = corrupted run, 1 = clean run. Inside a test
        its heatmap goes to the report, as :meth:`sweep`'s does.
        """
        return _paths.path_sweep(self, task, sender, port, direction)


def shared_patcher(model, max_batch: int | None = None) -> Patcher:
    """The patcher of ``model`` that every check shares, kept in the model's session.

    ``max_batch``: rows per forward; None (default) chooses them from free memory per run.
    """
    return session_of(model).shared(("patcher", max_batch), lambda: Patcher(model, max_batch=max_batch))


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def _free_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

