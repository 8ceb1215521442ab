"""Claims: one module per claim family (check + registry record), statistics, decisions, results.

This package imports nothing at import time, so that its light modules
(``registry``, ``baseline``, ``result``'s JSON helpers) can be reached from the
pytest plugin without torch.
"""
