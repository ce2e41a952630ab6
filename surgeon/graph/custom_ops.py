"""Declared custom ops: what a plugin op does to the types and shapes of its outputs.

ONNX's shape inference stops at an op it has no schema for (a TensorRT plugin,
``devtech::FooOp``): its outputs get no type and no shape, so nothing behind
it can be inferred, folded or checked. A declaration says what the op does::

    OpDecl("ResizePlugin", "trt.plugins",
           outputs=({"dtype": "input0", "shape": ["input0[0]", "input0[1]", "out_h", "out_w"]},))

Each output has a ``dtype`` (``inputK``: the dtype of input K; or a dtype
name such as ``float32``) and a ``shape`` (``inputK``: the shape of input K;
or a list of dimensions, each ``inputK[i]`` (dimension i of input K, negative
i from the end), a number, or the name of one of the node's integer
attributes). :func:`surgeon.graph.shapes.infer` uses the declarations that
are active: the global ones (``surgeon.declare_op``, plugin modules) and those
of the recipe being run (:func:`scoped`).

The recipe layer checks the syntax of declarations with file positions
(:mod:`surgeon.recipe.custom_ops`); :func:`output_type` here evaluates an
already checked declaration on one node.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import onnx

from surgeon.graph.constants import DTYPES

INPUT = re.compile(r"^input(\d+)$")
INPUT_DIM = re.compile(r"^input(\d+)\[(-?\d+)\]$")

Dim = int | str | None


@dataclass(frozen=True)
class OpDecl:
    """One declared op: ``(domain, op)`` and, per output, ``{"dtype": ..., "shape": ...}``."""

    op: str
    domain: str
    outputs: tuple[dict[str, Any], ...]
    origin: str = "python"
    """Where it was declared, for messages: ``recipe.yaml:4``, ``python``, a plugin module."""

    @property
    def key(self) -> tuple[str, str]:
        return (normal_domain(self.domain), self.op)

    @property
    def label(self) -> str:
        return f"{self.domain}::{self.op}" if self.domain else self.op


def normal_domain(domain: str | None) -> str:
    return "" if domain in (None, "", "ai.onnx") else str(domain)


_GLOBAL: dict[tuple[str, str], OpDecl] = {}
_SCOPES: list[dict[tuple[str, str], OpDecl]] = []


def register(decl: OpDecl) -> None:
    """Declare ``decl`` for every model from now on; a later declaration of the same op replaces it."""
    _GLOBAL[decl.key] = decl


def unregister(op: str, domain: str = "") -> bool:
    """Forget the global declaration of ``(domain, op)``; whether there was one."""
    return _GLOBAL.pop((normal_domain(domain), op), None) is not None


@contextmanager
def scoped(decls: Iterable[OpDecl]) -> Iterator[None]:
    """Declarations active only inside the ``with`` block (a recipe's ``custom_ops:``); they win over
    global ones for the same op."""
    _SCOPES.append({d.key: d for d in decls})
    try:
        yield
    finally:
        _SCOPES.pop()


def active() -> dict[tuple[str, str], OpDecl]:
    """Every declaration in force, by ``(domain, op)``: global ones, then scoped ones over them."""
    found = dict(_GLOBAL)
    for scope in _SCOPES:
        found.update(scope)
    return found


def dtype_of(name: str) -> int:
    """The ONNX element type of a dtype name (surgeon's table, then onnx's own names)."""
    if name in DTYPES:
        return DTYPES[name].onnx
    return int(onnx.TensorProto.DataType.Value(name.upper()))


@dataclass(frozen=True)
class InputType:
    """What inference knows of one input: element type (0: unknown) and dims (None: unknown rank)."""

    elem_type: int
    dims: list[Dim] | None


def output_type(decl: OpDecl, index: int, inputs: Sequence[InputType | None],
                attrs: dict[str, Any]) -> tuple[int, list[Dim] | None] | None:
    """``(elem_type, dims)`` of output ``index`` of a node declared by ``decl``, or None while the
    inputs it depends on are still unknown (or the declaration has no such output).

    ``dims`` is None when the declaration gives no shape; a dimension is None when the input
    dimension it copies is unknown, or the attribute it names is missing.
    """
    if index >= len(decl.outputs):
        return None
    spec = decl.outputs[index]
    dtype = spec["dtype"]
    m = INPUT.match(dtype)
    if m:
        src = _input(inputs, int(m.group(1)))
        if src is None or not src.elem_type:
            return None
        elem = src.elem_type
    else:
        elem = dtype_of(dtype)
    shape = spec.get("shape")
    if shape is None:
        return elem, None
    if isinstance(shape, str):
        src = _input(inputs, int(INPUT.match(shape).group(1)))  # type: ignore[union-attr]
        if src is None or src.dims is None:
            return None
        return elem, list(src.dims)
    dims: list[Dim] = []
    for d in shape:
        if isinstance(d, int):
            dims.append(d)
            continue
        m = INPUT_DIM.match(d)
        if m is None:  # an attribute name
            value = attrs.get(d)
            dims.append(value if isinstance(value, int) and not isinstance(value, bool) else None)
            continue
        src = _input(inputs, int(m.group(1)))
        if src is None or src.dims is None:
            return None
        axis = int(m.group(2))
        axis = axis + len(src.dims) if axis < 0 else axis
        dims.append(src.dims[axis] if 0 <= axis < len(src.dims) else None)
    return elem, dims


def _input(inputs: Sequence[InputType | None], k: int) -> InputType | None:
    return inputs[k] if k < len(inputs) else None
