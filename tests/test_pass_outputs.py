"""set_outputs, add_outputs and extract: the model computes exactly the chosen tensors, with the same values."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from util import RECIPES, call, error_of, random_inputs, real_model, run

import surgeon
from surgeon.io.export import to_proto


def reference(path, names: list[str], feeds) -> dict[str, np.ndarray]:
    """Values of any tensors of the original model, exposed by hand as extra outputs."""
    proto = onnx.shape_inference.infer_shapes(onnx.load(path))
    del proto.graph.output[:]
    proto.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    return run(proto, feeds)


def assert_values(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for name in want:
        assert np.array_equal(got[name], want[name]), name


def node_names(proto: onnx.ModelProto) -> list[str]:
    return [n.name for n in proto.graph.node]


def type_of(vi: onnx.ValueInfoProto) -> tuple:
    t = vi.type.tensor_type
    return t.elem_type, [d.dim_param or d.dim_value for d in t.shape.dim]


# -- set_outputs -------------------------------------------------------------------


def test_set_outputs_on_an_intermediate_tensor_keeps_a_minimal_model():
    path = real_model("tiny_yolo_legacy.onnx")
    model = surgeon.load(path)
    result = surgeon.run_pass(model, "set_outputs", outputs=["/p4/p4.2/Mul_output_0"])
    out = to_proto(model)
    assert node_names(out) == [
        "/stem/stem.0/stem.0.0/Conv", "/stem/stem.0/stem.0.2/Sigmoid", "/stem/stem.0/stem.0.2/Mul",
        "/stem/stem.1/stem.1.0/Conv", "/stem/stem.1/stem.1.2/Sigmoid", "/stem/stem.1/stem.1.2/Mul",
        "/p3/p3.0/Conv", "/p3/p3.2/Sigmoid", "/p3/p3.2/Mul", "/p4/p4.0/Conv", "/p4/p4.2/Sigmoid", "/p4/p4.2/Mul"]
    assert [i.name for i in out.graph.initializer] == [
        "onnx::Conv_352", "onnx::Conv_353", "onnx::Conv_355", "onnx::Conv_356", "onnx::Conv_358",
        "onnx::Conv_359", "onnx::Conv_361", "onnx::Conv_362"]
    # the model declares no intermediate types: dtype and shape come from shape inference
    assert type_of(out.graph.output[0]) == (onnx.TensorProto.FLOAT, ["N", 128, 20, 20])
    assert result.details == {"outputs": ["/p4/p4.2/Mul_output_0"], "dropped": ["boxes", "scores"]}
    assert result.changed
    feeds = random_inputs(path)
    assert_values(run(out, feeds), reference(path, ["/p4/p4.2/Mul_output_0"], feeds))


def test_set_outputs_keeps_inputs_and_can_leave_cleanup_for_later():
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x, float[2] w) => (float[2] y) { a = Relu(x)  b = Neg(a)  y = Mul(b, w) }""")
    model = surgeon.load(proto)
    call(model, "set_outputs", outputs=["a"], cleanup=False)
    out = to_proto(model)
    assert [n.op_type for n in out.graph.node] == ["Relu", "Neg", "Mul"]
    call(model, "set_outputs", outputs=["a", "x"])
    out = to_proto(model)
    assert [n.op_type for n in out.graph.node] == ["Relu"]
    assert [i.name for i in out.graph.input] == ["x", "w"]
    assert [(o.name, type_of(o)) for o in out.graph.output] == [("a", (1, [2])), ("x", (1, [2]))]


def test_set_outputs_to_the_current_outputs_changes_nothing():
    model = surgeon.load(real_model("model.onnx"))
    before = to_proto(model).SerializeToString()
    result = surgeon.run_pass(model, "set_outputs", outputs=["output"])
    assert result.changed is False
    assert to_proto(model).SerializeToString() == before


