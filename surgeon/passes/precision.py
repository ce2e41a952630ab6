"""to_fp16: run a float32 model in float16, keeping unsafe ops and (by default) the interface in float32.

What Polygraphy's ``--fp-to-fp16`` (through onnxconverter-common) and
onnxslim's ``--dtype fp16`` do, written on the gs graph and driven by the ONNX
op schemas rather than by op-name tables: a node runs in float16 when the
type variable that its float32 inputs bind allows ``tensor(float16)``;
inputs with a fixed ``tensor(float)`` type (``Resize`` scales,
``NonMaxSuppression`` boxes) stay float32, integer tensors (shapes, indices,
``TopK``'s K) are never touched, and ``Cast`` nodes are inserted wherever a
float16 tensor meets a float32 reader or the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx.defs
import onnx_graphsurgeon as gs

from surgeon.errors import PassError, suggestion_hint
from surgeon.graphs import all_tensor_names, node_domain, subgraphs_of, walk_graphs
from surgeon.model import Model
from surgeon.passes.result import PassResult

FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504
FLOAT16_TINY = float(np.finfo(np.float16).smallest_subnormal)  # 2**-24, about 6e-08

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

F16, F32 = "float16", "float32"
_RESULTS_OF_ATTRIBUTE = ("Constant", "ConstantOfShape", "Cast")


def to_fp16(model: Model, *, keep_io_types: bool = True, op_block_list: list[str] | None = None,
            node_block_list: list[str] | None = None) -> PassResult:
    """Convert float32 weights and computation to float16, with Casts where float32 stays.

    Parameters:
        keep_io_types: keep float32 graph inputs and outputs (Casts are
            inserted behind the inputs and in front of the outputs); false
            makes them float16.
        op_block_list: op types that stay float32; replaces the default list
            (CumSum, ReduceProd, ReduceSumSquare, ReduceL2, ReduceLogSum,
            ReduceLogSumExp, whose intermediate values overflow float16 while
            inputs and outputs fit, and MeanVarianceNormalization, whose ONNX
            function body is float32-only). Give [] to block none.
        node_block_list: names of nodes that stay float32.

    Rules:
        1. A node of the main graph runs in float16 when every float32 input
           it has binds a type variable that allows ``tensor(float16)`` in its
           ONNX schema; its float32 outputs of those variables become
           float16. Inputs typed ``tensor(float)`` outright (``Resize``
           scales, ``NonMaxSuppression`` boxes) stay float32; integer and
           bool tensors (shapes, indices, ``TopK``'s K) are never touched;
           ``Shape``, ``Size`` and ``Cast`` read whatever type they get.
        2. A node stays float32 when its op is blocked (``op_block_list``), it
           is named in ``node_block_list``, its op has no ONNX schema (custom
           ops, calls of local functions), its schema has no float16 for one
           of its float32 inputs (``Range``), an attribute sets the type of a
           float32 output (``RandomNormal``, ``EyeLike``), or it has
           subgraphs: ``If``/``Loop``/``Scan`` and everything in their bodies
           stay float32, and float16 tensors they read from the outer graph
           are cast back for them.
        3. Initializers, ``Constant`` and ``ConstantOfShape`` values and
           ``Cast(to=FLOAT)`` results become float16 only when every reader
           wants float16; otherwise they stay float32 and float16 readers get
           a Cast. Values beyond the float16 range are clamped to +-65504,
           tiny nonzero values are raised to +-6e-08 instead of flushing to 0
           (so an epsilon stays an epsilon); both are counted in the notes.
        4. A ``Cast`` is inserted once per tensor and target type, right after
           the tensor's producer, wherever a tensor's new type differs from
           what a reader wants. Graph outputs keep their names: when an
           output's type would change, its producer writes ``<name>_fp16``
           (or ``_fp32``) and a Cast writes the output.
        5. Local function bodies are not converted (calls stay float32; run
           ``inline_functions`` first to convert them). A model without
           float32 computation is left unchanged, so the step is idempotent.

    Example:
        version: 1
        steps:
          - pass: to_fp16
            with: {keep_io_types: true, op_block_list: [CumSum, ReduceL2, Softmax]}

    Reports:
        the inserted Cast nodes (by the runner); how many nodes run in
        float16, which stay float32 and why, and how many constant values
        were clamped.
    """
    blocked_ops = dict(DEFAULT_OP_BLOCK_LIST) if op_block_list is None else \
        {op: "op_block_list" for op in op_block_list}
    _check_lists(model, op_block_list, node_block_list)
    plan = _Plan(model, blocked_ops, set(node_block_list or []), keep_io_types)
    plan.decide()
    result = PassResult()
    if not plan.changes():
        result.notes.append("nothing to convert: no float32 computation or constant would change")
        inside = plan.nodes_in_subgraphs()
        if inside:
            result.notes.append(f"{inside} node(s) inside If/Loop/Scan bodies stay float32")
        result.details = {"changed": False}
        return result
    plan.convert_values()
    plan.apply(result)
    return result


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


@dataclass
class _Decision:
    convert: bool
    reason: str = ""
    wants: dict[int, str] = field(default_factory=dict)
    """Input slot -> the float type the node reads there; slots not listed take anything."""
    outputs16: set[int] = field(default_factory=set)
    """Output slots that become float16 when the node runs in float16."""


class _Plan:
    """Decides every node and tensor of the main graph first, then rewrites (validate before mutate)."""

    def __init__(self, model: Model, blocked_ops: dict[str, str], blocked_names: set[str],
                 keep_io_types: bool) -> None:
        self.model = model
        self.graph = model.graph
        self.blocked_ops = blocked_ops
        self.blocked_names = blocked_names
        self.io = F32 if keep_io_types else F16
        self.f32: set[int] = set()          # ids of float32 tensors (declared or implied by a schema)
        self.decisions: dict[int, _Decision] = {}
        self.top_nodes = {id(n) for n in self.graph.nodes}
        self.home: dict[int, str] = {}       # float32 tensor id -> its type after conversion

    # -- deciding ---------------------------------------------------------------------------

    def decide(self) -> None:
        for n in self.graph.nodes:
            for t in n.inputs + n.outputs:
                if _is_plain_tensor(t) and _is_float32(t.dtype):
                    self.f32.add(id(t))
        for t in self.graph.inputs + self.graph.outputs:
            if _is_plain_tensor(t) and _is_float32(t.dtype):
                self.f32.add(id(t))
        for n in self.graph.nodes:  # in order: producers are typed before their readers
            self.decisions[id(n)] = self._decide(n)
        for t in self._float_tensors():
            self.home[id(t)] = self._home(t)
        self._count()

    def _schema(self, node: gs.Node):
        domain = node_domain(node)
        version = self.model.opset_imports.get(domain)
        if version is None and domain == "":
            version = self.model.opset_imports.get("ai.onnx")
        if version is None or not onnx.defs.has(node.op, domain):
            return None
        try:
            return onnx.defs.get_schema(node.op, version, domain)
        except onnx.defs.SchemaError:
            return None

    def _decide(self, n: gs.Node) -> _Decision:
        schema = self._schema(n)
        if schema is not None:
            self._infer_types(n, schema)
        if n.name and n.name in self.blocked_names:
            return _Decision(False, "node_block_list")
        if n.op in self.blocked_ops:
            return _Decision(False, f"{n.op}: {self.blocked_ops[n.op]}")
        if any(True for _ in subgraphs_of(n)):
            return _Decision(False, "control flow (its bodies stay float32)")
        if schema is None:
            kind = "local function" if any(f.name == n.op and (f.domain or "") == node_domain(n)
                                           for f in self.graph.functions) else "no ONNX schema"
            return _Decision(False, f"{kind}: {node_domain(n) + '::' if node_domain(n) else ''}{n.op}")
        if self._handles_containers(n, schema):
            return _Decision(False, f"{n.op}: sequence, map or optional values")
        if n.op in _RESULTS_OF_ATTRIBUTE or n.op in ("Shape", "Size"):
            # Cast and the shape readers take any type; the others' outputs follow their readers (_home).
            return _Decision(True)
        return self._bind(n, schema)

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
        for t in self.graph.inputs + self.graph.outputs:
            seen.setdefault(id(t), t)
        for n in self.graph.nodes:
            for t in n.inputs + n.outputs:
                seen.setdefault(id(t), t)
        return [t for t in seen.values() if id(t) in self.f32]

    def reader_wants(self, t: gs.Tensor) -> list[tuple[gs.Node | None, int, str]]:
        """(reader, input slot, wanted type) of every read of ``t``; reader None is a graph output."""
        wants = []
        for r in {id(r): r for r in t.outputs}.values():  # a node reading t twice is listed twice
            for i, x in enumerate(r.inputs):
                if x is not t:
                    continue
                d = self.decisions.get(id(r))
                if id(r) not in self.top_nodes or d is None or not d.convert:
                    wants.append((r, i, F32))  # a subgraph body, or a node kept in float32
                elif i in d.wants:
                    wants.append((r, i, d.wants[i]))
        if any(o is t for o in self.graph.outputs):
            wants.append((None, 0, self.io))
        return wants

    def _home(self, t: gs.Tensor) -> str:
        if any(i is t for i in self.graph.inputs):
            return self.io
        producer = t.inputs[0] if isinstance(t, gs.Variable) and t.inputs else None
        if producer is not None:
            d = self.decisions.get(id(producer))
            if d is None or not d.convert:
                return F32
            if producer.op not in _RESULTS_OF_ATTRIBUTE:
                return F16 if any(producer.outputs[j] is t for j in d.outputs16) else F32
        # Constants and values set by an attribute follow their readers.
        wanted = {w for _, _, w in self.reader_wants(t)}
        return F16 if wanted == {F16} else F32

    def changes(self) -> bool:
        if any(h == F16 for h in self.home.values()):
            return True
        return any(w != self.home[id(t)] for t in self._float_tensors() for _, _, w in self.reader_wants(t))

    # -- rewriting ---------------------------------------------------------------------------------

    def apply(self, result: PassResult) -> None:
        self.names = all_tensor_names(self.graph) | {n.name for g in walk_graphs(self.graph) for n in g.nodes}
        self.after: dict[int, list[gs.Node]] = {}  # producer id (0: graph start) -> Casts to put after it
        self.casts: dict[tuple[int, str], gs.Variable] = {}
        self._cast_outputs()
        for t in self._float_tensors():
            if self.home[id(t)] == F16:
                self._make_float16(t)
        for t in self._float_tensors():
            for reader, i, want in self.reader_wants(t):
                if reader is not None and want != self.home[id(t)]:
                    reader.inputs[i] = self._cast(t, want)
        nodes = list(self.after.get(0, []))
        for n in self.graph.nodes:
            nodes.append(n)
            nodes += self.after.get(id(n), [])
        self.graph.nodes = nodes
        self._report(result, self.stats)

    def _unique(self, base: str) -> str:
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def _new_cast(self, src: gs.Tensor, dst: gs.Tensor, to: str) -> None:
        cast = gs.Node("Cast", name=self._unique(dst.name + "/Cast"), inputs=[src], outputs=[dst],
                       attrs={"to": onnx.TensorProto.FLOAT16 if to == F16 else onnx.TensorProto.FLOAT})
        producer = src.inputs[0] if isinstance(src, gs.Variable) and src.inputs else None
        self.after.setdefault(id(producer) if producer is not None else 0, []).append(cast)
        self.decisions[id(cast)] = _Decision(True)  # a Cast reads any type
        self.top_nodes.add(id(cast))

    def _cast(self, t: gs.Tensor, to: str) -> gs.Variable:
        key = (id(t), to)
        if key not in self.casts:
            out = gs.Variable(self._unique(f"{t.name}_{'fp16' if to == F16 else 'fp32'}"),
                              dtype=np.float16 if to == F16 else np.float32,
                              shape=None if t.shape is None else list(t.shape))
            self._new_cast(t, out, to)
            self.casts[key] = out
        return self.casts[key]

    def _cast_outputs(self) -> None:
        """A graph output whose type changes keeps its name: its producer writes a new tensor, a Cast the output."""
        for t in list(self.graph.outputs):
            if id(t) not in self.f32 or self.home[id(t)] == self.io:
                continue
            producer = t.inputs[0] if isinstance(t, gs.Variable) and t.inputs else None
            if producer is None or id(producer) not in self.top_nodes:
                continue  # a graph input or constant passed through: left as it is
            inner = gs.Variable(self._unique(f"{t.name}_{self.home[id(t)].replace('float', 'fp')}"),
                                dtype=t.dtype, shape=None if t.shape is None else list(t.shape))
            for r in list(t.outputs):
                for i, x in enumerate(r.inputs):
                    if x is t:
                        r.inputs[i] = inner
            j = next(j for j, o in enumerate(producer.outputs) if o is t)
            producer.outputs[j] = inner
            self.f32.add(id(inner))
            self.home[id(inner)] = self.home[id(t)]
            self.home[id(t)] = self.io
            self._new_cast(inner, t, self.io)

    def convert_values(self) -> None:
        """The float16 values of every constant that changes, computed before anything is edited."""
        self.values16: dict[int, np.ndarray] = {}
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
                values = source.values
            except Exception as exc:  # e.g. weightless models (TRT_WEIGHTLESS) keep shapes without data
                raise PassError(
                    f"cannot convert {label} to float16: its values cannot be read ({exc})",
                    hint="the model may have been saved without its weights; convert the model that has them",
                ) from exc
            self.values16[id(t)] = self._to_float16(values)

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
        producer.attrs["value"] = gs.Constant(self._unique(t.name + "_value"), self.values16[id(t)])

    def _to_float16(self, values: np.ndarray) -> np.ndarray:
        stats = self.stats
        stats["constants"] += 1
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

    def nodes_in_subgraphs(self) -> int:
        return sum(len(g.nodes) for n in self.graph.nodes for _, sub in subgraphs_of(n) for g in walk_graphs(sub))

    def _count(self) -> None:
        """What the summary tells, counted on the graph as it was."""
        self.converted = 0
        self.kept: dict[str, int] = {}
        for n in self.graph.nodes:
            d = self.decisions[id(n)]
            if d.convert and any(self.home.get(id(t)) == F16 for t in n.outputs):
                self.converted += 1
            elif not d.convert and any(id(t) in self.f32 for t in n.inputs + n.outputs):
                self.kept[d.reason] = self.kept.get(d.reason, 0) + 1

    def _report(self, result: PassResult, stats: dict[str, int]) -> None:
        converted, kept = self.converted, self.kept
        inside = self.nodes_in_subgraphs()
        result.notes.append(f"{converted} node(s) now compute in float16")
        if kept:
            result.notes.append("kept in float32: " + "; ".join(f"{reason} x{k}" for reason, k in kept.items()))
        if inside:
            result.notes.append(f"{inside} node(s) inside If/Loop/Scan bodies stay float32")
        if stats["clamped"]:
            result.notes.append(f"clamped {stats['clamped']} constant value(s) beyond float16's range to +-65504")
        if stats["raised"]:
            result.notes.append(f"set {stats['raised']} nonzero constant value(s) below float16's smallest "
                                "subnormal to +-6e-08 instead of 0 (keeps epsilons nonzero)")
        if self.graph.functions:
            result.notes.append(f"{len(self.graph.functions)} local function(s) not converted "
                                "(run inline_functions first to convert them)")
        result.details = {"float16_nodes": converted, "kept_float32": kept, "nodes_in_subgraphs": inside,
                          "constants_converted": stats["constants"], "clamped": stats["clamped"],
                          "raised_tiny": stats["raised"], "changed": True}
