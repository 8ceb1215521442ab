"""circuitcheck's run options: each is a CLI flag and an ini key, and the flag wins.

The options are registered in :mod:`circuitcheck.pytest_plugin.plugin`; this
module reads them and turns a bad value into a ``pytest.UsageError`` that names
it and says what is valid.
"""

from __future__ import annotations

from typing import Any

import pytest

from .session import DEFAULT_SPEC


def get(config: pytest.Config, name: str) -> Any:
    """The value of option ``name`` (``"max_batch"``): ``--circuitcheck-max-batch``, else ini ``circuitcheck_max_batch``.

    Strings come back stripped.
    """
    value = config.getoption(f"circuitcheck_{name}", None)
    if value is None:
        value = config.getini(f"circuitcheck_{name}")
    return value.strip() if isinstance(value, str) else value


def seed(config: pytest.Config) -> int:
    """``--circuitcheck-seed``: the seed of generated inputs and bootstrap resampling (an integer 0..2**63-1)."""
    raw = get(config, "seed")
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = -1
    if not 0 <= value <= 2**63 - 1:
        raise pytest.UsageError(f"--circuitcheck-seed={raw!r} is not valid: it must be an integer from 0 to 2**63-1")
    return value


def device(config: pytest.Config) -> str:
    """``--circuitcheck-device``: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, checked against this machine."""
    from ..model.sources import DeviceError, resolve_device  # torch: only when a model is wanted

    raw = get(config, "device")
    try:
        return resolve_device(raw)
    except DeviceError as error:
        raise pytest.UsageError(f"--circuitcheck-device={raw!r}: {error}") from None


def max_batch(config: pytest.Config) -> int | None:
    """``--circuitcheck-max-batch``: the most rows in one patched forward pass; None for the engine's default."""
    raw = get(config, "max_batch")
    if raw in (None, ""):
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise pytest.UsageError(f"--circuitcheck-max-batch={raw!r} is not valid: it must be a positive integer")
    return value


def correction(config: pytest.Config) -> str:
    """``--circuitcheck-correction``: none, holm or bh (multiple comparisons over the run's claims)."""
    from ..claims.correction import check_method

    raw = get(config, "correction")
    try:
        return check_method(raw or "none")
    except ValueError:
        raise pytest.UsageError(f"--circuitcheck-correction={raw!r} is not valid: use none, holm or bh") from None


def power(config: pytest.Config) -> bool:
    """``--circuitcheck-power`` (or ini ``circuitcheck_power = true``): measure every claim's mutation score."""
    return _flag(config, "power")


def baseline_strict(config: pytest.Config) -> bool:
    """``--circuitcheck-baseline-strict`` (or ini ``circuitcheck_baseline_strict = true``): checking a baseline, fail the
    run on claims not in it and on stored entries that tests which ran to completion no longer produce."""
    return _flag(config, "baseline_strict")


def _flag(config: pytest.Config, name: str) -> bool:
    """A flag that is also a boolean ini key: the flag given, else the ini value (true/false, yes/no, on/off, 1/0)."""
    if config.getoption(f"circuitcheck_{name}", False):
        return True
    raw = config.getini(f"circuitcheck_{name}")
    if isinstance(raw, bool):
        return raw
    text = str(raw or "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise pytest.UsageError(f"ini circuitcheck_{name}={raw!r} is not valid: use true or false")


def power_mutations(config: pytest.Config) -> int:
    """``--circuitcheck-power-mutations``: the most mutations per claim (default 12)."""
    from ..claims.power import DEFAULT_MAX_MUTATIONS

    raw = get(config, "power_mutations")
    if raw in (None, ""):
        return DEFAULT_MAX_MUTATIONS
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise pytest.UsageError(f"--circuitcheck-power-mutations={raw!r} is not valid: it must be a positive integer "
                                f"(default {DEFAULT_MAX_MUTATIONS})")
    return value


def model_spec(node: pytest.Item | Any, config: pytest.Config) -> str:
    """The model spec of a test (or its definition): ``@pytest.mark.circuitcheck_model`` > flag > ini > the default."""
    marker = node.get_closest_marker("circuitcheck_model")
    if marker is not None:
        if len(marker.args) != 1 or not isinstance(marker.args[0], str):
            raise pytest.UsageError(f"@pytest.mark.circuitcheck_model takes one model spec string, got {marker.args!r} in {node.nodeid}")
        return marker.args[0]
    return get(config, "model") or DEFAULT_SPEC
