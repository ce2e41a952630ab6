"""Exporting: :class:`surgeon.Model` -> ``onnx.ModelProto`` (in memory, no file I/O).

Tensors, attributes and functions are converted by onnx-graphsurgeon's own
exporter. The graph walk is ours, because gs's loses things (measured over
1,831 models, see design notes §8): it crashes on optional-typed IO, drops
IR-3 initializer inputs, unused initializers, node metadata and doc strings,
moves initializers that only subgraphs read into every subgraph that reads
them, and lets a shapeless value_info override a declared output type. Here
every object that a pass did not change is written back as it was read
(see :class:`surgeon.io.model.Origin`), and every changed one as gs would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter, dtype_to_onnx
from onnx_graphsurgeon.ir.tensor import SparseValues

from surgeon.errors import ExportError
from surgeon.graph.walk import node_domain, subgraphs_of
from surgeon.io.model import Model, tensor_signature


def to_proto(model: Model, *,
             initializer: Callable[[gs.Constant], onnx.TensorProto | None] | None = None) -> onnx.ModelProto:
    """The ModelProto of ``model``. External tensors keep their references (relative to ``model.base_dir``).

    ``initializer``: makes the TensorProto of an initializer instead of gs (when it returns
    one); shape inference uses it so that weights a pass loaded are never copied into a proto.
    """
    try:
        return _Exporter(model, initializer).export()
    except ExportError:
        raise
    except Exception as exc:  # gs raises bare exceptions for invalid graphs edited by user code
        raise ExportError(
            f"the edited graph cannot be exported: {type(exc).__name__}: {exc}",
            hint="a pass left the graph inconsistent (e.g. a tensor without dtype as graph input/output, "
                 "or two tensors with one name)",
        ) from exc


def function_fingerprint(func: Any) -> bytes:
    """gs's export of a local function, to tell on save whether a pass changed it."""
    return OnnxExporter.export_function(func).SerializeToString(deterministic=True)


