"""Circuits: named sets of components (and optionally edges)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Union

from .components import Component, Edge, parse_components
from ..errors import ComponentError


@dataclass(frozen=True)
class Circuit:
    """A named set of components, with optional edges between them.

    ``Circuit.parse("L0H2 L1H3 L1H1", name="induction")``; edges use ``->``:
    ``Circuit.parse("L0H2 -> L1H3.k, L1H3 -> logits", name="induction")`` (commas
    or spaces between edges). Components are kept sorted by layer and
    deduplicated, edges deduplicated in the order given, so equal circuits
    compare equal.

    A *node circuit* lists components: its causal checks keep them and ablate
    every other head and MLP output. An *edge circuit* lists edges only: its
    checks keep those edges and ablate every other edge of the model's graph
    (:mod:`circuitcheck.engine.edges`). A circuit listing both is refused by
    the causal checks (write its components' edges out instead).
    """

    components: tuple[Component, ...]
    edges: tuple[Edge, ...] = ()
    name: str | None = field(default=None, compare=False)

    @classmethod
    def parse(cls, text: Union[str, Iterable[Union[str, Component]]], name: str | None = None) -> "Circuit":
        if isinstance(text, str):
            nodes: list[Component] = []
            edges: list[Edge] = []
            for part in (p.strip() for p in re.split(r"[,\n;]+", text)):
                # "L0H2 -> L1H3.k L1H3 -> logits": arrows bind the words either side of them.
                for word in re.sub(r"\s*->\s*", "->", part).split():
                    if "->" in word:
                        edges.append(Edge.parse(word.replace("->", " -> ")))
                    else:
                        nodes.extend(parse_components(word))
            return cls.of(nodes, edges, name=name)
        if isinstance(text, Edge):
            return cls.of((), [text], name=name)
        items = list(text) if isinstance(text, Iterable) and not isinstance(text, (bytes, dict, Component)) else None
        if items is not None and any(isinstance(item, Edge) or (isinstance(item, str) and "->" in item) for item in items):
            return cls.parse(", ".join(map(str, items)), name=name)
        return cls.of(parse_components(text), name=name)

    @classmethod
    def of(cls, components: Iterable[Component], edges: Iterable[Edge] = (), name: str | None = None) -> "Circuit":
        unique = sorted(set(components), key=Component.sort_key)
        return cls(tuple(unique), tuple(dict.fromkeys(edges)), name)

    def validate(self, model) -> "Circuit":
        if not self.components and not self.edges:
            raise ComponentError(f"circuit {self.label} is empty: list at least one component")
        for component in self.components:
            component.validate(model)
        for edge in self.edges:
            edge.validate(model)
        return self

    @property
    def is_edge_circuit(self) -> bool:
        """Whether the circuit lists edges only (its causal checks keep edges, not components)."""
        return bool(self.edges) and not self.components

    def without(self, component: Union[str, Component, Edge]) -> "Circuit":
        if isinstance(component, Edge) or (isinstance(component, str) and "->" in component):
            edge = Edge.parse(component)
            if edge not in self.edges:
                raise ComponentError(f"edge {edge} is not in circuit {self.label}: it has {self}")
            return Circuit.of(self.components, [e for e in self.edges if e != edge], name=self.name)
        removed = Component.parse(component)
        if removed not in self.components:
            raise ComponentError(f"{removed} is not in circuit {self.label}: it has {self}")
        return Circuit.of([c for c in self.components if c != removed], self.edges, name=self.name)

    def with_(self, *components: Union[str, Component]) -> "Circuit":
        return Circuit.of([*self.components, *parse_components(list(components))], self.edges, name=self.name)

    @property
    def label(self) -> str:
        return repr(self.name) if self.name else f"'{self}'"

    def __iter__(self):
        return iter(self.components)

    def __len__(self) -> int:
        return len(self.components)

    def __contains__(self, item) -> bool:
        return Component.parse(item) in self.components

    def __str__(self) -> str:
        return ", ".join([" ".join(map(str, self.components))] * bool(self.components) + [str(e) for e in self.edges])
