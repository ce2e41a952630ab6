"""fuse: merge common node pairs into one node (the fusions onnxsim and onnxslim do)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from surgeon.errors import PassError, suggestion_hint
from surgeon.graph.constants import const_array
from surgeon.graph.edit import bypass, detach, needs_identity, remove_dead, remove_nodes
from surgeon.graph.names import Namer
from surgeon.graph.shape_values import ShapeInfo
from surgeon.graph.walk import node_domain, walk_graphs
from surgeon.io.model import Model
from surgeon.passes.contract import REASSOCIATED, verified_by
from surgeon.passes.result import PassResult


@verified_by(REASSOCIATED)
def fuse(model: Model, *, patterns: list[str] | None = None, allow_missing: bool = False) -> PassResult:
    """Fuse node pairs into one node: BatchNormalization into Conv, MatMul+Add into Gemm, ...

    Parameters:
        patterns: the fusions to apply, by name (default: all): ``conv_bn``,
            ``conv_mul``, ``conv_add``, ``bn_mul``, ``bn_add``, ``matmul_add``,
            ``reshape_chain``, ``transpose_chain``, ``transpose_reshape``
            (``matmul_add_to_gemm`` is accepted for ``matmul_add``).
        allow_missing: when patterns are listed, finding nothing to fuse is
            not an error.

    Rules:
        1. ``conv_bn``: a ``BatchNormalization`` (inference mode, constant
           parameters) after a ``Conv`` with constant weights folds into the
           Conv's weights and bias (computed in float64).
        2. ``conv_mul`` / ``conv_add``: a ``Mul`` / ``Add`` (or ``Sub`` of) a
           constant that is per output channel (or a scalar) after a ``Conv``
           folds into its weights / bias.
        3. ``bn_mul`` / ``bn_add``: the same after a ``BatchNormalization``
           folds into its scale / bias.
        4. ``matmul_add``: ``MatMul(A, B) + C`` becomes ``Gemm(A, B, C)`` when
           ``A`` is 2-D, ``B`` a constant 2-D float matrix and ``C`` a
           constant that broadcasts to the product's shape.
        5. ``reshape_chain``: a ``Reshape`` to a constant shape (without
           ``0`` copies) reads the input of a ``Reshape``/``Flatten``/
           ``Squeeze``/``Unsqueeze`` before it directly.
        6. ``transpose_chain``: two ``Transpose`` in a row become one (or none,
           when the permutations cancel).
        7. ``transpose_reshape``: a ``Transpose`` that moves only size-1
           axes (the other axes keep their order, so it moves no element)
           next to a ``Reshape`` to a constant shape merges into it (as
           onnxslim does): ``Reshape(Transpose(x))`` reads ``x`` directly
           (not when the target has a ``0`` copy, unless ``allowzero``), and
           ``Transpose(Reshape(x, t))`` becomes ``Reshape(x, t permuted)``,
           where a ``0`` copy that changes position becomes ``-1`` (refused
           when the target already has a ``-1``). A dim not known to be 1
           counts as moved data.
        8. The first node of a pair is fused only when nothing else reads its
           output (``reshape_chain``/``transpose_chain``/``transpose_reshape``
           leave it for its other readers); the second node's output tensor,
           and so every graph output name, stays. Fused constants are new
           initializers; the old ones are no longer written once nothing
           reads them.
        9. Works in ``If``/``Loop``/``Scan`` bodies too; repeats until no
           pattern matches.
        10. A step that lists ``patterns`` and fuses nothing is an error (the
           model may have changed under the recipe) unless ``allow_missing``;
           without ``patterns``, finding nothing is just reported.

    Example:
        version: 1
        steps:
          - pass: fuse
            with: {patterns: [conv_bn, conv_mul, conv_add]}
          - pass: cleanup

    Reports:
        the removed and rewired nodes (by the runner), and how many times each
        pattern fired (``details.fused``).
    """
    if patterns is not None and not patterns:
        raise PassError("'patterns' is empty: the step would fuse nothing",
                        hint="list patterns (" + ", ".join(PATTERNS) + ") or leave 'patterns' out for all")
    chosen = list(PATTERNS) if patterns is None else [ALIASES.get(p, p) for p in patterns]
    for name in chosen:
        if name not in PATTERNS:
            raise PassError(f"unknown fusion pattern '{name}'",
                            hint=suggestion_hint(name, PATTERNS) or "known patterns: " + ", ".join(PATTERNS))
    result = PassResult()
    fused = fuse_model(model, ShapeInfo.of(model), chosen, result)
    if fused:
        result.notes.insert(0, "fused: " + ", ".join(f"{p} x{n}" for p, n in fused.items()))
    elif patterns is not None and not allow_missing:
        raise PassError(f"no {', '.join(chosen)} pair found to fuse",
                        hint="the model may not have (or no longer have) these node pairs; "
                             "set allow_missing: true if the step may fuse nothing")
    else:
        result.notes.append("nothing to fuse")
    result.details = {"fused": dict(fused)}
    return result


def fuse_model(model: Model, info: ShapeInfo, patterns: list[str], result: PassResult) -> Counter:
    """Apply ``patterns`` until none matches; returns how often each fired."""
    namer = Namer(model.graph)
    opset = model.opset
    fused: Counter = Counter()
    changed = True
    while changed:
        changed = False
        for name in patterns:
            for graph in list(walk_graphs(model.graph)):
                here = {id(n) for n in graph.nodes}  # ids of the nodes still in the graph
                gone: list[gs.Node] = []  # leave graph.nodes together after the sweep (linear)
                for node in list(graph.nodes):
                    if node_domain(node) != "" or not node.outputs:
                        continue
                    if PATTERNS[name](_Site(graph, here, gone, node, info, namer, result, opset)):
                        fused[name] += 1
                        changed = True
                remove_nodes(graph, gone, detach=False)
    return fused


class _Site:
    """A candidate second node of a pair, with what the patterns need to look at it."""

    def __init__(self, graph: gs.Graph, here: set[int], gone: list[gs.Node], node: gs.Node, info: ShapeInfo,
                 namer: Namer, result: PassResult, opset: int) -> None:
        self.graph, self.here, self.gone, self.node, self.info, self.namer = graph, here, gone, node, info, namer
        self.result, self.opset = result, opset

    def producer(self, i: int, op: str) -> gs.Node | None:
        """The node of ``op`` producing input ``i``, when this node is its output's only reader."""
        if i >= len(self.node.inputs):
            return None
        t = self.node.inputs[i]
        if not isinstance(t, gs.Variable) or len(t.inputs) != 1:
            return None
        p = t.inputs[0]
        if p.op != op or node_domain(p) != "" or len(t.outputs) != 1 or self.is_output(t):
            return None
        if id(p) not in self.here:
            return None  # produced in an outer graph
        return p

    def is_output(self, t: gs.Tensor) -> bool:
        return any(t is o for o in self.graph.outputs)

    def constant(self, name: str, values: np.ndarray) -> gs.Constant:
        return gs.Constant(self.namer.new(name), np.ascontiguousarray(values))

    def absorb(self, first: gs.Node) -> None:
        """``first`` takes over this node's output tensor; this node goes."""
        second = self.node
        out = second.outputs[0]
        second.outputs.clear()
        first.outputs[0] = out
        self.drop(second)

    def drop(self, node: gs.Node) -> None:
        """Detach ``node``; it leaves ``graph.nodes`` with the others at the end of the sweep."""
        detach(node)
        self.here.discard(id(node))
        self.gone.append(node)

    def remove_dead(self, tensor: gs.Tensor) -> None:
        """Drop the producers of ``tensor`` that nothing reads any more."""
        remove_dead(self.graph, [tensor], members=self.here, later=self.gone)


