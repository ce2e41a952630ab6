"""``surgeon diff A B``: the structural difference between two models.

Nodes are matched by name (unnamed nodes by op and output names), initializers
by name; values are compared byte for byte. Works on the protobuf like
``inspect``; weights in external data are read to compare them.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import onnx
from onnx import numpy_helper

from surgeon.errors import ModelLoadError
from surgeon.graph.walk import proto_graphs
from surgeon.io.load import read_proto
from surgeon.views.inspect import op_key, tensor_bytes, type_text


def diff_models(a: str | Path, b: str | Path) -> dict[str, Any]:
    """A JSON-ready difference of the models at ``a`` (old) and ``b`` (new)."""
    pa, pb = _read(Path(a)), _read(Path(b))
    full_a, full_b = _nodes(pa), _nodes(pb)
    nodes_a, nodes_b = [n[:2] for n in full_a], [n[:2] for n in full_b]
    hist_a = Counter(op for _, op in nodes_a)
    hist_b = Counter(op for _, op in nodes_b)
    inits_a, inits_b = _initializers(pa), _initializers(pb)
    opsets_a = {o.domain or "ai.onnx": o.version for o in pa.opset_import}
    opsets_b = {o.domain or "ai.onnx": o.version for o in pb.opset_import}
    common = sorted(inits_a.keys() & inits_b.keys())
    return {
        "a": str(a), "b": str(b),
        "inputs": _io(pa.graph.input, pb.graph.input),
        "outputs": _io(pa.graph.output, pb.graph.output),
        "nodes": {
            "removed": _only_in(nodes_a, nodes_b),
            "added": _only_in(nodes_b, nodes_a),
            "changed": _changed(full_a, full_b),
            "count": [len(nodes_a), len(nodes_b)],
        },
        "op_histogram_delta": {op: hist_b[op] - hist_a[op] for op in sorted(hist_a.keys() | hist_b.keys())
                               if hist_b[op] != hist_a[op]},
        "opsets": {d: [opsets_a.get(d), opsets_b.get(d)] for d in sorted(opsets_a.keys() | opsets_b.keys())
                   if opsets_a.get(d) != opsets_b.get(d)},
        "ir_version": [pa.ir_version, pb.ir_version] if pa.ir_version != pb.ir_version else None,
        "metadata": _metadata(pa, pb),
        "initializers": {
            "count": [len(inits_a), len(inits_b)],
            "bytes": [sum(tensor_bytes(t) for t in inits_a.values()), sum(tensor_bytes(t) for t in inits_b.values())],
            "removed": sorted(inits_a.keys() - inits_b.keys()),
            "added": sorted(inits_b.keys() - inits_a.keys()),
            "retyped": [{"name": name, "a": _tensor_type(inits_a[name]), "b": _tensor_type(inits_b[name])}
                        for name in common if _tensor_type(inits_a[name]) != _tensor_type(inits_b[name])],
            "changed": [name for name in common if _tensor_type(inits_a[name]) == _tensor_type(inits_b[name])
                        and not _same_tensor(inits_a[name], inits_b[name])],
        },
    }


def differs(d: dict[str, Any]) -> bool:
    """Whether a :func:`diff_models` result found any difference (``surgeon diff --exit-code``)."""
    io = [d[k][part] for k in ("inputs", "outputs") for part in ("removed", "added", "changed", "order_changed")]
    n, i, m = d["nodes"], d["initializers"], d["metadata"]
    return any(io) or any(n[k] for k in ("removed", "added", "changed")) or bool(
        d["opsets"] or d["ir_version"] or any(i[k] for k in ("removed", "added", "retyped", "changed"))
        or any(m[k] for k in ("removed", "added", "changed")))


def render_diff(d: dict[str, Any]) -> str:
    lines = [f"--- {d['a']}", f"+++ {d['b']}"]
    if not differs(d):
        n, i = d["nodes"], d["initializers"]
        return "\n".join(lines + [f"identical: {n['count'][0]} nodes, {i['count'][0]} initializers "
                                  f"({i['bytes'][0]} bytes); inputs, outputs, opsets and metadata the same"]) + "\n"
    for key in ("inputs", "outputs"):
        io = d[key]
        lines += [f"{key}: - {v['name']}: {v['type']}" for v in io["removed"]]
        lines += [f"{key}: + {v['name']}: {v['type']}" for v in io["added"]]
        lines += [f"{key}: ~ {c['name']}: {c['a']} -> {c['b']}" for c in io["changed"]]
        if io["order_changed"]:
            lines.append(f"{key}: order changed")
    n = d["nodes"]
    lines.append(f"nodes: {n['count'][0]} -> {n['count'][1]} ({len(n['removed'])} removed, {len(n['added'])} added)")
    lines += _first(f"  - {x['name']} ({x['op']})" for x in n["removed"])
    lines += _first(f"  + {x['name']} ({x['op']})" for x in n["added"])
    if n["changed"]:
        lines.append(f"nodes changed: {len(n['changed'])} (inputs, outputs or attributes)")
        lines += _first(f"  ~ {x['name']} ({x['op']}): {', '.join(x['what'])}" for x in n["changed"])
    if d["op_histogram_delta"]:
        lines.append("ops: " + ", ".join(f"{op} {v:+d}" for op, v in d["op_histogram_delta"].items()))
    lines += [f"opset {dom}: {v[0]} -> {v[1]}" for dom, v in d["opsets"].items()]
    if d["ir_version"]:
        lines.append(f"IR version: {d['ir_version'][0]} -> {d['ir_version'][1]}")
    m = d["metadata"]
    lines += [f"metadata: - {k}" for k in m["removed"]] + [f"metadata: + {k}" for k in m["added"]]
    lines += [f"metadata: ~ {k}" for k in m["changed"]]
    i = d["initializers"]
    lines.append(f"initializers: {i['count'][0]} -> {i['count'][1]} ({i['bytes'][0]} -> {i['bytes'][1]} bytes)")
    lines += _first(f"  - {name}" for name in i["removed"])
    lines += _first(f"  + {name}" for name in i["added"])
    lines += _first(f"  ~ {r['name']}: {r['a']} -> {r['b']}" for r in i["retyped"])
    lines += _first(f"  ~ {name} (values changed)" for name in i["changed"])
    return "\n".join(lines) + "\n"


LISTED = 20
"""Lines per list in the text rendering; --json has them all."""


def _first(items) -> list[str]:
    items = list(items)
    if len(items) <= LISTED:
        return items
    return items[:LISTED] + [f"    ... and {len(items) - LISTED} more (--json lists them all)"]


def _tensor_type(t: onnx.TensorProto) -> str:
    return f"{onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name if t.data_type else '?'}{list(t.dims)}"


def _read(path: Path) -> onnx.ModelProto:
    proto = read_proto(path)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for g in proto_graphs(proto.graph) for t in g.initializer):
        try:
            onnx.load_external_data_for_model(proto, str(path.parent))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path}: external data cannot be read: {exc}",
                                 hint="keep the weight files next to the .onnx file") from exc
    return proto


def _io(a: Any, b: Any) -> dict[str, Any]:
    ta = {v.name: type_text(v.type) for v in a}
    tb = {v.name: type_text(v.type) for v in b}
    common = [n for n in ta if n in tb]
    return {
        "removed": [{"name": n, "type": ta[n]} for n in ta if n not in tb],
        "added": [{"name": n, "type": tb[n]} for n in tb if n not in ta],
        "changed": [{"name": n, "a": ta[n], "b": tb[n]} for n in common if ta[n] != tb[n]],
        "order_changed": common != [n for n in tb if n in ta],
    }


def _nodes(proto: onnx.ModelProto) -> list[tuple[str, str, tuple[Any, ...]]]:
    """(node key, op, wiring and attributes) over all graphs; an unnamed node is keyed by its op and
    outputs. A list, not a dict: node names need not be unique. Subgraph attributes are compared by
    their nodes (which this list holds too), not here."""
    return [(node.name or f"<{op_key(node)} -> {', '.join(node.output)}>", op_key(node),
             (tuple(node.input), tuple(node.output),
              {a.name: a.SerializeToString() for a in node.attribute
               if a.type not in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)}))
            for g in proto_graphs(proto.graph) for node in g.node]


def _changed(these: list[tuple[str, str, tuple[Any, ...]]],
             others: list[tuple[str, str, tuple[Any, ...]]]) -> list[dict[str, Any]]:
    """Nodes in both (same key and op, matched in order) whose inputs, outputs or attributes differ."""
    waiting: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for key, op, sig in reversed(others):
        waiting.setdefault((key, op), []).append(sig)
    out = []
    for key, op, sig in these:
        queue = waiting.get((key, op))
        if not queue:
            continue
        other = queue.pop()
        what = [part for part, x, y in (("inputs", sig[0], other[0]), ("outputs", sig[1], other[1])) if x != y]
        what += [f"attribute {name}" for name in sorted(sig[2].keys() | other[2].keys())
                 if sig[2].get(name) != other[2].get(name)]
        if what:
            out.append({"name": key, "op": op, "what": what})
    return out


def _metadata(a: onnx.ModelProto, b: onnx.ModelProto) -> dict[str, list[str]]:
    ma = {p.key: p.value for p in a.metadata_props}
    mb = {p.key: p.value for p in b.metadata_props}
    return {"removed": sorted(ma.keys() - mb.keys()), "added": sorted(mb.keys() - ma.keys()),
            "changed": sorted(k for k in ma.keys() & mb.keys() if ma[k] != mb[k])}


def _only_in(these: list[tuple[str, str]], others: list[tuple[str, str]]) -> list[dict[str, str]]:
    """The nodes of ``these`` that ``others`` lacks, counting repeated names as many times as they occur."""
    left = Counter(others)
    out = []
    for key, op in these:
        if left[(key, op)]:
            left[(key, op)] -= 1
        else:
            out.append({"name": key, "op": op})
    return out


def _initializers(proto: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for g in proto_graphs(proto.graph) for t in g.initializer}


def _same_tensor(a: onnx.TensorProto, b: onnx.TensorProto) -> bool:
    if a.data_type != b.data_type or list(a.dims) != list(b.dims):
        return False
    # to_array normalises raw_data vs typed fields, which exporters mix freely.
    return numpy_helper.to_array(a).tobytes() == numpy_helper.to_array(b).tobytes()
