"""Running passes: recipe steps in order, each with a report of what it changed.

The runner, not each pass, tracks changes: it snapshots every graph before a
pass and diffs after it (:func:`_snapshot` says what it sees and its limits),
so a user pass written as a bare gs script gets the same report as a built-in:
nodes removed, added, rewired, attributes changed, constant values changed,
tensor types, shapes and names changed, graph inputs/outputs changed, nodes
reordered. What it cannot see (model-level data such as metadata or opsets,
initializers no node reads) a pass reports with ``PassResult.changed``.
"""

from __future__ import annotations

import gc
import time
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from surgeon.errors import Diagnostic, Location, StepError, SurgeonError
from surgeon.graph.collector import also_long_lived, long_lived
from surgeon.graph.correspondence import Correspondence
from surgeon.graph.quiet import quiet_gs
from surgeon.graph.walk import subgraphs_of
from surgeon.io.model import Model
from surgeon.passes.context import in_recipe_folder
from surgeon.passes.contract import record
from surgeon.passes.custom_ops import recipe_scope, undeclared_warnings
from surgeon.passes.expect import check_expect
from surgeon.passes.registry import PassRegistry
from surgeon.passes.registry import registry as default_registry
from surgeon.passes.result import PassResult
from surgeon.progress import Progress, task
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
    """What one step did: what the runner saw change, and what the pass said."""

    step: Step
    removed: list[NodeRef] = field(default_factory=list)
    added: list[NodeRef] = field(default_factory=list)
    rewired: list[NodeRef] = field(default_factory=list)
    """Nodes that stayed but whose inputs or outputs changed."""
    ops_changed: list[tuple[NodeRef, NodeRef]] = field(default_factory=list)
    """Nodes that stayed, wired as before, whose op (or domain) changed: (before, after)."""
    attrs_changed: list[NodeRef] = field(default_factory=list)
    """Nodes that stayed but whose attributes changed (set, replaced or removed)."""
    values_changed: list[str] = field(default_factory=list)
    """Constants (initializers, tensor attributes) that stayed but whose values changed."""
    types_changed: list[str] = field(default_factory=list)
    """Tensors that stayed but whose dtype or shape changed."""
    io_changed: list[str] = field(default_factory=list)
    """Which graph interfaces changed: "inputs", "outputs", "outputs of graph 'body'"..."""
    io_delta: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    """Per entry of ``io_changed``: the names of the tensors that joined and that left it."""
    reordered: bool = False
    """Nodes that stayed changed their order."""
    renamed: dict[str, str] = field(default_factory=dict)
    """Tensor renames the pass reported, old -> new: the renames of the model's
    interface that verify follows (``PassResult.renamed``)."""
    tensors_renamed: dict[str, str] = field(default_factory=dict)
    """Every tensor that kept its object but changed its name, old -> new, as the
    runner saw it; includes internal renames (preprocess moves the old input to
    'images_preprocessed'), which verify must not follow."""
    headline: list[str] = field(default_factory=list)
    """Phrases the pass added to the summary (e.g. "folded 4 nodes")."""
    pass_changed: bool = False
    """The pass said it changed something the runner cannot see (``PassResult.changed``)."""
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.removed or self.added or self.rewired or self.ops_changed or self.attrs_changed
                    or self.values_changed or self.types_changed or self.io_changed or self.reordered or self.renamed
                    or self.tensors_renamed or self.pass_changed)

    def changes(self) -> str:
        """What changed, in words ("removed 1 node (Relu); changed attributes of 2 nodes")."""
        parts = []
        if self.removed:
            parts.append(f"removed {_count(len(self.removed), 'node')} ({_ops(self.removed)})")
        if self.added:
            parts.append(f"added {_count(len(self.added), 'node')} ({_ops(self.added)})")
        if self.ops_changed:
            pairs: dict[str, int] = {}
            for old, new in self.ops_changed:
                key = f"{_ops([old])} -> {_ops([new])}"
                pairs[key] = pairs.get(key, 0) + 1
            parts.append(f"changed op of {_count(len(self.ops_changed), 'node')} ("
                         + ", ".join(k if v == 1 or len(pairs) == 1 else f"{k} x{v}" for k, v in pairs.items()) + ")")
        if self.rewired:
            parts.append(f"rewired {_count(len(self.rewired), 'node')}")
        if self.attrs_changed:
            parts.append(f"changed attributes of {_count(len(self.attrs_changed), 'node')}")
        if self.values_changed:
            parts.append(f"changed values of {_count(len(self.values_changed), 'constant')}")
        if self.types_changed:
            parts.append(f"changed the type or shape of {_count(len(self.types_changed), 'tensor')}")
        if self.io_changed:
            parts.append("changed graph " + ", ".join(self.io_changed[:1]) + _delta(self.io_delta, self.io_changed[0])
                         + "".join(f", {k}{_delta(self.io_delta, k)}" for k in self.io_changed[1:]))
        if self.reordered:
            parts.append("reordered nodes")
        renamed = {**self.tensors_renamed, **self.renamed}
        if renamed:
            listed = ""
            if len(renamed) <= 4:  # a few renames are worth reading in full
                listed = " (" + ", ".join(f"{a} -> {b}" for a, b in renamed.items()) + ")"
            parts.append(f"renamed {_count(len(renamed), 'tensor')}{listed}")
        parts += self.headline
        return "; ".join(parts) if parts else ("changed" if self.pass_changed else "no change")

    def summary(self) -> str:
        return f"{self.step.label}: {self.changes()}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step.index + 1,
            "id": self.step.id,
            "pass": self.step.pass_name,
            "params": self.step.params,
            "location": str(self.step.location) if self.step.location else None,
            "changed": self.changed,
            "removed": [vars(n) for n in self.removed],
            "added": [vars(n) for n in self.added],
            "rewired": [vars(n) for n in self.rewired],
            "ops_changed": [{**vars(new), "was": vars(old)} for old, new in self.ops_changed],
            "attrs_changed": [vars(n) for n in self.attrs_changed],
            "values_changed": self.values_changed,
            "types_changed": self.types_changed,
            "io_changed": self.io_changed,
            "io_delta": {k: {"joined": v[0], "left": v[1]} for k, v in self.io_delta.items()},
            "reordered": self.reordered,
            "renamed": self.renamed,
            "tensors_renamed": self.tensors_renamed,
            "folded": self.details.get("folded", 0),  # schema 1 had it here; fold passes report it in details
            "notes": self.notes,
            "details": self.details,
            "seconds": round(self.seconds, 6),
        }


