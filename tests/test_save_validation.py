"""save(): the checker fails only what the edit introduced; the input's own findings are warnings."""

from __future__ import annotations

import glob
import os

import onnx
import onnx_graphsurgeon as gs
import pytest
from util import POLYGRAPHY, real_model

import surgeon
from surgeon.errors import ExportError


def _polygraphy_models():
    return sorted(p for p in glob.glob(str(POLYGRAPHY / "*.onnx")) if not p.endswith("ext_weights.onnx"))


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
    model = surgeon.load(real_model("model.onnx"))
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
    assert str(exc.value).startswith("error: the edited model fails the ONNX checker: an unnamed Relu node: ")
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


def _plugin_model_with_external_weights(folder):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).random((64, 64), dtype=np.float32), "W")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm"),
         helper.make_node("FooPlugin_TRT", ["y"], ["z"], name="plug"),
         helper.make_node("Identity", ["z"], ["out"], name="id")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 64])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(m, folder / "p.onnx", save_as_external_data=True, location="p.onnx.data", size_threshold=0)
    return folder / "p.onnx"


def test_plugin_ops_with_external_weights_save(tmp_path):
    src = _plugin_model_with_external_weights(tmp_path)
    model = surgeon.load(src)
    surgeon.run_pass(model, "cleanup")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = surgeon.save(model, out_dir / "p.onnx")
    assert result.warnings == [] and result.data_path == out_dir / "p.onnx.data"
    assert sorted(p.name for p in out_dir.iterdir()) == ["p.onnx", "p.onnx.data"]


def test_in_place_save_keeps_the_model_reading_the_right_weights(tmp_path):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    b = numpy_helper.from_array(rng.random((8,), dtype=np.float32), "B")
    w = numpy_helper.from_array(rng.random((8, 8), dtype=np.float32), "W")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("Add", ["m", "B"], ["y"])],
                          "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [b, w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "m.onnx",
              save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    from util import run

    feeds = {"x": np.ones((1, 8), np.float32)}
    expected = run(tmp_path / "m.onnx", feeds)["y"]
    model = surgeon.load(tmp_path / "m.onnx")
    surgeon.save(model, tmp_path / "m.onnx", in_place=True)  # offsets change: the data file is re-aligned
    surgeon.save(model, tmp_path / "copy.onnx")  # reads its weights again, from the rewritten file
    assert np.array_equal(run(tmp_path / "m.onnx", feeds)["y"], expected)
    assert np.array_equal(run(tmp_path / "copy.onnx", feeds)["y"], expected)


def test_unwritable_output_folder_is_a_user_error(tmp_path, monkeypatch):
    import io
    import tempfile

    from util import FIXTURES, RECIPES

    from surgeon.cli import main

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    err = io.StringIO()
    code = main(["apply", str(RECIPES / "strip_fooop.yaml"), str(FIXTURES / "model_foo.onnx"),
                 "-o", str(tmp_path / "out.onnx")], err=err)
    assert code == 1
    assert err.getvalue() == (f"error: cannot write {tmp_path / 'out.onnx'}: Permission denied in {tmp_path}\n"
                              "  hint: write to a folder you can write to, with -o\n")
