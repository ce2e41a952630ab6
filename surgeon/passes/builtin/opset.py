"""convert_opset: move the model to another version of the default ONNX opset.

Up, the conversion is onnx's own (``onnx.version_converter``, whose upward
adapters cover the ops); down, it is surgeon's own (``surgeon.graph.downgrade``:
adapters and decompositions on the gs graph), because onnx's converter has
almost no downward adapters (it refuses ``Relu`` from 13 to 12). Around both:
checks with readable errors before anything changes, custom-domain and plugin
ops passed through, the IR version raised to what the target opset needs, and
what the converter drops (node and graph metadata, local functions,
value_info) kept.
"""

from __future__ import annotations

from typing import Annotated

import onnx
import onnx.defs
import onnx.helper
import onnx.version_converter

from surgeon.errors import PassError
from surgeon.graph.downgrade import apply_downgrade, plan_downgrade
from surgeon.graph.names import Namer, listed, node_label, qualified_op
from surgeon.graph.ops import DEFAULT_DOMAINS, default_opset, is_plugin_op
from surgeon.graph.shapes import infer_value_infos
from surgeon.graph.walk import node_domain, proto_graphs, walk_graphs
from surgeon.io.adopt import adopt_rewrite, converter_failed_op, converter_message
from surgeon.io.export import to_proto
from surgeon.io.model import Model
from surgeon.passes.contract import REASSOCIATED, verified_by
from surgeon.passes.result import PassResult
from surgeon.passes.spec import Min

# Plugin ops (TensorRT's EfficientNMS_TRT...) sit in the default domain without
# an ONNX schema; the converter asserts on them, so they cross it in this domain.
_PASSTHROUGH_DOMAIN = "surgeon.passthrough"
_TARGET_HINT = f"choose a target between 1 and {onnx.defs.onnx_opset_version()}"


