"""The region of a graph between given input and output tensors, and turning it into one node.

A region is every node on a path from the ``inputs`` (or from constants) to
the ``outputs``: found by walking back from the outputs and stopping at the
inputs and at constants. The region lies in one graph (the main graph, an
If/Loop/Scan body or a local function's body); its inputs may come from
enclosing graphs, as a body reads outer tensors. Everything is found and
checked before anything changes, and costs one walk over the graph.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import onnx_graphsurgeon as gs

from surgeon.errors import PassError, suggestion_hint
from surgeon.graph.names import listed, node_label, quoted
from surgeon.graph.walk import subgraphs_of


@dataclass
class Scope:
    """One graph of the model and where it sits: the node (and graph) holding it as a body."""

    graph: gs.Graph
    parent: Scope | None = None
    owner: gs.Node | None = None
    function: str | None = None

    def label(self) -> str:
        if self.function is not None and self.owner is None:
            return f"local function '{self.function}'"
        if self.owner is None:
            return "the main graph"
        return f"subgraph '{self.graph.name}' of {node_label(self.owner)}"

    def ancestors(self) -> Iterator[Scope]:
        scope: Scope | None = self
        while scope is not None:
            yield scope
            scope = scope.parent


def scopes(graph: gs.Graph) -> list[Scope]:
    """Every graph of the model with its place: the main graph and its bodies, then each local
    function's body and its bodies (the order of :func:`surgeon.graph.walk.graphs_and_functions`)."""
    out: list[Scope] = []

    def visit(scope: Scope) -> None:
        out.append(scope)
        for node in scope.graph.nodes:
            for _, sub in subgraphs_of(node):
                visit(Scope(sub, scope, node, scope.function))

    visit(Scope(graph))
    for func in getattr(graph, "functions", None) or []:
        visit(Scope(func, None, None, func.name))
    return out


@dataclass
class TensorIndex:
    """Where each named tensor of the model is written: the scope whose node writes it or
    that lists it as an input. Constants are visible everywhere."""

    owner: dict[str, list[tuple[gs.Tensor, Scope]]] = field(default_factory=dict)
    constants: dict[str, gs.Constant] = field(default_factory=dict)

    @classmethod
    def of(cls, graph: gs.Graph) -> tuple[TensorIndex, list[Scope]]:
        index = cls()
        every = scopes(graph)
        for scope in every:
            g = scope.graph
            for t in g.inputs:
                index.add(t, scope)
            for node in g.nodes:
                for t in node.outputs:
                    if t.name:
                        index.add(t, scope)
                for t in node.inputs:
                    if isinstance(t, gs.Constant) and t.name and t.name not in index.constants:
                        index.constants[t.name] = t
        return index, every

    def add(self, t: gs.Tensor, scope: Scope) -> None:
        found = self.owner.get(t.name)
        if found is None:
            self.owner[t.name] = [(t, scope)]
        else:
            found.append((t, scope))

    def names(self) -> list[str]:
        return sorted(set(self.owner) | set(self.constants))

    def find(self, name: str, what: str) -> tuple[gs.Tensor, Scope | None]:
        """The tensor ``name`` and the scope that writes it (None for a constant)."""
        found = self.owner.get(name, [])
        if not found and name in self.constants:
            return self.constants[name], None
        if not found:
            raise PassError(f"{what} '{name}' is not a tensor of the model",
                            hint=suggestion_hint(name, self.names()) or "check the tensor name")
        unique = {id(t): (t, s) for t, s in found}
        if len(unique) > 1:
            raise PassError(f"{len(unique)} tensors are named '{name}' (in "
                            + ", ".join(s.label() for _, s in unique.values()) + ")",
                            hint="rename one of them first with rename_tensors")
        # A body's input and the node output that feeds it are different objects; a node output wins.
        return found[-1]


@dataclass
class Region:
    """The nodes between inputs and outputs, in graph order, and where they are."""

    scope: Scope
    nodes: list[gs.Node]
    constant_only: set[int]
    """ids of region nodes that depend on no input (constant subtrees, kept when read elsewhere)."""


