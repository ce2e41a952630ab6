"""User errors of the core: full message texts, exit codes, nothing written, input untouched."""

from __future__ import annotations

import io
import shutil

import onnx
import pytest
from util import FIXTURES, RECIPES

import surgeon
from surgeon.cli import main


def _apply(tmp_path, recipe, model, *extra):
    out, err = io.StringIO(), io.StringIO()
    code = main(["apply", str(recipe), str(model), *extra], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def foo(tmp_path):
    path = tmp_path / "model_foo.onnx"
    shutil.copy(FIXTURES / "model_foo.onnx", path)
    return path


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name != "model_foo.onnx" and not p.name.endswith(".yaml")
                  and not p.name.endswith(".onnx.data") and p.name != "in")


def test_missing_model(tmp_path):
    code, out, err = _apply(tmp_path, RECIPES / "strip_fooop.yaml", tmp_path / "nope.onnx")
    assert code == 1
    assert err == (f"error: model file not found: {tmp_path / 'nope.onnx'}\n"
                   "  hint: check the path; it is relative to the current directory\n")


@pytest.mark.parametrize("content,what", [
    (b"", "empty"),
    (b"this is not a model", "garbage"),
])
def test_not_an_onnx_model(tmp_path, content, what):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    code, out, err = _apply(tmp_path, RECIPES / "strip_fooop.yaml", bad)
    assert code == 1
    assert "Traceback" not in err
    if what == "empty":
        assert err == (f"error: {bad} is not an ONNX model: the file is empty\n"
                       "  hint: is this the right file? ONNX models are written by torch.onnx.export, "
                       "onnx.save and similar tools\n")
    else:
        assert err.startswith(f"error: {bad} is not a valid ONNX model: the protobuf cannot be parsed (")
        assert err.endswith("  hint: the file may be truncated or corrupt, or not an ONNX model at all; "
                            "re-export it\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_truncated_model(tmp_path, foo):
    data = foo.read_bytes()
    foo.write_bytes(data[: len(data) // 2])
    code, out, err = _apply(tmp_path, RECIPES / "strip_fooop.yaml", foo)
    assert code == 1
    assert f"error: {foo} is not a valid ONNX model: the protobuf cannot be parsed" in err
    assert _leftovers(tmp_path) == []


def test_missing_external_data(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    onnx.save_model(onnx.load(FIXTURES / "model_foo.onnx"), folder / "m.onnx", save_as_external_data=True,
                    location="m.weights", size_threshold=0)
    (folder / "m.weights").unlink()
    code, out, err = _apply(tmp_path, RECIPES / "strip_fooop.yaml", folder / "m.onnx")
    assert code == 1
    assert err.startswith(f"error: {folder / 'm.onnx'}: external data cannot be read:\n"
                          f"  tensor 'onnx::Conv_21': external data file 'm.weights' not found in {folder}\n")
    assert err.endswith("  hint: keep the weight files next to the .onnx file, with the names it was saved with\n")
    assert sorted(p.name for p in folder.iterdir()) == ["m.onnx"]


def test_recipe_errors_come_before_the_model_is_read(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nsteps:\n  - pass: remove_nodes\n    with: {op: FooOp}\n")
    code, out, err = _apply(tmp_path, recipe, tmp_path / "does-not-exist.onnx")
    assert code == 1
    assert err == (f"{recipe}:3:11: error: unknown pass 'remove_nodes'\n"
                   "  hint: did you mean 'remove_node'?\n")


def test_selector_matching_nothing_names_the_step_and_suggests(tmp_path, foo):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nsteps:\n  - id: drop\n    pass: remove_node\n    with: {op: FooOpp}\n")
    code, out, err = _apply(tmp_path, recipe, foo)
    assert code == 1
    assert err == (f"{recipe}:3:5: error: step 1 'drop' (remove_node): selector (op='FooOpp') matched no node\n"
                   "  hint: closest op types: 'FooOp'\n"
                   "        set allow_missing: true if the step may legitimately match nothing\n")
    assert _leftovers(tmp_path) == []


def test_refuses_to_overwrite_the_input(tmp_path, foo):
    before = foo.read_bytes()
    code, out, err = _apply(tmp_path, RECIPES / "strip_fooop.yaml", foo, "-o", str(foo))
    assert code == 1
    assert err == (f"error: refusing to overwrite the input model {foo}\n"
                   "  hint: write to another file with -o, or pass --in-place (in_place=True) to replace it\n")
    assert foo.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_in_place(tmp_path, foo):
    code, out, err = _apply(tmp_path, RECIPES / "strip_fooop.yaml", foo, "--in-place")
    assert code == 0, err
    assert not any(n.op_type == "FooOp" for n in onnx.load(foo).graph.node)
    assert _leftovers(tmp_path) == []


def test_failing_user_pass_leaves_nothing(tmp_path, foo):
    @surgeon.register_pass("explodes_halfway")
    def explodes_halfway(graph):
        graph.nodes.pop()
        raise RuntimeError("boom")

    try:
        recipe = tmp_path / "r.yaml"
        recipe.write_text("version: 1\nsteps:\n  - pass: explodes_halfway\n")
        before = foo.read_bytes()
        code, out, err = _apply(tmp_path, recipe, foo)
        assert code == 1
        first, hint = err.splitlines()
        assert first == f"{recipe}:3:5: error: step 1 (explodes_halfway): the pass raised RuntimeError: boom"
        assert hint.startswith(f"  hint: raised at {__file__}:")
        assert hint.endswith("(tests.test_core_errors.test_failing_user_pass_leaves_nothing.<locals>."
                             "explodes_halfway); the model was not saved") or "explodes_halfway" in hint
        assert foo.read_bytes() == before
        assert _leftovers(tmp_path) == []
    finally:
        surgeon.registry.unregister("explodes_halfway")


def test_internal_error_exit_3_with_versions(tmp_path, foo, monkeypatch):
    from surgeon.passes.builtin import cleanup as cleanup_module

    def broken(model, *, remove_unused_inputs: bool = False):
        raise ZeroDivisionError("bug")

    monkeypatch.setitem(surgeon.registry._specs, "cleanup",
                        surgeon.registry.get("cleanup").__class__.from_function("cleanup", broken))
    code, out, err = _apply(tmp_path, RECIPES / "strip_fooop.yaml", foo)
    assert cleanup_module  # the real module is untouched
    assert code == 3
    assert "Traceback (most recent call last)" in err and "ZeroDivisionError: bug" in err
    assert "surgeon: internal error: this is a bug in surgeon" in err
    assert "onnx-graphsurgeon" in err and "onnxruntime" in err and "Python" in err
    assert _leftovers(tmp_path) == []


def test_usage_errors_exit_2():
    err = io.StringIO()
    assert main(["apply"], err=err) == 2
    assert err.getvalue().startswith("surgeon: error: the following arguments are required: recipe, model")
    assert main(["frobnicate"], err=io.StringIO()) == 2


def test_version():
    out = io.StringIO()
    assert main(["--version"], out=out) == 0


def test_console_script_runs(tmp_path, foo):
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("surgeon")
    if not exe.exists():
        pytest.skip("surgeon console script not installed in this environment")
    proc = subprocess.run([str(exe), "apply", str(RECIPES / "strip_fooop.yaml"), str(foo)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith(f"wrote {tmp_path / 'model_foo.surgeon.onnx'}\n")
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    assert proc.stdout.strip() == f"surgeon {surgeon.__version__}"


def test_closed_output_pipe_is_not_a_crash(tmp_path):
    """`surgeon schema | head` closes the pipe early: no traceback, no 'internal error'."""
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("surgeon")
    if not exe.exists():
        pytest.skip("surgeon console script not installed in this environment")
    proc = subprocess.run(f"'{exe}' schema | head -c 10", shell=True, capture_output=True, text=True)
    assert proc.stdout == '{\n  "$sche'
    assert proc.stderr == ""
