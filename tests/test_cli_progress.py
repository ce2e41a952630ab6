"""Progress on the terminal and the --check levels of `surgeon apply` (issue #9).

Progress is drawn only when stderr is a terminal and -q is not given, only
for stages that run over a second, and is cleared before anything else is
printed. --check full|basic|none chooses how much the written model is
checked; the summary says how long checking took.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import onnx
import onnx_graphsurgeon as gs
import pytest

import surgeon
from surgeon.cli import main
from surgeon.errors import ExportError
from surgeon.progress import Progress, Task
from surgeon.terminal import TerminalProgress
from surgeon.workflow import apply_file


class FakeTTY(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


RELU = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2, 3] x) => (float[2, 3] y) {
        y = Relu (x)
    }"""

SLEEPY_PLUGIN = '''\
import time

import surgeon


@surgeon.register_pass("{name}")
def sleepy(model: surgeon.Model, *, seconds: float = 1.2, fail: bool = False) -> None:
    """Sleeps, like a slow pass; fails afterwards when asked."""
    time.sleep(seconds)
    if fail:
        raise surgeon.PassError("gave up after sleeping")
'''


@pytest.fixture
def relu(tmp_path) -> Path:
    path = tmp_path / "relu.onnx"
    onnx.save(onnx.parser.parse_model(RELU), path)
    return path


_numbers = itertools.count()


@pytest.fixture
def sleepy(tmp_path, request):
    """A recipe whose plugin pass sleeps 1.2 s (``sleepy(fail=True)`` then fails)."""
    name = f"nap{next(_numbers)}"  # short: the bar's line must hold it
    module = f"{name}_mod"
    (tmp_path / f"{module}.py").write_text(SLEEPY_PLUGIN.format(name=name))

    def make(fail: bool = False) -> Path:
        recipe = tmp_path / "sleepy.yaml"
        recipe.write_text(f"version: 1\nplugins: [{module}]\nsteps:\n  - id: nap\n    pass: {name}\n"
                          f"    with: {{fail: {str(fail).lower()}}}\n")
        return recipe

    yield make, name
    sys.modules.pop(module, None)
    surgeon.registry.unregister(name) if name in [s.name for s in surgeon.registry] else None


