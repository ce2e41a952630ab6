"""rewrite: patterns in ONNX text replaced wherever they match, and why they do not."""

from __future__ import annotations

from collections import Counter

import onnx
import onnx.parser
import pytest
from util import assert_same_outputs, error_of, random_inputs, real_model

import surgeon
from surgeon.errors import RecipeError
from surgeon.io.export import to_proto

# LayerNorm as exporters before opset 17 wrote it (ReduceMean takes axes as an attribute up to opset 17).
LN_DECOMPOSED = """
<ir_version: 8, opset_import: ["" : 17]>
agraph (float[N] x, float[N] w, float[N] b) => (float[N] y) <float two = {2.0}> {
  m = ReduceMean <axes = [-1]> (x)
  d = Sub (x, m)
  p = Pow (d, two)
  v = ReduceMean <axes = [-1]> (p)
  ve = Add (v, eps)
  s = Sqrt (ve)
  n = Div (d, s)
  sc = Mul (n, w)
  y = Add (sc, b)
}
"""
# ``eps`` is a pattern input (any constant): declared in the signature.
LN_PATTERN = LN_DECOMPOSED.replace("float[N] b)", "float[N] b, float eps)")
LN_FUSED = """
<ir_version: 8, opset_import: ["" : 17]>
agraph (float[N] x, float[N] w, float[N] b) => (float[N] y) {
  y = LayerNormalization <axis = -1, epsilon = 1e-5> (x, w, b)
}
"""

