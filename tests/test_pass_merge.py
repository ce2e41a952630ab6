"""merge: another model glued in front of or behind ours, across opsets."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import pytest

import surgeon
from surgeon.errors import StepError
from surgeon.workflow import apply_file
from tests.util import error_of, real_model, run

PRE = Path(__file__).resolve().parents[1] / "fixtures" / "preprocess_bgr_op11.onnx"  # make_preprocess.py

# A post-processing model at opset 18 (ReduceMax takes its axes as an input there), with names that
# collide with model.onnx's.
POST = """
<ir_version: 9, opset_import: ["" : 18]>
post (float[N, 16, 32, 32] features) => (float[N, 16] scores, int64[N, 1] best) {
    axes = Constant <value = int64[2] {2, 3}> ()
    pooled = ReduceMax <keepdims = 0> (features, axes)
    output = Softmax <axis = 1> (pooled)
    scores = Identity (output)
    best = ArgMax <axis = 1, keepdims = 1> (output)
}
"""


def _chain(first, second, feeds, link: dict[str, str]):
    """Outputs of running ``first`` then ``second`` in onnxruntime, ``link``: first's output -> second's input."""
    a = run(first, feeds)
    return a, run(second, {**feeds, **{dst: a[src] for src, dst in link.items()}})


def _image(n: int = 2) -> dict[str, np.ndarray]:
    return {"image": np.random.default_rng(0).integers(0, 256, (n, 320, 320, 3)).astype(np.uint8)}


def _recipe(tmp_path, body: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text("version: 1\nsteps:\n  - pass: merge\n    with:\n" + body)
    return str(path)


def test_before_converts_an_opset_11_preprocessor_to_the_detector_s_opset_17(tmp_path):
    shutil.copy(PRE, tmp_path / "pre.onnx")
    recipe = _recipe(tmp_path, "      model: pre.onnx\n      position: before\n"
                               "      connect: {preprocessed: images}\n")
    result = apply_file(recipe, real_model("tiny_yolo_legacy.onnx"), tmp_path / "merged.onnx")
    merged = onnx.load(tmp_path / "merged.onnx")
    detector = onnx.load(real_model("tiny_yolo_legacy.onnx"))
    assert [(o.domain, o.version) for o in merged.opset_import] == [("", 17)]
    assert merged.ir_version == 8
    assert [i.name for i in merged.graph.input] == ["image"]
    assert [o.name for o in merged.graph.output] == [o.name for o in detector.graph.output]
    split = next(n for n in merged.graph.node if n.op_type == "Split")
    assert len(split.input) == 2 and not split.attribute[1:]  # sizes moved to an input (opset 13)
    assert {p.key: p.value for p in merged.metadata_props}["preprocess"] == "bgr_nhwc_uint8_to_rgb_nchw_unit"
    assert result.applied.steps[0].notes[:2] == ["merged pre.onnx before the model (6 nodes)",
                                                 "converted pre.onnx from opset 11 to 17"]
    feeds = _image()
    _, expected = _chain(PRE, real_model("tiny_yolo_legacy.onnx"), feeds, {"preprocessed": "images"})
    got = run(tmp_path / "merged.onnx", feeds)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-4, err_msg=name)


def test_after_converts_our_model_up_and_renames_only_what_collides(tmp_path):
    (tmp_path / "post.onnx").write_bytes(onnx.parser.parse_model(POST).SerializeToString())
    ours = surgeon.load(real_model("model.onnx"))
    names_before = {n.name for n in ours.graph.nodes}
    report = surgeon.run_pass(ours, "merge", model=str(tmp_path / "post.onnx"), position="after",
                              connect={"features": "output"}, prefix="post.")
    assert ours.opset == 18
    assert [t.name for t in ours.graph.inputs] == ["input"]
    assert [t.name for t in ours.graph.outputs] == ["scores", "best"]
    assert report.details["renamed"] == {"output": "post.output"}
    assert {n.name for n in ours.graph.nodes} >= names_before
    assert report.notes == ["merged post.onnx after the model (5 nodes)", "converted our model from opset 13 to 18",
                            "raised the IR version from 8 to 9 (post.onnx's)",
                            "renamed 1 name(s) of post.onnx that collide with ours, with prefix 'post.'"]
    saved = tmp_path / "merged.onnx"
    surgeon.save(ours, saved)
    feeds = {"input": np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)}
    _, expected = _chain(real_model("model.onnx"), tmp_path / "post.onnx", feeds, {"output": "features"})
    got = run(saved, feeds)
    np.testing.assert_allclose(got["scores"], expected["scores"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["best"], expected["best"])


def test_external_weights_of_the_other_model_end_up_in_the_output_s_data_file(tmp_path):
    other = tmp_path / "other" / "pre.onnx"
    other.parent.mkdir()
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        pre (float[N, 3, 32, 32] raw) => (float[N, 3, 32, 32] normed) {
            normed = Add (raw, bias)
        }
    """)
    bias = np.random.default_rng(2).standard_normal((1, 3, 32, 32)).astype(np.float32)
    proto.graph.initializer.append(onnx.numpy_helper.from_array(bias, "bias"))
    onnx.save(proto, other, save_as_external_data=True, location="pre.data", size_threshold=0)
    recipe = _recipe(tmp_path, "      model: other/pre.onnx\n      position: before\n"
                               "      connect: {normed: input}\n")
    apply_file(recipe, real_model("model.onnx"), tmp_path / "merged.onnx")
    merged = onnx.load(tmp_path / "merged.onnx", load_external_data=False)
    locations = {e.value for t in merged.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"merged.onnx.data"}
    assert (tmp_path / "merged.onnx.data").stat().st_size >= bias.nbytes
    feeds = {"raw": np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)}
    got = run(tmp_path / "merged.onnx", feeds)
    expected = run(real_model("model.onnx"), {"input": feeds["raw"] + bias})
    np.testing.assert_allclose(got["output"], expected["output"], rtol=1e-5, atol=1e-6)