def test_set_outputs_with_subgraphs():
    path = real_model("ctrlflow_script_legacy.onnx")
    model = surgeon.load(path)
    call(model, "set_outputs", outputs=["/If_output_0"])
    out = to_proto(model)
    assert [n.op_type for n in out.graph.node] == ["ReduceSum", "Constant", "Greater", "Cast", "If"]
    assert [i.name for i in out.graph.input] == ["x", "n"]
    assert type_of(out.graph.output[0]) == (onnx.TensorProto.FLOAT, ["N", 8])
    for sign in (1, -1):  # both branches
        feeds = {"x": sign * np.abs(np.random.default_rng(0).standard_normal((3, 8))).astype(np.float32),
                 "n": np.array(2, np.int64)}
        assert_values(run(out, feeds), reference(path, ["/If_output_0"], feeds))


def test_set_outputs_errors():
    model = surgeon.load(real_model("ctrlflow_script_legacy.onnx"))
    assert error_of(model, "set_outputs", outputs=["/If_output"]) == (
        "error: no tensor named '/If_output' in the main graph\n"
        "  hint: did you mean '/If_output_0', '/Cast_output_0'?")
    assert error_of(model, "set_outputs", outputs=["/Mul_output_0"]) == (
        "error: tensor '/Mul_output_0' is not in the main graph (output of node '/Mul' (Mul) in the "
        "then_branch of node '/If')\n"
        "  hint: tensors local to an If/Loop/Scan body cannot become graph inputs or outputs; "
        "choose the output of the node that owns the body")
    assert error_of(model, "set_outputs", outputs=["y", "y"]) == (
        "error: 'y' is listed twice in outputs\n"
        "  hint: list each tensor once")
    assert error_of(model, "set_outputs", outputs=[]) == (
        "error: no outputs given\n"
        "  hint: list at least one tensor name under outputs")


