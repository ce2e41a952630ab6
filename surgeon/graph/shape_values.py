"""Symbolic shape values: what is known about small integer tensors computed from shapes.

``fold_constants`` turns them into constants, ``eliminate_noops`` proves
nodes to be no-ops with them and ``fuse`` reads ranks and permutations from
them. A dim or an element of a shape-like value is a number, a named symbol
or unknown; shapes come from the one shape-inference entry
(:func:`surgeon.graph.shapes.infer`), merged with what gs declares.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from surgeon.graph import shapes as shape_inference
from surgeon.graph.constants import const_array, is_sparse
from surgeon.graph.walk import node_domain, proto_value_infos, walk_graphs

# A dim or an element of a shape-like value: a number, a named symbol, or unknown.
Elem = int | str | None

_INT_KINDS = "iu"
SMALL_VALUE = 64  # elements: longer integer constants are not tracked as shape values

@dataclass(frozen=True)
class ShapeValue:
    """The value of a small integer tensor as far as it is known (a shape or part of one)."""

    elems: tuple[Elem, ...]
    scalar: bool
    dtype: np.dtype

    @property
    def known(self) -> bool:
        return all(isinstance(e, int) for e in self.elems)

    def array(self) -> np.ndarray:
        arr = np.array(self.elems, dtype=self.dtype)
        return arr.reshape(()) if self.scalar else arr


class ShapeInfo:
    """Shapes (onnx shape inference merged with gs's) and partial values of shape tensors.

    A dim is an ``int``, a symbol (``str``) or ``None``. Two dims that are
    the same symbol are equal; dims shape inference knows nothing about get a
    symbol of their own (``?tensor:axis``), so ``Shape(x)[0]`` still equals
    dim 0 of ``x``. The info stays valid across rewrites that keep every
    remaining tensor's shape (bypassing no-ops, fusions).
    """

    @classmethod
    def of(cls, model: Any) -> ShapeInfo:
        """``ShapeInfo(model)``; inside :func:`shared_shapes`, the one already computed for this
        model when its graph has not changed since (see :func:`graph_fingerprint`)."""
        if not _SCOPES:
            return cls(model)
        cache = _SCOPES[-1]
        key = graph_fingerprint(model)
        hit = cache.get(id(model))
        if hit is not None and hit[0] == key[0]:
            return hit[1]
        info = cls(model)
        cache[id(model)] = (key[0], info, key[1], model)  # the objects keep their ids unique while cached
        return info

    def __init__(self, model: Any, *, infer: bool = True) -> None:
        """``model``: a :class:`surgeon.Model` (typed loosely: the graph layer does not import io/,
        only :mod:`surgeon.graph.shapes` exports). ``infer``: False uses gs's declared shapes only."""
        self.problem: str | None = None
        self._inferred: dict[str, tuple[Elem, ...] | None] = {}
        self._dtypes: dict[str, int] = {}
        self._values: dict[int, ShapeValue] = {}
        if infer and any(g.nodes for g in walk_graphs(model.graph)):
            # Inference adds shapes only to what nodes compute: without nodes (a model folded
            # whole) it would export every weight to learn nothing.
            self._infer(model)
        for graph in walk_graphs(model.graph):
            self.track_values(graph)

    # inference ---------------------------------------------------------------------

    def _infer(self, model: Any) -> None:
        # Shapes are hints here: a model inference fails on is still worked on, with
        # gs's declared shapes only, and the failure is reported by the caller.
        inferred = shape_inference.infer(model, errors="report")
        if inferred.problem is not None:
            self.problem = inferred.problem
            return
        seen: dict[str, tuple[Elem, ...] | None] = {}
        conflicts: set[str] = set()
        for vi in proto_value_infos(inferred.proto.graph):
            tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
            if tt is None:
                continue
            if tt.elem_type:
                if self._dtypes.setdefault(vi.name, tt.elem_type) != tt.elem_type:
                    conflicts.add(vi.name)
            dims = None
            if tt.HasField("shape"):
                dims = tuple(d.dim_value if d.HasField("dim_value")
                             else (d.dim_param if d.dim_param and d.dim_param != "?" else None)
                             for d in tt.shape.dim)
            if vi.name in seen and seen[vi.name] != dims:
                conflicts.add(vi.name)  # one name, two scopes, two shapes: trust neither
            seen[vi.name] = dims
        for name in conflicts:
            seen[name] = None
            self._dtypes.pop(name, None)
        self._inferred = seen

    def shape(self, t: gs.Tensor) -> tuple[Elem, ...] | None:
        """``t``'s dims, or None when even its rank is unknown."""
        if isinstance(t, gs.Constant):
            return tuple(int(d) for d in t.shape)
        dims = self._inferred.get(t.name)
        if dims is None and t.shape is not None:
            dims = tuple(t.shape)
        if dims is None:
            return None
        return tuple(_elem(d, t.name, i) for i, d in enumerate(dims))

    def rank(self, t: gs.Tensor) -> int | None:
        s = self.shape(t)
        return None if s is None else len(s)

    def dtype(self, t: gs.Tensor) -> np.dtype | None:
        """``t``'s numpy dtype, from shape inference (which checks types) or else from gs."""
        elem = self._dtypes.get(t.name) if not isinstance(t, gs.Constant) else None
        try:
            if elem:
                return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))
            return None if t.dtype is None else np.dtype(t.dtype)
        except (KeyError, TypeError, ValueError):
            return None

    # partial values ------------------------------------------------------------------

    def value(self, t: gs.Tensor) -> ShapeValue | None:
        if isinstance(t, gs.Constant):
            return _constant_value(t)
        return self._values.get(id(t))

    def track_values(self, graph: gs.Graph) -> None:
        """Compute partial values of ``graph``'s shape tensors, in node order."""
        for node in graph.nodes:
            if node_domain(node) != "" or len(node.outputs) != 1 or node.op not in VALUE_OPS:
                continue
            try:
                v = VALUE_OPS[node.op](self, node)
            except (IndexError, KeyError, TypeError, ValueError, OverflowError):
                v = None  # a malformed node: it simply stays unknown
            if v is not None and len(v.elems) <= SMALL_VALUE:
                self._values[id(node.outputs[0])] = v


