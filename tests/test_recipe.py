"""Recipe parsing and validation: every error says what, where (file:line:col) and how to fix it."""

from __future__ import annotations

import hashlib
import json
import sys
import textwrap
from typing import Annotated, Literal

import onnx_graphsurgeon as gs
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from surgeon.errors import Location, RecipeError
from surgeon.io.model import Model
from surgeon.passes.registry import PassRegistry
from surgeon.passes.registry import registry as global_registry
from surgeon.passes.result import PassResult
from surgeon.passes.select import Selector
from surgeon.passes.spec import Max, Min
from surgeon.recipe import Recipe, Step, load_recipe, parse_recipe
from surgeon.recipe.parse import validate_steps
from surgeon.recipe.schema import recipe_json_schema
from surgeon.recipe.yaml import load_yaml

# -- fake passes, declared like real ones ---------------------------------------------


def remove_node(model: Model, select: Selector, *, input: int = 0,
                mode: Literal["bypass", "drop"] = "bypass") -> PassResult | None:
    """Bypass or drop the selected nodes.

    Parameters:
        input: index of the data input that takes the node's place.
        mode: ``bypass`` rewires consumers to the input; ``drop`` detaches.
    """


def cleanup(graph: gs.Graph) -> None:
    """Remove unused nodes and tensors."""


def set_tolerance(model: Model, *, rtol: float, label: str = "", tensors: list[str] | None = None) -> None:
    """Record a tolerance.

    Parameters:
        rtol: relative tolerance.
        label: free text.
        tensors: tensor names.
    """


@pytest.fixture
def reg() -> PassRegistry:
    registry = PassRegistry({})
    registry.register("remove_node", remove_node, source="test")
    registry.register("cleanup", cleanup, source="test")
    registry.register("set_tolerance", set_tolerance, source="test")
    return registry


def parse(text: str, registry: PassRegistry) -> Recipe:
    return parse_recipe(textwrap.dedent(text), "recipe.yaml", registry=registry)


def error_of(text: str, registry: PassRegistry) -> str:
    with pytest.raises(RecipeError) as excinfo:
        parse(text, registry)
    return str(excinfo.value)


# -- a valid recipe ---------------------------------------------------------------------

VALID = """\
# yaml-language-server: $schema=recipe.schema.json
version: 1
description: Strip FooOp placeholders before TensorRT export
verify: {rtol: 1.0e-4, atol: 0, dims: {N: 2}, inputs: inputs.npz, reference: ref.onnx}
steps:
  - id: drop-fooop
    pass: remove_node
    with: {op: FooOp, domain: devtech, mode: drop}
    allow_missing: true
    expect: {removed: 1, ops_absent: [FooOp], shapes: {out: [N, 3, null]}}
  - pass: cleanup
"""


def test_valid_recipe_is_parsed_with_positions(tmp_path, reg):
    path = tmp_path / "recipe.yaml"
    path.write_text(VALID)
    recipe = load_recipe(path, registry=reg)

    assert recipe.version == 1
    assert recipe.description == "Strip FooOp placeholders before TensorRT export"
    assert recipe.plugins == ()
    assert recipe.verify == {"rtol": 1e-4, "atol": 0, "dims": {"N": 2}, "inputs": "inputs.npz",
                             "reference": "ref.onnx"}
    assert recipe.path == str(path)
    assert recipe.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()

    drop, clean = recipe.steps
    assert drop == Step(
        "remove_node",
        {"op": "FooOp", "domain": "devtech", "mode": "drop", "allow_missing": True},
        id="drop-fooop",
        index=0,
        location=Location(str(path), 6, 5),
        param_locations={
            "op": Location(str(path), 8, 16),
            "domain": Location(str(path), 8, 31),
            "mode": Location(str(path), 8, 46),
            "allow_missing": Location(str(path), 9, 20),
        },
        expect={"removed": 1, "ops_absent": ["FooOp"], "shapes": {"out": ["N", 3, None]}},
    )
    assert clean == Step("cleanup", {}, index=1, location=Location(str(path), 11, 5))
    assert clean.label == "step 2 (cleanup)"


def test_parse_recipe_hashes_the_text(reg):
    recipe = parse(VALID, reg)
    assert recipe.path is None
    assert recipe.sha256 == hashlib.sha256(VALID.encode()).hexdigest()


# -- the document as a whole --------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "# nothing but a comment\n"])
def test_empty_recipe(reg, text):
    assert error_of(text, reg) == (
        "recipe.yaml:1:1: error: the recipe is empty\n"
        "  hint: a recipe needs at least 'version: 1' and a 'steps:' list"
    )


@pytest.mark.parametrize("text, got", [("- pass: cleanup\n", "a list"), ("cleanup\n", "the string 'cleanup'"),
                                       ("42\n", "42")])
def test_recipe_that_is_not_a_mapping(reg, text, got):
    assert error_of(text, reg) == (
        f"recipe.yaml:1:1: error: a recipe must be a mapping with 'version' and 'steps', got {got}\n"
        "  hint: start the file with 'version: 1' and put the steps under 'steps:'"
    )


def test_yaml_syntax_error_has_position_and_no_traceback(reg):
    text = """\
    version: 1
    steps:
      - pass: cleanup
       with: {}
    """
    assert error_of(text, reg) == (
        "recipe.yaml:4:4: error: invalid YAML: expected <block end>, but found '<block mapping start>' "
        "(while parsing a block collection at line 3, column 3)\n"
        "  hint: check the indentation, quotes and brackets around this position"
    )


def test_yaml_tab_indentation(reg):
    assert error_of("version: 1\nsteps:\n\t- pass: cleanup\n", reg) == (
        "recipe.yaml:3:1: error: invalid YAML: found character '\\t' that cannot start any token\n"
        "  hint: YAML does not allow tabs for indentation: indent with spaces"
    )


