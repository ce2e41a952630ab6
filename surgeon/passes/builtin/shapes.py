"""Shapes and types: set_shapes, set_batch, set_dtype and infer_shapes.

All four end with ONNX's own shape inference (``_shape_infer``), so the
``value_info`` the saved model carries always matches its declared inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnx.numpy_helper
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import dtype_to_onnx

from surgeon.errors import PassError, did_you_mean, suggestion_hint
from surgeon.graph.constants import DTYPES, constant_values, dtype_name
from surgeon.graph.correspondence import Correspondence
from surgeon.graph.edit import remove_nodes, replace_uses
from surgeon.graph.names import Namer, node_label
from surgeon.graph.shapes import (
    Inferred,
    export_for_inference,
    graph_pairs,
    gs_dtype,
    infer,
    reinfer,
    set_dims,
    write_back,
)
from surgeon.graph.walk import all_tensor_names, proto_graphs, walk_graphs, walk_nodes
from surgeon.io.model import Model
from surgeon.passes.contract import EQUAL, Contract, verified_by
from surgeon.passes.result import PassResult

if TYPE_CHECKING:
    from surgeon.passes.runner import StepReport

Dim = int | str | None



# -- infer_shapes -------------------------------------------------------------------


@verified_by(EQUAL)
def infer_shapes(model: Model, *, strict: bool = False) -> PassResult:
    """Run ONNX shape inference and keep its results in the model's value_info.

    Parameters:
        strict: fail when a node's shape cannot be inferred (onnx's strict
            mode) instead of leaving its outputs without a shape.

    Rules:
        1. ``onnx.shape_inference.infer_shapes`` runs with data propagation
           (shapes computed by Shape/Gather/Concat chains are followed) and
           type checking, on the model in memory: external weights stay on
           disk. Models over 2 GiB in memory are out of scope (an error says so).
        2. Intermediate shapes are derived afresh; where inference learns
           nothing (custom ops, data-dependent shapes), what the model had stays.
        3. Declared graph inputs are never changed; graph outputs only get
           what they lack (dtype, a shape when none was declared, and a fixed
           size for a dimension declared by name that inference proves fixed,
           like the legacy exporter's ``Concat_dim_1``).
        4. Tensors inside If/Loop/Scan bodies get their shapes too.
        5. A failure names the node (and the control-flow nodes around it).

    Example:
        version: 1
        steps:
          - pass: infer_shapes
            with: {strict: true}

    Reports:
        how many tensors got a new type or shape, and how many intermediate
        tensors still have no shape.
    """
    inferred = infer(export_for_inference(model, stale=False), strict=strict)
    changed = write_back(model, inferred, stale=False)
    unknown = sum(1 for g in walk_graphs(model.graph) for n in g.nodes for t in n.outputs
                  if isinstance(t, gs.Variable) and t.name and t.shape is None)
    result = PassResult(details={"tensors_updated": changed, "tensors_without_shape": unknown})
    result.notes.append(f"updated the type or shape of {changed} tensor(s)")
    if unknown:
        result.notes.append(f"{unknown} tensor(s) still have no shape (custom ops or data-dependent shapes)")
    return result


# -- set_shapes ---------------------------------------------------------------------


@verified_by(EQUAL)
def set_shapes(model: Model, *, inputs: dict[str, list[Dim]] | None = None,
               outputs: dict[str, list[Dim]] | None = None,
               allow_rank_change: bool = False) -> PassResult:
    """Fix or free the dimensions of graph inputs and outputs, then re-infer shapes.

    Parameters:
        inputs: graph input name -> dimensions: an integer fixes a dimension,
            a name makes it symbolic (``[N, 3, 640, 640]``), null leaves it unknown.
        outputs: graph output name -> dimensions, written the same way.
        allow_rank_change: accept a shape whose rank differs from the declared
            one (for models that declare a wrong rank, e.g. a scalar output).

    Rules:
        1. Every name must be a graph input (under ``inputs``) or output
           (under ``outputs``); an unknown name is an error with suggestions.
        2. A dimension is an integer of at least 1, a non-empty name, or null.
        3. The new shape must have the declared rank, unless
           ``allow_rank_change`` is set or no shape was declared.
        4. Intermediate shapes are then derived afresh by ONNX shape
           inference (stale ones are dropped); graph outputs not listed keep
           their declared shapes.
        5. Shapes equal to the declared ones change nothing (no re-inference).

    Example:
        version: 1
        steps:
          - pass: set_shapes
            with:
              inputs: {input: [1, 3, 32, 32]}
              outputs: {output: [1, 16, 32, 32]}

    Reports:
        each tensor whose shape changed (old -> new) and how many intermediate
        tensors were re-shaped.
    """
    if not inputs and not outputs:
        raise PassError("set_shapes needs at least one tensor under 'inputs' or 'outputs'",
                        hint="e.g. with: {inputs: {images: [1, 3, 640, 640]}}")
    plan: list[tuple[gs.Tensor, list[Dim], str]] = []
    for role, wanted in (("input", inputs or {}), ("output", outputs or {})):
        for name, dims in wanted.items():
            t = _io_tensor(model, name, role)
            _check_dims(dims, f"graph {role} '{name}'")
            if t.shape is not None and len(t.shape) != len(dims) and not allow_rank_change:
                raise PassError(
                    f"cannot set the shape of graph {role} '{name}' to {_fmt(dims)}: it is declared with "
                    f"rank {len(t.shape)} ({_fmt(t.shape)}), the new shape has rank {len(dims)}",
                    hint=f"give exactly {len(t.shape)} dimension(s) (null leaves one unknown), or set "
                         "allow_rank_change: true if the declared shape is wrong",
                )
            if t.shape is None or list(t.shape) != list(dims):
                plan.append((t, list(dims), role))
    result = PassResult(details={"inputs": {}, "outputs": {}})
    if not plan:
        result.notes.append("every shape is already as given")
        return result
    proto = export_for_inference(model, stale=True)
    _set_proto_io_dims(proto, {t.name: dims for t, dims, _ in plan})
    inferred = infer(proto)
    for t, dims, role in plan:
        result.notes.append(f"graph {role} '{t.name}': {_fmt(t.shape)} -> {_fmt(dims)}")
        result.details[role + "s"][t.name] = dims
        t.shape = dims
    result.details["tensors_updated"] = write_back(model, inferred, stale=True,
                                                   keep=tuple(t for t, _, role in plan if role == "output"))
    return result


# -- set_batch ----------------------------------------------------------------------


@verified_by(EQUAL)
def set_batch(model: Model, *, size: int | str, inputs: list[str] | None = None,
              outputs: list[str] | None = None) -> PassResult:
    """Set the batch (leading) dimension of the graph's inputs and outputs, and of what hard-codes it inside.

    Parameters:
        size: the new batch: an integer fixes it, a name (``N``) makes it dynamic.
        inputs: graph inputs whose first dimension is the batch (default: every
            input with at least one dimension).
        outputs: graph outputs whose first dimension is the batch (default:
            every output with at least one dimension).

    Rules:
        1. The first dimension of every chosen input and output becomes ``size``.
           Their old first dimensions must agree: two different fixed values,
           or (when ``inputs``/``outputs`` are not given) a fixed value beside
           dynamic ones (e.g. a state input with 2 in front), are an error;
           list the tensors that carry the batch with ``inputs``/``outputs``.
        2. When the old batch is a fixed number and ``size`` differs, constants
           inside the graph that hard-code it are rewritten: a constant Reshape
           target (or the constant first piece of a Concat that builds it)
           whose first entry is the old batch, where the reshaped tensor
           carries the batch in its first dimension, gets ``0`` there ("copy
           the input's batch"). With ``allowzero: 1`` the attribute is cleared
           when the target has no other zero; otherwise the batch is read at run
           time (Shape + Gather of the reshaped tensor). For an old batch over 1,
           an Expand target's batch entry becomes 1 (broadcast keeps the batch).
        3. Constants that spread a batch-free tensor to the old batch read the
           batch at run time instead, from the first chosen graph input
           (Shape + Gather, concatenated with the other entries): a constant
           Tile ``repeats`` whose first entry is the old batch and whose data
           has first dimension 1 (a learned ``[1, Q, D]`` query tiled to the
           batch), a ConstantOfShape shape, and an Expand target whose data
           has first dimension 1 or a lower rank (ConstantOfShape and Expand
           also when the constant is the first piece of a Concat). Such a
           constant is taken for the batch only when the tensor it makes
           meets the batch of the inputs (in a broadcasting op, a MatMul, a
           Concat along another axis) or reaches a chosen graph output first;
           otherwise it is left as it is.
        4. Which dimension carries the batch is traced by ONNX shape inference
           with the batch as a fresh symbol. A graph that cannot be made
           batch-dynamic safely is an error naming the node: a Reshape whose
           constant target starts with the old batch while the batch sits
           elsewhere in its input (mixed with other dimensions), a Tile that
           repeats an old batch over 1 on data of unknown first dimension, a
           Reshape that folds the batch into a fixed dimension, a batch to be
           read at run time when no graph input carries it, or an output whose
           first dimension stays fixed.
        5. Constants shared with other readers are copied, never changed under them.
        6. Intermediate shapes are then derived afresh by ONNX shape inference.

    Example:
        version: 1
        steps:
          - pass: set_batch
            with: {size: N}

    Reports:
        each rewritten node (old -> new target), the old batch, and the
        inputs/outputs changed.
    """
    _check_dims([size], "size")
    chosen, skipped = _batch_tensors(model, inputs, outputs)
    old = _old_batch(chosen, explicit=inputs is not None or outputs is not None)
    result = PassResult(details={"size": size, "old_batch": old, "rewritten": []})
    if skipped:
        result.notes.append("left alone (no dimensions): " + ", ".join(f"'{t.name}'" for t in skipped))
    todo = [t for t in chosen if t.shape[0] != size]
    if not todo:
        result.notes.append(f"the batch is already {size}")
        return result
    new_dims = {t.name: [size] + list(t.shape[1:]) for t in todo}
    if old is not None and old != size:
        # Constants may hard-code the old batch: plan (and check) their rewrites first.
        rewrites = _plan_rewrites(model, chosen, old)
        names = Namer(model.graph)
        edits = _Edits(model)
        for r in rewrites:
            _apply(edits, r, names)
            result.notes.append(r.describe())
            result.details["rewritten"].append(r.node.name)
        edits.commit()
        for t in todo:
            t.shape = new_dims[t.name]
        result.details["tensors_updated"] = reinfer(model, stale=True)
    else:
        proto = export_for_inference(model, stale=True)
        _set_proto_io_dims(proto, new_dims)
        inferred = infer(proto)
        for t in todo:
            t.shape = new_dims[t.name]
        result.details["tensors_updated"] = write_back(model, inferred, stale=True)
    result.notes.append(f"first dimension set to {size} on " + ", ".join(f"'{t.name}'" for t in todo))
    return result


@dataclass(eq=False)
class _Rewrite:
    """One constant that hard-codes the old batch, and how to change it."""

    node: gs.Node              # the Reshape, Expand, Tile or ConstantOfShape
    graph: gs.Graph            # the graph holding it
    holder: gs.Tensor          # the constant whose first entry is the batch
    values: np.ndarray         # its values
    concat: gs.Node | None     # the Concat it feeds (None: it is the node's target)
    new: np.ndarray | None = None  # its new values: set by _decide for every accepted candidate
    clear_allowzero: bool = False
    spread: bool = False       # it spreads a batch-free tensor to the batch (rule 3)
    source: gs.Tensor | None = None  # read the batch at run time from this tensor's first dimension

    def describe(self) -> str:
        what = f"{self.node.op} '{self.node.name}'"
        if self.source is not None:
            entry = {"Tile": "repeats", "ConstantOfShape": "shape"}.get(self.node.op, "target")
            return f"{what}: {entry} entry {self.values[0]} now read at run time from '{self.source.name}'"
        extra = " (allowzero cleared)" if self.clear_allowzero else ""
        via = f" (piece of Concat '{self.concat.name}')" if self.concat is not None else ""
        return f"{what}: target{via} {self.values.tolist()} -> {self.decided().tolist()}{extra}"

    def decided(self) -> np.ndarray:
        """``new``, which _decide sets before anything reads it."""
        if self.new is None:
            raise AssertionError(f"{self.node.op} '{self.node.name}': rewrite used before _decide")
        return self.new


def _batch_tensors(model: Model, inputs: list[str] | None,
                   outputs: list[str] | None) -> tuple[list[gs.Tensor], list[gs.Tensor]]:
    chosen: list[gs.Tensor] = []
    skipped: list[gs.Tensor] = []
    for role, names, tensors in (("input", inputs, model.graph.inputs), ("output", outputs, model.graph.outputs)):
        if names is None:
            for t in tensors:
                (chosen if t.shape else skipped).append(t)
            continue
        for name in names:
            t = _io_tensor(model, name, role)
            if not t.shape:
                what = "has no declared shape" if t.shape is None else "is a scalar"
                raise PassError(f"graph {role} '{name}' {what}, so it has no batch dimension to set",
                                hint=f"leave it out of '{role}s', or give it a shape first with set_shapes")
            chosen.append(t)
    if not chosen:
        raise PassError("set_batch found no graph input or output with dimensions to carry the batch",
                        hint="declare their shapes first with set_shapes")
    return chosen, skipped


def _old_batch(chosen: list[gs.Tensor], explicit: bool) -> int | None:
    """The old batch when it is a fixed number (None when dynamic or unknown).

    Two different fixed values are an error. When the tensors were not listed
    by the user, a fixed value next to dynamic or unknown ones is an error
    too: a leading 2 beside unknown dims is more likely a state than a batch.
    """
    leading: dict[str, list[str]] = {}
    for t in chosen:
        leading.setdefault(_fmt(t.shape[:1])[1:-1], []).append(f"'{t.name}'")
    fixed = {t.shape[0] for t in chosen if isinstance(t.shape[0], int) and t.shape[0] > 0}
    if len(fixed) > 1 or (fixed and not explicit and len(leading) > 1):
        listed = "; ".join(f"{', '.join(names)} {'has' if len(names) == 1 else 'have'} {dim}"
                           for dim, names in leading.items())
        raise PassError(
            f"the graph inputs/outputs do not agree on a batch: their first dimensions differ ({listed})",
            hint="some of them do not carry the batch first; list the ones that do with "
                 "inputs: [...] and outputs: [...]",
        )
    return next(iter(fixed), None)


def _plan_rewrites(model: Model, chosen: list[gs.Tensor], old: int) -> list[_Rewrite]:
    """The constants to rewrite, checked by shape inference with the batch as a fresh symbol.

    Every candidate is first assumed to be a batch (rewritten); candidates
    whose reshaped tensor turns out not to carry the batch first are put
    back, and inference runs again, until nothing changes.
    """
    batch = _fresh_symbol(model)
    candidates = _split_spread(model, chosen, batch, old, _candidates(model, old))
    carrier = next((t for t in chosen if any(t is i for i in model.graph.inputs)), None)
    spread = {id(c): carrier.name for c in candidates if c.spread and carrier is not None}
    accepted = list(candidates)
    while True:
        inferred = _probe(model, chosen, batch, accepted, spread)
        dims = _dims_lookup(inferred)
        keep = [c for c in accepted if c.spread or _carries_batch_first(dims(c.node.inputs[0].name), batch, c)]
        if len(keep) == len(accepted):
            break
        accepted = keep
    for c in candidates:
        if c in accepted:
            continue
        data = dims(c.node.inputs[0].name)
        if data is None or batch in data or None in data:
            target = (f"a target built by Concat '{c.concat.name}' from the constant {_fmt(c.values.tolist())}"
                      if c.concat is not None else f"the constant target {_fmt(c.values.tolist())}")
            where = [i for i, d in enumerate(data or []) if d == batch]
            if where and where != [0]:  # the batch is traced, and (also) elsewhere than first
                why = (f"but the batch is dimension {', '.join(map(str, where))} of that tensor, not only its first"
                       if where[0] == 0 else
                       f"but the batch is dimension {', '.join(map(str, where))} of that tensor, not its first")
            elif where and c.node.op == "Expand" and data is not None and len(data) != len(c.values):
                why = (f"but Expand aligns shapes from the right, so that entry does not meet the batch "
                       f"(the first dimension of that {len(data)}-D tensor)")
            else:  # unknown or untraced dimensions: no claim about where the batch is
                why = "and shape inference cannot tell whether the first dimension of that tensor is the batch"
            raise PassError(
                f"cannot make the batch dynamic: {c.node.op} '{c.node.name}' gives "
                f"'{c.node.inputs[0].name}' (shape {_fmt(data, batch)}) {target}, whose first entry is the "
                f"old batch {old}, {why}",
                hint=f"this constant cannot be rewritten safely; {_reexport(model)}, or keep the batch fixed",
            )
    for c in accepted:
        if c.spread and carrier is None:
            raise PassError(
                f"cannot make the batch dynamic: {node_label(c.node)} spreads '{c.node.outputs[0].name}' to the old "
                f"batch {old}, which must then be read at run time, but no chosen graph input carries the batch",
                hint="list a graph input whose first dimension is the batch under 'inputs'",
            )
    _check_batch_kept(model, chosen, dims, batch, old)
    for c in accepted:
        _decide(c, carrier)
    return accepted


# Ops whose inputs meet dimension by dimension, aligned from the right (MatMul: its batch dimensions).
_BROADCASTING = {"Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Sum", "Mean", "Where", "PRelu",
                 "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor", "BitShift",
                 "MatMul"}


def _candidates(model: Model, old: int) -> list[_Rewrite]:
    found = []
    for node, graph in walk_nodes(model.graph):
        if node.domain not in (None, "", "ai.onnx") or node.op not in ("Reshape", "Expand", "Tile", "ConstantOfShape"):
            continue
        index = _target_index(node)
        if len(node.inputs) <= index:
            continue
        src = _leading_constant(node.inputs[index])
        # Tile: only plain constant repeats (the probe needs their length).
        if src is not None and int(src[1][0]) == old and not (node.op == "Tile" and src[2] is not None):
            found.append(_Rewrite(node, graph, *src))
    return found


def _target_index(node: gs.Node) -> int:
    return 0 if node.op == "ConstantOfShape" else 1


def _split_spread(model: Model, chosen: list[gs.Tensor], batch: str, old: int,
                  candidates: list[_Rewrite]) -> list[_Rewrite]:
    """Mark the candidates that spread a batch-free tensor to the batch (rule 3); drop the ones that do not.

    One probe gives every Expand, Tile and ConstantOfShape a first dimension of its own (a fresh symbol
    read from an extra probe input), Reshapes copy the batch: a candidate whose symbol meets the batch
    spreads to it. Expands of a tensor that carries the batch stay for the usual check (old batch over 1).
    """
    others = [c for c in candidates if c.node.op != "Reshape"]
    symbols = {id(c): f"{batch}{i}" for i, c in enumerate(others)}
    extra = {f"surgeon_probe_batch_{i}": symbols[id(c)] for i, c in enumerate(others)}
    readers = {id(c): f"surgeon_probe_batch_{i}" for i, c in enumerate(others)}
    inferred = _probe(model, chosen, batch, candidates, readers, extra)
    dims = _dims_lookup(inferred)
    outputs = [t.name for t in chosen if any(t is o for o in model.graph.outputs)]
    kept = []
    for c in candidates:
        if c.node.op == "Reshape":
            kept.append(c)
            continue
        data = None if c.node.op == "ConstantOfShape" else dims(c.node.inputs[0].name)
        size = c.values.size if c.concat is None else (dims(c.node.inputs[_target_index(c.node)].name) or [None])[0]
        if c.node.op == "Expand" and not _spreads(data, size):
            if old > 1:
                kept.append(c)  # carries the batch already (or cannot tell): the usual Expand rule
            continue
        if c.node.op == "Tile" and (not data or data[0] != 1):
            if old > 1 and (not data or data[0] is None):
                raise PassError(
                    f"cannot make the batch dynamic: Tile '{c.node.name}' repeats "
                    f"'{c.node.inputs[0].name}' (shape {_fmt(data, batch)}) {c.values[0]} times along its first "
                    f"dimension, the old batch, but the first dimension of that tensor is unknown",
                    hint=f"give the model's shapes first (infer_shapes), {_reexport(model)}, "
                         "or keep the batch fixed",
                )
            continue  # it repeats the batch itself, or a dimension other than 1
        if _meets_batch(inferred, dims, symbols[id(c)], batch, outputs):
            c.spread = True
            kept.append(c)
    return kept


def _spreads(data: list | None, size: int | None) -> bool:
    """An Expand whose target (of ``size`` entries) has its first entry facing a 1 of the data, or nothing."""
    return data is not None and isinstance(size, int) and (len(data) < size or (len(data) == size and data[0] == 1))


def _meets_batch(inferred: Inferred, dims, symbol: str, batch: str, outputs: list[str]) -> bool:
    """Whether a dimension ``symbol`` meets the batch in some node, or is the first one of a chosen output."""
    if any((dims(name) or [None])[0] == symbol for name in outputs):
        return True
    for g in proto_graphs(inferred.proto.graph):
        for n in g.node:
            shapes = [d for d in (dims(i) for i in n.input if i) if d]
            if n.op_type in _BROADCASTING:
                rank = max((len(d) for d in shapes), default=0)
                columns = [{d[k - rank + len(d)] for d in shapes if k - rank + len(d) >= 0} for k in range(rank)]
            elif n.op_type == "Concat" and shapes and all(len(d) == len(shapes[0]) for d in shapes):
                axis = next((a.i for a in n.attribute if a.name == "axis"), 0) % len(shapes[0])
                columns = [{d[k] for d in shapes} for k in range(len(shapes[0])) if k != axis]
            else:
                continue
            if any(symbol in col and batch in col for col in columns):
                return True
    return False


def _leading_constant(t: gs.Tensor) -> tuple[gs.Tensor, np.ndarray, gs.Node | None] | None:
    """The constant holding the first entry of a shape tensor: the tensor itself, or a Concat's first piece."""
    values = _constant_values(t)
    if values is not None:
        return (t, values, None) if values.ndim == 1 and values.size else None
    producer = t.inputs[0] if isinstance(t, gs.Variable) and len(t.inputs) == 1 else None
    if producer is not None and producer.op == "Concat" and producer.inputs:
        first = producer.inputs[0]
        values = _constant_values(first)
        if values is not None and values.ndim == 1 and values.size:
            return first, values, producer
    return None


def _constant_values(t: gs.Tensor) -> np.ndarray | None:
    """Integer values of an initializer or a Constant node's output (shape tensors are integers);
    None for anything computed."""
    values = constant_values(t)
    return values if values is not None and values.dtype.kind in "iu" else None


def _fresh_symbol(model: Model) -> str:
    used = {d for g in walk_graphs(model.graph) for t in g.tensors().values()
            if t.shape is not None for d in t.shape if isinstance(d, str)}
    name = "<batch>"
    while name in used:
        name = "<" + name + ">"
    return name


def _probe(model: Model, chosen: list[gs.Tensor], batch: str, accepted: list[_Rewrite],
           readers: dict[int, str], extra: dict[str, str] | None = None) -> Inferred:
    """Inference on a copy: inputs start with ``batch``, accepted candidates rewritten to copy it.

    A candidate listed in ``readers`` (by id) takes its first entry from the first dimension of the
    named tensor instead, at run time; ``extra`` adds probe inputs (name -> symbol) to read it from.
    """
    proto = export_for_inference(model, stale=True)
    nodes = {id(n): (p, gp) for g, gp in graph_pairs(model.graph, proto.graph) for n, p in zip(g.nodes, gp.node)}
    io_dims = {}
    for t in chosen:
        lead = batch if any(t is i for i in model.graph.inputs) else None  # outputs: learn what comes out
        io_dims[t.name] = [lead] + list(t.shape[1:])
    _set_proto_io_dims(proto, io_dims)
    for name, symbol in (extra or {}).items():
        proto.graph.input.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [symbol]))
    inserts: dict[int, tuple[onnx.GraphProto, onnx.NodeProto, list[onnx.NodeProto]]] = {}
    for i, c in enumerate(accepted):
        node, gproto = nodes[id(c.node)]
        name = f"surgeon_probe_{i}"
        added: list[onnx.NodeProto] = []
        if id(c) in readers:
            piece = _probe_runtime_batch(gproto, c, node, readers[id(c)], name, added)
        else:
            new = c.values.copy()
            new[0] = 0 if c.node.op == "Reshape" else 1
            gproto.initializer.append(onnx.numpy_helper.from_array(new, name))
            piece = name
        if c.concat is not None:
            # A private copy of the Concat, as _apply makes: other readers keep the original.
            concat = onnx.NodeProto()
            concat.CopyFrom(nodes[id(c.concat)][0])
            concat.input[0] = piece
            concat.output[0] = concat.name = piece = name + "_target"
            added.append(concat)
        node.input[_target_index(c.node)] = piece
        inserts[id(node)] = (gproto, node, added)
        if c.node.op == "Reshape":
            # With allowzero=0, 0 copies the input's dimension: what every rewrite amounts to.
            kept = [a for a in node.attribute if a.name != "allowzero"]
            del node.attribute[:]
            node.attribute.extend(kept)
    # Nodes go in last: rebuilding a node list detaches the node protos held above.
    for gproto in {id(g): g for g, _, _ in inserts.values()}.values():
        before = {id(n): added for g, n, added in inserts.values() if g is gproto}
        ordered = [m for n in gproto.node for m in before.get(id(n), []) + [n]]
        copies = [onnx.NodeProto() for _ in ordered]
        for copy, n in zip(copies, ordered):
            copy.CopyFrom(n)
        del gproto.node[:]
        gproto.node.extend(copies)
    return infer(proto)


