"""Running passes: recipe steps in order, each with a report of what it changed.

The runner, not each pass, tracks changes: it snapshots every node of every
graph before a pass and diffs after it, so a user pass written as a bare gs
script gets the same report (nodes removed, added, rewired) as a built-in.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx_graphsurgeon as gs

from surgeon.errors import Diagnostic, Location, StepError, SurgeonError
from surgeon.passes.expect import check_expect
from surgeon.graph.quiet import quiet_gs
from surgeon.graph.walk import subgraphs_of
from surgeon.io.model import Model
from surgeon.passes.registry import PassRegistry, registry as default_registry
from surgeon.passes.result import PassResult
from surgeon.recipe.model import Recipe, Step


@dataclass(frozen=True)
class NodeRef:
    name: str
    op: str
    domain: str = ""

    def __str__(self) -> str:
        op = f"{self.domain}::{self.op}" if self.domain else self.op
        return f"{self.name or '<unnamed>'} ({op})"


@dataclass
class StepReport:
    """What one step did."""

    step: Step
    removed: list[NodeRef] = field(default_factory=list)
    added: list[NodeRef] = field(default_factory=list)
    rewired: list[NodeRef] = field(default_factory=list)
    """Nodes that stayed but whose op, inputs or outputs changed."""
    renamed: dict[str, str] = field(default_factory=dict)
    folded: int = 0
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.removed or self.added or self.rewired or self.renamed or self.folded
                    or self.details.get("changed"))

    def summary(self) -> str:
        parts = []
        if self.removed:
            parts.append(f"removed {_count(len(self.removed), 'node')} ({_ops(self.removed)})")
        if self.added:
            parts.append(f"added {_count(len(self.added), 'node')} ({_ops(self.added)})")
        if self.rewired:
            parts.append(f"rewired {_count(len(self.rewired), 'node')}")
        if self.renamed:
            listed = ""
            if len(self.renamed) <= 4:  # a few renames are worth reading in full
                listed = " (" + ", ".join(f"{a} -> {b}" for a, b in self.renamed.items()) + ")"
            parts.append(f"renamed {_count(len(self.renamed), 'tensor')}{listed}")
        if self.folded:
            parts.append(f"folded {_count(self.folded, 'node')}")
        text = "; ".join(parts) if parts else ("no change" if not self.details.get("changed") else "changed")
        return f"{self.step.label}: {text}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step.index + 1,
            "id": self.step.id,
            "pass": self.step.pass_name,
            "params": self.step.params,
            "location": str(self.step.location) if self.step.location else None,
            "removed": [vars(n) for n in self.removed],
            "added": [vars(n) for n in self.added],
            "rewired": [vars(n) for n in self.rewired],
            "renamed": self.renamed,
            "folded": self.folded,
            "notes": self.notes,
            "details": self.details,
            "seconds": round(self.seconds, 6),
        }


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _ops(nodes: list[NodeRef]) -> str:
    counts: dict[str, int] = {}
    for n in nodes:
        key = f"{n.domain}::{n.op}" if n.domain else n.op
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k} x{v}" if v > 1 else k for k, v in counts.items())


@dataclass
class ApplyResult:
    recipe: Recipe
    steps: list[StepReport] = field(default_factory=list)

    @property
    def renamed(self) -> dict[str, str]:
        """All tensor renames, composed across steps (original name -> final name)."""
        final: dict[str, str] = {}
        for report in self.steps:
            step = report.renamed
            # Names renamed before take their newest name; original names get an entry.
            earlier_targets = set(final.values())
            final = {k: step.get(v, v) for k, v in final.items()}
            for old, new in step.items():
                if old not in earlier_targets:
                    final[old] = new
        return final

    def summary(self) -> str:
        return "\n".join(r.summary() for r in self.steps)


# -- snapshots ---------------------------------------------------------------------

def _snapshot(graph: gs.Graph) -> dict[int, tuple[gs.Node, tuple, int]]:
    """Per node of every graph: (node, signature, id of its local function or 0).

    Wiring is compared by tensor identity; renames are reported by the passes
    that make them. Holding the nodes keeps their ids from being reused while
    the snapshot lives. Local function bodies are included (remove_node
    reaches into them); a function that appears or disappears as a whole
    (inlining) does not count its body as nodes added or removed.
    """
    snap = {}
    pending = [(graph, 0)] + [(f, id(f)) for f in graph.functions or []]
    while pending:
        g, owner = pending.pop()
        for n in g.nodes:
            snap[id(n)] = (n, (n.name, n.op, n.domain, tuple(map(id, n.inputs)), tuple(map(id, n.outputs))), owner)
            if n.attrs:
                pending.extend((sub, owner) for _, sub in subgraphs_of(n))
    return snap


def _counted(entry: tuple, functions: set[int]) -> bool:
    return entry[2] == 0 or entry[2] in functions


def _ref(sig: tuple) -> NodeRef:
    domain = sig[2] or ""
    return NodeRef(sig[0] or "", sig[1], "" if domain == "ai.onnx" else domain)


# -- running -----------------------------------------------------------------------

def run_step(model: Model, step: Step, registry: PassRegistry = default_registry, *,
             in_recipe: bool = True) -> StepReport:
    """Run one step; a failure becomes a :class:`StepError` naming the step and its recipe line
    (``in_recipe=False``: the pass's own error, for direct Python calls)."""
    return _run_step(model, step, registry, in_recipe, _snapshot(model.graph))[0]


def _run_step(model: Model, step: Step, registry: PassRegistry, in_recipe: bool,
              before: dict[int, tuple]) -> tuple[StepReport, dict[int, tuple]]:
    """Run a step given the snapshot taken before it; returns its report and the snapshot after it
    (which is the next step's "before": one snapshot per step, not two)."""
    spec = registry.get(step.pass_name)
    start = time.perf_counter()
    try:
        with quiet_gs():
            returned = spec.call(model, step.params)
    except SurgeonError as exc:
        if not in_recipe:
            raise
        raise StepError(diagnostics=[_locate(d, step) for d in exc.diagnostics]) from exc
    except Exception as exc:
        if spec.source == "builtin":
            raise  # a crash in surgeon's own pass is a bug: let the CLI show the traceback
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        raise StepError(
            f"{step.label}: the pass raised {type(exc).__name__}: {exc}",
            location=step.location,
            hint=f"raised at {frame.filename}:{frame.lineno} ({spec.source}); the model was not saved",
        ) from exc
    seconds = time.perf_counter() - start
    after = _snapshot(model.graph)
    report = StepReport(step, seconds=seconds)
    kept_functions = {e[2] for e in before.values()} & {e[2] for e in after.values()}
    report.removed = [_ref(e[1]) for key, e in before.items() if key not in after and _counted(e, kept_functions)]
    report.added = [_ref(e[1]) for key, e in after.items() if key not in before and _counted(e, kept_functions)]
    report.rewired = [_ref(after[key][1]) for key in before.keys() & after.keys()
                      if before[key][1] != after[key][1]]
    report.rewired.sort(key=lambda r: (r.name, r.op))
    if isinstance(returned, PassResult):
        report.renamed = dict(returned.renamed)
        report.folded = returned.folded
        report.notes = list(returned.notes)
        report.details = dict(returned.details)
    elif returned is not None and not isinstance(returned, (gs.Graph, Model)):
        raise StepError(
            f"{step.label}: the pass returned {type(returned).__name__}; a pass returns a PassResult or None",
            location=step.location,
            hint="return surgeon.PassResult(...) to report renames or notes, or nothing at all",
        )
    return report, after


def _locate(diag: Diagnostic, step: Step) -> Diagnostic:
    location = diag.location or step.location
    message = diag.message if diag.message.startswith(step.label) else f"{step.label}: {diag.message}"
    return Diagnostic(message, location, diag.hint, diag.severity)


def apply(recipe: Recipe | str | Path, model: Model, *, registry: PassRegistry = default_registry) -> ApplyResult:
    """Run every step of ``recipe`` (a Recipe or a YAML path) on ``model``, in place."""
    from surgeon.recipe.parse import load_recipe

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, registry=registry)
    if not isinstance(model, Model):
        raise TypeError(f"apply() takes a surgeon.Model (from surgeon.load), not {type(model).__name__}")
    result = ApplyResult(recipe)
    snapshot = _snapshot(model.graph)
    for step in recipe.steps:
        report, snapshot = _run_step(model, step, registry, True, snapshot)
        result.steps.append(report)
        if step.expect:
            check_expect(model, report)
    return result


def run_pass(model: Model, name: str, /, **params: Any) -> StepReport:
    """Run one pass by name with keyword parameters: ``run_pass(model, "remove_node", op="FooOp")``."""
    return run_step(model, Step(name, params, index=0, location=None), in_recipe=False)


__all__ = ["ApplyResult", "NodeRef", "StepReport", "apply", "run_pass", "run_step", "Location"]
