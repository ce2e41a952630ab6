"""What kind of op a node runs (ONNX's own, a plugin op hiding in the default
domain, or one onnxruntime cannot run) and which default-opset version an
import list declares: the questions the saver, the opset converter, the
inliner, verification and the activation run all ask."""

from __future__ import annotations

from collections.abc import Collection, Iterable

import onnx
import onnx.defs

from surgeon.graph.walk import proto_subgraphs_of

DEFAULT_DOMAINS = ("", "ai.onnx")
"""The two spellings of ONNX's own (default) domain."""


def is_plugin_op(domain: str | None, op: str, local_functions: Collection[str] = ()) -> bool:
    """A default-domain op that ONNX does not define and no local function named ``op`` provides.

    TensorRT finds plugins (``EfficientNMS_TRT``...) by op name alone, so
    exporters leave them in the default domain, where onnx's checker and
    converter have no schema for them. ``local_functions``: names of the
    model's local functions, when a call of one should not count as a plugin.
    """
    return (domain or "") in DEFAULT_DOMAINS and op not in local_functions and not onnx.defs.has(op)


ONNXRUNTIME_DOMAINS = ("com.microsoft", "com.microsoft.nchwc", "com.ms.internal.nhwc", "ai.onnx.ml",
                       "ai.onnx.training", "ai.onnx.preview.training")
"""Domains whose ops onnxruntime itself implements (beside ONNX's default one)."""


def is_foreign_op(domain: str | None, op: str, local_functions: Collection[tuple[str, str]] = ()) -> bool:
    """An op that neither ONNX, onnxruntime's own domains nor a local function of the model defines.

    Only the runtime it was written for runs it: a TensorRT plugin (``FeedForward_TRT``,
    often in the default domain), a custom op (``devtech::FooOp``) from a library
    onnxruntime does not load. ``local_functions``: ``(domain, name)`` of the model's
    local functions (onnxruntime inlines those).
    """
    domain = domain or ""
    if (domain, op) in local_functions:
        return False
    if domain in DEFAULT_DOMAINS or domain == "ai.onnx.ml":
        return not onnx.defs.has(op, "" if domain in DEFAULT_DOMAINS else domain)
    return domain not in ONNXRUNTIME_DOMAINS


def foreign_nodes(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes of the main graph that onnxruntime cannot run: a foreign op (:func:`is_foreign_op`), or an
    If/Loop/Scan with one in a body."""
    local = {(f.domain, f.name) for f in proto.functions}
    return [n for n in proto.graph.node if _is_foreign_node(n, local)]


def drop_foreign_nodes(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Remove from ``proto``'s main graph the nodes onnxruntime cannot run and every node and graph output
    computed from them, so the rest can run; the foreign nodes removed (none: ``proto`` is unchanged)."""
    local = {(f.domain, f.name) for f in proto.functions}
    foreign: list[onnx.NodeProto] = []
    tainted: set[str] = set()
    kept = []
    for node in proto.graph.node:  # in topological order: a reader comes after what it reads
        if _is_foreign_node(node, local):
            foreign.append(node)
            tainted.update(t for t in node.output if t)
        elif any(t in tainted for t in proto_node_reads(node)):
            tainted.update(t for t in node.output if t)
        else:
            kept.append(node)
    if not foreign:
        return []
    outputs = [o for o in proto.graph.output if o.name not in tainted]
    del proto.graph.node[:]
    proto.graph.node.extend(kept)
    del proto.graph.output[:]
    proto.graph.output.extend(outputs)
    return foreign


def proto_node_label(node: onnx.NodeProto) -> str:
    """How messages name a protobuf node: "devtech::FooOp '/FooOp'", "an unnamed Relu node"."""
    op = f"{node.domain}::{node.op_type}" if node.domain not in DEFAULT_DOMAINS else node.op_type
    return f"{op} '{node.name}'" if node.name else f"an unnamed {op} node"


def foreign_label(node: onnx.NodeProto, local: Collection[tuple[str, str]] = ()) -> str:
    """A foreign node's label; for an If/Loop/Scan, with the foreign op in its body that makes it one."""
    if is_foreign_op(node.domain, node.op_type, local):
        return proto_node_label(node)
    for key, g in proto_subgraphs_of(node):
        inner = next((n for n in g.node if _is_foreign_node(n, local)), None)
        if inner is not None:
            return f"{proto_node_label(node)} (its {key} holds {foreign_label(inner, local)})"
    return proto_node_label(node)


def _is_foreign_node(node: onnx.NodeProto, local: Collection[tuple[str, str]]) -> bool:
    if is_foreign_op(node.domain, node.op_type, local):
        return True
    return any(_is_foreign_node(sub, local) for _, g in proto_subgraphs_of(node) for sub in g.node)


def proto_node_reads(node: onnx.NodeProto) -> list[str]:
    """The tensors a node reads, those its subgraphs read from outside included."""
    names = [t for t in node.input if t]
    for _, g in proto_subgraphs_of(node):
        for sub in g.node:
            names += proto_node_reads(sub)
    return names


def default_opset(imports: Iterable) -> int | None:
    """The version of the default domain among opset imports (``OperatorSetIdProto``s), or None."""
    return next((o.version for o in imports if o.domain in DEFAULT_DOMAINS), None)
