"""insert_node and replace_op: put a node on a tensor, or change what selected nodes compute.

Recipe attribute values are YAML ints, floats, strings and lists; ONNX wants
typed attributes (``alpha`` of ``LeakyRelu`` is a FLOAT even when the recipe
says ``1``). For ops ONNX knows, values are converted to the type the op's
schema declares and the node is checked with ``onnx.checker.check_node``;
for other ops (plugins, custom domains) the type follows the YAML value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx.defs import OpSchema
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter
from onnx_graphsurgeon.importers.onnx_importer import get_onnx_tensor_dtype, get_onnx_tensor_shape

from surgeon.errors import PassError, name_hint, suggestion_hint
from surgeon.graph.attrs import convert_attrs, recipe_array
from surgeon.graph.constants import elem_type
from surgeon.graph.correspondence import Correspondence, Derived
from surgeon.graph.edit import replace_uses
from surgeon.graph.names import fresh_name, quoted
from surgeon.graph.shapes import infer_value_infos
from surgeon.graph.walk import node_domain, subgraphs_of, walk_graphs
from surgeon.io.model import Model
from surgeon.io.tensor_names import tensor_groups, where_is
from surgeon.passes.contract import Contract, verified_by
from surgeon.passes.result import PassResult
from surgeon.passes.select import Selector

if TYPE_CHECKING:
    from surgeon.passes.runner import StepReport


def _insert_node_contract(plan: Correspondence, report: StepReport, model: Model) -> None:
    d = report.details
    reads, writes = d["reads"], d["writes"]
    # A graph output keeps its name (Rule 3): the value before the node is the output's old value.
    value = plan.expr(writes) if _is_output(model, writes) else plan.expr(reads)
    plan.changed_from[writes] = report.step.label
    if not d["main_graph"] or value is None:
        plan.exprs[writes] = None
        return
    node = next((n for n in model.graph.nodes if n.name == d["node"]), None)
    if node is None:
        plan.exprs[writes] = None
        return
    plan.exprs[reads] = value
    variables = [t.name for t in node.inputs if isinstance(t, gs.Variable) and t.name]
    found = [value if i == 0 else plan.expr(name) for i, name in enumerate(variables)]
    args = tuple(a for a in found if a is not None)
    if len(args) != len(found):
        plan.exprs[writes] = None
        return
    spec = (node.op, node.domain, dict(node.attrs), list(node.inputs), model.opset)
    plan.exprs[writes] = Derived(lambda *values: _run_single(spec, values), args,
                                 f"{node.op} run alone in onnxruntime on the original's {value.describe()}")
    plan.extra.setdefault(reads, f"the tensor {report.step.label} reads")
    plan.extra.setdefault(writes, f"the tensor {report.step.label} writes")


def _is_output(model: Model, name: str) -> bool:
    return any(t.name == name for t in model.graph.outputs)


def _run_single(spec: tuple, values: tuple) -> np.ndarray:
    """Run one node alone in onnxruntime: its variable inputs take ``values``, its constants stay."""
    from surgeon.io.runtime import cpu_session

    op, domain, attrs, node_inputs, opset = spec
    inputs, args = [], []
    feeds = {}
    it = iter(values)
    for i, t in enumerate(node_inputs):
        if isinstance(t, gs.Variable) and t.name:
            value = np.asarray(next(it))
            fresh = gs.Variable(f"in{i}", value.dtype, value.shape)
            inputs.append(fresh)
            feeds[fresh.name] = value
            args.append(fresh)
        else:
            args.append(t)
    out = gs.Variable("out", None, None)
    graph = gs.Graph(nodes=[gs.Node(op, "single", attrs, inputs=args, outputs=[out], domain=domain)],
                     inputs=inputs, outputs=[out], opset=opset)
    proto = gs.export_onnx(graph, do_type_check=False)
    proto.ir_version = min(proto.ir_version, 8)
    return cpu_session(proto.SerializeToString(), optimization="all", arena=True).run(["out"], feeds)[0]


@verified_by(Contract("the tensor the new node reads equals the original's, and the tensor it writes equals the "
                      "node run alone in onnxruntime on the original's value; graph outputs downstream of it "
                      "change on purpose and are not compared", update=lambda *a: _insert_node_contract(*a)))
def insert_node(model: Model, *, op: str, after: str, domain: str = "", attrs: dict[str, Any] | None = None,
                name: str | None = None, consumers: Literal["all"] | list[str] = "all",
                inputs_after: list[Any] | None = None) -> PassResult:
    """Insert a node on a tensor: it reads the tensor and takes its place for the chosen consumers.

    Parameters:
        op: op type of the new node, e.g. Clip, or a plugin op name.
        after: the tensor the new node reads (its input 0).
        domain: op domain ('' or ai.onnx for standard ops and TensorRT plugins).
        attrs: attributes of the new node; numbers, strings and lists, converted
            to the types the op's schema declares. A tensor attribute is given
            as {value: ..., dtype: ...}.
        name: name of the new node (default: ``<after>_<op>``, made unique).
        consumers: ``all``, or the names of the nodes that should read the new
            node's output; the other readers keep reading ``after``.
        inputs_after: the node's further inputs (1, 2, ...), in order. Each
            item is a tensor name, a number or list of numbers (a constant of
            ``after``'s dtype), {value: ..., dtype: int64} (a constant of that
            dtype), or null/'' for an omitted optional input.

    Rules:
        1. ``after`` may be any tensor of the model, also one inside an
           ``If``/``Loop``/``Scan`` body; the node is placed in the graph that
           owns the tensor, right after its producer (and the producers of
           the extra inputs).
        2. An intermediate tensor or a graph input keeps its name: the new
           node writes a new tensor ``<node name>_output_0`` that the chosen
           consumers read (readers inside subgraphs included).
        3. A graph output keeps its name: the new node now produces it, the
           old producer writes ``<node name>_input_0`` instead, and readers
           that were not chosen read that. Constants from ``inputs_after``
           are named ``<node name>_input_<i>``.
        4. For ops ONNX knows, attributes are converted to their schema types
           and the node is checked (attribute names, input counts, input
           types, by ``onnx.checker`` and strict shape inference), and the
           output gets the inferred dtype and shape. For other ops the output
           type is unknown, except that a graph output keeps its declared type.
        5. A domain the model does not import yet is imported (version 1 for
           custom domains).
        6. The tensor must be read by a node or be a graph output; a tensor
           that is both a graph input and output, or an initializer that is a
           graph output, is refused.

    Example:
        version: 1
        steps:
          - pass: insert_node
            with:
              op: Clip
              after: /block1/block1.2/Relu_output_0
              inputs_after: [0.0, 6.0]

    Reports:
        the added node (by the runner) and a note saying which tensor it reads
        and writes.
    """
    if not op:
        raise PassError("op is empty", hint="give the op type of the new node, e.g. Clip")
    domain = _domain(domain)
    tensor, owner = _find_tensor(model, after)
    version, schema = _op_schema(model, op, domain)
    node_attrs = convert_attrs(op, schema, attrs or {})

    readers = _unique(tensor.outputs)
    if consumers == "all":
        chosen = readers
    else:
        named = {n.name for n in readers if n.name}
        for want in consumers:
            if want not in named:
                raise PassError(f"node '{want}' does not read '{after}'",
                                hint=suggestion_hint(want, named)
                                or (f"'{after}' is read by: {quoted(sorted(named))}" if named
                                    else f"no named node reads '{after}'"))
        chosen = [n for n in readers if n.name in consumers]
    is_output = any(tensor is t for t in owner.outputs)
    is_input = any(tensor is t for t in owner.inputs)
    if is_output and is_input:
        raise PassError(f"'{after}' is both an input and an output of {_graph_label(model, owner)}",
                        hint="a node cannot take the place of a pass-through tensor; insert it on a "
                             "tensor inside the graph")
    if is_output and isinstance(tensor, gs.Constant):
        raise PassError(f"'{after}' is an initializer and a graph output, so no node can produce it",
                        hint="insert the node on a tensor computed by a node")
    if not chosen and not is_output:
        raise PassError(f"nothing reads '{after}' and it is not a graph output, so the new node would be unused",
                        hint="choose a tensor that other nodes read")

    node_names = {n.name for n in model.nodes() if n.name}
    if name is not None and name in node_names:
        raise PassError(f"a node named '{name}' already exists", hint="choose another name, or leave name out")
    taken = set(tensor_groups(model))
    node_name = name or fresh_name(f"{after}_{op}", node_names)
    types = _Types(model)
    extras = _extra_inputs(model, owner, tensor, types.of(tensor), inputs_after or [], node_name, taken)

    position = 1 + max([_index(owner, t) for t in [tensor, *extras]])
    first_reader = min([_top_index(owner, n) for n in chosen], default=len(owner.nodes))
    if position > first_reader:
        late = next(t for t in extras if _index(owner, t) >= first_reader)
        raise PassError(f"inputs_after tensor '{late.name}' is computed after node "
                        f"'{owner.nodes[first_reader].name}', which reads '{after}'",
                        hint="the new node must run before the readers of its tensor: give a tensor "
                             "computed earlier, or a constant")

    out_name = fresh_name(f"{node_name}_{'input' if is_output else 'output'}_0", taken)
    data_in = tensor if not is_output else gs.Variable(out_name, tensor.dtype, tensor.shape)
    new_out = tensor if is_output else gs.Variable(out_name)
    types.known[id(data_in)] = types.of(tensor)
    inferred = _check_node(model, op, domain, version, schema, node_name, [data_in, *extras], node_attrs,
                           types=types)
    if inferred is not None:
        new_out.dtype, new_out.shape = get_onnx_tensor_dtype(inferred), get_onnx_tensor_shape(inferred)

    result = PassResult()
    if is_output:
        producer = tensor.inputs[0] if tensor.inputs else None
        if producer is not None:
            slot = next(i for i, t in enumerate(producer.outputs) if t is tensor)
            producer.outputs[slot] = data_in
        chosen_ids = {id(c) for c in chosen}
        replace_uses(tensor, data_in, readers=[r for r in readers if id(r) not in chosen_ids])
        result.notes.append(f"graph output '{after}' is now produced by '{node_name}' ({op}); "
                            f"the value before it is '{out_name}'")
        if inferred is None and schema is None:
            result.notes.append(f"'{after}' keeps its declared dtype and shape ({op} has no ONNX schema)")
    else:
        replace_uses(tensor, new_out, readers=chosen)
        result.notes.append(f"'{node_name}' ({op}) reads '{after}' and writes '{out_name}' for "
                            f"{len(chosen)} of {len(readers)} reader(s)")
    owner.nodes.insert(position, gs.Node(op, node_name, node_attrs, inputs=[data_in, *extras],
                                         outputs=[new_out], domain=domain or None))
    result.details = {"node": node_name, "reads": data_in.name, "writes": new_out.name,
                      "main_graph": owner is model.graph}
    _import_domain(model, domain, version, result)
    if schema is None and domain == "":
        result.notes.append(_plugin_note(op))
    return result


@verified_by(Contract("the tensors the changed nodes read equal the original's; what the nodes compute changed "
                      "on purpose, so the outputs downstream of them are not compared",
                      update=lambda *a: _replace_op_contract(*a)))
def replace_op(model: Model, select: Selector, *, new_op: str | None = None, new_domain: str | None = None,
               new_attrs: dict[str, Any] | None = None, keep_attrs: bool | list[str] = True) -> PassResult:
    """Change the op type, domain or attributes of the selected nodes, keeping their inputs and outputs.

    Parameters:
        new_op: the op type the nodes get (default: unchanged).
        new_domain: the domain they get ('' or ai.onnx for standard ops and
            TensorRT plugins; default: unchanged).
        new_attrs: attributes to set (added to, or replacing, the kept ones);
            numbers, strings and lists, converted to the types the op's schema
            declares. A tensor attribute is given as {value: ..., dtype: ...}.
        keep_attrs: which existing attributes stay: true (all), false (none),
            or a list of attribute names.

    Rules:
        1. The nodes are selected with the standard selector parameters
           (``name``, ``op``, ``domain``, ``attrs``...); these select, and the
           ``new_*`` parameters say what the nodes become.
        2. Inputs, outputs, node names and tensor types stay as they are;
           nodes inside ``If``/``Loop``/``Scan`` bodies are changed like any
           other.
        3. When the result is an op ONNX knows, attributes are converted to
           their schema types and every node is checked (attribute names,
           input and output counts) before any node changes. An op in the
           default domain that ONNX does not know is kept as a plugin op
           (TensorRT finds plugins by op name); ``surgeon.save`` accepts it.
        4. A domain the model does not import yet is imported (version 1 for
           custom domains); a domain no node uses any more is dropped on save.

    Example:
        version: 1
        steps:
          - pass: replace_op
            with: {op: FooOp, domain: devtech, new_op: FooPlugin, new_domain: ""}

    Reports:
        the nodes whose op changed ("changed op of N nodes (A -> B)", by the runner) and a note per op that
        has no ONNX schema.
    """
    if new_op is None and new_domain is None and new_attrs is None and keep_attrs is True:
        raise PassError("nothing to change", hint="give new_op, new_domain, new_attrs or keep_attrs")
    if new_op == "":
        raise PassError("new_op is empty", hint="give the op type the nodes should get")
    matches = select.select(model.graph)
    if isinstance(keep_attrs, list):
        present = {k for node, _ in matches for k in node.attrs}
        for key in keep_attrs:
            if key not in present:
                raise PassError(f"keep_attrs: no selected node has an attribute '{key}'",
                                hint=suggestion_hint(key, present)
                                or ("their attributes are: " + quoted(sorted(present)) if present
                                    else "the selected nodes have no attributes"))
    plans = []
    for node, _ in matches:
        op = new_op or node.op
        domain = node_domain(node) if new_domain is None else _domain(new_domain)
        version, schema = _op_schema(model, op, domain)
        kept = {k: v for k, v in node.attrs.items()
                if keep_attrs is True or (isinstance(keep_attrs, list) and k in keep_attrs)}
        attrs = {**kept, **convert_attrs(op, schema, new_attrs or {})}
        if not any(isinstance(v, gs.Graph) for v in attrs.values()):
            _check_node(model, op, domain, version, schema, node.name, list(node.inputs), attrs,
                        outputs=len(node.outputs))
        plans.append((node, op, domain, version, schema, attrs))
    result = PassResult()
    for node, op, domain, version, _schema, attrs in plans:
        node.op, node.attrs = op, attrs
        if domain != node_domain(node):
            node.domain = domain or None
        extras = model.origin.nodes.get(id(node))
        if extras is not None and extras[0] is node:
            # Attributes gs could not import are written back on export: drop those not kept.
            n, doc, meta, skipped = extras
            model.origin.nodes[id(node)] = (n, doc, meta, [a for a in skipped if keep_attrs is True or (
                isinstance(keep_attrs, list) and a.name in keep_attrs)])
        _import_domain(model, domain, version, result)
    plugins = sorted({op for _, op, domain, _, schema, _ in plans if schema is None and domain == ""})
    result.notes += [_plugin_note(op) for op in plugins]
    main = {id(n) for n in model.graph.nodes}
    result.details["changed"] = [{"node": node.name, "op": op, "reads": [t.name for t in node.inputs if t.name],
                                  "writes": [t.name for t in node.outputs if t.name], "main_graph": id(node) in main}
                                 for node, op, *_ in plans]
    return result


def _replace_op_contract(plan: Correspondence, report: StepReport, model: Model) -> None:
    for changed in report.details.get("changed", []):
        if not changed["main_graph"]:
            plan.notes.append(f"{report.step.label}: node '{changed['node']}' is inside a subgraph: the outputs "
                              "that depend on it are compared as if it computed what it did before")
            continue
        for name in changed["writes"]:
            plan.changed_from[name] = f"{report.step.label} (now {changed['op']})"
            plan.exprs[name] = None
        for name in changed["reads"]:
            plan.extra.setdefault(name, f"read by '{changed['node']}', which {report.step.label} changed")


def _plugin_note(op: str) -> str:
    return f"'{op}' is not an ONNX op: kept as a plugin op in the default domain"


# -- attributes -------------------------------------------------------------------


# -- helpers ----------------------------------------------------------------------


def _domain(domain: str) -> str:
    return "" if domain == "ai.onnx" else domain


def _unique(nodes) -> list[gs.Node]:
    return list({id(n): n for n in nodes}.values())  # first-seen order: a dict keeps insertion order




def _graph_label(model: Model, graph: gs.Graph) -> str:
    return "the main graph" if graph is model.graph else f"subgraph '{graph.name}'"


def _find_tensor(model: Model, name: str) -> tuple[gs.Tensor, gs.Graph]:
    """The tensor called ``name`` and the graph that owns it (produces it or lists it as input)."""
    found = tensor_groups(model).get(name)
    if not found:
        raise PassError(f"no tensor named '{name}' in the model",
                        hint=name_hint(name, tensor_groups(model), "tensor"))
    if len(found) > 1:
        raise PassError(f"{len(found)} different tensors are named '{name}' (in sibling subgraphs)",
                        hint="rename one of them first with rename_tensors")
    tensor = found[0]
    if isinstance(tensor, gs.Constant):
        return tensor, model.graph  # visible everywhere from the main graph
    for g in walk_graphs(model.graph):
        if any(tensor is t for t in g.inputs) or any(tensor is t for n in g.nodes for t in n.outputs):
            return tensor, g
    raise PassError(f"tensor '{name}' is neither produced by a node nor a graph input ({where_is(model, name)})",
                    hint="choose a tensor that a node computes")


def _index(owner: gs.Graph, t: gs.Tensor) -> int:
    """Index in ``owner.nodes`` of the producer of ``t``, or -1 (graph input, constant, outer scope)."""
    if t.inputs:
        producer = t.inputs[0]
        for i, n in enumerate(owner.nodes):
            if n is producer:
                return i
    return -1


def _top_index(owner: gs.Graph, node: gs.Node) -> int:
    """Index of the node of ``owner`` that is ``node`` or holds it in a subgraph."""
    for i, n in enumerate(owner.nodes):
        if n is node or any(node is m for _, sub in subgraphs_of(n) for g in walk_graphs(sub) for m in g.nodes):
            return i
    return len(owner.nodes)


def _extra_inputs(model: Model, owner: gs.Graph, data: gs.Tensor, data_type: tuple[int, Any] | None,
                  items: list[Any], node_name: str, taken: set[str]) -> list[gs.Tensor]:
    groups = tensor_groups(model)
    extras: list[gs.Tensor] = []
    for i, item in enumerate(items, start=1):
        if item is None or item == "":
            extras.append(gs.Variable.empty())
        elif isinstance(item, str):
            found = groups.get(item)
            if not found:
                raise PassError(f"inputs_after[{i - 1}]: no tensor named '{item}'",
                                hint=suggestion_hint(item, groups)
                                or "write numbers without quotes; a string names a tensor")
            if len(found) > 1 or not _visible(model, owner, found[0]):
                raise PassError(f"inputs_after[{i - 1}]: tensor '{item}' is not visible where the node goes "
                                f"({where_is(model, item)})",
                                hint="a node can read tensors of its own graph and of the graphs around it")
            extras.append(found[0])
        else:
            if not isinstance(item, dict) and data_type is None:
                raise PassError(f"inputs_after[{i - 1}]: the dtype of '{data.name}' is unknown, so the constant "
                                f"{item!r} has no dtype", hint="give it as {value: ..., dtype: float32}")
            dtype = onnx.helper.tensor_dtype_to_np_dtype(data_type[0]) if data_type else None
            array = recipe_array("the new node", f"inputs_after[{i - 1}]", item, dtype)
            extras.append(gs.Constant(fresh_name(f"{node_name}_input_{i}", taken), array))
    return extras


def _visible(model: Model, owner: gs.Graph, t: gs.Tensor) -> bool:
    """Whether ``t`` is defined in ``owner`` or a graph enclosing it."""
    if isinstance(t, gs.Constant):
        return True

    def chain(g: gs.Graph, path: list[gs.Graph]) -> list[gs.Graph] | None:
        path = path + [g]
        if g is owner:
            return path
        for n in g.nodes:
            for _, sub in subgraphs_of(n):
                found = chain(sub, path)
                if found:
                    return found
        return None

    for g in chain(model.graph, []) or []:
        if any(t is x for x in g.inputs) or any(t is x for n in g.nodes for x in n.outputs):
            return True
    return False


def _op_schema(model: Model, op: str, domain: str) -> tuple[int, OpSchema | None]:
    """The opset version the node is checked against, and the op's schema (None: not an ONNX op)."""
    version = model.opset_imports.get(domain, model.opset_imports.get("ai.onnx") if domain == "" else None)
    if version is None:
        try:
            version = onnx.defs.get_schema(op, domain).since_version  # latest for known domains
        except onnx.defs.SchemaError:
            version = 1
    try:
        return version, onnx.defs.get_schema(op, version, domain)
    except onnx.defs.SchemaError:
        pass
    if onnx.defs.has(op, domain):
        since = onnx.defs.get_schema(op, domain).since_version
        raise PassError(f"{op} is not in opset {version} of domain '{domain or 'ai.onnx'}' (it exists "
                        f"from version {since} on)",
                        hint="convert the model to a newer opset first, or use another op")
    return version, None


