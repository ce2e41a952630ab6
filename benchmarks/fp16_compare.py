"""surgeon's to_fp16 against onnxconverter-common's float16 converter, on the real models in fixtures/.

    python benchmarks/fp16_compare.py [--models a.onnx,b.onnx] [--repeat 3]

onnxconverter-common's ``convert_float_to_float16`` is the converter Polygraphy's
``--fp-to-fp16`` and onnxslim's ``--dtype fp16`` call. Both run with float32
inputs and outputs (``keep_io_types``) and their defaults otherwise. Per model
it prints the error of each float16 model against the float32 model on the
same seeded inputs (max abs error, and that error relative to the output's
largest magnitude; the worst output counts), the nodes surgeon keeps in float32
for their values, the median conversion time (surgeon's includes its
activation run), and surgeon's float16 verdict on each float16 model:
surgeon's own through ``surgeon apply recipes/to_fp16.yaml --report`` (its
contracts map to_fp16's Casts back to the original's tensors, so models with a
custom op onnxruntime cannot run are compared around it), onnxconverter-common's
through ``surgeon.verify(..., correspondence=Correspondence(tolerance="fp16"))``,
both on the same inputs as the error columns. The PP-OCRv4 detector is measured
twice: on uniform noise and on a synthetic page with text
(``tests/util.py``'s ``ocr_page_inputs``), with the fraction of pixels whose
``> 0.3`` text decision flips. "fails" means the converter raised or
onnxruntime could not run its result. Needs ``pip install onnxconverter-common``
(the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import surgeon  # noqa: E402
from surgeon.graph.correspondence import Correspondence  # noqa: E402
from surgeon.io.export import to_proto  # noqa: E402
from surgeon.io.samples import input_specs, resolve_dims, sample_feeds  # noqa: E402
from surgeon.passes.runner import run_step  # noqa: E402
from surgeon.recipe.model import Step  # noqa: E402

Feeds = dict[str, np.ndarray]
DETECTOR = "ch_PP-OCRv4_det_infer.onnx"
THRESHOLD = 0.3  # PaddleOCR's DBPostProcess thresh: a pixel above it is text
RECIPE = ROOT / "recipes" / "to_fp16.yaml"


def _ocr_page(seed: int) -> Feeds:
    from util import ocr_page_inputs

    return ocr_page_inputs(seed=seed)


def _uniform(low: float, high: float, shape: tuple[int, ...]) -> Callable[[int], np.ndarray]:
    return lambda seed: np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


# Inputs the models' own code would give, by seed (others: surgeon's sample inputs, batch 1, images at 224x224).
FEEDS: dict[str, Callable[[int], Feeds]] = {
    DETECTOR: lambda seed: {"x": _uniform(-2, 2, (1, 3, 640, 640))(seed)},
    "ch_PP-OCRv4_rec_infer.onnx": lambda seed: {"x": _uniform(-1, 1, (1, 3, 48, 320))(seed)},
    "silero_vad.onnx": lambda seed: {"input": _uniform(-0.5, 0.5, (1, 512))(seed),
                                     "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(16000, np.int64)},
}
FEEDS["silero_vad_16k_op15.onnx"] = FEEDS["silero_vad.onnx"]
# Extra rows: (model, label suffix, inputs by seed).
EXTRA_ROWS = [(DETECTOR, "page with text", _ocr_page)]


def session(model: bytes | str) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def run(model: bytes | str, feeds: Feeds) -> list[np.ndarray]:
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


def flips(want: list[np.ndarray], got: list[np.ndarray]) -> float:
    """Fraction of the probability map's pixels on the other side of THRESHOLD."""
    return float(np.mean((want[0] > THRESHOLD) != (got[0] > THRESHOLD)))


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


def why_not(verification: dict[str, Any]) -> str:
    """The worst failing output of a verification report, or its first note."""
    bad = [o for o in verification.get("outputs", []) if not o.get("ok")]
    if bad:
        o = max(bad, key=lambda o: (o.get("max_abs") or 0.0) / max(o.get("atol") or 1e-30, 1e-30))
        if o.get("problem"):
            return f"'{o['name']}': {o['problem']}"
        return f"'{o['name']}': max abs error {o.get('max_abs', 0):.3g}, allowed {o.get('tolerance') or o.get('atol')}"
    notes = verification.get("notes") or []
    return notes[0] if notes else ""


def recipe_verdict(path: Path, npz: Path | None, feeds: Feeds, tmp: Path) -> tuple[str, str]:
    """(status, why) of ``surgeon apply recipes/to_fp16.yaml`` on ``feeds``: verification.status of
    its JSON report. The activation run gets ``npz`` (the recipe's ``inputs:``), as ``surgeon_fp16``."""
    recipe = RECIPE
    if npz is not None:
        recipe = tmp / f"{path.stem}.to_fp16.yaml"
        recipe.write_text(RECIPE.read_text().replace("with: {keep_io_types: true}",
                                                     f"with: {{keep_io_types: true, inputs: {json.dumps(str(npz))}}}"))
    given, report = tmp / f"{path.stem}.feeds.npz", tmp / f"{path.stem}.report.json"
    np.savez(given, **feeds)
    report.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "surgeon", "apply", str(recipe), str(path), "-q",
                           "-o", str(tmp / f"{path.stem}.fp16.onnx"), "--inputs", str(given), "--report", str(report)],
                          env=env, capture_output=True, text=True)
    if not report.exists():
        return "error", (done.stderr.strip().splitlines() or ["no report"])[-1]
    data = json.loads(report.read_text())
    if data.get("verification") is None:
        return data.get("status", "error"), data.get("error", "")
    return data["verification"]["status"], why_not(data["verification"])