def _probe_runtime_batch(gproto: onnx.GraphProto, c: _Rewrite, node: onnx.NodeProto, source: str, name: str,
                         added: list[onnx.NodeProto]) -> str:
    """Probe nodes (into ``added``) for a target piece whose first entry is ``Shape(source)[0]``; its name."""
    make = onnx.helper.make_node
    gproto.initializer.append(onnx.numpy_helper.from_array(np.array([0], dtype=np.int64), name + "_index"))
    added += [make("Shape", [source], [name + "_shape"]),
              make("Gather", [name + "_shape", name + "_index"], [name + "_batch"], axis=0)]
    if c.node.op == "Tile":
        # onnx infers no shape from computed repeats (nor a symbol times a repeat): tile the data's
        # leading 1 once, then this node becomes an Expand of that 1 to the batch.
        once = c.values.copy()
        once[0] = 1
        gproto.initializer.append(onnx.numpy_helper.from_array(once, name + "_once"))
        gproto.initializer.append(onnx.numpy_helper.from_array(np.ones(c.values.size - 1, np.int64), name + "_ones"))
        added += [make("Tile", [node.input[0], name + "_once"], [name + "_tiled"]),
                  make("Concat", [name + "_batch", name + "_ones"], [name], axis=0)]
        node.op_type = "Expand"
        node.input[0] = name + "_tiled"
        return name
    pieces = [name + "_batch"]
    if c.values.size > 1:
        gproto.initializer.append(onnx.numpy_helper.from_array(c.values[1:].copy(), name + "_rest"))
        pieces.append(name + "_rest")
    added.append(make("Concat", pieces, [name + "_piece"], axis=0))
    return name + "_piece"


