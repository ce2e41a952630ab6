"""Numeric verification: surgeon.verify and `surgeon apply --verify`."""

from __future__ import annotations

import io
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from util import FIXTURES, RECIPES, real_model

import surgeon
from surgeon.cli import main
from surgeon.verify import tolerance


def _cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _perturbed(src, dst):
    """A copy of ``src`` whose first weight is off by 0.5 (same IO, different numbers)."""
    proto = onnx.load(src)
    init = proto.graph.initializer[0]
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 0.5, init.name))
    onnx.save(proto, dst)
    return dst


@pytest.fixture
def foo(tmp_path):
    path = tmp_path / "model_foo.onnx"
    shutil.copy(FIXTURES / "model_foo.onnx", path)
    return path


def test_strip_fooop_matches_exported_reference(tmp_path):
    model_foo, reference = real_model("model_foo.onnx"), real_model("model.onnx")
    out = tmp_path / "clean.onnx"
    code, stdout, err = _cli("apply", str(RECIPES / "strip_fooop.yaml"), str(model_foo), "-o", str(out),
                             "--verify", "--reference", str(reference))
    assert (code, err) == (0, "")
    assert f"verify: match against {reference} (random inputs)\n" \
           "  inputs: input float32[2, 3, 32, 32]\n" \
           "  dims: N=2 (default for a batch dimension)\n" \
           "  output: match, max abs error 0, max rel error 0 (rtol 0.0001, atol 1e-05)\n" in stdout
    assert out.exists()


def test_wrong_reference_mismatch_writes_nothing(tmp_path, foo):
    wrong = _perturbed(FIXTURES / "model.onnx", tmp_path / "wrong.onnx")
    code, stdout, err = _cli("apply", str(RECIPES / "strip_fooop.yaml"), str(foo), "--verify",
                             "--reference", str(wrong))
    assert code == 1
    assert err.startswith(f"error: verification failed: mismatch against {wrong} (random inputs)\n"
                          "  inputs: input float32[2, 3, 16, 16]\n"
                          "  dims: N=2 (default for a batch dimension)\n"
                          "  output: MISMATCH, max abs error ")
    assert "; worst element (" in err and "expected " in err and ", got " in err
    assert err.endswith("  hint: the edit changed what the model computes; nothing was written.\n"
                        "        Check the recipe, or give inputs that represent the model's real data with "
                        "--inputs\n")
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_foo.onnx", "wrong.onnx"]


def test_exported_model_with_wrong_reference_of_other_shapes_fails(tmp_path):
    """The generated fixtures/model.onnx takes 16x16 images, the exported fixtures/models/ one 32x32: a failure."""
    out = tmp_path / "o.onnx"
    code, _, err = _cli("apply", str(RECIPES / "strip_fooop.yaml"), str(real_model("model_foo.onnx")),
                        "-o", str(out), "--verify", "--reference", str(FIXTURES / "model.onnx"))
    assert code == 1
    assert err.startswith(f"error: verification failed: failed against {FIXTURES / 'model.onnx'} (random inputs)\n"
                          "  inputs: input float32[2, 3, 32, 32]\n"
                          "  dims: N=2 (default for a batch dimension)\n"
                          f"  note: {FIXTURES / 'model.onnx'} rejected the inputs built for the edited model "
                          "(do the models take the same inputs?): ")
    assert not out.exists()


def test_original_that_cannot_run_is_skipped_loudly(tmp_path, foo):
    code, stdout, err = _cli("apply", str(RECIPES / "strip_fooop.yaml"), str(foo), "--verify")
    assert code == 0
    assert f"verify: skipped against {foo} (random inputs)\n  note: {foo} cannot run in onnxruntime (" in stdout
    assert "  note: give a model that computes the same thing with --reference MODEL" in stdout
    assert "warning: verification skipped: nothing was compared (see the notes above)\n" in err


def test_python_api_follows_renames_and_tolerances():
    a = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y) { y = Relu(x) }""")
    b = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] z) { z = Relu(x) }""")
    report = surgeon.verify(a, b, renamed={"y": "z"}, dims={"N": 3})
    assert isinstance(report, surgeon.VerifyReport)
    assert report.ok and report.outputs[0].edited_name == "z" and report.outputs[0].shape == [3, 4]
    unmatched = surgeon.verify(a, b)
    assert unmatched.status == "failed"
    assert unmatched.notes == ["output 'z' is not compared: the original has no tensor 'z' in its main graph",
                               "no output could be compared (see the notes above)"]


def test_mismatch_names_worst_element():
    a = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 3] x) => (float[2, 3] y) { y = Relu(x) }""")
    b = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 3] x) => (float[2, 3] y) { y = Abs(x) }""")
    x = np.array([[1, -1, 2], [-5, 3, 0]], np.float32)
    report = surgeon.verify(a, b, inputs={"x": x})
    assert report.status == "mismatch"
    check = report.outputs[0]
    assert (check.worst_index, check.expected, check.got, check.max_abs) == ([1, 0], 0.0, 5.0, 5.0)
    loose = surgeon.verify(a, b, inputs={"x": x}, atol=6.0)
    assert loose.ok


def test_inputs_npz_and_dims(tmp_path, foo):
    np.savez(tmp_path / "x.npz", input=np.ones((1, 3, 16, 16), np.float32))
    reference = FIXTURES / "model.onnx"
    code, stdout, _ = _cli("apply", str(RECIPES / "strip_fooop.yaml"), str(foo), "--reference", str(reference),
                           "--inputs", str(tmp_path / "x.npz"))
    assert code == 0 and f"verify: match against {reference} ({tmp_path / 'x.npz'} inputs)" in stdout
    np.savez(tmp_path / "bad.npz", other=np.ones(1))
    code, _, err = _cli("apply", str(RECIPES / "strip_fooop.yaml"), str(foo), "--reference", str(reference),
                        "--inputs", str(tmp_path / "bad.npz"))
    assert code == 1
    assert err == ("error: the verification inputs have no array 'input'\n"
                   "  hint: the .npz file must hold every input of the edited model: input\n")
    code, _, err = _cli("apply", str(RECIPES / "strip_fooop.yaml"), str(foo), "--dim", "N")
    assert code == 2 and err.startswith("surgeon: error: --dim 'N': expected NAME=N with a positive integer N")


def test_recipe_level_verify(tmp_path, foo):
    shutil.copy(FIXTURES / "model.onnx", tmp_path / "ref.onnx")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nverify: {rtol: 1.0e-6, atol: 0.0, dims: {N: 3}, reference: ref.onnx}\n"
                      "steps:\n  - pass: remove_node\n    with: {op: FooOp}\n")
    result = surgeon.workflow.apply_file(recipe, foo, tmp_path / "o.onnx")
    assert result.verification.ok
    assert result.verification.dims == {"N": 3}
    assert result.verification.outputs[0].shape == [3, 8, 16, 16]
    assert result.verification.outputs[0].rtol == 1e-6