def test_metadata_clash_keeps_ours_and_is_reported(tmp_path):
    ours = surgeon.load(real_model("tiny_yolo_legacy.onnx"))
    ours.metadata_props = {"author": "detector team"}
    report = surgeon.run_pass(ours, "merge", model=str(PRE), position="before", connect={"preprocessed": "images"})
    assert ours.metadata_props == {"preprocess": "bgr_nhwc_uint8_to_rgb_nchw_unit", "author": "detector team"}
    assert report.notes[-1] == "metadata 'author' differ(s) between the models: ours kept"
    assert report.details["renamed"] == {}


def test_refusals_name_what_is_wrong(tmp_path):
    ours = surgeon.load(real_model("tiny_yolo_legacy.onnx"))
    assert error_of(ours, "merge", model=str(PRE), position="before", connect={"preprocesed": "imgs"}) == (
        "error: cannot merge:\n"
        "  preprocess_bgr_op11.onnx has no graph output 'preprocesed' (its graph outputs: 'preprocessed')\n"
        "  our model has no graph input 'imgs' (its graph inputs: 'images')\n"
        "  hint: 'connect' maps its tensors to ours (before: its outputs -> our inputs; after: its inputs -> our "
        "tensors); run 'surgeon inspect' on both models to see their names"
    )
    small = surgeon.load(real_model("model.onnx"))
    assert error_of(small, "merge", model=str(PRE), position="before", connect={"preprocessed": "input"}) == (
        "error: cannot merge: preprocess_bgr_op11.onnx's 'preprocessed' (float32 [N, 3, 320, 320]) cannot "
        "connect to our 'input' (float32 [N, 3, 32, 32]): dimension 2 differs (320 vs 32)\n"
        "  hint: 'connect' maps its tensors to ours (before: its outputs -> our inputs; after: its inputs -> our "
        "tensors); run 'surgeon inspect' on both models to see their names"
    )
    assert error_of(small, "merge", model=str(tmp_path / "nope.onnx"), position="before", connect={"a": "b"}) == (
        f"error: model to merge not found: {tmp_path / 'nope.onnx'}\n"
        "  hint: 'model' is relative to the recipe's folder (to the current directory for a recipe built in "
        "Python); check the path"
    )
    foo = surgeon.load(real_model("model_foo.onnx"))
    clash = tmp_path / "clash.onnx"
    clash.write_bytes(onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 13, "devtech" : 2]>
        g (float[N, 3, 32, 32] x) => (float[N, 3, 32, 32] y) { y = devtech.FooOp (x) }
    """).SerializeToString())
    assert error_of(foo, "merge", model=str(clash), position="before", connect={"y": "input"}) == (
        "error: cannot merge: both models import the domain 'devtech' (2 in clash.onnx, 1 in ours) at different "
        "versions\n"
        "  hint: a domain's ops can differ between its versions; re-export one of the models with the other's "
        "version of that domain"
    )


def test_a_failed_conversion_names_the_model_and_leaves_ours_unchanged(tmp_path):
    old = tmp_path / "old.onnx"
    old.write_bytes(onnx.parser.parse_model("""
        <ir_version: 4, opset_import: ["" : 8]>
        g (float[N, 16, 32, 32] x) => (float[N, 16, 64, 64] y) {
            scales = Constant <value = float[4] {1.0, 1.0, 2.0, 2.0}> ()
            y = Upsample <mode = "nearest"> (x, scales)
        }
    """).SerializeToString())
    ours = surgeon.load(real_model("model.onnx"))
    text = error_of(ours, "merge", model=str(old), position="after", connect={"x": "output"})
    assert text == (
        "error: cannot merge: old.onnx is at opset 8 and must be converted to opset 13, but onnx.version_converter "
        "cannot convert the model from opset 8 to 13: required undefined attribute 'scales'\n"
        "  hint: choose another target opset (the converter has no adapter for this op between these versions), "
        "or replace those nodes first"
    )


def test_recipe_step_error_points_at_the_step(tmp_path):
    recipe = _recipe(tmp_path, "      model: missing.onnx\n      position: before\n      connect: {a: b}\n")
    with pytest.raises(StepError) as exc:
        apply_file(recipe, real_model("model.onnx"), tmp_path / "out.onnx")
    assert str(exc.value) == (
        f"{recipe}:3:5: error: step 1 (merge): model to merge not found: {tmp_path / 'missing.onnx'}\n"
        "  hint: 'model' is relative to the recipe's folder (to the current directory for a recipe built in "
        "Python); check the path"
    )
    assert not (tmp_path / "out.onnx").exists()


def test_the_docstring_example_runs_from_a_recipe_file(tmp_path):
    (tmp_path / "fixtures").mkdir()
    (tmp_path / "recipes").mkdir()
    shutil.copy(PRE, tmp_path / "fixtures" / PRE.name)
    recipe = tmp_path / "recipes" / "example.yaml"
    recipe.write_text(surgeon.registry.get("merge").example())
    model = surgeon.load(real_model("tiny_yolo_legacy.onnx"))
    surgeon.apply(recipe, model)
    assert [t.name for t in model.graph.inputs] == ["image"] and model.opset == 17


OURS_FN = """
<ir_version: 8, opset_import: ["" : 17, "local" : 1]>
g (float[N, 4] x) => (float[N, 4] y) {
    y = local.Act (x)
}
<domain: "local", opset_import: ["" : 17]>
Act (a) => (b) { b = Relu (a) }
"""

THEIRS_FN = """
<ir_version: 8, opset_import: ["" : 17, "local" : 1]>
post (float[N, 4] features) => (float[N, 4] z) {
    y = local.Act (features)
    s = ReduceSum <keepdims = 0> (y)
    zero = Constant <value = float {0.0}> ()
    c = Greater (s, zero)
    z = If (c) <then_branch = then_g () => (float[N, 4] o1) { o1 = Neg (y) },
                else_branch = else_g () => (float[N, 4] o2) { o2 = Identity (y) }>
}
<domain: "local", opset_import: ["" : 17]>
Act (a) => (b) { b = Sigmoid (a) }
"""


def test_collisions_inside_if_bodies_and_local_functions_are_renamed(tmp_path):
    (tmp_path / "post.onnx").write_bytes(onnx.parser.parse_model(THEIRS_FN).SerializeToString())
    ours = surgeon.load(onnx.parser.parse_model(OURS_FN))
    report = surgeon.run_pass(ours, "merge", model=str(tmp_path / "post.onnx"), position="after",
                              connect={"features": "y"})
    assert report.details["renamed"] == {"y": "post.y", "function local::Act": "local::post.Act"}
    assert [(n.op, n.domain) for n in ours.graph.nodes][:2] == [("Act", "local"), ("post.Act", "local")]
    branch = next(n for n in ours.graph.nodes if n.op == "If").attrs["then_branch"]
    assert [t.name for t in branch.nodes[0].inputs] == ["post.y"]
    assert sorted(f.name for f in ours.graph.functions) == ["Act", "post.Act"]
    saved = tmp_path / "merged.onnx"
    surgeon.save(ours, saved)
    x = np.random.default_rng(4).standard_normal((3, 4)).astype(np.float32)
    got = run(saved, {"x": x})
    assert list(got) == ["z"]
    np.testing.assert_allclose(got["z"], -1 / (1 + np.exp(-np.maximum(x, 0))), rtol=1e-6, atol=1e-6)


# -- verification: the contract runs the other model ------------------------------------------------


def test_verify_before_feeds_the_original_through_the_other_model(tmp_path):
    shutil.copy(PRE, tmp_path / "pre.onnx")
    recipe = _recipe(tmp_path, "      model: pre.onnx\n      position: before\n"
                               "      connect: {preprocessed: images}\n")
    result = apply_file(recipe, real_model("tiny_yolo_legacy.onnx"), tmp_path / "merged.onnx",
                        verify_with=surgeon.workflow.VerifyOptions())
    summary = result.verification.summary()
    assert result.verification.status == "match", summary
    assert (f"image -> 'images' of {real_model('tiny_yolo_legacy.onnx')} fed run through pre.onnx "
            "(its 'preprocessed')") in summary


def test_verify_after_compares_with_the_other_model_run_on_the_original(tmp_path):
    (tmp_path / "post.onnx").write_bytes(onnx.parser.parse_model(POST).SerializeToString())
    recipe = _recipe(tmp_path, "      model: post.onnx\n      position: after\n"
                               "      connect: {features: output}\n")
    result = apply_file(recipe, real_model("model.onnx"), tmp_path / "merged.onnx",
                        verify_with=surgeon.workflow.VerifyOptions())
    summary = result.verification.summary()
    assert result.verification.status == "match", summary
    assert "scores vs scores of the post.onnx run on the original's 'output'" in summary
    assert "best vs best of the post.onnx run on the original's 'output'" in summary

    # A post-processing model that does not compute what it did is caught.
    (tmp_path / "post.onnx").write_bytes(onnx.parser.parse_model(POST.replace("axis = 1>", "axis = 0>", 1))
                                         .SerializeToString())
    wrong = tmp_path / "wrong.onnx"
    shutil.copy(tmp_path / "post.onnx", wrong)
    (tmp_path / "post.onnx").write_bytes(onnx.parser.parse_model(POST).SerializeToString())
    merged = surgeon.load(real_model("model.onnx"))
    surgeon.run_pass(merged, "merge", model=str(wrong), position="after", connect={"features": "output"})
    surgeon.save(merged, tmp_path / "m2.onnx")
    report = surgeon.verify(real_model("model.onnx"), tmp_path / "m2.onnx")
    assert report.status != "match"