def _exporter(model: Model) -> str:
    """Which tool exported the model: "pytorch", "paddle", "tensorflow" or "" (producer_name, and
    paddle2onnx's dimension names ``p2o.DynamicDimension.N`` when it left producer_name empty)."""
    producer = (model.producer_name or "").lower()
    if "pytorch" in producer or producer == "torch":
        return "pytorch"
    if "paddle" in producer or any(isinstance(d, str) and d.startswith("p2o.")
                                   for t in (*model.graph.inputs, *model.graph.outputs) for d in t.shape or []):
        return "paddle"
    if "tf2onnx" in producer or "keras2onnx" in producer or "tensorflow" in producer:
        return "tensorflow"
    return ""


def _reexport(model: Model) -> str:
    """How to re-export the model with a dynamic batch, in the words of the tool that made it."""
    how = {
        "pytorch": " (torch.onnx.export(..., dynamic_axes=...) or dynamic_shapes=...)",
        "paddle": " (paddle2onnx from a Paddle model saved with a batch of None in its InputSpec, "
                  "e.g. paddle.static.InputSpec(shape=[None, 3, 48, -1]))",
        "tensorflow": " (tf2onnx with a None batch in the model's input signature, or --inputs name:0[-1,...])",
    }.get(_exporter(model), " from the framework that made it")
    return f"re-export the model with a dynamic batch axis{how}"


