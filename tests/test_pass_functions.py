"""inline_functions: calls of model-local functions replaced by their bodies (onnx.inliner)."""

from __future__ import annotations

import ast
from collections import Counter

import numpy as np
import onnx
import onnx.helper
import onnx.parser
import pytest
from util import RECIPES, assert_same_outputs, random_inputs, real_model, run

import surgeon
from surgeon.io.export import to_proto
from surgeon.passes.registry import registry
from surgeon.passes.runner import run_step
from surgeon.recipe.model import Step

# Gn calls Fn; Fn takes an attribute; the main graph calls Fn inside an If branch too.
NESTED = """<ir_version: 8, opset_import: ["" : 17, "pkg" : 1]>
agraph (float[N, 3] x, bool c) => (float[N, 3] y, float[N, 3] w) {
  t = pkg.Gn (x)
  y = If (c) <then_branch = g1 () => (float[N, 3] z) { z = pkg.Fn <alpha: float = 4.0> (t) },
              else_branch = g2 () => (float[N, 3] z) { z = Identity (x) }>
  w = Relu (t)
}
<domain: "pkg", opset_import: ["" : 17]>
Fn <alpha> (a) => (b) {
  c = Constant <value_float: float = @alpha> ()
  b = Mul (a, c)
}
<domain: "pkg", opset_import: ["" : 17, "pkg" : 1]>
Gn (a) => (b) { b = pkg.Fn <alpha: float = 3.0> (a) }"""

OTHER_OPSET = """<ir_version: 8, opset_import: ["" : 17, "pkg" : 1]>
agraph (float[N, 3] x) => (float[N] y, float[N, 3] r) {{ y = pkg.Fn (x)  r = pkg.Hn (x) }}
<domain: "pkg", opset_import: ["" : {version}]>
Fn (a) => (b) {{ {body} }}
<domain: "pkg", opset_import: ["" : 17]>
Hn (a) => (b) {{ b = Relu (a) }}"""


def inline(model: surgeon.Model, **params):
    return run_step(model, Step("inline_functions", params))


def structure(graph: onnx.GraphProto) -> list[tuple]:
    return [(n.domain, n.op_type, list(n.input), list(n.output)) for n in graph.node]


def nested_feeds(c: bool) -> dict[str, np.ndarray]:
    return {"x": np.arange(-3, 3, dtype=np.float32).reshape(2, 3), "c": np.array(c)}


def functionize(proto: onnx.ModelProto, groups: dict[str, list[int]], domain: str = "pkg") -> onnx.ModelProto:
    """``export_modules_as_functions`` in miniature: each group of consecutive nodes becomes a call.

    The function reads what the group reads from outside (weights included, as the
    exporters pass them) and returns what is read after it; tensor names inside are
    canonical, so groups with the same structure share one function, as layers do.
    """
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    nodes = list(graph.node)
    members = {i: name for name, idxs in groups.items() for i in idxs}
    functions: dict[bytes, str] = {}
    calls: dict[str, onnx.NodeProto] = {}
    for name, idxs in groups.items():
        body = [nodes[i] for i in idxs]
        produced = {o for n in body for o in n.output}
        inputs = list(dict.fromkeys(i for n in body for i in n.input if i and i not in produced))
        read_after = {i for k, n in enumerate(nodes) if members.get(k) != name for i in n.input}
        outputs = [o for n in body for o in n.output if o in read_after | {v.name for v in graph.output}]
        rename = {t: f"in{k}" for k, t in enumerate(inputs)} | {t: f"out{k}" for k, t in enumerate(outputs)}
        for n in body:
            for o in n.output:
                rename.setdefault(o, f"t{len(rename)}")
        copies = []
        for n in body:
            c = onnx.NodeProto()
            c.CopyFrom(n)
            c.ClearField("name")
            c.input[:] = [rename.get(i, i) for i in n.input]
            c.output[:] = [rename[o] for o in n.output]
            copies.append(c)
        func = onnx.helper.make_function(domain, "F", [rename[i] for i in inputs], [rename[o] for o in outputs],
                                         copies, list(proto.opset_import))
        fname = functions.setdefault(func.SerializeToString(), f"Block{len(functions)}")
        calls[name] = onnx.helper.make_node(fname, inputs, outputs, name=name, domain=domain)
    for key, fname in functions.items():
        func = onnx.FunctionProto.FromString(key)
        func.name = fname
        out.functions.append(func)
    graph.ClearField("node")
    for k, n in enumerate(nodes):
        name = members.get(k)
        if name is None:
            graph.node.append(n)
        elif k == groups[name][-1]:
            graph.node.append(calls[name])
    inside = {o for name, idxs in groups.items() for i in idxs for o in nodes[i].output} - \
        {i for n in graph.node for i in n.input} - {v.name for v in graph.output}
    kept = [v for v in graph.value_info if v.name not in inside]
    graph.ClearField("value_info")
    graph.value_info.extend(kept)
    out.opset_import.append(onnx.helper.make_opsetid(domain, 1))
    onnx.checker.check_model(out, full_check=True)
    return out


