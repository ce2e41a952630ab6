"""replace_subgraph: the nodes between named tensors become one node, and the regions it refuses."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
from util import assert_same_outputs, error_of, random_inputs, real_model

import surgeon
from surgeon.io.export import to_proto

# A LayerNorm as exporters before opset 17 wrote it, between a Relu and a Tanh.
LN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 8] x) => (float[N, 8] y)
    <float[8] w = {1.0, 2.0, 3.0, 4.0, 0.5, 0.25, 1.5, 2.5}, float[8] b = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8}> {
  [relu] h = Relu (x)
  ["/ln/ReduceMean"] m = ReduceMean <axes = [-1]> (h)
  ["/ln/Sub"] d = Sub (h, m)
  ["/ln/two"] two = Constant <value = float {2.0}> ()
  ["/ln/Pow"] p = Pow (d, two)
  ["/ln/ReduceMean_1"] v = ReduceMean <axes = [-1]> (p)
  ["/ln/eps"] eps = Constant <value = float {1e-5}> ()
  ["/ln/Add"] ve = Add (v, eps)
  ["/ln/Sqrt"] s = Sqrt (ve)
  ["/ln/Div"] n = Div (d, s)
  ["/ln/Mul"] sc = Mul (n, w)
  ["/ln/Add_1"] ln = Add (sc, b)
  [tanh] y = Tanh (ln)
}
"""


def _load(text: str) -> surgeon.Model:
    return surgeon.load(onnx.parser.parse_model(text))


def _nodes(graph) -> list[tuple[str, str, list[str], list[str]]]:
    return [(n.op, n.name, [t.name for t in n.inputs], [t.name for t in n.outputs]) for n in graph.nodes]


def test_layernorm_decomposition_becomes_one_layernormalization():
    model = _load(LN)
    before = to_proto(model)
    report = surgeon.run_pass(model, "replace_subgraph", inputs=["h", "w", "b"], outputs=["ln"],
                              op="LayerNormalization", attrs={"axis": -1, "epsilon": 1.0e-5}, name="enc_ln")
    assert _nodes(model.graph) == [("Relu", "relu", ["x"], ["h"]),
                                   ("LayerNormalization", "enc_ln", ["h", "w", "b"], ["ln"]),
                                   ("Tanh", "tanh", ["ln"], ["y"])]
    ln = model.graph.nodes[1]
    assert ln.attrs == {"axis": -1, "epsilon": 1e-5} and isinstance(ln.attrs["epsilon"], float)
    assert report.notes == ["9 node(s) replaced by node 'enc_ln' (LayerNormalization); 2 constant node(s) only "
                            "they read were removed"]
    assert report.details == {"node": "enc_ln", "replaced": ["/ln/ReduceMean", "/ln/Sub", "/ln/Pow",
                                                             "/ln/ReduceMean_1", "/ln/Add", "/ln/Sqrt", "/ln/Div",
                                                             "/ln/Mul", "/ln/Add_1"]}
    assert_same_outputs(before, model, random_inputs(before, {"N": 3}))
    onnx.checker.check_model(to_proto(model), full_check=True)


def test_a_plugin_op_in_its_own_domain():
    model = _load(LN)
    report = surgeon.run_pass(model, "replace_subgraph", inputs=["h", "w", "b"], outputs=["ln"], op="LayerNormPlugin",
                              domain="trt.plugins", attrs={"eps": 1.0e-5, "mode": "fast", "axes": [-1]})
    plugin = model.graph.nodes[1]
    assert (plugin.op, plugin.name, plugin.domain) == ("LayerNormPlugin", "LayerNormPlugin", "trt.plugins")
    assert plugin.attrs == {"eps": 1e-5, "mode": "fast", "axes": [-1]}
    assert model.opset_imports["trt.plugins"] == 1
    assert report.notes[-1] == "the model now imports domain 'trt.plugins' (version 1)"
    proto = to_proto(model)
    assert {o.domain: o.version for o in proto.opset_import} == {"": 17, "trt.plugins": 1}
    onnx.checker.check_model(proto)


