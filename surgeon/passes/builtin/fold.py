"""fold_constants: replace what depends only on constants (shapes included) by its values.

Two engines work in turns until nothing changes:

* **Shape folding** (``fold_shapes``). onnx's own shape inference (with data
  propagation) gives every tensor a shape whose dims are numbers, named
  symbols (``batch``) or unknown. A small evaluator carries *partial values*
  of 1-D integer tensors through ``Shape``/``Gather``/``Slice``/``Concat``/
  ``Unsqueeze``/``Squeeze``/``Cast``/``Identity`` and elementwise integer
  arithmetic: a value whose elements are all numbers becomes a constant, and
  a ``Reshape`` target with symbolic elements becomes a constant of ``0``
  ("copy this input dim") and ``-1`` where that is exact. The
  :class:`ShapeInfo` behind it is shared with ``eliminate_noops`` and ``fuse``.
* **Evaluation** in onnxruntime of every node whose inputs are all
  constants, in one session per graph (the constants are fed as inputs, so
  external weights are read from the model's own folder and no 2 GiB protobuf
  limit applies). When that session fails, each node is evaluated alone to
  name the node that cannot be folded and why.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import onnx
import onnx.defs
import onnx.shape_inference
import onnx_graphsurgeon as gs
import onnxruntime as ort
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter
from onnx_graphsurgeon.ir.tensor import LazyValues, SparseValues

from surgeon.errors import PassError, SurgeonError
from surgeon.graph.names import fresh_name
from surgeon.graph.walk import all_tensor_names, node_domain, subgraphs_of, walk_graphs
from surgeon.io.model import Model
from surgeon.passes.result import PassResult

# A dim or an element of a shape-like value: a number, a named symbol, or unknown.
Elem = int | str | None

_RANDOM_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
               "Multinomial", "Bernoulli"}
_INT_KINDS = "iu"
_FEEDABLE_KINDS = "biufO"
_SMALL_VALUE = 64  # elements: longer integer constants are not tracked as shape values


def fold_constants(model: Model, *, fold_shapes: bool = True, size_threshold: int | None = None,
                   max_iterations: int = 10) -> PassResult:
    """Replace every subgraph that depends only on constants by its values.

    Parameters:
        fold_shapes: also fold values computed from tensor shapes (``Shape``,
            ``Gather``, ``Slice``, ``Concat``... of known dims), using onnx
            shape inference, and make ``Reshape`` targets constant.
        size_threshold: do not create constants larger than this many bytes
            (the nodes producing them stay); null folds everything.
        max_iterations: rounds of shape folding and evaluation at most (each
            round can make more shapes known).

    Rules:
        1. ``Constant`` nodes become initializers; an ``If`` whose condition
           is constant is replaced by the nodes of the branch it takes.
        2. A standard ONNX node whose inputs are all constants is evaluated in
           onnxruntime (optimizations off) and its used outputs become
           constants; whole constant subgraphs are evaluated in one session.
           Nodes inside ``If``/``Loop``/``Scan`` bodies are folded the same way
           (they are loop-invariant when they read only constants); local
           functions are left as they are (``inline_functions`` first).
        3. Never folded, and reported with the reason: random ops, ops of
           other domains, ``Loop``/``Scan`` nodes, inputs whose dtype numpy
           cannot hand to onnxruntime (bfloat16, float8, int4), nodes that
           onnxruntime fails on (with its message), and outputs over
           ``size_threshold``.
        4. Shape folding: a tensor computed from shapes becomes a constant when
           all its elements are known numbers (``Shape`` of a static dim,
           ``Gather``/``Slice`` of the static part of a symbolic shape, through
           ``Concat``, ``Unsqueeze``, ``Squeeze``, ``Reshape``, ``Cast`` and
           integer arithmetic).
        5. A ``Reshape`` whose target is computed from shapes gets a constant
           target: an element equal to the input's dim at the same index
           becomes ``0`` (copy; ``allowzero`` is cleared when the target has
           no literal 0), a single remaining unknown element becomes ``-1``
           (as onnxslim does; like any ``-1`` it cannot be inferred for an
           empty tensor).
        6. Graph output names never change; external weights are read from
           the model's folder whatever the current directory.
        7. Repeats until nothing changes or ``max_iterations`` rounds ran.

    Example:
        version: 1
        steps:
          - pass: fold_constants
            with: {size_threshold: 16777216}
          - pass: cleanup

    Reports:
        ``folded``: nodes replaced by constants; a note per node that could
        not be folded and why (``details.not_folded``), the number of
        ``Reshape`` targets made constant, and the rounds run.
    """
    if max_iterations < 1:
        raise PassError(f"max_iterations must be at least 1, got {max_iterations}")
    if size_threshold is not None and size_threshold < 0:
        raise PassError(f"size_threshold must be 0 or more bytes, got {size_threshold}",
                        hint="set it to null to fold constants of any size")
    stats = fold_model(model, fold_shapes=fold_shapes, size_threshold=size_threshold,
                       max_iterations=max_iterations)
    return stats.result()


# -- results ---------------------------------------------------------------------------


@dataclass
class FoldStats:
    folded: int = 0
    inlined: int = 0
    reshapes: int = 0
    iterations: int = 0
    converged: bool = True
    not_folded: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    """Node key -> (node name, op, reason); the first reason seen in a round wins."""
    shape_problem: str | None = None

    def skip(self, node: gs.Node, reason: str) -> None:
        self.not_folded.setdefault(f"{node.name}\0{id(node)}", (node.name or "<unnamed>", node.op, reason))

    def result(self) -> PassResult:
        r = PassResult(headline=[f"folded {self.folded} node{'' if self.folded == 1 else 's'}"] if self.folded else [])
        if self.inlined:
            r.notes.append(f"inlined {self.inlined} If node(s) with a constant condition")
        if self.reshapes:
            r.notes.append(f"made {self.reshapes} Reshape target(s) constant")
        for name, op, reason in self.not_folded.values():
            r.notes.append(f"could not fold node '{name}' ({op}): {reason}")
        if self.shape_problem:
            r.notes.append(f"shape inference failed, shapes were not folded: {self.shape_problem}")
        if not self.converged:
            r.notes.append(f"stopped after {self.iterations} rounds with more to fold; "
                           "raise max_iterations or run the step again")
        r.details = {
            "folded": self.folded,
            "reshape_targets": self.reshapes,
            "ifs_inlined": self.inlined,
            "iterations": self.iterations,
            "not_folded": [{"node": n, "op": o, "reason": why} for n, o, why in self.not_folded.values()],
        }
        return r


def fold_model(model: Model, *, fold_shapes: bool = True, size_threshold: int | None = None,
               max_iterations: int = 10) -> FoldStats:
    """The work of :func:`fold_constants`, returning statistics (``simplify`` uses it)."""
    stats = FoldStats()
    opset = model.opset
    for round_ in range(max_iterations):
        stats.iterations = round_ + 1
        stats.not_folded.clear()  # reasons of the last round are the ones that hold
        changed = _fold_constant_nodes(model, stats)
        changed |= _inline_constant_ifs(model, stats)
        if fold_shapes:
            info = ShapeInfo(model)
            stats.shape_problem = info.problem
            changed |= _fold_shape_values(model, info, stats)
        for graph in list(walk_graphs(model.graph)):
            changed |= _Evaluator(graph, opset, size_threshold, stats).run()
        if not changed:
            return stats
    stats.converged = False
    return stats


# -- Constant nodes ----------------------------------------------------------------------


def _fold_constant_nodes(model: Model, stats: FoldStats) -> bool:
    changed = False
    for graph in list(walk_graphs(model.graph)):
        done = []
        for node in [n for n in graph.nodes if n.op == "Constant" and node_domain(n) == ""]:
            value = _constant_node_value(node)
            if value is None:
                stats.skip(node, "its value attribute is sparse or missing")
                continue
            out = node.outputs[0]
            node.outputs.clear()
            out.to_constant(value)
            done.append(node)
        remove_nodes(graph, done)
        stats.folded += len(done)
        changed |= bool(done)
    return changed


def _constant_node_value(node: gs.Node) -> Any:
    attrs = node.attrs
    if isinstance(attrs.get("value"), gs.Constant):
        c = attrs["value"]
        return None if isinstance(c._values, SparseValues) else c._values
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            return np.array(attrs[key], dtype=dtype)
    for key in ("value_string", "value_strings"):
        if key in attrs:
            return np.array(attrs[key], dtype=object)
    return None


def const_array(c: gs.Constant) -> np.ndarray:
    """A constant's values without making lazily loaded (external) weights resident."""
    values = c._values
    return values.load() if isinstance(values, LazyValues) else np.asarray(values)


