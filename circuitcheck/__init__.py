"""circuitcheck: mechanistic-interpretability claims about transformers as pytest tests.

    import circuitcheck as cc

    def test_heads(model):
        cc.assert_previous_token_head(0, 2, min_score=0.8)
        cc.assert_induction_head(1, 3, min_score=0.7)

This module stays light (no torch, pandas or transformer_lens at import): the
pytest plugin imports it at start-up. Heavy parts load on first attribute use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import CircuitAssertionError, CircuitCheckError, ComponentError, ModelSpecError
from .registry import hookimpl, load_model, register, unregister

__version__ = "0.1.0"

# public name -> module that defines it (imported on first use)
_LAZY = {
    "Component": "components",
    "Edge": "components",
    "parse_components": "components",
    "Circuit": "circuit",
    "CheckResult": "result",
    "head_scores": "heads",
    "HEAD_KINDS": "heads",
    "check_head": "checks.heads",
    "assert_previous_token_head": "checks.heads",
    "assert_duplicate_token_head": "checks.heads",
    "assert_induction_head": "checks.heads",
    "assert_bos_head": "checks.heads",
    "assert_head_matches_pattern": "checks.heads",
    "check_necessary": "checks.causal",
    "check_sufficient": "checks.causal",
    "check_minimal": "checks.causal",
    "check_path": "checks.causal",
    "assert_necessary": "checks.causal",
    "assert_sufficient": "checks.causal",
    "assert_minimal": "checks.causal",
    "assert_path": "checks.causal",
    "logit_lens": "lens",
    "tuned_lens": "lens",
    "TunedLens": "lens",
    "check_logit_lens_converges_by": "checks.lens",
    "assert_logit_lens_converges_by": "checks.lens",
    "check_direct_effect": "checks.attribution",
    "assert_direct_effect": "checks.attribution",
    "check_top_direct_effects": "checks.attribution",
    "assert_top_direct_effects": "checks.attribution",
    "check_copying_head": "checks.attribution",
    "assert_copying_head": "checks.attribution",
    "check_composition": "checks.attribution",
    "assert_composition": "checks.attribution",
    "direct_logit_attribution": "attribution",
    "ov_circuit": "composition",
    "qk_circuit": "composition",
    "copying_score": "composition",
    "copying_scores": "composition",
    "composition_score": "composition",
    "composition_scores": "composition",
    "random_composition_baseline": "composition",
    "Prober": "probe",
    "ProbeResult": "probe",
    "check_probe_accuracy": "checks.probe",
    "assert_probe_accuracy": "checks.probe",
    "Patcher": "patcher",
    "Patch": "patcher",
    "Task": "tasks",
    "task_fixture": "fixtures",
    "lens": None,
    "attribution": None,
    "composition": None,
    "zoo": None,
    "tasks": None,
    "metrics": None,
    "ablation": None,
    "strategies": None,
    "inputs": None,
    "heads": None,
    "stats": None,
}

__all__ = [
    "CircuitAssertionError",
    "CircuitCheckError",
    "ComponentError",
    "ModelSpecError",
    "hookimpl",
    "load_model",
    "register",
    "unregister",
    *_LAZY,
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'circuitcheck' has no attribute {name!r}")
    module_name = _LAZY[name]
    if module_name is None:
        value = importlib.import_module(f".{name}", __name__)
    else:
        value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # pragma: no cover
    from . import ablation, attribution, composition, heads, inputs, lens, metrics, stats, strategies, tasks, zoo
    from .attribution import direct_logit_attribution
    from .checks.attribution import (
        assert_composition,
        assert_copying_head,
        assert_direct_effect,
        assert_top_direct_effects,
        check_composition,
        check_copying_head,
        check_direct_effect,
        check_top_direct_effects,
    )
    from .composition import (
        composition_score,
        composition_scores,
        copying_score,
        copying_scores,
        ov_circuit,
        qk_circuit,
        random_composition_baseline,
    )
    from .checks.causal import (
        assert_minimal,
        assert_necessary,
        assert_path,
        assert_sufficient,
        check_minimal,
        check_necessary,
        check_path,
        check_sufficient,
    )
    from .checks.probe import assert_probe_accuracy, check_probe_accuracy
    from .probe import Prober, ProbeResult
    from .checks.lens import assert_logit_lens_converges_by, check_logit_lens_converges_by
    from .fixtures import task_fixture
    from .lens import TunedLens, logit_lens, tuned_lens
    from .patcher import Patch, Patcher
    from .tasks import Task
    from .checks.heads import (
        assert_bos_head,
        assert_duplicate_token_head,
        assert_head_matches_pattern,
        assert_induction_head,
        assert_previous_token_head,
        check_head,
    )
    from .circuit import Circuit
    from .components import Component, Edge, parse_components
    from .heads import HEAD_KINDS, head_scores
    from .result import CheckResult
