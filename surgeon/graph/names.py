"""How surgeon names things: fresh tensor and node names, and how messages
quote names, label nodes and ops, list things and print sizes (one format
everywhere, so errors read alike)."""

from __future__ import annotations

from collections.abc import Iterable

import onnx
import onnx_graphsurgeon as gs

from surgeon.graph.walk import all_tensor_names, walk_graphs

# -- fresh names -----------------------------------------------------------------------


def fresh_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name_1``, ``name_2``... whichever is not taken (and take it).

    The functional form of :class:`Namer`, for a caller that keeps its own
    ``taken`` set (e.g. tensor names and node names apart)."""
    candidate, i = name, 0
    while candidate in taken:
        i += 1
        candidate = f"{name}_{i}"
    taken.add(candidate)
    return candidate


class Namer:
    """Hands out names that no tensor and no node of a graph (subgraphs included) uses yet.

    The taken names are collected once, when the namer is made, and every
    name handed out joins them: asking for many names stays linear in the
    graph's size (collecting them per name would be quadratic on a large
    model). Tensor and node names are avoided alike, so one namer serves
    for both, and a new Cast can share its output tensor's name.
    """

    def __init__(self, graph: gs.Graph | None = None, *, taken: Iterable[str] = ()) -> None:
        self.taken: set[str] = set(taken)
        if graph is not None:
            self.taken |= all_tensor_names(graph)
            self.taken |= {n.name for g in walk_graphs(graph) for n in g.nodes if n.name}

    def new(self, base: str) -> str:
        """``base``, or ``base_1``, ``base_2``... whichever is free; it is taken from now on."""
        return fresh_name(base, self.taken)

    def __contains__(self, name: str) -> bool:
        return name in self.taken


# -- labels in messages ----------------------------------------------------------------


def node_label(node: gs.Node | onnx.NodeProto) -> str:
    """How messages name a node: ``node '/conv1/Conv' (Conv)``, or ``an unnamed Relu node``.

    Takes a gs node or a ``NodeProto`` (code that works on protos labels its
    nodes the same way)."""
    op = node.op if isinstance(node, gs.Node) else node.op_type
    return node_label_of(node.name, op)


def node_label_of(name: str, op: str) -> str:
    """:func:`node_label` from a node's name and op, e.g. as read from onnx's error text."""
    return f"node '{name}' ({op})" if name else f"an unnamed {op} node"


def qualified_op(domain: str | None, op: str) -> str:
    """An op or local function as messages and reports name it: ``Relu``, ``devtech::FooOp``."""
    return f"{domain}::{op}" if domain and domain != "ai.onnx" else op


def quoted(names: Iterable[str]) -> str:
    """``'a', 'b'``: names as error messages list them."""
    return ", ".join(f"'{n}'" for n in names)


def listed(texts: Iterable[str], limit: int) -> str:
    """``a, b, c and 4 more``: the first ``limit`` texts, and how many were left out."""
    texts = list(texts)
    shown = ", ".join(texts[:limit])
    return shown + (f" and {len(texts) - limit} more" if len(texts) > limit else "")


def byte_size(n: float) -> str:
    """A byte count for people: ``1000 bytes``, ``3.2 KiB``, ``1.5 GiB``."""
    for unit in ("bytes", "KiB", "MiB"):
        if n < 1024:
            return f"{n} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
