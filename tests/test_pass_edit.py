"""insert_node and replace_op: exact structure, typed attributes, subgraphs, and models that still run."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from util import RECIPES, call, error_of, random_inputs, real_model, run

import surgeon
from surgeon.io.export import to_proto


def wiring(graph: onnx.GraphProto) -> list[tuple]:
    return [(n.op_type, list(n.input), list(n.output)) for n in graph.node]


def initializer(proto: onnx.ModelProto, name: str) -> np.ndarray:
    return next(onnx.numpy_helper.to_array(i) for i in proto.graph.initializer if i.name == name)


def attributes(node: onnx.NodeProto) -> dict:
    return {a.name: (onnx.AttributeProto.AttributeType.Name(a.type), onnx.helper.get_attribute_value(a))
            for a in node.attribute}


def saved(model, tmp_path, name="out.onnx") -> onnx.ModelProto:
    """Save through surgeon.save (full checker) and read the file back."""
    surgeon.save(model, tmp_path / name)
    return onnx.load(tmp_path / name)


RELU1 = "/block1/block1.2/Relu_output_0"
MODEL_WIRING = [
    ("Conv", ["input", "onnx::Conv_20", "onnx::Conv_21"], ["/block1/block1.0/Conv_output_0"]),
    ("Relu", ["/block1/block1.0/Conv_output_0"], [RELU1]),
    ("Conv", [RELU1, "onnx::Conv_23", "onnx::Conv_24"], ["/block2/block2.0/Conv_output_0"]),
    ("Relu", ["/block2/block2.0/Conv_output_0"], ["output"]),
]


# -- insert_node: where the node goes ---------------------------------------------------


def test_insert_on_an_intermediate_tensor(tmp_path):
    path = real_model("model.onnx")
    model = surgeon.load(path)
    result = call(model, "insert_node", op="Clip", after=RELU1, inputs_after=[0.0, 6])
    out = saved(model, tmp_path)
    clip, clipped = f"{RELU1}_Clip", f"{RELU1}_Clip_output_0"
    assert wiring(out.graph) == [
        *MODEL_WIRING[:2],
        ("Clip", [RELU1, f"{clip}_input_1", f"{clip}_input_2"], [clipped]),
        ("Conv", [clipped, "onnx::Conv_23", "onnx::Conv_24"], ["/block2/block2.0/Conv_output_0"]),
        MODEL_WIRING[3],
    ]
    assert out.graph.node[2].name == clip
    for name, value in ((f"{clip}_input_1", 0.0), (f"{clip}_input_2", 6.0)):
        assert initializer(out, name).dtype == np.float32 and initializer(out, name) == value
    # the new tensor's type comes from shape inference of the Clip alone
    assert [(v.name, v.type.tensor_type.elem_type, len(v.type.tensor_type.shape.dim))
            for v in out.graph.value_info] == [(clipped, onnx.TensorProto.FLOAT, 4)]
    assert result.notes == [f"'{clip}' (Clip) reads '{RELU1}' and writes '{clipped}' for 1 of 1 reader(s)"]
    # the same edit written by hand with onnx.helper gives the same values
    expected = onnx.load(path)
    expected.graph.initializer.extend([onnx.numpy_helper.from_array(np.float32(0), "lo"),
                                       onnx.numpy_helper.from_array(np.float32(6), "hi")])
    expected.graph.node.insert(2, onnx.helper.make_node("Clip", [RELU1, "lo", "hi"], ["clipped"]))
    expected.graph.node[3].input[0] = "clipped"
    feeds = random_inputs(path)
    feeds["input"] *= 20  # large enough that the Clip clips
    assert np.array_equal(run(out, feeds)["output"], run(expected, feeds)["output"])
    assert not np.array_equal(run(out, feeds)["output"], run(path, feeds)["output"])


def test_insert_on_a_graph_input_keeps_its_name(tmp_path):
    path = real_model("model.onnx")
    model = surgeon.load(path)
    call(model, "insert_node", op="Clip", after="input", inputs_after=[-1, 1], name="clamp")
    out = saved(model, tmp_path)
    assert [i.name for i in out.graph.input] == ["input"]
    assert wiring(out.graph) == [
        ("Clip", ["input", "clamp_input_1", "clamp_input_2"], ["clamp_output_0"]),
        ("Conv", ["clamp_output_0", "onnx::Conv_20", "onnx::Conv_21"], ["/block1/block1.0/Conv_output_0"]),
        *MODEL_WIRING[1:],
    ]
    feeds = random_inputs(path)
    assert np.array_equal(run(out, feeds)["output"], run(path, {"input": np.clip(feeds["input"], -1, 1)})["output"])


def test_insert_on_a_graph_output_keeps_its_name(tmp_path):
    path = real_model("model.onnx")
    model = surgeon.load(path)
    result = call(model, "insert_node", op="Clip", after="output", inputs_after=[0, 0.5])
    out = saved(model, tmp_path)
    assert wiring(out.graph) == [
        *MODEL_WIRING[:3],
        ("Relu", ["/block2/block2.0/Conv_output_0"], ["output_Clip_input_0"]),
        ("Clip", ["output_Clip_input_0", "output_Clip_input_1", "output_Clip_input_2"], ["output"]),
    ]
    assert out.graph.output[0] == onnx.load(path).graph.output[0]
    assert result.notes == ["graph output 'output' is now produced by 'output_Clip' (Clip); "
                            "the value before it is 'output_Clip_input_0'"]
    feeds = random_inputs(path)
    assert np.array_equal(run(out, feeds)["output"], np.clip(run(path, feeds)["output"], 0, 0.5))


def test_insert_on_a_graph_output_that_nodes_also_read():
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[3] x) => (float[3] a, float[3] y) { a = Relu(x)  y = Neg(a) }""")
    model = surgeon.load(proto)
    call(model, "insert_node", op="Sqrt", after="a")
    assert wiring(to_proto(model).graph) == [
        ("Relu", ["x"], ["a_Sqrt_input_0"]), ("Sqrt", ["a_Sqrt_input_0"], ["a"]), ("Neg", ["a"], ["y"])]
    model = surgeon.load(proto)
    call(model, "insert_node", op="Sqrt", after="a", consumers=[])  # only the graph output
    out = to_proto(model)
    assert wiring(out.graph) == [
        ("Relu", ["x"], ["a_Sqrt_input_0"]), ("Sqrt", ["a_Sqrt_input_0"], ["a"]), ("Neg", ["a_Sqrt_input_0"], ["y"])]
    got = run(out, {"x": np.array([4, -1, 9], np.float32)})
    assert got["a"].tolist() == [2, 0, 3] and got["y"].tolist() == [-4, 0, -9]