def const_nbytes(c: gs.Constant) -> int:
    values = c._values
    return int(values.nbytes) if isinstance(values, LazyValues) else int(np.asarray(values).nbytes)


# -- If with a constant condition -----------------------------------------------------------


def _inline_constant_ifs(model: Model, stats: FoldStats) -> bool:
    changed = False
    for graph in list(walk_graphs(model.graph)):
        for node in list(graph.nodes):
            if node.op != "If" or node_domain(node) != "" or not isinstance(node.inputs[0], gs.Constant):
                continue
            cond = const_array(node.inputs[0])
            branch = node.attrs.get("then_branch" if cond.size == 1 and cond.reshape(-1)[0] else "else_branch")
            reason = None
            if cond.size != 1:
                reason = f"its condition has {cond.size} elements"
            elif not isinstance(branch, gs.Graph) or len(branch.outputs) != len(node.outputs):
                reason = "its branch does not match its outputs"
            elif _shadows(model, node, branch):
                reason = "its branch defines tensor names that the outer graph uses too"
            if reason is not None:
                stats.skip(node, f"it cannot be inlined: {reason}")
                continue
            _inline(graph, node, branch)
            stats.inlined += 1
            changed = True
    return changed


def _defined(graph: gs.Graph) -> Counter:
    names: Counter = Counter()
    for g in walk_graphs(graph):
        names.update(t.name for t in g.inputs)
        names.update(t.name for n in g.nodes for t in n.outputs if t.name)
    return names


