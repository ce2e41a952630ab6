"""Rewriting default-domain (ai.onnx) nodes into their form at an older opset.

``onnx.version_converter`` has adapters for going up but few for going down
(it refuses ``Relu`` from 13 to 12, which only added bfloat16), so
down-conversion is done here, on the gs graph, in two phases:

1. **Plan**: every node whose op's definition differs between the model's
   opset and the target gets a rewrite, or a problem saying why it has no
   form at the target. A version step of an op is either *type-only* (its
   inputs, outputs and attributes are declared alike on both sides: the step
   only added element types; the node's own types are then checked against
   the older schema), or covered by an *adapter* below, or a problem. An op
   that did not exist yet at the target is *decomposed* into older primitives.
2. **Apply**: only when no node has a problem, so a refused conversion leaves
   the graph unchanged. Each rewrite keeps the node's output tensors (their
   names are the model's interface), replacements take the node's place in
   the node list (the graph stays sorted), and constants that fed a moved
   input and are read by nothing else are removed.

Adapters (the op's version step they undo, and what they do):

* axes from an input to the ``axes`` attribute: Squeeze/Unsqueeze (13),
  ReduceSum (13), ReduceMean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare
  (18); ``split`` of Split (13) likewise; Split's ``num_outputs`` (18) becomes
  explicit sizes (the split dimension must be known). The moved values must
  be constant.
* Clip (11) and Pad (11): ``min``/``max`` and ``pads``/``constant_value``
  from inputs to attributes; Pad's ``axes`` input (18) expands into full
  ``pads`` (the rank must be known); Pad's ``wrap`` mode (19) is refused.
* Resize: empty ``roi``/``scales`` inputs (allowed from 13) become empty
  constants; the attributes of 18 (``antialias``, ``axes``,
  ``keep_aspect_ratio_policy``) are dropped at their defaults, refused
  otherwise; ``half_pixel_symmetric`` (19) is refused. Before 11: Resize
  (Upsample before 10) with constant scales (computed from constant sizes
  when the input shape is known), asymmetric coordinates only, nearest
  rounding down (and not shrinking) or linear.
* Softmax/LogSoftmax/Hardmax (13): over the last axis the node keeps its op
  with ``axis`` set explicitly; over another axis (rank known) it is wrapped
  in two Transposes.
* Constant (12): ``value_float(s)``/``value_int(s)``/``value_string(s)`` become
  a ``value`` tensor.
* Shape (15): ``start``/``end`` become a Slice of the whole shape.
* QuantizeLinear/DequantizeLinear (13) with a single scale lose ``axis``.
* Reshape (14) ``allowzero``, BatchNormalization (14) ``training_mode``,
  LSTM/GRU/RNN (14) ``layout``, ArgMax/ArgMin (12) ``select_last_index``,
  Cast (19) ``saturate``, ScatterElements/ScatterND (16, 18) ``reduction``,
  AveragePool (19) ``dilations``, Dropout (12) ``ratio``/``training_mode``
  inputs: dropped when they have the value the older op implies, refused
  otherwise.

Decompositions (op, the opset it first appeared in): LayerNormalization (17)
into ReduceMean/Sub/Mul/Add/Sqrt/Div (computed in float32 when
``stash_type`` asks and the input is narrower), Gelu (20) into Erf or Tanh
arithmetic, Mish (18) into Softplus/Tanh/Mul, HardSwish (14) into
HardSigmoid/Mul, CastLike (15) into Cast, GreaterOrEqual/LessOrEqual (12)
into Or of Greater/Less and Equal.

Version steps at opset 11 and below other than the ones above (e.g. negative
axes, added in 11) are not converted: targets below 11 stop at them.

Element types come from the gs tensors, then are followed back through ops
that keep their input's type (:class:`Facts`); onnx's shape inference runs
only when a node needs a type or shape those do not tell, because it takes
quadratic time on graphs with many If/Loop bodies.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx.defs
import onnx_graphsurgeon as gs

from surgeon.graph.constants import constant_values, elem_type
from surgeon.graph.edit import remove_dead
from surgeon.graph.names import Namer, node_label
from surgeon.graph.walk import node_domain, subgraphs_of

Rewrite = Callable[[], list[gs.Node]]
"""Applies one node's rewrite; returns the nodes that take the node's place (itself included if kept)."""


# -- the schema history ----------------------------------------------------------------


@functools.cache
def since(op: str, opset: int) -> int | None:
    """The version of ``op``'s definition in force at ``opset`` (None: the op does not exist yet)."""
    try:
        return int(onnx.defs.get_schema(op, opset, "").since_version)
    except onnx.defs.SchemaError:
        return None


@functools.cache
def _history(op: str) -> tuple[onnx.defs.OpSchema, ...]:
    return tuple(sorted((s for s in onnx.defs.get_all_schemas_with_history() if s.name == op and s.domain == ""),
                        key=lambda s: s.since_version))


def first_opset(op: str) -> int:
    """The opset in which ``op`` first appeared."""
    return int(_history(op)[0].since_version)


def _signature(s: onnx.defs.OpSchema) -> tuple:
    return (tuple((p.name, p.option) for p in s.inputs), tuple((p.name, p.option) for p in s.outputs),
            tuple(sorted((a.name, a.type, a.required, a.default_value.SerializeToString())
                         for a in s.attributes.values())))


# Steps with an unchanged signature whose meaning changed anyway: never assumed type-only.
_SEMANTIC = {("ScatterElements", 18), ("ScatterND", 18), ("Resize", 19), ("Pad", 19)}


