"""The one way into shape inference, for every pass that needs shapes.

ONNX's own ``onnx.shape_inference.infer_shapes`` (with data propagation, so
shapes computed by ``Shape -> Gather -> Concat`` chains are followed) runs on
the in-memory export of the model, through :func:`infer` only. Inference
needs tensor types and small constant values, never the weights themselves,
so :func:`infer` hands onnx a proto whose weights have no bytes (their dtype
and dims stay; external weights are references already). A model whose
weights were folded or loaded into memory past protobuf's 2 GiB limit is
therefore inferred like any other; only a graph whose *structure* is over
the limit is refused, with an error saying so.

How failures are handled is the caller's choice, not a separate path:
``errors="raise"`` (the shape passes: a PassError naming the node) or
``errors="report"`` (passes that use shapes as hints: ``fold_constants``,
``eliminate_noops``, ``fuse``, ``insert_node``, outputs, NMS; the failure
comes back as :attr:`Inferred.problem` and nothing is inferred).

The shape passes write the results back into the gs tensors, which the
exporter turns into ``value_info`` again.

Before inference every intermediate ``value_info`` is dropped from the
exported proto, so that shapes made stale by an edit cannot survive (or make
inference fail): each one is derived afresh. What inference cannot derive is
handled by the caller's choice:

* ``stale=False`` (nothing shape-related changed, e.g. ``infer_shapes``):
  what a tensor had before stays where inference has nothing better.
* ``stale=True`` (declared shapes changed, e.g. ``set_batch``): old shapes
  may be wrong, so a tensor inference cannot shape loses its shape (its
  dtype stays: edits here never change intermediate dtypes), and the inputs
  and outputs of subgraphs lose their fixed dimensions (not their rank)
  unless inference derives them again.

Outputs of nodes that ONNX has no schema for (custom ops) keep their
declared type, because inference can only learn it from there. A custom op
declared in :mod:`surgeon.graph.custom_ops` (a recipe's ``custom_ops:``,
``surgeon.declare_op``) gets its outputs' types from the declaration: after
onnx's pass, every declared node whose inputs are now known gets its outputs
typed, and onnx runs again from there, so shapes (and, through data
propagation, shape values) flow past the op. That costs one more inference
run per declared op that sits behind another one (a chain of k declared ops
one after the other takes k + 1 runs); declared ops side by side share runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnx.defs
import onnx.shape_inference
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.importers.onnx_importer import (
    get_onnx_tensor_dtype,
    get_onnx_tensor_shape,
    get_onnx_tensor_type,
)

from surgeon.errors import PassError, SurgeonError, first_line
from surgeon.graph import custom_ops
from surgeon.graph.names import node_label_of
from surgeon.graph.walk import proto_graphs, proto_value_infos
from surgeon.io.export import to_proto
from surgeon.io.external import is_external, iter_model_tensors, set_external
from surgeon.io.model import Model

# protobuf's limit on one message; onnx's inference receives the model as one.
# A module constant so tests can lower it (a model can then be "too big" in KiB).
PROTO_LIMIT = 2**31
# Tensors smaller than this keep their bytes: data propagation reads small
# constants (Reshape targets, Slice starts, Range limits, Resize scales).
KEEP_BYTES = 1024
# onnx's data propagation parses int32/int64 tensors and fails on placeholder
# references (strict mode errors, lenient mode loses the value), so these keep
# their bytes unless the proto is still over PROTO_LIMIT without the others.
_PARSED_TYPES = (onnx.TensorProto.INT64, onnx.TensorProto.INT32)
_PLACEHOLDER = "surgeon-shape-inference-placeholder"
_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "string_data", "int64_data", "double_data",
                "uint64_data")
# onnx's inference invents these names for dimensions it cannot name.
_GENERATED_DIM = re.compile(r"^unk__\d+$")
# One failure in onnx's error text: "(op_type:Add, node name: my/add): message".
_WHERE = re.compile(r"\(op_type:([^,)]*)(?:, node name: ([^)]*))?\):\s*")
_TAG = re.compile(r"^\s*\[\w+Error\]\s*")
_NO_SCHEMA = re.compile(r"Cannot infer type and shape for node name (.*?)\. No opset import for domain (\S*) "
                        r"optype (\S+)")

Dims = list  # list of int | str | None


def graph_pairs(graph: gs.Graph, gproto: onnx.GraphProto) -> Iterator[tuple[gs.Graph, onnx.GraphProto]]:
    """``(gs graph, graph proto)`` pairs of a model and its export, subgraphs included.

    The exporter writes nodes in gs order and subgraphs as attributes of the
    same name, and inference keeps both, so the two trees walk side by side.
    """
    yield graph, gproto
    for node, nproto in zip(graph.nodes, gproto.node):
        for attr in nproto.attribute:
            sub = node.attrs.get(attr.name)
            if attr.type == onnx.AttributeProto.GRAPH and isinstance(sub, gs.Graph):
                yield from graph_pairs(sub, attr.g)


def dims_of(vi: onnx.ValueInfoProto) -> Dims | None:
    """Dimensions of a tensor type as ints, names and None (unknown); None when the rank is unknown."""
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param if d.HasField("dim_param") else None)
            for d in tt.shape.dim]


def set_dims(vi: onnx.ValueInfoProto, dims: Dims | None) -> None:
    """Write dimensions (ints, names, None) into a tensor type; None clears the shape."""
    tt = vi.type.tensor_type
    tt.ClearField("shape")
    if dims is None:
        return
    shape = tt.shape
    shape.SetInParent()  # a rank-0 shape must exist even without dims
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        elif d is not None:
            dim.dim_value = d


def gs_dtype(elem_type: int) -> Any:
    """The dtype gs uses for an ONNX element type (numpy dtype, or the enum when numpy has none)."""
    return get_onnx_tensor_dtype(onnx.helper.make_tensor_value_info("", elem_type, None))


@dataclass
class Inferred:
    """The result of one inference run."""

    proto: onnx.ModelProto
    """The inferred model (same nodes, in the same order, as the model it was exported from)."""
    known_dims: set[str]
    """Dimension names present before inference; other ``unk__N`` names are onnx's inventions."""
    problem: str | None = None
    """Why inference failed (``errors="report"`` only); then ``proto`` is empty: nothing was inferred."""

    def tensors(self) -> dict[str, onnx.ValueInfoProto]:
        """Every typed name of every graph (inputs, outputs, value_info, initializers), outer graphs first."""
        found: dict[str, onnx.ValueInfoProto] = {}
        for g in proto_graphs(self.proto.graph):
            for vi in list(g.input) + list(g.output) + list(g.value_info):
                found.setdefault(vi.name, vi)
            for init in g.initializer:
                if init.name not in found:
                    found[init.name] = onnx.helper.make_tensor_value_info(init.name, init.data_type,
                                                                          list(init.dims))
        return found

    def value_infos(self) -> dict[str, onnx.ValueInfoProto]:
        """Every value info with a tensor or sequence type, by name (subgraphs included; outer graphs
        first, and within a graph ``value_info`` before inputs and outputs)."""
        found: dict[str, onnx.ValueInfoProto] = {}
        for g in proto_graphs(self.proto.graph):
            for vi in list(g.value_info) + list(g.input) + list(g.output):
                if (vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type
                        or vi.type.HasField("sequence_type")):
                    found.setdefault(vi.name, vi)
        return found

    def dims(self, vi: onnx.ValueInfoProto | None) -> Dims | None:
        """Dimensions of ``vi`` with onnx's invented names turned into None (unknown)."""
        if vi is None:
            return None
        dims = dims_of(vi)
        if dims is None:
            return None
        return [None if isinstance(d, str) and _GENERATED_DIM.match(d) and d not in self.known_dims else d
                for d in dims]


