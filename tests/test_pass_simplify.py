"""simplify (and dedupe_initializers): at most as many nodes as onnxslim leaves, same outputs."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper
import onnx.parser
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto
from test_pass_fold import silero_feeds
from util import RECIPES, assert_same_outputs, random_inputs, real_model

import surgeon
from surgeon.errors import PassError
from surgeon.graph.shape_values import ShapeInfo, shared_shapes
from surgeon.io.export import to_proto
from surgeon.io.external import ExternalValues

# Nodes onnxslim 0.1.98 leaves (860 -> 393, 1746 -> 491, 269 -> 62, 197 -> 193): simplify must not leave more.
ONNXSLIM = {
    "ch_PP-OCRv4_rec_infer.onnx": 393,
    "light_densenet121.onnx": 491,
    "tiny_yolo_legacy.onnx": 62,
    "transformer_encoder_dynamo.onnx": 193,
}
# What simplify leaves today (benchmarks/README.md): a ceiling, so that a change that loses a rewrite fails.
SIMPLIFIED = {
    "ch_PP-OCRv4_rec_infer.onnx": 334,
    "light_densenet121.onnx": 367,
    "tiny_yolo_legacy.onnx": 62,
    "transformer_encoder_dynamo.onnx": 188,
}


def _feeds(name: str, path) -> dict[str, np.ndarray]:
    if name.startswith("ch_PP-OCR"):
        return {"x": np.random.default_rng(0).standard_normal((2, 3, 48, 160)).astype(np.float32)}
    return random_inputs(path, {"N": 2, "batch": 2, "seq": 7})


@pytest.mark.parametrize("name", sorted(ONNXSLIM))
def test_leaves_no_more_nodes_than_onnxslim_and_same_outputs(name, tmp_path):
    path = real_model(name)
    model = surgeon.load(path)
    report = surgeon.run_pass(model, "simplify")
    assert len(model.graph.nodes) <= SIMPLIFIED[name] <= ONNXSLIM[name]
    assert report.details["not_folded"] == []
    surgeon.save(model, tmp_path / name)
    assert_same_outputs(path, tmp_path / name, _feeds(name, path))


def test_simplify_twice_changes_nothing_the_second_time():
    model = surgeon.load(real_model("tiny_yolo_legacy.onnx"))
    surgeon.run_pass(model, "simplify")
    once = to_proto(model).SerializeToString()
    report = surgeon.run_pass(model, "simplify")
    assert not report.changed
    assert report.details["rounds"] == 1
    assert to_proto(model).SerializeToString() == once


@pytest.mark.parametrize("name", ["silero_vad.onnx", "silero_vad_16k_op15.onnx"])
def test_silero_vad_with_nested_ifs(name, tmp_path):
    path = real_model(name)
    model = surgeon.load(path)
    surgeon.run_pass(model, "simplify")
    assert sum(len(g.nodes) for g in model.graphs()) <= {"silero_vad.onnx": 148, "silero_vad_16k_op15.onnx": 76}[name]
    surgeon.save(model, tmp_path / name)
    for rate in (16000, 8000):
        assert_same_outputs(path, tmp_path / name, silero_feeds(rate))


@pytest.mark.parametrize("name", ["ctrlflow_script_legacy.onnx", "ctrlflow_cond_dynamo.onnx",
                                  "ctrlflow_while_dynamo.onnx", "polygraphy/scan.onnx"])
def test_control_flow_models(name, tmp_path):
    path = real_model(name)
    model = surgeon.load(path)
    surgeon.run_pass(model, "simplify")
    surgeon.save(model, tmp_path / path.name)
    for seed in (0, 1):
        assert_same_outputs(path, tmp_path / path.name, random_inputs(path, seed=seed))


def test_docstring_example_and_ready_recipe(tmp_path):
    path = real_model("light_densenet121.onnx")
    for recipe in (surgeon.parse_recipe(surgeon.registry.get("simplify").example()),
                   surgeon.load_recipe(RECIPES / "simplify.yaml")):
        model = surgeon.load(path)
        result = surgeon.apply(recipe, model)
        assert result.steps[0].details["fused"]["conv_bn"] == 59
        surgeon.save(model, tmp_path / "d.onnx")
        assert_same_outputs(path, tmp_path / "d.onnx", random_inputs(path))


def test_parameter_errors():
    model = surgeon.load(real_model("model.onnx"))
    with pytest.raises(PassError) as exc:
        surgeon.run_pass(model, "simplify", max_iterations=0)
    assert str(exc.value) == ("error: parameter 'max_iterations': must be at least 1, got 0\n"
                              "  hint: remove 'max_iterations' to use the default (10)")


# -- dedupe_initializers ----------------------------------------------------------------------

DUPES = """<ir_version: 8, opset_import: ["" : 17]>
agraph (float[4] x) => (float[4] y)
    <float[4] a = {1.0, 2.0, 3.0, 4.0}, float[4] b = {1.0, 2.0, 3.0, 4.0}, float[4] c = {1.0, 2.0, 3.0, 5.0},
     float[4] z = {0.0, 0.0, 0.0, 0.0}, float[4] nz = {-0.0, 0.0, 0.0, 0.0}, double[2] d = {1.0, 2.0}> {
    p = Add (x, a)
    q = Mul (p, b)
    r = Sub (q, c)
    s = Add (r, z)
    y = Sub (s, nz)
}"""


def test_dedupe_merges_identical_constants_only():
    model = surgeon.load(onnx.parser.parse_model(DUPES))
    before = to_proto(model)
    report = surgeon.run_pass(model, "dedupe_initializers")
    assert [t.name for n in model.graph.nodes for t in n.inputs if not t.name.startswith(("x", "p", "q", "r", "s"))] \
        == ["a", "a", "c", "z", "nz"]
    assert report.details == {"merged": 1, "bytes_saved": 16}
    assert report.changed
    assert report.notes == ["merged 1 duplicate constant(s), 16 bytes"]
    assert [i.name for i in to_proto(model).graph.initializer] == ["a", "c", "z", "nz", "d"]  # d: unused, kept
    assert_same_outputs(before, model, exact=True)


def test_dedupe_docstring_example_runs_on_a_real_model(tmp_path):
    path = real_model("light_densenet121.onnx")
    model = surgeon.load(path)
    recipe = surgeon.parse_recipe(surgeon.registry.get("dedupe_initializers").example())
    result = surgeon.apply(recipe, model)
    assert result.steps[0].details == {"merged": 88, "bytes_saved": 3264}
    assert result.steps[0].changed
    surgeon.save(model, tmp_path / "d.onnx")
    assert_same_outputs(path, tmp_path / "d.onnx", random_inputs(path), exact=True)


def test_dedupe_min_size_and_nothing_to_merge():
    model = surgeon.load(onnx.parser.parse_model(DUPES))
    before = to_proto(model).SerializeToString()
    report = surgeon.run_pass(model, "dedupe_initializers", min_size=17)
    assert not report.changed
    assert to_proto(model).SerializeToString() == before
    with pytest.raises(PassError) as exc:
        surgeon.run_pass(model, "dedupe_initializers", min_size=-1)
    assert str(exc.value) == ("error: parameter 'min_size': must be at least 0, got -1\n"
                              "  hint: remove 'min_size' to use the default (0)")


def test_dedupe_reads_external_weights_only_when_sizes_match(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 16)).astype(np.float32)
    inits = [onnx.numpy_helper.from_array(w, "w1"), onnx.numpy_helper.from_array(w.copy(), "w2"),
             onnx.numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w3")]
    nodes = [oh.make_node("MatMul", ["x", "w1"], ["a"]), oh.make_node("MatMul", ["a", "w2"], ["b"]),
             oh.make_node("MatMul", ["b", "w3"], ["y"])]
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])], initializer=inits)
    (tmp_path / "m").mkdir()
    (tmp_path / "elsewhere").mkdir()
    src = tmp_path / "m" / "m.onnx"
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8), src,
              save_as_external_data=True, location="m.bin", size_threshold=0)
    monkeypatch.chdir(tmp_path / "elsewhere")
    model = surgeon.load(src)
    report = surgeon.run_pass(model, "dedupe_initializers")
    assert report.details["merged"] == 1
    matmuls = model.graph.nodes
    assert matmuls[1].inputs[1] is matmuls[0].inputs[1]
    assert all(isinstance(n.inputs[1]._values, ExternalValues) for n in matmuls)  # still on disk
    surgeon.save(model, tmp_path / "out.onnx")
    assert_same_outputs(src, tmp_path / "out.onnx", {"x": rng.standard_normal((2, 16)).astype(np.float32)})


def test_dedupe_across_if_branches():
    model = surgeon.load(onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
    agraph (bool c, float[2] x) => (float[2] y) <float[2] k0 = {5.0, 6.0}> {
        y = If (c) <
            then_branch = g1 () => (float[2] t) <float[2] k1 = {5.0, 6.0}> { t = Add (x, k1) },
            else_branch = g2 () => (float[2] e) <float[2] k2 = {5.0, 6.0}> { e = Sub (x, k2) }
        >
    }"""))
    before = to_proto(model)
    report = surgeon.run_pass(model, "dedupe_initializers")
    assert report.details["merged"] == 1  # k1 and k2; k0 has no reader
    proto = to_proto(model)
    assert [i.name for i in proto.graph.initializer] == ["k0", "k1"]
    for c in (True, False):
        assert_same_outputs(before, proto, {"c": np.array(c), "x": np.array([1.0, 2.0], np.float32)})


