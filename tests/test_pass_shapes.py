"""set_shapes, set_batch, set_dtype and infer_shapes: shapes follow the declared inputs, values never change."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import onnx.parser
import pytest
from util import RECIPES, assert_same_outputs, random_inputs, real_model, run

import surgeon
from surgeon.errors import PassError
from surgeon.graph import shapes as _shape_infer
from surgeon.io.export import to_proto

# -- helpers ------------------------------------------------------------------------------


def call(model, name, **params):
    return surgeon.registry.get(name).call(model, params)


def error_of(model, name, **params) -> str:
    """The full error text; the failed pass must leave the model unchanged."""
    before = to_proto(model).SerializeToString()
    with pytest.raises(PassError) as excinfo:
        call(model, name, **params)
    assert to_proto(model).SerializeToString() == before
    return str(excinfo.value)


def build(text: str, **inits: np.ndarray) -> surgeon.Model:
    """A model from ONNX text; every node is named after its first output; extra initializers by name."""
    proto = onnx.parser.parse_model(text)
    for n in proto.graph.node:
        n.name = n.name or n.output[0]
    proto.graph.initializer.extend(onnx.numpy_helper.from_array(v, k) for k, v in inits.items())
    return surgeon.load(proto)


def dims(vi: onnx.ValueInfoProto):
    return _shape_infer.dims_of(vi)


def io_dims(model: surgeon.Model) -> dict[str, list]:
    g = to_proto(model).graph
    return {vi.name: dims(vi) for vi in list(g.input) + list(g.output)}


def value_info(proto_graph: onnx.GraphProto) -> dict[str, list]:
    return {vi.name: dims(vi) for vi in proto_graph.value_info}


def const_of(model: surgeon.Model, node_name: str, index: int = 1) -> list:
    """The constant values a node reads at input ``index`` (initializer or Constant node)."""
    node = next(n for g in model.graphs() for n in g.nodes if n.name == node_name)
    t = node.inputs[index]
    if hasattr(t, "values"):
        return np.asarray(t.values).tolist()
    return np.asarray(t.inputs[0].attrs["value"].values).tolist()


def node(model: surgeon.Model, name: str):
    return next(n for g in model.graphs() for n in g.nodes if n.name == name)


def assert_batch_separable(model, dims_=None, seed=1, batch=3):
    """Running ``batch`` samples at once gives what ``batch`` single-sample runs give."""
    feeds = random_inputs(model, dims={"N": batch, **(dims_ or {})}, seed=seed)
    assert all(v.shape[0] == batch for v in feeds.values() if v.ndim)
    together = run(model, feeds)
    for i in range(batch):
        alone = run(model, {k: v[i:i + 1] if v.ndim else v for k, v in feeds.items()})
        for name, value in together.items():
            np.testing.assert_allclose(value[i:i + 1], alone[name], rtol=1e-4, atol=1e-5, err_msg=name)


def fold_at_batch_1(model: surgeon.Model) -> surgeon.Model:
    """Fix the batch to 1 and fold what that makes constant: a model exported with a fixed batch."""
    call(model, "set_batch", size=1)
    model.graph.fold_constants(error_ok=False).cleanup()
    return model


def run_example(name: str, model: surgeon.Model):
    recipe = surgeon.parse_recipe(surgeon.registry.get(name).example())
    return surgeon.apply(recipe, model)


# -- infer_shapes -----------------------------------------------------------------------

CHAIN = """<ir_version: 8, opset_import: ["" : 17]>
agraph (float[N, 3, 4] x) => (float[N, 12] y) {
    r = Relu(x)
    s = Constant<value = int64[2] {0, -1}>()
    y = Reshape(r, s)
}"""


def test_infer_shapes_writes_intermediate_shapes():
    model = build(CHAIN)
    report = surgeon.run_pass(model, "infer_shapes")
    assert value_info(to_proto(model).graph) == {"r": ["N", 3, 4], "s": [2]}
    assert report.details == {"tensors_updated": 2, "tensors_without_shape": 0}
    assert report.changed


def test_infer_shapes_replaces_stale_shapes_and_keeps_declared_io():
    model = build(CHAIN)
    r = node(model, "r").outputs[0]
    r.dtype, r.shape = np.float32, [7, 7]  # what a careless gs script leaves behind
    model.graph.outputs[0].shape = ["M", 12]
    call(model, "infer_shapes")
    assert r.shape == ["N", 3, 4]
    assert io_dims(model)["y"] == ["M", 12]


def test_infer_shapes_fills_missing_output_shapes():
    model = surgeon.load(real_model("polygraphy/identity_identity.onnx"))
    assert io_dims(model)["identity_out_2"] is None  # Polygraphy's models declare no output shapes
    call(model, "infer_shapes")
    assert io_dims(model)["identity_out_2"] == [64, 64]


def test_infer_shapes_does_not_fire_when_shapes_are_complete():
    model = surgeon.load(real_model("tiny_yolo_dynamo.onnx"))
    before = to_proto(model).SerializeToString()
    report = surgeon.run_pass(model, "infer_shapes")
    assert not report.changed
    assert to_proto(model).SerializeToString() == before


def test_infer_shapes_is_idempotent():
    model = surgeon.load(real_model("transformer_encoder_dynamo.onnx"))
    call(model, "infer_shapes")
    once = to_proto(model).SerializeToString()
    assert not surgeon.run_pass(model, "infer_shapes").changed
    assert to_proto(model).SerializeToString() == once


def test_infer_shapes_fills_subgraphs():
    model = surgeon.load(real_model("silero_vad.onnx"))
    call(model, "infer_shapes")
    proto = to_proto(model)
    branch = next(a.g for n in proto.graph.node if n.op_type == "If" for a in n.attribute
                  if a.name == "else_branch")
    inner = value_info(branch)
    assert len(inner) > 100
    assert inner["If_0_else_branch__Inline_0__/stft/Unsqueeze_output_0"] == [None, 1, None]


def test_infer_shapes_keeps_custom_op_types():
    model = surgeon.load(real_model("model_foo.onnx"))
    foo = next(n for n in model.graph.nodes if n.op == "FooOp").outputs[0]
    declared = (foo.dtype, list(foo.shape))
    call(model, "infer_shapes")
    assert (foo.dtype, foo.shape) == declared
    # and inference continues after it, from the declared type
    conv = foo.outputs[0].outputs[0]
    assert conv.shape == [declared[1][0], 16, None, None]


def test_infer_shapes_external_data_never_reads_weights(monkeypatch, tmp_path):
    from surgeon.io.external import ExternalValues

    def refuse(self):
        raise AssertionError("weights were read")

    path = real_model("polygraphy/ext_weights_same_dir/ext_weights.onnx")
    model = surgeon.load(path)
    assert model.has_external_data
    monkeypatch.setattr(ExternalValues, "load", refuse)
    call(model, "infer_shapes")
    assert value_info(to_proto(model).graph) == {"c": [1, 3], "e": [1, 3]}
    monkeypatch.undo()
    surgeon.save(model, tmp_path / "out.onnx")
    assert_same_outputs(path, tmp_path / "out.onnx")


def test_infer_shapes_over_2_gib_without_weights_is_refused(monkeypatch):
    model = build(CHAIN)
    monkeypatch.setattr(_shape_infer, "PROTO_LIMIT", 10)
    assert error_of(model, "infer_shapes") == (
        "error: shape inference cannot run on this model: even without its weights, its graph is over 2 GiB "
        "as one protobuf, the most onnx's shape inference can take\n"
        "  hint: weights do not count (inference sees only their types), so the nodes, names and attributes "
        "themselves are this large; split the model, or skip the steps that need shapes (fold_constants with "
        "fold_shapes: false)")


# x @ w, then a Reshape whose target is computed from shapes; w is 4 KiB of weights held in memory.
WEIGHTED = """<ir_version: 8, opset_import: ["" : 17]>
agraph (float[N, 3, 32] x) => (float[N, 96] y) {
    m = MatMul(x, w)
    s = Shape(m)
    i = Constant<value = int64[1] {0}>()
    b = Gather<axis = 0>(s, i)
    k = Constant<value = int64[1] {96}>()
    t = Concat<axis = 0>(b, k)
    y = Reshape(m, t)
}"""


def test_weights_in_memory_never_make_shape_inference_refuse(monkeypatch):
    """The 2 GiB limit counts the graph, not its weights: lowered to 1 KiB, a model with 4 KiB of
    in-memory weights is still inferred, by infer_shapes and by fold_constants alike."""
    weights = np.random.default_rng(0).standard_normal((32, 32)).astype(np.float32)
    monkeypatch.setattr(_shape_infer, "PROTO_LIMIT", 1024)
    model = build(WEIGHTED, w=weights)
    assert to_proto(model).ByteSize() > 1024  # the limit would bite if weights counted
    call(model, "infer_shapes")
    assert value_info(to_proto(model).graph)["m"] == ["N", 3, 32]
    assert np.array_equal(model.graph.tensors()["w"].values, weights)  # the model keeps its weights

    model = build(WEIGHTED, w=weights)
    result = call(model, "fold_constants")
    assert not [n for n in result.notes if "shape inference" in n]
    assert result.details["reshape_targets"] == 1
    assert const_of(model, "y") == [0, 96]
    monkeypatch.undo()
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 3, 32)).astype(np.float32)}
    assert np.allclose(run(to_proto(model), feeds)["y"], (feeds["x"] @ weights).reshape(2, 96), atol=1e-5)


def test_infer_shapes_error_names_the_node():
    model = build("""<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[2, 6] x, int64[2, 6] z) => (float[2, 6] y) { y = Add(x, z) }""")
    assert error_of(model, "infer_shapes") == (
        "error: shape inference failed at node 'y' (Add): B has inconsistent type tensor(int64)\n"
        "  hint: the model is inconsistent there: check the shapes and dtypes that reach the node "
        "(set_shapes, set_dtype)")


def test_infer_shapes_strict_error_names_nested_nodes():
    model = build("""<ir_version: 8, opset_import: ["" : 17]>
        agraph (bool c, float[2, 6] x, float[3, 6] z) => (float[N] y) {
            y = If(c) <then_branch = g1 () => (float[N] a) { a = Add(x, z) },
                       else_branch = g2 () => (float[N] b) { b = Mul(x, x) }>
        }""")
    node(model, "y").attrs["then_branch"].nodes[0].name = "inner_add"
    call(model, "infer_shapes")  # not strict: the node is skipped
    assert error_of(model, "infer_shapes", strict=True) == (
        "error: shape inference failed at node 'inner_add' (Add) inside node 'y' (If): Incompatible dimensions\n"
        "  hint: the model is inconsistent there: check the shapes and dtypes that reach the node "
        "(set_shapes, set_dtype); with strict: false, nodes whose shapes cannot be inferred are skipped instead")


def test_inference_error_texts_are_parsed():
    proto = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[2] x) => (float[2] y) { y = Relu(x) }""")
    err = _shape_infer.inference_error(
        "[ShapeInferenceError] Inference error(s): (op_type:Relu): [ShapeInferenceError] bad rank\n"
        "(op_type:Add, node name: a/b): [ShapeInferenceError] Incompatible dimensions\n", proto, strict=False)
    assert err.message == ("shape inference failed at 2 nodes:\n"
                           "  the unnamed Relu node that writes 'y': bad rank\n"
                           "  node 'a/b' (Add): Incompatible dimensions")
    err = _shape_infer.inference_error(
        "[TypeInferenceError] Cannot infer type and shape for node name . No opset import for domain "
        "ai.onnx.contrib optype NegPos", proto, strict=False)
    assert err.message == ("shape inference failed at an unnamed NegPos node: the model does not import "
                           "the opset of its domain 'ai.onnx.contrib'")
    err = _shape_infer.inference_error("[ShapeInferenceError] something unexpected", proto, strict=False)
    assert err.message == "shape inference failed: something unexpected"


