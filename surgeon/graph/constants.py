"""Constants and dtypes: reading the values a graph holds, and the one dtype table.

Passes read constant values in several places (folding, no-op rules, fusions,
batch rewrites, dedupe); they all go through here so lazily loaded (external)
weights are read without being cached in the gs tensor — caching them would
make them resident and make the exporter rewrite a tensor it could copy.

:data:`DTYPES` is the one table that names element types: the name a recipe
writes, the numpy dtype, the ONNX ``TensorProto`` enum and the type string
onnxruntime reports. Every pass, ``verify`` and the tests look dtypes up here,
so a dtype known to one is known to all.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues, SparseValues

# -- the dtype table -------------------------------------------------------------------


@dataclass(frozen=True)
class DType:
    """One element type under every name the tools around surgeon give it."""

    name: str
    """What a recipe writes: ``float32``, ``uint8``..."""
    onnx: int
    """The ``onnx.TensorProto`` enum."""
    ort: str
    """The type string of onnxruntime's ``NodeArg.type``: ``tensor(float)``."""
    aliases: tuple[str, ...] = ()
    """Other names a recipe may use (``float``, ``half``, ``double``)."""

    @property
    def np(self) -> np.dtype:
        """The numpy dtype (bfloat16 comes from ml_dtypes through onnx)."""
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(self.onnx))


_P = onnx.TensorProto
# In the order error messages list them (``set_dtype``'s "known dtypes: ...").
DTYPE_TABLE: tuple[DType, ...] = (
    DType("float32", _P.FLOAT, "tensor(float)", ("float",)),
    DType("float16", _P.FLOAT16, "tensor(float16)", ("half",)),
    DType("bfloat16", _P.BFLOAT16, "tensor(bfloat16)"),
    DType("float64", _P.DOUBLE, "tensor(double)", ("double",)),
    DType("uint8", _P.UINT8, "tensor(uint8)"),
    DType("int8", _P.INT8, "tensor(int8)"),
    DType("uint16", _P.UINT16, "tensor(uint16)"),
    DType("int16", _P.INT16, "tensor(int16)"),
    DType("uint32", _P.UINT32, "tensor(uint32)"),
    DType("int32", _P.INT32, "tensor(int32)"),
    DType("uint64", _P.UINT64, "tensor(uint64)"),
    DType("int64", _P.INT64, "tensor(int64)"),
    DType("bool", _P.BOOL, "tensor(bool)"),
)

DTYPES: dict[str, DType] = {n: d for d in DTYPE_TABLE for n in (d.name, *d.aliases)}
"""Every recipe name (aliases included) -> its :class:`DType`."""
_BY_ONNX: dict[int, DType] = {d.onnx: d for d in DTYPE_TABLE}
_BY_ORT: dict[str, DType] = {d.ort: d for d in DTYPE_TABLE}


def np_dtype_of_ort(type_string: str) -> np.dtype | None:
    """The numpy dtype of an onnxruntime type string (``tensor(float)``), None when not a known tensor type."""
    d = _BY_ORT.get(type_string)
    return None if d is None else d.np


def dtype_name(elem_type: int) -> str:
    """The name surgeon writes for an ONNX element type (``float32``, ``bfloat16``)."""
    d = _BY_ONNX.get(elem_type)
    if d is not None:
        return d.name
    return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name


def elem_type(dtype: Any) -> int | None:
    """The ONNX element type of a gs dtype (numpy dtype, or the enum gs keeps when numpy has none)."""
    if dtype is None:
        return None
    try:
        return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    except (TypeError, KeyError, ValueError):
        return dtype if isinstance(dtype, int) else None


# -- constant values -------------------------------------------------------------------


def const_array(c: gs.Constant) -> np.ndarray:
    """A constant's values without making lazily loaded (external) weights resident.

    gs's ``Constant.values`` caches what it loads, and the exporter then
    rewrites the tensor instead of copying it as read."""
    values = c._values
    return values.load() if isinstance(values, LazyValues) else np.asarray(values)


def const_nbytes(c: gs.Constant) -> int:
    """A constant's size in bytes, without loading lazily loaded weights."""
    values = c._values
    return int(values.nbytes) if isinstance(values, LazyValues) else int(np.asarray(values).nbytes)


def const_pieces(c: gs.Constant, elements: int) -> Iterator[np.ndarray]:
    """A constant's values as flat arrays of at most ``elements`` elements, in order.

    Weights in external data (and spill files) are read from the file piece
    by piece (their lazy values' ``iter_arrays``), so a pass can convert or
    hash a weight larger than memory; in-memory values are sliced."""
    values = c._values
    if hasattr(values, "iter_arrays"):
        yield from values.iter_arrays(elements)
        return
    flat = np.ascontiguousarray(const_array(c)).reshape(-1)
    for start in range(0, flat.size, elements):
        yield flat[start:start + elements]


def const_bytes(c: gs.Constant, chunk: int = 16 << 20) -> Iterator[bytes]:
    """A constant's bytes as stored (little-endian), in pieces of at most ``chunk`` bytes,
    read from the file for external weights (``iter_bytes``) instead of loading them whole."""
    values = c._values
    if hasattr(values, "iter_bytes"):
        yield from values.iter_bytes(chunk)
        return
    arr = np.ascontiguousarray(const_array(c))
    if arr.dtype.kind == "O":  # strings: no stored layout to stream
        yield arr.tobytes()
        return
    data = arr.reshape(-1).view(np.uint8)
    for start in range(0, data.size, chunk):
        yield data[start:start + chunk].tobytes()


def is_sparse(c: gs.Constant) -> bool:
    """Whether a constant holds a sparse tensor (its values cannot be read as one array)."""
    return isinstance(c._values, SparseValues)


def constant_node_value(node: gs.Node) -> Any:
    """The value a ``Constant`` node writes, whichever attribute holds it; None when it is sparse or missing.

    A ``value`` tensor is returned as gs holds it (possibly lazy), so turning
    the node into an initializer keeps external weights on disk."""
    attrs = node.attrs
    if isinstance(attrs.get("value"), gs.Constant):
        c = attrs["value"]
        return None if is_sparse(c) else c._values
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            return np.array(attrs[key], dtype=dtype)
    for key in ("value_string", "value_strings"):
        if key in attrs:
            return np.array(attrs[key], dtype=object)
    return None


def constant_values(t: gs.Tensor) -> np.ndarray | None:
    """The values of an initializer or of a ``Constant`` node's output; None for anything computed."""
    if isinstance(t, gs.Constant):
        return None if is_sparse(t) else const_array(t)
    producer = t.inputs[0] if len(t.inputs) == 1 else None
    if producer is None or producer.op != "Constant":
        return None
    value = constant_node_value(producer)
    if value is None:
        return None
    return value.load() if isinstance(value, LazyValues) else np.asarray(value)