# -- helpers -------------------------------------------------------------------------------


def _float_constant(t: gs.Tensor) -> gs.Constant | None:
    """``t`` if it is a constant of a float dtype; its values are not read (dtype and shape are known
    without them, so a pattern that fails on shapes never loads a weight)."""
    if not isinstance(t, gs.Constant):
        return None
    try:
        dtype = np.dtype(t.dtype)
    except TypeError:
        return None
    return t if dtype.kind == "f" else None


def _float_const(t: gs.Tensor) -> np.ndarray | None:
    c = _float_constant(t)
    return None if c is None else const_array(c)


def _channel_vector(c: np.ndarray, channels: int, rank: int | None) -> np.ndarray | None:
    """``c`` as one value per channel (axis 1 of a rank-``rank`` tensor), if it is that or a scalar."""
    if c.size == 1 and c.ndim <= (rank if rank is not None else 1):
        return np.full(channels, c.reshape(()), dtype=np.float64)
    if rank is None or c.ndim > rank or c.ndim < rank - 1:
        return None
    padded = (1,) * (rank - c.ndim) + c.shape
    if padded[1] != channels or any(d != 1 for i, d in enumerate(padded) if i != 1):
        return None
    return c.reshape(channels).astype(np.float64)


def _conv_parts(conv: gs.Node) -> tuple[np.ndarray, np.ndarray] | None:
    """Weights and bias (zeros when absent) of a Conv with constant float parameters."""
    if len(conv.inputs) < 2:
        return None
    w = _float_const(conv.inputs[1])
    if w is None or w.ndim < 3:
        return None
    if len(conv.inputs) > 2 and not conv.inputs[2].is_empty():
        b = _float_const(conv.inputs[2])
        if b is None or b.dtype != w.dtype:
            return None
    else:
        b = np.zeros(w.shape[0], dtype=w.dtype)
    return w, b


