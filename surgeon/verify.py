"""Numeric verification: run a baseline and the edited model in onnxruntime on the
same inputs and compare every output both have.

The baseline is the original model, or a ``reference`` model when one is given
(the original often cannot run: that is why it is being edited, e.g. a custom
``FooOp``). When no baseline can run the result is ``skipped`` with the reason
- never a silent pass.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from surgeon.errors import SurgeonError
from surgeon.graph.constants import np_dtype_of_ort
from surgeon.progress import Progress, Task, task

DEFAULT_DIM = 2
"""Value of a symbolic dimension nobody bound: 2, not 1, so batch-mixing bugs show."""

# (rtol, atol) per output dtype. Integers and booleans must match exactly.
_TOLERANCES = {
    np.dtype(np.float16): (1e-2, 1e-2),
    np.dtype(np.float32): (1e-4, 1e-5),
    np.dtype(np.float64): (1e-7, 1e-10),
}

class VerificationError(SurgeonError):
    """The edited model's outputs differ from the baseline's (or it cannot run).

    ``report`` holds the full :class:`VerifyReport`; the workflow attaches the
    run's ``FileResult`` as ``result`` so a JSON report can still be written.
    """

    def __init__(self, report: VerifyReport) -> None:
        self.report = report
        self.result: Any = None
        hint = ("the edit changed what the model computes; nothing was written.\n"
                "Check the recipe, or loosen --rtol/--atol if the difference is expected"
                if report.status == "mismatch" else "nothing was written; see the notes above")
        super().__init__(f"verification failed: {report.summary()}", hint=hint)


@dataclass
class OutputCheck:
    """The comparison of one output."""

    name: str
    """Output name in the baseline."""
    edited_name: str
    dtype: str = ""
    shape: list[int] = field(default_factory=list)
    ok: bool = True
    rtol: float = 0.0
    atol: float = 0.0
    max_abs: float = 0.0
    max_rel: float = 0.0
    worst_index: list[int] | None = None
    expected: float | None = None
    got: float | None = None
    problem: str | None = None
    """Why the output could not be compared element-wise (shape, dtype, missing)."""

    def describe(self) -> str:
        label = self.name if self.name == self.edited_name else f"{self.name} (now {self.edited_name})"
        if self.problem:
            return f"{label}: {self.problem}"
        head = f"{label}: {'match' if self.ok else 'MISMATCH'}, max abs error {self.max_abs:.3g}, " \
               f"max rel error {self.max_rel:.3g} (rtol {self.rtol:g}, atol {self.atol:g})"
        if not self.ok and self.worst_index is not None:
            head += f"; worst element {tuple(self.worst_index)}: expected {self.expected:.9g}, got {self.got:.9g}"
        return head

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class VerifyReport:
    """Result of :func:`verify`. ``status`` is ``match``, ``mismatch``, ``failed``
    (the edited model cannot run, or no output could be compared) or ``skipped``
    (no baseline could run; ``notes`` says why)."""

    status: str
    baseline: str
    outputs: list[OutputCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dims: dict[str, int] = field(default_factory=dict)
    seed: int = 0
    inputs: str = "random"

    @property
    def ok(self) -> bool:
        return self.status == "match"

    def summary(self) -> str:
        lines = [f"{self.status} against {self.baseline} ({self.inputs} inputs)"]
        lines += [f"  {o.describe()}" for o in self.outputs]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "baseline": self.baseline, "inputs": self.inputs, "seed": self.seed,
                "dims": self.dims, "outputs": [o.to_dict() for o in self.outputs], "notes": self.notes}


def tolerance(dtype: np.dtype, rtol: float | None = None, atol: float | None = None) -> tuple[float, float]:
    """(rtol, atol) for an output dtype; overrides apply to floating-point outputs only."""
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        return 0.0, 0.0
    base_rtol, base_atol = _TOLERANCES.get(dtype, (1e-4, 1e-5))
    return (base_rtol if rtol is None else rtol), (base_atol if atol is None else atol)


def verify(
    original: Any,
    edited: Any,
    *,
    renamed: dict[str, str] | None = None,
    reference: Any = None,
    rtol: float | None = None,
    atol: float | None = None,
    dims: dict[str, int] | None = None,
    inputs: dict[str, np.ndarray] | str | Path | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> VerifyReport:
    """Compare ``edited`` with ``original`` (or with ``reference`` when given) in onnxruntime.

    Models are paths, ``ModelProto`` s or :class:`surgeon.Model` s. ``renamed``
    maps baseline tensor names to edited ones (``ApplyResult.renamed``).
    ``dims`` binds symbolic dimensions (others get 2); ``inputs`` is a dict of
    arrays or an ``.npz`` file (otherwise seeded random inputs). ``progress``
    hears of its four stages: two sessions built, two models run.
    """
    with task(progress, "verifying", total=4, unit="stage") as stages:
        return _verify(original, edited, renamed, reference, rtol, atol, dims, inputs, seed, stages)


def _verify(original: Any, edited: Any, renamed: dict[str, str] | None, reference: Any, rtol: float | None,
            atol: float | None, dims: dict[str, int] | None, inputs: dict[str, np.ndarray] | str | Path | None,
            seed: int, stages: Task) -> VerifyReport:
    renamed = dict(renamed or {})
    dims = dict(dims or {})
    baseline_model, baseline_name = (reference, _name(reference, "the reference")) if reference is not None \
        else (original, _name(original, "the original"))
    report = VerifyReport("match", baseline_name, dims=dims, seed=seed,
                          inputs=str(inputs) if isinstance(inputs, (str, Path)) else
                          "given" if inputs is not None else "random")
    # One model's weights in memory at a time: the edited model is opened to learn its
    # inputs, closed, the baseline runs, and the edited model is opened again to run.
    # Both at once would hold the weights twice (8 GiB for a 4 GiB model).
    stages.describe("loading the edited model in onnxruntime")
    try:
        edited_inputs = _inputs(_session(edited))
    except Exception as exc:  # onnxruntime raises its own exception types for every reason
        report.status = "failed"
        report.notes.append(f"the edited model cannot run in onnxruntime: {_short(exc)}")
        return report
    _release_freed_memory()
    stages.advance()
    stages.describe(f"loading {baseline_name} in onnxruntime")
    try:
        base_sess = _session(baseline_model)
    except Exception as exc:
        # An original that cannot run is why many edits exist: skip, and say how to
        # verify anyway. A reference the user chose that cannot run is a failure.
        report.notes.append(f"{baseline_name} cannot run in onnxruntime ({_short(exc)}); nothing was compared")
        if reference is None:
            report.status = "skipped"
            report.notes.append("give a model that computes the same thing with --reference MODEL "
                                "(verify: {reference: ...} in the recipe) to compare against")
        else:
            report.status = "failed"
        return report

    base_inputs = _inputs(base_sess)
    feeds = _feeds(edited_inputs, base_inputs, renamed, dims, inputs, seed)
    if inputs is None and _has_control_flow(edited):
        report.notes.append("the model has If/Loop/Scan nodes: one set of random inputs may not take every "
                            "branch or run every loop body; give real inputs with --inputs to cover them")
    inverse = {new: old for old, new in renamed.items()}
    base_feeds = {i.name: feeds[renamed.get(i.name, i.name)] for i in base_inputs
                  if renamed.get(i.name, i.name) in feeds}
    stages.advance()
    stages.describe(f"running {baseline_name}")
    try:
        expected = _run(base_sess, base_feeds)
    except Exception as exc:
        if inputs is not None:  # the user's own inputs do not fit: their file is what is wrong
            report.status = "failed"
            report.notes.append(f"{baseline_name} rejected the given inputs: {_short(exc)}")
        else:
            report.status = "failed" if reference is not None else "skipped"
            report.notes.append(f"{baseline_name} rejected the inputs built for the edited model "
                                f"(do the models take the same inputs?): {_short(exc)}")
        return report
    del base_sess  # its weights go before the edited model's are read
    _release_freed_memory()
    stages.advance()
    stages.describe("running the edited model")
    try:
        got = _run(_session(edited), feeds)
    except Exception as exc:
        report.status = "failed"
        what = "the given inputs" if inputs is not None else "the generated inputs"
        report.notes.append(f"the edited model failed to run on {what}: {_short(exc)}")
        return report
    stages.advance()

    for name, want in expected.items():
        new_name = renamed.get(name, name)
        if new_name not in got:
            report.notes.append(f"output '{name}' of {baseline_name} is not an output of the edited model; "
                                "not compared")
            continue
        report.outputs.append(_compare(name, new_name, want, got[new_name], rtol, atol))
    for name in got:
        if inverse.get(name, name) not in expected:
            report.notes.append(f"output '{name}' of the edited model has no counterpart in {baseline_name}")
    if not report.outputs:
        report.status = "failed"
        report.notes.append("no output could be compared: the models have no output name in common")
    elif not all(o.ok for o in report.outputs):
        report.status = "mismatch"
    return report


def _compare(name: str, edited_name: str, want: Any, got: Any, rtol: float | None, atol: float | None) -> OutputCheck:
    check = OutputCheck(name, edited_name)
    if not isinstance(want, np.ndarray) or not isinstance(got, np.ndarray):
        check.ok = want == got
        check.problem = None if check.ok else "non-tensor outputs differ"
        check.dtype = type(want).__name__
        return check
    check.dtype, check.shape = str(want.dtype), list(want.shape)
    check.rtol, check.atol = tolerance(want.dtype, rtol, atol)
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
    excess = diff - (check.atol + check.rtol * np.abs(np.nan_to_num(a)))
    check.max_abs = float(diff.max())
    check.max_rel = float(np.nan_to_num(rel, nan=np.inf).max())
    check.ok = bool(excess.max() <= 0)
    if check.max_abs > 0:  # name the worst element only when something differs
        worst = np.unravel_index(int(np.argmax(excess)), want.shape)
        check.worst_index = [int(i) for i in worst]
        check.expected, check.got = float(a[worst]), float(b[worst])
    return check


@dataclass(frozen=True)
class _Input:
    """What verification needs of a session's input, kept after the session is closed."""

    name: str
    shape: list
    type: str