_SMALL = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4] x) => (float[N, 4] y) <int64[2] t = {0, 4}> {
    r = Reshape (x, t)
    a = Relu (r)
    y = Transpose <perm = [0, 1]> (a)
}"""


def test_shapes_are_shared_inside_simplify_only_while_the_graph_is_unchanged():
    model = surgeon.load(onnx.parser.parse_model(_SMALL))
    assert ShapeInfo.of(model) is not ShapeInfo.of(model)  # outside shared_shapes: always computed
    with shared_shapes():
        first = ShapeInfo.of(model)
        assert ShapeInfo.of(model) is first
        edits = [
            lambda g: g.nodes[1].attrs.update(alpha=0.5),  # an attribute
            lambda g: setattr(g.nodes[2], "op", "Identity"),  # an op
            lambda g: g.nodes[2].attrs["perm"].reverse(),  # a list attribute changed in place
            lambda g: setattr(g.nodes[1].outputs[0], "name", "renamed"),  # a tensor name
            lambda g: setattr(g.nodes[1].outputs[0], "shape", ["N", 4]),  # a declared shape
            lambda g: g.nodes[0].inputs.__setitem__(1, gs.Constant("t2", np.array([-1, 4], np.int64))),  # wiring
            lambda g: g.nodes[0].inputs[1].values.__setitem__(0, 0),  # a small constant changed in place
            lambda g: g.nodes.pop(),  # a node removed
        ]
        for edit in edits:
            before = ShapeInfo.of(model)
            edit(model.graph)
            after = ShapeInfo.of(model)
            assert after is not before, edits.index(edit)
            assert ShapeInfo.of(model) is after
    assert ShapeInfo.of(model) is not ShapeInfo.of(model)


def test_simplify_infers_shapes_only_after_changes(monkeypatch):
    calls = []
    real_init = ShapeInfo.__init__

    def counting(self, *args, **kwargs):
        calls.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(ShapeInfo, "__init__", counting)
    model = surgeon.load(onnx.parser.parse_model(_SMALL))
    surgeon.run_pass(model, "simplify")
    first = len(calls)
    calls.clear()
    report = surgeon.run_pass(model, "simplify")  # nothing left to do: one inference serves every step
    assert not report.changed and len(calls) == 1
    assert first < 2 * 3  # without sharing: fold, noops and fuse each inferred, in each of 2 rounds


def test_a_model_folded_whole_needs_no_more_shape_inference(monkeypatch):
    # Polygraphy's constant_fold_bloater: Tile of a 1 MiB constant, folded into one 16 MiB output.
    from surgeon.graph import shapes

    model = surgeon.load(real_model("polygraphy/constant_fold_bloater.onnx"))
    calls = []
    real_infer = shapes.infer
    monkeypatch.setattr(shapes, "infer", lambda *a, **k: calls.append(1) or real_infer(*a, **k))
    report = surgeon.run_pass(model, "simplify")
    assert report.details["folded"] == 1 and not model.graph.nodes
    assert len(calls) == 1  # before folding; without nodes, inference would only export the weights again
