"""Numeric verification: run a baseline and the edited model in onnxruntime on the
same inputs and compare every output both have.

The baseline is the original model, or a ``reference`` model when one is given
(the original often cannot run: that is why it is being edited, e.g. a custom
``FooOp``). When no baseline can run the result is ``skipped`` with the reason
- never a silent pass.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from surgeon.errors import SurgeonError
from surgeon.graph.correspondence import Correspondence, Expr, InputFeed, Tensor, evaluate, tensors_of
from surgeon.graph.ops import (
    DEFAULT_DOMAINS,
    default_opset,
    foreign_label,
    foreign_nodes,
    proto_node_label,
    proto_node_reads,
)
from surgeon.io import samples
from surgeon.io.runtime import cpu_session, load_arrays
from surgeon.io.samples import input_specs
from surgeon.progress import Progress, Task, task

# (rtol, atol) per output dtype. Integers and booleans must match exactly.
_TOLERANCES = {
    np.dtype(np.float16): (1e-2, 1e-2),
    np.dtype(np.float32): (1e-4, 1e-5),
    np.dtype(np.float64): (1e-7, 1e-10),
}
# Contract policies (surgeon.graph.correspondence.TOLERANCES): (rtol, atol as a fraction of the output's scale).
_POLICIES = {"reassociated": (1e-4, 1e-4), "fp16": (1e-2, 1e-2)}


class VerificationError(SurgeonError):
    """The edited model's outputs differ from the baseline's (or it cannot run, or the comparison proves nothing).

    ``report`` holds the full :class:`VerifyReport`; the workflow attaches the
    run's ``FileResult`` as ``result`` so a JSON report can still be written.
    """

    def __init__(self, report: VerifyReport, writing: bool = True) -> None:
        self.report = report
        self.result: Any = None
        if not writing:  # `surgeon verify A B`: two existing models, nothing is written either way
            hint = {"mismatch": "the models compute different things on these inputs" + (
                        "; B computes in float16: compare at float16 tolerances with --tolerance fp16"
                        if report.tolerance == "dtype" and report.float16_inside else ""),
                    "inconclusive": "random inputs do not exercise these models: give real inputs with --inputs "
                                    "FILE.npz (numpy.savez, one array per input name), or input sizes with --dim"
                    }.get(report.status, "see the notes above")
        elif report.status == "mismatch" and report.tolerance == "fp16":
            hint = ("float16 moved the outputs beyond its tolerance; nothing was written.\n"
                    "Keep the nodes that drift in float32 (node_block_list, op_block_list; the step's notes say "
                    "what stays float32 and why), give inputs that represent the model's real data with --inputs, "
                    "or write it anyway with --no-verify")
        elif report.status == "mismatch":
            hint = ("the edit changed what the model computes; nothing was written.\n"
                    "Check the recipe, or give inputs that represent the model's real data with --inputs")
        elif report.status == "inconclusive":
            hint = ("nothing was written: random inputs do not exercise this model. Give real inputs with "
                    "--inputs FILE.npz (numpy.savez, one array per input name), or input sizes with --dim")
        else:
            hint = "nothing was written; see the notes above"
        super().__init__(f"verification failed: {report.summary()}", hint=hint)


@dataclass
class OutputCheck:
    """The comparison of one edited tensor (a graph output, or an intermediate one a contract names)."""

    name: str
    """What it is compared with, in the baseline (a tensor name, or a reference computation)."""
    edited_name: str
    dtype: str = ""
    shape: list[int] = field(default_factory=list)
    ok: bool = True
    rtol: float = 0.0
    atol: float = 0.0
    tolerance: str = ""
    """Where the tolerance comes from ("float32", "fp16: 1e-2 of the output's scale 3.1", "given")."""
    max_abs: float = 0.0
    max_rel: float = 0.0
    worst_index: list[int] | None = None
    expected: float | None = None
    got: float | None = None
    per_element: bool = False
    """The atol differs per element (``atol`` is the largest); ``allowed`` is the worst element's."""
    allowed: float | None = None
    problem: str | None = None
    """Why the output could not be compared element-wise (shape, dtype, missing)."""
    compared_with: str = ""
    """The baseline's side in words: "'output'" (its tensor), "det_boxes of the reference NMS of 'output0'"."""
    intermediate: bool = False
    """An intermediate tensor of the edited model (exposed for the comparison), not a graph output."""
    role: str = ""
    """Why an intermediate tensor is compared, when a contract did not ask for it ("Sigmoid's input, for y")."""
    uninformative: str | None = None
    """Why this comparison proves nothing (constant, all zero, NaN, independent of the inputs), or None."""

    def describe(self) -> str:
        label = self.edited_name + (f" (intermediate; {self.role})" if self.role else
                                    " (intermediate)" if self.intermediate else "")
        if self.compared_with and self.compared_with != f"'{self.edited_name}'":
            label += f" vs {self.compared_with}"
        if self.problem:
            return f"{label}: {self.problem}"
        tol = f"rtol {self.rtol:g}, " + (f"atol up to {self.atol:.3g} per element" if self.per_element
                                         else f"atol {self.atol:g}")
        if self.tolerance:
            tol += f": {self.tolerance}"
        head = f"{label}: {'match' if self.ok else 'MISMATCH'}, max abs error {self.max_abs:.3g}, " \
               f"max rel error {self.max_rel:.3g} ({tol})"
        if not self.ok and self.worst_index is not None:
            head += f"; worst element {tuple(self.worst_index)}: expected {self.expected:.9g}, got {self.got:.9g}"
            if self.allowed is not None:
                head += f" (allowed error {self.allowed:.3g})"
        if self.uninformative:
            head += f"; proves little: {self.uninformative}"
        return head

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class VerifyReport:
    """Result of :func:`verify`. ``status`` is ``match``, ``mismatch``, ``failed``
    (the edited model cannot run, or no output could be compared), ``inconclusive``
    (every compared output is constant, zero, NaN or independent of the inputs) or
    ``skipped`` (no baseline could run; ``notes`` says why). ``surgeon apply`` sets
    ``incomplete`` when a precision change matched but left outputs behind an op
    onnxruntime cannot run uncompared."""

    status: str
    baseline: str
    outputs: list[OutputCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dims: dict[str, int] = field(default_factory=dict)
    dim_sources: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    inputs: str = "random"
    input_shapes: dict[str, str] = field(default_factory=dict)
    """The edited model's inputs as run: name -> dtype[shape]."""
    original_inputs: dict[str, str] = field(default_factory=dict)
    """The baseline's inputs as run: name -> dtype[shape]."""
    input_sources: dict[str, str] = field(default_factory=dict)
    """How each edited input reached the baseline (as is, cast, preprocessed, computed by it)."""
    contracts: list[str] = field(default_factory=list)
    """Per recipe step, the verification contract it declared."""
    not_compared: list[str] = field(default_factory=list)
    """Graph outputs of the edited model that were not compared (the notes say why)."""
    behind_foreign_ops: list[str] = field(default_factory=list)
    """Of those, the ones computed from an op onnxruntime cannot run (not by choice of a step)."""
    float16_inside: bool = False
    """The edited model computes in float16 (its float tensors or Casts are float16)."""
    remedy: str = ""
    """When ``skipped``: what would let the comparison run ("a --reference that runs"); empty when nothing would."""
    tolerance: str = "dtype"
    """The tolerance policy the contracts called for (dtype, reassociated, fp16)."""

    @property
    def ok(self) -> bool:
        return self.status == "match"

    def summary(self) -> str:
        lines = [f"{self.status} against {self.baseline} ({self.inputs} inputs)"]
        if self.not_compared and self.outputs:
            lines[0] += f"; {len(self.not_compared)} output(s) not compared: " + \
                ", ".join(repr(n) for n in self.not_compared) + " (see the notes)"
        if self.input_shapes:
            lines.append("  inputs: " + ", ".join(f"{n} {s}" for n, s in self.input_shapes.items()))
            for name, how in self.input_sources.items():
                if "fed the same values" not in how:
                    lines.append(f"    {name} -> {how}")
        if self.dims:
            lines.append("  dims: " + ", ".join(f"{k}={v} ({self.dim_sources.get(k, 'given')})"
                                                for k, v in self.dims.items()))
        lines += [f"  {o.describe()}" for o in self.outputs]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "baseline": self.baseline, "inputs": self.inputs, "seed": self.seed,
                "dims": self.dims, "dim_sources": self.dim_sources, "input_shapes": self.input_shapes,
                "original_inputs": self.original_inputs, "input_sources": self.input_sources,
                "tolerance": self.tolerance, "contracts": self.contracts, "not_compared": self.not_compared,
                "outputs": [o.to_dict() for o in self.outputs], "notes": self.notes}


