"""Lenses: read the residual stream after each layer as a next-token prediction.

- **logit lens**: the residual stream after layer L (``blocks.{L}.hook_resid_post``;
  the embedding, ``blocks.0.hook_resid_pre``, is layer -1) goes through the
  model's own final norm and unembedding, ``model.unembed(model.ln_final(x))``.
  At the last layer this is exactly the model's logits.
- **tuned lens**: per-layer affine translators ``A_L x + b_L`` (d_model x d_model,
  initialised to identity / zero) applied before the final norm and unembedding,
  trained on the model's own activations to minimise KL(final || lens), with a
  held-out split and early stopping on the held-out KL. The last layer keeps the
  identity (the logit lens is exact there). Trained lenses are cached on disk,
  keyed by a sha256 of the model's weights and the training settings.

Every comparison is KL(final || lens) in nats, where "final" is the model's
output distribution at the same position.

    >>> frame = logit_lens(model, "a b c d e a b c d e", k=3)
    >>> lens = tuned_lens(model, seed=0)        # trains once, then loads from the cache
    >>> lens.report()                           # held-out KL per layer, logit vs tuned
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence, Union

import pandas as pd
import torch

from ..model import inputs as _inputs
from ..errors import ArgumentError, CircuitCheckError
from .session import session_of

LENS_KINDS = ("logit", "tuned")
EMBED_LAYER = -1
CACHE_ENV = "CIRCUITCHECK_CACHE_DIR"
_FORMAT_VERSION = 1  # part of the cache key: bump when training changes meaning

TokensOrPrompts = Union[str, Sequence[str], torch.Tensor, Sequence[torch.Tensor]]


# --------------------------------------------------------------------------- inputs


def resid_hook(layer: int) -> str:
    """The hook whose activation is "the residual stream after ``layer``" (-1: the embedding)."""
    return "blocks.0.hook_resid_pre" if layer == EMBED_LAYER else f"blocks.{layer}.hook_resid_post"


def resolve_positions(model, tokens: torch.Tensor, positions=None) -> list[int]:
    """Positions the lens evaluates: sorted non-negative indices, each once.

    ``None``: every position except a leading BOS (when every prompt starts with
    the model's BOS token). Otherwise an int, a sequence of ints or a slice;
    negative indices count from the end (see :func:`circuitcheck.model.inputs.resolve_positions`).
    """
    if positions is None:
        return _inputs.positions_after_bos(model, tokens)
    return sorted(set(_inputs.resolve_positions(positions, int(tokens.shape[1]))))


def check_layers(model, layers, *, allow_embed: bool = True) -> list[int]:
    n = model.cfg.n_layers
    low = EMBED_LAYER if allow_embed else 0
    out = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int) or not low <= layer < n:
            raise ArgumentError(
                f"layer={layer!r} is out of range: the model has {n} layer{'s' if n != 1 else ''}, valid layers are "
                f"{low} to {n - 1}" + (" (-1: the embedding)" if allow_embed else "")
            )
        out.append(layer)
    return out


def _device(model) -> str:
    return getattr(model.cfg, "device", None) or "cpu"


def residuals(model, tokens: torch.Tensor, layers: Sequence[int]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """One forward pass: the model's logits and the residual stream after each of ``layers``."""
    names = {resid_hook(layer) for layer in layers}
    with session_of(model).exclusive(), torch.no_grad():  # weights checked; no other thread's hooks in this forward
        logits, cache = model.run_with_cache(tokens.to(_device(model)), names_filter=lambda name: name in names)
    return logits, {layer: cache[resid_hook(layer)] for layer in layers}


def project(model, resid: torch.Tensor) -> torch.Tensor:
    """The logit lens: ``unembed(ln_final(resid))``."""
    with session_of(model).exclusive(check=False):  # its hook points must not fire another thread's hooks
        return model.unembed(model.ln_final(resid))


def kl_final_lens(final_logprobs: torch.Tensor, lens_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(final || lens) in nats over the last dimension."""
    return (final_logprobs.exp() * (final_logprobs - lens_logprobs)).sum(-1)


# --------------------------------------------------------------------------- measuring


@dataclass
class LensRun:
    """Per-(layer, prompt, position) lens statistics as tensors ``[layers, batch, positions]``."""

    layers: list[int]
    positions: list[int]
    tokens: torch.Tensor
    final_top1: torch.Tensor  # [batch, positions]
    kl: torch.Tensor  # [layers, batch, positions]
    agrees: torch.Tensor  # [layers, batch, positions] bool
    p_final: torch.Tensor  # lens probability of the final top-1 token
    topk_ids: torch.Tensor  # [layers, batch, positions, k]
    topk_probs: torch.Tensor
    lens: str

    def per_layer(self) -> pd.DataFrame:
        """Mean KL, top-1 agreement share and mean probability of the final token, per layer."""
        rows = []
        for i, layer in enumerate(self.layers):
            rows.append(
                {
                    "layer": layer,
                    "mean_kl": float(self.kl[i].mean()),
                    "max_kl": float(self.kl[i].max()),
                    "top1_agreement": float(self.agrees[i].float().mean()),
                    "mean_p_final_top1": float(self.p_final[i].mean()),
                }
            )
        return pd.DataFrame(rows).set_index("layer")

    def frame(self, model) -> pd.DataFrame:
        """One row per (layer, prompt, position)."""
        names = _token_namer(model)
        rows = []
        for i, layer in enumerate(self.layers):
            for b in range(self.tokens.shape[0]):
                for j, pos in enumerate(self.positions):
                    ids = [int(t) for t in self.topk_ids[i, b, j]]
                    rows.append(
                        {
                            "lens": self.lens,
                            "layer": layer,
                            "prompt": b,
                            "position": pos,
                            "token": names(int(self.tokens[b, pos])),
                            "top_k": [names(t) for t in ids],
                            "top_k_probs": [round(float(p), 6) for p in self.topk_probs[i, b, j]],
                            "top1": names(ids[0]),
                            "final_top1": names(int(self.final_top1[b, j])),
                            "p_final_top1": float(self.p_final[i, b, j]),
                            "top1_agrees": bool(self.agrees[i, b, j]),
                            "kl": float(self.kl[i, b, j]),
                        }
                    )
        return pd.DataFrame(rows)


def measure(
    model,
    tokens: torch.Tensor,
    positions: list[int],
    layers: Sequence[int],
    *,
    lens: "str | TunedLens" = "logit",
    k: int = 5,
) -> LensRun:
    """Run the model once and read every layer in ``layers`` through the lens at ``positions``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ArgumentError(f"k={k!r} is not valid: it must be a positive integer")
    k = min(k, model.cfg.d_vocab)
    tuned = lens if isinstance(lens, TunedLens) else None
    if tuned is not None:
        tuned.check_model(model)
    elif lens != "logit":
        raise ArgumentError(f"lens={lens!r} is not valid here: give 'logit' or a TunedLens")
    logits, resid = residuals(model, tokens, layers)
    index = torch.tensor(positions, device=logits.device)
    final = logits.index_select(1, index).float().log_softmax(-1)
    final_top1 = final.argmax(-1)
    kls, agrees, p_final, top_ids, top_probs = [], [], [], [], []
    with torch.no_grad():
        for layer in layers:
            x = resid[layer].index_select(1, index)
            lens_logits = tuned.logits(model, layer, x) if tuned is not None else project(model, x)
            lp = lens_logits.float().log_softmax(-1)
            kls.append(kl_final_lens(final, lp).clamp_min(0.0))
            agrees.append(lens_logits.argmax(-1) == final_top1)
            p_final.append(lp.gather(-1, final_top1.unsqueeze(-1)).squeeze(-1).exp())
            values, ids = lp.topk(k, dim=-1)
            top_ids.append(ids)
            top_probs.append(values.exp())
    return LensRun(
        layers=list(layers),
        positions=positions,
        tokens=tokens,
        final_top1=final_top1.cpu(),
        kl=torch.stack(kls).cpu(),
        agrees=torch.stack(agrees).cpu(),
        p_final=torch.stack(p_final).cpu(),
        topk_ids=torch.stack(top_ids).cpu(),
        topk_probs=torch.stack(top_probs).cpu(),
        lens="logit" if tuned is None else "tuned",
    )


def logit_lens(
    model,
    tokens_or_prompt: TokensOrPrompts,
    positions=None,
    k: int = 5,
    *,
    include_embed: bool = False,
    lens: "str | TunedLens" = "logit",
) -> pd.DataFrame:
    """The logit lens as a table: one row per (layer, prompt, position).

    Args:
        model: a TransformerBridge (or HookedTransformer), in eval mode.
        tokens_or_prompt: a prompt, a list of prompts of the same token length,
            or a ``[batch, pos]`` token tensor.
        positions: int, list of ints or slice (negative from the end); default:
            every position except a leading BOS.
        k: how many top tokens to list.
        include_embed: also read the embedding (``blocks.0.hook_resid_pre``) as layer -1.
        lens: ``"logit"`` (default), ``"tuned"`` (the cached default tuned lens,
            see :func:`tuned_lens`) or a fitted :class:`TunedLens`.

    Columns: ``lens, layer, prompt, position, token`` (the input token there),
    ``top_k`` / ``top_k_probs`` (the lens's k most likely next tokens, strings
    when the model has a tokenizer, else ids), ``top1``, ``final_top1`` (the
    model's own prediction), ``p_final_top1`` (the lens's probability of it),
    ``top1_agrees`` and ``kl`` = KL(final || lens) in nats.
    """
    from ..model.context import require_eval

    require_eval(model)
    tokens = _inputs.as_tokens(model, tokens_or_prompt, what="the lens's inputs")
    chosen = resolve_positions(model, tokens, positions)
    layers = ([EMBED_LAYER] if include_embed else []) + list(range(model.cfg.n_layers))
    if lens == "tuned":
        lens = tuned_lens(model)
    return measure(model, tokens, chosen, layers, lens=lens, k=k).frame(model)


def _token_namer(model):
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return lambda i: int(i)
    return lambda i: str(tokenizer.convert_ids_to_tokens(int(i)))


# --------------------------------------------------------------------------- tuned lens


@dataclass(frozen=True)
class TunedLensSettings:
    """Everything that decides what a tuned lens learns (all of it is in the cache key)."""

    seed: int = 0
    n_prompts: int = 64
    seq_len: int = 32
    holdout: float = 0.25
    max_steps: int = 400
    lr: float = 1e-2
    eval_every: int = 10
    patience: int = 5
    layers: tuple[int, ...] | None = None  # None: every layer before the last (and the embedding)
    data: str = "random"  # "random" (seeded random tokens after BOS) or a digest of the given tokens

    def key(self) -> str:
        payload = json.dumps({"format": _FORMAT_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


class TunedLens:
    """Per-layer affine translators ``x -> A_L x + b_L`` before the final norm and unembedding.

    Layers without a translator (always the last layer) use the identity, so the
    tuned lens equals the logit lens there. Fit with :func:`tuned_lens` (cached)
    or :meth:`fit`.
    """

    def __init__(self, d_model: int, n_layers: int, translators: dict[int, tuple[torch.Tensor, torch.Tensor]], *,
                 settings: TunedLensSettings, weights_hash: str, report: pd.DataFrame | None = None):
        self.d_model = d_model
        self.n_layers = n_layers
        self.translators = translators
        self.settings = settings
        self.weights_hash = weights_hash
        self._report = report
        self.from_cache = False
        self.path: Path | None = None

    # ---- applying
    def translate(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        if layer not in self.translators:
            return x
        A, b = self.translators[layer]
        A = A.to(x.device, x.dtype)
        return x @ A.T + b.to(x.device, x.dtype)

    def logits(self, model, layer: int, x: torch.Tensor) -> torch.Tensor:
        return project(model, self.translate(layer, x))

    def check_model(self, model) -> None:
        if model.cfg.d_model != self.d_model or model.cfg.n_layers != self.n_layers:
            raise CircuitCheckError(
                f"this tuned lens was trained for a model with d_model={self.d_model} and {self.n_layers} layers; "
                f"the model has d_model={model.cfg.d_model} and {model.cfg.n_layers}"
            )

    def report(self) -> pd.DataFrame:
        """Held-out KL(final || lens) per layer for the logit and the tuned lens, with training steps."""
        if self._report is None:
            raise CircuitCheckError("this tuned lens has no training report (it was not fitted by circuitcheck)")
        return self._report.copy()

    # ---- training
    @classmethod
    def fit(cls, model, tokens: torch.Tensor | None = None, settings: TunedLensSettings | None = None) -> "TunedLens":
        """Train translators on ``tokens`` (default: seeded random tokens) with a held-out split."""
        with _one_thread_if_small(model):
            return cls._fit(model, tokens, settings)

    @classmethod
    def _fit(cls, model, tokens: torch.Tensor | None, settings: TunedLensSettings | None) -> "TunedLens":
        global TRAINING_RUNS
        settings = settings or TunedLensSettings()
        _check_settings(settings)
        n_layers = model.cfg.n_layers
        layers = list(settings.layers) if settings.layers is not None else [EMBED_LAYER, *range(n_layers - 1)]
        check_layers(model, layers)
        generator = torch.Generator().manual_seed(settings.seed)
        if tokens is None:
            seq_len = min(settings.seq_len, model.cfg.n_ctx - (1 if _inputs.bos_token_id(model) is not None else 0))
            tokens = _inputs.with_bos(model, _inputs.random_tokens(model, settings.n_prompts, seq_len, settings.seed))
        tokens = tokens.long().cpu()
        n = tokens.shape[0]
        if n < 2:
            raise ArgumentError("the tuned lens needs at least 2 prompts (some are held out for early stopping)")
        order = torch.randperm(n, generator=generator)
        n_held = min(n - 1, max(1, round(settings.holdout * n)))
        held, train = order[:n_held], order[n_held:]
        positions = resolve_positions(model, tokens, None)

        logits, resid = residuals(model, tokens, layers)
        index = torch.tensor(positions, device=logits.device)
        d = model.cfg.d_model

        def rows(t: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
            return t.index_select(0, which.to(t.device)).index_select(1, index).reshape(-1, t.shape[-1]).detach().float()

        target = {"train": rows(logits, train).log_softmax(-1), "held": rows(logits, held).log_softmax(-1)}
        translators: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        records = []
        for layer in layers:
            x_train, x_held = rows(resid[layer], train), rows(resid[layer], held)
            A = torch.nn.Parameter(torch.eye(d, device=x_train.device))
            b = torch.nn.Parameter(torch.zeros(d, device=x_train.device))
            optimizer = torch.optim.Adam([A, b], lr=settings.lr)

            def held_kl() -> float:
                with torch.no_grad():
                    lp = project(model, x_held @ A.T + b).float().log_softmax(-1)
                    return float(kl_final_lens(target["held"], lp).mean())

            logit_kl = best = held_kl()
            best_state, best_step, bad, step = (A.detach().clone(), b.detach().clone()), 0, 0, 0
            for step in range(1, settings.max_steps + 1):
                optimizer.zero_grad()
                lp = project(model, x_train @ A.T + b).float().log_softmax(-1)
                loss = kl_final_lens(target["train"], lp).mean()
                loss.backward()
                optimizer.step()
                if step % settings.eval_every == 0:
                    current = held_kl()
                    if current < best:
                        best, best_state, best_step, bad = current, (A.detach().clone(), b.detach().clone()), step, 0
                    else:
                        bad += 1
                        if bad >= settings.patience:
                            break
            translators[layer] = (best_state[0].cpu(), best_state[1].cpu())
            records.append({"layer": layer, "logit_lens_kl": logit_kl, "tuned_lens_kl": best, "best_step": best_step, "steps": step})
        # the last layer: identity, exact
        with torch.no_grad():
            last = model.cfg.n_layers - 1
            if last not in translators:
                _, last_resid = residuals(model, tokens.index_select(0, held), [last])
                lp = project(model, last_resid[last].index_select(1, index).reshape(-1, d)).float().log_softmax(-1)
                kl = float(kl_final_lens(target["held"], lp).mean())
                records.append({"layer": last, "logit_lens_kl": kl, "tuned_lens_kl": kl, "best_step": 0, "steps": 0})
        report = pd.DataFrame(records).sort_values("layer").set_index("layer")
        report["n_train_positions"] = len(train) * len(positions)
        report["n_heldout_positions"] = n_held * len(positions)
        TRAINING_RUNS += 1
        return cls(d, n_layers, translators, settings=settings, weights_hash=weights_hash(model), report=report)

    # ---- saving
    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        tensors = {}
        for layer, (A, b) in self.translators.items():
            tensors[f"A.{layer}"] = A.contiguous()
            tensors[f"b.{layer}"] = b.contiguous()
        metadata = {
            "format": str(_FORMAT_VERSION),
            "d_model": str(self.d_model),
            "n_layers": str(self.n_layers),
            "weights_hash": self.weights_hash,
            "settings": json.dumps(asdict(self.settings)),
            "report": json.dumps(self._report.reset_index().to_dict(orient="records")) if self._report is not None else "",
        }
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=path.parent)
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=metadata)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.path = path

    @classmethod
    def load(cls, path: Path) -> "TunedLens":
        from safetensors import safe_open

        translators: dict[int, list] = {}
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            for name in f.keys():
                which, layer = name.split(".", 1)
                translators.setdefault(int(layer), [None, None])[0 if which == "A" else 1] = f.get_tensor(name)
        settings = json.loads(metadata["settings"])
        if settings.get("layers") is not None:
            settings["layers"] = tuple(settings["layers"])
        report = None
        if metadata.get("report"):
            report = pd.DataFrame(json.loads(metadata["report"])).set_index("layer")
        lens = cls(
            int(metadata["d_model"]),
            int(metadata["n_layers"]),
            {layer: (A, b) for layer, (A, b) in translators.items()},
            settings=TunedLensSettings(**settings),
            weights_hash=metadata["weights_hash"],
            report=report,
        )
        lens.path = Path(path)
        return lens


@contextmanager
def _one_thread_if_small(model):
    """Train small CPU lenses on one intra-op thread.

    The matrices of a small model (d_model x d_vocab up to 2^16) are too small to
    gain from BLAS threads, and on a busy machine the threads' spin-waits make
    each step tens of times slower (measured: 1.5 s vs 50-90 s for the zoo's
    lens on 2 loaded cores). The previous setting is restored afterwards.
    """
    small = model.cfg.d_model * model.cfg.d_vocab <= 1 << 16 and str(_device(model)).startswith("cpu")
    previous = torch.get_num_threads()
    if small and previous > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


TRAINING_RUNS = 0  # how many tuned lenses this process has trained (a cache hit trains none)


def _check_settings(s: TunedLensSettings) -> None:
    for name in ("n_prompts", "seq_len", "max_steps", "eval_every", "patience"):
        value = getattr(s, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ArgumentError(f"{name}={value!r} is not valid: it must be a positive integer")
    if not 0 < s.holdout < 1:
        raise ArgumentError(f"holdout={s.holdout!r} is not valid: it is the held-out share of prompts, between 0 and 1")
    if not s.lr > 0:
        raise ArgumentError(f"lr={s.lr!r} is not valid: it must be positive")


# --------------------------------------------------------------------------- caching

def weights_hash(model) -> str:
    """sha256 over the model's state_dict (names, dtypes, shapes and bytes, in key order).

    Memoised in the model's session until its weights change.
    """
    memo = session_of(model).derived("weights-hash")
    if "sha256" not in memo:
        h = hashlib.sha256()
        for name, tensor in model.state_dict().items():
            t = tensor.detach().cpu().contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        memo["sha256"] = h.hexdigest()
    return memo["sha256"]


def cache_dir() -> Path:
    """Where tuned lenses are cached: ``$CIRCUITCHECK_CACHE_DIR/tuned_lens`` (default ``~/.cache/circuitcheck/tuned_lens``)."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "circuitcheck"
    return base / "tuned_lens"


def cache_path(model, settings: TunedLensSettings, directory: Path | None = None) -> Path:
    """The cache file of a tuned lens: named by the model's weight hash and the settings' hash only."""
    directory = Path(directory) if directory is not None else cache_dir()
    return directory / f"{weights_hash(model)[:32]}-{settings.key()[:16]}.safetensors"


def tuned_lens(
    model,
    *,
    seed: int = 0,
    tokens: torch.Tensor | None = None,
    task=None,
    layers: Sequence[int] | None = None,
    cache: bool = True,
    directory: str | os.PathLike | None = None,
    **settings,
) -> TunedLens:
    """The model's tuned lens: loaded from the cache when present, else trained (seconds on small models) and saved.

    Args:
        seed: seeds the training inputs and the train / held-out split.
        tokens / task: train on these tokens (or the task's clean inputs)
            instead of seeded random tokens (``n_prompts`` x ``seq_len`` after BOS).
        layers: layers to give translators (default: the embedding and every
            layer before the last; the last layer is exact without one).
        cache: read and write the on-disk cache (``$CIRCUITCHECK_CACHE_DIR/tuned_lens``,
            default ``~/.cache/circuitcheck/tuned_lens``); nothing is written elsewhere.
        directory: a cache directory to use instead.
        **settings: :class:`TunedLensSettings` fields (``n_prompts``, ``seq_len``,
            ``holdout``, ``max_steps``, ``lr``, ``eval_every``, ``patience``).
    """
    from ..model.context import require_eval

    require_eval(model)
    unknown = set(settings) - (set(TunedLensSettings.__dataclass_fields__) - {"data", "seed", "layers"})
    if unknown:
        raise TypeError(f"unknown tuned-lens setting(s): {', '.join(sorted(unknown))}")
    if task is not None:
        task.validate(model)
        tokens = task.clean
    if tokens is not None:
        tokens = _inputs.as_tokens(model, tokens, what="the tuned lens's tokens")
        settings["data"] = "tokens:" + hashlib.sha256(tokens.numpy().tobytes() + str(tuple(tokens.shape)).encode()).hexdigest()
    if layers is not None:
        layers = tuple(layer for layer in check_layers(model, layers) if layer != model.cfg.n_layers - 1)
    config = TunedLensSettings(seed=seed, layers=layers, **settings)
    _check_settings(config)
    path = cache_path(model, config, directory) if cache else None
    if path is not None and path.is_file():
        try:
            lens = TunedLens.load(path)
        except Exception:  # a corrupt file: retrain and overwrite it
            lens = None
        if lens is not None and lens.weights_hash == weights_hash(model):
            lens.check_model(model)
            lens.from_cache = True
            return lens
    lens = TunedLens.fit(model, tokens, config)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        lens.save(path)
    return lens