@functools.cache
def _type_only(op: str, step: int) -> bool:
    """Whether ``op``'s version ``step`` only widened its types (same inputs, outputs and attributes).

    Steps at opset 11 and below are never assumed so (opset 11 also started
    to accept negative axes without changing any declaration)."""
    if step <= 11 or (op, step) in _SEMANTIC:
        return False
    hist = _history(op)
    at = [i for i, s in enumerate(hist) if s.since_version == step]
    return bool(at) and at[0] > 0 and _signature(hist[at[0]]) == _signature(hist[at[0] - 1])


def steps_between(op: str, target: int, current: int) -> list[int]:
    """The versions of ``op`` after its form at ``target`` up to its form at ``current``, newest first."""
    low = since(op, target) or 0
    return sorted((int(s.since_version) for s in _history(op) if low < s.since_version <= current), reverse=True)


# -- the context an adapter works in ---------------------------------------------------


# Ops whose first output has the element type of their first input (or of the input given).
_KEEPS_TYPE = frozenset("""
    Abs Acos Acosh Add And Asin Asinh Atan Atanh AveragePool BatchNormalization Ceil Celu Clip Compress Concat Conv
    ConvTranspose Cos Cosh CumSum DepthToSpace Div Dropout Einsum Elu Erf Exp Expand Flatten Floor GRU Gather
    GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool HardSigmoid HardSwish Hardmax
    Identity InstanceNormalization LRN LSTM LayerNormalization LeakyRelu Log LogSoftmax LpNormalization LpPool MatMul
    Max MaxPool Mean Min Mish Mod Mul Neg Pad Pow PRelu RNN Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum
    ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
    ReverseSequence Round ScatterElements ScatterND Selu Shrink Sigmoid Sign Sin Sinh Slice Softmax Softplus Softsign
    SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample
""".split())
_FROM_INPUT = {"Where": 1, "CastLike": 1}
_INT64 = frozenset({"Shape", "Size", "ArgMax", "ArgMin", "NonZero", "NonMaxSuppression"})
_BOOL = frozenset({"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN",
                   "IsInf"})


class Facts:
    """What is known about tensors, cheapest source first: the gs tensor's own dtype and shape; element types
    followed back through ops that keep their input's type (memoized: linear over a graph); then onnx's
    shape inference, run at most once and only when a node needs what the others do not tell (onnx's
    inference takes quadratic time on graphs with many If/Loop bodies)."""

    def __init__(self, infer: Callable[[], dict[str, onnx.TypeProto]]) -> None:
        self._infer = infer
        self._types: dict[str, onnx.TypeProto] | None = None
        self._elems: dict[int, int | None] = {}

    @property
    def types(self) -> dict[str, onnx.TypeProto]:
        if self._types is None:
            self._types = self._infer()
        return self._types

    def _direct(self, t: gs.Tensor) -> tuple[int | None, gs.Tensor | None]:
        """(element type, None) when ``t`` tells it by itself or by its producer, else (None, the tensor
        whose type it has, if any)."""
        if isinstance(t, gs.Constant) or t.dtype is not None:
            e = elem_type(t.dtype)
            if e:
                return e, None
        if len(t.inputs) != 1:
            return None, None
        p = t.inputs[0]
        if node_domain(p) != "":
            return None, None
        if p.op == "Cast" and "to" in p.attrs:
            return int(p.attrs["to"]), None
        if p.op in _INT64:
            return onnx.TensorProto.INT64, None
        if p.op in _BOOL:
            return onnx.TensorProto.BOOL, None
        if p.op == "Constant":
            values = constant_values(t)
            return (None if values is None else elem_type(values.dtype)), None
        if p.op == "If" and isinstance(p.attrs.get("then_branch"), gs.Graph):
            i = next((k for k, o in enumerate(p.outputs) if o is t), 0)
            outs = p.attrs["then_branch"].outputs
            return None, outs[i] if i < len(outs) else None
        if p.op in _FROM_INPUT:
            k = _FROM_INPUT[p.op]
            return None, p.inputs[k] if k < len(p.inputs) else None
        if p.op in _KEEPS_TYPE and p.inputs and t is p.outputs[0]:
            return None, p.inputs[0]
        return None, None

    def _followed(self, t: gs.Tensor) -> int | None:
        path: list[gs.Tensor] = []
        cur: gs.Tensor | None = t
        e: int | None = None
        while cur is not None:
            if id(cur) in self._elems:
                e = self._elems[id(cur)]
                break
            path.append(cur)
            e, cur = self._direct(cur)
            if e is not None:
                break
        for p in path:
            self._elems[id(p)] = e
        return e

    def elem(self, t: gs.Tensor) -> int | None:
        e = self._followed(t)
        if e is not None:
            return e
        tp = self.types.get(t.name)
        if tp is not None and tp.HasField("tensor_type") and tp.tensor_type.elem_type:
            return int(tp.tensor_type.elem_type)
        return None

    def _dims(self, t: gs.Tensor) -> list[int | None] | None:
        if t.shape is not None:
            return [d if isinstance(d, int) and d >= 0 else None for d in t.shape]
        tp = self.types.get(t.name)
        if tp is not None and tp.HasField("tensor_type") and tp.tensor_type.HasField("shape"):
            return [int(d.dim_value) if d.HasField("dim_value") else None for d in tp.tensor_type.shape.dim]
        return None

    def rank(self, t: gs.Tensor) -> int | None:
        dims = self._dims(t)
        return None if dims is None else len(dims)

    def dim(self, t: gs.Tensor, axis: int) -> int | None:
        dims = self._dims(t)
        return dims[axis] if dims is not None and -len(dims) <= axis < len(dims) else None


