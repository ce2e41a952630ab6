"""surgeon's to_fp16 against onnxconverter-common's float16 converter, on the real models in fixtures/.

    python benchmarks/fp16_compare.py [--models a.onnx,b.onnx] [--repeat 3]

onnxconverter-common's ``convert_float_to_float16`` is the converter Polygraphy's
``--fp-to-fp16`` and onnxslim's ``--dtype fp16`` call. Both run with float32
inputs and outputs (``keep_io_types``) and their defaults otherwise. Per model
it prints the error of each float16 model against the float32 model on the
same seeded inputs (max abs error, and that error relative to the output's
largest magnitude; the worst output counts), the nodes surgeon keeps in float32
for their values, and the median conversion time (surgeon's includes its
activation run). "fails" means the converter raised or onnxruntime could not
run its result. Needs ``pip install onnxconverter-common`` (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import surgeon  # noqa: E402
from surgeon.io.activations import sample_inputs  # noqa: E402
from surgeon.io.export import to_proto  # noqa: E402
from surgeon.passes.runner import run_step  # noqa: E402
from surgeon.recipe.model import Step  # noqa: E402

# Inputs the models' own code would give (others: surgeon's sample inputs, images at 224x224).
FEEDS = {
    "ch_PP-OCRv4_det_infer.onnx": lambda rng: {"x": rng.uniform(-2, 2, (1, 3, 640, 640)).astype(np.float32)},
    "ch_PP-OCRv4_rec_infer.onnx": lambda rng: {"x": rng.uniform(-1, 1, (1, 3, 48, 320)).astype(np.float32)},
    "silero_vad.onnx": lambda rng: {"input": rng.uniform(-0.5, 0.5, (1, 512)).astype(np.float32),
                                    "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(16000, np.int64)},
}
FEEDS["silero_vad_16k_op15.onnx"] = FEEDS["silero_vad.onnx"]


def session(model: bytes | str) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def run(model: bytes | str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    s = session(model)
    wanted = {i.name for i in s.get_inputs()}
    return s.run(None, {k: v for k, v in feeds.items() if k in wanted})


def errors(want: list[np.ndarray], got: list[np.ndarray]) -> tuple[float, float]:
    """(max abs error, max abs error / largest |output|), worst over the float outputs."""
    worst_abs = worst_rel = 0.0
    for a, b in zip(want, got):
        if a.dtype.kind != "f" or a.size == 0:
            continue
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        err = float(np.nanmax(diff)) if not np.isnan(diff).all() else float("inf")
        if np.isnan(b).any() and not np.isnan(a).any():
            err = float("inf")
        scale = max(float(np.abs(a[np.isfinite(a)]).max()) if np.isfinite(a).any() else 0.0, 1e-6)
        worst_abs, worst_rel = max(worst_abs, err), max(worst_rel, err / scale)
    return worst_abs, worst_rel


def timed(fn, repeat: int) -> tuple[Any, float]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


def surgeon_fp16(path: Path, npz: Path | None) -> tuple[bytes, Any]:
    model = surgeon.load(path)
    report = run_step(model, Step("to_fp16", {"inputs": str(npz)} if npz else {}))
    return to_proto(model).SerializeToString(), report


def occ_fp16(path: Path) -> bytes:
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float16.convert_float_to_float16(onnx.load(str(path)), keep_io_types=True).SerializeToString()


def main(argv: list[str] | None = None) -> int:
    from util import fetch as fixtures
    from util import real_model_names

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="comma-separated fixture names (default: every runnable one)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    names = args.models.split(",") if args.models else [n for n in real_model_names() if "/" not in n]
    print(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}; errors against the float32 model")
    print(f"{'model':34} {'surgeon abs':>11} {'rel':>8} {'occ abs':>11} {'rel':>8} {'kept fp32':>9} "
          f"{'surgeon s':>9} {'occ s':>7}")
    tmp = Path(__import__("tempfile").mkdtemp())
    for name in names:
        path, why = fixtures.locate(name)
        if path is None:
            print(f"{name:34} missing: {why}")
            continue
        proto = onnx.load(str(path), load_external_data=False)
        try:
            model = surgeon.load(path)
            make = FEEDS.get(name)
            feeds = make(np.random.default_rng(0)) if make else sample_inputs(model.graph.inputs, seed=0)
            want = run(str(path), feeds)
        except Exception as exc:
            print(f"{name:34} float32 model does not run in onnxruntime ({type(exc).__name__}): skipped")
            continue
        npz = None
        if make:  # surgeon's activation run gets the same kind of inputs (another seed)
            npz = tmp / f"{path.stem}.npz"
            np.savez(npz, **make(np.random.default_rng(1)))
        cells = []
        try:
            (ours, report), t_ours = timed(lambda path=path, npz=npz: surgeon_fp16(path, npz), args.repeat)
            a, r = errors(want, run(ours, feeds))
            kept = len(report.details.get("kept_for_values", []))
            cells += [f"{a:11.3g}", f"{r:8.2g}"]
        except Exception as exc:
            cells += [f"{'fails':>11}", f"{type(exc).__name__[:8]:>8}"]
            kept, t_ours = -1, float("nan")
        try:
            theirs, t_occ = timed(lambda path=path: occ_fp16(path), args.repeat)
            a, r = errors(want, run(theirs, feeds))
            cells += [f"{a:11.3g}", f"{r:8.2g}"]
        except Exception as exc:
            cells += [f"{'fails':>11}", f"{type(exc).__name__[:8]:>8}"]
            t_occ = float("nan")
        del proto
        print(f"{name:34} {' '.join(cells)} {kept:9d} {t_ours:9.2f} {t_occ:7.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