def find_region(graph: gs.Graph, inputs: list[str], outputs: list[str]) -> tuple[Region, list[gs.Tensor],
                                                                                  list[gs.Tensor]]:
    """The region between the tensors named ``inputs`` and ``outputs``, checked: every error says
    which tensor or node is in the way. Returns the region and the input and output tensors."""
    index, _ = TensorIndex.of(graph)
    for i, name in enumerate(outputs):
        if name in outputs[:i]:
            raise PassError(f"output '{name}' is listed twice", hint="list each output once")
    for i, name in enumerate(inputs):
        if name in inputs[:i]:
            raise PassError(f"input '{name}' is listed twice", hint="list each input once")
        if name in outputs:
            raise PassError(f"'{name}' is both an input and an output of the region",
                            hint="a region's outputs are computed inside it from its inputs")
    outs: list[gs.Tensor] = []
    scope: Scope | None = None
    for name in outputs:
        t, s = index.find(name, "output")
        if s is None or not t.inputs:
            kind = "a constant" if s is None else f"an input of {s.label()}"
            raise PassError(f"output '{name}' is {kind}, not computed by a node",
                            hint="name tensors that nodes of the region compute")
        if scope is not None and s.graph is not scope.graph:
            raise PassError(f"outputs '{outputs[0]}' and '{name}' are in different graphs ({scope.label()} and "
                            f"{s.label()}): a region does not cross a graph boundary",
                            hint="replace a region within one graph; run the step once per graph")
        scope = s
        outs.append(t)
    if scope is None:
        raise PassError("no outputs given", hint="name the tensors leaving the region")
    ins: list[gs.Tensor] = []
    for name in inputs:
        t, s = index.find(name, "input")
        if s is not None and not any(s.graph is a.graph for a in scope.ancestors()):
            raise PassError(f"input '{name}' is in {s.label()}, but the outputs are in {scope.label()}: "
                            "a region does not cross a graph boundary",
                            hint="choose inputs and outputs in one graph (a body may read tensors of the "
                                 "graphs around it, not the other way round)")
        ins.append(t)

    g = scope.graph
    members = {id(n): i for i, n in enumerate(g.nodes)}
    input_ids = {id(t): k for k, t in enumerate(ins)}
    region: dict[int, gs.Node] = {}
    reached_inputs: set[int] = set()
    for name, out in zip(outputs, outs):
        seen: set[int] = set()
        foreign: list[tuple[gs.Tensor, gs.Node | None]] = []
        uses_input = False
        work: list[tuple[gs.Tensor, gs.Node | None]] = [(out, None)]
        while work:
            t, reader = work.pop()
            if id(t) in seen:
                continue
            seen.add(id(t))
            if id(t) in input_ids:
                reached_inputs.add(id(t))
                uses_input = True
                continue
            if isinstance(t, gs.Constant):
                continue
            producer = t.inputs[0] if t.inputs else None
            if producer is None or id(producer) not in members:
                foreign.append((t, reader))
                continue
            if id(producer) not in region:
                if any(True for _ in subgraphs_of(producer)):
                    raise PassError(f"the region would hold {node_label(producer)}, which has subgraphs",
                                    hint="replace_subgraph does not take If/Loop/Scan nodes into a region: "
                                         "choose inputs after it, or replace a region inside its body")
                region[id(producer)] = producer
            work.extend((x, producer) for x in producer.inputs if x.name)
        if not uses_input:
            depends = sorted({t.name for t, _ in foreign})
            raise PassError(f"output '{name}' is not reachable from the inputs ({quoted(inputs)})"
                            + (f": it depends on {quoted(depends)}" if depends
                               else ": it is computed from constants only"),
                            hint="name the tensors the region starts from in inputs"
                                 + (f", e.g. {quoted(depends[:3])}" if depends else ""))
        if foreign:
            t, reader = sorted(foreign, key=lambda f: f[0].name)[0]
            by = f" (read by {node_label(reader)})" if reader is not None else ""
            more = sorted({f.name for f, _ in foreign} - {t.name})
            raise PassError(f"the region reads '{t.name}'{by}, which is not among its inputs"
                            + (f"; also {quoted(more)}" if more else ""),
                            hint=f"add '{t.name}' to inputs (or name an input downstream of it, so that "
                                 f"{node_label(reader) if reader is not None else 'its reader'} stays outside)")
    for name, t in zip(inputs, ins):
        if id(t) not in reached_inputs:
            raise PassError(f"input '{name}' is not read by the region between the inputs and "
                            f"{quoted(outputs)}", hint="remove it from inputs, or check the outputs")
    nodes = sorted(region.values(), key=lambda n: members[id(n)])
    # Nodes that depend on an input, in graph order (producers come first).
    tainted: set[int] = set()
    tainted_tensors = set(input_ids)
    for node in nodes:
        if any(id(x) in tainted_tensors for x in node.inputs):
            tainted.add(id(node))
            tainted_tensors.update(id(o) for o in node.outputs)
    constant_only = {id(n) for n in nodes} - tainted
    _check_escapes(g, nodes, tainted, outs)
    _check_cycle(g, members, region, outs, ins)
    return Region(scope, nodes, constant_only), ins, outs


def _check_escapes(g: gs.Graph, nodes: list[gs.Node], tainted: set[int], outs: list[gs.Tensor]) -> None:
    inside = {id(n) for n in nodes}
    for node in nodes:  # the bodies of region nodes are part of the region (none: refused above)
        for _, sub in subgraphs_of(node):
            inside.update(id(n) for n in sub.nodes)
    kept = {id(t) for t in outs}
    graph_outputs = {id(t) for t in g.outputs}
    for node in nodes:
        if id(node) not in tainted:
            continue
        for t in node.outputs:
            if id(t) in kept:
                continue
            if id(t) in graph_outputs:
                raise PassError(f"tensor '{t.name}', made inside the region by {node_label(node)}, is a graph "
                                "output", hint=f"add '{t.name}' to outputs, or choose a smaller region")
            outside = [r for r in t.outputs if id(r) not in inside]
            if outside:
                raise PassError(f"tensor '{t.name}', made inside the region by {node_label(node)}, is also read "
                                f"by {listed((node_label(r) for r in outside), 3)} outside it",
                                hint=f"add '{t.name}' to outputs, or choose a region that ends before it")


def _check_cycle(g: gs.Graph, members: dict[int, int], region: dict[int, gs.Node], outs: list[gs.Tensor],
                 ins: list[gs.Tensor]) -> None:
    """One node in place of the region must not feed itself: no output may reach an input outside it."""
    producers = {id(t.inputs[0]): t for t in ins if t.inputs and id(t.inputs[0]) in members}
    if not producers:
        return
    seen: set[int] = set()
    work = [(r, t) for t in outs for r in t.outputs if id(r) in members and id(r) not in region]
    while work:
        node, out = work.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if id(node) in producers:
            raise PassError(f"output '{out.name}' feeds input '{producers[id(node)].name}' outside the region "
                            f"(through {node_label(node)}): one node in its place would feed itself",
                            hint="take the nodes between them into the region (name fewer inputs)")
        for o in node.outputs:
            work.extend((r, out) for r in o.outputs if id(r) in members and id(r) not in region)