@dataclass
class Context:
    """What an adapter knows: the target, the graph that holds the node, and what is known of tensors."""

    target: int
    graph: gs.Graph
    names: Namer
    facts: Facts
    dropped: list[gs.Tensor] = field(default_factory=list)
    """Tensors a rewrite stopped reading: their producers go if nothing else reads them."""
    caveats: dict[str, list[gs.Node]] = field(default_factory=dict)
    """What a rewrite keeps only in the usual case -> the nodes concerned (for the pass's notes)."""

    def elem(self, t: gs.Tensor) -> int | None:
        return self.facts.elem(t)

    def rank(self, t: gs.Tensor) -> int | None:
        return self.facts.rank(t)

    def dim(self, t: gs.Tensor, axis: int) -> int | None:
        return self.facts.dim(t, axis)

    # -- building --

    def const(self, base: str, values: Any) -> gs.Constant:
        return gs.Constant(self.names.new(base), np.asarray(values))

    def node(self, built: list[gs.Node], op: str, inputs: list[gs.Tensor], attrs: dict[str, Any] | None = None,
             *, base: str, outputs: list[gs.Tensor] | None = None) -> gs.Tensor:
        """Append a new node to ``built``; returns its (first) output."""
        name = self.names.new(f"{base}/{op}")
        outs = outputs if outputs is not None else [gs.Variable(self.names.new(f"{name}_output"))]
        built.append(gs.Node(op, name=name, attrs=attrs or {}, inputs=inputs, outputs=outs))
        return outs[0]


class Refused(Exception):
    """A node has no form at the target; the message says why (without the node's label)."""


def _present(node: gs.Node, i: int) -> gs.Tensor | None:
    """Input ``i`` of ``node``, or None when it is absent or the empty name of an omitted optional input."""
    if i >= len(node.inputs):
        return None
    t = node.inputs[i]
    return None if isinstance(t, gs.Variable) and not t.name else t


def _const_input(node: gs.Node, i: int, what: str, ctx: Context) -> np.ndarray | None:
    """The constant value of input ``i`` (None when absent); refuses a value computed at run time."""
    t = _present(node, i)
    if t is None:
        return None
    values = constant_values(t)
    if values is None:
        raise Refused(f"its {what} come from '{t.name}', which is computed at run time, and opset {ctx.target} "
                      f"needs them as an attribute (fold_constants may make them constant)")
    return values


def _is_output(t: gs.Tensor, ctx: Context) -> bool:
    return any(t is o for o in ctx.graph.outputs)


def _drop_inputs(node: gs.Node, start: int, ctx: Context) -> None:
    """Remove inputs ``start``... of ``node``; their producers go later if nothing else reads them."""
    while len(node.inputs) > start:
        ctx.dropped.append(node.inputs.pop())


def _keep_default(node: gs.Node, attr: str, default: Any, why: str) -> None:
    """Refuse unless ``attr`` is absent or ``default``; it is removed when applied."""
    if attr in node.attrs and node.attrs[attr] != default:
        raise Refused(f"its attribute {attr}={node.attrs[attr]!r} {why}")


# -- adapters: op -> (version steps covered, planner) -------------------------------------

Planner = Callable[[gs.Node, Context], Rewrite]
ADAPTERS: dict[str, tuple[frozenset[int], Planner]] = {}


def _adapter(ops: tuple[str, ...], steps: tuple[int, ...]) -> Callable[[Planner], Planner]:
    def register(fn: Planner) -> Planner:
        for op in ops:
            ADAPTERS[op] = (frozenset(steps), fn)
        return fn
    return register


def _crossed(node: gs.Node, step: int, ctx: Context) -> bool:
    """Whether converting ``node`` to the target goes below its op's version ``step``."""
    return (since(node.op, ctx.target) or 0) < step


_REDUCE_18 = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
              "ReduceLogSumExp", "ReduceSumSquare")


@_adapter(("Squeeze", "Unsqueeze", "ReduceSum") + _REDUCE_18, (13, 18))
def _axes_to_attribute(node: gs.Node, ctx: Context) -> Rewrite:
    step = 18 if node.op in _REDUCE_18 else 13
    axes = _const_input(node, 1, "axes", ctx)
    if not _crossed(node, step, ctx):  # e.g. ReduceMean 13 -> 11: only the types changed
        return lambda: [node]
    noop = node.attrs.get("noop_with_empty_axes", 0) if node.op.startswith("Reduce") else 0
    if node.op == "Unsqueeze" and axes is None:
        raise Refused("it has no axes")

    def rewrite() -> list[gs.Node]:
        _drop_inputs(node, 1, ctx)
        node.attrs.pop("noop_with_empty_axes", None)
        if axes is not None and axes.size:
            node.attrs["axes"] = [int(a) for a in axes.reshape(-1)]
        elif noop:  # no axes and noop_with_empty_axes: the input passes through
            node.op = "Identity"
            node.attrs.clear()
        return [node]
    return rewrite


