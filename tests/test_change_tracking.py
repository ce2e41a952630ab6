"""What the runner sees a step change, beyond nodes: attributes, constant values,
tensor types and names, graph inputs/outputs (passes/runner.py, issue #8)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx_graphsurgeon.ir.tensor import LazyValues

import surgeon
from surgeon.errors import StepError

MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4] x) => (float[N, 4] y, float[N, 4] z) <float[4] w = {1.0, 2.0, 3.0, 4.0}> {
    a = LeakyRelu <alpha = 0.1> (x)
    k = Constant <value = float[4] {1.0, 1.0, 1.0, 1.0}> ()
    b = Mul (a, w)
    y = Add (b, k)
    z = Relu (a)
}
"""


def _model() -> surgeon.Model:
    return surgeon.load(onnx.parser.parse_model(MODEL))


def _constant(graph: gs.Graph, name: str) -> gs.Constant:
    return graph.tensors()[name]


PASSES = {}


def _pass(fn):
    PASSES[fn.__name__] = fn
    return fn


@_pass
def set_alpha(graph):
    """Only edits attributes, like a 6-line gs script."""
    for n in graph.nodes:
        if n.op == "LeakyRelu":
            n.attrs["alpha"] = 0.2


@_pass
def scale_weights_in_place(graph):
    w = _constant(graph, "w")
    w.values[...] = w.values * 2


@_pass
def replace_weights(graph):
    w = _constant(graph, "w")
    w.values = np.array([4.0, 3.0, 2.0, 1.0], np.float32)


@_pass
def edit_constant_node(graph):
    node = next(n for n in graph.nodes if n.op == "Constant")
    node.attrs["value"].values[0] = 9.0


@_pass
def swap_outputs(graph):
    graph.outputs = graph.outputs[::-1]


@_pass
def rename_and_reshape(graph):
    graph.outputs[1].name = "relu_out"
    graph.outputs[0].shape = [2, 4]


@_pass
def do_nothing(graph):
    """Looks at the graph and leaves it alone."""
    for n in graph.nodes:
        n.attrs.get("alpha")


@_pass
def build_a_new_graph(graph):
    """Returns a fresh graph instead of editing the one it got (outputs: only y, and a)."""
    a = next(n for n in graph.nodes if n.op == "LeakyRelu").outputs[0]
    return gs.Graph(nodes=graph.nodes, inputs=graph.inputs, outputs=[graph.outputs[0], a], opset=graph.opset)


@_pass
def replace_the_model_graph(model: surgeon.Model):
    g = model.graph
    model.graph = gs.Graph(nodes=g.nodes, inputs=g.inputs, outputs=g.outputs[1:], opset=g.opset)


@_pass
def swap_op(graph):
    for n in graph.nodes:
        if n.op in ("Relu", "LeakyRelu"):
            n.op = "Sigmoid"


@pytest.fixture(autouse=True)
def user_passes():
    for name, fn in PASSES.items():
        surgeon.register_pass(name)(fn)
    yield
    for name in PASSES:
        surgeon.registry.unregister(name)


def test_a_gs_script_that_only_edits_attributes_is_a_change():
    model = _model()
    report = surgeon.run_pass(model, "set_alpha")
    assert report.summary() == "step 1 (set_alpha): changed attributes of 1 node"
    assert report.changed and [str(n) for n in report.attrs_changed] == ["<unnamed> (LeakyRelu)"]
    assert report.removed == report.added == report.rewired == []
    # the second time the value is already there: nothing changes
    assert surgeon.run_pass(model, "set_alpha").summary() == "step 1 (set_alpha): no change"


def test_removing_an_attribute_is_a_change():
    model = _model()

    def drop_alpha(graph):
        del next(n for n in graph.nodes if n.op == "LeakyRelu").attrs["alpha"]

    surgeon.register_pass("drop_alpha")(drop_alpha)
    try:
        assert surgeon.run_pass(model, "drop_alpha").summary() == "step 1 (drop_alpha): changed attributes of 1 node"
    finally:
        surgeon.registry.unregister("drop_alpha")