def test_an_output_of_unknown_dtype_is_refused():
    model = surgeon.load(onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17, "devtech" : 1]>
        g (float[2] x) => (float[2] y) { a = devtech.FooOp(x)  b = Relu(a)  y = Neg(b) }"""))
    assert error_of(model, "set_outputs", outputs=["b"]) == (
        "error: the dtype of 'b' is unknown: the model does not declare it and ONNX shape inference "
        "cannot infer it\n"
        "  hint: the tensor may be computed by a custom op; set its type first (e.g. with a set_shapes step) "
        "or choose a tensor before the custom op")


# -- add_outputs -------------------------------------------------------------------


def test_add_outputs_on_a_transformer():
    path = real_model("transformer_encoder_dynamo.onnx")
    model = surgeon.load(path)
    nodes_before = node_names(to_proto(model))
    result = surgeon.run_pass(model, "add_outputs", outputs=["layer_norm_1", "src"])
    out = to_proto(model)
    assert node_names(out) == nodes_before
    assert [o.name for o in out.graph.output] == ["memory", "layer_norm_1", "src"]
    assert type_of(out.graph.output[1]) == (onnx.TensorProto.FLOAT, ["batch", "seq", 256])
    assert result.details == {"added": ["layer_norm_1", "src"]} and result.changed
    feeds = random_inputs(path, {"batch": 2, "seq": 5})
    assert_values(run(out, feeds), reference(path, ["memory", "layer_norm_1", "src"], feeds))


def test_add_outputs_infers_types_in_a_legacy_model_with_subgraphs():
    path = real_model("ctrlflow_script_legacy.onnx")
    model = surgeon.load(path)
    call(model, "add_outputs", outputs=["/If_output_0", "/Cast_output_0"])
    out = to_proto(model)
    assert [(o.name, type_of(o)) for o in out.graph.output] == [
        ("y", (onnx.TensorProto.FLOAT, ["N", "Loopy_dim_1"])),
        ("/If_output_0", (onnx.TensorProto.FLOAT, ["N", 8])),
        ("/Cast_output_0", (onnx.TensorProto.BOOL, []))]
    feeds = {"x": np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32), "n": np.array(3, np.int64)}
    assert_values(run(out, feeds), reference(path, ["y", "/If_output_0", "/Cast_output_0"], feeds))


def test_add_outputs_twice_changes_nothing_the_second_time():
    model = surgeon.load(real_model("model.onnx"))
    call(model, "add_outputs", outputs=["/block1/block1.2/Relu_output_0"])
    before = to_proto(model).SerializeToString()
    result = surgeon.run_pass(model, "add_outputs", outputs=["/block1/block1.2/Relu_output_0", "output"])
    assert result.notes == ["already graph output(s), left in place: '/block1/block1.2/Relu_output_0', 'output'"]
    assert result.details == {"added": []} and not result.changed
    assert to_proto(model).SerializeToString() == before


# -- extract -----------------------------------------------------------------------


@pytest.mark.parametrize("name, inputs, outputs", [
    ("tiny_yolo_legacy.onnx", ["/p3/p3.2/Mul_output_0"], ["/Concat_6_output_0", "/Sigmoid_output_0"]),
    ("transformer_encoder_dynamo.onnx", ["src"], ["layer_norm_1"]),
])
def test_extract_matches_onnx_extract_model(name, inputs, outputs):
    path = real_model(name)
    expected = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(onnx.load(path))).extract_model(
        inputs, outputs)
    model = surgeon.load(path)
    call(model, "extract", inputs=inputs, outputs=outputs)
    out = to_proto(model)
    assert node_names(out) == node_names(expected)
    assert [(i.name, type_of(i)) for i in out.graph.input] == [(i.name, type_of(i)) for i in expected.graph.input]
    assert [o.name for o in out.graph.output] == outputs
    feeds = random_inputs(expected, {"batch": 2, "seq": 5})
    assert_values(run(out, feeds), run(expected, feeds))


def test_extract_errors_name_the_leaking_tensors():
    model = surgeon.load(real_model("tiny_yolo_legacy.onnx"))
    assert error_of(model, "extract", inputs=["/p4/p4.2/Mul_output_0"], outputs=["boxes"]) == (
        "error: the outputs do not depend only on the given inputs: they also need '/Concat_6_output_0' "
        "(computed from graph input(s) 'images')\n"
        "  hint: add these tensors to inputs (or graph input(s) 'images'), or choose outputs that do not need them")
    model = surgeon.load(real_model("transformer_encoder_dynamo.onnx"))
    # the attention reshapes read the sequence length from the model input
    assert error_of(model, "extract", inputs=["layer_norm_1"], outputs=["layer_norm_3"]) == (
        "error: the outputs do not depend only on the given inputs: they also need "
        "'val_10' (computed from graph input(s) 'src'), 'val_20' (computed from graph input(s) 'src'), "
        "'val_36' (computed from graph input(s) 'src'), 'val_86' (computed from graph input(s) 'src')\n"
        "  hint: add these tensors to inputs (or graph input(s) 'src'), or choose outputs that do not need them")


def test_extract_sees_tensors_captured_by_subgraphs():
    path = real_model("ctrlflow_script_legacy.onnx")
    model = surgeon.load(path)
    # the If branches read x from the outer graph
    assert error_of(model, "extract", inputs=["/Cast_output_0"], outputs=["/If_output_0"]) == (
        "error: the outputs do not depend only on the given inputs: they also need graph input 'x'\n"
        "  hint: add these tensors to inputs (or graph input(s) 'x'), or choose outputs that do not need them")
    # the Loop body reads /Constant_output_0, which needs no input: the Constant node stays
    call(model, "extract", inputs=["/If_output_0", "n"], outputs=["y"])
    out = to_proto(model)
    assert [n.name for n in out.graph.node] == ["/Constant", "/Loop"]
    assert [(i.name, type_of(i)) for i in out.graph.input] == [
        ("/If_output_0", (onnx.TensorProto.FLOAT, ["N", 8])), ("n", (onnx.TensorProto.INT64, []))]
    feeds = {"x": np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32), "n": np.array(3, np.int64)}
    feeds["/If_output_0"] = reference(path, ["/If_output_0"], feeds)["/If_output_0"]
    assert_values(run(out, feeds), run(path, feeds))


def test_extract_keeps_output_positions_of_a_surviving_producer():
    model = surgeon.load(onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 18]>
        g (float[4] x) => (float[2] y) { a, b = Split <num_outputs: int = 2> (x)  y = Add(a, b) }"""))
    call(model, "extract", inputs=["x", "a"], outputs=["y"])
    out = to_proto(model)
    assert [(n.op_type, list(n.input), list(n.output)) for n in out.graph.node] == [
        ("Split", ["x"], ["a_cut", "b"]), ("Add", ["a", "b"], ["y"])]
    assert [(i.name, type_of(i)) for i in out.graph.input] == [("x", (1, [4])), ("a", (1, [2]))]
    got = run(out, {"x": np.arange(4, dtype=np.float32), "a": np.full(2, 10, np.float32)})
    assert np.array_equal(got["y"], [12, 13])


