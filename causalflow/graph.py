r"""Causal graphs for mediation: ``"T -> searches; T -> views; searches -> views -> sales"``.

A graph is given as text or as a :class:`networkx.DiGraph`. The text is parsed by hand,
never evaluated: statements are separated by ``;`` (or new lines), and each statement is a
chain of node names joined by ``->`` (``a -> b -> c`` is the two edges a -> b and b -> c).
Names are stripped of surrounding spaces and otherwise kept as written, so a column name
may hold spaces; a name holding ``;`` or ``->`` needs the DiGraph form. The node ``T``
stands for the treatment.

:class:`CausalGraph` checks the structure (acyclic, T has no parents, T and the outcome are
nodes, the outcome is reachable from T) and answers the questions mediation asks: which
nodes lie on a directed path from T to the outcome (they get a node equation), which
parents of those nodes T cannot reach ("side" parents: regressors without an equation),
and the directed paths from T to the outcome.

Examples
--------
>>> g = CausalGraph.parse("T -> searches; T -> views; searches -> views -> sales")
>>> g.edges
(('T', 'searches'), ('T', 'views'), ('searches', 'views'), ('views', 'sales'))
>>> g.between("sales")
('searches', 'views', 'sales')
>>> [" -> ".join(p) for p in g.paths("sales")]
['T -> views -> sales', 'T -> searches -> views -> sales']
>>> CausalGraph.parse("T -> a -> b -> a")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
causalflow.errors.ValidationError: graph: it has a cycle a -> b -> a (edge 'b -> a' closes it); ...
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ValidationError

__all__ = ["TREATMENT", "CausalGraph"]

#: the node that stands for the treatment
TREATMENT = "T"
_MAX_LENGTH = 20_000


@dataclass(frozen=True)
class CausalGraph:
    """A directed acyclic graph over ``T`` (the treatment) and metric columns.

    Attributes
    ----------
    nodes : tuple of str, in order of first appearance
    edges : tuple of (parent, child), in order of first appearance, without repeats
    """

    nodes: tuple
    edges: tuple

    # -- construction ----------------------------------------------------------------
    @classmethod
    def parse(cls, graph) -> CausalGraph:
        """A graph from text (``"T -> a; a -> b -> y"``) or a networkx DiGraph.

        Raises a ValidationError naming the statement, node or edge at fault: a statement
        without ``->``, an empty name, a non-text node of a DiGraph, an edge into ``T``, a
        cycle, a graph without edges or without ``T``.

        >>> CausalGraph.parse("T -> a\\n a -> y;").edges
        (('T', 'a'), ('a', 'y'))
        >>> import networkx as nx
        >>> CausalGraph.parse(nx.DiGraph([("T", "m"), ("m", "y")])).nodes
        ('T', 'm', 'y')
        """
        if isinstance(graph, CausalGraph):
            return graph
        if isinstance(graph, str):
            nodes, edges = _parse_text(graph)
        elif type(graph).__module__.partition(".")[0] == "networkx" and isinstance(graph, _nx().DiGraph):
            nodes, edges = _from_digraph(graph)
        else:
            raise ValidationError("graph: expected text such as 'T -> a; a -> y' or a networkx DiGraph, "
                                  f"got {type(graph).__name__}")
        if not edges:
            raise ValidationError("graph: it has no edges")
        if TREATMENT not in nodes:
            raise ValidationError(f"graph: it has no node {TREATMENT!r} (the treatment); write edges such as "
                                  f"'{TREATMENT} -> mediator'")
        into = [e for e in edges if e[1] == TREATMENT]
        if into:
            raise ValidationError(f"graph: edge '{into[0][0]} -> {TREATMENT}' points into the treatment "
                                  f"{TREATMENT!r}, which is randomized and has no parents")
        out = cls(tuple(nodes), tuple(edges))
        out._check_acyclic()
        return out

    def _check_acyclic(self) -> None:
        nx = _nx()
        try:
            cycle = nx.find_cycle(self.digraph())
        except nx.NetworkXNoCycle:
            return
        loop = " -> ".join([cycle[0][0]] + [child for _, child in cycle])
        raise ValidationError(f"graph: it has a cycle {loop} (edge '{cycle[-1][0]} -> {cycle[-1][1]}' "
                              "closes it); a causal graph must be acyclic")

    def digraph(self):
        """The graph as a new networkx DiGraph."""
        g = _nx().DiGraph()
        g.add_nodes_from(self.nodes)
        g.add_edges_from(self.edges)
        return g

    # -- questions of mediation ----------------------------------------------------------
    def parents(self, node: str) -> tuple:
        """Parents of ``node`` in edge order (``T`` included when it is one)."""
        return tuple(a for a, b in self.edges if b == node)

    def order(self) -> dict:
        """Position of every node in a topological order (ties broken by first appearance)."""
        first = {v: i for i, v in enumerate(self.nodes)}
        order = _nx().lexicographical_topological_sort(self.digraph(), key=first.__getitem__)
        return {v: i for i, v in enumerate(order)}

    def descendants(self, node: str) -> set:
        """Nodes reachable from ``node`` along directed edges (not ``node`` itself)."""
        return _nx().descendants(self.digraph(), node)

    def between(self, outcome: str) -> tuple:
        """Nodes on a directed path from ``T`` to ``outcome``, in topological order, ending with
        ``outcome``: the nodes that get an equation.

        >>> CausalGraph.parse("T -> a -> y; b -> y; T -> c").between("y")
        ('a', 'y')
        """
        self._check_outcome(outcome)
        g = self.digraph()
        keep = (_nx().descendants(g, TREATMENT) & _nx().ancestors(g, outcome)) | {outcome}
        position = self.order()
        return tuple(sorted(keep, key=position.__getitem__))

    def side_parents(self, outcome: str) -> tuple:
        """Parents of the nodes of :meth:`between` that ``T`` does not reach: they enter their
        children's equations as regressors and carry no effect of T.

        >>> CausalGraph.parse("T -> a -> y; b -> y").side_parents("y")
        ('b',)
        """
        inside = set(self.between(outcome)) | {TREATMENT}
        side = [u for v in self.between(outcome) for u in self.parents(v) if u not in inside]
        return tuple(dict.fromkeys(side))

    def paths(self, outcome: str, treatment_into=None) -> list[tuple]:
        """Directed paths from ``T`` to ``outcome`` (each a tuple of nodes), shortest first.

        ``treatment_into``: the nodes whose equations hold the treatment, when that differs
        from the graph's own edges out of T (mediation puts T into every node equation by
        default); None uses the graph's edges.
        """
        nodes = self.between(outcome)
        g = self.digraph().subgraph((TREATMENT, *nodes)).copy()
        if treatment_into is not None:
            g.remove_edges_from([(TREATMENT, v) for v in list(g.successors(TREATMENT))])
            g.add_edges_from((TREATMENT, v) for v in treatment_into)
        position = self.order()
        found = list(_nx().all_simple_paths(g, TREATMENT, outcome))
        return sorted((tuple(p) for p in found), key=lambda p: (len(p), [position[v] for v in p]))

    def _check_outcome(self, outcome: str) -> None:
        if outcome not in self.nodes:
            raise ValidationError(f"graph: it has no node {outcome!r} (the effect's metric)")
        if outcome == TREATMENT:
            raise ValidationError(f"graph: the outcome cannot be the treatment {TREATMENT!r}")
        if outcome not in self.descendants(TREATMENT):
            raise ValidationError(f"graph: no directed path leads from {TREATMENT!r} to {outcome!r}")

    def __str__(self) -> str:
        return "; ".join(f"{a} -> {b}" for a, b in self.edges)


def _nx():
    """networkx, imported where a graph algorithm runs (it is a dependency of the core install,
    but a slow import that ``import causalflow`` need not pay)."""
    import networkx

    return networkx


def _parse_text(text: str) -> tuple[list, list]:
    if len(text) > _MAX_LENGTH:
        raise ValidationError(f"graph: the text is longer than {_MAX_LENGTH:,} characters")
    nodes: dict = {}
    edges: dict = {}
    for statement in text.replace("\n", ";").split(";"):
        statement = statement.strip()
        if not statement:
            continue
        names = [part.strip() for part in statement.split("->")]
        if len(names) < 2:
            raise ValidationError(f"graph: statement {statement!r} has no edge; write 'a -> b'")
        if not all(names):
            raise ValidationError(f"graph: statement {statement!r} has an empty node name")
        for name in names:
            nodes.setdefault(name, None)
        for edge in zip(names[:-1], names[1:]):
            edges.setdefault(edge, None)
    return list(nodes), list(edges)


def _from_digraph(graph) -> tuple[list, list]:
    bad = [v for v in graph.nodes if not isinstance(v, str) or not v.strip()]
    if bad:
        raise ValidationError(f"graph: node {bad[0]!r} is not a column name (text)")
    edges = list(dict.fromkeys((a, b) for a, b in graph.edges()))
    return list(graph.nodes), edges