def test_constant_values_edited_in_place_or_replaced_are_a_change():
    for name in ("scale_weights_in_place", "replace_weights"):
        model = _model()
        report = surgeon.run_pass(model, name)
        assert report.summary() == f"step 1 ({name}): changed values of 1 constant", name
        assert report.values_changed == ["w"]
    model = _model()
    report = surgeon.run_pass(model, "edit_constant_node")
    assert report.summary() == "step 1 (edit_constant_node): changed values of 1 constant"
    assert report.values_changed == ["k.value"]  # the unnamed value attribute of the node making 'k'


def test_large_constants_are_compared_by_identity_and_samples():
    """Over 4 KiB the values are not hashed: a replacement or an edit of a sampled element is seen."""
    model = surgeon.load(onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 4096] x) => (float[N, 4096] y) { y = Relu (x) }"""))
    model.graph.nodes[0].op = "Add"
    model.graph.nodes[0].inputs.append(gs.Constant("big", np.zeros(4096, np.float32)))  # 16 KiB

    def fill(graph):
        graph.nodes[0].inputs[1].values[...] = 1.0

    def same_again(graph):
        big = graph.nodes[0].inputs[1]
        big.values = big.values.copy()  # equal values, another array: still a replacement

    surgeon.register_pass("fill")(fill)
    surgeon.register_pass("same_again")(same_again)
    try:
        surgeon.run_pass(model, "do_nothing")
        assert surgeon.run_pass(model, "fill").values_changed == ["big"]
        assert surgeon.run_pass(model, "same_again").values_changed == ["big"]
        assert not surgeon.run_pass(model, "do_nothing").changed
    finally:
        surgeon.registry.unregister("fill")
        surgeon.registry.unregister("same_again")


def test_swapping_graph_outputs_is_a_change():
    model = _model()
    report = surgeon.run_pass(model, "swap_outputs")
    assert report.summary() == "step 1 (swap_outputs): changed graph outputs (reordered)"
    assert report.io_changed == ["outputs"] and report.changed


def test_renames_and_shapes_a_pass_did_not_report_are_seen():
    model = _model()
    report = surgeon.run_pass(model, "rename_and_reshape")
    assert report.summary() == ("step 1 (rename_and_reshape): changed the type or shape of 1 tensor; "
                                "renamed 1 tensor (z -> relu_out)")
    assert report.tensors_renamed == {"z": "relu_out"}
    assert report.renamed == {}  # what verify follows: only the renames a pass declares


def test_a_pass_that_does_nothing_is_no_change():
    model = _model()
    report = surgeon.run_pass(model, "do_nothing")
    assert report.summary() == "step 1 (do_nothing): no change"
    assert not report.changed


def test_pass_result_changed_counts_and_folded_still_works():
    model = _model()

    def touch_metadata(model):
        model.producer_name = "me"
        return surgeon.PassResult(changed=True)

    def old_style(graph):
        return surgeon.PassResult(folded=2)

    surgeon.register_pass("touch_metadata")(touch_metadata)
    surgeon.register_pass("old_style")(old_style)
    try:
        assert surgeon.run_pass(model, "touch_metadata").summary() == "step 1 (touch_metadata): changed"
        with pytest.warns(DeprecationWarning, match="PassResult\\(folded=...\\) is deprecated"):
            report = surgeon.run_pass(model, "old_style")
        assert report.summary() == "step 1 (old_style): folded 2 nodes"
        assert report.details == {"folded": 2} and report.to_dict()["folded"] == 2
    finally:
        surgeon.registry.unregister("touch_metadata")
        surgeon.registry.unregister("old_style")


def test_the_json_report_carries_what_changed():
    model = _model()
    recipe = surgeon.Recipe.from_steps([("set_alpha", {}), ("replace_weights", {}), ("swap_outputs", {})])
    steps = [r.to_dict() for r in surgeon.apply(recipe, model).steps]
    assert [s["changed"] for s in steps] == [True, True, True]
    assert steps[0]["attrs_changed"] == [{"name": "", "op": "LeakyRelu", "domain": ""}]
    assert steps[1]["values_changed"] == ["w"] and steps[1]["attrs_changed"] == []
    assert steps[2]["io_changed"] == ["outputs"] and steps[2]["values_changed"] == []
    assert {k: steps[2][k] for k in ("types_changed", "tensors_renamed", "reordered", "folded")} == {
        "types_changed": [], "tensors_renamed": {}, "reordered": False, "folded": 0}


HINT = "  hint: the model or a pass changed since the recipe was written: check the step, then update 'expect'"


def _recipe(tmp_path, pass_name: str, expect: str):
    path = tmp_path / "r.yaml"
    path.write_text(f"version: 1\nsteps:\n  - id: edit\n    pass: {pass_name}\n    expect: {expect}\n")
    return path


def test_expect_sees_an_attribute_change(tmp_path):
    surgeon.apply(_recipe(tmp_path, "set_alpha", "{changed: true, removed: 0}"), _model())
    recipe = _recipe(tmp_path, "set_alpha", "{changed: false}")
    with pytest.raises(StepError) as info:
        surgeon.apply(recipe, _model())
    assert str(info.value) == (f"{recipe}:3:5: error: step 1 'edit' (set_alpha): expect: expected no change, "
                               f"the step changed attributes of 1 node\n{HINT}")


def test_expect_a_change_from_a_step_that_changes_nothing(tmp_path):
    surgeon.apply(_recipe(tmp_path, "do_nothing", "{changed: false}"), _model())
    recipe = _recipe(tmp_path, "do_nothing", "{changed: true}")
    with pytest.raises(StepError) as info:
        surgeon.apply(recipe, _model())
    assert str(info.value) == (f"{recipe}:3:5: error: step 1 'edit' (do_nothing): expect: expected a change, "
                               f"the step changed nothing\n{HINT}")


def test_lazy_external_weights_are_never_loaded(tmp_path):
    """Tracking compares lazily held weights by identity, shape and dtype, never by value."""
    proto = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 1024] x) => (float[N, 1024] y) { y = Add (x, big) }""")
    proto.graph.initializer.append(onnx.numpy_helper.from_array(np.ones(1024, np.float32), "big"))
    onnx.save(proto, tmp_path / "m.onnx", save_as_external_data=True, location="m.data", size_threshold=0)
    model = surgeon.load(tmp_path / "m.onnx")
    big = _constant(model.graph, "big")
    assert isinstance(big._values, LazyValues)  # surgeon's ExternalValues: read from disk on demand
    assert surgeon.run_pass(model, "do_nothing").summary() == "step 1 (do_nothing): no change"
    assert isinstance(big._values, LazyValues)