def _inputs(sess) -> list[_Input]:
    return [_Input(i.name, list(i.shape), i.type) for i in sess.get_inputs()]


def _feeds(edited_inputs: list[_Input], base_inputs: list[_Input], renamed: dict[str, str], dims: dict[str, int],
           given: dict[str, np.ndarray] | str | Path | None, seed: int) -> dict[str, np.ndarray]:
    """Inputs for the edited model; shapes take fixed dims from either model, then ``dims``."""
    if isinstance(given, (str, Path)):
        given = _load_npz(Path(given))
    base_shapes = {renamed.get(i.name, i.name): i.shape for i in base_inputs}
    inverse = {new: old for old, new in renamed.items()}
    symbols = {d for inputs in (edited_inputs, base_inputs) for i in inputs for d in i.shape
               if isinstance(d, str)}
    unknown = sorted(set(dims) - symbols)
    if unknown and given is None:
        raise SurgeonError(
            f"--dim names {', '.join(repr(u) for u in unknown)}, which no input of the models has",
            hint=("their symbolic dimensions are " + ", ".join(repr(d) for d in sorted(symbols)))
            if symbols else "the models' inputs have no symbolic dimensions",
        )
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in edited_inputs:
        if given is not None:
            # Arrays may be named as the edited model or the original names its inputs.
            key = inp.name if inp.name in given else inverse.get(inp.name)
            if key not in given:
                raise SurgeonError(f"the verification inputs have no array '{inp.name}'",
                                   hint=f"the .npz file must hold every input of the edited model: "
                                        f"{', '.join(i.name for i in edited_inputs)}")
            feeds[inp.name] = np.asarray(given[key])
            continue
        dtype = np_dtype_of_ort(inp.type)
        if dtype is None or dtype.kind not in "biuf":  # numpy cannot make bfloat16 and friends
            raise SurgeonError(f"cannot make random values for input '{inp.name}' of type {inp.type}",
                               hint="give real inputs with --inputs FILE.npz")
        other = base_shapes.get(inp.name) or []
        shape = []
        for i, d in enumerate(inp.shape):
            fixed = other[i] if i < len(other) and isinstance(other[i], int) and other[i] > 0 else None
            if isinstance(d, int) and d > 0:
                shape.append(d)
            elif fixed is not None:
                shape.append(fixed)
            else:
                value = dims.get(d, DEFAULT_DIM) if isinstance(d, str) else DEFAULT_DIM
                if isinstance(d, str):
                    dims.setdefault(d, value)  # recorded: the report says what was really run
                shape.append(value)
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[inp.name] = rng.integers(0, 2, shape).astype(bool)
        else:  # small positive integers: safe as indices, sizes and ids, and a Loop trip count
            feeds[inp.name] = rng.integers(1, 4, shape).astype(dtype)  # of 0 would run no body at all
    return feeds


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise SurgeonError(f"verification inputs not found: {path}", hint="check the --inputs path") from None
    except Exception as exc:  # numpy raises ValueError, OSError, BadZipFile... for a bad file
        raise SurgeonError(f"cannot read verification inputs {path}: {_short(exc)}",
                           hint="save them with numpy.savez(path, input_name=array, ...)") from None


def _session(model: Any):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # Graph optimizations could hide a difference the edit introduced (or create one).
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    # No memory arena: one run needs none, and onnxruntime keeps an arena's largest
    # block after the session is gone (596 MB of a 4 GiB model's, held while the next
    # session loads its weights).
    opts.enable_cpu_mem_arena = False
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
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


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


def _run(sess, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def _name(model: Any, default: str) -> str:
    if isinstance(model, (str, Path)):
        return str(model)
    path = getattr(model, "source_path", None)
    return str(path) if path else default


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."


def _has_control_flow(model: Any) -> bool:
    """Whether the main graph has If/Loop/Scan nodes (weights are not read)."""
    if isinstance(model, (str, Path)):
        proto = onnx.load(str(model), load_external_data=False)
    elif isinstance(model, onnx.ModelProto):
        proto = model
    elif isinstance(model, bytes):
        proto = onnx.load_from_string(model)
    else:
        return any(n.op in ("If", "Loop", "Scan") for n in model.graph.nodes)
    return any(n.op_type in ("If", "Loop", "Scan") for n in proto.graph.node)
