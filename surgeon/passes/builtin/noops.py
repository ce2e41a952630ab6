"""eliminate_noops: remove nodes that provably return their input unchanged."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from surgeon.graph.constants import const_array, const_nbytes
from surgeon.graph.edit import bypass, needs_identity, remove_nodes
from surgeon.graph.shape_values import ShapeInfo
from surgeon.graph.walk import node_domain, walk_graphs
from surgeon.io.model import Model
from surgeon.passes.contract import EQUAL, verified_by
from surgeon.passes.result import PassResult

# An index end at least this large means "to the end" whatever the dim (INT32_MAX and up).
_TO_THE_END = 2**31 - 1


@verified_by(EQUAL)
def eliminate_noops(model: Model) -> PassResult:
    """Remove nodes whose output is provably their input, keeping graph output names.

    Rules:
        1. ``Identity``; ``Dropout`` whose mask is unused and that is not in
           training mode; ``Concat``, ``Sum``, ``Mean``, ``Min``, ``Max`` of one
           input; ``Split`` into one output.
        2. ``Cast`` (and ``CastLike``) to the type the input already has.
        3. ``Reshape`` to the input's own shape and ``Expand`` whose result has
           the input's shape: decided from static dims and symbolic dims
           (``Reshape(x, Shape(x))`` or ``[0, 0, 256]`` on ``[N, C, 256]``),
           using onnx shape inference; dims with the same symbolic name are
           equal, as the model declares.
        4. ``Transpose`` with the identity permutation; ``Pad`` with all pads
           0; ``Tile`` with all repeats 1; ``Slice`` that takes every element
           (start 0, step 1, end past the dim).
        5. ``Add``/``Sub`` of 0, ``Mul``/``Div`` by 1 (a constant whose
           elements are all that value; ``Sub`` and ``Div`` only with the
           constant second), only when broadcasting the constant changes
           neither the shape nor the dtype of the other input. (``x + 0``
           turns ``-0.0`` into ``0.0``, as onnxslim and onnxruntime accept.)
        6. The node's readers read its input instead; when it produced a graph
           output, the input's producer writes that output (its name stays).
           A node whose removal would need an ``Identity`` to keep an output
           name (its input is a graph input or a constant) is left alone.
        7. Works in ``If``/``Loop``/``Scan`` bodies too; repeats until no
           no-op is left.

    Example:
        version: 1
        steps:
          - pass: eliminate_noops
          - pass: cleanup

    Reports:
        the removed nodes (by the runner), and how many of each op
        (``details.removed``).
    """
    result = PassResult()
    removed = eliminate(model, ShapeInfo.of(model), result)
    if removed:
        result.notes.insert(0, "removed no-op(s): " + ", ".join(f"{op} x{n}" for op, n in sorted(removed.items())))
    result.details = {"removed": dict(removed)}
    return result


def eliminate(model: Model, info: ShapeInfo, result: PassResult) -> Counter:
    """Bypass every no-op until none is left; returns how many of each op were removed."""
    removed: Counter = Counter()
    changed = True
    while changed:
        changed = False
        for graph in list(walk_graphs(model.graph)):
            gone: list[gs.Node] = []
            members = {id(n) for n in graph.nodes}
            for node in list(graph.nodes):
                if node_domain(node) != "" or node.op not in _RULES:
                    continue
                keep = noop_input(node, info)
                if keep is None or any(t.outputs or any(t is o for o in graph.outputs) for t in node.outputs[1:]):
                    continue  # not a no-op, or a second output (Dropout's mask) is used
                if needs_identity(node, graph, keep, members):
                    continue
                removed[node.op] += 1
                note = bypass(node, graph, keep, members=members).note
                if note is not None:
                    result.notes.append(note)
                gone.append(node)
            if gone:
                remove_nodes(graph, gone, detach=False)
                changed = True
    return removed


def noop_input(node: gs.Node, info: ShapeInfo) -> int | None:
    """Index of the input that ``node``'s output provably equals, or None."""
    if not node.inputs or node.inputs[0].is_empty() or not node.outputs:
        return None
    return _RULES[node.op](node, info)


# -- rules -------------------------------------------------------------------------------


def _first(node: gs.Node, info: ShapeInfo) -> int | None:
    return 0


def _single_input(node: gs.Node, info: ShapeInfo) -> int | None:
    return 0 if len(node.inputs) == 1 else None


def _split(node: gs.Node, info: ShapeInfo) -> int | None:
    return 0 if len(node.outputs) == 1 else None


def _dropout(node: gs.Node, info: ShapeInfo) -> int | None:
    if node.attrs.get("is_test", 1) == 0:
        return None  # Dropout-1/6 in training mode
    training = node.inputs[2] if len(node.inputs) > 2 and not node.inputs[2].is_empty() else None
    if training is None:
        return 0
    if isinstance(training, gs.Constant) and not bool(const_array(training).any()):
        return 0
    return None


def _cast(node: gs.Node, info: ShapeInfo) -> int | None:
    have = info.dtype(node.inputs[0])
    try:
        want = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(node.attrs["to"]))
    except (KeyError, TypeError, ValueError):
        return None
    return 0 if have is not None and have == want else None