def test_a_plugin_pass_that_returns_a_new_graph_is_used_and_reported():
    model = _model()
    report = surgeon.run_pass(model, "build_a_new_graph")
    assert report.summary() == "step 1 (build_a_new_graph): changed graph outputs (+ 'a', - 'z')"
    assert [t.name for t in model.graph.outputs] == ["y", "a"]
    assert report.to_dict()["io_delta"] == {"outputs": {"joined": ["a"], "left": ["z"]}}


def test_a_plugin_pass_that_replaces_the_model_graph_is_a_change():
    model = _model()
    report = surgeon.run_pass(model, "replace_the_model_graph")
    assert report.changed
    assert report.summary() == "step 1 (replace_the_model_graph): changed graph outputs (- 'y')"


def test_an_op_change_is_reported_as_such_not_as_rewiring():
    model = _model()
    report = surgeon.run_pass(model, "swap_op")
    assert report.summary() == "step 1 (swap_op): changed op of 2 nodes (LeakyRelu -> Sigmoid, Relu -> Sigmoid)"
    assert report.rewired == []
    assert [(str(a), str(b)) for a, b in report.ops_changed] == [("<unnamed> (LeakyRelu)", "<unnamed> (Sigmoid)"),
                                                               ("<unnamed> (Relu)", "<unnamed> (Sigmoid)")]
