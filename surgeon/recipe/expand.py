"""Recipe reuse: ``vars:`` with ``${name}`` references, ``--set`` overrides, and ``include:`` steps.

Runs between reading the YAML and checking the steps, so everything after it
(parameter types and ranges, the schema, the runner) sees plain values::

    version: 1
    vars:
      score: 0.25              # a default; `--set score=0.4` overrides it
      input: images
    steps:
      - include: common/strip_plugins.yaml   # its steps are spliced here
      - pass: insert_nms
        with:
          score_threshold: ${score}         # the whole value: the variable's value, typed
          output: "${input}_head"           # inside text: text

Rules:

1. A value that is exactly ``${name}`` becomes the variable's value with its
   type (a number stays a number); ``${name}`` inside a longer string is
   replaced by the value's text. References are resolved in steps (``with``,
   ``allow_missing``, ``expect``), in ``verify:`` and in ``description:``.
2. A ``--set name=value`` value is text on the command line; it takes the
   type of the parameter it feeds: text for a text parameter, otherwise read
   as YAML (``0.4`` is a number, ``true`` a boolean, ``[1, 2]`` a list).
3. A reference to an undeclared variable, a declared variable that nothing
   uses, and a ``--set`` of an undeclared variable are errors, with the
   recipe's file and line.
4. ``- include: PATH`` (relative to the file that includes it) splices that
   recipe's steps in its place; its ``vars:`` join the including recipe's
   (whose values win). An include cycle is an error naming the chain. Errors in
   an included file point into that file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from surgeon.errors import Diagnostic, Location, RecipeError, did_you_mean
from surgeon.recipe.catalogue import PassCatalogue
from surgeon.recipe.types import check_type
from surgeon.recipe.yaml import Positions, load_yaml

REFERENCE = re.compile(r"\$\{([^}]*)\}")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")
INCLUDED_KEYS = ("version", "description", "vars", "steps")
"""What an included recipe may hold: its plugins and verify: belong to the recipe that runs."""


@dataclass
class Expanded:
    """The recipe's value and positions after expansion, and what went into it."""

    value: Any
    positions: Positions
    diagnostics: list[Diagnostic] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)
    """Each variable's final value (defaults, then ``--set``)."""
    included: list[tuple[str, str]] = field(default_factory=list)
    """(path, text) of every included file, in order, for provenance."""


@dataclass
class _Var:
    value: Any
    location: Location | None
    from_command_line: bool = False
    used: bool = False


def expand(value: Any, positions: Positions, filename: str, catalogue: PassCatalogue,
           overrides: dict[str, str] | None = None) -> Expanded:
    """Resolve ``include:`` steps and ``${var}`` references in a parsed recipe (see the module doc)."""
    out = Expanded(value, positions)
    if not isinstance(value, dict):
        if overrides:
            out.diagnostics.append(_unknown_set(next(iter(overrides)), {}, positions.location))
        return out
    variables: dict[str, _Var] = {}
    _declare(value, positions, variables, out.diagnostics, own=True)
    if isinstance(value.get("steps"), list):
        chain = [str(Path(filename).resolve())]
        steps, steps_pos = _splice(value["steps"], positions.child("steps"), Path(filename).parent, chain,
                                   variables, out)
        value = {**value, "steps": steps}
        positions.children["steps"] = steps_pos
    for name, text in (overrides or {}).items():
        if name not in variables:
            out.diagnostics.append(_unknown_set(name, variables, positions.key_location(["vars"])))
            continue
        variables[name].value, variables[name].from_command_line = text, True
    resolved = dict(value)
    if isinstance(value.get("steps"), list):
        resolved["steps"] = [_resolve_step(step, ("steps", i), positions, variables, catalogue, out.diagnostics)
                             for i, step in enumerate(value["steps"])]
    for key in ("verify", "description"):
        if key in value:
            resolved[key] = _resolve(value[key], (key,), positions, variables, None, out.diagnostics)
    for name, var in variables.items():
        if not var.used:
            out.diagnostics.append(Diagnostic(
                f"variable '{name}' is never used", var.location,
                f"use it as ${{{name}}} in a step's parameters, or remove it from 'vars:'"))
    resolved.pop("vars", None)
    out.value = resolved
    out.variables = {name: var.value for name, var in variables.items()}
    return out


def _declare(value: dict, positions: Positions | None, variables: dict[str, _Var], problems: list[Diagnostic],
             own: bool) -> None:
    """Collect a recipe's ``vars:``; the including recipe's (``own``) values win over included ones."""
    if "vars" not in value:
        return
    declared = value["vars"]
    where = positions.value_location(["vars"]) if positions else None
    if not isinstance(declared, dict):
        problems.append(Diagnostic("'vars' must be a mapping of names to default values", where,
                                   "write 'vars: {score: 0.25}'"))
        return
    for name, default in declared.items():
        at = positions.key_location(["vars", name]) if positions else None
        if not isinstance(name, str) or not NAME.match(name):
            problems.append(Diagnostic(f"variable name {name!r} is not a name", at,
                                       "use letters, digits and '_', starting with a letter or '_'"))
            continue
        if isinstance(default, str) and REFERENCE.search(default):
            problems.append(Diagnostic(f"variable '{name}': a default cannot refer to another variable", at,
                                       "write the value itself"))
            continue
        if own or name not in variables:
            variables[name] = _Var(default, at)


