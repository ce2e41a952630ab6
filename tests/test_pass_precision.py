"""to_fp16: float32 computation to float16, Casts where float32 stays, checked in onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import onnx.parser
import onnx.shape_inference
import pytest
from util import (
    POLYGRAPHY,
    RECIPES,
    ocr_det_inputs,
    ocr_inputs,
    ocr_page_inputs,
    random_inputs,
    real_model,
    real_model_names,
    run,
    silero_inputs,
)

import surgeon
from surgeon.graph.correspondence import Correspondence
from surgeon.io import samples
from surgeon.io.export import to_proto
from surgeon.passes.registry import registry
from surgeon.passes.runner import run_step
from surgeon.recipe.model import Step

# Resize's scales are tensor(float) in the schema, ConstantOfShape's value an attribute,
# Shape's output int64, CumSum is blocked by default, w holds a value beyond float16's range.
SMALL = """<ir_version: 8, opset_import: ["" : 17]>
agraph (float[1, 2, 4, 4] x) => (float[1, 2, 8, 8] y, float[1, 2, 4, 4] c) {
  r = Relu (x)
  scales = Constant <value: tensor = float[4] {1.0, 1.0, 2.0, 2.0}> ()
  up = Resize <mode: string = "linear"> (r, , scales)
  y = Mul (up, w)
  shape = Shape (x)
  half = ConstantOfShape <value: tensor = float[1] {0.5}> (shape)
  s = Add (r, half)
  axis = Constant <value_ints: ints = [3]> ()
  c = CumSum (s, axis)
}"""

WITH_CALL = """<ir_version: 8, opset_import: ["" : 17, "pkg" : 1]>
agraph (float[2, 3] x) => (float[2, 3] y) {
  a = Relu (x)
  b = pkg.Fn (a)
  y = Sigmoid (b)
}
<domain: "pkg", opset_import: ["" : 17]>
Fn (p) => (q) { q = Neg (p) }"""


def small() -> onnx.ModelProto:
    proto = onnx.parser.parse_model(SMALL)
    w = np.array([2.0, 70000.0], np.float32).reshape(1, 2, 1, 1)
    proto.graph.initializer.append(onnx.numpy_helper.from_array(w, "w"))
    return proto


def fp16(model: surgeon.Model, **params):
    return run_step(model, Step("to_fp16", params))


def structure(graph: onnx.GraphProto) -> list[tuple]:
    return [(n.op_type, list(n.input), list(n.output)) + tuple(a.i for a in n.attribute if a.name == "to")
            for n in graph.node]


def types(proto: onnx.ModelProto) -> dict[str, int]:
    g = proto.graph
    found = {v.name: v.type.tensor_type.elem_type for v in list(g.input) + list(g.output) + list(g.value_info)}
    found.update({t.name: t.data_type for t in g.initializer})
    return found


def inferred_types(proto: onnx.ModelProto) -> dict[str, int]:
    return {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(proto).graph.value_info}


def assert_close_fp16(reference, converted, feeds, cast_inputs: bool = False) -> None:
    """Every output within 1e-2 of the output's own scale (float16 keeps ~3 decimal digits)."""
    feeds16 = {k: v.astype(np.float16) if cast_inputs and v.dtype == np.float32 else v for k, v in feeds.items()}
    want, got = run(reference, feeds), run(converted, feeds16)
    assert want.keys() == got.keys()
    for name, expected in want.items():
        actual = got[name].astype(expected.dtype)
        assert actual.shape == expected.shape, name
        scale = max(float(np.abs(expected).max()), 1e-3) if expected.size else 1.0
        np.testing.assert_allclose(actual, expected, rtol=1e-2, atol=1e-2 * scale, err_msg=name)


F32, F16, I64 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.INT64


# -- exact structure -------------------------------------------------------------------------------------


def test_converts_computation_and_keeps_typed_inputs_and_the_interface():
    proto = small()
    model = surgeon.load(proto)
    report = fp16(model)
    after = to_proto(model)
    assert structure(after.graph) == [
        ("Cast", ["x"], ["x_fp16"], F16),
        ("Relu", ["x_fp16"], ["r"]),
        ("Constant", [], ["scales"]),
        ("Resize", ["r", "", "scales"], ["up"]),
        ("Cast", ["up"], ["up_fp32"], F32),  # w holds 70000: its Mul stays float32, w too
        ("Mul", ["up_fp32", "w"], ["y"]),
        ("Shape", ["x"], ["shape"]),
        ("ConstantOfShape", ["shape"], ["half"]),
        ("Add", ["r", "half"], ["s"]),
        ("Cast", ["s"], ["s_fp32"], F32),
        ("Constant", [], ["axis"]),
        ("CumSum", ["s_fp32", "axis"], ["c"]),
    ]
    assert after.graph.node[2].attribute[0].t.data_type == F32  # Resize's scales stay float32
    half = after.graph.node[7].attribute[0].t
    assert (half.data_type, onnx.numpy_helper.to_array(half).tolist()) == (F16, [0.5])
    # Tensors the input declared (and the new ones) carry their new types; the rest stay undeclared.
    assert types(after) == {"x": F32, "y": F32, "c": F32, "w": F32, "x_fp16": F16, "up_fp32": F32,
                            "s_fp32": F32}
    assert onnx.numpy_helper.to_array(after.graph.initializer[0]).ravel().tolist() == [2.0, 70000.0]
    assert report.summary() == ("step 1 (to_fp16): added 3 nodes (Cast x3); rewired 3 nodes; "
                                "changed attributes of 1 node")
    assert report.notes == [
        "4 node(s) now compute in float16",
        "kept in float32: values float16 cannot hold x1; "
        "CumSum: a running sum accumulates float16 rounding errors along the axis x1",
        "kept in float32: an unnamed Mul node: constant input 'w' reaches 7e+04, beyond float16's 65504",
        "activations measured in onnxruntime on random inputs: x [1, 2, 4, 4]",
    ]
    assert report.details["kept_for_values"] == [
        {"node": "", "label": "an unnamed Mul node", "op": "Mul", "kind": "constant", "name": "w",
         "max_abs": 70000.0, "why": "constant input 'w' reaches 7e+04, beyond float16's 65504"}]
    onnx.checker.check_model(after, full_check=True)
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32)}
    assert_close_fp16(proto, after, feeds)  # 70000 is not clamped: the output keeps its values


