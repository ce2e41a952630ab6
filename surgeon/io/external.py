"""External data: weights that live in files beside the model.

On load the weights stay on disk: each external initializer becomes a gs
``Constant`` whose values are :class:`ExternalValues`, read on demand from the
model's own folder (not the process's current directory, which is where
onnx's own loader and gs folding look). On save they are copied from file to
file in chunks, never through a numpy array.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import onnx
import onnx.numpy_helper
from onnx_graphsurgeon.ir.tensor import LazyValues

CHUNK = 16 << 20  # bytes copied per read when streaming weights


@dataclass(frozen=True)
class ExternalRef:
    """Where one tensor's bytes are: file, offset, length (length None: to end of file)."""

    path: Path
    offset: int
    length: int | None


def is_external(tensor: onnx.TensorProto) -> bool:
    return tensor.HasField("data_location") and tensor.data_location == onnx.TensorProto.EXTERNAL


def external_ref(tensor: onnx.TensorProto, base_dir: Path) -> ExternalRef:
    info = {e.key: e.value for e in tensor.external_data}
    location = info.get("location", "")
    length = info.get("length")
    return ExternalRef(
        path=(base_dir / location),
        offset=int(info.get("offset", 0) or 0),
        length=int(length) if length not in (None, "") else None,
    )


def set_external(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    """Point ``tensor`` at ``location`` (relative to the model file), dropping any inline data."""
    tensor.ClearField("raw_data")
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        tensor.external_data.add(key=key, value=value)


def iter_model_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every TensorProto of a model: initializers, sparse values, tensor attributes, in all graphs."""

    def from_graph(g: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
        yield from g.initializer
        for sp in g.sparse_initializer:
            yield sp.values
            yield sp.indices
        for node in g.node:
            yield from from_attrs(node.attribute)

    def from_attrs(attrs) -> Iterator[onnx.TensorProto]:
        for a in attrs:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from from_graph(a.g)
            for sub in a.graphs:
                yield from from_graph(sub)

    yield from from_graph(model.graph)
    for f in model.functions:
        for node in f.node:
            yield from from_attrs(node.attribute)


def external_problems(model: onnx.ModelProto, base_dir: Path) -> list[str]:
    """Why external data cannot be read: missing files, short files, paths leaving the folder."""
    problems = []
    root = base_dir.resolve()
    sizes: dict[Path, int] = {}
    for t in iter_model_tensors(model):
        if not is_external(t):
            continue
        ref = external_ref(t, base_dir)
        location = ref.path.relative_to(base_dir) if ref.path.is_relative_to(base_dir) else ref.path
        resolved = ref.path.resolve()
        if not resolved.is_relative_to(root):
            problems.append(f"tensor '{t.name}': external data location '{location}' points outside "
                            f"the model's folder {base_dir}")
            continue
        if resolved not in sizes:
            sizes[resolved] = resolved.stat().st_size if resolved.is_file() else -1
        size = sizes[resolved]
        if size < 0:
            problems.append(f"tensor '{t.name}': external data file '{location}' not found in {base_dir}")
        elif ref.length is not None and ref.offset + ref.length > size:
            problems.append(f"tensor '{t.name}': external data file '{location}' has {size} bytes, "
                            f"but the tensor needs bytes {ref.offset}..{ref.offset + ref.length}")
    return problems


class ExternalValues(LazyValues):
    """gs lazy values that read an external tensor from the model's folder on demand.

    Subclassing gs's ``LazyValues`` keeps gs behaviour intact: its exporter
    writes the original ``TensorProto`` (with its external reference) as long
    as nobody has read the values.
    """

    def __init__(self, tensor: onnx.TensorProto, base_dir: Path) -> None:
        super().__init__(tensor)
        self.base_dir = base_dir

    def load(self) -> np.ndarray:
        ref = external_ref(self.tensor, self.base_dir)
        np_dtype = onnx.helper.tensor_dtype_to_np_dtype(self.tensor.data_type)
        shape = tuple(self.tensor.dims)
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if self.tensor.data_type in _NATIVE_TYPES:
            with open(ref.path, "rb") as f:
                f.seek(ref.offset)
                arr = np.fromfile(f, dtype=np.dtype(np_dtype).newbyteorder("<"), count=count)
            return arr.astype(np_dtype, copy=False).reshape(shape)
        # Packed or exotic types (int4, bool, bfloat16...): let onnx decode a copy.
        copy = onnx.TensorProto()
        copy.CopyFrom(self.tensor)
        onnx.external_data_helper.load_external_data_for_tensor(copy, str(self.base_dir))
        return onnx.numpy_helper.to_array(copy)


_NATIVE_TYPES = {
    onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
    onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
    onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64,
}


def copy_range(src: Path, offset: int, length: int | None, dst: BinaryIO) -> int:
    """Append ``length`` bytes of ``src`` from ``offset`` to ``dst`` in chunks; returns bytes copied."""
    copied = 0
    with open(src, "rb") as f:
        f.seek(offset)
        remaining = length if length is not None else os.fstat(f.fileno()).st_size - offset
        while remaining > 0:
            chunk = f.read(min(CHUNK, remaining))
            if not chunk:
                raise OSError(f"{src} ended {remaining} bytes early")
            dst.write(chunk)
            copied += len(chunk)
            remaining -= len(chunk)
    return copied
