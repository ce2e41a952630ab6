"""Every pass that must preserve semantics, on every real model that onnxruntime can run.

The pass tests check each pass closely on chosen models; this matrix runs the
parameter-free ones over all of ../shared/models and Polygraphy's test models,
so a pass that breaks a model nobody thought of fails here. Outputs are
compared in onnxruntime on seeded inputs with per-dtype tolerances.
"""

from __future__ import annotations

import glob
import os

import pytest

import surgeon
from util import MODELS, POLYGRAPHY, SHARED, assert_same_outputs, ocr_inputs, random_inputs, session, silero_inputs

PASSES = ["cleanup", "toposort", "infer_shapes", "eliminate_noops", "fuse", "dedupe_initializers",
          "fold_constants", "simplify"]

SPECIAL_FEEDS = {"silero_vad.onnx": silero_inputs, "silero_vad_16k_op15.onnx": silero_inputs,
                 "ch_PP-OCRv4_rec_infer.onnx": ocr_inputs}


def _runnable_models():
    paths = sorted(glob.glob(str(MODELS / "*.onnx")) + glob.glob(str(POLYGRAPHY / "*.onnx")))
    found = []
    for path in paths:
        try:
            session(path)
        except Exception:  # custom ops (FooOp), weightless or bad_graph test models: nothing to compare
            continue
        found.append(path)
    return found


MODELS_TO_RUN = _runnable_models() if SHARED.exists() else []


def _feeds(path):
    name = os.path.basename(path)
    if name in SPECIAL_FEEDS:
        return SPECIAL_FEEDS[name]()
    return random_inputs(path, dims={}, default_dim=2)


@pytest.mark.skipif(not SHARED.exists(), reason="../shared is not beside the repository")
@pytest.mark.parametrize("path", MODELS_TO_RUN, ids=lambda p: os.path.relpath(p, SHARED))
def test_semantics_preserving_passes(path):
    feeds = _feeds(path)
    try:
        session(path).run(None, feeds)
    except Exception as exc:  # Polygraphy's models with inconsistent declared shapes, RoiAlign on random boxes
        pytest.skip(f"the original does not run on generated inputs: {str(exc)[:120]}")
    failures = []
    for name in PASSES:
        model = surgeon.load(path)
        try:
            surgeon.run_pass(model, name)
            assert_same_outputs(path, model, feeds)
        except Exception as exc:  # refusals, crashes and mismatches alike: collect every pass's failure
            failures.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    assert not failures, "\n".join(failures)