def test_tolerance_per_dtype():
    assert tolerance(np.dtype(np.int64), 1.0, 1.0) == (0.0, 0.0)
    assert tolerance(np.dtype(np.float16)) == (1e-2, 1e-2)
    assert tolerance(np.dtype(np.float32), rtol=0.5) == (0.5, 1e-5)


def test_string_outputs_are_compared_exactly(tmp_path):
    from onnx import TensorProto, helper

    def model(node):
        g = helper.make_graph([node], "g", [helper.make_tensor_value_info("s", TensorProto.STRING, [2])],
                              [helper.make_tensor_value_info("t", TensorProto.STRING, [2])])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)

    onnx.save(model(helper.make_node("Identity", ["s"], ["t"])), tmp_path / "a.onnx")
    onnx.save(model(helper.make_node("Identity", ["s"], ["t"])), tmp_path / "b.onnx")
    swapped = model(helper.make_node("Gather", ["s", "order"], ["t"]))
    swapped.graph.initializer.append(numpy_helper.from_array(np.array([1, 0], np.int64), "order"))
    onnx.save(swapped, tmp_path / "swapped.onnx")
    np.savez(tmp_path / "in.npz", s=np.array(["abc", "de"]))
    report = surgeon.verify(tmp_path / "a.onnx", tmp_path / "b.onnx", inputs=tmp_path / "in.npz")
    assert report.status == "match"
    report = surgeon.verify(tmp_path / "a.onnx", tmp_path / "swapped.onnx", inputs=tmp_path / "in.npz")
    assert report.status == "mismatch"
    assert report.outputs[0].problem == "element (0,): expected 'abc', got 'de'"


RENAME_INPUT = "version: 1\nsteps:\n  - pass: rename_io\n    with: {inputs: {input: pixels}}\n"


def test_unknown_dim_name_is_an_error_listing_the_real_ones(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RENAME_INPUT)
    code, out, err = _cli("apply", str(recipe), str(FIXTURES / "model.onnx"), "-o", str(tmp_path / "o.onnx"),
                          "--verify", "--dim", "batch=4")
    assert code == 1
    assert err == ("error: --dim names 'batch', which no input of the models has\n"
                   "  hint: their symbolic dimensions are 'N'\n")
    assert not (tmp_path / "o.onnx").exists()


def test_report_records_the_dims_really_used():
    report = surgeon.verify(FIXTURES / "model.onnx", FIXTURES / "model.onnx")
    assert report.status == "match" and report.dims == {"N": 2}


def test_given_inputs_may_use_the_original_names(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RENAME_INPUT)
    np.savez(tmp_path / "in.npz", input=np.ones((3, 3, 16, 16), np.float32))
    code, out, err = _cli("apply", str(recipe), str(FIXTURES / "model.onnx"), "-o", str(tmp_path / "o.onnx"),
                          "--verify", "--inputs", str(tmp_path / "in.npz"))
    assert code == 0, err
    assert "verify: match" in out


def test_given_inputs_that_do_not_fit_fail_instead_of_skipping(tmp_path):
    np.savez(tmp_path / "in.npz", input=np.ones((1, 3, 8, 8, 1), np.float32))  # wrong rank
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RENAME_INPUT)
    code, out, err = _cli("apply", str(recipe), str(FIXTURES / "model.onnx"), "-o", str(tmp_path / "o.onnx"),
                          "--verify", "--inputs", str(tmp_path / "in.npz"))
    assert code == 1
    assert err.startswith("error: verification failed: failed against ")
    assert "rejected the given inputs" in err
    assert not (tmp_path / "o.onnx").exists()


def test_missing_reference_is_reported_before_the_model_is_read(tmp_path):
    code, out, err = _cli("apply", str(RECIPES / "strip_fooop.yaml"), str(tmp_path / "no-model.onnx"),
                          "--verify", "--reference", str(tmp_path / "nope.onnx"))
    assert code == 1
    assert err == (f"error: reference model not found: {tmp_path / 'nope.onnx'}\n"
                   "  hint: check the path (relative to the current directory on the command line, "
                   "to the recipe in its verify: section)\n")


@pytest.mark.parametrize("output", ["", "DIR", "DIR/"])
def test_output_that_is_a_folder_is_a_user_error(tmp_path, output):
    output = output.replace("DIR", str(tmp_path))
    code, out, err = _cli("apply", str(RECIPES / "strip_fooop.yaml"), str(FIXTURES / "model_foo.onnx"), "-o", output)
    assert code == 1
    from pathlib import Path

    assert err == (f"error: cannot write the model to {str(Path(output))!r}: it is a folder, not a file name\n"
                   "  hint: give the output file's name, e.g. -o out/model.onnx\n")
    assert list(tmp_path.iterdir()) == []


def test_equal_infinities_match(tmp_path):
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Log", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "log.onnx")
    np.savez(tmp_path / "in.npz", x=np.array([0, 1, 2, 3], np.float32))  # log(0) = -inf
    report = surgeon.verify(tmp_path / "log.onnx", tmp_path / "log.onnx", inputs=tmp_path / "in.npz")
    assert report.status == "match"
    assert report.outputs[0].max_abs == 0 and report.outputs[0].worst_index is None


def test_random_inputs_run_loop_bodies_and_control_flow_is_flagged():
    """Integers start at 1 (a trip count of 0 runs no body); random inputs on If/Loop models get a note."""
    path = real_model("ctrlflow_script_legacy.onnx")
    model = surgeon.load(path)
    surgeon.run_pass(model, "remove_node", op="Mul")  # inside the If branch and the Loop body
    report = surgeon.verify(path, model)
    assert report.status == "mismatch"
    assert any("If/Loop/Scan" in note for note in report.notes)


# -- verification inputs that mean something -------------------------------------------------------


def _save(tmp_path, name, text):
    path = tmp_path / name
    onnx.save(onnx.parser.parse_model(text), path)
    return path


