"""The ``custom_ops:`` section: declarations of what plugin ops do to shapes and types.

::

    custom_ops:
      - op: ResizePlugin
        domain: trt.plugins          # optional, default '' (TensorRT plugins often live there)
        outputs:                     # one entry per output, in order
          - {dtype: input0, shape: [input0[0], input0[1], out_h, out_w]}

``dtype``: ``inputK`` (the dtype of input K) or a dtype name (``float32``,
``float16``, ``int64``, ``bool``... or any ONNX element type name).
``shape`` (optional: without it only the dtype is declared): ``inputK`` (the
shape of input K) or a list of dimensions, each ``inputK[i]`` (dimension i of
input K; negative i counts from the end), a number (``-1`` is not one: a
dimension is known or it is copied), or the name of one of the op's integer
attributes.

:func:`check_custom_ops` finds every problem, located by its path inside the
recipe (``("custom_ops", 1, "outputs", 0, "shape", 2)``); the same function
checks declarations made in Python (``surgeon.declare_op``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import onnx

from surgeon.errors import Location, suggestion_hint
from surgeon.recipe.fields import CUSTOM_OP_FIELDS, OUTPUT_FIELDS
from surgeon.recipe.validate import Problem, check_fields, kind_of

_INPUT = re.compile(r"^input(\d+)$")
_INPUT_DIM = re.compile(r"^input(\d+)\[(-?\d+)\]$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# surgeon's names for dtypes (graph.constants.DTYPE_TABLE: this layer may not import it) and onnx's own.
DTYPE_NAMES = tuple(dict.fromkeys(
    ["float32", "float", "float16", "half", "bfloat16", "float64", "double", "uint8", "int8", "uint16", "int16",
     "uint32", "int32", "uint64", "int64", "bool"]
    + [name.lower() for name in onnx.TensorProto.DataType.keys() if name != "UNDEFINED"]))


@dataclass(frozen=True)
class CustomOp:
    """One checked declaration, as written."""

    op: str
    domain: str
    outputs: tuple[dict[str, Any], ...]
    location: Location | None = None


def check_custom_ops(value: Any, path: tuple[Any, ...] = ("custom_ops",)) -> list[Problem]:
    """Every problem of a ``custom_ops:`` list (paths start with ``path``)."""
    if not isinstance(value, list):
        return [Problem(path, f"'custom_ops' must be a list of op declarations, got {kind_of(value)}",
                        "write '- {op: FooOp, domain: devtech, outputs: [{dtype: input0, shape: input0}]}'")]
    problems: list[Problem] = []
    first: dict[tuple[str, str], int] = {}
    for i, item in enumerate(value):
        problems += check_custom_op(item, path + (i,))
        if isinstance(item, dict) and isinstance(item.get("op"), str):
            key = (str(item.get("domain", "")), item["op"])
            if key in first:
                label = f"{key[0]}::{key[1]}" if key[0] else key[1]
                problems.append(Problem(path + (i, "op"), f"custom op '{label}' is declared twice "
                                        f"(first in declaration {first[key] + 1})",
                                        "keep one declaration per op and domain"))
            else:
                first[key] = i
    return problems


def check_custom_op(item: Any, path: tuple[Any, ...]) -> list[Problem]:
    """Problems of one declaration ``{op, domain, outputs}``."""
    where = f"custom op {path[-1] + 1}" if isinstance(path[-1], int) else "custom op"
    if not isinstance(item, dict):
        return [Problem(path, f"{where} must be a mapping with 'op' and 'outputs', got {kind_of(item)}",
                        "write '- {op: FooOp, domain: devtech, outputs: [{dtype: input0, shape: input0}]}'")]
    problems = _fields(item, CUSTOM_OP_FIELDS, path, where)
    for key in ("op", "outputs"):
        if key not in item:
            problems.append(Problem(path, f"{where} has no '{key}'",
                                    "add 'op: NAME'" if key == "op"
                                    else "add 'outputs: [{dtype: input0, shape: input0}]', one entry per output"))
    outputs = item.get("outputs")
    if isinstance(outputs, list):
        if not outputs:
            problems.append(Problem(path + ("outputs",), f"{where}: 'outputs' is empty",
                                    "declare each output: '{dtype: input0, shape: input0}'"))
        for j, out in enumerate(outputs):
            problems += _check_output(out, path + ("outputs", j), f"{where}, output {j}")
    return problems


def _fields(item: dict, fields: Any, path: tuple[Any, ...], where: str) -> list[Problem]:
    """check_fields, with paths from ``path`` and messages naming ``where``."""
    return [Problem(path + p.path[1:], p.message, p.hint, p.at_key) for p in check_fields(item, fields, where)]


def _check_output(out: Any, path: tuple[Any, ...], where: str) -> list[Problem]:
    if not isinstance(out, dict):
        return [Problem(path, f"{where} must be a mapping with 'dtype' and 'shape', got {kind_of(out)}",
                        "write '{dtype: input0, shape: input0}'")]
    problems = _fields(out, OUTPUT_FIELDS, path, where)
    if problems:
        return problems
    if "dtype" not in out:
        return [Problem(path, f"{where} has no 'dtype'", "add 'dtype: input0' (the dtype of input 0) or a "
                        "dtype name such as float32")]
    dtype = out["dtype"]
    if not _INPUT.match(dtype) and dtype not in DTYPE_NAMES:
        problems.append(Problem(path + ("dtype",), f"{where}: unknown dtype '{dtype}'",
                                suggestion_hint(dtype, ["input0", *DTYPE_NAMES])
                                or "write inputK (the dtype of input K) or a dtype name such as float32"))
    shape = out.get("shape")
    if isinstance(shape, str) and not _INPUT.match(shape):
        problems.append(Problem(path + ("shape",), f"{where}: shape '{shape}' is neither inputK nor a list",
                                "write 'shape: input0' (the shape of input 0) or a list of dimensions such as "
                                "[input0[0], 3, out_h]"))
    if isinstance(shape, list):
        for k, dim in enumerate(shape):
            problem = _check_dim(dim, path + ("shape", k), f"{where}, dimension {k}")
            if problem is not None:
                problems.append(problem)
    return problems


def _check_dim(dim: Any, path: tuple[Any, ...], where: str) -> Problem | None:
    hint = "write inputK[i] (dimension i of input K), a number, or the name of an integer attribute of the op"
    if isinstance(dim, bool) or not isinstance(dim, (int, str)):
        return Problem(path, f"{where}: expected inputK[i], a number or an attribute name, got {kind_of(dim)}",
                       hint)
    if isinstance(dim, int):
        return None if dim >= 0 else Problem(path, f"{where}: a dimension must be 0 or more, got {dim}",
                                            "a dimension that is not known is copied from an input: inputK[i]")
    if _INPUT_DIM.match(dim) or (_IDENTIFIER.match(dim) and not _INPUT.match(dim)):
        return None
    if _INPUT.match(dim):
        return Problem(path, f"{where}: '{dim}' is a whole input, not a dimension", f"write {dim}[0] for its "
                       f"first dimension, or 'shape: {dim}' for its whole shape")
    return Problem(path, f"{where}: '{dim}' is neither inputK[i] nor an attribute name", hint)


def custom_ops_of(value: list[dict[str, Any]], locations: list[Location | None]) -> tuple[CustomOp, ...]:
    """The declarations of a checked ``custom_ops:`` list."""
    return tuple(CustomOp(item["op"], str(item.get("domain", "")),
                          tuple({"dtype": o["dtype"], "shape": o.get("shape")} for o in item["outputs"]),
                          location)
                 for item, location in zip(value, locations))
