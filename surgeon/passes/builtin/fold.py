"""fold_constants: replace what depends only on constants (shapes included) by its values.

Two engines work in turns until nothing changes:

* **Shape folding** (``fold_shapes``). onnx's own shape inference (with data
  propagation) gives every tensor a shape whose dims are numbers, named
  symbols (``batch``) or unknown. A small evaluator carries *partial values*
  of 1-D integer tensors through ``Shape``/``Gather``/``Slice``/``Concat``/
  ``Unsqueeze``/``Squeeze``/``Cast``/``Identity``/``ReduceProd`` and
  elementwise integer arithmetic: a value whose elements are all numbers becomes a constant, and
  a ``Reshape`` target with symbolic elements becomes a constant of ``0``
  ("copy this input dim") and ``-1`` where that is exact. The evaluator
  (:class:`surgeon.graph.shape_values.ShapeInfo`) lives in the graph layer,
  shared with ``eliminate_noops`` and ``fuse``; this module only folds.
* **Evaluation** in onnxruntime of every node whose inputs are all
  constants, in one session per graph (the constants are fed as inputs, so
  external weights are read from the model's own folder and no 2 GiB protobuf
  limit applies). When that session fails, each node is evaluated alone to
  name the node that cannot be folded and why.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
import onnx
import onnx.defs
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter
from onnx_graphsurgeon.ir.tensor import LazyValues

from surgeon.errors import first_line
from surgeon.graph.constants import const_array, const_nbytes, constant_node_value, is_sparse
from surgeon.graph.edit import remove_dead, remove_nodes, replace_uses
from surgeon.graph.names import Namer, byte_size, node_label_of
from surgeon.graph.shape_values import VALUE_OPS, ShapeInfo, reshape_target
from surgeon.graph.walk import node_domain, subgraphs_of, walk_graphs
from surgeon.io.external import Spill
from surgeon.io.model import Model
from surgeon.io.runtime import cpu_session
from surgeon.passes.contract import EQUAL, verified_by
from surgeon.passes.result import PassResult
from surgeon.passes.spec import Min

MAX_FOLD_BYTES = 256 << 20
_RANDOM_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
               "Multinomial", "Bernoulli"}
_FEEDABLE_KINDS = "biufO"


@verified_by(EQUAL)
def fold_constants(model: Model, *, fold_shapes: bool = True,
                   size_threshold: Annotated[int, Min(0, hint="set it to null to fold constants of any size")]
                   | None = None,
                   max_iterations: Annotated[int, Min(1)] = 10,
                   max_fold_bytes: Annotated[int, Min(0)] = MAX_FOLD_BYTES) -> PassResult:
    """Replace every subgraph that depends only on constants by its values.

    Parameters:
        fold_shapes: also fold values computed from tensor shapes (``Shape``,
            ``Gather``, ``Slice``, ``Concat``... of known dims), using onnx
            shape inference, and make ``Reshape`` targets constant.
        size_threshold: do not create constants larger than this many bytes
            (the nodes producing them stay); null folds everything.
        max_iterations: rounds of shape folding and evaluation at most (each
            round can make more shapes known).
        max_fold_bytes: never evaluate a node whose output (or any one of
            its outputs) would take more than this many bytes (default 256
            MiB), so that folding runs in bounded memory.

    Rules:
        1. ``Constant`` nodes become initializers; an ``If`` whose condition
           is constant is replaced by the nodes of the branch it takes.
        2. A standard ONNX node whose inputs are all constants is evaluated in
           onnxruntime (optimizations off) and its used outputs become
           constants; whole constant subgraphs are evaluated in one session.
           Nodes inside ``If``/``Loop``/``Scan`` bodies are folded the same way
           (they are loop-invariant when they read only constants); local
           functions are left as they are (``inline_functions`` first).
        3. Never folded, and reported with the reason: random ops, ops of
           other domains, ``Loop``/``Scan`` nodes, inputs whose dtype numpy
           cannot hand to onnxruntime (bfloat16, float8, int4), nodes that
           onnxruntime fails on (with its message), outputs over
           ``size_threshold``, and outputs over ``max_fold_bytes`` (rule 8).
        4. Shape folding: a tensor computed from shapes becomes a constant when
           all its elements are known numbers (``Shape`` of a static dim,
           ``Gather``/``Slice`` of the static part of a symbolic shape, through
           ``Concat``, ``Unsqueeze``, ``Squeeze``, ``Reshape``, ``Cast``,
           ``ReduceProd`` and integer arithmetic).
        5. A ``Reshape`` whose target is computed from shapes gets a constant
           target: an element equal to the input's dim at the same index
           becomes ``0`` (copy; ``allowzero`` is cleared when the target has
           no literal 0), a single remaining unknown element becomes ``-1``
           (as onnxslim does; like any ``-1`` it cannot be inferred for an
           empty tensor): ``Reshape(x, ReduceProd(Shape(x)))`` becomes a
           flatten to ``[-1]``.
        6. Graph output names never change; external weights are read from
           the model's folder whatever the current directory.
        7. Repeats until nothing changes or ``max_iterations`` rounds ran.
        8. Memory is bounded. Before anything runs, every output's size is
           computed from shape inference and dtypes (constants: their own
           size); a node with an output over ``max_fold_bytes`` (default 256
           MiB) is never evaluated and stays, reported as "its output would
           take 13.4 GiB, over max_fold_bytes 256 MiB" (Polygraphy's
           "constant fold bloater", ``ConstantOfShape([60000, 60000])`` ->
           ``ReduceSum``, stays as it is). When an output's size cannot be
           known before running (inference failed), the node runs only if its
           op cannot make outputs larger than its inputs (reshapes, slices,
           concatenations, reductions, casts...) and its inputs together,
           times 8, stay under the bound; ``ConstantOfShape``, ``Expand``,
           ``Tile``, ``Range``, ``Resize``, ``Pad``, ``MatMul`` and the like
           are then not evaluated. Nodes run in groups of at most 32 MiB of
           inputs and outputs; in a model that keeps external data, each
           folded weight of 1 MiB or more goes straight to a spill file
           (saved from there like external weights), so the folded weights
           are never all in memory at once.
           ``size_threshold`` is separate: it limits the constants left in
           the model, not what is evaluated.

    Example:
        version: 1
        steps:
          - pass: fold_constants
            with: {size_threshold: 16777216}
          - pass: cleanup

    Reports:
        ``folded``: nodes replaced by constants; a note per node that could
        not be folded and why (``details.not_folded``), the number of
        ``Reshape`` targets made constant, and the rounds run.
    """
    stats = fold_model(model, fold_shapes=fold_shapes, size_threshold=size_threshold,
                       max_iterations=max_iterations, max_fold_bytes=max_fold_bytes)
    return stats.result()


# -- results ---------------------------------------------------------------------------


@dataclass
class FoldStats:
    folded: int = 0
    inlined: int = 0
    reshapes: int = 0
    iterations: int = 0
    converged: bool = True
    not_folded: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    """Node key -> (node name, op, reason); the first reason seen in a round wins."""
    shape_problem: str | None = None

    def skip(self, node: gs.Node, reason: str) -> None:
        self.not_folded.setdefault(f"{node.name}\0{id(node)}", (node.name, node.op, reason))

    def result(self) -> PassResult:
        r = PassResult(headline=[f"folded {self.folded} node{'' if self.folded == 1 else 's'}"] if self.folded else [])
        if self.inlined:
            r.notes.append(f"inlined {self.inlined} If node(s) with a constant condition")
        if self.reshapes:
            r.notes.append(f"made {self.reshapes} Reshape target(s) constant")
        for name, op, reason in self.not_folded.values():
            r.notes.append(f"could not fold {node_label_of(name, op)}: {reason}")
        if self.shape_problem:
            r.notes.append(f"shape inference failed, shapes were not folded: {self.shape_problem}")
        if not self.converged:
            r.notes.append(f"stopped after {self.iterations} rounds with more to fold; "
                           "raise max_iterations or run the step again")
        r.details = {
            "folded": self.folded,
            "reshape_targets": self.reshapes,
            "ifs_inlined": self.inlined,
            "iterations": self.iterations,
            "not_folded": [{"node": n, "op": o, "reason": why} for n, o, why in self.not_folded.values()],
        }
        return r


def fold_model(model: Model, *, fold_shapes: bool = True, size_threshold: int | None = None,
               max_iterations: int = 10, max_fold_bytes: int = MAX_FOLD_BYTES) -> FoldStats:
    """The work of :func:`fold_constants`, returning statistics (``simplify`` uses it)."""
    stats = FoldStats()
    opset = model.opset
    spill = Spill(enabled=model.has_external_data)
    for round_ in range(max_iterations):
        stats.iterations = round_ + 1
        stats.not_folded.clear()  # reasons of the last round are the ones that hold
        changed = _fold_constant_nodes(model, stats)
        changed |= _inline_constant_ifs(model, stats)
        # Shapes are needed either way: they size every result before it is computed.
        info = ShapeInfo.of(model)
        if fold_shapes:
            stats.shape_problem = info.problem
            changed |= _fold_shape_values(model, info, stats)
        for graph in list(walk_graphs(model.graph)):
            changed |= _Evaluator(graph, opset, size_threshold, max_fold_bytes, info, spill, stats).run()
        if not changed:
            return stats
    stats.converged = False
    return stats


# -- Constant nodes ----------------------------------------------------------------------


def _fold_constant_nodes(model: Model, stats: FoldStats) -> bool:
    changed = False
    for graph in list(walk_graphs(model.graph)):
        done = []
        for node in [n for n in graph.nodes if n.op == "Constant" and node_domain(n) == ""]:
            value = constant_node_value(node)
            if value is None:
                stats.skip(node, "its value attribute is sparse or missing")
                continue
            out = node.outputs[0]
            node.outputs.clear()
            out.to_constant(value)
            done.append(node)
        remove_nodes(graph, done)
        stats.folded += len(done)
        changed |= bool(done)
    return changed


# -- If with a constant condition -----------------------------------------------------------


def _inline_constant_ifs(model: Model, stats: FoldStats) -> bool:
    changed = False
    for graph in list(walk_graphs(model.graph)):
        for node in list(graph.nodes):
            if node.op != "If" or node_domain(node) != "" or not isinstance(node.inputs[0], gs.Constant):
                continue
            cond = const_array(node.inputs[0])
            branch = node.attrs.get("then_branch" if cond.size == 1 and cond.reshape(-1)[0] else "else_branch")
            reason = None
            if cond.size != 1:
                reason = f"its condition has {cond.size} elements"
            elif not isinstance(branch, gs.Graph) or len(branch.outputs) != len(node.outputs):
                reason = "its branch does not match its outputs"
            elif _shadows(model, node, branch):
                reason = "its branch defines tensor names that the outer graph uses too"
            if reason is not None:
                stats.skip(node, f"it cannot be inlined: {reason}")
                continue
            _inline(graph, node, branch)
            stats.inlined += 1
            changed = True
    return changed


def _defined(graph: gs.Graph) -> Counter:
    names: Counter = Counter()
    for g in walk_graphs(graph):
        names.update(t.name for t in g.inputs)
        names.update(t.name for n in g.nodes for t in n.outputs if t.name)
    return names


def _shadows(model: Model, node: gs.Node, branch: gs.Graph) -> bool:
    outside = _defined(model.graph)
    for _, sub in subgraphs_of(node):
        outside -= _defined(sub)
    return any(outside[name] for name in _defined(branch))


def _inline(graph: gs.Graph, node: gs.Node, branch: gs.Graph) -> None:
    """Put ``branch``'s nodes in ``node``'s place; the If's output tensors (and names) stay."""
    outs = list(node.outputs)
    node.inputs.clear()
    node.outputs.clear()
    nodes = list(branch.nodes)
    made_here = {id(t) for n in nodes for t in n.outputs}
    taken: set[int] = set()
    for bo, io in zip(list(branch.outputs), outs):
        if id(bo) in made_here and id(bo) not in taken:
            taken.add(id(bo))
            replace_uses(bo, io)
            producer = bo.inputs[0]
            producer.outputs[next(i for i, t in enumerate(producer.outputs) if t is bo)] = io
        else:  # an outer tensor, a constant, or an output listed twice
            nodes.append(gs.Node("Identity", name=f"{node.name or 'If'}_{io.name}", inputs=[bo], outputs=[io]))
    branch.nodes, branch.outputs = [], []
    at = next(i for i, n in enumerate(graph.nodes) if n is node)
    graph.nodes[at:at + 1] = nodes


