"""Validation of recipe steps against the pass registry, shared by YAML and Python recipes.

:func:`check_step` finds every problem of one step and says where it is as a
path inside the step's mapping (``("with", "names", 2)``). The YAML parser
turns those paths into file positions; :func:`validate_steps`, used for
recipes built in Python, names the step instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from surgeon.errors import Diagnostic, PassError, RecipeError, suggestion_hint
from surgeon.passes.registry import PassRegistry
from surgeon.passes.registry import registry as global_registry
from surgeon.passes.spec import check_type
from surgeon.recipe.model import Step


@dataclass(frozen=True)
class Problem:
    """One problem of a step, located by its path inside the step's mapping."""

    path: tuple[Any, ...]
    message: str
    hint: str | None = None
    at_key: bool = False
    """Point at the key of ``path`` (a wrong or missing name) rather than at its value."""


@dataclass(frozen=True)
class Field:
    """One allowed key of a fixed mapping (``expect:``, ``verify:``)."""

    annotation: Any
    minimum: int | None = None
    """Smallest allowed number; for a mapping, applies to each of its values."""


EXPECT_FIELDS: dict[str, Field] = {
    "removed": Field(int, minimum=0),
    "added": Field(int, minimum=0),
    "min_removed": Field(int, minimum=0),
    "ops_absent": Field(list[str]),
    "inputs": Field(list[str]),
    "outputs": Field(list[str]),
    "shapes": Field(dict[str, list[int | str | None]]),
    "changed": Field(bool),
}


def kind_of(value: Any) -> str:
    """What a YAML value is, for 'expected X, got Y' messages about structure."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    return repr(value)


def split_param_path(path: str) -> tuple[Any, ...]:
    """``"names[2]"`` -> ``("names", 2)``, ``"attrs.axis"`` -> ``("attrs", "axis")`` (PassSpec.validate paths)."""
    parts: list[Any] = []
    for index, key in re.findall(r"\[(\d+)\]|\.?([^.\[\]]+)", path):
        parts.append(int(index) if index else key)
    return tuple(parts)


def check_fields(value: Any, fields: dict[str, Field], name: str) -> list[Problem]:
    """Problems of a fixed mapping such as ``expect:``; paths start with ``name``."""
    if not isinstance(value, dict):
        return [Problem((name,), f"'{name}' must be a mapping, got {kind_of(value)}",
                        "allowed keys: " + ", ".join(fields))]
    problems = []
    for key, item in value.items():
        spec = fields.get(key)
        if spec is None:
            problems.append(Problem((name, key), f"unknown key '{key}' in '{name}'",
                                    suggestion_hint(str(key), fields) or "allowed keys: " + ", ".join(fields),
                                    at_key=True))
            continue
        type_problems = check_type(item, spec.annotation)
        for sub, message, hint in type_problems:
            problems.append(Problem((name, key) + split_param_path(sub), f"{name} '{key}{sub}': {message}", hint))
        if spec.minimum is not None and not type_problems:
            numbers = item.items() if isinstance(item, dict) else [("", item)]
            for sub, number in numbers:
                if number < spec.minimum:
                    where = f"{key}.{sub}" if sub else key
                    problems.append(Problem((name, key, sub) if sub else (name, key),
                                            f"{name} '{where}': must be at least {spec.minimum}, got {number}"))
    return problems


def check_step(pass_name: Any, params: dict[str, Any], expect: Any, registry: PassRegistry) -> list[Problem]:
    """Every problem of one step: its pass, its parameters and its ``expect``.

    Paths are inside the step's mapping: ``("pass",)``, ``("with", "op")``,
    ``("expect", "removed")``. ``("with",)`` with ``at_key`` means the
    parameters as a whole (a missing required one, no selector criteria).
    """
    problems: list[Problem] = []
    if expect is not None:
        problems += check_fields(expect, EXPECT_FIELDS, "expect")
    if not isinstance(pass_name, str):
        problems.insert(0, Problem(("pass",), f"'pass' must be the name of a pass, got {kind_of(pass_name)}",
                                   "run 'surgeon passes' to list them"))
        return problems
    try:
        spec = registry.get(pass_name)
    except PassError as exc:  # unknown pass: the registry's message carries the did-you-mean hint
        return [Problem(("pass",), exc.message, exc.hint), *problems]
    param_problems = []
    for path, message, hint in spec.validate(params):
        parts = split_param_path(path)
        unknown_name = len(parts) == 1 and parts[0] not in spec.params
        param_problems.append(Problem(("with", *parts), message, hint, at_key=not parts or unknown_name))
    return param_problems + problems


def duplicate_ids(ids: Sequence[Any]) -> list[tuple[int, int]]:
    """``(index, index of the first use)`` for each step id used a second time."""
    first: dict[Any, int] = {}
    duplicates = []
    for index, step_id in enumerate(ids):
        if step_id is None:
            continue
        if step_id in first:
            duplicates.append((index, first[step_id]))
        else:
            first[step_id] = index
    return duplicates


def validate_steps(steps: Sequence[Step], registry: PassRegistry | None = None) -> None:
    """Validate steps built in Python; raises one :class:`RecipeError` listing every problem."""
    registry = global_registry if registry is None else registry
    diagnostics = []
    if not steps:
        diagnostics.append(Diagnostic("a recipe needs at least one step", hint="add a step, e.g. ('cleanup', {})"))
    for step in steps:
        problems = check_step(step.pass_name, step.params, step.expect, registry)
        diagnostics += [Diagnostic(f"{step.label}: {p.message}", hint=p.hint) for p in problems]
    for index, first in duplicate_ids([s.id for s in steps]):
        diagnostics.append(Diagnostic(f"{steps[index].label}: duplicate step id '{steps[index].id}' "
                                      f"(also used by step {first + 1})", hint="give each step its own id"))
    if diagnostics:
        raise RecipeError(diagnostics=diagnostics)
