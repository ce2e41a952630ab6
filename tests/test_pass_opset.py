"""convert_opset: onnx.version_converter with readable errors, kept metadata and custom domains."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.defs
import onnx.parser
import pytest
from util import (
    POLYGRAPHY,
    RECIPES,
    assert_same_outputs,
    ocr_det_inputs,
    ocr_inputs,
    random_inputs,
    real_model,
    real_model_names,
    silero_inputs,
)

import surgeon
from surgeon.graph.correspondence import Correspondence
from surgeon.io.export import to_proto
from surgeon.passes.registry import registry
from surgeon.passes.runner import run_step
from surgeon.recipe.model import Step

WITH_FUNCTION = """<ir_version: 8, opset_import: ["" : 17, "pkg" : 1]>
agraph (float[N, 3] x) => (float[N, {rank}] y) {{ y = pkg.Fn (x) }}
<domain: "pkg", opset_import: ["" : 17]>
Fn (a) => (b) {{ {body} }}"""


def convert(model: surgeon.Model, target: int):
    return run_step(model, Step("convert_opset", {"target": target}))


def only_versions_changed(before: onnx.ModelProto, opset: int, ir_version: int) -> bytes:
    """``before`` with the default opset and the IR version replaced, as the exporter writes them."""
    want = onnx.ModelProto()
    want.CopyFrom(before)
    want.ir_version = ir_version
    for o in want.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = opset
            o.domain = o.domain  # the exporter writes a new entry, with the domain field set
    return want.SerializeToString()


@pytest.mark.parametrize("target, ir_version", [(17, 8), (18, 8), (21, 10)])
def test_upgrades_a_real_model_and_raises_the_ir_version(target, ir_version):
    path = real_model("model.onnx")  # legacy exporter, opset 13, IR 7
    model = surgeon.load(path)
    before = to_proto(model)
    nodes = list(model.graph.nodes)
    report = convert(model, target)
    after = to_proto(model)
    assert after.SerializeToString() == only_versions_changed(before, target, ir_version)
    assert all(a is b for a, b in zip(model.graph.nodes, nodes))  # nothing was rebuilt
    assert report.summary() == f"step 1 (convert_opset): opset 13 -> {target}"
    assert report.notes == [f"converted from opset 13 to {target}",
                            f"raised the IR version from 7 to {ir_version} (opset {target} needs it)"]
    assert report.details == {"opset": [13, target], "ir_version": [7, ir_version]}
    onnx.checker.check_model(after, full_check=True)
    assert_same_outputs(path, after, random_inputs(path), exact=True)


@pytest.mark.parametrize("target", [18, 23])
def test_dynamo_export_keeps_node_and_graph_metadata(target):
    path = real_model("transformer_encoder_dynamo.onnx")  # opset 20, 989 node metadata entries
    model = surgeon.load(path)
    before = to_proto(model)
    convert(model, target)
    after = to_proto(model)
    # The converter itself drops node metadata, graph metadata and value_info; the pass keeps them all.
    assert after.SerializeToString() == only_versions_changed(before, target, max(10, model.ir_version))
    assert sum(len(n.metadata_props) for n in after.graph.node) == 989
    assert_same_outputs(path, after, random_inputs(path, dims={"batch": 2, "seq": 5}))


def test_real_model_whose_nodes_change_keeps_the_others():
    path = real_model("ch_PP-OCRv4_rec_infer.onnx")  # opset 12; Softmax changed meaning in 13
    model = surgeon.load(path)
    convs = [n for n in model.graph.nodes if n.op == "Conv"]
    report = convert(model, 17)
    after = to_proto(model)
    assert all(any(n is c for n in model.graph.nodes) for c in convs)
    assert {r.op for r in report.removed} == {"Softmax"}  # rewritten as Flatten/Softmax/Reshape
    assert {"Flatten", "Softmax", "Reshape"} <= {r.op for r in report.added}
    onnx.checker.check_model(after, full_check=True)
    assert_same_outputs(path, after, random_inputs(path, dims={"p2o.DynamicDimension.0": 32}))


def test_ir3_model_gets_ir7():
    path = real_model("light_densenet121.onnx")  # IR 3, opset 9, initializers listed as inputs
    model = surgeon.load(path)
    report = convert(model, 13)
    after = to_proto(model)
    assert (after.ir_version, report.notes[1]) == (7, "raised the IR version from 3 to 7 (opset 13 needs it)")
    onnx.checker.check_model(after, full_check=True)
    feeds = random_inputs(path)
    assert_same_outputs(path, after, feeds)


def test_subgraphs_are_converted():
    path = real_model("silero_vad.onnx")  # opset 16, everything inside If branches
    model = surgeon.load(path)
    report = convert(model, 18)
    # ReduceMean moved its axes from an attribute to an input in opset 18, inside both branches.
    assert sorted(r.name for r in report.rewired) == ["If_0_else_branch__Inline_0__/ReduceMean",
                                                      "If_0_then_branch__Inline_0__/ReduceMean"]
    assert [r.op for r in report.added] == ["Constant", "Constant"]
    after = to_proto(model)
    onnx.checker.check_model(after, full_check=True)
    rng = np.random.default_rng(0)
    feeds = {"input": rng.standard_normal((2, 512)).astype(np.float32),
             "state": rng.standard_normal((2, 2, 128)).astype(np.float32), "sr": np.array(16000, np.int64)}
    assert_same_outputs(path, after, feeds)


def test_loop_and_if_of_a_scripted_model():
    path = real_model("ctrlflow_script_legacy.onnx")
    model = surgeon.load(path)
    convert(model, 20)
    after = to_proto(model)
    onnx.checker.check_model(after, full_check=True)
    for n in (0, 3):
        feeds = {"x": np.random.default_rng(n).standard_normal((2, 8)).astype(np.float32), "n": np.array(n)}
        assert_same_outputs(path, after, feeds, exact=True)


def test_downgrade_that_the_nodes_allow():
    path = real_model("tiny_yolo_dynamo.onnx")  # opset 20
    model = surgeon.load(path)
    before = to_proto(model)
    convert(model, 17)
    after = to_proto(model)
    assert after.SerializeToString() == only_versions_changed(before, 17, 10)  # the IR version is never lowered
    assert_same_outputs(path, after, random_inputs(path), exact=True)


def test_custom_domain_survives():
    path = real_model("model_foo.onnx")  # devtech::FooOp, opset 13
    model = surgeon.load(path)
    before = to_proto(model)
    convert(model, 18)
    after = to_proto(model)
    assert after.SerializeToString() == only_versions_changed(before, 18, 8)
    assert [(o.domain, o.version) for o in after.opset_import] == [("", 18), ("devtech", 1)]


def test_custom_domain_without_opset_import_survives():
    path = POLYGRAPHY / "custom_op_node.onnx"  # ai.onnx.contrib::NegPos, domain never imported
    if not path.exists():
        pytest.skip(f"{path} not found")
    model = surgeon.load(path)
    convert(model, 17)
    after = to_proto(model)
    assert [(n.domain, n.op_type) for n in after.graph.node] == [("ai.onnx.contrib", "NegPos")]
    assert [(o.domain, o.version) for o in after.opset_import] == [("", 17)]


def test_plugin_op_in_the_default_domain_passes_through(tmp_path):
    proto = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 13]>
        agraph (float[1, 4, 4] boxes, float[1, 4, 2] scores) => (int32[1, 1] n, float[1, 4, 4] b) {
          n, b = EfficientNMS_TRT <max_output_boxes: int = 4> (boxes, scores)
        }""")
    model = surgeon.load(proto)
    convert(model, 17)
    after = to_proto(model)
    assert [(n.domain, n.op_type) for n in after.graph.node] == [("", "EfficientNMS_TRT")]
    assert [(o.domain, o.version) for o in after.opset_import] == [("", 17)]
    surgeon.save(model, tmp_path / "nms.onnx")  # the saver checks plugin ops as custom ops


