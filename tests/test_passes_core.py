"""remove_node, cleanup, toposort and the pass registry (the core's passes)."""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs
import pytest
from util import assert_same_outputs, random_inputs, real_model

import surgeon
from surgeon.errors import PassError, StepError
from surgeon.io.export import to_proto
from surgeon.passes.registry import PassRegistry
from surgeon.passes.runner import run_step


def _model(text: str) -> surgeon.Model:
    return surgeon.load(onnx.parser.parse_model(text))


def _ops(model):
    return [n.op for n in model.graph.nodes]


CHAIN = """
<ir_version: 8, opset_import: ["" : 17, "devtech" : 1]>
g (float[N, 4] x) => (float[N, 4] y) {
    a = Relu (x)
    b = devtech.FooOp (a)
    y = Sigmoid (b)
}
"""

FOO_LAST = """
<ir_version: 8, opset_import: ["" : 17, "devtech" : 1]>
g (float[N, 4] x) => (float[N, 4] y) {
    a = Relu (x)
    y = devtech.FooOp (a)
}
"""

FOO_ON_INPUT_TO_OUTPUT = """
<ir_version: 8, opset_import: ["" : 17, "devtech" : 1]>
g (float[N, 4] x) => (float[N, 4] y) {
    y = devtech.FooOp (x)
}
"""


def test_bypass_in_the_middle():
    model = _model(CHAIN)
    report = surgeon.run_pass(model, "remove_node", op="FooOp", domain="devtech")
    assert _ops(model) == ["Relu", "Sigmoid"]
    assert model.graph.nodes[1].inputs[0].name == "a"
    assert [str(n) for n in report.removed] == ["<unnamed> (devtech::FooOp)"]
    assert "devtech" not in {o.domain for o in to_proto(model).opset_import}


def test_bypass_keeps_graph_output_name():
    model = _model(FOO_LAST)
    report = surgeon.run_pass(model, "remove_node", op="FooOp")
    assert _ops(model) == ["Relu"]
    assert [t.name for t in model.graph.nodes[0].outputs] == ["y"]
    assert [t.name for t in model.graph.outputs] == ["y"]
    assert report.notes == ["graph output 'y' is now produced by an unnamed Relu node"]


def test_bypass_input_to_output_inserts_identity():
    model = _model(FOO_ON_INPUT_TO_OUTPUT)
    surgeon.run_pass(model, "remove_node", op="FooOp")
    assert _ops(model) == ["Identity"]
    assert [t.name for t in model.graph.inputs] == ["x"] and [t.name for t in model.graph.outputs] == ["y"]


