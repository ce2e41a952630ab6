"""``surgeon inspect``: what a user checks before writing a recipe.

Reads the protobuf only (no gs import, weights stay on disk), so it is fast
on big models and works on models gs cannot import.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx

from surgeon.graph import custom_ops
from surgeon.graph.names import byte_size, qualified_op
from surgeon.graph.ops import is_plugin_op
from surgeon.graph.walk import proto_graphs
from surgeon.io.external import external_location
from surgeon.io.load import read_proto

STANDARD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training"}
CONTROL_FLOW = {"If", "Loop", "Scan"}


def inspect_model(path: str | Path) -> dict[str, Any]:
    """A JSON-ready description of the model at ``path``."""
    proto = read_proto(Path(path))
    ops: Counter[str] = Counter()
    nodes = initializers = weight_bytes = 0
    external: set[str] = set()
    for graph in proto_graphs(proto.graph):
        for node in graph.node:
            nodes += 1
            ops[op_key(node)] += 1
        for t in list(graph.initializer) + [s.values for s in graph.sparse_initializer]:
            initializers += 1
            weight_bytes += tensor_bytes(t)
            if t.data_location == onnx.TensorProto.EXTERNAL and external_location(t):
                external.add(external_location(t))
    # Ops inside local function bodies (a module exported as a function) are counted apart:
    # the main histogram shows the calls, this one what the calls run.
    function_ops: Counter[str] = Counter(op_key(n) for f in proto.functions for g in _function_graphs(f)
                                         for n in g)
    domains = sorted(({n.domain for g in proto_graphs(proto.graph) for n in g.node}
                      | {n.domain for f in proto.functions for g in _function_graphs(f) for n in g})
                     - STANDARD_DOMAINS)
    return {
        "path": str(path),
        "ir_version": proto.ir_version,
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "opset_imports": {o.domain or "ai.onnx": o.version for o in proto.opset_import},
        "inputs": [value_info(v) for v in proto.graph.input],
        "outputs": [value_info(v) for v in proto.graph.output],
        "nodes": {"main_graph": len(proto.graph.node), "total": nodes},
        "op_histogram": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "custom_domains": domains,
        **_custom_ops(ops),
        "local_functions": [f"{f.domain}::{f.name}" for f in proto.functions],
        "function_op_histogram": dict(sorted(function_ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "initializers": {"count": initializers, "bytes": weight_bytes},
        "external_data_files": sorted(external),
        "control_flow": {op: ops[op] for op in sorted(CONTROL_FLOW) if ops[op]},
        "metadata_props": {p.key: p.value for p in proto.metadata_props},
    }


def render_inspection(info: dict[str, Any]) -> str:
    lines = [f"{info['path']}: IR {info['ir_version']}, producer {info['producer'] or '?'}",
             "opsets: " + ", ".join(f"{d} {v}" for d, v in info["opset_imports"].items())]
    for key in ("inputs", "outputs"):
        lines.append(f"{key}:")
        lines += [f"  {v['name']}: {v['type']}" for v in info[key]]
    n = info["nodes"]
    lines.append(f"nodes: {n['total']} ({n['main_graph']} in the main graph)")
    lines.append("ops: " + ", ".join(f"{op} x{c}" for op, c in info["op_histogram"].items()))
    init = info["initializers"]
    lines.append(f"initializers: {init['count']} ({byte_size(init['bytes'])})")
    optional = [("custom domains", info["custom_domains"]), ("local functions", info["local_functions"]),
                ("ops in local functions", [f"{op} x{c}" for op, c in info["function_op_histogram"].items()]),
                ("external data", info["external_data_files"]),
                ("control flow", [f"{op} x{c}" for op, c in info["control_flow"].items()]),
                ("metadata", [f"{k}={v if len(v) <= 40 else v[:37] + '...'}"
                              for k, v in info["metadata_props"].items()])]
    lines += [f"{label}: {', '.join(values)}" for label, values in optional if values]
    for op in info["custom_ops"]:
        said = (f"declared ({op['declared']}): {_declared_text(op['outputs'])}" if op["declared"]
                else "not declared: shape inference stops at it (declare it in a recipe's custom_ops:)")
        lines.append(f"custom op {op['op']} x{op['count']}: {said}")
    lines += [f"warning: custom op {d['op']} is declared ({d['declared']}) but the model has no such node"
              for d in info["declared_unused"]]
    return "\n".join(lines) + "\n"


def _declared_text(outputs: list[dict[str, Any]]) -> str:
    def shape(s: Any) -> str:
        return s if isinstance(s, str) else "?" if s is None else "[" + ", ".join(map(str, s)) + "]"
    return "; ".join(f"dtype {o['dtype']}, shape {shape(o.get('shape'))}" for o in outputs)


def _custom_ops(ops: Counter[str]) -> dict[str, Any]:
    """Ops without an ONNX schema (custom domains, plugin ops in the default domain), whether each
    is declared (:mod:`surgeon.graph.custom_ops`), and declarations no node uses."""
    declared = custom_ops.active()
    found = []
    seen = set()
    for key, count in sorted(ops.items()):
        domain, _, op = key.rpartition("::")
        if domain in STANDARD_DOMAINS and not is_plugin_op(domain, op):
            continue
        decl = declared.get((custom_ops.normal_domain(domain), op))
        seen.add((custom_ops.normal_domain(domain), op))
        found.append({"op": key, "count": count, "declared": decl.origin if decl else None,
                      "outputs": list(decl.outputs) if decl else []})
    unused = [{"op": d.label, "declared": d.origin} for k, d in declared.items() if k not in seen]
    return {"custom_ops": found, "declared_unused": unused}


def _function_graphs(func: onnx.FunctionProto) -> Iterator[list[onnx.NodeProto]]:
    """The node lists of a local function's body and of the If/Loop/Scan bodies inside it."""
    yield list(func.node)
    for node in func.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from (list(g.node) for g in proto_graphs(attr.g))


def op_key(node: onnx.NodeProto) -> str:
    return qualified_op(node.domain, node.op_type)


def tensor_bytes(t: onnx.TensorProto) -> int:
    """Size of a tensor's data, computed from its type (external data is not read)."""
    if t.data_type == onnx.TensorProto.STRING:
        return sum(len(s) for s in t.string_data)
    count = 1
    for d in t.dims:
        count *= d
    try:
        bits = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize * 8
    except (KeyError, TypeError, ValueError):
        return len(t.raw_data)
    if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        bits = 4
    return (count * bits + 7) // 8


def value_info(v: onnx.ValueInfoProto) -> dict[str, Any]:
    return {"name": v.name, "type": type_text(v.type)}


def type_text(t: onnx.TypeProto) -> str:
    """``float32[N,3,32,32]``, ``seq(float32[?])``, ``optional(...)``, ``map(int64,float32)``."""
    kind = t.WhichOneof("value")
    if kind == "tensor_type" or kind == "sparse_tensor_type":
        tt = getattr(t, kind)
        name = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name if tt.elem_type else "?"
        if not tt.HasField("shape"):
            return f"{name}[...]"
        dims = [str(d.dim_value) if d.HasField("dim_value") else d.dim_param or "?" for d in tt.shape.dim]
        return f"{name}[{','.join(dims)}]"
    if kind == "sequence_type":
        return f"seq({type_text(t.sequence_type.elem_type)})"
    if kind == "optional_type":
        return f"optional({type_text(t.optional_type.elem_type)})"
    if kind == "map_type":
        key = onnx.helper.tensor_dtype_to_np_dtype(t.map_type.key_type).name
        return f"map({key},{type_text(t.map_type.value_type)})"
    return "?"
