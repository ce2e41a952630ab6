"""set_outputs, add_outputs and extract: choose which tensors a model computes.

A tensor that becomes a graph input or output needs a dtype (and should have
a shape); those that gs does not know are taken from ONNX shape inference
(``onnx.shape_inference.infer_shapes`` with data propagation), run once on
the exported model before anything changes. Dead nodes are removed by the
``cleanup`` pass (onnx-graphsurgeon's ``cleanup`` plus unused initializers and
local functions).
"""

from __future__ import annotations

import onnx_graphsurgeon as gs
from onnx_graphsurgeon.importers.onnx_importer import (
    get_onnx_tensor_dtype,
    get_onnx_tensor_shape,
    get_onnx_tensor_type,
)

from surgeon.errors import PassError, name_hint
from surgeon.graph.names import fresh_name, quoted
from surgeon.graph.shapes import infer_value_infos
from surgeon.graph.walk import subgraphs_of
from surgeon.io.model import Model
from surgeon.io.tensor_names import tensor_groups, where_is
from surgeon.passes.compose import call_pass
from surgeon.passes.contract import INTERFACE, verified_by
from surgeon.passes.result import PassResult


@verified_by(INTERFACE)
def set_outputs(model: Model, *, outputs: list[str], cleanup: bool = True) -> PassResult:
    """Make these tensors the graph outputs, dropping the others.

    Parameters:
        outputs: tensor names, in the order the outputs should have; any tensor
            of the main graph (intermediate tensors and graph inputs too).
        cleanup: remove the nodes, initializers and local functions that no
            output needs any more (off: leave them for a later cleanup step).

    Rules:
        1. Every name must be a tensor of the main graph; a tensor local to an
           ``If``/``Loop``/``Scan`` body cannot be a graph output.
        2. An output whose dtype or shape the model does not declare gets them
           from ONNX shape inference; a tensor whose dtype stays unknown (e.g.
           behind a custom op) is refused.
        3. Graph inputs are kept, even those nothing reads any more (remove
           them with ``cleanup`` and ``remove_unused_inputs: true``).
        4. With ``cleanup`` (the default), everything that no output depends
           on is removed, as the ``cleanup`` pass does, so the model is minimal.

    Example:
        version: 1
        steps:
          - pass: set_outputs
            with:
              outputs: [/block1/block1.2/Relu_output_0]

    Reports:
        the new outputs, the dropped ones, and the nodes removed by cleanup
        (by the runner).
    """
    tensors = _resolve(model, outputs, "output")
    _fill_types(model, tensors)
    before = [t.name for t in model.graph.outputs]
    model.graph.outputs = list(tensors)
    result = PassResult()
    cleaned = call_pass(model, "cleanup") if cleanup else PassResult()
    dropped = [n for n in before if n not in outputs]
    if dropped:
        result.notes.append("dropped graph output(s) " + quoted(dropped))
    result.notes += cleaned.notes
    result.details = {"outputs": list(outputs), "dropped": dropped}
    result.changed = cleaned.changed
    return result


@verified_by(INTERFACE)
def add_outputs(model: Model, *, outputs: list[str]) -> PassResult:
    """Make these tensors graph outputs too, keeping the existing outputs.

    Parameters:
        outputs: tensor names of the main graph (intermediate tensors and graph
            inputs too), appended after the existing outputs in this order.

    Rules:
        1. Every name must be a tensor of the main graph; a tensor local to an
           ``If``/``Loop``/``Scan`` body cannot be a graph output.
        2. An output whose dtype or shape the model does not declare gets them
           from ONNX shape inference; a tensor whose dtype stays unknown (e.g.
           behind a custom op) is refused.
        3. A tensor that already is a graph output is left where it is (a note
           says so), so the step can run twice.

    Example:
        version: 1
        steps:
          - pass: add_outputs
            with:
              outputs: [/block1/block1.2/Relu_output_0]

    Reports:
        the added outputs, and those that already were outputs.
    """
    tensors = _resolve(model, outputs, "output")
    present = [t for t in tensors if any(t is o for o in model.graph.outputs)]
    added = [t for t in tensors if not any(t is p for p in present)]
    _fill_types(model, added)
    model.graph.outputs = list(model.graph.outputs) + added
    result = PassResult(details={"added": [t.name for t in added]})
    if present:
        result.notes.append("already graph output(s), left in place: " + quoted(t.name for t in present))
    return result


