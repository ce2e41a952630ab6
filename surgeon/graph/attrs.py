"""Recipe attribute values as typed ONNX attributes.

Recipe values are YAML ints, floats, strings and lists; ONNX wants typed
attributes (``alpha`` of ``LeakyRelu`` is a FLOAT even when the recipe says
``1``). For ops ONNX knows, values are converted to the type the op's schema
declares; for other ops (plugins, custom domains) the type follows the YAML
value. Every pass that writes a node from recipe attributes uses these.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx.defs import OpSchema

from surgeon.errors import PassError, suggestion_hint
from surgeon.graph.names import quoted

AttrType = OpSchema.AttrType


def convert_attrs(op: str, schema: OpSchema | None, attrs: dict[str, Any]) -> dict[str, Any]:
    """Recipe attribute values -> gs attribute values of the right ONNX type."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if schema is not None:
            declared = schema.attributes.get(key)
            if declared is None:
                raise PassError(f"{op} has no attribute '{key}'",
                                hint=suggestion_hint(key, schema.attributes)
                                or (f"its attributes are: {quoted(sorted(schema.attributes))}"
                                    if schema.attributes else f"{op} takes no attributes"))
            out[key] = _typed_attr(op, key, value, declared.type)
        else:
            out[key] = _untyped_attr(op, key, value)
    return out


_SCALAR = {AttrType.FLOAT: float, AttrType.INT: int, AttrType.STRING: str}
_LIST = {AttrType.FLOATS: float, AttrType.INTS: int, AttrType.STRINGS: str}
_WORD = {float: "a number", int: "an integer", str: "a string"}


def _typed_attr(op: str, key: str, value: Any, kind: AttrType) -> Any:
    if kind in _SCALAR:
        return _scalar(op, key, value, _SCALAR[kind])
    if kind in _LIST:
        if not isinstance(value, list):
            value = [value]  # a single value for a list attribute, e.g. axes: 1
        return [_scalar(op, key, v, _LIST[kind]) for v in value]
    if kind == AttrType.TENSOR:
        return gs.Constant("", recipe_array(op, key, value, None))
    kind_name = kind.name  # type: ignore[attr-defined]  # onnx's stub omits the .name every pybind11 enum has
    raise PassError(f"attribute '{key}' of {op} has type {kind_name}, which a recipe cannot give",
                    hint="set it from a Python pass")


def _scalar(op: str, key: str, value: Any, want: type) -> Any:
    ok = (isinstance(value, str) if want is str
          else isinstance(value, (int, float)) and (want is float or float(value).is_integer()))
    if not ok:
        raise PassError(f"attribute '{key}' of {op} must be {_WORD[want]}, got {value!r}",
                        hint="YAML reads 1e-3 as a string: write 1.0e-3" if want is float and isinstance(value, str)
                        else None)
    return want(value)


def _untyped_attr(op: str, key: str, value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float, str)):
        return value
    if isinstance(value, dict):
        return gs.Constant("", recipe_array(op, key, value, None))
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, (int, float)) for v in value):
            kind = int if all(isinstance(v, int) for v in value) else float
            return [kind(v) for v in value]
    raise PassError(f"attribute '{key}' of {op}: cannot tell the ONNX type of {value!r}",
                    hint="give a number, a string, a non-empty list of numbers or of strings, "
                         "or a tensor as {value: ..., dtype: ...}")


def recipe_array(op: str, key: str, value: Any, default_dtype: Any) -> np.ndarray:
    """A constant from ``value`` (number, list, or {value, dtype})."""
    dtype = default_dtype
    if isinstance(value, dict):
        unknown = set(value) - {"value", "dtype"}
        if unknown or "value" not in value:
            raise PassError(f"{key} of {op}: a tensor is given as {{value: ..., dtype: ...}}, got {value!r}",
                            hint="e.g. {value: [0, 0, 1, 1], dtype: int64}")
        try:
            dtype = np.dtype(value.get("dtype", "float32"))
            onnx.helper.np_dtype_to_tensor_dtype(dtype)
        except (TypeError, KeyError, ValueError):
            raise PassError(f"{key} of {op}: unknown dtype {value.get('dtype')!r}",
                            hint="use a numpy dtype name: float32, float16, int64, int32, int8, uint8, bool") from None
        value = value["value"]
    if dtype is None:
        dtype = np.float32 if any(isinstance(v, float) for v in np.ravel(value)) else np.int64
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise PassError(f"{key} of {op}: {value!r} is not a {np.dtype(dtype).name} value ({exc})",
                        hint="give a number or a (nested) list of numbers") from None