def tolerance(dtype: np.dtype, rtol: float | None = None, atol: float | None = None) -> tuple[float, float]:
    """(rtol, atol) for an output dtype; overrides apply to floating-point outputs only."""
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        return 0.0, 0.0
    base_rtol, base_atol = _TOLERANCES.get(dtype, (1e-4, 1e-5))
    return (base_rtol if rtol is None else rtol), (base_atol if atol is None else atol)


def _tolerance(want: np.ndarray, policy: str, rtol: float | None, atol: float | None) -> tuple[float, float, str]:
    """(rtol, atol, where they come from) for one output under a contract's policy."""
    if not np.issubdtype(want.dtype, np.floating):
        return 0.0, 0.0, ""
    r, a = tolerance(want.dtype)
    source = ""
    if policy in _POLICIES:
        finite = np.abs(want[np.isfinite(want)]) if want.size else np.zeros(0)
        scale = float(finite.max()) if finite.size else 0.0
        pr, pa = _POLICIES[policy]
        r, a = max(r, pr), max(a, pa * scale)
        source = f"{policy}: atol {pa:g} of the output's scale {scale:.3g}"
    if rtol is not None or atol is not None:
        r, a = (r if rtol is None else rtol), (a if atol is None else atol)
        source = "given"
    return r, a, source


# Bounded activations (probabilities, gates) at the end of a model: float16 (or reordered
# arithmetic) errs in proportion to the scale of the values flowing *into* them, and the
# activation carries that error through its slope. Measured against the output's own
# scale alone, the PP-OCRv4 detector's sigmoid map fails (0.017 against 0.0093 allowed,
# on random images) at an error its logits show to be ordinary float16 rounding (0.4 % of
# their scale of 54). So when such an output is beyond its own tolerance, verification
# compares the activation's input in both models at the policy's tolerance (of *its*
# scale), and if that matches, allows each output element what that tolerance carried
# through the activation moves it. Comparing the input itself, not only the carried
# bound, keeps the check tight: the bound is a worst case over every error pattern, and
# 5 % more weight in the recognizer's classifier stays within it after a Softmax, but
# its logits are 2.7x beyond their tolerance.
_BOUNDED = ("Sigmoid", "Tanh", "HardSigmoid", "Softmax")


@dataclass(frozen=True)
class _Bounded:
    """A bounded activation of the baseline that produces a compared tensor."""

    op: str
    input: str
    """The baseline's tensor it reads (exposed as an output for the comparison)."""
    alpha: float = 0.2
    beta: float = 0.5
    axis: int = -1
    flattened: bool = False
    """Softmax before opset 13: it normalizes over every axis from ``axis`` on, not just ``axis``."""
    output: str = ""
    """The activation's output in the baseline."""
    layout: tuple[tuple[str, tuple[int, ...] | None, str], ...] = ()
    """Ops that only rearrange its output on the way to the compared tensor: (op, Transpose's perm, output)."""

    def rearranged(self, values: np.ndarray, base_values: dict[str, Any]) -> np.ndarray:
        """``values`` (shaped as the activation's output) rearranged as ``layout`` does, to the compared
        tensor's shape (reshape-like ops keep the element order; the shapes come from the baseline's run)."""
        for op, perm, output in self.layout:
            if op == "Transpose":
                values = values.transpose(perm) if perm is not None else values.transpose()
            else:
                values = values.reshape(np.shape(base_values[output]))
        return values

    def carried(self, z: np.ndarray, want: np.ndarray, atol: float, rtol: float) -> np.ndarray:
        """Per element, how far the output moves when each input element moves by ``atol + rtol * |z|``."""
        z = z.astype(np.float64)
        step = atol + rtol * np.abs(np.nan_to_num(z))
        if self.op == "Softmax":
            # p_i = e^z_i / sum_j e^z_j: inputs moving by d_j at most move p_i by a factor of at most
            # e^(d_i + max_j d_j), so by p_i * (e^(d_i + D) - 1).
            axis = self.axis % z.ndim
            axes = tuple(range(axis, z.ndim)) if self.flattened else (axis,)
            widest = step.max(axis=axes, keepdims=True)
            return np.minimum(np.abs(want.astype(np.float64)) * np.expm1(step + widest), 1.0)
        fns: dict[str, Callable[[np.ndarray], np.ndarray]] = {
            "Sigmoid": lambda v: 0.5 * (1 + np.tanh(v / 2)), "Tanh": np.tanh,
            "HardSigmoid": lambda v: np.clip(self.alpha * v + self.beta, 0, 1)}
        f = fns[self.op]
        at = f(z)
        return np.maximum(np.abs(f(z + step) - at), np.abs(at - f(z - step)))


# Ops that only move elements around: an output made of a bounded activation's values through them has
# those values, rearranged (Reshape's shape input and the others' axes change no value).
_LAYOUT_OPS = ("Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten")