def _delta(deltas: dict[str, tuple[list[str], list[str]]], key: str) -> str:
    """`` (+ 'a', - 'b')``: the tensors that joined and left a graph's inputs or outputs."""
    joined, left = deltas.get(key, ([], []))
    names = [f"+ '{n}'" for n in joined[:4]] + [f"- '{n}'" for n in left[:4]]
    more = len(joined) + len(left) - len(names)
    if not names:
        return " (reordered)" if key in deltas else ""
    return " (" + ", ".join(names) + (f" and {more} more" if more > 0 else "") + ")"


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
    warnings: list[str] = field(default_factory=list)
    """What the run noticed but did not refuse (a declared custom op the model does not run)."""
    correspondence: Correspondence = field(default_factory=Correspondence)
    """What verification compares: the steps' contracts composed (:mod:`surgeon.passes.contract`)."""
    verify_by_default: bool = False
    """A step's contract asks for verification even without --verify (a precision change)."""

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

SMALL_ARRAY_BYTES = 4096
"""Constant values up to this size are hashed whole on every snapshot; larger
ones are compared by identity, shape, dtype and a few sampled elements."""
_SAMPLES = 16


@dataclass
class _Snapshot:
    """What the runner remembers of a graph between two steps (see :func:`_snapshot`)."""

    nodes: dict[int, tuple] = field(default_factory=dict)
    """id(node) -> (node, signature, id of its local function or 0, attribute key, its outputs).
    The signature is (name, op, domain, input ids, output ids, output keys), an
    output key being (name, dtype, shape, type) of a variable."""
    tensors: dict[int, tuple] = field(default_factory=dict)
    """Tensors no node produces (constants, graph inputs, tensor attributes) and graph
    outputs: id(tensor) -> (tensor, name, type key, reference to its values or None, label)."""
    graphs: dict[int, tuple] = field(default_factory=dict)
    """id(graph) -> (graph, input ids, output ids, node ids in order)."""
    main: int = 0
    functions: set[int] = field(default_factory=set)


