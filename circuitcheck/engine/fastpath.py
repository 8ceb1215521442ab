"""A verified fast path for the batched patcher: compute only what a patch can change.

In a causal decoder, a patch that touches layer ``L`` and later, at positions
``p`` and later, cannot change anything before layer ``L`` or before position
``p``. The general path still recomputes all of it, for every variant, and
unembeds every position. The fast path does not:

- every variant's residual stream before its first patched layer is the base
  run's (cached once per task and base input);
- at each later layer only the tokens at or after the variant's first patched
  position are computed; the keys and values of the earlier positions are the
  base run's;
- the unembedding is computed only at the positions the metric reads
  (:meth:`circuitcheck.metrics.Metric.reads`).

Variants with different first layers and positions share one batch: the work
is "ragged" (only the active tokens go through the projections and MLPs), so
there is no need to cut chunks where the first patched layer changes.

The forward (:mod:`circuitcheck.engine.kernel`) is written from the model's own weights, for the
architectures it knows: GPT-2 style (learned positions, LayerNorm, GELU MLP)
and rotary + RMSNorm style (adjacent-pair rotary as TransformerLens's native
models, half-split rotary as Hugging Face Llama; grouped-query attention;
gated MLPs), attention-only or not. At each hook point a patch can use
(:data:`HOOKS`), the patcher's own hook functions are called on the activation
as TransformerLens shapes it, so a patch means exactly what it means on the
general path.

The patcher calls :class:`FastForward` with plain data (the base run's
activations and logits, the variants, their hook functions, the logit positions
to read); it returns the logits, the work done, and which variants the patcher
should also run the general way so that it can verify them.

Trust, but verify: the kernel's forward of each base input must reproduce the
model's own logits, and on first use per model and kind of hook point the
variant using it that moves the logits most (and the chunk's last variant) also
run the general way; their logits (where the metric reads them) and their
metric values must agree to :func:`tolerance` of the model's precision times
the logits' scale (``max(1, largest |logit|)``; for the metric, the larger of
that and the largest |metric value|). A kind counts as verified only once a
compared variant moved the logits by more than that. If anything disagrees, the
fast path is turned off for that model for the rest of the session, with one
line on stderr. A metric's declared positions are checked per task
(:func:`metric_positions`). Anything it does not know (a hook point outside
:data:`HOOKS`, an architecture it cannot read, weights on several devices) runs
the general path unchanged.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .hooks import patch_layer, split_hook, start_layer, start_position  # noqa: F401 (the fast path's view of a patch)
from .kernel import Arch, Layer, Norm, Trace, expand_logits, forward  # noqa: F401 (forward: looked up here, so tests can replace it)
from .session import session_of, sessions

#: Roundings to the model's own precision that two implementations of one forward may differ by.
DTYPE_ROUNDINGS = 8
#: Float32 roundings they may differ by in any precision: matrix products accumulate in (at least)
#: float32, in another order per implementation, and normalisations compute in float32 (Hugging
#: Face's RMSNorm even for float64 models). 128: power's mutations of zoo:induction-2l (weights
#: scrambled, swapped or copied) gave kernel-minus-model differences of up to 66 float32 roundings
#: of the logits' scale in float32; 32 turned the fast path off there mid-suite.
FLOAT32_ROUNDINGS = 128


def tolerance(dtype: torch.dtype) -> float:
    """How far the fast path may differ from the general path, relative to the logits' scale, in ``dtype``.

    ``DTYPE_ROUNDINGS * finfo(dtype).eps + FLOAT32_ROUNDINGS * finfo(float32).eps``:
    float32 1.6e-5, bfloat16 6.3e-2, float16 7.8e-3. Multiplied by the scale
    ``max(1, largest |logit|)``, this is the largest difference the verification
    accepts. Measured kernel-minus-model differences on the test models (up to
    16 layers, d_model 768, weights up to 15x the usual initialisation), in units of
    ``finfo(dtype).eps`` times that scale: at most 15 in float32, at most 1.6 in
    bfloat16 and float16; on mutated copies of the zoo models (test power) up to 66 in
    float32. Half-precision products accumulate in float32 and round
    once, so their differences are a few roundings of the output; float32 outputs
    carry the accumulation order's error, tens of float32 roundings. A fixed 1e-4
    would be 840 float32 roundings (hiding real differences there) and below one
    bfloat16 rounding (turning the fast path off for every bfloat16 model).
    """
    if not dtype.is_floating_point:
        raise ValueError(f"dtype {dtype} is not a floating-point type: the fast path's tolerance is for logits")
    return DTYPE_ROUNDINGS * torch.finfo(dtype).eps + FLOAT32_ROUNDINGS * torch.finfo(torch.float32).eps


def coarsest(dtypes) -> torch.dtype:
    """The least precise of ``dtypes`` (largest epsilon): the precision two runs can be compared at."""
    return max(dtypes, key=lambda dtype: torch.finfo(dtype).eps)

# Block implementations the fast path reads by default. ``Patcher(fast=True)``
# also tries any other bridge whose weights it can read (still verified on first use).
KNOWN_BLOCKS = frozenset({"NativeBlock", "GPT2Block", "LlamaDecoderLayer"})

# Hook points (the part after ``blocks.{layer}.``) the kernel calls patch functions at,
# in the order a block computes them. ``hook_resid_mid`` follows TransformerBridge:
# it is the MLP's LayerNorm input, so writing it changes what the MLP reads only.
HOOKS = (
    "hook_resid_pre",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.hook_pattern",
    "attn.hook_z",
    "hook_attn_out",
    "hook_resid_mid",
    "mlp.hook_in",
    "mlp.hook_pre",
    "mlp.hook_pre_linear",
    "mlp.hook_post",
    "hook_mlp_out",
    "hook_resid_post",
)



# Per-model state: in the model's session -------------------------------------------------------


class _ModelState:
    def __init__(self) -> None:
        self.disabled: str | None = None  # why, once verification failed
        self.verified: set[str] = set()  # hook kinds checked against the general path
        self.archs: dict[bool, tuple] = {}  # forced -> (Arch or None, why not)
        self.generation: int | None = None  # the session's weights generation the archs were read at
        self.unsupported: str | None = None  # why the kernel cannot read this model


def state(model) -> _ModelState:
    """The fast path's state for ``model`` (kept in its session, for the model's life)."""
    return session_of(model).state("fastpath", _ModelState)


def reset(model=None) -> None:
    """Forget verification results (for one model, or all): the next use verifies again."""
    for session in sessions() if model is None else [session_of(model)]:
        session.forget("fastpath")


class Unsupported(Exception):
    """Something the fast path does not know; the general path runs instead."""


def _original(module):
    return getattr(module, "original_component", None)


def _norm(bridge_module) -> Norm:
    original = _original(bridge_module) if bridge_module is not None else None
    if bridge_module is None or original is None or isinstance(original, torch.nn.Identity):
        return Norm("none")
    name = type(original).__name__
    if isinstance(original, torch.nn.LayerNorm):
        return Norm("ln", original.weight, original.bias, float(original.eps))
    if name == "NativeLayerNormPre":
        return Norm("ln", None, None, float(original.eps))
    if name == "NativeRMSNormPre":
        return Norm("rms", None, None, float(original.eps))
    if name in ("NativeRMSNorm", "LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm"):
        eps = getattr(original, "eps", getattr(original, "variance_epsilon", None))
        if eps is None:
            raise Unsupported(f"{name} without an epsilon")
        return Norm("rms", original.weight, None, float(eps))
    raise Unsupported(f"normalisation {name}")


_ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


def _activation(model, original_mlp) -> Callable:
    for name in ("act", "act_fn"):
        fn = getattr(original_mlp, name, None)
        if callable(fn):
            return fn
    act = (getattr(model.cfg, "act_fn", None) or "").lower()
    if act not in _ACTIVATIONS:
        raise Unsupported(f"activation {act!r}")
    return _ACTIVATIONS[act]


def _scale(model, original_attn, d_head: int) -> float:
    scale = getattr(original_attn, "scale", None)
    if isinstance(scale, (int, float)) and type(original_attn).__name__ == "NativeAttention":
        return float(scale)
    scaling = getattr(original_attn, "scaling", None)
    if isinstance(scaling, (int, float)) and scaling > 0:
        return 1.0 / float(scaling)
    if type(original_attn).__name__ == "GPT2Attention":
        if getattr(original_attn, "scale_attn_by_inverse_layer_idx", False):
            raise Unsupported("GPT-2 attention scaled by the inverse layer index")
        return math.sqrt(d_head) if getattr(original_attn, "scale_attn_weights", True) else 1.0
    cfg = model.cfg
    if getattr(cfg, "use_attn_scale", True) and getattr(cfg, "attn_scale", -1.0) > 0:
        return float(cfg.attn_scale)
    return math.sqrt(d_head)


def _flat_heads(W: torch.Tensor) -> torch.Tensor:
    """``[heads, d_model, d_head]`` -> ``[d_model, heads * d_head]`` (a view where the layout allows)."""
    return W.permute(1, 0, 2).reshape(W.shape[1], -1)


def _flat_bias(b: torch.Tensor | None) -> torch.Tensor | None:
    return None if b is None else b.reshape(-1)


def _rotary_tables(model) -> tuple[str, int, torch.Tensor, torch.Tensor]:
    original = getattr(model, "original_model", None)
    native = getattr(original, "rotary", None)
    if native is not None and type(native).__name__ == "NativeRotary":
        return "adjacent", int(native.rotary_dim), native.cos_cached, native.sin_cached
    emb = getattr(getattr(original, "model", None), "rotary_emb", None)
    emb = _original(emb) or emb  # TransformerBridge wraps it (calling the wrapper would fire its hooks)
    if emb is not None and type(emb).__name__ in ("LlamaRotaryEmbedding", "MistralRotaryEmbedding", "Qwen2RotaryEmbedding"):
        n_ctx = int(getattr(model.cfg, "n_ctx", 0) or 0)
        if n_ctx <= 0:
            raise Unsupported("rotary model without n_ctx")
        positions = torch.arange(n_ctx, device=emb.inv_freq.device)[None]
        probe = torch.zeros(1, dtype=torch.float32, device=emb.inv_freq.device)
        with torch.no_grad():
            cos, sin = emb(probe, positions)
        return "half", int(cos.shape[-1]), cos[0], sin[0]
    raise Unsupported("rotary embedding of an unknown kind")


def read_arch(model, forced: bool = False) -> Arch:
    """The model's weights as the kernel uses them, or :class:`Unsupported`."""
    cfg = model.cfg
    modules = getattr(model, "_modules", {})
    if "blocks" not in modules or not all(hasattr(model, name) for name in ("ln_final", "unembed")):
        raise Unsupported("no blocks / ln_final / unembed")
    if any(getattr(cfg, flag, False) for flag in ("is_visual_model", "is_audio_model", "is_multimodal")):
        raise Unsupported("not a text model")
    if any(hasattr(model, alt) for alt in ("encoder_blocks", "decoder_blocks", "L_blocks", "H_blocks")):
        raise Unsupported("not a plain decoder stack")
    if getattr(cfg, "attention_dir", "causal") != "causal":
        raise Unsupported("bidirectional attention")
    for cap in ("attn_scores_soft_cap", "output_logits_soft_cap"):
        if float(getattr(cfg, cap, -1.0) or -1.0) > 0:
            raise Unsupported(cap)
    places = {(p.device, p.dtype) for p in model.parameters()}
    if len({device for device, _ in places}) > 1:
        raise Unsupported("weights on several devices")
    dtypes = {dtype for _, dtype in places}
    if not all(dtype.is_floating_point for dtype in dtypes):
        raise Unsupported(f"weights of type {sorted(str(d) for d in dtypes if not d.is_floating_point)} (quantised?)")
    originals = {type(_original(block)).__name__ for block in model.blocks}
    if len(originals) != 1:
        raise Unsupported(f"mixed block types {sorted(originals)}")
    if not forced and not originals <= KNOWN_BLOCKS:
        raise Unsupported(f"block type {originals.pop()}")

    n_heads, d_head, d_model = int(cfg.n_heads), int(cfg.d_head), int(cfg.d_model)
    attn_only = bool(getattr(cfg, "attn_only", False))
    gated = bool(getattr(cfg, "gated_mlp", False))
    layers: list[Layer] = []
    n_kv = n_heads
    act = None
    d_mlp = 0
    first_attn = None
    with torch.no_grad():
        for block in model.blocks:
            attn = block.attn
            first_attn = first_attn or _original(attn)
            W_Q, W_K, W_V, W_O = attn.W_Q, attn.W_K, attn.W_V, attn.W_O
            n_kv = W_K.shape[0]
            if W_Q.shape != (n_heads, d_model, d_head) or W_K.shape != W_V.shape or W_K.shape[1:] != (d_model, d_head):
                raise Unsupported(f"attention weights shaped {tuple(W_Q.shape)} / {tuple(W_K.shape)}")
            if n_heads % n_kv:
                raise Unsupported(f"{n_heads} heads over {n_kv} key-value heads")
            layer = Layer(
                _norm(block.ln1), _flat_heads(W_Q), _flat_heads(W_K), _flat_heads(W_V),
                _flat_bias(attn.b_Q), _flat_bias(attn.b_K), _flat_bias(attn.b_V),
                W_O.reshape(n_heads * d_head, d_model), attn.b_O,
            )
            if not attn_only:
                mlp = block.mlp
                if getattr(_original(mlp), "ln", None) is not None:
                    raise Unsupported("an MLP with a LayerNorm inside (SoLU-LN)")
                act = act or _activation(model, _original(mlp))
                layer.W_in, layer.b_in, layer.W_out, layer.b_out = mlp.W_in, mlp.b_in, mlp.W_out, mlp.b_out
                d_mlp = layer.W_in.shape[1]
                if gated:
                    layer.W_gate = mlp.W_gate
                    if layer.W_gate is None:
                        raise Unsupported("a gated MLP without W_gate")
                layer.ln2 = _norm(block.ln2)
            layers.append(layer)
        arch = Arch(
            n_heads=n_heads, n_kv=n_kv, d_head=d_head, d_model=d_model, d_mlp=d_mlp,
            scale=_scale(model, first_attn, d_head), gated=gated, attn_only=attn_only, act=act or (lambda x: x),
            layers=layers, ln_final=_norm(model.ln_final), W_U=model.W_U, b_U=getattr(model, "b_U", None),
            dtype=coarsest(dtypes),
        )
        positional = (getattr(cfg, "positional_embedding_type", "standard") or "standard").lower()
        if positional == "rotary":
            arch.rotary, arch.rotary_dim, arch.cos, arch.sin = _rotary_tables(model)
        elif positional != "standard":
            raise Unsupported(f"positional embedding {cfg.positional_embedding_type!r}")
    return arch