def _shadows(model: Model, node: gs.Node, branch: gs.Graph) -> bool:
    outside = _defined(model.graph)
    for _, sub in subgraphs_of(node):
        outside -= _defined(sub)
    return any(outside[name] for name in _defined(branch))


def _inline(graph: gs.Graph, node: gs.Node, branch: gs.Graph) -> None:
    """Put ``branch``'s nodes in ``node``'s place; the If's output tensors (and names) stay."""
    outs = list(node.outputs)
    node.inputs.clear()
    node.outputs.clear()
    nodes = list(branch.nodes)
    made_here = {id(t) for n in nodes for t in n.outputs}
    taken: set[int] = set()
    for bo, io in zip(list(branch.outputs), outs):
        if id(bo) in made_here and id(bo) not in taken:
            taken.add(id(bo))
            for consumer in list(bo.outputs):
                for i, t in enumerate(consumer.inputs):
                    if t is bo:
                        consumer.inputs[i] = io
            producer = bo.inputs[0]
            producer.outputs[next(i for i, t in enumerate(producer.outputs) if t is bo)] = io
        else:  # an outer tensor, a constant, or an output listed twice
            nodes.append(gs.Node("Identity", name=f"{node.name or 'If'}_{io.name}", inputs=[bo], outputs=[io]))
    branch.nodes, branch.outputs = [], []
    at = next(i for i, n in enumerate(graph.nodes) if n is node)
    graph.nodes[at:at + 1] = nodes


