"""Shared test helpers: the real models the repository carries or fetches, and running models in onnxruntime."""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from surgeon.graph.constants import np_dtype_of_ort

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
MODELS = FIXTURES / "models"  # real models, committed (fixtures/README.md: origin, license, sha256)
POLYGRAPHY = FIXTURES / "polygraphy"  # Polygraphy's test models, committed; named "polygraphy/<file>"
RECIPES = ROOT / "recipes"


def _load_fetch():
    spec = importlib.util.spec_from_file_location("surgeon_fixtures_fetch", FIXTURES / "fetch.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# fixtures/fetch.py knows where every real model is: committed, fetched into a cache, or in the onnx package.
fetch = _load_fetch()


@functools.cache
def locate_real_model(name: str) -> tuple[Path | None, str]:
    """(path, "") or (None, why it is missing and how to get it); see fixtures/fetch.py ``locate``."""
    return fetch.locate(name)


def real_model(name: str) -> Path:
    """Path of a real model: a file name in fixtures/models, ``polygraphy/<path>``, a fetched model or
    one the onnx package ships. Skips the test, saying how to get it, when it is missing; with
    SURGEON_REQUIRE_FIXTURES=1 (as .ci/run sets it) a missing model fails the test instead."""
    path, why = locate_real_model(name)
    if path is None:
        if os.environ.get("SURGEON_REQUIRE_FIXTURES", "") not in ("", "0"):
            pytest.fail(why + " (SURGEON_REQUIRE_FIXTURES is set)", pytrace=False)
        pytest.skip(why)
    return path


def real_model_names(subfolders: bool = False) -> list[str]:
    """Every real model's name, present or not (fixtures/fetch.py ``names``)."""
    return fetch.names(subfolders)


# The seed's placeholder inside a module exported as a local function (ONNX text format).
FOOOP_IN_LOCAL_FUNCTION = """
<ir_version: 8, opset_import: ["" : 17, "devtech" : 1, "local" : 1]>
g (float[N, 4] x) => (float[N, 4] y) {
    y = local.Block (x)
}
<domain: "local", opset_import: ["" : 17, "devtech" : 1]>
Block (a) => (b) {
    r = Relu (a)
    f = devtech.FooOp (r)
    b = Sigmoid (f)
}
"""


def as_bytes(model: Any) -> bytes:
    """Serialized model from a surgeon.Model, a ModelProto or a path."""
    from surgeon import Model
    from surgeon.io.export import to_proto

    if isinstance(model, Model):
        if model.has_external_data:
            raise ValueError("save models with external data to a file and pass the path")
        return to_proto(model).SerializeToString()
    if isinstance(model, onnx.ModelProto):
        return model.SerializeToString()
    return Path(model).read_bytes()


def session(model: Any) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if isinstance(model, (str, Path)):
        return ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    return ort.InferenceSession(as_bytes(model), opts, providers=["CPUExecutionProvider"])


def random_inputs(model: Any, dims: dict[str, int] | None = None, seed: int = 0,
                  default_dim: int = 2) -> dict[str, np.ndarray]:
    """Seeded random feeds for every input; symbolic dims from ``dims`` (else ``default_dim``)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in session(model).get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else (dims or {}).get(d, default_dim) for d in inp.shape]
        dtype = np_dtype_of_ort(inp.type)
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[inp.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feeds[inp.name] = rng.integers(0, 4, shape).astype(dtype)
    return feeds


def silero_inputs(batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Meaningful feeds for silero_vad*.onnx: 512 samples of audio at 16 kHz and a zero state."""
    rng = np.random.default_rng(seed)
    return {"input": rng.uniform(-0.5, 0.5, (batch, 512)).astype(np.float32),
            "state": np.zeros((2, batch, 128), np.float32), "sr": np.array(16000, np.int64)}


def ocr_inputs(batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Feeds for ch_PP-OCRv4_rec_infer.onnx: a 48x320 text-line image."""
    return {"x": np.random.default_rng(seed).uniform(0, 1, (batch, 3, 48, 320)).astype(np.float32)}


def ocr_det_inputs(batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Feeds for ch_PP-OCRv4_det_infer.onnx: a normalized 640x640 image (its preprocessing gives about -2..2)."""
    return {"x": np.random.default_rng(seed).uniform(-2, 2, (batch, 3, 640, 640)).astype(np.float32)}


def ocr_page_inputs(seed: int = 0, size: int = 640) -> dict[str, np.ndarray]:
    """Feeds for ch_PP-OCRv4_det_infer.onnx that hold text: a light page with lines of dark glyph-sized
    strokes, normalized as PaddleOCR does (mean 0.485/0.456/0.406, std 0.229/0.224/0.225). The detector
    marks about 11 % of its pixels as text, where random inputs give none."""
    rng = np.random.default_rng(seed)
    page = np.full((size, size), 235.0) + rng.normal(0, 6, (size, size))
    y = 30
    while y + 30 < size:
        height, x, end = int(rng.integers(14, 28)), int(rng.integers(10, 60)), int(rng.integers(size // 2, size - 10))
        while x + height < end:
            width = int(height * rng.uniform(0.5, 0.9))
            dots = rng.random((height, width)) < 0.35
            strokes = dots | np.roll(dots, 1, 0) | np.roll(dots, 1, 1)
            page[y:y + height, x:x + width][strokes] = rng.uniform(10, 60)
            x += width + int(rng.integers(2, 6)) + (height if rng.random() < 0.15 else 0)  # glyphs, then a space
        y += height + int(rng.integers(12, 30))
    rgb = np.stack([page] * 3, -1).clip(0, 255) / 255.0
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    return {"x": ((rgb - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)}


def run(model: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = session(model)
    names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    return dict(zip(names, sess.run(names, {k: v for k, v in feeds.items() if k in wanted})))


def tolerance(dtype: np.dtype) -> tuple[float, float]:
    """(rtol, atol) per dtype: exact for integers, loose for half precision."""
    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        return 0.0, 0.0
    if dtype == np.float16:
        return 1e-2, 1e-2
    if dtype == np.float64:
        return 1e-9, 1e-12
    return 1e-4, 1e-5


def assert_same_outputs(before: Any, after: Any, feeds: dict[str, np.ndarray] | None = None,
                        renamed: dict[str, str] | None = None, exact: bool = False) -> None:
    """Every output of ``before`` equals the output of ``after`` with the same (or renamed) name."""
    feeds = feeds if feeds is not None else random_inputs(before)
    a, b = run(before, feeds), run(after, feeds)
    renamed = renamed or {}
    assert a, "the reference model has no outputs"
    for name, expected in a.items():
        got = b[renamed.get(name, name)]
        assert got.shape == expected.shape, f"{name}: shape {got.shape} != {expected.shape}"
        if exact:
            assert np.array_equal(got, expected), f"{name}: not bit-identical"
        else:
            rtol, atol = tolerance(expected.dtype)
            np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg=name)


def call(model: Any, pass_name: str, /, **params: Any) -> Any:
    """Run a pass directly (its own PassError, no step wrapping)."""
    import surgeon

    return surgeon.registry.get(pass_name).call(model, params)


def error_of(model: Any, pass_name: str, /, **params: Any) -> str:
    """The full error text of a failing pass; asserts the failed pass left the model unchanged."""
    from surgeon.errors import PassError
    from surgeon.io.export import to_proto

    before = to_proto(model).SerializeToString()
    with pytest.raises(PassError) as excinfo:
        call(model, pass_name, **params)
    assert to_proto(model).SerializeToString() == before, "a failed pass changed the model"
    return str(excinfo.value)