# -- shapes --------------------------------------------------------------------------------


def _fold_shape_values(model: Model, info: ShapeInfo, stats: FoldStats) -> bool:
    changed = False
    namer = Namer(model.graph)
    for graph in list(walk_graphs(model.graph)):
        detached: list[gs.Tensor] = []
        done: list[gs.Node] = []
        for node in list(graph.nodes):
            if node_domain(node) != "":
                continue
            out = node.outputs[0] if len(node.outputs) == 1 else None
            if out is not None and node.op in VALUE_OPS and isinstance(out, gs.Variable):
                v = info.value(out)
                if v is not None and v.known:
                    node.outputs.clear()
                    out.to_constant(v.array())
                    detached.extend(node.inputs)
                    done.append(node)
                    continue
            if node.op == "Reshape":
                old = _make_reshape_static(node, info, namer)
                if old is not None:
                    detached.append(old)
                    stats.reshapes += 1
        remove_nodes(graph, done)
        stats.folded += len(done) + remove_dead(graph, detached)
        changed |= bool(done or detached)
    return changed


def _make_reshape_static(node: gs.Node, info: ShapeInfo, namer: Namer) -> gs.Tensor | None:
    """Give a Reshape a constant target when rule 5 allows; returns the replaced target tensor."""
    if len(node.inputs) < 2 or isinstance(node.inputs[1], gs.Constant):
        return None
    target = info.value(node.inputs[1])
    if target is None or target.scalar:
        return None
    new = reshape_target(info.shape(node.inputs[0]), target.elems, node.attrs.get("allowzero", 0))
    if new is None:
        return None
    elems, allowzero = new
    old = node.inputs[1]
    node.inputs[1] = gs.Constant(namer.new(f"{old.name}_static"), np.array(elems, dtype=np.int64))
    if allowzero != node.attrs.get("allowzero", 0):
        node.attrs["allowzero"] = allowzero
    return old




