"""The ready recipes in recipes/: all valid, every built-in pass shown in one,
and each recipe of this file run on a real model (the others are run by the
tests of their passes)."""

from __future__ import annotations

import glob
import os

import numpy as np
import onnx
import pytest
from util import RECIPES, assert_same_outputs, random_inputs, real_model, run

import surgeon
from surgeon.io.export import to_proto

ALL = sorted(glob.glob(str(RECIPES / "*.yaml")))


@pytest.mark.parametrize("path", ALL, ids=os.path.basename)
def test_every_recipe_is_valid_and_explains_itself(path):
    recipe = surgeon.load_recipe(path)
    assert recipe.description
    assert open(path).read().startswith("#"), "a ready recipe starts with a comment saying what it is for"


def test_every_builtin_pass_has_a_ready_recipe():
    used = {step.pass_name for path in ALL for step in surgeon.load_recipe(path).steps}
    builtin = {spec.name for spec in surgeon.registry if spec.source == "builtin"}
    assert builtin - used == set()


def _apply(recipe: str, model_name: str) -> surgeon.Model:
    model = surgeon.load(real_model(model_name))
    surgeon.apply(RECIPES / recipe, model)
    onnx.checker.check_model(to_proto(model), full_check=True)
    return model


def test_debug_outputs():
    model = _apply("debug_outputs.yaml", "model.onnx")
    assert [t.name for t in model.graph.outputs] == ["output", "/block1/block1.2/Relu_output_0",
                                                      "/block2/block2.0/Conv_output_0"]
    feeds = random_inputs(real_model("model.onnx"), dims={"N": 2})
    got = run(model, feeds)
    assert np.array_equal(got["output"], run(real_model("model.onnx"), feeds)["output"])
    activation = got["/block1/block1.2/Relu_output_0"]
    assert activation.ndim == 4 and activation.shape[0] == 2 and activation.min() >= 0


def test_cut_at_features():
    model = _apply("cut_at_features.yaml", "model.onnx")
    assert [n.op for n in model.graph.nodes] == ["Conv", "Relu"]
    assert [t.name for t in model.graph.outputs] == ["features"]


def test_clip_activations():
    model = _apply("clip_activations.yaml", "model.onnx")
    assert [n.op for n in model.graph.nodes] == ["Conv", "Relu", "Clip", "Conv", "Relu"]
    feeds = {"input": np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32) * 50}
    original = surgeon.load(real_model("model.onnx"))
    surgeon.run_pass(original, "add_outputs", outputs=["/block1/block1.2/Relu_output_0"])
    relu = run(original, feeds)["/block1/block1.2/Relu_output_0"]
    assert model.graph.nodes[2].name == "/block1/relu6"
    surgeon.run_pass(model, "add_outputs", outputs=[model.graph.nodes[2].outputs[0].name])
    clipped = run(model, feeds)[model.graph.outputs[-1].name]
    assert relu.max() > 6
    assert np.array_equal(clipped, np.clip(relu, 0, 6))


def test_strip_export_prefixes_keeps_the_outputs():
    path = real_model("tiny_yolo_legacy.onnx")
    model = _apply("strip_export_prefixes.yaml", "tiny_yolo_legacy.onnx")
    names = [n.name for n in model.graph.nodes]
    assert not any(name.startswith("/stem/") for name in names)
    assert any(name.startswith("stem.") for name in names)
    assert any(t.name == "stem_out" for n in model.graph.nodes for t in n.outputs)
    assert_same_outputs(path, model, random_inputs(path, dims={"N": 1}), exact=True)


def test_fixed_input_shape():
    path = real_model("tiny_yolo_legacy.onnx")
    model = _apply("fixed_input_shape.yaml", "tiny_yolo_legacy.onnx")
    assert model.graph.inputs[0].shape == ["batch", 3, 320, 320]
    assert model.graph.outputs[0].shape[0] == "batch"
    assert_same_outputs(path, model, random_inputs(path, dims={"N": 2}), exact=True)


@pytest.mark.parametrize("name", ["tiny_yolo_legacy.onnx", "ctrlflow_script_legacy.onnx",
                                  "transformer_encoder_dynamo.onnx"])
def test_tidy_preserves_outputs_and_is_idempotent(name):
    path = real_model(name)
    model = _apply("tidy.yaml", name)
    assert_same_outputs(path, model, random_inputs(path, dims={"N": 2, "batch": 2, "seq": 5}), exact=True)
    once = to_proto(model).SerializeToString()
    result = surgeon.apply(RECIPES / "tidy.yaml", model)
    assert to_proto(model).SerializeToString() == once
    assert not any(r.removed or r.added for r in result.steps)


