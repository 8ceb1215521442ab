"""Who a test is, for baselines and reports: its id, its checkpoint and its model's checkpoint group."""

from __future__ import annotations

from typing import Any

import pytest

from . import options


def item_identity(item: pytest.Item) -> dict[str, Any]:
    """``test_id`` (the node id without xdist's group suffix), ``checkpoint``, ``model_spec`` and ``test``.

    ``test`` is the id without the checkpoint parameter, so that the runs of one
    test over several checkpoints share it.
    """
    nodeid = item.nodeid.split("@circuitcheck:")[0]  # xdist's loadgroup suffix
    callspec = getattr(item, "callspec", None)
    if callspec is None:  # e.g. spec-file items, which know their own model and checkpoint
        checkpoint, spec = getattr(item, "checkpoint", None), getattr(item, "model_spec", None)
        base = nodeid[: -len(f"[{checkpoint}]")] if checkpoint and nodeid.endswith(f"[{checkpoint}]") else nodeid
        return {"test_id": nodeid, "checkpoint": checkpoint, "model_spec": spec, "test": base}
    checkpoint = callspec.params.get("model")
    return {
        "test_id": nodeid,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "model_spec": options.model_spec(item, item.config),
        "test": nodeid.replace(f"[{callspec.id}]", "") if checkpoint is not None and callspec.id == str(checkpoint) else nodeid,
    }