# -- evaluation in onnxruntime ---------------------------------------------------------


class _Evaluator:
    """Folds one graph's nodes whose inputs are all constants, in bounded memory.

    Every output's size is computed from shapes and dtypes before anything
    runs (:meth:`_sizes`); a node over ``max_fold_bytes`` is never attempted.
    The rest runs in onnxruntime in consecutive groups of at most
    ``BATCH_BYTES`` of inputs and outputs (a bigger node alone), and each
    result is written to the spill file as soon as it comes back, so the
    folded weights are never all in memory at once.
    """

    def __init__(self, graph: gs.Graph, opset: int, size_threshold: int | None, max_fold_bytes: int,
                 info: ShapeInfo | None, spill: Spill, stats: FoldStats) -> None:
        self.graph = graph
        self.opset = opset
        self.threshold = size_threshold
        self.max_bytes = max_fold_bytes
        self.info = info
        self.spill = spill
        self.stats = stats
        self.size: dict[int, int] = {}        # tensor id -> bytes (exact, or an upper bound)
        self.exact: set[int] = set()          # tensor ids whose size is exact
        self.shape: dict[int, tuple[int, ...]] = {}  # tensor id -> static shape, where known

    def run(self) -> bool:
        batch = self._candidates()
        if not batch:
            return False
        kept: set[int] = set()  # batch nodes that stay: their outputs are too big to fold
        self._keep_known_too_big(batch, kept)
        inside = [n for n in batch if id(n) not in kept]
        values, batch = self._evaluate(inside, self._frontier(inside))
        while True:
            inside = [n for n in batch if id(n) not in kept]
            wanted = self._frontier(inside)  # kept nodes read from outside, so their inputs count
            missing = [t for t in wanted if id(t) not in values]
            if missing:
                values.update(self._evaluate(batch, missing)[0])
            too_big = [t for t in wanted if self._too_big(values[id(t)])]
            if not too_big:
                break
            for t in too_big:
                self._keep(t, values[id(t)].nbytes, kept)
        if not inside:
            return False
        for t in wanted:
            t.inputs.clear()
            t.to_constant(values[id(t)])
        remove_nodes(self.graph, inside)
        self.stats.folded += len(inside)
        return True

    def _keep(self, t: gs.Tensor, nbytes: int, kept: set[int]) -> None:
        kept.add(id(t.inputs[0]))
        self.stats.skip(t.inputs[0], f"its output '{t.name}' would be {byte_size(nbytes)}, "
                                     f"over size_threshold ({byte_size(self.threshold or 0)})")

    def _keep_known_too_big(self, batch: list[gs.Node], kept: set[int]) -> None:
        """size_threshold, decided from the computed sizes before anything runs."""
        if self.threshold is None:
            return
        while True:
            inside = [n for n in batch if id(n) not in kept]
            over = [t for t in self._frontier(inside)
                    if id(t) in self.exact and self.size[id(t)] > self.threshold]
            if not over:
                return
            for t in over:
                self._keep(t, self.size[id(t)], kept)

    def _too_big(self, value) -> bool:
        return self.threshold is not None and value.nbytes > self.threshold

    def _candidates(self) -> list[gs.Node]:
        batch: list[gs.Node] = []
        made: set[int] = set()
        for node in self.graph.nodes:
            inputs = [t for t in node.inputs if not t.is_empty()]
            if not all(isinstance(t, gs.Constant) or id(t) in made for t in inputs):
                continue
            reason = self._reason(node) or self._sizes(node)
            if reason is not None:
                self.stats.skip(node, reason)
                continue
            batch.append(node)
            made.update(id(t) for t in node.outputs)
        return batch

    def _reason(self, node: gs.Node) -> str | None:
        """Why ``node`` cannot be evaluated, or None."""
        domain = node_domain(node)
        if domain != "":
            return f"ops of domain '{domain}' are not evaluated (only standard ONNX ops are folded)"
        if any(True for _ in subgraphs_of(node)):
            return f"{node.op} nodes are not evaluated (their bodies are folded inside)"
        if node.op in _RANDOM_OPS:
            return "it is random: every run gives other values"
        if not onnx.defs.has(node.op):
            return f"'{node.op}' is not a standard ONNX operator"
        for t in node.inputs:
            if isinstance(t, gs.Constant):
                if is_sparse(t):
                    return f"its input '{t.name}' is a sparse tensor"
                dtype = _np_dtype(t)
                if dtype is None or dtype.kind not in _FEEDABLE_KINDS:
                    return (f"its input '{t.name}' has dtype {t.dtype}, which numpy cannot hand "
                            "to onnxruntime")
        return None

    # -- sizes, before anything runs ------------------------------------------------------------

    def _input_size(self, t: gs.Tensor) -> tuple[int, tuple[int, ...] | None]:
        if isinstance(t, gs.Constant):
            return const_nbytes(t), tuple(int(d) for d in t.shape)
        return self.size[id(t)], self.shape.get(id(t))

    def _sizes(self, node: gs.Node) -> str | None:
        """Record the size of every output of ``node``; the reason it must not run, or None."""
        inputs = [t for t in node.inputs if not t.is_empty()]
        in_sizes = [self._input_size(t) for t in inputs]
        outs = [t for t in node.outputs if not t.is_empty()]
        bound = None
        for t in outs:
            shape = self._static_shape(node, t, [s for _, s in in_sizes])
            itemsize = self._itemsize(node, t)
            if shape is not None and itemsize is not None:
                nbytes = int(np.prod(shape, dtype=object)) * itemsize if shape else itemsize
                self.exact.add(id(t))
                self.shape[id(t)] = shape
            else:
                if node.op not in _BOUNDED_OPS:
                    return (f"its output size is unknown before running it, and {node.op} can make "
                            "outputs larger than its inputs")
                if bound is None:
                    rank = max((len(s) for _, s in in_sizes if s is not None), default=1)
                    bound = sum(n for n, _ in in_sizes) * _MAX_ITEMSIZE * (max(rank, 1) if node.op == "NonZero" else 1)
                nbytes = bound
            if nbytes > self.max_bytes:
                label = "its output" if len(outs) == 1 else f"its output '{t.name}'"
                if id(t) in self.exact:
                    return (f"{label} would take {byte_size(nbytes)}, "
                            f"over max_fold_bytes {_round_size(self.max_bytes)}")
                return (f"its output size is unknown before running it and could reach "
                        f"{byte_size(nbytes)}, over max_fold_bytes {_round_size(self.max_bytes)}")
            self.size[id(t)] = nbytes
        return None

    def _static_shape(self, node: gs.Node, t: gs.Tensor, in_shapes: list) -> tuple[int, ...] | None:
        if self.info is not None:
            dims = self.info.shape(t)
            static = [d for d in dims or () if isinstance(d, int)]
            if dims is not None and len(static) == len(dims):
                return tuple(static)
        if t.shape is not None and all(isinstance(d, (int, np.integer)) and d >= 0 for d in t.shape):
            return tuple(int(d) for d in t.shape)
        # Inference knows nothing: a few rules of our own, from the inputs' static shapes.
        if not in_shapes or any(s is None for s in in_shapes) or len(node.outputs) != 1:
            return None
        if node.op in _SAME_SHAPE_OPS:
            return in_shapes[0]
        if node.op == "Gather" and len(in_shapes) == 2 and in_shapes[0]:
            data, indices = in_shapes
            axis = node.attrs.get("axis", 0) % len(data)
            return data[:axis] + indices + data[axis + 1:]
        if node.op in _BROADCAST_OPS:
            try:
                return tuple(int(d) for d in np.broadcast_shapes(*in_shapes))
            except ValueError:
                return None
        return None

    def _itemsize(self, node: gs.Node, t: gs.Tensor) -> int | None:
        dtype = self.info.dtype(t) if self.info is not None else None
        if dtype is None and t.dtype is not None:
            dtype = _np_dtype(t)
        if dtype is None and node.op == "Cast":
            try:
                dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(node.attrs["to"]))
            except (KeyError, TypeError, ValueError):
                dtype = None
        if dtype is None and node.op in _SAME_SHAPE_OPS | _BROADCAST_OPS and node.op not in _BOOL_OUTPUT_OPS:
            first = next((x for x in node.inputs if isinstance(x, gs.Constant)), None)
            dtype = _np_dtype(first) if first is not None else None
        if dtype is None and node.op in _BOOL_OUTPUT_OPS:
            dtype = np.dtype(bool)
        if dtype is None or dtype.kind == "O":
            return None  # strings: their size is not known before they exist
        return dtype.itemsize

    def _frontier(self, batch: list[gs.Node]) -> list[gs.Tensor]:
        """Outputs of ``batch`` that something outside it reads (or that are graph outputs)."""
        inside = {id(n) for n in batch}
        outputs = {id(t) for t in self.graph.outputs}
        found = []
        for node in batch:
            for t in node.outputs:
                if id(t) in outputs or any(id(c) not in inside for c in t.outputs):
                    found.append(t)
        return found

    # -- evaluation -------------------------------------------------------------------------------

    def _cost(self, node: gs.Node, counted: set[int]) -> int:
        cost = 0
        for t in node.inputs:
            if isinstance(t, gs.Constant) and id(t) not in counted:
                counted.add(id(t))
                cost += const_nbytes(t)
        return cost + sum(self.size.get(id(t), 0) for t in node.outputs)

    def _groups(self, batch: list[gs.Node]) -> list[list[gs.Node]]:
        """Consecutive nodes whose inputs and outputs together stay under BATCH_BYTES (a bigger one alone)."""
        groups: list[list[gs.Node]] = []
        current: list[gs.Node] = []
        counted: set[int] = set()
        total = 0
        for node in batch:
            cost = self._cost(node, counted)
            if current and total + cost > BATCH_BYTES:
                groups.append(current)
                current, total, counted = [], 0, set()
                cost = self._cost(node, counted)
            current.append(node)
            total += cost
        if current:
            groups.append(current)
        return groups

    def _evaluate(self, batch: list[gs.Node], wanted: list[gs.Tensor]) -> tuple[dict[int, Any], list[gs.Node]]:
        """Values of ``wanted`` (arrays, or spilled to disk when large), group by group;
        when a group's session fails, node by node (dropping failures)."""
        if not wanted:
            return {}, batch
        keep = {id(t) for t in wanted}
        groups = self._groups(batch)
        group_of = {id(n): k for k, g in enumerate(groups) for n in g}
        # Outputs a later group reads are passed on (spilled to a scratch file when large).
        later: set[int] = set()
        for k, group in enumerate(groups):
            for node in group:
                for t in node.inputs:
                    producer = t.inputs[0] if isinstance(t, gs.Variable) and t.inputs else None
                    if producer is not None and group_of.get(id(producer), k) < k:
                        later.add(id(t))
        scratch = Spill(enabled=self.spill.min_bytes < sys.maxsize)
        values: dict[int, Any] = {}
        passed: dict[int, Any] = {}
        ok: list[gs.Node] = []
        for group in groups:
            made: set[int] = set()
            runnable = []
            for n in group:  # nodes after a failure in an earlier group cannot run
                if all(isinstance(t, gs.Constant) or id(t) in passed or id(t) in made
                       for t in n.inputs if not t.is_empty()):
                    runnable.append(n)
                    made.update(id(t) for t in n.outputs)
            group = runnable
            outs = [t for n in group for t in n.outputs if id(t) in keep or id(t) in later]
            if not outs:
                ok.extend(group)
                continue
            try:
                results = list(zip(outs, _run(group, outs, self.opset, passed)))
                done = group
            except Exception:  # onnxruntime raises several types; node by node names the culprit
                results, done = self._one_by_one(group, keep | later, passed)
            ok.extend(done)
            while results:  # popped one by one: each array is freed once it is spilled
                t, arr = results.pop(0)
                if id(t) in keep:
                    values[id(t)] = self.spill.values(arr)
                    if id(t) in later:
                        passed[id(t)] = values[id(t)]
                else:
                    passed[id(t)] = scratch.values(arr)
                del arr
        return values, ok

    def _one_by_one(self, group: list[gs.Node], wanted: set[int], known: dict[int, Any]):
        results: list[tuple[gs.Tensor, np.ndarray]] = []
        local: dict[int, Any] = dict(known)
        done: list[gs.Node] = []
        for node in group:
            if not all(isinstance(t, gs.Constant) or id(t) in local for t in node.inputs if not t.is_empty()):
                continue  # depends on a node that failed
            outs = [t for t in node.outputs if not t.is_empty()]
            try:
                arrays = _run([node], outs, self.opset, local)
            except Exception as exc:
                self.stats.skip(node, "onnxruntime cannot evaluate it: " + _ort_message(exc))
                continue
            for t, arr in zip(outs, arrays):
                local[id(t)] = arr
                if id(t) in wanted:
                    results.append((t, arr))
            done.append(node)
        return results, done