def test_compatible_local_function_is_kept():
    proto = onnx.parser.parse_model(WITH_FUNCTION.format(rank=3, body="b = Relu (a)"))
    model = surgeon.load(proto)
    convert(model, 18)  # Relu is the same op in opsets 17 and 18
    after = to_proto(model)
    assert after.functions[0].SerializeToString() == proto.functions[0].SerializeToString()
    onnx.checker.check_model(after, full_check=True)
    feeds = {"x": np.arange(-3, 3, dtype=np.float32).reshape(2, 3)}
    assert_same_outputs(proto, after, feeds, exact=True)


def test_same_opset_changes_nothing():
    path = real_model("model_dynamo.onnx")  # opset 18
    model = surgeon.load(path)
    before = to_proto(model).SerializeToString()
    report = convert(model, 18)
    assert to_proto(model).SerializeToString() == before
    assert report.summary() == "step 1 (convert_opset): no change"
    assert report.notes == ["the model is already at opset 18: nothing to convert"]


def test_converting_twice_is_converting_once():
    model = surgeon.load(real_model("model.onnx"))
    convert(model, 17)
    once = to_proto(model).SerializeToString()
    convert(model, 17)
    assert to_proto(model).SerializeToString() == once


def test_external_data_model(tmp_path):
    path = POLYGRAPHY / "ext_weights_same_dir" / "ext_weights.onnx"
    if not path.exists():
        pytest.skip(f"{path} not found")
    model = surgeon.load(path)
    convert(model, 17)
    out = surgeon.save(model, tmp_path / "ext.onnx")
    assert out.data_path is not None
    assert_same_outputs(path, out.path, random_inputs(path), exact=True)


