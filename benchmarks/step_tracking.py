"""What the runner's change tracking costs per step, on a 100,000-node chain.

    python benchmarks/step_tracking.py [--nodes 100000] [--repeat 5]

The runner snapshots the graph before the first step and after every step
and diffs the two (surgeon/passes/runner.py). This times, on an elementwise
chain of Relu/Add nodes with a few small initializers:
  snapshot     one snapshot of the graph
  apply noop   surgeon.apply of a one-step recipe whose user pass does nothing
               (two snapshots + one diff: the whole tracking overhead)
  apply topo   the same with the built-in toposort pass
Medians of --repeat runs. Timings never go in unit tests.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import surgeon
from surgeon.passes import runner


def chain(n: int) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.full((4,), i + 1, np.float32), f"c{i}") for i in range(4)]
    nodes, prev = [], "x"
    for i in range(n):
        out = "y" if i == n - 1 else f"t{i}"
        if i % 2:
            nodes.append(helper.make_node("Add", [prev, f"c{i % 4}"], [out], name=f"n{i}"))
        else:
            nodes.append(helper.make_node("Relu", [prev], [out], name=f"n{i}"))
        prev = out
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def median(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    model = surgeon.load(chain(args.nodes))
    snapshot = runner._snapshot
    arg = model if "model" in snapshot.__code__.co_varnames[:1] else model.graph

    @surgeon.register_pass("bench_noop")
    def bench_noop(graph):
        """Do nothing."""

    noop = surgeon.Recipe.from_steps([{"pass": "bench_noop"}])
    topo = surgeon.Recipe.from_steps([{"pass": "toposort"}])
    print(f"{args.nodes} nodes, median of {args.repeat}:")
    print(f"  snapshot    {median(lambda: snapshot(arg), args.repeat):.3f} s")
    print(f"  apply noop  {median(lambda: surgeon.apply(noop, model), args.repeat):.3f} s")
    print(f"  apply topo  {median(lambda: surgeon.apply(topo, model), args.repeat):.3f} s")


if __name__ == "__main__":
    main()
