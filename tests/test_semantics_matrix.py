"""Every pass that must preserve semantics, on every real model that onnxruntime can run.

The pass tests check each pass closely on chosen models; this matrix runs the
parameter-free ones over every real model in fixtures/ (and the fetched ones),
so a pass that breaks a model nobody thought of fails here. Outputs are
compared in onnxruntime on seeded inputs with per-dtype tolerances.
"""

from __future__ import annotations

import os

import pytest
from util import (
    assert_same_outputs,
    locate_real_model,
    ocr_inputs,
    random_inputs,
    real_model,
    real_model_names,
    session,
    silero_inputs,
)

import surgeon

PASSES = ["cleanup", "toposort", "infer_shapes", "eliminate_noops", "fuse", "dedupe_initializers",
          "fold_constants", "simplify"]

SPECIAL_FEEDS = {"silero_vad.onnx": silero_inputs, "silero_vad_16k_op15.onnx": silero_inputs,
                 "ch_PP-OCRv4_rec_infer.onnx": ocr_inputs}


def _runnable_models():
    found = []
    for name in real_model_names():
        path, _ = locate_real_model(name)
        if path is not None:  # a model not fetched yet is kept: the test skips, saying how to fetch it
            try:
                session(path)
            except Exception:  # custom ops (FooOp), weightless or bad_graph test models: nothing to compare
                continue
        found.append(name)
    return found


MODELS_TO_RUN = _runnable_models()


def _feeds(path):
    name = os.path.basename(path)
    if name in SPECIAL_FEEDS:
        return SPECIAL_FEEDS[name]()
    return random_inputs(path, dims={}, default_dim=2)


@pytest.mark.parametrize("name", MODELS_TO_RUN)
def test_semantics_preserving_passes(name):
    path = real_model(name)
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