IMAGE_MODEL = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, H, W] x) => (float[N, 3, H, W] y) { y = Relu(x) }"""


def test_image_inputs_get_224_and_the_summary_says_which_shapes_were_run(tmp_path):
    path = _save(tmp_path, "img.onnx", IMAGE_MODEL)
    code, out, err = _cli("verify", str(path), str(path))
    assert (code, err) == (0, "")
    assert out == (f"verify: match against {path} (random inputs)\n"
                   "  inputs: x float32[2, 3, 224, 224]\n"
                   "  dims: N=2 (default for a batch dimension), H=224 (default for image height and width), "
                   "W=224 (default for image height and width)\n"
                   "  y: match, max abs error 0, max rel error 0 (rtol 0.0001, atol 1e-05)\n")


def test_dim_sources_in_order(tmp_path):
    """--dim, then the recipe's verify: dims, then the given arrays, then metadata, then defaults."""
    proto = onnx.parser.parse_model(IMAGE_MODEL)
    onnx.helper.set_model_props(proto, {"imgsz": "[96, 128]"})
    onnx.save(proto, tmp_path / "meta.onnx")
    path = tmp_path / "meta.onnx"
    report = surgeon.verify(path, path)
    assert (report.dims, report.dim_sources) == (
        {"N": 2, "H": 96, "W": 128}, {"N": "default for a batch dimension", "H": "the model's metadata (imgsz)",
                                      "W": "the model's metadata (imgsz)"})
    report = surgeon.verify(path, path, dims={"H": 8}, recipe_dims={"H": 16, "W": 24})
    assert report.dim_sources == {"H": "--dim", "W": "the recipe's verify: dims", "N": "default for a batch dimension"}
    assert report.input_shapes == {"x": "float32[2, 3, 8, 24]"}
    report = surgeon.verify(path, path, recipe_dims={"H": 16}, inputs={"x": np.ones((1, 3, 4, 5), np.float32)})
    assert (report.dims, report.dim_sources["W"]) == ({"H": 16, "N": 1, "W": 5}, "the given inputs")


def test_unnamed_dims_take_dim_question_mark(tmp_path):
    proto = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 7] x) => (float[N, 7] y) { y = Relu(x) }""")
    proto.graph.input[0].type.tensor_type.shape.dim[0].Clear()  # '?': no name, no value
    onnx.save(proto, tmp_path / "q.onnx")
    code, out, err = _cli("verify", str(tmp_path / "q.onnx"), str(tmp_path / "q.onnx"), "--dim", "?=5")
    assert (code, err) == (0, "")
    assert "  inputs: x float32[5, 7]\n" in out


CONSTANT_OUTPUT = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4] x) => (float[N, 4] y) {
    zero = Constant <value = float {0.0}> ()
    y = Mul(x, zero)
}"""