# -- shapes --------------------------------------------------------------------------------


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

    def __init__(self, model: Model, *, infer: bool = True) -> None:
        self.problem: str | None = None
        self._inferred: dict[str, tuple[Elem, ...] | None] = {}
        self._dtypes: dict[str, int] = {}
        self._values: dict[int, ShapeValue] = {}
        if infer:
            self._infer(model)
        for graph in walk_graphs(model.graph):
            self.track_values(graph)

    # inference ---------------------------------------------------------------------

    def _infer(self, model: Model) -> None:
        from surgeon.io.export import to_proto

        try:
            proto = to_proto(model)
            _drop_weight_bytes(proto)
            inferred = onnx.shape_inference.infer_shapes(proto, check_type=False, strict_mode=False,
                                                         data_prop=True)
        except (SurgeonError, onnx.shape_inference.InferenceError, ValueError, RuntimeError) as exc:
            self.problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return
        seen: dict[str, tuple[Elem, ...] | None] = {}
        conflicts: set[str] = set()
        for vi in _all_value_infos(inferred.graph):
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
            if node_domain(node) != "" or len(node.outputs) != 1 or node.op not in _VALUE_OPS:
                continue
            try:
                v = _VALUE_OPS[node.op](self, node)
            except (IndexError, KeyError, TypeError, ValueError, OverflowError):
                v = None  # a malformed node: it simply stays unknown
            if v is not None and len(v.elems) <= _SMALL_VALUE:
                self._values[id(node.outputs[0])] = v


def _elem(d: Any, name: str, axis: int) -> Elem:
    if isinstance(d, (int, np.integer)) and d >= 0:
        return int(d)
    if isinstance(d, str) and d and d != "?":
        return d
    return f"?{name}:{axis}"


def _all_value_infos(g: onnx.GraphProto) -> Iterable[onnx.ValueInfoProto]:
    yield from g.input
    yield from g.output
    yield from g.value_info
    for node in g.node:
        for a in node.attribute:
            if a.HasField("g"):
                yield from _all_value_infos(a.g)
            for sub in a.graphs:
                yield from _all_value_infos(sub)


def _drop_weight_bytes(proto: onnx.ModelProto) -> None:
    """Make big non-integer weights external references: inference needs only their types."""
    from surgeon.io.external import is_external, iter_model_tensors, set_external

    for t in iter_model_tensors(proto):
        if is_external(t) or t.data_type in _INT_TENSOR_TYPES:
            continue
        if len(t.raw_data) >= 1024:
            set_external(t, "surgeon-shape-inference-placeholder", 0, len(t.raw_data))


_INT_TENSOR_TYPES = {onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT16,
                     onnx.TensorProto.INT8, onnx.TensorProto.UINT64, onnx.TensorProto.UINT32,
                     onnx.TensorProto.UINT16, onnx.TensorProto.UINT8}


def _constant_value(c: gs.Constant) -> ShapeValue | None:
    if isinstance(c._values, SparseValues) or len(c.shape) > 1:
        return None
    try:
        dtype = np.dtype(c.dtype)
    except TypeError:
        return None
    if dtype.kind not in _INT_KINDS or (c.shape and c.shape[0] > _SMALL_VALUE):
        return None
    arr = const_array(c)
    return ShapeValue(tuple(int(v) for v in arr.reshape(-1)), arr.ndim == 0, arr.dtype)