def test_insert_for_listed_consumers_only():
    path = real_model("tiny_yolo_legacy.onnx")
    model = surgeon.load(path)
    p3 = "/p3/p3.2/Mul_output_0"
    result = call(model, "insert_node", op="Identity", after=p3, consumers=["/p4/p4.0/Conv"])
    out = to_proto(model)
    readers = {n.name: list(n.input) for n in out.graph.node if p3 in n.input or f"{p3}_Identity_output_0" in n.input}
    assert readers == {
        "/Shape": [p3], "/Shape_1": [p3], "/box_heads.0/Conv": [p3, "box_heads.0.weight", "box_heads.0.bias"],
        "/cls_heads.0/Conv": [p3, "cls_heads.0.weight", "cls_heads.0.bias"],
        "/p4/p4.0/Conv": [f"{p3}_Identity_output_0", "onnx::Conv_361", "onnx::Conv_362"],
        f"{p3}_Identity": [p3]}
    assert [n.name for n in out.graph.node].index(f"{p3}_Identity") == 9  # right after /p3/p3.2/Mul
    assert result.notes[0].endswith("for 1 of 5 reader(s)")
    feeds = random_inputs(path)
    assert all(np.array_equal(run(out, feeds)[k], v) for k, v in run(path, feeds).items())


# -- insert_node: subgraphs --------------------------------------------------------------


