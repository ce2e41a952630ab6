"""Types of recipe values: the checker, their names in messages, their JSON schema, and ranges.

A recipe value is plain YAML (strings, numbers, booleans, null, lists,
mappings), checked against a Python annotation: ``int``, ``float``, ``str``,
``bool``, ``None``, ``Literal[...]``, unions, ``list[T]`` and
``dict[str, T]``. A number may carry a range with :class:`Min` and
:class:`Max`::

    max_iterations: Annotated[int, Min(1)] = 10
    iou_threshold: Annotated[float, Min(0), Max(1)] = 0.45

A value that must also make sense as text (an ONNX graph written in the
recipe) carries a :class:`Check`, run after the type check::

    pattern: Annotated[str, Check(check_graph_text)]

One annotation then drives the check (at recipe parse time, before any model
is read), the name shown in messages and ``explain`` (``integer >= 1``) and
the JSON schema (``minimum``/``maximum``). Pass parameters and the recipe's
own fixed keys (``expect:``, ``verify:``) use the same checker.

The checker explains the YAML 1.1 traps PyYAML falls into: ``1e-3`` is read
as a string, ``on``/``no`` as booleans, ``010`` as 8.
"""

from __future__ import annotations

import datetime
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from surgeon.errors import suggestion_hint

# (path inside the value, message, hint)
TypeProblem = tuple[str, str, "str | None"]

_FLOATISH = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


@dataclass(frozen=True)
class Min:
    """The smallest allowed value of a number: ``Annotated[int, Min(1)]``.

    ``hint`` tells how to fix a value below it (a generic hint is used otherwise).
    """

    value: int | float
    hint: str | None = None


@dataclass(frozen=True)
class Max:
    """The largest allowed value of a number: ``Annotated[float, Min(0), Max(1)]``."""

    value: int | float
    hint: str | None = None


@dataclass(frozen=True)
class Check:
    """A check of a value beyond its type, run when the recipe is read: ``Annotated[str, Check(f)]``.

    ``f(value)`` returns the value's problems as ``(path, message, hint)``; a
    problem on line 3 (column 7) of a text value has the path
    :func:`text_path` ``(3, 7)``, so the recipe error points inside a YAML
    block scalar.
    """

    func: Callable[[Any], list[TypeProblem]]


def text_path(line: int, column: int | None = None) -> str:
    """The path of a place inside a text value (1-based line and column): ``@3`` or ``@3:7``."""
    return f"@{line}" if column is None else f"@{line}:{column}"


def text_place(path: str) -> str:
    """How a message names a :func:`text_path`: ``, line 3``; other paths as they are."""
    m = re.fullmatch(r"@(\d+)(?::(\d+))?", path)
    if m is None:
        return path
    return f", line {m.group(1)}" + (f", column {m.group(2)}" if m.group(2) else "")


def bounds(annotation: Any) -> tuple[int | float | None, int | float | None, str | None]:
    """``(minimum, maximum, hint)`` declared by an ``Annotated`` annotation (``None`` where absent)."""
    low = high = hint = None
    if typing.get_origin(annotation) is Annotated:
        for extra in annotation.__metadata__:
            if isinstance(extra, Min):
                low = extra.value
            elif isinstance(extra, Max):
                high = extra.value
            else:
                continue
            hint = hint or extra.hint
    return low, high, hint


def range_text(annotation: Any) -> str:
    """``">= 1"``, ``"<= 5"``, ``"in [0, 1]"``, or ``""`` when no range is declared."""
    low, high, _ = bounds(annotation)
    if low is not None and high is not None:
        return f"in [{low}, {high}]"
    if low is not None:
        return f">= {low}"
    if high is not None:
        return f"<= {high}"
    return ""