IGNORES_INPUT_VALUES = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4] x) => (float[N, 4] y) {
    zero = Constant <value = float {0.0}> ()
    ramp = Constant <value = float[4] {1.0, 2.0, 3.0, 4.0}> ()
    z = Mul(x, zero)
    y = Add(z, ramp)
}"""


@pytest.mark.parametrize("text, why", [
    (CONSTANT_OUTPUT, "all zero"),
    (IGNORES_INPUT_VALUES, "the same for two different random inputs"),
])
def test_a_comparison_that_proves_nothing_fails_and_says_how_to_fix_it(tmp_path, text, why):
    path = _save(tmp_path, "m.onnx", text)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nsteps:\n  - pass: cleanup\n")
    code, out, err = _cli("apply", str(recipe), str(path), "-o", str(tmp_path / "o.onnx"), "--verify")
    assert code == 1
    assert err == (f"error: verification failed: inconclusive against {path} (random inputs)\n"
                   "  inputs: x float32[2, 4]\n"
                   "  dims: N=2 (default for a batch dimension)\n"
                   "  y: match, max abs error 0, max rel error 0 (rtol 0.0001, atol 1e-05); proves little: "
                   f"{why}\n"
                   f"  note: the comparison proves nothing: every compared output is 'y' {why}\n"
                   "  hint: nothing was written: random inputs do not exercise this model. Give real inputs with "
                   "--inputs FILE.npz (numpy.savez, one array per input name), or input sizes with --dim\n")
    assert not (tmp_path / "o.onnx").exists()


# -- surgeon verify A B ------------------------------------------------------------------------------


def test_surgeon_verify_compares_two_models(tmp_path):
    wrong = _perturbed(FIXTURES / "model.onnx", tmp_path / "wrong.onnx")
    code, out, err = _cli("verify", str(FIXTURES / "model.onnx"), str(FIXTURES / "model.onnx"), "--dim", "N=3")
    assert (code, err) == (0, "")
    assert out == (f"verify: match against {FIXTURES / 'model.onnx'} (random inputs)\n"
                   "  inputs: input float32[3, 3, 16, 16]\n"
                   "  dims: N=3 (--dim)\n"
                   "  output: match, max abs error 0, max rel error 0 (rtol 0.0001, atol 1e-05)\n")
    code, out, err = _cli("verify", str(FIXTURES / "model.onnx"), str(wrong), "--report", str(tmp_path / "r.json"))
    assert (code, out) == (1, "")
    assert err.startswith(f"error: verification failed: mismatch against {FIXTURES / 'model.onnx'} (random inputs)\n")
    import json

    assert json.loads((tmp_path / "r.json").read_text())["status"] == "mismatch"
    code, out, err = _cli("verify", str(FIXTURES / "model.onnx"), str(tmp_path / "nope.onnx"))
    assert (code, err) == (1, f"error: not found: {tmp_path / 'nope.onnx'}\n  hint: check the path\n")
    from surgeon.cli import build_parser

    assert "    verify    compare two models' outputs in onnxruntime\n" in build_parser().format_help()


# -- float16 tolerance carried through a final bounded activation ---------------------------------------


def _activated(op: str, shift: float = 0.0, k: float = 8.0, opset: int = 17):
    """y = op(x * k + shift): a model whose output is a probability-like map of logits up to |24|."""
    return onnx.parser.parse_model(f"""<ir_version: 8, opset_import: ["" : {opset}]>
        agraph (float[1, 64] x) => (float[1, 64] y) {{
          k = Constant <value_float: float = {k}> ()
          b = Constant <value_float: float = {shift}> ()
          m = Mul (x, k)
          z = Add (m, b)
          y = {op} (z)
        }}""")


RAMP = {"x": np.linspace(-3, 3, 64, dtype=np.float32).reshape(1, 64)}


def _fp16_verify(a, b, inputs=RAMP):
    from surgeon.graph.correspondence import Correspondence

    return surgeon.verify(a, b, inputs=inputs, correspondence=Correspondence(tolerance="fp16"))


CARRIED = ("fp16: atol 0.01 of the output's scale 1; where beyond that, what fp16 allows on Sigmoid's input 'z' "
           "(atol 0.01 of its scale, rtol 0.01) carried through Sigmoid")


def test_fp16_tolerance_of_a_sigmoid_output_is_its_logits_carried_through_it():
    """float16 errs in proportion to the logits: a logit shift of 0.1 (0.4 % of their scale 24) is float16's
    ordinary error, though it moves a probability by 0.024 (2.4 % of the map's scale 1). Beyond the output's own
    tolerance, the logits are compared (and reported) and, as they match, each probability may move by what
    their tolerance moves it through the Sigmoid. A shift of 0.6 (2.5 %) fails on the logits."""
    report = _fp16_verify(_activated("Sigmoid"), _activated("Sigmoid", shift=0.1))
    assert report.status == "match"
    assert [o.describe() for o in report.outputs] == [
        "z (intermediate; Sigmoid's input, for y): match, max abs error 0.1, max rel error 0.262 (rtol 0.01, "
        "atol 0.24: fp16: atol 0.01 of the output's scale 24)",
        f"y: match, max abs error 0.0243, max rel error 0.5 (rtol 0.01, atol up to 0.0599 per element: {CARRIED}, "
        "as that input matches)"]
    report = _fp16_verify(_activated("Sigmoid"), _activated("Sigmoid", shift=0.6))
    assert report.status == "mismatch"
    assert [o.describe() for o in report.outputs] == [
        "z (intermediate; Sigmoid's input, for y): MISMATCH, max abs error 0.6, max rel error 1.58 (rtol 0.01, "
        "atol 0.24: fp16: atol 0.01 of the output's scale 24); worst element (0, 31): expected -0.380952388, "
        "got 0.219047636",
        f"y: MISMATCH, max abs error 0.149, max rel error 1.5 (rtol 0.01, atol up to 0.0599 per element: {CARRIED}, "
        "if that input matched (it does not)); worst element (0, 31): expected 0.40589723, got 0.554543972 "
        "(allowed error 0.0639)"]


def test_an_output_within_its_own_tolerance_needs_no_logits():
    report = _fp16_verify(_activated("Sigmoid"), _activated("Sigmoid", shift=0.01))
    assert [o.describe() for o in report.outputs] == [
        "y: match, max abs error 0.00241, max rel error 1.5 (rtol 0.01, atol 0.01: fp16: atol 0.01 of the "
        "output's scale 1)"]


@pytest.mark.parametrize("op, fine, wrong", [("Tanh", dict(shift=0.1), dict(shift=0.6)),
                                             ("HardSigmoid", dict(shift=0.1), dict(shift=0.6)),
                                             ("Softmax", dict(k=8.04), dict(k=9.6))])
def test_fp16_tolerance_is_carried_through_tanh_hardsigmoid_and_softmax(op, fine, wrong):
    ramp = RAMP if op != "Softmax" else {"x": RAMP["x"] / 10}  # a softmax over logits up to 2.4 spreads out
    assert _fp16_verify(_activated(op), _activated(op, **fine), ramp).status == "match"
    report = _fp16_verify(_activated(op), _activated(op, **wrong), ramp)
    assert report.status == "mismatch"
    assert report.outputs[0].describe().startswith(f"z (intermediate; {op}'s input, for y): MISMATCH, ")
    assert f"what fp16 allows on {op}'s input 'z' " in report.outputs[1].describe()


def test_a_sigmoid_map_rearranged_before_the_output_is_checked_on_its_logits_too():
    """Detector heads reshape and transpose the probability map: the allowance follows the same rearrangement,
    and two outputs of one Sigmoid get one line for its input."""
    def model(shift):
        return onnx.parser.parse_model(f"""<ir_version: 8, opset_import: ["" : 17]>
            agraph (float[1, 64] x) => (float[8, 8] y, float[1, 64] s) {{
              k = Constant <value_float: float = 8.0> ()
              b = Constant <value_float: float = {shift}> ()
              m = Mul (x, k)
              z = Add (m, b)
              s = Sigmoid (z)
              shape = Constant <value_ints: ints = [8, 8]> ()
              r = Reshape (s, shape)
              y = Transpose <perm = [1, 0]> (r)
            }}""")
    report = _fp16_verify(model(0.0), model(0.1))
    assert report.status == "match"
    assert [(o.edited_name, o.ok, o.per_element) for o in report.outputs] == [
        ("z", True, False), ("y", True, True), ("s", True, True)]
    assert _fp16_verify(model(0.0), model(0.6)).status == "mismatch"


def test_a_softmax_whose_logits_drift_fails_though_the_carried_bound_would_hold():
    """The carried bound is a worst case over every error pattern; logits scaled by 5 % (a classifier weight 5 %
    off) stay within it after a Softmax, but not within their own tolerance."""
    ramp = {"x": RAMP["x"] / 10}
    report = _fp16_verify(_activated("Softmax"), _activated("Softmax", k=8.4), ramp)
    assert report.status == "mismatch"
    z, y = report.outputs
    assert (z.ok, y.ok, y.max_abs <= y.atol) == (False, False, True)


@pytest.mark.parametrize("op", ["Sigmoid", "Tanh", "HardSigmoid", "Softmax"])
def test_the_carried_bound_holds_for_every_input_error_within_the_tolerance(op):
    """The per-element bound is sound: no input error within atol + rtol * |z| moves an output further."""
    from surgeon.verify import _Bounded

    rng = np.random.default_rng(0)
    bounded = _Bounded(op, "z", axis=-1)
    f = {"Sigmoid": lambda v: 1 / (1 + np.exp(-v)), "Tanh": np.tanh,
         "HardSigmoid": lambda v: np.clip(0.2 * v + 0.5, 0, 1),
         "Softmax": lambda v: np.exp(v - v.max(-1, keepdims=True)) / np.exp(v - v.max(-1, keepdims=True)).sum(
             -1, keepdims=True)}[op]
    for _ in range(200):
        z = rng.normal(0, rng.uniform(0.1, 20), (4, 16))
        atol, rtol = rng.uniform(0, 0.5), rng.uniform(0, 0.05)
        bound = bounded.carried(z, f(z), atol, rtol)
        moved = z + rng.uniform(-1, 1, z.shape) * (atol + rtol * np.abs(z))
        assert (np.abs(f(moved) - f(z)) <= bound + 1e-12).all()


def test_given_tolerances_are_not_carried():
    from surgeon.graph.correspondence import Correspondence

    report = surgeon.verify(_activated("Sigmoid"), _activated("Sigmoid", shift=0.1), inputs=RAMP, atol=0.03,
                            correspondence=Correspondence(tolerance="fp16"))
    assert report.outputs[0].describe() == ("y: match, max abs error 0.0243, max rel error 0.5 (rtol 0.01, atol 0.03: "
                                            "given)")


def test_surgeon_verify_takes_a_tolerance_policy(tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(_activated("Sigmoid"), a)
    onnx.save(_activated("Sigmoid", shift=0.1), b)
    np.savez(tmp_path / "ramp.npz", **RAMP)
    code, out, err = _cli("verify", str(a), str(b), "--inputs", str(tmp_path / "ramp.npz"), "--tolerance", "fp16")
    assert (code, err) == (0, "")
    assert out == (f"verify: match against {a} ({tmp_path / 'ramp.npz'} inputs)\n"
                   "  inputs: x float32[1, 64]\n"
                   "  z (intermediate; Sigmoid's input, for y): match, max abs error 0.1, max rel error 0.262 (rtol "
                   "0.01, atol 0.24: fp16: atol 0.01 of the output's scale 24)\n"
                   "  y: match, max abs error 0.0243, max rel error 0.5 (rtol 0.01, atol up to 0.0599 per element: "
                   f"{CARRIED}, as that input matches)\n")
    code, out, err = _cli("verify", str(a), str(b), "--inputs", str(tmp_path / "ramp.npz"))
    assert code == 1 and "  y: MISMATCH, max abs error 0.0243, max rel error 0.5 (rtol 0.0001, atol 1e-05); " in err


# -- ops onnxruntime cannot run: compared around them ---------------------------------------------------

WITH_PLUGIN = """<ir_version: 8, opset_import: ["" : 17, "devtech" : 1]>
agraph (float[2, 4] x) => (float[2, 4] y, float[2, 4] s) {
  a = Relu (x)
  b = devtech.FooOp (a)
  y = Sigmoid (b)
  s = Neg (x)
}"""


def test_a_plugin_op_is_verified_around_what_it_reads(tmp_path):
    """A custom op or TensorRT plugin has no onnxruntime kernel: the outputs it computes are not compared (a note
    says so), what it reads is, and so are the outputs that do not go through it; never "skipped"."""
    path = tmp_path / "plugin.onnx"
    onnx.save(onnx.parser.parse_model(WITH_PLUGIN), path)
    code, out, err = _cli("verify", str(path), str(path))
    assert (code, err) == (0, "")
    assert out == (f"verify: match against {path} (random inputs); 1 output(s) not compared: 'y' (see the notes)\n"
                   "  inputs: x float32[2, 4]\n"
                   "  s: match, max abs error 0, max rel error 0 (rtol 0.0001, atol 1e-05)\n"
                   "  a (intermediate): match, max abs error 0, max rel error 0 (rtol 0.0001, atol 1e-05)\n"
                   "  note: output 'y' is not compared: it is computed by an unnamed devtech::FooOp node, which "
                   "onnxruntime cannot run; what it reads is compared instead\n"
                   "  note: to compare what comes after an unnamed devtech::FooOp node, declare the type and shape "
                   "of its output 'b' (custom_ops: in the recipe, then infer_shapes): verification then feeds it the "
                   "same values in both models\n"
                   f"  note: {path} cannot run as a whole ([ONNXRuntimeError] : 1 : FAIL : Fatal error: "
                   "devtech:FooOp(-1) is not a registered function/op); the part of it that computes the compared "
                   "tensors was run\n")


@pytest.mark.parametrize("domain, op, foreign", [
    ("", "Relu", False), ("ai.onnx", "Relu", False), ("", "FeedForward_TRT", True), ("devtech", "FooOp", True),
    ("com.microsoft", "FusedConv", False), ("ai.onnx.ml", "TreeEnsembleClassifier", False),
    ("ai.onnx.ml", "NoSuchOp", True), ("pkg", "block", False)])
def test_which_ops_onnxruntime_cannot_run(domain, op, foreign):
    from surgeon.graph.ops import is_foreign_op

    assert is_foreign_op(domain, op, local_functions={("pkg", "block")}) is foreign


def test_both_models_are_cut_at_a_plugin_op_whose_output_is_typed(tmp_path):
    """With FooOp's output typed (declared, inferred), both models get the same random values there, and what
    comes after FooOp is compared too: an edit after it that changes the numbers is caught."""
    typed = WITH_PLUGIN.replace("agraph (float[2, 4] x) => (float[2, 4] y, float[2, 4] s)",
                                "agraph (float[2, 4] x) => (float[2, 4] y, float[2, 4] s) <float[2, 4] b>")
    path, wrong = tmp_path / "plugin.onnx", tmp_path / "wrong.onnx"
    onnx.save(onnx.parser.parse_model(typed), path)
    onnx.save(onnx.parser.parse_model(typed.replace("y = Sigmoid (b)", "y = Tanh (b)")), wrong)
    report = surgeon.verify(path, path)
    assert [(o.edited_name, o.ok) for o in report.outputs] == [("y", True), ("s", True), ("a", True)]
    assert report.notes == ["onnxruntime cannot run an unnamed devtech::FooOp node: its outputs ('b') were fed the "
                            "same random values in both models, so what comes after it is compared; the op itself "
                            "is not verified"]
    report = surgeon.verify(path, wrong)
    assert report.status == "mismatch" and [o.edited_name for o in report.outputs if not o.ok] == ["y"]


def test_a_cut_plugin_output_gets_each_models_own_type(tmp_path):
    """The edited model runs FooOp in float16: its output gets the random values as float16, the original's the
    same values as float32."""
    original = WITH_PLUGIN.replace("agraph (float[2, 4] x) => (float[2, 4] y, float[2, 4] s)",
                                   "agraph (float[2, 4] x) => (float[2, 4] y, float[2, 4] s) <float[2, 4] b>")
    edited = """<ir_version: 8, opset_import: ["" : 17, "devtech" : 1]>
        agraph (float[2, 4] x) => (float[2, 4] y, float[2, 4] s) <float16[2, 4] b> {
          a = Relu (x)
          a16 = Cast <to = 10> (a)
          b = devtech.FooOp (a16)
          b32 = Cast <to = 1> (b)
          y = Sigmoid (b32)
          s = Neg (x)
        }"""
    onnx.save(onnx.parser.parse_model(original), tmp_path / "a.onnx")
    onnx.save(onnx.parser.parse_model(edited), tmp_path / "b.onnx")
    from surgeon.graph.correspondence import Correspondence

    report = surgeon.verify(tmp_path / "a.onnx", tmp_path / "b.onnx", correspondence=Correspondence(tolerance="fp16"))
    assert [(o.edited_name, o.ok) for o in report.outputs] == [("y", True), ("s", True)], report.summary()


def test_a_plugin_output_renamed_later_is_still_fed_the_original_value(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text((RECIPES / "ffn_to_plugin.yaml").read_text()
                      + "  - pass: rename_tensors\n    with: {map: {linear_3: ffn_out}}\n")
    path = real_model("transformer_encoder_dynamo.onnx")
    code, out, err = _cli("apply", str(recipe), str(path), "-o", str(tmp_path / "o.onnx"), "--verify")
    assert (code, err) == (0, ""), out
    assert "  memory: match, max abs error 0, " in out
    assert f"its outputs ('ffn_out') were fed what {path} computes for them, so what comes after it is compared" in out


def test_plugin_outputs_are_fed_one_by_one_and_plugin_only_sizes_take_dim(tmp_path):
    """cust::Two has a typed output 'a' (read by out1) and an untyped one 'b' (read by out2); cust::Wide's
    output has a size K no input has: --dim K=N sizes it."""
    proto = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17, "cust" : 1]>
        agraph (float[N, 4] x) => (float[N, 4] out1, float[N, 4] out2, float[N, 3] out3)
               <float[N, 4] a, float[N, K] w> {
          r = Relu (x)
          a, b = cust.Two (r)
          k = Constant <value_float: float = 1.0> ()
          out1 = Add (a, k)
          out2 = Neg (b)
          w = cust.Wide (r)
          m = Constant <value: tensor = float[4, 3] {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}> ()
          out3 = MatMul (w, m)
        }""")
    path = tmp_path / "p.onnx"
    onnx.save(proto, path)
    report = surgeon.verify(path, path)
    assert [o.edited_name for o in report.outputs] == ["out1", "r"]
    assert report.not_compared == ["out2", "out3"]
    assert ("to compare what comes after an unnamed cust::Two node, declare the type and shape of its output 'b' "
            "(custom_ops: in the recipe, then infer_shapes): verification then feeds it the same values in both "
            "models") in report.notes
    assert ("to compare what comes after an unnamed cust::Wide node, give the size of 'K' in its output 'w' with "
            "--dim K=N (no input of the model has it)") in report.notes
    report = surgeon.verify(path, path, dims={"K": 4})
    assert [o.edited_name for o in report.outputs] == ["out1", "out3", "r"] and report.not_compared == ["out2"]


