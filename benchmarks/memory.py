"""Peak memory of folding and float16 conversion: surgeon against its peers, in one run.

    python benchmarks/memory.py [--weights-mb 1024] [--fp16-mb 256,1024] [--bloater 60000] [--only NAME]

Models, built in a temporary folder (never committed):
  transpose  64 x Transpose(W[2048, 2048]) -> MatMul, --weights-mb of float32
             weights in an external data file: folding makes 1 GiB of new weights
  bloater    ConstantOfShape([N, N]) -> ReduceSum (Polygraphy's "constant fold
             bloater"): folding it naively allocates N*N*4 bytes (13.4 GiB at 60000)
  fp16-<MB>  MatMul layers with <MB> MiB of external float32 weights, for to_fp16
Each job runs in a fresh subprocess; its peak RSS is its own ``VmHWM``:
  floor    onnx.load + onnx.save (what merely reading and writing the weights costs)
  gs       onnx-graphsurgeon import -> fold_constants -> cleanup -> export -> save
           (the bloater job runs under a 4 GiB address-space limit, so it fails
           instead of taking the machine)
  surgeon  surgeon.load -> fold_constants + cleanup (or to_fp16) -> surgeon.save
Timings and RSS never go in unit tests; tests/test_memory.py checks bounds only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PRELUDE = """
import json, time, sys
t0 = time.perf_counter()
def done(**extra):
    with open('/proc/self/status') as f:
        hwm = next(int(l.split()[1]) for l in f if l.startswith('VmHWM'))
    print(json.dumps({'seconds': time.perf_counter() - t0, 'peak_mb': hwm / 1024, **extra}))
"""

JOBS = {
    "floor": """
import onnx
m = onnx.load(SRC)
onnx.save(m, DST, save_as_external_data=True, location=DST_DATA)
done()
""",
    "gs": """
import resource
if LIMIT:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))
import os, onnx, onnx_graphsurgeon as gs
os.chdir(os.path.dirname(SRC))  # gs folds external weights only from the model's folder
try:
    g = gs.import_onnx(onnx.load(SRC))
    g.fold_constants(error_ok=False).cleanup()
    onnx.save(gs.export_onnx(g), DST, save_as_external_data=True, location=DST_DATA)
except MemoryError:
    done(failed='MemoryError')
    sys.exit(0)
done()
""",
    "surgeon": """
import surgeon
m = surgeon.load(SRC)
surgeon.apply(surgeon.Recipe.from_steps(STEPS), m)
surgeon.save(m, DST)
done()
""",
}


def _save(model: onnx.ModelProto, path: Path, external: bool) -> None:
    if external:
        onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data",
                  size_threshold=1024)
    else:
        onnx.save(model, str(path))


def build_matmuls(weights_mb: int, *, transposed: bool) -> onnx.ModelProto:
    """Layers of x @ W (for to_fp16), or x @ Transpose(W) (folding makes a new weight per layer)."""
    n = 2048
    layers = max(1, weights_mb * (1 << 20) // (n * n * 4))
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        inits.append(numpy_helper.from_array(rng.standard_normal((n, n), dtype=np.float32) * 0.02, f"W{i}"))
        weight = f"W{i}"
        if transposed:
            nodes.append(helper.make_node("Transpose", [weight], [f"WT{i}"], name=f"transpose{i}", perm=[1, 0]))
            weight = f"WT{i}"
        out = "y" if i == layers - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, weight], [out], name=f"matmul{i}"))
        prev = out
    g = helper.make_graph(nodes, "transpose" if transposed else "matmuls",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def build_bloater(n: int) -> onnx.ModelProto:
    """ConstantOfShape([n, n]) -> ReduceSum, added to the input: n*n*4 bytes if folded naively."""
    shape = numpy_helper.from_array(np.array([n, n], np.int64), "shape")
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["ones"], name="bloat",
                         value=numpy_helper.from_array(np.ones([1], np.float32))),
        helper.make_node("ReduceSum", ["ones"], ["total"], name="reduce", keepdims=0),
        helper.make_node("Add", ["x", "total"], ["y"], name="add"),
    ]
    g = helper.make_graph(nodes, "bloater", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [shape])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def run_job(job: str, src: Path, out_dir: Path, steps: list, limit: int = 0) -> dict:
    dst = out_dir / f"{job}.onnx"
    code = PRELUDE + "\n".join([
        f"SRC = {str(src)!r}", f"DST = {str(dst)!r}", f"DST_DATA = {dst.name + '.data'!r}",
        f"STEPS = {[tuple(s) for s in steps]!r}", f"LIMIT = {limit}",
    ]) + JOBS[job]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=out_dir)
    for f in out_dir.glob(f"{job}.onnx*"):
        f.unlink()
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        if "Failed to allocate" in last or "MemoryError" in last:
            last = f"out of memory under the {limit >> 30} GiB limit" if limit else "out of memory"
        return {"failed": last[:120]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights-mb", type=int, default=1024, help="weights of the transpose model")
    ap.add_argument("--fp16-mb", default="256,1024", help="weights of the to_fp16 models, comma-separated")
    ap.add_argument("--bloater", type=int, default=60000, help="N of ConstantOfShape([N, N])")
    ap.add_argument("--only", default=None, help="run only this model (transpose, bloater, fp16-256...)")
    ap.add_argument("--no-gs", action="store_true", help="skip onnx-graphsurgeon's jobs")
    args = ap.parse_args()
    fold = [["fold_constants", {}], ["cleanup", {}]]
    cases = [("transpose", lambda: build_matmuls(args.weights_mb, transposed=True), True, fold,
              ["floor", "gs", "surgeon"], 0),
             ("bloater", lambda: build_bloater(args.bloater), False, fold, ["gs", "surgeon"], 4 << 30)]
    for mb in (int(x) for x in args.fp16_mb.split(",") if x):
        # The conversion's own streaming; the activation run (onnxruntime holding the weights) is measured
        # in tests/test_memory.py and is what a model larger than memory skips.
        cases.append((f"fp16-{mb}", lambda mb=mb: build_matmuls(mb, transposed=False), True,
                      [["to_fp16", {"check_activations": False}]],
                      ["floor", "surgeon"], 0))
    rows = []
    with tempfile.TemporaryDirectory(prefix="surgeon-memory-") as tmp:
        for name, build, external, steps, jobs, limit in cases:
            if args.only and name != args.only:
                continue
            folder = Path(tmp) / name
            folder.mkdir()
            src = folder / "model.onnx"
            _save(build(), src, external)
            out = folder / "out"
            out.mkdir()
            for job in jobs:
                if job == "gs" and args.no_gs:
                    continue
                r = run_job(job, src, out, steps, limit if job == "gs" else 0)
                rows.append((name, job, r))
                print(f"{name:10} {job:8} " + (f"{r['seconds']:8.2f} s {r['peak_mb']:8.0f} MB"
                                               if "seconds" in r else "") + f" {r.get('failed', '')}",
                      file=sys.stderr, flush=True)
            for f in folder.rglob("*"):
                if f.is_file():
                    f.unlink()
    print("\n| model | job | seconds | peak MB | note |\n| --- | --- | ---: | ---: | --- |")
    for name, job, r in rows:
        secs = f"{r['seconds']:.2f}" if "seconds" in r else ""
        peak = f"{r['peak_mb']:.0f}" if "peak_mb" in r else ""
        print(f"| {name} | {job} | {secs} | {peak} | {r.get('failed', '')} |")


if __name__ == "__main__":
    main()
