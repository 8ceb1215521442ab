"""Hook specifications: how plugins extend circuitcheck.

Plugins implement these hooks with functions of the same name, marked with
``circuitcheck.hookimpl`` (plain functions named ``circuitcheck_*`` in a
``conftest.py`` are accepted too). They are found in three places:

- installed distributions that declare an entry point in the ``circuitcheck``
  group (this is how the first-party plugins in ``plugins/`` are registered);
- ``conftest.py`` files of a pytest run;
- objects passed to :func:`circuitcheck.register` (notebooks, scripts).

This module imports nothing heavy: it is loaded when pytest starts.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("circuitcheck")


@hookspec(firstresult=True)
def circuitcheck_load_model(spec: str, device: str):
    """Load the model named by ``spec`` on ``device``, or return None if ``spec`` is not yours.

    Called when a test needs a model (the ``model`` fixture) or when
    :func:`circuitcheck.load_model` is called. Sources are asked in turn,
    the most recently registered first; the first that returns a model wins
    (``firstresult``), so a conftest.py source can take over a spec.

    :param spec: a model spec such as ``"zoo:induction-2l@step800"``, a local
        directory or a hub name, exactly as the user wrote it.
    :param device: a torch device string such as ``"cpu"`` or ``"cuda"``
        (``"auto"`` has already been resolved).
    :return: a model with the TransformerLens interface (``cfg``,
        ``run_with_cache``, ``run_with_hooks``, canonical hook names), or None.
        A source that recognises the spec but cannot load it (a missing
        checkpoint, say) raises :class:`circuitcheck.ModelSpecError` naming
        what exists, rather than returning None.
    """


@hookspec(firstresult=True)
def circuitcheck_list_checkpoints(spec: str):
    """List the checkpoints of the model named by ``spec``, or return None if it is not yours.

    Called when checkpoints are given as ``all`` (``--circuitcheck-checkpoints=all``
    or ``@pytest.mark.circuitcheck_checkpoints("all")``). A source that
    recognises the spec but cannot list its checkpoints (a hub model without
    network) returns an empty list, and the user is asked to name them.

    :param spec: the model spec without a checkpoint, e.g. ``"zoo:induction-2l"``
        or ``"./runs/ckpt-{checkpoint}"``.
    :return: checkpoint names in training order, each usable as ``spec@NAME``
        (or in place of ``{checkpoint}``).
    """


@hookspec
def circuitcheck_model_sources() -> list[str]:
    """Describe the model specs this plugin can load, one line each.

    Called to build the error message for a spec that no source recognises,
    and by ``python -m circuitcheck models``. Every plugin contributes.

    :return: lines such as ``"zoo:NAME[@CHECKPOINT]: bundled toy models (induction-2l, induction-1l)"``.
    """


@hookspec(firstresult=True)
def circuitcheck_make_ablation(spec: str):
    """Build the ablation named by ``spec``, or return None if it is not yours.

    Called when an assertion or the patcher gets an ablation string that is
    not built in (``resample``, ``mean``, ``zero``, ``noise(STD)``). The first
    plugin that returns an :class:`circuitcheck.ablation.Ablation` wins.

    :param spec: the string as the user wrote it, e.g. ``"median"`` or ``"scaled(0.5)"``.
    :return: an ``Ablation(name, value, needs)`` whose ``value(hook_name, runs)``
        returns the replacement activation, or None.
    """


@hookspec
def circuitcheck_claim_kinds() -> list:
    """Add kinds of claims: return a list of :class:`circuitcheck.ClaimKind` records.

    Called whenever the registry of claim kinds is read (validating a spec
    file, building the report, the terminal summary); every plugin
    contributes. A kind declared here is a kind like the built-in ones: spec
    files can write it (``kind: NAME`` with its parameters), its results go to
    the JSON and the HTML report (in the section the record names, or with its
    evidence tables when the report has no such section), and the terminal
    summary lists them.

    :return: ``ClaimKind`` records, or None. A name that clashes with another
        kind is an error.
    """