def infer_value_infos(model: Model) -> tuple[dict[str, onnx.ValueInfoProto], str | None]:
    """Typed value infos by tensor name (subgraphs included) from ONNX shape inference, and
    why inference failed, if it did. The model is not changed."""
    inferred = infer(model, errors="report")
    if inferred.problem is not None:
        return {}, f"shape inference failed: {inferred.problem}"
    return inferred.value_infos(), None


def export_for_inference(model: Model, *, stale: bool) -> onnx.ModelProto:
    """The model's proto with intermediate shape information removed (see the module notes)."""
    proto = to_proto(model, initializer=_weightless)
    schemaless = _schemaless_outputs(proto)
    _clear(proto.graph, schemaless, stale, top=True)
    return proto


def infer(source: Model | onnx.ModelProto, *, strict: bool = False, errors: str = "raise") -> Inferred:
    """Run onnx's shape inference: the one entry every pass that needs shapes goes through.

    ``source``: a model, exported as it is (its ``value_info`` included), or
    a proto the caller prepared (:func:`export_for_inference`); such a proto
    is consumed: its weights lose their bytes in place.
    ``strict``: onnx's strict mode, a node whose shape cannot be inferred is
    an error instead of being skipped (with ``errors="raise"``).
    ``errors``: ``"raise"`` checks types and turns a failure into a
    PassError naming the node; ``"report"`` (for passes that only use shapes
    as hints) does not check types, and returns a failure as
    :attr:`Inferred.problem` with nothing inferred.
    """
    if errors not in ("raise", "report"):
        raise ValueError(f"errors must be 'raise' or 'report', not {errors!r}")
    lenient = errors == "report"
    try:
        proto = to_proto(source, initializer=_weightless) if isinstance(source, Model) else source
        drop_weight_bytes(proto)
        if proto.ByteSize() >= PROTO_LIMIT:
            raise PassError(
                "shape inference cannot run on this model: even without its weights, its graph is over "
                "2 GiB as one protobuf, the most onnx's shape inference can take",
                hint="weights do not count (inference sees only their types), so the nodes, names and "
                     "attributes themselves are this large; split the model, or skip the steps that need "
                     "shapes (fold_constants with fold_shapes: false)",
            )
        known = {d.dim_param for vi in proto_value_infos(proto.graph) for d in _dims_protos(vi) if d.dim_param}
        declared = custom_ops.active()
        source = _copy(proto) if declared else proto
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=not lenient,
                                                     strict_mode=strict and not lenient, data_prop=True)
        if declared:
            inferred = _past_declared_ops(source, inferred, declared, strict=strict and not lenient,
                                          lenient=lenient)
    except SurgeonError as exc:
        if not lenient:
            raise
        return Inferred(onnx.ModelProto(), set(), problem=exc.message)
    except onnx.shape_inference.InferenceError as exc:
        if not lenient:
            raise inference_error(str(exc), proto, strict) from exc
        return Inferred(onnx.ModelProto(), set(), problem=first_line(exc))
    except Exception as exc:  # onnx raises other types too (e.g. on a malformed proto)
        if not lenient:
            raise
        return Inferred(onnx.ModelProto(), set(), problem=first_line(exc))
    return Inferred(inferred, known)