# -- errors: every one before anything changes ------------------------------------------------------


def error_of(model: surgeon.Model, target: int) -> str:
    before = to_proto(model).SerializeToString()
    with pytest.raises(surgeon.StepError) as excinfo:
        convert(model, target)
    assert to_proto(model).SerializeToString() == before
    return str(excinfo.value)


def test_unknown_opset():
    newest = onnx.defs.onnx_opset_version()
    assert error_of(surgeon.load(real_model("model.onnx")), 99) == (
        f"error: step 1 (convert_opset): there is no opset 99: onnx {onnx.__version__} knows opsets "
        f"1 to {newest}\n"
        f"  hint: choose a target between 1 and {newest}")
    # Below 1 is refused by the declared range (also when the recipe is read).
    assert error_of(surgeon.load(real_model("model.onnx")), 0) == (
        "error: step 1 (convert_opset): parameter 'target': must be at least 1, got 0\n"
        f"  hint: choose a target between 1 and {newest}")


def test_incompatible_local_function():
    body = "ax = Constant <value_ints: ints = [1]> ()\n b = ReduceMax <keepdims: int = 1> (a, ax)"
    model = surgeon.load(onnx.parser.parse_model(WITH_FUNCTION.format(rank=1, body=body)))
    assert error_of(model, 18) == (
        "error: step 1 (convert_opset): cannot convert to opset 18: local function 'pkg::Fn' imports opset 17 "
        "and uses ReduceMax, which is defined differently in opset 18; onnx.version_converter does not convert "
        "function bodies\n"
        "  hint: inline the functions first (pass: inline_functions), then convert")


def test_model_without_default_opset():
    path = POLYGRAPHY / "bad_graph_with_no_import_domains.onnx"
    if not path.exists():
        pytest.skip(f"{path} not found")
    assert error_of(surgeon.load(path), 13) == (
        "error: step 1 (convert_opset): the model declares no default (ai.onnx) opset, so there is nothing to "
        "convert\n"
        "  hint: add an opset import for the default domain to the model first")


# -- recipes ------------------------------------------------------------------------------------------


def test_docstring_example_runs_on_a_real_model():
    path = real_model("model.onnx")
    model = surgeon.load(path)
    surgeon.apply(surgeon.parse_recipe(registry.get("convert_opset").example()), model)
    assert model.opset == 17
    assert_same_outputs(path, to_proto(model), random_inputs(path), exact=True)


def test_ready_recipe_runs_on_a_real_model(tmp_path):
    path = real_model("model_keepbn.onnx")  # opset 13, BatchNormalization kept
    model = surgeon.load(path)
    surgeon.apply(RECIPES / "convert_opset.yaml", model)
    out = surgeon.save(model, tmp_path / "out.onnx").path
    assert onnx.load(out).opset_import[0].version == 17
    assert_same_outputs(path, out, random_inputs(path))


# -- down-conversion: surgeon's own adapters (surgeon/graph/downgrade.py) ------------------------------

# Models that onnxruntime cannot run as a whole (devtech::FooOp has no kernel): verified around the op.
NOT_RUNNABLE = {"model_foo.onnx", "model_foo_dynamo.onnx", "model_foo_dynamo_library.onnx", "model_foo_keepbn.onnx"}
DIMS = {"transformer_encoder_dynamo.onnx": {"batch": 2, "seq": 5}}


def meaningful_inputs(name: str, path) -> dict[str, np.ndarray]:
    if name.startswith("silero_vad"):
        return silero_inputs()
    if name == "ch_PP-OCRv4_det_infer.onnx":
        return ocr_det_inputs()
    if name.startswith("ch_PP-OCR"):
        return ocr_inputs()
    return random_inputs(path, dims=DIMS.get(name))