def _bounded_producers(producer: dict[str, onnx.NodeProto], names: list[str], opset: int) -> dict[str, _Bounded]:
    """Compared baseline tensors (of ``names``) that a bounded activation produces, directly or through ops
    that only rearrange its values (``_LAYOUT_OPS``); ``producer``: tensor -> the node writing it."""
    found: dict[str, _Bounded] = {}
    for name in names:
        node = producer.get(name)
        layout: list[tuple[str, tuple[int, ...] | None, str]] = []
        while node is not None and node.op_type in _LAYOUT_OPS and node.domain in DEFAULT_DOMAINS and node.input:
            perm = next((tuple(a.ints) for a in node.attribute if a.name == "perm"), None)
            layout.append((node.op_type, perm, node.output[0]))
            node = producer.get(node.input[0])
        if node is None or node.op_type not in _BOUNDED or node.domain not in DEFAULT_DOMAINS \
                or not node.input or not node.input[0]:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        bounded = _Bounded(node.op_type, node.input[0], float(attrs.get("alpha", 0.2)),
                           float(attrs.get("beta", 0.5)), output=node.output[0], layout=tuple(reversed(layout)))
        if node.op_type == "Softmax":
            # Opset 13 normalizes over `axis` (default -1); before, over every axis from `axis` (default 1) on.
            bounded = dataclasses.replace(bounded, axis=int(attrs.get("axis", -1 if opset >= 13 else 1)),
                                          flattened=opset < 13)
        found[name] = bounded
    return found


