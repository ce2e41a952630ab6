"""Editing the wiring of a gs graph: replacing uses, removing, detaching and bypassing nodes.

Every pass that takes nodes out or points readers elsewhere goes through
these, so they all keep the same guarantees: graph output names stay, readers
inside subgraphs are rewired with the others, and the cost stays linear in
the graph (gs nodes compare with a slow ``__eq__``, so nothing here uses
``list.remove`` or ``in`` on node lists: membership is by ``id``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import onnx_graphsurgeon as gs

from surgeon.graph.names import node_label
from surgeon.graph.walk import subgraphs_of

# gs keeps ``node.inputs[i] is t`` and ``node in t.outputs`` (and the same for outputs/inputs) in
# step through ``SynchronizedList``: each change also edits the list on the other side, found
# with ``list.remove``, which compares with gs's slow ``__eq__`` (and may take out an equal but
# different node). The helpers below keep exactly that invariant with plain list operations and
# identity, at a fraction of the cost: bypassing 50,000 nodes is most of a remove_node step.
_set_item = list.__setitem__
_del_item = list.__delitem__
_append = list.append
_clear = list.clear


def _unlink(items: list, obj: object) -> None:
    """Remove the first ``obj`` (by identity) from ``items``, without SynchronizedList's hooks."""
    if items and items[0] is obj:
        _del_item(items, 0)
        return
    for i, x in enumerate(items):
        if x is obj:
            _del_item(items, i)
            return


def set_input(node: gs.Node, index: int, tensor: gs.Tensor) -> None:
    """``node.inputs[index] = tensor``, with ``tensor.outputs`` (and the old tensor's) kept in step."""
    ins = node.inputs
    _unlink(ins[index].outputs, node)
    _set_item(ins, index, tensor)
    _append(tensor.outputs, node)


def replace_uses(old: gs.Tensor, new: gs.Tensor, *, readers: Iterable[gs.Node] | None = None
                 ) -> list[tuple[gs.Node, int]]:
    """Make the readers of ``old`` read ``new`` instead; returns the ``(node, input index)`` pairs
    rewired, so a caller that must undo can put ``old`` back.

    ``readers``: only these nodes (default: every node that reads ``old``,
    in any graph: nodes in If/Loop/Scan bodies that read an outer tensor are
    among its readers). Graph outputs are never replaced: an output's name is
    the model's interface, so a caller that must keep it moves the producer
    instead (see :func:`bypass`).
    """
    chosen = list(old.outputs) if readers is None else list(readers)
    rewired: list[tuple[gs.Node, int]] = []
    if len(chosen) == 1:  # most tensors have one reader
        node = chosen[0]
        for i, t in enumerate(node.inputs):
            if t is old:
                set_input(node, i, new)
                rewired.append((node, i))
        return rewired
    done: set[int] = set()  # a node reading ``old`` twice is listed twice
    for node in chosen:
        if id(node) in done:
            continue
        done.add(id(node))
        for i, t in enumerate(node.inputs):
            if t is old:
                set_input(node, i, new)
                rewired.append((node, i))
    return rewired


def remove_nodes(graph: gs.Graph, nodes: Iterable[gs.Node], *, detach: bool = True) -> None:
    """Drop ``nodes`` from ``graph.nodes`` in one sweep (by identity: gs nodes compare by value).

    ``detach``: also disconnect them from their tensors (the usual case);
    False when the caller moves a node elsewhere with its wiring intact.
    Removing many nodes costs one pass over the graph: callers collect the
    nodes of a sweep and remove them together.
    """
    nodes = list(nodes)
    if not nodes:
        return
    gone = {id(n) for n in nodes}
    if detach:
        for node in nodes:
            _detach(node)
    graph.nodes = [n for n in graph.nodes if id(n) not in gone]


def remove_dead(graph: gs.Graph, tensors: Iterable[gs.Tensor], *, members: set[int] | None = None,
                later: list[gs.Node] | None = None) -> int:
    """Remove the producers in ``graph`` of ``tensors`` (and theirs) that nothing reads any more.

    A pass that rewired readers away from ``tensors`` calls this instead of a
    full cleanup: only the chain that became dead is visited. Nodes with
    subgraphs stay (their bodies may read tensors the walk does not see).
    Returns how many nodes went.

    A pass calling this once per rewrite passes ``members`` (ids of
    ``graph.nodes``, kept up to date here) and ``later`` (the dead nodes are
    detached and collected there for one :func:`remove_nodes` at the end of
    its sweep), so that many calls stay linear in the graph.
    """
    here = {id(n) for n in graph.nodes} if members is None else members
    outputs = {id(t) for t in graph.outputs}
    dead: list[gs.Node] = []
    work = [t for t in tensors if isinstance(t, gs.Variable)]
    while work:
        t = work.pop()
        if t.outputs or id(t) in outputs or not t.inputs or id(t.inputs[0]) not in here:
            continue
        node = t.inputs[0]
        if any(o.outputs or id(o) in outputs for o in node.outputs) or any(True for _ in subgraphs_of(node)):
            continue
        work.extend(node.inputs)
        here.discard(id(node))
        dead.append(node)
        _clear_inputs(node)
    if later is None:
        remove_nodes(graph, dead)
    else:
        for node in dead:
            detach(node)
        later.extend(dead)
    return len(dead)


