"""rename_io and rename_tensors: renames follow every use, subgraphs included, and change no value."""

from __future__ import annotations

import textwrap

import numpy as np
import onnx
import pytest
from util import RECIPES, assert_same_outputs, call, error_of, random_inputs, real_model

import surgeon
from surgeon.io.export import to_proto


def proto_graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from proto_graphs(sub)


def all_names(proto: onnx.ModelProto) -> set[str]:
    names = set()
    for g in proto_graphs(proto.graph):
        names |= {v.name for v in list(g.input) + list(g.output) + list(g.value_info)}
        names |= {i.name for i in g.initializer}
        for n in g.node:
            names |= set(n.input) | set(n.output)
    return names - {""}


def checker_finding(proto: onnx.ModelProto) -> str | None:
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        return str(exc)
    return None


def renamed_feeds(feeds: dict, renamed: dict[str, str]) -> dict:
    """Feeds under the old and the new input names (run() picks what each model wants)."""
    return {**feeds, **{renamed[k]: v for k, v in feeds.items() if k in renamed}}


def check_same(before: onnx.ModelProto, after: onnx.ModelProto, renamed: dict[str, str], feeds=None):
    feeds = feeds if feeds is not None else random_inputs(before)
    assert_same_outputs(before, after, renamed_feeds(feeds, renamed), renamed=renamed, exact=True)


# -- rename_io ------------------------------------------------------------------------


def test_rename_io_renames_inputs_and_outputs_everywhere():
    path = real_model("model.onnx")
    model = surgeon.load(path)
    result = call(model, "rename_io", inputs={"input": "images"}, outputs={"output": "features"})
    assert result.renamed == {"input": "images", "output": "features"}
    out = to_proto(model)
    assert [i.name for i in out.graph.input] == ["images"]
    assert [o.name for o in out.graph.output] == ["features"]
    assert out.graph.node[0].input[0] == "images"
    assert out.graph.node[-1].output[0] == "features"
    assert not {"input", "output"} & all_names(out)
    # declared types survive the rename (the input's symbolic batch dim N)
    assert out.graph.input[0].type == onnx.load(path).graph.input[0].type
    check_same(onnx.load(path), out, result.renamed)


def test_rename_io_swaps_two_outputs():
    path = real_model("tiny_yolo_legacy.onnx")
    model = surgeon.load(path)
    result = call(model, "rename_io", outputs={"boxes": "scores", "scores": "boxes"})
    out = to_proto(model)
    assert [o.name for o in out.graph.output] == ["scores", "boxes"]
    assert [o.type for o in out.graph.output] == [o.type for o in onnx.load(path).graph.output]
    check_same(onnx.load(path), out, result.renamed)


def test_rename_io_same_name_changes_nothing():
    model = surgeon.load(real_model("model.onnx"))
    before = to_proto(model).SerializeToString()
    result = call(model, "rename_io", inputs={"input": "input"})
    assert result.renamed == {}
    assert to_proto(model).SerializeToString() == before


def test_rename_io_of_input_captured_by_if_branches():
    path = real_model("ctrlflow_cond_dynamo.onnx")
    model = surgeon.load(path)
    result = call(model, "rename_io", inputs={"x": "features"}, outputs={"y": "out"})
    out = to_proto(model)
    branches = {a.name: a.g for a in out.graph.node[-1].attribute}
    assert list(branches["then_branch"].node[0].input) == ["features", "val_0_2"]
    assert list(branches["else_branch"].node[0].input) == ["features", "val_0_3"]
    check_same(onnx.load(path), out, result.renamed)


def test_rename_io_in_silero_vad_with_nested_ifs():
    path = real_model("silero_vad.onnx")
    model = surgeon.load(path)
    renamed = {"input": "audio", "state": "h", "sr": "sample_rate"}
    result = call(model, "rename_io", inputs=renamed, outputs={"stateN": "h_next"})
    out = to_proto(model)
    assert not {"input", "state", "sr", "stateN"} & all_names(out)
    rng = np.random.default_rng(0)
    for sr, n in ((16000, 512), (8000, 256)):  # both branches of the top-level If
        feeds = {"input": rng.standard_normal((1, n)).astype(np.float32),
                 "state": rng.standard_normal((2, 1, 128)).astype(np.float32), "sr": np.array(sr, np.int64)}
        check_same(onnx.load(path), out, result.renamed, feeds)


