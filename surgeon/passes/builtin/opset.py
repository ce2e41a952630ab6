"""convert_opset: move the model to another version of the default ONNX opset.

The conversion is onnx's own (``onnx.version_converter``); this pass adds what
it lacks: checks with readable errors before anything changes, custom-domain
and plugin ops passed through, the IR version raised to what the target opset
needs, and the result merged into the model so that what the converter drops
(node and graph metadata, local functions, value_info) is kept.
"""

from __future__ import annotations

from typing import Annotated

import onnx
import onnx.defs
import onnx.helper
import onnx.version_converter

from surgeon.errors import PassError
from surgeon.graph.names import listed, node_label, qualified_op
from surgeon.graph.ops import DEFAULT_DOMAINS, default_opset, is_plugin_op
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
    """Convert the model to another version of the default (ai.onnx) opset.

    Parameters:
        target: the opset version to convert to (e.g. 17).

    Rules:
        1. Conversion is ``onnx.version_converter``'s, node by node, in
           ``If``/``Loop``/``Scan`` bodies too; nodes it leaves alone keep
           their names, metadata and doc strings.
        2. Before anything changes: a target that onnx does not know, a
           downgrade below an op's first version (e.g. ``Gelu`` before opset
           20) and a local function that uses an op whose definition differs
           between its own opset and the target are errors naming the nodes.
        3. A node the converter cannot convert is an error naming the op and
           the nodes (the converter's own messages are cryptic).
        4. Only the default domain is converted: nodes of other domains
           (``devtech::FooOp``, ``com.microsoft``, ``ai.onnx.ml``) and plugin
           ops without an ONNX schema pass through unchanged, and their opset
           imports stay.
        5. The IR version is raised to the lowest one the target opset
           allows when it is below it (``onnx.helper.VERSION_TABLE``); it is
           never lowered.
        6. Converting to the opset the model already has changes nothing.

    Example:
        version: 1
        steps:
          - pass: convert_opset
            with: {target: 17}

    Reports:
        nodes the converter replaced or rewired (by the runner); the old and
        new opset and IR versions.
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
    _check_ops_exist(model, target)
    _check_functions(model, target)

    before = to_proto(model)
    masked, added = _mask_plugins(before)
    try:
        after = onnx.version_converter.convert_version(masked, target)
    except Exception as exc:  # the converter asserts (RuntimeError) or fails in shape inference
        raise _conversion_error(model, str(exc), current, target) from exc
    _unmask_plugins(after, added)
    adopt_rewrite(model, before, after, functions=False)

    model.opset_imports[key] = target
    old_ir = model.ir_version
    ids = [onnx.helper.make_opsetid(d, v) for d, v in model.opset_imports.items()]
    needed = onnx.helper.find_min_ir_version_for(ids, ignore_unknown=True)
    if old_ir < needed:
        model.ir_version = needed
        result.notes.append(f"raised the IR version from {old_ir} to {needed} (opset {target} needs it)")
    result.notes.insert(0, f"converted from opset {current} to {target}")
    result.details = {"opset": [current, target], "ir_version": [old_ir, model.ir_version]}
    result.changed = True  # the opset import: the runner does not see it
    return result


def _listed(nodes: list, limit: int = 5) -> str:
    return listed((node_label(n) for n in nodes), limit)


def _default_nodes(model: Model):
    """Default-domain nodes of the graph and its subgraphs that have an ONNX schema."""
    for g in walk_graphs(model.graph):
        for n in g.nodes:
            if node_domain(n) == "" and onnx.defs.has(n.op):
                yield n


def _check_ops_exist(model: Model, target: int) -> None:
    """Refuse a downgrade below the first version of an op the model uses."""
    missing: dict[str, list] = {}
    for n in _default_nodes(model):
        try:
            onnx.defs.get_schema(n.op, target, "")
        except onnx.defs.SchemaError:
            missing.setdefault(n.op, []).append(n)
    if missing:
        first = {op: min(s.since_version for s in onnx.defs.get_all_schemas_with_history()
                         if s.name == op and s.domain == "") for op in missing}
        ops = ", ".join(f"{op} (since opset {first[op]})" for op in sorted(missing))
        nodes = [n for op in sorted(missing) for n in missing[op]]
        raise PassError(
            f"cannot convert to opset {target}: {ops} did not exist yet in opset {target}; "
            f"used by {_listed(nodes)}",
            hint=f"choose target {max(first.values())} or later, or replace those nodes first",
        )


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
