"""Compare surgeon's ``simplify`` with onnxsim, onnxslim and ``polygraphy surgeon sanitize --fold-constants``.

For every model: nodes left (top-level graph, and all graphs including
If/Loop bodies), wall time, and whether the outputs stay equal in
onnxruntime (seeded random inputs). Installs nothing: a peer that is
importable is run in-process; otherwise its command line is used if it is
on PATH (then the time includes the interpreter's start-up and the file
I/O); a missing peer is reported as missing.

    python benchmarks/simplify_compare.py                 # the default models (fixtures/README.md)
    python benchmarks/simplify_compare.py --all           # every real model (fixtures/fetch.py names)
    python benchmarks/simplify_compare.py a.onnx b.onnx --repeat 3
    python benchmarks/simplify_compare.py --all --tools surgeon,onnxslim   # only these tools
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _fixtures():
    spec = importlib.util.spec_from_file_location("surgeon_fixtures_fetch", ROOT / "fixtures" / "fetch.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fixtures = _fixtures()  # finds the real models: committed, fetched (python fixtures/fetch.py) or in onnx
DEFAULT_MODELS = ["ch_PP-OCRv4_rec_infer.onnx", "light_densenet121.onnx", "tiny_yolo_legacy.onnx",
                  "transformer_encoder_dynamo.onnx", "tiny_yolo_dynamo.onnx", "silero_vad.onnx"]
# Inputs whose dims a random feed cannot guess.
FEEDS: dict[str, Callable[[np.random.Generator], dict[str, np.ndarray]]] = {
    "ch_PP-OCRv4_rec_infer.onnx": lambda rng: {"x": rng.standard_normal((1, 3, 48, 320)).astype(np.float32)},
    "silero_vad.onnx": lambda rng: {"input": rng.standard_normal((1, 512)).astype(np.float32),
                                    "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(16000)},
}


def surgeon_simplify(path: Path, out: Path) -> onnx.ModelProto:
    import surgeon
    from surgeon.io.export import to_proto

    model = surgeon.load(path)
    surgeon.run_pass(model, "simplify")
    return to_proto(model)


def onnxsim_api(path: Path, out: Path) -> onnx.ModelProto:
    import onnxsim

    model, _ = onnxsim.simplify(onnx.load(str(path)))
    return model


def onnxslim_api(path: Path, out: Path) -> onnx.ModelProto:
    import onnxslim

    return onnxslim.slim(str(path))


def cli(*args: str) -> Callable[[Path, Path], onnx.ModelProto]:
    def run(path: Path, out: Path) -> onnx.ModelProto:
        argv = [a.format(src=path, out=out) for a in args]
        subprocess.run(argv, check=True, capture_output=True)
        return onnx.load(str(out))

    return run


def peers() -> tuple[list[tuple[str, str, Callable]], list[str]]:
    """(name, how it runs, function) of every available peer, and the names of missing ones."""
    found, missing = [("surgeon simplify", "in-process", surgeon_simplify)], []
    for name, module, api, command in (
            ("onnxsim", "onnxsim", onnxsim_api, ("onnxsim", "{src}", "{out}")),
            ("onnxslim", "onnxslim", onnxslim_api, ("onnxslim", "{src}", "{out}")),
            ("polygraphy sanitize --fold-constants", None, None,
             ("polygraphy", "surgeon", "sanitize", "{src}", "--fold-constants", "-o", "{out}"))):
        if module is not None and importlib.util.find_spec(module) is not None:
            found.append((name, "in-process", api))
        elif shutil.which(command[0]):
            found.append((name, "command line", cli(*command)))
        else:
            missing.append(name)
    return found, missing


@contextlib.contextmanager
def quiet():
    """Silence what peers print (onnxsim writes warnings from C++ straight to the file descriptors)."""
    sys.stdout.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def count(model: onnx.ModelProto) -> tuple[int, int]:
    def total(g: onnx.GraphProto) -> int:
        return len(g.node) + sum(total(a.g) for n in g.node for a in n.attribute if a.HasField("g")) \
            + sum(total(s) for n in g.node for a in n.attribute for s in a.graphs)

    return len(model.graph.node), total(model.graph)


def feeds_for(name: str, session: ort.InferenceSession) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    if name in FEEDS:
        return FEEDS[name](rng)
    types = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_}
    feeds = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 2 for d in i.shape]
        dtype = types.get(i.type, np.float32)
        feeds[i.name] = rng.standard_normal(shape).astype(dtype) if dtype == np.float32 \
            else rng.integers(0, 2, shape).astype(dtype)
    return feeds


def same_outputs(reference: Path, model: onnx.ModelProto, name: str) -> str:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        ref = ort.InferenceSession(str(reference), options, providers=["CPUExecutionProvider"])
        feeds = feeds_for(name, ref)
        expected = ref.run(None, feeds)
        got = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"]).run(None, feeds)
    except Exception as exc:  # a peer may write a model onnxruntime rejects; that is a result too
        return f"error: {str(exc).splitlines()[0][:60]}"
    ok = all(np.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(expected, got))
    return "equal" if ok and len(expected) == len(got) else "DIFFERENT"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path)
    parser.add_argument("--all", action="store_true",
                        help="every real model (fixtures/models, fetched, onnx-packaged, polygraphy/)")
    parser.add_argument("--tools", help="comma-separated prefixes of the tools to run (default: every one found)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per tool and model (median shown)")
    args = parser.parse_args(argv)
    paths = args.models
    if not paths:
        for name in fixtures.names() if args.all else DEFAULT_MODELS:
            path, why = fixtures.locate(name)
            if path is None:
                print(f"skipping {why}", file=sys.stderr)
            else:
                paths.append(path)
    tools, missing = peers()
    if args.tools:
        wanted = [w.strip() for w in args.tools.split(",") if w.strip()]
        tools = [t for t in tools if any(t[0].startswith(w) for w in wanted)]
        missing = [m for m in missing if any(m.startswith(w) for w in wanted)]
    print(f"python {sys.version.split()[0]}, onnx {onnx.__version__}, onnxruntime {ort.__version__}")
    for name, how, _ in tools:
        print(f"  {name}: {how}")
    if missing:
        print("  missing (not importable, not on PATH): " + ", ".join(missing))
    print()
    print("| model | tool | nodes | nodes incl. subgraphs | seconds (median) | outputs |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            original = onnx.load(str(path), load_external_data=False)
            top, everything = count(original)
            print(f"| {path.name} | (input) | {top} | {everything} | | |")
            for name, _, run in tools:
                out = Path(tmp) / f"out-{len(name)}-{path.name}"
                times, result, error = [], None, None
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    try:
                        with quiet():
                            result = run(path, out)
                    except Exception as exc:  # report a peer's failure, keep benchmarking
                        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:60] if str(exc) else ''}"
                        break
                    times.append(time.perf_counter() - start)
                if error is not None:
                    print(f"| {path.name} | {name} | | | | failed: {error} |")
                    continue
                top, everything = count(result)
                print(f"| {path.name} | {name} | {top} | {everything} | {statistics.median(times):.3f} | "
                      f"{same_outputs(path, result, path.name)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
