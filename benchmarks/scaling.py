"""Scaling benchmark: does every built-in pass cost time linear in the graph's size?

Each of the built-in passes runs, with parameters that make it do real work,
on a graph generated in memory (onnx.helper + numpy, tiny weights) at N and
at 8N nodes. A pass is timed through ``surgeon.run_pass`` - the runner's
snapshot before the step and its diff after it are part of what a user
waits for - and loading is never timed. The table gives the microseconds
per node at both sizes and the growth ratio t(8N) / t(N): 8 for a linear
pass, about 8 x 1.1 for n log n, 64 for a quadratic one.

    python benchmarks/scaling.py                  # CI size, all passes (< 60 s on 2 cores)
    python benchmarks/scaling.py --check          # exit 1 when a ratio exceeds --max-ratio
    python benchmarks/scaling.py --full           # N = 12,500 -> 100,000 (the README table)
    python benchmarks/scaling.py --passes remove_node,toposort --nodes 4000 --profile

Robustness: at N the best (min) of ``--repeat`` runs counts (fewer at 8N,
where one run takes long enough to be stable); a pass that takes less than
``--min-seconds`` at N gets a larger N (doubled, at most 8 times) before
8N is measured, and the ratio's denominator is never below that floor, so
timer noise on a 1 ms step cannot fail CI. Garbage collection stays on
(users pay for it too) but runs before every measurement.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import surgeon  # noqa: E402
from surgeon.io.load import from_proto  # noqa: E402
from surgeon.passes.registry import BUILTIN_PASSES  # noqa: E402

FLOAT = TensorProto.FLOAT


# -- graph generators ------------------------------------------------------------------
#
# Every generator takes a target node count ``n`` and returns a ModelProto with
# about ``n`` nodes (If bodies and local function bodies included). Tensor names
# follow the chain position so the passes' parameters can pick tensors "deep in
# the chain" by name.

class G:
    """A small graph builder: nodes, initializers, fresh names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0
        self.size = 0  # nodes, If bodies included

    def node(self, op: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        self.count += 1
        self.size += 1
        out = out or f"t{self.count}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"n{self.count}_{op}", **attrs))
        return out

    def const(self, value: Any, dtype: Any = np.float32, name: str | None = None) -> str:
        name = name or f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def model(self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto], *,
              opset: int = 17, functions: list[onnx.FunctionProto] = (), domains: dict[str, int] | None = None
              ) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "scaling", inputs, outputs, initializer=self.inits)
        opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in (domains or {}).items()]
        return helper.make_model(graph, opset_imports=opsets, functions=list(functions),
                                 ir_version=min(onnx.IR_VERSION, 8 if opset <= 17 else 10))


