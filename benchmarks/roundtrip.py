"""Load -> cleanup -> toposort -> save: surgeon against its peers, in one run.

    python benchmarks/roundtrip.py [--nodes 100000] [--weights-mb 1024] [--repeat 3]
    python benchmarks/roundtrip.py --apply 10000,30000,100000   # issue #9's target job only

Two models, the design notes' cases:
  chain    an elementwise chain of --nodes nodes (graph size)
  weights  64 MatMul layers whose weights, --weights-mb in all, live in an
           external data file (weight size)
Each job runs in a fresh subprocess, so its peak RSS is its own:
  floor    onnx.load + onnx.save (with external data for the weights model)
  gs       onnx-graphsurgeon import -> cleanup -> toposort -> export -> save
  surgeon  surgeon.load -> cleanup -> toposort passes -> surgeon.save (full checker included)
Prints medians and ratios to the floor and to gs. Timings never go in unit tests.

--apply N,M,...: the whole ``surgeon apply`` job (load, remove_node {op: Relu}
in bypass mode, cleanup, save with the full checker) on a chain of N nodes,
half of them Relu, against the floor; the floor and surgeon runs alternate,
so both see the same machine load.
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

APPLY_JOB = """
from surgeon.cli import main
assert main(["apply", RECIPE, SRC, "-o", DST]) == 0
"""

# Imported before the clock starts: import time is fixed, not the job's (surgeon.workflow pulls in onnxruntime).
PREIMPORTS = {"apply": "import surgeon.cli, surgeon.workflow\n", "floor": "import onnx\n"}

APPLY_RECIPE = """version: 1
steps:
  - pass: remove_node
    with: {op: Relu}
  - pass: cleanup
"""


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


def build_relu_chain(n: int) -> onnx.ModelProto:
    """A chain of n elementwise nodes, every other one a Relu, two small initializers."""
    nodes, prev = [], "x"
    inits = [numpy_helper.from_array(np.full((1, 16), 0.5, np.float32), "c"),
             numpy_helper.from_array(np.full((1, 16), 2.0, np.float32), "d")]
    for i in range(n):
        out = f"t{i}" if i < n - 1 else "y"
        op = ("Add", "Relu", "Mul", "Relu")[i % 4]
        ins = [prev] if op == "Relu" else [prev, "c" if op == "Add" else "d"]
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


def run_job(name: str, src: Path, dst: Path, external: bool,
            recipe: Path | None = None) -> tuple[float, float, float]:
    """Run one job in a fresh process: (wall seconds, peak RSS MB, CPU seconds)."""
    # Peak RSS from VmHWM: ru_maxrss would carry over the parent's peak across exec.
    code = (f"import time\nSRC, DST, RECIPE = {str(src)!r}, {str(dst)!r}, {str(recipe)!r}\n"
            f"EXTERNAL, DST_DATA = {external!r}, {dst.name + '.data'!r}\n"
            # --apply times the job, not the imports (the other cases keep timing them as before)
            + (PREIMPORTS.get(name, "") if recipe else "")
            + "t, c = time.perf_counter(), time.process_time()\n"
            + (APPLY_JOB if name == "apply" else JOBS[name])
            + "\nhwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]"
            "\nprint(time.perf_counter() - t, hwm, time.process_time() - c)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-2000:]}")
    seconds, rss_kb, cpu = out.stdout.split()[-3:]
    return float(seconds), int(rss_kb) / 1024, float(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--weights-mb", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--apply", help="comma-separated chain sizes: time the whole surgeon apply job only")
    args = ap.parse_args()
    if args.apply:
        apply_ratios([int(n) for n in args.apply.split(",")], args.repeat, args.json)
        return
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


def apply_ratios(sizes: list[int], repeat: int, as_json: bool) -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "recipe.yaml"
        recipe.write_text(APPLY_RECIPE)
        for n in sizes:
            src = Path(tmp) / f"relu_chain{n}.onnx"
            onnx.save(build_relu_chain(n), src)
            runs: dict[str, list[tuple[float, float, float]]] = {"floor": [], "apply": []}
            for _ in range(repeat):  # alternate, so that both see the same machine load
                for name in runs:
                    runs[name].append(run_job(name, src, Path(tmp) / f"{name}-{src.name}", False, recipe))
            results[n] = {name: {"seconds": statistics.median(r[0] for r in rs),
                                 "peak_mb": statistics.median(r[1] for r in rs),
                                 "cpu_seconds": statistics.median(r[2] for r in rs)} for name, rs in runs.items()}
    if as_json:
        print(json.dumps(results, indent=2))
        return
    print(f"surgeon apply (remove_node Relu + cleanup, full check) vs onnx.load+onnx.save; median of {repeat}")
    print("(CPU: process time, steadier than wall time on a busy machine)")
    print(f"{'nodes':>8} {'floor s':>8} {'apply s':>8} {'x floor':>8} {'floor cpu':>9} {'apply cpu':>9} "
          f"{'x floor':>8} {'floor MB':>9} {'apply MB':>9}")
    for n, r in results.items():
        f, a = r["floor"], r["apply"]
        print(f"{n:8d} {f['seconds']:8.2f} {a['seconds']:8.2f} {a['seconds'] / f['seconds']:8.1f} "
              f"{f['cpu_seconds']:9.2f} {a['cpu_seconds']:9.2f} {a['cpu_seconds'] / f['cpu_seconds']:8.1f} "
              f"{f['peak_mb']:9.0f} {a['peak_mb']:9.0f}")


if __name__ == "__main__":
    main()