@verified_by(REASSOCIATED)
def convert_opset(model: Model, *, target: Annotated[int, Min(1, hint=_TARGET_HINT)]) -> PassResult:
    """Convert the model to another version of the default (ai.onnx) opset, up or down.

    Parameters:
        target: the opset version to convert to (e.g. 17, or 11 for older runtimes).

    Rules:
        1. Up: ``onnx.version_converter``, node by node, in ``If``/``Loop``/``Scan``
           bodies too; nodes it leaves alone keep their names, metadata and doc
           strings. A node it cannot convert is an error naming the op and nodes.
        2. Down: surgeon's own conversion, in ``If``/``Loop``/``Scan`` bodies too.
           A node whose op is defined alike at both opsets is left alone. A
           version step that only added element types is checked against the
           node's own types. Other steps have adapters:
           axes from an input to an attribute for Squeeze/Unsqueeze and ReduceSum
           (13) and the other Reduce* ops (18); Split's ``split`` input (13) and
           ``num_outputs`` (18, the split dimension must be known); Clip's
           ``min``/``max`` and Pad's ``pads``/``constant_value`` inputs to
           attributes (11), Pad's ``axes`` input (18); Resize's empty ``roi`` and
           ``scales`` (13) and its attributes of 18 at their defaults; before
           11, Resize (and Upsample before 10) with constant scales, for the
           asymmetric nearest (rounding down) and linear modes;
           Softmax/LogSoftmax/Hardmax (13) with ``axis`` set explicitly, or
           between two Transposes when the axis is not the last; Constant's
           ``value_float(s)``/``value_int(s)``/``value_string(s)`` (12); Shape's
           ``start``/``end`` (15) as a Slice; Reshape ``allowzero`` (14),
           BatchNormalization ``training_mode`` (14), LSTM/GRU/RNN ``layout``
           (14), ArgMax/ArgMin ``select_last_index`` (12), Cast ``saturate``
           (19), ScatterElements/ScatterND ``reduction`` (16, 18), AveragePool
           ``dilations`` (19), Dropout's ``ratio``/``training_mode`` inputs (12)
           at the value the older op implies; QuantizeLinear/DequantizeLinear
           (13) with a single scale.
        3. Down, ops that did not exist yet at the target are decomposed:
           LayerNormalization (17; in float32 when ``stash_type`` asks),
           Gelu (20, exact and tanh), Mish (18), HardSwish (14), CastLike
           (15), GreaterOrEqual/LessOrEqual (12). The replacements keep the
           node's output names.
        4. Down, everything is planned before anything changes: a node without
           a form at the target (a value that must become an attribute but is
           computed at run time, a mode the older op lacks, an op without a
           decomposition, a version step at opset 11 or below that no adapter
           covers, an element type the older op does not take) is an error
           naming the node, its op and why; an unnamed node is named by the
           tensor it writes and the subgraph it is in.
        5. Down, a Reshape with ``allowzero=1`` whose shape is computed at run
           time (torch's dynamo exporter writes that on every Reshape) is kept
           as a plain Reshape, with a note: the two differ only when that
           shape holds a 0.
        6. A local function that uses an op defined differently at its own
           opset and the target is an error (neither converter touches
           function bodies): inline the functions first.
        7. Only the default domain is converted: nodes of other domains
           (``devtech::FooOp``, ``com.microsoft``, ``ai.onnx.ml``) and plugin
           ops without an ONNX schema pass through unchanged, and their opset
           imports stay.
        8. The IR version is raised to the lowest one the target opset
           allows when it is below it (``onnx.helper.VERSION_TABLE``); it is
           never lowered.
        9. Converting to the opset the model already has changes nothing.

    Example:
        version: 1
        steps:
          - pass: convert_opset
            with: {target: 17}

    Reports:
        nodes replaced, added and rewired (by the runner); the old and new opset
        and IR versions; a note per kind of assumption a downgrade made, with
        the nodes concerned.
    """
    key = "" if "" in model.opset_imports else "ai.onnx"
    current = model.opset_imports.get(key)
    if current is None:
        raise PassError("the model declares no default (ai.onnx) opset, so there is nothing to convert",
                        hint="add an opset import for the default domain to the model first")
    newest = onnx.defs.onnx_opset_version()
    if target > newest:  # the signature declares 1 or more; the newest depends on the onnx installed
        raise PassError(f"there is no opset {target}: onnx {onnx.__version__} knows opsets 1 to {newest}",
                        hint=f"choose a target between 1 and {newest}")
    result = PassResult()
    if target == current:
        result.notes.append(f"the model is already at opset {target}: nothing to convert")
        return result
    _check_functions(model, target)
    caveats = _downgrade(model, current, target) if target < current else []
    if target > current:
        _upgrade(model, current, target)

    model.opset_imports[key] = target
    old_ir = model.ir_version
    ids = [onnx.helper.make_opsetid(d, v) for d, v in model.opset_imports.items()]
    needed = onnx.helper.find_min_ir_version_for(ids, ignore_unknown=True)
    if old_ir < needed:
        model.ir_version = needed
        result.notes.append(f"raised the IR version from {old_ir} to {needed} (opset {target} needs it)")
    result.notes.insert(0, f"converted from opset {current} to {target}")
    result.headline.append(f"opset {current} -> {target}")  # the summary says it, not just "changed"
    result.notes.extend(caveats)
    result.details = {"opset": [current, target], "ir_version": [old_ir, model.ir_version]}
    result.changed = True  # the opset import: the runner does not see it
    return result


def _upgrade(model: Model, current: int, target: int) -> None:
    """Up: onnx.version_converter, whose upward adapters cover the ops; its result is merged back."""
    before = to_proto(model)
    masked, added = _mask_plugins(before)
    try:
        after = onnx.version_converter.convert_version(masked, target)
    except Exception as exc:  # the converter asserts (RuntimeError) or fails in shape inference
        raise _conversion_error(model, str(exc), current, target) from exc
    _unmask_plugins(after, added)
    adopt_rewrite(model, before, after, functions=False)


