"""simplify: the recipe-free "make it clean" step."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

from surgeon.graph.shape_values import shared_shapes
from surgeon.graph.walk import walk_graphs
from surgeon.io.model import Model
from surgeon.passes.compose import call_pass
from surgeon.passes.contract import REASSOCIATED, verified_by
from surgeon.passes.result import PassResult
from surgeon.passes.spec import Min


@verified_by(REASSOCIATED)
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
    not_folded: list = []
    other_notes: list[str] = []
    step_notes: dict[str, None] = {}  # what noops and fuse said about single nodes, once each
    rounds = 0
    # Each step asks for shapes; one whose graph did not change since the last step reuses them.
    with shared_shapes():
        for rounds in range(1, max_iterations + 1):  # noqa: B007 (read after the loop: the rounds run)
            # Each step is the registered pass itself, so simplify can never drift
            # from what the same steps do when a recipe lists them one by one.
            fold = call_pass(model, "fold_constants", size_threshold=size_threshold, max_iterations=max_iterations)
            noops = call_pass(model, "eliminate_noops")
            fusion = call_pass(model, "fuse")
            deduped = call_pass(model, "dedupe_initializers")
            nodes_before = _node_count(model)
            call_pass(model, "cleanup")
            round_folded = fold.details["folded"]
            folded += round_folded
            not_folded = fold.details["not_folded"]  # the last round's reasons are the ones that hold
            other_notes = [n for n in fold.notes if n.startswith(("could not fold", "shape inference"))]
            step_notes.update(dict.fromkeys(n for n in noops.notes + fusion.notes
                                            if not n.startswith(("removed no-op(s):", "fused:", "nothing to fuse"))))
            removed.update(noops.details["removed"])
            fused.update(fusion.details["fused"])
            merged += deduped.details["merged"]
            saved += deduped.details["bytes_saved"]
            if not (round_folded or fold.details["reshape_targets"] or fold.details["ifs_inlined"]
                    or noops.details["removed"] or fusion.details["fused"] or deduped.details["merged"]
                    or _node_count(model) != nodes_before):
                break
        else:
            result.notes.append(f"stopped after {rounds} rounds with more to simplify; "
                                "raise max_iterations or run the step again")
    if folded:
        result.headline.append(f"folded {folded} node{'' if folded == 1 else 's'}")
    result.notes[:0] = other_notes + list(step_notes)
    if removed:
        result.notes.insert(0, "removed no-op(s): " + ", ".join(f"{op} x{n}" for op, n in sorted(removed.items())))
    if fused:
        result.notes.insert(0, "fused: " + ", ".join(f"{p} x{n}" for p, n in fused.items()))
    if merged:
        result.notes.append(f"merged {merged} duplicate constant(s), {saved} bytes")
    result.details = {
        "rounds": rounds,
        "folded": folded,
        "not_folded": not_folded,
        "noops_removed": dict(removed),
        "fused": dict(fused),
        "constants_merged": merged,
    }
    return result


def _node_count(model: Model) -> int:
    return sum(len(g.nodes) for g in walk_graphs(model.graph))