@verified_by(INTERFACE)
def extract(model: Model, *, inputs: list[str], outputs: list[str]) -> PassResult:
    """Cut out the subgraph between these tensors (like ``onnx.utils.extract_model``).

    Parameters:
        inputs: tensor names that become the graph inputs, in this order.
        outputs: tensor names that become the graph outputs, in this order.

    Rules:
        1. Every name must be a tensor of the main graph; an input cannot be an
           initializer.
        2. The outputs must be computable from the given inputs (and
           constants) alone; otherwise the step fails, naming the tensors the
           outputs still need and the graph inputs those come from. Tensors
           that ``If``/``Loop``/``Scan`` bodies capture count as inputs of
           their node.
        3. Inputs and outputs whose dtype or shape the model does not declare
           get them from ONNX shape inference.
        4. A node that produced one of the new inputs no longer writes it (its
           output slot gets a fresh, unused name); then everything that no
           output needs is removed, as the ``cleanup`` pass does. Given inputs
           that no output needs stay graph inputs.

    Example:
        version: 1
        steps:
          - pass: extract
            with:
              inputs: [/block1/block1.2/Relu_output_0]
              outputs: [output]

    Reports:
        the new inputs and outputs, and the removed nodes (by the runner).
    """
    new_inputs = _resolve(model, inputs, "input")
    new_outputs = _resolve(model, outputs, "output")
    for t in new_inputs:
        if isinstance(t, gs.Constant):
            raise PassError(
                f"'{t.name}' is an initializer, so it cannot be an input",
                hint="leave it out of inputs: initializers are kept inside the extracted model",
            )
    _check_depends_only_on(model, new_inputs, new_outputs)
    _fill_types(model, list(new_inputs) + list(new_outputs))
    taken = set(tensor_groups(model))
    for t in new_inputs:
        if t.inputs:
            producer = t.inputs[0]
            slot = next(i for i, o in enumerate(producer.outputs) if o is t)
            producer.outputs[slot] = gs.Variable(fresh_name(f"{t.name}_cut", taken))
    model.graph.inputs = list(new_inputs)
    model.graph.outputs = list(new_outputs)
    cleaned = call_pass(model, "cleanup")
    return PassResult(notes=cleaned.notes, changed=cleaned.changed,
                      details={"inputs": list(inputs), "outputs": list(outputs)})


# -- helpers ------------------------------------------------------------------------




def main_graph_tensor(model: Model, name: str) -> gs.Tensor:
    """The main-graph tensor called ``name``, or a PassError that says where the name is instead."""
    found = model.graph.tensors().get(name)
    if found is not None and not found.is_empty():
        return found
    if name in tensor_groups(model):
        raise PassError(
            f"tensor '{name}' is not in the main graph ({where_is(model, name)})",
            hint="tensors local to an If/Loop/Scan body cannot become graph inputs or outputs; "
                 "choose the output of the node that owns the body",
        )
    raise PassError(f"no tensor named '{name}' in the main graph",
                    hint=name_hint(name, model.graph.tensors(), "tensor"))


def _resolve(model: Model, names: list[str], kind: str) -> list[gs.Tensor]:
    if not names:
        raise PassError(f"no {kind}s given", hint=f"list at least one tensor name under {kind}s")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise PassError(f"'{name}' is listed twice in {kind}s", hint="list each tensor once")
        seen.add(name)
    return [main_graph_tensor(model, name) for name in names]


