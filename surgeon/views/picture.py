"""Pictures of what changed: one self-contained HTML page (``diff --html``, ``apply --html``).

The page draws only the changed neighbourhood of the graph: removed nodes and
edges in red, added ones in green, rewired nodes in amber, and a few hops of
unchanged context in grey, laid out top to bottom in layers (a node below
everything it reads). Hovering a node shows its name, op and tensor types;
hovering an edge shows the tensor. The mouse wheel zooms and dragging pans.
Everything (SVG, style, a few lines of script) is inline: the page makes no
network request, so it can be attached to a CI run or a review.

Structure only: nodes, the tensors between them and their types, never
weights, so a picture of a model with gigabytes of weights costs no more than
one of its graph. Subgraphs (If/Loop bodies) are drawn as their parent node.
"""

from __future__ import annotations

import html
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import onnx

REMOVED, ADDED, REWIRED, CONTEXT = "removed", "added", "rewired", "context"
COLOURS = {REMOVED: "#d62728", ADDED: "#2ca02c", REWIRED: "#ff9f1c", CONTEXT: "#9aa0a6"}
MAX_DRAWN = 400
"""Nodes drawn per picture; a larger change is cut (the page says how much) and the tables list it all."""
HOPS = 2
"""Unchanged nodes drawn around the change, in edges away from it."""


@dataclass
class Structure:
    """The shape of a graph without its weights: what a picture needs."""

    nodes: list[tuple[str, str, list[str], list[str]]] = field(default_factory=list)
    """(key, op, input tensor names, output tensor names) in graph order; the key is the name, or
    ``<op -> outputs>`` for an unnamed node (as ``surgeon diff`` matches them)."""
    types: dict[str, str] = field(default_factory=dict)
    """tensor name -> its type, e.g. ``float32[N,3,224,224]``, where known."""
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


def _key(name: str, op: str, outputs: list[str]) -> str:
    return name or f"<{op} -> {', '.join(outputs)}>"


def structure_of_proto(model: onnx.ModelProto) -> Structure:
    """The main graph of ``model`` (a proto read without its external data is enough)."""
    from surgeon.views.inspect import op_key, type_text

    g = model.graph
    s = Structure(inputs=[v.name for v in g.input], outputs=[v.name for v in g.output])
    for v in [*g.input, *g.value_info, *g.output]:
        s.types[v.name] = type_text(v.type)
    for t in g.initializer:
        s.types.setdefault(t.name, f"{onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name}{list(t.dims)}"
                           if t.data_type else "?")
    for node in g.node:
        op = op_key(node)
        s.nodes.append((_key(node.name, op, list(node.output)), op, list(node.input), list(node.output)))
    return s


def structure_of_graph(graph: Any) -> Structure:
    """The main graph of a ``gs.Graph`` as it is now (for the picture of each step of a run)."""

    def type_of(t: Any) -> str:
        dtype = getattr(t, "dtype", None)
        shape = getattr(t, "shape", None)
        name = getattr(dtype, "__name__", None) or (str(dtype) if dtype is not None else "?")
        dims = "" if shape is None else "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"
        return name + dims

    s = Structure(inputs=[t.name for t in graph.inputs], outputs=[t.name for t in graph.outputs])
    for node in graph.nodes:
        op = f"{node.domain}::{node.op}" if node.domain not in ("", "ai.onnx", None) else node.op
        outputs = [t.name for t in node.outputs]
        s.nodes.append((_key(node.name, op, outputs), op, [t.name for t in node.inputs], outputs))
        for t in [*node.inputs, *node.outputs]:
            if t.name and t.name not in s.types:
                s.types[t.name] = type_of(t)
    for t in [*graph.inputs, *graph.outputs]:
        s.types.setdefault(t.name, type_of(t))
    return s


# -- the union graph and the changed region ----------------------------------------------------


@dataclass
class _Drawn:
    nodes: dict[str, dict[str, Any]]
    edges: list[dict[str, Any]]
    changed: int
    cut: int