def _snapshot(graph: gs.Graph) -> _Snapshot:
    """Everything a step may change that the runner can see, in time linear in the graph.

    Per node of every graph (local function bodies and ``If``/``Loop``/``Scan``
    bodies included): name, op, domain, wiring (by tensor identity), a key of
    its attributes, and name, dtype and shape of its outputs. Per constant
    (initializers, tensor attributes such as a Constant node's ``value``): a
    fingerprint of its values. Per graph: its inputs, outputs and node order.
    An unchanged node costs the diff one tuple comparison.

    Values are never loaded or copied: lazily held weights (gs ``LazyValues``,
    external data) are compared by identity, shape and dtype only. Arrays up
    to ``SMALL_ARRAY_BYTES`` are hashed, so any edit of a small constant is
    seen, in place or not; a larger array is compared by identity (a weak
    reference, so a freed array's reused id never hides a replacement), shape,
    dtype and a few sampled elements: an in-place edit of a large array that
    leaves those samples alone is not seen (a pass that makes one sets
    ``PassResult.changed``).

    Holding the nodes, their outputs and the other tensors keeps their ids from
    being reused while the snapshot lives. A function that appears or
    disappears as a whole (inlining) does not count its body as nodes added or
    removed.
    """
    snap = _Snapshot(main=id(graph), functions={id(f) for f in graph.functions or []})
    nodes, tensors, graphs = snap.nodes, snap.tensors, snap.graphs
    pending = [(graph, 0)] + [(f, id(f)) for f in graph.functions or []]
    variable = gs.Variable
    only_variables = {variable}.issuperset  # one C call per node instead of a loop over its inputs
    paused = gc.isenabled()
    gc.disable()  # hundreds of thousands of small tuples would trigger full collections over the whole model
    try:
        while pending:
            g, owner = pending.pop()
            for n in g.nodes:
                ins, outs = n.inputs, tuple(n.outputs)
                if len(outs) == 1 and type(outs[0]) is variable:  # most nodes: spare a comprehension
                    t = outs[0]
                    shape = t.shape
                    out_keys: tuple[tuple[Any, ...], ...] = \
                        ((t.name, t.dtype, None if shape is None else tuple(shape), t.type),)
                    out_ids: tuple[int, ...] = (id(t),)
                else:
                    out_keys = tuple([(t.name, t.dtype, None if t.shape is None else tuple(t.shape), t.type)
                                      if type(t) is variable else _output_key(t, tensors) for t in outs])
                    out_ids = tuple(map(id, outs))
                if not only_variables(map(type, ins)):  # constants: their values are tracked
                    for t in ins:
                        if type(t) is not variable and id(t) not in tensors:
                            tensors[id(t)] = _tensor_entry(t, t.name)
                attrs = None
                if n.attrs:
                    attrs = _attrs_key(n, tensors)
                    pending.extend((sub, owner) for _, sub in subgraphs_of(n))
                nodes[id(n)] = (n, (n.name, n.op, n.domain, tuple(map(id, ins)), out_ids, out_keys), owner, attrs,
                                outs)
            for t in (*g.inputs, *g.outputs):
                if id(t) not in tensors:
                    tensors[id(t)] = _tensor_entry(t, t.name)
            graphs[id(g)] = (g, tuple(map(id, g.inputs)), tuple(map(id, g.outputs)), tuple(map(id, g.nodes)))
    finally:
        if paused:
            gc.enable()
    return snap


def _output_key(t: gs.Tensor, tensors: dict[int, tuple]) -> tuple:
    """A node output that is not a plain Variable (a constant made in place by ``to_constant``)."""
    entry = tensors[id(t)] = _tensor_entry(t, t.name)
    return (entry[1], "tensor", id(t))


def _tensor_entry(t: gs.Tensor, label: str) -> tuple:
    if isinstance(t, gs.Constant):
        values = t._values  # never ``t.values``: that loads lazy weights
        ref: Callable[[], Any]
        try:
            ref = weakref.ref(values)
        except TypeError:
            ref = lambda: values  # noqa: E731 - a strong reference, same interface (values is not rebound)
        return (t, t.name, ("constant", _values_key(values), getattr(t, "_export_dtype", None)), ref, label)
    shape = t.shape  # a Variable subclass, or a bare gs.Tensor
    return (t, t.name, (t.dtype, None if shape is None else tuple(shape), getattr(t, "type", None)), None, label)


