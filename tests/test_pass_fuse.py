"""fuse: BatchNormalization/Mul/Add into Conv, MatMul+Add into Gemm, reshape and transpose chains."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper
import onnx.parser
import pytest
from onnx import TensorProto
from util import assert_same_outputs, random_inputs, real_model

import surgeon
from surgeon.errors import PassError
from surgeon.io.export import to_proto

RNG = np.random.default_rng(0)


def _init(name: str, shape: tuple[int, ...], low: float = -1.0, high: float = 1.0) -> onnx.TensorProto:
    return onnx.numpy_helper.from_array(RNG.uniform(low, high, shape).astype(np.float32), name)


def _model(nodes, inputs, outputs, inits, opset: int = 17) -> surgeon.Model:
    graph = oh.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    opsets = [oh.make_opsetid("", opset)]
    return surgeon.load(oh.make_model(graph, opset_imports=opsets, ir_version=oh.find_min_ir_version_for(opsets)))


def _vi(name: str, shape) -> onnx.ValueInfoProto:
    return oh.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _ops(model: surgeon.Model) -> list[str]:
    return [n.op for n in model.graph.nodes]


def _conv_chain(*tail: onnx.NodeProto, out: str = "y", bias: bool = True) -> surgeon.Model:
    inits = [_init("w", (4, 3, 3, 3)), _init("scale", (4,)), _init("bias", (4,)), _init("mean", (4,)),
             _init("var", (4,), 0.5, 2.0), _init("m", (4, 1, 1)), _init("a", (1, 4, 1, 1)), _init("s", ()),
             _init("row", (8,)), _init("rows", (8, 1))]
    if bias:
        inits.append(_init("b", (4,)))
    conv = oh.make_node("Conv", ["x", "w", "b"] if bias else ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1])
    return _model([conv, *tail], [_vi("x", ["N", 3, 8, 8])], [_vi(out, ["N", 4, 8, 8])], inits)


def test_conv_bn_folds_batchnorm_into_the_conv():
    model = _conv_chain(oh.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["y"],
                                     epsilon=1e-3))
    before = to_proto(model)
    report = surgeon.run_pass(model, "fuse")
    assert _ops(model) == ["Conv"]
    conv = model.graph.nodes[0]
    assert conv.name == "conv" and conv.outputs[0].name == "y"
    assert [t.name for t in conv.inputs] == ["x", "w_fused", "w_fused_bias"]
    assert report.details["fused"] == {"conv_bn": 1}
    assert report.notes == ["fused: conv_bn x1"]
    assert_same_outputs(before, model, random_inputs(before, {"N": 2}))


def test_conv_without_bias_gets_one():
    model = _conv_chain(oh.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["y"]),
                        bias=False)
    before = to_proto(model)
    surgeon.run_pass(model, "fuse", patterns=["conv_bn"])
    assert [t.name for t in model.graph.nodes[0].inputs] == ["x", "w_fused", "w_fused_bias"]
    assert_same_outputs(before, model, random_inputs(before, {"N": 2}))


def test_conv_mul_and_conv_add_fold_per_channel_constants():
    model = _conv_chain(oh.make_node("Mul", ["c", "m"], ["c1"]), oh.make_node("Add", ["a", "c1"], ["c2"]),
                        oh.make_node("Mul", ["s", "c2"], ["c3"]), oh.make_node("Sub", ["c3", "a"], ["y"]))
    before = to_proto(model)
    report = surgeon.run_pass(model, "fuse", patterns=["conv_mul", "conv_add"])
    assert _ops(model) == ["Conv"]
    assert report.details["fused"] == {"conv_mul": 2, "conv_add": 2}
    assert_same_outputs(before, model, random_inputs(before, {"N": 2}))


def test_bn_mul_and_bn_add_fold_into_the_batchnorm():
    bn = oh.make_node("BatchNormalization", ["r", "scale", "bias", "mean", "var"], ["n"])
    model = _conv_chain(oh.make_node("Relu", ["c"], ["r"]), bn, oh.make_node("Mul", ["n", "m"], ["n1"]),
                        oh.make_node("Add", ["n1", "a"], ["y"]))
    before = to_proto(model)
    surgeon.run_pass(model, "fuse", patterns=["bn_mul", "bn_add"])
    assert _ops(model) == ["Conv", "Relu", "BatchNormalization"]
    assert model.graph.nodes[2].outputs[0].name == "y"
    assert_same_outputs(before, model, random_inputs(before, {"N": 2}))


def test_conv_read_twice_or_non_channel_constants_are_not_fused():
    model = _conv_chain(oh.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["n"]),
                        oh.make_node("Add", ["n", "c"], ["y"]))
    before = to_proto(model).SerializeToString()
    surgeon.run_pass(model, "fuse")
    assert to_proto(model).SerializeToString() == before
    for const in ("row", "rows"):  # per column, per row: not per channel
        model = _conv_chain(oh.make_node("Mul", ["c", const], ["y"]))
        before = to_proto(model).SerializeToString()
        surgeon.run_pass(model, "fuse")
        assert to_proto(model).SerializeToString() == before


def test_matmul_add_becomes_gemm_for_2d_inputs_only():
    inits = [_init("B", (8, 5)), _init("C", (5,))]
    nodes = [oh.make_node("MatMul", ["a", "B"], ["p"], name="mm"), oh.make_node("Add", ["p", "C"], ["y"])]
    model = _model(nodes, [_vi("a", ["M", 8])], [_vi("y", ["M", 5])], inits)
    before = to_proto(model)
    surgeon.run_pass(model, "fuse", patterns=["matmul_add"])
    assert [(n.op, n.name, [t.name for t in n.inputs], n.outputs[0].name) for n in model.graph.nodes] == \
        [("Gemm", "mm", ["a", "B", "C"], "y")]
    assert_same_outputs(before, model, random_inputs(before, {"M": 3}))

    model = _model(nodes, [_vi("a", ["K", "M", 8])], [_vi("y", ["K", "M", 5])], inits)
    before = to_proto(model).SerializeToString()
    report = surgeon.run_pass(model, "fuse", patterns=["matmul_add_to_gemm"], allow_missing=True)
    assert to_proto(model).SerializeToString() == before
    assert report.notes == ["nothing to fuse"]


def test_listed_patterns_that_fuse_nothing_are_an_error():
    model = surgeon.load(real_model("tiny_yolo_legacy.onnx"))  # no BatchNormalization in it
    before = to_proto(model).SerializeToString()
    with pytest.raises(PassError) as exc:
        surgeon.run_pass(model, "fuse", patterns=["conv_bn"])
    assert str(exc.value) == ("error: no conv_bn pair found to fuse\n"
                              "  hint: the model may not have (or no longer have) these node pairs; "
                              "set allow_missing: true if the step may fuse nothing")
    with pytest.raises(PassError) as exc:
        surgeon.run_pass(model, "fuse", patterns=[])
    assert str(exc.value).startswith("error: 'patterns' is empty: the step would fuse nothing\n")
    assert to_proto(model).SerializeToString() == before


def test_reshape_and_transpose_chains_collapse():
    model = surgeon.load(onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
    agraph (float[2, 3, 4] x) => (float[6, 4] y, float[4, 3, 2] z, float[2, 3, 4] w)
        <int64[2] flat = {6, 4}, int64[1] axis = {0}> {
        u = Unsqueeze (x, axis)
        r = Reshape (u, flat)
        y = Relu (r)
        t1 = Transpose <perm = [1, 0, 2]> (x)
        t2 = Transpose <perm = [2, 0, 1]> (t1)
        z = Neg (t2)
        t3 = Transpose <perm = [1, 0, 2]> (t1)
        w = Relu (t3)
    }"""))
    before = to_proto(model)
    report = surgeon.run_pass(model, "fuse", patterns=["reshape_chain", "transpose_chain"])
    assert [(n.op, n.inputs[0].name, n.attrs.get("perm")) for n in model.graph.nodes] == [
        ("Reshape", "x", None), ("Relu", "r", None), ("Transpose", "x", [2, 1, 0]), ("Neg", "t2", None),
        ("Relu", "x", None)]
    assert report.details["fused"] == {"reshape_chain": 1, "transpose_chain": 2}
    assert_same_outputs(before, model)


