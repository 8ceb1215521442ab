"""First-party circuitcheck plugins (installed as ``circuitcheck_plugins``).

Each module uses only circuitcheck's public hooks (``circuitcheck.hookspecs``)
and is registered through the ``circuitcheck`` entry-point group, exactly as a
third-party plugin would be.
"""