def test_two_yaml_documents(reg):
    assert error_of("version: 1\nsteps: [{pass: cleanup}]\n---\nversion: 1\n", reg) == (
        "recipe.yaml:3:1: error: invalid YAML: expected a single document in the stream "
        "but found another document\n"
        "  hint: a recipe is one YAML document: remove the '---' line"
    )


def test_missing_version(reg):
    assert error_of("steps: [{pass: cleanup}]\n", reg) == (
        "recipe.yaml:1:1: error: the recipe has no 'version'\n"
        "  hint: add 'version: 1' at the top"
    )


def test_unsupported_version(reg):
    assert error_of("version: 2\nsteps: [{pass: cleanup}]\n", reg) == (
        "recipe.yaml:1:10: error: unsupported recipe version 2\n"
        "  hint: this surgeon reads recipe version 1; a newer recipe needs a newer surgeon"
    )


@pytest.mark.parametrize("value, got", [('"1"', "the string '1'"), ("1.0", "1.0"), ("true", "a boolean")])
def test_version_must_be_an_integer(reg, value, got):
    assert error_of(f"version: {value}\nsteps: [{{pass: cleanup}}]\n", reg) == (
        f"recipe.yaml:1:10: error: 'version' must be an integer, got {got}\n"
        "  hint: write 'version: 1'"
    )


def test_missing_steps(reg):
    assert error_of("version: 1\n", reg) == (
        "recipe.yaml:1:1: error: the recipe has no 'steps'\n"
        "  hint: add a 'steps:' list of the passes to run, e.g. '- pass: cleanup'"
    )


def test_empty_steps(reg):
    assert error_of("version: 1\nsteps: []\n", reg) == (
        "recipe.yaml:2:8: error: 'steps' is empty\n"
        "  hint: add at least one step, e.g. '- pass: cleanup'"
    )


def test_steps_must_be_a_list(reg):
    assert error_of("version: 1\nsteps:\n  pass: cleanup\n", reg) == (
        "recipe.yaml:3:3: error: 'steps' must be a list, got a mapping\n"
        "  hint: start each step with '- ', e.g. '- pass: cleanup'"
    )


def test_description_must_be_a_string(reg):
    assert error_of("version: 1\ndescription: [a]\nsteps: [{pass: cleanup}]\n", reg) == (
        "recipe.yaml:2:14: error: 'description': expected a string, got a list"
    )


def test_unknown_top_level_key_suggests_the_right_one(reg):
    text = """\
    version: 1
    setps:
      - pass: cleanup
    """
    assert error_of(text, reg) == (
        "recipe.yaml:1:1: error: the recipe has no 'steps'\n"
        "  hint: add a 'steps:' list of the passes to run, e.g. '- pass: cleanup'\n"
        "recipe.yaml:2:1: error: unknown key 'setps' in the recipe\n"
        "  hint: did you mean 'steps'?"
    )


def test_unknown_top_level_key_without_a_close_match_lists_the_keys(reg):
    assert error_of("version: 1\nsteps: [{pass: cleanup}]\nzzz: 1\n", reg) == (
        "recipe.yaml:3:1: error: unknown key 'zzz' in the recipe\n"
        "  hint: allowed keys: version, description, plugins, vars, verify, custom_ops, steps"
    )


# -- steps ----------------------------------------------------------------------------------


def test_unknown_pass_suggests_the_right_one(reg):
    text = """\
    # yaml-language-server: $schema=recipe.schema.json
    version: 1
    description: Strip FooOp
    steps:
      - pass: cleanup
      - id: drop-fooop
        pass: remove_nodes
    """
    assert error_of(text, reg) == (
        "recipe.yaml:7:11: error: unknown pass 'remove_nodes'\n"
        "  hint: did you mean 'remove_node'?"
    )


def test_unknown_pass_without_a_close_match(reg):
    assert error_of("version: 1\nsteps:\n  - pass: zzz\n", reg) == (
        "recipe.yaml:3:11: error: unknown pass 'zzz'\n"
        "  hint: run 'surgeon passes' to list them"
    )


def test_step_without_pass(reg):
    assert error_of("version: 1\nsteps:\n  - id: x\n    with: {op: A}\n", reg) == (
        "recipe.yaml:3:5: error: step 1 has no 'pass'\n"
        "  hint: add 'pass: NAME'; run 'surgeon passes' to list the passes"
    )


def test_pass_must_be_a_string(reg):
    assert error_of("version: 1\nsteps:\n  - pass: [cleanup]\n", reg) == (
        "recipe.yaml:3:11: error: 'pass' must be the name of a pass, got a list\n"
        "  hint: run 'surgeon passes' to list them"
    )


def test_step_that_is_not_a_mapping(reg):
    assert error_of("version: 1\nsteps:\n  - cleanup\n  - [1]\n", reg) == (
        "recipe.yaml:3:5: error: step 1 must be a mapping with a 'pass' key, got the string 'cleanup'\n"
        "  hint: write '- pass: cleanup'\n"
        "recipe.yaml:4:5: error: step 2 must be a mapping with a 'pass' key, got a list\n"
        "  hint: write each step as a mapping, e.g. '- pass: cleanup'"
    )


