"""The checkpoints plugin: run tests that use ``model`` once per training checkpoint.

Registered by the main plugin as ``circuitcheck-checkpoints``. The checkpoints
come from ``@pytest.mark.circuitcheck_checkpoints(...)``, else
``--circuitcheck-checkpoints`` / the ini key (comma-separated names, or
``all`` where the model source can list them). The ``model`` fixture is
parametrised over them (indirectly: the fixture loads each one), and the
tests are ordered so that each checkpoint of a model is loaded once, in
order; under xdist each checkpoint's tests go to one worker.
"""

from __future__ import annotations

import pytest

from ..model import sources
from . import options
from .identity import item_identity


class CheckpointsPlugin:
    """Parametrises ``model`` over checkpoints and groups the tests by (model, checkpoint)."""

    def __init__(self, config: pytest.Config):
        self.config = config
        if options.get(config, "checkpoints") and getattr(config.option, "dist", "no") == "load" and not hasattr(config, "workerinput"):
            # one worker per checkpoint group, so each worker loads a checkpoint once
            config.option.dist = "loadgroup"

    def checkpoints_for(self, node, spec: str) -> list[str] | None:
        """The checkpoints a test runs over: marker > option > ini; None when there are none."""
        marker = node.get_closest_marker("circuitcheck_checkpoints")
        if marker is not None:
            names = list(marker.args)
            if len(names) == 1 and isinstance(names[0], (list, tuple)):
                names = list(names[0])
        else:
            raw = options.get(self.config, "checkpoints")
            if not raw:
                return None
            names = [n.strip() for n in raw.split(",") if n.strip()]
        if not names or not all(isinstance(n, str) and n for n in names):
            raise pytest.UsageError(f"checkpoints {names!r} are not valid: give checkpoint names (strings) or 'all'")
        if names == ["all"]:
            listed = sources.list_checkpoints(spec)
            if not listed:
                raise pytest.UsageError(f"the source of model {spec!r} cannot list its checkpoints: name them instead of 'all'")
            return listed
        return names

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Parametrise the ``model`` fixture over the test's checkpoints, if it has any."""
        if "model" not in metafunc.fixturenames:
            return
        spec = options.model_spec(metafunc.definition, self.config)
        checkpoints = self.checkpoints_for(metafunc.definition, spec)
        if checkpoints:
            metafunc.parametrize("model", checkpoints, indirect=True, ids=[str(c) for c in checkpoints])

    def pytest_collection_modifyitems(self, session, config, items: list[pytest.Item]) -> None:
        """Group checkpoint-parametrised tests by (model, checkpoint): each checkpoint loads once, in order."""
        order: dict[str, int] = {}
        steps: dict[str, dict[str, int]] = {}
        keys = {}
        for item in items:
            identity = item_identity(item)
            checkpoint = identity["checkpoint"]
            if checkpoint is None:
                keys[item] = (0, 0, 0)
                continue
            group = identity["model_spec"]
            order.setdefault(group, len(order))
            seen = steps.setdefault(group, {})
            seen.setdefault(checkpoint, len(seen))  # checkpoints in the order they first appear
            keys[item] = (1, order[group], seen[checkpoint])
            item.add_marker(pytest.mark.xdist_group(f"circuitcheck:{group}@{checkpoint}"))
        if order:
            items.sort(key=lambda item: keys[item])  # stable: the original order within a group