def vi(name: str, shape: list[Any], dtype: int = FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def _if_node(g: G, prev: str, cond: str, shape: list[Any]) -> str:
    """An If whose branches compute from the outer tensor ``prev`` (Relu then Sigmoid / Neg then Abs):
    5 nodes counting the bodies. The bodies capture ``prev``, as exporters write them."""
    g.count += 1
    g.size += 5
    k = g.count
    then = helper.make_graph(
        [helper.make_node("Relu", [prev], [f"if{k}_a"], name=f"if{k}_then_Relu"),
         helper.make_node("Sigmoid", [f"if{k}_a"], [f"if{k}_then"], name=f"if{k}_then_Sigmoid")],
        f"then{k}", [], [vi(f"if{k}_then", shape)])
    other = helper.make_graph(
        [helper.make_node("Neg", [prev], [f"if{k}_b"], name=f"if{k}_else_Neg"),
         helper.make_node("Abs", [f"if{k}_b"], [f"if{k}_else"], name=f"if{k}_else_Abs")],
        f"else{k}", [], [vi(f"if{k}_else", shape)])
    out = f"t{k}"
    g.nodes.append(helper.make_node("If", [cond], [out], name=f"n{k}_If", then_branch=then, else_branch=other))
    return out


IF_EVERY = 25
"""One chain element in IF_EVERY is an If. ``--full`` makes them sparser (one in 250): loading many If
bodies is linear now (surgeon's importer shares the outer tensor map with each subgraph, where
onnx-graphsurgeon's copies it), but passes that run onnx's shape inference or fall back to gs's
cleanup on graphs with subgraphs (set_outputs: both) grow faster than linear in the number of If
bodies - see benchmarks/README.md, "Scaling"."""


def chain(n: int, *, ops: tuple[str, ...] = ("Neg", "Relu"), if_every: int | None = None, opset: int = 17,
          shape: tuple[Any, ...] = ("N", 8)) -> onnx.ModelProto:
    """x -> op -> op -> ... -> y, cycling through ``ops``; every ``if_every``-th element is an If
    (bodies included in the count). Tensor k of the chain is named ``t<k>``."""
    if_every = IF_EVERY if if_every is None else if_every
    g = G()
    prev, i = "x", 0
    while g.size < n:
        i += 1
        if if_every and i % if_every == 0:
            prev = _if_node(g, prev, "cond", list(shape))
        else:
            prev = g.node(ops[i % len(ops)], [prev])
    cond = [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])] if if_every else []
    inputs = [vi("x", list(shape))] + cond
    g.nodes[-1].output[0] = "y"
    return g.model(inputs, [vi("y", list(shape))], opset=opset)