def test_a_shared_constant_node_stays_and_an_unnamed_initializer_is_reported():
    text = LN.replace("[tanh] y = Tanh (ln)", "[tanh] t = Tanh (ln)\n  [scale] y = Mul (t, two)")
    model = _load(text)
    report = surgeon.run_pass(model, "replace_subgraph", inputs=["h", "w"], outputs=["ln"], op="Norm_TRT")
    assert [n.op for n in model.graph.nodes] == ["Relu", "Constant", "Norm_TRT", "Tanh", "Mul"]
    assert [t.name for t in model.graph.nodes[2].inputs] == ["h", "w"]
    assert report.notes == ["9 node(s) replaced by node 'Norm_TRT' (Norm_TRT); 1 constant node(s) only they read "
                            "were removed",
                            "removed with the region: constant(s) 'b' that only it read (name one in inputs to keep "
                            "it as an input of the new node)",
                            "Norm_TRT is not an ONNX op: it is kept as a plugin op in the default domain"]


def test_docstring_example_puts_a_plugin_on_a_real_model():
    model = surgeon.load(real_model("model.onnx"))
    surgeon.apply(surgeon.parse_recipe(surgeon.registry.get("replace_subgraph").example()), model)
    assert _nodes(model.graph) == [
        ("ConvRelu_TRT", "block1_plugin", ["input", "onnx::Conv_20", "onnx::Conv_21"],
         ["/block1/block1.2/Relu_output_0"]),
        ("Conv", "/block2/block2.0/Conv", ["/block1/block1.2/Relu_output_0", "onnx::Conv_23", "onnx::Conv_24"],
         ["/block2/block2.0/Conv_output_0"]),
        ("Relu", "/block2/block2.2/Relu", ["/block2/block2.0/Conv_output_0"], ["output"])]
    assert model.graph.nodes[0].attrs == {"plugin_version": "1"}


def test_errors_name_the_tensor_and_the_node_in_the_way():
    model = _load(LN)
    assert error_of(model, "replace_subgraph", inputs=["h"], outputs=["s"], op="X") == (
        "error: tensor 'd', made inside the region by node '/ln/Sub' (Sub), is also read by node '/ln/Div' (Div) "
        "outside it\n"
        "  hint: add 'd' to outputs, or choose a region that ends before it")
    assert error_of(model, "replace_subgraph", inputs=["w"], outputs=["m"], op="X") == (
        "error: output 'm' is not reachable from the inputs ('w'): it depends on 'x'\n"
        "  hint: name the tensors the region starts from in inputs, e.g. 'x'")
    assert error_of(model, "replace_subgraph", inputs=["m"], outputs=["ln"], op="X") == (
        "error: the region reads 'x' (read by node 'relu' (Relu)), which is not among its inputs\n"
        "  hint: add 'x' to inputs (or name an input downstream of it, so that node 'relu' (Relu) stays outside)")
    assert error_of(model, "replace_subgraph", inputs=["h", "w", "b"], outputs=["sc"], op="X") == (
        "error: input 'b' is not read by the region between the inputs and 'sc'\n"
        "  hint: remove it from inputs, or check the outputs")
    assert error_of(model, "replace_subgraph", inputs=["h"], outputs=["lm"], op="X") == (
        "error: output 'lm' is not a tensor of the model\n"
        "  hint: did you mean 'm'?")
    assert error_of(model, "replace_subgraph", inputs=["x"], outputs=["h"], op="LayerNormalization",
                    name="tanh") == ("error: a node named 'tanh' already exists\n"
                                     "  hint: choose another name, or leave name out")
    assert error_of(model, "replace_subgraph", inputs=["x"], outputs=["h"], op="Relu", attrs={"alpha": 1}) == (
        "error: Relu has no attribute 'alpha'\n"
        "  hint: Relu takes no attributes")


def test_an_op_newer_than_the_model_is_refused():
    model = _load(LN.replace('"" : 17', '"" : 13'))
    assert error_of(model, "replace_subgraph", inputs=["h", "w", "b"], outputs=["ln"], op="LayerNormalization") == (
        "error: LayerNormalization does not exist at the model's opset 13 (it came in opset 17)\n"
        "  hint: convert the model first (- pass: convert_opset, with: {target: 17})")