def test_float16_interface():
    model = surgeon.load(small())
    fp16(model, keep_io_types=False, op_block_list=[])
    after = to_proto(model)
    assert [n.op_type for n in after.graph.node] == ["Relu", "Constant", "Resize", "Cast", "Mul", "Cast", "Shape",
                                                     "ConstantOfShape", "Add", "Constant", "CumSum"]
    assert {k: types(after)[k] for k in ("x", "y", "c")} == {"x": F16, "y": F16, "c": F16}
    onnx.checker.check_model(after, full_check=True)


def test_tiny_constants_stay_nonzero_and_constant_nodes_follow_their_readers():
    proto = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[3] x) => (float[3] y, float[3] z) {
          eps = Constant <value_float: float = 1e-9> ()
          k = Constant <value_floats: floats = [1.0, 2.0, 3.0]> ()
          d = Add (x, eps)
          y = Div (x, d)
          z = CumSum (k, zero)
        }""")
    proto.graph.initializer.append(onnx.numpy_helper.from_array(np.array(0, np.int64), "zero"))
    model = surgeon.load(proto)
    report = fp16(model, max_constant_error=100.0)  # 1e-9 becomes 6e-08 (an error of 59): allowed here
    after = to_proto(model)
    by_output = {n.output[0]: n for n in after.graph.node}
    eps = by_output["eps"].attribute[0]
    assert (eps.name, eps.t.data_type, onnx.numpy_helper.to_array(eps.t).item()) == ("value", F16, 2**-24)
    assert by_output["k"].attribute[0].name == "value_floats"  # CumSum wants float32: left alone
    assert "set 1 nonzero constant value(s) below float16's smallest subnormal to +-6e-08 instead of 0 " \
           "(keeps epsilons nonzero)" in report.notes
    x = np.zeros(3, np.float32)
    assert np.isfinite(run(after, {"x": x})["y"]).all()  # 0 / (0 + eps): an epsilon flushed to 0 would give NaN


def test_an_epsilon_float16_cannot_hold_keeps_its_node_in_float32():
    proto = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[3] x) => (float[3] y) {
          eps = Constant <value_float: float = 1e-9> ()
          d = Add (x, eps)
          y = Div (x, d)
        }""")
    model = surgeon.load(proto)
    report = fp16(model)
    after = to_proto(model)
    assert structure(after.graph) == [
        ("Cast", ["x"], ["x_fp16"], F16), ("Constant", [], ["eps"]), ("Add", ["x", "eps"], ["d"]),
        ("Cast", ["d"], ["d_fp16"], F16), ("Div", ["x_fp16", "d_fp16"], ["y_fp16"]), ("Cast", ["y_fp16"], ["y"], F32)]
    assert report.notes[2] == ("kept in float32: an unnamed Add node: constant input 'eps' (largest magnitude "
                               "1e-09) would change by 100 % in float16 (relative error 1 > max_constant_error "
                               "0.01)")
    feeds = {"x": np.array([0.0, 1.0, -2.0], np.float32)}
    assert_close_fp16(proto, after, feeds)


# x * 100 * 1000 reaches about 3e5 on standard-normal inputs: beyond float16 (65504), though every constant fits.
OVERFLOW = """<ir_version: 8, opset_import: ["" : 17]>
agraph (float[1, 3, 8, 8] x) => (float[1, 3, 8, 8] y) {
  a = Mul (x, k100)
  b = Mul (a, k1000)
  c = Relu (b)
  y = Mul (c, k1m)
}"""


def overflow() -> onnx.ModelProto:
    proto = onnx.parser.parse_model(OVERFLOW)
    names = iter(["scale", "big", "back"])
    for node in proto.graph.node:
        if node.op_type == "Mul":
            node.name = next(names)
    for name, value in (("k100", 100.0), ("k1000", 1000.0), ("k1m", 1e-3)):
        proto.graph.initializer.append(onnx.numpy_helper.from_array(np.array(value, np.float32), name))
    return proto


def test_activations_beyond_the_limit_keep_their_nodes_in_float32():
    proto = overflow()
    feeds = {"x": np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    model = surgeon.load(proto)
    report = fp16(model)
    after = to_proto(model)
    # 'scale' writes ~350 (float16); 'big' writes ~1e5 and Relu and 'back' read it: float32.
    assert structure(after.graph) == [
        ("Cast", ["x"], ["x_fp16"], F16), ("Mul", ["x_fp16", "k100"], ["a"]), ("Cast", ["a"], ["a_fp32"], F32),
        ("Mul", ["a_fp32", "k1000"], ["b"]), ("Relu", ["b"], ["c"]), ("Mul", ["c", "k1m"], ["y"])]
    # The sample run's input: seeded standard-normal noise (surgeon.io.samples.sample_feeds, seed 0).
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    b = x * np.float32(100) * np.float32(1000)
    peak_b, peak_c = float(np.abs(b).max()), float(np.maximum(b, 0).max())
    assert 65504 < peak_c <= peak_b
    assert report.notes[1:-1] == [
        "kept in float32: values float16 cannot hold x3",
        f"kept in float32: node 'big' (Mul): output 'b' reaches {peak_b:.4g} in the sample run "
        "(activation_limit 16384)",
        f"kept in float32: an unnamed Relu node: output 'c' reaches {peak_c:.4g} in the sample run "
        "(activation_limit 16384)",
        f"kept in float32: node 'back' (Mul): input 'c' reaches {peak_c:.4g} in the sample run "
        "(activation_limit 16384)",
    ]
    assert sorted((k["label"], k["name"]) for k in report.details["kept_for_values"]) == [
        ("an unnamed Relu node", "c"), ("node 'back' (Mul)", "c"), ("node 'big' (Mul)", "b")]
    assert_close_fp16(proto, after, feeds)
    # Without the check all three compute in float16, where 'b' overflows (onnxruntime's CPU provider
    # hides it by computing Mul in float32 behind the scenes; GPUs do not).
    unchecked = surgeon.load(proto)
    report = fp16(unchecked, check_activations=False)
    assert report.details["kept_for_values"] == [] and "activations_checked" not in report.details
    assert [n.op_type for n in to_proto(unchecked).graph.node] == ["Cast", "Mul", "Mul", "Relu", "Mul", "Cast"]


# -- real models -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, dims", [("model.onnx", {}), ("tiny_yolo_legacy.onnx", {}),
                                        ("transformer_encoder_dynamo.onnx", {"batch": 2, "seq": 7})])