def encoder_layers(proto: onnx.ModelProto) -> dict[str, list[int]]:
    """Node indices per TransformerEncoderLayer, from the dynamo exporter's name scopes."""
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(proto.graph.node):
        meta = {p.key: p.value for p in n.metadata_props}
        scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
        layer = next((s for s in scopes if s.startswith("enc.layers.") and s.count(".") == 2), None)
        if layer is not None:
            groups.setdefault(layer, []).append(i)
    return groups


@pytest.fixture(scope="module")
def encoder() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """The real dynamo-exported transformer, and the same with each encoder layer a local function."""
    proto = onnx.load(real_model("transformer_encoder_dynamo.onnx"))
    return proto, functionize(proto, encoder_layers(proto))


# -- it fires ---------------------------------------------------------------------------------------


def test_inlines_everything_nested_and_in_subgraphs():
    proto = onnx.parser.parse_model(NESTED)
    model = surgeon.load(proto)
    report = inline(model)
    after = to_proto(model)
    assert structure(after.graph) == [("", "Constant", [], ["c__2"]), ("", "Mul", ["x", "c__2"], ["t"]),
                                      ("", "If", ["c"], ["y"]), ("", "Relu", ["t"], ["w"])]
    then_branch = after.graph.node[2].attribute[0].g
    assert structure(then_branch) == [("", "Constant", [], ["c__3"]), ("", "Mul", ["t", "c__3"], ["z"])]
    assert [a.f for a in after.graph.node[0].attribute] == [3.0]
    assert [a.f for a in then_branch.node[0].attribute] == [4.0]
    assert len(after.functions) == 0
    assert [(o.domain, o.version) for o in after.opset_import] == [("", 17)]
    assert report.summary() == ("step 1 (inline_functions): removed 2 nodes (pkg::Gn, pkg::Fn); "
                                "added 4 nodes (Constant x2, Mul x2)")
    assert report.details == {"inlined": {"pkg::Fn": 2, "pkg::Gn": 1}, "functions_removed": ["pkg::Fn", "pkg::Gn"]}
    assert report.changed
    onnx.checker.check_model(after, full_check=True)
    for c in (True, False):
        assert_same_outputs(proto, after, nested_feeds(c), exact=True)


def test_selected_function_is_inlined_and_others_kept():
    proto = onnx.parser.parse_model(NESTED)
    model = surgeon.load(proto)
    relu = next(n for n in model.graph.nodes if n.op == "Relu")
    report = inline(model, functions=["Gn"])
    after = to_proto(model)
    assert structure(after.graph)[0] == ("pkg", "Fn", ["x"], ["t"])  # Gn's body: a call of Fn
    assert [f.name for f in after.functions] == ["Fn"]
    assert after.functions[0].SerializeToString() == proto.functions[0].SerializeToString()
    assert any(n is relu for n in model.graph.nodes)  # untouched nodes keep their objects
    assert report.notes == ["inlined 1 call(s) of pkg::Gn", "removed local function(s) pkg::Gn"]
    for c in (True, False):
        assert_same_outputs(proto, after, nested_feeds(c), exact=True)


def test_calls_inside_other_functions_are_inlined_too():
    proto = onnx.parser.parse_model(NESTED)
    model = surgeon.load(proto)
    inline(model, functions=["pkg::Fn"])
    after = to_proto(model)
    assert [f.name for f in after.functions] == ["Gn"]
    assert [(n.op_type) for n in after.functions[0].node] == ["Constant", "Mul"]
    assert structure(after.graph)[0] == ("pkg", "Gn", ["x"], ["t"])
    onnx.checker.check_model(after, full_check=True)
    for c in (True, False):
        assert_same_outputs(proto, after, nested_feeds(c), exact=True)


def test_real_model_with_a_function_called_twice():
    path = real_model("model.onnx")  # Conv-ReLU x2: both blocks become calls of one function
    original = onnx.load(path)
    proto = functionize(original, {"block1": [0, 1], "block2": [2, 3]})
    assert [f.name for f in proto.functions] == ["Block0"]
    model = surgeon.load(proto)
    report = inline(model)
    after = to_proto(model)
    assert [n.op_type for n in after.graph.node] == ["Conv", "Relu", "Conv", "Relu"]
    block_outputs = [n.output[0] for n in original.graph.node if n.op_type == "Relu"]
    assert [n.output[0] for n in after.graph.node if n.op_type == "Relu"] == block_outputs  # names kept
    assert report.details["inlined"] == {"pkg::Block0": 2}
    assert_same_outputs(path, after, random_inputs(path), exact=True)


def test_real_transformer_with_layers_as_functions(encoder):
    original, proto = encoder
    assert len(proto.graph.node) == 7 and len(proto.functions) == 4  # 3 shape nodes and 4 layer calls
    model = surgeon.load(proto)
    report = inline(model)
    after = to_proto(model)
    assert Counter(n.op_type for n in after.graph.node) == Counter(n.op_type for n in original.graph.node)
    assert len(after.functions) == 0
    assert [r.op for r in report.removed] == ["Block0", "Block1", "Block2", "Block3"]
    # Node metadata written inside the function bodies survives inlining.
    assert sum(len(n.metadata_props) for n in after.graph.node) == sum(
        len(n.metadata_props) for n in original.graph.node)
    onnx.checker.check_model(after, full_check=True)
    feeds = random_inputs(original, dims={"batch": 2, "seq": 5})
    assert_same_outputs(original, after, feeds)
    assert_same_outputs(proto, after, feeds)