def test_fuse_for_inference_folds_batchnorm():
    path = real_model("model_keepbn.onnx")
    before = [n.op_type for n in onnx.load(path).graph.node]
    assert "BatchNormalization" in before
    model = _apply("fuse_for_inference.yaml", "model_keepbn.onnx")
    assert "BatchNormalization" not in [n.op for n in model.graph.nodes]
    assert len(model.graph.nodes) < len(before)
    assert_same_outputs(path, model, random_inputs(path, dims={"N": 3}))


def test_declare_plugin_op_gets_shapes_past_fooop():
    model = _apply("declare_plugin_op.yaml", "model_foo.onnx")
    foo = next(n for n in model.graph.nodes if n.op == "FooOp")
    reader = next(n for n in model.graph.nodes if foo.outputs[0] in n.inputs)
    assert foo.outputs[0].shape == ["N", 16, 32, 32] and str(foo.outputs[0].dtype) == "float32"
    assert reader.outputs[0].shape == ["N", 16, 32, 32]
    # Without the declaration, the exporter's made-up names for FooOp's dims spread behind it.
    plain = surgeon.load(real_model("model_foo.onnx"))
    surgeon.run_pass(plain, "infer_shapes")
    plain_foo = next(n for n in plain.graph.nodes if n.op == "FooOp")
    plain_reader = next(n for n in plain.graph.nodes if plain_foo.outputs[0] in n.inputs)
    assert plain_reader.outputs[0].shape == ["FooOp/FooOp_output_0_dim_0", 16, None, None]


def test_merge_preprocess_equals_running_both_models():
    model = _apply("merge_preprocess.yaml", "tiny_yolo_legacy.onnx")
    assert model.opset == 17 and [t.name for t in model.graph.inputs] == ["image"]
    feeds = {"image": np.random.default_rng(0).integers(0, 256, (1, 320, 320, 3)).astype(np.uint8)}
    pre = run(RECIPES.parent / "fixtures" / "preprocess_bgr_op11.onnx", feeds)["preprocessed"]
    expected = run(real_model("tiny_yolo_legacy.onnx"), {"images": pre})
    got = run(model, feeds)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-4, err_msg=name)


def test_opset11_for_legacy_runtimes_on_a_transformer():
    path = real_model("transformer_encoder_dynamo.onnx")  # opset 20: LayerNormalization, Reshape allowzero
    model = _apply("opset11_for_legacy_runtimes.yaml", "transformer_encoder_dynamo.onnx")
    after = to_proto(model)
    assert [(o.domain, o.version) for o in after.opset_import] == [("", 11)]
    assert "LayerNormalization" not in {n.op_type for n in after.graph.node}
    assert_same_outputs(path, after, random_inputs(path, dims={"batch": 2, "seq": 5}))


# -- --verify on every ready recipe, on the real model it is written for ----------------------------

# recipe -> (model, extra arguments). Models are real ones from fixtures/ (or built from them).
VERIFIED_ON = {
    "clip_activations": ("model.onnx", []),
    "convert_opset": ("model_keepbn.onnx", []),
    "cut_at_features": ("model.onnx", []),
    "debug_outputs": ("model.onnx", []),
    "declare_plugin_op": ("model_foo.onnx", []),  # compares what devtech::FooOp reads; its outputs cannot run
    "decompose_layernorm": ("transformer_encoder_dynamo.onnx", []),
    "ffn_to_plugin": ("transformer_encoder_dynamo.onnx", []),  # compares what the TensorRT plugin reads
    "extract_backbone": ("tiny_yolo_legacy.onnx", []),
    "fix_batch": ("tiny_yolo_dynamo.onnx", []),
    "fixed_input_shape": ("tiny_yolo_legacy.onnx", []),
    "fold_constants": ("ch_PP-OCRv4_rec_infer.onnx", ["--dim", "?=48", "--dim", "p2o.DynamicDimension.1=320"]),
    "fooop_to_plugin": ("model_foo.onnx", []),
    "fuse_for_inference": ("model_keepbn.onnx", []),
    "inline_functions": ("transformer_encoder_dynamo.onnx with local functions", []),
    "make_batch_dynamic": ("tiny_yolo_legacy.onnx at batch 1", []),
    "merge_preprocess": ("tiny_yolo_legacy.onnx", []),
    "opset11_for_legacy_runtimes": ("transformer_encoder_dynamo.onnx", []),
    "rename_io": ("model.onnx", []),
    "set_metadata": ("model_dynamo.onnx", []),
    "simplify": ("tiny_yolo_legacy.onnx", []),
    "strip_export_prefixes": ("tiny_yolo_legacy.onnx", []),
    "strip_fooop": ("model_foo.onnx", ["--reference", "model.onnx"]),
    "tidy": ("tiny_yolo_legacy.onnx", []),
    "to_fp16": ("model_dynamo.onnx", []),
    "uint8_input": ("tiny_yolo_legacy.onnx", []),
    "yolov8_deploy": ("yolov8 head on tiny_yolo_legacy.onnx", []),
    "yolov8_nms": ("yolov8 head on tiny_yolo_legacy.onnx", []),
    "yolov8_nms_trt": ("yolov8 head on tiny_yolo_legacy.onnx", []),
}