def _graph_edges(s: Structure) -> tuple[dict[str, tuple[str, list[str], list[str]]], set[tuple[str, str, str]]]:
    """Node key -> (op, inputs, outputs) and the edges (from, to, tensor) with graph IO as pseudo-nodes."""
    nodes: dict[str, tuple[str, list[str], list[str]]] = {}
    seen: dict[str, int] = defaultdict(int)
    for key, op, inputs, outputs in s.nodes:
        seen[key] += 1
        unique = key if seen[key] == 1 else f"{key} #{seen[key]}"  # names need not be unique
        nodes[unique] = (op, inputs, outputs)
    producer = {t: key for key, (_, _, outs) in nodes.items() for t in outs if t}
    for name in s.inputs:
        nodes[f"input:{name}"] = ("graph input", [], [name])
        producer[name] = f"input:{name}"
    edges = set()
    for key, (_, inputs, _) in nodes.items():
        for t in inputs:
            if t in producer:
                edges.add((producer[t], key, t))
    for name in s.outputs:
        nodes[f"output:{name}"] = ("graph output", [name], [])
        if name in producer:
            edges.add((producer[name], f"output:{name}", name))
    return nodes, edges


def _region(a: Structure, b: Structure, hops: int, limit: int) -> _Drawn:
    nodes_a, edges_a = _graph_edges(a)
    nodes_b, edges_b = _graph_edges(b)
    state: dict[str, str] = {}
    for key in nodes_a.keys() - nodes_b.keys():
        state[key] = REMOVED
    for key in nodes_b.keys() - nodes_a.keys():
        state[key] = ADDED
    for key in nodes_a.keys() & nodes_b.keys():
        if nodes_a[key][0] != nodes_b[key][0]:
            state[key] = REWIRED  # same name, another op: changed in place
    edge_state = {e: REMOVED for e in edges_a - edges_b}
    edge_state.update({e: ADDED for e in edges_b - edges_a})
    edge_state.update({e: CONTEXT for e in edges_a & edges_b})
    for (src, dst, _), what in edge_state.items():
        if what != CONTEXT:
            for end in (src, dst):
                state.setdefault(end, REWIRED)
    changed = len(state)
    neighbours: dict[str, set[str]] = defaultdict(set)
    for src, dst, _ in edge_state:
        neighbours[src].add(dst)
        neighbours[dst].add(src)
    order = {key: i for i, key in enumerate([*nodes_a, *[k for k in nodes_b if k not in nodes_a]])}
    seeds = sorted(state, key=lambda k: order.get(k, 0))
    drawn = seeds[:limit]
    cut = len(seeds) - len(drawn)
    keep = set(drawn)
    frontier = deque((k, 0) for k in drawn)
    budget = 3 * len(drawn) + 50  # context is a few hops around the change, never the whole graph
    while frontier and len(keep) < budget:
        key, depth = frontier.popleft()
        if depth == hops:
            continue
        for other in sorted(neighbours[key], key=lambda k: order.get(k, 0)):
            if other not in keep and other not in state:  # changes past the cut stay out of the context
                keep.add(other)
                frontier.append((other, depth + 1))
    info = {}
    for key in keep:
        op, inputs, outputs = nodes_b.get(key) or nodes_a[key]
        info[key] = {"key": key, "op": op, "state": state.get(key, CONTEXT), "inputs": inputs, "outputs": outputs}
    edges = [{"from": s_, "to": d, "tensor": t, "state": what} for (s_, d, t), what in edge_state.items()
             if s_ in keep and d in keep]
    edges.sort(key=lambda e: (order.get(e["from"], 0), order.get(e["to"], 0), e["tensor"]))
    return _Drawn(info, edges, changed, cut)


