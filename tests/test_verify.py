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
           "  output: match, max abs error 0, max rel error 0 (rtol 0.0001, atol 1e-05)\n" in stdout
    assert out.exists()


def test_wrong_reference_mismatch_writes_nothing(tmp_path, foo):
    wrong = _perturbed(FIXTURES / "model.onnx", tmp_path / "wrong.onnx")
    code, stdout, err = _cli("apply", str(RECIPES / "strip_fooop.yaml"), str(foo), "--verify",
                             "--reference", str(wrong))
    assert code == 1
    assert err.startswith(f"error: verification failed: mismatch against {wrong} (random inputs)\n"
                          "  output: MISMATCH, max abs error ")
    assert "; worst element (" in err and "expected " in err and ", got " in err
    assert err.endswith("  hint: the edit changed what the model computes; nothing was written.\n"
                        "        Check the recipe, or loosen --rtol/--atol if the difference is expected\n")
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_foo.onnx", "wrong.onnx"]


def test_exported_model_with_wrong_reference_of_other_shapes_fails(tmp_path):
    """The generated fixtures/model.onnx takes 16x16 images, the exported fixtures/models/ one 32x32: a failure."""
    out = tmp_path / "o.onnx"
    code, _, err = _cli("apply", str(RECIPES / "strip_fooop.yaml"), str(real_model("model_foo.onnx")),
                        "-o", str(out), "--verify", "--reference", str(FIXTURES / "model.onnx"))
    assert code == 1
    assert err.startswith(f"error: verification failed: failed against {FIXTURES / 'model.onnx'} (random inputs)\n"
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
    assert "no output could be compared: the models have no output name in common" in unmatched.notes


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