def _splice(steps: list, positions: Positions | None, base: Path, chain: list[str], variables: dict[str, _Var],
            out: Expanded) -> tuple[list, Positions]:
    """``steps`` with every ``include:`` item replaced by the included recipe's steps."""
    spliced: list = []
    new_pos = Positions(positions.location if positions else Location())
    for i, item in enumerate(steps):
        item_pos = positions.child(i) if positions else None
        if not (isinstance(item, dict) and "include" in item):
            new_pos.children[len(spliced)] = item_pos or Positions(Location())
            spliced.append(item)
            continue
        where = item_pos.location if item_pos else None
        extra = sorted(str(k) for k in item if k != "include")
        if extra:
            out.diagnostics.append(Diagnostic(
                f"an include step takes only 'include', not {', '.join(repr(k) for k in extra)}", where,
                "set the included recipe's variables in 'vars:' of this recipe or with --set"))
        target = item["include"]
        if not isinstance(target, str):
            out.diagnostics.append(Diagnostic("'include' must be a path to a recipe file", where,
                                              "write '- include: common.yaml' (relative to this file)"))
            continue
        path = (base / target).resolve()
        if str(path) in chain:
            names = " -> ".join(Path(p).name for p in [*chain, str(path)])
            out.diagnostics.append(Diagnostic(f"include cycle: {names}", where,
                                              "remove one of these includes"))
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = "not found" if isinstance(exc, FileNotFoundError) else f"unreadable ({exc})"
            out.diagnostics.append(Diagnostic(f"included recipe {target} {reason}", where,
                                              f"the path is relative to the including file's folder ({base})"))
            continue
        try:
            doc = load_yaml(text, str(path))
        except RecipeError as exc:
            out.diagnostics += exc.diagnostics
            continue
        out.diagnostics += doc.problems
        out.included.append((str(path), text))
        inner = doc.value
        if not isinstance(inner, dict) or not isinstance(inner.get("steps"), list):
            out.diagnostics.append(Diagnostic(f"included file {target} is not a recipe with a 'steps:' list",
                                              doc.positions.location, "an included file is a recipe"))
            continue
        for key in inner:
            if key not in INCLUDED_KEYS:
                out.diagnostics.append(Diagnostic(
                    f"an included recipe cannot set '{key}'", doc.positions.key_location([key]),
                    f"move '{key}' to the recipe that includes it (included recipes hold only "
                    f"{', '.join(INCLUDED_KEYS)})"))
        _declare(inner, doc.positions, variables, out.diagnostics, own=False)
        inner_steps, inner_pos = _splice(inner["steps"], doc.positions.child("steps"), path.parent,
                                         [*chain, str(path)], variables, out)
        for j, step in enumerate(inner_steps):
            new_pos.children[len(spliced)] = inner_pos.children[j]
            spliced.append(step)
    return spliced, new_pos


def _resolve_step(step: Any, path: tuple, positions: Positions, variables: dict[str, _Var],
                  catalogue: PassCatalogue, problems: list[Diagnostic]) -> Any:
    if not isinstance(step, dict):
        return step
    spec = catalogue.lookup(step["pass"]) if isinstance(step.get("pass"), str) else None
    resolved = dict(step)
    if isinstance(step.get("with"), dict):
        params = {}
        for name, value in step["with"].items():
            param = spec.params.get(name) if spec is not None else None
            annotation = getattr(param, "annotation", None)
            params[name] = _resolve(value, (*path, "with", name), positions, variables, annotation, problems)
        resolved["with"] = params
    for key in ("allow_missing", "expect"):
        if key in step:
            resolved[key] = _resolve(step[key], (*path, key), positions, variables, bool if key == "allow_missing"
                                     else None, problems)
    return resolved


def _resolve(value: Any, path: tuple, positions: Positions, variables: dict[str, _Var], annotation: Any,
             problems: list[Diagnostic]) -> Any:
    if isinstance(value, dict):
        return {k: _resolve(v, (*path, k), positions, variables, None, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, (*path, i), positions, variables, None, problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    where = positions.value_location(list(path))
    whole = REFERENCE.fullmatch(value)
    if whole:
        var = _lookup(whole.group(1), variables, where, problems)
        if var is None:
            return value
        return _typed(var, annotation) if var.from_command_line else var.value

    def text_of(match: re.Match) -> str:
        var = _lookup(match.group(1), variables, where, problems)
        return match.group(0) if var is None else str(var.value)

    return REFERENCE.sub(text_of, value)


def _lookup(name: str, variables: dict[str, _Var], where: Location, problems: list[Diagnostic]) -> _Var | None:
    var = variables.get(name)
    if var is not None:
        var.used = True
        return var
    hint = _variables_hint(name, variables, f"declare it at the top of the recipe: 'vars: {{{name}: <default>}}'")
    problems.append(Diagnostic(f"unknown variable '{name}' in '${{{name}}}'", where, hint))
    return None


def _variables_hint(name: str, variables: dict[str, Any], when_none: str) -> str:
    """Did you mean (a close name), else the recipe's variables, else ``when_none``."""
    close = did_you_mean(name, variables)
    if close:
        return f"did you mean {', '.join(repr(c) for c in close)}?"
    if variables:
        return f"the recipe's variables: {', '.join(variables)}"
    return when_none


def _typed(var: _Var, annotation: Any) -> Any:
    """A ``--set`` value (text) typed by the parameter it feeds (rule 2)."""
    text = var.value
    if annotation is not None and not check_type(text, annotation):
        return text  # the parameter takes text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # the parameter's check reports the mismatch with the value as given


def _unknown_set(name: str, variables: dict[str, Any], where: Location) -> Diagnostic:
    hint = _variables_hint(name, variables, "the recipe has no 'vars:'; declare the variable there with a default")
    return Diagnostic(f"--set {name}: the recipe declares no variable '{name}'", where, hint)