def verify(
    original: Any,
    edited: Any,
    *,
    renamed: dict[str, str] | None = None,
    correspondence: Correspondence | None = None,
    reference: Any = None,
    rtol: float | None = None,
    atol: float | None = None,
    dims: dict[str, int] | None = None,
    recipe_dims: dict[str, int] | None = None,
    inputs: dict[str, np.ndarray] | str | Path | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> VerifyReport:
    """Compare ``edited`` with ``original`` (or with ``reference`` when given) in onnxruntime.

    Models are paths, ``ModelProto`` s or :class:`surgeon.Model` s. What is compared
    with what comes from ``correspondence`` (``ApplyResult.correspondence``: the
    recipe's verification contracts composed; :mod:`surgeon.graph.correspondence`);
    without one, each edited output is compared with the original's tensor of the
    same name, following ``renamed`` (baseline name -> edited name). Intermediate
    tensors of the original are exposed as outputs when an edited output names one.

    Symbolic dimensions take their sizes from ``dims``, then ``recipe_dims``, then
    the shapes of the given ``inputs``, the models, and a default by kind
    (:mod:`surgeon.io.samples`); ``inputs`` is a dict of arrays or an ``.npz`` file
    (otherwise seeded random inputs). When every compared output is constant, zero,
    NaN or the same for two different random inputs the status is ``inconclusive``.
    ``progress`` hears of its stages.
    """
    if correspondence is None:
        correspondence = Correspondence()
        correspondence.rename(dict(renamed or {}))
    with task(progress, "verifying", total=4, unit="stage") as stages:
        return _Verification(original, edited, correspondence, reference, rtol, atol, dict(dims or {}),
                             dict(recipe_dims or {}), inputs, seed, stages).run()


class _Model:
    """What verification reads of a model without running it (weights are not read)."""

    def __init__(self, model: Any) -> None:
        self.source = model
        self.proto = _proto(model)
        self.specs = input_specs(self.proto)
        self.outputs = [o.name for o in self.proto.graph.output]
        g = self.proto.graph
        self.tensors = {t for n in g.node for t in n.output if t} | {i.name for i in g.input} | \
            {i.name for i in g.initializer}

    @functools.cached_property
    def producer(self) -> dict[str, onnx.NodeProto]:
        """Main-graph tensor -> the node that writes it."""
        return {t: n for n in self.proto.graph.node for t in n.output if t}

    @functools.cached_property
    def typed(self) -> dict[str, onnx.ValueInfoProto]:
        """Main-graph tensors the model declares an element type for (value_info, outputs) -> their entry."""
        return {v.name: v for v in [*self.proto.graph.value_info, *self.proto.graph.output]
                if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type}

    @functools.cached_property
    def foreign(self) -> list[onnx.NodeProto]:
        """Main-graph nodes onnxruntime cannot run (graph.ops.foreign_nodes)."""
        return foreign_nodes(self.proto)

    def session(self, outputs: list[str], prune: bool = False, cut: dict[str, onnx.ValueInfoProto] | None = None):
        """A session that can return ``outputs`` (intermediate tensors are exposed;
        ``prune``: nodes no requested output needs are dropped, e.g. a plugin onnxruntime lacks;
        ``cut``: tensors fed from outside instead of computed, by their types: the nodes writing them go)."""
        extra = [n for n in outputs if n not in self.outputs]
        if not extra and not prune and not cut:
            return _session(self.source)
        proto = _full_proto(self.source)
        for name in extra:
            proto.graph.output.append(onnx.ValueInfoProto(name=name))
        if cut:
            kept = [n for n in proto.graph.node if not any(t in cut for t in n.output)]
            del proto.graph.node[:]
            proto.graph.node.extend(kept)
            proto.graph.input.extend(cut.values())
        if prune:
            keep = _needed_nodes(proto.graph, set(outputs))
            kept = [n for i, n in enumerate(proto.graph.node) if i in keep]
            del proto.graph.node[:]
            proto.graph.node.extend(kept)
            wanted = [o for o in proto.graph.output if o.name in set(outputs)]
            del proto.graph.output[:]
            proto.graph.output.extend(wanted)
        return _session(proto)


class _Verification:
    def __init__(self, original: Any, edited: Any, corr: Correspondence, reference: Any, rtol: float | None,
                 atol: float | None, dims: dict[str, int], recipe_dims: dict[str, int],
                 inputs: dict[str, np.ndarray] | str | Path | None, seed: int, stages: Task) -> None:
        self.corr, self.rtol, self.atol, self.seed, self.stages = corr, rtol, atol, seed, stages
        self.cut: dict[str, onnx.ValueInfoProto] = {}
        """Outputs of a foreign op both models hold: fed the same random values in both (the edited model's
        types; ``cut_base``: the baseline's tensors, by their names there, in their own types, which may
        differ, e.g. float32 where the edited model has float16; ``cut_pairs``: edited name -> baseline name)."""
        self.cut_base: dict[str, onnx.ValueInfoProto] = {}
        self.cut_pairs: dict[str, str] = {}
        self.from_base: dict[str, str] = {}
        """Outputs of a foreign op of the edited model that the baseline computes -> the baseline's tensor."""
        self.logit_checks: dict[str, OutputCheck] = {}
        """Outputs of a foreign op of the edited model that the baseline computes: fed the baseline's values."""
        self.dims, self.recipe_dims = dims, recipe_dims
        self.given = load_arrays(inputs, "verification inputs", "check the --inputs path") \
            if isinstance(inputs, (str, Path)) else inputs
        self.baseline_source = reference if reference is not None else original
        self.reference = reference
        self.baseline_name = _name(reference, "the reference") if reference is not None \
            else _name(original, "the original")
        self.edited_source = edited
        self.report = VerifyReport("match", self.baseline_name, seed=seed,
                                   inputs=str(inputs) if isinstance(inputs, (str, Path)) else
                                   "given" if inputs is not None else "random",
                                   contracts=list(corr.contracts), tolerance=corr.tolerance)
        self.report.notes += corr.notes

    def fail(self, status: str, note: str) -> VerifyReport:
        self.report.status = status
        self.report.notes.append(note)
        return self.report

    def run(self) -> VerifyReport:
        report, corr = self.report, self.corr
        self.stages.describe("reading the models")
        try:
            edited = _Model(self.edited_source)
        except Exception as exc:
            return self.fail("failed", f"the edited model cannot be read: {_short(exc)}")
        base = _Model(self.baseline_source)
        report.float16_inside = _computes_in_float16(edited.proto)
        self.stages.advance()
        base_inputs = {s.name for s in base.specs}

        # How each edited input is fed: through the original's input (maybe transformed),
        # from a value the original computes (extract cut the graph there), or on its own.
        feeds_via: dict[str, InputFeed] = {}
        bound: dict[str, str] = {}
        for spec in edited.specs:
            feed = corr.feed(spec.name)
            if feed.original in base_inputs:
                feeds_via[spec.name] = feed
            elif feed.transform is None and feed.original in base.tensors:
                bound[spec.name] = feed.original
            else:
                report.notes.append(f"input '{spec.name}' of the edited model has no counterpart in "
                                    f"{self.baseline_name}; it gets its own values")
        self._check_dim_names(edited, base)

        # What is compared: every edited output the contracts can say something about, and extra tensors.
        downstream = _downstream(edited.proto.graph, set(corr.changed_from))
        targets: list[tuple[str, Expr]] = []
        for name in [*edited.outputs, *[t for t in corr.extra if t not in edited.outputs]]:
            expr = corr.expr(name)
            why = corr.skipped.get(name)
            if why is None and name in downstream and name not in corr.changed_from:
                why = (f"it is computed from '{downstream[name]}', which "
                       f"{corr.changed_from[downstream[name]]} changed on purpose")
            if why is None and expr is None and name in corr.changed_from:
                why = f"{corr.changed_from[name]} changed what computes it on purpose"
            if why is None and expr is None:
                why = f"it is new: {self.baseline_name} has no tensor it corresponds to"
            if why is None and expr is not None and any(t not in base.tensors for t in tensors_of(expr)):
                missing = next(t for t in tensors_of(expr) if t not in base.tensors)
                why = f"{self.baseline_name} has no tensor '{missing}' in its main graph"
            if why is not None:
                if name in edited.outputs:
                    report.notes.append(f"output '{name}' is not compared: {why}")
                    report.not_compared.append(name)
                continue
            if name not in edited.tensors:
                continue
            assert expr is not None
            targets.append((name, expr))
        foreign = self._around_foreign_ops(edited, base, targets)
        if not targets and foreign:
            return self.fail("skipped", "nothing can be compared: every output is computed by an op onnxruntime "
                                        "cannot run, and what it reads comes straight from the inputs")
            # no remedy: no input, size or reference makes the op run
        logits = self._bounded_outputs(edited, base, targets)
        activation_side = [t for b, _ in logits.values()
                           for t in [b.input, *([b.output] if b.layout else []), *(c[2] for c in b.layout)]]
        needed = list(dict.fromkeys([*bound.values(), *(t for _, e in targets for t in tensors_of(e)),
                                     *activation_side, *self.from_base.values()]))

        self.stages.describe(f"running {self.baseline_name}")
        try:
            base_sess = base.session(needed, cut=self.cut_base)
        except Exception as exc:
            # It may still run the part the comparison needs (a custom op after it is why
            # the model is being edited): drop the nodes nothing compared depends on.
            try:
                base_sess = base.session(needed, prune=True, cut=self.cut_base) if self._can_prune(base, needed) \
                    else None
            except Exception:
                base_sess = None
            if base_sess is None:
                return self._baseline_cannot_run(exc)
            report.notes.append(f"{self.baseline_name} cannot run as a whole ({_short(exc)}); the part of it "
                                "that computes the compared tensors was run")
        first = None
        sizes = samples.IMAGE_SIZES if self.given is None else (samples.IMAGE_SIZE,)
        used_size = sizes[0]
        for size in sizes:
            used_size = size
            attempt = self._feeds(edited, base, feeds_via, set(bound), size, self.seed)
            if attempt is None:
                return report
            self._feed_cut(attempt, size, self.seed)
            try:
                first = (attempt, _run(base_sess, attempt[1], needed))
                break
            except Exception as exc:
                error = exc
                if not attempt[2] or self.given is not None:
                    break  # nothing defaulted to retry with another size
        if first is None:
            declared = {(s.name, s.dtype, s.shape) for s in base.specs}
            same = all(f.transform is None and f.original == s.name and (s.name, s.dtype, s.shape) in declared
                       for s in edited.specs for f in [feeds_via.get(s.name)] if f is not None) and \
                len(feeds_via) == len(edited.specs) == len(base.specs)
            return self._baseline_rejected(error, same)
        (edited_feeds, base_feeds, _, shapes_note), base_values = first
        second = None
        if self.given is None:  # a second, different random input: do the outputs depend on the inputs at all?
            again = self._feeds(edited, base, feeds_via, set(bound), used_size, self.seed + 1)
            if again is not None:
                self._feed_cut(again, used_size, self.seed + 1)
                try:
                    second = _run(base_sess, again[1], needed)
                except Exception:
                    second = None
        del base_sess  # its weights go before the edited model's are read
        _release_freed_memory()
        self.stages.advance()
        for name, original_name in bound.items():
            edited_feeds[name] = base_values[original_name]
        edited_cut = dict(self.cut)
        for name, original in self.from_base.items():
            edited_feeds[name], edited_cut[name] = _fed_tensor(name, base_values[original], edited.typed.get(name))
        report.input_shapes.update({n: f"{edited_feeds[n].dtype}{list(edited_feeds[n].shape)}" for n in bound})
        report.input_sources = {n: (f"'{f.original}' of {self.baseline_name} fed {f.what}" if f.what
                                    else f"'{f.original}' of {self.baseline_name} fed the same values")
                                for n, f in feeds_via.items()}
        report.input_sources.update({n: f"the value {self.baseline_name} computes for '{o}'"
                                     for n, o in bound.items()})
        if shapes_note:
            report.notes.append(shapes_note)
        if self.given is None and _has_control_flow(edited.proto):
            report.notes.append("the model has If/Loop/Scan nodes: one set of random inputs may not take every "
                                "branch or run every loop body; give real inputs with --inputs to cover them")

        self.stages.describe("running the edited model")
        compared = list(dict.fromkeys([*(name for name, _ in targets), *(t for _, t in logits.values())]))
        try:
            got = _run(edited.session(compared, prune=bool(corr.skipped or corr.changed_from or foreign),
                                      cut=edited_cut), edited_feeds, compared)
        except Exception as exc:
            what = "the given inputs" if self.given is not None else "the generated inputs"
            return self.fail("failed", f"the edited model failed to run on {what}: {_short(exc)}")
        self.stages.advance()

        cache: dict[int, Any] = {}
        cache2: dict[int, Any] = {}
        for name, expr in targets:
            try:
                want = evaluate(expr, base_values, cache)
            except Exception as exc:
                if name in edited.outputs:
                    report.not_compared.append(name)
                report.notes.append(f"output '{name}' is not compared: its expected value "
                                    f"({expr.describe()}) cannot be computed: {_short(exc)}")
                continue
            check = _compare(_label(expr), name, want, got[name], self.rtol, self.atol, corr.tolerance)
            through = logits.get(name)
            if through is not None and not check.ok and check.problem is None:
                check = self._through_activation(check, want, got, base_values, *through)
            check.compared_with = _with(expr)
            check.intermediate = name not in edited.outputs
            other = None
            if second is not None:
                try:
                    other = evaluate(expr, second, cache2)
                except Exception:
                    other = None
            check.uninformative = _uninformative(want, other)
            report.outputs.append(check)
        self.stages.advance()
        if not report.outputs:
            return self.fail("failed", "no output could be compared (see the notes above)")
        if not all(o.ok for o in report.outputs):
            report.status = "mismatch"
        elif all(o.uninformative for o in report.outputs):
            report.status = "inconclusive"
            report.notes.append("the comparison proves nothing: every compared output is " + "; ".join(
                f"'{o.edited_name}' {o.uninformative}" for o in report.outputs))
        return report

    def _bounded_outputs(self, edited: _Model, base: _Model,
                         targets: list[tuple[str, Expr]]) -> dict[str, tuple[_Bounded, str]]:
        """Compared tensors a bounded activation produces in the baseline, under a scale-relative policy ->
        (the activation, the edited model's tensor that corresponds to its input). See ``_BOUNDED``."""
        if self.corr.tolerance not in _POLICIES or self.rtol is not None or self.atol is not None:
            return {}
        opset = default_opset(base.proto.opset_import) or 0
        producers = _bounded_producers(base.producer, [e.name for _, e in targets if isinstance(e, Tensor)],
                                       opset)
        if not producers:
            return {}
        found: dict[str, tuple[_Bounded, str]] = {}
        for name, expr in targets:
            bounded = producers.get(expr.name) if isinstance(expr, Tensor) else None
            if bounded is None:
                continue
            twin = next((t for t in [bounded.input, *self.corr.exprs] if t in edited.tensors
                         and self.corr.expr(t) == Tensor(bounded.input)), None)
            if twin is not None:
                found[name] = (bounded, twin)
        return found

    def _through_activation(self, check: OutputCheck, want: np.ndarray, got: dict[str, Any],
                            base_values: dict[str, Any], bounded: _Bounded, twin: str) -> OutputCheck:
        """``check`` failed its own tolerance: compare the activation's input (reported before it) and, if
        that matches, the output at what the input's tolerance carried through the activation allows."""
        z = base_values[bounded.input]
        edited_z = got[twin]
        if isinstance(edited_z, np.ndarray) and isinstance(z, np.ndarray) and edited_z.dtype != z.dtype:
            edited_z = edited_z.astype(z.dtype)  # float16 inside the edited model
        policy = self.corr.tolerance
        inner = self.logit_checks.get(twin)
        if inner is None:  # one line per activation input, however many outputs read the activation
            inner = _compare(bounded.input, twin, z, edited_z, None, None, policy)
            inner.compared_with, inner.intermediate = f"'{bounded.input}'", True
            inner.role = f"{bounded.op}'s input, for {check.edited_name}"
            self.report.outputs.append(inner)
            self.logit_checks[twin] = inner
        activated = base_values[bounded.output] if bounded.layout else want
        if inner.problem is not None or z.shape != np.shape(activated):
            return check
        allowance = bounded.rearranged(_carried_allowance(bounded, z, activated, policy), base_values)
        if allowance.shape != want.shape:
            return check
        carried = _compare(check.name, check.edited_name, want, got[check.edited_name], None, None, policy,
                           allowance)
        pr, pa = _POLICIES[policy]
        how = (f"what {policy} allows on {bounded.op}'s input '{bounded.input}' (atol {pa:g} of its scale, "
               f"rtol {pr:g}) carried through {bounded.op}")
        if inner.ok:
            carried.tolerance += f"; where beyond that, {how}, as that input matches"
        else:
            carried.ok = False
            carried.tolerance += f"; where beyond that, {how}, if that input matched (it does not)"
        return carried

    def _feed_cut(self, attempt: tuple[dict[str, np.ndarray], dict[str, np.ndarray], bool, str], image_size: int,
                  seed: int) -> None:
        """The same random values for the cut tensors (the outputs of a foreign op) in both models' feeds."""
        if not self.cut:
            return
        resolved = samples.ResolvedDims(sizes=dict(self.report.dims))
        rng = np.random.default_rng(seed + 7919)  # not the inputs' stream: the same cut values for each size
        for name, vi in self.cut.items():
            spec = samples.tensor_spec(vi)
            value = samples.sample_array(spec, samples.concrete_shape(spec, resolved, image_size), rng)
            attempt[0][name] = value
            original = self.cut_pairs[name]
            base_type = samples.tensor_spec(self.cut_base[original]).dtype
            attempt[1][original] = value.astype(base_type) if base_type is not None else value

    def _can_prune(self, base: _Model, needed: list[str]) -> bool:
        """Whether comparing needs only part of the baseline (not every node leads to a needed tensor)."""
        return len(_needed_nodes(base.proto.graph, set(needed))) < len(base.proto.graph.node) \
            and bool(self.corr.changed_from or base.foreign)

    def _around_foreign_ops(self, edited: _Model, base: _Model, targets: list[tuple[str, Expr]]) -> bool:
        """Compare around the ops of the edited model that onnxruntime cannot run (a TensorRT plugin, a custom
        op): what each of them reads is compared, when something computes it. The edited model is cut at such
        an op when the baseline computes its outputs (its value is fed, ``self.from_base``), or when the
        baseline holds the same op and its outputs' types and sizes are known (both models are cut there and
        get the same random values, ``self.cut``): what comes after it is compared too. Otherwise the
        outputs computed from it are not compared (said in a note). Updates ``targets``; whether there are
        such ops."""
        foreign = edited.foreign
        if not foreign:
            return False
        local = {(f.domain, f.name) for f in edited.proto.functions}
        untyped = self._cuttable(edited, base, foreign)
        for name, vi in self.cut.items():
            original = self.cut_pairs[name]
            own = base.typed.get(original)
            self.cut_base[original] = onnx.helper.make_tensor_value_info(
                original, (own or vi).type.tensor_type.elem_type, None)
        fed = set(self.cut) | set(self.from_base)
        for node in foreign:
            random = [t for t in node.output if t in self.cut]
            computed = [t for t in node.output if t in self.from_base]
            for outputs, how in ((random, "were fed the same random values in both models"),
                                 (computed, f"were fed what {self.baseline_name} computes for them")):
                if outputs:
                    self.report.notes.append(
                        f"onnxruntime cannot run {foreign_label(node, local)}: its outputs "
                        f"({', '.join(repr(t) for t in outputs)}) {how}, so what comes after it is compared; "
                        "the op itself is not verified")
        label = {t: foreign_label(n, local) for n in foreign for t in n.output if t}
        # What is computed from an op not cut is not compared; nor are the op's outputs (a fed value is no proof).
        origin = {t: label[src] for t, src in _downstream(edited.proto.graph, set(label) - fed).items()}
        origin.update(label)
        unrun = [name for name, _ in targets if name in origin and name in edited.outputs]
        targets[:] = [(name, expr) for name, expr in targets if name not in origin]
        inputs = {s.name for s in edited.specs}
        constants = {i.name for i in edited.proto.graph.initializer} | \
            {t for n in edited.proto.graph.node if n.op_type == "Constant" for t in n.output}
        compared = {name for name, _ in targets}
        reads_compared = False
        for node in foreign:  # what it reads, in its bodies too (outer-scope tensors of the main graph)
            for t in dict.fromkeys(proto_node_reads(node)):
                if not t or t not in edited.tensors or t in inputs or t in constants or t in origin or t in fed:
                    continue
                expr = self.corr.expr(t)
                if t not in compared and (expr is None or any(x not in base.tensors for x in tensors_of(expr))):
                    self.report.notes.append(f"'{t}', which {foreign_label(node, local)} reads, is not compared: "
                                             f"{self.baseline_name} has no tensor it corresponds to")
                    continue
                if t not in compared:
                    assert expr is not None
                    targets.append((t, expr))
                    compared.add(t)
                reads_compared = True
        instead = "; what it reads is compared instead" if reads_compared else ""
        self.report.notes += [f"output '{name}' is not compared: it is computed by {origin[name]}, which "
                              f"onnxruntime cannot run{instead}" for name in unrun]
        self.report.not_compared += unrun
        self.report.behind_foreign_ops += unrun
        if any(name not in label for name in unrun):  # something after a foreign op is not compared: say why
            self.report.notes += [why for t, why in untyped.items() if any(origin.get(u) == label[t] for u in unrun)]
        return True

    def _cuttable(self, edited: _Model, base: _Model, foreign: list[onnx.NodeProto]) -> dict[str, str]:
        """Fill ``self.from_base`` (foreign outputs the baseline computes with ops it can run) and ``self.cut``
        / ``self.cut_pairs`` (foreign outputs the baseline computes with the same op, typed with sizes the
        inputs or --dim fix). Returns the foreign outputs that something reads but that cannot be fed -> why
        (a note telling how to fix it)."""
        symbols = {d for spec in edited.specs for d in (spec.shape or ()) if isinstance(d, str)} | \
            set(self.dims) | set(self.recipe_dims)
        base_producer = base.producer
        base_foreign_outputs = {t for n in base.foreign for t in n.output if t}
        read = {t for n in edited.proto.graph.node for t in proto_node_reads(n)}
        why: dict[str, str] = {}
        for node in foreign:
            op = proto_node_label(node)
            for t in node.output:
                expr = self.corr.expr(t) if t else None
                if not t or t not in read or not isinstance(expr, Tensor) or expr.name not in base_producer:
                    continue  # nothing comes after it, or the baseline has no such tensor
                original = expr.name
                if original not in base_foreign_outputs:
                    self.from_base[t] = original
                    continue
                twin = base_producer[original]
                if twin.op_type != node.op_type or twin.domain != node.domain:
                    continue
                vi = edited.typed.get(t) or base.typed.get(original)
                spec = samples.tensor_spec(vi) if vi is not None else None
                if vi is None or spec is None or spec.dtype is None or spec.shape is None or None in spec.shape:
                    why[t] = (f"to compare what comes after {op}, declare the type and shape of its output '{t}' "
                              "(custom_ops: in the recipe, then infer_shapes): verification then feeds it the "
                              "same values in both models")
                    continue
                unknown = [d for d in spec.shape if isinstance(d, str) and d not in symbols]
                if len(unknown) > 1:  # an exporter's placeholder names: a declaration gives real ones
                    why[t] = (f"to compare what comes after {op}, declare the shape of its output '{t}' "
                              f"(custom_ops: in the recipe, then infer_shapes; no input of the model has the sizes "
                              f"{', '.join(repr(d) for d in unknown)}): verification then feeds it the same values "
                              "in both models")
                    continue
                if unknown:
                    why[t] = (f"to compare what comes after {op}, give the size of {unknown[0]!r} in its output "
                              f"'{t}' with --dim {unknown[0]}=N (no input of the model has it)")
                    continue
                self.cut[t] = vi if vi.name == t else onnx.helper.make_tensor_value_info(
                    t, vi.type.tensor_type.elem_type, list(spec.shape))
                self.cut_pairs[t] = original
        return why

    def _check_dim_names(self, edited: _Model, base: _Model) -> None:
        symbols = {d for spec in (*edited.specs, *base.specs) for d in (spec.shape or ()) if isinstance(d, str)}
        # sizes only a plugin's output has
        symbols |= {d.dim_param for n in edited.foreign for t in n.output if t in edited.typed
                    for d in edited.typed[t].type.tensor_type.shape.dim if d.dim_param}
        unknown = sorted(set(self.dims) - symbols - {samples.UNNAMED})
        if unknown and self.given is None:
            raise SurgeonError(
                f"--dim names {', '.join(repr(u) for u in unknown)}, which no input of the models has",
                hint=("their symbolic dimensions are " + ", ".join(repr(d) for d in sorted(symbols)))
                if symbols else "the models' inputs have no symbolic dimensions",
            )

    def _feeds(self, edited: _Model, base: _Model, feeds_via: dict[str, InputFeed], bound: set[str],
               image_size: int, seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], bool, str] | None:
        """(edited feeds, original feeds, whether an image size was defaulted, a note) or None (failed)."""
        given = self.given
        arrays: dict[str, np.ndarray] = {}
        if given is not None:
            for spec in edited.specs:
                feed = feeds_via.get(spec.name)
                key = spec.name if spec.name in given else \
                    feed.original if feed is not None and feed.transform is None and feed.original in given else None
                if key is not None:
                    arrays[spec.name] = np.asarray(given[key])
        fed = {f.original for f in feeds_via.values()}
        twins = [dataclasses.replace(s, name=n) for n, f in feeds_via.items() for s in base.specs
                 if s.name == f.original and f.transform is None]
        own = [s for s in base.specs if s.name not in fed]
        resolved = samples.resolve_dims([*edited.specs, *own], dims=self.dims, recipe_dims=self.recipe_dims,
                                        arrays=arrays, other=twins, meta=samples.metadata(base.proto),
                                        image_size=image_size)
        rng = np.random.default_rng(seed)
        edited_feeds: dict[str, np.ndarray] = {}
        for spec in edited.specs:
            if spec.name in bound:
                continue  # the original computes it
            if spec.name in arrays:
                edited_feeds[spec.name] = arrays[spec.name]
            elif given is not None and spec.name in feeds_via:
                raise SurgeonError(f"the verification inputs have no array '{spec.name}'",
                                   hint="the .npz file must hold every input of the edited model: "
                                        f"{', '.join(s.name for s in edited.specs)}")
            else:
                edited_feeds[spec.name] = samples.sample_array(
                    spec, samples.concrete_shape(spec, resolved, image_size), rng)
        base_specs = {s.name: s for s in base.specs}
        base_feeds: dict[str, np.ndarray] = {}
        for name, feed in feeds_via.items():
            value = edited_feeds[name] if feed.transform is None else feed.transform(edited_feeds[name])
            target = base_specs[feed.original].dtype
            base_feeds[feed.original] = value.astype(target) if target is not None and value.dtype != target \
                else value
        for spec in own:
            base_feeds[spec.name] = given[spec.name] if given is not None and spec.name in given else \
                samples.sample_array(spec, samples.concrete_shape(spec, resolved, image_size), rng)
        if seed == self.seed:  # the inputs of the comparison (not of the second, informative-or-not run)
            self.report.input_shapes = {n: f"{a.dtype}{list(a.shape)}" for n, a in edited_feeds.items()}
            self.report.original_inputs = {n: f"{a.dtype}{list(a.shape)}" for n, a in base_feeds.items()}
        self.report.dims = dict(resolved.sizes)
        self.report.dim_sources = dict(resolved.sources)
        note = ""
        if resolved.image_defaulted and image_size != samples.IMAGE_SIZE:
            axes = {axis for _, axis in resolved.image_defaulted}
            first, now = (f"images of {samples.IMAGE_SIZE}x{samples.IMAGE_SIZE}", f"{image_size}x{image_size}") \
                if axes == {2, 3} else (f"an image {'height' if 2 in axes else 'width'} of {samples.IMAGE_SIZE}",
                                        f"{image_size}")
            note = f"{self.baseline_name} rejected {first}; verified at {now} (give the size with --dim)"
        return edited_feeds, base_feeds, bool(resolved.image_defaulted), note

    def _baseline_cannot_run(self, exc: Exception) -> VerifyReport:
        # An original that cannot run is why many edits exist: skip, and say how to
        # verify anyway. A reference the user chose that cannot run is a failure.
        report = self.report
        report.notes.append(f"{self.baseline_name} cannot run in onnxruntime ({_short(exc)}); nothing was compared")
        if self.reference is None:
            report.status = "skipped"
            report.remedy = "a --reference that runs"
            report.notes.append("give a model that computes the same thing with --reference MODEL "
                                "(verify: {reference: ...} in the recipe) to compare against")
        else:
            report.status = "failed"
        return report

    def _baseline_rejected(self, exc: Exception, same_inputs: bool) -> VerifyReport:
        """``same_inputs``: both models take the same inputs, fed as they are (so the sizes or values made
        up for them are what the baseline rejects, not a difference between the models)."""
        if self.given is not None:  # the user's own inputs do not fit: their file is what is wrong
            return self.fail("failed", f"{self.baseline_name} rejected the given inputs: {_short(exc)}")
        why = "(give inputs it accepts with --inputs FILE.npz, or sizes with --dim)" if same_inputs else \
            "(do the models take the same inputs?)"
        self.report.remedy = "inputs the model accepts (--inputs FILE.npz, or sizes with --dim)"
        return self.fail("failed" if self.reference is not None else "skipped",
                         f"{self.baseline_name} rejected the inputs built for the edited model {why}: "
                         f"{_short(exc)}")