def _recurrent_ocr(batch) -> onnx.ModelProto:
    """A CRNN-style text recognizer: Conv stack, a Reshape target computed from shapes
    (Shape/Gather/Mul/Unsqueeze/Concat), the Reshape, a Transpose to time-major and an LSTM."""
    ints = {name: onnx.numpy_helper.from_array(np.array(v, np.int64), name)
            for name, v in (("i0", 0), ("i1", 1), ("i2", 2), ("i3", 3), ("ax", [0]))}
    inits = [_init("w", (8, 3, 3, 3)), _init("b", (8,)), _init("W", (1, 16, 8)), _init("R", (1, 16, 4)),
             *ints.values()]
    nodes = [oh.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             oh.make_node("Relu", ["c"], ["r"]),
             oh.make_node("MaxPool", ["r"], ["p"], kernel_shape=[8, 1], strides=[8, 1]),  # [B, 8, 1, W]
             oh.make_node("Transpose", ["p"], ["pt"], perm=[0, 3, 1, 2]),  # [B, W, 8, 1]
             oh.make_node("Shape", ["pt"], ["s"]),
             *(oh.make_node("Gather", ["s", f"i{i}"], [f"g{i}"], axis=0) for i in range(4)),
             oh.make_node("Mul", ["g2", "g3"], ["ch"]),
             *(oh.make_node("Unsqueeze", [g, "ax"], [f"{g}u"]) for g in ("g0", "g1", "ch")),
             oh.make_node("Concat", ["g0u", "g1u", "chu"], ["target"], axis=0),
             oh.make_node("Reshape", ["pt", "target"], ["q"]),  # [B, W, 8]
             oh.make_node("Transpose", ["q"], ["t"], perm=[1, 0, 2]),  # [W, B, 8]
             oh.make_node("LSTM", ["t", "W", "R"], ["y"], hidden_size=4)]
    graph = oh.make_graph(nodes, "crnn", [_vi("x", [batch, 3, 8, "W"])], [_vi("y", ["W", 1, batch, 4])], inits)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)