class _Exporter:
    def __init__(self, model: Model,
                 initializer: Callable[[gs.Constant], onnx.TensorProto | None] | None = None) -> None:
        self.model = model
        self.initializer = initializer
        self.origin = model.origin
        self.parent: dict[int, gs.Graph | None] = {}
        self.graphs: list[gs.Graph] = []
        self._chains: dict[int, list[int]] = {}
        self._index_graphs(model.graph, None)
        self.initializers = self._place_initializers()

    def _index_graphs(self, graph: gs.Graph, parent: gs.Graph | None) -> None:
        self.parent[id(graph)] = parent
        self.graphs.append(graph)
        for node in graph.nodes:
            for _, sub in subgraphs_of(node):
                self._index_graphs(sub, graph)

    # -- where each initializer is declared ------------------------------------------

    def _ancestors(self, graph: gs.Graph) -> list[int]:
        """Ids of ``graph`` and its enclosing graphs, innermost first (memoized: asked per constant)."""
        chain = self._chains.get(id(graph))
        if chain is None:
            chain = []
            g: gs.Graph | None = graph
            while g is not None:
                chain.append(id(g))
                g = self.parent[id(g)]
            self._chains[id(graph)] = chain
        return chain

    def _place_initializers(self) -> dict[int, list[gs.Constant]]:
        """Graph id -> the Constants it declares.

        A constant stays in the graph that declared it on load while that
        graph still encloses every reader; a new one goes to the innermost
        graph that encloses all its readers (so a constant two branches share
        is declared once, in their parent).
        """
        # Per constant, the graphs that read it (each once: a weight read by 50,000 nodes
        # of one graph has one reader graph).
        readers: dict[int, tuple[gs.Constant, dict[int, gs.Graph]]] = {}
        constant = gs.Constant
        for g in self.graphs:
            gid = id(g)
            for node in g.nodes:
                for t in node.inputs:
                    if type(t) is constant or isinstance(t, constant):
                        entry = readers.get(id(t))
                        if entry is None:
                            readers[id(t)] = (t, {gid: g})
                        elif gid not in entry[1]:
                            entry[1][gid] = g
            for t in g.outputs:
                if isinstance(t, constant):
                    readers.setdefault(id(t), (t, {}))[1].setdefault(gid, g)
        placed: dict[int, list[gs.Constant]] = {id(g): [] for g in self.graphs}
        for const, using in readers.values():
            chains = [self._ancestors(g) for g in using.values()]
            common = [gid for gid in chains[0] if all(gid in c for c in chains[1:])]
            owner = self.origin.owner.get(id(const))
            if owner is not None and id(owner[1]) in common:
                target = id(owner[1])
            else:
                target = common[0]  # innermost graph enclosing all readers
            placed[target].append(const)
        for gid, unused in self.origin.unused_initializers.items():
            if gid in placed:
                placed[gid].extend(c for c in unused if id(c) not in readers)
        for gid, consts in placed.items():
            order = self.origin.initializer_order.get(gid, {})
            first_seen = {id(c): i for i, c in enumerate(consts)}
            consts.sort(key=lambda c: (order.get(c.name, len(order)), first_seen[id(c)]))
        return placed

    # -- the walk -----------------------------------------------------------------

    def export(self) -> onnx.ModelProto:
        m = self.model
        out = onnx.ModelProto()
        out.CopyFrom(m.template)
        out.graph.Clear()
        self._graph(m.graph, top=True, g=out.graph)  # built in place: no copy of the whole graph
        for func in m.graph.functions:
            known = self.origin.functions.get(id(func))
            if known is not None and known[0] is func and function_fingerprint(func) == known[2]:
                out.functions.append(known[1])
            else:
                fproto = OnnxExporter.export_function(func)
                # gs keeps every import the function had; drop what its nodes no longer use
                # (a FooOp removed from the body takes its domain with it, as at model level).
                used = {n.domain for n in fproto.node} | {""}
                keep = [o for o in fproto.opset_import if o.domain in used or o.domain == "ai.onnx"]
                del fproto.opset_import[:]
                fproto.opset_import.extend(keep)
                out.functions.append(fproto)
        # Reuse the input's entries where unchanged (they may omit the domain field).
        original = {(o.domain, o.version): o for o in m.template.opset_import}
        wanted = [original.get((d, v)) or onnx.helper.make_opsetid(d, v) for d, v in self._opsets().items()]
        del out.opset_import[:]
        out.opset_import.extend(wanted)
        return out

    def _opsets(self) -> dict[str, int]:
        m = self.model
        used = {node_domain(n) for g in self.graphs for n in g.nodes}
        for func in m.graph.functions:
            used |= {node_domain(n) for n in func.nodes}
        imports = dict(m.opset_imports)
        if m.graph.opset != self.origin.graph_opset:
            imports[""] = m.graph.opset  # a gs script changed graph.opset
        for o in m.graph.import_domains or []:
            if (o.domain, o.version) not in self.origin.graph_import_domains:
                imports.setdefault(o.domain, o.version)  # a domain a gs script declared
        result = {}
        for domain, version in imports.items():
            d = "" if domain == "ai.onnx" else domain
            # Drop only what nodes used on load and no longer use; what the
            # input declared without using it stays (it is not ours to remove).
            if d == "" or d in used or d not in self.origin.used_domains:
                result[domain] = version
        declared = {("" if k == "ai.onnx" else k) for k in imports}
        for d in sorted(used - declared - self.origin.used_domains):
            result[d] = 1  # a domain a pass introduced, declared as gs does
        return result

    def _graph(self, graph: gs.Graph, top: bool, g: onnx.GraphProto) -> onnx.GraphProto:
        """Write ``graph`` into ``g``, an empty GraphProto (built in place, never copied)."""
        o = self.origin
        g.name = graph.name or ""
        if graph.doc_string:
            g.doc_string = graph.doc_string
        add = g.node.add
        for n in graph.nodes:
            self._node(n, add)

        consts = self.initializers.get(id(graph), [])
        for c in consts:
            if isinstance(c._values, SparseValues):
                g.sparse_initializer.append(OnnxExporter.export_sparse_tensor_proto(c))
            else:
                tensor = self.initializer(c) if self.initializer is not None else None
                if tensor is None and _in_place(c, g):
                    continue
                if tensor is None:
                    tensor = OnnxExporter.export_tensor_proto(c)
                if tensor.data_location == onnx.TensorProto.EXTERNAL and not tensor.external_data:
                    # gs keeps the EXTERNAL flag of a constant whose values a pass replaced
                    # in memory; the bytes are inline now (save moves them out again).
                    tensor.data_location = onnx.TensorProto.DEFAULT
                g.initializer.append(tensor)

        inputs = [self._value_info(t, top) for t in graph.inputs]
        # Initializers that were graph inputs too (IR 3) go back to their places.
        declared = {c.name: c for c in consts}
        extra = [(name, k) for name, k in o.initializer_inputs.get(id(graph), []) if name in declared]
        if self.model.ir_version < 4:
            listed = {name for name, _ in extra}
            extra += [(c.name, len(graph.inputs)) for c in consts if c.name not in listed]
        for offset, (name, k) in enumerate(sorted(extra, key=lambda e: e[1])):
            inputs.insert(min(k + offset, len(inputs)), self._value_info(declared[name], top))
        g.input.extend(inputs)
        g.output.extend(self._value_info(t, top) for t in graph.outputs)

        io_names = {t.name for t in graph.inputs} | {t.name for t in graph.outputs}
        seen: set[str] = set()
        entries: list[onnx.ValueInfoProto] = []
        for t in [t for n in graph.nodes for t in n.outputs] + consts:
            if t.name and t.name not in io_names and t.name not in seen:
                seen.add(t.name)
                vi = self._intermediate_value_info(t)
                if vi is not None:
                    entries.append(vi)
        entries += [vi for vi in o.io_value_info.get(id(graph), []) if vi.name in io_names]
        order = o.value_info_order.get(id(graph), {})
        position = {id(vi): i for i, vi in enumerate(entries)}
        entries.sort(key=lambda vi: (order.get(vi.name, len(order)), position[id(vi)]))
        g.value_info.extend(entries)

        extras = o.graphs.get(id(graph))
        if extras is not None and extras[0] is graph:
            g.metadata_props.extend(extras[1])
            names = io_names | seen | set(declared)
            g.quantization_annotation.extend(q for q in extras[2] if q.tensor_name in names)
        return g

    def _node(self, node: gs.Node, add: Any) -> onnx.NodeProto:
        # Built in place with one call per node (``add`` of the graph's node list: each field
        # set from Python is a separate C call, and extend() would copy every node again);
        # name and domain are passed only when set, so that absent fields stay absent.
        ins = [t.name for t in node.inputs]
        outs = [t.name for t in node.outputs]
        name, domain = node.name, node.domain
        if name:
            if domain is not None:
                p = add(op_type=node.op, name=name, domain=domain, input=ins, output=outs)
            else:
                p = add(op_type=node.op, name=name, input=ins, output=outs)
        elif domain is not None:
            p = add(op_type=node.op, domain=domain, input=ins, output=outs)
        else:
            p = add(op_type=node.op, input=ins, output=outs)
        for key, value in node.attrs.items():
            if isinstance(value, gs.Graph):
                attr = onnx.AttributeProto(name=key, type=onnx.AttributeProto.GRAPH)
                self._graph(value, top=False, g=attr.g)
                p.attribute.append(attr)
            elif isinstance(value, gs.Constant) and type(value._values).__name__ in ("LazyValues", "ExternalValues"):
                # An unchanged tensor attribute: copy its proto as read (gs would
                # write an explicit empty name into it, in place).
                attr = onnx.AttributeProto(name=key, type=onnx.AttributeProto.TENSOR)
                attr.t.CopyFrom(value._values.tensor)
                if value.name != attr.t.name:
                    attr.t.name = value.name
                p.attribute.append(attr)
            else:
                p.attribute.extend(OnnxExporter.export_attributes({key: value}))
        extras = self.origin.nodes.get(id(node))
        if extras is not None and extras[0] is node:
            _, doc, meta, skipped = extras
            if doc:
                p.doc_string = doc
            p.metadata_props.extend(meta)
            have = {a.name for a in p.attribute}
            p.attribute.extend(a for a in skipped if a.name not in have)
        return p

    def _as_read(self, t: gs.Tensor) -> onnx.ValueInfoProto | None:
        """The tensor's type proto as the input declared it, while dtype and shape are unchanged."""
        known = self.origin.value_info.get(id(t))
        if known is None or known[0] is not t or tensor_signature(t) != known[2]:
            return None
        vi = onnx.ValueInfoProto()
        vi.CopyFrom(known[1])
        vi.name = t.name  # a rename keeps the type
        return vi

    def _value_info(self, t: gs.Tensor, top: bool) -> onnx.ValueInfoProto:
        vi = self._as_read(t)
        if vi is not None:
            return vi
        if isinstance(t, gs.Variable) and t.type not in (None, "tensor_type", "sequence_type", "sparse_tensor_type"):
            raise ExportError(
                f"graph input/output '{t.name}' has type {t.type!r}, which a pass changed and gs cannot write",
                hint="keep the tensor's dtype and shape as they were, or give it a plain tensor type",
            )
        if top and t.dtype is None:
            raise ExportError(
                f"graph input/output '{t.name}' has no dtype",
                hint="set its dtype (e.g. with set_shapes / infer_shapes, or tensor.dtype = np.float32 in a pass)",
            )
        return OnnxExporter.export_value_info_proto(t, do_type_check=False)

    def _intermediate_value_info(self, t: gs.Tensor) -> onnx.ValueInfoProto | None:
        vi = self._as_read(t)
        if vi is not None:
            return vi
        if isinstance(t, gs.Constant):
            return None  # an initializer's type is its own; only a value_info the input had is kept
        if t.dtype is None and t.shape is None:
            return None
        if t.type not in (None, "tensor_type", "sequence_type", "sparse_tensor_type"):
            return None
        return OnnxExporter.export_value_info_proto(t, do_type_check=False)


