"""Linear probes on cached activations: "layer 0's output encodes the previous token".

A :class:`Prober` is bound to one model and a seed. ``prober.fit(hook, inputs,
labels)`` runs the model on ``inputs`` caching only ``hook`` (reused for the
same hook and inputs within the prober), takes the activations at the chosen
positions as features, splits the *prompts* into train and test sets (the
positions of one prompt never sit on both sides), fits a multinomial
logistic-regression probe and reports held-out accuracy against two
references:

- the **majority baseline**: always predict the most frequent training label;
- a **control task**: the same probe, same split, same hyper-parameters,
  trained and tested on control labels. ``control="shuffle"`` (default) permutes
  the labels across examples with a seeded generator: the label marginal is
  kept, the link between activation and label is destroyed, so the control
  accuracy is what the probe scores from label frequencies and chance alone.
  ``control="hewitt-liang"`` is Hewitt & Liang's (2019) control task with the
  token at the probed position as the word type: every token id is mapped
  (seeded) to a control label drawn from the empirical label distribution, so
  the control accuracy measures how well the probe memorises an arbitrary
  function of the current token. ``control=None`` skips it.

``selectivity = accuracy - control accuracy``.

The probe: features standardised with the training set's mean and standard
deviation, logits ``x W + b``, mean cross-entropy plus ``weight_decay * |W|^2``,
fitted full-batch with L-BFGS from zero weights (convex: the optimum does not
depend on the initialisation, and the fit is deterministic).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from ..model import context, inputs as _inputs
from ..errors import CircuitCheckError
from .session import session_of, tokens_digest

DEFAULT_WEIGHT_DECAY = 1e-3
DEFAULT_MAX_ITER = 100
CONTROLS = ("shuffle", "hewitt-liang")


@dataclass
class ProbeResult:
    """What one probe fit measured (all accuracies on the held-out test prompts).

    Attributes:
        hook: the hook point probed, e.g. ``"blocks.0.hook_resid_post"``.
        accuracy: test accuracy of the probe.
        train_accuracy: accuracy on the training examples (a large gap to
            ``accuracy`` means the probe overfits).
        majority_accuracy: test accuracy of always predicting the most frequent
            training label.
        control_accuracy: test accuracy of the same probe on the control task
            (None with ``control=None``).
        selectivity: ``accuracy - control_accuracy`` (None without control).
        control: which control task (``"shuffle"``, ``"hewitt-liang"``, None).
        n_train / n_test: examples (prompt x position) on each side.
        n_train_prompts / n_test_prompts: prompts on each side.
        n_classes: distinct labels; ``n_features``: activation width.
        positions: the probed positions (non-negative indices).
        seed, weight_decay: what the fit used.
        per_class: test accuracy per label (index ``label``; columns
            ``n_train``, ``n_test``, ``accuracy``).
        test_correct / control_correct: per test example 0/1 correctness, and
            ``test_prompt`` the prompt each test example came from (for
            bootstrap intervals that resample prompts).
    """

    hook: str
    accuracy: float
    train_accuracy: float
    majority_accuracy: float
    control_accuracy: float | None
    selectivity: float | None
    control: str | None
    n_train: int
    n_test: int
    n_train_prompts: int
    n_test_prompts: int
    n_classes: int
    n_features: int
    positions: list[int]
    seed: int
    weight_decay: float
    per_class: pd.DataFrame = field(repr=False)
    test_correct: np.ndarray = field(repr=False)
    control_correct: np.ndarray | None = field(repr=False)
    test_prompt: np.ndarray = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """The numbers, JSON-safe (floats, ints, strings, None)."""
        return {
            "hook": self.hook,
            "accuracy": float(self.accuracy),
            "train_accuracy": float(self.train_accuracy),
            "majority_accuracy": float(self.majority_accuracy),
            "control_accuracy": None if self.control_accuracy is None else float(self.control_accuracy),
            "selectivity": None if self.selectivity is None else float(self.selectivity),
            "control": self.control,
            "n_train": int(self.n_train),
            "n_test": int(self.n_test),
            "n_train_prompts": int(self.n_train_prompts),
            "n_test_prompts": int(self.n_test_prompts),
            "n_classes": int(self.n_classes),
            "n_features": int(self.n_features),
            "positions": [int(p) for p in self.positions],
            "seed": int(self.seed),
            "weight_decay": float(self.weight_decay),
        }

    def to_frame(self) -> pd.DataFrame:
        """One row: the accuracies, selectivity and sizes (positions as a string)."""
        row = self.summary()
        row["positions"] = _positions_text(self.positions)
        return pd.DataFrame([row])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: the summary plus the per-class table."""
        from ..tables import frame_to_json

        return {**self.summary(), "per_class": frame_to_json(self.per_class)}

    def _repr_html_(self) -> str:
        """The notebook view: the accuracies beside their baselines, in the report's chart (:mod:`circuitcheck.report.notebook`)."""
        from .sweeps import report_view

        return report_view("probe_html")(self)