def test_rename_io_errors():
    model = surgeon.load(real_model("model.onnx"))
    assert error_of(model, "rename_io", inputs={"inpt": "images"}) == (
        "error: 'inpt' is not a graph input\n"
        "  hint: did you mean 'input'?")
    assert error_of(model, "rename_io", inputs={"output": "y"}) == (
        "error: 'output' is not a graph input\n"
        "  hint: 'output' is a graph output: list it under outputs:")
    assert error_of(model, "rename_io", outputs={"zzz": "y"}) == (
        "error: 'zzz' is not a graph output\n"
        "  hint: the graph outputs are: 'output'")
    assert error_of(model, "rename_io", inputs={"input": "/block1/block1.2/Relu_output_0"}) == (
        "error: cannot rename 'input' to '/block1/block1.2/Relu_output_0': a tensor named "
        "'/block1/block1.2/Relu_output_0' already exists (output of node '/block1/block1.2/Relu' (Relu) "
        "in the main graph)\n"
        "  hint: choose another name; to swap two names, rename both in the same step")
    assert error_of(model, "rename_io", inputs={"input": "onnx::Conv_20"}) == (
        "error: cannot rename 'input' to 'onnx::Conv_20': a tensor named 'onnx::Conv_20' already exists "
        "(initializer read by node '/block1/block1.0/Conv' (Conv) in the main graph)\n"
        "  hint: choose another name; to swap two names, rename both in the same step")
    assert error_of(model, "rename_io", inputs={"input": "x"}, outputs={"output": "x"}) == (
        "error: 'input' and 'output' would both be named 'x'\n"
        "  hint: give every tensor its own new name")
    assert error_of(model, "rename_io", inputs={"input": ""}) == (
        "error: cannot rename 'input' to an empty name\n"
        "  hint: an empty name means an omitted optional input in ONNX; give a real name")
    assert error_of(model, "rename_io") == (
        "error: nothing to rename\n"
        "  hint: give inputs: {old: new} and/or outputs: {old: new}")


def test_rename_io_refuses_a_name_taken_inside_a_subgraph():
    model = surgeon.load(real_model("ctrlflow_script_legacy.onnx"))
    assert error_of(model, "rename_io", inputs={"x": "/Mul_output_0"}) == (
        "error: cannot rename 'x' to '/Mul_output_0': a tensor named '/Mul_output_0' already exists "
        "(output of node '/Mul' (Mul) in the then_branch of node '/If')\n"
        "  hint: choose another name; to swap two names, rename both in the same step")
    assert error_of(model, "rename_io", inputs={"n": "y.25"}) == (
        "error: cannot rename 'n' to 'y.25': a tensor named 'y.25' already exists "
        "(input of the body of node '/Loop')\n"
        "  hint: choose another name; to swap two names, rename both in the same step")