def test_unknown_step_keys(reg):
    text = """\
    version: 1
    steps:
      - pass: remove_node
        width: {op: A}
      - pass: set_tolerance
        paramz: {rtol: 0.1}
      - pass: remove_node
        op: FooOp
      - pass: cleanup
        zzz: 1
    """
    assert error_of(text, reg) == (
        "recipe.yaml:3:5: error: no node selector given\n"
        "  hint: add one of: name, names, name_regex, op (optionally with domain, attrs, producer_op, "
        "consumer_op, count)\n"
        "recipe.yaml:4:5: error: unknown key 'width' in step 1\n"
        "  hint: did you mean 'with'?\n"
        "recipe.yaml:5:5: error: pass 'set_tolerance' needs parameter 'rtol' (number)\n"
        "  hint: relative tolerance.\n"
        "recipe.yaml:6:5: error: unknown key 'paramz' in step 2\n"
        "  hint: did you mean 'with'?\n"
        "recipe.yaml:7:5: error: no node selector given\n"
        "  hint: add one of: name, names, name_regex, op (optionally with domain, attrs, producer_op, "
        "consumer_op, count)\n"
        "recipe.yaml:8:5: error: unknown key 'op' in step 3\n"
        "  hint: 'op' is a parameter of 'remove_node': put it under 'with:'\n"
        "recipe.yaml:10:5: error: unknown key 'zzz' in step 4\n"
        "  hint: a step takes: id, pass, with, allow_missing, expect"
    )


def test_duplicate_step_ids(reg):
    text = """\
    version: 1
    steps:
      - id: tidy
        pass: cleanup
      - id: tidy
        pass: cleanup
    """
    assert error_of(text, reg) == (
        "recipe.yaml:5:9: error: duplicate step id 'tidy' (first used on line 3)\n"
        "  hint: give each step its own id"
    )


def test_step_id_must_be_a_string(reg):
    assert error_of("version: 1\nsteps:\n  - id: [a]\n    pass: cleanup\n", reg) == (
        "recipe.yaml:3:9: error: 'id': expected a string, got a list"
    )


# -- parameters -----------------------------------------------------------------------------


def test_with_must_be_a_mapping(reg):
    assert error_of("version: 1\nsteps:\n  - pass: set_tolerance\n    with: [rtol, 1]\n", reg) == (
        "recipe.yaml:4:11: error: 'with' must be a mapping of parameter names to values, got a list\n"
        "  hint: write 'with: {name: value}', or remove 'with' if the pass needs no parameters"
    )


def test_unknown_parameter_points_at_its_name(reg):
    assert error_of("version: 1\nsteps:\n  - pass: remove_node\n    with: {opp: FooOp}\n", reg) == (
        "recipe.yaml:4:12: error: pass 'remove_node' has no parameter 'opp'\n"
        "  hint: did you mean 'op'?"
    )


def test_missing_parameter_points_at_with(reg):
    assert error_of("version: 1\nsteps:\n  - pass: set_tolerance\n    with: {label: x}\n", reg) == (
        "recipe.yaml:4:5: error: pass 'set_tolerance' needs parameter 'rtol' (number)\n"
        "  hint: relative tolerance."
    )


def test_missing_parameter_without_with_points_at_pass(reg):
    assert error_of("version: 1\nsteps:\n  - id: t\n    pass: set_tolerance\n", reg) == (
        "recipe.yaml:4:5: error: pass 'set_tolerance' needs parameter 'rtol' (number)\n"
        "  hint: relative tolerance."
    )


def test_parameter_error_points_at_the_list_item(reg):
    text = """\
    version: 1
    steps:
      - pass: set_tolerance
        with:
          rtol: 0.1
          tensors:
            - a
            - 3
    """
    assert error_of(text, reg) == (
        "recipe.yaml:8:11: error: parameter 'tensors[1]': expected a string, got 3\n"
        "  hint: quote the value to keep it a string (YAML 1.1 reads 010 as 8 and 22:30 as 1350)"
    )


def test_parameter_error_points_at_the_nested_value(reg):
    assert error_of("version: 1\nsteps:\n  - pass: remove_node\n    with: {op: A, attrs: {1: x}}\n", reg) == (
        "recipe.yaml:4:30: error: parameter 'attrs.1': expected string keys, got 1\n"
        "  hint: quote the key"
    )


def test_selector_rules_are_checked(reg):
    assert error_of("version: 1\nsteps:\n  - pass: remove_node\n    with: {name_regex: '('}\n", reg) == (
        "recipe.yaml:4:5: error: name_regex '(' is not a valid regular expression: "
        "missing ), unterminated subpattern at position 0\n"
        "  hint: name_regex uses Python's re syntax; escape '.', '/' is fine as is"
    )


# -- YAML 1.1 traps ----------------------------------------------------------------------------


def test_yaml11_exponent_without_dot_is_a_string(reg):
    assert error_of("version: 1\nsteps:\n  - pass: set_tolerance\n    with: {rtol: 1e-3}\n", reg) == (
        "recipe.yaml:4:18: error: parameter 'rtol': expected a number, got '1e-3'\n"
        "  hint: YAML 1.1 reads 1e-3 as a string, not a number: write the mantissa with a dot and "
        "the exponent with a sign, e.g. 1.0e-3"
    )


def test_yaml11_on_is_a_boolean(reg):
    assert error_of("version: 1\nsteps:\n  - pass: remove_node\n    with: {op: A, mode: on}\n", reg) == (
        "recipe.yaml:4:25: error: parameter 'mode': expected one of 'bypass', 'drop', got true\n"
        "  hint: YAML 1.1 reads yes/no/on/off as booleans: quote the word"
    )


def test_yaml11_leading_zero_is_octal(reg):
    text = "version: 1\nsteps:\n  - pass: set_tolerance\n    with: {rtol: 0.1, label: 010}\n"
    assert error_of(text, reg) == (
        "recipe.yaml:4:30: error: parameter 'label': expected a string, got 8\n"
        "  hint: quote the value to keep it a string (YAML 1.1 reads 010 as 8 and 22:30 as 1350)"
    )


# -- duplicate keys ---------------------------------------------------------------------------