# -- sharing one ShapeInfo between passes ---------------------------------------------------

# One cache per active shared_shapes() block: id(model) -> (fingerprint, info, objects kept alive, model).
_SCOPES: list[dict[int, tuple[tuple, ShapeInfo, list, Any]]] = []
_SMALL_BYTES = 1024  # constants up to this size are fingerprinted by value (inference reads them)


@contextlib.contextmanager
def shared_shapes() -> Iterator[None]:
    """Within the block, :meth:`ShapeInfo.of` computes shapes again only after the graph changed.

    A pass made of passes (``simplify``) wraps its rounds in this: each step
    asks for shapes, and shape inference (an export of the whole model) is
    the largest cost of a step. The cache lives only as long as the block.
    """
    _SCOPES.append({})
    try:
        yield
    finally:
        _SCOPES.pop()


def graph_fingerprint(model: Any) -> tuple[tuple, list]:
    """Everything shape information is computed from, and the objects whose ids it uses.

    Every graph (subgraphs and local functions too): its inputs and outputs,
    every node (op, domain, attributes, which tensors it reads and writes)
    and every tensor (name, kind, dtype, shape; a constant's array by
    identity, and by value when it is small enough for inference to read
    it), plus the model's opsets. Any edit a pass can make to the graph
    changes one of these; the objects are returned so that the caller can
    keep them alive, which keeps their ids from being reused.
    """
    alive: list = []
    parts: list = [id(model.graph), tuple(sorted(getattr(model, "opset_imports", {}).items()))]
    graphs = list(walk_graphs(model.graph))
    for f in getattr(model.graph, "functions", None) or ():
        graphs.extend(walk_graphs(f))
    for graph in graphs:
        alive.append(graph)
        parts.append((id(graph), tuple(_tensor_key(t, alive) for t in graph.inputs),
                      tuple(_tensor_key(t, alive) for t in graph.outputs), len(graph.nodes)))
        for node in graph.nodes:
            alive.append(node)
            parts.append((id(node), node.op, node.domain, tuple(_tensor_key(t, alive) for t in node.inputs),
                          tuple(_tensor_key(t, alive) for t in node.outputs),
                          tuple((k, _freeze(v, alive)) for k, v in node.attrs.items())))
    return tuple(parts), alive


