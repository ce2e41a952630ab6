"""Step assertions: `expect:` failures are user errors at the step's recipe line."""

from __future__ import annotations

import io
import shutil

import pytest
from util import FIXTURES

import surgeon
from surgeon.cli import main


@pytest.fixture
def foo(tmp_path):
    path = tmp_path / "model_foo.onnx"
    shutil.copy(FIXTURES / "model_foo.onnx", path)
    return path


def _run(tmp_path, model, expect: str):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nsteps:\n  - id: drop\n    pass: remove_node\n"
                      f"    with: {{op: FooOp, domain: devtech}}\n    expect: {expect}\n  - pass: cleanup\n")
    out, err = io.StringIO(), io.StringIO()
    code = main(["apply", str(recipe), str(model)], out=out, err=err)
    return code, out.getvalue(), err.getvalue(), recipe


HINT = "  hint: the model or a pass changed since the recipe was written: check the step, then update 'expect'\n"


def test_expectations_that_hold(tmp_path, foo):
    code, out, err, _ = _run(tmp_path, foo, "{removed: 1, added: 0, min_removed: 1, ops_absent: [FooOp, "
                                            "'devtech::FooOp'], inputs: [input], outputs: [output], "
                                            "shapes: {output: [N, 8, null, 16]}}")
    assert (code, err) == (0, "")


def test_every_failed_expectation_is_reported(tmp_path, foo):
    code, out, err, recipe = _run(tmp_path, foo, "{removed: 2, added: 1, min_removed: 3, ops_absent: [Relu], "
                                                 "inputs: [x], outputs: [out], shapes: {output: [1, 8, 16, 16], "
                                                 "outptu: [1]}}")
    at = f"{recipe}:3:5: error: step 1 'drop' (remove_node): expect: "
    assert code == 1
    assert err == (
        f"{at}expected 2 nodes removed, the step removed 1: /FooOp (devtech::FooOp)\n{HINT}"
        f"{at}expected 1 node added, the step added 0\n{HINT}"
        f"{at}expected at least 3 nodes removed, the step removed 1\n{HINT}"
        f"{at}expected no 'Relu' node, found 2\n{HINT}"
        f"{at}expected graph inputs ['x'], the model has ['input']\n{HINT}"
        f"{at}expected graph outputs ['out'], the model has ['output']\n{HINT}"
        f"{at}expected tensor 'output' to have shape [1, 8, 16, 16], it has ['N', 8, 16, 16]\n{HINT}"
        f"{at}expected tensor 'outptu' with shape [1], but the model has no tensor 'outptu'\n"
        "  hint: did you mean 'output'?\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_foo.onnx", "r.yaml"]


def test_expect_from_python():
    model = surgeon.load(FIXTURES / "model_foo.onnx")
    recipe = surgeon.Recipe.from_steps([{"pass": "remove_node", "with": {"op": "FooOp"}, "expect": {"removed": 0}}])
    with pytest.raises(surgeon.StepError) as info:
        surgeon.apply(recipe, model)
    assert str(info.value) == ("error: step 1 (remove_node): expect: expected 0 nodes removed, the step removed 1: "
                               "/FooOp (devtech::FooOp)\n" + HINT.rstrip("\n"))


def test_bad_expect_is_a_recipe_error_before_the_model_is_read(tmp_path):
    code, out, err, recipe = _run(tmp_path, tmp_path / "missing.onnx", "{removd: 1}")
    assert code == 1
    assert err.startswith(f"{recipe}:6:14: error: unknown key 'removd' in 'expect'\n")