def arch_of(model, forced: bool = False) -> Arch | None:
    """The model's :class:`Arch` (read again when its weights change), or None if the kernel cannot read it."""
    model_state = state(model)
    if model_state.disabled is not None:
        return None
    generation = session_of(model).generation
    if model_state.generation != generation:
        model_state.generation = generation
        model_state.verified.clear()
        model_state.archs = {}
    if forced not in model_state.archs:
        try:
            model_state.archs[forced] = (read_arch(model, forced), None)
        except (Unsupported, AttributeError, TypeError, RuntimeError) as error:
            model_state.archs[forced] = (None, str(error) or type(error).__name__)
    arch, model_state.unsupported = model_state.archs[forced]
    return arch


def supports(model, forced: bool = False) -> bool:
    """Whether the fast path may be tried on ``model`` (it is still verified on first use)."""
    return arch_of(model, forced) is not None


def hooks_supported(model, hooks) -> bool:
    """Whether every hook in ``hooks`` is a point the kernel can patch on ``model``."""
    n_layers = model.cfg.n_layers
    for hook in hooks:
        split = split_hook(hook)
        if split is None or split[1] not in HOOKS or not 0 <= split[0] < n_layers:
            return False
        if getattr(model.cfg, "attn_only", False) and (split[1].startswith("mlp.") or split[1] in ("hook_mlp_out", "hook_resid_mid")):
            return False
        if split[1] == "mlp.hook_pre_linear" and not getattr(model.cfg, "gated_mlp", False):
            return False
    return True