def _values_key(values: Any) -> tuple:
    if isinstance(values, np.ndarray):
        token: int | None
        if values.nbytes <= SMALL_ARRAY_BYTES:
            token = hash(values.tobytes())
        else:
            step = max(1, values.size // _SAMPLES)
            token = hash(values.flat[::step].tobytes()) if values.dtype != object else None
        return (values.shape, values.dtype.str, token)
    # LazyValues, SparseValues: identity, shape and dtype (never loaded)
    shape = getattr(values, "shape", None)
    return (type(values).__name__, None if shape is None else tuple(shape), str(getattr(values, "dtype", None)))


def _attrs_key(node: gs.Node, tensors: dict[int, tuple]) -> tuple:
    """A cheap, comparable key of a node's attributes. Tensor attributes are keyed
    by identity and their values tracked with the tensors; subgraphs by identity
    (their nodes are in the snapshot themselves)."""
    return tuple((name, _attr_key(value, node, name, tensors)) for name, value in node.attrs.items())


def _attr_key(value: Any, node: gs.Node, name: str, tensors: dict[int, tuple]) -> Any:
    kind = type(value)
    if kind in (int, float, str, bool, bytes) or value is None:
        return value
    if kind in (list, tuple):
        return (kind.__name__, tuple(_attr_key(v, node, name, tensors) for v in value))
    if isinstance(value, gs.Tensor):
        if id(value) not in tensors:
            owner = node.name or (node.outputs[0].name if node.outputs else node.op)
            tensors[id(value)] = _tensor_entry(value, f"{owner}.{name}")  # e.g. 'k.value' of a Constant node
        return ("tensor", id(value))
    if isinstance(value, gs.Graph):
        return ("graph", id(value))
    if isinstance(value, np.ndarray):
        return ("array", _values_key(value))
    return ("object", value)  # an AttributeRef, a numpy scalar, a dtype: compared with ==


def _diff(before: _Snapshot, after: _Snapshot, d: StepReport) -> None:
    """Record in ``d`` what changed between two snapshots, in time linear in their size."""
    paused = gc.isenabled()
    gc.disable()
    try:
        bn, an = before.nodes, after.nodes
        kept_functions = before.functions & after.functions
        moved_before: dict[int, tuple] = {}  # outputs of nodes removed or changed: id -> output key
        moved_after: dict[int, tuple] = {}
        removed, rewired = d.removed, d.rewired
        get = an.get
        for key, e in bn.items():
            a = get(key)
            es = e[1]
            if a is None:
                if e[2] == 0 or e[2] in kept_functions:  # _counted, inlined: half the nodes may go
                    removed.append(_ref(es))
                _moved(moved_before, es)
                continue
            as_ = a[1]
            if es != as_:  # names, ops, ids, dtypes, shapes of str/int/None: plain comparisons
                if es[3] != as_[3] or es[4] != as_[4] or es[0] != as_[0]:
                    rewired.append(_ref(as_))
                elif es[1] != as_[1] or es[2] != as_[2]:  # only the op or its domain
                    d.ops_changed.append((_ref(es), _ref(as_)))
                _moved(moved_before, es)
                _moved(moved_after, as_)
            if (e[3] is not None or a[3] is not None) and not _same(e[3], a[3]):
                d.attrs_changed.append(_ref(as_))
        for key, a in an.items():
            if key not in bn:
                if _counted(a, kept_functions):
                    d.added.append(_ref(a[1]))
                _moved(moved_after, a[1])
        d.rewired.sort(key=lambda r: (r.name, r.op))
        d.ops_changed.sort(key=lambda r: (r[1].name, r[1].op))
        d.attrs_changed.sort(key=lambda r: (r.name, r.op))
        for key, e in moved_before.items():  # node outputs that kept their object
            a = moved_after.get(key)
            if a is not None and len(e) == 4 and len(a) == 4:
                if e[0] != a[0]:
                    d.tensors_renamed[e[0]] = a[0]
                if e[1:] != a[1:]:
                    d.types_changed.append(a[0])
        types_changed = set(d.types_changed)  # `in` on the list is quadratic when a pass retypes every tensor
        at = after.tensors
        for key, e in before.tensors.items():
            a = at.get(key)
            if a is None:
                continue
            if e[1] != a[1] and e[1] not in d.tensors_renamed:
                d.tensors_renamed[e[1]] = a[1]
            if e[3] is not None or a[3] is not None:  # a constant (before or after)
                if e[3] is None or a[3] is None or e[3]() is not a[3]() or e[2] != a[2]:
                    d.values_changed.append(a[1] or a[4])
            elif e[2] != a[2] and a[1] not in types_changed:
                types_changed.add(a[1])
                d.types_changed.append(a[1])
        ag = after.graphs
        for key, (g, ins, outs, order) in before.graphs.items():
            a = ag.get(key)
            if a is None and key == before.main:  # the pass put a new graph in the model's place
                a = ag[after.main]
            if a is None:
                continue
            where = "" if key == before.main else f" of graph '{g.name}'"
            for kind, was, now in (("inputs", ins, a[1]), ("outputs", outs, a[2])):
                if was != now:
                    d.io_changed.append(kind + where)
                    kept_ids = set(was) & set(now)
                    d.io_delta[kind + where] = ([at[t][1] for t in now if t not in kept_ids and t in at],
                                                [before.tensors[t][1] for t in was
                                                 if t not in kept_ids and t in before.tensors])
            if not d.reordered and order != a[3]:
                kept = [k for k in order if k in an]
                d.reordered = kept != [k for k in a[3] if k in bn]
    finally:
        if paused:
            gc.enable()


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # e.g. a numpy comparison that is not a plain bool
        return False


def _counted(entry: tuple, functions: set[int]) -> bool:
    """A node of the main graph or of a function both snapshots hold."""
    return entry[2] == 0 or entry[2] in functions


def _moved(moved: dict[int, tuple], sig: tuple) -> None:
    """Remember the output keys of a node that went or changed, by output id."""
    ids = sig[4]
    if len(ids) == 1:
        moved[ids[0]] = sig[5][0]
    else:
        moved.update(zip(ids, sig[5]))


_new_object = object.__new__


def _ref(sig: tuple) -> NodeRef:
    domain = sig[2] or ""
    ref = _new_object(NodeRef)  # NodeRef(...) without the frozen dataclass's object.__setattr__ per field
    ref.__dict__.update(name=sig[0] or "", op=sig[1], domain="" if domain == "ai.onnx" else domain)
    return ref


# -- running -----------------------------------------------------------------------

def run_step(model: Model, step: Step, registry: PassRegistry = default_registry, *,
             in_recipe: bool = True) -> StepReport:
    """Run one step; a failure becomes a :class:`StepError` naming the step and its recipe line
    (``in_recipe=False``: the pass's own error, for direct Python calls)."""
    return _run_step(model, step, registry, in_recipe, _snapshot(model.graph))[0]


def _run_step(model: Model, step: Step, registry: PassRegistry, in_recipe: bool,
              before: _Snapshot) -> tuple[StepReport, _Snapshot]:
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
    if isinstance(returned, gs.Graph) and not any(g is returned for g in model.graphs()):
        # A gs script that builds and returns a new graph (rather than editing the one it got)
        # means that graph: it takes the model's place instead of being dropped silently.
        model.graph = returned
    after = _snapshot(model.graph)
    also_long_lived()  # the snapshot lives through the next step
    report = StepReport(step, seconds=seconds)
    _diff(before, after, report)
    if isinstance(returned, PassResult):
        report.renamed = dict(returned.renamed)
        report.headline = list(returned.headline)
        report.pass_changed = bool(returned.changed)
        report.notes = list(returned.notes)
        report.details = dict(returned.details)
    elif returned is not None and not (returned is model or isinstance(returned, gs.Graph)):
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


def apply(recipe: Recipe | str | Path, model: Model, *, registry: PassRegistry = default_registry,
          progress: Progress | None = None,
          watch: Callable[[Model, StepReport | None], None] | None = None) -> ApplyResult:
    """Run every step of ``recipe`` (a Recipe or a YAML path) on ``model``, in place.

    The recipe's ``custom_ops:`` declarations are active while the steps run.

    ``progress`` (a :class:`surgeon.progress.Progress`) hears of each step as it starts and ends.
    ``watch`` is called with the model before the first step (report ``None``) and after each step
    with its report (``apply --html`` draws each step from it)."""
    from surgeon.recipe.parse import load_recipe

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, registry=registry)
    if not isinstance(model, Model):
        raise TypeError(f"apply() takes a surgeon.Model (from surgeon.load), not {type(model).__name__}")
    result = ApplyResult(recipe, warnings=undeclared_warnings(recipe, model))
    # The model's objects live through every step: frozen, the collector skips them instead of
    # rescanning hundreds of thousands of nodes and tensors each time a pass allocates.
    with long_lived(), recipe_scope(recipe), in_recipe_folder(recipe.path), \
            task(progress, "steps", total=len(recipe.steps), unit="step") as steps:
        snapshot = _snapshot(model.graph)
        also_long_lived()
        if watch is not None:
            watch(model, None)
        for step in recipe.steps:
            steps.describe(step.label)
            report, snapshot = _run_step(model, step, registry, True, snapshot)
            result.steps.append(report)
            contract = registry.get(step.pass_name).contract
            record(result.correspondence, contract, report, model)
            result.verify_by_default |= bool(contract is not None and contract.verify_by_default)
            if watch is not None:
                watch(model, report)
            if step.expect:
                check_expect(model, report)
            steps.advance()
    return result


def run_pass(model: Model, name: str, /, **params: Any) -> StepReport:
    """Run one pass by name with keyword parameters: ``run_pass(model, "remove_node", op="FooOp")``."""
    return run_step(model, Step(name, params, index=0, location=None), in_recipe=False)


__all__ = ["ApplyResult", "NodeRef", "StepReport", "apply", "run_pass", "run_step", "Location"]
