"""Claims: one module per claim family (check + registry record), statistics, decisions, results.

This package imports nothing at import time, so that its light modules
(``registry``, ``baseline``, ``result``'s JSON helpers) can be reached from the
pytest plugin without torch.
"""

import sys as _sys
import types as _types


class _ClaimsPackage(_types.ModuleType):
    """This package, callable: ``cc.claims()`` is soft mode (:func:`circuitcheck.model.context.soft_claims`)."""

    def __call__(self):
        """``with cc.claims(): ...``: every claim in the block is measured and recorded; the block fails once at its end."""
        from ..model.context import soft_claims

        return soft_claims()


_sys.modules[__name__].__class__ = _ClaimsPackage
