"""Recipes in review: `surgeon validate`, the checked-in JSON schema, and the pre-commit hooks (run for real)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from surgeon.cli import main
from surgeon.passes.registry import PassRegistry
from surgeon.recipe.schema import schema_text
from surgeon.review import load_checks, run_checks, validate_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
MODELS = ROOT / "fixtures" / "models"
HEADER = "# yaml-language-server: $schema=recipe.schema.json"

BROKEN = textwrap.dedent("""\
    version: 1
    steps:
      - pass: remove_nod
        with: {op: FooOp}
      - pass: insert_nms
        with: {layout: yolov8, score_threshold: 1.5}
""")


def _cli(*argv: object, cwd: Path | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        code = main([str(a) for a in argv], out=out, err=err)
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    return path


# -- surgeon validate -----------------------------------------------------------------


def test_validate_reports_every_problem_with_its_position(broken: Path) -> None:
    code, out, err = _cli("validate", broken, RECIPES / "strip_fooop.yaml")
    assert code == 1 and err == ""
    assert out == (
        f"{broken}: 2 problems\n"
        f"{broken}:3:11: error: unknown pass 'remove_nod'\n"
        "  hint: did you mean 'remove_node', 'rename_io'?\n"
        f"{broken}:6:45: error: parameter 'score_threshold': must be between 0 and 1, got 1.5\n"
        "  hint: thresholds compare IoUs and confidence scores, which lie in [0, 1]\n"
        f"{RECIPES / 'strip_fooop.yaml'}: ok (2 steps)\n"
        "2 recipes checked: 1 with problems\n"
    )


def test_validate_every_ready_recipe_is_clean() -> None:
    recipes = sorted(RECIPES.glob("*.yaml"))
    code, out, _ = _cli("validate", *recipes)
    assert code == 0, out
    assert out.endswith(f"{len(recipes)} recipes checked: all ok\n")


def test_validate_against_a_model_says_what_each_step_would_do() -> None:
    recipe = RECIPES / "strip_fooop.yaml"
    code, out, _ = _cli("validate", recipe, "--model", MODELS / "model_foo.onnx")
    assert code == 0
    assert out == (
        f"{recipe} on {MODELS / 'model_foo.onnx'}: ok (2 steps)\n"
        "  step 1 'drop-fooop' (remove_node): removed 1 node (devtech::FooOp); rewired 1 node\n"
        "  step 2 (cleanup): no change\n"
        "1 recipe checked: all ok\n"
    )


def test_validate_against_a_model_it_no_longer_fits() -> None:
    recipe = RECIPES / "strip_fooop.yaml"
    before = (MODELS / "model.onnx").read_bytes()
    code, out, _ = _cli("validate", recipe, "--model", MODELS / "model.onnx")
    assert code == 1
    assert out == (
        f"{recipe} on {MODELS / 'model.onnx'}: 1 problem\n"
        f"{recipe}:8:5: error: step 1 'drop-fooop' (remove_node): selector (op='FooOp', domain='devtech') "
        "matched no node\n"
        "  hint: op types in the model: Conv, Relu\n"
        "        set allow_missing: true if the step may legitimately match nothing\n"
        "1 recipe checked: 1 with problems\n"
    )
    assert (MODELS / "model.onnx").read_bytes() == before


def test_validate_keeps_the_summaries_of_the_steps_before_a_failing_one(tmp_path: Path) -> None:
    recipe = tmp_path / "two.yaml"
    recipe.write_text("version: 1\nsteps:\n  - pass: remove_node\n    with: {op: FooOp}\n"
                      "  - pass: remove_node\n    with: {op: Softmax}\n")
    check = validate_recipe(recipe, MODELS / "model_foo.onnx")
    assert check.preview == ["step 1 (remove_node): removed 1 node (devtech::FooOp); rewired 1 node"]
    assert [d.message for d in check.problems] == [
        "step 2 (remove_node): selector (op='Softmax') matched no node"]


def test_validate_json(broken: Path) -> None:
    code, out, _ = _cli("validate", broken, "--json")
    assert code == 1
    [entry] = json.loads(out)
    assert entry["ok"] is False and entry["steps"] == 0 and entry["model"] is None
    assert entry["problems"][0] == {"message": "unknown pass 'remove_nod'", "location": f"{broken}:3:11",
                                    "hint": "did you mean 'remove_node', 'rename_io'?"}


def test_validate_usage_errors(broken: Path) -> None:
    assert _cli("validate")[2].startswith("surgeon: error: give at least one RECIPE (or --checks FILE)\n")
    code, _, err = _cli("validate", broken, "--checks", "x.yaml")
    assert code == 2
    assert err.startswith("surgeon: error: --checks runs the pairs its file lists: "
                          "give no RECIPE and no --model with it")


def test_validate_a_missing_recipe() -> None:
    code, out, _ = _cli("validate", "nowhere.yaml")
    assert code == 1
    assert out == ("nowhere.yaml: 1 problem\nerror: recipe file not found: nowhere.yaml\n  hint: check the path\n"
                   "1 recipe checked: 1 with problems\n")


# -- checks files (the surgeon-check hook) --------------------------------------------------


def _checks(tmp_path: Path, entries: str) -> Path:
    shutil.copy(RECIPES / "strip_fooop.yaml", tmp_path / "strip.yaml")
    shutil.copy(RECIPES / "simplify.yaml", tmp_path / "simplify.yaml")
    shutil.copy(MODELS / "model_keepbn.onnx", tmp_path / "keepbn.onnx")
    shutil.copy(MODELS / "model.onnx", tmp_path / "plain.onnx")
    path = tmp_path / "surgeon-checks.yaml"
    path.write_text(entries)
    return path


def test_checks_run_each_pair_dry_and_verified(tmp_path: Path) -> None:
    path = _checks(tmp_path, "checks:\n  - {recipe: simplify.yaml, model: keepbn.onnx}\n"
                             "  - {recipe: strip.yaml, model: plain.onnx}\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    good, bad = run_checks(path)
    assert good.ok
    assert good.preview == ["step 1 (simplify): removed 2 nodes (BatchNormalization x2); rewired 2 nodes"]
    assert good.verification is not None
    assert good.verification.startswith(f"match against {tmp_path / 'keepbn.onnx'} (random inputs)\n")
    assert "\n  output: match" in good.verification
    assert not bad.ok and bad.problems[0].message.endswith("matched no node")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # a dry run writes nothing

    code, out, _ = _cli("validate", "--checks", cwd=tmp_path)
    assert code == 1
    assert out.startswith("simplify.yaml on keepbn.onnx: ok (1 step)\n"
                          "  step 1 (simplify): removed 2 nodes (BatchNormalization x2); rewired 2 nodes\n"
                          "  verify: match against")
    assert out.endswith("2 recipes checked: 1 with problems\n")


def test_checks_file_errors(tmp_path: Path) -> None:
    path = _checks(tmp_path, "checks:\n  - {recipe: strip.yaml, model: missing.onnx}\n  - {recipe: strip.yaml}\n"
                             "extra: 1\n")
    with pytest.raises(Exception) as info:
        load_checks(path)
    assert str(info.value) == (
        f"{path}:2:33: error: model not found: missing.onnx\n"
        f"  hint: paths are relative to the checks file's folder ({tmp_path})\n"
        f"{path}:3:5: error: check 2 must have exactly the keys 'recipe' and 'model'\n"
        "  hint: for example:\n"
        "        checks:\n"
        "          - recipe: recipes/strip_fooop.yaml\n"
        "            model: models/model_foo.onnx\n"
        f"{path}:4:1: error: unknown key 'extra' in a checks file\n"
        "  hint: a checks file has only 'checks:'"
    )
    code, _, err = _cli("validate", "--checks", tmp_path / "none.yaml")
    assert code == 1
    assert err == (f"error: checks file not found: {tmp_path / 'none.yaml'}\n"
                   "  hint: create it with a 'checks:' list of recipe/model pairs (see docs/review.md), or name "
                   "another with --checks FILE (default surgeon-checks.yaml)\n")


# -- the JSON schema editors read -----------------------------------------------------------


def test_checked_in_schema_is_current() -> None:
    assert (RECIPES / "recipe.schema.json").read_text() == schema_text(PassRegistry()), \
        "recipes/recipe.schema.json is stale: run `surgeon schema --write`"


def test_every_ready_recipe_points_editors_at_the_schema() -> None:
    missing = [p.name for p in RECIPES.glob("*.yaml") if p.read_text().splitlines()[0] != HEADER]
    assert missing == [], f"start these recipes with the line {HEADER!r}"


def test_schema_accepts_every_ready_recipe_and_rejects_broken_ones() -> None:
    schema = json.loads((RECIPES / "recipe.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for path in RECIPES.glob("*.yaml"):
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert errors == [], f"{path.name}: {errors[0].message if errors else ''}"
    assert not validator.is_valid(yaml.safe_load(BROKEN))  # unknown pass
    out_of_range = {"version": 1, "steps": [{"pass": "insert_nms",
                                             "with": {"layout": "yolov8", "score_threshold": 1.5}}]}
    assert not validator.is_valid(out_of_range)  # ranges are in the schema
    bad_enum = {"version": 1, "steps": [{"pass": "insert_nms", "with": {"layout": "yolov9"}}]}
    assert not validator.is_valid(bad_enum)  # and enums


def test_schema_write_and_check(tmp_path: Path) -> None:
    target = tmp_path / "recipe.schema.json"
    assert _cli("schema", "--check", target) == (1, "", f"{target}: missing: regenerate it with "
                                                        f"`surgeon schema --write {target}`\n")
    assert _cli("schema", "--write", target) == (0, f"wrote {target}\n", "")
    assert _cli("schema", "--write", target) == (0, f"{target}: already up to date\n", "")
    assert _cli("schema", "--check", target) == (0, f"{target}: up to date\n", "")
    target.write_text("{}")
    assert _cli("schema", "--check", target)[0] == 1
    code, _, err = _cli("schema", "--write", tmp_path / "no" / "x.json")
    assert code == 2
    assert err.startswith(f"surgeon: error: folder {tmp_path / 'no'} does not exist "
                          "(run from the repository root, or name the file)")


# -- pre-commit, for real -------------------------------------------------------------------


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.mark.skipif(shutil.which("pre-commit") is None and
                    subprocess.run([sys.executable, "-m", "pre_commit", "--version"],
                                   capture_output=True).returncode != 0,
                    reason="pre-commit is not installed (pip install -e '.[test]')")
@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="pre-commit try-repo needs this repository's git checkout")
def test_pre_commit_hooks_in_a_model_repository(tmp_path: Path) -> None:
    repo = tmp_path / "models-repo"
    (repo / "recipes").mkdir(parents=True)
    shutil.copy(RECIPES / "strip_fooop.yaml", repo / "recipes" / "strip.yaml")
    (repo / "recipes" / "broken.yaml").write_text(BROKEN)
    (repo / "notes.yaml").write_text("not: a recipe\n")  # outside recipes/: the validate hook leaves it alone
    shutil.copy(RECIPES / "simplify.yaml", repo / "recipes" / "simplify.yaml")
    shutil.copy(MODELS / "model_keepbn.onnx", repo / "keepbn.onnx")
    (repo / "surgeon-checks.yaml").write_text("checks:\n  - {recipe: recipes/simplify.yaml, model: keepbn.onnx}\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "models")
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"), "PRE_COMMIT_COLOR": "never"}
    done = subprocess.run([sys.executable, "-m", "pre_commit", "try-repo", str(ROOT), "--all-files"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "surgeon validate (recipe format, passes, parameters)..." in out
    assert "recipes/broken.yaml:3:11: error: unknown pass 'remove_nod'" in out
    assert "recipes/strip.yaml: ok (2 steps)" in out
    assert "notes.yaml" not in out
    check_line = next(line for line in out.splitlines() if line.startswith("surgeon check"))
    assert check_line.endswith("Passed"), out

    # Fixing the broken recipe makes the whole run pass.
    (repo / "recipes" / "broken.yaml").unlink()
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "fix")
    done = subprocess.run([sys.executable, "-m", "pre_commit", "try-repo", str(ROOT), "--all-files"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