def _dims_lookup(inferred: Inferred):
    tensors = inferred.tensors()
    return lambda name: inferred.dims(tensors.get(name))


def _carries_batch_first(data: list | None, batch: str, c: _Rewrite) -> bool:
    if not data or data[0] != batch or batch in data[1:]:
        return False
    # Expand aligns shapes from the right: its first entry meets the data's first dim only at equal rank.
    return c.node.op != "Expand" or len(data) == len(c.values)


def _check_batch_kept(model: Model, chosen: list[gs.Tensor], dims, batch: str, old: int) -> None:
    """After the rewrites, the batch must reach the outputs first, not folded into fixed dimensions."""
    for node, _ in walk_nodes(model.graph):
        if node.op != "Reshape" or len(node.inputs) < 2:
            continue
        data, out = dims(node.inputs[0].name), dims(node.outputs[0].name)
        if data and data[0] == batch and out and isinstance(out[0], int):
            raise PassError(
                f"cannot make the batch dynamic: Reshape '{node.name}' folds the batch of "
                f"'{node.inputs[0].name}' (shape {_fmt(data, batch)}) into a fixed shape "
                f"{_fmt(out, batch)}",
                hint=f"the model mixes samples of the batch there; {_reexport(model)}, or keep the batch fixed",
            )
    for t in chosen:
        if any(t is o for o in model.graph.outputs):
            out = dims(t.name)
            if out and isinstance(out[0], int):
                producer = t.inputs[0] if t.inputs else None
                by = f" (written by {node_label(producer)})" if producer is not None else ""
                raise PassError(
                    f"cannot make the batch dynamic: graph output '{t.name}'{by} keeps the fixed first "
                    f"dimension {out[0]} however large the batch is: something before it hard-codes the batch "
                    f"{old} in a way set_batch does not rewrite (e.g. a Slice or Gather along the batch)",
                    hint=f"{_reexport(model)}, or leave this output out of 'outputs' if its first dimension "
                         "is not the batch",
                )