def _fill_types(model: Model, tensors: list[gs.Tensor]) -> None:
    """Give graph-IO-to-be tensors a dtype and shape, from shape inference where unknown.

    Everything is looked up first and the tensors change only when all are known.
    """
    missing = [t for t in tensors if isinstance(t, gs.Variable) and (t.dtype is None or t.shape is None)]
    if not missing:
        return
    inferred, failure = infer_value_infos(model)
    updates = []
    for t in missing:
        vi = inferred.get(t.name)
        if vi is None and t.dtype is None:
            raise PassError(
                f"the dtype of '{t.name}' is unknown: the model does not declare it and ONNX shape "
                "inference cannot infer it" + (f" ({failure})" if failure else ""),
                hint="the tensor may be computed by a custom op; set its type first (e.g. with a "
                     "set_shapes step) or choose a tensor before the custom op",
            )
        if vi is not None:
            updates.append((t, vi))
    for t, vi in updates:
        if t.dtype is None:
            t.dtype = get_onnx_tensor_dtype(vi)
            t.type = get_onnx_tensor_type(vi)
        if t.shape is None:
            t.shape = get_onnx_tensor_shape(vi)


def _check_depends_only_on(model: Model, inputs: list[gs.Tensor], outputs: list[gs.Tensor]) -> None:
    """Refuse outputs that need graph inputs other than through the given inputs.

    For every tensor: ``deps`` = graph inputs it is computed from when the given
    inputs are cut, and ``fed`` = whether it is computed from a given input.
    The tensors to name are where the cut leaks: tensors with ``deps`` and not
    ``fed``, read by a node that is ``fed`` (or asked for as an output).
    """
    graph = model.graph
    given = {id(t) for t in inputs}
    graph_inputs = {id(t) for t in graph.inputs}
    producer = {id(t): n for n in graph.nodes for t in n.outputs}
    reads: dict[int, list[gs.Tensor]] = {}
    deps: dict[int, frozenset[str]] = {}
    fed: dict[int, bool] = {}

    def node_reads(node: gs.Node) -> list[gs.Tensor]:
        if id(node) not in reads:
            captured = [t for _, sub in subgraphs_of(node) for t in sub._foreign_tensors().values()]
            reads[id(node)] = [t for t in list(node.inputs) + captured if not t.is_empty()]
        return reads[id(node)]

    # Iterative post-order walk: exported graphs can be deeper than Python's recursion limit.
    for out in outputs:
        stack = [out]
        while stack:
            t = stack[-1]
            if id(t) in deps:
                stack.pop()
                continue
            node = producer.get(id(t))
            if id(t) in given:
                deps[id(t)], fed[id(t)] = frozenset(), True
            elif isinstance(t, gs.Constant):
                deps[id(t)], fed[id(t)] = frozenset(), False
            elif node is None:  # a graph input (or a tensor nothing produces)
                deps[id(t)], fed[id(t)] = frozenset([t.name]), False
            else:
                pending = [x for x in node_reads(node) if id(x) not in deps]
                if pending:
                    stack.extend(pending)
                    continue
                deps[id(t)] = frozenset().union(*(deps[id(x)] for x in node_reads(node)))
                fed[id(t)] = any(fed[id(x)] for x in node_reads(node))
            stack.pop()
    if not any(deps[id(t)] for t in outputs):
        return
    leaks: dict[str, gs.Tensor] = {}
    for t in outputs:
        if deps[id(t)] and not fed[id(t)]:
            leaks.setdefault(t.name, t)
    seen: set[int] = set()
    stack = [t for t in outputs if deps[id(t)] and fed[id(t)]]
    while stack:
        t = stack.pop()
        node = producer.get(id(t))
        if node is None or id(node) in seen or id(t) in given:
            continue
        seen.add(id(node))
        for x in node_reads(node):
            if deps[id(x)] and not fed[id(x)]:
                leaks.setdefault(x.name, x)
            elif deps[id(x)]:
                stack.append(x)
    described = [f"'{name}' (computed from graph input(s) {quoted(sorted(deps[id(t)]))})"
                 if id(t) not in graph_inputs else f"graph input '{name}'"
                 for name, t in sorted(leaks.items())]
    needed = sorted(set().union(*(deps[id(t)] for t in outputs)))
    raise PassError(
        "the outputs do not depend only on the given inputs: they also need "
        + ", ".join(described),
        hint="add these tensors to inputs (or graph input(s) " + quoted(needed) + "), "
             "or choose outputs that do not need them",
    )