def plain_verdict(path: Path, fp16: bytes, feeds: Feeds) -> tuple[str, str]:
    """surgeon.verify of a float16 model against the float32 one at surgeon's float16 tolerance."""
    try:
        got = surgeon.verify(str(path), onnx.load_from_string(fp16), inputs=feeds,
                             correspondence=Correspondence(tolerance="fp16"))
    except Exception as exc:
        return "error", f"{type(exc).__name__}: {exc}"
    return got.status, why_not(got.to_dict())


def failed_cells(exc: Exception) -> list[str]:
    return [f"{'fails':>11}", f"{type(exc).__name__[:8]:>8}"]


def error_cells(model, want: list[np.ndarray] | None, feeds: Feeds, detector: bool) -> tuple[list[str], str]:
    """The abs/rel error cells of a float16 model against the float32 outputs ``want`` (none: the float32
    model cannot run), and its detector flips ("-" for other models); "fails" when onnxruntime cannot run it."""
    if want is None:
        return [f"{'-':>11}", f"{'-':>8}"], "-"
    try:
        got = run(model, feeds)
    except Exception as exc:
        return failed_cells(exc), "-"
    a, r = errors(want, got)
    return [f"{a:11.3g}", f"{r:8.2g}"], f"{flips(want, got):.3%}" if detector else "-"


def main(argv: list[str] | None = None) -> int:
    from util import fetch as fixtures
    from util import real_model_names

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="comma-separated fixture names (default: every one)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    names = args.models.split(",") if args.models else [n for n in real_model_names() if "/" not in n]
    rows: list[tuple[str, str, Callable[[int], Feeds] | None]] = []
    for name in names:
        rows.append((name, name, FEEDS.get(name)))
        rows += [(name, f"{name} ({label})", make) for model, label, make in EXTRA_ROWS if model == name]
    print(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}; errors against the float32 model; "
          f"flips@{THRESHOLD}: detector pixels whose text decision flips")
    print(f"{'model':48} {'surgeon abs':>11} {'rel':>8} {'occ abs':>11} {'rel':>8} {'flips s':>8} {'flips occ':>9} "
          f"{'kept fp32':>9} {'surgeon s':>9} {'occ s':>7} {'verify s':>12} {'verify occ':>12}")
    why: list[str] = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for name, label, make in rows:
            path, missing = fixtures.locate(name)
            if path is None:
                print(f"{label:48} missing: {missing}")
                continue
            if make is not None:
                feeds = make(0)
            else:
                specs = input_specs(path)
                feeds = sample_feeds(specs, resolve_dims(specs, batch=1), seed=0)
            try:
                want = run(str(path), feeds)
            except Exception:
                want = None  # a custom op onnxruntime cannot run: only surgeon's verdict (compared around it)
            npz = None
            if make is not None:  # surgeon's activation run gets the same kind of inputs (another seed)
                npz = tmp / f"{path.stem}.activations.npz"
                np.savez(npz, **make(1))
            detector = name == DETECTOR
            cells: list[str] = []
            flip = {"surgeon": "-", "occ": "-"}
            try:
                (ours, report), t_ours = timed(lambda path=path, npz=npz: surgeon_fp16(path, npz), args.repeat)
                kept = len(report.details.get("kept_for_values", []))
                ours_cells, flip["surgeon"] = error_cells(ours, want, feeds, detector)
                cells += ours_cells
            except Exception as exc:
                cells += failed_cells(exc)
                kept, t_ours = -1, float("nan")
            verdicts = [recipe_verdict(path, npz, feeds, tmp)]
            try:
                theirs, t_occ = timed(lambda path=path: occ_fp16(path), args.repeat)
            except Exception as exc:
                theirs, t_occ = None, float("nan")
                cells += failed_cells(exc)
                verdicts.append(("-", f"conversion raised {type(exc).__name__}"))
            if theirs is not None:
                theirs_cells, flip["occ"] = error_cells(theirs, want, feeds, detector)
                cells += theirs_cells
                verdicts.append(plain_verdict(path, theirs, feeds))
            for who, (status, reason) in zip(("surgeon", "onnxconverter-common"), verdicts):
                if status != "match" and reason:
                    why.append(f"{label}, {who}: {status}: {reason}")
            print(f"{label:48} {' '.join(cells)} {flip['surgeon']:>8} {flip['occ']:>9} {kept:9d} {t_ours:9.2f} "
                  f"{t_occ:7.2f} {verdicts[0][0]:>12} {verdicts[1][0]:>12}", flush=True)
    if why:
        print("\nverdicts other than match:")
        for line in why:
            print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