def test_real_models_compute_within_float16_tolerance(name, dims, tmp_path):
    path = real_model(name)
    model = surgeon.load(path)
    fp16(model)
    out = surgeon.save(model, tmp_path / "fp16.onnx").path
    saved = onnx.load(out)
    floats = [t for t in saved.graph.initializer if t.data_type in (F32, F16)]
    assert floats and all(t.data_type == F16 for t in floats)
    assert out.stat().st_size < 0.6 * path.stat().st_size
    assert_close_fp16(path, out, random_inputs(path, dims=dims, seed=1))


def test_shape_arithmetic_of_a_legacy_export_stays_integer():
    path = real_model("tiny_yolo_legacy.onnx")  # grid coordinates from Shape/Range/Cast chains
    model = surgeon.load(path)
    before = inferred_types(to_proto(model))
    report = fp16(model)
    after = inferred_types(to_proto(model))
    ints = [name for name, t in before.items() if t in (onnx.TensorProto.INT64, onnx.TensorProto.INT32)]
    assert len(ints) > 50 and all(after[name] == before[name] for name in ints)
    assert "kept in float32: Range: ONNX defines no float16 for input 'start' x6" in report.notes


def test_float16_interface_on_a_real_model():
    path = real_model("tiny_yolo_dynamo.onnx")
    model = surgeon.load(path)
    fp16(model, keep_io_types=False)
    after = to_proto(model)
    assert [v.type.tensor_type.elem_type for v in list(after.graph.input) + list(after.graph.output)] == [F16] * 3
    assert_close_fp16(path, after, random_inputs(path, seed=2), cast_inputs=True)


def test_custom_op_stays_float32():
    path = real_model("model_foo.onnx")  # devtech::FooOp between the two blocks; ORT cannot run it
    model = surgeon.load(path)
    report = fp16(model)
    after = to_proto(model)
    foo = next(n for n in after.graph.node if n.op_type == "FooOp")
    producers = {o: n for n in after.graph.node for o in n.output}
    assert producers[foo.input[0]].op_type == "Cast"  # float16 in, Cast back to float32 for the custom op
    assert [n.op_type for n in after.graph.node if foo.output[0] in n.input] == ["Cast"]
    assert "kept in float32: no ONNX schema: devtech::FooOp x1" in report.notes


def test_node_block_list_keeps_a_node_in_float32():
    path = real_model("model.onnx")
    model = surgeon.load(path)
    report = fp16(model, node_block_list=["/block2/block2.0/Conv"])
    after = to_proto(model)
    conv = next(n for n in after.graph.node if n.name == "/block2/block2.0/Conv")
    assert {types(after).get(i) for i in conv.input} == {F32}
    assert "kept in float32: node_block_list x1" in report.notes
    assert_close_fp16(path, after, random_inputs(path))


def test_local_function_calls_stay_float32():
    proto = onnx.parser.parse_model(WITH_CALL)
    model = surgeon.load(proto)
    report = fp16(model)
    after = to_proto(model)
    assert structure(after.graph) == [
        ("Cast", ["x"], ["x_fp16"], F16), ("Relu", ["x_fp16"], ["a"]), ("Cast", ["a"], ["a_fp32"], F32),
        ("Fn", ["a_fp32"], ["b"]), ("Cast", ["b"], ["b_fp16"], F16), ("Sigmoid", ["b_fp16"], ["y_fp16"]),
        ("Cast", ["y_fp16"], ["y"], F32)]
    assert after.functions[0].SerializeToString() == proto.functions[0].SerializeToString()
    assert report.notes[1:-1] == ["kept in float32: local function: pkg::Fn x1",
                                "1 local function(s) not converted (run inline_functions first to convert them)"]
    feeds = {"x": np.linspace(-2, 2, 6, dtype=np.float32).reshape(2, 3)}
    assert_close_fp16(proto, after, feeds)


def test_external_weights(tmp_path):
    path = POLYGRAPHY / "ext_weights_same_dir" / "ext_weights.onnx"
    if not path.exists():
        pytest.skip(f"{path} not found")
    model = surgeon.load(path)
    fp16(model)
    out = surgeon.save(model, tmp_path / "ext16.onnx")
    assert out.data_path is None  # its float16 weights are a few bytes: stored inline, no empty data file
    assert_close_fp16(path, out.path, random_inputs(path))


# -- subgraphs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["silero_vad.onnx", "silero_vad_16k_op15.onnx"])
def test_control_flow_bodies_compute_in_float16(name, tmp_path):
    path = real_model(name)  # silero_vad.onnx: 684 of its 689 nodes in If branches, nested 4 deep
    model = surgeon.load(path)
    samples = tmp_path / "silero.npz"  # random noise of 64 samples is too short for its STFT
    np.savez(samples, **silero_inputs(seed=5))
    report = fp16(model, keep_io_types=False, inputs=str(samples))
    after = to_proto(model)
    onnx.checker.check_model(after, full_check=True)
    # Every node that computes a float value now does it in float16, in every body; the others are
    # integer and bool shape arithmetic, which stays as it was.
    kinds = _output_kinds(after)
    assert kinds[F32] == 0 and kinds[F16] > 0.35 * sum(kinds.values())
    assert kinds[F16] == report.details["float16_nodes"] > report.details["float16_nodes_in_subgraphs"] > 80
    assert report.notes == [f"{report.details['float16_nodes']} node(s) now compute in float16 "
                            f"({report.details['float16_nodes_in_subgraphs']} inside If/Loop/Scan bodies)",
                            f"activations measured in onnxruntime on the inputs of {samples}: "
                            "input [1, 512], state [2, 1, 128], sr []"]
    for seed in (0, 1):
        assert_close_fp16(path, after, silero_inputs(seed=seed), cast_inputs=True)


