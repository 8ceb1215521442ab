"""The pytest integration: options, markers, fixtures, per-run plugin objects and spec-file collection."""