def test_duplicate_top_level_key(reg):
    text = """\
    version: 1
    steps: [{pass: cleanup}]
    version: 1
    """
    assert error_of(text, reg) == (
        "recipe.yaml:3:1: error: duplicate key 'version' (first given on line 1)\n"
        "  hint: remove one of them (YAML loaders silently keep only the last)"
    )


def test_duplicate_parameter(reg):
    text = """\
    version: 1
    steps:
      - pass: remove_node
        with:
          op: FooOp
          mode: drop
          op: BarOp
    """
    assert error_of(text, reg) == (
        "recipe.yaml:7:7: error: duplicate key 'op' (first given on line 5)\n"
        "  hint: remove one of them (YAML loaders silently keep only the last)"
    )


def test_duplicate_key_in_a_nested_mapping(reg):
    text = "version: 1\nsteps:\n  - pass: remove_node\n    with: {op: A, attrs: {axis: 1, axis: 2}}\n"
    assert error_of(text, reg) == (
        "recipe.yaml:4:36: error: duplicate key 'axis' (first given on line 4)\n"
        "  hint: remove one of them (YAML loaders silently keep only the last)"
    )


# -- step-level allow_missing ------------------------------------------------------------------


def test_allow_missing_on_the_step_moves_into_params(reg):
    recipe = parse("version: 1\nsteps:\n  - pass: remove_node\n    allow_missing: true\n    with: {op: A}\n", reg)
    step = recipe.steps[0]
    assert step.params == {"op": "A", "allow_missing": True}
    assert step.param_locations["allow_missing"] == Location("recipe.yaml", 4, 20)


def test_allow_missing_on_a_pass_that_does_not_select(reg):
    assert error_of("version: 1\nsteps:\n  - pass: cleanup\n    allow_missing: true\n", reg) == (
        "recipe.yaml:4:5: error: pass 'cleanup' does not select nodes, so 'allow_missing' does not apply\n"
        "  hint: remove 'allow_missing'"
    )


def test_allow_missing_given_twice(reg):
    text = "version: 1\nsteps:\n  - pass: remove_node\n    with: {op: A, allow_missing: true}\n" \
           "    allow_missing: true\n"
    assert error_of(text, reg) == (
        "recipe.yaml:5:5: error: 'allow_missing' is given twice (also under 'with' on line 4)\n"
        "  hint: keep only one of them"
    )


def test_allow_missing_type_error_points_at_the_step_key(reg):
    text = "version: 1\nsteps:\n  - pass: remove_node\n    with: {op: A}\n    allow_missing: 'yes'\n"
    assert error_of(text, reg) == (
        "recipe.yaml:5:20: error: parameter 'allow_missing': expected a boolean (true or false), got 'yes'"
    )


# -- expect and verify ----------------------------------------------------------------------------


def test_expect_is_validated(reg):
    text = """\
    version: 1
    steps:
      - pass: cleanup
        expect:
          removd: 1
          added: -1
          ops_absent: FooOp
          shapes: {out: [N, 1.5]}
      - pass: cleanup
        expect: 3
    """
    assert error_of(text, reg) == (
        "recipe.yaml:5:7: error: unknown key 'removd' in 'expect'\n"
        "  hint: did you mean 'removed', 'min_removed'?\n"
        "recipe.yaml:6:14: error: expect 'added': must be at least 0, got -1\n"
        "recipe.yaml:7:19: error: expect 'ops_absent': expected list of string, got 'FooOp'\n"
        "recipe.yaml:8:25: error: expect 'shapes.out[1]': expected integer or string, got 1.5\n"
        "  hint: quote the value to keep it a string (YAML 1.1 reads 010 as 8 and 22:30 as 1350)\n"
        "recipe.yaml:10:13: error: 'expect' must be a mapping, got 3\n"
        "  hint: allowed keys: removed, added, min_removed, ops_absent, inputs, outputs, shapes, changed"
    )


def test_verify_is_validated(reg):
    text = """\
    version: 1
    verify:
      rtol: 1e-3
      atol: -0.5
      dims: {N: 0, B: x}
      inputs: [a.npz]
      refrence: ref.onnx
    steps: [{pass: cleanup}]
    """
    assert error_of(text, reg) == (
        "recipe.yaml:3:9: error: verify 'rtol': expected a number, got '1e-3'\n"
        "  hint: YAML 1.1 reads 1e-3 as a string, not a number: write the mantissa with a dot and "
        "the exponent with a sign, e.g. 1.0e-3\n"
        "recipe.yaml:4:9: error: verify 'atol': must be at least 0, got -0.5\n"
        "recipe.yaml:5:13: error: verify 'dims.N': must be at least 1, got 0\n"
        "recipe.yaml:5:19: error: verify 'dims.B': expected an integer, got 'x'\n"
        "recipe.yaml:6:11: error: verify 'inputs': expected a string, got a list\n"
        "recipe.yaml:7:3: error: unknown key 'refrence' in 'verify'\n"
        "  hint: did you mean 'reference'?"
    )


def test_verify_must_be_a_mapping(reg):
    assert error_of("version: 1\nverify:\nsteps: [{pass: cleanup}]\n", reg) == (
        "recipe.yaml:2:8: error: 'verify' must be a mapping, got null\n"
        "  hint: allowed keys: rtol, atol, dims, inputs, reference"
    )


def test_verify_dims_must_be_positive(reg):
    assert error_of("version: 1\nverify: {dims: {N: 0}}\nsteps: [{pass: cleanup}]\n", reg) == (
        "recipe.yaml:2:20: error: verify 'dims.N': must be at least 1, got 0"
    )


# -- all errors at once ----------------------------------------------------------------------------


