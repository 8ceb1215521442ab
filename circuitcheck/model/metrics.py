"""Task metrics: from logits to one value per example.

A metric is called as ``metric(logits, task, clean_logits)`` with
``logits`` ``[batch, pos, vocab]`` of one intervention, the :class:`~circuitcheck.tasks.Task`,
and the clean run's logits (for KL); it returns ``[batch]``. Built-ins read
the task's answer tokens; any plain function of ``logits`` alone can be used
too (:func:`as_metric` wraps it).

Sign conventions do not matter to the causal checks: they normalise by the
gap between the full model and the fully ablated model, whichever way it goes.
"""

from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass, field
from typing import Callable, Hashable, Sequence

import torch

from . import inputs as _inputs
from ..errors import ArgumentError


# Numbers for metrics without a key: never reused in a process (an id() of a freed function can be).
_SERIALS = itertools.count()


@dataclass(frozen=True)
class Metric:
    """A named per-example metric. ``fn(logits, task, clean_logits) -> [batch]``.

    ``key``: what the metric computes, for built-ins (e.g. ``("logit_diff", -1)``), so
    that two tasks with equal inputs and equal built-in metrics share cached runs; a
    metric without one is told apart from every other by a serial number.
    """

    name: str
    fn: Callable
    description: str = ""
    # Which logit positions the metric reads, given the input length (None: possibly all).
    # The patcher's fast path unembeds only these; a metric that reads others must leave it None.
    positions: Callable[[int], Sequence[int]] | None = None
    key: Hashable | None = None
    _serial: int = field(default_factory=lambda: next(_SERIALS), init=False, repr=False, compare=False)

    @property
    def identity(self) -> tuple:
        """What tells this metric's values apart in a task's digest: its ``key``, else its serial number."""
        return ("key", self.key) if self.key is not None else ("serial", self._serial)

    def reads(self, seq_len: int) -> list[int] | None:
        """The sorted logit positions this metric reads on inputs of ``seq_len`` tokens; None if unknown."""
        if self.positions is None:
            return None
        return sorted({_position_index(int(p), seq_len) for p in self.positions(seq_len)})

    def __call__(self, logits: torch.Tensor, task, clean_logits: torch.Tensor | None = None) -> torch.Tensor:
        values = self.fn(logits, task, clean_logits)
        if not isinstance(values, torch.Tensor):
            values = torch.as_tensor(values)
        if values.shape != (logits.shape[0],):
            raise ArgumentError(
                f"metric {self.name!r} returned shape {tuple(values.shape)}: it must return one value per example, "
                f"shape ({logits.shape[0]},)"
            )
        return values

    def __str__(self) -> str:
        return self.description or self.name


def as_metric(metric) -> Metric:
    """A :class:`Metric` from a Metric, or from a plain ``fn(logits) -> [batch]`` (or ``fn(logits, task)``)."""
    if isinstance(metric, Metric):
        return metric
    if not callable(metric):
        raise TypeError(f"a metric must be callable, got {metric!r}")
    try:
        n_params = len(inspect.signature(metric).parameters)
    except (TypeError, ValueError):
        n_params = 1
    name = getattr(metric, "__name__", type(metric).__name__)
    if n_params >= 3:
        return Metric(name, metric)
    if n_params == 2:
        return Metric(name, lambda logits, task, clean: metric(logits, task))
    return Metric(name, lambda logits, task, clean: metric(logits))


def _position_index(position: int, seq_len: int) -> int:
    return _inputs.resolve_positions(position, seq_len, what="metric position")[0]


def _answers(task, which: str) -> torch.Tensor:
    tokens = getattr(task, which)
    if tokens is None:
        raise ArgumentError(f"this metric needs the task's {which.replace('_', ' ')}, and the task has none")
    return tokens


