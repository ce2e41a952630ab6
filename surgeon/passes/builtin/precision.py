"""to_fp16: run a float32 model in float16, keeping unsafe ops and (by default) the interface in float32.

What Polygraphy's ``--fp-to-fp16`` (through onnxconverter-common) and
onnxslim's ``--dtype fp16`` do, written on the gs graph and driven by the ONNX
op schemas rather than by op-name tables: a node runs in float16 when the
type variable that its float32 inputs bind allows ``tensor(float16)``;
inputs with a fixed ``tensor(float)`` type (``Resize`` scales,
``NonMaxSuppression`` boxes) stay float32, integer tensors (shapes, indices,
``TopK``'s K) are never touched, and ``Cast`` nodes are inserted wherever a
float16 tensor meets a float32 reader or the other way round. If/Loop/Scan
bodies are converted too, keeping one type per value across a body boundary.

Unlike those converters, which clamp what float16 cannot hold and warn, a node
whose constants or attributes leave float16's range (or lose more than
``max_constant_error`` to rounding), or whose activations reach
``activation_limit`` in one onnxruntime run of the float32 model
(``surgeon.io.activations``), stays float32; Conv+BatchNormalization pairs are
folded first (the ``fuse`` pass, through the registry).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

import numpy as np
import onnx
import onnx.defs
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues

from surgeon.errors import PassError, SurgeonError, suggestion_hint
from surgeon.graph.constants import const_array, const_nbytes, const_pieces
from surgeon.graph.edit import replace_uses
from surgeon.graph.names import Namer, byte_size, node_label
from surgeon.graph.walk import node_domain, subgraphs_of, walk_graphs
from surgeon.io.activations import ActivationRunError, activation_peaks, load_inputs
from surgeon.io.external import Spill
from surgeon.io.model import Model
from surgeon.passes.compose import call_pass
from surgeon.passes.context import given_inputs
from surgeon.passes.contract import FP16, verified_by
from surgeon.passes.result import PassResult
from surgeon.passes.spec import Max, Min

if TYPE_CHECKING:
    from surgeon.graph.correspondence import Correspondence
    from surgeon.passes.runner import StepReport

FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504
FLOAT16_TINY = float(np.finfo(np.float16).smallest_subnormal)  # 2**-24, about 6e-08
# Exporters write float32's extremes for "no bound" (Clip) and "minus infinity" (attention masks):
# such a value means the same clamped to +-65504, so it never keeps a node in float32.
SENTINEL = 1e38
MAX_CONSTANT_ERROR = 1e-2
"""Default of ``max_constant_error``: 1 %, the usual tolerance of float16 outputs and twenty times
float16's worst rounding of a normal number (2**-11, about 4.9e-4): it fires for constants whose
magnitude lies mostly below about 3e-06, deep in float16's subnormal range (spacing 6e-08)."""
ACTIVATION_LIMIT = 16384.0
"""Default of ``activation_limit``: a quarter of float16's largest value, headroom for real inputs
up to four times larger than the samples."""
MAX_NOTED_NODES = 20  # per-node notes; details list every node

# Ops kept in float32 unless op_block_list says otherwise. This list is about
# numbers, not kernels: onnxruntime 1.32's CPU provider ran every op we tried in
# float16 (unary and binary math, Conv, MatMul, Gemm, normalizations, pooling,
# reductions, Softmax, Resize, TopK, RoiAlign, GridSample, Einsum, Pad...;
# where it has no float16 kernel it computes in float32 behind the scenes), so
# the kernel gaps that made older converters block Resize or TopK are gone.
# Blocking an op helps only where a value *inside* it leaves float16's range
# or precision while its inputs and outputs fit, since a blocked op's output
# is cast back to float16 for float16 readers. Ops that ONNX defines without
# float16 (Range, NonMaxSuppression) or whose output type an attribute sets
# (RandomNormal) stay float32 by rule 2 of the docstring, whatever this says.
DEFAULT_OP_BLOCK_LIST: dict[str, str] = {
    "CumSum": "a running sum accumulates float16 rounding errors along the axis",
    "ReduceProd": "partial products overflow float16 (max 65504)",
    "ReduceSumSquare": "the sum of squares overflows float16",
    "ReduceL2": "the sum of squares under the root overflows float16",
    "ReduceLogSum": "the sum under the log overflows float16",
    "ReduceLogSumExp": "the exponentials under the log overflow float16",
    "MeanVarianceNormalization": "ONNX's function body for it, which onnxruntime and shape inference expand, "
                                 "mixes in float32 constants and is invalid in float16",
}
# Comparisons decide branches, loop conditions and masks: float16 rounding near
# the threshold flips them, and integers cast to float for a comparison lose
# exactness above 2048 in float16 (their Cast then stays float32 too).
DEFAULT_OP_BLOCK_LIST.update({op: "float16 rounding can flip the comparison (integers above 2048 are inexact)"
                              for op in ("Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Equal")})

F16, F32 = "float16", "float32"
_PIECE = 4 << 20  # elements converted at a time (16 MiB of float32)
_STATS_PIECE = 1 << 20  # elements checked at a time (4 MiB of float32, a few temporaries of that size)
_RESULTS_OF_ATTRIBUTE = ("Constant", "ConstantOfShape", "Cast")


def _casts_back_contract(plan: Correspondence, report: StepReport, model: Model) -> None:
    """A tensor cast back to float32 (in front of a node kept in float32, a custom op) is the original's
    tensor: verification can compare it (e.g. what a custom op onnxruntime cannot run reads)."""
    for cast, source in report.details.get("float32_casts", {}).items():
        plan.exprs[cast] = plan.expr(source)