def _cast_like(node: gs.Node, info: ShapeInfo) -> int | None:
    have, want = info.dtype(node.inputs[0]), info.dtype(node.inputs[1])
    return 0 if have is not None and have == want else None


def _reshape(node: gs.Node, info: ShapeInfo) -> int | None:
    x, target = node.inputs[0], info.value(node.inputs[1])
    shape = info.shape(x)
    if target is None or shape is None or len(target.elems) != len(shape):
        return None
    allowzero = node.attrs.get("allowzero", 0)
    open_dims = 0
    for have, want in zip(shape, target.elems):
        if want == have or (want == 0 and not allowzero):
            continue
        if want == -1:
            open_dims += 1  # equals the one dim left over, since every other dim matches
            continue
        return None
    return 0 if open_dims <= 1 else None


def _expand(node: gs.Node, info: ShapeInfo) -> int | None:
    x, target = node.inputs[0], info.value(node.inputs[1])
    shape = info.shape(x)
    if target is None or shape is None or len(target.elems) > len(shape):
        return None
    aligned = shape[len(shape) - len(target.elems):]
    return 0 if all(want == 1 or want == have for have, want in zip(aligned, target.elems)) else None


def _transpose(node: gs.Node, info: ShapeInfo) -> int | None:
    perm = node.attrs.get("perm")
    if perm is None:
        rank = info.rank(node.inputs[0])
        return 0 if rank is not None and rank <= 1 else None
    return 0 if list(perm) == list(range(len(perm))) else None


def _ints_input(node: gs.Node, i: int) -> list[int] | None:
    if i >= len(node.inputs) or node.inputs[i].is_empty() or not isinstance(node.inputs[i], gs.Constant):
        return None
    arr = const_array(node.inputs[i])
    return [int(v) for v in arr.reshape(-1)] if arr.dtype.kind in "iu" else None


def _pad(node: gs.Node, info: ShapeInfo) -> int | None:
    pads = node.attrs.get("pads") if "pads" in node.attrs else _ints_input(node, 1)
    return 0 if pads is not None and not any(pads) else None


def _tile(node: gs.Node, info: ShapeInfo) -> int | None:
    repeats = _ints_input(node, 1)
    return 0 if repeats is not None and all(r == 1 for r in repeats) else None


def _slice(node: gs.Node, info: ShapeInfo) -> int | None:
    if "starts" in node.attrs:
        starts, ends = node.attrs["starts"], node.attrs["ends"]
        axes, steps = node.attrs.get("axes"), None
    else:
        starts, ends = _ints_input(node, 1), _ints_input(node, 2)
        axes, steps = _ints_input(node, 3), _ints_input(node, 4)
        if (len(node.inputs) > 3 and not node.inputs[3].is_empty() and axes is None) or \
                (len(node.inputs) > 4 and not node.inputs[4].is_empty() and steps is None):
            return None
    if starts is None or ends is None:
        return None
    shape = info.shape(node.inputs[0])
    axes = list(range(len(starts))) if axes is None else list(axes)
    steps = [1] * len(starts) if steps is None else list(steps)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        dim = None
        if shape is not None and -len(shape) <= axis < len(shape):
            dim = shape[axis]
        if step != 1:
            return None
        if not (start == 0 or (isinstance(dim, int) and start <= -dim)):
            return None
        if not (end >= _TO_THE_END or (isinstance(dim, int) and end >= dim)):
            return None
    return 0


def _neutral(value: float, constant_at: tuple[int, ...]) -> Callable[[gs.Node, ShapeInfo], int | None]:
    """Rule for a binary op that returns its other input when one input is all ``value``."""

    def rule(node: gs.Node, info: ShapeInfo) -> int | None:
        if len(node.inputs) != 2:
            return None
        for c_at in constant_at:
            c, x = node.inputs[c_at], node.inputs[1 - c_at]
            if not isinstance(c, gs.Constant) or const_nbytes(c) > (1 << 20):
                continue
            arr = const_array(c)
            if arr.dtype.kind not in "biuf" or arr.size == 0 or not np.all(arr == value):
                continue
            if _broadcast_keeps_shape(info.shape(x), arr.shape):
                return 1 - c_at
        return None

    return rule


def _broadcast_keeps_shape(shape: tuple | None, const_shape: tuple[int, ...]) -> bool:
    """Whether broadcasting a constant of ``const_shape`` against ``shape`` leaves ``shape`` as is."""
    if shape is None or len(const_shape) > len(shape):
        return False
    aligned = shape[len(shape) - len(const_shape):]
    return all(c == 1 or c == d for c, d in zip(const_shape, aligned))


_RULES: dict[str, Callable[[gs.Node, ShapeInfo], int | None]] = {
    "Identity": _first,
    "Dropout": _dropout,
    "Concat": _single_input,
    "Sum": _single_input,
    "Mean": _single_input,
    "Min": _single_input,
    "Max": _single_input,
    "Split": _split,
    "Cast": _cast,
    "CastLike": _cast_like,
    "Reshape": _reshape,
    "Expand": _expand,
    "Transpose": _transpose,
    "Pad": _pad,
    "Tile": _tile,
    "Slice": _slice,
    "Add": _neutral(0, (0, 1)),
    "Sub": _neutral(0, (1,)),
    "Mul": _neutral(1, (0, 1)),
    "Div": _neutral(1, (1,)),
}