def test_extract_twice_changes_nothing_the_second_time():
    model = surgeon.load(real_model("tiny_yolo_legacy.onnx"))
    params = {"inputs": ["/p3/p3.2/Mul_output_0"], "outputs": ["/Concat_6_output_0"]}
    call(model, "extract", **params)
    once = to_proto(model).SerializeToString()
    assert surgeon.run_pass(model, "extract", **params).changed is False
    assert to_proto(model).SerializeToString() == once


def test_extract_refuses_an_initializer_as_input():
    model = surgeon.load(real_model("model.onnx"))
    assert error_of(model, "extract", inputs=["onnx::Conv_20"], outputs=["output"]) == (
        "error: 'onnx::Conv_20' is an initializer, so it cannot be an input\n"
        "  hint: leave it out of inputs: initializers are kept inside the extracted model")


# -- examples and ready recipes ------------------------------------------------------


@pytest.mark.parametrize("name", ["set_outputs", "add_outputs", "extract"])
def test_docstring_example_runs(name):
    path = real_model("model.onnx")
    model = surgeon.load(path)
    surgeon.apply(surgeon.parse_recipe(surgeon.registry.get(name).example()), model)
    out = to_proto(model)
    feeds = random_inputs(path)
    feeds["/block1/block1.2/Relu_output_0"] = reference(path, ["/block1/block1.2/Relu_output_0"], feeds)[
        "/block1/block1.2/Relu_output_0"]
    outputs = [o.name for o in out.graph.output]
    assert_values(run(out, feeds), reference(path, outputs, feeds))


def test_ready_recipe_extract_backbone():
    path = real_model("tiny_yolo_legacy.onnx")
    model = surgeon.load(path)
    result = surgeon.apply(RECIPES / "extract_backbone.yaml", model)
    out = to_proto(model)
    assert [o.name for o in out.graph.output] == ["p3", "p4", "p5"]
    assert [type_of(o) for o in out.graph.output] == [
        (onnx.TensorProto.FLOAT, ["N", 64, 40, 40]), (onnx.TensorProto.FLOAT, ["N", 128, 20, 20]),
        (onnx.TensorProto.FLOAT, ["N", 128, 10, 10])]
    assert len(out.graph.node) == 15
    feeds = random_inputs(path)
    want = reference(path, list(result.renamed), feeds)
    got = run(out, feeds)
    assert all(np.array_equal(got[result.renamed[name]], value) for name, value in want.items())


def test_a_tensor_name_with_no_close_match_lists_the_names_or_says_how():
    big = surgeon.load(real_model("tiny_yolo_legacy.onnx"))
    assert error_of(big, "add_outputs", outputs=["zzz"]) == (
        "error: no tensor named 'zzz' in the main graph\n"
        "  hint: no tensor name is close to 'zzz'; list them with 'surgeon inspect MODEL --tensors --name TEXT' "
        "(names are case-sensitive)")
    small = surgeon.load(onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x) => (float[2] y) { t = Relu (x)  y = Neg (t) }"""))
    assert error_of(small, "add_outputs", outputs=["zzz"]) == (
        "error: no tensor named 'zzz' in the main graph\n"
        "  hint: no tensor name is close; the tensors are: 't', 'x', 'y'")


def test_a_node_name_with_no_close_match_says_how_to_list_them():
    model = surgeon.load(real_model("tiny_yolo_legacy.onnx"))
    assert error_of(model, "remove_node", name="zzz") == (
        "error: selector (name='zzz') matched no node\n"
        "  hint: list the node names with 'surgeon inspect MODEL --nodes --name TEXT'\n"
        "        set allow_missing: true if the step may legitimately match nothing")


def test_add_outputs_summary_names_the_outputs():
    model = surgeon.load(real_model("model.onnx"))
    report = surgeon.run_pass(model, "add_outputs", outputs=["/block1/block1.2/Relu_output_0"])
    assert report.summary() == ("step 1 (add_outputs): changed the type or shape of 1 tensor; "
                                "changed graph outputs (+ '/block1/block1.2/Relu_output_0')")