def _decide(c: _Rewrite, carrier: gs.Tensor | None) -> None:
    """How an accepted candidate is rewritten (see the rules of set_batch)."""
    c.new = c.values.copy()
    if c.spread:
        c.source = carrier
        return
    if c.node.op == "Expand":
        c.new[0] = 1
        return
    c.new[0] = 0
    if int(c.node.attrs.get("allowzero", 0)) == 0:
        return
    if c.concat is None and not np.any(c.values[1:] == 0):
        c.clear_allowzero = True  # no other zero: allowzero makes no difference any more
        return
    if c.concat is not None and not any(n is c.concat for n in c.graph.nodes):
        raise PassError(
            f"cannot make the batch dynamic: Reshape '{c.node.name}' (allowzero=1) takes its target from "
            f"Concat '{c.concat.name}' in an enclosing graph, so its batch entry cannot be read at run time",
            hint="re-export the model with a dynamic batch axis, or keep the batch fixed",
        )
    c.source = c.node.inputs[0]


class _Edits:
    """Node insertions and removals of set_batch's rewrites, applied to each graph's node list at once.

    One rewrite at a time would search and splice ``graph.nodes`` per
    rewrite: quadratic on a model with a Reshape per layer. The maps here are
    built once; :meth:`commit` rebuilds each touched graph's list in one pass.
    """

    def __init__(self, model: Model) -> None:
        self.owner: dict[int, gs.Graph] = {}
        self.outputs: set[int] = set()
        for g in walk_graphs(model.graph):
            self.outputs.update(id(t) for t in g.outputs)
            for n in g.nodes:
                self.owner[id(n)] = g
        self.before: dict[int, list[gs.Node]] = {}
        self.after: dict[int, list[gs.Node]] = {}
        self.removed: set[int] = set()
        self.touched: dict[int, gs.Graph] = {}

    def is_graph_output(self, t: gs.Tensor) -> bool:
        return id(t) in self.outputs

    def insert_before(self, anchor: gs.Node, nodes: list[gs.Node]) -> None:
        self._touch(anchor)
        self.before.setdefault(id(anchor), []).extend(nodes)

    def insert_after(self, anchor: gs.Node, nodes: list[gs.Node]) -> None:
        self._touch(anchor)
        self.after.setdefault(id(anchor), []).extend(nodes)

    def remove(self, node: gs.Node) -> None:
        """Take ``node`` out of its place (it may be inserted elsewhere)."""
        self._touch(node)
        self.removed.add(id(node))

    def graph_of(self, node: gs.Node) -> gs.Graph:
        return self.owner[id(node)]

    def _touch(self, node: gs.Node) -> None:
        graph = self.owner[id(node)]
        self.touched[id(graph)] = graph

    def commit(self) -> None:
        for graph in self.touched.values():
            order: list[gs.Node] = []
            for n in graph.nodes:
                order.extend(self.before.get(id(n), ()))
                if id(n) not in self.removed:
                    order.append(n)
                order.extend(self.after.get(id(n), ()))
            graph.nodes = order