def _output_kinds(proto: onnx.ModelProto) -> dict[int, int]:
    """How many nodes (bodies included) write a float16 output, a float32 one (no float16), or neither."""
    inferred = onnx.shape_inference.infer_shapes(proto)
    declared: dict[str, int] = {}
    graphs = [inferred.graph, *_subgraphs(inferred.graph)]
    for g in graphs:
        for v in list(g.input) + list(g.output) + list(g.value_info):
            declared[v.name] = v.type.tensor_type.elem_type
    kinds = {F16: 0, F32: 0, 0: 0}
    for g in graphs:
        for n in g.node:
            types_out = {declared.get(o) for o in n.output}
            kinds[F16 if F16 in types_out else F32 if F32 in types_out else 0] += 1
    return kinds


def _float32_writers(proto: onnx.ModelProto) -> set[str]:
    """Op types of the nodes (bodies included) that write a float32 output."""
    inferred = onnx.shape_inference.infer_shapes(proto)
    graphs = [inferred.graph, *_subgraphs(inferred.graph)]
    declared = {v.name: v.type.tensor_type.elem_type for g in graphs
                for v in list(g.input) + list(g.output) + list(g.value_info)}
    return {n.op_type for g in graphs for n in g.node if F32 in {declared.get(o) for o in n.output}}


def test_comparisons_stay_float32_by_default():
    """float16 rounding flips comparisons, and integers cast for one lose exactness above 2048."""
    model = surgeon.load(onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (int32[4] i, float[4] x) => (float[4] y) {
            f = Cast <to = 1> (i)
            c = Less (f, x)
            z = Relu (x)
            y = Where (c, z, x)
        }"""))
    fp16(model)
    from_int = next(n for n in model.graph.nodes if n.op == "Cast" and n.inputs[0].name == "i")
    less = next(n for n in model.graph.nodes if n.op == "Less")
    relu = next(n for n in model.graph.nodes if n.op == "Relu")
    assert from_int.attrs["to"] == onnx.TensorProto.FLOAT  # the integer stays exact
    assert less.inputs[0] is from_int.outputs[0]
    to_half = relu.inputs[0].inputs[0]  # the rest computes in float16
    assert to_half.op == "Cast" and to_half.attrs["to"] == onnx.TensorProto.FLOAT16
    feeds = {"i": np.array([2049, 3, 4, 5], np.int32), "x": np.array([2049.5, 2.5, 4.5, 1.0], np.float32)}
    before = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (int32[4] i, float[4] x) => (float[4] y) {
            f = Cast <to = 1> (i)
            c = Less (f, x)
            z = Relu (x)
            y = Where (c, z, x)
        }""")
    np.testing.assert_allclose(run(model, feeds)["y"], run(before, feeds)["y"], rtol=1e-3)


def test_float32_interface_around_control_flow():
    path = real_model("silero_vad.onnx")
    model = surgeon.load(path)
    fp16(model)
    after = to_proto(model)
    assert [n.op_type for n in after.graph.node].count("Cast") == 4  # input, state; output, stateN
    assert _output_kinds(after)[F32] == 2  # the Casts to the float32 outputs
    assert_close_fp16(path, after, silero_inputs())


# A blocked CumSum inside an If branch, in a Loop body on a carried value and in the main graph read
# by the other branch; the Loop body has an initializer and a Constant node.
CONTROL_FLOW = """<ir_version: 8, opset_import: ["" : 17]>
agraph (float[4] x, bool c, int64 n) => (float[4] y, float[4] z, float[N, 4] s) {
  zero = Constant <value: tensor = int64 {0}> ()
  k = CumSum (x, zero)
  y = If (c) <then_branch: graph = g1 () => (float[4] a) { a = Add (x, k) },
              else_branch: graph = g2 () => (float[4] b) { b = CumSum (x, zero) }>
  t = Constant <value: tensor = bool {1}> ()
  z, s = Loop (n, t, x) <body: graph = body (int64 i, bool cin, float[4] v) => (bool cout, float[4] vout, float[4] sc)
    <float[1] w = {2.0}> {
      cout = Identity (cin)
      h = Constant <value: tensor = float[1] {0.5}> ()
      m = Mul (v, h)
      vout = CumSum (m, zero)
      sc = Mul (m, w)
    }>
}"""