def _tensor_key(t: gs.Tensor, alive: list) -> tuple:
    alive.append(t)
    shape = None if t.shape is None else tuple(t.shape)
    if isinstance(t, gs.Constant):
        values = t._values  # the array or gs's lazy reference, without loading it
        alive.append(values)
        small = None
        if not is_sparse(t) and not isinstance(values, gs.ir.tensor.LazyValues) \
                and getattr(values, "nbytes", _SMALL_BYTES + 1) <= _SMALL_BYTES:
            small = (values.dtype.str, values.tobytes())
        return id(t), t.name, "C", t.dtype, shape, id(values), small
    return id(t), t.name, type(t).__name__, t.dtype, shape


def _freeze(v: Any, alive: list) -> Any:
    if isinstance(v, gs.Tensor):
        return _tensor_key(v, alive)
    if isinstance(v, (gs.Graph, gs.Node)):
        alive.append(v)
        return "obj", id(v)  # a subgraph's contents are fingerprinted as a graph of their own
    if isinstance(v, np.ndarray):
        alive.append(v)
        return "arr", id(v), v.dtype.str, v.shape, v.tobytes() if v.nbytes <= _SMALL_BYTES else None
    if isinstance(v, (list, tuple)):
        return type(v).__name__, tuple(_freeze(x, alive) for x in v)
    if isinstance(v, dict):
        return "dict", tuple((k, _freeze(x, alive)) for k, x in v.items())
    if isinstance(v, (str, bytes, int, float, bool, type(None), np.generic)):
        return v
    alive.append(v)
    return "obj", id(v), repr(v)


def _elem(d: Any, name: str, axis: int) -> Elem:
    if isinstance(d, (int, np.integer)) and d >= 0:
        return int(d)
    if isinstance(d, str) and d and d != "?":
        return d
    return f"?{name}:{axis}"


def _constant_value(c: gs.Constant) -> ShapeValue | None:
    if is_sparse(c) or len(c.shape) > 1:
        return None
    try:
        dtype = np.dtype(c.dtype)
    except TypeError:
        return None
    if dtype.kind not in _INT_KINDS or (c.shape and c.shape[0] > SMALL_VALUE):
        return None
    arr = const_array(c)
    return ShapeValue(tuple(int(v) for v in arr.reshape(-1)), arr.ndim == 0, arr.dtype)


def _const_ints(t: gs.Tensor) -> list[int] | None:
    if not isinstance(t, gs.Constant):
        return None
    v = _constant_value(t)
    # _constant_value reads a constant: every element is an int, none is a symbol or unknown.
    return None if v is None else cast(list[int], list(v.elems))


def _input(node: gs.Node, i: int) -> gs.Tensor | None:
    return node.inputs[i] if i < len(node.inputs) and not node.inputs[i].is_empty() else None


def _v_shape(info: ShapeInfo, node: gs.Node) -> ShapeValue | None:
    dims = info.shape(node.inputs[0])
    if dims is None:
        return None
    start, end = node.attrs.get("start", 0), node.attrs.get("end", None)
    return ShapeValue(tuple(dims[slice(start, end)]), False, np.dtype(np.int64))