def _layout(drawn: _Drawn) -> dict[str, tuple[float, float]]:
    """Layers by longest path (a node sits below all it reads), ordered by the mean place of its inputs."""
    preds: dict[str, list[str]] = defaultdict(list)
    succs: dict[str, list[str]] = defaultdict(list)
    for e in drawn.edges:
        preds[e["to"]].append(e["from"])
        succs[e["from"]].append(e["to"])
    indegree = {k: len(set(preds[k])) for k in drawn.nodes}
    layer = {k: 0 for k in drawn.nodes}
    queue = deque(k for k, d in indegree.items() if d == 0)
    done: set[str] = set()
    while queue:
        key = queue.popleft()
        done.add(key)
        for nxt in set(succs[key]):
            layer[nxt] = max(layer[nxt], layer[key] + 1)
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                queue.append(nxt)
    top = max(layer.values(), default=0)
    for key in drawn.nodes:
        if key not in done:  # the union of two orders can hold a cycle: put what remains below
            top += 1
            layer[key] = top
    rows: dict[int, list[str]] = defaultdict(list)
    for key in drawn.nodes:
        rows[layer[key]].append(key)
    place: dict[str, float] = {}
    for depth in sorted(rows):
        row = rows[depth]
        row.sort(key=lambda k: (sum(place.get(p, 0.0) for p in preds[k]) / max(len(preds[k]), 1), k))
        for i, key in enumerate(row):
            place[key] = float(i)
    width = max((len(r) for r in rows.values()), default=1)
    return {key: ((place[key] + (width - len(rows[layer[key]])) / 2) * 190 + 20, layer[key] * 90 + 20)
            for key in drawn.nodes}


def picture(a: Structure, b: Structure, title: str, hops: int = HOPS, limit: int = MAX_DRAWN) -> str:
    """An HTML section (heading, legend and SVG) of what changed from ``a`` to ``b``."""
    drawn = _region(a, b, hops, limit)
    head = f"<h2>{html.escape(title)}</h2>\n"
    if not drawn.changed:
        return head + "<p class='same'>no change to the graph's structure</p>\n"
    pos = _layout(drawn)
    w = max(x for x, _ in pos.values()) + 190
    h = max(y for _, y in pos.values()) + 80
    parts = [f"<svg class='graph' viewBox='0 0 {w:.0f} {h:.0f}' data-width='{w:.0f}' data-height='{h:.0f}' "
             "xmlns='http://www.w3.org/2000/svg'>"]
    types = dict(a.types)
    types.update((name, t) for name, t in b.types.items() if t != "?" or name not in types)
    for e in drawn.edges:
        (x1, y1), (x2, y2) = pos[e["from"]], pos[e["to"]]
        sx, sy, tx, ty = x1 + 75, y1 + 36, x2 + 75, y2
        bend = 95 if ty - sy > 90 else 0  # an edge that skips a layer bends aside, not through its nodes
        tip = f"{e['tensor']}: {types.get(e['tensor'], '?')} ({e['state']})"
        parts.append(f"<path class='edge {e['state']}' d='M{sx:.0f},{sy:.0f} C{sx + bend:.0f},{sy + 40:.0f} "
                     f"{tx + bend:.0f},{ty - 40:.0f} {tx:.0f},{ty:.0f}' stroke='{COLOURS[e['state']]}'>"
                     f"<title>{html.escape(tip)}</title></path>")
    for key, node in drawn.nodes.items():
        x, y = pos[key]
        colour = COLOURS[node["state"]]
        name = key.split(":", 1)[1] if node["op"] in ("graph input", "graph output") else key
        lines = [f"{name}", f"op: {node['op']} ({node['state']})"]
        lines += [f"in  {t}: {types.get(t, '?')}" for t in node["inputs"] if t]
        lines += [f"out {t}: {types.get(t, '?')}" for t in node["outputs"] if t]
        label = name if len(name) <= 22 else "…" + name[-21:]
        parts.append(
            f"<g class='node {node['state']}' data-name='{html.escape(name, quote=True)}' "
            f"transform='translate({x:.0f},{y:.0f})'><title>{html.escape(chr(10).join(lines))}</title>"
            f"<rect width='150' height='36' rx='6' fill='white' stroke='{colour}' stroke-width='2.5'/>"
            f"<text x='75' y='15' text-anchor='middle' class='op'>{html.escape(node['op'][:24])}</text>"
            f"<text x='75' y='29' text-anchor='middle' class='name'>{html.escape(label)}</text></g>")
    parts.append("</svg>")
    note = (f"<p class='cut'>{drawn.cut} more changed nodes are not drawn (the first {limit} are); the tables "
            "below list every change.</p>\n" if drawn.cut else "")
    return head + note + "\n".join(parts) + "\n"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.legend span { display: inline-block; margin-right: 1.2em; }
