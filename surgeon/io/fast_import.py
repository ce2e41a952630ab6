"""A fast ONNX -> ``gs.Graph`` importer that builds exactly what gs's own builds.

onnx-graphsurgeon's ``import_onnx`` spends ~75 µs per node on logging calls,
closures, constructors that go through ``__setattr__`` hooks and
``SynchronizedList.extend``. This module builds the same objects — plain
``gs.Node``, ``gs.Variable``, ``gs.Constant`` (with gs ``LazyValues`` /
``SparseValues``), ``gs.Graph`` and ``gs.Function`` — with the same
attributes in the same order, the same ``SynchronizedList`` wiring of
``node.inputs/outputs`` and ``tensor.inputs/outputs`` (in the same order),
and the same name resolution rules (a subgraph sees the outer tensors that
existed when its node was imported; a name nothing provides becomes a new
``Variable``; each omitted optional input is its own empty ``Variable``),
only without the per-object overhead.

It mirrors ``onnx_graphsurgeon/importers/onnx_importer.py`` of the gs
versions in :data:`TESTED_GS_VERSIONS`; ``tests/test_fast_import.py``
compares both importers object for object over every real model in
``fixtures/`` and every ONNX backend node test. On any other gs version
:func:`import_onnx` returns None and the caller uses gs's importer; it does
the same when the fast path raises (malformed models: gs then raises its
own error, or copes).
"""

from __future__ import annotations

import gc
from collections import ChainMap, OrderedDict
from typing import Any

import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.importers import onnx_importer as _gs_importer
from onnx_graphsurgeon.ir.function import Function
from onnx_graphsurgeon.ir.graph import Graph
from onnx_graphsurgeon.ir.node import Node
from onnx_graphsurgeon.ir.tensor import Constant, LazyValues, SparseValues, Variable
from onnx_graphsurgeon.util import misc
from onnx_graphsurgeon.util.misc import SynchronizedList

TESTED_GS_VERSIONS = frozenset({"0.6.1"})
"""gs versions whose importer this module reproduces (and the tests compare against)."""


def supported() -> bool:
    """Whether the installed gs is one this importer was tested against."""
    return getattr(gs, "__version__", None) in TESTED_GS_VERSIONS


def import_onnx(model: onnx.ModelProto) -> gs.Graph | None:
    """``gs.import_onnx(model)``, built fast; None when this gs version is untested or the
    fast path cannot build the model (the caller then runs gs's importer)."""
    return import_checked(model)[0]


def import_checked(model: onnx.ModelProto) -> tuple[gs.Graph | None, bool]:
    """:func:`import_onnx`, and whether the graph is known to be well formed.

    True means that every node input, in every graph, is a graph input, an
    initializer, an output of an earlier node or a name of an enclosing graph
    defined before the subgraph's node, and that every graph output is defined:
    then ``load.structure_problems`` has nothing to find, and loading skips that
    second walk over the protobuf. False says nothing either way (the caller
    runs ``structure_problems`` for the exact findings).
    """
    if not supported():
        return None, False
    paused = gc.isenabled()
    gc.disable()  # millions of new objects would trigger full collections over the whole model
    try:
        importer = _Importer()
        graph = importer.model(model)
        return graph, importer.well_formed
    except Exception:  # a malformed model: gs's importer raises its own error, or copes
        return None, False
    finally:
        if paused:
            gc.enable()


class _Everything:
    """The names visible inside a local function, for the well-formedness check: any
    (``structure_problems`` does not look into functions)."""

    def __contains__(self, name: object) -> bool:
        return True

    def add(self, name: str) -> None:
        pass


# -- object construction, as gs's constructors do it (same attributes, same order) --------------

_new = object.__new__
_new_list = list.__new__
_append = list.append


def _sync_list(parent: Any, field_name: str) -> SynchronizedList:
    s = _new_list(SynchronizedList)
    s.parent_obj = parent
    s.field_name = field_name
    return s


def _variable(name: str) -> Variable:
    """``Variable(name)``."""
    t = _new(Variable)
    d = t.__dict__
    d["name"] = name
    d["inputs"] = _sync_list(t, "outputs")
    d["outputs"] = _sync_list(t, "inputs")
    d["dtype"] = None
    d["shape"] = None
    d["type"] = "tensor_type"
    return t