def _const_ints(t: gs.Tensor) -> list[int] | None:
    if not isinstance(t, gs.Constant):
        return None
    v = _constant_value(t)
    return None if v is None else list(v.elems)


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
    if "starts" in node.attrs:  # Slice-1: parameters are attributes
        starts, ends = node.attrs["starts"], node.attrs["ends"]
        axes, steps = node.attrs.get("axes", [0]), [1]
    else:
        starts, ends = _const_ints(node.inputs[1]), _const_ints(node.inputs[2])
        axes_t, steps_t = _input(node, 3), _input(node, 4)
        axes = [0] if axes_t is None else _const_ints(axes_t)
        steps = [1] if steps_t is None else _const_ints(steps_t)
    if None in (starts, ends, axes, steps) or len(starts) != 1 or list(axes) not in ([0], [-1]) \
            or steps[0] == 0:
        return None
    return ShapeValue(tuple(list(data.elems)[slice(starts[0], ends[0], steps[0])]), False, data.dtype)


def _v_concat(info: ShapeInfo, node: gs.Node) -> ShapeValue | None:
    parts = [info.value(t) for t in node.inputs]
    if not parts or any(p is None or p.scalar for p in parts) or node.attrs.get("axis", 0) not in (0, -1):
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


_VALUE_OPS = {
    "Shape": _v_shape, "Gather": _v_gather, "Slice": _v_slice, "Concat": _v_concat,
    "Unsqueeze": _v_unsqueeze, "Squeeze": _v_squeeze, "Cast": _v_cast, "Identity": _v_identity,
    "Reshape": _v_reshape,
    "Add": _v_arith, "Sub": _v_arith, "Mul": _v_arith, "Div": _v_arith,
}


def _fold_shape_values(model: Model, info: ShapeInfo, stats: FoldStats) -> bool:
    changed = False
    namer = Namer(model)
    for graph in list(walk_graphs(model.graph)):
        detached: list[gs.Tensor] = []
        done: list[gs.Node] = []
        for node in list(graph.nodes):
            if node_domain(node) != "":
                continue
            out = node.outputs[0] if len(node.outputs) == 1 else None
            if out is not None and node.op in _VALUE_OPS and isinstance(out, gs.Variable):
                v = info.value(out)
                if v is not None and v.known:
                    node.outputs.clear()
                    out.to_constant(v.array())
                    detached.extend(node.inputs)
                    done.append(node)
                    continue
            if node.op == "Reshape":
                old = _make_reshape_static(node, info, namer)
                if old is not None:
                    detached.append(old)
                    stats.reshapes += 1
        remove_nodes(graph, done)
        stats.folded += len(done) + remove_dead(graph, detached)
        changed |= bool(done or detached)
    return changed


def _make_reshape_static(node: gs.Node, info: ShapeInfo, namer: "Namer") -> gs.Tensor | None:
    """Give a Reshape a constant target when rule 5 allows; returns the replaced target tensor."""
    if len(node.inputs) < 2 or isinstance(node.inputs[1], gs.Constant):
        return None
    target = info.value(node.inputs[1])
    if target is None or target.scalar:
        return None
    new = reshape_target(info.shape(node.inputs[0]), target.elems, node.attrs.get("allowzero", 0))
    if new is None:
        return None
    elems, allowzero = new
    old = node.inputs[1]
    node.inputs[1] = gs.Constant(namer.new(f"{old.name}_static"), np.array(elems, dtype=np.int64))
    if allowzero != node.attrs.get("allowzero", 0):
        node.attrs["allowzero"] = allowzero
    return old


class Namer:
    """Fresh tensor names that clash with no name anywhere in the model."""

    def __init__(self, model: Model) -> None:
        self.taken = all_tensor_names(model.graph)

    def new(self, base: str) -> str:
        return fresh_name(base, self.taken)


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
    for i in unknown:
        out[i] = -1
    if any(e is not None and e < -1 for e in out):
        return None
    return [int(e) for e in out], 0 if copies else allowzero