@pytest.mark.parametrize("target", [13, 11])
@pytest.mark.parametrize("name", [n for n in real_model_names() if not n.startswith("polygraphy/")])
def test_every_real_model_reaches_opset_13_and_11(name, target):
    path = real_model(name)
    model = surgeon.load(path)
    before = to_proto(model)
    convert(model, target)
    after = to_proto(model)
    assert [o.version for o in after.opset_import if o.domain in ("", "ai.onnx")] == [target]
    onnx.checker.check_model(after, full_check=True)
    # Nodes of other domains pass through as they were.
    custom = [n.SerializeToString() for n in before.graph.node if n.domain not in ("", "ai.onnx")]
    assert [n.SerializeToString() for n in after.graph.node if n.domain not in ("", "ai.onnx")] == custom
    if name not in NOT_RUNNABLE:
        assert_same_outputs(path, after, meaningful_inputs(name, path))
    else:  # what FooOp reads is compared; what comes after it too when FooOp's output types are known
        report = surgeon.verify(path, after, correspondence=Correspondence(tolerance="reassociated"))
        reads = [(t, True) for n in after.graph.node if n.op_type == "FooOp" for t in n.input]
        compared = [(o.edited_name, o.intermediate) for o in report.outputs]
        assert report.status == "match" and compared in (reads, [("output", False), *reads]), report.summary()


def test_downgrade_of_a_transformer_notes_what_it_assumes():
    path = real_model("transformer_encoder_dynamo.onnx")  # opset 20: LayerNormalization, Reshape allowzero=1
    model = surgeon.load(path)
    report = convert(model, 11)
    assert not any(n.op == "LayerNormalization" for n in model.graph.nodes)
    assert report.notes[:2] == [
        "converted from opset 20 to 11",
        "32 Reshape node(s) with allowzero=1 read a shape computed at run time; they behave the same unless that "
        "shape holds a 0 (an empty tensor) (node 'node_view' (Reshape), node 'node_view_1' (Reshape), "
        "node 'node_view_2' (Reshape) and 29 more)"]
    assert_same_outputs(path, to_proto(model), random_inputs(path, dims=DIMS["transformer_encoder_dynamo.onnx"]))


def test_down_then_up_again():
    path = real_model("tiny_yolo_dynamo.onnx")  # opset 20
    model = surgeon.load(path)
    convert(model, 11)
    convert(model, 17)  # up again through onnx's converter
    after = to_proto(model)
    onnx.checker.check_model(after, full_check=True)
    assert_same_outputs(path, after, random_inputs(path))


HEAD = '<ir_version: 8, opset_import: ["" : {opset}]>\n'

