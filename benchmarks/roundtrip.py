"""Load -> cleanup -> toposort -> save: surgeon against its peers, in one run.

    python benchmarks/roundtrip.py [--nodes 100000] [--weights-mb 1024] [--repeat 3]

Two models, the design notes' cases:
  chain    an elementwise chain of --nodes nodes (graph size)
  weights  64 MatMul layers whose weights, --weights-mb in all, live in an
           external data file (weight size)
Each job runs in a fresh subprocess, so its peak RSS is its own:
  floor    onnx.load + onnx.save (with external data for the weights model)
  gs       onnx-graphsurgeon import -> cleanup -> toposort -> export -> save
  surgeon  surgeon.load -> cleanup -> toposort passes -> surgeon.save (full checker included)
Prints medians and ratios to the floor and to gs. Timings never go in unit tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

JOBS = {
    "floor": """
import onnx
m = onnx.load(SRC)
onnx.save(m, DST, save_as_external_data=EXTERNAL, location=DST_DATA)
""",
    "gs": """
import onnx, onnx_graphsurgeon as gs
g = gs.import_onnx(onnx.load(SRC))
g.cleanup().toposort()
onnx.save(gs.export_onnx(g), DST, save_as_external_data=EXTERNAL, location=DST_DATA)
""",
    "surgeon": """
import surgeon
m = surgeon.load(SRC)
surgeon.apply(surgeon.Recipe.from_steps([("cleanup", {}), ("toposort", {})]), m)
surgeon.save(m, DST)
""",
}


def build_chain(n: int) -> onnx.ModelProto:
    nodes, prev = [], "x"
    inits = [numpy_helper.from_array(np.full((1, 16), 0.5, np.float32), "c")]
    for i in range(n):
        out = f"t{i}" if i < n - 1 else "y"
        op = ("Add", "Mul", "Relu", "Sub")[i % 4]
        ins = [prev] if op == "Relu" else [prev, "c"]
        nodes.append(helper.make_node(op, ins, [out], name=f"n{i}"))
        prev = out
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def build_weights(total_mb: int, layers: int = 64) -> onnx.ModelProto:
    dim = int((total_mb * 2**20 / 4 / layers) ** 0.5)
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        w = f"w{i}"
        inits.append(numpy_helper.from_array(rng.standard_normal((dim, dim), dtype=np.float32) * 0.01, w))
        out = f"h{i}" if i < layers - 1 else "y"
        nodes.append(helper.make_node("MatMul", [prev, w], [out], name=f"mm{i}"))
        prev = out
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", dim])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", dim])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def run_job(name: str, src: Path, dst: Path, external: bool) -> tuple[float, float]:
    # Peak RSS from VmHWM: ru_maxrss would carry over the parent's peak across exec.
    code = (f"import time\nSRC, DST = {str(src)!r}, {str(dst)!r}\n"
            f"EXTERNAL, DST_DATA = {external!r}, {dst.name + '.data'!r}\nt = time.perf_counter()\n"
            + JOBS[name] + "\nhwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]"
            "\nprint(time.perf_counter() - t, hwm)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-2000:]}")
    seconds, rss_kb = out.stdout.split()[-2:]
    return float(seconds), int(rss_kb) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--weights-mb", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases = {}
        chain = Path(tmp) / "chain.onnx"
        onnx.save(build_chain(args.nodes), chain)
        cases[f"chain ({args.nodes} nodes)"] = (chain, False)
        if args.weights_mb:
            weights = Path(tmp) / "weights.onnx"
            onnx.save(build_weights(args.weights_mb), weights, save_as_external_data=True,
                      location="weights.onnx.data")
            cases[f"weights ({args.weights_mb} MB external)"] = (weights, True)
        results = {}
        for case, (src, external) in cases.items():
            results[case] = {}
            for name in JOBS:
                runs = [run_job(name, src, Path(tmp) / f"{name}-{src.name}", external) for _ in range(args.repeat)]
                results[case][name] = {"seconds": statistics.median(r[0] for r in runs),
                                       "peak_mb": statistics.median(r[1] for r in runs)}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"median of {args.repeat} run(s); ratios: time / floor time, time / gs time")
    for case, jobs in results.items():
        floor, gs_ = jobs["floor"]["seconds"], jobs["gs"]["seconds"]
        print(f"\n{case}")
        print(f"{'job':8} {'seconds':>8} {'peak MB':>8} {'x floor':>8} {'x gs':>6}")
        for name, r in jobs.items():
            print(f"{name:8} {r['seconds']:8.2f} {r['peak_mb']:8.0f} {r['seconds'] / floor:8.1f} "
                  f"{r['seconds'] / gs_:6.2f}")


if __name__ == "__main__":
    main()