def remove_dead(graph: gs.Graph, tensors: Iterable[gs.Tensor]) -> int:
    """Remove the producers in ``graph`` of ``tensors`` (and theirs) that nothing reads any more."""
    here = {id(n) for n in graph.nodes}
    outputs = {id(t) for t in graph.outputs}
    dead: list[gs.Node] = []
    work = [t for t in tensors if isinstance(t, gs.Variable)]
    while work:
        t = work.pop()
        if t.outputs or id(t) in outputs or not t.inputs or id(t.inputs[0]) not in here:
            continue
        node = t.inputs[0]
        if any(o.outputs or id(o) in outputs for o in node.outputs) or any(True for _ in subgraphs_of(node)):
            continue
        work.extend(node.inputs)
        here.discard(id(node))
        dead.append(node)
        node.inputs.clear()
    remove_nodes(graph, dead)
    return len(dead)


def remove_nodes(graph: gs.Graph, nodes: list[gs.Node]) -> None:
    """Detach ``nodes`` and drop them from ``graph`` (by identity: gs nodes compare by value)."""
    gone = {id(n) for n in nodes}
    for node in nodes:
        node.inputs.clear()
        node.outputs.clear()
    graph.nodes = [n for n in graph.nodes if id(n) not in gone]


# -- evaluation in onnxruntime ---------------------------------------------------------


class _Evaluator:
    """Folds one graph's nodes whose inputs are all constants."""

    def __init__(self, graph: gs.Graph, opset: int, size_threshold: int | None, stats: FoldStats) -> None:
        self.graph = graph
        self.opset = opset
        self.threshold = size_threshold
        self.stats = stats

    def run(self) -> bool:
        batch = self._candidates()
        if not batch:
            return False
        values, batch = self._evaluate(batch, self._frontier(batch))
        kept: set[int] = set()  # batch nodes that stay: their outputs are too big to fold
        while True:
            inside = [n for n in batch if id(n) not in kept]
            wanted = self._frontier(inside)  # kept nodes read from outside, so their inputs count
            missing = [t for t in wanted if id(t) not in values]
            if missing:
                values.update(self._evaluate(batch, missing)[0])
            too_big = [t for t in wanted if self._too_big(values[id(t)])]
            if not too_big:
                break
            for t in too_big:
                kept.add(id(t.inputs[0]))
                self.stats.skip(t.inputs[0], f"its output '{t.name}' would be {_size(values[id(t)].nbytes)}, "
                                             f"over size_threshold ({_size(self.threshold or 0)})")
        if not inside:
            return False
        for t in wanted:
            t.inputs.clear()
            t.to_constant(values[id(t)])
        remove_nodes(self.graph, inside)
        self.stats.folded += len(inside)
        return True

    def _too_big(self, value: np.ndarray) -> bool:
        return self.threshold is not None and value.nbytes > self.threshold

    def _candidates(self) -> list[gs.Node]:
        batch: list[gs.Node] = []
        made: set[int] = set()
        for node in self.graph.nodes:
            inputs = [t for t in node.inputs if not t.is_empty()]
            if not all(isinstance(t, gs.Constant) or id(t) in made for t in inputs):
                continue
            reason = self._reason(node)
            if reason is not None:
                self.stats.skip(node, reason)
                continue
            batch.append(node)
            made.update(id(t) for t in node.outputs)
        return batch

    def _reason(self, node: gs.Node) -> str | None:
        """Why ``node`` cannot be evaluated, or None."""
        domain = node_domain(node)
        if domain != "":
            return f"ops of domain '{domain}' are not evaluated (only standard ONNX ops are folded)"
        if any(True for _ in subgraphs_of(node)):
            return f"{node.op} nodes are not evaluated (their bodies are folded inside)"
        if node.op in _RANDOM_OPS:
            return "it is random: every run gives other values"
        if not onnx.defs.has(node.op):
            return f"'{node.op}' is not a standard ONNX operator"
        for t in node.inputs:
            if isinstance(t, gs.Constant):
                if isinstance(t._values, SparseValues):
                    return f"its input '{t.name}' is a sparse tensor"
                dtype = _np_dtype(t)
                if dtype is None or dtype.kind not in _FEEDABLE_KINDS:
                    return (f"its input '{t.name}' has dtype {t.dtype}, which numpy cannot hand "
                            "to onnxruntime")
        return None

    def _frontier(self, batch: list[gs.Node]) -> list[gs.Tensor]:
        """Outputs of ``batch`` that something outside it reads (or that are graph outputs)."""
        inside = {id(n) for n in batch}
        outputs = {id(t) for t in self.graph.outputs}
        found = []
        for node in batch:
            for t in node.outputs:
                if id(t) in outputs or any(id(c) not in inside for c in t.outputs):
                    found.append(t)
        return found

    def _evaluate(self, batch: list[gs.Node], wanted: list[gs.Tensor]
                  ) -> tuple[dict[int, np.ndarray], list[gs.Node]]:
        """Values of ``wanted``; when one session fails, node by node (dropping failures)."""
        if not wanted:
            return {}, batch
        try:
            return dict(zip((id(t) for t in wanted), _run(batch, wanted, self.opset, {}))), batch
        except Exception:  # onnxruntime raises several types; the node-by-node run names the culprit
            pass
        values: dict[int, np.ndarray] = {}
        ok: list[gs.Node] = []
        for node in batch:
            if not all(isinstance(t, gs.Constant) or id(t) in values for t in node.inputs if not t.is_empty()):
                continue  # depends on a node that failed
            outs = [t for t in node.outputs if not t.is_empty()]
            try:
                results = _run([node], outs, self.opset, values)
            except Exception as exc:
                self.stats.skip(node, "onnxruntime cannot evaluate it: " + _ort_message(exc))
                continue
            values.update(zip((id(t) for t in outs), results))
            ok.append(node)
        return values, ok