class Prober:
    """Fits linear probes on one model's activations; caches activations per (hook, inputs).

    ``Prober(model, seed=0)``; ``weight_decay`` and ``max_iter`` set the
    defaults of :meth:`fit`. The model must be in eval mode. The claims
    (``assert_accuracy`` / ``check_accuracy``) are added by
    :class:`circuitcheck.claims.probe.Prober`, the class of the ``probe`` fixture.
    """

    def __init__(self, model, seed: int = 0, *, weight_decay: float = DEFAULT_WEIGHT_DECAY, max_iter: int = DEFAULT_MAX_ITER):
        context.require_eval(model)
        self.model = model
        self.seed = context.resolve_seed(seed)
        self.weight_decay = _check_weight_decay(weight_decay)
        self.max_iter = _check_positive_int("max_iter", max_iter)
        self._activations: dict[tuple[str, str, int], torch.Tensor] = {}  # (hook, tokens, weights generation)

    def __repr__(self) -> str:
        name = getattr(self.model.cfg, "model_name", type(self.model).__name__)
        return f"Prober({name}, seed={self.seed}, cached={len(self._activations)})"

    # inputs and activations ------------------------------------------------
    def tokens(self, inputs) -> torch.Tensor:
        """``inputs`` as ``[batch, pos]`` tokens: a token tensor, prompt(s), or a Task (its clean inputs)."""
        return as_tokens(self.model, inputs)

    def activations(self, hook: str, inputs) -> torch.Tensor:
        """``[batch, pos, ...]`` activations at ``hook`` on ``inputs`` (cached per (hook, inputs))."""
        return self._activations_of(hook, self.tokens(inputs))

    def clear(self) -> None:
        """Forget the cached activations."""
        self._activations.clear()

    def _activations_of(self, hook: str, tokens: torch.Tensor) -> torch.Tensor:
        if not isinstance(hook, str) or not hook:
            raise CircuitCheckError(f"hook={hook!r} is not valid: give a hook name such as 'blocks.0.hook_resid_post'")
        with session_of(self.model).exclusive() as session:  # weights checked; no other thread's hooks in the forward
            key = (hook, tokens_digest(tokens), session.generation)
            for stale in [k for k in self._activations if k[2] != key[2]]:
                del self._activations[stale]  # made before the weights changed
            if key not in self._activations:
                _check_hook_exists(self.model, hook)
                device = getattr(self.model.cfg, "device", None) or "cpu"
                with torch.no_grad():
                    _, cache = self.model.run_with_cache(tokens.to(device), names_filter=lambda name: name == hook)
                if hook not in cache:
                    raise CircuitCheckError(_unknown_hook_message(self.model, hook, "the model ran but never called it"))
                activation = cache[hook].detach()
                if activation.ndim < 3 or tuple(activation.shape[:2]) != tuple(tokens.shape):
                    raise CircuitCheckError(
                        f"hook {hook!r} gives activations of shape {tuple(activation.shape)}: a probe needs [batch, pos, ...] "
                        f"matching the inputs {tuple(tokens.shape)} (attention patterns and scores are [batch, head, q, k])"
                    )
                self._activations[key] = activation
            return self._activations[key]

    # the probe ---------------------------------------------------------------
    def fit(
        self,
        hook: str,
        inputs,
        labels,
        positions: int | Sequence[int] | None = None,
        test_fraction: float = 0.25,
        *,
        control: str | None = "shuffle",
        weight_decay: float | None = None,
        max_iter: int | None = None,
        seed: int | None = None,
    ) -> ProbeResult:
        """Fit a linear probe predicting ``labels`` from ``hook``'s activations on ``inputs``.

        Args:
            hook: a hook point name, e.g. ``"blocks.0.hook_resid_post"``.
            inputs: ``[batch, pos]`` token ids, a prompt or list of prompts
                (tokenised with BOS, all of one length), or a Task (its clean inputs).
            labels: one label per example (ints or strings). With one position
                (``positions`` an int) ``[batch]``; otherwise ``[batch, n]``
                matching the selected positions, or ``[batch, pos]`` (one label
                per input position; the selected columns are used).
            positions: None = every position but BOS (when the inputs start with
                the model's BOS token); an int (negative counts from the end); or
                a list of ints.
            test_fraction: share of the prompts held out for testing.
            control: ``"shuffle"`` (default), ``"hewitt-liang"`` or None; see the module doc.
            weight_decay / max_iter / seed: override the prober's defaults.
        """
        seed = self.seed if seed is None else context.resolve_seed(seed)
        weight_decay = self.weight_decay if weight_decay is None else _check_weight_decay(weight_decay)
        max_iter = self.max_iter if max_iter is None else _check_positive_int("max_iter", max_iter)
        if control is not None and control not in CONTROLS:
            raise CircuitCheckError(f"control={control!r} is not valid: use one of {', '.join(map(repr, CONTROLS))} or None")
        if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
            raise CircuitCheckError(f"test_fraction={test_fraction!r} is not valid: it must be between 0 and 1, e.g. 0.25")

        tokens = self.tokens(inputs)
        n_prompts, seq_len = tokens.shape
        selected, single = select_positions(self.model, tokens, positions)
        label_ids, classes = _label_matrix(labels, n_prompts, seq_len, selected, single)
        if len(classes) < 2:
            raise CircuitCheckError(
                f"the labels have a single class ({_label_text(classes[0])}): a probe needs at least two distinct labels to classify"
            )
        if n_prompts < 2:
            raise CircuitCheckError(f"the inputs have {n_prompts} prompt: a probe needs at least 2 (one to train on, one to test on)")

        activation = self._activations_of(hook, tokens)
        features = activation[:, selected].reshape(n_prompts, len(selected), -1).float()  # [batch, n, d]

        n_test_prompts = min(n_prompts - 1, max(1, int(round(test_fraction * n_prompts))))
        order = torch.randperm(n_prompts, generator=torch.Generator().manual_seed(seed))
        test_prompts, train_prompts = order[:n_test_prompts].sort().values, order[n_test_prompts:].sort().values

        def flat(rows):
            x = features[rows.to(features.device)].reshape(len(rows) * len(selected), -1)
            y = label_ids[rows].reshape(-1)
            return x, y

        x_train, y_train = flat(train_prompts)
        x_test, y_test = flat(test_prompts)
        n_classes = len(classes)

        predict = _fit_logistic(x_train, y_train.to(x_train.device), n_classes, weight_decay, max_iter)
        test_pred = predict(x_test).cpu()
        train_pred = predict(x_train).cpu()
        correct = (test_pred == y_test).numpy().astype(np.float64)

        train_counts = torch.bincount(y_train, minlength=n_classes)
        majority = int(train_counts.argmax())
        majority_accuracy = float((y_test == majority).float().mean())

        control_correct = None
        control_accuracy = selectivity = None
        if control is not None:
            control_ids = _control_labels(control, label_ids, tokens[:, selected], n_classes, seed)
            c_train = control_ids[train_prompts].reshape(-1)
            c_test = control_ids[test_prompts].reshape(-1)
            control_predict = _fit_logistic(x_train, c_train.to(x_train.device), n_classes, weight_decay, max_iter)
            control_correct = (control_predict(x_test).cpu() == c_test).numpy().astype(np.float64)
            control_accuracy = float(control_correct.mean())
            selectivity = float(correct.mean()) - control_accuracy

        test_counts = torch.bincount(y_test, minlength=n_classes).numpy()
        hits = np.bincount(y_test.numpy(), weights=correct, minlength=n_classes)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_class_accuracy = np.where(test_counts > 0, hits / np.maximum(test_counts, 1), np.nan)
        per_class = pd.DataFrame(
            {"n_train": train_counts.numpy(), "n_test": test_counts, "accuracy": per_class_accuracy},
            index=pd.Index([_label_value(c) for c in classes], name="label"),
        )
        return ProbeResult(
            hook=hook,
            accuracy=float(correct.mean()),
            train_accuracy=float((train_pred == y_train).float().mean()),
            majority_accuracy=majority_accuracy,
            control_accuracy=control_accuracy,
            selectivity=selectivity,
            control=control,
            n_train=len(y_train),
            n_test=len(y_test),
            n_train_prompts=len(train_prompts),
            n_test_prompts=len(test_prompts),
            n_classes=n_classes,
            n_features=int(features.shape[-1]),
            positions=[int(p) for p in selected],
            seed=seed,
            weight_decay=weight_decay,
            per_class=per_class,
            test_correct=correct,
            control_correct=control_correct,
            test_prompt=np.repeat(test_prompts.numpy(), len(selected)),
        )