def _past_declared_ops(source: onnx.ModelProto, inferred: onnx.ModelProto,
                       declared: dict[tuple[str, str], custom_ops.OpDecl], *, strict: bool,
                       lenient: bool) -> onnx.ModelProto:
    """Type the outputs of declared custom ops from their declarations and infer again, until
    nothing new is learned (see the module notes).

    Each run starts again from ``source`` (the proto onnx was first given) plus the declared
    outputs learned so far: onnx never replaces a dimension name it inferred once by a better
    one, so what an earlier run guessed behind the op must not be fed back in.
    """
    learned: dict[tuple[int, str], tuple[int, list | None]] = {}  # (graph position, name) -> type
    for _ in range(sum(1 for g in proto_graphs(inferred.graph) for _ in g.node)):
        known = _known_types(inferred)
        new = False
        for gi, g in enumerate(proto_graphs(inferred.graph)):
            io = {vi.name for vi in list(g.input) + list(g.output)}
            for n in g.node:
                decl = declared.get((custom_ops.normal_domain(n.domain), n.op_type))
                if decl is None:
                    continue
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute
                         if a.type == onnx.AttributeProto.INT}
                for index, name in enumerate(n.output):
                    if not name or name in io:
                        continue
                    found = custom_ops.output_type(decl, index, [known.get(x) for x in n.input], attrs)
                    if found is not None and learned.get((gi, name)) != found:
                        learned[(gi, name)] = found
                        new = True
        if not new:
            break
        proto = onnx.ModelProto()
        proto.CopyFrom(source)
        for gi, g in enumerate(proto_graphs(proto.graph)):
            infos = {v.name: v for v in g.value_info}
            for (where, name), (elem, dims) in learned.items():
                if where == gi:
                    vi = infos.get(name) or g.value_info.add(name=name)
                    vi.type.tensor_type.elem_type = elem
                    set_dims(vi, dims)
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=not lenient, strict_mode=strict,
                                                     data_prop=True)
    return inferred


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    return copy