# Two LayerNorms as an exporter writes them: named nodes, Constant nodes, and Mul/Add operands
# in the other order than the pattern's (commutative ops match either way).
TWO_LN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 8] x) => (float[N, 8] out)
    <float[8] w1 = {1.0, 2.0, 3.0, 4.0, 0.5, 0.25, 1.5, 2.5}, float[8] b1 = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8},
     float[8] w2 = {2.0, 1.0, 0.5, 4.0, 1.5, 0.25, 3.0, 1.0}, float[8] b2 = {0.0, 0.2, 0.0, 0.4, 0.0, 0.6, 0.0, 0.8}> {
  ["/enc/relu"] h = Relu (x)
  ["/enc/ln/ReduceMean"] m = ReduceMean <axes = [-1]> (h)
  ["/enc/ln/Sub"] d = Sub (h, m)
  ["/enc/ln/two"] two = Constant <value = float {2.0}> ()
  ["/enc/ln/Pow"] p = Pow (d, two)
  ["/enc/ln/ReduceMean_1"] v = ReduceMean <axes = [-1]> (p)
  ["/enc/ln/eps"] eps = Constant <value = float {1e-5}> ()
  ["/enc/ln/Add"] ve = Add (eps, v)
  ["/enc/ln/Sqrt"] s = Sqrt (ve)
  ["/enc/ln/Div"] n = Div (d, s)
  ["/enc/ln/Mul"] sc = Mul (w1, n)
  ["/enc/ln/Add_1"] ln1 = Add (b1, sc)
  ["/dec/tanh"] t = Tanh (ln1)
  ["/dec/ln/ReduceMean"] m2 = ReduceMean <axes = [-1]> (t)
  ["/dec/ln/Sub"] d2 = Sub (t, m2)
  ["/dec/ln/Pow"] p2 = Pow (d2, two)
  ["/dec/ln/ReduceMean_1"] v2 = ReduceMean <axes = [-1]> (p2)
  ["/dec/ln/Add"] ve2 = Add (v2, eps)
  ["/dec/ln/Sqrt"] s2 = Sqrt (ve2)
  ["/dec/ln/Div"] n2 = Div (d2, s2)
  ["/dec/ln/Mul"] sc2 = Mul (n2, w2)
  ["/dec/ln/Add_1"] out = Add (sc2, b2)
}
"""


def _load(text: str) -> surgeon.Model:
    return surgeon.load(onnx.parser.parse_model(text))


def _ops(graph) -> list[str]:
    return [n.op for n in graph.nodes]


def test_layernorm_decomposition_becomes_layernormalization():
    model = _load(TWO_LN)
    before = to_proto(model)
    report = surgeon.run_pass(model, "rewrite", pattern=LN_PATTERN, replacement=LN_FUSED, constant=["w", "b", "eps"],
                              count=2)
    assert _ops(model.graph) == ["Relu", "LayerNormalization", "Tanh", "LayerNormalization"]
    first, second = model.graph.nodes[1], model.graph.nodes[3]
    assert first.name == "/enc/ln/Add_1" and second.name == "/dec/ln/Add_1"  # the last matched node's name
    assert [t.name for t in first.inputs] == ["h", "w1", "b1"] and first.outputs[0].name == "ln1"
    assert [t.name for t in second.inputs] == ["t", "w2", "b2"] and second.outputs[0].name == "out"
    assert first.attrs == {"axis": -1, "epsilon": pytest.approx(1e-5)}
    assert report.headline == ["rewrote 2 matches"] and report.details == {"matches": 2, "skipped": []}
    assert len(report.removed) == 20  # 9 nodes per LayerNorm, and the two Constant nodes they shared
    assert_same_outputs(before, model, random_inputs(before, {"N": 3}))


def test_transformer_layernorms_decomposed_and_fused_back_keep_the_numbers():
    path = real_model("transformer_encoder_dynamo.onnx")
    model = surgeon.load(path)
    original = Counter(_ops(model.graph))
    fused = LN_FUSED.replace('"" : 17', '"" : 20').replace(", epsilon = 1e-5", "")
    # opset 18 moved ReduceMean's axes to an input: the decomposition reads them from a constant.
    decomposed = """
    <ir_version: 10, opset_import: ["" : 20]>
    agraph (float[N] x, float[N] w, float[N] b) => (float[N] y)
        <int64[1] axes = {-1}, float eps = {1e-5}, float two = {2.0}> {
      m = ReduceMean (x, axes)
      d = Sub (x, m)
      p = Pow (d, two)
      v = ReduceMean (p, axes)
      ve = Add (v, eps)
      s = Sqrt (ve)
      n = Div (d, s)
      sc = Mul (n, w)
      y = Add (b, sc)
    }
    """
    feeds = random_inputs(path, {"batch": 2, "seq": 5})
    report = surgeon.run_pass(model, "rewrite", pattern=fused, replacement=decomposed, count=8)
    assert report.details["matches"] == 8 and "LayerNormalization" not in _ops(model.graph)
    assert_same_outputs(path, model, feeds)
    report = surgeon.run_pass(model, "rewrite", pattern=decomposed.replace("Add (b, sc)", "Add (sc, b)"),
                              replacement=fused, count=8)
    assert report.details["matches"] == 8
    assert Counter(_ops(model.graph)) == original
    assert [n.name for n in model.graph.nodes if n.op == "LayerNormalization"] == \
        ["node_layer_norm"] + [f"node_layer_norm_{i}" for i in range(1, 8)]
    assert_same_outputs(path, model, feeds)
    onnx.checker.check_model(to_proto(model), full_check=True)


def test_a_written_attribute_must_match_and_nothing_changes():
    model = _load(TWO_LN)
    before = to_proto(model).SerializeToString()
    report = surgeon.run_pass(model, "rewrite", pattern=LN_PATTERN.replace("axes = [-1]> (x)", "axes = [1]> (x)"),
                              replacement=LN_FUSED, allow_missing=True)
    assert report.details == {"matches": 0, "skipped": []} and report.headline == []
    assert to_proto(model).SerializeToString() == before


def test_nearest_misses_say_where_the_match_stopped():
    broken = TWO_LN.replace("d = Sub (h, m)", "d = Sub (h, two)")
    model = _load(broken)
    assert error_of(model, "rewrite", pattern=LN_PATTERN, replacement=LN_FUSED, count=2) == (
        "error: the pattern matched 1 time, expected 2\n"
        "nearest misses (pattern nodes matched, and where the match stopped):\n"
        "  from node '/enc/ln/Add_1' (Add): 4 of 9 matched; node '/enc/ln/Sub' (Sub): expected ReduceMean on "
        "input 1, found Constant\n"
        "  from node '/enc/ln/Add' (Add): 1 of 9 matched; node '/enc/ln/Add' (Add): expected Mul on input 0, "
        "found Constant\n"
        "  from node '/dec/ln/Add' (Add): 1 of 9 matched; node '/dec/ln/Add' (Add): expected Mul on input 0, "
        "found ReduceMean\n"
        "  hint: compare the pattern with the nodes named above (an attribute left out of the pattern matches any "
        "value); set allow_missing: true if the step may legitimately match nothing")


def test_constant_inputs_must_be_bound_to_constants():
    model = _load(TWO_LN.replace("g (float[N, 8] x)", "g (float[N, 8] x, float[8] w1)")
                  .replace("float[8] w1 = {1.0, 2.0, 3.0, 4.0, 0.5, 0.25, 1.5, 2.5}, ", ""))
    report = surgeon.run_pass(model, "rewrite", pattern=LN_PATTERN, replacement=LN_FUSED, constant=["w"])
    assert report.details["matches"] == 1 and _ops(model.graph)[:2] == ["Relu", "ReduceMean"]
    message = error_of(model, "rewrite", pattern=LN_PATTERN, replacement=LN_FUSED, constant=["w"])
    assert message.splitlines()[2] == (
        "  from node '/enc/ln/Add_1' (Add): 2 of 9 matched; node '/enc/ln/Mul' (Mul): input 0 is 'w1', computed "
        "by graph input 'w1'; pattern input 'w' must be a constant or initializer")


def test_a_match_whose_inner_tensor_is_read_outside_is_skipped():
    text = TWO_LN.replace("t = Tanh (ln1)", 't0 = Tanh (ln1)\n  ["/dec/mix"] t = Add (t0, d)')
    model = _load(text)
    before = to_proto(model)
    report = surgeon.run_pass(model, "rewrite", pattern=LN_PATTERN, replacement=LN_FUSED)
    assert report.details["matches"] == 1
    assert report.notes == ["the match at node '/enc/ln/Add_1' (Add) was skipped: its inner tensor 'd' is read by "
                            "node '/dec/mix' (Add) outside the match"]
    assert_same_outputs(before, model, random_inputs(before, {"N": 3}))
    assert error_of(_load(text), "rewrite", pattern=LN_PATTERN, replacement=LN_FUSED, count=2).splitlines()[:2] == [
        "error: the pattern matched 1 time, expected 2",
        "  the match at node '/enc/ln/Add_1' (Add) was skipped: its inner tensor 'd' is read by node '/dec/mix' "
        "(Add) outside the match"]


def test_too_many_matches_is_an_error_listing_them():
    assert error_of(_load(TWO_LN), "rewrite", pattern=LN_PATTERN, replacement=LN_FUSED, count=1) == (
        "error: the pattern matched 2 times, expected 1\n"
        "matches at: node '/enc/ln/Add_1' (Add), node '/dec/ln/Add_1' (Add)\n"
        "  hint: the model may have been re-exported; check the pattern or update count")


def test_no_node_with_the_anchor_op():
    model = _load(TWO_LN)
    pattern = """agraph (float[N] x) => (float[N] y) { y = Sigmod (x) }"""
    assert error_of(model, "rewrite", pattern=pattern, replacement=pattern.replace("Sigmod", "Relu")) == (
        "error: the pattern matched 0 times, expected at least 1\n"
        "no node has op Sigmod (the op writing the pattern's output 'y')\n"
        "  hint: set allow_missing: true if the step may legitimately match nothing")


RELU2 = """agraph (float[N] x) => (float[N] y) { r = Relu (x)  y = Relu (r) }"""


def test_matches_do_not_overlap_and_go_in_graph_order():
    model = _load("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[N] x) => (float[N] y) {
      [a] t1 = Relu (x)
      [b] t2 = Relu (t1)
      [c] t3 = Relu (t2)
      [d] t4 = Relu (t3)
      [e] y = Relu (t4)
    }""")
    before = to_proto(model)
    report = surgeon.run_pass(model, "rewrite", pattern=RELU2,
                              replacement="agraph (float[N] x) => (float[N] y) { y = Relu (x) }")
    assert [(n.name, n.inputs[0].name, n.outputs[0].name) for n in model.graph.nodes] == \
        [("b", "x", "t2"), ("d", "t2", "t4"), ("e", "t4", "y")]
    assert report.details["matches"] == 2
    assert report.notes == ["the match at node 'c' (Relu) overlaps an earlier match",
                            "the match at node 'e' (Relu) overlaps an earlier match"]
    assert_same_outputs(before, model, random_inputs(before, {"N": 3}), exact=True)