def _constant(name: str, values: LazyValues, data_location: int | None) -> Constant:
    """``Constant(name, values, data_location)``."""
    t = _new(Constant)
    d = t.__dict__
    d["name"] = name
    d["inputs"] = _sync_list(t, "outputs")
    d["outputs"] = _sync_list(t, "inputs")
    d["_values"] = values
    d["data_location"] = data_location
    d["_export_dtype"] = None
    return t


_TENSOR_TYPE_DTYPES: dict[int, Any] = {}


def _tensor_type_dtype(vi: onnx.ValueInfoProto, elem_type: int) -> Any:
    """gs's ``get_onnx_tensor_dtype`` of a tensor-typed value info, memoized by element type."""
    try:
        return _TENSOR_TYPE_DTYPES[elem_type]
    except KeyError:
        dtype = _gs_importer.get_onnx_tensor_dtype(vi)
        _TENSOR_TYPE_DTYPES[elem_type] = dtype
        return dtype


def _value_info_tensor(vi: onnx.ValueInfoProto) -> Variable:
    """gs's ``OnnxImporter.import_tensor`` of a ValueInfoProto."""
    t = _variable(vi.name)
    vtype = vi.type
    if vtype.ByteSize() > 0:
        d = t.__dict__
        if vtype.HasField("tensor_type"):
            tt = vtype.tensor_type
            d["dtype"] = _tensor_type_dtype(vi, tt.elem_type)
            shape = None
            if tt.HasField("shape"):
                shape = []
                for dim in tt.shape.dim:
                    if dim.HasField("dim_param"):
                        shape.append(dim.dim_param)
                    elif dim.HasField("dim_value"):
                        shape.append(dim.dim_value)
                    else:
                        shape.append(None)
            d["shape"] = shape
            d["type"] = "tensor_type"
        else:  # sequences, maps, optionals, sparse and opaque types: gs's own functions
            d["dtype"] = _gs_importer.get_onnx_tensor_dtype(vi)
            d["shape"] = _gs_importer.get_onnx_tensor_shape(vi)
            d["type"] = _gs_importer.get_onnx_tensor_type(vi)
    return t


_LAZY_META: dict[int, tuple[Any, int]] = {}


def _lazy_values(tensor: onnx.TensorProto) -> LazyValues:
    """``LazyValues(tensor)``: shape is the proto's dims, dtype and item size memoized by data type."""
    v = _new(LazyValues)
    data_type = tensor.data_type
    meta = _LAZY_META.get(data_type)
    if meta is None:
        dtype = _gs_importer.get_onnx_tensor_dtype(tensor)
        meta = _LAZY_META[data_type] = (dtype, _gs_importer.get_itemsize(dtype))
    shape = tensor.dims
    d = v.__dict__
    d["tensor"] = tensor
    d["shape"] = shape
    d["dtype"] = meta[0]
    d["nbytes"] = misc.volume(shape) * meta[1]
    return v


def _import_tensor(tensor: onnx.TensorProto) -> Constant:
    """gs's ``OnnxImporter.import_tensor`` of a TensorProto."""
    data_location = int(tensor.data_location) if tensor.HasField("data_location") else None
    return _constant(tensor.name, _lazy_values(tensor), data_location)


def _import_sparse(sparse: onnx.SparseTensorProto) -> Constant:
    """gs's ``OnnxImporter.import_tensor`` of a SparseTensorProto."""
    return _constant(sparse.values.name, SparseValues(sparse), sparse.values.data_location)


_A = onnx.AttributeProto
_ATTR_KIND = {_A.FLOAT: "f", _A.INT: "i", _A.STRING: "s", _A.TENSOR: "t", _A.GRAPH: "g",
              _A.FLOATS: "floats", _A.INTS: "ints", _A.STRINGS: "strings"}
"""Attribute types gs imports; it skips every other type (with a warning)."""


def _graph_object(nodes: list, inputs: list, outputs: list, name: str, doc_string: str, opset: Any,
                  import_domains: Any, producer_name: str | None, producer_version: str | None,
                  ir_version: Any) -> Graph:
    """``Graph(...)`` without ``_merge_subgraph_functions`` (the caller points every graph at the
    model's one function list, which is what that merge ends with)."""
    g = _new(Graph)
    d = g.__dict__
    d["nodes"] = nodes
    d["inputs"] = inputs
    d["outputs"] = outputs
    name = name if name is not None else "onnx_graphsurgeon_graph"
    d["name"] = name
    d["__name__"] = name
    d["doc_string"] = doc_string if doc_string is not None else ""
    d["opset"] = opset if opset is not None else Graph.DEFAULT_OPSET
    d["producer_name"] = producer_name if producer_name is not None else ""
    d["producer_version"] = producer_version if producer_version is not None else ""
    d["import_domains"] = import_domains
    d["ir_version"] = ir_version
    d["name_idx"] = 0
    d["_functions"] = []
    return g