def _compare(name: str, edited_name: str, want: Any, got: Any, rtol: float | None, atol: float | None,
             policy: str = "dtype", carried: np.ndarray | None = None) -> OutputCheck:
    """Compare one tensor; ``carried``: a per-element atol that may exceed the policy's (see ``_BOUNDED``)."""
    check = OutputCheck(name, edited_name)
    if not isinstance(want, np.ndarray) or not isinstance(got, np.ndarray):
        check.ok = want == got
        check.problem = None if check.ok else "non-tensor outputs differ"
        check.dtype = type(want).__name__
        return check
    check.dtype, check.shape = str(want.dtype), list(want.shape)
    check.rtol, check.atol, check.tolerance = _tolerance(want, policy, rtol, atol)
    if got.shape != want.shape or got.dtype != want.dtype:
        check.ok = False
        check.problem = f"expected {want.dtype}{list(want.shape)}, got {got.dtype}{list(got.shape)}"
        return check
    if want.size == 0:
        return check
    if not (np.issubdtype(want.dtype, np.number) or want.dtype == np.bool_):
        # Strings (and objects) have no tolerance: they match exactly or not.
        check.ok = bool(np.array_equal(want, got))
        if not check.ok:
            where = tuple(int(i) for i in np.argwhere(want != got)[0])
            check.problem = f"element {where}: expected {want[where]!r}, got {got[where]!r}"
        return check
    a, b = want.astype(np.float64), got.astype(np.float64)
    # Equal values (the same infinity included: log(0), attention masks) and NaN on both sides agree.
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(a - b))
    diff = np.where(np.isnan(diff), np.inf, diff)  # NaN on one side only is a mismatch
    # Relative error only where the expected value is non-zero (ReLU outputs are full of zeros).
    nonzero = np.nan_to_num(np.abs(a)) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(nonzero, diff / np.where(nonzero, np.abs(a), 1.0), 0.0)
    allowed: Any = check.atol
    if carried is not None:
        allowed = np.maximum(check.atol, carried)
        check.atol, check.per_element = float(allowed.max()), True
    excess = diff - (allowed + check.rtol * np.abs(np.nan_to_num(a)))
    check.max_abs = float(diff.max())
    check.max_rel = float(np.nan_to_num(rel, nan=np.inf).max())
    check.ok = bool(excess.max() <= 0)
    if check.max_abs > 0:  # name the worst element only when something differs
        worst = np.unravel_index(int(np.argmax(excess)), want.shape)
        check.worst_index = [int(i) for i in worst]
        check.expected, check.got = float(a[worst]), float(b[worst])
        if not np.isscalar(allowed):
            check.allowed = float(allowed[worst] + check.rtol * abs(np.nan_to_num(a[worst])))
    return check