def _set_conv(site: _Site, conv: gs.Node, w: np.ndarray | None, b: np.ndarray, dtype: np.dtype) -> None:
    """New weights (unless ``w`` is None) and bias for ``conv``."""
    base = conv.inputs[1].name
    if w is not None:
        conv.inputs[1] = site.constant(f"{base}_fused", w.astype(dtype))
    bias = site.constant(f"{base}_fused_bias", b.astype(dtype))
    if len(conv.inputs) > 2:
        conv.inputs[2] = bias
    else:
        conv.inputs.append(bias)


def _bn_parts(bn: gs.Node) -> tuple[np.ndarray, ...] | None:
    """scale, bias, mean, var of an inference-mode BatchNormalization with constant parameters."""
    if len(bn.inputs) != 5 or bn.attrs.get("training_mode", 0) or bn.attrs.get("spatial", 1) != 1 \
            or bn.attrs.get("is_test", 1) == 0:
        return None
    if any(t.outputs for t in bn.outputs[1:]):
        return None
    values = [_float_const(t) for t in bn.inputs[1:]]
    parts = [p for p in values if p is not None]
    if len(parts) < len(values) or any(p.ndim != 1 for p in parts) or len({p.shape for p in parts}) != 1:
        return None
    return tuple(parts)


def _binary_constant(node: gs.Node, ops: tuple[str, ...], commutative: bool) -> tuple[int, gs.Constant] | None:
    """(index of the variable input, constant) of ``Op(x, c)`` (or ``Op(c, x)`` if commutative);
    the constant's values are not read here."""
    if node.op not in ops or len(node.inputs) != 2:
        return None
    for c_at in ((1, 0) if commutative else (1,)):
        c = _float_constant(node.inputs[c_at])
        if c is not None and not isinstance(node.inputs[1 - c_at], gs.Constant):
            return 1 - c_at, c
    return None


# -- patterns ------------------------------------------------------------------------------


def _conv_bn(site: _Site) -> bool:
    bn = site.node
    if bn.op != "BatchNormalization":
        return False
    conv = site.producer(0, "Conv")
    parts = None if conv is None else _bn_parts(bn)  # weights are read only for a possible pair
    conv_parts = None if parts is None else _conv_parts(conv)
    if parts is None or conv_parts is None:
        return False
    (w, b), (scale, bias, mean, var) = conv_parts, parts
    if scale.shape[0] != w.shape[0]:
        return False
    s = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + float(bn.attrs.get("epsilon", 1e-5)))
    new_w = w.astype(np.float64) * s.reshape((-1,) + (1,) * (w.ndim - 1))
    new_b = (b.astype(np.float64) - mean) * s + bias
    _set_conv(site, conv, new_w, new_b, w.dtype)
    site.absorb(conv)
    return True


def _affine_operands(site: _Site, kind: str, producer_op: str) -> tuple[gs.Node, Any] | None:
    """For a Mul (kind mul) or Add/Sub (kind add) of a constant after a ``producer_op``
    whose output nothing else reads: that producer and the constant."""
    ops = ("Mul",) if kind == "mul" else ("Add", "Sub")
    found = _binary_constant(site.node, ops, commutative=site.node.op != "Sub")
    if found is None:
        return None
    x_at, c = found
    producer = site.producer(x_at, producer_op)
    # Read only once the structure matched (and a per-channel vector is small).
    return None if producer is None else (producer, const_array(c))


