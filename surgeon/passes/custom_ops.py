"""Declaring custom ops from Python and from recipes (the graph layer's registry, checked here).

``surgeon.declare_op`` checks a declaration exactly as a recipe's
``custom_ops:`` entry is checked (same messages, without file positions) and
registers it for every model from then on; a plugin module calls it when it
is imported. The runner makes a recipe's own declarations active while the
recipe runs (:func:`recipe_scope`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from surgeon.errors import Diagnostic, RecipeError
from surgeon.graph import custom_ops as registry
from surgeon.graph.walk import node_domain, walk_graphs
from surgeon.io.model import Model
from surgeon.recipe.custom_ops import CustomOp, check_custom_op
from surgeon.recipe.model import Recipe


def declare_op(op: str, domain: str = "", *, outputs: Sequence[dict[str, Any]]) -> None:
    """Declare what a custom op does to the dtypes and shapes of its outputs, for every model.

    ``outputs``: one mapping per output, as in a recipe's ``custom_ops:``:
    ``{"dtype": "input0", "shape": ["input0[0]", 3, "out_h"]}``. Shape
    inference (and every pass that uses it) then flows past the op. A second
    declaration of the same op replaces the first. Raises a RecipeError listing
    every problem of the declaration.
    """
    item = {"op": op, "domain": domain, "outputs": list(outputs)}
    problems = check_custom_op(item, ("declare_op",))
    if problems:
        raise RecipeError(diagnostics=[Diagnostic(f"declare_op({op!r}): {p.message}", None, p.hint)
                                       for p in problems])
    registry.register(registry.OpDecl(op, domain, tuple({"dtype": o["dtype"], "shape": o.get("shape")}
                                                        for o in outputs), origin="declare_op"))


def _decl(c: CustomOp, recipe: Recipe) -> registry.OpDecl:
    where = f"{c.location.file}:{c.location.line}" if c.location is not None else (recipe.path or "the recipe")
    return registry.OpDecl(c.op, c.domain, c.outputs, origin=where)


@contextmanager
def recipe_scope(recipe: Recipe) -> Iterator[None]:
    """The recipe's ``custom_ops:`` active inside the block."""
    with registry.scoped(_decl(c, recipe) for c in recipe.custom_ops):
        yield


def undeclared_warnings(recipe: Recipe, model: Model) -> list[str]:
    """A warning for each op the recipe declares that no node of the model (subgraphs and local
    functions included) runs: a typo, or a recipe written for another model."""
    if not recipe.custom_ops:
        return []
    present = {(registry.normal_domain(node_domain(n)), n.op) for g in walk_graphs(model.graph) for n in g.nodes}
    for f in getattr(model.graph, "functions", []) or []:
        present |= {(registry.normal_domain(node_domain(n)), n.op) for g in walk_graphs(f) for n in g.nodes}
    warnings = []
    for c in recipe.custom_ops:
        d = _decl(c, recipe)
        if d.key not in present:
            warnings.append(f"{d.origin}: custom op '{d.label}' is declared but the model has no such node "
                            "(the declaration is unused)")
    return warnings