def test_body_boundaries_keep_one_type():
    proto = onnx.parser.parse_model(CONTROL_FLOW)
    model = surgeon.load(proto)
    report = fp16(model)
    after = to_proto(model)
    g = after.graph
    assert structure(g) == [
        ("Cast", ["x"], ["x_fp16"], F16), ("Constant", [], ["zero"]), ("CumSum", ["x", "zero"], ["k"]),
        ("Cast", ["k"], ["k_fp16"], F16), ("If", ["c"], ["y_fp16"]), ("Cast", ["y_fp16"], ["y"], F32),
        ("Constant", [], ["t"]), ("Loop", ["n", "t", "x_fp16"], ["z_fp16", "s_fp16"]),
        ("Cast", ["z_fp16"], ["z"], F32), ("Cast", ["s_fp16"], ["s"], F32)]
    then, other = (g.node[4].attribute[i].g for i in (0, 1))
    assert structure(then) == [("Add", ["x_fp16", "k_fp16"], ["a"])]  # reads the outer float16 copies
    # The float32 branch is cast at its output, so both branches give float16.
    assert structure(other) == [("CumSum", ["x", "zero"], ["b"]), ("Cast", ["b"], ["b_fp16"], F16)]
    assert [o.name for o in other.output] == ["b_fp16"]
    body = g.node[7].attribute[0].g
    assert structure(body) == [
        ("Identity", ["cin"], ["cout"]), ("Constant", [], ["h"]), ("Mul", ["v", "h"], ["m"]),
        ("Cast", ["m"], ["m_fp32"], F32), ("CumSum", ["m_fp32", "zero"], ["vout"]), ("Mul", ["m", "w"], ["sc"]),
        ("Cast", ["vout"], ["vout_fp16"], F16)]  # the carried value goes back in float16, as it came in
    assert [(v.name, v.type.tensor_type.elem_type) for v in list(body.input) + list(body.output)] == [
        ("i", I64), ("cin", onnx.TensorProto.BOOL), ("v", F16),
        ("cout", onnx.TensorProto.BOOL), ("vout_fp16", F16), ("sc", F16)]
    assert [(t.name, t.data_type) for t in body.initializer] == [("w", F16)]
    assert body.node[1].attribute[0].t.data_type == F16
    assert report.notes[:-1] == ["6 node(s) now compute in float16 (4 inside If/Loop/Scan bodies)",
                            "kept in float32: CumSum: a running sum accumulates float16 rounding errors along "
                            "the axis x3"]
    onnx.checker.check_model(after, full_check=True)
    for c in (True, False):
        feeds = {"x": np.array([1, -2, 3, 0.5], np.float32), "c": np.array(c), "n": np.array(3, np.int64)}
        assert_close_fp16(proto, after, feeds)
    before = after.SerializeToString()
    assert not fp16(model).changed and to_proto(model).SerializeToString() == before


def test_blocked_loop_keeps_its_body_float32():
    proto = onnx.parser.parse_model(CONTROL_FLOW)
    model = surgeon.load(proto)
    report = fp16(model, op_block_list=["Loop"])
    after = to_proto(model)
    loop = next(n for n in after.graph.node if n.op_type == "Loop")
    assert list(loop.input) == ["n", "t", "x"] and list(loop.output) == ["z", "s"]
    original = next(n for n in proto.graph.node if n.op_type == "Loop")
    assert loop.attribute[0].g.SerializeToString() == original.attribute[0].g.SerializeToString()
    assert report.notes[1] == "kept in float32: Loop: op_block_list x1; in the body of a float32 Loop x4"
    feeds = {"x": np.array([1, -2, 3, 0.5], np.float32), "c": np.array(False), "n": np.array(2, np.int64)}
    assert_close_fp16(proto, after, feeds)


def _subgraphs(graph: onnx.GraphProto):
    for n in graph.node:
        for a in n.attribute:
            if a.HasField("g"):
                yield a.g
                yield from _subgraphs(a.g)


@pytest.mark.parametrize("name", ["ctrlflow_script_legacy.onnx", "ctrlflow_cond_dynamo.onnx",
                                  "ctrlflow_while_dynamo.onnx", "polygraphy/scan.onnx", "polygraphy/loop.onnx"])
def test_if_and_loop_models(name):
    path = real_model(name)
    model = surgeon.load(path)
    report = fp16(model)
    after = to_proto(model)
    onnx.checker.check_model(after, full_check=True)
    # Float32 is left only in Casts: to the float32 outputs, and of the values the (blocked)
    # comparisons read; loop.onnx computes in int32.
    assert _float32_writers(after) <= {"Cast", "Constant"}
    assert (report.details.get("float16_nodes_in_subgraphs", 0) > 0) == (name != "polygraphy/loop.onnx")
    for seed in (0, 1, 2):
        feeds = random_inputs(path, seed=seed)
        assert_close_fp16(path, after, feeds)


# -- it does not fire ------------------------------------------------------------------------------------


def test_float16_model_is_unchanged():
    path = POLYGRAPHY / "matmul.fp16.onnx"
    if not path.exists():
        pytest.skip(f"{path} not found")
    model = surgeon.load(path)
    before = to_proto(model).SerializeToString()
    report = fp16(model)
    assert to_proto(model).SerializeToString() == before
    assert report.summary() == "step 1 (to_fp16): no change"
    assert report.notes == ["nothing to convert: no float32 computation or constant would change"]


def test_converting_twice_is_converting_once():
    model = surgeon.load(real_model("transformer_encoder_dynamo.onnx"))
    fp16(model)
    once = to_proto(model).SerializeToString()
    report = fp16(model)
    assert to_proto(model).SerializeToString() == once
    assert not report.changed


# -- errors ------------------------------------------------------------------------------------------------


def error_of(model: surgeon.Model, **params) -> str:
    before = to_proto(model).SerializeToString()
    with pytest.raises(surgeon.StepError) as excinfo:
        fp16(model, **params)
    assert to_proto(model).SerializeToString() == before
    return str(excinfo.value)


def test_unknown_node_name():
    assert error_of(surgeon.load(real_model("model.onnx")), node_block_list=["/block2/block2.0/Cov"]) == (
        "error: step 1 (to_fp16): node_block_list names '/block2/block2.0/Cov', but the model has no node of "
        "that name\n"
        "  hint: did you mean '/block2/block2.0/Conv', '/block1/block1.0/Conv', '/block2/block2.2/Relu'?")


def test_misspelt_op():
    assert error_of(surgeon.load(real_model("model.onnx")), op_block_list=["Cumsum"]) == (
        "error: step 1 (to_fp16): op_block_list names 'Cumsum', which is neither an op of this model nor an "
        "ONNX op\n"
        "  hint: did you mean 'CumSum', 'Sum'?")


def test_weightless_model():
    path = POLYGRAPHY / "weightless.conv.onnx"  # shapes without data, as TensorRT's weightless export writes
    if not path.exists():
        pytest.skip(f"{path} not found")
    assert error_of(surgeon.load(path)) == (
        "error: step 1 (to_fp16): cannot convert initializer 'b' to float16: its values cannot be read "
        "(cannot reshape array of size 0 into shape (4,16,4,4))\n"
        "  hint: the model may have been saved without its weights; convert the model that has them")