def _known_types(proto: onnx.ModelProto) -> dict[str, custom_ops.InputType]:
    """Element type and dims of every typed tensor name in every graph of ``proto``."""
    known: dict[str, custom_ops.InputType] = {}
    for g in proto_graphs(proto.graph):
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
                known.setdefault(vi.name, custom_ops.InputType(vi.type.tensor_type.elem_type, dims_of(vi)))
        for t in g.initializer:
            known.setdefault(t.name, custom_ops.InputType(t.data_type, list(t.dims)))
    return known


def drop_weight_bytes(proto: onnx.ModelProto) -> None:
    """Make the weights of ``proto`` byte-free references: dtype and dims stay, the bytes go.

    Inference needs only the types of weights, and small constants' values
    (kept, see KEEP_BYTES); int32/int64 weights keep their bytes too while
    the proto fits protobuf's limit without them (see _PARSED_TYPES).
    """
    parsed: list[onnx.TensorProto] = []
    for t in iter_model_tensors(proto):
        if is_external(t) or _payload_size(t) < KEEP_BYTES:
            continue
        if t.data_type in _PARSED_TYPES:
            parsed.append(t)
        else:
            _to_placeholder(t)
    if parsed and proto.ByteSize() >= PROTO_LIMIT:
        for t in parsed:
            _to_placeholder(t)


def _to_placeholder(t: onnx.TensorProto) -> None:
    """A reference to bytes nobody reads: onnx's inference never opens external data."""
    size = _payload_size(t)
    for field in _DATA_FIELDS:
        t.ClearField(field)
    set_external(t, _PLACEHOLDER, 0, size)


def _payload_size(t: onnx.TensorProto) -> int:
    """A tensor's bytes, from its dims: ``ByteSize()`` would serialize a copy of them (upb)."""
    if t.data_type == onnx.TensorProto.STRING:
        return t.ByteSize()
    count = 1
    for d in t.dims:
        count *= d
    try:
        return count * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except (KeyError, ValueError, TypeError):  # a data type numpy has no dtype for
        return t.ByteSize()


def _weightless(c: gs.Constant) -> onnx.TensorProto | None:
    """The TensorProto of a weight a pass loaded into memory, as a placeholder without its bytes.

    Exporting it with its bytes only for :func:`drop_weight_bytes` to drop them held up to three
    copies of the weight at once (gs's ``tobytes``, the proto, its serialization in ``ByteSize``):
    2.4 GB for one 596 MB tensor. Lazy weights, small ones and int32/int64 ones (see
    _PARSED_TYPES) go through gs's exporter as before.
    """
    values = c._values
    if not isinstance(values, np.ndarray) or values.nbytes < KEEP_BYTES or values.dtype.kind not in "fiub":
        return None
    if values.dtype in (np.int32, np.int64) or getattr(c, "export_dtype", values.dtype) != values.dtype:
        return None
    t = onnx.TensorProto(name=c.name, data_type=onnx.helper.np_dtype_to_tensor_dtype(values.dtype),
                         dims=values.shape)
    set_external(t, _PLACEHOLDER, 0, values.nbytes)
    return t