def type_name(annotation: Any) -> str:
    """A short human name of a type annotation: ``int``, ``list of str``, ``'bypass' or 'drop'``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        base = type_name(args[0])
        limits = range_text(annotation)
        return f"{base} {limits}" if limits else base
    if annotation is Any:
        return "any value"
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return " or ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin in (list, list, tuple):
        inner = args[0] if args else Any
        return f"list of {type_name(inner)}"
    if origin in (dict, dict):
        val = args[1] if len(args) == 2 else Any
        return f"mapping of name to {type_name(val)}"
    if annotation is float:
        return "number"
    if annotation is bool:
        return "boolean"
    if annotation is int:
        return "integer"
    if annotation is str:
        return "string"
    return getattr(annotation, "__name__", str(annotation))


def yaml_of(value: Any) -> str:
    """How a value reads in a message: ``null``, ``true``, ``'text'``, ``a list``, ``3``."""
    if value is None:
        return "null"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return f"the date {value.isoformat()}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def check_range(value: Any, annotation: Any, path: str = "", hint: str | None = None) -> list[TypeProblem]:
    """The range problem of a number already known to have the right type (NaN is out of every range)."""
    low, high, declared_hint = bounds(annotation)
    if (low is None or value >= low) and (high is None or value <= high):
        return []
    if low is not None and high is not None:
        message = f"must be between {low} and {high}, got {yaml_of(value)}"
    elif low is not None:
        message = f"must be at least {low}, got {yaml_of(value)}"
    else:
        message = f"must be at most {high}, got {yaml_of(value)}"
    return [(path, message, declared_hint or hint)]


def check_type(value: Any, annotation: Any, path: str = "", range_hint: str | None = None) -> list[TypeProblem]:
    """Problems of ``value`` against ``annotation``, as ``(path, message, hint)``.

    ``path`` locates the problem inside nested lists/mappings (``"[2]"``,
    ``".images"``). An empty list means the value fits. Hints explain the
    YAML 1.1 traps that PyYAML falls into (``1e-3`` is a string, ``on`` a
    boolean). ``range_hint`` is the hint of a value out of its declared range
    when the :class:`Min`/:class:`Max` marker gives none.
    """
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return []
    if origin is Annotated:
        problems = check_type(value, args[0], path, range_hint) or check_range(value, annotation, path, range_hint)
        for extra in annotation.__metadata__:
            if isinstance(extra, Check) and not problems:
                problems = [(path + sub, message, hint) for sub, message, hint in extra.func(value)]
        return problems
    if origin in (Union, types.UnionType):
        results = [check_type(value, a, path, range_hint) for a in args]
        if any(not r for r in results):
            return []
        # Prefer the branch that got furthest (a nested problem beats a top-level mismatch).
        nested = [r for r in results if r and r[0][0] != path]
        if nested:
            return nested[0]
        hint = next((h for r in results for _, _, h in r if h), None)
        # "expected an integer, got 1.0" reads better than "expected integer or null":
        # null is only worth naming when the value is null-like.
        shown = [a for a in args if a is not type(None)] if value is not None else list(args)
        if len(shown) == 1:
            return [(path, results[args.index(shown[0])][0][1], hint)]
        return [(path, f"expected {' or '.join(type_name(a) for a in shown)}, got {yaml_of(value)}", hint)]
    if origin is Literal:
        if value in args and not (isinstance(value, bool) and not any(isinstance(a, bool) for a in args)):
            return []
        hint = None
        if isinstance(value, str):
            hint = suggestion_hint(value, [str(a) for a in args])
        if isinstance(value, bool):
            hint = "YAML 1.1 reads yes/no/on/off as booleans: quote the word"
        return [(path, f"expected one of {', '.join(repr(a) for a in args)}, got {yaml_of(value)}", hint)]
    if annotation is type(None):
        return [] if value is None else [(path, f"expected null, got {yaml_of(value)}", None)]
    if annotation is bool:
        if isinstance(value, bool):
            return []
        hint = _QUOTED if isinstance(value, str) and value.strip().lower() in ("true", "false") else None
        return [(path, f"expected a boolean (true or false), got {yaml_of(value)}", hint)]
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return []
        hint = None
        if isinstance(value, float) and value.is_integer():
            hint = f"write {int(value)} without a decimal point"
        elif isinstance(value, str) and _number(value) is not None:
            hint = _QUOTED
        return [(path, f"expected an integer, got {yaml_of(value)}", hint)]
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return []
        hint = None
        if isinstance(value, str) and _number(value) is not None:
            hint = _QUOTED
        elif isinstance(value, str) and _FLOATISH.match(value.strip()):
            hint = (f"YAML 1.1 reads {value} as a string, not a number: "
                    "write the mantissa with a dot and the exponent with a sign, e.g. 1.0e-3")
        return [(path, f"expected a number, got {yaml_of(value)}", hint)]
    if annotation is str:
        if isinstance(value, str):
            return []
        hint = None
        if isinstance(value, bool):
            hint = ("YAML 1.1 reads yes/no/on/off/y/n/true/false as booleans: "
                    "quote the value to keep it a string")
        elif isinstance(value, (int, float)):
            hint = "quote the value to keep it a string (YAML 1.1 reads 010 as 8 and 22:30 as 1350)"
        elif isinstance(value, (datetime.date, datetime.datetime)):
            hint = "YAML reads 2024-01-02 as a date: quote the value to keep it a string"
        return [(path, f"expected a string, got {yaml_of(value)}", hint)]
    if origin in (list, list, tuple):
        if not isinstance(value, list):
            return [(path, f"expected {type_name(annotation)}, got {yaml_of(value)}", None)]
        inner = args[0] if args else Any
        out: list[TypeProblem] = []
        for i, item in enumerate(value):
            out += check_type(item, inner, f"{path}[{i}]", range_hint)
        return out
    if origin in (dict, dict):
        if not isinstance(value, dict):
            return [(path, f"expected {type_name(annotation)}, got {yaml_of(value)}", None)]
        key_t, val_t = (args + (Any, Any))[:2] if args else (Any, Any)
        out = []
        for k, v in value.items():
            if key_t is str and not isinstance(k, str):
                out.append((f"{path}.{k}", f"expected string keys, got {yaml_of(k)}",
                            "quote the key" if isinstance(k, (bool, int, float)) else None))
            out += check_type(v, val_t, f"{path}.{k}", range_hint)
        return out
    if isinstance(annotation, type):
        if isinstance(value, annotation):
            return []
        return [(path, f"expected {type_name(annotation)}, got {yaml_of(value)}", None)]
    return []


_QUOTED = "remove the quotes: a quoted value is a string in YAML"


def _number(text: str) -> float | None:
    """The number YAML reads from ``text`` written without quotes (``0.3``, ``10``), or None:
    a string that holds one was quoted in the recipe. ``1e-3`` is none (YAML 1.1 keeps it a string)."""
    import yaml

    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return loaded if isinstance(loaded, (int, float)) and not isinstance(loaded, bool) else None


def schema_of(annotation: Any) -> dict[str, Any]:
    """The JSON schema (draft 2020-12) of values of ``annotation``; ``{}`` accepts anything."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        schema = schema_of(args[0])
        low, high, _ = bounds(annotation)
        if low is not None:
            schema["minimum"] = low
        if high is not None:
            schema["maximum"] = high
        return schema
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (Union, types.UnionType):
        return {"anyOf": [schema_of(a) for a in args]}
    if origin in (list, tuple):
        return {"type": "array", "items": schema_of(args[0] if args else Any)}
    if origin is dict:
        return {"type": "object", "additionalProperties": schema_of(args[1] if len(args) == 2 else Any)}
    simple = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
    if annotation in simple:
        return {"type": simple[annotation]}
    return {}
