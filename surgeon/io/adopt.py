"""Taking a rewrite made by an onnx tool back into a surgeon Model, in place.

Some jobs are best left to onnx itself (``onnx.inliner``,
``onnx.version_converter``), which work on protos. Reloading their output
wholesale would lose what they drop (the version converter drops node and
graph metadata and local functions) and replace every gs object a caller or
the runner holds, so :func:`adopt_rewrite` merges the result node by node.
The version converter's error texts are read here too, for both passes that
run it (``convert_opset``, and ``inline_functions`` on function bodies).
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from surgeon.graph.walk import node_domain, subgraphs_of, walk_graphs
from surgeon.io.load import from_proto
from surgeon.io.model import Model


def adopt_rewrite(model: Model, before: onnx.ModelProto, after: onnx.ModelProto, *,
                  functions: bool) -> None:
    """Make ``model`` match ``after``, a rewrite of ``before = to_proto(model)`` by an onnx tool.

    Reloading ``after`` wholesale would lose what such tools drop (the
    version converter drops node and graph metadata and local functions) and
    make every node look removed and re-added to the runner and to a Python
    caller holding gs objects. Instead nodes are paired, graph by graph, by
    (name, op, domain, output names): a paired node keeps its object, its
    recorded metadata and attributes, and takes the rewrite's inputs and any
    attribute the rewrite changed; the rewrite's other nodes move in and read
    the model's own tensors by name. ``functions``: take the local functions
    from ``after`` too (unchanged ones keep their objects).
    """
    new = from_proto(after, base_dir=model.base_dir, source_path=model.source_path)
    remap: dict[int, gs.Tensor] = {}
    pairs: list[tuple[gs.Graph, list[tuple[gs.Node, gs.Node | None]]]] = []
    _pair(model.graph, new.graph, {}, remap, pairs)
    inserted: list[gs.Node] = []
    for old_graph, matched in pairs:
        inserted += _merge_nodes(old_graph, matched, remap)
    _copy_records(model, new, inserted)
    if functions:
        old_by_key = {(f.domain or "", f.name): (f, p.SerializeToString())
                      for f, p in zip(model.graph.functions, before.functions)}
        kept = []
        for func, fproto in zip(new.graph.functions, after.functions):
            old = old_by_key.get((fproto.domain, fproto.name))
            if old is not None and old[1] == fproto.SerializeToString():
                kept.append(old[0])
            else:
                kept.append(func)
                model.origin.functions[id(func)] = new.origin.functions[id(func)]
        model.graph.functions = kept
    for o in after.opset_import:  # domains a rewrite started to use
        if o.domain not in model.opset_imports and not (o.domain == "ai.onnx" and "" in model.opset_imports):
            model.opset_imports[o.domain] = o.version


def _node_key(node: gs.Node) -> tuple:
    return (node.name, node.op, node_domain(node), tuple(t.name for t in node.outputs))


def _pair(old: gs.Graph, new: gs.Graph, scope: dict[str, gs.Tensor], remap: dict[int, gs.Tensor],
          pairs: list) -> None:
    """Pair ``old`` with its rewrite ``new`` (recursively into paired nodes' subgraphs)."""
    scope = {**scope, **{name: t for name, t in old.tensors().items() if name}}
    for name, t in new.tensors().items():
        if name in scope:
            remap[id(t)] = scope[name]
    old_count: dict[tuple, int] = {}
    for n in old.nodes:
        old_count[_node_key(n)] = old_count.get(_node_key(n), 0) + 1
    new_count: dict[tuple, int] = {}
    for n in new.nodes:
        new_count[_node_key(n)] = new_count.get(_node_key(n), 0) + 1
    by_key = {_node_key(n): n for n in old.nodes if old_count[_node_key(n)] == 1}
    matched = []
    for n in new.nodes:
        key = _node_key(n)
        o = by_key.get(key) if new_count[key] == 1 else None
        matched.append((n, o))
        if o is not None:
            for attr, sub in subgraphs_of(n):
                if isinstance(o.attrs.get(attr), gs.Graph):
                    _pair(o.attrs[attr], sub, scope, remap, pairs)
    pairs.append((old, matched))


def _merge_nodes(graph: gs.Graph, matched: list[tuple[gs.Node, gs.Node | None]],
                 remap: dict[int, gs.Tensor]) -> list[gs.Node]:
    """Rebuild ``graph.nodes`` in the rewrite's order; returns the nodes moved in."""
    kept = {id(o) for _, o in matched if o is not None}
    for o in graph.nodes:
        if id(o) not in kept:
            o.inputs.clear()
            o.outputs.clear()
    nodes, inserted = [], []
    for n, o in matched:
        inputs = [remap.get(id(t), t) for t in n.inputs]
        if o is not None:  # same name in the same slot: the node's own tensor (empty optional inputs too)
            inputs = [o.inputs[i] if i < len(o.inputs) and o.inputs[i].name == t.name else t
                      for i, t in enumerate(inputs)]
        if o is None:
            outputs = [remap.get(id(t), t) for t in n.outputs]
            n.inputs.clear()
            n.outputs.clear()
            n.inputs.extend(inputs)
            n.outputs.extend(outputs)
            for _, sub in subgraphs_of(n):
                _remap_captures(sub, remap)
            nodes.append(n)
            inserted.append(n)
            continue
        if [id(t) for t in o.inputs] != [id(t) for t in inputs]:
            o.inputs.clear()
            o.inputs.extend(inputs)
        for key in [k for k in o.attrs if k not in n.attrs]:
            del o.attrs[key]
        for key, value in n.attrs.items():
            if isinstance(value, gs.Graph) and isinstance(o.attrs.get(key), gs.Graph):
                continue  # paired and merged on its own
            if key not in o.attrs or not _same_attr(o.attrs[key], value):
                o.attrs[key] = value
                if isinstance(value, gs.Graph):
                    _remap_captures(value, remap)
        nodes.append(o)
    graph.nodes = nodes
    return inserted


def _remap_captures(sub: gs.Graph, remap: dict[int, gs.Tensor]) -> None:
    """Point a moved-in subgraph's outer-scope reads at the model's own tensors."""
    for g in walk_graphs(sub):
        for node in g.nodes:
            for i, t in enumerate(node.inputs):
                if id(t) in remap:
                    node.inputs[i] = remap[id(t)]
        for i, t in enumerate(g.outputs):
            if id(t) in remap:
                g.outputs[i] = remap[id(t)]


def _same_attr(a, b) -> bool:
    if isinstance(a, gs.Constant) or isinstance(b, gs.Constant):
        return (isinstance(a, gs.Constant) and isinstance(b, gs.Constant) and a.dtype == b.dtype
                and tuple(a.shape) == tuple(b.shape)
                and np.asarray(a.values).tobytes() == np.asarray(b.values).tobytes())
    return type(a) is type(b) and a == b


def _copy_records(model: Model, new: Model, inserted: list[gs.Node]) -> None:
    """Carry what the loader recorded about moved-in objects (node metadata, declared types)."""
    ids: set[int] = set()
    for node in inserted:
        ids.add(id(node))
        ids.update(id(t) for t in node.inputs + node.outputs)
        for _, sub in subgraphs_of(node):
            for g in walk_graphs(sub):
                ids.add(id(g))
                ids.update(id(t) for t in g.inputs + g.outputs)
                for n in g.nodes:
                    ids.add(id(n))
                    ids.update(id(t) for t in n.inputs + n.outputs)
    o, src = model.origin, new.origin
    for field in ("nodes", "value_info", "owner", "graphs", "value_info_order", "io_value_info",
                  "initializer_order", "initializer_inputs", "unused_initializers"):
        mine, theirs = getattr(o, field), getattr(src, field)
        mine.update({k: v for k, v in theirs.items() if k in ids})


# -- the version converter's error texts ---------------------------------------------
# convert_opset and inline_functions (whose inliner converts function bodies) both
# run onnx.version_converter before adopting its rewrite, and report its failures alike.

# onnx.version_converter failures, e.g. "...: Assertion `false` failed: No Adapter To Version $12 for Relu".
_OP_PATTERNS = (re.compile(r"\bfor (\w+)\s*$"), re.compile(r"No Previous Version of (\w+)"))


def converter_failed_op(message: str) -> str | None:
    """The op named in a version-converter error message, if any."""
    for pattern in _OP_PATTERNS:
        m = pattern.search(message.strip())
        if m:
            return m.group(1)
    return None


def converter_message(message: str) -> str:
    """The human part of a converter assertion (drops the C++ file and assertion text)."""
    text = message.strip().splitlines()[-1] if message.strip() else message
    return re.sub(r"\$(\d+)", r"\1", re.sub(r"^.*?failed: ", "", text))