def test_every_error_is_reported_together_in_file_order(reg):
    text = """\
    version: 3
    steps:
      - pass: remove_nodes
      - pass: set_tolerance
        with: {rtol: 1e-3, rtol: 1}
      - pass: cleanup
        width: {}
    descrption: x
    """
    with pytest.raises(RecipeError) as excinfo:
        parse(text, reg)
    assert [(d.location.line, d.location.column) for d in excinfo.value.diagnostics] == [
        (1, 10), (3, 11), (5, 18), (5, 24), (7, 5), (8, 1)]
    assert str(excinfo.value) == (
        "recipe.yaml:1:10: error: unsupported recipe version 3\n"
        "  hint: this surgeon reads recipe version 1; a newer recipe needs a newer surgeon\n"
        "recipe.yaml:3:11: error: unknown pass 'remove_nodes'\n"
        "  hint: did you mean 'remove_node'?\n"
        "recipe.yaml:5:18: error: parameter 'rtol': expected a number, got '1e-3'\n"
        "  hint: YAML 1.1 reads 1e-3 as a string, not a number: write the mantissa with a dot and "
        "the exponent with a sign, e.g. 1.0e-3\n"
        "recipe.yaml:5:24: error: duplicate key 'rtol' (first given on line 5)\n"
        "  hint: remove one of them (YAML loaders silently keep only the last)\n"
        "recipe.yaml:7:5: error: unknown key 'width' in step 3\n"
        "  hint: did you mean 'with'?\n"
        "recipe.yaml:8:1: error: unknown key 'descrption' in the recipe\n"
        "  hint: did you mean 'description'?"
    )


# -- plugins ------------------------------------------------------------------------------------------

PLUGIN = '''\
import surgeon


@surgeon.register_pass("recipe_test_plugin_pass")
def plugin_pass(model: surgeon.Model, *, label: str = "x") -> None:
    """A pass that a recipe's plugin module registers."""
'''


@pytest.fixture
def plugin_module(tmp_path):
    """A plugin module beside the recipe; forgotten again afterwards."""
    (tmp_path / "recipe_test_plugin.py").write_text(PLUGIN)
    yield "recipe_test_plugin"
    sys.modules.pop("recipe_test_plugin", None)
    global_registry.unregister("recipe_test_plugin_pass")


def test_plugin_beside_the_recipe_registers_its_pass(tmp_path, plugin_module):
    path = tmp_path / "recipe.yaml"
    path.write_text(f"version: 1\nplugins: [{plugin_module}]\nsteps:\n"
                    "  - pass: recipe_test_plugin_pass\n    with: {label: y}\n")
    path_before = list(sys.path)
    recipe = load_recipe(path)
    assert recipe.plugins == (plugin_module,)
    assert recipe.steps[0].pass_name == "recipe_test_plugin_pass"
    assert recipe.steps[0].params == {"label": "y"}
    assert sys.path == path_before


def test_missing_plugin_module(tmp_path, reg):
    path = tmp_path / "recipe.yaml"
    path.write_text("version: 1\nplugins:\n  - no_such_plugin_module_xyz\nsteps: [{pass: cleanup}]\n")
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(path, registry=reg)
    assert str(excinfo.value) == (
        f"{path}:3:5: error: cannot import plugin module 'no_such_plugin_module_xyz': "
        "No module named 'no_such_plugin_module_xyz'\n"
        "  hint: the module must be importable: install it, or run from the folder that holds it "
        "(the recipe's own folder is searched too)"
    )


