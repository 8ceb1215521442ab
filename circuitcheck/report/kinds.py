"""Which section of the report shows a claim kind, and the definition the page states for it: the registry's words.

The records of the claim kinds (:mod:`circuitcheck.claims.registry`) are
declared in the claim modules, which import torch; a report re-rendered from a
results file (``python -m circuitcheck report results.json``) must not import
it, and must look the same as the page written during the run. So the two
fields the report reads from each built-in record, ``section`` and
``definition``, are copied into :mod:`.kind_catalogue`, a module generated from
the registry (``python -m circuitcheck.report.kinds`` writes it; a test fails
when it differs from the registry). A kind the catalogue does not know (one a
plugin adds) has no section: the page shows its claims in the claims table and
its evidence tables under "Other evidence".
"""

from __future__ import annotations

import json
from pathlib import Path

from .kind_catalogue import KINDS

CATALOGUE_PATH = Path(__file__).with_name("kind_catalogue.py")
_HEADER = '''"""The report's copy of each built-in claim kind's ``section`` and ``definition``, in registry order.

Generated from :mod:`circuitcheck.claims.registry` by ``python -m circuitcheck.report.kinds``:
do not edit; change the record beside the check and regenerate (see :mod:`circuitcheck.report.kinds`).
"""

'''


def section_of(kind: str) -> str | None:
    """The report section of claims of ``kind``; None for a kind the report has no section for."""
    entry = KINDS.get(kind)
    return entry["section"] if entry else None


def definitions(*sections: str) -> list[str]:
    """The definitions of the kinds shown in ``sections``, in the order of the sections then of the registry, each once."""
    found: list[str] = []
    for section in sections:
        for entry in KINDS.values():
            if entry["section"] == section and entry["definition"] and entry["definition"] not in found:
                found.append(entry["definition"])
    return found


def catalogue_from_registry() -> dict[str, dict[str, str]]:
    """``{kind: {"section", "definition"}}`` of the built-in kinds, read from their records (imports the claim modules)."""
    from ..claims import registry

    builtin = [kind for kind in registry.kinds().values() if getattr(kind.check, "__module__", "").startswith("circuitcheck.")]
    # by module, then in the order each module declares its kinds: the same whatever order the modules were imported in
    builtin.sort(key=lambda kind: kind.check.__module__)
    return {kind.name: {"section": kind.section, "definition": kind.definition} for kind in builtin}


def catalogue_text(catalogue: dict[str, dict[str, str]]) -> str:
    """The source of :mod:`.kind_catalogue` holding ``catalogue``."""
    # a JSON object of strings is a Python literal: one kind per block, diffs stay readable
    return _HEADER + "KINDS = " + json.dumps(catalogue, indent=4, ensure_ascii=False) + "\n"


def write_catalogue(path: Path = CATALOGUE_PATH) -> Path:
    """Regenerate :mod:`.kind_catalogue` from the registry."""
    path.write_text(catalogue_text(catalogue_from_registry()), encoding="utf-8")
    return path


if __name__ == "__main__":
    print(f"wrote {write_catalogue()}")
