"""dedupe_initializers: make identical constants one."""

from __future__ import annotations

import hashlib
from typing import Annotated

import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import SparseValues

from surgeon.graph.constants import const_bytes, const_nbytes
from surgeon.graph.edit import replace_uses
from surgeon.graph.walk import walk_graphs
from surgeon.io.model import Model
from surgeon.passes.contract import EQUAL, verified_by
from surgeon.passes.result import PassResult
from surgeon.passes.spec import Min


@verified_by(EQUAL)
def dedupe_initializers(model: Model, *, min_size: Annotated[int, Min(0)] = 0) -> PassResult:
    """Merge constants with the same dtype, shape and bytes into one initializer.

    Parameters:
        min_size: leave constants smaller than this many bytes alone.

    Rules:
        1. Constants are grouped by dtype, shape and size first; only
           constants that share all three are read (external weights stay on
           disk otherwise) and compared by a SHA-256 of their bytes, then byte
           for byte, both read in 16 MiB pieces from the file (a weight is
           never whole in memory).
        2. Every reader of a duplicate reads the first of its group (in graph
           order, outer graphs first) instead, in subgraphs too; the file
           places the kept initializer where all its readers see it.
        3. A constant that is a graph output keeps its name and is not
           merged; sparse constants are not merged.
        4. Values are compared as bytes: ``0.0`` and ``-0.0`` differ, two NaNs
           with the same bits are equal.

    Example:
        version: 1
        steps:
          - pass: dedupe_initializers
            with: {min_size: 16}

    Reports:
        how many constants were merged and the bytes saved
        (``details.merged``, ``details.bytes_saved``).
    """
    merged, saved = dedupe(model, min_size)
    result = PassResult()
    if merged:
        result.notes.append(f"merged {merged} duplicate constant(s), {saved} bytes")
    result.details = {"merged": merged, "bytes_saved": saved}
    return result


def dedupe(model: Model, min_size: int = 0) -> tuple[int, int]:
    """Merge duplicate constants; returns (constants merged, bytes saved)."""
    graphs = list(walk_graphs(model.graph))
    outputs = {id(t) for g in graphs for t in g.outputs}
    consts: dict[int, gs.Constant] = {}
    for g in graphs:
        for node in g.nodes:
            for t in node.inputs:
                if isinstance(t, gs.Constant) and id(t) not in outputs and not isinstance(t._values, SparseValues):
                    consts.setdefault(id(t), t)
    by_layout: dict[tuple, list[gs.Constant]] = {}
    for c in consts.values():
        size = const_nbytes(c)
        if size >= min_size:
            by_layout.setdefault((str(c.dtype), tuple(c.shape), size), []).append(c)
    replace: list[tuple[gs.Constant, gs.Constant]] = []  # (duplicate, the constant kept)
    saved = 0
    for group in by_layout.values():
        if len(group) < 2:
            continue
        kept: dict[bytes, list[gs.Constant]] = {}
        for c in group:
            digest = _digest(c)
            # Candidates are compared piece by piece from their files: no constant is ever whole in memory.
            same = next((k for k in kept.get(digest, []) if _same_bytes(k, c)), None)
            if same is None:
                kept.setdefault(digest, []).append(c)
            else:
                replace.append((c, same))
                saved += const_nbytes(c)
    if not replace:
        return 0, 0
    for duplicate, kept_one in replace:
        replace_uses(duplicate, kept_one)
    return len(replace), saved


def _digest(c: gs.Constant) -> bytes:
    h = hashlib.sha256()
    for piece in const_bytes(c):
        h.update(piece)
    return h.digest()


def _same_bytes(a: gs.Constant, b: gs.Constant) -> bool:
    """Byte-for-byte equality, reading both constants in pieces (of equal total size: same layout)."""
    pa, pb = const_bytes(a), const_bytes(b)
    buf_a = buf_b = b""
    while True:
        if not buf_a:
            buf_a = next(pa, b"")
        if not buf_b:
            buf_b = next(pb, b"")
        if not buf_a or not buf_b:
            return not buf_a and not buf_b
        n = min(len(buf_a), len(buf_b))
        if buf_a[:n] != buf_b[:n]:
            return False
        buf_a, buf_b = buf_a[n:], buf_b[n:]