def test_rename_io_refuses_two_names_for_a_pass_through_tensor():
    model = surgeon.load(onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x) => (float[2] x, float[2] y) { y = Relu(x) }"""))
    assert error_of(model, "rename_io", inputs={"x": "a"}, outputs={"x": "b"}) == (
        "error: 'x' is both a graph input and a graph output, and is given two new names: "
        "'a' (inputs) and 'b' (outputs)\n"
        "  hint: it is one tensor: give one new name, under either inputs or outputs")
    call(model, "rename_io", inputs={"x": "a"})
    out = to_proto(model)
    assert [i.name for i in out.graph.input] == ["a"] and [o.name for o in out.graph.output] == ["a", "y"]


# -- rename_tensors --------------------------------------------------------------------


def test_rename_tensors_map_renames_a_tensor_captured_by_if_and_loop():
    path = real_model("ctrlflow_script_legacy.onnx")
    model = surgeon.load(path)
    result = call(model, "rename_tensors", map={"/Constant_output_0": "keep_going", "x": "features",
                                                "y.25": "carried"})
    out = to_proto(model)
    loop = out.graph.node[-1]
    body = loop.attribute[0].g
    assert loop.input[1] == "keep_going"
    assert [n.input[0] for n in body.node if n.op_type == "Identity"] == ["keep_going"]
    assert body.input[2].name == "carried" and body.node[0].input[0] == "carried"
    then_branch = out.graph.node[-2].attribute[0].g
    assert then_branch.node[-1].input[0] == "features"
    feeds = {"x": np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32),
             "n": np.array(3, np.int64)}
    check_same(onnx.load(path), out, result.renamed, feeds)
    feeds["x"] = -np.abs(feeds["x"])  # the other branch of the If
    check_same(onnx.load(path), out, result.renamed, feeds)


def test_rename_tensors_map_renames_a_captured_initializer():
    path = real_model("ctrlflow_cond_dynamo.onnx")
    model = surgeon.load(path)
    result = call(model, "rename_tensors", map={"val_0_2": "two", "scalar_tensor_default": "zero"})
    out = to_proto(model)
    assert [i.name for i in out.graph.initializer] == ["zero", "two", "val_0_3"]
    # value_info entries keep their places under the new names
    assert [v.name for v in out.graph.value_info][:3] == ["zero", "two", "val_0_3"]
    assert out.graph.node[-1].attribute[0].g.node[0].input[1] == "two"
    check_same(onnx.load(path), out, result.renamed)


def test_strip_prefix_renames_inside_silero_subgraphs():
    path = real_model("silero_vad.onnx")
    model = surgeon.load(path)
    prefix = "If_0_else_branch__Inline_0__"
    captured = prefix + "/encoder/3/activation/Relu_output_0"  # read by nested If branches
    assert captured in all_names(to_proto(model))
    result = call(model, "rename_tensors", strip_prefix=prefix, prefix="b16k.")
    out = to_proto(model)
    assert result.renamed[captured] == "b16k./encoder/3/activation/Relu_output_0"
    assert not any(n.startswith(prefix) for n in all_names(out))
    node_names = [n.name for g in proto_graphs(onnx.load(path).graph) for n in g.node]
    new_names = [n.name for g in proto_graphs(out.graph) for n in g.node]
    assert new_names == ["b16k." + n[len(prefix):] if n.startswith(prefix) else n for n in node_names]
    assert result.details["nodes_renamed"] == 325
    rng = np.random.default_rng(0)
    for sr, n in ((16000, 512), (8000, 256)):
        feeds = {"input": rng.standard_normal((1, n)).astype(np.float32),
                 "state": rng.standard_normal((2, 1, 128)).astype(np.float32), "sr": np.array(sr, np.int64)}
        check_same(onnx.load(path), out, result.renamed, feeds)


@pytest.mark.parametrize("name", ["model.onnx", "tiny_yolo_legacy.onnx", "transformer_encoder_dynamo.onnx",
                                  "polygraphy/renamable.onnx", "polygraphy/loop.onnx", "polygraphy/scan.onnx"])
def test_prefix_rename_keeps_values_and_interface(name):
    path = real_model(name)
    model = surgeon.load(path)
    original = onnx.load(path)
    result = call(model, "rename_tensors", prefix="net.")
    out = to_proto(model)
    io = [v.name for v in list(original.graph.input) + list(original.graph.output)]
    initializer_inputs = {i.name for i in original.graph.initializer}
    assert [v.name for v in list(out.graph.input) + list(out.graph.output)] == [
        "net." + n if n in initializer_inputs else n for n in io]
    assert all(n.startswith("net.") or n in io for n in all_names(out))
    assert all(n.name.startswith("net.") for g in proto_graphs(out.graph) for n in g.node if n.name)
    assert result.details["nodes_renamed"] == sum(1 for g in proto_graphs(original.graph) for n in g.node if n.name)
    assert len(out.graph.value_info) == len(original.graph.value_info)
    if checker_finding(original) is None:  # polygraphy's renamable.onnx already fails the checker
        assert checker_finding(out) is None
    check_same(original, out, result.renamed)


@pytest.mark.parametrize("name", ["model.onnx", "tiny_yolo_legacy.onnx", "transformer_encoder_dynamo.onnx",
                                  "polygraphy/scan.onnx", "polygraphy/loop.onnx"])
def test_rename_io_of_every_input_and_output_keeps_values(name):
    path = real_model(name)
    model = surgeon.load(path)
    inputs = {t.name: f"in_{i}" for i, t in enumerate(model.graph.inputs)}
    outputs = {t.name: f"out_{i}" for i, t in enumerate(model.graph.outputs)}
    result = call(model, "rename_io", inputs=inputs, outputs=outputs)
    out = to_proto(model)
    assert result.renamed == {**inputs, **outputs}
    assert not (set(inputs) | set(outputs)) & all_names(out)
    check_same(onnx.load(path), out, result.renamed)


def test_include_io_renames_the_interface_too():
    path = real_model("model.onnx")
    model = surgeon.load(path)
    result = call(model, "rename_tensors", prefix="m.", include_io=True)
    out = to_proto(model)
    assert [i.name for i in out.graph.input] == ["m.input"]
    assert [o.name for o in out.graph.output] == ["m.output"]
    check_same(onnx.load(path), out, result.renamed)


def test_rename_keeps_quantization_annotation_and_value_info_order():
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x) => (float[2] z) <float[2] b, float[2] a> { a = Relu(x)  b = Neg(a)  z = Abs(b) }""")
    note = proto.graph.quantization_annotation.add(tensor_name="a")
    note.quant_parameter_tensor_names.add(key="SCALE_TENSOR", value="s")
    model = surgeon.load(proto)
    call(model, "rename_tensors", map={"a": "act", "b": "neg"})
    out = to_proto(model)
    assert [v.name for v in out.graph.value_info] == ["neg", "act"]
    assert [q.tensor_name for q in out.graph.quantization_annotation] == ["act"]
    assert out.graph.quantization_annotation[0].quant_parameter_tensor_names[0].value == "s"


