"""remove_node: take nodes out of the graph, rewiring around them."""

from __future__ import annotations

from typing import Literal

import onnx_graphsurgeon as gs

from surgeon.errors import PassError
from surgeon.model import Model
from surgeon.passes.result import PassResult
from surgeon.passes.select import Selector


def remove_node(model: Model, select: Selector, *, input: int = 0,
                mode: Literal["bypass", "drop"] = "bypass") -> PassResult:
    """Bypass or drop the selected nodes (e.g. a ``devtech::FooOp`` placeholder).

    Parameters:
        input: index of the node input that takes the node's place (bypass mode).
        mode: ``bypass`` rewires the node's consumers to its input; ``drop``
            detaches the node, leaving what only fed it for ``cleanup``.

    Rules:
        1. Every selected node is checked before anything changes: a bypassed
           node needs a non-empty input number ``input`` and at most one output
           that anything reads; a dropped node's outputs must not be read by
           other nodes.
        2. Bypass: every consumer of the node's output reads the input instead,
           in subgraphs that capture it too.
        3. A graph output keeps its name: when the node produced one, the node
           that produced the bypassed input now produces the output tensor
           (as in the onnx-graphsurgeon recipe ``inp_node.outputs =
           fake_node.outputs``); when the input is a graph input or a constant,
           an ``Identity`` is inserted instead.
        4. Drop: graph outputs that the node produced are removed from the
           graph's outputs (reported in the notes).
        5. Nodes inside ``If``/``Loop``/``Scan`` bodies are selected and
           removed like any other.

    Example:
        version: 1
        steps:
          - pass: remove_node
            with: {op: FooOp, domain: devtech}
          - pass: cleanup

    Reports:
        the removed nodes (by the runner), and a note per graph output whose
        producer changed or that was removed.
    """
    matches = select.select(model.graph)
    result = PassResult()
    for node, graph in matches:
        _check(node, graph, input, mode)
    for node, graph in matches:
        if mode == "bypass":
            _bypass(node, graph, input, result)
        else:
            _drop(node, graph, result)
    return result


def _label(node: gs.Node) -> str:
    return f"node '{node.name}' ({node.op})" if node.name else f"an unnamed {node.op} node"


def _check(node: gs.Node, graph: gs.Graph, input: int, mode: str) -> None:
    if mode == "drop":
        readers = [c for t in node.outputs for c in t.outputs if c is not node]
        if readers:
            names = ", ".join(sorted({c.name or c.op for c in readers}))
            raise PassError(
                f"cannot drop {_label(node)}: its outputs are read by {names}",
                hint="use mode: bypass to rewire those readers to the node's input, or remove them too",
            )
        return
    if input >= len(node.inputs) or node.inputs[input].is_empty():
        have = len([t for t in node.inputs if not t.is_empty()])
        raise PassError(
            f"cannot bypass {_label(node)}: it has no input number {input} (it has {have} input(s))",
            hint="set 'input' to the index of the data input, or use mode: drop",
        )
    used = [t for t in node.outputs if t.outputs or t in graph.outputs]
    if len(used) > 1:
        raise PassError(
            f"cannot bypass {_label(node)}: {len(used)} of its outputs are used "
            f"({', '.join(t.name for t in used)}), and one input can replace only one output",
            hint="remove the readers of the extra outputs first, or use mode: drop",
        )


def _detach(node: gs.Node, graph: gs.Graph) -> None:
    node.inputs.clear()
    node.outputs.clear()
    graph.nodes.remove(node)


def _bypass(node: gs.Node, graph: gs.Graph, input: int, result: PassResult) -> None:
    x = node.inputs[input]
    used = [t for t in node.outputs if t.outputs or t in graph.outputs]
    if not used:
        _detach(node, graph)
        return
    y = used[0]
    for consumer in list(y.outputs):
        if consumer is node:
            continue
        for i, t in enumerate(consumer.inputs):
            if t is y:
                consumer.inputs[i] = x
    if not any(t is y for t in graph.outputs):
        _detach(node, graph)
        return
    # y is a graph output: keep its name by having x's producer write y directly.
    producer = x.inputs[0] if isinstance(x, gs.Variable) and len(x.inputs) == 1 else None
    movable = (producer is not None and producer in graph.nodes
               and not any(x is t for g_io in (graph.inputs, graph.outputs) for t in g_io))
    _detach(node, graph)
    if movable:
        for consumer in list(x.outputs):
            for i, t in enumerate(consumer.inputs):
                if t is x:
                    consumer.inputs[i] = y
        idx = next(i for i, t in enumerate(producer.outputs) if t is x)
        producer.outputs[idx] = y
        if y.dtype is None:
            y.dtype, y.shape = x.dtype, x.shape
        result.notes.append(f"graph output '{y.name}' is now produced by {_label(producer)}")
    else:
        ident = gs.Node("Identity", name=(node.name or node.op) + "_bypass", inputs=[x], outputs=[y])
        graph.nodes.append(ident)
        result.notes.append(f"graph output '{y.name}' now copies '{x.name}' through an Identity")


def _drop(node: gs.Node, graph: gs.Graph, result: PassResult) -> None:
    dropped = [t for t in node.outputs if any(t is o for o in graph.outputs)]
    if dropped:
        graph.outputs = [o for o in graph.outputs if not any(o is t for t in dropped)]
        result.notes.append("removed graph output(s) " + ", ".join(f"'{t.name}'" for t in dropped))
    _detach(node, graph)
