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
import importlib.abc
import importlib.util
import sys
from typing import TYPE_CHECKING

from .errors import CircuitAssertionError, CircuitCheckError, ComponentError, ModelSpecError
from .model.sources import hookimpl, load_model, register, unregister

__version__ = "0.1.0"

# public name -> module that defines it (imported on first use); "module:" is the module itself
_LAZY = {
    "Component": "model.components",
    "Edge": "model.components",
    "parse_components": "model.components",
    "Circuit": "model.circuit",
    "model_kind": "model.kinds",
    "ModelKind": "model.kinds",
    "ModelKindError": "model.kinds",
    "CheckResult": "claims.result",
    "ClaimKind": "claims.registry",
    "Param": "claims.registry",
    "ClaimCall": "claims.registry",
    "mutation_score": "claims.power",
    "PowerResult": "claims.power",
    "head_scores": "engine.heads",
    "HEAD_KINDS": "engine.heads",
    "check_head": "claims.heads",
    "assert_previous_token_head": "claims.heads",
    "assert_duplicate_token_head": "claims.heads",
    "assert_induction_head": "claims.heads",
    "assert_bos_head": "claims.heads",
    "assert_head_matches_pattern": "claims.heads",
    "check_necessary": "claims.causal",
    "check_sufficient": "claims.causal",
    "check_minimal": "claims.minimality",
    "check_complete": "claims.completeness",
    "check_faithful": "claims.faithfulness",
    "check_path": "claims.causal",
    "assert_necessary": "claims.causal",
    "assert_sufficient": "claims.causal",
    "assert_minimal": "claims.minimality",
    "assert_complete": "claims.completeness",
    "assert_faithful": "claims.faithfulness",
    "assert_path": "claims.causal",
    "logit_lens": "engine.lens",
    "tuned_lens": "engine.lens",
    "TunedLens": "engine.lens",
    "check_logit_lens_converges_by": "claims.lens",
    "assert_logit_lens_converges_by": "claims.lens",
    "check_direct_effect": "claims.attribution",
    "assert_direct_effect": "claims.attribution",
    "check_top_direct_effects": "claims.attribution",
    "assert_top_direct_effects": "claims.attribution",
    "check_copying_head": "claims.attribution",
    "assert_copying_head": "claims.attribution",
    "check_composition": "claims.attribution",
    "assert_composition": "claims.attribution",
    "direct_logit_attribution": "engine.attribution",
    "attribution_sweep": "engine.attribution_patching",
    "patching_sweep": "engine.attribution_patching",
    "rank_agreement": "engine.attribution_patching",
    "GraphSweep": "engine.attribution_patching",
    "faithfulness_curve": "claims.curves",
    "FaithfulnessCurve": "claims.curves",
    "check_faithfulness_curve": "claims.curves",
    "assert_faithfulness_curve": "claims.curves",
    "RankAgreement": "engine.attribution_patching",
    "ov_circuit": "engine.composition",
    "qk_circuit": "engine.composition",
    "copying_score": "engine.composition",
    "copying_scores": "engine.composition",
    "composition_score": "engine.composition",
    "composition_scores": "engine.composition",
    "random_composition_baseline": "engine.composition",
    "Prober": "claims.probe",
    "ProbeResult": "engine.probe",
    "check_probe_accuracy": "claims.probe",
    "assert_probe_accuracy": "claims.probe",
    "Patcher": "engine.patcher",
    "Patch": "engine.patcher",
    "Task": "model.tasks",
    "task_fixture": "pytest_plugin.fixtures",
    "lens": "engine.lens:",
    "attribution": "engine.attribution:",
    "attribution_patching": "engine.attribution_patching:",
    "composition": "engine.composition:",
    "zoo": "zoo:",
    "tasks": "model.tasks:",
    "metrics": "model.metrics:",
    "ablation": "engine.ablation:",
    "strategies": "model.strategies:",
    "inputs": "model.inputs:",
    "interchange": "model.interchange:",
    "heads": "engine.heads:",
    "stats": "claims.stats:",
    "report": "report:",
    "claims": "claims:",  # the package, callable: ``with cc.claims():`` is soft mode
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
    if module_name.endswith(":"):
        value = importlib.import_module(f".{module_name[:-1]}", __name__)
    else:
        value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


# Import paths from before the layered layout (``circuitcheck.patcher`` and so on)
# stay valid: each old name is the new module itself, not a copy.
_MOVED = {
    "ablation": "engine.ablation",
    "attribution": "engine.attribution",
    "baseline": "claims.baseline",
    "checks": "claims",
    "checks.attribution": "claims.attribution",
    "checks.causal": "claims.causal",
    "checks.decision": "claims.decision",
    "checks.heads": "claims.heads",
    "checks.lens": "claims.lens",
    "checks.probe": "claims.probe",
    "circuit": "model.circuit",
    "components": "model.components",
    "composition": "engine.composition",
    "context": "model.context",
    "fastpath": "engine.fastpath",
    "fixtures": "pytest_plugin.fixtures",
    "heads": "engine.heads",
    "inputs": "model.inputs",
    "lens": "engine.lens",
    "metrics": "model.metrics",
    "patcher": "engine.patcher",
    "plugin": "pytest_plugin.plugin",
    "probe": "engine.probe",
    "registry": "model.sources",
    "result": "claims.result",
    "session": "pytest_plugin.session",
    "stats": "claims.stats",
    "strategies": "model.strategies",
    "tasks": "model.tasks",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``circuitcheck.<old name>`` to the module at its new place."""

    def find_spec(self, fullname, path=None, target=None):
        old = fullname[len(__name__) + 1:] if fullname.startswith(__name__ + ".") else None
        if old not in _MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        module = importlib.import_module(f"{__name__}.{_MOVED[spec.name[len(__name__) + 1:]]}")
        self._specs = getattr(self, "_specs", {})
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module):
        # the import system stamped the alias's spec on the module: give it back its own
        module.__spec__ = self._specs.pop(module.__spec__.name)


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _MovedModuleFinder())


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # pragma: no cover
    from .engine import ablation, attribution, composition, heads, lens
    from .model import inputs, metrics, strategies, tasks
    from .claims import stats
    from . import zoo
    from .engine.attribution import direct_logit_attribution
    from .engine import attribution_patching
    from .engine.attribution_patching import GraphSweep, RankAgreement, attribution_sweep, patching_sweep, rank_agreement
    from .claims.attribution import (
        assert_composition,
        assert_copying_head,
        assert_direct_effect,
        assert_top_direct_effects,
        check_composition,
        check_copying_head,
        check_direct_effect,
        check_top_direct_effects,
    )
    from .engine.composition import (
        composition_score,
        composition_scores,
        copying_score,
        copying_scores,
        ov_circuit,
        qk_circuit,
        random_composition_baseline,
    )
    from .claims.minimality import assert_minimal, check_minimal
    from .claims.completeness import assert_complete, check_complete
    from .claims.faithfulness import assert_faithful, check_faithful
    from .claims.causal import (
        assert_necessary,
        assert_path,
        assert_sufficient,
        check_necessary,
        check_path,
        check_sufficient,
    )
    from .claims.probe import Prober, assert_probe_accuracy, check_probe_accuracy
    from .engine.probe import ProbeResult
    from .claims.lens import assert_logit_lens_converges_by, check_logit_lens_converges_by
    from .pytest_plugin.fixtures import task_fixture
    from .engine.lens import TunedLens, logit_lens, tuned_lens
    from .engine.patcher import Patch, Patcher
    from .model.tasks import Task
    from .claims.heads import (
        assert_bos_head,
        assert_duplicate_token_head,
        assert_head_matches_pattern,
        assert_induction_head,
        assert_previous_token_head,
        check_head,
    )
    from .model.circuit import Circuit
    from .model.components import Component, Edge, parse_components
    from .engine.heads import HEAD_KINDS, head_scores
    from .claims.registry import ClaimCall, ClaimKind, Param
    from .claims.power import PowerResult, mutation_score
    from .claims.result import CheckResult