def test_drop_then_cleanup():
    model = _model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[4] x) => (float[4] y, float[4] debug) {
        y = Relu (x)
        t = Neg (x)
        debug = Abs (t)
    }""")
    report = surgeon.run_pass(model, "remove_node", op="Abs", mode="drop")
    assert report.notes == ["removed graph output(s) 'debug'"]
    surgeon.run_pass(model, "cleanup")
    assert _ops(model) == ["Relu"]


def test_drop_refuses_a_node_others_read():
    model = _model(CHAIN)
    before = to_proto(model).SerializeToString()
    with pytest.raises(PassError) as exc:
        surgeon.run_pass(model, "remove_node", op="Relu", mode="drop")
    assert str(exc.value) == ("error: cannot drop an unnamed Relu node: its outputs are read by FooOp"
                              "\n  hint: use mode: bypass to rewire those readers to the node's input, "
                              "or remove them too")
    assert to_proto(model).SerializeToString() == before


def test_count_mismatch_names_what_matched():
    model = _model(CHAIN)
    with pytest.raises(PassError) as exc:
        surgeon.run_pass(model, "remove_node", op="Relu", count=2)
    assert str(exc.value) == ("error: selector (op='Relu', count=2) must match 2 node(s) but matched 1: "
                              "an unnamed Relu node\n"
                              "  hint: the model may have been re-exported; check the selector or update count")


def test_allow_missing_is_a_quiet_no_op():
    model = _model(CHAIN)
    before = to_proto(model).SerializeToString()
    report = surgeon.run_pass(model, "remove_node", op="Nothing", allow_missing=True)
    assert not report.changed
    assert to_proto(model).SerializeToString() == before


def test_remove_inside_if_branches_of_a_real_model():
    """Identity nodes inside the If bodies of silero_vad go; outputs stay equal."""
    from util import silero_inputs

    path = real_model("silero_vad.onnx")
    model = surgeon.load(path)
    inside = sum(1 for g in model.graphs() if g is not model.graph for n in g.nodes if n.op == "Identity")
    assert inside > 0
    report = surgeon.run_pass(model, "remove_node", op="Identity")
    assert len(report.removed) >= inside
    # An Identity from a branch input straight to a branch output cannot go:
    # the branch output needs a producer, so it is replaced by a named copy.
    left = [n.name for n in model.nodes() if n.op == "Identity"]
    assert all(name.endswith("_bypass") for name in left)
    assert len(left) < inside
    assert_same_outputs(path, model, silero_inputs())


def test_remove_on_controlflow_models(tmp_path):
    path = real_model("ctrlflow_script_legacy.onnx")
    model = surgeon.load(path)
    ops_inside = {n.op for g in model.graphs() if g is not model.graph for n in g.nodes}
    assert ops_inside, "the model has subgraphs"
    feeds = random_inputs(path, dims={"N": 3})
    surgeon.run_pass(model, "toposort")
    surgeon.run_pass(model, "cleanup")
    assert_same_outputs(path, model, feeds, exact=True)


def test_toposort_leaves_sorted_graphs_alone_and_sorts_unsorted():
    model = surgeon.load(real_model("tiny_yolo_legacy.onnx"))
    before = to_proto(model).SerializeToString()
    report = surgeon.run_pass(model, "toposort")
    assert not report.changed and to_proto(model).SerializeToString() == before

    path = real_model("polygraphy/unsorted.onnx")
    model = surgeon.load(path)
    report = surgeon.run_pass(model, "toposort")
    assert report.notes and report.changed
    # onnxruntime refuses unsorted graphs: running it proves the sort.
    assert_same_outputs(to_proto(model), to_proto(model))


def test_cleanup_removes_dead_nodes_and_unused_initializers():
    path = real_model("polygraphy/cleanable.onnx")
    model = surgeon.load(path)
    n_before = len(model.graph.nodes)
    report = surgeon.run_pass(model, "cleanup")
    assert len(model.graph.nodes) < n_before and report.removed
    assert_same_outputs(path, model)


def test_cleanup_does_not_fire_on_clean_model():
    model = surgeon.load(real_model("model.onnx"))
    before = to_proto(model).SerializeToString()
    report = surgeon.run_pass(model, "cleanup")
    assert not report.changed and to_proto(model).SerializeToString() == before


# -- registry and user passes -------------------------------------------------------

def test_seed_gs_script_as_registered_pass(tmp_path):
    """The onnx-graphsurgeon recipe from the seed question, unchanged, as a pass."""

    @surgeon.register_pass("strip_fooop_gs")
    def strip_fooop_gs(graph: gs.Graph, *, op: str = "FooOp"):
        fake_node = [node for node in graph.nodes if node.op == op][0]
        inp_node = fake_node.i()
        inp_node.outputs = fake_node.outputs
        fake_node.outputs.clear()
        graph.cleanup()

    try:
        recipe = tmp_path / "r.yaml"
        recipe.write_text("version: 1\nsteps:\n  - pass: strip_fooop_gs\n    with: {op: FooOp}\n")
        model = surgeon.load(real_model("model_foo.onnx"))
        result = surgeon.apply(recipe, model)
        assert [str(n) for n in result.steps[0].removed] == ["/FooOp (devtech::FooOp)"]
        out = surgeon.save(model, tmp_path / "clean.onnx")
        assert_same_outputs(real_model("model.onnx"), out.path, exact=True)
    finally:
        surgeon.registry.unregister("strip_fooop_gs")


def test_name_clash_is_an_error():
    with pytest.raises(PassError) as exc:
        surgeon.register_pass("cleanup")(lambda graph: None)
    assert str(exc.value) == ("error: cannot register pass 'cleanup' from "
                              "test_passes_core.test_name_clash_is_an_error.<locals>.<lambda>: the name is taken "
                              "by the built-in pass (surgeon.passes.builtin.cleanup:cleanup)\n"
                              "  hint: choose another name (passes are never silently overridden)")


def test_entry_point_passes_are_loaded(monkeypatch):
    from importlib import metadata

    class EP:
        name, value = "ep_pass", "somepkg.passes:ep_pass"

        def load(self):
            def ep_pass(graph, *, factor: int = 2):
                """A pass from an installed package."""
            return ep_pass

    monkeypatch.setattr(metadata, "entry_points", lambda group: [EP()] if group == "surgeon.passes" else [])
    reg = PassRegistry()
    assert "ep_pass" in reg
    assert reg.get("ep_pass").source == "entry point somepkg.passes:ep_pass"
    assert reg.get("ep_pass").summary == "A pass from an installed package."


def test_unknown_pass_in_python_api():
    model = _model(CHAIN)
    with pytest.raises(PassError) as exc:
        surgeon.run_pass(model, "remove_nod")
    assert str(exc.value) == "error: unknown pass 'remove_nod'\n  hint: did you mean 'remove_node', 'rename_io'?"


def test_every_builtin_pass_is_documented():
    for spec in surgeon.registry:
        if spec.source != "builtin":
            continue
        assert spec.summary, spec.name
        for section in ("Rules", "Example", "Reports"):
            assert spec.sections.get(section), f"{spec.name} lacks a {section}: section"
        surgeon.parse_recipe(spec.example(), filename=f"<{spec.name} example>")
        for p in spec.params.values():
            assert p.doc, f"{spec.name}: parameter {p.name} is not documented"


@pytest.mark.parametrize("name", ["remove_node", "cleanup", "toposort"])
def test_core_docstring_examples_run(name):
    spec = surgeon.registry.get(name)
    model = surgeon.load(real_model("model_foo.onnx"))
    surgeon.apply(surgeon.parse_recipe(spec.example()), model)
    onnx.checker.check_model(to_proto(model))


def test_step_error_without_recipe_location():
    model = _model(CHAIN)
    recipe = surgeon.Recipe.from_steps([("remove_node", {"op": "Nope"})])
    with pytest.raises(StepError) as exc:
        surgeon.apply(recipe, model)
    assert str(exc.value).startswith("error: step 1 (remove_node): selector (op='Nope') matched no node\n")


def test_negative_input_index_is_refused():
    model = _model(CHAIN)
    with pytest.raises(PassError) as exc:
        surgeon.run_pass(model, "remove_node", op="FooOp", input=-1)
    assert str(exc.value) == ("error: parameter 'input': must be at least 0, got -1\n"
                              "  hint: input is the index of the node input that takes the node's place "
                              "(0: the first)")


def test_drop_a_whole_selected_chain():
    path = real_model("polygraphy/identity_identity.onnx")
    model = surgeon.load(path)
    assert [n.op for n in model.graph.nodes] == ["Identity", "Identity"]
    report = surgeon.run_pass(model, "remove_node", op="Identity", mode="drop")
    assert model.graph.nodes == [] and len(report.removed) == 2
    assert model.graph.outputs == []


def test_bypass_many_nodes_keeps_order_and_outputs():
    text = "<ir_version: 8, opset_import: [\"\" : 17]>\ng (float[4] x) => (float[4] y) {\n"
    prev = "x"
    for i in range(200):
        text += f"  r{i} = Relu ({prev})\n  i{i} = Identity (r{i})\n"
        prev = f"i{i}"
    text += f"  y = Identity ({prev})\n}}"
    model = _model(text)
    before = to_proto(model)
    report = surgeon.run_pass(model, "remove_node", op="Identity")
    assert [n.op for n in model.graph.nodes] == ["Relu"] * 200
    assert model.graph.nodes[-1].outputs[0].name == "y"
    assert len(report.removed) == 201
    assert_same_outputs(before, model)


def test_remove_node_reaches_into_local_functions():
    """A placeholder op inside a module exported as a local function is removed there too,
    and its domain leaves the model's and the function's opset imports."""
    import numpy as np
    from util import FOOOP_IN_LOCAL_FUNCTION, RECIPES, run

    model = _model(FOOOP_IN_LOCAL_FUNCTION)
    result = surgeon.apply(RECIPES / "strip_fooop.yaml", model)
    assert [str(n) for n in result.steps[0].removed] == ["<unnamed> (devtech::FooOp)"]
    proto = to_proto(model)
    assert [n.op_type for n in proto.functions[0].node] == ["Relu", "Sigmoid"]
    assert "devtech" not in {o.domain for o in proto.opset_import}
    assert "devtech" not in {o.domain for o in proto.functions[0].opset_import}
    onnx.checker.check_model(proto, full_check=True)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(run(proto, {"x": x})["y"], 1 / (1 + np.exp(-np.maximum(x, 0))), rtol=1e-6)


def test_first_parameter_is_chosen_by_its_annotation_not_its_name():
    """A user pass whose graph parameter was called `g` used to receive the Model silently."""
    seen = {}

    def by_type(g: gs.Graph, *, op: str = "FooOp"):
        seen["g"] = type(g).__name__
        g.nodes = [n for n in g.nodes if n.op != op]

    def model_named_graph(graph: surgeon.Model):
        seen["graph"] = type(graph).__name__

    def optional_graph(g: gs.Graph | None):
        seen["optional"] = type(g).__name__

    def unannotated(g):
        seen["unannotated"] = type(g).__name__

    reg = PassRegistry()
    for func in (by_type, model_named_graph, optional_graph, unannotated):
        reg.register(func.__name__, func, source="test")
    model = _model(CHAIN)
    for func in (by_type, model_named_graph, optional_graph, unannotated):
        run_step(model, surgeon.Step(func.__name__, {}, index=0, location=None), reg, in_recipe=False)
    assert seen == {"g": "Graph", "graph": "Model", "optional": "Graph", "unannotated": "Model"}
    assert _ops(model) == ["Relu", "Sigmoid"]


def test_first_parameter_that_is_neither_graph_nor_model_is_refused():
    def takes_proto(m: onnx.ModelProto):
        pass

    def takes_both(m: gs.Graph | surgeon.Model):
        pass

    reg = PassRegistry()
    with pytest.raises(PassError) as exc:
        reg.register("takes_proto", takes_proto, source="test")
    assert str(exc.value) == (
        "error: pass 'takes_proto': the first parameter of test_first_parameter_that_is_neither_graph_nor_model_"
        "is_refused.<locals>.takes_proto (m: ModelProto) must be the graph or the model\n"
        "  hint: annotate it as gs.Graph (onnx_graphsurgeon) for the bare graph, e.g. def takes_proto(m: gs.Graph, "
        "...), or as surgeon.Model for the model")
    with pytest.raises(PassError) as exc:
        reg.register("takes_both", takes_both, source="test")
    assert str(exc.value).splitlines()[0] == (
        "error: pass 'takes_both': the first parameter of test_first_parameter_that_is_neither_graph_nor_model_"
        "is_refused.<locals>.takes_both (m: onnx_graphsurgeon.ir.graph.Graph | surgeon.io.model.Model) must be "
        "either the graph or the model, not both")