def _apply(edits: _Edits, c: _Rewrite, names: Namer) -> None:
    if c.source is not None:
        _apply_runtime_batch(edits, c, names)
        return
    if c.clear_allowzero:
        c.node.attrs["allowzero"] = 0
    reader = c.concat if c.concat is not None else c.node
    index = 0 if c.concat is not None else 1
    if c.concat is not None and _shared(c.concat.outputs[0], c.node):
        reader = _clone(edits, c.concat, c.node, names)
    readers = c.holder.outputs
    if len(readers) == 1 and readers[0] is reader and not edits.is_graph_output(c.holder):
        _set_constant(c.holder, c.decided())
    else:
        reader.inputs[index] = gs.Constant(names.new(c.holder.name + "_batch"), c.decided().astype(c.values.dtype))


def _apply_runtime_batch(edits: _Edits, c: _Rewrite, names: Namer) -> None:
    """Replace the batch entry by ``Gather(Shape(source), [0])``, computed right before the node."""
    data = c.source
    if data is None:  # _apply calls this only for a rewrite with a source
        raise AssertionError(f"{c.node.op} '{c.node.name}': no tensor to read the batch from")
    shape = gs.Variable(names.new(data.name + "_shape"), dtype=np.int64, shape=[None])
    batch = gs.Variable(names.new(data.name + "_batch"), dtype=np.int64, shape=[1])
    index = gs.Constant(names.new(data.name + "_batch_index"), np.array([0], dtype=np.int64))
    nodes = [gs.Node("Shape", name=shape.name, inputs=[data], outputs=[shape]),
             gs.Node("Gather", name=batch.name, attrs={"axis": 0}, inputs=[shape, index], outputs=[batch])]
    pieces = [batch]
    if c.values.size > 1:
        pieces.append(gs.Constant(names.new(c.holder.name + "_rest"), c.values[1:].copy()))
    if c.concat is not None:
        shared = _shared(c.concat.outputs[0], c.node)
        # A private copy is placed right here; an unshared Concat moves here.
        concat = _clone(edits, c.concat, c.node, names, place=False) if shared else c.concat
        rest = list(concat.inputs[1:])
        concat.inputs.clear()
        concat.inputs.extend(pieces + rest)
        # The data may be computed after the Concat: the (private) Concat goes down to the Reshape.
        if not shared:
            edits.remove(concat)
        nodes.append(concat)
    else:
        target = gs.Variable(names.new(c.holder.name + "_target"), dtype=np.int64, shape=[c.values.size])
        nodes.append(gs.Node("Concat", name=target.name, attrs={"axis": 0}, inputs=pieces, outputs=[target]))
        c.node.inputs[_target_index(c.node)] = target
    edits.insert_before(c.node, nodes)
    _drop_if_dead(edits, c.holder)


