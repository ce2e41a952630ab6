"""``surgeon inspect``: what a user checks before writing a recipe.

Reads the protobuf only (no gs import, weights stay on disk), so it is fast
on big models and works on models gs cannot import.
"""

from __future__ import annotations

import fnmatch
import re
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
    nodes = initializers = weight_bytes = constants = constant_bytes = 0
    external: set[str] = set()
    for graph in proto_graphs(proto.graph):
        for node in graph.node:
            nodes += 1
            ops[op_key(node)] += 1
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                constants += 1
                constant_bytes += sum(_attribute_bytes(a) for a in node.attribute)
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
        "constant_nodes": {"count": constants, "bytes": constant_bytes},
        "external_data_files": sorted(external),
        "control_flow": {op: ops[op] for op in sorted(CONTROL_FLOW) if ops[op]},
        "metadata_props": {p.key: p.value for p in proto.metadata_props},
    }


def render_inspection(info: dict[str, Any]) -> str:
    lines = [f"{info['path']}: IR {info['ir_version']}, producer {info['producer'] or '?'}",
             "opsets: " + ", ".join(f"{d} {v}" for d, v in info["opset_imports"].items())]
    for key in ("inputs", "outputs"):
        lines.append(f"{key}:")
        lines += [f"  {v['name']}: {short_type(v['type'])}" for v in info[key]]
    n = info["nodes"]
    lines.append(f"nodes: {n['total']} ({n['main_graph']} in the main graph)")
    lines.append("ops: " + ", ".join(f"{op} x{c}" for op, c in info["op_histogram"].items()))
    init = info["initializers"]
    lines.append(f"initializers: {init['count']} ({byte_size(init['bytes'])})")
    const = info["constant_nodes"]
    if const["count"]:
        lines.append(f"weights in Constant nodes: {const['count']} ({byte_size(const['bytes'])})")
    optional = [("custom domains", info["custom_domains"]), ("local functions", info["local_functions"]),
                ("ops in local functions", [f"{op} x{c}" for op, c in info["function_op_histogram"].items()]),
                ("external data", info["external_data_files"]),
                ("control flow", [f"{op} x{c}" for op, c in info["control_flow"].items()]),
                ("metadata", [f"{k}={shorten(v, METADATA_CHARS)}" for k, v in info["metadata_props"].items()])]
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


METADATA_CHARS = 40
"""Longest metadata value the text view shows whole; ``--json`` has every value in full."""
DIM_CHARS = 24
"""Longest symbolic dimension the text view shows whole (shape inference and exporters write
expressions such as ``floor((floor((height - 1)/2) + 1 - 1)/2) + 1``); a longer one keeps its
start and end, which tell similar names apart (``p2o.DynamicDimension.0``/``.1``); ``--json`` has
them in full."""


