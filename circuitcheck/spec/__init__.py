"""Executable specs: ``*.circuit.yaml`` files of claims, validated with file:line:key errors.

- :mod:`.yaml`: YAML with line numbers (and :class:`SpecError`);
- :mod:`.schema`: the schema read from the registry of claim kinds, one validator per parameter type;
- :mod:`.load`: the :class:`Spec` / :class:`Claim` / :class:`TaskSpec` model and :func:`load_spec`;
- :mod:`.starter`: ``python -m circuitcheck spec new`` (:func:`new_spec_text`, :func:`write_new_spec`).

Their pytest collection is :mod:`circuitcheck.pytest_plugin.spec_items`.
"""

from .load import SUFFIX, Claim, Spec, TaskSpec, load_spec
from .starter import new_spec_text, write_new_spec
from .yaml import SpecError

__all__ = ["SUFFIX", "Claim", "Spec", "SpecError", "TaskSpec", "load_spec", "new_spec_text", "write_new_spec"]