SOFTPLUS_BODY = """
  e = Exp (x)
  a = Add (e, one)
  y = Log (a)
"""
SOFTPLUS = """
<ir_version: 8, opset_import: ["" : 17]>
agraph (float[N] x) => (float[N] y) <float one = {1.0}> {""" + SOFTPLUS_BODY + "}"
SOFTPLUS_OP = """
<ir_version: 8, opset_import: ["" : 17]>
agraph (float[N] x) => (float[N] y) { y = Softplus (x) }"""

CONTROL_FLOW = """
<ir_version: 8, opset_import: ["" : 17, "local" : 1]>
g (float[N] x, bool c) => (float[N] y, float[N] z) <float one = {1.0}> {
  [outer_exp] e0 = Exp (x)
  [outer_add] a0 = Add (one, e0)
  [outer_log] s0 = Log (a0)
  y = If (c) <then_branch = then_g () => (float[N] ty) {
      [then_exp] te = Exp (s0)
      [then_add] ta = Add (te, one)
      [then_log] ty = Log (ta)
  }, else_branch = else_g () => (float[N] ey) {
      [else_neg] ey = Neg (s0)
  }>
  z = local.SoftplusTwice (x)
}
<domain: "local", opset_import: ["" : 17]>
SoftplusTwice (u) => (v) {
  one = Constant <value = float {1.0}> ()
  [f_exp] e = Exp (u)
  [f_add] a = Add (e, one)
  [f_log] w = Log (a)
  v = Neg (w)
}
"""