def test_recurrent_ocr_shape_chain_and_transpose_reshape_pair_collapse():
    proto = _recurrent_ocr(1)
    model = surgeon.load(proto)
    report = surgeon.run_pass(model, "simplify")
    assert [(n.op, [t.name for t in n.inputs]) for n in model.graph.nodes] == [
        ("Conv", ["x", "w", "b"]), ("Relu", ["c"]), ("MaxPool", ["r"]), ("Transpose", ["p"]),
        ("Reshape", ["pt", "target_static_transposed"]), ("LSTM", ["t", "W", "R"])]
    # the shape chain became [1, 0, 8]; the Transpose moved the size-1 batch axis, so the copy became -1
    assert model.graph.nodes[4].inputs[1].values.tolist() == [-1, 1, 8]
    assert model.graph.nodes[4].outputs[0].name == "t"
    assert report.details["fused"] == {"transpose_reshape": 1}
    assert_same_outputs(proto, model, random_inputs(proto, {"W": 5}))


def test_recurrent_ocr_with_a_dynamic_batch_keeps_its_transpose():
    # the batch axis is not known to be 1: the Transpose may move data, the pair stays
    proto = _recurrent_ocr("B")
    model = surgeon.load(proto)
    report = surgeon.run_pass(model, "simplify")
    assert [n.op for n in model.graph.nodes] == ["Conv", "Relu", "MaxPool", "Transpose", "Reshape", "Transpose",
                                                 "LSTM"]
    assert model.graph.nodes[4].inputs[1].values.tolist() == [0, 0, 8]
    assert "transpose_reshape" not in report.details["fused"]
    assert_same_outputs(proto, model, random_inputs(proto, {"B": 2, "W": 5}))