def _carried_allowance(bounded: _Bounded, z: np.ndarray, want: np.ndarray, policy: str) -> np.ndarray:
    """Per element, how far the policy's tolerance on the activation's input ``z`` moves its output."""
    finite = np.abs(z[np.isfinite(z)]) if z.size else np.zeros(0)
    scale = float(finite.max()) if finite.size else 0.0
    pr, pa = _POLICIES[policy]
    return bounded.carried(z, want, pa * scale, pr)


def _fed_tensor(name: str, value: Any, declared: onnx.ValueInfoProto | None) -> tuple[Any, onnx.ValueInfoProto]:
    """A baseline value fed to the edited model in place of a tensor it computes, in the type the edited model
    declares for it (``declared``: a float16 model's), and the graph input that takes it."""
    array = np.asarray(value)
    if declared is not None:
        array = array.astype(onnx.helper.tensor_dtype_to_np_dtype(declared.type.tensor_type.elem_type), copy=False)
    elem = onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
    return array, onnx.helper.make_tensor_value_info(name, elem, list(array.shape))


def _session(model: Any):
    source: Any
    if isinstance(model, (str, Path)):
        source = str(model)
    elif isinstance(model, onnx.ModelProto):
        source = model.SerializeToString()
    elif isinstance(model, bytes):
        source = model
    else:
        from surgeon.io.model import Model

        if not isinstance(model, Model):
            raise TypeError(f"verify() takes paths, ModelProtos or surgeon.Models, not {type(model).__name__}")
        if model.has_external_data:
            raise ValueError("a model with external data must be saved to a file and verified by path")
        from surgeon.io.export import to_proto

        source = to_proto(model).SerializeToString()
    # Unoptimized: an optimization could hide a difference the edit introduced (or create one).
    return cpu_session(source)