def _drop_if_dead(edits: _Edits, t: gs.Tensor) -> None:
    """Remove the Constant node writing ``t`` once nothing reads it any more."""
    if t.outputs or not t.inputs or edits.is_graph_output(t):
        return
    producer = t.inputs[0]
    if id(producer) in edits.owner:
        edits.remove(producer)
        producer.inputs.clear()
        producer.outputs.clear()


def _shared(t: gs.Tensor, node: gs.Node) -> bool:
    return any(n is not node for n in t.outputs)


def _clone(edits: _Edits, concat: gs.Node, reader: gs.Node, names: Namer, *, place: bool = True) -> gs.Node:
    """A private copy of a Concat for ``reader``, so other readers keep the original."""
    out = concat.outputs[0]
    copy_out = gs.Variable(names.new(out.name + "_batch"), dtype=out.dtype, shape=out.shape)
    # A Concat named like its output tensor (as parsers name nodes) gives its copy the copy's tensor name.
    name = copy_out.name if concat.name == out.name else names.new((concat.name or "Concat") + "_batch")
    clone = gs.Node("Concat", name=name,
                    attrs=dict(concat.attrs), inputs=list(concat.inputs), outputs=[copy_out])
    edits.owner[id(clone)] = edits.graph_of(concat)
    if place:  # right after the original; otherwise the caller places it
        edits.insert_after(concat, [clone])
    reader.inputs[next(i for i, t in enumerate(reader.inputs) if t is out)] = copy_out
    return clone


def _set_constant(t: gs.Tensor, values: np.ndarray) -> None:
    old = _constant_values(t)
    if old is None:  # only called on a holder whose integer values set_batch read
        raise AssertionError(f"'{t.name}' is not an integer constant")
    values = values.astype(old.dtype)
    if isinstance(t, gs.Constant):
        t.values = values
        return
    producer = t.inputs[0]
    if isinstance(producer.attrs.get("value"), gs.Constant):
        producer.attrs["value"].values = values
    else:
        producer.attrs["value_ints"] = values.tolist()






# -- set_dtype ----------------------------------------------------------------------


def _set_dtype_contract(plan: Correspondence, report: StepReport, model: Model) -> None:
    for name, dtype in report.details.get("inputs", {}).items():
        dtype = dtype.removeprefix("TensorProto.").lower()
        plan.inputs[name] = plan.feed(name).then(lambda x: x, f"{dtype} cast to the original's dtype")


@verified_by(Contract("the original is fed the new inputs cast to its dtypes; outputs equal at the dtype's "
                      "tolerances", update=_set_dtype_contract))