def test_plugin_file_that_does_not_exist(reg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "recipe.yaml" is in the working directory
    folder = tmp_path
    assert error_of("version: 1\nplugins: [no_such_passes_xyz.py, 3]\nsteps: [{pass: cleanup}]\n", reg) == (
        f"recipe.yaml:2:11: error: plugin file 'no_such_passes_xyz.py' not found: "
        f"{folder / 'no_such_passes_xyz.py'} does not exist\n"
        f"  hint: a plugin path is relative to the recipe's folder ({folder}); write the path of the .py "
        "file from there, or an importable module name\n"
        "recipe.yaml:2:34: error: a plugin must be a module name or a .py file, got 3\n"
        "  hint: write the module's import name, e.g. 'my_passes', or the file's path relative to the recipe, "
        "e.g. 'passes/my_passes.py'"
    )


def test_plugin_file_path_that_names_an_importable_module(reg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path
    assert error_of("version: 1\nplugins: [lib/json.py]\nsteps: [{pass: cleanup}]\n", reg) == (
        f"recipe.yaml:2:11: error: plugin file 'lib/json.py' not found: {folder / 'lib' / 'json.py'} does not exist\n"
        "  hint: write the module's import name: 'json'"
    )


@pytest.fixture
def plugin_file(tmp_path):
    """A plugin file in a subfolder of the recipe's folder; forgotten again afterwards."""
    (tmp_path / "passes").mkdir()
    (tmp_path / "passes" / "recipe_test_file_plugin.py").write_text(
        PLUGIN.replace("recipe_test_plugin_pass", "recipe_test_file_plugin_pass"))
    yield "passes/recipe_test_file_plugin.py"
    sys.modules.pop("recipe_test_file_plugin", None)
    global_registry.unregister("recipe_test_file_plugin_pass")


def test_plugin_given_as_a_py_file_relative_to_the_recipe(tmp_path, plugin_file, monkeypatch):
    monkeypatch.chdir("/")  # relative to the recipe, not to the working directory
    path = tmp_path / "recipe.yaml"
    path.write_text(f"version: 1\nplugins: [{plugin_file}]\nsteps:\n  - pass: recipe_test_file_plugin_pass\n")
    path_before = list(sys.path)
    for _ in range(2):  # a recipe read twice imports its plugin once (no name clash)
        recipe = load_recipe(path)
        assert recipe.plugins == (plugin_file,)
        assert recipe.steps[0].pass_name == "recipe_test_file_plugin_pass"
    assert sys.path == path_before
    assert global_registry.get("recipe_test_file_plugin_pass").source == \
        "recipe_test_file_plugin.plugin_pass"


def test_plugin_module_name_for_a_file_in_a_subfolder_gets_the_path_that_works(tmp_path, plugin_file):
    path = tmp_path / "recipe.yaml"
    path.write_text("version: 1\nplugins: [recipe_test_file_plugin]\nsteps:\n  - pass: cleanup\n")
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(path)
    assert str(excinfo.value) == (
        f"{path}:2:11: error: cannot import plugin module 'recipe_test_file_plugin': "
        "No module named 'recipe_test_file_plugin'\n"
        "  hint: write the file's path relative to the recipe: 'passes/recipe_test_file_plugin.py'"
    )


def test_plugins_must_be_a_list(reg):
    assert error_of("version: 1\nplugins: my_passes\nsteps: [{pass: cleanup}]\n", reg) == (
        "recipe.yaml:2:10: error: 'plugins' must be a list of module names, got the string 'my_passes'\n"
        "  hint: write 'plugins: [my_passes]'"
    )


# -- reading files ------------------------------------------------------------------------------------


def test_missing_recipe_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(path)
    assert str(excinfo.value) == f"error: recipe file not found: {path}\n  hint: check the path"


def test_recipe_path_is_a_directory(tmp_path):
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(tmp_path)
    assert str(excinfo.value) == (
        f"error: cannot read recipe {tmp_path}: Is a directory\n"
        "  hint: the recipe must be a readable file"
    )


def test_recipe_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("version: 1\ndescription: café\n".encode("latin-1"))
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(path)
    assert str(excinfo.value) == (
        f"error: recipe {path} is not UTF-8 text (byte 27 is invalid)\n"
        "  hint: save the recipe as UTF-8"
    )


# -- recipes built in Python ---------------------------------------------------------------------------


@pytest.fixture
def global_test_pass():
    """A selecting pass in the global registry, which Recipe.from_steps validates against."""
    global_registry.register("recipe_test_remove", remove_node, source="test")
    yield "recipe_test_remove"
    global_registry.unregister("recipe_test_remove")


def test_from_steps_builds_a_valid_recipe(global_test_pass):
    recipe = Recipe.from_steps([(global_test_pass, {"op": "FooOp"}),
                                {"pass": global_test_pass, "id": "b", "with": {"name": "n"}}])
    assert [s.params for s in recipe.steps] == [{"op": "FooOp"}, {"name": "n"}]
    assert recipe.steps[1].label == "step 2 'b' (recipe_test_remove)"


def test_from_steps_reports_every_problem_with_step_labels(global_test_pass):
    with pytest.raises(RecipeError) as excinfo:
        Recipe.from_steps([
            (global_test_pass, {"op": "FooOp"}),
            {"pass": global_test_pass, "id": "drop", "with": {"op": 3}, "expect": {"removed": -1}},
            ("recipe_test_remov", {}),
        ])
    assert str(excinfo.value) == (
        "error: step 2 'drop' (recipe_test_remove): parameter 'op': expected a string, got 3\n"
        "  hint: quote the value to keep it a string (YAML 1.1 reads 010 as 8 and 22:30 as 1350)\n"
        "error: step 2 'drop' (recipe_test_remove): expect 'removed': must be at least 0, got -1\n"
        "error: step 3 (recipe_test_remov): unknown pass 'recipe_test_remov'\n"
        "  hint: did you mean 'recipe_test_remove'?"
    )


def test_from_steps_rejects_an_unknown_step_key_like_yaml(reg):
    with pytest.raises(RecipeError) as excinfo:
        Recipe.from_steps([{"pass": "remove_node", "with": {"op": "A"}, "expcet": {"removed": 1}}], registry=reg)
    assert str(excinfo.value) == (
        "error: unknown key 'expcet' in step 1\n"
        "  hint: did you mean 'expect'?"
    )
    text = "version: 1\nsteps:\n  - pass: remove_node\n    with: {op: A}\n    expcet: {removed: 1}\n"
    assert error_of(text, reg) == (
        "recipe.yaml:5:5: error: unknown key 'expcet' in step 1\n"
        "  hint: did you mean 'expect'?"
    )


def test_from_steps_without_pass_is_a_recipe_error_like_yaml(reg):
    with pytest.raises(RecipeError) as excinfo:
        Recipe.from_steps([{"with": {"op": "A"}}], registry=reg)
    assert str(excinfo.value) == (
        "error: step 1 has no 'pass'\n"
        "  hint: add 'pass: NAME'; run 'surgeon passes' to list the passes"
    )
    assert error_of("version: 1\nsteps:\n  - with: {op: A}\n", reg) == (
        "recipe.yaml:3:5: error: step 1 has no 'pass'\n"
        "  hint: add 'pass: NAME'; run 'surgeon passes' to list the passes"
    )


def test_from_steps_suggests_with_for_params_and_accepts_step_allow_missing(reg):
    with pytest.raises(RecipeError) as excinfo:
        Recipe.from_steps([{"pass": "remove_node", "params": {"op": "A"}}], registry=reg)
    assert str(excinfo.value) == (
        "error: unknown key 'params' in step 1\n"
        "  hint: did you mean 'with', 'pass'?\n"
        "error: step 1 (remove_node): no node selector given\n"
        "  hint: add one of: name, names, name_regex, op (optionally with domain, attrs, producer_op, "
        "consumer_op, count)"
    )
    recipe = Recipe.from_steps([{"pass": "remove_node", "with": {"op": "A"}, "allow_missing": True}],
                               registry=reg)
    assert recipe.steps[0].params == {"op": "A", "allow_missing": True}


def test_validate_steps_with_a_registry(reg):
    steps = [Step("set_tolerance", {}, id="t", index=0), Step("cleanup", {}, id="t", index=1)]
    with pytest.raises(RecipeError) as excinfo:
        validate_steps(steps, registry=reg)
    assert str(excinfo.value) == (
        "error: step 1 't' (set_tolerance): pass 'set_tolerance' needs parameter 'rtol' (number)\n"
        "  hint: relative tolerance.\n"
        "error: step 2 't' (cleanup): duplicate step id 't' (also used by step 1)\n"
        "  hint: give each step its own id"
    )


def test_validate_steps_needs_a_step(reg):
    with pytest.raises(RecipeError) as excinfo:
        validate_steps([], registry=reg)
    assert str(excinfo.value) == (
        "error: a recipe needs at least one step\n"
        "  hint: add a step, e.g. ('cleanup', {})"
    )


# -- JSON schema ---------------------------------------------------------------------------------------


def test_schema_is_json_and_covers_every_pass(reg):
    schema = json.loads(json.dumps(recipe_json_schema(reg)))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["version", "steps"]
    assert set(schema["properties"]) == {"version", "description", "plugins", "vars", "verify", "custom_ops",
                                         "steps"}
    custom = schema["properties"]["custom_ops"]["items"]
    assert custom["required"] == ["op", "outputs"]
    assert custom["properties"]["outputs"]["items"]["required"] == ["dtype"]
    *passes, include = schema["properties"]["steps"]["items"]["oneOf"]
    assert include["required"] == ["include"] and set(include["properties"]) == {"include"}
    branches = {b["properties"]["pass"]["const"]: b for b in passes}
    assert sorted(branches) == reg.names()
    for name, branch in branches.items():
        assert branch["properties"]["with"] == json.loads(json.dumps(reg.get(name).json_schema()))
        assert branch["additionalProperties"] is False
    assert "allow_missing" in branches["remove_node"]["properties"]
    assert "allow_missing" not in branches["cleanup"]["properties"]
    assert branches["set_tolerance"]["required"] == ["pass", "with"]
    assert branches["cleanup"]["required"] == ["pass"]
    verify = schema["properties"]["verify"]["properties"]
    assert verify["rtol"] == {"type": "number", "minimum": 0}
    assert verify["dims"] == {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}}


def test_schema_of_the_builtin_passes_is_json():
    schema = json.loads(json.dumps(recipe_json_schema()))
    *branches, _include = schema["properties"]["steps"]["items"]["oneOf"]
    assert [b["properties"]["pass"]["const"] for b in branches] == global_registry.names()


# -- YAML with positions -----------------------------------------------------------------------------


def test_positions_of_keys_values_and_items():
    doc = load_yaml("a:\n  b: [x, {c: 1}]\n", "f.yaml")
    assert doc.value == {"a": {"b": ["x", {"c": 1}]}}
    assert doc.problems == ()
    assert doc.positions.key_location(("a", "b")) == Location("f.yaml", 2, 3)
    assert doc.positions.value_location(("a", "b")) == Location("f.yaml", 2, 6)
    assert doc.positions.value_location(("a", "b", 1, "c")) == Location("f.yaml", 2, 14)
    # A path that goes past what was written stops at the deepest known value.
    assert doc.positions.value_location(("a", "b", 0, "nope")) == Location("f.yaml", 2, 7)


def test_aliases_resolve_to_their_anchor():
    doc = load_yaml("a: &x {b: 1}\nc: *x\n", "f.yaml")
    assert doc.value == {"a": {"b": 1}, "c": {"b": 1}}
    assert doc.positions.value_location(("c", "b")) == Location("f.yaml", 1, 11)


def test_merge_keys_tags_and_recursion_are_rejected():
    doc = load_yaml("a: &x {b: 1}\nc: {<<: *x}\nd: !!set {e}\nf: !!python/none ''\ng: &y [*y]\n", "f.yaml")
    assert [d.render() for d in doc.problems] == [
        "f.yaml:2:5: error: YAML merge keys ('<<') are not supported in recipes\n"
        "  hint: write the keys out, so that the recipe shows every value it sets",
        "f.yaml:3:4: error: unsupported YAML tag 'tag:yaml.org,2002:set'\n"
        "  hint: write a plain mapping: remove the tag",
        "f.yaml:4:4: error: unsupported YAML tag 'tag:yaml.org,2002:python/none'\n"
        "  hint: recipes hold plain values only: remove the tag",
        "f.yaml:5:4: error: recursive alias: this value contains itself\n"
        "  hint: recipes cannot hold self-referencing values; write the value out",
    ]


_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8),
                     st.floats(allow_nan=False), st.sampled_from(["1e-3", "on", "010", "no", "0x1F", "1_000"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=12)


@given(_values)
def test_values_match_safe_load(value):
    for text in (yaml.safe_dump(value), yaml.safe_dump(value, default_flow_style=True)):
        doc = load_yaml(text, "f.yaml")
        assert doc.value == yaml.safe_load(text)
        assert doc.problems == ()


def test_yaml11_scalars_match_safe_load():
    text = "a: 010\nb: 1e-3\nc: on\nd: 0o10\ne: 1_000\nf: 2024-01-01\ng: ~\nh: .inf\n"
    assert load_yaml(text, "f.yaml").value == yaml.safe_load(text)


def test_plugin_that_fails_while_importing_points_at_its_line(tmp_path):
    (tmp_path / "broken_passes_mod.py").write_text("import surgeon\nundefined_name\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nplugins: [broken_passes_mod]\nsteps:\n  - pass: cleanup\n")
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe)
    assert str(exc.value) == (
        f"{recipe}:2:11: error: plugin module 'broken_passes_mod' failed while importing: "
        "NameError: name 'undefined_name' is not defined\n"
        f"  hint: fix {tmp_path / 'broken_passes_mod.py'}:2")