# -- recipes ----------------------------------------------------------------------------------------------


def test_docstring_example_runs_on_a_real_model():
    path = real_model("tiny_yolo_dynamo.onnx")
    model = surgeon.load(path)
    surgeon.apply(surgeon.parse_recipe(registry.get("to_fp16").example()), model)
    assert_close_fp16(path, to_proto(model), random_inputs(path))


def test_ready_recipe_runs_on_a_real_model(tmp_path):
    path = real_model("model_dynamo.onnx")
    model = surgeon.load(path)
    surgeon.apply(RECIPES / "to_fp16.yaml", model)
    out = surgeon.save(model, tmp_path / "fp16.onnx").path
    assert_close_fp16(path, out, random_inputs(path))


def test_sequences_keep_their_element_type():
    proto = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[2, 3] x) => (float[2, 3] y) {
          a = Relu (x)
          s = SequenceConstruct (a, a)
          pos = Constant <value: tensor = int64 {1}> ()
          b = SequenceAt (s, pos)
          y = Sigmoid (b)
        }""")
    model = surgeon.load(proto)
    report = fp16(model)
    after = to_proto(model)
    assert structure(after.graph)[2:6] == [
        ("Cast", ["a"], ["a_fp32"], F32), ("SequenceConstruct", ["a_fp32", "a_fp32"], ["s"]),
        ("Constant", [], ["pos"]), ("SequenceAt", ["s", "pos"], ["b"])]
    assert report.notes[1] == ("kept in float32: SequenceConstruct: sequence, map or optional values x1; "
                               "SequenceAt: sequence, map or optional values x1")
    onnx.checker.check_model(after, full_check=True)
    assert_close_fp16(proto, after, {"x": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)})


# -- values float16 cannot hold: real models, folding, inputs ----------------------------------------------


def test_ocr_detector_keeps_its_huge_batchnorm_in_float32():
    path = real_model("ch_PP-OCRv4_det_infer.onnx")  # a BatchNormalization variance of 9.79e7
    model = surgeon.load(path)
    report = fp16(model)
    after = to_proto(model)
    assert report.notes == [
        "661 node(s) now compute in float16",
        "kept in float32: values float16 cannot hold x1",
        "kept in float32: node 'p2o.BatchNormalization.1' (BatchNormalization): constant input "
        "'batch_norm_0.w_2' reaches 9.79e+07, beyond float16's 65504",
        "set 3926 nonzero constant value(s) below float16's smallest subnormal to +-6e-08 instead of 0 "
        "(keeps epsilons nonzero)",
        "activations measured in onnxruntime on random inputs: x [1, 3, 224, 224]",
    ]
    bn = next(n for n in after.graph.node if n.name == "p2o.BatchNormalization.1")
    assert {types(after).get(i, F32) for i in bn.input} == {F32}
    for seed in (0, 1):
        feeds = ocr_det_inputs(seed=seed)
        want, got = run(path, feeds)["sigmoid_0.tmp_0"], run(after, feeds)["sigmoid_0.tmp_0"]
        assert np.abs(got - want).max() < 1e-2
        assert np.mean((got > 0.3) != (want > 0.3)) < 1e-4  # clamping the variance flipped 58 % of the pixels


def _cli(*argv: str) -> tuple[int, str, str]:
    import io

    from surgeon.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_ocr_detector_in_float16_passes_the_default_verification_and_the_peers_clamping_fails_it(tmp_path):
    """The ready recipe on the PP-OCRv4 detector, verified by default: on random images and on a page with
    text its sigmoid map matches at float16's error on the logits carried through the Sigmoid (0.45 % of the
    logits' scale moves a probability near 0.5 by up to 0.10 on the page, whose logits reach 184; 1e-4 of the
    pixels flip at the 0.3 threshold). The variance clamped to 65504, as the peers' converters do it, fails
    the same check."""
    path = real_model("ch_PP-OCRv4_det_infer.onnx")
    recipe = str(RECIPES / "to_fp16.yaml")
    code, out, err = _cli("apply", recipe, str(path), "-o", str(tmp_path / "det16.onnx"))
    assert (code, err) == (0, ""), out
    verified = out[out.index("verify: "):].splitlines()
    assert verified[:2] == [f"verify: match against {path} (random inputs)", "  inputs: x float32[2, 3, 224, 224]"]
    carried = ("where beyond that, what fp16 allows on Sigmoid's input 'p2o.Add.281' (atol 0.01 of its scale, "
               "rtol 0.01) carried through Sigmoid, as that input matches)")
    assert verified[3:5] == [
        "  p2o.Add.281 (intermediate; Sigmoid's input, for sigmoid_0.tmp_0): match, max abs error 0.202, max rel "
        "error 0.543 (rtol 0.01, atol 0.535829: fp16: atol 0.01 of the output's scale 53.6)",
        "  sigmoid_0.tmp_0: match, max abs error 0.0171, max rel error 5 (rtol 0.01, atol up to 0.133 per element: "
        f"fp16: atol 0.01 of the output's scale 0.483; {carried}"]
    np.savez(tmp_path / "page.npz", **ocr_page_inputs())
    code, out, err = _cli("verify", str(path), str(tmp_path / "det16.onnx"), "--tolerance", "fp16",
                          "--inputs", str(tmp_path / "page.npz"))
    assert (code, err) == (0, "")
    assert out.splitlines()[-2:] == [
        "  p2o.Add.281 (intermediate; Sigmoid's input, for sigmoid_0.tmp_0): match, max abs error 0.486, max rel "
        "error 140 (rtol 0.01, atol 1.83676: fp16: atol 0.01 of the output's scale 184)",
        "  sigmoid_0.tmp_0: match, max abs error 0.103, max rel error 3 (rtol 0.01, atol up to 0.431 per element: "
        f"fp16: atol 0.01 of the output's scale 1; {carried}"]
    want = run(path, ocr_page_inputs())["sigmoid_0.tmp_0"]
    got = run(tmp_path / "det16.onnx", ocr_page_inputs())["sigmoid_0.tmp_0"]
    assert np.mean(want > 0.3) > 0.1 and np.mean((want > 0.3) != (got > 0.3)) < 2e-4

    clamped = onnx.load(path)
    variance = next(n for n in clamped.graph.node if n.output[0] == "batch_norm_0.w_2").attribute[0].t  # a Constant
    variance.CopyFrom(onnx.numpy_helper.from_array(np.minimum(onnx.numpy_helper.to_array(variance), 65504)))
    onnx.save(clamped, tmp_path / "clamped.onnx")
    code, out, err = _cli("verify", str(path), str(tmp_path / "clamped.onnx"), "--tolerance", "fp16",
                          "--inputs", str(tmp_path / "page.npz"))
    assert (code, out) == (1, "")
    assert "  sigmoid_0.tmp_0: MISMATCH, max abs error 1, " in err


@pytest.mark.parametrize("name, weight", [("ch_PP-OCRv4_det_infer.onnx", "conv2d_transpose_1.w_0"),
                                          ("ch_PP-OCRv4_rec_infer.onnx", "linear_85.w_0")])
def test_fp16_verification_rejects_a_last_layer_5_percent_off(name, weight, tmp_path):
    """Float16 tolerances are loose (1 % of a scale), but not so loose that the last layer's weights 5 % off pass:
    after the final Sigmoid/Softmax the error stays within what the logits' tolerance carried through it allows,
    so the logits themselves are compared, and they are beyond it."""
    path = real_model(name)
    proto = onnx.load(path)
    tensor = next(n for n in proto.graph.node if n.output[0] == weight).attribute[0].t  # a Constant
    tensor.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(tensor) * 1.05))
    report = surgeon.verify(path, proto, correspondence=Correspondence(tolerance="fp16"))
    assert report.status == "mismatch", report.summary()
    logits, output = report.outputs
    assert (logits.intermediate, logits.ok, output.ok) == (True, False, False)
    assert "carried through " in output.describe() and ", if that input matched (it does not)); worst element " \
        in output.describe()


def test_batchnorm_is_folded_into_conv_first():
    path = real_model("model_keepbn.onnx")  # Conv -> BatchNormalization -> Relu, twice
    model = surgeon.load(path)
    report = fp16(model)
    after = to_proto(model)
    assert [n.op_type for n in after.graph.node] == ["Cast", "Conv", "Relu", "Conv", "Relu", "Cast"]
    assert report.notes[0] == "folded 2 BatchNormalization node(s) into the Conv before them"
    assert_close_fp16(path, after, random_inputs(path))
    kept = surgeon.load(path)
    fp16(kept, fold_batchnorm=False)
    assert [n.op_type for n in to_proto(kept).graph.node].count("BatchNormalization") == 2


def test_given_inputs_find_what_random_ones_miss(tmp_path):
    # x * 100: random inputs (|x| < 5) stay below 16384; these images in 0..255 reach 25500.
    proto = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[1, 3, 4, 4] x) => (float[1, 3, 4, 4] y, float[1, 3, 4, 4] z) {
          k = Constant <value_float: float = 100.0> ()
          a = Mul (x, k)
          y = Relu (a)
          z = Sigmoid (x)
        }""")
    pixels = np.random.default_rng(0).integers(0, 256, (1, 3, 4, 4)).astype(np.float32)
    samples = tmp_path / "images.npz"
    np.savez(samples, x=pixels)
    random = surgeon.load(proto)
    assert fp16(random).details["kept_for_values"] == []
    model = surgeon.load(proto)
    report = fp16(model, inputs=str(samples))
    peak = float(pixels.max()) * 100
    assert report.notes[2:] == [
        f"kept in float32: an unnamed Mul node: output 'a' reaches {peak:.4g} in the sample run "
        "(activation_limit 16384)",
        f"kept in float32: an unnamed Relu node: output 'y' reaches {peak:.4g} in the sample run "
        "(activation_limit 16384)",
        f"activations measured in onnxruntime on the inputs of {samples}: x [1, 3, 4, 4]"]
    assert report.details["sample_inputs"] == {"x": [1, 3, 4, 4]}
    assert_close_fp16(proto, to_proto(model), {"x": pixels})
    only_big = surgeon.load(onnx.parser.parse_model(ONLY_BIG))
    report = fp16(only_big, inputs=str(samples))
    assert report.notes[0] == "nothing to convert: every float32 node stays float32"
    assert [k["name"] for k in report.details["kept_for_values"]] == ["a", "y"]