def set_dtype(model: Model, *, inputs: dict[str, str]) -> PassResult:
    """Change the dtype of graph inputs, casting back to the old dtype inside the graph.

    Parameters:
        inputs: graph input name -> new dtype (float32/float, float16/half,
            bfloat16, float64/double, uint8, int8, uint16, int16, uint32,
            int32, uint64, int64, bool), e.g. ``{images: uint8}``.

    Rules:
        1. The graph input keeps its name and gets the new dtype; a ``Cast``
           to the old dtype is inserted after it and every reader (in
           subgraphs too) reads the Cast's output, so the rest of the graph
           sees what it saw before.
        2. An input that already has the dtype is left alone.
        3. An unknown name or dtype is an error with suggestions; an input
           that is also a graph output cannot change (the output would too).
        4. Shapes are then re-inferred.

    Example:
        version: 1
        steps:
          - pass: set_dtype
            with: {inputs: {images: uint8}}

    Reports:
        each input changed (old -> new dtype) and the Cast nodes added.
    """
    if not inputs:
        raise PassError("set_dtype needs at least one input under 'inputs'",
                        hint="e.g. with: {inputs: {images: uint8}}")
    plan = []
    for name, dtype in inputs.items():
        t = _io_tensor(model, name, "input")
        key = dtype.lower()
        if key not in DTYPES:
            raise PassError(f"unknown dtype '{dtype}' for graph input '{name}'",
                            hint=suggestion_hint(key, DTYPES) or "known dtypes: " + ", ".join(DTYPES))
        if t.dtype is None:
            raise PassError(f"graph input '{name}' has no declared dtype, so there is nothing to cast back to",
                            hint="declare it in the model first")
        if any(t is o for o in model.graph.outputs):
            raise PassError(f"cannot change the dtype of graph input '{name}': it is also a graph output, "
                            "which would change too", hint="add an Identity for the output first")
        if DTYPES[key].onnx == onnx.TensorProto.BFLOAT16 and model.opset < 13:
            raise PassError(f"Cast from bfloat16 needs opset 13 or later; the model has opset {model.opset}",
                            hint="convert the model to a newer opset first")
        old = dtype_to_onnx(t.dtype)
        if old != DTYPES[key].onnx:
            plan.append((t, DTYPES[key].onnx, old))
    result = PassResult(details={"inputs": {}})
    if not plan:
        result.notes.append("every input already has the given dtype")
        return result
    undo = []
    names = Namer(model.graph)
    for t, new, old in plan:
        undo.append(_insert_cast(model, t, new, old, names))
        result.details["inputs"][t.name] = onnx.helper.tensor_dtype_to_string(new)
        result.notes.append(f"graph input '{t.name}': {dtype_name(old)} -> {dtype_name(new)} "
                            f"(Cast back to {dtype_name(old)} added)")
    try:
        result.details["tensors_updated"] = reinfer(model, stale=False)
    except PassError:
        for action in reversed(undo):
            action()
        raise
    return result


def _insert_cast(model: Model, t: gs.Variable, new: int, old: int, names: Namer):
    """Give ``t`` dtype ``new`` and make its readers read ``Cast(t, to=old)``; returns an undo function."""
    old_dtype = t.dtype
    y = gs.Variable(names.new(f"{t.name}_cast"), dtype=old_dtype,
                    shape=None if t.shape is None else list(t.shape))
    rewired = replace_uses(t, y)
    cast = gs.Node("Cast", name=y.name, attrs={"to": old}, inputs=[t], outputs=[y])
    model.graph.nodes.insert(0, cast)
    t.dtype = gs_dtype(new)

    def undo() -> None:
        for reader, i in rewired:
            reader.inputs[i] = t
        remove_nodes(model.graph, [cast])
        t.dtype = old_dtype

    return undo


# -- shared helpers -----------------------------------------------------------------


def _io_tensor(model: Model, name: str, role: str) -> gs.Tensor:
    """The graph input or output ``name``; an error with suggestions when there is none."""
    tensors = model.graph.inputs if role == "input" else model.graph.outputs
    for t in tensors:
        if t.name == name:
            return t
    names = [t.name for t in tensors]
    other_role = "output" if role == "input" else "input"
    other = model.graph.outputs if role == "input" else model.graph.inputs
    if any(t.name == name for t in other):
        hint = f"'{name}' is a graph {other_role}: list it under '{other_role}s'"
    elif name in all_tensor_names(model.graph):
        hint = f"'{name}' is an intermediate tensor; only graph inputs and outputs can be set here"
    else:
        close = did_you_mean(name, names)
        hint = (f"did you mean {', '.join(repr(c) for c in close)}?" if close else
                f"the graph {role}s are: {', '.join(repr(n) for n in names)}")
    raise PassError(f"the model has no graph {role} named '{name}'", hint=hint)


def _check_dims(dims: list[Dim], what: str) -> None:
    for d in dims:
        if isinstance(d, bool) or (isinstance(d, int) and d < 1):
            raise PassError(
                f"invalid dimension {d!r} for {what}: a fixed dimension must be 1 or more",
                hint="write a name such as N for a dynamic dimension, or null to leave it unknown",
            )
        if isinstance(d, str) and not d.strip():
            raise PassError(f"invalid dimension {d!r} for {what}: a symbolic dimension needs a name",
                            hint="write a name such as N, or null to leave the dimension unknown")


def _set_proto_io_dims(proto: onnx.ModelProto, dims: dict[str, list[Dim]]) -> None:
    for vi in list(proto.graph.input) + list(proto.graph.output):
        if vi.name in dims:
            set_dims(vi, dims[vi.name])


def _fmt(dims, batch: str | None = None) -> str:
    """Dimensions as a user writes them: ``[N, 3, ?]`` (? for unknown; the probe symbol shown as 'batch')."""
    if dims is None:
        return "unknown"
    shown = []
    for d in dims:
        if d is None:
            shown.append("?")
        elif d == batch:
            shown.append("batch")
        else:
            shown.append(str(d))
    return "[" + ", ".join(shown) + "]"
