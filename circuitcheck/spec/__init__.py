"""Executable specs: ``*.circuit.yaml`` files of claims, validated with file:line:key errors."""

from .load import SUFFIX, Claim, Spec, SpecError, TaskSpec, load_spec, new_spec_text, write_new_spec

__all__ = ["SUFFIX", "Claim", "Spec", "SpecError", "TaskSpec", "load_spec", "new_spec_text", "write_new_spec"]