def _downgrade(model: Model, current: int, target: int) -> list[str]:
    """Down: surgeon's own adapters and decompositions (surgeon.graph.downgrade), planned for every node
    before any changes."""
    def infer() -> dict[str, onnx.TypeProto]:  # types and ranks some nodes need; without them they refuse
        return {name: vi.type for name, vi in infer_value_infos(model)[0].items()}
    plan = plan_downgrade(model.graph, current, target, infer, Namer(model.graph))
    if plan.problems:
        shown = "; ".join(str(p) for p in plan.problems[:_SHOWN])
        more = len(plan.problems) - _SHOWN
        raise PassError(
            f"cannot convert from opset {current} to {target}: {shown}"
            + (f"; and {more} more node(s)" if more > 0 else ""),
            hint="choose a later target opset, or edit those nodes first (surgeon explain convert_opset "
                 "lists the conversions it knows)",
        )
    apply_downgrade(plan)
    return [f"{len(nodes)} {what} ({_listed(nodes, 3)})" for what, nodes in plan.caveats.items()]


_SHOWN = 5


def _listed(nodes: list, limit: int = 5) -> str:
    return listed((node_label(n) for n in nodes), limit)


def _default_nodes(model: Model):
    """Default-domain nodes of the graph and its subgraphs that have an ONNX schema."""
    for g in walk_graphs(model.graph):
        for n in g.nodes:
            if node_domain(n) == "" and onnx.defs.has(n.op):
                yield n


def _check_functions(model: Model, target: int) -> None:
    """A local function keeps its own opset; it must stay compatible with the target (checker rule)."""
    for func in model.graph.functions:
        version = default_opset(func.import_domains or [])
        if version is None or version == target:
            continue
        for n in func.nodes:
            if node_domain(n) != "" or not onnx.defs.has(n.op):
                continue
            try:
                mine = onnx.defs.get_schema(n.op, version, "").since_version
                theirs = onnx.defs.get_schema(n.op, target, "").since_version
            except onnx.defs.SchemaError:
                mine, theirs = None, -1
            if mine != theirs:
                name = qualified_op(func.domain, func.name)
                raise PassError(
                    f"cannot convert to opset {target}: local function '{name}' imports opset {version} "
                    f"and uses {n.op}, which is defined differently in opset {target}; "
                    "onnx.version_converter does not convert function bodies",
                    hint="inline the functions first (pass: inline_functions), then convert",
                )


def _mask_plugins(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, set[str]]:
    """A copy of ``proto`` that the converter accepts, and the opset imports added for it.

    Schemaless default-domain nodes move to a pass-through domain; custom
    domains that nodes use without an opset import (models in the wild do
    this) get a temporary one, since the converter's shape inference
    insists on it.
    """
    masked = onnx.ModelProto()
    masked.CopyFrom(proto)
    declared = {o.domain for o in masked.opset_import}
    added: set[str] = set()
    for g in proto_graphs(masked.graph):
        for n in g.node:
            # Calls of local functions are masked too: the converter has no schema for them either.
            if is_plugin_op(n.domain, n.op_type):
                n.domain = _PASSTHROUGH_DOMAIN
            if n.domain not in declared and n.domain not in DEFAULT_DOMAINS:
                added.add(n.domain)
    for domain in sorted(added):
        masked.opset_import.append(onnx.helper.make_opsetid(domain, 1))
    return masked, added


def _unmask_plugins(proto: onnx.ModelProto, added: set[str]) -> None:
    for g in proto_graphs(proto.graph):
        for n in g.node:
            if n.domain == _PASSTHROUGH_DOMAIN:
                n.domain = ""
    kept = [o for o in proto.opset_import if o.domain not in added]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)


def _conversion_error(model: Model, message: str, current: int, target: int) -> PassError:
    op = converter_failed_op(message)
    nodes = [n for g in walk_graphs(model.graph) for n in g.nodes
             if op is not None and n.op == op and node_domain(n) == ""]
    what = f"{op} nodes ({_listed(nodes)})" if nodes else (op or "the model")
    return PassError(
        f"onnx.version_converter cannot convert {what} from opset {current} to {target}: "
        f"{converter_message(message)}",
        hint="choose another target opset (the converter has no adapter for this op between these "
             "versions), or replace those nodes first",
    )