@pytest.mark.parametrize("name", ["tiny_yolo_legacy.onnx", "transformer_encoder_dynamo.onnx",
                                  "ch_PP-OCRv4_rec_infer.onnx", "ctrlflow_script_legacy.onnx",
                                  "light_densenet121.onnx", "polygraphy/loop.onnx",
                                  "polygraphy/scan.onnx"])
def test_infer_shapes_preserves_outputs(name, tmp_path):
    path = real_model(name)
    model = surgeon.load(path)
    call(model, "infer_shapes")
    surgeon.save(model, tmp_path / "out.onnx")  # the full checker accepts the written value_info
    feeds = random_inputs(path, dims={"seq": 5, "p2o.DynamicDimension.1": 64, "?": 48})
    assert_same_outputs(path, tmp_path / "out.onnx", feeds)


def test_infer_shapes_preserves_silero_outputs():
    path = real_model("silero_vad.onnx")
    model = surgeon.load(path)
    call(model, "infer_shapes")
    rng = np.random.default_rng(0)
    feeds = {"input": rng.standard_normal((1, 512)).astype(np.float32),
             "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(16000, np.int64)}
    assert_same_outputs(path, model, feeds)


def test_infer_shapes_example_runs_on_a_real_model():
    model = surgeon.load(real_model("tiny_yolo_legacy.onnx"))
    result = run_example("infer_shapes", model)
    # 267 intermediates, plus both outputs: their named dims become proven sizes
    # (boxes [N, 2100, 4]; scores [N, Concatscores_dim_1, 80], its anchor count stays unproven).
    assert result.steps[0].details["tensors_updated"] == 269


# -- set_shapes -------------------------------------------------------------------------


def test_set_shapes_fixes_inputs_and_reinfers():
    path = real_model("model.onnx")
    model = surgeon.load(path)
    report = surgeon.run_pass(model, "set_shapes", inputs={"input": [1, 3, 32, 32]})
    proto = to_proto(model)
    # The output's N is proven to be 1 now: a named dimension gives way to a proven size.
    assert io_dims(model) == {"input": [1, 3, 32, 32], "output": [1, 16, 32, 32]}
    assert set(map(tuple, value_info(proto.graph).values())) == {(1, 16, 32, 32)}
    assert report.notes == ["graph input 'input': [N, 3, 32, 32] -> [1, 3, 32, 32]"]
    feeds = random_inputs(path, dims={"N": 1})
    assert_same_outputs(path, model, feeds, exact=True)


def test_set_shapes_symbolic_and_unknown_dims_on_paddle_model():
    path = real_model("ch_PP-OCRv4_rec_infer.onnx")
    model = surgeon.load(path)
    call(model, "set_shapes", inputs={"x": ["N", 3, 48, None]},
         outputs={"softmax_11.tmp_0": ["N", None, 6625]})
    assert io_dims(model) == {"x": ["N", 3, 48, None], "softmax_11.tmp_0": ["N", None, 6625]}
    feeds = random_inputs(path, dims={"p2o.DynamicDimension.0": 2, "?": 48, "p2o.DynamicDimension.1": 96})
    assert_same_outputs(path, model, feeds)


def test_set_shapes_reshapes_if_branches():
    path = real_model("ctrlflow_script_legacy.onnx")
    model = surgeon.load(path)
    call(model, "set_shapes", inputs={"x": [3, 8]})
    proto = to_proto(model)
    branches = [a.g for n in proto.graph.node if n.op_type == "If" for a in n.attribute]
    assert [dims(b.output[0]) for b in branches] == [[3, 8], [3, 8]]  # were [N, 8]
    for n in (0, 3):
        feeds = {"x": np.random.default_rng(n).standard_normal((3, 8)).astype(np.float32), "n": np.array(n)}
        assert_same_outputs(path, model, feeds, exact=True)


def test_set_shapes_does_not_fire_on_the_declared_shape():
    model = surgeon.load(real_model("ch_PP-OCRv4_rec_infer.onnx"))
    before = to_proto(model).SerializeToString()
    report = surgeon.run_pass(model, "set_shapes",
                              inputs={"x": ["p2o.DynamicDimension.0", 3, "?", "p2o.DynamicDimension.1"]})
    assert not report.changed
    assert to_proto(model).SerializeToString() == before


def test_set_shapes_clears_stale_intermediates():
    model = build("""<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[N, 4] x) => (float[N, 4] y) { r = Relu(x)  y = Neg(r) }""")
    node(model, "r").outputs[0].dtype = np.float32
    node(model, "r").outputs[0].shape = ["N", 4]
    call(model, "set_shapes", inputs={"x": [2, 4]})
    assert value_info(to_proto(model).graph) == {"r": [2, 4]}


@pytest.mark.parametrize("name, dims_", [("polygraphy/dim_param.onnx", {"Input:0": ["batch", 16, 128]}),
                                        ("polygraphy/inp_dim_val_not_set.onnx", {"X": [2, 3, 4]})])
def test_set_shapes_on_polygraphy_models(name, dims_):
    path = real_model(name)
    model = surgeon.load(path)
    call(model, "set_shapes", inputs=dims_)
    (inp, want), = dims_.items()
    assert io_dims(model)[inp] == want
    feeds = random_inputs(model, dims={"batch": 3})
    assert_same_outputs(path, model, feeds, exact=True)


def test_set_shapes_rank_change_needs_opt_in():
    proto = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[2, 3] x) => (float y) {
            s = Constant<value = int64[1] {-1}>()
            y = Reshape(x, s)
        }""")
    proto.graph.output[0].type.tensor_type.shape.SetInParent()  # declared as a scalar, wrongly
    model = surgeon.load(proto)
    assert error_of(model, "set_shapes", outputs={"y": ["M"]}) == (
        "error: cannot set the shape of graph output 'y' to [M]: it is declared with rank 0 ([]), "
        "the new shape has rank 1\n"
        "  hint: give exactly 0 dimension(s) (null leaves one unknown), or set allow_rank_change: true if the "
        "declared shape is wrong")
    call(model, "set_shapes", outputs={"y": ["M"]}, allow_rank_change=True)
    assert io_dims(model)["y"] == ["M"]
    assert run(model, random_inputs(model))["y"].shape == (6,)


def test_set_shapes_on_a_model_with_a_negative_declared_dim():
    # Polygraphy's reshape.onnx declares its input [-1, 3, 5, 5] and its output without a shape.
    path = real_model("polygraphy/reshape.onnx")
    model = surgeon.load(path)
    call(model, "set_shapes", inputs={"data": ["N", 3, 5, 5]})
    assert io_dims(model) == {"data": ["N", 3, 5, 5], "output": None}
    feeds = {"data": np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32)}
    assert_same_outputs(path, model, feeds, exact=True)


def test_set_shapes_errors():
    model = surgeon.load(real_model("tiny_yolo_dynamo.onnx"))
    assert error_of(model, "set_shapes", inputs={"image": [1, 3, 320, 320]}) == (
        "error: the model has no graph input named 'image'\n"
        "  hint: did you mean 'images'?")
    assert error_of(model, "set_shapes", inputs={"boxes": [1, 2100, 4]}) == (
        "error: the model has no graph input named 'boxes'\n"
        "  hint: 'boxes' is a graph output: list it under 'outputs'")
    assert error_of(model, "set_shapes", outputs={"val_258": [3]}) == (
        "error: the model has no graph output named 'val_258'\n"
        "  hint: 'val_258' is an intermediate tensor; only graph inputs and outputs can be set here")
    assert error_of(model, "set_shapes", inputs={"images": [1, 3, 320]}) == (
        "error: cannot set the shape of graph input 'images' to [1, 3, 320]: it is declared with rank 4 "
        "([N, 3, 320, 320]), the new shape has rank 3\n"
        "  hint: give exactly 4 dimension(s) (null leaves one unknown), or set allow_rank_change: true if the "
        "declared shape is wrong")
    assert error_of(model, "set_shapes", inputs={"images": [-1, 3, 320, 320]}) == (
        "error: invalid dimension -1 for graph input 'images': a fixed dimension must be 1 or more\n"
        "  hint: write a name such as N for a dynamic dimension, or null to leave it unknown")
    assert error_of(model, "set_shapes") == (
        "error: set_shapes needs at least one tensor under 'inputs' or 'outputs'\n"
        "  hint: e.g. with: {inputs: {images: [1, 3, 640, 640]}}")


def test_set_shapes_example_runs_on_a_real_model():
    model = surgeon.load(real_model("model.onnx"))
    run_example("set_shapes", model)
    assert io_dims(model) == {"input": [1, 3, 32, 32], "output": [1, 16, 32, 32]}


# -- set_batch --------------------------------------------------------------------------

FLATTEN = """<ir_version: 8, opset_import: ["" : 17]>
agraph (float[1, 3, 4, 4] x) => (float[1, 10] y) {
    s = Constant<value = int64[2] {1, -1}>()
    f = Reshape(x, s)
    y = MatMul(f, w)
}"""


def flatten_model() -> surgeon.Model:
    w = np.random.default_rng(0).standard_normal((48, 10)).astype(np.float32)
    return build(FLATTEN, w=w)


def test_set_batch_rewrites_a_flatten_that_hard_codes_batch_1(tmp_path):
    model = flatten_model()
    report = surgeon.run_pass(model, "set_batch", size="N")
    assert const_of(model, "f") == [0, -1]
    assert io_dims(model) == {"x": ["N", 3, 4, 4], "y": ["N", 10]}
    assert value_info(to_proto(model).graph)["f"] == ["N", 48]
    assert report.notes == ["Reshape 'f': target [1, -1] -> [0, -1]", "first dimension set to N on 'x', 'y'"]
    assert report.details["rewritten"] == ["f"] and report.details["old_batch"] == 1
    surgeon.save(model, tmp_path / "out.onnx")
    assert_batch_separable(tmp_path / "out.onnx")


def test_set_batch_fixed_to_another_fixed_size():
    model = flatten_model()
    call(model, "set_batch", size=4)
    assert const_of(model, "f") == [0, -1]
    assert run(model, random_inputs(model))["y"].shape == (4, 10)


def test_set_batch_does_not_fire_when_already_set():
    model = surgeon.load(real_model("tiny_yolo_dynamo.onnx"))
    before = to_proto(model).SerializeToString()
    report = surgeon.run_pass(model, "set_batch", size="N")
    assert not report.changed and report.notes == ["the batch is already N"]
    assert to_proto(model).SerializeToString() == before


def test_set_batch_model_onnx_fixed_then_dynamic_again():
    path = real_model("model.onnx")
    model = surgeon.load(path)
    call(model, "set_batch", size=1)
    assert io_dims(model) == {"input": [1, 3, 32, 32], "output": [1, 16, 32, 32]}
    call(model, "set_batch", size="N")
    assert io_dims(model) == {"input": ["N", 3, 32, 32], "output": ["N", 16, 32, 32]}
    assert_batch_separable(model)
    assert_same_outputs(path, model, random_inputs(path, dims={"N": 3}), exact=True)


def test_set_batch_tiny_yolo_legacy_folded_at_batch_1(tmp_path):
    model = fold_at_batch_1(surgeon.load(real_model("tiny_yolo_legacy.onnx")))
    reshapes = [n.name for n in model.graph.nodes if n.op == "Reshape"]
    assert [const_of(model, r) for r in reshapes] == [[1, 4, -1], [1, 80, -1]] * 3
    report = surgeon.run_pass(model, "set_batch", size="N")
    assert [const_of(model, r) for r in reshapes] == [[0, 4, -1], [0, 80, -1]] * 3
    assert report.details["rewritten"] == reshapes
    assert io_dims(model)["boxes"][0] == "N" and io_dims(model)["images"] == ["N", 3, 320, 320]
    surgeon.save(model, tmp_path / "out.onnx")
    assert_batch_separable(tmp_path / "out.onnx")
    feeds = random_inputs(tmp_path / "out.onnx", dims={"N": 3})
    assert_same_outputs(real_model("tiny_yolo_legacy.onnx"), tmp_path / "out.onnx", feeds)


def test_set_batch_transformer_is_dynamic_already():
    # Its Reshape targets are [-1, 256], [-1] or built at run time from Shape: nothing hard-codes the batch.
    path = real_model("transformer_encoder_dynamo.onnx")
    model = surgeon.load(path)
    report = surgeon.run_pass(model, "set_batch", size="B")
    assert report.details["rewritten"] == [] and report.details["old_batch"] is None
    assert io_dims(model) == {"src": ["B", "seq", 256], "memory": ["B", "seq", 256]}
    assert_batch_separable(model, {"N": 3, "B": 3, "seq": 5})
    assert_same_outputs(path, model, random_inputs(path, dims={"batch": 3, "B": 3, "seq": 5}))


def test_set_batch_refuses_a_transformer_folded_at_batch_1():
    # Folding at batch 1 turns batch*heads into the constant 8 in [1, 8, 32, seq]: not rewritable.
    model = fold_at_batch_1(surgeon.load(real_model("transformer_encoder_dynamo.onnx")))
    assert error_of(model, "set_batch", size="N") == (
        "error: cannot make the batch dynamic: Reshape 'node_Reshape_70' gives 'val_68' (shape [?, 32, seq]) "
        "a target built by Concat 'node_Concat_69' from the constant [1, 8], whose first entry is the old "
        "batch 1, and shape inference cannot tell whether the first dimension of that tensor is the batch\n"
        "  hint: this constant cannot be rewritten safely; re-export the model with a dynamic batch axis "
        "(torch.onnx.export(..., dynamic_axes=...) or dynamic_shapes=...), or keep the batch fixed")


def test_set_batch_paddle_model_folded_at_batch_1():
    path = real_model("ch_PP-OCRv4_rec_infer.onnx")
    model = fold_at_batch_1(surgeon.load(path))
    report = surgeon.run_pass(model, "set_batch", size="N")
    assert report.notes[0] == "Reshape 'p2o.Reshape.64': target [1, 120, -1] -> [0, 120, -1]"
    assert io_dims(model)["x"] == ["N", 3, "?", "p2o.DynamicDimension.1"]
    assert_batch_separable(model, {"?": 48, "p2o.DynamicDimension.1": 64}, batch=2)


def test_set_batch_refusal_on_a_paddle_model_is_consistent_and_names_paddle2onnx():
    """A Reshape whose data has the batch second: the message says where the batch is (not "not the first
    dimension ... cannot trace it"), and the hint speaks of paddle2onnx, the exporter of this model (it
    leaves producer_name empty; its p2o.DynamicDimension names give it away)."""
    model = fold_at_batch_1(surgeon.load(real_model("ch_PP-OCRv4_rec_infer.onnx")))
    call(model, "insert_node", op="Transpose", after="swish_12.tmp_0", attrs={"perm": [1, 0, 2, 3]},
         consumers=["p2o.Reshape.64"])
    assert error_of(model, "set_batch", size="N") == (
        "error: cannot make the batch dynamic: Reshape 'p2o.Reshape.64' gives 'swish_12.tmp_0_Transpose_output_0' "
        "(shape [120, batch, ?, ?]) the constant target [1, 120, -1], whose first entry is the old batch 1, but "
        "the batch is dimension 1 of that tensor, not its first\n"
        "  hint: this constant cannot be rewritten safely; re-export the model with a dynamic batch axis "
        "(paddle2onnx from a Paddle model saved with a batch of None in its InputSpec, e.g. "
        "paddle.static.InputSpec(shape=[None, 3, 48, -1])), or keep the batch fixed")


def test_set_batch_allowzero_cleared_when_no_other_zero():
    model = build("""<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[1, 4, 6] x) => (float[1, 24] y) {
            s = Constant<value = int64[2] {1, 24}>()
            y = Reshape<allowzero = 1>(x, s)
        }""")
    report = surgeon.run_pass(model, "set_batch", size="N")
    assert const_of(model, "y") == [0, 24] and node(model, "y").attrs["allowzero"] == 0
    assert report.notes[0] == "Reshape 'y': target [1, 24] -> [0, 24] (allowzero cleared)"
    assert_batch_separable(model)


def test_set_batch_allowzero_with_concat_reads_the_batch_at_run_time(tmp_path):
    model = build("""<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[1, S, 8] x) => (float[1, S, 2, 4] y) {
            shp = Shape(x)
            seq = Slice(shp, one, two)
            head = Constant<value = int64[1] {1}>()
            rest = Constant<value = int64[2] {2, 4}>()
            t = Concat<axis = 0>(head, seq, rest)
            d = Relu(x)
            y = Reshape<allowzero = 1>(d, t)
        }""", one=np.array([1]), two=np.array([2]))
    report = surgeon.run_pass(model, "set_batch", size="N")
    assert report.notes[0] == "Reshape 'y': target entry 1 now read at run time from 'd'"
    # The Constant of the old batch is gone; the batch is read from d, so the Concat moves after it.
    assert [n.name for n in model.graph.nodes] == ["shp", "seq", "rest", "d", "d_shape", "d_batch", "t", "y"]
    assert [t.name for t in node(model, "t").inputs] == ["d_batch", "seq", "rest"]
    assert node(model, "y").attrs["allowzero"] == 1
    surgeon.save(model, tmp_path / "out.onnx")  # the checker wants the nodes sorted
    assert_batch_separable(tmp_path / "out.onnx", {"S": 5})


def test_set_batch_copies_a_concat_that_other_nodes_read():
    model = build("""<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[1, S, 8] x) => (float[1, S, 2, 4] y) {
            shp = Shape(x)
            seq = Slice(shp, one, two)
            head = Constant<value = int64[1] {1}>()
            rest = Constant<value = int64[2] {2, 4}>()
            t = Concat<axis = 0>(head, seq, rest)
            r = Reshape(x, t)
            z = ConstantOfShape(t)
            total = ReduceSum<keepdims = 0>(z)
            y = Add(r, total)
        }""", one=np.array([1]), two=np.array([2]))
    report = surgeon.run_pass(model, "set_batch", size="N")
    assert report.notes[0] == "Reshape 'r': target (piece of Concat 't') [1] -> [0]"
    assert [str(n) for n in report.added] == ["t_batch (Concat)"]
    assert [t.name for t in node(model, "r").inputs] == ["x", "t_batch"]
    assert const_of(model, "t_batch", 0) == [0] and const_of(model, "t", 0) == [1]
    assert [n.name for n in node(model, "t").outputs[0].outputs] == ["z"]
    assert_batch_separable(model, {"S": 5})


def test_set_batch_expand_and_shared_constant_with_old_batch_2():
    model = build("""<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[2, 3] x) => (float[2, 3] y) {
            s = Constant<value = int64[2] {2, 3}>()
            e = Expand(x, s)
            c = Constant<value = float[6] {1, 2, 3, 4, 5, 6}>()
            r = Reshape(c, s)
            total = ReduceSum<keepdims = 0>(r)
            y = Add(e, total)
        }""")
    report = surgeon.run_pass(model, "set_batch", size="N")
    assert report.notes[0] == "Expand 'e': target [2, 3] -> [1, 3]"
    assert const_of(model, "e") == [1, 3] and node(model, "e").inputs[1].name == "s_batch"
    assert const_of(model, "r") == [2, 3]  # the Reshape of a constant keeps the shared original
    assert_batch_separable(model)


def test_set_batch_rewrites_both_targets_of_a_split_then_merge_reshape_pair(tmp_path):
    # x[1, 8] -> Relu -> Reshape [1, 2, 4] -> Reshape [1, 8]: each target hard-codes the
    # batch in its first entry and each reshaped tensor carries it there.
    model = build("""<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[1, 8] x) => (float[1, 8] y) <int64[3] s1 = {1, 2, 4}, int64[2] s2 = {1, 8}> {
            r = Relu(x)
            a = Reshape(r, s1)
            y = Reshape(a, s2)
        }""")
    for n in model.graph.nodes:
        n.name = n.outputs[0].name
    report = surgeon.run_pass(model, "set_batch", size="N")
    assert const_of(model, "a") == [0, 2, 4] and const_of(model, "y") == [0, 8]
    assert report.notes == ["Reshape 'a': target [1, 2, 4] -> [0, 2, 4]", "Reshape 'y': target [1, 8] -> [0, 8]",
                            "first dimension set to N on 'x', 'y'"]
    assert value_info(to_proto(model).graph)["a"] == ["N", 2, 4]
    surgeon.save(model, tmp_path / "out.onnx")
    assert_batch_separable(tmp_path / "out.onnx")


def test_set_batch_inside_if_branches():
    model = build("""<ir_version: 8, opset_import: ["" : 17]>
        agraph (bool c, float[1, 2, 3] x) => (float[1, 6] y) {
            y = If(c) <then_branch = g1 () => (float[1, 6] a) {
                           s1 = Constant<value = int64[2] {1, 6}>()
                           a = Reshape(x, s1) },
                       else_branch = g2 () => (float[1, 6] b) {
                           s2 = Constant<value = int64[2] {1, -1}>()
                           r = Reshape(x, s2)
                           b = Neg(r) }>
        }""")
    for g in model.graphs():
        for n in g.nodes:
            n.name = n.name or n.outputs[0].name
    report = surgeon.run_pass(model, "set_batch", size="N")
    assert const_of(model, "a") == [0, 6] and const_of(model, "r") == [0, -1]
    assert report.notes[0] == "left alone (no dimensions): 'c'"
    branch = to_proto(model).graph.node[0].attribute[0].g
    assert dims(branch.output[0]) == ["N", 6]  # stale [1, 6] re-derived
    for cond in (True, False):
        x = np.random.default_rng(0).standard_normal((3, 2, 3)).astype(np.float32)
        together = run(model, {"c": np.array(cond), "x": x})["y"]
        for i in range(3):
            alone = run(model, {"c": np.array(cond), "x": x[i:i + 1]})["y"]
            np.testing.assert_array_equal(together[i:i + 1], alone)


def test_set_batch_silero_with_explicit_tensors():
    path = real_model("silero_vad.onnx")
    model = surgeon.load(path)
    assert error_of(model, "set_batch", size="N") == (
        "error: the graph inputs/outputs do not agree on a batch: their first dimensions differ "
        "('input', 'output', 'stateN' have ?; 'state' has 2)\n"
        "  hint: some of them do not carry the batch first; list the ones that do with inputs: [...] "
        "and outputs: [...]")
    call(model, "set_batch", size="N", inputs=["input"], outputs=["output"])
    assert io_dims(model) == {"input": ["N", None], "state": [2, None, 128], "sr": [],
                              "output": ["N", 1], "stateN": [None, None, None]}
    rng = np.random.default_rng(0)
    feeds = {"input": rng.standard_normal((1, 512)).astype(np.float32),
             "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(16000, np.int64)}
    assert_same_outputs(path, model, feeds)


def test_set_batch_refuses_batch_mixed_with_other_dims():
    model = build("""<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[1, 2, 3] x) => (float[1, 6] y) {
            t = Transpose<perm = [1, 0, 2]>(x)
            s = Constant<value = int64[2] {1, 6}>()
            y = Reshape(t, s)
        }""")
    assert error_of(model, "set_batch", size="N") == (
        "error: cannot make the batch dynamic: Reshape 'y' gives 't' (shape [2, batch, 3]) the constant target "
        "[1, 6], whose first entry is the old batch 1, but the batch is dimension 1 of that tensor, not its "
        "first\n"
        "  hint: this constant cannot be rewritten safely; re-export the model with a dynamic batch axis "
        "from the framework that made it, or keep the batch fixed")  # a model of unknown producer


def test_set_batch_refuses_a_reshape_that_folds_the_batch_away():
    model = build("""<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[1, 6] x) => (float[2, 3] y) {
            s = Constant<value = int64[2] {2, 3}>()
            y = Reshape(x, s)
        }""")
    assert error_of(model, "set_batch", size="N", outputs=[]) == (
        "error: cannot make the batch dynamic: Reshape 'y' folds the batch of 'x' (shape [batch, 6]) into a "
        "fixed shape [2, 3]\n"
        "  hint: the model mixes samples of the batch there; re-export the model with a dynamic batch axis "
        "from the framework that made it, or keep the batch fixed")


def test_set_batch_refuses_an_output_that_keeps_a_fixed_batch():
    model = build("""<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[1, 4] x) => (float[1, 4] y, float[1, 4] z) {
            y = Relu(x)
            z = Gather<axis = 0>(x, zero)
        }""", zero=np.array([0]))
    assert error_of(model, "set_batch", size="N") == (
        "error: cannot make the batch dynamic: graph output 'z' (written by node 'z' (Gather)) keeps the "
        "fixed first dimension 1 however large the batch is: something before it hard-codes the batch 1 in a "
        "way set_batch does not rewrite (e.g. a Slice or Gather along the batch)\n"
        "  hint: re-export the model with a dynamic batch axis from the framework that made it, or leave this "
        "output out of 'outputs' if its first dimension is not the batch")


def spread_model(old: int, body: str, **inits: np.ndarray) -> tuple[onnx.ModelProto, surgeon.Model]:
    """A model exported at batch ``old`` (the body may write OLD for it), as a proto and loaded."""
    model = build(body.replace("OLD", str(old)), **inits)
    return to_proto(model), model


def assert_spread_fixed(original: onnx.ModelProto, model: surgeon.Model):
    """Batch 3 gives three single runs, and the edited model at the old batch gives what the original gave."""
    assert_batch_separable(model)
    assert_same_outputs(original, model, random_inputs(original, seed=2), exact=True)


@pytest.mark.parametrize("old", [1, 2])
def test_set_batch_tile_of_a_learned_query_reads_the_batch_at_run_time(old):
    q = np.random.default_rng(0).standard_normal((1, 2, 4)).astype(np.float32)
    original, model = spread_model(old, """<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[OLD, 3, 4] x) => (float[OLD, 5, 4] y) {
            reps = Constant<value = int64[3] {OLD, 1, 1}>()
            t = Tile(q, reps)
            y = Concat<axis = 1>(x, t)
        }""", q=q)
    report = surgeon.run_pass(model, "set_batch", size="N")
    assert report.notes[0] == f"Tile 't': repeats entry {old} now read at run time from 'x'"
    assert [(n.op, n.name) for n in model.graph.nodes] == [
        ("Shape", "x_shape"), ("Gather", "x_batch"), ("Concat", "reps_target"), ("Tile", "t"), ("Concat", "y")]
    assert [t.name for t in node(model, "reps_target").inputs] == ["x_batch", "reps_rest"]
    assert const_of(model, "reps_target", 1) == [1, 1] and const_of(model, "x_batch", 1) == [0]
    assert [t.name for t in node(model, "t").inputs] == ["q", "reps_target"]
    assert io_dims(model) == {"x": ["N", 3, 4], "y": ["N", 5, 4]}
    assert value_info(to_proto(model).graph)["t"] == [None, None, None]  # onnx: computed repeats give a rank
    assert_spread_fixed(original, model)


@pytest.mark.parametrize("old", [1, 2])
def test_set_batch_tile_added_to_the_batch(old):
    # x[B, 4] + Tile(p[1, 4], [B, 1]): broadcast alone would work at batch 1, the rewrite keeps it exact.
    p = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
    original, model = spread_model(old, """<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[OLD, 4] x) => (float[OLD, 4] y) {
            t = Tile(p, reps)
            y = Add(x, t)
        }""", p=p, reps=np.array([old, 1]))
    report = surgeon.run_pass(model, "set_batch", size="N")
    assert report.details["rewritten"] == ["t"]
    assert [t.name for t in node(model, "t").inputs] == ["p", "reps_target"]
    assert_spread_fixed(original, model)


@pytest.mark.parametrize("old", [1, 2])
def test_set_batch_constant_of_shape_reads_the_batch_at_run_time(old):
    original, model = spread_model(old, """<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[OLD, 4] x) => (float[OLD, 6] y, float[OLD, 3] z) {
            s = Constant<value = int64[2] {OLD, 2}>()
            m = ConstantOfShape<value = float[1] {0.5}>(s)
            y = Concat<axis = 1>(x, m)
            s3 = Constant<value = int64[2] {OLD, 3}>()
            z = ConstantOfShape<value = float[1] {2}>(s3)
        }""")
    report = surgeon.run_pass(model, "set_batch", size="N")
    assert report.notes[:2] == [f"ConstantOfShape 'm': shape entry {old} now read at run time from 'x'",
                                f"ConstantOfShape 'z': shape entry {old} now read at run time from 'x'"]
    assert [(n.op, n.name) for n in model.graph.nodes] == [
        ("Shape", "x_shape"), ("Gather", "x_batch"), ("Concat", "s_target"), ("ConstantOfShape", "m"),
        ("Concat", "y"), ("Shape", "x_shape_1"), ("Gather", "x_batch_1"), ("Concat", "s3_target"),
        ("ConstantOfShape", "z")]
    assert const_of(model, "s_target", 1) == [2] and const_of(model, "s3_target", 1) == [3]
    assert io_dims(model) == {"x": ["N", 4], "y": ["N", 6], "z": ["N", 3]}
    assert_spread_fixed(original, model)


@pytest.mark.parametrize("old", [1, 2])
def test_set_batch_expand_of_a_batch_free_tensor_reads_the_batch_at_run_time(old):
    rng = np.random.default_rng(0)
    original, model = spread_model(old, """<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[OLD, 4] x) => (float[OLD, 7] y) {
            s = Constant<value = int64[2] {OLD, 4}>()
            a = Expand(p, s)
            s2 = Constant<value = int64[2] {OLD, 3}>()
            b = Expand(v, s2)
            y = Concat<axis = 1>(x, a, b)
        }""", p=rng.standard_normal((1, 4)).astype(np.float32), v=rng.standard_normal(3).astype(np.float32))
    report = surgeon.run_pass(model, "set_batch", size="N")
    assert report.details["rewritten"] == ["a", "b"]
    assert report.notes[1] == f"Expand 'b': target entry {old} now read at run time from 'x'"
    assert [t.name for t in node(model, "a").inputs] == ["p", "s_target"]
    assert [t.name for t in node(model, "b").inputs] == ["v", "s2_target"]
    assert io_dims(model)["y"] == ["N", 7]
    assert_spread_fixed(original, model)


def test_set_batch_expand_target_built_by_concat_reads_the_batch_at_run_time():
    p = np.random.default_rng(0).standard_normal((1, 1, 4)).astype(np.float32)
    original, model = spread_model(2, """<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[2, S, 4] x) => (float[2, S, 4] y) {
            shp = Shape(x)
            seq = Slice(shp, one, two)
            head = Constant<value = int64[1] {2}>()
            t = Concat<axis = 0>(head, seq, four)
            e = Expand(p, t)
            y = Add(x, e)
        }""", p=p, one=np.array([1]), two=np.array([2]), four=np.array([4]))
    report = surgeon.run_pass(model, "set_batch", size="N")
    assert report.notes[0] == "Expand 'e': target entry 2 now read at run time from 'x'"
    assert [t.name for t in node(model, "t").inputs] == ["x_batch", "seq", "four"]
    assert "head" not in {n.name for n in model.graph.nodes}
    assert_batch_separable(model, {"S": 5})
    assert_same_outputs(original, model, random_inputs(original, {"S": 5}), exact=True)


def test_set_batch_leaves_a_constant_of_shape_that_never_meets_the_batch():
    # A ConstantOfShape of [2] summed to a scalar is no batch, though 2 is the old batch.
    original, model = spread_model(2, """<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[OLD, 4] x) => (float[OLD, 4] y) {
            s = Constant<value = int64[1] {OLD}>()
            c = ConstantOfShape<value = float[1] {1.5}>(s)
            total = ReduceSum<keepdims = 0>(c)
            y = Add(x, total)
        }""")
    report = surgeon.run_pass(model, "set_batch", size="N")
    assert report.details["rewritten"] == [] and const_of(model, "c", 0) == [2]
    assert [n.name for n in model.graph.nodes] == ["s", "c", "total", "y"]
    assert_spread_fixed(original, model)


def test_set_batch_leaves_a_tile_that_repeats_the_batch_itself():
    original, model = spread_model(2, """<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[OLD, 4] x) => (float[OLD, 4] y) {
            reps = Constant<value = int64[2] {OLD, 1}>()
            t = Tile(x, reps)
            s = ReduceSum<keepdims = 0>(t, zero)
            y = Add(x, s)
        }""", zero=np.array([0]))
    report = surgeon.run_pass(model, "set_batch", size="N")
    assert report.details["rewritten"] == [] and const_of(model, "t") == [2, 1]
    assert_same_outputs(original, model, random_inputs(original), exact=True)


def test_set_batch_refuses_a_runtime_batch_without_an_input_that_carries_it():
    model = build("""<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[2, 4] x) => (float[2, 4] y, float[2, 3] z) {
            y = Relu(x)
            s = Constant<value = int64[2] {2, 3}>()
            z = ConstantOfShape(s)
        }""")
    assert error_of(model, "set_batch", size="N", inputs=[], outputs=["y", "z"]) == (
        "error: cannot make the batch dynamic: node 'z' (ConstantOfShape) spreads 'z' to the old batch 2, which must "
        "then be read at run time, but no chosen graph input carries the batch\n"
        "  hint: list a graph input whose first dimension is the batch under 'inputs'")


def test_set_batch_parameter_errors():
    model = flatten_model()
    assert error_of(model, "set_batch", size=0) == (
        "error: invalid dimension 0 for size: a fixed dimension must be 1 or more\n"
        "  hint: write a name such as N for a dynamic dimension, or null to leave it unknown")
    assert error_of(model, "set_batch", size="N", inputs=["X"]) == (
        "error: the model has no graph input named 'X'\n"
        "  hint: did you mean 'x'?")
    two = build("""<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[1, 3] a, float[2, 3] b) => (float[2, 3] y) { y = Add(a, b) }""")
    assert error_of(two, "set_batch", size="N") == (
        "error: the graph inputs/outputs do not agree on a batch: their first dimensions differ "
        "('a' has 1; 'b', 'y' have 2)\n"
        "  hint: some of them do not carry the batch first; list the ones that do with inputs: [...] "
        "and outputs: [...]")


def test_set_batch_example_runs_on_a_real_model():
    model = fold_at_batch_1(surgeon.load(real_model("tiny_yolo_legacy.onnx")))
    run_example("set_batch", model)
    assert io_dims(model)["images"] == ["N", 3, 320, 320]
    assert_batch_separable(model, batch=2)


# -- set_dtype --------------------------------------------------------------------------


def test_set_dtype_uint8_images(tmp_path):
    path = real_model("tiny_yolo_dynamo.onnx")
    model = surgeon.load(path)
    report = surgeon.run_pass(model, "set_dtype", inputs={"images": "uint8"})
    cast = model.graph.nodes[0]
    assert (cast.op, cast.name, cast.attrs["to"]) == ("Cast", "images_cast", onnx.TensorProto.FLOAT)
    assert [t.name for t in cast.inputs] == ["images"] and cast.outputs[0].name == "images_cast"
    assert [n.name for n in cast.outputs[0].outputs] == ["node_Conv_301"]
    images = to_proto(model).graph.input[0]
    assert (images.type.tensor_type.elem_type, dims(images)) == (onnx.TensorProto.UINT8, ["N", 3, 320, 320])
    assert report.notes == ["graph input 'images': float32 -> uint8 (Cast back to float32 added)"]
    assert [str(n) for n in report.added] == ["images_cast (Cast)"]
    surgeon.save(model, tmp_path / "out.onnx")
    pixels = np.random.default_rng(0).integers(0, 256, (2, 3, 320, 320)).astype(np.uint8)
    want = run(path, {"images": pixels.astype(np.float32)})
    got = run(tmp_path / "out.onnx", {"images": pixels})
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_set_dtype_does_not_fire_when_the_dtype_is_already_set():
    model = surgeon.load(real_model("tiny_yolo_dynamo.onnx"))
    before = to_proto(model).SerializeToString()
    report = surgeon.run_pass(model, "set_dtype", inputs={"images": "float"})
    assert not report.changed
    assert to_proto(model).SerializeToString() == before


def test_set_dtype_reaches_readers_inside_subgraphs():
    path = real_model("ctrlflow_script_legacy.onnx")
    model = surgeon.load(path)
    x = model.graph.inputs[0]
    readers = {n.name for n in x.outputs}
    call(model, "set_dtype", inputs={"x": "float16"})
    assert not x.outputs[1:] and x.outputs[0].op == "Cast"
    assert {n.name for n in model.graph.nodes[0].outputs[0].outputs} == readers
    assert any(n not in {m.name for m in model.graph.nodes} for n in readers)  # some read it in a body
    values = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float16)
    for n in (0, 2):
        want = run(path, {"x": values.astype(np.float32), "n": np.array(n)})
        got = run(model, {"x": values, "n": np.array(n)})
        np.testing.assert_array_equal(got["y"], want["y"])


def test_set_dtype_errors():
    model = surgeon.load(real_model("tiny_yolo_dynamo.onnx"))
    assert error_of(model, "set_dtype", inputs={"images": "unit8"}) == (
        "error: unknown dtype 'unit8' for graph input 'images'\n"
        "  hint: did you mean 'uint8', 'int8'?")
    assert error_of(model, "set_dtype", inputs={"image": "uint8"}) == (
        "error: the model has no graph input named 'image'\n"
        "  hint: did you mean 'images'?")
    passthrough = build("""<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[2] x) => (float[2] x) { }""")
    assert error_of(passthrough, "set_dtype", inputs={"x": "uint8"}) == (
        "error: cannot change the dtype of graph input 'x': it is also a graph output, which would change too\n"
        "  hint: add an Identity for the output first")


def test_set_dtype_example_runs_on_a_real_model():
    model = surgeon.load(real_model("tiny_yolo_legacy.onnx"))
    run_example("set_dtype", model)
    assert model.graph.inputs[0].dtype == np.uint8


# -- ready recipes ------------------------------------------------------------------------


def test_recipe_fix_batch():
    path = real_model("tiny_yolo_dynamo.onnx")
    model = surgeon.load(path)
    surgeon.apply(RECIPES / "fix_batch.yaml", model)
    assert io_dims(model) == {"images": [1, 3, 320, 320], "boxes": [1, 2100, 4], "scores": [1, 2100, 80]}
    assert_same_outputs(path, model, random_inputs(path, dims={"N": 1}))


def test_recipe_make_batch_dynamic():
    model = fold_at_batch_1(surgeon.load(real_model("tiny_yolo_legacy.onnx")))
    surgeon.apply(RECIPES / "make_batch_dynamic.yaml", model)
    assert io_dims(model)["images"] == ["N", 3, 320, 320]
    assert_batch_separable(model, batch=2)


def test_recipe_uint8_input():
    path = real_model("tiny_yolo_legacy.onnx")
    model = surgeon.load(path)
    surgeon.apply(RECIPES / "uint8_input.yaml", model)
    pixels = np.random.default_rng(1).integers(0, 256, (1, 3, 320, 320)).astype(np.uint8)
    want = run(path, {"images": pixels.astype(np.float32)})
    got = run(model, {"images": pixels})
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_batch_one_static_model_gets_static_outputs():
    """The legacy exporter declares [N, Concatboxes_dim_1, Concatboxes_dim_2]; once the batch
    is fixed and the shape arithmetic folded, inference proves every size."""
    path = real_model("tiny_yolo_legacy.onnx")
    model = surgeon.load(path)
    surgeon.apply(surgeon.Recipe.from_steps([("set_batch", {"size": 1}), ("fold_constants", {}),
                                             ("infer_shapes", {})]), model)
    assert io_dims(model) == {"images": [1, 3, 320, 320], "boxes": [1, 2100, 4], "scores": [1, 2100, 80]}
    assert_same_outputs(path, model, random_inputs(path, dims={"N": 1}))


def test_set_batch_runtime_batch_on_a_shared_concat_places_one_private_copy(tmp_path):
    # The Concat also feeds a second output: the Reshape gets its own copy, placed once, right before it.
    model = build("""<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[1, S, 8] x) => (float[1, S, 2, 4] y, int64[4] u) {
            shp = Shape(x)
            seq = Slice(shp, one, two)
            head = Constant<value = int64[1] {1}>()
            rest = Constant<value = int64[2] {2, 4}>()
            t = Concat<axis = 0>(head, seq, rest)
            u = Identity(t)
            d = Relu(x)
            y = Reshape<allowzero = 1>(d, t)
        }""", one=np.array([1]), two=np.array([2]))
    surgeon.run_pass(model, "set_batch", size="N", inputs=["x"], outputs=["y"])
    names = [n.name for n in model.graph.nodes]
    assert names == ["shp", "seq", "head", "rest", "t", "u", "d", "d_shape", "d_batch", "t_batch", "y"]
    assert [t.name for t in node(model, "t_batch").inputs] == ["d_batch", "seq", "rest"]
    assert [t.name for t in node(model, "t").inputs] == ["head", "seq", "rest"]  # u keeps the original
    surgeon.save(model, tmp_path / "out.onnx")
    x = np.random.default_rng(0).standard_normal((3, 5, 8)).astype(np.float32)
    out = run(tmp_path / "out.onnx", {"x": x})
    np.testing.assert_array_equal(out["y"], np.maximum(x, 0).reshape(3, 5, 2, 4))
    np.testing.assert_array_equal(out["u"], [1, 5, 2, 4])  # the other reader still sees the old target