# The patcher's interface -------------------------------------------------------------------------


@dataclass
class FastChunk:
    """A chunk of variants run by the fast path.

    ``logits``: ``[variants * batch, pos, vocab]`` (positions the metric does not read are
    not computed, see :func:`~circuitcheck.engine.kernel.expand_logits`). ``check``: the
    variants to run the general way and hand to :meth:`FastForward.confirm` (empty once
    every kind of hook point used is verified). ``work``: what was computed
    (``token_layers``, ``kv_only``, ``unembedded``).
    """

    logits: torch.Tensor
    computed: torch.Tensor  # the logits at the read positions only, [variants * batch, len(read), vocab]
    read: list[int]
    batch: int
    check: list[int]
    kinds: set[str]
    reference: torch.Tensor  # the model's own base logits at the read positions
    work: dict[str, int] = field(default_factory=dict)


class FastForward:
    """The fast path of one model; :meth:`of` gives it where the kernel can read the model.

    The patcher calls :meth:`patches`, :meth:`trace` (once per base input),
    :meth:`run` (per chunk) and, for the variants a chunk lists in ``check``,
    :meth:`confirm` with their general-path logits. It never sees the patcher.
    """

    def __init__(self, model, arch: Arch):
        self.model = model
        self.arch = arch
        self.state = state(model)

    @classmethod
    def of(cls, model, forced: bool = False) -> "FastForward | None":
        """The fast path of ``model``, or None where it does not apply (unreadable, or turned off after a failed check)."""
        arch = arch_of(model, forced)
        return None if arch is None else cls(model, arch)

    def patches(self, hooks) -> bool:
        """Whether the kernel can patch every hook point in ``hooks`` (a chunk without any takes the general path)."""
        return bool(hooks) and hooks_supported(self.model, hooks)

    def trace(self, resid_pre0: torch.Tensor, logits: torch.Tensor) -> Trace | None:
        """The kernel's run of a base input from its ``blocks.0.hook_resid_pre`` ``[batch, pos, d_model]``.

        None (and the fast path off for the model) if it misses the model's own ``logits``.
        """
        batch, P, _ = resid_pre0.shape
        record = Trace(resid=[], logits=logits)
        zeros = torch.zeros(batch, dtype=torch.long, device=resid_pre0.device)
        with torch.no_grad():
            got = forward(self.arch, Trace(resid=[resid_pre0]), 1, zeros, zeros, list(range(P)), record=record)
        ok, diff = _close(got, logits, self.arch.dtype)
        if not ok:
            self._disable(diff)
            return None
        return record

    def run(self, trace: Trace, variants: Sequence[Sequence], hooks: Sequence[tuple[str, Callable]], read: list[int]) -> FastChunk:
        """Run ``variants`` (lists of patches) of the traced base input; ``hooks`` are their (hook name, function) pairs."""
        batch, P = trace.resid[0].shape[:2]
        device = trace.resid[0].device
        n = len(variants)
        layers = torch.tensor([start_layer([v]) for v in variants], device=device)
        firsts = torch.tensor([start_position(v, P) for v in variants], device=device)
        by_point = {split_hook(name): fn for name, fn in hooks}
        work: dict[str, int] = {}
        with torch.no_grad():
            computed = forward(self.arch, trace, n, layers.repeat_interleave(batch), firsts.repeat_interleave(batch), read,
                               by_point, work=work)
        reference = trace.logits[:, read].to(computed.dtype)
        kinds = {split_hook(patch.hook)[1] for variant in variants for patch in variant}
        check: list[int] = []
        if not kinds <= self.state.verified:
            # For each kind of hook point not yet verified, the variant using it that moves the
            # logits most (a patch without effect would verify nothing), and the last variant.
            effect = (computed.view(n, batch, *computed.shape[1:]) - reference).abs().flatten(1).amax(1)
            picks: set[int] = {n - 1}
            for kind in kinds - self.state.verified:
                using = [i for i, v in enumerate(variants) if any(split_hook(p.hook)[1] == kind for p in v)]
                picks.add(max(using, key=lambda i: float(effect[i])))
            check = sorted(picks)
        return FastChunk(expand_logits(computed, read, P), computed, read, batch, check, kinds, reference, work)

    def confirm(self, chunk: FastChunk, expected: torch.Tensor, score: Callable[[torch.Tensor], torch.Tensor]) -> bool:
        """Compare the ``check`` variants with their general-path logits ``expected`` ``[len(check) * batch, pos, vocab]``.

        Their logits (where read) must agree to :func:`tolerance` of the model's precision
        times the logits' scale, and their ``score`` (the task's metric of logits) to the
        same times the larger of the logits' scale and the metric's. False, with the fast
        path off for the model and one line on stderr, if they do not.
        """
        batch, read, P = chunk.batch, chunk.read, chunk.logits.shape[1]
        dtype = coarsest([self.arch.dtype, expected.dtype])
        got = torch.cat([chunk.computed[i * batch : (i + 1) * batch] for i in chunk.check])
        ok, diff = _close(got, expected[:, read], dtype)
        if ok:  # the results themselves (the metric) must agree too
            logit_scale = _scale_of(expected[:, read])
            for i in range(len(chunk.check)):
                rows = slice(i * batch, (i + 1) * batch)
                want = score(expected[rows])
                metric_diff = float((score(expand_logits(got[rows], read, P)) - want).abs().max())
                diff = max(diff, metric_diff)
                ok = ok and metric_diff <= tolerance(dtype) * max(logit_scale, _scale_of(want))
        if not ok:
            self._disable(diff)
            return False
        moved = float((expected[:, read].float() - chunk.reference.repeat(len(chunk.check), 1, 1).float()).abs().max())
        if moved > tolerance(dtype) * _scale_of(chunk.reference):
            self.state.verified |= chunk.kinds  # else nothing was tested: verify again on the next chunk
        return True

    def _disable(self, diff: float) -> None:
        from ..model.components import model_label

        self.state.disabled = f"differs by {diff:.2e}"
        sys.stderr.write(f"circuitcheck: fast path disabled for {model_label(self.model)}: differs by {diff:.2e}\n")
        sys.stderr.flush()