@_adapter(("Split",), (13, 18))
def _split(node: gs.Node, ctx: Context) -> Rewrite:
    sizes = _const_input(node, 1, "split sizes", ctx)
    split = None if sizes is None else [int(s) for s in sizes.reshape(-1)]
    if "num_outputs" in node.attrs and _crossed(node, 18, ctx):
        n, axis = int(node.attrs["num_outputs"]), int(node.attrs.get("axis", 0))
        d = ctx.dim(node.inputs[0], axis)
        if d is None:
            raise Refused(f"it splits into num_outputs={n} parts along axis {axis}, whose size is unknown, "
                          f"and opset {ctx.target} needs the sizes (set_shape or fixed input shapes make it known)")
        part = -(-d // n)
        split = [part] * (n - 1) + [d - part * (n - 1)] if d % n else None
    as_attribute = _crossed(node, 13, ctx)
    if not as_attribute and "num_outputs" not in node.attrs:
        return lambda: [node]

    def rewrite() -> list[gs.Node]:
        node.attrs.pop("num_outputs", None)
        _drop_inputs(node, 1, ctx)
        if split is not None:
            if as_attribute:
                node.attrs["split"] = split
            else:
                node.inputs.append(ctx.const(f"{node.name or 'Split'}_split", np.array(split, np.int64)))
        return [node]
    return rewrite


@_adapter(("Clip",), (11, 12, 13))
def _clip(node: gs.Node, ctx: Context) -> Rewrite:
    if not _crossed(node, 11, ctx):
        return lambda: [node]
    low, high = _const_input(node, 1, "min", ctx), _const_input(node, 2, "max", ctx)

    def rewrite() -> list[gs.Node]:
        _drop_inputs(node, 1, ctx)
        if low is not None:
            node.attrs["min"] = float(low)
        if high is not None:
            node.attrs["max"] = float(high)
        return [node]
    return rewrite


@_adapter(("Pad",), (11, 13, 18, 19))
def _pad(node: gs.Node, ctx: Context) -> Rewrite:
    if _crossed(node, 19, ctx) and node.attrs.get("mode") == "wrap":
        raise Refused(f"its mode 'wrap' (opset 19) has no equivalent at opset {ctx.target}")
    pads = _const_input(node, 1, "pads", ctx) if _crossed(node, 11, ctx) else None
    axes = _const_input(node, 3, "axes", ctx) if _crossed(node, 18, ctx) else None
    value = _const_input(node, 2, "constant value", ctx) if _crossed(node, 11, ctx) else None
    full = None
    if axes is not None:
        rank = ctx.rank(node.inputs[0])
        given = pads if pads is not None else _const_input(node, 1, "pads", ctx)
        if rank is None or given is None:
            raise Refused(f"it pads only the axes {axes.tolist()}, and opset {ctx.target} needs the pads of every "
                          f"axis, but the rank of '{node.inputs[0].name}' is unknown")
        full = [0] * (2 * rank)
        for j, a in enumerate(int(a) % rank for a in axes.reshape(-1)):
            full[a], full[a + rank] = int(given[j]), int(given[j + len(axes)])
    to_attributes = _crossed(node, 11, ctx)
    if to_attributes and full is None:
        if pads is None:
            raise Refused("it has no pads")
        full = [int(p) for p in pads.reshape(-1)]

    def rewrite() -> list[gs.Node]:
        if to_attributes:
            _drop_inputs(node, 1, ctx)
            node.attrs["pads"] = full
            if value is not None:
                node.attrs["value"] = float(value)
        elif full is not None:
            _drop_inputs(node, 3, ctx)
            ctx.dropped.append(node.inputs[1])
            node.inputs[1] = ctx.const(f"{node.name or 'Pad'}_pads", np.array(full, np.int64))
        return [node]
    return rewrite


@_adapter(("Resize",), (11, 13, 18, 19))
def _resize(node: gs.Node, ctx: Context) -> Rewrite:
    if _crossed(node, 19, ctx) and node.attrs.get("coordinate_transformation_mode") == "half_pixel_symmetric":
        raise Refused(f"its coordinate_transformation_mode 'half_pixel_symmetric' (opset 19) has no "
                      f"equivalent at opset {ctx.target}")
    if _crossed(node, 18, ctx):
        why = f"(opset 18) has no equivalent at opset {ctx.target}"
        _keep_default(node, "antialias", 0, why)
        _keep_default(node, "keep_aspect_ratio_policy", "stretch", why)
        if "axes" in node.attrs:
            raise Refused(f"it resizes only the axes {list(node.attrs['axes'])}, and opset {ctx.target} needs "
                          "every axis")
    if _crossed(node, 11, ctx):
        return _resize_before_11(node, ctx)
    fill = _crossed(node, 13, ctx)

    def rewrite() -> list[gs.Node]:
        for attr in ("antialias", "keep_aspect_ratio_policy"):
            node.attrs.pop(attr, None)
        if fill:  # before 13, roi and scales must be given (empty when unused)
            for i, base in ((1, "roi"), (2, "scales")):
                if i < len(node.inputs) and _present(node, i) is None:
                    node.inputs[i] = ctx.const(f"{node.name or 'Resize'}_{base}", np.zeros(0, np.float32))
                elif i >= len(node.inputs):
                    node.inputs.append(ctx.const(f"{node.name or 'Resize'}_{base}", np.zeros(0, np.float32)))
        return [node]
    return rewrite


def _resize_before_11(node: gs.Node, ctx: Context) -> Rewrite:
    """Resize before opset 11 (and Upsample, its name before 10) has only scales and the modes nearest and
    linear, with asymmetric coordinates; nearest rounds down when upsampling (onnxruntime)."""
    mode = node.attrs.get("mode", "nearest")
    ctm = node.attrs.get("coordinate_transformation_mode", "half_pixel")
    old = "Resize" if ctx.target >= 10 else "Upsample"
    if mode not in ("nearest", "linear"):
        raise Refused(f"its mode '{mode}' has no equivalent at opset {ctx.target}, where {old} knows only "
                      "'nearest' and 'linear'")
    if ctm != "asymmetric":
        raise Refused(f"its coordinate_transformation_mode '{ctm}' has no equivalent at opset {ctx.target}, where "
                      f"{old} knows only 'asymmetric'")
    if mode == "nearest" and node.attrs.get("nearest_mode", "round_prefer_floor") != "floor":
        raise Refused(f"its nearest_mode '{node.attrs.get('nearest_mode', 'round_prefer_floor')}' has no "
                      f"equivalent at opset {ctx.target}, where {old} rounds down")
    scales = constant_values(node.inputs[2]) if _present(node, 2) is not None else None
    if scales is None or scales.size == 0:
        sizes = _const_input(node, 3, "sizes", ctx)
        x = node.inputs[0]
        dims = [ctx.dim(x, i) for i in range(ctx.rank(x) or 0)]
        if sizes is None or not dims or None in dims or len(dims) != sizes.size:
            raise Refused(f"its scales are not constant and cannot be computed from its sizes (the shape of "
                          f"'{x.name}' is not known), and {old} at opset {ctx.target} needs constant scales")
        scales = np.array([s / d for s, d in zip(sizes.reshape(-1).tolist(), dims)], np.float32)
    if mode == "nearest" and (scales < 1).any():
        raise Refused(f"it shrinks with mode 'nearest', which {old} at opset {ctx.target} rounds differently")
    attrs: dict[str, Any] = {"mode": mode}
    values = np.asarray(scales, np.float32).reshape(-1)

    def rewrite() -> list[gs.Node]:
        _drop_inputs(node, 1, ctx)
        node.op = old
        node.attrs = dict(attrs)
        if ctx.target >= 9:
            node.inputs.append(ctx.const(f"{node.name or old}_scales", values))
        else:
            node.attrs["scales"] = [float(v) for v in values]
        return [node]
    return rewrite


@_adapter(("Softmax", "LogSoftmax", "Hardmax"), (13,))
def _softmax(node: gs.Node, ctx: Context) -> Rewrite:
    axis = int(node.attrs.get("axis", -1))
    x = node.inputs[0]
    rank = ctx.rank(x)
    if axis == -1 or (rank is not None and axis == rank - 1):
        def keep() -> list[gs.Node]:
            node.attrs["axis"] = -1  # before 13 the default is 1, and the op flattens from the axis on
            return [node]
        return keep
    if rank is None:
        raise Refused(f"it works along axis {axis}, which is not known to be the last one (the rank of "
                      f"'{x.name}' is unknown), and before opset 13 {node.op} flattens everything from the axis on")
    perm = list(range(rank))
    perm[axis % rank], perm[-1] = perm[-1], perm[axis % rank]

    def wrap() -> list[gs.Node]:
        built: list[gs.Node] = []
        base = node.name or node.op
        moved = ctx.node(built, "Transpose", [x], {"perm": perm}, base=base)
        y = node.outputs[0]
        node.outputs[0] = gs.Variable(ctx.names.new(f"{base}_last_axis"))
        node.inputs[0] = moved
        node.attrs["axis"] = -1
        built.append(node)
        ctx.node(built, "Transpose", [node.outputs[0]], {"perm": perm}, base=base, outputs=[y])
        return built
    return wrap


@_adapter(("Constant",), (9, 11, 12, 13))  # 9 only added types (checked)
def _constant(node: gs.Node, ctx: Context) -> Rewrite:
    if "sparse_value" in node.attrs:
        raise Refused("it holds a sparse tensor")
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64),
                       ("value_ints", np.int64), ("value_string", object), ("value_strings", object)):
        if key in node.attrs:
            values = np.array(node.attrs[key], dtype=dtype)

            def rewrite(key: str = key, values: np.ndarray = values) -> list[gs.Node]:
                del node.attrs[key]
                node.attrs["value"] = gs.Constant(node.outputs[0].name, values)
                return [node]
            return rewrite
    return lambda: [node]