@verified_by(dataclasses.replace(FP16, update=_casts_back_contract))
def to_fp16(model: Model, *, keep_io_types: bool = True, op_block_list: list[str] | None = None,
            node_block_list: list[str] | None = None, fold_batchnorm: bool = True,
            max_constant_error: Annotated[float, Min(0)] = MAX_CONSTANT_ERROR,
            check_activations: bool | None = None,
            activation_limit: Annotated[float, Min(1), Max(FLOAT16_MAX)] = ACTIVATION_LIMIT,
            inputs: str | None = None) -> PassResult:
    """Convert float32 weights and computation to float16, keeping in float32 what float16 cannot hold.

    Parameters:
        keep_io_types: keep float32 graph inputs and outputs (Casts are
            inserted behind the inputs and in front of the outputs); false
            makes them float16.
        op_block_list: op types that stay float32; replaces the default list
            (CumSum, ReduceProd, ReduceSumSquare, ReduceL2, ReduceLogSum,
            ReduceLogSumExp, whose intermediate values overflow float16 while
            inputs and outputs fit, MeanVarianceNormalization, whose ONNX
            function body is float32-only, and the comparisons Less,
            LessOrEqual, Greater, GreaterOrEqual and Equal, which float16
            rounding can flip). Give [] to block none.
        node_block_list: names of nodes that stay float32.
        fold_batchnorm: first fold every BatchNormalization that follows a
            Conv into the Conv's weights (the ``fuse`` pass's ``conv_bn``,
            computed in float64), so huge or tiny statistics never reach
            float16 as such.
        max_constant_error: largest relative error float16 rounding may
            bring to a constant a float16 node reads (the norm of the
            rounding error over the norm of the values); a node reading a
            constant that would lose more stays float32. The default 0.01
            (1 %, twenty times float16's worst rounding of a normal number)
            fires for constants whose magnitude lies mostly below about
            3e-06, deep in float16's subnormal range; epsilons such as 1e-5
            lose 0.14 % and convert.
        check_activations: run the float32 model once in onnxruntime
            (CPU) on sample inputs and keep in float32 every node of the main
            graph that reads or writes a value beyond ``activation_limit``.
            The run holds the weights and every intermediate tensor of one
            inference. Default (null): run it when the model's weights are at
            most 1 GiB, skip it (with a note) above; true forces the run,
            false skips it (then only constants and attributes are checked;
            the verification that follows a precision change still compares
            the outputs).
        activation_limit: the magnitude an activation may reach in the
            sample run and still be float16; the default 16384 leaves a
            factor 4 below float16's largest value (65504) for real inputs
            larger than the samples.
        inputs: a ``.npz`` file with sample inputs for the activation run,
            one array per graph input, by name (a relative path is relative
            to the current directory). Without it, the inputs ``surgeon
            apply --inputs`` (or the recipe's ``verify: inputs``) verifies
            on, else seeded standard-normal noise; a symbolic dim is 1 for the first
            axis, 224 for height and width of a rank-4 (NCHW) input, 16
            otherwise.

    Rules:
        1. A node runs in float16 when every float32 input it has binds a
           type variable that allows ``tensor(float16)`` in its ONNX schema;
           its float32 outputs of those variables become float16. Inputs
           typed ``tensor(float)`` outright (``Resize`` scales,
           ``NonMaxSuppression`` boxes) stay float32; integer and bool
           tensors (shapes, indices, ``TopK``'s K) are never touched;
           ``Shape``, ``Size`` and ``Cast`` read whatever type they get.
        2. A node stays float32 when its op is blocked (``op_block_list``), it
           is named in ``node_block_list``, its op has no ONNX schema (custom
           ops, calls of local functions), its schema has no float16 for one
           of its float32 inputs (``Range``), or an attribute sets the type of
           a float32 output (``RandomNormal``, ``EyeLike``).
        3. A node also stays float32 when float16 cannot hold its values:
           a constant it would read in float16 has a finite value beyond
           +-65504 or would lose more than ``max_constant_error`` to
           rounding; a float attribute is beyond +-65504; or (main graph,
           ``check_activations``) a tensor it reads or writes reaches
           ``activation_limit`` in the sample run (tensors computed from
           constants alone are not measured: run ``fold_constants`` first to
           check them as constants). Values of magnitude 1e38
           and more (float32's extremes, written for "no bound" or a
           "minus infinity" mask) do not count. Its readers then get a Cast
           back to float16, where the values fit again. Tiny attribute
           values (epsilons) do not count: attributes stay float32.
        4. With ``fold_batchnorm``, a BatchNormalization after a Conv with
           constant weights is folded into it first (as ``fuse`` with
           ``patterns: [conv_bn]`` does): the folded weights are then checked
           by rule 3 like any constant. The activation run uses the model as
           given, so the tensor between Conv and BatchNormalization, which
           folding removes, keeps nothing in float32.
        5. ``If``/``Loop``/``Scan`` bodies are converted by the same rules, at
           any depth (their activations are not measured: a body tensor is
           not a graph output onnxruntime can expose). A value crossing a
           body boundary keeps one type: a Loop/Scan carried value (and a
           Scan input) is float16 in the node's input, the body input, the
           body output and the node's output (a Cast at the end of the body
           when the body computes it in float32); an If output is float16
           when a branch computes it in float16 (a branch computing it in
           float32 gets a Cast at its output). An outer tensor that a body
           reads in the other type gets a Cast next to its producer.
           ``keep_io_types`` is about the main graph only. An
           ``If``/``Loop``/``Scan`` that is blocked, or is not laid out as
           ONNX defines it (and a Scan of opset 8), stays float32 with its
           bodies; the notes count those nodes.
        6. Initializers (of bodies too), ``Constant`` and ``ConstantOfShape``
           values and ``Cast(to=FLOAT)`` results become float16 only when
           every reader wants float16; otherwise they stay float32 and float16
           readers get a Cast. Float32's extremes (rule 3) are clamped to
           +-65504; tiny nonzero values of a constant that converts (its
           rounding error within ``max_constant_error``) are raised to
           +-6e-08 instead of flushing to 0 (so an epsilon stays an
           epsilon); both are counted in the notes.
        7. A ``Cast`` is inserted once per tensor and target type, right after
           the tensor's producer, wherever a tensor's new type differs from
           what a reader wants. Graph outputs keep their names: when an
           output's type would change, its producer writes ``<name>_fp16``
           (or ``_fp32``) and a Cast writes the output.
        8. Local function bodies are not converted (calls stay float32; run
           ``inline_functions`` first to convert them). A model without
           float32 computation is left unchanged, so the step is idempotent.
        9. When onnxruntime cannot run the float32 model on the given
           ``inputs`` the step fails and the model is unchanged (give inputs
           the model accepts, or set ``check_activations: false``); on random
           inputs a note says the activations were NOT checked. The run stops
           at ops onnxruntime cannot run (custom ops, TensorRT plugins): what
           is computed from them is checked for constants and attributes
           only, and a note names the op.

    Example:
        version: 1
        steps:
          - pass: to_fp16
            with: {keep_io_types: true, op_block_list: [CumSum, ReduceL2, Softmax], activation_limit: 8192}

    Reports:
        the inserted Cast nodes and folded BatchNormalization nodes (by the
        runner); how many nodes run in float16 (and how many of them in
        If/Loop/Scan bodies), which stay float32 and why; each node kept for
        its values by name, with the constant, attribute or activation and
        its largest magnitude (or rounding error), the first 20 in the
        notes and all in ``details.kept_for_values``; the sample input
        shapes; how many constant values were clamped.
    """
    blocked_ops = dict(DEFAULT_OP_BLOCK_LIST) if op_block_list is None else \
        {op: "op_block_list" for op in op_block_list}
    _check_lists(model, op_block_list, node_block_list)
    if inputs is None and check_activations is not False and given_inputs() is not None:
        inputs = str(given_inputs())  # the real inputs the run is verified on (surgeon apply --inputs)
    result = PassResult()
    peaks: dict[str, float] = {}
    measured: list[str] = []  # what the activation run says goes last in the notes
    float32 = _has_float32_computation(model)
    if check_activations is None and float32:
        weights = _weight_bytes(model)
        check_activations = weights <= ACTIVATION_RUN_MAX_BYTES or inputs is not None
        if not check_activations:
            measured.append(f"activations NOT checked: the model holds {byte_size(weights)} of weights, more "
                            f"than the {byte_size(ACTIVATION_RUN_MAX_BYTES)} the automatic run allows (it holds "
                            "them once more in onnxruntime); set check_activations: true to run it anyway")
            result.details["activations_checked"] = False
    if check_activations and float32:
        peaks = _measure(model, inputs, result, measured)
    if fold_batchnorm and float32:
        folded = call_pass(model, "fuse", patterns=["conv_bn"], allow_missing=True).details["fused"]
        if folded.get("conv_bn"):
            result.notes.append(f"folded {folded['conv_bn']} BatchNormalization node(s) into the Conv before them")
    hot = {name: peak for name, peak in peaks.items() if peak >= activation_limit}
    plan = _Plan(model, blocked_ops, set(node_block_list or []), keep_io_types,
                 _Limits(max_constant_error, activation_limit, hot))
    plan.decide()
    if not plan.changes():
        result.notes.append("nothing to convert: no float32 computation or constant would change" if not
                            plan.kept_values else "nothing to convert: every float32 node stays float32")
        plan.report_values(result)
        result.notes += measured
        return result
    plan.convert_values()
    plan.apply(result)
    result.notes += measured
    return result