def _in_place(c: gs.Constant, g: onnx.GraphProto) -> bool:
    """Write a constant held as a plain numeric array straight into ``g``'s initializers.

    The same TensorProto as gs's ``export_tensor_proto`` (name, data type, dims,
    ``raw_data = values.tobytes()``, data_location), built in place: gs builds it
    apart (``make_tensor`` copies the bytes once more) and ``append`` copies the
    whole message again, three copies of a folded weight where this makes two.
    Returns False (nothing written) for what gs must convert (``export_dtype``,
    lazy, sparse or non-numeric values such as bfloat16).
    """
    values = c._values
    if type(values) is not np.ndarray or values.dtype.kind not in "biuf":
        return False
    data_type = dtype_to_onnx(values.dtype)
    if c._export_dtype is not None and dtype_to_onnx(c._export_dtype) != data_type:
        return False
    t = g.initializer.add()
    t.data_type = data_type
    t.name = c.name
    t.dims.extend(values.shape)
    t.raw_data = values.tobytes()
    if c.data_location is not None:
        # gs keeps an EXTERNAL flag of values a pass replaced in memory: they are inline now.
        external = c.data_location == onnx.TensorProto.EXTERNAL
        t.data_location = onnx.TensorProto.DEFAULT if external else c.data_location
    return True