def test_plugin_shadowed_by_an_imported_module(tmp_path):
    (tmp_path / "json.py").write_text("def x():\n    return 1\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nplugins: [json]\nsteps:\n  - pass: cleanup\n")
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe)
    import json

    assert str(exc.value) == (
        f"{recipe}:2:11: error: plugin 'json' beside the recipe is shadowed by the already imported module "
        f"'json' ({json.__file__})\n"
        "  hint: rename json.py to a name no other module has, e.g. json_passes.py")


# -- parameter ranges, checked when the recipe is read ----------------------------------------------


def test_out_of_range_parameter_fails_before_the_model_is_opened(tmp_path, monkeypatch):
    import io

    import surgeon.workflow
    from surgeon.cli import main

    def no_load(*args, **kwargs):
        raise AssertionError("the model was opened")

    monkeypatch.setattr(surgeon.workflow, "load", no_load)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nsteps:\n  - pass: simplify\n    with: {max_iterations: 0, size_threshold: -1}\n")
    out, err = io.StringIO(), io.StringIO()
    code = main(["apply", str(recipe), str(tmp_path / "missing.onnx")], out=out, err=err)
    assert code == 1
    assert err.getvalue() == (
        f"{recipe}:4:28: error: parameter 'max_iterations': must be at least 1, got 0\n"
        "  hint: remove 'max_iterations' to use the default (10)\n"
        f"{recipe}:4:47: error: parameter 'size_threshold': must be at least 0, got -1\n"
        "  hint: set it to null to fold constants of any size\n"
    )
    assert out.getvalue() == ""