def test_insert_on_an_input_captured_by_if_branches():
    path = real_model("ctrlflow_cond_dynamo.onnx")
    model = surgeon.load(path)
    call(model, "insert_node", op="Identity", after="x")
    out = to_proto(model)
    assert wiring(out.graph)[:2] == [("Identity", ["x"], ["x_Identity_output_0"]),
                                     ("ReduceSum", ["x_Identity_output_0"], ["sum_1"])]
    branches = {a.name: a.g for a in out.graph.node[-1].attribute}
    assert branches["then_branch"].node[0].input[0] == "x_Identity_output_0"
    assert branches["else_branch"].node[0].input[0] == "x_Identity_output_0"
    for sign in (1, -1):
        feeds = {"x": sign * np.abs(np.random.default_rng(0).standard_normal((2, 8))).astype(np.float32)}
        assert np.array_equal(run(out, feeds)["y"], run(path, feeds)["y"])


def test_insert_inside_a_loop_body_and_on_a_branch_output():
    path = real_model("ctrlflow_script_legacy.onnx")
    model = surgeon.load(path)
    call(model, "insert_node", op="Identity", after="y.25")  # an input of the Loop body
    call(model, "insert_node", op="Neg", after="/Mul_output_0")  # the output of the then branch
    out = to_proto(model)
    body = out.graph.node[-1].attribute[0].g
    assert wiring(body)[:2] == [("Identity", ["y.25"], ["y.25_Identity_output_0"]),
                                ("Relu", ["y.25_Identity_output_0"], ["/Relu_output_0"])]
    assert body.node[4].input[0] == "y.25_Identity_output_0"  # /Add
    then_branch = out.graph.node[-2].attribute[0].g
    assert [o.name for o in then_branch.output] == ["/Mul_output_0"]
    assert wiring(then_branch)[1:] == [("Mul", ["x", "/Constant_2_output_0"], ["/Mul_output_0_Neg_input_0"]),
                                       ("Neg", ["/Mul_output_0_Neg_input_0"], ["/Mul_output_0"])]
    rng = np.random.default_rng(0)
    positive = {"x": np.abs(rng.standard_normal((3, 8))).astype(np.float32), "n": np.array(0, np.int64)}
    assert np.array_equal(run(out, positive)["y"], -run(path, positive)["y"])  # then branch, no iteration
    negative = {"x": -np.abs(rng.standard_normal((3, 8))).astype(np.float32), "n": np.array(3, np.int64)}
    assert np.array_equal(run(out, negative)["y"], run(path, negative)["y"])  # else branch, 3 iterations


# -- insert_node: ops, attributes, extra inputs --------------------------------------------


def test_attribute_values_get_their_schema_types():
    model = surgeon.load(real_model("model.onnx"))
    call(model, "insert_node", op="LeakyRelu", after=RELU1, attrs={"alpha": 1})
    node = to_proto(model).graph.node[2]
    assert attributes(node) == {"alpha": ("FLOAT", 1.0)}


def test_plugin_op_attributes_follow_the_yaml_values(tmp_path):
    model = surgeon.load(real_model("model.onnx"))
    result = call(model, "insert_node", op="MyPlugin", after="output", attrs={
        "count": 3, "flag": True, "scale": 0.5, "mode": "fast", "ints": [1, 2], "floats": [1, 2.5],
        "names": ["a", "b"], "table": {"value": [[1, 2]], "dtype": "int32"}})
    out = saved(model, tmp_path)  # the checker accepts the default-domain plugin op
    attrs = attributes(out.graph.node[-1])
    assert {k: v[0] for k, v in attrs.items()} == {
        "count": "INT", "flag": "INT", "scale": "FLOAT", "mode": "STRING", "ints": "INTS", "floats": "FLOATS",
        "names": "STRINGS", "table": "TENSOR"}
    assert attrs["flag"][1] == 1 and attrs["floats"][1] == [1.0, 2.5] and attrs["names"][1] == [b"a", b"b"]
    table = onnx.numpy_helper.to_array(attrs["table"][1])
    assert table.dtype == np.int32 and table.tolist() == [[1, 2]]
    # an op without a schema keeps the declared type of the graph output it now produces
    assert out.graph.output[0] == onnx.load(real_model("model.onnx")).graph.output[0]
    assert result.notes[1:] == ["'output' keeps its declared dtype and shape (MyPlugin has no ONNX schema)",
                                "'MyPlugin' is not an ONNX op: kept as a plugin op in the default domain"]