def _scale_of(values: torch.Tensor) -> float:
    """``max(1, largest |value|)``: what a tolerance is relative to."""
    return max(1.0, float(values.abs().max())) if values.numel() else 1.0


def _close(got: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> tuple[bool, float]:
    """Whether ``got`` equals ``expected`` to :func:`tolerance` of ``dtype`` times ``expected``'s scale; and the largest difference."""
    if got.shape != expected.shape:
        return False, float("inf")
    diff = float((got.float() - expected.float()).abs().max()) if got.numel() else 0.0
    return diff <= tolerance(coarsest([dtype, expected.dtype])) * _scale_of(expected), diff


def metric_positions(task, logits: torch.Tensor, clean_logits: torch.Tensor) -> list[int]:
    """The logit positions the fast path computes for ``task``'s metric: those it declares, once checked.

    The check, on the base run's ``logits`` ``[batch, pos, vocab]``: the metric must give the
    same values when every other position is NaN, and when it is zero. A metric that
    reads positions it does not declare gets every position computed, with one line on
    stderr. Callers keep the answer per task and base input.
    """
    P = logits.shape[1]
    declared = task.metric.reads(P)
    if declared is None or len(declared) >= P:
        return list(range(P))
    with torch.no_grad():
        expected = task.metric(logits, task, clean_logits).float()
        honest = True
        for fill in (float("nan"), 0.0):
            masked = torch.full_like(logits, fill)
            masked[:, declared] = logits[:, declared]
            got = task.metric(masked, task, clean_logits).float()
            honest = honest and bool(torch.isfinite(got).all()) and bool(((got - expected).abs() <= 1e-6).all())
    if honest:
        return declared
    sys.stderr.write(
        f"circuitcheck: metric {task.metric.name!r} reads logit positions it does not declare "
        f"(declared: {declared}); the fast path computes every position for it\n"
    )
    sys.stderr.flush()
    return list(range(P))