def _release_freed_memory() -> None:
    """Give what a closed session freed back to the system (glibc's ``malloc_trim``).

    glibc keeps freed heap memory for reuse, and after the first large free it
    stops serving allocations under 32 MB from their own mappings: a closed
    session's weights then stay resident (1.0 GiB of a 4 GiB model's), and the
    next session reuses only part of them. With this and no arena (see
    ``_session``) verify on a 4 GiB model peaks at 4,772 MiB, what onnxruntime
    needs to run it once (4,728 MiB), where it took 5,415 MiB. Elsewhere (no
    glibc) this does nothing.
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc: macOS, Windows, musl
        return
    trim(0)


def _run(sess, feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, Any]:
    import onnxruntime as ort

    options = ort.RunOptions()
    options.log_severity_level = 4  # the error is raised and reported; onnxruntime must not print it too
    wanted = {i.name for i in sess.get_inputs()}
    return dict(zip(names, sess.run(names, {k: v for k, v in feeds.items() if k in wanted}, options)))


def _proto(model: Any) -> onnx.ModelProto:
    """The model's structure (weights held in external files are not read)."""
    if isinstance(model, (str, Path)):
        return onnx.load(str(model), load_external_data=False)
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, bytes):
        return onnx.load_from_string(model)
    from surgeon.io.model import Model

    if not isinstance(model, Model):
        raise TypeError(f"verify() takes paths, ModelProtos or surgeon.Models, not {type(model).__name__}")
    if model.has_external_data:
        raise ValueError("a model with external data must be saved to a file and verified by path")
    from surgeon.io.export import to_proto

    return to_proto(model)


