"""One session per model: everything circuitcheck caches about a model, released with it.

``session_of(model)`` returns the model's one :class:`ModelSession`, created on
first use. It holds what is built once per model (patchers, tasks) and what is
derived from the model's weights (activation caches, attention patterns, the
weights hash, the fast path's readings of the weights, a patcher's clean and
corrupted runs).

**When the weights are checked.** Every derived value is reused only after the
weights have been compared with the last look, and the look reads them in
full: the identity of each parameter and buffer (data pointer, version
counter, dtype, device, shape) and its content (a checksum of every byte,
:mod:`circuitcheck.engine.checksum`), so edits through ``.data``, under
``torch.no_grad()``, by ``load_state_dict`` or by ``.to()`` are all noticed.
The look happens once at the start of each engine call that may reuse a
cached value (a patcher's run, sweep or path patch, head scores, the lens,
probes, attribution, the ``cache`` fixture): inside one such call the weights
are taken as fixed, and only the cheap identity is compared again. When
anything changed, every derived cache of the model is dropped and
:attr:`ModelSession.generation` moves on, so holders of their own caches (a
:class:`~circuitcheck.engine.patcher.Patcher`'s runs) drop theirs.

**Threads.** Every engine call on a model holds the model's lock
(:meth:`ModelSession.exclusive`) for its whole length: circuitcheck's hooks are
registered on the model itself, so two forwards with hooks at once would read
each other's patches. Checks on one model from several threads therefore run
one at a time and give the sequential values; checks on different models run
in parallel. (Forwards that your own code runs on the model from another
thread, outside circuitcheck, are not covered.)

The session is stored on the model object itself. A session holds objects that
hold the model (a patcher, an ``ActivationCache``), so a table keyed by the model
would keep every model alive; an attribute makes a reference cycle that the
garbage collector frees together with the model.

This module imports no part of circuitcheck at import time (:mod:`~circuitcheck.engine.checksum`,
and with it torch, on first use), so every layer can use it.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from contextlib import contextmanager
from itertools import chain
from typing import Any, Callable, Hashable, Iterator, TypeVar

T = TypeVar("T")

_ATTRIBUTE = "_circuitcheck_session"

# Every live session, for reset(); weak, so it keeps none alive.
_SESSIONS: "weakref.WeakSet[ModelSession]" = weakref.WeakSet()
# Guards session creation only; each session has its own lock for its model
# (taken after this one, never before it).
_LOCK = threading.RLock()


class ModelSession:
    """What circuitcheck keeps for one model.

    Two kinds of contents:

    - kept for the model's life: :meth:`shared` objects (patchers by max_batch),
      :meth:`task` (tasks by key) and :meth:`state` (e.g. whether the fast path is off);
    - derived from the weights, dropped when they change: :meth:`activations`
      (activation caches by input digest) and :meth:`derived` caches (attention
      patterns, the weights hash, path patching's checks); holders of their own
      caches (a patcher's runs, the fast path's weight views, a prober's
      activations) compare :attr:`generation` with the one they were made at.
    """

    def __init__(self, model) -> None:
        self._model = weakref.ref(model) if model is not None else None
        self._shared: dict[Hashable, Any] = {}
        self._states: dict[str, Any] = {}
        self._derived: dict[str, Any] = {}
        self._activations: dict[str, Any] = {}
        self._identity: tuple | None = None
        self._content: tuple | None = None
        self._generation = 0
        self.content_checks = 0  # how many times the weights were read in full (for tests and benchmarks)
        # The model's lock: one engine call at a time (see the module's docstring).
        self._lock = threading.RLock()
        self._depth = 0  # nesting of exclusive() in the thread that holds the lock
        self._checked_in_call = False  # whether the content was read in the current outermost call
        _SESSIONS.add(self)

    @property
    def model(self):
        """The model (None once it is gone, or for a session detached by a copy)."""
        return self._model() if self._model is not None else None

    # The weights --------------------------------------------------------------------------------

    def _tensors(self) -> list:
        model = self.model
        if model is None or not hasattr(model, "parameters"):
            return []
        return list(chain(model.parameters(), model.buffers()) if hasattr(model, "buffers") else model.parameters())

    def identity(self) -> tuple:
        """Cheap: changes when a parameter or buffer is replaced, moved, cast or modified in place through autograd.

        Edits through ``.data`` (and other writes that bypass the version counter) keep
        it; :meth:`content` sees those.
        """
        return tuple((t.data_ptr(), t._version, t.dtype, str(t.device), tuple(t.shape)) for t in self._tensors())

    def content(self) -> tuple:
        """A checksum of every byte of every parameter and buffer (:func:`~circuitcheck.engine.checksum.content_checksums`)."""
        from .checksum import content_checksums  # torch: imported on use, so that the pytest plugin starts light

        self.content_checks += 1
        return content_checksums(self._tensors())

    def fingerprint(self) -> tuple:
        """``(identity, content)``: changes whenever any weight or buffer changes, however it was edited."""
        return self.identity(), self.content()

    @property
    def generation(self) -> int:
        """A number that moves on whenever the weights change (checked on every read; see :meth:`check_weights`)."""
        self.check_weights()
        return self._generation

    def check_weights(self) -> bool:
        """Compare the weights with the last look; if they changed, drop every derived cache. True if they changed.

        The content is read in full unless it already was in the current outermost
        :meth:`exclusive` call of this thread (inside one engine call the weights are
        taken as fixed); the identity is compared every time.
        """
        with self._lock:
            identity = self.identity()
            in_call = self._depth > 0 and self._checked_in_call
            content = self._content if in_call and identity == self._identity else self.content()
            if self._depth > 0:
                self._checked_in_call = True
            if identity == self._identity and content == self._content:
                return False
            first = self._identity is None
            self._identity, self._content = identity, content
            if first:
                return False
            self._derived.clear()
            self._activations.clear()
            self._generation += 1
            return True

    @contextmanager
    def exclusive(self, check: bool = True) -> Iterator["ModelSession"]:
        """Hold the model for this thread for the block: other threads' circuitcheck work on it waits.

        Reentrant. At the outermost entry the weights are checked in full (``check=False``:
        the caller only needs the lock, e.g. a plain forward inside a loop, and the
        first lookup in the block reads them instead); after that, nested entries and
        the session's own lookups inside the block compare only the weights' identity.
        """
        with self._lock:
            outer = self._depth == 0
            if outer:
                self._checked_in_call = False
            self._depth += 1
            try:
                if outer and check:
                    self.check_weights()
                yield self
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._checked_in_call = False

    # Contents -----------------------------------------------------------------------------------

    def shared(self, key: Hashable, build: Callable[[], T]) -> T:
        """The object stored under ``key``, built by ``build()`` on first use; kept for the model's life."""
        with self._lock:
            if key not in self._shared:
                self._shared[key] = build()
            return self._shared[key]

    def task(self, key: Hashable, build: Callable[[], T]) -> T:
        """The task stored under ``key`` (e.g. a marker's spec and arguments), built once per model by ``build()``."""
        return self.shared(("task", key), build)

    def state(self, name: str, factory: Callable[[], T]) -> T:
        """Per-model state named ``name`` (``factory()`` on first use), kept across weight edits."""
        with self._lock:
            if name not in self._states:
                self._states[name] = factory()
            return self._states[name]

    def derived(self, name: str, factory: Callable[[], T] = dict) -> T:  # type: ignore[assignment]
        """A cache named ``name`` of things computed from the current weights; a fresh one after they change."""
        with self._lock:
            self.check_weights()
            if name not in self._derived:
                self._derived[name] = factory()
            return self._derived[name]

    def activations(self, tokens, compute: Callable[[], T]) -> T:
        """The activation cache of the model on ``tokens`` (``[batch, pos]``), computed once per input and weights.

        ``compute()`` runs holding the model (see :meth:`exclusive`).
        """
        key = tokens_digest(tokens)
        with self.exclusive():
            if key not in self._activations:
                self._activations[key] = compute()
            return self._activations[key]

    def forget(self, name: str) -> None:
        """Drop the state or derived cache named ``name`` (the next use starts afresh)."""
        with self._lock:
            self._states.pop(name, None)
            self._derived.pop(name, None)

    def release(self) -> None:
        """Drop everything this session holds."""
        with self._lock:
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