def test_a_plugin_op_reading_only_the_inputs_leaves_nothing_to_compare(tmp_path):
    path = tmp_path / "plugin_first.onnx"
    onnx.save(onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17, "devtech" : 1]>
        agraph (float[2, 4] x) => (float[2, 4] y) {
          y = devtech.FooOp (x)
        }"""), path)
    report = surgeon.verify(path, path)
    assert (report.status, report.outputs) == ("skipped", [])
    assert report.notes == [
        "output 'y' is not compared: it is computed by an unnamed devtech::FooOp node, which onnxruntime cannot "
        "run",
        "nothing can be compared: every output is computed by an op onnxruntime cannot run, and what it reads "
        "comes straight from the inputs"]


# -- contracts --------------------------------------------------------------------------------------


def test_plugin_pass_without_contract_is_verified_as_equal_with_a_note(tmp_path):
    @surgeon.register_pass("v10_double_relu")
    def double_relu(graph):
        for node in graph.nodes:
            if node.op == "Relu":
                node.op = "Relu"

    try:
        recipe = tmp_path / "r.yaml"
        recipe.write_text("version: 1\nsteps:\n  - pass: v10_double_relu\n")
        code, out, err = _cli("apply", str(recipe), str(FIXTURES / "model.onnx"), "-o", str(tmp_path / "o.onnx"),
                              "--verify")
        assert (code, err) == (0, "")
        assert ("  note: step 1 (v10_double_relu): pass 'v10_double_relu' declares no verification contract; "
                "its outputs are expected to equal the original's\n") in out
    finally:
        surgeon.registry.unregister("v10_double_relu")


def test_plugin_pass_may_declare_a_contract(tmp_path):
    """A pass that doubles the output declares it; verify compares with twice the original's output."""
    import onnx_graphsurgeon as gs

    from surgeon.graph.correspondence import Derived
    from surgeon.passes.contract import Contract, verified_by

    def doubled(plan, report, model):
        plan.exprs["output"] = Derived(lambda y: y * np.float32(2), (plan.expr("output"),), "2 x 'output'")

    @surgeon.register_pass("v10_double")
    @verified_by(Contract("the output is twice the original's", update=doubled))
    def double(graph):
        out = graph.outputs[0]
        old = gs.Variable("before_double", out.dtype, out.shape)
        producer = out.inputs[0]
        producer.outputs[0] = old
        graph.nodes.append(gs.Node("Add", "double", inputs=[old, old], outputs=[out]))

    try:
        model = surgeon.load(FIXTURES / "model.onnx")
        result = surgeon.apply(surgeon.parse_recipe("version: 1\nsteps:\n  - pass: v10_double\n"), model)
        report = surgeon.verify(FIXTURES / "model.onnx", model, correspondence=result.correspondence)
        assert report.status == "match"
        assert report.contracts == ["step 1 (v10_double): the output is twice the original's"]
        assert report.outputs[0].compared_with == "2 x 'output'"
        report = surgeon.verify(FIXTURES / "model.onnx", model)  # without the contract: a mismatch
        assert report.status == "mismatch"
    finally:
        surgeon.registry.unregister("v10_double")