.legend i { display: inline-block; width: 1em; height: 1em; border: 2.5px solid; border-radius: 3px;
            vertical-align: middle; margin-right: .3em; }
svg.graph { width: 100%; height: 70vh; border: 1px solid #ddd; border-radius: 6px; cursor: grab; background: #fcfcfc; }
svg .edge { fill: none; stroke-width: 1.6; }
svg .edge.removed { stroke-dasharray: 5 3; }
svg .op { font-size: 12px; font-weight: 600; }
svg .name { font-size: 10px; fill: #555; }
svg .node:hover rect { stroke-width: 4; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
td, th { border: 1px solid #ddd; padding: .25em .6em; text-align: left; font-size: 13px; }
pre { background: #f6f8fa; padding: .8em; overflow: auto; }
"""

# Pan (drag) and zoom (wheel) by moving each SVG's viewBox: no library, no network.
_SCRIPT = """
for (const svg of document.querySelectorAll('svg.graph')) {
  let [x, y, w, h] = svg.getAttribute('viewBox').split(' ').map(Number);
  const set = () => svg.setAttribute('viewBox', `${x} ${y} ${w} ${h}`);
  svg.addEventListener('wheel', e => {
    e.preventDefault();
    const r = svg.getBoundingClientRect(), k = e.deltaY > 0 ? 1.15 : 1 / 1.15;
    const px = x + (e.clientX - r.left) / r.width * w, py = y + (e.clientY - r.top) / r.height * h;
    x = px - (px - x) * k; y = py - (py - y) * k; w *= k; h *= k; set();
  }, {passive: false});
  let drag = null;
  svg.addEventListener('mousedown', e => { drag = [e.clientX, e.clientY]; svg.style.cursor = 'grabbing'; });
  window.addEventListener('mouseup', () => { drag = null; svg.style.cursor = 'grab'; });
  window.addEventListener('mousemove', e => {
    if (!drag) return;
    const r = svg.getBoundingClientRect();
    x -= (e.clientX - drag[0]) / r.width * w; y -= (e.clientY - drag[1]) / r.height * h;
    drag = [e.clientX, e.clientY]; set();
  });
}
"""


def page(title: str, sections: list[str]) -> str:
    """A whole self-contained HTML page around ``sections``."""
    legend = "".join(f"<span><i style='border-color:{c}'></i>{what}</span>" for what, c in COLOURS.items())
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>\n"
            f"<h1>{html.escape(title)}</h1>\n<p class='legend'>{legend} — hover for names and tensor types; "
            "wheel to zoom, drag to pan</p>\n" + "\n".join(sections) + f"<script>{_SCRIPT}</script></body></html>\n")


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>\n"


def diff_page(a_path: str, b_path: str, a: Structure, b: Structure, delta: dict[str, Any], text: str) -> str:
    """The page of ``surgeon diff A B --html``: the picture, then the tables ``diff`` prints."""
    sections = [picture(a, b, f"{a_path} → {b_path}")]
    nodes = delta["nodes"]
    sections.append(table([("removed", x["name"], x["op"]) for x in nodes["removed"]] +
                          [("added", x["name"], x["op"]) for x in nodes["added"]], ("change", "node", "op")))
    sections.append(f"<h2>surgeon diff</h2>\n<pre>{html.escape(text)}</pre>\n")
    return page(f"surgeon diff: {b_path}", sections)


class RunPictures:
    """Collects a picture per step while a recipe runs (pass it as ``watch=`` to ``apply_file``)."""

    def __init__(self) -> None:
        self.before: Structure | None = None
        self.sections: list[str] = []

    def __call__(self, model: Any, report: Any) -> None:
        now = structure_of_graph(model.graph)
        if report is not None and self.before is not None:
            self.sections.append(picture(self.before, now, report.summary()))
        self.before = now

    def page(self, recipe: str, model: str) -> str:
        return page(f"surgeon apply {recipe} {model}", self.sections)
