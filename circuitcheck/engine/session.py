"""One session per model: everything circuitcheck caches about a model, released with it.

``session_of(model)`` returns the model's one :class:`ModelSession`, created on
first use. It holds what is built once per model (patchers, tasks) and what is
derived from the model's weights (activation caches, attention patterns, the
weights hash, the fast path's readings of the weights). The weights
fingerprint is the one mechanism that notices edited weights: when it changes,
every derived cache of the model is dropped and :attr:`ModelSession.generation`
moves on, so holders of their own caches (a :class:`~circuitcheck.engine.patcher.Patcher`'s
runs) know to drop theirs.

The session is stored on the model object itself. A session holds objects that
hold the model (a patcher, an ``ActivationCache``), so a table keyed by the model
would keep every model alive; an attribute makes a reference cycle that the
garbage collector frees together with the model.

This module imports no other part of circuitcheck, so every layer can use it.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from itertools import chain
from typing import Any, Callable, Hashable, TypeVar

T = TypeVar("T")

_ATTRIBUTE = "_circuitcheck_session"

# Every live session, for reset(); weak, so it keeps none alive.
_SESSIONS: "weakref.WeakSet[ModelSession]" = weakref.WeakSet()
_LOCK = threading.RLock()


class ModelSession:
    """What circuitcheck keeps for one model.

    Two kinds of contents:

    - kept for the model's life: :meth:`shared` objects (patchers by max_batch),
      :meth:`task` (tasks by key) and :meth:`state` (e.g. whether the fast path is off);
    - derived from the weights, dropped when they change: :meth:`activations`
      (activation caches by input digest) and :meth:`derived` caches (attention
      patterns, the weights hash, the fast path's weight views).
    """

    def __init__(self, model) -> None:
        self._model = weakref.ref(model) if model is not None else None
        self._shared: dict[Hashable, Any] = {}
        self._states: dict[str, Any] = {}
        self._derived: dict[str, Any] = {}
        self._activations: dict[str, Any] = {}
        self._fingerprint: tuple | None = None
        self._generation = 0
        _SESSIONS.add(self)

    @property
    def model(self):
        """The model (None once it is gone, or for a session detached by a copy)."""
        return self._model() if self._model is not None else None

    # The weights --------------------------------------------------------------------------------

    def fingerprint(self) -> tuple:
        """Changes when any parameter or buffer is replaced, moved, cast or modified in place (not through ``.data``)."""
        model = self.model
        if model is None or not hasattr(model, "parameters"):
            return ()
        tensors = chain(model.parameters(), model.buffers()) if hasattr(model, "buffers") else model.parameters()
        return tuple((t.data_ptr(), t._version, t.dtype, str(t.device), tuple(t.shape)) for t in tensors)

    @property
    def generation(self) -> int:
        """A number that moves on whenever the weights change (checked on every read)."""
        self.check_weights()
        return self._generation

    def check_weights(self) -> bool:
        """Compare the weights with the last look; if they changed, drop every derived cache. True if they changed."""
        fingerprint = self.fingerprint()
        with _LOCK:
            if fingerprint == self._fingerprint:
                return False
            first = self._fingerprint is None
            self._fingerprint = fingerprint
            if first:
                return False
            self._derived.clear()
            self._activations.clear()
            self._generation += 1
            return True

    # Contents -----------------------------------------------------------------------------------

    def shared(self, key: Hashable, build: Callable[[], T]) -> T:
        """The object stored under ``key``, built by ``build()`` on first use; kept for the model's life."""
        with _LOCK:
            if key not in self._shared:
                self._shared[key] = build()
            return self._shared[key]

    def task(self, key: Hashable, build: Callable[[], T]) -> T:
        """The task stored under ``key`` (e.g. a marker's spec and arguments), built once per model by ``build()``."""
        return self.shared(("task", key), build)

    def state(self, name: str, factory: Callable[[], T]) -> T:
        """Per-model state named ``name`` (``factory()`` on first use), kept across weight edits."""
        with _LOCK:
            if name not in self._states:
                self._states[name] = factory()
            return self._states[name]

    def derived(self, name: str, factory: Callable[[], T] = dict) -> T:  # type: ignore[assignment]
        """A cache named ``name`` of things computed from the current weights; a fresh one after they change."""
        self.check_weights()
        with _LOCK:
            if name not in self._derived:
                self._derived[name] = factory()
            return self._derived[name]

    def activations(self, tokens, compute: Callable[[], T]) -> T:
        """The activation cache of the model on ``tokens`` (``[batch, pos]``), computed once per input and weights."""
        key = tokens_digest(tokens)
        self.check_weights()
        with _LOCK:
            if key not in self._activations:
                self._activations[key] = compute()
            return self._activations[key]

    def forget(self, name: str) -> None:
        """Drop the state or derived cache named ``name`` (the next use starts afresh)."""
        with _LOCK:
            self._states.pop(name, None)
            self._derived.pop(name, None)

    def release(self) -> None:
        """Drop everything this session holds."""
        with _LOCK:
            self._shared.clear()
            self._states.clear()
            self._derived.clear()
            self._activations.clear()

    # A copied or pickled model gets a fresh session, never one that points at the original.
    def __deepcopy__(self, memo) -> "ModelSession":
        return ModelSession(None)

    def __reduce__(self):
        return (ModelSession, (None,))

    def __repr__(self) -> str:
        return f"<ModelSession of {type(self.model).__name__}: {len(self._shared)} shared, {len(self._activations)} activation caches>"


def session_of(model) -> ModelSession:
    """The one session of ``model``, created on first use and freed with the model.

    A model whose attributes cannot be set gets a fresh, empty session on every
    call (nothing is cached for it, nothing leaks).
    """
    attributes = getattr(model, "__dict__", None)
    if attributes is None:
        return ModelSession(model)
    with _LOCK:
        session = attributes.get(_ATTRIBUTE)
        if session is None or session.model is not model:
            session = ModelSession(model)
            # Past the class's __setattr__: a session is no module, parameter or hook point.
            attributes[_ATTRIBUTE] = session
        return session


def sessions() -> list[ModelSession]:
    """Every live session (of models still alive)."""
    return [session for session in list(_SESSIONS) if session.model is not None]


def tokens_digest(tokens) -> str:
    """A digest of a token tensor's values and shape (the key of activation caches)."""
    array = tokens.detach().cpu().contiguous().numpy()
    digest = hashlib.sha1(array.tobytes())
    digest.update(str(array.shape).encode())
    return digest.hexdigest()