# (case, opset of the model, graph in ONNX text, target, the ops after conversion)
ADAPTER_CASES = [
    ("squeeze-unsqueeze axes input", 13, """g (float[2, 1, 3] x) => (float[2, 3, 1] y) {
        a = Constant <value = int64[1] {1}> ()
        s = Squeeze (x, a)
        b = Constant <value = int64[1] {-1}> ()
        y = Unsqueeze (s, b) }""", 11, ["Squeeze", "Unsqueeze"]),
    ("reducesum axes input", 13, """g (float[2, 3, 4] x) => (float[2, 4] y, float[2, 3, 4] z) {
        a = Constant <value = int64[1] {1}> ()
        y = ReduceSum <keepdims = 0> (x, a)
        z = ReduceSum <noop_with_empty_axes = 1> (x) }""", 11, ["ReduceSum", "Identity"]),
    ("reduce* axes input (18)", 18, """g (float[2, 3, 4] x) => (float[2, 1, 4] y, float[2, 3] z, float[1, 1, 1] w) {
        a = Constant <value = int64[1] {1}> ()
        y = ReduceMean (x, a)
        b = Constant <value = int64[1] {-1}> ()
        z = ReduceMax <keepdims = 0> (x, b)
        w = ReduceL2 (x) }""", 11, ["ReduceMean", "ReduceMax", "ReduceL2"]),
    ("split sizes input", 13, """g (float[2, 6] x) => (float[2, 2] y, float[2, 4] z) {
        s = Constant <value = int64[2] {2, 4}> ()
        y, z = Split <axis = 1> (x, s) }""", 11, ["Split"]),
    ("split num_outputs, uneven, to 13", 18, """g (float[2, 7] x) => (float[2, 3] y, float[2, 3] z, float[2, 1] w) {
        y, z, w = Split <axis = 1, num_outputs = 3> (x) }""", 13, ["Split"]),
    ("split num_outputs, even, to 11", 18, """g (float[6, 2] x) => (float[3, 2] y, float[3, 2] z) {
        y, z = Split <num_outputs = 2> (x) }""", 11, ["Split"]),
    ("clip min/max inputs", 13, """g (float[2, 5] x) => (float[2, 5] y, float[2, 5] z) {
        lo = Constant <value = float {-0.5}> ()
        hi = Constant <value = float {0.25}> ()
        y = Clip (x, lo, hi)
        z = Clip (x, , hi) }""", 10, ["Clip", "Clip"]),
    ("pad pads input", 13, """g (float[2, 3] x) => (float[4, 6] y) {
        p = Constant <value = int64[4] {1, 2, 1, 1}> ()
        v = Constant <value = float {1.5}> ()
        y = Pad (x, p, v) }""", 10, ["Pad"]),
    ("pad axes input", 18, """g (float[2, 3] x) => (float[2, 6] y) {
        p = Constant <value = int64[2] {2, 1}> ()
        a = Constant <value = int64[1] {-1}> ()
        y = Pad <mode = "reflect"> (x, p, , a) }""", 13, ["Pad"]),
    ("resize without roi and scales", 13, """g (float[1, 2, 3, 3] x) => (float[1, 2, 6, 7] y) {
        s = Constant <value = int64[4] {1, 2, 6, 7}> ()
        y = Resize <mode = "linear"> (x, , , s) }""", 11, ["Resize"]),
    ("resize of opset 19", 19, """g (float[1, 2, 3, 3] x) => (float[1, 2, 6, 6] y) {
        s = Constant <value = float[4] {1, 1, 2, 2}> ()
        y = Resize <mode = "nearest", antialias = 0> (x, , s) }""", 11, ["Resize"]),
    ("resize nearest by sizes to opset 10", 13, """g (float[1, 2, 3, 3] x) => (float[1, 2, 6, 9] y) {
        s = Constant <value = int64[4] {1, 2, 6, 9}> ()
        y = Resize <mode = "nearest", coordinate_transformation_mode = "asymmetric", nearest_mode = "floor"> (x, , , s)
        }""", 10, ["Resize"]),
    ("resize linear to Upsample of opset 9", 13, """g (float[1, 2, 3, 3] x) => (float[1, 2, 6, 6] y) {
        s = Constant <value = float[4] {1, 1, 2, 2}> ()
        y = Resize <mode = "linear", coordinate_transformation_mode = "asymmetric"> (x, , s) }""", 9, ["Upsample"]),
    ("resize nearest to Upsample of opset 8", 11, """g (float[1, 2, 3, 3] x) => (float[1, 2, 6, 6] y) {
        r = Constant <value = float[0] {}> ()
        s = Constant <value = float[4] {1, 1, 2, 2}> ()
        y = Resize <coordinate_transformation_mode = "asymmetric", nearest_mode = "floor"> (x, r, s) }""", 8,
     ["Upsample"]),
    ("softmax over the last axis", 13, """g (float[2, 3, 4] x) => (float[2, 3, 4] y) {
        y = Softmax (x) }""", 11, ["Softmax"]),
    ("logsoftmax over a middle axis", 13, """g (float[2, 3, 4] x) => (float[2, 3, 4] y) {
        y = LogSoftmax <axis = 1> (x) }""", 11, ["Transpose", "LogSoftmax", "Transpose"]),
    ("constant value_floats", 13, """g (float[3] x) => (float[3] y) {
        c = Constant <value_floats: floats = [1.0, 2.0, 3.0]> ()
        y = Mul (x, c) }""", 11, ["Mul"]),
    ("shape start/end", 15, """g (float[2, 3, 4, 5] x) => (int64[2] y) {
        y = Shape <start = 1, end = -1> (x) }""", 13, ["Shape", "Slice"]),
    ("reshape allowzero with a constant shape", 14, """g (float[2, 3, 4] x) => (float[6, 4] y) {
        s = Constant <value = int64[2] {6, 4}> ()
        y = Reshape <allowzero = 1> (x, s) }""", 13, ["Reshape"]),
    ("batchnormalization training_mode", 15, """g (float[2, 3, 4] x) => (float[2, 3, 4] y) {
        sc = Constant <value = float[3] {1, 2, 3}> ()
        b = Constant <value = float[3] {0.5, 0, -1}> ()
        m = Constant <value = float[3] {0.1, 0.2, 0.3}> ()
        v = Constant <value = float[3] {1, 4, 9}> ()
        y = BatchNormalization <training_mode = 0> (x, sc, b, m, v) }""", 11, ["BatchNormalization"]),
    ("argmax select_last_index", 13, """g (float[3, 4] x) => (int64[3] y) {
        y = ArgMax <axis = 1, keepdims = 0, select_last_index = 0> (x) }""", 11, ["ArgMax"]),
    ("dropout ratio input", 13, """g (float[3, 4] x) => (float[3, 4] y) {
        r = Constant <value = float {0.2}> ()
        y = Dropout (x, r) }""", 11, ["Dropout"]),
    ("averagepool dilations", 19, """g (float[1, 2, 6, 6] x) => (float[1, 2, 5, 5] y) {
        y = AveragePool <kernel_shape = [2, 2], dilations = [1, 1]> (x) }""", 11, ["AveragePool"]),
    ("quantization per tensor", 13, """g (float[2, 3] x) => (float[2, 3] y) {
        s = Constant <value = float {0.05}> ()
        z = Constant <value = uint8 {128}> ()
        q = QuantizeLinear <axis = 1> (x, s, z)
        y = DequantizeLinear <axis = 1> (q, s, z) }""", 11, ["QuantizeLinear", "DequantizeLinear"]),
    ("layernormalization over the last axis", 17, """g (float[2, 3, 4] x) => (float[2, 3, 4] y) {
        s = Constant <value = float[4] {1, 2, 0.5, -1}> ()
        b = Constant <value = float[4] {0, 0.1, 0.2, 0.3}> ()
        y = LayerNormalization <epsilon = 0.001> (x, s, b) }""", 11,
     ["ReduceMean", "Sub", "Mul", "ReduceMean", "Add", "Sqrt", "Div", "Mul", "Add"]),
    ("layernormalization of float16 from axis 1", 17, """g (float16[2, 3, 4] x) => (float16[2, 3, 4] y) {
        s = Constant <value = float16[3, 4] {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}> ()
        y = LayerNormalization <axis = 1> (x, s) }""", 13,
     ["Cast", "Flatten", "ReduceMean", "Sub", "Mul", "ReduceMean", "Add", "Sqrt", "Div", "Shape", "Reshape", "Cast",
      "Mul"]),
    ("layernormalization to opset 10", 17, """g (float[2, 3, 4] x) => (float[2, 3, 4] y) {
        s = Constant <value = float[4] {1, 2, 0.5, -1}> ()
        y = LayerNormalization (x, s) }""", 10,
     ["Flatten", "ReduceMean", "Sub", "Mul", "ReduceMean", "Add", "Sqrt", "Div", "Shape", "Reshape", "Mul"]),
    ("shape start/end to opset 9", 15, """g (float[2, 3, 4, 5] x) => (int64[3] y) {
        y = Shape <start = -3> (x) }""", 9, ["Shape", "Slice"]),
    ("scatterelements reduction", 18, """g (float[4, 4] d, int64[2, 4] i, float[2, 4] u)
        => (float[4, 4] y, float[4, 4] z) {
        y = ScatterElements <reduction = "none"> (d, i, u)
        z = ScatterElements <reduction = "add"> (d, i, u) }""", 16, ["ScatterElements", "ScatterElements"]),
    ("gelu", 20, """g (float[2, 8] x) => (float[2, 8] y) {
        y = Gelu (x) }""", 11, ["Mul", "Erf", "Add", "Mul", "Mul"]),
    ("gelu tanh", 20, """g (float[2, 8] x) => (float[2, 8] y) {
        y = Gelu <approximate = "tanh"> (x) }""", 13, ["Mul", "Mul", "Mul", "Add", "Mul", "Tanh", "Add", "Mul", "Mul"]),
    ("mish", 18, """g (float[2, 8] x) => (float[2, 8] y) {
        y = Mish (x) }""", 11, ["Softplus", "Tanh", "Mul"]),
    ("hardswish", 14, """g (float[2, 8] x) => (float[2, 8] y) {
        y = HardSwish (x) }""", 11, ["HardSigmoid", "Mul"]),
    ("castlike", 15, """g (float[2, 3] x, int32[1] t) => (int32[2, 3] y) {
        y = CastLike (x, t) }""", 11, ["Cast"]),
    ("greaterorequal and lessorequal", 12, """g (float[2, 3] a, float[2, 3] b) => (bool[2, 3] y, bool[2, 3] z) {
        y = GreaterOrEqual (a, b)
        z = LessOrEqual (a, b) }""", 11, ["Greater", "Equal", "Or", "Less", "Equal", "Or"]),
]