def _unreadable(label: str, exc: Exception) -> PassError:
    return PassError(f"cannot convert {label} to float16: its values cannot be read ({exc})",
                     hint="the model may have been saved without its weights; convert the model that has them")


def _readable(label: str, pieces: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """``pieces``, turning a failure to read them into the error that names the constant."""
    try:
        yield from pieces
    except Exception as exc:  # e.g. weightless models (TRT_WEIGHTLESS) keep shapes without data
        raise _unreadable(label, exc) from exc


def _has_float32_computation(model: Model) -> bool:
    return any(_is_float32(t.dtype) for g in walk_graphs(model.graph)
               for t in list(g.inputs) + [t for n in g.nodes for t in n.outputs] if _is_plain_tensor(t))


def _measure(model: Model, inputs: str | None, result: PassResult, notes: list[str]) -> dict[str, float]:
    """Largest magnitude of every main-graph float tensor on the sample inputs (the model is not changed).

    Given inputs that cannot be read or run are an error; when onnxruntime cannot run the model on
    random inputs (a custom op, a shape the random inputs miss), a note says the activations were not
    checked and only constants and attributes are."""
    graph = model.graph
    # Tensors computed from constants alone (Transpose(W), weights dequantized...) are weight-sized and would
    # all be held at once; they are left out (fold_constants first makes them constants that rule 3 checks).
    constant = {id(t) for t in graph.tensors().values() if isinstance(t, gs.Constant)}
    names = []
    for n in graph.nodes:
        outputs = [t for t in n.outputs if not t.is_empty()]
        if all(id(t) in constant for t in n.inputs if not t.is_empty()) and not any(True for _ in subgraphs_of(n)) \
                and n.op not in ("RandomNormal", "RandomUniform"):
            constant.update(id(t) for t in outputs)
            continue
        names += [t.name for t in outputs if _is_plain_tensor(t) and (t.dtype is None or _is_float32(t.dtype))]
    names += [t.name for t in graph.inputs if _is_float32(t.dtype)]
    try:
        peaks, feeds, unrun = activation_peaks(model, names, load_inputs(inputs) if inputs is not None else None)
    except (ActivationRunError, SurgeonError) as exc:
        if inputs is None and isinstance(exc, ActivationRunError):
            notes.append(f"activations NOT checked (only constants and attributes): {exc.message} ({exc.hint}; "
                         "check_activations: false skips the run)")
            result.details["activations_checked"] = False
            return {}
        raise PassError(f"cannot measure the activations for float16: {exc.message}",
                        hint=(exc.hint + "; or " if exc.hint else "") + "set check_activations: false to check "
                        "only constants and attributes") from None
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items())
    source = f"the inputs of {inputs}" if inputs is not None else "random inputs"
    notes.append(f"activations measured in onnxruntime on {source}: {shapes}")
    if unrun:
        notes.append(f"activations NOT checked after {', '.join(unrun)} (onnxruntime cannot run it; the nodes "
                     "computed from it are checked for constants and attributes only)")
    result.details["activations_checked"] = True
    result.details["sample_inputs"] = {k: list(v.shape) for k, v in feeds.items()}
    return peaks


ACTIVATION_RUN_MAX_BYTES = 1 << 30
"""Weights above which ``check_activations`` left at its default skips the onnxruntime run."""


def _weight_bytes(model: Model) -> int:
    """Bytes of every constant tensor of every graph (no weight is read)."""
    return sum(const_nbytes(t) for g in walk_graphs(model.graph) for t in g.tensors().values()
               if isinstance(t, gs.Constant))


def _check_lists(model: Model, op_block_list: list[str] | None, node_block_list: list[str] | None) -> None:
    nodes = [n for g in walk_graphs(model.graph) for n in g.nodes]
    ops = {n.op for n in nodes}
    for op in op_block_list or []:
        if op not in ops and not onnx.defs.has(op):
            raise PassError(
                f"op_block_list names '{op}', which is neither an op of this model nor an ONNX op",
                hint=suggestion_hint(op, ops | {s.name for s in onnx.defs.get_all_schemas()})
                or "op types are case-sensitive, e.g. CumSum",
            )
    names = {n.name for n in nodes if n.name}
    for name in node_block_list or []:
        if name not in names:
            raise PassError(f"node_block_list names '{name}', but the model has no node of that name",
                            hint=suggestion_hint(name, names) or "node names are listed by 'surgeon inspect'")


def _is_float32(dtype) -> bool:
    try:
        return dtype is not None and np.dtype(dtype) == np.float32
    except TypeError:  # onnx-only types (bfloat16, float8...) gs keeps as TensorProto enums
        return False


def _is_plain_tensor(t: gs.Tensor) -> bool:
    return isinstance(t, gs.Constant) or getattr(t, "type", None) in (None, "tensor_type")


