"""Rewiring helpers shared by passes that take nodes out of a graph.

``remove_node`` bypasses what a recipe selects; ``eliminate_noops`` bypasses
nodes that provably compute their input. Both must keep graph output names
stable, so both use :func:`bypass`.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from surgeon.graph.names import node_label
from surgeon.passes.result import PassResult


def detach(node: gs.Node, graph: gs.Graph, *, keep_listed: bool = False) -> None:
    """Disconnect ``node`` and drop it from ``graph.nodes`` (unless the caller drops many at once)."""
    node.inputs.clear()
    node.outputs.clear()
    if not keep_listed:
        graph.nodes.remove(node)


def _used_outputs(node: gs.Node, graph: gs.Graph) -> list[gs.Tensor]:
    return [t for t in node.outputs if t.outputs or t in graph.outputs]


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
    used = _used_outputs(node, graph)
    if not used or not any(t is used[0] for t in graph.outputs):
        return False
    return _movable_producer(node.inputs[input], graph, members) is None


def bypass(node: gs.Node, graph: gs.Graph, input: int, result: PassResult, *, keep_listed: bool = False,
           members: set[int] | None = None) -> None:
    """Take ``node`` out of ``graph``: readers of its (one used) output read input ``input``.

    A graph output keeps its name: when the node produced one, the node that
    produced the bypassed input now produces the output tensor; when the input
    is a graph input or a constant, an ``Identity`` is inserted instead. The
    caller checks beforehand that at most one output of the node is used.
    ``keep_listed``: the detached node stays in ``graph.nodes`` for the caller
    to drop together with others (removing one by one is quadratic).
    """
    x = node.inputs[input]
    used = _used_outputs(node, graph)
    if not used:
        detach(node, graph, keep_listed=keep_listed)
        return
    y = used[0]
    for consumer in list(y.outputs):
        if consumer is node:
            continue
        for i, t in enumerate(consumer.inputs):
            if t is y:
                consumer.inputs[i] = x
    if not any(t is y for t in graph.outputs):
        detach(node, graph, keep_listed=keep_listed)
        return
    # y is a graph output: keep its name by having x's producer write y directly.
    producer = _movable_producer(x, graph, members)
    detach(node, graph, keep_listed=keep_listed)
    if producer is not None:
        for consumer in list(x.outputs):
            for i, t in enumerate(consumer.inputs):
                if t is x:
                    consumer.inputs[i] = y
        idx = next(i for i, t in enumerate(producer.outputs) if t is x)
        producer.outputs[idx] = y
        if y.dtype is None:
            y.dtype, y.shape = x.dtype, x.shape
        result.notes.append(f"graph output '{y.name}' is now produced by {node_label(producer)}")
    else:
        ident = gs.Node("Identity", name=(node.name or node.op) + "_bypass", inputs=[x], outputs=[y])
        graph.nodes.append(ident)
        if members is not None:
            members.add(id(ident))
        result.notes.append(f"graph output '{y.name}' now copies '{x.name}' through an Identity")