def test_custom_domain_is_imported(tmp_path):
    model = surgeon.load(real_model("model.onnx"))
    result = call(model, "insert_node", op="Marker", domain="trt", after=RELU1)
    out = saved(model, tmp_path)
    assert [(o.domain, o.version) for o in out.opset_import] == [("", 13), ("trt", 1)]
    assert (out.graph.node[2].op_type, out.graph.node[2].domain) == ("Marker", "trt")
    assert result.notes[-1] == "imported opset 'trt' version 1"


def test_typed_constant_and_omitted_inputs():
    path = real_model("model.onnx")
    model = surgeon.load(path)
    call(model, "insert_node", op="Expand", after=RELU1, name="expand",
         inputs_after=[{"value": [1, 1, 1, 1], "dtype": "int64"}])
    call(model, "insert_node", op="Clip", after="/block2/block2.0/Conv_output_0", name="cap", inputs_after=[None, 1e9])
    out = to_proto(model)
    assert initializer(out, "expand_input_1").dtype == np.int64
    assert list(out.graph.node[-2].input) == ["/block2/block2.0/Conv_output_0", "", "cap_input_2"]
    feeds = random_inputs(path)
    assert np.array_equal(run(out, feeds)["output"], run(path, feeds)["output"])


def test_insert_node_errors():
    model = surgeon.load(real_model("model.onnx"))
    assert error_of(model, "insert_node", op="Clip", after="/block1/block1.2/Relu_output") == (
        "error: no tensor named '/block1/block1.2/Relu_output' in the model\n"
        "  hint: did you mean '/block1/block1.2/Relu_output_0', '/block1/block1.0/Conv_output_0', "
        "'/block2/block2.0/Conv_output_0'?")
    assert error_of(model, "insert_node", op="Clip", after="input", consumers=["/block2/block2.0/Conv"]) == (
        "error: node '/block2/block2.0/Conv' does not read 'input'\n"
        "  hint: did you mean '/block1/block1.0/Conv'?")
    assert error_of(model, "insert_node", op="LeakyRelu", after=RELU1, attrs={"alpah": 0.1}) == (
        "error: LeakyRelu has no attribute 'alpah'\n"
        "  hint: did you mean 'alpha'?")
    assert error_of(model, "insert_node", op="Clip", after=RELU1, attrs={"min": 0.0}) == (
        "error: Clip has no attribute 'min'\n"
        "  hint: Clip takes no attributes")
    assert error_of(model, "insert_node", op="LeakyRelu", after=RELU1, attrs={"alpha": "1e-3"}) == (
        "error: attribute 'alpha' of LeakyRelu must be a number, got '1e-3'\n"
        "  hint: YAML reads 1e-3 as a string: write 1.0e-3")
    assert error_of(model, "insert_node", op="Gelu", after=RELU1) == (
        "error: Gelu is not in opset 13 of domain 'ai.onnx' (it exists from version 20 on)\n"
        "  hint: convert the model to a newer opset first, or use another op")
    assert error_of(model, "insert_node", op="Relu", after=RELU1, inputs_after=[1.0]) == (
        f"error: node '{RELU1}_Relu' is not a valid Relu: Node({RELU1}_Relu) with schema(::Relu:13) has input "
        "size 2 not in range [min=1, max=1].\n"
        "  hint: see the Relu operator in the ONNX documentation (opset 13)")
    assert error_of(model, "insert_node", op="Clip", after=RELU1,
                    inputs_after=[{"value": 0, "dtype": "int64"}]) == (
        f"error: node '{RELU1}_Clip' is not a valid Clip: input 1 is tensor(int64) but input 0 is tensor(float), "
        "and Clip wants one type T for both\n"
        "  hint: check the dtypes of inputs_after (a number gets the dtype of the tensor it is inserted after; "
        "give {value: ..., dtype: ...} otherwise)")
    assert error_of(model, "insert_node", op="Not", after=RELU1) == (
        f"error: node '{RELU1}_Not' is not a valid Not: input 0 is tensor(float), which Not does not accept "
        "(T is one of tensor(bool))\n"
        "  hint: insert a Cast first, or insert the node on another tensor")
    assert error_of(model, "insert_node", op="Add", after="/block1/block1.0/Conv_output_0",
                    inputs_after=["/block2/block2.0/Conv_output_0"]) == (
        "error: inputs_after tensor '/block2/block2.0/Conv_output_0' is computed after node "
        "'/block1/block1.2/Relu', which reads '/block1/block1.0/Conv_output_0'\n"
        "  hint: the new node must run before the readers of its tensor: give a tensor computed earlier, "
        "or a constant")
    assert error_of(model, "insert_node", op="Add", after=RELU1, inputs_after=["onnx::Conv_2"]) == (
        "error: inputs_after[0]: no tensor named 'onnx::Conv_2'\n"
        "  hint: did you mean 'onnx::Conv_24', 'onnx::Conv_23', 'onnx::Conv_21'?")
    assert error_of(model, "insert_node", op="Clip", after=RELU1, name="/block1/block1.2/Relu") == (
        "error: a node named '/block1/block1.2/Relu' already exists\n"
        "  hint: choose another name, or leave name out")
    assert error_of(model, "insert_node", op="", after=RELU1) == (
        "error: op is empty\n"
        "  hint: give the op type of the new node, e.g. Clip")


