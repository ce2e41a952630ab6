"""custom_ops: declared plugin ops let shape inference, folding and the shape passes get past them."""

from __future__ import annotations

import textwrap

import numpy as np
import onnx
import onnx.parser
import pytest

import surgeon
from surgeon.errors import RecipeError
from surgeon.graph import custom_ops
from surgeon.workflow import apply_file
from tests.util import real_model

FOO = {"op": "FooOp", "domain": "devtech", "outputs": [{"dtype": "input0", "shape": "input0"}]}
RESIZE = {"op": "ResizePlugin", "domain": "trt.plugins",
          "outputs": [{"dtype": "input0", "shape": ["input0[0]", "input0[1]", "out_h", "out_w"]}]}

# A plugin op with attributes, a shape chain behind it (Shape -> Gather -> Unsqueeze -> Concat ->
# Reshape) and a second declared op behind the first.
RESIZE_MODEL = """
<ir_version: 8, opset_import: ["" : 17, "trt.plugins" : 1, "devtech" : 1]>
agraph (float[N, 3, 8, 8] x) => (float[N, ?] y) {
    r = trt.plugins.ResizePlugin <out_h = 16, out_w = 24> (x)
    f = devtech.FooOp (r)
    s = Shape (f)
    i = Constant <value = int64[1] {0}> ()
    b = Gather <axis = 0> (s, i)
    m = Constant <value = int64[1] {-1}> ()
    t = Concat <axis = 0> (b, m)
    y = Reshape (f, t)
}
"""


def _recipe(tmp_path, decls: str, steps: str = "  - pass: infer_shapes\n") -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text("version: 1\ncustom_ops:\n" + textwrap.indent(textwrap.dedent(decls), "  ") + "steps:\n" + steps)
    return str(path)


def _shapes(model: surgeon.Model) -> dict[str, list | None]:
    return {t.name: (None if t.shape is None else list(t.shape)) for n in model.graph.nodes for t in n.outputs}


@pytest.fixture
def resize_model():
    return surgeon.load(onnx.parser.parse_model(RESIZE_MODEL))


def test_without_declarations_inference_stops_at_the_plugin_op(resize_model):
    surgeon.run_pass(resize_model, "infer_shapes")
    shapes = _shapes(resize_model)
    assert shapes["r"] is None and shapes["f"] is None and shapes["s"] == [None]


def test_declared_ops_let_shapes_flow_past_them(resize_model):
    recipe = surgeon.Recipe.from_steps([("infer_shapes", {})])
    with custom_ops.scoped([custom_ops.OpDecl(**{**RESIZE, "outputs": tuple(RESIZE["outputs"])}),
                            custom_ops.OpDecl(**{**FOO, "outputs": tuple(FOO["outputs"])})]):
        surgeon.apply(recipe, resize_model)
    shapes = _shapes(resize_model)
    assert shapes["r"] == ["N", 3, 16, 24]
    assert shapes["f"] == ["N", 3, 16, 24]
    assert shapes["s"] == [4]
    assert shapes["b"] == [1]
    assert shapes["y"] == ["N", None]  # Reshape to [N, -1]: -1 over a symbolic N stays unknown


def test_recipe_declarations_fold_the_shape_chain_behind_the_op(tmp_path):
    proto = onnx.parser.parse_model(RESIZE_MODEL.replace("float[N, 3, 8, 8] x", "float[2, 3, 8, 8] x"))
    src = tmp_path / "resize.onnx"
    onnx.save(proto, src)
    decls = """\
    - op: ResizePlugin
      domain: trt.plugins
      outputs:
        - dtype: input0
          shape: [input0[0], input0[1], out_h, out_w]
    - {op: FooOp, domain: devtech, outputs: [{dtype: input0, shape: input0}]}
    """
    recipe = _recipe(tmp_path, decls.replace("[input0[0], input0[1], out_h, out_w]",
                                             "['input0[0]', 'input0[1]', out_h, out_w]"),
                     "  - pass: fold_constants\n  - pass: cleanup\n")
    result = apply_file(recipe, src, tmp_path / "out.onnx")
    out = onnx.load(tmp_path / "out.onnx")
    assert [n.op_type for n in out.graph.node] == ["ResizePlugin", "FooOp", "Reshape"]
    target = {t.name: onnx.numpy_helper.to_array(t) for t in out.graph.initializer}[out.graph.node[2].input[1]]
    assert target.tolist() == [2, -1]
    assert result.warnings == []
    # Without the declarations nothing behind the plugin folds.
    plain = tmp_path / "plain.yaml"
    plain.write_text("version: 1\nsteps:\n  - pass: fold_constants\n  - pass: cleanup\n")
    apply_file(str(plain), src, tmp_path / "plain.onnx")
    assert [n.op_type for n in onnx.load(tmp_path / "plain.onnx").graph.node] == [
        "ResizePlugin", "FooOp", "Shape", "Gather", "Concat", "Reshape"]