@pytest.mark.parametrize("opset, text, target, ops", [c[1:] for c in ADAPTER_CASES], ids=[c[0] for c in ADAPTER_CASES])
def test_adapter(opset, text, target, ops):
    proto = onnx.parser.parse_model(HEAD.format(opset=opset) + text)
    model = surgeon.load(proto)
    convert(model, target)
    after = to_proto(model)
    assert [n.op_type for n in after.graph.node if n.op_type != "Constant"] == ops
    read = {i for n in after.graph.node for i in n.input} | {o.name for o in after.graph.output}
    assert all(n.output[0] in read for n in after.graph.node)  # constants that only fed a moved input are gone
    assert [o.version for o in after.opset_import] == [target]
    onnx.checker.check_model(after, full_check=True)
    feeds = random_inputs(proto)
    if "a" in feeds:  # comparisons: make some elements equal
        feeds["b"][0] = feeds["a"][0]
    assert_same_outputs(proto, after, feeds)


def test_quantization_per_axis_of_a_real_model_is_refused():
    model = surgeon.load(real_model("polygraphy/qdq_conv.onnx"))  # opset 13, scale per channel
    assert error_of(model, 11) == (
        "error: step 1 (convert_opset): cannot convert from opset 13 to 11: node 'onnx_graphsurgeon_node_1' "
        "(QuantizeLinear) has no form at opset 11: its scale 'y_scale' holds 3 values, and quantization per axis "
        "came in opset 13; node 'onnx_graphsurgeon_node_3' (DequantizeLinear) has no form at opset 11: its scale "
        "'y_scale' holds 3 values, and quantization per axis came in opset 13\n"
        "  hint: choose a later target opset, or edit those nodes first (surgeon explain convert_opset lists the "
        "conversions it knows)")


