"""Load -> cleanup -> toposort -> save: surgeon against its peers, in one run.

    python benchmarks/roundtrip.py [--nodes 100000] [--repeat 3]

Builds an elementwise chain of --nodes nodes (the design notes' 100,000-node
case) and times, each job in a fresh subprocess (so peak RSS is its own):
  floor    onnx.load + onnx.save
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
onnx.save(m, DST)
""",
    "gs": """
import onnx, onnx_graphsurgeon as gs
g = gs.import_onnx(onnx.load(SRC))
g.cleanup().toposort()
onnx.save(gs.export_onnx(g), DST)
""",
    "surgeon": """
import surgeon
m = surgeon.load(SRC)
surgeon.run_pass(m, "cleanup")
surgeon.run_pass(m, "toposort")
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


def run_job(name: str, src: Path, dst: Path) -> tuple[float, float]:
    code = (f"import time, resource\nSRC, DST = {str(src)!r}, {str(dst)!r}\nt = time.perf_counter()\n"
            + JOBS[name] + "\nprint(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-2000:]}")
    seconds, rss_kb = out.stdout.split()[-2:]
    return float(seconds), int(rss_kb) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "chain.onnx"
        onnx.save(build_chain(args.nodes), src)
        size = src.stat().st_size
        results = {}
        for name in JOBS:
            runs = [run_job(name, src, Path(tmp) / f"{name}.onnx") for _ in range(args.repeat)]
            results[name] = {"seconds": statistics.median(r[0] for r in runs),
                             "peak_mb": statistics.median(r[1] for r in runs)}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    floor, gs_ = results["floor"]["seconds"], results["gs"]["seconds"]
    print(f"{args.nodes}-node chain, median of {args.repeat}, {size / 1e6:.1f} MB")
    print(f"{'job':8} {'seconds':>8} {'peak MB':>8} {'x floor':>8} {'x gs':>6}")
    for name, r in results.items():
        print(f"{name:8} {r['seconds']:8.2f} {r['peak_mb']:8.0f} {r['seconds'] / floor:8.1f} {r['seconds'] / gs_:6.2f}")


if __name__ == "__main__":
    main()