def test_fixture_model_foo_infers_past_fooop_and_warns_about_unused_declarations(tmp_path):
    decls = """\
    - {op: FooOp, domain: devtech, outputs: [{dtype: input0, shape: input0}]}
    - {op: BarOp, domain: devtech, outputs: [{dtype: float16}]}
    """
    recipe = _recipe(tmp_path, decls)
    result = apply_file(recipe, real_model("model_foo.onnx"), tmp_path / "out.onnx")
    types = {v.name: onnx.helper.printable_type(v.type) for v in onnx.load(tmp_path / "out.onnx").graph.value_info}
    assert types["/FooOp_output_0"] == "FLOAT, Nx16x32x32"
    assert types["/block2/block2.0/Conv_output_0"] == "FLOAT, Nx16x32x32"
    assert result.warnings == [f"{recipe}:4: custom op 'devtech::BarOp' is declared but the model has no such "
                               "node (the declaration is unused)"]


def test_set_batch_goes_past_a_declared_op(tmp_path):
    recipe = _recipe(tmp_path, "- {op: FooOp, domain: devtech, outputs: [{dtype: input0, shape: input0}]}\n",
                     "  - pass: set_batch\n    with: {size: 4}\n")
    apply_file(recipe, real_model("model_foo.onnx"), tmp_path / "out.onnx")
    out = onnx.load(tmp_path / "out.onnx")
    types = {v.name: onnx.helper.printable_type(v.type) for v in list(out.graph.value_info) + list(out.graph.output)}
    assert types["/FooOp_output_0"] == "FLOAT, 4x16x32x32"
    assert types["output"] == "FLOAT, 4x16x32x32"


def test_declare_op_from_python_and_its_errors(resize_model):
    try:
        surgeon.declare_op("ResizePlugin", "trt.plugins", outputs=RESIZE["outputs"])
        surgeon.run_pass(resize_model, "infer_shapes")
        assert _shapes(resize_model)["r"] == ["N", 3, 16, 24]
        assert _shapes(resize_model)["f"] is None  # FooOp is not declared
    finally:
        assert custom_ops.unregister("ResizePlugin", "trt.plugins")
    with pytest.raises(RecipeError) as exc:
        surgeon.declare_op("Foo", outputs=[{"dtype": "flaot32", "shape": ["input0", -2]}])
    assert str(exc.value) == (
        "error: declare_op('Foo'): custom op, output 0: unknown dtype 'flaot32'\n"
        "  hint: did you mean 'float32', 'float6e3m2', 'float'?\n"
        "error: declare_op('Foo'): custom op, output 0, dimension 0: 'input0' is a whole input, not a dimension\n"
        "  hint: write input0[0] for its first dimension, or 'shape: input0' for its whole shape\n"
        "error: declare_op('Foo'): custom op, output 0, dimension 1: a dimension must be 0 or more, got -2\n"
        "  hint: a dimension that is not known is copied from an input: inputK[i]"
    )


def test_a_plugin_module_can_declare_ops(tmp_path, resize_model):
    (tmp_path / "resize_plugin_decl.py").write_text(
        "import surgeon\n"
        "surgeon.declare_op('ResizePlugin', 'trt.plugins', outputs=[\n"
        "    {'dtype': 'input0', 'shape': ['input0[0]', 'input0[1]', 'out_h', 'out_w']}])\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nplugins: [resize_plugin_decl]\nsteps:\n  - pass: infer_shapes\n")
    try:
        surgeon.apply(surgeon.load_recipe(recipe), resize_model)
        assert _shapes(resize_model)["r"] == ["N", 3, 16, 24]
    finally:
        custom_ops.unregister("ResizePlugin", "trt.plugins")