def test_insert_node_refuses_unusable_tensors():
    model = surgeon.load(onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17, "devtech" : 1]>
        g (float[2] x) => (float[2] x, float[2] y) { a = devtech.FooOp(x)  y, unused = Split <axis: int = 0> (a) }"""))
    assert error_of(model, "insert_node", op="Relu", after="x") == (
        "error: 'x' is both an input and an output of the main graph\n"
        "  hint: a node cannot take the place of a pass-through tensor; insert it on a tensor inside the graph")
    assert error_of(model, "insert_node", op="Relu", after="unused") == (
        "error: nothing reads 'unused' and it is not a graph output, so the new node would be unused\n"
        "  hint: choose a tensor that other nodes read")
    assert error_of(model, "insert_node", op="Clip", after="a", inputs_after=[0.0]) == (
        "error: inputs_after[0]: the dtype of 'a' is unknown, so the constant 0.0 has no dtype\n"
        "  hint: give it as {value: ..., dtype: float32}")


# -- replace_op ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["model_foo.onnx", "model_foo_dynamo.onnx", "model_foo_dynamo_library.onnx"])
def test_ready_recipe_fooop_to_plugin(name, tmp_path):
    path = real_model(name)
    model = surgeon.load(path)
    result = surgeon.apply(RECIPES / "fooop_to_plugin.yaml", model)
    assert result.summary().startswith("step 1 (replace_op): changed op of 1 node (devtech::FooOp -> FooPlugin)")
    out = saved(model, tmp_path)  # surgeon.save accepts the default-domain plugin op
    original = onnx.load(path)
    foo = next(i for i, n in enumerate(original.graph.node) if n.op_type == "FooOp")
    plugin = out.graph.node[foo]
    assert (plugin.op_type, plugin.domain, plugin.name) == ("FooPlugin", "", original.graph.node[foo].name)
    assert (plugin.input, plugin.output) == (original.graph.node[foo].input, original.graph.node[foo].output)
    assert [o.domain for o in out.opset_import] == [""]
    assert [n for i, n in enumerate(out.graph.node) if i != foo] == [
        n for i, n in enumerate(original.graph.node) if i != foo]
    assert result.steps[0].notes == ["'FooPlugin' is not an ONNX op: kept as a plugin op in the default domain"]


def test_replace_relu_by_leaky_relu_keeps_values():
    path = real_model("model.onnx")
    model = surgeon.load(path)
    call(model, "replace_op", op="Relu", new_op="LeakyRelu", new_attrs={"alpha": 0})
    out = to_proto(model)
    assert [(n.op_type, attributes(n)) for n in out.graph.node if n.op_type != "Conv"] == [
        ("LeakyRelu", {"alpha": ("FLOAT", 0.0)})] * 2
    feeds = random_inputs(path)
    assert np.array_equal(run(out, feeds)["output"], run(path, feeds)["output"])


def test_keep_attrs_list_and_false():
    path = real_model("model.onnx")
    model = surgeon.load(path)
    call(model, "replace_op", name="/block1/block1.0/Conv", keep_attrs=["kernel_shape", "pads"])
    call(model, "replace_op", name="/block1/block1.2/Relu", new_op="Elu", keep_attrs=False,
         new_attrs={"alpha": 0.5})
    out = to_proto(model)
    assert attributes(out.graph.node[0]) == {"kernel_shape": ("INTS", [3, 3]), "pads": ("INTS", [1, 1, 1, 1])}
    assert attributes(out.graph.node[1]) == {"alpha": ("FLOAT", 0.5)}
    feeds = random_inputs(path)
    conv = run(out, feeds)  # dropped strides/dilations/group were the defaults
    model = surgeon.load(path)
    call(model, "replace_op", name="/block1/block1.2/Relu", new_op="Elu", new_attrs={"alpha": 0.5})
    assert np.array_equal(conv["output"], run(to_proto(model), feeds)["output"])


def test_replace_op_inside_a_loop_body():
    path = real_model("ctrlflow_script_legacy.onnx")
    model = surgeon.load(path)
    call(model, "replace_op", op="Relu", new_op="LeakyRelu", new_attrs={"alpha": 0.0})
    out = to_proto(model)
    body = out.graph.node[-1].attribute[0].g
    assert (body.node[0].op_type, body.node[0].name, list(body.node[0].input)) == ("LeakyRelu", "/Relu", ["y.25"])
    feeds = {"x": np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32), "n": np.array(3, np.int64)}
    assert np.array_equal(run(out, feeds)["y"], run(path, feeds)["y"])


def test_replace_op_that_matches_nothing():
    model = surgeon.load(real_model("model.onnx"))
    before = to_proto(model).SerializeToString()
    call(model, "replace_op", op="FooOp", new_op="FooPlugin", allow_missing=True)
    assert to_proto(model).SerializeToString() == before
    assert error_of(model, "replace_op", op="FooOp", new_op="FooPlugin") == (
        "error: selector (op='FooOp') matched no node\n"
        "  hint: op types in the model: Conv, Relu\n"
        "        set allow_missing: true if the step may legitimately match nothing")


def test_replace_op_errors():
    model = surgeon.load(real_model("model.onnx"))
    assert error_of(model, "replace_op", op="Relu") == (
        "error: nothing to change\n"
        "  hint: give new_op, new_domain, new_attrs or keep_attrs")
    assert error_of(model, "replace_op", op="Relu", new_op="LeakyRelu", new_attrs={"alhpa": 0.1}) == (
        "error: LeakyRelu has no attribute 'alhpa'\n"
        "  hint: did you mean 'alpha'?")
    assert error_of(model, "replace_op", op="Conv", keep_attrs=["stride"]) == (
        "error: keep_attrs: no selected node has an attribute 'stride'\n"
        "  hint: did you mean 'strides'?")
    # checked before any node changes: the first Conv would be valid, neither is changed
    assert error_of(model, "replace_op", op="Conv", new_op="Relu", keep_attrs=False) == (
        "error: node '/block1/block1.0/Conv' is not a valid Relu: Node(/block1/block1.0/Conv) with "
        "schema(::Relu:13) has input size 3 not in range [min=1, max=1].\n"
        "  hint: see the Relu operator in the ONNX documentation (opset 13)")
    assert error_of(model, "replace_op", op="Relu", new_op="LeakyRelu", new_attrs={"alpha": [1, 2]}) == (
        "error: attribute 'alpha' of LeakyRelu must be a number, got [1, 2]")


# -- examples ----------------------------------------------------------------------------


def test_insert_node_example_runs(tmp_path):
    path = real_model("model.onnx")
    model = surgeon.load(path)
    surgeon.apply(surgeon.parse_recipe(surgeon.registry.get("insert_node").example()), model)
    out = saved(model, tmp_path)
    assert [n.op_type for n in out.graph.node] == ["Conv", "Relu", "Clip", "Conv", "Relu"]
    assert run(out, random_inputs(path))["output"].shape == run(path, random_inputs(path))["output"].shape


def test_replace_op_example_runs(tmp_path):
    model = surgeon.load(real_model("model_foo.onnx"))
    surgeon.apply(surgeon.parse_recipe(surgeon.registry.get("replace_op").example()), model)
    assert [n.op_type for n in saved(model, tmp_path).graph.node] == ["Conv", "Relu", "FooPlugin", "Conv", "Relu"]