@_adapter(("Shape",), (15,))
def _shape(node: gs.Node, ctx: Context) -> Rewrite:
    start, end = node.attrs.get("start", 0), node.attrs.get("end")

    def rewrite() -> list[gs.Node]:
        node.attrs.pop("start", None)
        node.attrs.pop("end", None)
        if start == 0 and end is None:
            return [node]
        base = node.name or "Shape"
        y = node.outputs[0]
        node.outputs[0] = gs.Variable(ctx.names.new(f"{base}_whole"))
        big = np.iinfo(np.int64).max
        stop = big if end is None else end
        built = [node]
        if ctx.target < 10:  # Slice took attributes before opset 10
            ctx.node(built, "Slice", [node.outputs[0]], {"starts": [start], "ends": [stop], "axes": [0]},
                     base=base, outputs=[y])
            return built
        ins = [node.outputs[0], ctx.const(f"{base}_start", np.array([start], np.int64)),
               ctx.const(f"{base}_end", np.array([stop], np.int64)),
               ctx.const(f"{base}_axes", np.array([0], np.int64))]
        ctx.node(built, "Slice", ins, base=base, outputs=[y])
        return built
    return rewrite


def _dropping(attr: str, default: Any, step: int) -> Planner:
    """An adapter for an attribute added at ``step`` that the older op behaves as if set to ``default``."""
    def plan(node: gs.Node, ctx: Context) -> Rewrite:
        _keep_default(node, attr, default, f"(added in opset {step}) has no equivalent at opset {ctx.target}")

        def rewrite() -> list[gs.Node]:
            node.attrs.pop(attr, None)
            return [node]
        return rewrite
    return plan


for _op, _attr, _default, _step in (("ArgMax", "select_last_index", 0, 12), ("ArgMin", "select_last_index", 0, 12),
                                    ("LSTM", "layout", 0, 14), ("GRU", "layout", 0, 14), ("RNN", "layout", 0, 14),
                                    ("Cast", "saturate", 1, 19)):
    ADAPTERS[_op] = (frozenset({_step}), _dropping(_attr, _default, _step))


@_adapter(("ScatterElements", "ScatterND"), (16, 18))
def _scatter(node: gs.Node, ctx: Context) -> Rewrite:
    reduction = node.attrs.get("reduction", "none")
    known = ("none",) if _crossed(node, 16, ctx) else ("none", "add", "mul")
    if reduction not in known:
        raise Refused(f"its reduction '{reduction}' has no equivalent at opset {ctx.target}")

    def rewrite() -> list[gs.Node]:
        if _crossed(node, 16, ctx):
            node.attrs.pop("reduction", None)
        return [node]
    return rewrite