def test_function_of_another_opset_is_converted_when_inlining_all():
    body = "b = ReduceSum <axes: ints = [1], keepdims: int = 0> (a)"  # opset 11: axes is an attribute
    proto = onnx.parser.parse_model(OTHER_OPSET.format(version=11, body=body))
    model = surgeon.load(proto)
    inline(model)
    after = to_proto(model)
    assert [n.op_type for n in after.graph.node] == ["Constant", "ReduceSum", "Relu"]  # axes became an input
    onnx.checker.check_model(after, full_check=True)
    feeds = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    np.testing.assert_array_equal(run(after, feeds)["y"], [3.0, 12.0])


# -- it does not fire ---------------------------------------------------------------------------------


def test_model_without_functions_is_unchanged():
    model = surgeon.load(real_model("transformer_encoder_dynamo.onnx"))
    before = to_proto(model).SerializeToString()
    report = inline(model)
    assert to_proto(model).SerializeToString() == before
    assert report.summary() == "step 1 (inline_functions): no change"
    assert report.notes == ["the model has no local functions: nothing to inline"]


def test_inlining_twice_is_inlining_once(encoder):
    model = surgeon.load(encoder[1])
    inline(model)
    once = to_proto(model).SerializeToString()
    report = inline(model)
    assert to_proto(model).SerializeToString() == once
    assert not report.changed


def test_allow_missing_names():
    proto = onnx.parser.parse_model(NESTED)
    model = surgeon.load(proto)
    report = inline(model, functions=["Nope"], allow_missing=True)
    assert to_proto(model).SerializeToString() == to_proto(surgeon.load(proto)).SerializeToString()
    assert report.notes == ["no local function 'Nope' (allowed: allow_missing)"]


# -- errors ------------------------------------------------------------------------------------------------


def error_of(proto: onnx.ModelProto, **params) -> str:
    model = surgeon.load(proto)
    before = to_proto(model).SerializeToString()
    with pytest.raises(surgeon.StepError) as excinfo:
        inline(model, **params)
    assert to_proto(model).SerializeToString() == before
    return str(excinfo.value)


def test_unknown_function_name():
    assert error_of(onnx.parser.parse_model(NESTED), functions=["pkg::Fm"]) == (
        "error: step 1 (inline_functions): the model has no local function 'pkg::Fm'\n"
        "  hint: did you mean 'pkg::Fn', 'pkg::Gn'?")


def test_unknown_function_name_without_close_match():
    assert error_of(onnx.load(real_model("model.onnx")), functions=["Block"]) == (
        "error: step 1 (inline_functions): the model has no local function 'Block'\n"
        "  hint: the model's local functions: none; set allow_missing: true if the step may legitimately "
        "find none")


def test_selected_function_of_another_opset():
    body = "b = ReduceSum <axes: ints = [1], keepdims: int = 0> (a)"
    proto = onnx.parser.parse_model(OTHER_OPSET.format(version=11, body=body))
    assert error_of(proto, functions=["Hn"]) == (
        "error: step 1 (inline_functions): cannot inline selected functions: local function(s) 'pkg::Fn' "
        "(opset 11) import another version of the default opset than the model (17), and onnx's selective "
        "inliner cannot convert them\n"
        "  hint: inline all functions (leave out 'functions'), which converts their bodies to the model's opset")


def test_function_that_cannot_be_converted():
    proto = onnx.parser.parse_model(OTHER_OPSET.format(version=20, body="b = Gelu (a)").replace(
        "float[N] y", "float[N, 3] y").replace('ir_version: 8', 'ir_version: 10'))
    assert error_of(proto) == (
        "error: step 1 (inline_functions): cannot inline 'pkg::Fn' (opset 20): onnx cannot convert its body to "
        "the model's opset 17 (Gelu cannot be converted): No Previous Version of Gelu exists\n"
        "  hint: convert the model to the function's opset first (pass: convert_opset), then inline")


# -- recipes ----------------------------------------------------------------------------------------------


def test_docstring_example_runs_on_a_real_model(encoder):
    original, proto = encoder
    model = surgeon.load(proto)
    surgeon.apply(surgeon.parse_recipe(registry.get("inline_functions").example()), model)
    assert not model.graph.functions
    assert_same_outputs(original, to_proto(model), random_inputs(original, dims={"batch": 2, "seq": 3}))


def test_ready_recipe_runs_on_a_real_model(encoder, tmp_path):
    original, proto = encoder
    model = surgeon.load(proto)
    surgeon.apply(RECIPES / "inline_functions.yaml", model)
    out = surgeon.save(model, tmp_path / "flat.onnx").path
    assert len(onnx.load(out).functions) == 0
    assert_same_outputs(original, out, random_inputs(original, dims={"batch": 1, "seq": 4}))