def write_back(model: Model, inferred: Inferred, *, stale: bool, keep: tuple[gs.Tensor, ...] = ()) -> int:
    """Copy inferred types into the gs tensors of every graph; returns how many tensors changed.

    Graph inputs are never touched, and graph outputs of the main graph only
    get what they lack (their declared types are the model's interface);
    ``keep``: outputs whose shapes the user just set, left exactly as set.
    """
    kept = {id(t) for t in keep}
    changed = 0
    for graph, gproto in graph_pairs(model.graph, inferred.proto.graph):
        top = graph is model.graph
        info = {vi.name: vi for vi in list(gproto.value_info) + list(gproto.input) + list(gproto.output)}
        # Each tensor is updated by the graph that owns it: a subgraph output may be
        # an outer tensor (even a graph input), which that subgraph must not touch.
        targets: list[tuple[gs.Tensor, str]] = []
        if top:
            targets += [(t, "output") for t in graph.outputs]
        else:
            targets += [(t, "io") for t in graph.inputs]
        targets += [(t, "node") for n in graph.nodes for t in n.outputs]
        seen: set[int] = set()
        for t, role in targets:
            if id(t) in seen or id(t) in kept or not isinstance(t, gs.Variable) or not t.name:
                continue
            seen.add(id(t))
            before = (str(t.dtype), None if t.shape is None else list(t.shape), t.type)
            _update(t, info.get(t.name), inferred, role, stale)
            if before != (str(t.dtype), None if t.shape is None else list(t.shape), t.type):
                changed += 1
    return changed


def reinfer(model: Model, *, strict: bool = False, stale: bool = True) -> int:
    """Clear intermediate shapes, run inference, write the results back; returns tensors changed."""
    inferred = infer(export_for_inference(model, stale=stale), strict=strict)
    return write_back(model, inferred, stale=stale)


# -- preparing the proto -------------------------------------------------------------


def _schemaless_outputs(proto: onnx.ModelProto) -> set[str]:
    """Outputs of nodes onnx cannot infer (no schema, no local function): their types are kept."""
    functions = {(f.domain, f.name) for f in proto.functions}
    imports = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in proto.opset_import}
    names: set[str] = set()
    for g in proto_graphs(proto.graph):
        for n in g.node:
            domain = "" if n.domain == "ai.onnx" else n.domain
            if (n.domain, n.op_type) in functions:
                continue
            try:
                onnx.defs.get_schema(n.op_type, imports.get(domain, 1), domain)
            except onnx.defs.SchemaError:
                names.update(o for o in n.output if o)
    return names


def _clear(g: onnx.GraphProto, schemaless: set[str], stale: bool, top: bool) -> None:
    io = {vi.name for vi in list(g.input) + list(g.output)}
    kept = []  # copies: entries removed from a repeated field are not ours to keep
    for vi in g.value_info:
        if vi.name in schemaless and vi.name not in io:
            copy = onnx.ValueInfoProto()
            copy.CopyFrom(vi)
            if stale and copy.type.HasField("tensor_type"):
                copy.type.tensor_type.ClearField("shape")
            kept.append(copy)
    del g.value_info[:]
    g.value_info.extend(kept)
    if stale and not top:
        # Inputs/outputs of Loop/Scan/If bodies may carry old fixed dimensions too. onnx
        # does not infer body inputs again and onnxruntime needs their rank (a Loop's
        # iteration count must be a scalar), so only the fixed dimensions are forgotten.
        for vi in list(g.input) + list(g.output):
            for dim in _dims_protos(vi):
                if dim.HasField("dim_value"):
                    dim.Clear()
    if top:
        # A main-graph output declared with names for dimensions that are in fact
        # fixed (the legacy exporter's [N, Concat_dim_1, ...]) gets its shape
        # inferred too; write_back then fills in only those dimensions.
        for vi in g.output:
            dims = _dims_protos(vi)
            if vi.name not in schemaless and any(not d.HasField("dim_value") for d in dims):
                vi.type.tensor_type.ClearField("shape")
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                _clear(a.g, schemaless, stale, top=False)


def _dims_protos(vi: onnx.ValueInfoProto):
    if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
        return vi.type.tensor_type.shape.dim
    return []


# -- writing back --------------------------------------------------------------------