def test_adapters_inside_if_branches():
    proto = onnx.parser.parse_model(HEAD.format(opset=17) + """g (bool c, float[2, 1, 4] x) => (float[2, 4] y) {
        y = If (c) <then_branch = t () => (float[2, 4] ty) {
            a = Constant <value = int64[1] {1}> ()
            ty = Squeeze (x, a) }, else_branch = e () => (float[2, 4] ey) {
            s = Constant <value = float[4] {1, 1, 1, 1}> ()
            q = Constant <value = int64[1] {1}> ()
            n = LayerNormalization (x, s)
            ey = Squeeze (n, q) }> }""")
    model = surgeon.load(proto)
    convert(model, 11)
    after = to_proto(model)
    onnx.checker.check_model(after, full_check=True)
    then, other = after.graph.node[0].attribute
    assert [n.op_type for n in then.g.node] == ["Squeeze"]
    assert "LayerNormalization" not in [n.op_type for n in other.g.node]
    x = np.random.default_rng(0).standard_normal((2, 1, 4)).astype(np.float32)
    for c in (True, False):
        assert_same_outputs(proto, after, {"c": np.array(c), "x": x})


def test_upgrade_still_uses_onnx_converter_and_keeps_adapted_nodes():
    proto = onnx.parser.parse_model(HEAD.format(opset=11) + """g (float[2, 1, 3] x) => (float[2, 3] y) {
        y = Squeeze <axes = [1]> (x) }""")
    model = surgeon.load(proto)
    convert(model, 13)
    after = to_proto(model)
    assert [n.op_type for n in after.graph.node] == ["Constant", "Squeeze"]  # axes became an input
    assert_same_outputs(proto, after, random_inputs(proto), exact=True)


# -- down-conversion errors: the node, the op, why, and nothing changed ------------------------------


def text_model(opset: int, text: str) -> surgeon.Model:
    return surgeon.load(onnx.parser.parse_model(HEAD.format(opset=opset) + text))


def test_error_names_an_unnamed_node_by_what_it_writes_and_where():
    model = text_model(13, """g (bool c, float[2, 1, 3] x, int64[1] a) => (float[2, 3] y) {
        y = If (c) <then_branch = t () => (float[2, 3] ty) { ty = Squeeze (x, a) },
                    else_branch = e () => (float[2, 3] ey) { ey = Squeeze (x, a) }> }""")
    model.graph.nodes[0].name = "cond"
    assert error_of(model, 11) == (
        "error: step 1 (convert_opset): cannot convert from opset 13 to 11: an unnamed Squeeze node writing 'ty' in "
        "the then_branch of node 'cond' (If) has no form at opset 11: its axes come from 'a', which is computed at "
        "run time, and opset 11 needs them as an attribute (fold_constants may make them constant); an unnamed "
        "Squeeze node writing 'ey' in the else_branch of node 'cond' (If) has no form at opset 11: its axes come "
        "from 'a', which is computed at run time, and opset 11 needs them as an attribute (fold_constants may make "
        "them constant)\n"
        "  hint: choose a later target opset, or edit those nodes first (surgeon explain convert_opset lists the "
        "conversions it knows)")