def test_every_builtin_pass_declares_a_contract():
    assert [s.name for s in surgeon.registry if s.source == "builtin" and s.contract is None] == []


def test_extract_at_an_intermediate_input_feeds_it_the_original_value(tmp_path):
    path = real_model("model.onnx")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nsteps:\n  - pass: extract\n    with: {inputs: [/block1/block1.2/Relu_output_0], "
                      "outputs: [output]}\n")
    code, out, err = _cli("apply", str(recipe), str(path), "-o", str(tmp_path / "o.onnx"), "--verify")
    assert (code, err) == (0, "")
    assert ("  inputs: /block1/block1.2/Relu_output_0 float32[2, 16, 32, 32]\n"
            f"    /block1/block1.2/Relu_output_0 -> the value {path} computes for '/block1/block1.2/Relu_output_0'\n"
            "  dims: N=2 (default for a batch dimension)\n"
            "  output: match, max abs error 0, max rel error 0 (rtol 0.0001, atol 1e-05)\n") in out


def test_precision_changes_are_verified_by_default_and_a_broken_model_is_never_written(tmp_path):
    """A pass whose contract changes precision (FP16, as to_fp16's) is verified without --verify; a result
    beyond float16 tolerances of the output's scale (here a pass that spoils a weight) is not written;
    --no-verify writes it anyway."""
    from surgeon.passes.contract import FP16, verified_by

    @surgeon.register_pass("v10_spoil")
    @verified_by(FP16)
    def spoil(graph):
        weight = next(t for t in graph.tensors().values() if isinstance(t, onnx_gs().Constant) and t.values.ndim)
        weight.values = (weight.values * 1.5).astype(weight.values.dtype)

    try:
        recipe = tmp_path / "r.yaml"
        recipe.write_text("version: 1\nsteps:\n  - pass: v10_spoil\n")
        path = FIXTURES / "model.onnx"
        code, out, err = _cli("apply", str(recipe), str(path), "-o", str(tmp_path / "o.onnx"))
        assert code == 1
        assert err.startswith(f"error: verification failed: mismatch against {path} (random inputs)\n"
                              "  inputs: input float32[2, 3, 16, 16]\n"
                              "  dims: N=2 (default for a batch dimension)\n"
                              "  output: MISMATCH, max abs error ")
        assert ": fp16: atol 0.01 of the output's scale " in err
        assert err.endswith(
            "  hint: float16 moved the outputs beyond its tolerance; nothing was written.\n"
            "        Keep the nodes that drift in float32 (node_block_list, op_block_list; the step's notes say what "
            "stays float32 and why), give inputs that represent the model's real data with --inputs, or write it "
            "anyway with --no-verify\n")
        assert out.startswith(f"{recipe} on {path}:\n  step 1 (v10_spoil): ")  # what the steps did is printed
        assert not (tmp_path / "o.onnx").exists()
        code, out, err = _cli("apply", str(recipe), str(path), "-o", str(tmp_path / "o.onnx"), "--no-verify")
        assert (code, err) == (0, "") and "verify:" not in out and (tmp_path / "o.onnx").exists()
    finally:
        surgeon.registry.unregister("v10_spoil")


