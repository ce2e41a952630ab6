"""replace_subgraph: the nodes between given tensors become one node (a fused op or a plugin)."""

from __future__ import annotations

from typing import Any

import onnx
import onnx_graphsurgeon as gs

from surgeon.errors import PassError
from surgeon.graph.attrs import convert_attrs
from surgeon.graph.edit import detach, remove_dead
from surgeon.graph.names import Namer, node_label, qualified_op
from surgeon.graph.region import find_region
from surgeon.graph.toposort import is_sorted, sorted_nodes
from surgeon.graph.walk import graphs_and_functions
from surgeon.io.model import Model
from surgeon.passes.contract import Contract, verified_by
from surgeon.passes.result import PassResult


@verified_by(Contract("outputs equal the original's: the new node is meant to compute what the region did "
                      "(floats at rtol 1e-4 and atol 1e-4 of each output's scale); for a plugin op that onnxruntime "
                      "cannot run, what it reads is compared, and what comes after it with the plugin fed the region's "
                      "values in the original",
                      tolerance="reassociated"))
def replace_subgraph(model: Model, *, inputs: list[str], outputs: list[str], op: str, domain: str = "",
                     attrs: dict[str, Any] | None = None, name: str | None = None) -> PassResult:
    """Replace the nodes between ``inputs`` and ``outputs`` with one node.

    Parameters:
        inputs: the tensors entering the region, in the order the new node
            reads them; graph inputs, node outputs, initializers and constants
            may all be named.
        outputs: the tensors leaving the region, in the order the new node
            writes them; they keep their names, types and shapes.
        op: op type of the new node, e.g. LayerNormalization or a TensorRT plugin.
        domain: op domain ('' or ai.onnx for standard ops and TensorRT plugins).
        attrs: attributes of the new node; numbers, strings and lists,
            converted to the types the op's schema declares (for ops ONNX
            knows). A tensor attribute is given as {value: ..., dtype: ...}.
        name: name of the new node (default: the op type, made unique).

    Rules:
        1. The region is every node on a path from ``inputs`` (or from
           constants) to ``outputs``: walking back from each output, the walk
           stops at the inputs and at constants. Every output must be
           reachable from the inputs, every input must be read by the region,
           and the region may read nothing else (a graph input or a tensor
           computed outside is an error naming it and its reader).
        2. A tensor made inside the region that a node outside reads, or that
           is a graph output, is an error naming it and the reader: add it to
           ``outputs`` or choose a smaller region. Nodes computed from
           constants only (Constant nodes, shape arithmetic on initializers)
           join the region; the ones nothing else reads are removed with it,
           the others stay.
        3. The region lies in one graph: the main graph, an If/Loop/Scan body
           or the body of a local function (its inputs may come from the
           graphs around a body). Inputs and outputs in different graphs are
           refused with the graphs named, and so is a region that would hold
           a node with subgraphs.
        4. The new node takes the place of the region's last node; the graph
           is re-sorted only when a reader of an output came earlier. A region
           whose output feeds one of its inputs outside it is refused (the
           node would feed itself).
        5. For ops ONNX knows, the op must exist at the model's opset and
           attributes are converted to their schema types; an unknown op in
           the default domain is kept as a plugin op (TensorRT finds plugins
           by name). A custom domain the model does not import is imported at
           version 1.

    Example:
        version: 1
        steps:
          - pass: replace_subgraph
            with:
              inputs: [input, onnx::Conv_20, onnx::Conv_21]
              outputs: [/block1/block1.2/Relu_output_0]
              op: ConvRelu_TRT
              attrs: {plugin_version: '1'}
              name: block1_plugin

    Reports:
        the removed nodes and the new node (by the runner); a note naming the
        new node and how many nodes it replaced; details ``node`` and
        ``replaced`` (the names of the replaced nodes).
    """
    domain = "" if domain == "ai.onnx" else domain
    if not op:
        raise PassError("op is empty", hint="give the op type of the new node, e.g. LayerNormalization")
    if not inputs:
        raise PassError("no inputs given", hint="name the tensors entering the region")
    region, ins, outs = find_region(model.graph, inputs, outputs)
    graph = region.scope.graph
    schema = _schema(model, op, domain)
    node_attrs = convert_attrs(op, schema, attrs or {})
    replaced = {id(n) for n in region.nodes if id(n) not in region.constant_only}
    node_names = {n.name for g in graphs_and_functions(model.graph) for n in g.nodes if n.name}
    taken_inside = {n.name for n in region.nodes if n.name and id(n) in replaced}
    if name is not None and name in node_names and name not in taken_inside:
        raise PassError(f"a node named '{name}' already exists", hint="choose another name, or leave name out")
    node_name = name if name is not None else Namer(taken=node_names).new(op)

    # Everything is checked: change the graph.
    old = [n for n in region.nodes if id(n) in replaced]
    read = [t for n in region.nodes for t in n.inputs]
    last = max(i for i, n in enumerate(graph.nodes) if id(n) in replaced)
    for node in old:
        detach(node)
    new = gs.Node(op, node_name, node_attrs, inputs=list(ins), outputs=list(outs), domain=domain or None)
    members = {id(n) for n in graph.nodes if id(n) not in replaced}
    dead: list[gs.Node] = []
    removed_constants = remove_dead(graph, read, members=members, later=dead)
    gone = replaced | {id(n) for n in dead}
    kept: list[gs.Node] = []
    for i, node in enumerate(graph.nodes):
        if i == last:
            kept.append(new)
        if id(node) not in gone:
            kept.append(node)
    graph.nodes = kept
    if not is_sorted(graph):
        graph.nodes = sorted_nodes(graph)
    result = PassResult(details={"node": node_name, "replaced": [n.name or n.op for n in old]})
    where = "" if region.scope.owner is None and region.scope.function is None else f" in {region.scope.label()}"
    result.notes.append(f"{len(old)} node(s){where} replaced by {node_label(new)}"
                        + (f"; {removed_constants} constant node(s) only they read were removed"
                           if removed_constants else ""))
    named = {id(t) for t in ins}
    dropped = sorted({t.name for t in read if isinstance(t, gs.Constant) and id(t) not in named and not t.outputs})
    if dropped:
        result.notes.append(f"removed with the region: constant(s) {', '.join(repr(d) for d in dropped)} that "
                            "only it read (name one in inputs to keep it as an input of the new node)")
    if schema is None and domain == "":
        result.notes.append(f"{op} is not an ONNX op: it is kept as a plugin op in the default domain")
    _import_domain(model, region.scope, domain, result)
    return result


def _schema(model: Model, op: str, domain: str) -> onnx.defs.OpSchema | None:
    if not onnx.defs.has(op, domain):
        return None
    version = model.opset if domain == "" else model.opset_imports.get(domain, 1)
    try:
        return onnx.defs.get_schema(op, version, domain)
    except onnx.defs.SchemaError:
        since = onnx.defs.get_schema(op, domain=domain).since_version
        raise PassError(f"{qualified_op(domain, op)} does not exist at the model's opset {version} "
                        f"(it came in opset {since})",
                        hint=f"convert the model first (- pass: convert_opset, with: {{target: {since}}})") from None


def _import_domain(model: Model, scope: Any, domain: str, result: PassResult) -> None:
    if not domain:
        return
    if domain not in model.opset_imports:
        model.opset_imports[domain] = 1
        result.changed = True
        result.notes.append(f"the model now imports domain '{domain}' (version 1)")
    func = next((s.graph for s in scope.ancestors() if isinstance(s.graph, gs.Function)), None)
    if func is not None and not any(d.domain == domain for d in func.import_domains or []):
        func.import_domains = [*(func.import_domains or []), onnx.helper.make_opsetid(domain, 1)]