def detach(node: gs.Node) -> None:
    """Disconnect ``node`` from its tensors; the caller drops it from its graph (with
    :func:`remove_nodes`, together with the others of the same sweep)."""
    _detach(node)


def _clear_inputs(node: gs.Node) -> None:
    """``node.inputs.clear()``."""
    ins = node.inputs
    for t in ins:
        _unlink(t.outputs, node)
    _clear(ins)


def _detach(node: gs.Node) -> None:
    """``node.inputs.clear(); node.outputs.clear()``."""
    ins, outs = node.inputs, node.outputs
    for t in ins:
        _unlink(t.outputs, node)
    _clear(ins)
    for t in outs:
        _unlink(t.inputs, node)
    _clear(outs)


def used_outputs(node: gs.Node, graph: gs.Graph) -> list[gs.Tensor]:
    """The outputs of ``node`` that something reads or that are outputs of ``graph``."""
    outs = node.outputs
    if len(outs) == 1 and outs[0].outputs:  # the usual node: one output, read
        return [outs[0]]
    outputs = {id(t) for t in graph.outputs}
    return [t for t in outs if t.outputs or id(t) in outputs]


def _movable_producer(x: gs.Tensor, graph: gs.Graph, members: set[int] | None = None) -> gs.Node | None:
    """The node of ``graph`` that produces ``x``, if it may write a graph output instead.

    ``members``: ids of ``graph.nodes``, when the caller bypasses many nodes
    (scanning the node list per call would make that quadratic)."""
    producer = x.inputs[0] if isinstance(x, gs.Variable) and len(x.inputs) == 1 else None
    if members is None:
        members = {id(n) for n in graph.nodes}
    if producer is None or id(producer) not in members:
        return None
    if any(x is t for g_io in (graph.inputs, graph.outputs) for t in g_io):
        return None
    return producer


def needs_identity(node: gs.Node, graph: gs.Graph, input: int, members: set[int] | None = None) -> bool:
    """Whether bypassing ``node`` must insert an ``Identity`` to keep a graph output's name.

    That is the case when the node produces a graph output and its input is a
    graph input, a constant, an outer-scope tensor or a graph output itself.
    """
    used = used_outputs(node, graph)
    if not used or not any(t is used[0] for t in graph.outputs):
        return False
    return _movable_producer(node.inputs[input], graph, members) is None


@dataclass(frozen=True)
class Bypassed:
    """What :func:`bypass` did, for the caller to report."""

    output: gs.Tensor | None = None
    """The graph output the bypassed node produced (None: it produced none)."""
    producer: gs.Node | None = None
    """The node that now writes that graph output in its place."""
    identity: gs.Node | None = None
    """The Identity inserted to write it, when no node could."""

    @property
    def note(self) -> str | None:
        """A line for the pass's notes, when the bypass changed who writes a graph output."""
        if self.output is None:  # bypass sets producer or identity only together with the output
            return None
        if self.producer is not None:
            return f"graph output '{self.output.name}' is now produced by {node_label(self.producer)}"
        if self.identity is not None:
            return f"graph output '{self.output.name}' now copies '{self.identity.inputs[0].name}' " \
                   "through an Identity"
        return None


_NOTHING = Bypassed()


def bypass(node: gs.Node, graph: gs.Graph, input: int, *, members: set[int] | None = None) -> Bypassed:
    """Take ``node`` out of the wiring: readers of its (one used) output read input ``input``.

    A graph output keeps its name: when the node produced one, the node that
    produced the bypassed input now produces the output tensor; when the input
    is a graph input or a constant, an ``Identity`` is inserted (appended to
    ``graph.nodes``, and to ``members`` when given). The caller checks
    beforehand that at most one output of the node is used, and drops the
    detached node from ``graph.nodes`` (:func:`remove_nodes`, once per sweep).
    """
    x = node.inputs[input]
    used = used_outputs(node, graph)
    if not used:
        _detach(node)
        return _NOTHING
    y = used[0]
    replace_uses(y, x, readers=[c for c in y.outputs if c is not node])
    for t in graph.outputs:
        if t is y:
            break
    else:
        _detach(node)
        return _NOTHING
    # y is a graph output: keep its name by having x's producer write y directly.
    producer = _movable_producer(x, graph, members)
    _detach(node)
    if producer is not None:
        replace_uses(x, y)
        idx = next(i for i, t in enumerate(producer.outputs) if t is x)
        outs = producer.outputs
        _unlink(x.inputs, producer)
        _set_item(outs, idx, y)
        _append(y.inputs, producer)
        if y.dtype is None:
            y.dtype, y.shape = x.dtype, x.shape
        return Bypassed(output=y, producer=producer)
    ident = gs.Node("Identity", name=(node.name or node.op) + "_bypass", inputs=[x], outputs=[y])
    graph.nodes.append(ident)
    if members is not None:
        members.add(id(ident))
    return Bypassed(output=y, identity=ident)