ONLY_BIG = """<ir_version: 8, opset_import: ["" : 17]>
agraph (float[1, 3, 4, 4] x) => (float[1, 3, 4, 4] y) {
  k = Constant <value_float: float = 100.0> ()
  a = Mul (x, k)
  y = Relu (a)
}"""


def test_attribute_beyond_float16_keeps_its_node_in_float32():
    proto = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[4] x) => (float[4] y) {
          a = Relu (x)
          y = LeakyRelu <alpha: float = 100000.0> (a)
        }""")
    model = surgeon.load(proto)
    report = fp16(model, check_activations=False)
    assert report.notes == ["1 node(s) now compute in float16",
                            "kept in float32: values float16 cannot hold x1",
                            "kept in float32: an unnamed LeakyRelu node: attribute alpha = 1e+05 is beyond "
                            "float16's 65504"]
    assert_close_fp16(proto, to_proto(model), {"x": np.array([-1.0, 0.5, -0.25, 2.0], np.float32)})


def test_float32_extremes_are_bounds_and_are_clamped():
    # -3.4e38 (float32's lowest) is "no lower bound": clamped to -65504 it means the same in float16.
    proto = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[4] x) => (float[4] y) {
          lo = Constant <value_float: float = -3.4028234e38> ()
          y = Max (x, lo)
        }""")
    model = surgeon.load(proto)
    report = fp16(model, check_activations=False)
    assert report.notes == ["2 node(s) now compute in float16",  # the Constant node and Max
                            "clamped 1 constant value(s) beyond float16's range to +-65504"]
    assert_close_fp16(proto, to_proto(model), {"x": np.array([-1.0, 0.5, -60000.0, 2.0], np.float32)})


