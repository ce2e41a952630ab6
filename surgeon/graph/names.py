"""How surgeon names things: fresh tensor and node names, and how messages
quote names and label nodes (one format everywhere, so errors read alike)."""

from __future__ import annotations

from typing import Iterable

import onnx_graphsurgeon as gs


def fresh_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name_1``, ``name_2``... whichever is not taken (and take it)."""
    candidate, i = name, 0
    while candidate in taken:
        i += 1
        candidate = f"{name}_{i}"
    taken.add(candidate)
    return candidate


def node_label(node: gs.Node) -> str:
    """How messages name a node: ``node '/conv1/Conv' (Conv)``, or ``an unnamed Relu node``."""
    return f"node '{node.name}' ({node.op})" if node.name else f"an unnamed {node.op} node"


def quoted(names: Iterable[str]) -> str:
    """``'a', 'b'``: names as error messages list them."""
    return ", ".join(f"'{n}'" for n in names)
