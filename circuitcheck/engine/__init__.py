"""The engine: the patcher (batched variants), its fast forward, sweeps, paths, ablations,
and the measurements built on them (head scores, lenses, attribution, composition, probes)."""