def _gather(logits_at: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``logits_at`` ``[batch, vocab]``, ``tokens`` ``[batch]`` or ``[batch, k]`` -> ``[batch]`` (mean over k)."""
    tokens = tokens.to(logits_at.device)
    if tokens.ndim == 1:
        tokens = tokens[:, None]
    return logits_at.gather(-1, tokens).mean(-1)


def logit_diff(position: int = -1) -> Metric:
    """Logit of the answer minus logit of the wrong answer, at ``position`` (default last)."""

    def fn(logits, task, clean):
        at = logits[:, _position_index(position, logits.shape[1])]
        return _gather(at, _answers(task, "answers")) - _gather(at, _answers(task, "wrong_answers"))

    return Metric("logit_diff", fn, f"logit difference (answer - wrong answer) at position {position}", _at(position),
                  key=("logit_diff", position))


def answer_prob(position: int = -1) -> Metric:
    """Probability of the answer token at ``position``."""

    def fn(logits, task, clean):
        at = logits[:, _position_index(position, logits.shape[1])].float().softmax(-1)
        return _gather(at, _answers(task, "answers"))

    return Metric("answer_prob", fn, f"answer probability at position {position}", _at(position), key=("answer_prob", position))


def answer_logprob(position: int = -1) -> Metric:
    """Log-probability of the answer token at ``position``."""

    def fn(logits, task, clean):
        at = logits[:, _position_index(position, logits.shape[1])].float().log_softmax(-1)
        return _gather(at, _answers(task, "answers"))

    return Metric("answer_logprob", fn, f"answer log-probability at position {position}", _at(position),
                  key=("answer_logprob", position))


def next_token_logprob(positions: Sequence[int] | slice) -> Metric:
    """Mean log-probability of the actual next clean token, over the predicting ``positions``.

    Position ``p`` predicts the clean token at ``p + 1``. Higher is better; it is
    the negative of :func:`loss`.
    """

    def fn(logits, task, clean):
        index = _positions(positions, logits.shape[1] - 1)
        logprobs = logits[:, index].float().log_softmax(-1)
        targets = task.clean[:, [i + 1 for i in index]].to(logits.device)
        return logprobs.gather(-1, targets[..., None])[..., 0].mean(-1)

    return Metric(
        "next_token_logprob", fn, f"mean log-probability of the next token at positions {_describe(positions)}",
        lambda seq_len: _positions(positions, seq_len - 1), key=_positions_key("next_token_logprob", positions),
    )


def loss(positions: Sequence[int] | slice) -> Metric:
    """Mean next-token cross-entropy over the chosen predicting ``positions`` (lower is better)."""
    inner = next_token_logprob(positions)
    return Metric(
        "loss", lambda logits, task, clean: -inner.fn(logits, task, clean), f"next-token loss at positions {_describe(positions)}",
        inner.positions, key=_positions_key("loss", positions),
    )


def kl_to_clean(position: int = -1) -> Metric:
    """KL(clean || intervened) of the next-token distributions at ``position``."""

    def fn(logits, task, clean):
        if clean is None:
            raise ArgumentError("kl_to_clean needs the clean run's logits")
        pos = _position_index(position, logits.shape[1])
        log_p = clean[:, pos].float().log_softmax(-1).to(logits.device)
        log_q = logits[:, pos].float().log_softmax(-1)
        return (log_p.exp() * (log_p - log_q)).sum(-1)

    return Metric("kl_to_clean", fn, f"KL(clean || intervened) at position {position}", _at(position), key=("kl_to_clean", position))


def _at(position: int) -> Callable[[int], list[int]]:
    return lambda seq_len: [_position_index(position, seq_len)]


def _positions(positions, n: int) -> list[int]:
    """Indices among the ``n`` predicting positions (every position but the last)."""
    return _inputs.resolve_positions(positions, n, what="metric position")


def _positions_key(name: str, positions) -> tuple | None:
    """A metric's key from its name and ``positions`` (a slice or integers); None if they are neither."""
    if isinstance(positions, slice):
        ends = (positions.start, positions.stop, positions.step)
        return (name, "slice", *ends) if all(e is None or isinstance(e, int) for e in ends) else None
    try:
        return (name, "at", *(int(p) for p in positions))
    except (TypeError, ValueError):
        return None  # not positions: the metric's own check names the value when it runs


def _describe(positions) -> str:
    if isinstance(positions, slice):
        return f"{positions.start or 0}:{'' if positions.stop is None else positions.stop}"
    return ",".join(map(str, positions))
