"""fold_constants: constant subgraphs and shape computations become values; failures are reported."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper
import onnx.parser
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto
from util import RECIPES, assert_same_outputs, random_inputs, real_model, run

import surgeon
from surgeon.errors import PassError
from surgeon.io.export import to_proto
from surgeon.io.external import ExternalValues


def _load(text: str) -> surgeon.Model:
    return surgeon.load(onnx.parser.parse_model(text))


def _ops(model: surgeon.Model, graph: gs.Graph | None = None) -> list[str]:
    return [n.op for n in (graph or model.graph).nodes]


CONST_CHAIN = """<ir_version: 8, opset_import: ["" : 17]>
agraph (float[2, 3] x) => (float[2, 3] y) {
    a = Constant <value = float[3] {1.0, 2.0, 3.0}> ()
    b = Constant <value = float[3] {10.0, 20.0, 30.0}> ()
    s = Add (a, b)
    t = Mul (s, s)
    y = Add (x, t)
}"""


def test_folds_a_constant_chain_into_one_initializer():
    model = _load(CONST_CHAIN)
    before = to_proto(model)
    report = surgeon.run_pass(model, "fold_constants")
    assert _ops(model) == ["Add"]
    node = model.graph.nodes[0]
    assert node.inputs[0].name == "x" and node.outputs[0].name == "y"
    assert isinstance(node.inputs[1], gs.Constant) and node.inputs[1].name == "t"
    np.testing.assert_array_equal(node.inputs[1].values, np.array([121.0, 484.0, 1089.0], np.float32))
    assert report.details["folded"] == 4
    assert report.notes == []
    assert_same_outputs(before, model)


def test_shape_subgraph_of_static_dims_becomes_constant():
    # Shape -> Gather -> Unsqueeze -> Concat of a dim that is static although the batch is not.
    model = _load("""<ir_version: 8, opset_import: ["" : 17]>
    agraph (float[N, 3, 4] x) => (float[N, 3, 4] y) {
        shape = Shape (x)
        i2 = Constant <value = int64 {2}> ()
        d2 = Gather <axis = 0> (shape, i2)
        zero = Constant <value = int64[1] {0}> ()
        d2u = Unsqueeze (d2, zero)
        f = Cast <to = 1> (d2u)
        y = Mul (x, f)
    }""")
    before = to_proto(model)
    report = surgeon.run_pass(model, "fold_constants")
    assert _ops(model) == ["Mul"]
    np.testing.assert_array_equal(model.graph.nodes[0].inputs[1].values, np.array([4.0], np.float32))
    assert report.details["folded"] == 6
    assert_same_outputs(before, model, random_inputs(before, {"N": 5}))


def test_fold_shapes_false_leaves_shape_computations():
    model = _load("""<ir_version: 8, opset_import: ["" : 17]>
    agraph (float[N, 3, 4] x) => (float[N, 3, 4] y) <int64 i2 = {2}> {
        shape = Shape (x)
        d2 = Gather <axis = 0> (shape, i2)
        f = Cast <to = 1> (d2)
        y = Mul (x, f)
    }""")
    before = to_proto(model).SerializeToString()
    report = surgeon.run_pass(model, "fold_constants", fold_shapes=False)
    assert to_proto(model).SerializeToString() == before
    assert report.notes == []


def test_reshape_target_from_shapes_becomes_constant():
    # [N, 12] from Concat(Shape(x)[0:1], [12]): the batch dim is copied with 0.
    model = _load("""<ir_version: 8, opset_import: ["" : 17]>
    agraph (float[N, 3, 4] x) => (float[N, 12] y) {
        shape = Shape (x)
        s0 = Constant <value = int64[1] {0}> ()
        s1 = Constant <value = int64[1] {1}> ()
        n = Slice (shape, s0, s1)
        twelve = Constant <value = int64[1] {12}> ()
        target = Concat <axis = 0> (n, twelve)
        y = Reshape (x, target)
    }""")
    before = to_proto(model)
    report = surgeon.run_pass(model, "fold_constants")
    assert _ops(model) == ["Reshape"]
    np.testing.assert_array_equal(model.graph.nodes[0].inputs[1].values, [0, 12])
    assert report.details["reshape_targets"] == 1
    assert report.notes == ["made 1 Reshape target(s) constant"]
    assert_same_outputs(before, model, random_inputs(before, {"N": 3}))


def test_flatten_by_the_product_of_the_shape_becomes_minus_one(tmp_path):
    # Polygraphy's reshape.onnx: Reshape(x, ReduceProd(Shape(x))) of float[-1, 3, 5, 5] is a flatten.
    path = real_model("polygraphy/reshape.onnx")
    model = surgeon.load(path)
    report = surgeon.run_pass(model, "fold_constants")
    assert _ops(model) == ["Reshape"]
    assert [t.name for t in model.graph.nodes[0].inputs] == ["data", "reduce_prod_out_gs_2_static"]
    np.testing.assert_array_equal(model.graph.nodes[0].inputs[1].values, [-1])
    assert report.details["reshape_targets"] == 1 and report.details["folded"] == 2
    surgeon.save(model, tmp_path / "out.onnx")
    for n in (1, 4):
        feeds = {"data": np.random.default_rng(n).standard_normal((n, 3, 5, 5)).astype(np.float32)}
        assert_same_outputs(path, tmp_path / "out.onnx", feeds)


def test_product_of_a_static_shape_folds_and_of_part_of_a_shape_stays():
    model = _load("""<ir_version: 8, opset_import: ["" : 18]>
    agraph (float[2, 3, 4] x, float[N, M, 4] z) => (int64 p, float[N, M, 4] y) <int64[1] ax = {0}> {
        shape = Shape (x)
        p = ReduceProd <keepdims = 0> (shape, ax)
        zs = Shape <end = 2> (z)
        nm = ReduceProd (zs)
        last = Shape <start = 2> (z)
        target = Concat <axis = 0> (nm, last)
        flat = Reshape (z, target)
        full = Shape (z)
        y = Reshape (flat, full)
    }""")
    before = to_proto(model)
    surgeon.run_pass(model, "fold_constants")
    # p is 24; [N*M, 4] has the one unknown element N*M: -1; y's target [N, M, 4] has two: kept
    assert _ops(model) == ["Reshape", "Shape", "Reshape"]
    assert model.graph.outputs[0].values.tolist() == 24
    np.testing.assert_array_equal(model.graph.nodes[0].inputs[1].values, [-1, 4])
    assert model.graph.nodes[2].inputs[1].name == "full"
    assert_same_outputs(before, model, random_inputs(before, {"N": 3, "M": 5}))


def test_reshape_with_two_unknown_dims_keeps_its_shape_computation():
    model = _load("""<ir_version: 8, opset_import: ["" : 17]>
    agraph (float[N, M, 4] x) => (float[M, N, 4] y) <int64[3] i = {1, 0, 2}> {
        shape = Shape (x)
        target = Gather <axis = 0> (shape, i)
        y = Reshape (x, target)
    }""")
    before = to_proto(model).SerializeToString()
    report = surgeon.run_pass(model, "fold_constants")
    assert to_proto(model).SerializeToString() == before
    assert not report.changed


def test_model_without_constant_subgraphs_is_unchanged():
    model = _load("""<ir_version: 8, opset_import: ["" : 17]>
    agraph (float[N, 3] x, float[3] w) => (float[N, 3] y) {
        r = Relu (x)
        y = Add (r, w)
    }""")
    before = to_proto(model).SerializeToString()
    report = surgeon.run_pass(model, "fold_constants")
    assert to_proto(model).SerializeToString() == before
    assert report.summary() == "step 1 (fold_constants): no change"


def test_every_node_that_cannot_be_folded_is_reported_with_its_reason():
    model = _load("""<ir_version: 8, opset_import: ["" : 17, "custom" : 1]>
    agraph (float[2] x) => (float[2] y, float[2] r, float[4] bad) {
        c = Constant <value = float[2] {1.0, 2.0}> ()
        k = custom.Scale (c)
        y = Add (x, k)
        r = RandomUniform <shape = [2]> ()
        six = Constant <value = float[6] {1.0, 2.0, 3.0, 4.0, 5.0, 6.0}> ()
        four = Constant <value = int64[1] {4}> ()
        bad = Reshape (six, four)
    }""")
    for n in model.graph.nodes:
        n.name = {"Scale": "scale", "RandomUniform": "rand", "Reshape": "bad_reshape"}.get(n.op, n.name)
    report = surgeon.run_pass(model, "fold_constants")
    assert _ops(model) == ["Scale", "Add", "RandomUniform", "Reshape"]
    assert report.details["folded"] == 3  # the three Constant nodes
    notes = sorted(report.notes)
    assert notes[0].startswith("could not fold node 'bad_reshape' (Reshape): onnxruntime cannot evaluate it: ")
    assert "reshape" in notes[0].lower()
    assert notes[1:] == [
        "could not fold node 'rand' (RandomUniform): it is random: every run gives other values",
        "could not fold node 'scale' (Scale): ops of domain 'custom' are not evaluated "
        "(only standard ONNX ops are folded)",
    ]
    assert [d["node"] for d in report.details["not_folded"]] == ["scale", "rand", "bad_reshape"]


def test_a_failing_node_does_not_stop_its_independent_neighbours():
    model = _load("""<ir_version: 8, opset_import: ["" : 17]>
    agraph (float[2] x) => (float[2] y, float[4] bad) {
        a = Constant <value = float[2] {1.0, 2.0}> ()
        b = Neg (a)
        y = Add (x, b)
        six = Constant <value = float[6] {1.0, 2.0, 3.0, 4.0, 5.0, 6.0}> ()
        four = Constant <value = int64[1] {4}> ()
        bad = Reshape (six, four)
    }""")
    report = surgeon.run_pass(model, "fold_constants")
    assert _ops(model) == ["Add", "Reshape"]
    np.testing.assert_array_equal(model.graph.nodes[0].inputs[1].values, [-1.0, -2.0])
    assert len(report.details["not_folded"]) == 1


def test_size_threshold_keeps_big_results_as_nodes():
    model = _load("""<ir_version: 8, opset_import: ["" : 17]>
    agraph (float[64, 64] x) => (float[64, 64] y) {
        shape = Constant <value = int64[2] {64, 64}> ()
        ones = ConstantOfShape <value = float[1] {1.0}> (shape)
        y = Add (x, ones)
    }""")
    model.graph.nodes[1].name = "fill"
    report = surgeon.run_pass(model, "fold_constants", size_threshold=1000)
    assert _ops(model) == ["ConstantOfShape", "Add"]
    assert report.notes == ["could not fold node 'fill' (ConstantOfShape): its output 'ones' would be 16.0 KiB, "
                            "over size_threshold (1000 bytes)"]
    surgeon.run_pass(model, "fold_constants")
    assert _ops(model) == ["Add"]


def test_parameter_errors():
    model = _load(CONST_CHAIN)
    with pytest.raises(PassError) as exc:
        surgeon.run_pass(model, "fold_constants", max_iterations=0)
    assert str(exc.value) == ("error: parameter 'max_iterations': must be at least 1, got 0\n"
                              "  hint: remove 'max_iterations' to use the default (10)")
    with pytest.raises(PassError) as exc:
        surgeon.run_pass(model, "fold_constants", size_threshold=-1)
    assert str(exc.value) == ("error: parameter 'size_threshold': must be at least 0, got -1\n"
                              "  hint: set it to null to fold constants of any size")
    assert _ops(model) == ["Constant", "Constant", "Add", "Mul", "Add"]


# -- subgraphs ---------------------------------------------------------------------------

IF_MODEL = """<ir_version: 8, opset_import: ["" : 17]>
agraph (bool c, float[2] x) => (float[2] y) {
    y = If (c) <
        then_branch = g1 () => (float[2] t) {
            k = Constant <value = float[2] {1.0, 2.0}> ()
            k2 = Mul (k, k)
            t = Add (x, k2)
        },
        else_branch = g2 () => (float[2] e) {
            e = Neg (x)
        }
    >
}"""


def test_folds_inside_if_branches():
    model = _load(IF_MODEL)
    before = to_proto(model)
    surgeon.run_pass(model, "fold_constants")
    then_branch = model.graph.nodes[0].attrs["then_branch"]
    assert _ops(model, then_branch) == ["Add"]
    np.testing.assert_array_equal(then_branch.nodes[0].inputs[1].values, [1.0, 4.0])
    for c in (True, False):
        assert_same_outputs(before, model, {"c": np.array(c), "x": np.array([3.0, 4.0], np.float32)})


def test_if_with_a_constant_condition_is_inlined_and_keeps_its_output_name():
    model = _load(IF_MODEL.replace("agraph (bool c, float[2] x)", "agraph (float[2] x)")
                  .replace("y = If (c)", "c = Constant <value = bool {1}> ()\n    y = If (c)"))
    before = to_proto(model)
    report = surgeon.run_pass(model, "fold_constants")
    assert _ops(model) == ["Add"]
    assert model.graph.nodes[0].outputs[0] is model.graph.outputs[0]
    assert model.graph.outputs[0].name == "y"
    assert report.notes == ["inlined 1 If node(s) with a constant condition"]
    assert_same_outputs(before, model, {"x": np.array([3.0, 4.0], np.float32)})


@pytest.mark.parametrize("name", ["ctrlflow_script_legacy.onnx", "ctrlflow_cond_dynamo.onnx",
                                  "ctrlflow_while_dynamo.onnx", "loop.onnx", "scan.onnx"])
def test_control_flow_models_fold_and_stay_equal(name, tmp_path):
    path = real_model(name) if not name.startswith(("loop", "scan")) else real_model(f"polygraphy/{name}")
    model = surgeon.load(path)
    surgeon.run_pass(model, "fold_constants")
    surgeon.save(model, tmp_path / name)
    for seed in (0, 1):
        assert_same_outputs(path, tmp_path / name, random_inputs(path, seed=seed))


def silero_feeds(rate: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"input": rng.standard_normal((1, 512 if rate == 16000 else 256)).astype(np.float32),
            "state": (rng.standard_normal((2, 1, 128)) * 0.1).astype(np.float32),
            "sr": np.array(rate, np.int64)}


def test_silero_vad_with_nested_ifs_folds_and_stays_equal(tmp_path):
    path = real_model("silero_vad.onnx")
    model = surgeon.load(path)
    report = surgeon.run_pass(model, "fold_constants")
    assert report.details["folded"] > 100
    surgeon.save(model, tmp_path / "vad.onnx")
    for rate in (16000, 8000):
        assert_same_outputs(path, tmp_path / "vad.onnx", silero_feeds(rate))


# -- external data and the current directory ----------------------------------------------


def test_folds_external_weights_from_any_current_directory(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    w = onnx.numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w")
    graph = oh.make_graph(
        [oh.make_node("Transpose", ["w"], ["wt"], name="transpose_w"),
         oh.make_node("MatMul", ["x", "wt"], ["y"], name="matmul")],
        "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], initializer=[w])
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    (tmp_path / "model").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "out").mkdir()
    src = tmp_path / "model" / "m.onnx"
    onnx.save(proto, src, save_as_external_data=True, location="m.weights", size_threshold=0)
    monkeypatch.chdir(tmp_path / "other")

    model = surgeon.load(src)
    assert isinstance(model.graph.nodes[0].inputs[0]._values, ExternalValues)
    report = surgeon.run_pass(model, "fold_constants")
    assert _ops(model) == ["MatMul"]
    assert report.details["folded"] == 1 and report.notes == []
    surgeon.save(model, tmp_path / "out" / "m.onnx")
    feeds = {"x": rng.standard_normal((3, 16)).astype(np.float32)}
    np.testing.assert_allclose(run(tmp_path / "out" / "m.onnx", feeds)["y"], run(src, feeds)["y"], rtol=1e-6)


# -- real models, the docstring example and the ready recipe ---------------------------------


def test_docstring_example_runs_on_a_real_model(tmp_path):
    path = real_model("tiny_yolo_legacy.onnx")
    model = surgeon.load(path)
    recipe = surgeon.parse_recipe(surgeon.registry.get("fold_constants").example())
    result = surgeon.apply(recipe, model)
    assert result.steps[0].details["folded"] > 100
    assert len(model.graph.nodes) < 80
    surgeon.save(model, tmp_path / "yolo.onnx")
    assert_same_outputs(path, tmp_path / "yolo.onnx", random_inputs(path, {"N": 2}))


def test_ready_recipe_folds_ppocr(tmp_path):
    path = real_model("ch_PP-OCRv4_rec_infer.onnx")
    model = surgeon.load(path)
    result = surgeon.apply(RECIPES / "fold_constants.yaml", model)
    assert len(model.graph.nodes) <= 425  # what onnx-graphsurgeon's folding reaches
    assert result.steps[0].details["not_folded"] == []
    surgeon.save(model, tmp_path / "ocr.onnx")
    dims = {"p2o.DynamicDimension.0": 1, "p2o.DynamicDimension.1": 160}
    feeds = random_inputs(path, dims)
    feeds["x"] = np.random.default_rng(0).standard_normal((1, 3, 48, 160)).astype(np.float32)
    assert_same_outputs(path, tmp_path / "ocr.onnx", feeds)


def test_folding_twice_changes_nothing_the_second_time():
    path = real_model("tiny_yolo_legacy.onnx")
    model = surgeon.load(path)
    surgeon.run_pass(model, "fold_constants")
    once = to_proto(model).SerializeToString()
    report = surgeon.run_pass(model, "fold_constants")
    assert not report.changed
    assert to_proto(model).SerializeToString() == once
