"""convert_opset: onnx.version_converter with readable errors, kept metadata and custom domains."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.defs
import onnx.parser
import pytest
from util import POLYGRAPHY, RECIPES, assert_same_outputs, random_inputs, real_model

import surgeon
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
    assert report.summary() == "step 1 (convert_opset): changed"
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


def test_downgrade_below_an_op_of_the_model():
    model = surgeon.load(real_model("transformer_encoder_dynamo.onnx"))
    assert error_of(model, 16) == (
        "error: step 1 (convert_opset): cannot convert to opset 16: LayerNormalization (since opset 17) did not "
        "exist yet in opset 16; used by node 'node_layer_norm' (LayerNormalization), node 'node_layer_norm_1' "
        "(LayerNormalization), node 'node_layer_norm_2' (LayerNormalization), node 'node_layer_norm_3' "
        "(LayerNormalization), node 'node_layer_norm_4' (LayerNormalization) and 3 more\n"
        "  hint: choose target 17 or later, or replace those nodes first")


def test_converter_without_adapter_names_the_nodes():
    model = surgeon.load(real_model("model.onnx"))
    assert error_of(model, 11) == (
        "error: step 1 (convert_opset): onnx.version_converter cannot convert Relu nodes "
        "(node '/block1/block1.2/Relu' (Relu), node '/block2/block2.2/Relu' (Relu)) from opset 13 to 11: "
        "No Adapter To Version 12 for Relu\n"
        "  hint: choose another target opset (the converter has no adapter for this op between these versions), "
        "or replace those nodes first")


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
