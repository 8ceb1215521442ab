"""Per-run state shared by the tests of one pytest session (usable without pytest).

Expensive things are computed once per session and shared: models are loaded
once per (spec, device); activation caches once per (model, input).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

DEFAULT_SPEC = "zoo:induction-2l"


@dataclass
class ModelStore:
    """Loads each (spec, device) once; ``loads`` counts actual loads (for tests and the report)."""

    loader: Callable[[str, str], Any]
    models: dict[tuple[str, str], Any] = field(default_factory=dict)
    loads: dict[tuple[str, str], int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    groups: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)

    def get(self, spec: str, device: str, group: str | None = None):
        """The model for (spec, device), loaded once.

        Models of one ``group`` (the checkpoints of one model) are held one at a
        time: loading another checkpoint of the group releases the previous one.
        """
        key = (spec, device)
        with self._lock:
            if key not in self.models:
                if group is not None:
                    previous = self.groups.get((group, device))
                    if previous is not None and previous != key:
                        self.models.pop(previous, None)
                        _release_memory()
                    self.groups[(group, device)] = key
                self.models[key] = self.loader(spec, device)
                self.loads[key] = self.loads.get(key, 0) + 1
            return self.models[key]

    def clear(self) -> None:
        self.models.clear()
        self.groups.clear()


def _release_memory() -> None:
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class ActivationStore:
    """Activation caches keyed by (model identity, input digest)."""

    caches: dict[tuple[int, str], Any] = field(default_factory=dict)

    def get(self, model, tokens, compute: Callable[[], Any]):
        key = (id(model), tokens_digest(tokens))
        if key not in self.caches:
            self.caches[key] = compute()
        return self.caches[key]

    def clear(self) -> None:
        self.caches.clear()


def tokens_digest(tokens) -> str:
    array = tokens.detach().cpu().contiguous().numpy()
    digest = hashlib.sha1(array.tobytes())
    digest.update(str(array.shape).encode())
    return digest.hexdigest()