def test_strip_prefix_that_matches_nothing():
    model = surgeon.load(real_model("model.onnx"))
    assert error_of(model, "rename_tensors", strip_prefix="/backbone/") == (
        "error: no node or tensor name starts with '/backbone/' (graph inputs and outputs excluded)\n"
        "  hint: names in the model look like 'onnx::Conv_20', 'onnx::Conv_21', "
        "'/block1/block1.0/Conv_output_0'; "
        "set allow_missing: true if the step may legitimately match nothing")
    before = to_proto(model).SerializeToString()
    result = call(model, "rename_tensors", strip_prefix="/backbone/", allow_missing=True)
    assert result.renamed == {} and result.notes == ["no name starts with '/backbone/': skipped (allow_missing)"]
    assert to_proto(model).SerializeToString() == before


def test_rename_tensors_errors():
    model = surgeon.load(real_model("model.onnx"))
    assert error_of(model, "rename_tensors", map={"/block1/block1.2/Relu_output": "a"}) == (
        "error: no tensor named '/block1/block1.2/Relu_output' in the model\n"
        "  hint: did you mean '/block1/block1.2/Relu_output_0', '/block1/block1.0/Conv_output_0', "
        "'/block2/block2.0/Conv_output_0'?")
    assert error_of(model, "rename_tensors", map={"nope": "a"}) == (
        "error: no tensor named 'nope' in the model\n"
        "  hint: no tensor name is close to 'nope'; list them with 'surgeon inspect MODEL --tensors --name TEXT' "
        "(names are case-sensitive); set allow_missing: true if the name may legitimately be absent")
    assert error_of(model, "rename_tensors", map={"input": "a"}, prefix="p.") == (
        "error: give either map or prefix/strip_prefix, not both\n"
        "  hint: use two rename_tensors steps")
    assert error_of(model, "rename_tensors") == (
        "error: nothing to rename\n"
        "  hint: give map: {old: new}, or prefix and/or strip_prefix")
    assert error_of(model, "rename_tensors", strip_prefix="/block1/block1.2/Relu_output_0") == (
        "error: cannot rename '/block1/block1.2/Relu_output_0' to an empty name\n"
        "  hint: an empty name means an omitted optional input in ONNX; give a real name")
    # replacing a prefix can give a tensor the name of one that keeps its own
    assert error_of(model, "rename_tensors", strip_prefix="/block1/block1.0/", prefix="/block2/block2.0/") == (
        "error: cannot rename '/block1/block1.0/Conv_output_0' to '/block2/block2.0/Conv_output_0': a tensor "
        "named '/block2/block2.0/Conv_output_0' already exists (output of node '/block2/block2.0/Conv' (Conv) "
        "in the main graph)\n"
        "  hint: choose another name; to swap two names, rename both in the same step")


def test_map_missing_name_with_allow_missing():
    model = surgeon.load(real_model("model.onnx"))
    result = call(model, "rename_tensors", map={"nope": "a", "/block1/block1.2/Relu_output_0": "relu1"},
                  allow_missing=True)
    assert result.renamed == {"/block1/block1.2/Relu_output_0": "relu1"}
    assert result.notes == ["no tensor named 'nope': skipped (allow_missing)"]


# -- examples and ready recipes ------------------------------------------------------


@pytest.mark.parametrize("name", ["rename_io", "rename_tensors"])
def test_docstring_example_runs(name):
    path = real_model("model.onnx")
    model = surgeon.load(path)
    result = surgeon.apply(surgeon.parse_recipe(surgeon.registry.get(name).example()), model)
    assert result.renamed
    check_same(onnx.load(path), to_proto(model), result.renamed)


def test_ready_recipe_rename_io():
    path = real_model("model.onnx")
    model = surgeon.load(path)
    result = surgeon.apply(RECIPES / "rename_io.yaml", model)
    assert result.renamed == {"input": "images", "output": "features"}
    check_same(onnx.load(path), to_proto(model), result.renamed)


def test_runner_reports_renames():
    model = surgeon.load(real_model("model.onnx"))
    recipe = surgeon.parse_recipe(textwrap.dedent("""\
        version: 1
        steps:
          - pass: rename_io
            with: {outputs: {output: a}}
          - pass: rename_io
            with: {outputs: {a: b}}
        """))
    result = surgeon.apply(recipe, model)
    assert [step.renamed for step in result.steps] == [{"output": "a"}, {"a": "b"}]
    # A rename is not a rewiring: the same tensor object flows to the same nodes.
    assert result.steps[0].summary() == "step 1 (rename_io): renamed 1 tensor (output -> a)"
    assert result.renamed == {"output": "b"}
