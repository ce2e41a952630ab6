"""Large models: surgeon against its peers on long graphs and on weights past protobuf's 2 GiB.

    python benchmarks/large.py [--quick] [--part peers,recipes] [--timeout 900]

Inputs are generated in a temporary folder (``--tmp``, default the system's):
  chain N      an elementwise chain of N nodes (10k, 30k, 100k; --quick: 10k)
  llm SIZE     an LLM-shaped model with SIZE of float32 external weights (256 MiB, 1 GiB,
               4 GiB; --quick: 256 MiB): token embedding (Gather), 24 decoder blocks
               (q/k/v/o MatMuls, Softmax attention, an MLP, residual Adds,
               LayerNormalization), a tied output projection stored transposed
               (Transpose of the embedding -> MatMul, so folding materializes a transposed
               copy), dynamic batch and sequence dims.

Part "peers" runs, for every input, each job in a fresh process (peak RSS is the
process's own VmHWM; seconds include imports):
  floor      onnx.load + onnx.save
  gs         onnx-graphsurgeon import -> cleanup -> toposort -> export -> save
  surgeon    surgeon.load -> cleanup, toposort -> surgeon.save (full checker included)
  onnx_ir    onnx_ir.load + onnx_ir.save
  polygraphy polygraphy surgeon sanitize --fold-constants (its command line)
  onnxslim   onnxslim.slim + onnx.save
  onnxsim    onnxsim.simplify + onnx.save
Part "recipes" runs ``surgeon apply`` (the command line, in a fresh process) on the
largest llm input with infer_shapes, set_batch, cleanup, simplify, to_fp16 alone and
all together, and with --verify (batch 1, sequence 8), and checks the bounds:
structural steps within 200 MB + 5 % of the weights, value steps within 400 MB +
the largest single tensor. onnxruntime must hold a model's weights to run it, so
a run with --verify is held to what onnxruntime needs to run the input or the
edited output once, whichever needs more (the rows "onnxruntime run": one
session as verify opens it, one run), + 200 MB.
Every "MB" printed is a MiB (2**20 bytes: VmHWM / 1024), bounds included.

Jobs run under an address-space limit (--max-gb, default 16) so that a peer that
needs more fails instead of taking the machine; a failure is printed, not raised.
The benchmark extra installs the peers: ``pip install -e .[bench]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from roundtrip import build_chain  # noqa: E402

MIB = 2**20
BLOCKS = 24
ALIGN = 4096

# Each job is Python code run after WRAPPER in a fresh interpreter; SRC, DST, DST_DATA
# and EXTERNAL are set. A job that is a command line calls its console entry point.
WRAPPER = """
import atexit, sys, time
_t0 = time.perf_counter()
def _bench_report():
    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
    sys.stderr.write(f"\\nBENCH {time.perf_counter() - _t0} {hwm}\\n")