def _np_dtype(t: gs.Constant) -> np.dtype | None:
    try:
        return np.dtype(t.dtype)
    except TypeError:
        return None


def _run(nodes: list[gs.Node], wanted: list[gs.Tensor], opset: int,
         known: dict[int, np.ndarray]) -> list[np.ndarray]:
    """Evaluate ``nodes`` in onnxruntime; constants (and ``known`` values) are fed as inputs."""
    names: dict[int, str] = {}

    def name(t: gs.Tensor) -> str:
        return names.setdefault(id(t), f"t{len(names)}")

    feeds: dict[str, np.ndarray] = {}
    inputs = []
    protos = []
    for node in nodes:
        p = OnnxExporter.export_node(node)
        del p.input[:]
        del p.output[:]
        for t in node.inputs:
            if t.is_empty():
                p.input.append("")
                continue
            p.input.append(name(t))
            if (isinstance(t, gs.Constant) or id(t) in known) and name(t) not in feeds:
                arr = known[id(t)] if id(t) in known else const_array(t)
                feeds[name(t)] = arr
                inputs.append(onnx.helper.make_tensor_value_info(
                    name(t), onnx.helper.np_dtype_to_tensor_dtype(arr.dtype)
                    if arr.dtype.kind != "O" else onnx.TensorProto.STRING, arr.shape))
        p.output.extend(name(t) if not t.is_empty() else "" for t in node.outputs)
        protos.append(p)
    outputs = [onnx.helper.make_value_info(name(t), onnx.TypeProto()) for t in wanted]
    graph = onnx.helper.make_graph(protos, "fold", inputs, outputs)
    opsets = [onnx.helper.make_opsetid("", opset)]
    model = onnx.helper.make_model(graph, opset_imports=opsets,
                                   ir_version=max(onnx.helper.find_min_ir_version_for(opsets), 7))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4  # failures are reported by the pass, not printed by onnxruntime
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run([name(t) for t in wanted], feeds)


def _ort_message(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for marker in ("Status Message: ", "] : "):
        if marker in text:
            text = text.split(marker)[-1]
    return text.strip()


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"