def test_transpose_of_size_one_axes_before_a_reshape_is_skipped():
    model = surgeon.load(onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
    agraph (float[2, 1, 3] x) => (float[6] y, float[3, 1, 2] z) <int64[1] flat = {6}> {
        t = Transpose <perm = [1, 0, 2]> (x)
        y = Reshape (t, flat)
        u = Transpose <perm = [2, 1, 0]> (x)
        z = Reshape (u, flat)
    }"""))
    before = to_proto(model)
    report = surgeon.run_pass(model, "fuse", patterns=["transpose_reshape"])
    assert [(n.op, n.inputs[0].name) for n in model.graph.nodes] == [
        ("Reshape", "x"), ("Transpose", "x"), ("Reshape", "u")]  # perm [2, 1, 0] moves data: kept
    assert report.details["fused"] == {"transpose_reshape": 1}
    assert_same_outputs(before, model)


def test_transpose_reshape_refuses_copies_it_cannot_keep():
    model = surgeon.load(onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
    agraph (float[N, 1, 3] x, float[N, 1, 3] x2) => (float[N, 3] y, float[1, N, 3] z)
        <int64[2] copy = {0, 3}, int64[3] both = {0, -1, 1}> {
        t = Transpose <perm = [1, 0, 2]> (x)
        y = Reshape (t, copy)
        r = Reshape (x2, both)
        z = Transpose <perm = [2, 0, 1]> (r)
    }"""))
    before = to_proto(model).SerializeToString()
    with pytest.raises(PassError):
        surgeon.run_pass(model, "fuse", patterns=["transpose_reshape"])
    assert to_proto(model).SerializeToString() == before


def test_unknown_pattern_is_an_error_with_suggestions():
    model = _conv_chain(oh.make_node("Relu", ["c"], ["y"]))
    with pytest.raises(PassError) as exc:
        surgeon.run_pass(model, "fuse", patterns=["conv_bn", "matmul_ad"])
    assert str(exc.value) == "error: unknown fusion pattern 'matmul_ad'\n  hint: did you mean 'matmul_add'?"
    with pytest.raises(PassError) as exc:
        surgeon.run_pass(model, "fuse", patterns=["zzz"])
    assert str(exc.value) == (
        "error: unknown fusion pattern 'zzz'\n  hint: known patterns: conv_bn, conv_mul, conv_add, bn_mul, "
        "bn_add, matmul_add, reshape_chain, transpose_chain, transpose_reshape")


def test_fusion_inside_an_if_branch():
    w, b = _init("w", (4, 3, 1, 1)), [_init(n, (4,), 0.5, 2.0) for n in ("scale", "bias", "mean", "var")]
    then_branch = oh.make_graph(
        [oh.make_node("Conv", ["x", "w"], ["c"]),
         oh.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["t"])],
        "then", [], [_vi("t", [1, 4, 2, 2])], initializer=[w, *b])
    else_branch = oh.make_graph([oh.make_node("Neg", ["x"], ["e"])], "else", [], [_vi("e", [1, 3, 2, 2])])
    node = oh.make_node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch)
    model = _model([node], [oh.make_tensor_value_info("cond", TensorProto.BOOL, []), _vi("x", [1, 3, 2, 2])],
                   [_vi("y", None)], [])
    before = to_proto(model)
    surgeon.run_pass(model, "fuse")
    assert [n.op for n in model.graph.nodes[0].attrs["then_branch"].nodes] == ["Conv"]
    x = RNG.standard_normal((1, 3, 2, 2)).astype(np.float32)
    assert_same_outputs(before, model, {"cond": np.array(True), "x": x})


def test_docstring_example_runs_on_a_real_model(tmp_path):
    path = real_model("model_keepbn.onnx")
    model = surgeon.load(path)
    recipe = surgeon.parse_recipe(surgeon.registry.get("fuse").example())
    result = surgeon.apply(recipe, model)
    assert "BatchNormalization" not in _ops(model)
    assert result.steps[0].details["fused"] == {"conv_bn": 2}
    surgeon.save(model, tmp_path / "m.onnx")
    assert_same_outputs(path, tmp_path / "m.onnx", random_inputs(path, {"N": 2}))


@pytest.mark.parametrize("name", ["light_densenet121.onnx", "polygraphy/residual_block.onnx",
                                  "ctrlflow_script_legacy.onnx"])
def test_real_models_stay_equal(name, tmp_path):
    path = real_model(name)
    model = surgeon.load(path)
    if name.startswith("light"):
        surgeon.run_pass(model, "fold_constants")  # its weights are ConstantOfShape outputs
    surgeon.run_pass(model, "fuse")
    out = tmp_path / path.name
    surgeon.save(model, out)
    assert_same_outputs(path, out, random_inputs(path))