# Bytes of inputs and outputs evaluated in one onnxruntime session at most
# (a single node that needs more runs alone, up to max_fold_bytes per output).
BATCH_BYTES = 32 << 20
_MAX_ITEMSIZE = 8
# Ops whose outputs hold at most as many elements as their inputs together (NonZero:
# times the rank): when inference cannot size their outputs, the inputs bound them.
_BOUNDED_OPS = frozenset({
    "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice", "Concat", "Split",
    "GatherElements", "Cast", "CastLike", "Shape", "Size", "NonZero", "TopK", "Unique",
    "Compress", "ArgMax", "ArgMin", "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd",
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "Softmax",
    "LogSoftmax", "CumSum", "ReverseSequence", "DepthToSpace", "SpaceToDepth",
})
_UNARY = {"Abs", "Neg", "Floor", "Ceil", "Round", "Sqrt", "Reciprocal", "Exp", "Log", "Sigmoid", "Tanh",
          "Relu", "Not", "Sign", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Erf",
          "IsNaN", "IsInf", "Identity", "Cast", "CastLike", "Softmax", "LogSoftmax", "CumSum", "Clip",
          "LeakyRelu", "Elu", "Selu", "HardSigmoid", "Softplus", "Softsign", "BitwiseNot"}
_SAME_SHAPE_OPS = frozenset(_UNARY)
_BROADCAST_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Sum", "Mean",
                            "Where", "And", "Or", "Xor", "Equal", "Less", "LessOrEqual", "Greater",
                            "GreaterOrEqual", "BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor"})