def tune(model: Model, *, ratio: Annotated[float, Min(0), Max(1)] = 0.5,
         sizes: dict[str, Annotated[int, Min(1)]] | None = None) -> None:
    """Tune.

    Parameters:
        ratio: a fraction.
        sizes: positive sizes.
    """


def test_declared_ranges(reg):
    reg.register("tune", tune, source="test")
    assert error_of("version: 1\nsteps:\n  - pass: tune\n    with: {ratio: .nan, sizes: {a: 2, b: 0}}\n", reg) == (
        "recipe.yaml:4:19: error: parameter 'ratio': must be between 0 and 1, got nan\n"
        "  hint: remove 'ratio' to use the default (0.5)\n"
        "recipe.yaml:4:42: error: parameter 'sizes.b': must be at least 1, got 0"
    )
    assert reg.get("tune").explain().splitlines()[2:6] == [
        "Parameters:",
        "  ratio (number in [0, 1], default 0.5)",
        "      a fraction.",
        "  sizes (mapping of name to integer >= 1, default null)",
    ]
    schema = recipe_json_schema(reg)
    branch = next(b for b in schema["properties"]["steps"]["items"]["oneOf"]
                  if b["properties"]["pass"]["const"] == "tune")
    props = branch["properties"]["with"]["properties"]
    assert props["ratio"] == {"type": "number", "minimum": 0, "maximum": 1, "description": "a fraction.",
                              "default": 0.5}
    assert props["sizes"]["anyOf"][0] == {"type": "object",
                                          "additionalProperties": {"type": "integer", "minimum": 1}}


def test_builtin_ranges_in_schema_and_explain():
    import io

    from surgeon.cli import main

    out = io.StringIO()
    assert main(["schema"], out=out) == 0
    branches = {b["properties"]["pass"]["const"]: b for b in json.loads(out.getvalue())
                ["properties"]["steps"]["items"]["oneOf"] if "pass" in b["properties"]}
    simplify = branches["simplify"]["properties"]["with"]["properties"]
    assert simplify["max_iterations"]["minimum"] == 1
    assert simplify["size_threshold"]["anyOf"][0] == {"type": "integer", "minimum": 0}
    nms = branches["insert_nms"]["properties"]["with"]["properties"]
    assert (nms["iou_threshold"]["minimum"], nms["iou_threshold"]["maximum"]) == (0, 1)
    out = io.StringIO()
    assert main(["explain", "simplify"], out=out) == 0
    assert "  max_iterations (integer >= 1, default 10)\n" in out.getvalue()
    assert "  size_threshold (integer >= 0, default null)\n" in out.getvalue()


def test_the_recipe_layer_imports_only_errors_and_itself():
    import ast
    from pathlib import Path

    import surgeon.recipe

    for path in Path(surgeon.recipe.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):  # function-level (lazy) imports included
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for module in modules:
                if module == "surgeon" or module.startswith("surgeon."):
                    assert module == "surgeon.errors" or module.startswith("surgeon.recipe"), (path.name, module)


def test_quoted_numbers_and_booleans_get_remove_the_quotes():
    text = ("version: 1\nsteps:\n"
            "  - pass: insert_nms\n"
            "    with: {layout: yolov8, score_threshold: \"0.3\", max_detections: '100'}\n"
            "  - pass: fold_constants\n"
            "    with: {fold_shapes: \"true\"}\n")
    with pytest.raises(RecipeError) as excinfo:
        parse_recipe(text, filename="recipe.yaml")
    assert str(excinfo.value) == (
        "recipe.yaml:4:45: error: parameter 'score_threshold': expected a number, got '0.3'\n"
        "  hint: remove the quotes: a quoted value is a string in YAML\n"
        "recipe.yaml:4:68: error: parameter 'max_detections': expected an integer, got '100'\n"
        "  hint: remove the quotes: a quoted value is a string in YAML\n"
        "recipe.yaml:6:25: error: parameter 'fold_shapes': expected a boolean (true or false), got 'true'\n"
        "  hint: remove the quotes: a quoted value is a string in YAML")