def test_matches_in_bodies_and_local_functions_are_replaced_in_order():
    model = _load(CONTROL_FLOW)
    before = to_proto(model)
    report = surgeon.run_pass(model, "rewrite", pattern=SOFTPLUS, replacement=SOFTPLUS_OP, count=3)
    assert report.details["matches"] == 3
    assert [(n.op, n.name) for n in model.graph.nodes] == [("Softplus", "outer_log"), ("If", ""),
                                                           ("SoftplusTwice", "")]
    then = model.graph.nodes[1].attrs["then_branch"]
    assert [(n.op, n.name, n.inputs[0].name, n.outputs[0].name) for n in then.nodes] == \
        [("Softplus", "then_log", "s0", "ty")]
    func = model.graph.functions[0]
    assert [n.op for n in func.nodes] == ["Softplus", "Neg"]  # the Constant node only the match read is gone
    for c in (True, False):
        feeds = {**random_inputs(before, {"N": 4}), "c": __import__("numpy").array(c)}
        assert_same_outputs(before, model, feeds)


def test_replacement_ops_must_exist_at_the_models_opset():
    model = _load(TWO_LN.replace('"" : 17', '"" : 13'))
    assert error_of(model, "rewrite", pattern=LN_PATTERN, replacement=LN_FUSED) == (
        "error: the replacement uses LayerNormalization (line 4), which does not exist at the model's opset 13 "
        "(it came in opset 17)\n"
        "  hint: convert the model first (- pass: convert_opset, with: {target: 17}), or write the replacement "
        "with ops of opset 13")


def _recipe(pattern: str, replacement: str, extra: str = "") -> str:
    def block(text: str) -> str:
        return "\n".join("        " + line for line in text.strip().splitlines())

    return (f"version: 1\ndescription: t\nsteps:\n  - pass: rewrite\n    with:\n      pattern: |\n{block(pattern)}\n"
            f"      replacement: |\n{block(replacement)}\n{extra}")


def test_patterns_are_checked_when_the_recipe_is_read_with_the_line_inside_the_block():
    text = _recipe(LN_PATTERN.replace("d = Sub (x, m)", "d = Sub (x, m"),
                   LN_FUSED.replace("(float[N] y)", "(float[N] z)").replace("y = Layer", "z = Layer"),
                   "      constant: [w, bias]\n")
    with pytest.raises(RecipeError) as exc:
        surgeon.parse_recipe(text, "r.yaml")
    assert str(exc.value) == (
        "r.yaml:10:24: error: parameter 'pattern', line 4, column 16: invalid ONNX text: Expected character ) not "
        "found.\n"
        "  hint: write the graph as onnx.parser reads it, e.g.\n"
        "        <ir_version: 8, opset_import: [\"\" : 17]>\n"
        "        agraph (float[N] x) => (float[N] y) {\n"
        "            y = Relu (x)\n"
        "        }")
    # the same problems in a pattern that parses: the replacement's and constant's, at their lines
    text = text.replace("d = Sub (x, m\n", "d = Sub (x, m)\n")
    with pytest.raises(RecipeError) as exc:
        surgeon.parse_recipe(text, "r.yaml")
    assert str(exc.value) == (
        "r.yaml:21:9: error: parameter 'replacement', line 2: the replacement writes 'z' but the pattern writes 'y'\n"
        "  hint: the replacement produces the pattern's outputs under the same names\n"
        "r.yaml:24:21: error: parameter 'constant[1]': 'bias' is not an input of the pattern\n"
        "  hint: the pattern's inputs are: x, w, b, eps")


def test_pattern_nodes_must_feed_the_first_output():
    text = _recipe("agraph (float[N] x) => (float[N] y) {\n  y = Relu (x)\n  z = Neg (x)\n}",
                   "agraph (float[N] x) => (float[N] y) {\n  y = Relu (x)\n}")
    with pytest.raises(RecipeError) as exc:
        surgeon.parse_recipe(text, "r.yaml")
    assert str(exc.value) == (
        "r.yaml:9:9: error: parameter 'pattern', line 3: node 'z = Neg' does not feed the pattern's first output "
        "'y'\n"
        "  hint: a pattern is matched backwards from the node writing its first output: list the output it "
        "computes first, or remove the node")