def _recipe(tmp_path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


WRONG_SHAPE = "version: 1\nsteps:\n  - pass: set_shapes\n    with: {outputs: {y: [2, 4]}}\n"
"""Declares an output shape that Relu cannot produce: only full_check's shape inference sees it."""


def _run(argv, err=None):
    out, err = io.StringIO(), err if err is not None else io.StringIO()
    code = main(argv, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _timed(stdout: str) -> str:
    """The summary with the check time replaced by S (it varies)."""
    return re.sub(r"in \d+\.\d\d s$", "in S s", stdout, flags=re.M)


# -- no progress unless on a terminal -----------------------------------------------------------


def test_not_a_terminal_prints_only_the_summary(tmp_path, relu, sleepy):
    make, name = sleepy
    recipe = make()
    code, out, err = _run(["apply", str(recipe), str(relu), "-o", str(tmp_path / "out.onnx")])
    assert code == 0
    assert err == ""
    assert _timed(out) == (f"{recipe} on {relu}:\n"
                           f"  step 1 'nap' ({name}): no change\n"
                           "checked (full) in S s\n"
                           f"wrote {tmp_path / 'out.onnx'}\n")


def test_quiet_on_a_terminal_prints_only_the_output_path(tmp_path, relu, sleepy):
    make, _ = sleepy
    code, out, err = _run(["apply", str(make()), str(relu), "-o", str(tmp_path / "out.onnx"), "-q"],
                          err=FakeTTY())
    assert code == 0
    assert (out, err) == (f"wrote {tmp_path / 'out.onnx'}\n", "")


def test_a_fast_run_on_a_terminal_shows_no_progress(tmp_path, relu):
    recipe = _recipe(tmp_path, "version: 1\nsteps:\n  - pass: cleanup\n")
    code, out, err = _run(["apply", str(recipe), str(relu), "-o", str(tmp_path / "out.onnx")], err=FakeTTY())
    assert code == 0
    assert err == ""
    assert out.endswith(f"wrote {tmp_path / 'out.onnx'}\n")


# -- progress on a terminal ---------------------------------------------------------------------


def test_a_slow_step_shows_a_bar_on_stderr_and_clears_it(tmp_path, relu, sleepy):
    make, name = sleepy
    recipe = make()
    code, out, err = _run(["apply", str(recipe), str(relu), "-o", str(tmp_path / "out.onnx")], err=FakeTTY())
    assert code == 0
    assert re.search(rf"steps:   0%\|.*\| 0/1 step \[00:0\d\], step 1 'nap' \({name}\)", err), err
    assert err.endswith("\r")  # the bar's line is blanked and the cursor back at its start
    assert "\n" not in err  # nothing scrolled: the terminal is left as it was
    # stdout is the same summary as without a terminal
    assert _timed(out) == (f"{recipe} on {relu}:\n"
                           f"  step 1 'nap' ({name}): no change\n"
                           "checked (full) in S s\n"
                           f"wrote {tmp_path / 'out.onnx'}\n")


def test_an_error_after_a_slow_step_starts_on_a_clean_line(tmp_path, relu, sleepy):
    make, name = sleepy
    recipe = make(fail=True)
    code, out, err = _run(["apply", str(recipe), str(relu), "-o", str(tmp_path / "out.onnx")], err=FakeTTY())
    assert code == 1
    assert out == ""
    drawn, _, message = err.rpartition("\r")
    assert "steps:" in drawn
    assert message == (f"{recipe}:4:5: error: step 1 'nap' ({name}): gave up after sleeping\n")
    assert not (tmp_path / "out.onnx").exists()


def test_the_display_draws_a_spinner_for_uncountable_work_and_only_after_the_delay():
    err = FakeTTY()
    with TerminalProgress(err, delay=0.3, tick=0.05) as display:
        with display.task("quick"):
            time.sleep(0.1)
        assert err.getvalue() == ""
        with display.task("checking (full)"):
            time.sleep(0.5)
    drawn = err.getvalue()
    assert re.search(r"[|/\-\\] checking \(full\) \[00:00\]", drawn), drawn
    assert "quick" not in drawn
    assert drawn.endswith("\r")


def test_the_display_clears_stages_left_open_when_it_closes():
    err = FakeTTY()
    display = TerminalProgress(err, delay=0.0, tick=0.05)
    t = display.task("loading", total=3, unit="step")
    t.advance()
    time.sleep(0.1)
    display.close()
    assert "1/3 step" in err.getvalue()
    assert err.getvalue().endswith("\r")
    t.close()  # closing again later is harmless
    t.advance()


def _tty_run(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """The console script with stderr on a pseudo-terminal (stdout a pipe)."""
    import pty

    exe = Path(sys.executable).with_name("surgeon")
    if not exe.exists():
        pytest.skip("surgeon console script not installed in this environment")
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(exe), *argv], stdout=subprocess.PIPE, stderr=slave, cwd=cwd, text=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    out = proc.stdout.read()
    code = proc.wait()
    os.close(master)
    return code, out, b"".join(chunks).decode()


def test_console_script_on_a_terminal_draws_progress_on_stderr_only(tmp_path, relu, sleepy):
    make, name = sleepy
    recipe = make()
    code, out, err = _tty_run(["apply", str(recipe), str(relu), "-o", str(tmp_path / "out.onnx")], tmp_path)
    assert code == 0, err
    assert f"step 1 'nap' ({name})" in err and "0/1 step" in err
    assert _timed(out) == (f"{recipe} on {relu}:\n"
                           f"  step 1 'nap' ({name}): no change\n"
                           "checked (full) in S s\n"
                           f"wrote {tmp_path / 'out.onnx'}\n")


def test_console_script_without_a_terminal_prints_no_progress(tmp_path, relu, sleepy):
    make, _ = sleepy
    exe = Path(sys.executable).with_name("surgeon")
    if not exe.exists():
        pytest.skip("surgeon console script not installed in this environment")
    proc = subprocess.run([str(exe), "apply", str(make()), str(relu), "-o", str(tmp_path / "out.onnx")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stderr == ""
    assert proc.stdout.endswith(f"wrote {tmp_path / 'out.onnx'}\n")


# -- the library reports, it does not draw ------------------------------------------------------


class Recorder(Progress):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def task(self, name: str, *, total: int | None = None, unit: str = "") -> Task:
        self.events.append(("open", name, total, unit))
        recorder = self

        class Recorded(Task):
            def advance(self, n: int = 1) -> None:
                recorder.events.append(("advance", name, n))

            def describe(self, text: str) -> None:
                recorder.events.append(("describe", name, text))

            def close(self) -> None:
                recorder.events.append(("close", name))

        return Recorded()


def test_apply_file_reports_every_stage_to_a_progress_observer(tmp_path, relu):
    recipe = _recipe(tmp_path, "version: 1\nsteps:\n  - pass: cleanup\n  - id: sort\n    pass: toposort\n")
    recorder = Recorder()
    apply_file(recipe, relu, tmp_path / "out.onnx", progress=recorder)
    assert recorder.events == [
        ("open", "loading relu.onnx", None, ""), ("close", "loading relu.onnx"),
        ("open", "steps", 2, "step"),
        ("describe", "steps", "step 1 (cleanup)"), ("advance", "steps", 1),
        ("describe", "steps", "step 2 'sort' (toposort)"), ("advance", "steps", 1),
        ("close", "steps"),
        ("open", "writing out.onnx", None, ""),
        ("open", "checking (full)", None, ""), ("close", "checking (full)"),
        ("close", "writing out.onnx"),
        ("open", "hashing out.onnx", None, ""), ("close", "hashing out.onnx"),
    ]


def test_verification_reports_its_four_stages(tmp_path, relu):
    recorder = Recorder()
    report = surgeon.verify(relu, relu, progress=recorder)
    assert report.status == "match"
    assert [e for e in recorder.events if e[0] != "describe"] == [
        ("open", "verifying", 4, "stage"), *[("advance", "verifying", 1)] * 4, ("close", "verifying")]


def test_checking_is_reported_even_when_it_fails(tmp_path, relu):
    model = surgeon.load(relu)
    model.graph.outputs[0].shape = [2, 4]
    recorder = Recorder()
    with pytest.raises(ExportError):
        surgeon.save(model, tmp_path / "out.onnx", progress=recorder)
    assert recorder.events[-2:] == [("close", "checking (full)"), ("close", "writing out.onnx")]


# -- --check full | basic | none ----------------------------------------------------------------


def test_check_full_fails_on_what_only_shape_inference_sees(tmp_path, relu):
    recipe = _recipe(tmp_path, WRONG_SHAPE)
    code, out, err = _run(["apply", str(recipe), str(relu), "-o", str(tmp_path / "out.onnx"), "--check", "full"])
    assert code == 1
    assert out == ""
    assert err == (
        "error: the edited model fails the ONNX checker: [ShapeInferenceError] Inference error(s): "
        "(op_type:Relu): [ShapeInferenceError] Inferred shape and existing shape differ in dimension 1: (3) vs (4)\n"
        "  hint: the recipe introduced this (the input model passed the checker); check the steps that "
        "touched the names above\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml", "relu.onnx"]


def test_full_is_the_default(tmp_path, relu):
    recipe = _recipe(tmp_path, WRONG_SHAPE)
    code, _, err = _run(["apply", str(recipe), str(relu), "-o", str(tmp_path / "out.onnx")])
    assert code == 1 and "Inferred shape and existing shape differ" in err


def test_check_basic_writes_what_only_shape_inference_would_refuse(tmp_path, relu):
    recipe = _recipe(tmp_path, WRONG_SHAPE)
    code, out, err = _run(["apply", str(recipe), str(relu), "-o", str(tmp_path / "out.onnx"), "--check", "basic"])
    assert (code, err) == (0, "")
    assert _timed(out) == (f"{recipe} on {relu}:\n"
                           "  step 1 (set_shapes): changed the type or shape of 1 tensor\n"
                           "      graph output 'y': [2, 3] -> [2, 4]\n"
                           "checked (basic) in S s\n"
                           f"wrote {tmp_path / 'out.onnx'}\n")
    assert onnx.load(tmp_path / "out.onnx").graph.output[0].type.tensor_type.shape.dim[1].dim_value == 4


def test_check_none_writes_and_warns(tmp_path, relu):
    recipe = _recipe(tmp_path, WRONG_SHAPE)
    code, out, err = _run(["apply", str(recipe), str(relu), "-o", str(tmp_path / "out.onnx"), "--check", "none"])
    assert code == 0
    assert out == (f"{recipe} on {relu}:\n"
                   "  step 1 (set_shapes): changed the type or shape of 1 tensor\n"
                   "      graph output 'y': [2, 3] -> [2, 4]\n"
                   f"wrote {tmp_path / 'out.onnx'}\n")
    assert err == ("warning: the model was not checked (check level 'none'): neither the ONNX checker nor "
                   "surgeon's structure checks ran on it\n")  # warnings go to stderr, like errors
    assert (tmp_path / "out.onnx").exists()


def test_check_time_is_in_the_json_report_and_dry_run(tmp_path, relu):
    import json

    recipe = _recipe(tmp_path, "version: 1\nsteps:\n  - pass: cleanup\n")
    code, out, _ = _run(["apply", str(recipe), str(relu), "--dry-run", "--check", "basic",
                         "--report", str(tmp_path / "r.json")])
    assert code == 0
    assert re.search(r"^checked \(basic\) in \d+\.\d\d s$", out, flags=re.M)
    check = json.loads((tmp_path / "r.json").read_text())["check"]
    assert check["level"] == "basic" and check["seconds"] >= 0


def test_a_wrong_check_level_is_a_usage_error(tmp_path, relu):
    code, out, err = _run(["apply", "r.yaml", str(relu), "--check", "fast"])
    assert code == 2
    assert err.startswith("surgeon: error: argument --check: invalid choice: 'fast' "
                          "(choose from 'full', 'basic', 'none')\n")


def test_a_recipe_cannot_set_the_check_level(tmp_path, relu):
    recipe = _recipe(tmp_path, "version: 1\ncheck: none\nsteps:\n  - pass: cleanup\n")
    code, _, err = _run(["apply", str(recipe), str(relu)])
    assert code == 1
    assert err.startswith(f"{recipe}:2:1: error: unknown key 'check' in the recipe\n")


# -- the library's check= -----------------------------------------------------------------------


def test_save_check_levels(tmp_path, relu):
    for level in ("basic", "none"):
        model = surgeon.load(relu)
        model.graph.outputs[0].shape = [2, 4]
        result = surgeon.save(model, tmp_path / f"{level}.onnx", check=level)
        assert result.check == level
        assert result.warnings == ([] if level == "basic" else [
            "the model was not checked (check level 'none'): neither the ONNX checker nor surgeon's structure "
            "checks ran on it"])
    assert surgeon.save(surgeon.load(relu), tmp_path / "full.onnx").check == "full"
    assert surgeon.save(surgeon.load(relu), tmp_path / "old.onnx", check=False).check == "none"
    with pytest.raises(ValueError) as exc:
        surgeon.save(surgeon.load(relu), tmp_path / "x.onnx", check="fast")
    assert str(exc.value) == "check='fast': expected one of 'full', 'basic', 'none'"


@pytest.mark.parametrize("level", ["full", "basic"])
def test_duplicate_node_names_the_edit_made_fail_both_levels(tmp_path, relu, level):
    model = surgeon.load(relu)
    y = model.graph.outputs[0]
    relu_node = model.graph.nodes[0]
    relu_node.name = "act"
    mid = gs.Variable("mid", dtype=y.dtype, shape=y.shape)
    relu_node.outputs = [mid]
    model.graph.nodes.append(gs.Node("Relu", name="act", inputs=[mid], outputs=[y]))
    with pytest.raises(ExportError) as exc:
        surgeon.save(model, tmp_path / "out.onnx", check=level)
    assert str(exc.value) == (
        "error: the edited model fails surgeon's structure checks: node name 'act' is used by more than one "
        "node in graph 'g'\n"
        "  hint: the recipe introduced this (the input model did not have it); check the steps that touched the "
        "names above")
    assert not (tmp_path / "out.onnx").exists()


def test_a_dangling_input_fails_basic_too(tmp_path):
    from util import real_model

    model = surgeon.load(real_model("model.onnx"))
    relu = next(n for n in model.graph.nodes if n.op == "Relu")
    relu.inputs[0] = gs.Variable("nobody_makes_this", dtype="float32")
    with pytest.raises(ExportError) as exc:
        surgeon.save(model, tmp_path / "out.onnx", check="basic")
    assert "nobody_makes_this" in str(exc.value)
    assert list(tmp_path.iterdir()) == []


def test_a_stage_inside_a_drawn_one_is_drawn_at_once():
    """A call into C++ (the checker) holds the GIL and the ticker cannot draw during it: a nested
    stage of a stage already on screen shows at once, so the line names what the run waits for."""
    err = FakeTTY()
    with TerminalProgress(err, delay=0.2, tick=10.0) as display:  # a ticker that never gets to draw
        with display.task("writing out.onnx"):
            time.sleep(0.3)
            with display.task("checking (full)"):
                drawn = err.getvalue()
    assert "writing out.onnx" in drawn and "checking (full)" in drawn
    with TerminalProgress(FakeTTY(), delay=0.2, tick=10.0) as display:
        with display.task("loading"):
            with display.task("quick"):
                assert display.stream.getvalue() == ""


def test_checking_node_by_node_is_a_counted_stage(tmp_path):
    """When the input already failed the checker, every node is checked on its own: a bar over the nodes
    of the output and the input."""
    src = tmp_path / "noshape.onnx"
    onnx.save(onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x) => (float y) {
            h = Relu (x)
            y = Neg (h)
        }"""), src)
    recorder = Recorder()
    surgeon.save(surgeon.load(src), tmp_path / "out.onnx", progress=recorder)
    counted = [e for e in recorder.events if e[1] == "checking each node"]
    assert counted == [("open", "checking each node", 4, "node"), ("advance", "checking each node", 2),
                       ("advance", "checking each node", 2), ("close", "checking each node")]
