"""Validation of one recipe step against a pass catalogue, shared by YAML and Python recipes.

:func:`check_step` finds every problem of one step and says where it is as a
path inside the step's mapping (``("with", "names", 2)``). The parser
(:mod:`surgeon.recipe.parse`) turns those paths into file positions, or, for
a recipe built in Python, names the step instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from surgeon.recipe.catalogue import PassCatalogue, unknown_pass
from surgeon.recipe.fields import EXPECT_FIELDS, Key, key_list, key_suggestion
from surgeon.recipe.types import check_type
from surgeon.recipe.yaml import TextPos


@dataclass(frozen=True)
class Problem:
    """One problem of a step, located by its path inside the step's mapping."""

    path: tuple[Any, ...]
    message: str
    hint: str | None = None
    at_key: bool = False
    """Point at the key of ``path`` (a wrong or missing name) rather than at its value."""


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
    """``"names[2]"`` -> ``("names", 2)``, ``"attrs.axis"`` -> ``("attrs", "axis")``,
    ``"pattern@3:7"`` -> ``("pattern", TextPos(3, 7))`` (PassSpec.validate paths)."""
    parts: list[Any] = []
    for index, line, column, key in re.findall(r"\[(\d+)\]|@(\d+)(?::(\d+))?|\.?([^.\[\]@]+)", path):
        if line:
            parts.append(TextPos(int(line), int(column) if column else None))
        else:
            parts.append(int(index) if index else key)
    return tuple(parts)


def check_fields(value: Any, fields: dict[str, Key], name: str) -> list[Problem]:
    """Problems of a fixed mapping such as ``expect:``; paths start with ``name``."""
    if not isinstance(value, dict):
        return [Problem((name,), f"'{name}' must be a mapping, got {kind_of(value)}",
                        "allowed keys: " + key_list(fields))]
    problems = []
    for key, item in value.items():
        spec = fields.get(key)
        if spec is None:
            problems.append(Problem((name, key), f"unknown key '{key}' in '{name}'",
                                    key_suggestion(key, fields) or "allowed keys: " + key_list(fields),
                                    at_key=True))
            continue
        for sub, message, hint in check_type(item, spec.annotation):
            problems.append(Problem((name, key) + split_param_path(sub), f"{name} '{key}{sub}': {message}", hint))
    return problems


def check_step(pass_name: Any, params: dict[str, Any], expect: Any, catalogue: PassCatalogue) -> list[Problem]:
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
    spec = catalogue.lookup(pass_name)
    if spec is None:
        return [Problem(("pass",), *unknown_pass(pass_name, catalogue)), *problems]
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