_ALLOWZERO = ("Reshape node(s) with allowzero=1 read a shape computed at run time; they behave the same unless "
              "that shape holds a 0 (an empty tensor)")


@_adapter(("QuantizeLinear", "DequantizeLinear"), (13,))
def _quantize(node: gs.Node, ctx: Context) -> Rewrite:
    scale = node.inputs[1]
    values = constant_values(scale)
    single = values.size == 1 if values is not None else ctx.rank(scale) == 0
    if not single:
        what = f"holds {values.size} values" if values is not None else "is not known to be a single value"
        raise Refused(f"its scale '{scale.name}' {what}, and quantization per axis came in opset 13")

    def rewrite() -> list[gs.Node]:
        node.attrs.pop("axis", None)
        return [node]
    return rewrite


@_adapter(("Reshape",), (14,))
def _reshape(node: gs.Node, ctx: Context) -> Rewrite:
    if node.attrs.get("allowzero", 0):
        shape = constant_values(node.inputs[1])
        if shape is not None and (shape == 0).any():
            raise Refused(f"it has allowzero=1 (opset 14) and its shape {shape.tolist()} contains 0, which before "
                          "opset 14 copies the input's dimension instead of making it empty")
        if shape is None:  # exporters (torch.onnx dynamo) set allowzero=1 on every Reshape
            ctx.caveats.setdefault(_ALLOWZERO, []).append(node)

    def rewrite() -> list[gs.Node]:
        node.attrs.pop("allowzero", None)
        return [node]
    return rewrite


@_adapter(("BatchNormalization",), (14, 15))
def _batchnorm(node: gs.Node, ctx: Context) -> Rewrite:
    _keep_default(node, "training_mode", 0, f"(opset 14) has no equivalent at opset {ctx.target}")
    if any(t.outputs or _is_output(t, ctx) for t in node.outputs[1:]):
        raise Refused("its running mean and variance outputs are used, which before opset 14 have other meanings")

    def rewrite() -> list[gs.Node]:
        node.attrs.pop("training_mode", None)
        while len(node.outputs) > 1:
            node.outputs.pop()
        return [node]
    return rewrite


@_adapter(("AveragePool",), (19,))
def _average_pool(node: gs.Node, ctx: Context) -> Rewrite:
    if any(d != 1 for d in node.attrs.get("dilations", [])):
        raise Refused(f"its dilations {list(node.attrs['dilations'])} (opset 19) have no equivalent at opset "
                      f"{ctx.target}")

    def rewrite() -> list[gs.Node]:
        node.attrs.pop("dilations", None)
        return [node]
    return rewrite


@_adapter(("Dropout",), (12, 13))
def _dropout(node: gs.Node, ctx: Context) -> Rewrite:
    if not _crossed(node, 12, ctx):
        return lambda: [node]
    ratio = _const_input(node, 1, "ratio", ctx)
    training = _const_input(node, 2, "training_mode", ctx)
    if training is not None and bool(training):
        raise Refused("it runs in training mode, which before opset 12 is not an input")

    def rewrite() -> list[gs.Node]:
        _drop_inputs(node, 1, ctx)
        if ratio is not None:
            node.attrs["ratio"] = float(ratio)
        return [node]
    return rewrite


# -- decompositions: op -> planner that builds older primitives in the node's place ------

DECOMPOSE: dict[str, Planner] = {}


def _decompose(op: str) -> Callable[[Planner], Planner]:
    def register(fn: Planner) -> Planner:
        DECOMPOSE[op] = fn
        return fn
    return register


def _float_dtype(t: gs.Tensor, ctx: Context) -> np.dtype:
    e = ctx.elem(t)
    if e not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
        raise Refused(f"the element type of its input '{t.name}' is "
                      f"{'unknown' if e is None else onnx.TensorProto.DataType.Name(e).lower()}, and the "
                      "decomposition needs float32, float16 or float64 (infer_shapes may make it known)")
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(e))


def _reduce_mean(built: list[gs.Node], x: gs.Tensor, axes: list[int], ctx: Context, base: str) -> gs.Tensor:
    if ctx.target >= 18:
        return ctx.node(built, "ReduceMean", [x, ctx.const(f"{base}/axes", np.array(axes, np.int64))],
                        {"keepdims": 1}, base=base)
    return ctx.node(built, "ReduceMean", [x], {"axes": axes, "keepdims": 1}, base=base)