@dataclass(frozen=True)
class _Limits:
    max_constant_error: float
    activation_limit: float
    hot: dict[str, float]
    """Main-graph tensor name -> its largest magnitude in the sample run, for those at or beyond the limit."""


VALUES_REASON = "values float16 cannot hold"


@dataclass
class _Decision:
    convert: bool
    reason: str = ""
    wants: dict[int, str] = field(default_factory=dict)
    """Input slot -> the float type the node reads there; slots not listed take anything."""
    outputs16: set[int] = field(default_factory=set)
    """Output slots that become float16 when the node runs in float16."""
    follows: dict[int, list[gs.Tensor]] = field(default_factory=dict)
    """If/Loop/Scan output slot -> the body outputs it comes from (it takes their type)."""
    carried: set[int] = field(default_factory=set)
    """Loop/Scan body output slots of carried values: float16, like the body inputs they feed."""
    out_slots: dict[int, int] = field(default_factory=dict)
    """Body output slot -> the If/Loop/Scan output slot it becomes (for ``follows``)."""


class _Plan:
    """Decides every node and tensor of the model, bodies included, first; then rewrites (validate before mutate)."""

    def __init__(self, model: Model, blocked_ops: dict[str, str], blocked_names: set[str],
                 keep_io_types: bool, limits: _Limits) -> None:
        self.model = model
        self.limits = limits
        self.constant_stats: dict[int, tuple[float, float] | None] = {}
        self.kept_values: dict[int, dict] = {}  # node id -> why float16 cannot hold its values
        self.graph = model.graph
        self.blocked_ops = blocked_ops
        self.blocked_names = blocked_names
        self.io = F32 if keep_io_types else F16
        self.graphs = list(walk_graphs(self.graph))
        self.parent: dict[int, gs.Graph | None] = {id(self.graph): None}
        self.body_of: dict[int, gs.Node] = {}      # body graph id -> its If/Loop/Scan node
        self.graph_of: dict[int, gs.Graph] = {}    # node id -> the graph holding it
        self.input_of: dict[int, gs.Graph] = {}    # graph input id -> its graph
        self.output_of: dict[int, list[tuple[gs.Graph, int]]] = {}  # tensor id -> (graph, slot) it is output of
        for g in self.graphs:
            for t in g.inputs:
                self.input_of[id(t)] = g
            for k, t in enumerate(g.outputs):
                self.output_of.setdefault(id(t), []).append((g, k))
            for n in g.nodes:
                self.graph_of[id(n)] = g
                for _, sub in subgraphs_of(n):
                    self.parent[id(sub)] = g
                    self.body_of[id(sub)] = n
        self.f32: set[int] = set()          # ids of float32 tensors (declared or implied by a schema)
        self.decisions: dict[int, _Decision] = {}
        self.input_home: dict[int, str] = {}  # Loop/Scan body input id -> its type after conversion
        self.home: dict[int, str] = {}       # float32 tensor id -> its type after conversion

    # -- deciding ---------------------------------------------------------------------------

    def decide(self) -> None:
        for g in self.graphs:
            for t in g.inputs + g.outputs + [t for n in g.nodes for t in n.inputs + n.outputs]:
                if _is_plain_tensor(t) and _is_float32(t.dtype):
                    self.f32.add(id(t))
        # Types found in a body reach the If/Loop/Scan outputs, and from there nodes decided
        # earlier (a loop-carried value typed only by its body output): decide until nothing new.
        known = -1
        while known != len(self.f32):
            known = len(self.f32)
            self.decisions, self.input_home, self.kept_values = {}, {}, {}
            self._decide_graph(self.graph, kept=None)
        for t in self._float_tensors():
            self.home_of(t)
        self._count()

    def _decide_graph(self, g: gs.Graph, kept: str | None) -> None:
        """Decides the nodes of ``g`` in order (producers before readers); ``kept``: why all stay float32."""
        for n in g.nodes:
            if kept is not None:
                schema = self._schema(n)
                if schema is not None and not any(True for _ in subgraphs_of(n)):
                    self._infer_types(n, schema)
                d = _Decision(False, kept)
            else:
                d = self._decide(n)
            self.decisions[id(n)] = d
            bodies = [sub for _, sub in subgraphs_of(n)]
            if bodies and not d.convert:
                inner = kept or f"in the body of a float32 {n.op}"
                for body in bodies:
                    for t in body.inputs:
                        self.input_home[id(t)] = F32
                    self._decide_graph(body, inner)

    def _schema(self, node: gs.Node):
        domain = node_domain(node)
        version = self._opset(domain)
        if version is None or not onnx.defs.has(node.op, domain):
            return None
        try:
            return onnx.defs.get_schema(node.op, version, domain)
        except onnx.defs.SchemaError:
            return None

    def _opset(self, domain: str) -> int | None:
        version = self.model.opset_imports.get(domain)
        if version is None and domain == "":
            version = self.model.opset_imports.get("ai.onnx")
        return version

    def _decide(self, n: gs.Node) -> _Decision:
        bodies = any(True for _ in subgraphs_of(n))
        schema = self._schema(n)
        if schema is not None and not bodies:  # If/Loop/Scan outputs are typed by their bodies
            self._infer_types(n, schema)
        if n.name and n.name in self.blocked_names:
            return _Decision(False, "node_block_list")
        if n.op in self.blocked_ops:
            return _Decision(False, f"{n.op}: {self.blocked_ops[n.op]}")
        if bodies:
            if self._hot(n):
                return _Decision(False, VALUES_REASON)
            return self._control_flow(n, schema)
        if schema is None:
            kind = "local function" if any(f.name == n.op and (f.domain or "") == node_domain(n)
                                           for f in self.graph.functions) else "no ONNX schema"
            return _Decision(False, f"{kind}: {node_domain(n) + '::' if node_domain(n) else ''}{n.op}")
        if self._handles_containers(n, schema):
            return _Decision(False, f"{n.op}: sequence, map or optional values")
        if n.op in _RESULTS_OF_ATTRIBUTE or n.op in ("Shape", "Size"):
            # Cast and the shape readers take any type; the others' outputs follow their readers (_home).
            return _Decision(True)
        decision = self._bind(n, schema)
        if decision.convert and (self._unsafe_values(n, decision) or self._hot(n)):
            return _Decision(False, VALUES_REASON)
        return decision

    # -- values float16 cannot hold ---------------------------------------------------------

    def _keep(self, n: gs.Node, kind: str, name: str, magnitude: float, why: str) -> bool:
        self.kept_values[id(n)] = {"node": n.name, "label": node_label(n), "op": n.op, "kind": kind, "name": name,
                                   "max_abs": magnitude, "why": why}
        return True

    def _hot(self, n: gs.Node) -> bool:
        """Whether a tensor ``n`` reads or writes reached the activation limit in the sample run."""
        if not self.limits.hot or self.graph_of[id(n)] is not self.graph:
            return False
        for side, tensors in (("output", n.outputs), ("input", n.inputs)):
            for t in tensors:
                peak = self.limits.hot.get(t.name) if not isinstance(t, gs.Constant) else None
                if peak is not None:
                    return self._keep(n, "activation", t.name, peak,
                                      f"{side} '{t.name}' reaches {peak:.4g} in the sample run "
                                      f"(activation_limit {self.limits.activation_limit:g})")
        return False

    def _unsafe_values(self, n: gs.Node, d: _Decision) -> bool:
        """Whether a constant ``n`` would read in float16, or a float attribute, does not fit float16."""
        for i, want in d.wants.items():
            if want != F16:
                continue
            t = n.inputs[i]
            stats = self._constant_stats(t)
            if stats is None:
                continue
            magnitude, error = stats
            if magnitude > FLOAT16_MAX:
                return self._keep(n, "constant", t.name, magnitude,
                                  f"constant input '{t.name}' reaches {magnitude:.4g}, beyond float16's 65504")
            if error > self.limits.max_constant_error:
                return self._keep(n, "constant", t.name, magnitude,
                                  f"constant input '{t.name}' (largest magnitude {magnitude:.3g}) would change "
                                  f"by {100 * error:.3g} % in float16 (relative error {error:.2g} > "
                                  f"max_constant_error {self.limits.max_constant_error:g})")
        for key, value in n.attrs.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            floats = [abs(v) for v in values if isinstance(v, float)]
            beyond = [v for v in floats if FLOAT16_MAX < v < SENTINEL]
            if beyond:
                return self._keep(n, "attribute", key, max(beyond),
                                  f"attribute {key} = {max(beyond):.4g} is beyond float16's 65504")
        return False

    def _constant_stats(self, t: gs.Tensor) -> tuple[float, float] | None:
        """(largest finite magnitude, relative rounding error in float16) of a constant, None for a
        computed tensor. Values of magnitude SENTINEL and more, and non-finite ones, are left out.
        Large weights are read piece by piece (never whole in memory)."""
        key = id(t)
        if key in self.constant_stats:
            return self.constant_stats[key]
        found = self._constant_pieces(t)
        stats = None
        if found is not None:
            label, pieces = found
            top = norm = error = 0.0
            for piece in _readable(label, pieces):
                x = np.asarray(piece, dtype=np.float32).reshape(-1)
                a = np.abs(x)
                counted = np.isfinite(a) & (a < SENTINEL)
                if not counted.all():
                    x, a = x[counted], a[counted]
                if not x.size:
                    continue
                top = max(top, float(a.max()))
                with np.errstate(over="ignore"):
                    rounded = x.astype(np.float16).astype(np.float32)
                beyond = a > FLOAT16_MAX  # counted by magnitude, not as an infinite error
                if beyond.any():
                    rounded[beyond] = x[beyond]
                rounded -= x
                norm += float(np.dot(x, x))
                error += float(np.dot(rounded, rounded))
            stats = (top, float(np.sqrt(error / norm)) if norm > 0 else 0.0)
        self.constant_stats[key] = stats
        return stats

    def _constant_pieces(self, t: gs.Tensor) -> tuple[str, Iterable[np.ndarray]] | None:
        """(label, float32 values piece by piece) of an initializer or Constant/ConstantOfShape output."""
        if isinstance(t, gs.Constant):
            return (f"initializer '{t.name}'", const_pieces(t, _STATS_PIECE)) if _is_float32(t.dtype) else None
        producer = t.inputs[0] if isinstance(t, gs.Variable) and len(t.inputs) == 1 else None
        if producer is None or producer.op not in ("Constant", "ConstantOfShape"):
            return None
        label = f"the value of {producer.op} node '{producer.name or t.name}'"
        value = producer.attrs.get("value")
        if isinstance(value, gs.Constant):
            return (label, const_pieces(value, _STATS_PIECE)) if _is_float32(value.dtype) else None
        for key in ("value_float", "value_floats"):
            if key in producer.attrs:
                return label, [np.array(producer.attrs[key], np.float32)]
        return None

    def _boundary(self, n: gs.Node) -> list[tuple[bool, int | None, list[gs.Tensor], list[int], int | None]] | None:
        """The values crossing an If/Loop/Scan body boundary, None if the node is malformed.

        Each is (carried, node input slot, body inputs, body output slots, node output slot);
        carried values (Loop/Scan state, Scan inputs) enter the body, the others come out of it.
        """
        bodies = dict(subgraphs_of(n))
        if n.op == "If":
            then, other = bodies.get("then_branch"), bodies.get("else_branch")
            if then is None or other is None or not len(then.outputs) == len(other.outputs) == len(n.outputs):
                return None
            return [(False, None, [], [j], j) for j in range(len(n.outputs))]
        body = bodies.get("body")
        if body is None:
            return None
        if n.op == "Loop":  # inputs M, cond, state; body (iter, cond, state) -> (cond, state, scans)
            state = len(n.inputs) - 2
            if state < 0 or len(body.inputs) != state + 2 or len(body.outputs) != 1 + len(n.outputs):
                return None
            return ([(True, 2 + k, [body.inputs[2 + k]], [1 + k], k) for k in range(state)]
                    + [(False, None, [], [k + 1], k) for k in range(state, len(n.outputs))])
        # Scan (opset 9+): inputs state, scan inputs; body (state, scan elements) -> (state, scan elements)
        scans = n.attrs.get("num_scan_inputs")
        state = len(n.inputs) - (scans if isinstance(scans, int) else len(n.inputs) + 1)
        if state < 0 or len(body.inputs) != len(n.inputs) or len(body.outputs) != len(n.outputs):
            return None
        return ([(True, k, [body.inputs[k]], [k], k) for k in range(state)]
                + [(True, k, [body.inputs[k]], [], None) for k in range(state, len(n.inputs))]
                + [(False, None, [], [k], k) for k in range(state, len(n.outputs))])

    def _control_flow(self, n: gs.Node, schema) -> _Decision:
        """If/Loop/Scan: the bodies are decided like the main graph; values crossing a body boundary keep one type."""
        scan8 = n.op == "Scan" and (self._opset("") or 0) < 9
        boundary = None if schema is None or n.op not in ("If", "Loop", "Scan") or scan8 else self._boundary(n)
        if boundary is None:
            why = ("Scan-8 (batched, with sequence_lens)" if scan8 else
                   f"{n.op}: body layout not understood" if schema is not None else
                   f"no ONNX schema: {node_domain(n) + '::' if node_domain(n) else ''}{n.op}")
            return _Decision(False, why + " (its bodies stay float32)")
        bodies = [sub for _, sub in subgraphs_of(n)]
        decision = _Decision(True)
        for carried, slot, body_inputs, out_slots, node_slot in boundary:
            outer = n.inputs[slot] if slot is not None and slot < len(n.inputs) else None
            node_out = n.outputs[node_slot] if node_slot is not None else None
            group = [t for t in [outer, node_out, *body_inputs, *(b.outputs[k] for b in bodies for k in out_slots)]
                     if t is not None and not t.is_empty() and _is_plain_tensor(t)]
            if not any(id(t) in self.f32 for t in group):
                continue
            self.f32.update(id(t) for t in group)  # one value: all its tensors are float32 (until converted)
            if carried:
                if slot is not None and outer is not None and not outer.is_empty():
                    decision.wants[slot] = F16
                for t in body_inputs:
                    self.input_home[id(t)] = F16
                decision.carried.update(out_slots)
                if node_slot is not None:  # the value also leaves the node (node_out is its output)
                    decision.outputs16.add(node_slot)
            else:
                if node_slot is None:  # _boundary gives every value that leaves a body a node output
                    raise AssertionError(f"{n.op} '{n.name}': a body output with no node output slot")
                decision.follows[node_slot] = [b.outputs[k] for b in bodies for k in out_slots]
                decision.out_slots.update((k, node_slot) for k in out_slots)
        for body in bodies:
            self._decide_graph(body, kept=None)
        return decision

    def _handles_containers(self, n: gs.Node, schema) -> bool:
        """Whether the node reads or writes sequences, maps or optionals (their element types stay as they are)."""
        allowed = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
        for params, tensors in ((schema.inputs, n.inputs), (schema.outputs, n.outputs)):
            for i, t in enumerate(tensors):
                formal = self._formal(params, i)
                if formal is None or t.is_empty():
                    continue
                types = allowed.get(formal.type_str, [formal.type_str])
                if not any(ty.startswith("tensor(") for ty in types):
                    return True
        return False

    def _formal(self, params, i: int):
        if i < len(params):
            return params[i]
        last = params[-1] if params else None
        if last is not None and last.option == onnx.defs.OpSchema.FormalParameterOption.Variadic:
            return last
        return None

    def _infer_types(self, n: gs.Node, schema) -> None:
        """Mark tensors float32 that the schema implies are (legacy exports lack value_info)."""
        sides = ((schema.inputs, n.inputs), (schema.outputs, n.outputs))
        variables = {c.type_param_str for c in schema.type_constraints}
        # A type variable bound to float32 by any input or output types all its tensors.
        bound = {self._formal(params, i).type_str for params, tensors in sides for i, t in enumerate(tensors)
                 if id(t) in self.f32 and self._formal(params, i) is not None} & variables
        for params, tensors in sides:
            for i, t in enumerate(tensors):
                formal = self._formal(params, i)
                if formal is not None and formal.type_str in bound and not t.is_empty() and _is_plain_tensor(t):
                    self.f32.add(id(t))
        if n.op == "Cast" and n.attrs.get("to") == onnx.TensorProto.FLOAT:
            self.f32.add(id(n.outputs[0]))
        if n.op in ("Constant", "ConstantOfShape") and self._attribute_value_is_float32(n):
            self.f32.add(id(n.outputs[0]))

    @staticmethod
    def _attribute_value_is_float32(n: gs.Node) -> bool:
        if n.op == "ConstantOfShape":
            value = n.attrs.get("value")
            return value is None or _is_float32(value.dtype)  # no value: float32 zeros
        if "value" in n.attrs:
            return isinstance(n.attrs["value"], gs.Constant) and _is_float32(n.attrs["value"].dtype)
        return "value_float" in n.attrs or "value_floats" in n.attrs

    def _bind(self, n: gs.Node, schema) -> _Decision:
        constraints = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
        decision = _Decision(True)
        bound: set[str] = set()
        for i, t in enumerate(n.inputs):
            formal = self._formal(schema.inputs, i)
            if formal is None or id(t) not in self.f32:
                continue
            if formal.type_str not in constraints:
                decision.wants[i] = F32  # fixed tensor(float): Resize scales, NMS boxes
            elif not formal.is_homogeneous:
                return _Decision(False, f"{n.op}: mixed-type variadic input '{formal.name}'")
            elif "tensor(float16)" not in constraints[formal.type_str]:
                return _Decision(False, f"{n.op}: ONNX defines no float16 for input '{formal.name}'")
            else:
                bound.add(formal.type_str)
                decision.wants[i] = F16
        input_variables = {p.type_str for p in schema.inputs}
        for j, t in enumerate(n.outputs):
            formal = self._formal(schema.outputs, j)
            if t.is_empty() or formal is None or id(t) not in self.f32:
                continue
            if formal.type_str in bound:
                decision.outputs16.add(j)
            elif formal.type_str in constraints and formal.type_str not in input_variables:
                return _Decision(False, f"{n.op}: an attribute sets the type of output '{formal.name}'")
        return decision

    # -- types after conversion ------------------------------------------------------------------

    def _float_tensors(self) -> list[gs.Tensor]:
        seen: dict[int, gs.Tensor] = {}
        for g in self.graphs:
            for t in g.inputs + g.outputs:
                seen.setdefault(id(t), t)
            for n in g.nodes:
                for t in n.inputs + n.outputs:
                    seen.setdefault(id(t), t)
        return [t for t in seen.values() if id(t) in self.f32]

    def reader_wants(self, t: gs.Tensor) -> list[tuple[gs.Node | gs.Graph, int, str]]:
        """(reader, input slot, wanted type) of every read of ``t``; a graph reader is a graph output slot."""
        wants: list[tuple[gs.Node | gs.Graph, int, str]] = []
        for r in {id(r): r for r in t.outputs}.values():  # a node reading t twice is listed twice
            for i, x in enumerate(r.inputs):
                if x is not t:
                    continue
                d = self.decisions.get(id(r))
                if d is None or not d.convert:
                    wants.append((r, i, F32))  # a node kept in float32
                elif i in d.wants:
                    wants.append((r, i, d.wants[i]))
        for g, k in self.output_of.get(id(t), []):
            wants.append((g, k, self._output_wants(g, k)))
        return wants

    def _output_wants(self, g: gs.Graph, k: int) -> str:
        """The type of output ``k`` of graph ``g``: the interface type, or what its If/Loop/Scan makes of it."""
        if g is self.graph:
            return self.io
        node = self.body_of[id(g)]
        d = self.decisions[id(node)]
        if not d.convert:
            return F32
        if k in d.carried:
            return F16  # the body input it feeds next iteration is float16
        slot = d.out_slots.get(k)
        return F32 if slot is None else self.home_of(node.outputs[slot])

    def home_of(self, t: gs.Tensor) -> str:
        if id(t) not in self.home:
            self.home[id(t)] = self._home(t)
        return self.home[id(t)]

    def _home(self, t: gs.Tensor) -> str:
        if any(i is t for i in self.graph.inputs):
            return self.io
        if id(t) in self.input_home:
            return self.input_home[id(t)]
        producer = t.inputs[0] if isinstance(t, gs.Variable) and t.inputs else None
        if producer is not None:
            d = self.decisions.get(id(producer))
            if d is None or not d.convert:
                return F32
            if producer.op not in _RESULTS_OF_ATTRIBUTE:
                j = next(j for j, o in enumerate(producer.outputs) if o is t)
                if j not in d.follows:
                    return F16 if j in d.outputs16 else F32
                from_bodies = self._follow(d.follows[j])
                if from_bodies is not None:
                    return from_bodies
        # Constants, values set by an attribute and If outputs that only bodies' constants make follow their readers.
        wanted = {w for _, _, w in self.reader_wants(t)}
        return F16 if wanted == {F16} else F32

    def _follow(self, body_outputs: list[gs.Tensor]) -> str | None:
        """The type of an If/Loop/Scan output: float16 if a body computes it in float16 (the
        other branch is cast to match), None if only constants make it (it follows its readers)."""
        homes = {self.home_of(b) for b in body_outputs if not self._flexible(b)}
        return F16 if F16 in homes else F32 if homes else None

    def _flexible(self, t: gs.Tensor) -> bool:
        """Whether ``t``'s type follows its readers (constants and values set by an attribute)."""
        if isinstance(t, gs.Constant):
            return True
        producer = t.inputs[0] if isinstance(t, gs.Variable) and t.inputs else None
        if producer is None or id(t) in self.input_home or any(i is t for i in self.graph.inputs):
            return False
        d = self.decisions.get(id(producer))
        if d is None or not d.convert:
            return False
        if producer.op in _RESULTS_OF_ATTRIBUTE:
            return True
        j = next(j for j, o in enumerate(producer.outputs) if o is t)
        return j in d.follows and self._follow(d.follows[j]) is None

    def changes(self) -> bool:
        if any(h == F16 for h in self.home.values()):
            return True
        return any(w != self.home_of(t) for t in self._float_tensors() for _, _, w in self.reader_wants(t))

    # -- rewriting ---------------------------------------------------------------------------------

    def apply(self, result: PassResult) -> None:
        self.names = Namer(self.graph)
        # (graph id, producer id or 0 for the graph's start) -> Casts to put after it
        self.after: dict[tuple[int, int], list[gs.Node]] = {}
        self.casts: dict[tuple[int, str], gs.Variable] = {}
        self.back_to_float32: dict[str, str] = {}  # Cast output -> the tensor it casts back to float32
        self._cast_outputs()
        for t in self._float_tensors():
            if self.home[id(t)] == F16:
                self._make_float16(t)
        for t in self._float_tensors():
            for reader, i, want in self.reader_wants(t):
                if want == self.home[id(t)]:
                    continue
                if isinstance(reader, gs.Node):
                    reader.inputs[i] = self._cast(t, want)
                elif reader is not self.graph:
                    self._cast_body_output(reader, i, want)
        for g in self.graphs:
            nodes = list(self.after.get((id(g), 0), []))
            for n in g.nodes:
                nodes.append(n)
                nodes += self.after.get((id(g), id(n)), [])
            g.nodes = nodes
        result.details["float32_casts"] = dict(self.back_to_float32)
        self._report(result, self.stats)

    def _place(self, t: gs.Tensor) -> tuple[int, int]:
        """Where a Cast of ``t`` goes: right after its producer, or first in the graph that declares it
        (for a constant, the innermost graph enclosing its readers), so every reader sees it."""
        producer = t.inputs[0] if isinstance(t, gs.Variable) and t.inputs else None
        if producer is not None:
            return id(self.graph_of[id(producer)]), id(producer)
        if id(t) in self.input_of:
            return id(self.input_of[id(t)]), 0
        chains = []
        for g in [self.graph_of[id(r)] for r in t.outputs] + [g for g, _ in self.output_of.get(id(t), [])]:
            chain: list[int] = []
            while g is not None:
                chain.append(id(g))
                g = self.parent[id(g)]
            chains.append(chain)
        common = [gid for gid in chains[0] if all(gid in c for c in chains[1:])] if chains else [id(self.graph)]
        return common[0], 0

    def _new_cast(self, src: gs.Tensor, dst: gs.Tensor, to: str, place: tuple[int, int]) -> gs.Node:
        cast = gs.Node("Cast", name=self.names.new(dst.name + "/Cast"), inputs=[src], outputs=[dst],
                       attrs={"to": onnx.TensorProto.FLOAT16 if to == F16 else onnx.TensorProto.FLOAT})
        self.after.setdefault(place, []).append(cast)
        self.decisions[id(cast)] = _Decision(True)  # a Cast reads any type
        self.graph_of[id(cast)] = next(g for g in self.graphs if id(g) == place[0])
        return cast

    def _new_tensor(self, t: gs.Tensor, to: str) -> gs.Variable:
        return gs.Variable(self.names.new(f"{t.name}_{to.replace('float', 'fp')}"),
                           dtype=np.float16 if to == F16 else np.float32,
                           shape=None if t.shape is None else list(t.shape))

    def _cast(self, t: gs.Tensor, to: str) -> gs.Variable:
        key = (id(t), to)
        if key not in self.casts:
            self.casts[key] = self._new_tensor(t, to)
            self._new_cast(t, self.casts[key], to, self._place(t))
            if to == F32:
                self.back_to_float32[self.casts[key].name] = t.name
        return self.casts[key]

    def _cast_body_output(self, body: gs.Graph, k: int, to: str) -> None:
        """A body output its If/Loop/Scan wants in the other type: a Cast at the end of the body
        writes a new output (body outputs are matched by position, their names do not matter)."""
        t = body.outputs[k]
        out = self._new_tensor(t, to)
        last = body.nodes[-1] if body.nodes else None
        self._new_cast(t, out, to, (id(body), id(last) if last is not None else 0))
        body.outputs[k] = out

    def _cast_outputs(self) -> None:
        """A graph output whose type changes keeps its name: its producer writes a new tensor, a Cast the output."""
        for t in list(self.graph.outputs):
            if id(t) not in self.f32 or self.home[id(t)] == self.io:
                continue
            producer = t.inputs[0] if isinstance(t, gs.Variable) and t.inputs else None
            if producer is None or self.graph_of.get(id(producer)) is not self.graph:
                continue  # a graph input or constant passed through: left as it is
            inner = self._new_tensor(t, self.home[id(t)])
            inner.dtype = t.dtype
            replace_uses(t, inner)
            j = next(j for j, o in enumerate(producer.outputs) if o is t)
            producer.outputs[j] = inner
            self.f32.add(id(inner))
            self.home[id(inner)] = self.home[id(t)]
            self.home[id(t)] = self.io
            self._new_cast(inner, t, self.io, (id(self.graph), id(producer)))

    def convert_values(self) -> None:
        """The float16 values of every constant that changes, computed before anything is edited."""
        self.values16: dict[int, np.ndarray | LazyValues] = {}
        self.spill = Spill(enabled=self.model.has_external_data)
        self.stats = {"constants": 0, "clamped": 0, "raised": 0}
        for t in self._float_tensors():
            if self.home[id(t)] != F16:
                continue
            producer = t.inputs[0] if isinstance(t, gs.Variable) and t.inputs else None
            if isinstance(t, gs.Constant):
                source, label = t, f"initializer '{t.name}'"
            elif producer is not None and producer.op in ("Constant", "ConstantOfShape"):
                source = producer.attrs.get("value")
                label = f"the value of {producer.op} node '{producer.name or t.name}'"
                if source is None:
                    if "value_float" in producer.attrs:  # a scalar
                        values = np.array(producer.attrs["value_float"], np.float32)
                    elif "value_floats" in producer.attrs:  # a 1-D tensor
                        values = np.array(producer.attrs["value_floats"], np.float32)
                    else:  # ConstantOfShape without value makes float32 zeros
                        values = np.zeros([1], np.float32)
                    self.values16[id(t)] = self._to_float16(values)
                    continue
            else:
                continue
            try:
                self.values16[id(t)] = self._convert(source)
            except Exception as exc:  # e.g. weightless models (TRT_WEIGHTLESS) keep shapes without data
                raise _unreadable(label, exc) from exc

    def _convert(self, source: gs.Constant) -> np.ndarray | LazyValues:
        """``source``'s values in float16. A large one is read, converted and written to the
        spill file piece by piece, so neither it nor its conversion is ever whole in memory."""
        if const_nbytes(source) < self.spill.min_bytes:
            return self._to_float16(const_array(source))
        self.stats["constants"] += 1
        pieces = (self._to_float16(piece, count=False) for piece in const_pieces(source, _PIECE))
        return self.spill.write_chunks(np.dtype(np.float16), tuple(source.shape), pieces)

    def _make_float16(self, t: gs.Tensor) -> None:
        if isinstance(t, gs.Constant):
            t.values = self.values16[id(t)]
            return
        if t.dtype is not None:  # a tensor the input gave no type keeps none (no new value_info)
            t.dtype = np.float16
        producer = t.inputs[0] if t.inputs else None
        if producer is None or producer.op not in _RESULTS_OF_ATTRIBUTE:
            return
        if producer.op == "Cast":
            producer.attrs["to"] = onnx.TensorProto.FLOAT16
            return
        for key in ("value_float", "value_floats"):
            producer.attrs.pop(key, None)
        producer.attrs["value"] = gs.Constant(self.names.new(t.name + "_value"), self.values16[id(t)])

    def _to_float16(self, values: np.ndarray, count: bool = True) -> np.ndarray:
        stats = self.stats
        stats["constants"] += count
        values = np.asarray(values, dtype=np.float32)
        finite = np.isfinite(values)
        big = finite & (np.abs(values) > FLOAT16_MAX)
        tiny = (values != 0) & (np.abs(values) < FLOAT16_TINY)
        stats["clamped"] += int(big.sum())
        stats["raised"] += int(tiny.sum())
        if big.any() or tiny.any():
            values = values.copy()
            values[big] = np.sign(values[big]) * FLOAT16_MAX
            values[tiny] = np.sign(values[tiny]) * FLOAT16_TINY
        return values.astype(np.float16)

    def _count(self) -> None:
        """What the summary tells, counted on the graph as it was."""
        self.converted = self.converted_inside = 0
        self.kept: dict[str, int] = {}
        for g in self.graphs:
            for n in g.nodes:
                d = self.decisions[id(n)]
                if d.convert and any(self.home.get(id(t)) == F16 for t in n.outputs):
                    self.converted += 1
                    self.converted_inside += g is not self.graph
                elif not d.convert and any(id(t) in self.f32 for t in n.inputs + n.outputs):
                    self.kept[d.reason] = self.kept.get(d.reason, 0) + 1

    def report_values(self, result: PassResult) -> None:
        """One note per node kept in float32 for its values (the first MAX_NOTED_NODES); details list all."""
        by_values = sorted(self.kept_values.values(), key=lambda k: (k["kind"], -k["max_abs"]))
        for k in by_values[:MAX_NOTED_NODES]:
            result.notes.append(f"kept in float32: {k['label']}: {k['why']}")
        if len(by_values) > MAX_NOTED_NODES:
            result.notes.append(f"... and {len(by_values) - MAX_NOTED_NODES} more node(s) kept in float32 for their "
                                "values (details.kept_for_values lists all)")
        result.details["kept_for_values"] = by_values

    def _report(self, result: PassResult, stats: dict[str, int]) -> None:
        converted, kept = self.converted, self.kept
        inside = f" ({self.converted_inside} inside If/Loop/Scan bodies)" if self.converted_inside else ""
        result.notes.append(f"{converted} node(s) now compute in float16{inside}")
        if kept:
            result.notes.append("kept in float32: " + "; ".join(f"{reason} x{k}" for reason, k in kept.items()))
        if stats["clamped"]:
            result.notes.append(f"clamped {stats['clamped']} constant value(s) beyond float16's range to +-65504")
        self.report_values(result)
        if stats["raised"]:
            result.notes.append(f"set {stats['raised']} nonzero constant value(s) below float16's smallest "
                                "subnormal to +-6e-08 instead of 0 (keeps epsilons nonzero)")
        if self.graph.functions:
            result.notes.append(f"{len(self.graph.functions)} local function(s) not converted "
                                "(run inline_functions first to convert them)")
        result.details.update({"float16_nodes": converted, "float16_nodes_in_subgraphs": self.converted_inside,
                               "kept_float32": kept, "constants_converted": stats["constants"],
                               "clamped": stats["clamped"], "raised_tiny": stats["raised"]})
