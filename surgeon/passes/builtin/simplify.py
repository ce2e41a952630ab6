"""simplify: the recipe-free "make it clean" step."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

from surgeon.graph.walk import walk_graphs
from surgeon.io.model import Model
from surgeon.graph.shape_values import ShapeInfo
from surgeon.passes.builtin.fold import FoldStats, fold_model
from surgeon.passes.builtin.fuse import PATTERNS, fuse_model
from surgeon.passes.builtin.noops import eliminate
from surgeon.passes.compose import call_pass
from surgeon.passes.result import PassResult
from surgeon.passes.spec import Min


def simplify(model: Model, *, max_iterations: Annotated[int, Min(1)] = 10,
             size_threshold: Annotated[int, Min(0, hint="set it to null to fold constants of any size")]
             | None = None) -> PassResult:
    """Fold constants, remove no-ops, fuse, merge duplicate weights and clean up, until nothing changes.

    Parameters:
        max_iterations: rounds at most (each round runs every step once).
        size_threshold: passed to fold_constants: no constant larger than this
            many bytes is created (null: no limit).

    Rules:
        1. One round runs ``fold_constants`` (with shapes), ``eliminate_noops``,
           ``fuse`` (every pattern), ``dedupe_initializers`` and ``cleanup``;
           rounds repeat until one changes nothing, or ``max_iterations``.
        2. Each step keeps its own guarantees: outputs stay numerically equal,
           graph input and output names stay, subgraphs are simplified too.

    Example:
        version: 1
        steps:
          - pass: simplify

    Reports:
        ``folded``, and per step what it did (``details``: no-ops removed and
        fusions by kind, constants merged, nodes that could not be folded and
        why), the rounds run.
    """
    result = PassResult()
    removed: Counter = Counter()
    fused: Counter = Counter()
    merged = saved = folded = 0
    stats = FoldStats()
    rounds = 0
    for rounds in range(1, max_iterations + 1):
        stats = fold_model(model, size_threshold=size_threshold, max_iterations=max_iterations)
        folded += stats.folded
        info = ShapeInfo(model)
        round_removed = eliminate(model, info, result)
        round_fused = fuse_model(model, info, list(PATTERNS), result)
        deduped = call_pass(model, "dedupe_initializers").details
        round_merged, round_saved = deduped["merged"], deduped["bytes_saved"]
        nodes_before = _node_count(model)
        call_pass(model, "cleanup")
        removed += round_removed
        fused += round_fused
        merged, saved = merged + round_merged, saved + round_saved
        if not (stats.folded or stats.reshapes or stats.inlined or round_removed or round_fused or round_merged
                or _node_count(model) != nodes_before):
            break
    else:
        result.notes.append(f"stopped after {rounds} rounds with more to simplify; "
                            "raise max_iterations or run the step again")
    folded_result = stats.result()
    if folded:
        result.headline.append(f"folded {folded} node{'' if folded == 1 else 's'}")
    result.notes[:0] = [n for n in folded_result.notes if n.startswith(("could not fold", "shape inference"))]
    if removed:
        result.notes.insert(0, "removed no-op(s): " + ", ".join(f"{op} x{n}" for op, n in sorted(removed.items())))
    if fused:
        result.notes.insert(0, "fused: " + ", ".join(f"{p} x{n}" for p, n in fused.items()))
    if merged:
        result.notes.append(f"merged {merged} duplicate constant(s), {saved} bytes")
    result.details = {
        "rounds": rounds,
        "folded": folded,
        "not_folded": folded_result.details["not_folded"],
        "noops_removed": dict(removed),
        "fused": dict(fused),
        "constants_merged": merged,
    }
    return result


def _node_count(model: Model) -> int:
    return sum(len(g.nodes) for g in walk_graphs(model.graph))
