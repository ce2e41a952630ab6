"""--dry-run, --report FILE.json and provenance in the output's metadata_props."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil

import onnx
import pytest
from util import FIXTURES, RECIPES

import surgeon
from surgeon.cli import main


@pytest.fixture
def foo(tmp_path):
    path = tmp_path / "model_foo.onnx"
    shutil.copy(FIXTURES / "model_foo.onnx", path)
    return path


def _cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_dry_run_writes_nothing(tmp_path, foo):
    before = foo.read_bytes()
    code, out, err = _cli("apply", RECIPES / "strip_fooop.yaml", foo, "--dry-run")
    assert (code, err) == (0, "")
    assert re.sub(r"in \d+\.\d\d s\n", "in S s\n", out) == (
                   f"{RECIPES / 'strip_fooop.yaml'} on {foo}:\n"
                   "  step 1 'drop-fooop' (remove_node): removed 1 node (devtech::FooOp); rewired 1 node\n"
                   "  step 2 (cleanup): no change\n"
                   "checked (full) in S s\n"
                   f"dry run: nothing written (would write {tmp_path / 'model_foo.surgeon.onnx'})\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_foo.onnx"]
    assert foo.read_bytes() == before


def test_model_copy_is_independent():
    model = surgeon.load(FIXTURES / "model_foo.onnx")
    copy = model.copy()
    surgeon.apply(RECIPES / "strip_fooop.yaml", copy)
    assert len(model.graph.nodes) == 5 and len(copy.graph.nodes) == 4


def test_report_contents(tmp_path, foo):
    report = tmp_path / "report.json"
    out = tmp_path / "clean.onnx"
    code, _, err = _cli("apply", RECIPES / "strip_fooop.yaml", foo, "-o", out, "--report", report,
                        "--reference", FIXTURES / "model.onnx")
    assert (code, err) == (0, "")
    data = json.loads(report.read_text())
    assert data["schema"] == "surgeon.report/1" and data["status"] == "ok" and data["dry_run"] is False
    assert data["input"] == {"path": str(foo), "sha256": _sha(foo)}
    assert data["output"] == {"path": str(out), "sha256": _sha(out), "data_path": None}
    assert data["recipe"]["sha256"] == _sha(RECIPES / "strip_fooop.yaml")
    step = data["steps"][0]
    assert (step["pass"], step["id"], step["params"]) == ("remove_node", "drop-fooop",
                                                          {"op": "FooOp", "domain": "devtech"})
    assert step["location"] == f"{RECIPES / 'strip_fooop.yaml'}:8:5"
    assert step["removed"] == [{"name": "/FooOp", "op": "FooOp", "domain": "devtech"}]
    assert step["added"] == [] and step["renamed"] == {} and step["folded"] == 0 and step["seconds"] >= 0
    assert data["verification"]["status"] == "match"
    assert data["verification"]["outputs"][0]["name"] == "output"


def test_failed_run_still_writes_a_report(tmp_path, foo):
    report = tmp_path / "report.json"
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nsteps:\n  - pass: remove_node\n    with: {op: Nope}\n")
    code, _, err = _cli("apply", recipe, foo, "--report", report)
    assert code == 1
    data = json.loads(report.read_text())
    assert data["status"] == "error" and data["error"] == err.rstrip("\n")


def test_provenance(tmp_path, foo):
    out = tmp_path / "clean.onnx"
    assert _cli("apply", RECIPES / "strip_fooop.yaml", foo, "-o", out)[0] == 0
    props = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert props["surgeon.version"] == surgeon.__version__
    assert props["surgeon.recipe_sha256"] == _sha(RECIPES / "strip_fooop.yaml")
    assert props["surgeon.input_sha256"] == _sha(foo)
    assert json.loads(props["surgeon.recipe_steps"]) == [
        {"id": "drop-fooop", "pass": "remove_node", "with": {"domain": "devtech", "op": "FooOp"}},
        {"id": None, "pass": "cleanup", "with": {}}]
    bare = tmp_path / "bare.onnx"
    assert _cli("apply", RECIPES / "strip_fooop.yaml", foo, "-o", bare, "--no-provenance")[0] == 0
    assert {p.key for p in onnx.load(bare).metadata_props} == {p.key for p in onnx.load(foo).metadata_props}


def test_reapplying_a_recipe_is_reported(tmp_path, foo):
    recipe = tmp_path / "tidy.yaml"
    recipe.write_text("version: 1\nsteps:\n  - pass: cleanup\n")
    first, second = tmp_path / "first.onnx", tmp_path / "second.onnx"
    code, out, err = _cli("apply", recipe, foo, "-o", first)
    assert code == 0 and "warning:" not in out + err
    code, out, err = _cli("apply", recipe, first, "-o", second)
    assert code == 0 and "warning:" not in out
    assert err == ("warning: this model was already made by this recipe (from an input with sha256 "
                   f"{_sha(foo)[:16]}...); applying it again is probably a mistake\n")


def test_a_step_failing_on_the_recipes_own_output_says_so(tmp_path, foo):
    recipe = RECIPES / "strip_fooop.yaml"
    first = tmp_path / "first.onnx"
    assert _cli("apply", recipe, foo, "-o", first)[0] == 0
    code, out, err = _cli("apply", recipe, first, "-o", tmp_path / "second.onnx")
    recipe_sha = _sha(recipe)
    assert (code, out) == (1, "")
    assert err == (
        f"{recipe}:8:5: error: step 1 'drop-fooop' (remove_node): selector (op='FooOp', domain='devtech') "
        "matched no node\n"
        "  hint: op types in the model: Conv, Relu\n"
        "        set allow_missing: true if the step may legitimately match nothing\n"
        f"note: this model was already made by this recipe (its metadata records the recipe's sha256 "
        f"{recipe_sha[:16]}...): the step has nothing left to do\n"
        f"  hint: run the recipe on the original model (sha256 {_sha(foo)[:16]}...), not on a model it already made\n")


def test_a_step_another_recipe_already_ran_says_so(tmp_path, foo):
    first = tmp_path / "first.onnx"
    assert _cli("apply", RECIPES / "strip_fooop.yaml", foo, "-o", first)[0] == 0
    other = tmp_path / "other.yaml"
    other.write_text("version: 1\nsteps:\n  - pass: toposort\n  - pass: remove_node\n"
                     "    with: {op: FooOp, domain: devtech}\n")
    code, _, err = _cli("apply", other, first, "-o", tmp_path / "second.onnx")
    assert code == 1
    assert err.endswith(
        "note: this model's provenance (surgeon.recipe_steps) shows that a recipe already ran 'remove_node' "
        "with the same parameters on it\n"
        f"  hint: run the recipe on the original model (sha256 {_sha(foo)[:16]}...), not on a model it already made\n")


def test_a_failing_step_on_a_fresh_model_gets_no_provenance_note(tmp_path, foo):
    other = tmp_path / "other.yaml"
    other.write_text("version: 1\nsteps:\n  - pass: remove_node\n    with: {op: Nope}\n")
    code, _, err = _cli("apply", other, foo, "-o", tmp_path / "out.onnx")
    assert code == 1 and "note:" not in err