def onnx_gs():
    import onnx_graphsurgeon as gs

    return gs


def test_to_fp16_is_verified_by_default_at_float16_tolerances(tmp_path):
    fine = real_model("model_dynamo.onnx")
    code, out, err = _cli("apply", str(RECIPES / "to_fp16.yaml"), str(fine), "-o", str(tmp_path / "fine.onnx"))
    assert (code, err) == (0, "")
    assert f"verify: match against {fine} (random inputs)\n" in out
    assert ": fp16: atol 0.01 of the output's scale " in out


def test_a_precision_change_that_cannot_be_verified_is_not_written(tmp_path):
    """Silero VAD rejects the 16-sample audio verification makes up: "skipped" is no proof for a float16 model,
    so nothing is written (exit 1) and the note says how to verify it; with the model's real inputs it is."""
    from util import silero_inputs

    path = real_model("silero_vad.onnx")
    out = tmp_path / "vad16.onnx"
    code, stdout, err = _cli("apply", str(RECIPES / "to_fp16.yaml"), str(path), "-o", str(out))
    assert code == 1 and not out.exists()
    lines = err.splitlines()
    assert lines[:2] == [f"error: verification failed: skipped against {path} (random inputs)",
                         "  inputs: input float32[2, 16], state float32[2, 16, 128], sr int64[]"]
    assert lines[2].startswith(f"  note: {path} rejected the inputs built for the edited model (give inputs it "
                               "accepts with --inputs FILE.npz, or sizes with --dim): [ONNXRuntimeError] ")
    assert lines[3:] == ["  note: a recipe that changes precision is written only once verified: give inputs the "
                         "model accepts (--inputs FILE.npz, or sizes with --dim), or --no-verify to write it "
                         "unverified",
                         "  hint: nothing was written; see the notes above"]
    np.savez(tmp_path / "audio.npz", **silero_inputs())
    code, stdout, err = _cli("apply", str(RECIPES / "to_fp16.yaml"), str(path), "-o", str(out),
                             "--inputs", str(tmp_path / "audio.npz"))
    assert (code, err) == (0, "") and out.exists()
    assert f"verify: match against {path} ({tmp_path / 'audio.npz'} inputs)\n" in stdout
    # ... and the step measured its activations on those inputs too, not on made-up ones
    assert f"      activations measured in onnxruntime on the inputs of {tmp_path / 'audio.npz'}: input [1, 512], " \
           "state [2, 1, 128], sr []\n" in stdout


def test_float16_model_with_a_custom_op_is_verified_around_it(tmp_path):
    """to_fp16 casts what devtech::FooOp reads back to float32; that Cast's output is the original's tensor, so
    verification compares it, though neither model runs as a whole. FooOp's output is typed in the export, so
    both models are cut there and fed the same values: the output after it is compared too."""
    path = real_model("model_foo_dynamo.onnx")
    code, out, err = _cli("apply", str(RECIPES / "to_fp16.yaml"), str(path), "-o", str(tmp_path / "foo16.onnx"))
    assert (code, err) == (0, "")
    assert out[out.index("verify: "):].splitlines() == [
        f"verify: match against {path} (random inputs)",
        "  inputs: input float32[2, 3, 32, 32]",
        "  dims: N=2 (default for a batch dimension)",
        "  output: match, max abs error 0.00128, max rel error 1 (rtol 0.01, atol 0.0373439: fp16: atol 0.01 of the "
        "output's scale 3.73)",
        "  relu_fp32 (intermediate) vs 'relu': match, max abs error 0.00125, max rel error 43.2 (rtol 0.01, atol "
        "0.0339333: fp16: atol 0.01 of the output's scale 3.39)",
        "  note: onnxruntime cannot run devtech::FooOp 'node__symbolic': its outputs ('_symbolic') were fed the same "
        "random values in both models, so what comes after it is compared; the op itself is not verified",
        f"wrote {tmp_path / 'foo16.onnx'}"]