def test_activations_are_measured_up_to_a_custom_op():
    """onnxruntime cannot run devtech::FooOp: the run stops there, what comes before it is measured (a Mul
    reaching 3e4 stays float32) and the notes say what after it is not."""
    proto = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17, "devtech" : 1]>
        agraph (float[1, 64] x) => (float[1, 64] y) {
          k = Constant <value_float: float = 30000.0> ()
          a = Mul (x, k)
          b = devtech.FooOp (a)
          y = Relu (b)
        }""")
    report = fp16(surgeon.load(proto))
    assert report.notes == [
        "1 node(s) now compute in float16",
        "kept in float32: values float16 cannot hold x1; no ONNX schema: devtech::FooOp x1",
        "kept in float32: an unnamed Mul node: output 'a' reaches 6.975e+04 in the sample run (activation_limit "
        "16384)",
        "activations measured in onnxruntime on random inputs: x [1, 64]",
        "activations NOT checked after an unnamed devtech::FooOp node (onnxruntime cannot run it; the nodes computed "
        "from it are checked for constants and attributes only)"]
    assert report.details["activations_checked"] is True
    foo = surgeon.load(real_model("model_foo.onnx"))
    assert fp16(foo).notes[-2:] == [
        "activations measured in onnxruntime on random inputs: input [1, 3, 32, 32]",
        "activations NOT checked after devtech::FooOp '/FooOp' (onnxruntime cannot run it; the nodes computed from "
        "it are checked for constants and attributes only)"]


def test_missing_inputs_file(tmp_path):
    assert error_of(surgeon.load(real_model("model.onnx")), inputs=str(tmp_path / "nope.npz")) == (
        f"error: step 1 (to_fp16): cannot measure the activations for float16: sample inputs not found: "
        f"{tmp_path / 'nope.npz'}\n"
        "  hint: check the path of the .npz file; or set check_activations: false to check only constants "
        "and attributes")


def test_inputs_file_without_an_input(tmp_path):
    samples = tmp_path / "wrong.npz"
    np.savez(samples, image=np.zeros((1, 3, 32, 32), np.float32))
    assert error_of(surgeon.load(real_model("model.onnx")), inputs=str(samples)) == (
        "error: step 1 (to_fp16): cannot measure the activations for float16: the sample inputs have no array "
        "for input(s) input\n"
        "  hint: the .npz file must hold every graph input, by name: input; or set check_activations: false "
        "to check only constants and attributes")


def test_inputs_the_model_rejects(tmp_path):
    samples = tmp_path / "small.npz"
    np.savez(samples, input=np.zeros((1, 3, 2, 2), np.float32))
    message = error_of(surgeon.load(real_model("model.onnx")), inputs=str(samples))
    assert message.startswith("error: step 1 (to_fp16): cannot measure the activations for float16: onnxruntime "
                              "cannot run the float32 model on the sample inputs (input [1, 3, 2, 2]): ")
    assert message.endswith("\n  hint: give sample inputs the model accepts as a .npz file (inputs: <file.npz>); "
                            "or set check_activations: false to check only constants and attributes")


# Inputs the models' own code gives, where random ones (or their shapes) miss.
OWN_INPUTS = {"ch_PP-OCRv4_det_infer.onnx": ocr_page_inputs, "ch_PP-OCRv4_rec_infer.onnx": ocr_inputs,
              "silero_vad.onnx": silero_inputs, "silero_vad_16k_op15.onnx": silero_inputs}


@pytest.mark.parametrize("name", real_model_names())
def test_every_real_model_is_within_float16_tolerance_or_says_why_not(name, tmp_path):
    path = real_model(name)
    make = OWN_INPUTS.get(name)
    try:
        model = surgeon.load(path)
        specs = samples.input_specs(path)
        feeds = make(seed=0) if make else samples.sample_feeds(specs, samples.resolve_dims(specs, batch=1), seed=7)
        run(path, feeds)
    except Exception as exc:  # custom ops, bfloat16 inputs, models that are invalid on purpose (Polygraphy's)
        pytest.skip(f"the float32 model cannot run in onnxruntime on sample inputs: {type(exc).__name__}")
    params = {}
    if make:
        np.savez(tmp_path / "samples.npz", **make(seed=1))
        params["inputs"] = str(tmp_path / "samples.npz")
    report = fp16(model, **params)
    checked = report.details.get("activations_checked")
    assert checked in (True, None), report.notes  # None: nothing in float32 to measure
    kept = report.details.get("kept_for_values", [])
    for k in kept[:20]:  # the notes name each node kept for its values, and why
        assert f"kept in float32: {k['label']}: {k['why']}" in report.notes
    # Within tolerance as `surgeon apply` verifies it: the FP16 contract's tolerance (1e-2 of each output's
    # scale, or of a final Sigmoid's logits carried through it).
    verified = surgeon.verify(path, to_proto(model), inputs=feeds, correspondence=Correspondence(tolerance="fp16"))
    # inconclusive: every output matched but none depends on the inputs (Polygraphy's constant-output models)
    assert verified.status in ("match", "inconclusive") and all(o.ok for o in verified.outputs), verified.summary()


def test_activation_run_is_skipped_by_default_above_the_weight_limit(monkeypatch):
    from surgeon.passes.builtin import precision

    monkeypatch.setattr(precision, "ACTIVATION_RUN_MAX_BYTES", 1024)  # model_keepbn holds 11.2 KiB of weights
    model = surgeon.load(real_model("model_keepbn.onnx"))
    report = fp16(model)
    assert report.details["activations_checked"] is False
    assert report.notes[-1] == ("activations NOT checked: the model holds 11.2 KiB of weights, more than the "
                                "1.0 KiB the automatic run allows (it holds them once more in onnxruntime); set "
                                "check_activations: true to run it anyway")
    forced = fp16(surgeon.load(real_model("model_keepbn.onnx")), check_activations=True)
    assert forced.details["activations_checked"] is True
