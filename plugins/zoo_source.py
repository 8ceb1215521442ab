"""Model source for the bundled toy models: ``zoo:NAME[@CHECKPOINT]``."""

from __future__ import annotations

import circuitcheck
from circuitcheck import zoo

PREFIX = "zoo:"


@circuitcheck.hookimpl
def circuitcheck_load_model(spec: str, device: str):
    if not spec.startswith(PREFIX):
        return None
    name, _, checkpoint = spec[len(PREFIX):].partition("@")
    return zoo.load(name, checkpoint or None, device=device)


@circuitcheck.hookimpl
def circuitcheck_list_checkpoints(spec: str):
    if not spec.startswith(PREFIX):
        return None
    return zoo.checkpoints(spec[len(PREFIX):].partition("@")[0])


@circuitcheck.hookimpl
def circuitcheck_model_sources() -> list[str]:
    return [f"zoo:NAME[@CHECKPOINT]: bundled toy models ({', '.join(zoo.names())}), e.g. zoo:induction-2l@{_example_checkpoint()}"]


def _example_checkpoint() -> str:
    steps = zoo.checkpoints(zoo.names()[0]) if zoo.names() else []
    return steps[len(steps) // 2] if steps else "STEP"