def test_every_ready_recipe_has_a_model_to_verify_on():
    assert sorted(VERIFIED_ON) == sorted(os.path.basename(p)[:-5] for p in ALL)


def _model_for(name: str, tmp_path) -> str:
    from detectors import with_batch, yolov8_from_tiny_yolo

    if name == "transformer_encoder_dynamo.onnx with local functions":
        from test_pass_functions import encoder_layers, functionize

        proto = onnx.load(real_model("transformer_encoder_dynamo.onnx"))
        onnx.save(functionize(proto, encoder_layers(proto)), tmp_path / "encoder_functions.onnx")
        return str(tmp_path / "encoder_functions.onnx")
    if name == "tiny_yolo_legacy.onnx at batch 1":
        model = surgeon.load(with_batch(onnx.load(real_model("tiny_yolo_legacy.onnx")), 1))
        surgeon.run_pass(model, "fold_constants")
        return str(surgeon.save(model, tmp_path / "tiny_yolo_b1.onnx").path)
    if name == "yolov8 head on tiny_yolo_legacy.onnx":
        onnx.save(yolov8_from_tiny_yolo(onnx.load(real_model("tiny_yolo_legacy.onnx"))), tmp_path / "v8.onnx")
        return str(tmp_path / "v8.onnx")
    return str(real_model(name))


@pytest.mark.parametrize("recipe", sorted(VERIFIED_ON))
def test_verify_compares_something_real_on_every_ready_recipe(recipe, tmp_path):
    """`apply --verify` on every ready recipe: it matches, compares at least one output that depends on the
    inputs (not constant, zero, NaN or the same for other inputs), and says what it compared with what."""
    import io
    import json

    from surgeon.cli import main

    model_name, extra = VERIFIED_ON[recipe]
    model = _model_for(model_name, tmp_path)
    extra = [str(real_model(a)) if a.endswith(".onnx") else a for a in extra]
    out, err = io.StringIO(), io.StringIO()
    code = main(["apply", str(RECIPES / f"{recipe}.yaml"), model, "-o", str(tmp_path / "out.onnx"), "--verify",
                 "--report", str(tmp_path / "r.json"), *extra], out=out, err=err)
    assert (code, err.getvalue()) == (0, ""), out.getvalue()
    report = json.loads((tmp_path / "r.json").read_text())["verification"]
    assert report["status"] == "match"
    informative = [o for o in report["outputs"] if o["uninformative"] is None and o["ok"]]
    assert informative, report
    assert all(o["compared_with"] for o in report["outputs"])
    assert report["input_shapes"] and f"  inputs: {', '.join(f'{n} {s}' for n, s in report['input_shapes'].items())}" \
        in out.getvalue()
    for o in informative:
        assert f"  {o['edited_name']}" in out.getvalue()


def test_decompose_layernorm_keeps_the_transformers_numbers():
    path = real_model("transformer_encoder_dynamo.onnx")
    norms = [n.name for n in onnx.load(path, load_external_data=False).graph.node if n.op_type == "LayerNormalization"]
    model = _apply("decompose_layernorm.yaml", "transformer_encoder_dynamo.onnx")
    ops = [n.op for n in model.graph.nodes]
    assert "LayerNormalization" not in ops and ops.count("Sqrt") == len(norms) == 8
    assert [n.name for n in model.graph.nodes if n.op == "Add" and n.name in norms] == norms  # y's writer keeps it
    assert_same_outputs(path, model, random_inputs(path, dims={"batch": 2, "seq": 5}))


def test_ffn_to_plugin_leaves_one_node_in_place_of_the_block(tmp_path):
    path = real_model("transformer_encoder_dynamo.onnx")
    model = surgeon.load(path)
    before = len(model.graph.nodes)
    surgeon.apply(RECIPES / "ffn_to_plugin.yaml", model)
    assert len(model.graph.nodes) == before - 4
    plugin = next(n for n in model.graph.nodes if n.op == "FeedForward_TRT")
    assert (plugin.name, plugin.domain or "") == ("enc.layers.0.ffn", "")
    assert [t.name for t in plugin.inputs] == ["layer_norm", "val_89", "enc.layers.0.linear1.bias", "val_91",
                                               "enc.layers.0.linear2.bias"]
    assert [t.name for t in plugin.outputs] == ["linear_3"] and plugin.attrs == {"activation": "relu",
                                                                                 "plugin_version": "1"}
    assert [n.op for n in plugin.outputs[0].outputs] == ["Add"]  # the residual connection reads it as before
    surgeon.save(model, tmp_path / "out.onnx")
    saved = onnx.load(tmp_path / "out.onnx")
    assert [n.op_type for n in saved.graph.node].count("FeedForward_TRT") == 1
