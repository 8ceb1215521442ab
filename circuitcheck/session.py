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

    def get(self, spec: str, device: str):
        key = (spec, device)
        with self._lock:
            if key not in self.models:
                self.models[key] = self.loader(spec, device)
                self.loads[key] = self.loads.get(key, 0) + 1
            return self.models[key]

    def clear(self) -> None:
        self.models.clear()


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