def fp16_mixed(n: int) -> onnx.ModelProto:
    """A chain of Neg/Relu/Mul + If for to_fp16 with all its checks at work: each Mul reads its own
    constant (every one read and checked); every 10th pair scales by 1e5 (a constant beyond float16)
    and back (its input beyond the activation limit), so both stay float32."""
    g = G()
    prev, i = "x", 0
    while g.size < n:
        i += 1
        if i % IF_EVERY == 0:
            prev = _if_node(g, prev, "cond", ["N", 8])
        elif i % 10 == 0:
            prev = g.node("Mul", [g.node("Mul", [prev, g.const(np.full(8, 1e5))]), g.const(np.full(8, 1e-5))])
        else:
            prev = g.node(("Neg", "Relu", "Mul")[i % 3], [prev] + ([g.const(np.full(8, 0.5))] if i % 3 == 2 else []))
    g.nodes[-1].output[0] = "y"
    return g.model([vi("x", ["N", 8]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                   [vi("y", ["N", 8])])


def chain_with_dead(n: int) -> onnx.ModelProto:
    """Half the nodes are dead: every chain tensor also feeds a 2-node branch nothing reads."""
    g = G()
    prev = "x"
    while len(g.nodes) < n:
        prev = g.node("Relu", [prev])
        dead = g.node("Sigmoid", [prev])
        g.node("Neg", [dead])
    g.nodes.append(helper.make_node("Identity", [prev], ["y"], name="out"))
    return g.model([vi("x", ["N", 8])], [vi("y", ["N", 8])])


def dag(n: int) -> onnx.ModelProto:
    """A chain where each Add also reads the tensor two steps back, so the order is constrained."""
    g = G()
    a, b = "x", g.node("Relu", ["x"])
    while len(g.nodes) < n:
        a, b = b, g.node("Add", [b, a]) if len(g.nodes) % 2 else g.node("Sigmoid", [b])
    g.nodes[-1].output[0] = "y"
    return g.model([vi("x", ["N", 8])], [vi("y", ["N", 8])])


def shaped(n: int, *, batch: Any = "N") -> onnx.ModelProto:
    """Blocks Add(const) -> Relu -> Reshape[batch, 2, 4] -> Reshape[batch, 8], no value_info:
    shapes come from inference. With a fixed batch the Reshape targets hard-code it (each its own
    initializer, as exporters write them)."""
    g = G()
    prev = "x"
    first = 0 if isinstance(batch, str) else batch
    while len(g.nodes) < n:
        prev = g.node("Add", [prev, g.const(np.full(8, 0.5))])
        prev = g.node("Relu", [prev])
        prev = g.node("Reshape", [prev, g.const([first, 2, 4], np.int64)])
        prev = g.node("Reshape", [prev, g.const([first, 8], np.int64)])
    g.nodes[-1].output[0] = "y"
    return g.model([vi("x", [batch, 8])], [vi("y", [batch, 8])])


def fanout(n: int) -> onnx.ModelProto:
    """A chain whose every Add also reads the graph input (many readers of one tensor)."""
    g = G()
    prev = "x"
    while len(g.nodes) < n:
        prev = g.node("Add", [prev, "x"])
        prev = g.node("Relu", [prev])
    g.nodes[-1].output[0] = "y"
    return g.model([vi("x", ["N", 8])], [vi("y", ["N", 8])])


def foldable(n: int) -> onnx.ModelProto:
    """Blocks that fold: Shape -> Gather -> Unsqueeze -> Concat -> Reshape (a shape computed at run
    time from a static shape), and a constant Add chain feeding a Mul."""
    g = G()
    prev = "x"
    while len(g.nodes) < n:
        s = g.node("Shape", [prev])
        d = g.node("Gather", [s, g.const(0, np.int64)], axis=0)
        u = g.node("Unsqueeze", [d, g.const([0], np.int64)])
        target = g.node("Concat", [u, g.const([2, 4], np.int64)], axis=0)
        prev = g.node("Reshape", [prev, target])
        c = g.node("Add", [g.const(np.full((2, 4), 0.25)), g.const(np.full((2, 4), 0.5))])
        c = g.node("Mul", [c, g.const(np.full((2, 4), 2.0))])
        prev = g.node("Mul", [prev, c])
        prev = g.node("Reshape", [prev, g.const([1, 8], np.int64)])
    g.nodes[-1].output[0] = "y"
    return g.model([vi("x", [1, 8])], [vi("y", [1, 8])])


def noops(n: int) -> onnx.ModelProto:
    """Relu separated by no-ops: Identity, a Reshape to the tensor's own shape, Mul by 1, an
    identity Transpose, Add of 0."""
    g = G()
    prev = "x"
    one, zero, own = g.const(np.ones(8)), g.const(np.zeros(8)), g.const([1, 8], np.int64)
    while len(g.nodes) < n:
        prev = g.node("Relu", [prev])
        prev = g.node("Identity", [prev])
        prev = g.node("Reshape", [prev, own])
        prev = g.node("Mul", [prev, one])
        prev = g.node("Transpose", [prev], perm=[0, 1])
        prev = g.node("Add", [prev, zero])
    g.nodes.append(helper.make_node("Relu", [prev], ["y"], name="out"))
    return g.model([vi("x", [1, 8])], [vi("y", [1, 8])])


def fusable(n: int) -> onnx.ModelProto:
    """Conv + BatchNormalization pairs, then MatMul + Add pairs, tiny weights."""
    g = G()
    rng = np.random.default_rng(0)
    prev = "x"
    half = n // 2
    while len(g.nodes) < half:
        prev = g.node("Conv", [prev, g.const(rng.standard_normal((2, 2, 1, 1)) * 0.5)])
        prev = g.node("BatchNormalization", [prev, g.const(np.ones(2)), g.const(np.zeros(2)),
                                             g.const(np.zeros(2)), g.const(np.ones(2))])
    prev = g.node("Reshape", [prev, g.const([1, 32], np.int64)])
    while len(g.nodes) < n:
        prev = g.node("MatMul", [prev, g.const(rng.standard_normal((32, 32)) * 0.1)])
        prev = g.node("Add", [prev, g.const(np.full(32, 0.1))])
    g.nodes[-1].output[0] = "y"
    return g.model([vi("x", [1, 2, 4, 4])], [vi("y", [1, 32])])


def duplicated(n: int) -> onnx.ModelProto:
    """Add chain, each Add with its own initializer; only 4 distinct values among them."""
    g = G()
    prev = "x"
    while len(g.nodes) < n:
        prev = g.node("Add", [prev, g.const(np.full(8, len(g.nodes) % 4, np.float32))])
    g.nodes[-1].output[0] = "y"
    return g.model([vi("x", ["N", 8])], [vi("y", ["N", 8])])


def mixed(n: int) -> onnx.ModelProto:
    """What simplify meets: foldable shape computations, no-ops and MatMul + Add pairs."""
    g = G()
    prev = "x"
    rng = np.random.default_rng(0)
    own = g.const([1, 8], np.int64)
    while len(g.nodes) < n:
        s = g.node("Shape", [prev])
        d = g.node("Gather", [s, g.const(0, np.int64)], axis=0)
        u = g.node("Unsqueeze", [d, g.const([0], np.int64)])
        target = g.node("Concat", [u, g.const([8], np.int64)], axis=0)
        prev = g.node("Reshape", [prev, target])
        prev = g.node("Identity", [prev])
        prev = g.node("Reshape", [prev, own])
        prev = g.node("MatMul", [prev, g.const(rng.standard_normal((8, 8)) * 0.3)])
        prev = g.node("Add", [prev, g.const(np.full(8, 0.1))])
        prev = g.node("Relu", [prev])
    g.nodes[-1].output[0] = "y"
    return g.model([vi("x", [1, 8])], [vi("y", [1, 8])])


def function_calls(n: int) -> onnx.ModelProto:
    """n calls of one local function ``local::Block`` (Relu -> Neg -> Sigmoid): inlining turns the
    n nodes into 3n."""
    body = [helper.make_node("Relu", ["i"], ["a"]), helper.make_node("Neg", ["a"], ["b"]),
            helper.make_node("Sigmoid", ["b"], ["o"])]
    fn = helper.make_function("local", "Block", ["i"], ["o"], body, [helper.make_opsetid("", 17)])
    g = G()
    prev = "x"
    for _ in range(max(1, n)):
        g.count += 1
        out = f"t{g.count}"
        g.nodes.append(helper.make_node("Block", [prev], [out], name=f"call{g.count}", domain="local"))
        prev = out
    g.nodes[-1].output[0] = "y"
    return g.model([vi("x", ["N", 8])], [vi("y", ["N", 8])], functions=[fn], domains={"local": 1})


def detector(n: int) -> onnx.ModelProto:
    """A long elementwise chain ending in a YOLOv8-style head [1, 4 + 2 classes, 32 anchors]."""
    m = chain(n, ops=("Sigmoid", "Relu"), if_every=0, shape=(1, 6, 32))
    return m


def image(n: int) -> onnx.ModelProto:
    """A float NCHW image input [N, 3, 8, 8] read by a long elementwise chain."""
    return chain(n, ops=("Neg", "Relu"), shape=("N", 3, 8, 8))


def count_nodes(model: surgeon.Model) -> int:
    """Nodes of every graph, If/Loop bodies and local function bodies included."""
    total = 0
    pending = [model.graph] + list(model.graph.functions or [])
    while pending:
        g = pending.pop()
        for node in g.nodes:
            total += 1
            for value in node.attrs.values():
                if isinstance(value, onnx_gs_graph()):
                    pending.append(value)
    return total


def onnx_gs_graph():
    import onnx_graphsurgeon as gs
    return gs.Graph


# -- the cases -------------------------------------------------------------------------

def _shuffle(model: surgeon.Model) -> None:
    random.Random(0).shuffle(model.graph.nodes)


@dataclass
class Case:
    kind: str
    build: Callable[[int], onnx.ModelProto]
    params: Callable[[int], dict[str, Any]] = lambda n: {}
    prepare: Callable[[surgeon.Model], None] | None = None
    """Untimed edit after loading (e.g. shuffling the nodes for toposort)."""
    pass_name: str | None = None
    """The pass the case runs, when the case's key names a variant (``convert_opset down``)."""
    deep_recursion: bool = False
    """The pass recurses once per level of the graph (gs's toposort): it is timed with the recursion
    limit raised, and a note says whether it fails at Python's default limit."""


def _merge_params(n: int) -> dict[str, Any]:
    """merge's parameters: the other model is the same chain at opset 13 (converted up, every name
    renamed), written once per size to the temporary folder."""
    import tempfile

    path = Path(tempfile.gettempdir()) / f"surgeon-scaling-merge-{os.getpid()}-{n}.onnx"
    if not path.exists():
        onnx.save(chain(n, opset=13), path)
    return {"model": str(path), "position": "before", "connect": {"y": "x"}}


def _deep(n: int, frac: float) -> str:
    """The name of a chain tensor ``frac`` of the way down a ``chain`` of n nodes (never an If output)."""
    k = max(2, int(n * frac / (1 + 4 / IF_EVERY)))  # an If (5 nodes with its bodies) every IF_EVERY elements
    return f"t{k if k % IF_EVERY else k + 1}"


CASES: dict[str, Case] = {
    "remove_node": Case("chain Neg/Relu + If", chain, lambda n: {"op": "Relu"}),
    "cleanup": Case("chain, half dead", chain_with_dead),
    "toposort": Case("DAG, shuffled", dag, prepare=_shuffle, deep_recursion=True),
    "rename_io": Case("fan-out of x", fanout, lambda n: {"inputs": {"x": "images"}, "outputs": {"y": "out"}}),
    "rename_tensors": Case("chain Neg/Relu + If", chain, lambda n: {"prefix": "net."}),
    "set_outputs": Case("chain Neg/Relu + If", chain, lambda n: {"outputs": [_deep(n, 0.75)]}),
    "add_outputs": Case("chain Neg/Relu + If", chain,
                        lambda n: {"outputs": [_deep(n, 0.25), _deep(n, 0.5), _deep(n, 0.75)]}),
    "extract": Case("chain Neg/Relu + If", chain,
                    lambda n: {"inputs": [_deep(n, 0.25), "cond"], "outputs": [_deep(n, 0.75)]}),
    "insert_node": Case("chain Neg/Relu + If", chain,
                        lambda n: {"op": "Clip", "after": _deep(n, 0.5), "inputs_after": [0.0, 6.0]}),
    "replace_subgraph": Case("chain Neg/Relu, half of it", lambda n: chain(n, if_every=0),
                             lambda n: {"inputs": [f"t{n // 4}"], "outputs": [f"t{3 * n // 4}"], "op": "Plugin"}),
    "rewrite": Case("chain Neg/Relu + If", chain,
                    lambda n: {"pattern": "agraph (float[N] x) => (float[N] y) { a = Neg (x)  y = Relu (a) }",
                               "replacement": "agraph (float[N] x) => (float[N] y) { a = Relu (x)  y = Neg (a) }"}),
    "replace_op": Case("chain Neg/Relu + If", chain,
                       lambda n: {"op": "Relu", "new_op": "LeakyRelu", "new_attrs": {"alpha": 0.1}}),
    "infer_shapes": Case("Add/Relu/Reshape, batch N", shaped),
    "set_shapes": Case("Add/Relu/Reshape, batch N", shaped,
                       lambda n: {"inputs": {"x": [4, 8]}, "outputs": {"y": [4, 8]}}),
    "set_batch": Case("Add/Relu/Reshape, batch 1", lambda n: shaped(n, batch=1), lambda n: {"size": "N"}),
    "set_dtype": Case("fan-out of x", fanout, lambda n: {"inputs": {"x": "float16"}}),
    "fold_constants": Case("Shape->Reshape, const Add", foldable),
    "eliminate_noops": Case("Relu + 5 no-ops", noops),
    "fuse": Case("Conv+BN, MatMul+Add", fusable),
    "dedupe_initializers": Case("Add, duplicate consts", duplicated),
    "simplify": Case("fold+noop+MatMul/Add", mixed),
    "inline_functions": Case("calls of local fn", function_calls),
    "to_fp16": Case("Neg/Relu/Mul + If, 1e5 Muls", fp16_mixed),
    "convert_opset": Case("chain + If, opset 13", lambda n: chain(n, ops=("Neg", "Relu", "Softmax"), opset=13),
                          lambda n: {"target": 17}),
    # Down: surgeon's own adapters, one decomposition or adapter for almost every node, in If bodies too.
    "convert_opset down": Case("chain Gelu/Mish/Softmax... + If, opset 20",
                               lambda n: chain(n, ops=("Gelu", "Relu", "HardSwish", "Softmax", "Mish"), opset=20),
                               lambda n: {"target": 11}, pass_name="convert_opset"),
    "set_metadata": Case("chain Neg/Relu + If", chain,
                         lambda n: {"producer_name": "bench", "props": {"license": "MIT"}}),
    "insert_nms": Case("chain + YOLOv8 head", detector, lambda n: {"layout": "yolov8"}),
    "merge": Case("chain + If, merged with an opset-13 copy (every name collides)", chain, lambda n: _merge_params(n)),
    "add_preprocess": Case("image chain + If", image,
                           lambda n: {"input": "x", "dtype": "uint8", "layout": "NHWC", "channel_order": "BGR",
                                      "scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
                                      "std": [0.229, 0.224, 0.225]}),
}


# -- timing ----------------------------------------------------------------------------

CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = time.process_time


class Timeout(Exception):
    pass


@dataclass
class Measure:
    nodes: int
    seconds: float | None  # None: timed out
    work: str = ""
    runs: int = 0
    size: int = 0  # the n the generator was asked for


@dataclass
class Row:
    name: str
    kind: str
    small: Measure
    big: Measure
    ratio: float | None = None
    notes: list[str] = field(default_factory=list)


_protos: dict[tuple[Callable[[int], onnx.ModelProto], int], bytes] = {}


def _fresh(name: str, n: int) -> surgeon.Model:
    case = CASES[name]
    key = (case.build, n)  # cases on the same generator share its protos
    if key not in _protos:
        _protos[key] = case.build(n).SerializeToString()
    proto = onnx.ModelProto()
    proto.ParseFromString(_protos[key])
    model = from_proto(proto)
    if case.prepare:
        case.prepare(model)
    return model


def _work(report: surgeon.StepReport) -> str:
    """What the step changed, in the runner's own words (a case that changes nothing is a broken case)."""
    if not report.changed:
        return "NO CHANGE"
    text = report.changes()
    return text if len(text) <= 60 else text[:57] + "..."


def _alarm(_signum, _frame):
    raise Timeout()


def measure(name: str, n: int, repeat: int, timeout: float | None, profile: list[cProfile.Profile] | None = None,
            ) -> Measure:
    params = CASES[name].params(n)
    limit = sys.getrecursionlimit()
    if CASES[name].deep_recursion:
        sys.setrecursionlimit(max(limit, 20 * n + 1000))
    try:
        return _measure(name, n, params, repeat, timeout, profile)
    finally:
        sys.setrecursionlimit(limit)


def recursion_probe(name: str, n: int) -> str | None:
    """Run the pass once at Python's own recursion limit; the error's first line if it fails."""
    try:
        surgeon.run_pass(_fresh(name, n), CASES[name].pass_name or name, **CASES[name].params(n))
    except Exception as exc:  # noqa: BLE001 - reported, whatever it is
        return str(exc).splitlines()[0]
    return None


def _measure(name: str, n: int, params: dict[str, Any], repeat: int, timeout: float | None,
             profile: list[cProfile.Profile] | None, long_run: float = 0.1) -> Measure:
    best: float | None = None
    nodes, work, runs = 0, "", 0
    for _ in range(repeat):
        model = _fresh(name, n)
        nodes = count_nodes(model)
        gc.collect()
        if timeout:
            signal.setitimer(signal.ITIMER_REAL, timeout)
        profiler = cProfile.Profile() if profile is not None else None
        try:
            start = clock()
            if profiler:
                profiler.enable()
            report = surgeon.run_pass(model, CASES[name].pass_name or name, **params)
            if profiler:
                profiler.disable()
            seconds = clock() - start
        except Timeout:
            return Measure(nodes, None, work="timed out", runs=runs, size=n)
        finally:
            if timeout:
                signal.setitimer(signal.ITIMER_REAL, 0)
        if profiler:
            profile.append(profiler)
        runs += 1
        work = _work(report)
        best = seconds if best is None else min(best, seconds)
        if seconds > long_run:  # one long run is stable enough
            break
    return Measure(nodes, best, work=work, runs=runs, size=n)


def run_case(name: str, n: int, factor: int, repeat: int, min_seconds: float, timeout: float | None) -> Row:
    case = CASES[name]
    measure(name, 100, 1, timeout)  # warm up: imports, onnxruntime and shape-inference first calls
    if case.deep_recursion:
        for size in (n, n * factor):
            failure = recursion_probe(name, size)
            if failure:
                row_note = (f"at Python's default recursion limit ({sys.getrecursionlimit()}) it fails at "
                            f"{size:,} nodes: {failure!r}; timed with the limit raised")
                break
        else:
            row_note = None
    small = measure(name, n, repeat, timeout)
    grown = 0
    while small.seconds is not None and small.seconds < min_seconds and grown < 3:
        n *= 2
        grown += 1
        small = measure(name, n, repeat, timeout)
    row = Row(name, case.kind, small, Measure(0, None))
    if case.deep_recursion and row_note:
        row.notes.append(row_note)
    if grown:
        row.notes.append(f"N raised to {n:,} (t(N) was under {min_seconds * 1000:.0f} ms)")
    if small.seconds is None:
        row.notes.append("timed out at N")
        return row
    row.big = measure(name, n * factor, max(1, repeat - 1), timeout)
    if row.big.seconds is not None:
        row.ratio = row.big.seconds / max(small.seconds, min_seconds)
    else:
        row.ratio = timeout / max(small.seconds, min_seconds)  # a lower bound (with --clock wall)
        row.notes.append(f"timed out at 8N after {timeout:.0f} s (elapsed): the ratio is timeout / t(N), "
                         f"a lower bound; counted as over the bound")
    for m in (small, row.big):
        if m.work == "NO CHANGE":
            row.notes.append(f"the pass changed nothing at {m.nodes:,} nodes: parameters need fixing")
    return row


def fmt_row(row: Row, factor: int, max_ratio: float) -> str:
    def sec(m: Measure) -> str:
        return "timeout" if m.seconds is None else f"{m.seconds:.3f}"

    def per(m: Measure) -> str:
        return "" if m.seconds is None or not m.nodes else f"{m.seconds / m.nodes * 1e6:.1f}"

    ratio = "" if row.ratio is None else (f"{row.ratio:.1f}" + ("+" if row.big.seconds is None else ""))
    flag = "TIMEOUT" if row.big.seconds is None else \
        ("FAIL" if row.ratio is not None and row.ratio > max_ratio else "ok")
    return (f"| {row.name} | {row.kind} | {row.small.nodes:,} | {row.big.nodes:,} | {sec(row.small)} | "
            f"{sec(row.big)} | {per(row.small)} | {per(row.big)} | {ratio} | {flag} | {row.big.work} |")


def profile_case(name: str, n: int, top: int) -> str:
    profilers: list[cProfile.Profile] = []
    measure(name, n, 1, None, profile=profilers)
    out = io.StringIO()
    stats = pstats.Stats(*profilers, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    out.write("\n")
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=None, help="N, the smaller size (default 500; 12,500 with --full)")
    ap.add_argument("--factor", type=int, default=8, help="the larger size is factor x N (default 8)")
    ap.add_argument("--passes", default="", help="comma-separated pass names (default: every built-in pass)")
    ap.add_argument("--check", action="store_true", help="exit 1 when a pass's ratio exceeds --max-ratio")
    ap.add_argument("--max-ratio", type=float, default=24.0,
                    help="bound on t(8N)/t(N) (default 24: 8x the nodes may cost at most 3x the time per node)")
    ap.add_argument("--full", action="store_true", help="N = 12,500 -> 100,000 (the README table)")
    ap.add_argument("--repeat", type=int, default=3, help="runs at N, best counts (one fewer at 8N; default 3)")
    ap.add_argument("--min-seconds", type=float, default=0.005,
                    help="t(N) below this raises N and floors the ratio's denominator (default 0.005)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="give up a run after this many seconds (default: none; 600 with --full)")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                    help="cpu: the process's CPU time, all its threads (default; steady on a busy machine); "
                         "wall: elapsed time")
    ap.add_argument("--if-every", type=int, default=None,
                    help="one chain element in this many is an If with two 2-node bodies (default 25; 250 with --full)")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile the passes over the bound at 8N and print where the time goes")
    ap.add_argument("--top", type=int, default=15, help="lines per profile (default 15)")
    args = ap.parse_args(argv)

    n = args.nodes or (12_500 if args.full else 500)
    timeout = args.timeout if args.timeout is not None else (600.0 if args.full else None)
    names = [p.strip() for p in args.passes.split(",") if p.strip()] or (
        list(BUILTIN_PASSES) + [c for c in CASES if c not in BUILTIN_PASSES])  # then the variants
    unknown = [p for p in names if p not in CASES]
    if unknown:
        print(f"error: no scaling case for {', '.join(unknown)}; known: {', '.join(CASES)}", file=sys.stderr)
        return 2
    missing = [p for p in BUILTIN_PASSES if p not in CASES]
    if missing:
        print(f"warning: built-in passes without a scaling case: {', '.join(missing)}", file=sys.stderr)

    global clock, IF_EVERY
    clock = CLOCKS[args.clock]
    IF_EVERY = args.if_every or (250 if args.full else 25)
    signal.signal(signal.SIGALRM, _alarm)
    print(f"surgeon {surgeon.__version__}, onnx {onnx.__version__}, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cpus; {args.clock} time; If every {IF_EVERY}; "
          f"N = {n:,}, {args.factor}N = {n * args.factor:,}; bound: ratio <= {args.max_ratio:g}")
    print()
    print(f"| pass | graph | nodes N | nodes {args.factor}N | s N | s {args.factor}N | µs/node N | "
          f"µs/node {args.factor}N | ratio | | work at {args.factor}N |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    rows: list[Row] = []
    errors: list[str] = []
    began = time.perf_counter()
    for name in names:
        try:
            row = run_case(name, n, args.factor, args.repeat, args.min_seconds, timeout)
        except Exception as exc:  # one broken case must not hide the others
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            print(f"| {name} | {CASES[name].kind} | error: {type(exc).__name__}: {first_line} |", flush=True)
            errors.append(name)
            continue
        rows.append(row)
        print(fmt_row(row, args.factor, args.max_ratio), flush=True)
    print()
    for row in rows:
        for note in row.notes:
            print(f"note: {row.name}: {note}")
    failed = [r for r in rows if r.ratio is None or r.ratio > args.max_ratio or r.big.seconds is None]
    print(f"total {time.perf_counter() - began:.1f} s")
    if failed:
        print(f"over the bound (ratio > {args.max_ratio:g}): " + ", ".join(
            f"{r.name} ({'timed out' if r.ratio is None or r.big.seconds is None else f'{r.ratio:.1f}'})"
            for r in failed))
    else:
        print(f"every pass within the bound (ratio <= {args.max_ratio:g})")
    if args.profile:
        for row in failed:
            size = row.big.size or row.small.size * args.factor
            print(f"\n== profile: {row.name} at {size:,} nodes ==")
            print(profile_case(row.name, size, args.top))
    if errors:
        print("cases that raised: " + ", ".join(errors))
    return 1 if args.check and (failed or errors) else 0


if __name__ == "__main__":
    sys.exit(main())