# helpers ----------------------------------------------------------------------


def as_tokens(model, inputs) -> torch.Tensor:
    """``[batch, pos]`` long tokens on the CPU from a tensor, prompt(s) or Task (its clean inputs)."""
    from ..model.tasks import Task

    if isinstance(inputs, Task):
        return inputs.clean.cpu()
    return _inputs.as_tokens(model, inputs, what="probe inputs")


def select_positions(model, tokens: torch.Tensor, positions) -> tuple[list[int], bool]:
    """The probed positions as non-negative indices (default: all but BOS), and whether one int was given."""
    if positions is None:
        return _inputs.positions_after_bos(model, tokens), False
    selected = _inputs.resolve_positions(positions, int(tokens.shape[1]))
    if len(set(selected)) != len(selected):
        raise CircuitCheckError(f"positions {positions!r} name the same position twice")
    return selected, isinstance(positions, (int, np.integer)) and not isinstance(positions, bool)


def _label_matrix(labels, n_prompts: int, seq_len: int, selected: list[int], single: bool) -> tuple[torch.Tensor, np.ndarray]:
    """Labels as ``[batch, n_selected]`` class ids, and the class values (sorted)."""
    if isinstance(labels, torch.Tensor):
        array = labels.detach().cpu().numpy()
    else:
        array = np.asarray(labels)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or not (array == np.round(array)).all():
            raise CircuitCheckError("labels must be class labels (ints or strings), got non-integer floats")
        array = array.astype(np.int64)
    if array.dtype.kind not in "iuUSbO":
        raise CircuitCheckError(f"labels must be ints or strings, got dtype {array.dtype}")
    n = len(selected)
    wanted = [(n_prompts,)] if single else []
    wanted += [(n_prompts, n)]
    if seq_len != n:
        wanted.append((n_prompts, seq_len))
    if array.shape not in wanted:
        what = f"position {selected[0]}" if single else f"{n} selected positions"
        raise CircuitCheckError(
            f"labels have shape {array.shape} but the inputs are {(n_prompts, seq_len)} with {what}: labels must be "
            + " or ".join(str(w) for w in wanted)
        )
    if array.ndim == 1:
        array = array[:, None]
    elif array.shape[1] == seq_len and seq_len != n:
        array = array[:, selected]
    classes, ids = np.unique(array.reshape(-1), return_inverse=True)
    return torch.as_tensor(ids.reshape(n_prompts, n), dtype=torch.long), classes