_BOOL_OUTPUT_OPS = frozenset({"Not", "IsNaN", "IsInf", "And", "Or", "Xor", "Equal", "Less", "LessOrEqual",
                              "Greater", "GreaterOrEqual"})


def _round_size(n: int) -> str:
    """A byte count as a parameter is usually given: ``256 MiB``, not ``256.0 MiB``."""
    text = byte_size(n)
    return text.replace(".0 ", " ")


def _np_dtype(t: gs.Constant) -> np.dtype | None:
    try:
        return np.dtype(t.dtype)
    except TypeError:
        return None


def _run(nodes: list[gs.Node], wanted: list[gs.Tensor], opset: int,
         known: dict[int, np.ndarray]) -> list[np.ndarray]:
    """Evaluate ``nodes`` in onnxruntime; constants (and ``known`` values) are fed as inputs."""
    names: dict[int, str] = {}

    def name(t: gs.Tensor) -> str:
        return names.setdefault(id(t), f"t{len(names)}")

    feeds: dict[str, np.ndarray] = {}
    inputs = []
    protos = []
    for node in nodes:
        p = OnnxExporter.export_node(node)
        del p.input[:]
        del p.output[:]
        for t in node.inputs:
            if t.is_empty():
                p.input.append("")
                continue
            p.input.append(name(t))
            if (isinstance(t, gs.Constant) or id(t) in known) and name(t) not in feeds:
                arr = _array(known[id(t)]) if id(t) in known else const_array(t)
                feeds[name(t)] = arr
                inputs.append(onnx.helper.make_tensor_value_info(
                    name(t), onnx.helper.np_dtype_to_tensor_dtype(arr.dtype)
                    if arr.dtype.kind != "O" else onnx.TensorProto.STRING, arr.shape))
        p.output.extend(name(t) if not t.is_empty() else "" for t in node.outputs)
        protos.append(p)
    outputs = [onnx.helper.make_value_info(name(t), onnx.TypeProto()) for t in wanted]
    graph = onnx.helper.make_graph(protos, "fold", inputs, outputs)
    opsets = [onnx.helper.make_opsetid("", opset)]
    model = onnx.helper.make_model(graph, opset_imports=opsets,
                                   ir_version=max(onnx.helper.find_min_ir_version_for(opsets), 7))
    session = cpu_session(model.SerializeToString())  # failures are reported by the pass
    return session.run([name(t) for t in wanted], feeds)


def _array(value: Any) -> np.ndarray:
    return value.load() if isinstance(value, LazyValues) else value


def _ort_message(exc: Exception) -> str:
    text = first_line(exc)
    for marker in ("Status Message: ", "] : "):
        if marker in text:
            text = text.split(marker)[-1]
    return text.strip()
