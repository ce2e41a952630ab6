"""eliminate_noops: nodes that provably return their input go; output names stay."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import pytest
from util import assert_same_outputs, random_inputs, real_model

import surgeon
from surgeon.io.export import to_proto


def _load(text: str) -> surgeon.Model:
    return surgeon.load(onnx.parser.parse_model(text))


def _ops(graph) -> list[str]:
    return [n.op for n in graph.nodes]


HEADER = '<ir_version: 8, opset_import: ["" : 17]>'

ALL_NOOPS = HEADER + """
agraph (float[N, 3, 4] x) => (float[N, 3, 4] y)
    <float zero = {0.0}, float[1, 4] ones = {1.0, 1.0, 1.0, 1.0}, int64[3] same = {0, 3, 4},
     int64[3] bcast = {1, 3, 1}, int64[6] nopad = {0, 0, 0, 0, 0, 0}, int64[3] reps = {1, 1, 1},
     int64[1] s0 = {0}, int64[1] send = {9223372036854775807}, int64[1] ax = {1}, float one = {1.0}> {
    a = Identity (x)
    b = Cast <to = 1> (a)
    c = Reshape (b, same)
    d = Expand (c, bcast)
    e = Transpose <perm = [0, 1, 2]> (d)
    f = Pad (e, nopad)
    g = Add (zero, f)
    h = Mul (g, ones)
    i = Sub (h, zero)
    j = Div (i, one)
    k = Slice (j, s0, send, ax)
    l = Concat <axis = 1> (k)
    m = Tile (l, reps)
    n, mask = Dropout (m)
    y = Relu (n)
}"""


def test_removes_every_kind_of_noop():
    model = _load(ALL_NOOPS)
    before = to_proto(model)
    report = surgeon.run_pass(model, "eliminate_noops")
    assert _ops(model.graph) == ["Relu"]
    assert model.graph.nodes[0].inputs[0] is model.graph.inputs[0]
    assert model.graph.nodes[0].outputs[0].name == "y"
    assert report.details["removed"] == {"Identity": 1, "Cast": 1, "Reshape": 1, "Expand": 1, "Transpose": 1,
                                         "Pad": 1, "Add": 1, "Mul": 1, "Sub": 1, "Div": 1, "Slice": 1,
                                         "Concat": 1, "Tile": 1, "Dropout": 1}
    assert report.notes == ["removed no-op(s): Add x1, Cast x1, Concat x1, Div x1, Dropout x1, Expand x1, "
                            "Identity x1, Mul x1, Pad x1, Reshape x1, Slice x1, Sub x1, Tile x1, Transpose x1"]
    assert_same_outputs(before, model, random_inputs(before, {"N": 2}))


def test_keeps_ops_that_change_something():
    model = _load(HEADER + """
    agraph (float[3] x, float[N, 3] z) => (float[2, 3] y1, float[3] y2, int32[3] y3, float[3] y4,
                                          float[3] y5, float[3, 1] y6, float[N, 3] y7, float[2] y8, float[3] y9)
        <float[2, 3] zeros = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0}, float zero = {0.0}, float[3] half = {0.5, 0.5, 0.5},
         int64[2] col = {3, 1}, int64[2] twice = {2, 3}, int64[1] s0 = {0}, int64[1] s2 = {2}, float one = {1.0}> {
        y1 = Add (x, zeros)
        y2 = Sub (zero, x)
        y3 = Cast <to = 6> (x)
        y4 = Mul (x, half)
        y5 = Div (one, x)
        y6 = Reshape (x, col)
        y7 = Transpose <perm = [0, 1]> (z)
        y8 = Slice (x, s0, s2)
        y9, m = Dropout (x, half, zero_b)
        zero_b = Constant <value = bool {1}> ()
    }""")
    # y7's identity Transpose is left alone: removing it would need an Identity to keep the name
    # of an output computed from a graph input.
    before = to_proto(model).SerializeToString()
    report = surgeon.run_pass(model, "eliminate_noops")
    assert to_proto(model).SerializeToString() == before
    assert not report.changed


def test_broadcasting_that_changes_the_rank_keeps_the_node():
    model = _load(HEADER + """
    agraph (float x) => (float[1] y) <float[1] zero = {0.0}> {
        r = Relu (x)
        a = Add (r, zero)
        y = Neg (a)
    }""")
    before = to_proto(model).SerializeToString()
    surgeon.run_pass(model, "eliminate_noops")
    assert to_proto(model).SerializeToString() == before


def test_dropout_whose_mask_is_used_stays():
    model = _load(HEADER + """
    agraph (float[3] x) => (float[3] y, bool[3] m) {
        r = Relu (x)
        d, m = Dropout (r)
        y = Neg (d)
    }""")
    before = to_proto(model).SerializeToString()
    surgeon.run_pass(model, "eliminate_noops")
    assert to_proto(model).SerializeToString() == before


def test_symbolic_shapes_prove_reshape_and_expand_noops():
    model = _load(HEADER + """
    agraph (float[N, C, 256] x) => (float[N, C, 256] y) <int64[3] copy = {0, 0, 256}, int64[3] open = {0, -1, 256}> {
        a = Relu (x)
        b = Reshape (a, copy)
        s = Shape (b)
        c = Reshape (b, s)
        d = Expand (c, s)
        e = Reshape (d, open)
        y = Neg (e)
    }""")
    before = to_proto(model)
    surgeon.run_pass(model, "eliminate_noops")
    assert _ops(model.graph) == ["Relu", "Shape", "Neg"]
    assert model.graph.nodes[2].inputs[0] is model.graph.nodes[0].outputs[0]
    assert_same_outputs(before, model, random_inputs(before, {"N": 2, "C": 5}))


def test_graph_output_name_stays_when_its_producer_goes():
    model = _load(HEADER + """
    agraph (float[3] x) => (float[3] y, float[3] z) {
        r = Relu (x)
        y = Identity (r)
        z = Identity (x)
    }""")
    before = to_proto(model)
    report = surgeon.run_pass(model, "eliminate_noops")
    assert [(n.op, n.outputs[0].name) for n in model.graph.nodes] == [("Relu", "y"), ("Identity", "z")]
    assert [t.name for t in model.graph.outputs] == ["y", "z"]
    assert report.notes == ["removed no-op(s): Identity x1",
                            "graph output 'y' is now produced by an unnamed Relu node"]
    assert_same_outputs(before, model)


def test_noops_inside_if_branches():
    model = _load(HEADER + """
    agraph (bool c, float[2] x) => (float[2] y) {
        y = If (c) <
            then_branch = g1 () => (float[2] t) {
                r = Relu (x)
                r2 = Identity (r)
                t = Identity (r2)
            },
            else_branch = g2 () => (float[2] e) {
                e = Identity (x)
            }
        >
    }""")
    before = to_proto(model)
    surgeon.run_pass(model, "eliminate_noops")
    then_branch, else_branch = model.graph.nodes[0].attrs["then_branch"], model.graph.nodes[0].attrs["else_branch"]
    assert [(n.op, n.outputs[0].name) for n in then_branch.nodes] == [("Relu", "t")]
    assert _ops(else_branch) == ["Identity"]  # reads an outer tensor: removing it would need an Identity
    for c in (True, False):
        assert_same_outputs(before, model, {"c": np.array(c), "x": np.array([-1.0, 2.0], np.float32)})


@pytest.mark.parametrize("name", ["ctrlflow_script_legacy.onnx", "polygraphy/cleanable.onnx",
                                  "polygraphy/renamable.onnx", "polygraphy/reducable.onnx",
                                  "polygraphy/identity_identity.onnx", "polygraphy/no_op_reshape.onnx",
                                  "polygraphy/loop.onnx"])
def test_real_models_stay_equal(name, tmp_path):
    path = real_model(name)
    model = surgeon.load(path)
    surgeon.run_pass(model, "eliminate_noops")
    out = tmp_path / path.name
    surgeon.save(model, out)
    assert_same_outputs(path, out, random_inputs(path))


def test_silero_vad_noops(tmp_path):
    from test_pass_fold import silero_feeds

    path = real_model("silero_vad.onnx")
    model = surgeon.load(path)
    report = surgeon.run_pass(model, "eliminate_noops")
    assert report.details["removed"]
    surgeon.save(model, tmp_path / "vad.onnx")
    for rate in (16000, 8000):
        assert_same_outputs(path, tmp_path / "vad.onnx", silero_feeds(rate))


def test_docstring_example_runs_on_a_real_model(tmp_path):
    path = real_model("ch_PP-OCRv4_rec_infer.onnx")
    model = surgeon.load(path)
    surgeon.run_pass(model, "fold_constants")
    recipe = surgeon.parse_recipe(surgeon.registry.get("eliminate_noops").example())
    result = surgeon.apply(recipe, model)
    assert result.steps[0].details["removed"] == {"Mul": 7}  # x * 1.0 after BatchNormalization
    surgeon.save(model, tmp_path / "ocr.onnx")
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 48, 160)).astype(np.float32)}
    assert_same_outputs(path, tmp_path / "ocr.onnx", feeds)