def test_an_output_that_feeds_an_input_is_refused():
    model = _load("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[N] x) => (float[N] y) {
      [a] t1 = Relu (x)
      [b] t2 = Neg (t1)
      [c] t3 = Abs (t1)
      [d] y = Add (t2, t3)
    }""")
    assert error_of(model, "replace_subgraph", inputs=["x", "t3"], outputs=["y", "t1"], op="X") == (
        "error: output 't1' feeds input 't3' outside the region (through node 'c' (Abs)): one node in its place "
        "would feed itself\n"
        "  hint: take the nodes between them into the region (name fewer inputs)")


SOFTPLUS_IN_BODIES = """
<ir_version: 8, opset_import: ["" : 17, "local" : 1]>
g (float[N] x, bool c) => (float[N] y, float[N] z) <float one = {1.0}> {
  [outer] s0 = Abs (x)
  y = If (c) <then_branch = then_g () => (float[N] ty) {
      [then_exp] te = Exp (s0)
      [then_add] ta = Add (te, one)
      [then_log] ty = Log (ta)
  }, else_branch = else_g () => (float[N] ey) {
      [else_neg] ey = Neg (s0)
  }>
  z = local.SoftplusNeg (x)
}
<domain: "local", opset_import: ["" : 17]>
SoftplusNeg (u) => (v) {
  one = Constant <value = float {1.0}> ()
  [f_exp] e = Exp (u)
  [f_add] a = Add (e, one)
  [f_log] w = Log (a)
  v = Neg (w)
}
"""


def test_regions_inside_an_if_body_and_a_local_function():
    model = _load(SOFTPLUS_IN_BODIES)
    before = to_proto(model)
    report = surgeon.run_pass(model, "replace_subgraph", inputs=["s0"], outputs=["ty"], op="Softplus")
    then = model.graph.nodes[1].attrs["then_branch"]
    assert _nodes(then) == [("Softplus", "Softplus", ["s0"], ["ty"])]
    assert report.notes == ["3 node(s) in subgraph 'then_g' of an unnamed If node replaced by node 'Softplus' "
                            "(Softplus)",
                            "removed with the region: constant(s) 'one' that only it read (name one in inputs to "
                            "keep it as an input of the new node)"]
    surgeon.run_pass(model, "replace_subgraph", inputs=["u"], outputs=["w"], op="Softplus", name="f_softplus")
    func = model.graph.functions[0]
    assert _nodes(func) == [("Softplus", "f_softplus", ["u"], ["w"]), ("Neg", "", ["w"], ["v"])]
    for c in (True, False):
        feeds = {**random_inputs(before, {"N": 4}), "c": np.array(c)}
        assert_same_outputs(before, model, feeds)


def test_a_region_does_not_cross_a_graph_boundary():
    model = _load(SOFTPLUS_IN_BODIES)
    # a body may read an outer tensor as an input, but the region stays in the body
    assert error_of(model, "replace_subgraph", inputs=["x"], outputs=["ta"], op="X") == (
        "error: output 'ta' is not reachable from the inputs ('x'): it depends on 's0'\n"
        "  hint: name the tensors the region starts from in inputs, e.g. 's0'")
    assert error_of(model, "replace_subgraph", inputs=["te"], outputs=["y"], op="X") == (
        "error: input 'te' is in subgraph 'then_g' of an unnamed If node, but the outputs are in the main graph: a "
        "region does not cross a graph boundary\n"
        "  hint: choose inputs and outputs in one graph (a body may read tensors of the graphs around it, not the "
        "other way round)")
    assert error_of(model, "replace_subgraph", inputs=["s0"], outputs=["ty", "ey"], op="X") == (
        "error: outputs 'ty' and 'ey' are in different graphs (subgraph 'then_g' of an unnamed If node and "
        "subgraph 'else_g' of an unnamed If node): a region does not cross a graph boundary\n"
        "  hint: replace a region within one graph; run the step once per graph")
    assert error_of(model, "replace_subgraph", inputs=["x", "c"], outputs=["y"], op="X") == (
        "error: the region would hold an unnamed If node, which has subgraphs\n"
        "  hint: replace_subgraph does not take If/Loop/Scan nodes into a region: choose inputs after it, or "
        "replace a region inside its body")