def test_a_precision_change_that_nothing_can_verify_says_only_no_verify_helps(tmp_path):
    """devtech::FooOp reads the graph input and everything goes through it: no input, size or reference helps."""
    path = tmp_path / "foo_first.onnx"
    onnx.save(onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17, "devtech" : 1]>
        agraph (float[2, 4] x) => (float[2, 4] y) {
          f = devtech.FooOp (x)
          y = Relu (f)
        }"""), path)
    code, out, err = _cli("apply", str(RECIPES / "to_fp16.yaml"), str(path), "-o", str(tmp_path / "o.onnx"))
    assert code == 1 and not (tmp_path / "o.onnx").exists()
    assert err.splitlines()[-2:] == [
        "  note: a recipe that changes precision is written only once verified, and nothing here can be compared: "
        "--no-verify writes it unverified",
        "  hint: nothing was written; see the notes above"]


def test_surgeon_verify_suggests_float16_tolerances_for_a_float16_model(tmp_path):
    code, out, err = _cli("apply", str(RECIPES / "to_fp16.yaml"), str(FIXTURES / "model.onnx"), "-o",
                          str(tmp_path / "m16.onnx"))
    assert code == 0
    code, out, err = _cli("verify", str(FIXTURES / "model.onnx"), str(tmp_path / "m16.onnx"))
    assert (code, out) == (1, "")
    assert err.splitlines()[-1] == ("  hint: the models compute different things on these inputs; B computes in "
                                    "float16: compare at float16 tolerances with --tolerance fp16")
    assert _cli("verify", str(FIXTURES / "model.onnx"), str(tmp_path / "m16.onnx"), "--tolerance", "fp16")[0] == 0


def test_float16_after_a_custom_op_of_unknown_shape_is_not_written_until_it_is_declared(tmp_path):
    """model_foo.onnx's legacy export gives FooOp's output placeholder sizes: what comes after it is neither
    measured nor compared, so the float16 model is not written; declaring FooOp (and inferring shapes) lets
    verification feed it the same values in both models and compare the output."""
    path = real_model("model_foo.onnx")
    code, out, err = _cli("apply", str(RECIPES / "to_fp16.yaml"), str(path), "-o", str(tmp_path / "o.onnx"))
    assert code == 1 and not (tmp_path / "o.onnx").exists()
    lines = err.splitlines()
    assert lines[0] == (f"error: verification failed: incomplete against {path} (random inputs); 1 output(s) not "
                        "compared: 'output' (see the notes)")
    assert lines[-2:] == [
        "  note: a recipe that changes precision is written only once every output is verified; 'output' is not (the "
        "notes above say what would let it be): --no-verify writes it unverified",
        "  hint: nothing was written; see the notes above"]
    assert "  note: to compare what comes after devtech::FooOp '/FooOp', declare the shape of its output " \
           "'/FooOp_output_0' (custom_ops: in the recipe, then infer_shapes; " in err
    declared = tmp_path / "fp16_foo.yaml"
    declared.write_text("version: 1\ncustom_ops:\n  - {op: FooOp, domain: devtech, outputs: [{dtype: input0, "
                        "shape: input0}]}\nsteps:\n  - pass: infer_shapes\n  - pass: to_fp16\n")
    code, out, err = _cli("apply", str(declared), str(path), "-o", str(tmp_path / "o.onnx"))
    assert (code, err) == (0, "") and (tmp_path / "o.onnx").exists()
    assert "  output: match, " in out


def test_no_verify_excludes_verify():
    code, out, err = _cli("apply", str(RECIPES / "to_fp16.yaml"), "m.onnx", "--no-verify", "--verify")
    assert code == 2
    assert err.startswith("surgeon: error: --no-verify excludes --verify and --reference\n")


def test_preprocessing_is_verified_against_numpy_and_a_wrong_constant_is_caught(tmp_path):
    path = real_model("tiny_yolo_legacy.onnx")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nsteps:\n  - pass: add_preprocess\n    with: {channel_order: BGR, "
                      "scale: 0.00392156862, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}\n")
    model = surgeon.load(path)
    result = surgeon.apply(recipe, model)
    surgeon.save(model, tmp_path / "pre.onnx")
    report = surgeon.verify(path, tmp_path / "pre.onnx", correspondence=result.correspondence)
    assert report.status == "match"
    assert report.input_shapes == {"images": "uint8[2, 320, 320, 3]"}
    assert report.original_inputs == {"images": "float32[2, 3, 320, 320]"}
    assert report.input_sources == {"images": f"'images' of {path} fed uint8 NHWC BGR -> NCHW RGB float32 x "
                                              "0.00392157 - mean [0.485, 0.456, 0.406] / std [0.229, 0.224, 0.225]"}
    wrong = onnx.load(tmp_path / "pre.onnx")
    mean = next(i for i in wrong.graph.initializer if i.name.endswith("mean"))
    mean.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(mean)[::-1].copy(), mean.name))
    onnx.save(wrong, tmp_path / "wrong.onnx")
    assert surgeon.verify(path, tmp_path / "wrong.onnx", correspondence=result.correspondence).status == "mismatch"


def test_an_image_size_the_model_rejects_is_replaced_by_the_next_common_one(tmp_path):
    """SpaceToDepth with blocks of 64 rejects 224 x 224 images; 256 x 256 is the next size tried."""
    path = _save(tmp_path, "s2d.onnx", """<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3, H, W] x) => (float[N, 12288, A, B] y) { y = SpaceToDepth <blocksize = 64> (x) }""")
    report = surgeon.verify(path, path)
    assert report.status == "match"
    assert report.input_shapes == {"x": "float32[2, 3, 256, 256]"}
    assert report.notes == [f"{path} rejected images of 224x224; verified at 256x256 (give the size with --dim)"]


def test_contracts_compose_a_rename_then_a_dtype_change(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nsteps:\n  - pass: rename_io\n    with: {inputs: {input: pixels}}\n"
                      "  - pass: set_dtype\n    with: {inputs: {pixels: float16}}\n")
    model = surgeon.load(FIXTURES / "model.onnx")
    result = surgeon.apply(recipe, model)
    report = surgeon.verify(FIXTURES / "model.onnx", model, correspondence=result.correspondence)
    assert report.status == "match"
    assert report.input_shapes == {"pixels": "float16[2, 3, 16, 16]"}
    assert report.original_inputs == {"input": "float32[2, 3, 16, 16]"}
    assert report.input_sources == {
        "pixels": f"'input' of {FIXTURES / 'model.onnx'} fed float16 cast to the original's dtype"}
    assert report.contracts == [
        "step 1 (rename_io): each output equals the original's tensor of that name (exposed as an output when it "
        "is an intermediate one); renamed tensors are followed",
        "step 2 (set_dtype): the original is fed the new inputs cast to its dtypes; outputs equal at the dtype's "
        "tolerances"]


def test_replace_op_compares_what_the_changed_node_reads():
    proto = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y) { a = Neg(x) \n y = Relu(a) }""")
    model = surgeon.load(proto)
    result = surgeon.apply(surgeon.parse_recipe(
        "version: 1\nsteps:\n  - pass: replace_op\n    with: {op: Relu, new_op: Sigmoid}\n"), model)
    report = surgeon.verify(proto, model, correspondence=result.correspondence)
    assert report.status == "match"
    assert [(o.edited_name, o.intermediate) for o in report.outputs] == [("a", True)]
    assert report.notes == ["output 'y' is not compared: step 1 (replace_op) (now Sigmoid) changed what computes "
                            "it on purpose"]