def _v_gather(info: ShapeInfo, node: gs.Node) -> ShapeValue | None:
    data, idx = info.value(node.inputs[0]), node.inputs[1]
    if data is None or data.scalar or node.attrs.get("axis", 0) not in (0, -1):
        return None
    ids = _const_ints(idx)
    if ids is None:
        return None
    n = len(data.elems)
    picked = []
    for i in ids:
        if not -n <= i < n:
            return None
        picked.append(data.elems[i])
    return ShapeValue(tuple(picked), len(idx.shape) == 0, data.dtype)


def _v_slice(info: ShapeInfo, node: gs.Node) -> ShapeValue | None:
    data = info.value(node.inputs[0])
    if data is None or data.scalar:
        return None
    steps: list[int] | None
    if "starts" in node.attrs:  # Slice-1: parameters are attributes
        starts, ends = node.attrs["starts"], node.attrs["ends"]
        axes, steps = node.attrs.get("axes", [0]), [1]
    else:
        starts, ends = _const_ints(node.inputs[1]), _const_ints(node.inputs[2])
        axes_t, steps_t = _input(node, 3), _input(node, 4)
        axes = [0] if axes_t is None else _const_ints(axes_t)
        steps = [1] if steps_t is None else _const_ints(steps_t)
    if starts is None or ends is None or axes is None or steps is None:
        return None
    if len(starts) != 1 or list(axes) not in ([0], [-1]) or steps[0] == 0:
        return None
    return ShapeValue(tuple(list(data.elems)[slice(starts[0], ends[0], steps[0])]), False, data.dtype)


def _v_concat(info: ShapeInfo, node: gs.Node) -> ShapeValue | None:
    values = [info.value(t) for t in node.inputs]
    parts = [p for p in values if p is not None]
    if not parts or len(parts) < len(values) or any(p.scalar for p in parts) \
            or node.attrs.get("axis", 0) not in (0, -1):
        return None
    return ShapeValue(tuple(e for p in parts for e in p.elems), False, parts[0].dtype)


def _axes(node: gs.Node) -> list[int] | None:
    if "axes" in node.attrs:
        return list(node.attrs["axes"])
    t = _input(node, 1)
    return None if t is None else _const_ints(t)


def _v_unsqueeze(info: ShapeInfo, node: gs.Node) -> ShapeValue | None:
    v = info.value(node.inputs[0])
    if v is None or not v.scalar or _axes(node) not in ([0], [-1]):
        return None
    return ShapeValue(v.elems, False, v.dtype)


def _v_squeeze(info: ShapeInfo, node: gs.Node) -> ShapeValue | None:
    v = info.value(node.inputs[0])
    axes = _axes(node) if ("axes" in node.attrs or _input(node, 1) is not None) else [0]
    if v is None or v.scalar or len(v.elems) != 1 or axes not in ([0], [-1]):
        return None
    return ShapeValue(v.elems, True, v.dtype)


def _v_cast(info: ShapeInfo, node: gs.Node) -> ShapeValue | None:
    v = info.value(node.inputs[0])
    if v is None:
        return None
    to = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(node.attrs["to"]))
    if to.kind not in _INT_KINDS and not v.known:
        return None  # a symbolic dim stays meaningful only as an integer
    return ShapeValue(v.elems, v.scalar, to)


def _v_identity(info: ShapeInfo, node: gs.Node) -> ShapeValue | None:
    return info.value(node.inputs[0])


def _v_reshape(info: ShapeInfo, node: gs.Node) -> ShapeValue | None:
    v, target = info.value(node.inputs[0]), _const_ints(node.inputs[1])
    if v is None or target is None:
        return None
    if target == [] and len(v.elems) == 1:
        return ShapeValue(v.elems, True, v.dtype)
    if len(target) == 1 and target[0] in (-1, len(v.elems)):
        return ShapeValue(v.elems, False, v.dtype)
    return None


