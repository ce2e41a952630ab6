"""Topological order of one graph's nodes: iterative, stable, linear-ish.

onnx-graphsurgeon's ``toposort`` recurses once per level of the graph, so a
graph deeper than Python's recursion limit (~800 levels in practice) fails
with "maximum recursion depth exceeded"; it also reorders graphs that were
already sorted. :func:`sorted_nodes` is Kahn's algorithm with a heap keyed by
each node's current position: among the nodes that are ready it always takes
the one that came first, so a sorted graph keeps its order exactly and an
unsorted one moves only what must move.
"""

from __future__ import annotations

import heapq

import onnx_graphsurgeon as gs

from surgeon.graph.walk import subgraphs_of, walk_graphs


class CycleError(ValueError):
    """The graph has a cycle: no order puts every producer before its readers."""


def _captured_names(node: gs.Node) -> set[str]:
    """Names of outer tensors that ``node``'s subgraphs read (gs links those by name: a
    subgraph imported before its producer holds its own tensor object of that name)."""
    read: set[str] = set()
    local: set[str] = set()
    for _, sub in subgraphs_of(node):
        for g in walk_graphs(sub):
            local.update(t.name for t in g.inputs)
            for n in g.nodes:
                read.update(t.name for t in n.inputs if t.name)
                local.update(t.name for t in n.outputs)
                local.update(t.name for t in n.inputs if isinstance(t, gs.Constant))
    return read - local


class _Producers:
    def __init__(self, nodes: list[gs.Node]) -> None:
        self.by_id: dict[int, int] = {}
        self.by_name: dict[str, int] = {}
        for i, n in enumerate(nodes):
            for t in n.outputs:
                self.by_id.setdefault(id(t), i)
                if t.name:
                    self.by_name.setdefault(t.name, i)

    def of(self, node: gs.Node) -> set[int]:
        """Positions of the nodes ``node`` depends on."""
        by_id = self.by_id
        deps = {by_id[id(t)] for t in node.inputs if id(t) in by_id}
        if node.attrs:
            by_name = self.by_name
            deps.update(by_name[name] for name in _captured_names(node) if name in by_name)
        return deps


def sorted_nodes(graph: gs.Graph) -> list[gs.Node]:
    """``graph.nodes`` in a topological order that keeps the current order wherever it is valid.

    A node depends on the nodes of this graph that produce its inputs (by
    identity) and the outer tensors its subgraphs read (by name, as gs links
    them). Raises
    :class:`CycleError` naming nodes on a cycle.
    """
    nodes = list(graph.nodes)
    producers = _Producers(nodes)
    waiting = [0] * len(nodes)
    readers: list[list[int]] = [[] for _ in nodes]
    for j, n in enumerate(nodes):
        deps = producers.of(n)
        waiting[j] = len(deps)
        for i in deps:
            readers[i].append(j)
    ready = [j for j, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in readers[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    if len(order) < len(nodes):
        stuck = [nodes[j].name or nodes[j].op for j, w in enumerate(waiting) if w > 0]
        raise CycleError(f"graph '{graph.name}' has a cycle through node(s) " + ", ".join(stuck[:5])
                         + (" ..." if len(stuck) > 5 else ""))
    return [nodes[i] for i in order]


def is_sorted(graph: gs.Graph) -> bool:
    """Whether every node comes after the producers (in this graph) of what it and its subgraphs read."""
    nodes = list(graph.nodes)
    producers = _Producers(nodes)
    return all(i < j for j, n in enumerate(nodes) for i in producers.of(n))