def _conv_affine(kind: str) -> Callable[[_Site], bool]:
    def pattern(site: _Site) -> bool:
        found = _affine_operands(site, kind, "Conv")
        if found is None:
            return False
        conv, c = found
        conv_parts = _conv_parts(conv)
        if conv_parts is None:
            return False
        w, b = conv_parts
        vec = _channel_vector(c, w.shape[0], w.ndim)
        if vec is None or c.dtype != w.dtype:
            return False
        if kind == "mul":
            new_w, new_b = w.astype(np.float64) * vec.reshape((-1,) + (1,) * (w.ndim - 1)), b * vec
        else:
            new_w, new_b = None, b.astype(np.float64) + (vec if site.node.op == "Add" else -vec)
        _set_conv(site, conv, new_w, new_b, w.dtype)
        site.absorb(conv)
        return True

    return pattern


def _bn_affine(kind: str) -> Callable[[_Site], bool]:
    def pattern(site: _Site) -> bool:
        found = _affine_operands(site, kind, "BatchNormalization")
        if found is None:
            return False
        bn, c = found
        parts = _bn_parts(bn)
        if parts is None:
            return False
        scale, bias = parts[0], parts[1]
        vec = _channel_vector(c, scale.shape[0], site.info.rank(bn.inputs[0]))
        if vec is None or c.dtype != scale.dtype:
            return False
        if kind == "mul":
            scale, bias = scale * vec, bias * vec
        else:
            bias = bias + (vec if site.node.op == "Add" else -vec)
        bn.inputs[1] = site.constant(f"{bn.inputs[1].name}_fused", scale.astype(parts[0].dtype))
        bn.inputs[2] = site.constant(f"{bn.inputs[2].name}_fused", bias.astype(parts[1].dtype))
        site.absorb(bn)
        return True

    return pattern


def _matmul_add(site: _Site) -> bool:
    found = _binary_constant(site.node, ("Add",), commutative=True)
    if found is None:
        return False
    x_at, c = found
    mm = site.producer(x_at, "MatMul")
    if mm is None or len(mm.inputs) != 2 or site.opset < 7:  # Gemm broadcasts C since opset 7
        return False
    # Only dtypes and shapes decide: neither the weight nor the bias is read.
    a, b = mm.inputs[0], _float_constant(mm.inputs[1])
    a_shape = site.info.shape(a)
    if b is None:
        return False
    b_dtype, b_shape, c_dtype, c_shape = np.dtype(b.dtype), tuple(b.shape), np.dtype(c.dtype), tuple(c.shape)
    if len(b_shape) != 2 or a_shape is None or len(a_shape) != 2 or c_dtype != b_dtype or len(c_shape) > 2:
        return False
    if site.info.dtype(a) != b_dtype or b_dtype not in (np.float16, np.float32, np.float64):
        return False
    rows, cols = (1,) * (2 - len(c_shape)) + c_shape
    if cols not in (1, b_shape[1]) or rows not in (1, a_shape[0]):
        return False
    mm.op = "Gemm"
    mm.inputs.append(site.node.inputs[1 - x_at])
    site.absorb(mm)
    return True


_RESHAPING = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")


def _reshape_chain(site: _Site) -> bool:
    outer = site.node
    if outer.op != "Reshape" or len(outer.inputs) != 2 or not isinstance(outer.inputs[1], gs.Constant):
        return False
    target = const_array(outer.inputs[1])
    if 0 in target.tolist() and not outer.attrs.get("allowzero", 0):
        return False  # a 0 copies a dim of the middle tensor
    middle = outer.inputs[0]
    if not isinstance(middle, gs.Variable) or len(middle.inputs) != 1:
        return False
    inner = middle.inputs[0]
    if inner.op not in _RESHAPING or node_domain(inner) != "" or not inner.inputs:
        return False
    outer.inputs[0] = inner.inputs[0]
    site.remove_dead(middle)
    return True


def _transpose_chain(site: _Site) -> bool:
    outer = site.node
    if outer.op != "Transpose":
        return False
    middle = outer.inputs[0]
    if not isinstance(middle, gs.Variable) or len(middle.inputs) != 1 or middle.inputs[0].op != "Transpose":
        return False
    inner = middle.inputs[0]
    p1, p2 = _perm(inner, site.info), _perm(outer, site.info)
    if p1 is None or p2 is None or len(p1) != len(p2) or node_domain(inner) != "":
        return False
    perm = [p1[i] for i in p2]
    if perm == list(range(len(perm))):
        outer.inputs[0] = inner.inputs[0]
        if needs_identity(outer, site.graph, 0, site.here):
            outer.inputs[0] = middle
            return False
        note = bypass(outer, site.graph, 0, members=site.here).note
        site.drop(outer)
        if note is not None:
            site.result.notes.append(note)
    else:
        outer.inputs[0] = inner.inputs[0]
        outer.attrs["perm"] = perm
    site.remove_dead(middle)
    return True