def test_recipe_errors_point_at_the_declaration(tmp_path):
    text = """\
    version: 1
    custom_ops:
      - op: FooOp
        domain: devtech
        outputs:
          - {dtype: inpt0, shape: ['input0[0]', input0, 3x, -1, out_h]}
          - {dtype: float32, shap: input0}
      - op: FooOp
        domain: devtech
        outputs: []
      - {domain: x}
      - {op: Bar, outputs: [{dtype: int64, shape: input1}, {dtype: bool, shape: [1.5]}]}
    steps:
      - pass: cleanup
    """
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(RecipeError) as exc:
        surgeon.load_recipe(path)
    assert str(exc.value).replace(str(path), "r.yaml") == (
        "r.yaml:6:17: error: custom op 1, output 0: unknown dtype 'inpt0'\n"
        "  hint: did you mean 'input0', 'int8', 'int4'?\n"
        "r.yaml:6:45: error: custom op 1, output 0, dimension 1: 'input0' is a whole input, not a dimension\n"
        "  hint: write input0[0] for its first dimension, or 'shape: input0' for its whole shape\n"
        "r.yaml:6:53: error: custom op 1, output 0, dimension 2: '3x' is neither inputK[i] nor an attribute name\n"
        "  hint: write inputK[i] (dimension i of input K), a number, or the name of an integer attribute of the op\n"
        "r.yaml:6:57: error: custom op 1, output 0, dimension 3: a dimension must be 0 or more, got -1\n"
        "  hint: a dimension that is not known is copied from an input: inputK[i]\n"
        "r.yaml:7:26: error: unknown key 'shap' in 'custom op 1, output 1'\n"
        "  hint: did you mean 'shape'?\n"
        "r.yaml:8:9: error: custom op 'devtech::FooOp' is declared twice (first in declaration 1)\n"
        "  hint: keep one declaration per op and domain\n"
        "r.yaml:10:14: error: custom op 2: 'outputs' is empty\n"
        "  hint: declare each output: '{dtype: input0, shape: input0}'\n"
        "r.yaml:11:5: error: custom op 3 has no 'op'\n"
        "  hint: add 'op: NAME'\n"
        "r.yaml:11:5: error: custom op 3 has no 'outputs'\n"
        "  hint: add 'outputs: [{dtype: input0, shape: input0}]', one entry per output\n"
        "r.yaml:12:78: error: custom op 4, output 1 'shape[0]': expected integer or string, got 1.5\n"
        "  hint: quote the value to keep it a string (YAML 1.1 reads 010 as 8 and 22:30 as 1350)"
    )