def test_docstring_example_replaces_silu_in_a_real_detector():
    path = real_model("tiny_yolo_dynamo.onnx")
    model = surgeon.load(path)
    silu = [n.name for n in model.graph.nodes if n.op == "Mul" and n.inputs[1].inputs
            and n.inputs[1].inputs[0].op == "Sigmoid" and n.inputs[1].inputs[0].inputs[0] is n.inputs[0]]
    report = surgeon.apply(surgeon.parse_recipe(surgeon.registry.get("rewrite").example()), model)
    assert report.steps[0].details["matches"] == len(silu) > 0
    assert [n.name for n in model.graph.nodes if n.op == "SiLU_TRT"] == silu
    plugin = next(n for n in model.graph.nodes if n.op == "SiLU_TRT")
    assert plugin.name == "node_silu" and plugin.outputs[0].name == "silu"


SILU_TWO_OUTPUTS = "agraph (float[N] x) => (float[N] y, float[N] s) { s = Sigmoid (x)  y = Mul (x, s) }"


def test_a_pattern_with_two_outputs_keeps_a_reader_of_the_inner_one_in_order():
    model = _load("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[N] x) => (float[N] z) {
      [sig] s = Sigmoid (x)
      [neg] t = Neg (s)
      [mul] y = Mul (x, s)
      [add] z = Add (y, t)
    }""")
    before = to_proto(model)
    one_output = "agraph (float[N] x) => (float[N] y) { s = Sigmoid (x)  y = Mul (x, s) }"
    report = surgeon.run_pass(model, "rewrite", pattern=one_output, replacement=one_output.replace("(x, s)", "(s, x)"),
                              allow_missing=True)
    assert report.notes == ["the match at node 'mul' (Mul) was skipped: its inner tensor 's' is read by node 'neg' "
                            "(Neg) outside the match"]
    report = surgeon.run_pass(model, "rewrite", pattern=SILU_TWO_OUTPUTS,
                              replacement=SILU_TWO_OUTPUTS.replace("(x, s)", "(s, x)"))
    assert [(n.op, n.name, [t.name for t in n.inputs]) for n in model.graph.nodes] == [
        ("Sigmoid", "mul/Sigmoid", ["x"]), ("Neg", "neg", ["s"]), ("Mul", "mul", ["s", "x"]),
        ("Add", "add", ["y", "t"])]
    assert_same_outputs(before, model, random_inputs(before, {"N": 3}), exact=True)


def test_a_match_whose_output_feeds_its_own_input_is_skipped():
    model = _load("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[N] x) => (float[N] y) {
      [sig] s = Sigmoid (x)
      [neg] t = Neg (s)
      [mul] y = Mul (t, s)
    }""")
    pattern = "agraph (float[N] x, float[N] w) => (float[N] y, float[N] s) { s = Sigmoid (x)  y = Mul (w, s) }"
    report = surgeon.run_pass(model, "rewrite", pattern=pattern, replacement=pattern.replace("Mul", "Add"),
                              allow_missing=True)
    assert report.notes == ["the match at node 'mul' (Mul) was skipped: its output 's' feeds its own input through "
                            "node 'neg' (Neg)"]
    assert [n.op for n in model.graph.nodes] == ["Sigmoid", "Neg", "Mul"]


def test_a_pattern_input_bound_inside_the_match_is_skipped():
    model = _load("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[N] x) => (float[N] y) {
      [relu] r = Relu (x)
      [add] y = Add (r, r)
    }""")
    pattern = "agraph (float[N] x, float[N] z) => (float[N] y) { a = Relu (x)  y = Add (a, z) }"
    report = surgeon.run_pass(model, "rewrite", pattern=pattern,
                              replacement="agraph (float[N] x, float[N] z) => (float[N] y) { y = Sub (x, z) }",
                              allow_missing=True)
    assert report.notes == ["the match at node 'add' (Add) was skipped: pattern input 'z' is bound to 'r', which the "
                            "match itself computes"]


def test_python_recipes_name_the_line_of_the_text():
    with pytest.raises(RecipeError) as exc:
        surgeon.Recipe.from_steps([("rewrite", {"pattern": RELU2, "replacement": "agraph (x) => (y) { y = Relu (x }"})])
    assert str(exc.value).splitlines()[0] == (
        "error: step 1 (rewrite): parameter 'replacement', line 1, column 33: invalid ONNX text: Expected character "
        ") not found.")