def test_error_for_an_op_without_decomposition():
    model = text_model(14, """g (float[3, 3] x) => (float[3, 3] y) { y = Trilu (x) }""")
    model.graph.nodes[0].name = "/blk/tril"
    assert error_of(model, 13) == (
        "error: step 1 (convert_opset): cannot convert from opset 14 to 13: node '/blk/tril' (Trilu) has no form at "
        "opset 13: Trilu first appeared in opset 14, and surgeon has no decomposition of it into older ops\n"
        "  hint: choose a later target opset, or edit those nodes first (surgeon explain convert_opset lists the "
        "conversions it knows)")


def test_error_for_a_change_without_adapter_and_for_types():
    model = text_model(14, """g (float[3, 4] x, int8[3] i) => (float[3, 2] v, int8[3] r) {
        k = Constant <value = int64[1] {2}> ()
        v, ix = TopK (x, k)
        r = Relu (i) }""")
    model.graph.nodes[1].name = "/head/topk"
    model.graph.nodes[2].name = "/head/relu"
    assert error_of(model, 10) == (
        "error: step 1 (convert_opset): cannot convert from opset 14 to 10: node '/head/topk' (TopK) has no form at "
        "opset 10: TopK changed in opset 11, and surgeon has no adapter that takes it back to its opset-10 form; "
        "node '/head/relu' (Relu) has no form at opset 10: its input 'i' is int8, and Relu at opset 10 takes only "
        "float16, float, double\n"
        "  hint: choose a later target opset, or edit those nodes first (surgeon explain convert_opset lists the "
        "conversions it knows)")


def test_error_for_a_resize_that_older_opsets_cannot_express():
    model = text_model(13, """g (float[1, 2, 3, 3] x) => (float[1, 2, 6, 6] y) {
        s = Constant <value = float[4] {1, 1, 2, 2}> ()
        y = Resize <mode = "linear", coordinate_transformation_mode = "pytorch_half_pixel"> (x, , s) }""")
    model.graph.nodes[1].name = "/up/Resize"
    assert error_of(model, 10) == (
        "error: step 1 (convert_opset): cannot convert from opset 13 to 10: node '/up/Resize' (Resize) has no form "
        "at opset 10: its coordinate_transformation_mode 'pytorch_half_pixel' has no equivalent at opset 10, where "
        "Resize knows only 'asymmetric'\n"
        "  hint: choose a later target opset, or edit those nodes first (surgeon explain convert_opset lists the "
        "conversions it knows)")


def test_upsample_goes_up_through_onnx_converter():
    proto = onnx.parser.parse_model(HEAD.format(opset=9) + """g (float[1, 2, 3, 3] x) => (float[1, 2, 6, 6] y) {
        s = Constant <value = float[4] {1, 1, 2, 2}> ()
        y = Upsample (x, s) }""")
    model = surgeon.load(proto)
    convert(model, 11)
    after = to_proto(model)
    assert [n.op_type for n in after.graph.node if n.op_type != "Constant"] == ["Resize"]
    assert_same_outputs(proto, after, random_inputs(proto), exact=True)


def test_error_for_a_layer_norm_whose_statistics_are_used():
    model = text_model(17, """g (float[2, 4] x, float[4] s) => (float[2, 4] y, float[2, 1] m) {
        y, m = LayerNormalization (x, s) }""")
    model.graph.nodes[0].name = "/blk/ln"
    assert error_of(model, 11) == (
        "error: step 1 (convert_opset): cannot convert from opset 17 to 11: node '/blk/ln' (LayerNormalization) has "
        "no form at opset 11: its Mean or InvStdDev output is used (only the normalized output is decomposed)\n"
        "  hint: choose a later target opset, or edit those nodes first (surgeon explain convert_opset lists the "
        "conversions it knows)")


def test_error_lists_five_nodes_and_counts_the_rest():
    body = "\n".join(f"y{i} = Trilu (x)" for i in range(7))
    outs = ", ".join(f"float[2, 2] y{i}" for i in range(7))
    model = text_model(14, f"g (float[2, 2] x) => ({outs}) {{ {body} }}")
    message = error_of(model, 13)
    assert message.count("has no form at opset 13") == 5 and "; and 2 more node(s)\n" in message
