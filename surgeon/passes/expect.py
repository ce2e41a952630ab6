"""Step assertions (``expect:``): checks a recipe states about what a step did.

A recipe runs unattended in CI long after it was written; when the model is
re-exported and a step now removes three nodes instead of one, the recipe
should stop right there, at that step's line, instead of shipping a different
model. Keys are validated when the recipe is parsed (``EXPECT_FIELDS``).
"""

from __future__ import annotations

from typing import Any

from surgeon.errors import Diagnostic, StepError, suggestion_hint
from surgeon.graph.names import listed, qualified_op
from surgeon.graph.walk import node_domain, walk_graphs
from surgeon.io.model import Model

_HINT = "the model or a pass changed since the recipe was written: check the step, then update 'expect'"


def check_expect(model: Model, report: Any) -> None:
    """Raise a :class:`StepError` listing every failed expectation of ``report.step``."""
    step = report.step
    expect = step.expect or {}
    failures: list[tuple[str, str | None]] = []
    removed, added = len(report.removed), len(report.added)
    if "changed" in expect and report.changed != expect["changed"]:
        failures.append(("expected a change, the step changed nothing" if expect["changed"] else
                         f"expected no change, the step {report.changes()}", _HINT))
    if "removed" in expect and removed != expect["removed"]:
        failures.append((f"expected {_nodes(expect['removed'])} removed, the step removed {removed}"
                         + _list(report.removed), _HINT))
    if "added" in expect and added != expect["added"]:
        failures.append((f"expected {_nodes(expect['added'])} added, the step added {added}"
                         + _list(report.added), _HINT))
    if "min_removed" in expect and removed < expect["min_removed"]:
        failures.append((f"expected at least {_nodes(expect['min_removed'])} removed, the step removed {removed}",
                         _HINT))
    if "ops_absent" in expect:
        present = _ops(model)
        for op in expect["ops_absent"]:
            if op in present:
                failures.append((f"expected no '{op}' node, found {present[op]}", _HINT))
    for key, tensors in (("inputs", model.graph.inputs), ("outputs", model.graph.outputs)):
        if key in expect:
            names = [t.name for t in tensors]
            if names != list(expect[key]):
                failures.append((f"expected graph {key} {expect[key]}, the model has {names}", _HINT))
    if "shapes" in expect:
        tensors = model.graph.tensors()
        for name, dims in expect["shapes"].items():
            failures += _shape_failure(name, dims, tensors)
    if failures:
        raise StepError(diagnostics=[Diagnostic(f"{step.label}: expect: {msg}", step.location, hint)
                                     for msg, hint in failures])


def _shape_failure(name: str, dims: list, tensors: dict) -> list[tuple[str, str | None]]:
    tensor = tensors.get(name)
    if tensor is None:
        return [(f"expected tensor '{name}' with shape {dims}, but the model has no tensor '{name}'",
                 suggestion_hint(name, tensors) or _HINT)]
    shape = None if tensor.shape is None else list(tensor.shape)
    # null in the recipe accepts any dimension (unknown or not).
    if shape is None or len(shape) != len(dims) or any(d is not None and d != s for d, s in zip(dims, shape)):
        return [(f"expected tensor '{name}' to have shape {dims}, it has {shape}", _HINT)]
    return []


def _ops(model: Model) -> dict[str, int]:
    """Count of nodes per op (local function bodies included), under both 'Op' and 'domain::Op' spellings."""
    counts: dict[str, int] = {}
    in_functions = [n for f in model.graph.functions for g in walk_graphs(f) for n in g.nodes]
    for node in [*model.nodes(), *in_functions]:
        keys = {node.op, qualified_op(node_domain(node), node.op)}
        for key in keys:
            counts[key] = counts.get(key, 0) + 1
    return counts


def _nodes(n: int) -> str:
    return f"{n} node" + ("" if n == 1 else "s")


def _list(refs: list) -> str:
    if not refs:
        return ""
    return ": " + listed((str(r) for r in refs), 5)
