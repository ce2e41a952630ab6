"""Recipe parameters and reuse: vars: with ${name}, --set, include: (surgeon/recipe/expand.py)."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest

import surgeon
from surgeon.cli import main
from surgeon.errors import RecipeError
from surgeon.recipe import load_recipe
from tests.util import assert_same_outputs, random_inputs, real_model

ROOT = Path(__file__).resolve().parents[1]


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def _error(path: Path, **variables: str) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, variables=variables or None)
    return str(info.value)


NMS = """\
    version: 1
    description: NMS at ${score}
    vars:
      score: 0.25
      head: output0
    steps:
      - pass: insert_nms
        with:
          layout: yolov8
          output: ${head}
          score_threshold: ${score}
          max_detections: 100
"""


def test_defaults_keep_their_types(tmp_path: Path) -> None:
    recipe = load_recipe(_write(tmp_path, "nms.yaml", NMS))
    assert recipe.steps[0].params == {"layout": "yolov8", "output": "output0", "score_threshold": 0.25,
                                      "max_detections": 100}
    assert recipe.variables == {"score": 0.25, "head": "output0"}
    assert recipe.description == "NMS at 0.25"


def test_set_values_are_typed_by_the_parameter_they_feed(tmp_path: Path) -> None:
    path = _write(tmp_path, "nms.yaml", NMS)
    recipe = load_recipe(path, variables={"score": "0.4", "head": "007"})
    assert recipe.steps[0].params["score_threshold"] == 0.4  # a number parameter: read as YAML
    assert recipe.steps[0].params["output"] == "007"  # a text parameter: the text as given
    assert recipe.variables == {"score": "0.4", "head": "007"}
    assert recipe.sha256 != load_recipe(path).sha256  # provenance tells the runs apart


def test_text_around_a_reference(tmp_path: Path) -> None:
    path = _write(tmp_path, "r.yaml", """\
        version: 1
        vars: {prefix: /backbone}
        steps:
          - pass: remove_node
            with: {name: "${prefix}/Relu_1"}
    """)
    assert load_recipe(path).steps[0].params == {"name": "/backbone/Relu_1"}


def test_variable_errors_point_at_the_recipe(tmp_path: Path) -> None:
    path = _write(tmp_path, "r.yaml", """\
        version: 1
        vars:
          score: 0.25
          spare: 1
        steps:
          - pass: insert_nms
            with: {layout: yolov8, score_threshold: "${scor}", iou_threshold: "${iou}"}
    """)
    assert _error(path, thresh="0.3") == (
        f"{path}:2:1: error: --set thresh: the recipe declares no variable 'thresh'\n"
        "  hint: the recipe's variables: score, spare\n"
        f"{path}:3:3: error: variable 'score' is never used\n"
        "  hint: use it as ${score} in a step's parameters, or remove it from 'vars:'\n"
        f"{path}:4:3: error: variable 'spare' is never used\n"
        "  hint: use it as ${spare} in a step's parameters, or remove it from 'vars:'\n"
        f"{path}:7:45: error: unknown variable 'scor' in '${{scor}}'\n"
        "  hint: did you mean 'score'?\n"
        f"{path}:7:71: error: unknown variable 'iou' in '${{iou}}'\n"
        "  hint: the recipe's variables: score, spare"
    )


def test_a_set_value_of_the_wrong_type(tmp_path: Path) -> None:
    path = _write(tmp_path, "nms.yaml", NMS)
    assert _error(path, score="high") == (
        f"{path}:11:24: error: parameter 'score_threshold': expected a number, got 'high'")


def test_bad_vars(tmp_path: Path) -> None:
    path = _write(tmp_path, "r.yaml", """\
        version: 1
        vars: {2x: 1, a: "${b}"}
        steps:
          - pass: cleanup
    """)
    assert _error(path) == (
        f"{path}:2:8: error: variable name '2x' is not a name\n"
        "  hint: use letters, digits and '_', starting with a letter or '_'\n"
        f"{path}:2:15: error: variable 'a': a default cannot refer to another variable\n"
        "  hint: write the value itself"
    )


def test_include_splices_steps_and_shares_vars(tmp_path: Path) -> None:
    _write(tmp_path, "common/strip.yaml", """\
        version: 1
        vars: {placeholder: FooOp}
        steps:
          - pass: remove_node
            with: {op: "${placeholder}", domain: devtech}
          - include: tidy.yaml
    """)
    _write(tmp_path, "common/tidy.yaml", "version: 1\nsteps:\n  - pass: cleanup\n")
    main_recipe = _write(tmp_path, "deploy.yaml", """\
        version: 1
        steps:
          - include: common/strip.yaml
          - pass: set_batch
            with: {size: 1}
    """)
    recipe = load_recipe(main_recipe)
    assert [(s.index, s.pass_name) for s in recipe.steps] == [(0, "remove_node"), (1, "cleanup"), (2, "set_batch")]
    assert recipe.steps[0].params == {"op": "FooOp", "domain": "devtech"}
    assert recipe.steps[0].location is not None and recipe.steps[0].location.file.endswith("common/strip.yaml")
    assert recipe.included == (str(tmp_path / "common/strip.yaml"), str(tmp_path / "common/tidy.yaml"))

    # The including recipe's values win over the included one's defaults.
    model = surgeon.load(ROOT / "fixtures" / "models" / "model_foo.onnx")
    surgeon.apply(main_recipe, model)
    assert "FooOp" not in {n.op for n in model.graph.nodes}


def test_include_errors_point_into_the_included_file(tmp_path: Path) -> None:
    inner = _write(tmp_path, "inner.yaml", """\
        version: 1
        plugins: [x]
        steps:
          - pass: remove_nod
    """)
    outer = _write(tmp_path, "outer.yaml", """\
        version: 1
        steps:
          - include: inner.yaml
          - include: missing.yaml
          - {include: inner.yaml, with: {a: 1}}
    """)
    assert _error(outer) == (
        f"{outer}:4:5: error: included recipe missing.yaml not found\n"
        f"  hint: the path is relative to the including file's folder ({tmp_path})\n"
        f"{outer}:5:5: error: an include step takes only 'include', not 'with'\n"
        "  hint: set the included recipe's variables in 'vars:' of this recipe or with --set\n"
        f"{inner}:2:1: error: an included recipe cannot set 'plugins'\n"
        "  hint: move 'plugins' to the recipe that includes it (included recipes hold only version, description, "
        "vars, steps)\n"
        f"{inner}:4:11: error: unknown pass 'remove_nod'\n"
        "  hint: did you mean 'remove_node', 'rename_io'?"
    )


def test_include_cycle_names_the_chain(tmp_path: Path) -> None:
    a = _write(tmp_path, "a.yaml", "version: 1\nsteps:\n  - include: b.yaml\n")
    _write(tmp_path, "b.yaml", "version: 1\nsteps:\n  - pass: cleanup\n  - include: a.yaml\n")
    assert _error(a) == (f"{tmp_path / 'b.yaml'}:4:5: error: include cycle: a.yaml -> b.yaml -> a.yaml\n"
                         "  hint: remove one of these includes")


def test_ready_recipe_serves_several_models_from_the_command_line(tmp_path: Path) -> None:
    source = real_model("tiny_yolo_dynamo.onnx")
    out = tmp_path / "b4.onnx"
    stdout, stderr = io.StringIO(), io.StringIO()
    code = main(["apply", str(ROOT / "recipes" / "fix_batch.yaml"), str(source), "-o", str(out), "--set", "batch=4"],
                out=stdout, err=stderr)
    assert code == 0, stderr.getvalue()
    assert "first dimension set to 4 on 'images', 'boxes', 'scores'" in stdout.getvalue()
    model = surgeon.load(out)
    assert [int(d) for d in model.graph.inputs[0].shape] == [4, 3, 320, 320]
    assert_same_outputs(source, out, random_inputs(source, dims={"N": 4}))

    code = main(["apply", str(ROOT / "recipes" / "fix_batch.yaml"), str(source), "-o", str(out), "--set", "size=4"],
                out=stdout, err=(err := io.StringIO()))
    assert code == 1
    assert err.getvalue() == (f"{ROOT / 'recipes' / 'fix_batch.yaml'}:18:1: error: --set size: the recipe declares "
                              "no variable 'size'\n  hint: the recipe's variables: batch\n")
    code = main(["apply", "r.yaml", "m.onnx", "--set", "novalue"], out=stdout, err=(err := io.StringIO()))
    assert code == 2 and err.getvalue().startswith("surgeon: error: --set 'novalue': expected NAME=VALUE")