atexit.register(_bench_report)
"""
SAVE = "onnx.save(m, DST, save_as_external_data=EXTERNAL, location=DST_DATA)"
PEERS = {
    "floor": f"import onnx\nm = onnx.load(SRC)\n{SAVE}",
    "gs": "import onnx, onnx_graphsurgeon as gs\ng = gs.import_onnx(onnx.load(SRC))\ng.cleanup().toposort()\n"
          f"m = gs.export_onnx(g)\n{SAVE}",
    "surgeon": "import surgeon\nm = surgeon.load(SRC)\n"
               "surgeon.apply(surgeon.Recipe.from_steps([('cleanup', {}), ('toposort', {})]), m)\n"
               "surgeon.save(m, DST)",
    "onnx_ir": "import onnx_ir as ir\nm = ir.load(SRC)\nir.save(m, DST, external_data=DST_DATA if EXTERNAL else None)",
    "polygraphy": "from polygraphy.tools import main\nsys.argv = ['polygraphy', 'surgeon', 'sanitize', SRC, "
                  "'--fold-constants', '-o', DST] + (['--save-external-data', DST_DATA] if EXTERNAL else [])\n"
                  "sys.exit(main())",
    "onnxslim": f"import onnx, onnxslim\nm = onnxslim.slim(SRC)\n{SAVE}",
    "onnxsim": f"import onnx, onnxsim\nm, ok = onnxsim.simplify(onnx.load(SRC))\nassert ok, 'check failed'\n{SAVE}",
}
STRUCTURAL, VALUE = ("infer_shapes", "set_batch", "cleanup"), ("simplify", "to_fp16")
RECIPES = {
    "infer_shapes": [("infer_shapes", {})],
    "set_batch": [("set_batch", {"size": 1})],
    "cleanup": [("cleanup", {})],
    "simplify": [("simplify", {})],
    # to_fp16's default skips its activation run above 1 GiB of weights (onnxruntime would hold them).
    "to_fp16": [("to_fp16", {})],
    "all": [("set_batch", {"size": 1}), ("infer_shapes", {}), ("simplify", {}), ("to_fp16", {}), ("cleanup", {})],
    # simplify leaves the 568 MiB Transpose of the embedding unfolded (over max_fold_bytes, 256 MiB):
    # this folds it, the largest single fold of the model.
    "fold 1 GiB": [("fold_constants", {"max_fold_bytes": 1 << 30}), ("cleanup", {})],
}
VERIFY = ["--verify", "--dim", "batch=1", "--dim", "seq=8"]
APPLY = {name: (name, []) for name in RECIPES}
APPLY["cleanup --verify"] = ("cleanup", VERIFY)
APPLY["set_batch --verify"] = ("set_batch", VERIFY)
APPLY["all --verify"] = ("all", VERIFY + ["--rtol", "0.05", "--atol", "0.05"])
# verify's floor: one session as verify opens it (no graph optimizations, no arena), one run.
ORT_RUN = ("import numpy as np, onnxruntime as ort\n"
           "o = ort.SessionOptions(); o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL\n"
           "o.enable_cpu_mem_arena = False\n"
           "s = ort.InferenceSession(SRC, o, providers=['CPUExecutionProvider'])\n"
           "s.run(None, {'input_ids': np.zeros((1, 8), np.int64)})")


# -- inputs --------------------------------------------------------------------------


def llm_dims(total_bytes: int) -> tuple[int, int]:
    """(hidden, vocab) so that 24 blocks of 12 d^2 weights plus a vocab x d embedding fill total_bytes."""
    floats = total_bytes // 4
    d = int(math.sqrt(floats / (12 * BLOCKS + 46))) // 16 * 16  # vocab about 46 d, as in 7B-class models
    vocab = (floats - 12 * BLOCKS * d * d) // d
    return d, vocab


def build_llm(path: Path, total_bytes: int, seed: int = 0) -> dict:
    """Write an LLM-shaped model with external float32 weights, one tensor at a time (bounded memory)."""
    d, vocab = llm_dims(total_bytes)
    rng = np.random.default_rng(seed)
    data_name = path.name + ".data"
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    largest = 0
    with open(path.parent / data_name, "wb") as f:
        def weight(name: str, shape: tuple[int, ...], std: float) -> str:
            nonlocal largest
            arr = rng.standard_normal(shape, dtype=np.float32)
            arr *= std
            f.seek(-f.tell() % ALIGN, 1)
            offset = f.tell()
            f.write(memoryview(arr).cast("B"))
            t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(shape))
            t.data_location = TensorProto.EXTERNAL
            for key, value in (("location", data_name), ("offset", offset), ("length", arr.nbytes)):
                t.external_data.add(key=key, value=str(value))
            inits.append(t)
            largest = max(largest, arr.nbytes)
            return name

        def small(name: str, value: np.ndarray) -> str:
            inits.append(numpy_helper.from_array(value.astype(np.float32), name))
            return name

        def node(op: str, ins: list[str], out: str, **attrs) -> str:
            nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
            return out

        emb = weight("embed.weight", (vocab, d), 0.02)
        x = node("Gather", [emb, "input_ids"], "embed")
        ones, zeros = np.ones(d), np.zeros(d)
        scale = small("attn.scale", np.array(1 / math.sqrt(d)))
        for b in range(BLOCKS):
            p = f"blocks.{b}."
            q = node("MatMul", [x, weight(p + "q", (d, d), d ** -0.5)], p + "q_out")
            k = node("MatMul", [x, weight(p + "k", (d, d), d ** -0.5)], p + "k_out")
            v = node("MatMul", [x, weight(p + "v", (d, d), d ** -0.5)], p + "v_out")
            kt = node("Transpose", [k], p + "kT", perm=[0, 2, 1])
            s = node("Mul", [node("MatMul", [q, kt], p + "scores"), scale], p + "scaled")
            a = node("MatMul", [node("Softmax", [s], p + "probs", axis=-1), v], p + "ctx")
            o = node("MatMul", [a, weight(p + "o", (d, d), d ** -0.5)], p + "o_out")
            x = node("LayerNormalization", [node("Add", [x, o], p + "res1"), small(p + "ln1.g", ones),
                                            small(p + "ln1.b", zeros)], p + "ln1", axis=-1)
            h = node("Add", [node("MatMul", [x, weight(p + "w1", (d, 4 * d), d ** -0.5)], p + "mlp1"),
                             small(p + "b1", zeros.repeat(4))], p + "mlp1b")
            h = node("MatMul", [node("Relu", [h], p + "act"), weight(p + "w2", (4 * d, d), (4 * d) ** -0.5)],
                     p + "mlp2")
            x = node("LayerNormalization", [node("Add", [x, h], p + "res2"), small(p + "ln2.g", ones),
                                            small(p + "ln2.b", zeros)], p + "ln2", axis=-1)
        head = node("Transpose", [emb], "lm_head.weight", perm=[1, 0])  # tied, stored transposed
        node("MatMul", [x, head], "logits")
    graph = helper.make_graph(
        nodes, "llm", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    weights = (path.parent / data_name).stat().st_size
    return {"hidden": d, "vocab": vocab, "weights": weights, "largest": largest, "nodes": len(nodes)}


# -- running -------------------------------------------------------------------------


def run(code: str, timeout: float, max_gb: float, cwd: Path) -> dict:
    """Run WRAPPER + code in a fresh interpreter: seconds, peak MB, or why it failed."""
    def limit() -> None:
        cap = int(max_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    start = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, "-c", WRAPPER + code], capture_output=True, text=True,
                             timeout=timeout, preexec_fn=limit, cwd=cwd)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s", "seconds": time.perf_counter() - start, "peak_mb": 0}
    lines = [line for line in out.stderr.splitlines() if line.startswith("BENCH ")]
    seconds, peak = (float(v) for v in lines[-1].split()[1:]) if lines else (time.perf_counter() - start, 0)
    result = {"seconds": seconds, "peak_mb": peak / 1024}
    if out.returncode != 0:
        tail = [line for line in out.stderr.splitlines() if line.strip() and not line.startswith("BENCH ")]
        result["error"] = (tail[-1] if tail else f"exit {out.returncode}")[:200]
        if out.returncode < 0 or "MemoryError" in out.stderr or "std::bad_alloc" in out.stderr:
            result["error"] = f"over the {max_gb:g} GiB address-space cap: " + result["error"]
    return result


def job_code(name: str, src: Path, dst: Path, external: bool) -> str:
    return (f"SRC, DST = {str(src)!r}, {str(dst)!r}\nEXTERNAL, DST_DATA = {external!r}, {dst.name + '.data'!r}\n"
            + PEERS[name])


def apply_code(recipe: Path, src: Path, dst: Path, extra: list[str]) -> str:
    argv = ["surgeon", "apply", str(recipe), str(src), "-o", str(dst), "-q", *extra]
    return f"from surgeon.cli import main\nsys.exit(main({argv[1:]!r}))"


def clean(folder: Path, keep: set[Path]) -> None:
    for p in folder.iterdir():
        if p not in keep and p.is_file():
            p.unlink()


def fmt(r: dict, floor: dict | None) -> str:
    ok = floor and "error" not in floor
    ratio = f"{r['seconds'] / floor['seconds']:.1f}" if ok else ""
    mem = f"{r['peak_mb'] / floor['peak_mb']:.2f}" if ok and r.get("peak_mb") else ""
    return f"{r['seconds']:8.1f} {r.get('peak_mb', 0):9.0f} {ratio:>8} {mem:>8}  {r.get('error', '')}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only the small sizes (10k nodes, 256 MiB)")
    ap.add_argument("--part", default="peers,recipes")
    ap.add_argument("--jobs", default=",".join(PEERS), help="peer jobs to run")
    ap.add_argument("--recipes", default=",".join(APPLY), help="surgeon apply runs of the recipes part")
    ap.add_argument("--chains", default=None, help="chain sizes (default 10000,30000,100000)")
    ap.add_argument("--weights-mib", default=None, help="llm weight sizes in MiB (default 256,1024,4096)")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--max-gb", type=float, default=16)
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    if args.chains is None:
        args.chains = "10000" if args.quick else "10000,30000,100000"
    if args.weights_mib is None:
        args.weights_mib = "256" if args.quick else "256,1024,4096"
    chains = [int(n) for n in args.chains.split(",") if n]
    sizes = [int(n) for n in args.weights_mib.split(",") if n]
    parts, jobs = args.part.split(","), args.jobs.split(",")
    results: dict = {"machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]}, "peers": {},
                     "recipes": {}}
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="surgeon-large-") as tmp_:
        tmp = Path(tmp_)
        cases: list[tuple[str, object]] = [(f"chain {n:,} nodes", n) for n in chains]
        cases += [(f"llm {s} MiB", s) for s in sizes]
        for label, what in cases:
            if "peers" not in parts and not (label == cases[-1][0] and "recipes" in parts):
                continue
            src = tmp / ("chain.onnx" if label.startswith("chain") else "llm.onnx")
            t = time.perf_counter()
            if label.startswith("chain"):
                onnx.save(build_chain(int(what)), src)  # type: ignore[arg-type]
                info: dict = {"nodes": what}
            else:
                info = build_llm(src, int(what) * MIB)  # type: ignore[arg-type]
            print(f"\n{label}: {info} (generated in {time.perf_counter() - t:.0f} s)", flush=True)
            external = not label.startswith("chain")
            keep = {src, src.with_name(src.name + ".data")}
            if "peers" in parts:
                rows = results["peers"][label] = {"input": info}
                print(f"{'job':12} {'seconds':>8} {'peak MB':>9} {'x floor':>8} {'x mem':>8}", flush=True)
                for name in jobs:
                    dst = tmp / f"out-{name}.onnx"
                    rows[name] = run(job_code(name, src, dst, external), args.timeout, args.max_gb, tmp)
                    print(f"{name:12} {fmt(rows[name], rows.get('floor'))}", flush=True)
                    clean(tmp, keep)
            if "recipes" in parts and external and label == cases[-1][0]:
                results["recipes"] = {"input": info}
                structural = 200 + 0.05 * info["weights"] / MIB  # MiB, as peak_mb
                value = 400 + info["largest"] / MIB
                print(f"\nsurgeon apply on {label} (weights {info['weights'] / MIB:.0f} MB, largest tensor "
                      f"{info['largest'] / MIB:.0f} MB); bounds: structural {structural:.0f} MB, "
                      f"value {value:.0f} MB")
                print(f"{'recipe':20} {'seconds':>8} {'peak MB':>9} {'bound MB':>9}  result", flush=True)
                ort_run = None
                for label2, (recipe_name, extra) in APPLY.items():
                    if label2 not in args.recipes.split(","):
                        continue
                    if "--verify" in extra and ort_run is None:
                        ort_run = run(f"SRC = {str(src)!r}\n" + ORT_RUN, args.timeout, args.max_gb, tmp)
                        results["recipes"]["onnxruntime run"] = ort_run
                        print(f"{'onnxruntime run':20} {ort_run['seconds']:8.1f} {ort_run['peak_mb']:9.0f} "
                              f"{'':>9}  {ort_run.get('error', '')}", flush=True)
                    recipe = tmp / f"{recipe_name}.yaml"
                    steps = [{"pass": p, "with": w} if w else {"pass": p} for p, w in RECIPES[recipe_name]]
                    recipe.write_text(json.dumps({"version": 1, "steps": steps}))
                    r = run(apply_code(recipe, src, tmp / "out.onnx", extra), args.timeout, args.max_gb, tmp)
                    kind = "structural" if recipe_name in STRUCTURAL else "value"
                    bound = structural if kind == "structural" else value
                    if "--verify" in extra and ort_run is not None and "error" not in ort_run and "error" not in r:
                        # The edited model may need more than the input to run (float16 on CPU does).
                        edited = run(f"SRC = {str(tmp / 'out.onnx')!r}\n" + ORT_RUN, args.timeout, args.max_gb, tmp)
                        results["recipes"][f"onnxruntime run ({recipe_name} output)"] = edited
                        print(f"{'  its output alone':20} {edited['seconds']:8.1f} {edited['peak_mb']:9.0f} "
                              f"{'':>9}  {edited.get('error', '')}", flush=True)
                        kind, bound = "verify", max(ort_run["peak_mb"], edited.get("peak_mb", 0)) + 200
                    r["bound_mb"], r["kind"] = bound, kind
                    verdict = r.get("error") or ("within" if r["peak_mb"] <= bound else
                                                 f"OVER by {r['peak_mb'] - bound:.0f} MB")
                    results["recipes"][label2] = r
                    print(f"{label2:20} {r['seconds']:8.1f} {r['peak_mb']:9.0f} {bound:9.0f}  {verdict}", flush=True)
                    clean(tmp, keep)
            clean(tmp, set())
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
