"""cleanup and toposort: housekeeping passes built on onnx-graphsurgeon's own."""

from __future__ import annotations

from surgeon.errors import PassError
from surgeon.graph import prune
from surgeon.graph.toposort import CycleError, is_sorted, sorted_nodes
from surgeon.graph.walk import walk_graphs
from surgeon.io.model import Model
from surgeon.passes.contract import EQUAL, verified_by
from surgeon.passes.result import PassResult


@verified_by(EQUAL)
def cleanup(model: Model, *, remove_unused_inputs: bool = False) -> PassResult:
    """Remove nodes, tensors and initializers that no graph output depends on.

    Parameters:
        remove_unused_inputs: also remove graph inputs that nothing reads
            (off by default: it changes the model's interface).

    Rules:
        1. Nodes and tensors that do not contribute to any graph output are
           removed, in subgraphs too (onnx-graphsurgeon's ``cleanup``).
        2. Initializers that no node reads are removed.
        3. Local functions that no node calls are removed.
        4. Opset imports of domains no node uses any more are dropped on save.

    Example:
        version: 1
        steps:
          - pass: cleanup
            with: {remove_unused_inputs: true}

    Reports:
        removed nodes (by the runner); counts of removed initializers, inputs
        and functions.
    """
    result = PassResult()
    inputs_before = [t.name for t in model.graph.inputs]
    prune.cleanup(model.graph, remove_unused_graph_inputs=remove_unused_inputs)
    dropped_inits = model.forget_unused_initializers()
    used_funcs = {(n.op, n.domain or "") for g in walk_graphs(model.graph) for n in g.nodes}
    for func in list(model.graph.functions):
        used_funcs |= {(n.op, n.domain or "") for n in func.nodes}
    kept = [f for f in model.graph.functions if (f.name, f.domain or "") in used_funcs]
    dropped_funcs = [f.name for f in model.graph.functions if f not in kept]
    model.graph.functions = kept
    removed_inputs = [n for n in inputs_before if n not in {t.name for t in model.graph.inputs}]
    if dropped_inits:
        result.notes.append(f"removed {dropped_inits} unused initializer(s)")
    if removed_inputs:
        result.notes.append("removed unused graph input(s) " + ", ".join(removed_inputs))
    if dropped_funcs:
        result.notes.append("removed unused local function(s) " + ", ".join(dropped_funcs))
    result.details = {"initializers_removed": dropped_inits, "inputs_removed": removed_inputs,
                      "functions_removed": dropped_funcs}
    result.changed = bool(dropped_inits or dropped_funcs)  # the runner sees neither
    return result


@verified_by(EQUAL)
def toposort(model: Model) -> PassResult:
    """Sort nodes so that every node comes after the producers of its inputs.

    Rules:
        1. A graph (or subgraph) that is already sorted is left exactly as it
           is (onnx-graphsurgeon's toposort reorders sorted graphs too).
        2. Otherwise it is sorted with Kahn's algorithm, keeping the current
           order wherever it is valid (no recursion: any depth works).
        3. A graph with a cycle is an error that names nodes on the cycle.

    Example:
        version: 1
        steps:
          - pass: toposort

    Reports:
        the graphs that were reordered.
    """
    result = PassResult()
    graphs = list(walk_graphs(model.graph))
    orders = []
    for g in graphs:  # every graph is sorted (or refused) before any changes
        if is_sorted(g):
            continue
        try:
            orders.append((g, sorted_nodes(g)))
        except CycleError as exc:
            raise PassError(f"graph '{g.name}' cannot be sorted: {exc}",
                            hint="the graph has a cycle; check the nodes named above") from exc
    for g, order in orders:
        if [id(n) for n in order] != [id(n) for n in g.nodes]:
            g.nodes = order
            result.notes.append(f"reordered graph '{g.name}'")
    return result