@_decompose("LayerNormalization")
def _layer_norm(node: gs.Node, ctx: Context) -> Rewrite:
    x, scale = node.inputs[0], node.inputs[1]
    bias = _present(node, 2)
    dtype = _float_dtype(x, ctx)
    axis = int(node.attrs.get("axis", -1))
    if any(t.outputs or _is_output(t, ctx) for t in node.outputs[1:]):
        raise Refused("its Mean or InvStdDev output is used (only the normalized output is decomposed)")
    if ctx.target < 11:  # no negative axes before 11: flatten at a positive axis, reduce axis 1
        rank = ctx.rank(x)
        if rank is None:
            raise Refused(f"the rank of '{x.name}' is unknown, and before opset 11 the axes of the decomposition "
                          "must be given as positive numbers")
        axis = axis % rank
    eps = float(node.attrs.get("epsilon", 1e-5))
    stash = int(node.attrs.get("stash_type", 1)) == 1 and dtype != np.float32 and dtype != np.float64
    work = np.dtype(np.float32) if stash else dtype

    def rewrite() -> list[gs.Node]:
        built: list[gs.Node] = []
        base = node.name or "LayerNormalization"
        y = node.outputs[0]
        h = ctx.node(built, "Cast", [x], {"to": onnx.TensorProto.FLOAT}, base=base) if stash else x
        if axis != -1:  # normalize over everything from the axis on: flatten to 2-D, reshape back after
            h = ctx.node(built, "Flatten", [h], {"axis": axis}, base=base)
        last = [-1] if axis == -1 else [1]
        mean = _reduce_mean(built, h, last, ctx, base)
        d = ctx.node(built, "Sub", [h, mean], base=base)
        var = _reduce_mean(built, ctx.node(built, "Mul", [d, d], base=base), last, ctx, base)
        std = ctx.node(built, "Sqrt", [ctx.node(built, "Add", [var, ctx.const(f"{base}/epsilon",
                                                                              np.array(eps, work))], base=base)],
                       base=base)
        n = ctx.node(built, "Div", [d, std], base=base)
        if axis != -1:
            n = ctx.node(built, "Reshape", [n, ctx.node(built, "Shape", [x], base=base)], base=base)
        if stash:
            n = ctx.node(built, "Cast", [n], {"to": elem_type(dtype)}, base=base)
        n = ctx.node(built, "Mul", [n, scale], base=base, outputs=[y] if bias is None else None)
        if bias is not None:
            ctx.node(built, "Add", [n, bias], base=base, outputs=[y])
        node.inputs.clear()
        node.outputs.clear()
        return built
    return rewrite


@_decompose("Gelu")
def _gelu(node: gs.Node, ctx: Context) -> Rewrite:
    x = node.inputs[0]
    dtype = _float_dtype(x, ctx)
    tanh = node.attrs.get("approximate", "none") == "tanh"
    if not tanh and ctx.target < 9:
        raise Refused(f"its decomposition needs Erf, which opset {ctx.target} does not have (since opset 9)")

    def rewrite() -> list[gs.Node]:
        built: list[gs.Node] = []
        base = node.name or "Gelu"
        y = node.outputs[0]

        def c(name: str, v: float) -> gs.Constant:
            return ctx.const(f"{base}/{name}", np.array(v, dtype))
        if tanh:  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            cube = ctx.node(built, "Mul", [ctx.node(built, "Mul", [x, x], base=base), x], base=base)
            inner = ctx.node(built, "Add", [x, ctx.node(built, "Mul", [cube, c("k", 0.044715)], base=base)],
                             base=base)
            g = ctx.node(built, "Tanh", [ctx.node(built, "Mul", [inner, c("sqrt_2_over_pi",
                                                                         math.sqrt(2 / math.pi))], base=base)],
                         base=base)
        else:  # 0.5 x (1 + erf(x / sqrt(2)))
            g = ctx.node(built, "Erf", [ctx.node(built, "Mul", [x, c("inv_sqrt2", 1 / math.sqrt(2))], base=base)],
                         base=base)
        one = ctx.node(built, "Add", [g, c("one", 1.0)], base=base)
        half = ctx.node(built, "Mul", [x, c("half", 0.5)], base=base)
        ctx.node(built, "Mul", [half, one], base=base, outputs=[y])
        node.inputs.clear()
        node.outputs.clear()
        return built
    return rewrite


@_decompose("Mish")
def _mish(node: gs.Node, ctx: Context) -> Rewrite:
    x = node.inputs[0]

    def rewrite() -> list[gs.Node]:  # x * tanh(softplus(x))
        built: list[gs.Node] = []
        base, y = node.name or "Mish", node.outputs[0]
        t = ctx.node(built, "Tanh", [ctx.node(built, "Softplus", [x], base=base)], base=base)
        ctx.node(built, "Mul", [x, t], base=base, outputs=[y])
        node.inputs.clear()
        node.outputs.clear()
        return built
    return rewrite


@_decompose("HardSwish")
def _hard_swish(node: gs.Node, ctx: Context) -> Rewrite:
    x = node.inputs[0]

    def rewrite() -> list[gs.Node]:  # x * HardSigmoid(x) with alpha 1/6, beta 0.5
        built: list[gs.Node] = []
        base, y = node.name or "HardSwish", node.outputs[0]
        s = ctx.node(built, "HardSigmoid", [x], {"alpha": 1 / 6, "beta": 0.5}, base=base)
        ctx.node(built, "Mul", [x, s], base=base, outputs=[y])
        node.inputs.clear()
        node.outputs.clear()
        return built
    return rewrite


@_decompose("CastLike")
def _cast_like(node: gs.Node, ctx: Context) -> Rewrite:
    to = ctx.elem(node.inputs[1])
    if to is None:
        raise Refused(f"the element type of '{node.inputs[1].name}', which it casts to, is unknown "
                      "(infer_shapes may make it known)")

    def rewrite() -> list[gs.Node]:
        ctx.dropped.append(node.inputs[1])
        node.inputs.pop()
        node.op = "Cast"
        node.attrs = {"to": to}
        return [node]
    return rewrite


def _or_equal(strict: str) -> Planner:
    def plan(node: gs.Node, ctx: Context) -> Rewrite:
        a, b = node.inputs[0], node.inputs[1]
        if ctx.target < 11 and ctx.elem(a) not in (onnx.TensorProto.INT32, onnx.TensorProto.INT64):
            raise Refused(f"its decomposition needs Equal, which takes only int32 and int64 (and bool) at opset "
                          f"{ctx.target}")

        def rewrite() -> list[gs.Node]:
            built: list[gs.Node] = []
            base, y = node.name or node.op, node.outputs[0]
            s = ctx.node(built, strict, [a, b], base=base)
            e = ctx.node(built, "Equal", [a, b], base=base)
            ctx.node(built, "Or", [s, e], base=base, outputs=[y])
            node.inputs.clear()
            node.outputs.clear()
            return built
        return rewrite
    return plan


