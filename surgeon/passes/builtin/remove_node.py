"""remove_node: take nodes out of the graph, rewiring around them."""

from __future__ import annotations

from typing import Annotated, Literal

import onnx_graphsurgeon as gs

from surgeon.errors import PassError
from surgeon.graph.edit import bypass as _bypass
from surgeon.graph.edit import detach as _detach
from surgeon.graph.edit import remove_nodes, used_outputs
from surgeon.graph.names import node_label
from surgeon.io.model import Model
from surgeon.passes.contract import REMOVED, verified_by
from surgeon.passes.result import PassResult
from surgeon.passes.select import Selector
from surgeon.passes.spec import Min


@verified_by(REMOVED)
def remove_node(model: Model, select: Selector, *,
                input: Annotated[int, Min(0, hint="input is the index of the node input that takes the node's "
                                                  "place (0: the first)")] = 0,
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
        5. Nodes inside ``If``/``Loop``/``Scan`` bodies and inside the
           model's local functions are selected and removed like any other;
           a domain no node uses any more leaves the opset imports of the
           model and of the function.

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
    selected = {id(node) for node, _ in matches}
    result = PassResult()
    for node, graph in matches:
        _check(node, graph, input, mode, selected)
    # Nodes leave their graphs' lists in one sweep per graph: removing them one
    # by one compares nodes with gs's __eq__ and is quadratic.
    graphs: dict[int, tuple[gs.Graph, list[gs.Node]]] = {}
    members: dict[int, set[int]] = {}
    for node, graph in matches:
        entry = graphs.get(id(graph))
        if entry is None:
            entry = graphs[id(graph)] = (graph, [])
            if mode == "bypass":
                members[id(graph)] = {id(n) for n in graph.nodes}
        entry[1].append(node)
        if mode == "bypass":
            note = _bypass(node, graph, input, members=members[id(graph)]).note
            if note is not None:
                result.notes.append(note)
        else:
            _drop(node, graph, result)
    for graph, nodes in graphs.values():
        remove_nodes(graph, nodes, detach=False)
    return result


def _check(node: gs.Node, graph: gs.Graph, input: int, mode: str, selected: set[int]) -> None:
    if mode == "drop":
        # Readers that are dropped in the same step do not count (dropping a chain).
        readers = [c for t in node.outputs for c in t.outputs if id(c) not in selected]
        if readers:
            names = ", ".join(sorted({c.name or c.op for c in readers}))
            raise PassError(
                f"cannot drop {node_label(node)}: its outputs are read by {names}",
                hint="use mode: bypass to rewire those readers to the node's input, or remove them too",
            )
        return
    if input >= len(node.inputs) or node.inputs[input].is_empty():
        have = len([t for t in node.inputs if not t.is_empty()])
        raise PassError(
            f"cannot bypass {node_label(node)}: it has no input number {input} (it has {have} input(s))",
            hint="set 'input' to the index of the data input, or use mode: drop",
        )
    used = used_outputs(node, graph)
    if len(used) > 1:
        raise PassError(
            f"cannot bypass {node_label(node)}: {len(used)} of its outputs are used "
            f"({', '.join(t.name for t in used)}), and one input can replace only one output",
            hint="remove the readers of the extra outputs first, or use mode: drop",
        )


def _drop(node: gs.Node, graph: gs.Graph, result: PassResult) -> None:
    dropped = [t for t in node.outputs if any(t is o for o in graph.outputs)]
    if dropped:
        graph.outputs = [o for o in graph.outputs if not any(o is t for t in dropped)]
        result.notes.append("removed graph output(s) " + ", ".join(f"'{t.name}'" for t in dropped))
    _detach(node)