def _v_arith(info: ShapeInfo, node: gs.Node) -> ShapeValue | None:
    a, b = info.value(node.inputs[0]), info.value(node.inputs[1])
    if a is None or b is None or a.dtype.kind not in _INT_KINDS:
        return None
    if len(a.elems) != len(b.elems) and 1 not in (len(a.elems), len(b.elems)):
        return None
    n = max(len(a.elems), len(b.elems))
    ea = a.elems * n if len(a.elems) == 1 else a.elems
    eb = b.elems * n if len(b.elems) == 1 else b.elems
    out = tuple(_arith(node.op, x, y) for x, y in zip(ea, eb))
    return ShapeValue(out, a.scalar and b.scalar, a.dtype)


def _arith(op: str, x: Elem, y: Elem) -> Elem:
    if isinstance(x, int) and isinstance(y, int):
        if op == "Add":
            return x + y
        if op == "Sub":
            return x - y
        if op == "Mul":
            return x * y
        if y == 0:
            return None
        q = abs(x) // abs(y)  # integer Div truncates toward zero
        return q if (x >= 0) == (y >= 0) else -q
    if op == "Mul" and 1 in (x, y):
        return y if x == 1 else x
    if op in ("Div",) and y == 1:
        return x
    if op in ("Add", "Sub") and y == 0:
        return x
    return None


def _v_reduce_prod(info: ShapeInfo, node: gs.Node) -> ShapeValue | None:
    """The product of a shape's elements (``Reshape(x, ReduceProd(Shape(x)))`` flattens ``x``):
    a number when every element is known, else unknown (one unknown target element becomes -1)."""
    v = info.value(node.inputs[0])
    if v is None or v.scalar or v.dtype.kind not in _INT_KINDS:
        return None
    axes = _axes(node) if ("axes" in node.attrs or _input(node, 1) is not None) else [0]
    if axes not in ([0], [-1]) and not (axes == [] and not node.attrs.get("noop_with_empty_axes", 0)):
        return None
    product: Elem = 1
    for e in v.elems:
        product = product * e if isinstance(e, int) and isinstance(product, int) else None
    return ShapeValue((product,), not node.attrs.get("keepdims", 1), v.dtype)


# The ops whose output value is followed, by op type.
VALUE_OPS = {
    "Shape": _v_shape, "Gather": _v_gather, "Slice": _v_slice, "Concat": _v_concat,
    "Unsqueeze": _v_unsqueeze, "Squeeze": _v_squeeze, "Cast": _v_cast, "Identity": _v_identity,
    "Reshape": _v_reshape, "ReduceProd": _v_reduce_prod,
    "Add": _v_arith, "Sub": _v_arith, "Mul": _v_arith, "Div": _v_arith,
}


def reshape_target(data: tuple[Elem, ...] | None, target: tuple[Elem, ...],
                   allowzero: int) -> tuple[list[int], int] | None:
    """A constant equivalent of a partially known Reshape target, and the allowzero it needs."""
    out: list[int | None] = []
    copies = False
    for i, e in enumerate(target):
        if isinstance(e, int):
            out.append(e)
        elif e is not None and data is not None and i < len(data) and data[i] == e:
            out.append(0)  # same as the input's dim i: "copy"
            copies = True
        else:
            out.append(None)
    literal_zero = any(isinstance(e, int) and e == 0 for e in target)
    if copies and allowzero and literal_zero:
        return None  # allowzero=1 keeps literal zeros, copying needs allowzero=0
    unknown = [i for i, e in enumerate(out) if e is None]
    if len(unknown) > 1 or (unknown and -1 in out) or out.count(-1) > 1:
        return None
    filled = [-1 if e is None else e for e in out]  # the one unknown entry, if any, is inferred
    if any(e < -1 for e in filled):
        return None
    return [int(e) for e in filled], 0 if copies else allowzero