DECOMPOSE["Resize"] = _resize  # before 10: Upsample
DECOMPOSE["GreaterOrEqual"] = _or_equal("Greater")
DECOMPOSE["LessOrEqual"] = _or_equal("Less")


# -- checking types against the older schema ----------------------------------------------


def _type_string(t: gs.Tensor, ctx: Context) -> str | None:
    e = ctx.elem(t)
    if e is not None:
        return f"tensor({onnx.TensorProto.DataType.Name(e).lower()})"
    tp = ctx.facts.types.get(t.name)
    if tp is not None and tp.HasField("sequence_type"):
        inner = tp.sequence_type.elem_type
        if inner.HasField("tensor_type") and inner.tensor_type.elem_type:
            return f"seq(tensor({onnx.TensorProto.DataType.Name(inner.tensor_type.elem_type).lower()}))"
    return None


@functools.cache
def _typing(op: str, opset: int) -> tuple[onnx.defs.OpSchema, dict[str, list[str]]]:
    """``op``'s schema at ``opset`` and its type constraints (type parameter -> allowed types)."""
    schema = onnx.defs.get_schema(op, opset, "")
    return schema, {c.type_param_str: list(c.allowed_type_strs) for c in schema.type_constraints}


def _type_problem(node: gs.Node, ctx: Context) -> str | None:
    """Why ``node``'s element types are not accepted by its op at the target, or None."""
    schema, allowed = _typing(node.op, ctx.target)
    variadic = onnx.defs.OpSchema.FormalParameterOption.Variadic
    for role, formals, tensors in (("input", schema.inputs, node.inputs), ("output", schema.outputs, node.outputs)):
        for i, t in enumerate(tensors):
            if not formals or (i >= len(formals) and formals[-1].option != variadic):
                continue
            p = formals[min(i, len(formals) - 1)]
            if isinstance(t, gs.Variable) and not t.name:
                continue
            kinds = allowed.get(p.type_str, [p.type_str])
            got = _type_string(t, ctx)
            if got is not None and got not in kinds:
                shown = ", ".join(k.replace("tensor(", "").rstrip(")") for k in kinds)
                return (f"its {role} '{t.name}' is {got[7:-1] if got.startswith('tensor(') else got}, and {node.op} "
                        f"at opset {ctx.target} takes only {shown}")
    return None


# -- planning and applying ------------------------------------------------------------------


@dataclass
class Problem:
    """A node that has no form at the target, and why."""

    node: gs.Node
    where: str
    target: int
    reason: str

    def __str__(self) -> str:
        label = node_label(self.node)
        if not self.node.name and self.node.outputs:  # say what an unnamed node is by what it writes
            label += f" writing '{self.node.outputs[0].name}'"
        return f"{label}{self.where} has no form at opset {self.target}: {self.reason}"


@dataclass
class Plan:
    """The rewrites of one conversion, graph by graph, or the problems that stop it."""

    rewrites: list[tuple[gs.Graph, Context, dict[int, Rewrite]]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    caveats: dict[str, list[gs.Node]] = field(default_factory=dict)


def _graphs(graph: gs.Graph, where: str = "") -> Iterator[tuple[gs.Graph, str]]:
    yield graph, where
    for node in graph.nodes:
        for attr, sub in subgraphs_of(node):
            yield from _graphs(sub, f" in the {attr} of {node_label(node)}{where}")


def plan_downgrade(graph: gs.Graph, current: int, target: int, infer: Callable[[], dict[str, onnx.TypeProto]],
                   names: Namer) -> Plan:
    """Plan converting the default-domain nodes of ``graph`` (subgraphs included) from ``current`` down to
    ``target``; nothing changes until :func:`apply_downgrade`."""
    plan = Plan()
    facts = Facts(infer)
    for g, where in _graphs(graph):
        ctx = Context(target, g, names, facts, caveats=plan.caveats)
        here: dict[int, Rewrite] = {}
        for node in g.nodes:
            if node_domain(node) != "" or not onnx.defs.has(node.op):
                continue  # other domains and plugin ops pass through
            now, then = since(node.op, current), since(node.op, target)
            if now == then:
                continue
            try:
                if then is None:
                    if node.op not in DECOMPOSE:
                        raise Refused(f"{node.op} first appeared in opset {first_opset(node.op)}, and surgeon has no "
                                      "decomposition of it into older ops")
                    here[id(node)] = DECOMPOSE[node.op](node, ctx)
                    continue
                covered, adapter = ADAPTERS.get(node.op, (frozenset(), None))
                for step in steps_between(node.op, target, current):
                    if step not in covered and not _type_only(node.op, step):
                        raise Refused(f"{node.op} changed in opset {step}, and surgeon has no adapter that takes "
                                      f"it back to its opset-{then} form")
                problem = _type_problem(node, ctx)
                if problem is not None:
                    raise Refused(problem)
                if adapter is not None and covered & set(steps_between(node.op, target, current)):
                    here[id(node)] = adapter(node, ctx)
            except Refused as exc:
                plan.problems.append(Problem(node, where, target, str(exc)))
        plan.rewrites.append((g, ctx, here))
    return plan


def apply_downgrade(plan: Plan) -> None:
    """Apply a plan without problems: every rewrite in its node's place, then drop dead constants."""
    for g, ctx, here in plan.rewrites:
        if not here:
            continue
        nodes: list[gs.Node] = []
        for node in list(g.nodes):
            rewrite = here.get(id(node))
            nodes.extend([node] if rewrite is None else rewrite())
        g.nodes = nodes
        if ctx.dropped:
            remove_dead(g, ctx.dropped)
