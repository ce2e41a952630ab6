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