def _full_proto(model: Any) -> onnx.ModelProto:
    """A copy of the model with its weights, to change its outputs."""
    if isinstance(model, (str, Path)):
        return onnx.load(str(model))  # external data is read: onnxruntime gets the model as bytes
    proto = onnx.ModelProto()
    proto.CopyFrom(_proto(model))
    return proto


def _needed_nodes(graph: onnx.GraphProto, outputs: set[str]) -> set[int]:
    """Indices of the nodes the ``outputs`` depend on (subgraphs' outer reads included)."""
    producer = {t: i for i, n in enumerate(graph.node) for t in n.output if t}
    keep: set[int] = set()
    pending = [producer[o] for o in outputs if o in producer]
    while pending:
        i = pending.pop()
        if i in keep:
            continue
        keep.add(i)
        for t in proto_node_reads(graph.node[i]):
            if t in producer and producer[t] not in keep:
                pending.append(producer[t])
    return keep


def _downstream(graph: onnx.GraphProto, changed: set[str]) -> dict[str, str]:
    """Tensors computed from a ``changed`` tensor (through at least one node) -> that changed tensor."""
    if not changed:
        return {}
    origin: dict[str, str] = {}
    for node in graph.node:  # nodes are in topological order
        sources = [origin.get(t) or (t if t in changed else None) for t in proto_node_reads(node)]
        source = next((x for x in sources if x), None)
        if source is not None:
            for t in node.output:
                if t:
                    origin[t] = source
    return origin


def _label(expr: Expr) -> str:
    return expr.name if isinstance(expr, Tensor) else expr.describe()


def _with(expr: Expr) -> str:
    return f"'{expr.name}'" if isinstance(expr, Tensor) else expr.describe()


def _uninformative(want: Any, other: Any) -> str | None:
    """Why comparing this output proves nothing, or None."""
    if not isinstance(want, np.ndarray) or want.size == 0:
        return "empty" if isinstance(want, np.ndarray) else None
    if want.dtype.kind in "fc" and np.isnan(want).all():
        return "all NaN"
    flat = want.reshape(-1)
    if (flat == flat[0]).all():
        return "all zero" if not flat[0] else f"constant ({flat[0].item()!r})"
    if isinstance(other, np.ndarray) and other.shape == want.shape and np.array_equal(want, other, equal_nan=True):
        return "the same for two different random inputs"
    return None


def _name(model: Any, default: str) -> str:
    if isinstance(model, (str, Path)):
        return str(model)
    path = getattr(model, "source_path", None)
    return str(path) if path else default


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."


def _computes_in_float16(proto: onnx.ModelProto) -> bool:
    """Whether a model holds float16 weights or casts to float16 (its main graph)."""
    f16 = onnx.TensorProto.FLOAT16
    g = proto.graph
    return any(t.data_type == f16 for t in g.initializer) or any(
        n.op_type == "Cast" and any(a.name == "to" and a.i == f16 for a in n.attribute) for n in g.node) or any(
        n.op_type == "Constant" and any(a.name == "value" and a.t.data_type == f16 for a in n.attribute)
        for n in g.node)


def _has_control_flow(proto: onnx.ModelProto) -> bool:
    """Whether the main graph has If/Loop/Scan nodes."""
    return any(n.op_type in ("If", "Loop", "Scan") for n in proto.graph.node)