def _visible(outer: Any, local: OrderedDict) -> Any:
    """What a subgraph sees: this graph's tensors over the outer ones.

    gs copies the outer map into a new dict for every subgraph
    (``misc.combine_dicts``), which makes a graph with many ``If`` bodies
    quadratic to load. A chained view finds the same tensors: the subgraph is
    imported at once, while neither map changes (it only adds to its own
    map), and it only ever reads ``outer``.
    """
    if not outer:
        return ChainMap(local)
    if isinstance(outer, ChainMap):
        return ChainMap(local, *outer.maps)
    return ChainMap(local, outer)


class _Importer:
    def __init__(self) -> None:
        self.subgraphs: list[Graph] = []
        """Every graph built for a GRAPH attribute (in functions too)."""
        self.well_formed = True
        """No node reads a name not defined before it, no graph output is undefined (see import_checked)."""
        self.defined: list[Any] = []
        """Names defined so far, one set per graph being imported, innermost last."""

    def model(self, model: onnx.ModelProto) -> Graph:
        get_opset = _gs_importer.OnnxImporter.get_opset
        model_opset = get_opset(model)
        model_domains = model.opset_import
        functions = [self.function(f, model_opset, model_domains) for f in model.functions]
        graph = self.graph(model.graph, OrderedDict(), model_opset, model_domains,
                           model.producer_name, model.producer_version, model.ir_version)
        # What Graph.__init__'s _merge_subgraph_functions ends with: one list (duplicates
        # kept, as gs's list(functions) keeps them), shared by the graph, every subgraph
        # and every function.
        shared = graph.__dict__["_functions"]
        shared.extend(functions)
        for f in functions:
            f._functions = shared
        for sub in self.subgraphs:
            sub.__dict__["_functions"] = shared
        return graph

    def function(self, proto: onnx.FunctionProto, model_opset: Any, model_domains: Any) -> Function:
        """gs's ``OnnxImporter.import_function``."""
        opset = _gs_importer.OnnxImporter.get_opset(proto) or model_opset
        import_domains = proto.opset_import or model_domains
        local: OrderedDict[str, Any] = OrderedDict()
        for name in list(proto.input) + list(proto.output):
            if name not in local:
                local[name] = _variable(name)
        inputs = [local[name] for name in proto.input]
        outputs = [local[name] for name in proto.output]
        self.defined.append(_Everything())
        nodes = [self.node(n, {}, local, opset, import_domains) for n in proto.node]
        self.defined.pop()
        attributes: dict[str, Any] = {}
        if proto.attribute:
            attributes = {name: None for name in proto.attribute}
        if proto.attribute_proto:
            attributes.update(self.attributes(proto.attribute_proto, None, local, opset, import_domains))
        return Function(proto.name, proto.domain, nodes=nodes, inputs=inputs, outputs=outputs,
                        doc_string=proto.doc_string, opset=opset, import_domains=import_domains, attrs=attributes)

    def graph(self, proto: onnx.GraphProto, outer: OrderedDict, opset: Any, import_domains: Any,
              producer_name: str | None = None, producer_version: str | None = None,
              ir_version: Any = None) -> Graph:
        """gs's ``OnnxImporter.import_graph``; ``outer`` is the (read-only) map of outer tensors."""
        local: OrderedDict[str, Any] = OrderedDict()
        init_names = set()
        for init in proto.initializer:
            name = init.name
            init_names.add(name)
            if name not in local and name not in outer:
                local[name] = _import_tensor(init)
        for sparse in proto.sparse_initializer:
            name = sparse.values.name
            init_names.add(name)
            if name not in local and name not in outer:
                local[name] = _import_sparse(sparse)
        for vi in proto.value_info:
            name = vi.name
            known = local.get(name)
            if known is not None:
                tensor = _value_info_tensor(vi)
                if isinstance(known, Variable):
                    known.dtype = known.dtype or tensor.dtype
                    known.shape = known.shape or tensor.shape
            elif name not in outer:
                local[name] = _value_info_tensor(vi)
        inputs = []
        for vi in proto.input:
            name = vi.name
            if name not in init_names:
                t = local.get(name)
                if t is None:
                    t = local[name] = _value_info_tensor(vi)
                inputs.append(t)
        outputs = []
        for vi in proto.output:
            name = vi.name
            t = local.get(name)
            if t is None:
                t = local[name] = _value_info_tensor(vi)
            outputs.append(t)
        defined = set(init_names)
        defined.update(vi.name for vi in proto.input)
        defined.add("")  # an omitted optional input
        self.defined.append(defined)
        nodes = [self.node(n, outer, local, opset, import_domains) for n in proto.node]
        if self.well_formed:
            for vi in proto.output:
                if not self._is_defined(vi.name):
                    self.well_formed = False
        self.defined.pop()
        return _graph_object(nodes, inputs, outputs, proto.name, proto.doc_string, opset, import_domains,
                             producer_name, producer_version, ir_version)

    def node(self, proto: onnx.NodeProto, outer: dict, local: OrderedDict, opset: Any, import_domains: Any) -> Node:
        """gs's ``OnnxImporter.import_node``: attributes first (subgraphs see the tensors imported
        so far), then inputs, then outputs. The hot loop of a load: constructors are inlined."""
        attribute = proto.attribute
        attrs = self.attributes(attribute, outer, local, opset, import_domains) if len(attribute) else OrderedDict()
        n = _new(Node)
        ins = _new_list(SynchronizedList)
        ins.__dict__.update(parent_obj=n, field_name="outputs")
        get = local.get
        defined = self.defined[-1]
        for name in proto.input:
            if name not in defined and self.well_formed and not self._is_defined(name):
                self.well_formed = False
            t = get(name)
            if t is None:
                t = outer.get(name)
                if t is None:
                    t = _variable(name)
                    if name:  # an omitted optional input is a new empty tensor each time, not tracked
                        local[name] = t
            _append(ins, t)
            _append(t.__dict__["outputs"], n)
        outs = _new_list(SynchronizedList)
        outs.__dict__.update(parent_obj=n, field_name="inputs")
        for name in proto.output:
            t = get(name)
            if t is None:  # _variable(name), inlined
                t = _new(Variable)
                t_in = _new_list(SynchronizedList)
                t_out = _new_list(SynchronizedList)
                t.__dict__.update(name=name, inputs=t_in, outputs=t_out, dtype=None, shape=None, type="tensor_type")
                t_in.__dict__.update(parent_obj=t, field_name="outputs")
                t_out.__dict__.update(parent_obj=t, field_name="inputs")
                if name:
                    local[name] = t
            _append(outs, t)
            _append(t.__dict__["inputs"], n)
            defined.add(name)
        n.__dict__.update(op=proto.op_type, name=proto.name, attrs=attrs, inputs=ins, outputs=outs,
                          domain=proto.domain if proto.HasField("domain") else None)
        return n

    def _is_defined(self, name: str) -> bool:
        return any(name in names for names in self.defined)

    def attributes(self, protos: Any, outer: dict | None, local: OrderedDict, opset: Any,
                   import_domains: Any) -> OrderedDict:
        """gs's ``OnnxImporter.import_attributes``."""
        attrs: OrderedDict[str, Any] = OrderedDict()
        for attr in protos:
            atype = attr.type
            kind = _ATTR_KIND.get(atype)
            if kind is None:
                continue  # gs skips (and warns about) the types it cannot represent
            if attr.ref_attr_name:
                value: Any = Node.AttributeRef(attr.ref_attr_name, misc.convert_from_onnx_attr_type(atype))
            elif kind == "i":
                value = attr.i
            elif kind == "f":
                value = attr.f
            elif kind == "s":
                value = attr.s.decode()
            elif kind == "ints":
                value = list(attr.ints)
            elif kind == "floats":
                value = list(attr.floats)
            elif kind == "strings":
                value = [s.decode() for s in attr.strings]
            elif kind == "t":
                value = _import_tensor(attr.t)
            else:  # a subgraph sees the outer tensors and this graph's tensors imported so far
                value = self.graph(attr.g, _visible(outer, local), opset, import_domains)
                self.subgraphs.append(value)
            attrs[attr.name] = value
        return attrs