def _control_labels(control: str, label_ids: torch.Tensor, tokens: torch.Tensor, n_classes: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed + 1)
    flat = label_ids.reshape(-1)
    if control == "shuffle":
        return flat[torch.randperm(len(flat), generator=generator)].reshape(label_ids.shape)
    # Hewitt & Liang: each word type (here: the token at the position) gets a
    # control label drawn from the empirical label distribution.
    types = tokens.reshape(-1)
    distribution = torch.bincount(flat, minlength=n_classes).double()
    unique_types = torch.unique(types)
    drawn = torch.multinomial(distribution, len(unique_types), replacement=True, generator=generator)
    lookup = dict(zip(unique_types.tolist(), drawn.tolist()))
    return torch.tensor([lookup[t] for t in types.tolist()], dtype=torch.long).reshape(label_ids.shape)


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, weight_decay: float, max_iter: int):
    """Fit standardised multinomial logistic regression; returns ``predict(x) -> class ids``."""
    mean = x.mean(0, keepdim=True)
    std = x.std(0, unbiased=False, keepdim=True)
    std = torch.where(std > 1e-6 * std.max().clamp_min(1e-12), std, torch.ones_like(std))
    z = (x - mean) / std
    weight = torch.zeros(z.shape[1], n_classes, dtype=z.dtype, device=z.device, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=z.dtype, device=z.device, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9
    )

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ weight + bias, y) + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    weight, bias = weight.detach(), bias.detach()

    def predict(features: torch.Tensor) -> torch.Tensor:
        return (((features - mean) / std) @ weight + bias).argmax(-1)

    return predict


def _check_hook_exists(model, hook: str) -> None:
    hook_dict = getattr(model, "hook_dict", None)
    if isinstance(hook_dict, dict) and hook not in hook_dict:
        raise CircuitCheckError(_unknown_hook_message(model, hook, "it is not one of the model's hook points"))


def _unknown_hook_message(model, hook: str, why: str) -> str:
    names = list(getattr(model, "hook_dict", {}) or {})
    close = get_close_matches(hook, names, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    return f"hook {hook!r} does not exist in this model ({why}){hint} e.g. 'blocks.0.hook_resid_post', 'hook_embed'"


def _check_weight_decay(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        raise CircuitCheckError(f"weight_decay={value!r} is not valid: it must be a number >= 0")
    return float(value)


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CircuitCheckError(f"{name}={value!r} is not valid: it must be a positive integer")
    return value


def _label_value(value):
    return value.item() if hasattr(value, "item") else value


def _label_text(value) -> str:
    return repr(_label_value(value))


def _positions_text(positions: list[int]) -> str:
    if len(positions) > 1 and positions == list(range(positions[0], positions[-1] + 1)):
        return f"{positions[0]}..{positions[-1]}"
    return ",".join(str(p) for p in positions)


def labels_digest(labels) -> str:
    """A short digest of a label array (for parameters in reports)."""
    array = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    return hashlib.sha1(array.tobytes() + str(array.shape).encode()).hexdigest()[:12]
