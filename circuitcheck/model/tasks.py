"""Tasks: what a circuit is claimed to do.

A task holds clean inputs, corrupted inputs of the same shape, and a metric
from logits to one value per example. Built-ins:

- :func:`induction`: repeated random tokens; the metric is the mean
  log-probability of the correct next token over the second copy.
- :func:`from_prompts`: strings with one-token answers; logit difference at
  the last position.
- :func:`from_tokens`: token tensors and any metric.

A task is frozen: it takes copies of its tensors when it is made, and its
attributes cannot be reassigned (make a changed task with
``dataclasses.replace(task, clean=...)``). Its :attr:`Task.digest` is read from
its contents on every use, so even a tensor edited in place gives a new digest
and never reuses the runs cached for the old contents.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch

from . import inputs as _inputs
from . import metrics as _metrics
from ..errors import CircuitCheckError


class FrozenTaskError(CircuitCheckError, AttributeError):
    """An attribute of a :class:`Task` was assigned after the task was made."""


@dataclass(eq=False)
class Task:
    """Clean and corrupted inputs (``[batch, pos]`` each) and a per-example metric.

    ``answers`` / ``wrong_answers`` are ``[batch]`` (or ``[batch, k]``) token
    ids for answer-based metrics. ``d_vocab`` records the vocabulary the task
    was built for, so that a task is never silently run on another model's
    vocabulary. ``reference`` is the input set mean ablation averages over
    (``[n_reference, pos]``; default None: the corrupted inputs, so that the
    mean never comes from the very clean inputs being measured).

    Frozen once made: the tensors are the task's own copies, and assigning an
    attribute raises :class:`FrozenTaskError` (use ``dataclasses.replace``).
    """

    clean: torch.Tensor
    corrupt: torch.Tensor
    metric: _metrics.Metric
    answers: torch.Tensor | None = None
    wrong_answers: torch.Tensor | None = None
    name: str = "task"
    d_vocab: int | None = None
    reference: torch.Tensor | None = None
    description: str = ""
    seed: int | None = None

    def __post_init__(self):
        # Copies: a tensor the caller keeps and edits later must not change the task.
        self.clean = _inputs.as_tokens(None, self.clean, what="clean tokens").clone()
        self.corrupt = _inputs.as_tokens(None, self.corrupt, what="corrupt tokens").clone()
        if self.clean.shape != self.corrupt.shape:
            raise CircuitCheckError(
                f"clean and corrupted inputs must have the same shape: clean is {tuple(self.clean.shape)}, "
                f"corrupted is {tuple(self.corrupt.shape)}"
            )
        if self.clean.shape[0] == 0:
            raise CircuitCheckError("the task has no examples")
        self.metric = _metrics.as_metric(self.metric)
        for name in ("answers", "wrong_answers"):
            value = getattr(self, name)
            if value is not None:
                value = torch.as_tensor(value, dtype=torch.long).cpu().clone()
                if value.shape[0] != self.clean.shape[0]:
                    raise CircuitCheckError(f"{name} has {value.shape[0]} entries for {self.clean.shape[0]} examples")
                setattr(self, name, value)
        if self.reference is not None:
            self.reference = _inputs.as_tokens(None, self.reference, what="reference tokens").clone()
            if self.reference.shape[1] != self.clean.shape[1]:
                raise CircuitCheckError(
                    f"reference inputs have {self.reference.shape[1]} positions, the task has {self.clean.shape[1]}: mean ablation is per position"
                )
        object.__setattr__(self, "_frozen", True)

    def __setattr__(self, name: str, value) -> None:
        if self.__dict__.get("_frozen"):
            raise FrozenTaskError(
                f"task {self.name!r} is frozen: {name!r} cannot be assigned after the task is made (runs are cached "
                f"for its contents); make a changed task with dataclasses.replace(task, {name}=...)"
            )
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise FrozenTaskError(f"task {self.name!r} is frozen: {name!r} cannot be deleted; make a changed task with dataclasses.replace")

    @property
    def n_examples(self) -> int:
        return int(self.clean.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.clean.shape[1])

    @property
    def digest(self) -> str:
        """A hash of the task's contents (tensors and metric): tasks with equal digests share cached runs.

        Computed afresh on every read (milliseconds for thousands of examples), so a
        tensor edited in place changes it. The metric enters by its
        :attr:`~circuitcheck.model.metrics.Metric.identity`: its parameters for a
        built-in metric, else a number never given to another metric of this process.
        """
        h = hashlib.sha1()
        for tensor in (self.clean, self.corrupt, self.answers, self.wrong_answers, self.reference):
            h.update(b"|" if tensor is None else tensor.numpy().tobytes() + str(tuple(tensor.shape)).encode())
        h.update(repr(self.metric.identity).encode())
        return h.hexdigest()

    def validate(self, model) -> "Task":
        """Check the task fits ``model``: same vocabulary, token ids in range, fits the context."""
        vocab = model.cfg.d_vocab
        if self.d_vocab is not None and self.d_vocab != vocab:
            raise CircuitCheckError(
                f"task {self.name!r} was built for a vocabulary of {self.d_vocab} tokens, but the model has {vocab}: "
                "build the task with this model"
            )
        for label, tokens in (("clean", self.clean), ("corrupted", self.corrupt), ("answer", self.answers), ("wrong-answer", self.wrong_answers)):
            if tokens is not None and tokens.numel() and (int(tokens.max()) >= vocab or int(tokens.min()) < 0):
                bad = int(tokens.max()) if int(tokens.max()) >= vocab else int(tokens.min())
                raise CircuitCheckError(f"{label} token id {bad} in task {self.name!r} is outside the model's vocabulary 0-{vocab - 1}")
        if self.seq_len > model.cfg.n_ctx:
            raise CircuitCheckError(f"task {self.name!r} has {self.seq_len} positions, more than the model's context of {model.cfg.n_ctx}")
        return self

    def describe(self) -> str:
        return self.description or f"{self.name}: {self.n_examples} examples of {self.seq_len} tokens; metric {self.metric}"


def induction(model, n_prompts: int = 32, seq_len: int = 20, seed: int = 0) -> Task:
    """Induction on repeated random tokens.

    Clean: ``BOS r r`` with ``r`` of ``seq_len`` random ordinary tokens.
    Corrupted: fresh random tokens of the same shape (``BOS s``), so nothing
    repeats. Metric: mean log-probability of the correct next token over the
    positions that predict the second copy (the induction positions).
    """
    clean = _inputs.repeated_random_tokens(model, n_prompts=n_prompts, half_len=seq_len, seed=seed)
    offset = clean.shape[1] - 2 * seq_len  # 1 with BOS, 0 without
    fresh = _inputs.random_tokens(model, n_prompts, 2 * seq_len, seed=(seed + 1_000_003) % (2**63))  # seed checked above
    corrupt = _inputs.with_bos(model, fresh)
    # Positions offset+seq_len .. end-2 predict tokens 2..seq_len of the second copy.
    first = offset + seq_len
    metric = _metrics.next_token_logprob(slice(first, None))
    return Task(
        clean=clean,
        corrupt=corrupt,
        metric=metric,
        name="induction",
        d_vocab=model.cfg.d_vocab,
        seed=seed,
        description=(
            f"induction: {n_prompts} prompts 'BOS r r' (r = {seq_len} random tokens, seed {seed}); corrupted = fresh random tokens; "
            f"metric = mean log-prob of the correct next token over the second copy"
        ),
    )


def from_prompts(
    model,
    clean: Sequence[str],
    corrupt: Sequence[str],
    answers: Sequence[str],
    wrong_answers: Sequence[str],
    name: str = "prompts",
    metric: _metrics.Metric | None = None,
) -> Task:
    """A task from prompt strings and one-token answers; metric: logit difference at the last position.

    Answers are tokenized as continuations, without special tokens (no BOS,
    ``[CLS]`` or ``[SEP]``); each must be exactly one token.
    """
    for label, texts in (("clean", clean), ("corrupt", corrupt)):
        if isinstance(texts, str):
            raise CircuitCheckError(f"{label}={texts!r:.60} is a single string: clean and corrupt take lists of prompts")
    for label, texts in (("clean", clean), ("corrupt", corrupt), ("answers", answers), ("wrong_answers", wrong_answers)):
        _check_strings(label, texts)
    if not (len(clean) == len(corrupt) == len(answers) == len(wrong_answers)):
        lists = {"clean": clean, "corrupt": corrupt, "answers": answers, "wrong_answers": wrong_answers}
        raise CircuitCheckError(
            ", ".join(f"{label}={value!r:.40} ({len(value)})" for label, value in lists.items())
            + ": each must have one entry per example"
        )
    clean_tokens = _inputs.as_tokens(model, list(clean), what="clean prompts")
    corrupt_tokens = _inputs.as_tokens(model, list(corrupt), what="corrupt prompts")
    if clean_tokens.shape != corrupt_tokens.shape:
        raise CircuitCheckError(
            f"clean prompts (e.g. {clean[0]!r:.40}) tokenise to {clean_tokens.shape[1]} tokens and corrupt prompts "
            f"(e.g. {corrupt[0]!r:.40}) to {corrupt_tokens.shape[1]}: they must have the same token length"
        )
    return Task(
        clean=clean_tokens,
        corrupt=corrupt_tokens,
        metric=metric or _metrics.logit_diff(-1),
        answers=torch.tensor([_single_token(model, a) for a in answers]),
        wrong_answers=torch.tensor([_single_token(model, a) for a in wrong_answers]),
        name=name,
        d_vocab=model.cfg.d_vocab,
    )


def from_tokens(
    clean,
    corrupt,
    metric=None,
    *,
    answers=None,
    wrong_answers=None,
    name: str = "tokens",
    d_vocab: int | None = None,
    reference=None,
) -> Task:
    """A task from token tensors; metric defaults to logit difference at the last position."""
    return Task(
        clean=clean,
        corrupt=corrupt,
        metric=metric or _metrics.logit_diff(-1),
        answers=answers,
        wrong_answers=wrong_answers,
        name=name,
        d_vocab=d_vocab,
        reference=reference,
    )


def _check_strings(label: str, texts) -> None:
    """``texts`` must be a list (or tuple) of strings; the error names the first bad entry."""
    if not isinstance(texts, (list, tuple)):
        raise CircuitCheckError(f"{label}={texts!r:.60} is not valid: give a list of strings, one per example")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise CircuitCheckError(f"{label}[{index}] is {text!r:.60} ({type(text).__name__}): every entry must be a string")


def _single_token(model, text: str) -> int:
    """The one token ``text`` is, tokenized as a continuation: without BOS, ``[CLS]``, ``[SEP]`` or any special token.

    A tokenizer that wraps every input (BERT's ``[CLS] ... [SEP]``) would
    otherwise make every answer two tokens or more. An answer that is not one
    token is an error that shows the tokens it became.
    """
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise CircuitCheckError(f"answer {text!r}: this model has no tokenizer, so answers cannot be strings "
                                "(build the task with from_tokens and answer token ids)")
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids) if ids else []
        shown = ", ".join(f"{piece!r} ({i})" for piece, i in zip(pieces, ids)) or "none"
        raise CircuitCheckError(
            f"answer {text!r} is {len(ids)} tokens; answers must be single tokens. Tokenized without special tokens "
            f"it became {shown} (a leading space or another casing may be one token)"
        )
    return int(ids[0])