def _moves_no_data(perm: list[int], ones: list[bool]) -> bool:
    """Whether ``Transpose(perm)`` of a tensor whose axis ``i`` is known to be 1 when ``ones[i]``
    keeps every element in place (the axes that may be longer than 1 keep their order)."""
    real = [p for p in perm if not ones[p]]
    return sorted(perm) == list(range(len(ones))) and real == sorted(real)


def _transpose_reshape(site: _Site) -> bool:
    node = site.node
    if node.op == "Reshape":
        return _reshape_after_transpose(site)
    if node.op == "Transpose":
        return _transpose_after_reshape(site)
    return False


def _reshape_after_transpose(site: _Site) -> bool:
    """``Reshape(Transpose(x), t)`` -> ``Reshape(x, t)`` when the Transpose moves no element."""
    reshape = site.node
    if len(reshape.inputs) != 2 or not isinstance(reshape.inputs[1], gs.Constant):
        return False
    if 0 in const_array(reshape.inputs[1]).tolist() and not reshape.attrs.get("allowzero", 0):
        return False  # a 0 copies a dim of the transposed tensor
    middle = reshape.inputs[0]
    if not isinstance(middle, gs.Variable) or len(middle.inputs) != 1:
        return False
    transpose = middle.inputs[0]
    if transpose.op != "Transpose" or node_domain(transpose) != "" or not transpose.inputs:
        return False
    dims = site.info.shape(transpose.inputs[0])
    perm = _perm(transpose, site.info)
    if dims is None or perm is None or len(perm) != len(dims) or not _moves_no_data(perm, [d == 1 for d in dims]):
        return False
    reshape.inputs[0] = transpose.inputs[0]
    site.remove_dead(middle)
    return True


def _transpose_after_reshape(site: _Site) -> bool:
    """``Transpose(Reshape(x, t))`` -> ``Reshape(x, t permuted)`` when the Transpose moves no element."""
    transpose = site.node
    middle = transpose.inputs[0] if transpose.inputs else None
    if not isinstance(middle, gs.Variable) or len(middle.inputs) != 1:
        return False
    reshape = middle.inputs[0]
    if reshape.op != "Reshape" or node_domain(reshape) != "" or len(reshape.inputs) != 2 \
            or not isinstance(reshape.inputs[1], gs.Constant):
        return False
    target = [int(v) for v in const_array(reshape.inputs[1]).reshape(-1)]
    allowzero = reshape.attrs.get("allowzero", 0)
    perm = list(transpose.attrs["perm"]) if "perm" in transpose.attrs else list(reversed(range(len(target))))
    if len(perm) != len(target) or not _moves_no_data(perm, [e == 1 for e in target]):
        return False
    new = [target[p] for p in perm]
    moved_copies = [j for j, p in enumerate(perm) if target[p] == 0 and not allowzero and p != j]
    if moved_copies:
        if len(moved_copies) > 1 or -1 in target:
            return False  # only one dim can be left for Reshape to infer
        new[moved_copies[0]] = -1
    transpose.op = "Reshape"
    transpose.attrs = {"allowzero": allowzero} if allowzero else {}
    transpose.inputs.clear()  # gs's synchronized lists take no slice assignment
    transpose.inputs.extend([reshape.inputs[0], site.constant(f"{reshape.inputs[1].name}_transposed",
                                                              np.array(new, dtype=np.int64))])
    site.remove_dead(middle)
    return True


def _perm(node: gs.Node, info: ShapeInfo) -> list[int] | None:
    if "perm" in node.attrs:
        return list(node.attrs["perm"])
    rank = info.rank(node.inputs[0])
    return None if rank is None else list(reversed(range(rank)))


PATTERNS: dict[str, Callable[[_Site], bool]] = {
    "conv_bn": _conv_bn,
    "conv_mul": _conv_affine("mul"),
    "conv_add": _conv_affine("add"),
    "bn_mul": _bn_affine("mul"),
    "bn_add": _bn_affine("add"),
    "matmul_add": _matmul_add,
    "reshape_chain": _reshape_chain,
    "transpose_chain": _transpose_chain,
    "transpose_reshape": _transpose_reshape,
}

# Names other tools and the issue tracker use for the same fusion.
ALIASES = {"matmul_add_to_gemm": "matmul_add"}
