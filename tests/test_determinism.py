"""Same input + recipe -> byte-identical output; a cleanup recipe run twice changes nothing."""

from __future__ import annotations

import io
import shutil

import pytest
from util import FIXTURES, RECIPES, real_model

from surgeon.cli import main


def _apply(recipe, model, out, *extra):
    stdout = io.StringIO()
    assert main(["apply", str(recipe), str(model), "-o", str(out), *extra], out=stdout, err=stdout) == 0, \
        stdout.getvalue()
    return stdout.getvalue()


@pytest.mark.parametrize("model", [FIXTURES / "model_foo.onnx", "model_foo_dynamo.onnx"])
def test_byte_identical_output(tmp_path, model):
    model = model if not isinstance(model, str) else real_model(model)
    src = tmp_path / "in.onnx"
    shutil.copy(model, src)
    _apply(RECIPES / "strip_fooop.yaml", src, tmp_path / "a.onnx")
    _apply(RECIPES / "strip_fooop.yaml", src, tmp_path / "b.onnx")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


@pytest.mark.parametrize("name", ["model_foo.onnx", "silero_vad.onnx", "tiny_yolo_dynamo.onnx"])
def test_cleanup_is_idempotent(tmp_path, name):
    recipe = tmp_path / "tidy.yaml"
    recipe.write_text("version: 1\nsteps:\n  - pass: cleanup\n  - pass: toposort\n")
    model = FIXTURES / name if name == "model_foo.onnx" else real_model(name)
    _apply(recipe, model, tmp_path / "once.onnx", "--no-provenance")
    text = _apply(recipe, tmp_path / "once.onnx", tmp_path / "twice.onnx", "--no-provenance")
    assert "  step 1 (cleanup): no change\n  step 2 (toposort): no change\n" in text
    assert (tmp_path / "once.onnx").read_bytes() == (tmp_path / "twice.onnx").read_bytes()
