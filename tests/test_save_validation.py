"""save(): the checker fails only what the edit introduced; the input's own findings are warnings."""

from __future__ import annotations

import glob
import os

import onnx
import onnx_graphsurgeon as gs
import pytest

import surgeon
from surgeon.errors import ExportError
from util import POLYGRAPHY, SHARED, shared_model


def _polygraphy_models():
    return sorted(p for p in glob.glob(str(POLYGRAPHY / "*.onnx")) if not p.endswith("ext_weights.onnx"))


@pytest.mark.skipif(not SHARED.exists(), reason="../shared is not beside the repository")
@pytest.mark.parametrize("path", _polygraphy_models(), ids=os.path.basename)
def test_models_that_already_fail_the_checker_still_save(tmp_path, path):
    result = surgeon.save(surgeon.load(path), tmp_path / "out.onnx")
    assert (tmp_path / "out.onnx").read_bytes() == open(path, "rb").read()
    try:
        onnx.checker.check_model(path, full_check=True)
        input_ok = True
    except Exception:
        input_ok = False
    if input_ok:
        assert result.warnings == []
    elif os.path.basename(path) != "capability.onnx":  # its only finding is a plugin op, which we accept
        assert len(result.warnings) == 1
        assert result.warnings[0].startswith("the ONNX checker rejects the model, as it already rejected the input:")


def test_an_error_the_edit_introduced_fails_and_writes_nothing(tmp_path):
    model = surgeon.load(shared_model("model.onnx"))
    relu = next(n for n in model.graph.nodes if n.op == "Relu")
    relu.inputs[0] = gs.Variable("nobody_makes_this", dtype="float32")
    with pytest.raises(ExportError) as exc:
        surgeon.save(model, tmp_path / "out.onnx")
    message = str(exc.value)
    assert message.startswith("error: the edited model fails the ONNX checker: ")
    assert "nobody_makes_this" in message
    assert message.endswith("  hint: the recipe introduced this (the input model passed the checker); "
                            "check the steps that touched the names above")
    assert list(tmp_path.iterdir()) == []


def test_plugin_ops_are_accepted_but_everything_else_is_checked(tmp_path):
    model = surgeon.load(onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 100, 4] boxes, float[1, 100, 80] scores) => (int32[1, 1] num) {
            num = EfficientNMS_TRT <score_threshold: float = 0.25, plugin_version: string = "1"> (boxes, scores)
        }"""))
    result = surgeon.save(model, tmp_path / "trt.onnx")
    assert result.warnings == []
    assert onnx.load(tmp_path / "trt.onnx").graph.node[0].domain == ""  # written as TensorRT expects

    bad = surgeon.load(tmp_path / "trt.onnx")
    bad.graph.nodes.append(gs.Node("Relu", inputs=[gs.Variable("ghost", dtype="float32")],
                                   outputs=[gs.Variable("r", dtype="float32")]))
    bad.graph.outputs.append(bad.graph.nodes[-1].outputs[0])
    with pytest.raises(ExportError):
        surgeon.save(bad, tmp_path / "bad.onnx")


NO_OUTPUT_SHAPE = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[4] x) => (float y) {
        y = Relu (x)
    }"""


def test_a_finding_the_input_had_does_not_hide_a_new_one(tmp_path):
    """The checker stops at its first finding; the input's own (a missing output shape)
    must not mask a node the recipe broke."""
    src = tmp_path / "noshape.onnx"
    proto = onnx.parser.parse_model(NO_OUTPUT_SHAPE)
    proto.graph.output[0].type.tensor_type.ClearField("shape")
    onnx.save(proto, src)
    model = surgeon.load(src)
    relu = model.graph.nodes[0]
    relu.inputs.append(relu.inputs[0])  # Relu takes one input
    with pytest.raises(ExportError) as exc:
        surgeon.save(model, tmp_path / "out.onnx")
    assert str(exc.value).startswith("error: the edited model fails the ONNX checker: node '' (Relu): ")
    assert not (tmp_path / "out.onnx").exists()
    # Unchanged, the same model saves with the input's finding as a warning.
    result = surgeon.save(surgeon.load(src), tmp_path / "same.onnx")
    assert result.warnings[0].startswith("the ONNX checker rejects the model, as it already rejected the input")


def test_checking_writes_nothing_beside_the_input(tmp_path, monkeypatch):
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 100, 4] boxes, float[1, 100, 80] scores) => (int32 num) {
            num = EfficientNMS_TRT <plugin_version: string = "1"> (boxes, scores)
        }""")
    proto.graph.output[0].type.tensor_type.ClearField("shape")  # a finding the input has
    onnx.save(proto, src_dir / "plug.onnx")
    before = sorted(p.name for p in src_dir.iterdir())
    written = []
    real_write = type(src_dir).write_bytes
    monkeypatch.setattr(type(src_dir), "write_bytes", lambda self, data: written.append(self) or real_write(self, data))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = surgeon.save(surgeon.load(src_dir / "plug.onnx"), out_dir / "plug.onnx")
    assert len(result.warnings) == 1
    assert not any(src_dir in p.parents for p in written)
    assert sorted(p.name for p in src_dir.iterdir()) == before