class _Types:
    """ONNX element type and shape of tensors: as gs knows them, else from shape inference
    (run at most once, on an export of the model, which is not changed)."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.known: dict[int, tuple[int, Any] | None] = {}
        self._inferred: dict[str, onnx.ValueInfoProto] | None = None

    def of(self, t: gs.Tensor) -> tuple[int, Any] | None:
        if id(t) not in self.known:
            elem = elem_type(t.dtype)
            if elem is not None:
                self.known[id(t)] = (elem, t.shape)
            else:
                if self._inferred is None:
                    self._inferred = infer_value_infos(self.model)[0]
                vi = self._inferred.get(t.name)
                tt = vi.type.tensor_type if vi is not None and vi.type.HasField("tensor_type") else None
                self.known[id(t)] = (tt.elem_type, get_onnx_tensor_shape(vi)) if tt is not None else None
        return self.known[id(t)]


def _check_node(model: Model, op: str, domain: str, version: int, schema: OpSchema | None, name: str,
                inputs: list[gs.Tensor], attrs: dict[str, Any], outputs: int = 1,
                types: _Types | None = None) -> onnx.ValueInfoProto | None:
    """Check a node of a known op; with ``types``, also run strict shape inference on it alone and
    return its output type (None when an input type is unknown)."""
    if schema is None:
        return None
    opsets = {("" if d == "ai.onnx" else d): v for d, v in model.opset_imports.items()}
    opsets[domain] = version
    proto = onnx.helper.make_node(op, [t.name for t in inputs], [f"out{i}" for i in range(outputs)],
                                  name=name, domain=domain)
    proto.attribute.extend(OnnxExporter.export_attributes(attrs))
    ctx = onnx.checker.C.CheckerContext()
    ctx.ir_version = model.ir_version
    ctx.opset_imports = opsets
    label = f"node '{name}'" if name else f"the {op} node"
    try:
        onnx.checker.check_node(proto, ctx)
    except onnx.checker.ValidationError as exc:
        raise PassError(f"{label} is not a valid {op}: {str(exc).splitlines()[0]}",
                        hint=f"see the {op} operator in the ONNX documentation (opset {version})") from exc
    if types is None:
        return None
    known = {i: types.of(t) for i, t in enumerate(inputs) if not t.is_empty()}
    _check_type_constraints(schema, label, known)
    typed = {i: k for i, k in known.items() if k is not None}
    if len(typed) < len(known):
        return None
    graph_inputs, initializers = [], []
    for i, (elem, shape) in typed.items():
        t = inputs[i]
        if isinstance(t, gs.Constant) and int(np.prod(t.shape)) <= 64:  # small constants: values help inference
            initializers.append(onnx.numpy_helper.from_array(t.values, t.name))
        else:
            graph_inputs.append(onnx.helper.make_tensor_value_info(t.name, elem, shape))
    graph = onnx.helper.make_graph([proto], "check", graph_inputs, [onnx.ValueInfoProto(name="out0")],
                                   initializer=initializers)
    probe = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in opsets.items()],
                                   ir_version=model.ir_version)
    try:
        inferred = onnx.shape_inference.infer_shapes(probe, strict_mode=True)
    except onnx.shape_inference.InferenceError as exc:
        raise PassError(f"{label} is not a valid {op}: {str(exc).splitlines()[0]}",
                        hint="check the dtypes of inputs_after (a number gets the dtype of the tensor "
                             "it is inserted after; give {value: ..., dtype: ...} otherwise)") from exc
    out = inferred.graph.output[0]
    return out if out.type.tensor_type.elem_type else None


def _check_type_constraints(schema: OpSchema, label: str, known: dict[int, tuple[int, Any] | None]) -> None:
    """Refuse input dtypes the op does not allow, or that differ where the op wants one type
    (ONNX shape inference does not check this for every op, e.g. Clip)."""
    formal = list(schema.inputs)
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    bound: dict[str, tuple[int, str]] = {}
    for i, k in sorted(known.items()):
        if k is None or not formal or (i >= len(formal) and not _variadic(formal[-1])):
            continue
        param = formal[min(i, len(formal) - 1)].type_str
        type_str = f"tensor({onnx.TensorProto.DataType.Name(k[0]).lower()})"
        hint = ("check the dtypes of inputs_after (a number gets the dtype of the tensor it is inserted "
                "after; give {value: ..., dtype: ...} otherwise)")
        if param in allowed and type_str not in allowed[param]:
            raise PassError(f"{label} is not a valid {schema.name}: input {i} is {type_str}, which {schema.name} "
                            f"does not accept ({param} is one of {', '.join(sorted(allowed[param]))})",
                            hint=hint if i else "insert a Cast first, or insert the node on another tensor")
        if param in bound and bound[param][1] != type_str:
            raise PassError(f"{label} is not a valid {schema.name}: input {i} is {type_str} but input "
                            f"{bound[param][0]} is {bound[param][1]}, and {schema.name} wants one type {param} "
                            "for both", hint=hint)
        bound.setdefault(param, (i, type_str))


def _variadic(param: OpSchema.FormalParameter) -> bool:
    return param.option == OpSchema.FormalParameterOption.Variadic


def _import_domain(model: Model, domain: str, version: int, result: PassResult) -> None:
    if domain and domain not in model.opset_imports:
        model.opset_imports[domain] = version
        result.notes.append(f"imported opset '{domain}' version {version}")
        result.changed = True  # an opset import: the runner does not see it