def test_unquoted_brackets_in_a_flow_list_get_a_hint(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("version: 1\ncustom_ops:\n  - op: R\n    outputs:\n"
                    "      - {dtype: input0, shape: [input0[0], out_h]}\nsteps:\n  - pass: cleanup\n")
    with pytest.raises(RecipeError) as exc:
        surgeon.load_recipe(path)
    assert str(exc.value) == (
        f"{path}:5:39: error: invalid YAML: expected ',' or ']', but got '[' (while parsing a flow sequence at "
        "line 5, column 32)\n"
        "  hint: inside [...] a bracket starts a new list: quote an item that contains one ('input0[1]'), or "
        "write the list one item per line ('- input0[1]')"
    )


def test_output_type_evaluation():
    decl = custom_ops.OpDecl("R", "", ({"dtype": "input1", "shape": ["input0[-1]", 7, "k", "missing"]},
                                       {"dtype": "int64", "shape": None}))
    x = custom_ops.InputType(onnx.TensorProto.FLOAT, ["N", 5])
    y = custom_ops.InputType(onnx.TensorProto.FLOAT16, [])
    assert custom_ops.output_type(decl, 0, [x, y], {"k": 3}) == (onnx.TensorProto.FLOAT16, [5, 7, 3, None])
    assert custom_ops.output_type(decl, 0, [x, None], {}) is None  # input 1 not known yet
    assert custom_ops.output_type(decl, 1, [], {}) == (onnx.TensorProto.INT64, None)
    assert custom_ops.output_type(decl, 2, [x], {}) is None
    assert np.dtype(onnx.helper.tensor_dtype_to_np_dtype(custom_ops.dtype_of("half"))) == np.float16


def test_inspect_shows_declared_and_undeclared_custom_ops(tmp_path):
    import io

    from surgeon.cli import main

    recipe = _recipe(tmp_path, """\
    - {op: FooOp, domain: devtech, outputs: [{dtype: input0, shape: input0}]}
    - op: ResizePlugin
      domain: trt.plugins
      outputs:
        - dtype: float16
          shape: ['input0[0]', 3, out_h]
    """)
    out, err = io.StringIO(), io.StringIO()
    assert main(["inspect", str(real_model("model_foo.onnx")), "--recipe", recipe], out=out, err=err) == 0
    assert out.getvalue().splitlines()[-2:] == [
        f"custom op devtech::FooOp x1: declared ({recipe}:3): dtype input0, shape input0",
        f"warning: custom op trt.plugins::ResizePlugin is declared ({recipe}:4) but the model has no such node",
    ]
    out = io.StringIO()
    assert main(["inspect", str(real_model("model_foo.onnx")), "--json"], out=out, err=err) == 0
    import json

    info = json.loads(out.getvalue())
    assert info["custom_ops"] == [{"op": "devtech::FooOp", "count": 1, "declared": None, "outputs": []}]
    assert info["declared_unused"] == []


def test_simplify_folds_behind_declared_ops(tmp_path):
    model = surgeon.load(onnx.parser.parse_model(RESIZE_MODEL.replace("float[N, 3, 8, 8] x", "float[2, 3, 8, 8] x")))
    decls = [custom_ops.OpDecl(**{**d, "outputs": tuple(d["outputs"])}) for d in (RESIZE, FOO)]
    with custom_ops.scoped(decls):
        surgeon.run_pass(model, "simplify")
    assert [n.op for n in model.graph.nodes] == ["ResizePlugin", "FooOp", "Reshape"]
    assert model.graph.nodes[2].inputs[1].values.tolist() == [2, -1]


def test_full_check_on_save_goes_past_declared_ops(tmp_path):
    """onnx's checker cannot see past a custom op; with a declaration, save's full check does."""
    wrong = _recipe(tmp_path, "  - op: FooOp\n    domain: devtech\n    outputs:\n"
                              "      - {dtype: float16, shape: input0}\n", "  - pass: cleanup\n")
    out = tmp_path / "out.onnx"
    with pytest.raises(surgeon.ExportError) as info:
        apply_file(wrong, real_model("model_foo.onnx"), out)
    assert str(info.value) == (
        "error: the edited model fails the full check past its declared custom ops: shape inference failed at "
        "node '/block2/block2.0/Conv' (Conv): W has inconsistent type tensor(float)\n"
        "  hint: the custom_ops: declarations and the model disagree: check the declared dtype and shape of the "
        "ops above, or the steps that changed what they feed")
    assert not out.exists()
    # The basic level does not infer shapes, and a right declaration passes the full check.
    apply_file(wrong, real_model("model_foo.onnx"), out, check="basic")
    right = _recipe(tmp_path, "  - op: FooOp\n    domain: devtech\n    outputs:\n"
                              "      - {dtype: input0, shape: input0}\n", "  - pass: cleanup\n")
    assert apply_file(right, real_model("model_foo.onnx"), tmp_path / "ok.onnx").check == "full"


def test_insert_nms_checks_a_head_behind_a_declared_op(tmp_path):
    """A YOLOv8 head written by a plugin op: only a declaration tells insert_nms its shape, so only
    then is a transposed head ([N, anchors, values]) refused before any node is added."""
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17, "trt" : 1]>
        g (float[1, 2100, 84] feats) => (float[N, a, b] output0) {
            head = trt.Dequant (feats)
            output0 = Identity (head)
        }
    """)
    path = tmp_path / "head.onnx"
    onnx.save(proto, path)
    steps = "  - pass: insert_nms\n    with: {layout: yolov8}\n"
    plain = tmp_path / "plain.yaml"
    plain.write_text("version: 1\nsteps:\n" + steps)
    result = apply_file(plain, path, tmp_path / "plain.onnx", check="basic")
    assert result.applied.steps[0].added  # not checkable without the declaration: NMS is appended
    declared = _recipe(tmp_path, "  - op: Dequant\n    domain: trt\n    outputs:\n"
                                 "      - {dtype: input0, shape: input0}\n", steps)
    with pytest.raises(surgeon.StepError) as info:
        apply_file(declared, path, tmp_path / "declared.onnx")
    assert info.value.message == (
        "step 1 (insert_nms): 'output0' has shape [1, 2100, 84], which cannot be a yolov8 head [N, 4 + classes, "
        "anchors]: dimension 1 (4 + classes) is 2100 but dimension 2 (anchors) is only 84; it looks like "
        "[N, anchors, values]")