def _update(t: gs.Variable, vi: onnx.ValueInfoProto | None, inferred: Inferred, role: str, stale: bool) -> None:
    if vi is not None and _elem_type(vi) == onnx.TensorProto.UNDEFINED:
        vi = None  # declared without a type: nothing to take from it
    if role == "output":
        # The main graph's declared outputs are its interface: only fill in what is
        # missing, and replace a named or unknown dimension only by a proven value.
        if vi is not None and t.dtype is None:
            t.dtype = get_onnx_tensor_dtype(vi)
        if vi is not None and vi.type.HasField("tensor_type"):
            found = inferred.dims(vi)
            if t.shape is None:
                t.shape = found
            elif found is not None and len(found) == len(t.shape):
                t.shape = [f if isinstance(f, int) and not isinstance(d, int) else d for d, f in zip(t.shape, found)]
        return
    if vi is None:
        if stale:
            t.shape = None
        return
    t.dtype = get_onnx_tensor_dtype(vi)
    t.type = get_onnx_tensor_type(vi)
    shape = inferred.dims(vi) if vi.type.HasField("tensor_type") else get_onnx_tensor_shape(vi)
    if not stale:
        shape = _merge(t.shape, shape)
    t.shape = shape


def _elem_type(vi: onnx.ValueInfoProto) -> int:
    """The element type of a tensor, sequence-of-tensor or sparse type; UNDEFINED for anything else."""
    kind = vi.type.WhichOneof("value")
    if kind == "tensor_type":
        return vi.type.tensor_type.elem_type
    if kind == "sparse_tensor_type":
        return vi.type.sparse_tensor_type.elem_type
    if kind == "sequence_type" and vi.type.sequence_type.elem_type.HasField("tensor_type"):
        return vi.type.sequence_type.elem_type.tensor_type.elem_type
    return onnx.TensorProto.UNDEFINED


def _merge(old: Dims | None, new: Dims | None) -> Dims | None:
    """``new``, with dimensions it leaves unknown taken from ``old`` when the ranks agree."""
    if old is None:
        return new
    if new is None:
        return list(old)
    if len(old) != len(new):
        return new
    return [o if n is None else n for o, n in zip(old, new)]


# -- errors --------------------------------------------------------------------------


def inference_error(text: str, proto: onnx.ModelProto, strict: bool) -> PassError:
    """A PassError naming the node(s) where onnx's shape inference failed."""
    at_nodes, other = [], []  # "node 'x' (Add): message"; onnx's own text where it names no node
    for line in text.splitlines():
        m = _NO_SCHEMA.search(line)
        chain = list(_WHERE.finditer(line))
        if m:
            name, domain, op = m.groups()
            at_nodes.append(f"{_node_label(name, op, proto)}: the model does not import the opset of its "
                            f"domain '{domain}'")
        elif chain:
            where = [_node_label(c.group(2) or "", c.group(1), proto) for c in chain]
            message = _TAG.sub("", line[chain[-1].end():]).strip()
            at_nodes.append(where[-1] + "".join(f" inside {w}" for w in reversed(where[:-1])) + f": {message}")
        elif line.strip():
            other.append(_TAG.sub("", line).strip())
    if len(at_nodes) == 1 and not other:
        head = f"shape inference failed at {at_nodes[0]}"
    elif at_nodes:
        listed = at_nodes + other
        head = f"shape inference failed at {len(at_nodes)} nodes:\n  " + "\n  ".join(listed[:10])
        if len(listed) > 10:
            head += f"\n  ... and {len(listed) - 10} more"
    else:
        head = "shape inference failed: " + ("\n  ".join(other) or "onnx gave no reason")
    hint = ("the model is inconsistent there: check the shapes and dtypes that reach the node "
            "(set_shapes, set_dtype)")
    if strict:
        hint += "; with strict: false, nodes whose shapes cannot be inferred are skipped instead"
    return PassError(head, hint=hint)


def _node_label(name: str, op: str, proto: onnx.ModelProto) -> str:
    name = name.strip()
    if name:
        return node_label_of(name, op)
    # onnx names no node when it has no name: point at it by its output if the op is unique.
    same = [n for g in proto_graphs(proto.graph) for n in g.node if n.op_type == op and not n.name]
    if len(same) == 1 and same[0].output:
        return f"the unnamed {op} node that writes '{same[0].output[0]}'"
    return node_label_of("", op)
