"""Per-run state shared by the tests of one pytest session (usable without pytest).

Models are loaded once per (spec, device), checkpoints of one model one at a
time. Everything cached per model (patchers, tasks, activation caches) lives in
the model's own session (:func:`circuitcheck.engine.session.session_of`) and is
freed with the model when the store lets it go.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from ..engine.session import tokens_digest  # noqa: F401 (importable here as before)

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