def shorten(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters with ``...`` and the full length."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    return f"{flat[:limit - 3]}... ({len(text)} chars)"


def short_type(text: str, limit: int = DIM_CHARS) -> str:
    """A :func:`type_text` with each symbolic dimension longer than ``limit`` cut short."""
    def dims(m: re.Match[str]) -> str:
        parts, depth, start = [], 0, 0
        inner = m.group(1)
        for i, ch in enumerate(inner):
            depth += 1 if ch == "(" else -1 if ch == ")" else 0
            if ch == "," and depth == 0:
                parts.append(inner[start:i])
                start = i + 1
        parts.append(inner[start:])
        head = (limit - 3) // 2
        return "[" + ",".join(p if len(p) <= limit else f"{p[:head]}...{p[len(p) - (limit - 3 - head):]}"
                              for p in parts) + "]"

    return re.sub(r"\[([^\[\]]*)\]", dims, text)


# -- nodes and tensors: the names a recipe needs -----------------------------------------

def _matches(text: str, pattern: str | None) -> bool:
    """``pattern`` is a case-insensitive substring, or a glob when it holds ``*``, ``?`` or ``[``."""
    if pattern is None:
        return True
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(text.lower(), pattern.lower())
    return pattern.lower() in text.lower()


def _op_matches(node: onnx.NodeProto, op: str | None) -> bool:
    return op is None or op.lower() in (node.op_type.lower(), op_key(node).lower())


def _graphs_with_labels(proto: onnx.ModelProto) -> Iterator[tuple[str, onnx.GraphProto | onnx.FunctionProto]]:
    """Every graph, labelled as listings show it: ``main``, ``graph 'then_branch'``, ``function 'local::Block'``."""
    main = proto.graph
    for g in proto_graphs(main):
        yield ("main" if g is main else f"graph '{g.name}'"), g
    for f in proto.functions:
        yield f"function '{qualified_op(f.domain, f.name)}'", f
        for node in f.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    for g in proto_graphs(attr.g):
                        yield f"graph '{g.name}' in function '{qualified_op(f.domain, f.name)}'", g


def list_nodes(path: str | Path, *, op: str | None = None, name: str | None = None) -> dict[str, Any]:
    """Every node (subgraphs and local functions included) whose op is ``op`` and whose name
    matches ``name`` (see :func:`_matches`), with its inputs and outputs."""
    proto = read_proto(Path(path))
    rows, total = [], 0
    for where, g in _graphs_with_labels(proto):
        for node in g.node:
            total += 1
            if _op_matches(node, op) and _matches(node.name, name):
                rows.append({"name": node.name, "op": op_key(node), "graph": where,
                             "inputs": list(node.input), "outputs": list(node.output)})
    return {"path": str(path), "filter": {"op": op, "name": name}, "total": total, "nodes": rows}


def list_tensors(path: str | Path, *, op: str | None = None, name: str | None = None) -> dict[str, Any]:
    """Every tensor name (graph inputs and outputs, initializers, node outputs) matching ``name``;
    with ``op``, only tensors that a node of that op produces or reads. Types come from the
    model's declarations (inputs, outputs, initializers, value_info); "?" where it has none."""
    proto = read_proto(Path(path))
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    types: dict[str, str] = {}
    related: set[tuple[str, str]] = set()
    for where, g in _graphs_with_labels(proto):
        graph_inputs = list(getattr(g, "input", []))
        graph_outputs = list(getattr(g, "output", []))
        for v in [*graph_inputs, *graph_outputs, *getattr(g, "value_info", [])]:
            if isinstance(v, onnx.ValueInfoProto) and v.type.WhichOneof("value"):
                types.setdefault(v.name, type_text(v.type))
        for t in getattr(g, "initializer", []):
            types.setdefault(t.name, _tensor_type(t))
            rows.setdefault((where, t.name), {"name": t.name, "kind": "initializer", "producer": None, "graph": where})
        for v in graph_inputs:
            vname = v if isinstance(v, str) else v.name
            rows.setdefault((where, vname), {"name": vname, "kind": "input", "producer": None, "graph": where})
        for node in g.node:
            if _op_matches(node, op):
                related.update((where, t) for t in (*node.input, *node.output))
            for out in node.output:
                if out:
                    kind = "constant" if node.op_type == "Constant" and node.domain in ("", "ai.onnx") else "value"
                    rows.setdefault((where, out), {"name": out, "kind": kind, "producer": node.name or op_key(node),
                                          "graph": where})
        for v in graph_outputs:
            vname = v if isinstance(v, str) else v.name
            entry = rows.setdefault((where, vname), {"name": vname, "kind": "output", "producer": None, "graph": where})
            if entry["kind"] == "value":
                entry["kind"] = "output"
    total = len(rows)
    listed_rows = [{**r, "type": types.get(r["name"], "?")} for key, r in rows.items()
                   if _matches(r["name"], name) and (op is None or key in related)]
    return {"path": str(path), "filter": {"op": op, "name": name}, "total": total, "tensors": listed_rows}


def render_nodes(info: dict[str, Any]) -> str:
    rows = info["nodes"]
    lines = [f"{len(rows)} of {info['total']} nodes{_filter_text(info['filter'])}:"]
    for r in rows:
        where = "" if r["graph"] == "main" else f"  [{r['graph']}]"
        lines.append(f"  {r['name'] or '<unnamed>'} ({r['op']}): {', '.join(r['inputs']) or '-'} -> "
                     f"{', '.join(r['outputs']) or '-'}{where}")
    return "\n".join(lines) + "\n"


def render_tensors(info: dict[str, Any]) -> str:
    rows = info["tensors"]
    lines = [f"{len(rows)} of {info['total']} tensors{_filter_text(info['filter'])}:"]
    for r in rows:
        origin = f"from {r['producer']}" if r["producer"] else r["kind"]
        if r["kind"] in ("constant", "output") and r["producer"]:
            origin = f"{r['kind']} from {r['producer']}"
        where = "" if r["graph"] == "main" else f"  [{r['graph']}]"
        lines.append(f"  {r['name']}: {short_type(r['type'])}, {origin}{where}")
    return "\n".join(lines) + "\n"


def _filter_text(f: dict[str, Any]) -> str:
    parts = [f"op {f['op']}" if f["op"] else "", f"name matching '{f['name']}'" if f["name"] else ""]
    parts = [p for p in parts if p]
    return (" with " + " and ".join(parts)) if parts else ""


def _tensor_type(t: onnx.TensorProto) -> str:
    try:
        name = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name
    except (KeyError, TypeError, ValueError):
        name = "?"
    return f"{name}[{','.join(str(d) for d in t.dims)}]"


def _attribute_bytes(attr: onnx.AttributeProto) -> int:
    """Size of the value a Constant node holds (``value``, ``sparse_value`` or a ``value_*`` list)."""
    if attr.type == onnx.AttributeProto.TENSOR:
        return tensor_bytes(attr.t)
    if attr.type == onnx.AttributeProto.SPARSE_TENSOR:
        return tensor_bytes(attr.sparse_tensor.values) + tensor_bytes(attr.sparse_tensor.indices)
    if attr.type in (onnx.AttributeProto.FLOATS, onnx.AttributeProto.FLOAT):
        return 4 * max(1, len(attr.floats))
    if attr.type in (onnx.AttributeProto.INTS, onnx.AttributeProto.INT):
        return 8 * max(1, len(attr.ints))
    if attr.type in (onnx.AttributeProto.STRING, onnx.AttributeProto.STRINGS):
        return len(attr.s) + sum(len(x) for x in attr.strings)
    return 0


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
