"""External data: weights that live in files beside the model.

On load the weights stay on disk: each external initializer becomes a gs
``Constant`` whose values are :class:`ExternalValues`, read on demand from the
model's own folder (not the process's current directory, which is where
onnx's own loader and gs folding look). On save they are copied from file to
file in chunks, never through a numpy array.

Weights that passes compute (folded constants, float16 conversions) go the
same way: :class:`Spill` writes each one, as soon as it is computed, into a
private spill file, and the constant gets :class:`SpilledValues` (lazy values
whose external reference is that file's absolute path). Nothing then holds
all new weights in memory at once: save copies them from the spill file to
the output's data file like any other external weights. A spill file lives
in the system's temporary folder (``TMPDIR``) and is deleted when no
constant refers to it any more (or when the process exits). Passes spill
only for models that keep external data: a model without it is in memory
anyway, and saves inline.
"""

from __future__ import annotations

import os
import sys
import tempfile
import weakref
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


def external_location(tensor: onnx.TensorProto) -> str:
    """The ``location`` entry of a tensor's external data ("" when it has none)."""
    return next((e.value for e in tensor.external_data if e.key == "location"), "")


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
        if spill_location(t) is not None and str(spill_location(t)) in _LIVE:
            continue  # a weight a pass computed, in this process's spill file
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

    def iter_bytes(self, chunk: int = CHUNK) -> Iterator[bytes]:
        """The tensor's bytes as stored (little-endian, what ``tobytes()`` gives on this
        machine for native types), read from the file ``chunk`` bytes at a time."""
        if self.tensor.data_type not in _NATIVE_TYPES:
            yield np.ascontiguousarray(self.load()).tobytes()
            return
        ref = external_ref(self.tensor, self.base_dir)
        length = ref.length if ref.length is not None else int(self.nbytes)
        with open(ref.path, "rb") as f:
            f.seek(ref.offset)
            remaining = length
            while remaining > 0:
                data = f.read(min(chunk, remaining))
                if not data:
                    raise OSError(f"{ref.path} ended {remaining} bytes early")
                remaining -= len(data)
                yield data

    def iter_arrays(self, elements: int) -> Iterator[np.ndarray]:
        """The values as flat arrays of at most ``elements`` elements each, in order
        (native types are read from the file piece by piece)."""
        np_dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(self.tensor.data_type))
        if self.tensor.data_type not in _NATIVE_TYPES:
            flat = self.load().reshape(-1)
            for start in range(0, flat.size, elements):
                yield flat[start:start + elements]
            return
        ref = external_ref(self.tensor, self.base_dir)
        count = int(np.prod(tuple(self.tensor.dims), dtype=np.int64)) if self.tensor.dims else 1
        with open(ref.path, "rb") as f:
            f.seek(ref.offset)
            while count > 0:
                n = min(elements, count)
                arr = np.fromfile(f, dtype=np_dtype.newbyteorder("<"), count=n)
                if arr.size != n:
                    raise OSError(f"{ref.path} ended early")
                count -= n
                yield arr.astype(np_dtype, copy=False)


class SpillFile:
    """One private file that computed weights are appended to; deleted when unused.

    Every :class:`SpilledValues` holds its file, so the file lives as long as
    a constant of any model can read from it (a model exported and loaded
    again, e.g. ``Model.copy()``, gets :class:`SpilledValues` too: see
    :func:`lazy_external`).
    """

    def __init__(self) -> None:
        fd, name = tempfile.mkstemp(prefix="surgeon-spill-", suffix=".bin")
        self.path = Path(name).resolve()
        self._file = os.fdopen(fd, "wb")
        self._finalizer = weakref.finalize(self, _remove, self._file, self.path)
        _LIVE[str(self.path)] = self

    def append(self, data) -> tuple[int, int]:
        """Write ``data`` (bytes-like) at the next aligned offset; returns (offset, length)."""
        pos = self._file.tell()
        if pos % ALIGN:
            self._file.write(b"\0" * (ALIGN - pos % ALIGN))
        offset = self._file.tell()
        self._file.write(data)
        self._file.flush()
        return offset, self._file.tell() - offset

    def append_more(self, data) -> int:
        """Write ``data`` right after the last write (the rest of one tensor); returns its length."""
        self._file.write(data)
        self._file.flush()
        return len(data) if isinstance(data, bytes) else int(np.asarray(data).nbytes)


def _remove(f: BinaryIO, path: Path) -> None:
    try:
        f.close()
    finally:
        path.unlink(missing_ok=True)


ALIGN = 4096  # offsets in spill files, as in saved data files
# Spill files in use, by absolute path: a model exported and loaded again (a copy for a
# dry run, a rewrite by an onnx tool) refers to them, though they are outside its folder.
_LIVE: weakref.WeakValueDictionary[str, SpillFile] = weakref.WeakValueDictionary()


class SpilledValues(ExternalValues):
    """Lazy values of a weight a pass computed, in a :class:`SpillFile`."""

    def __init__(self, tensor: onnx.TensorProto, spill: SpillFile) -> None:
        super().__init__(tensor, spill.path.parent)
        self.spill = spill  # keeps the file alive while these values exist


class Spill:
    """Writes computed weights to a spill file, one at a time (created on first use).

    ``values(array)`` returns what a ``gs.Constant`` should hold: the array
    itself when it is smaller than ``min_bytes`` (shapes, scalars stay in
    memory, where passes read them cheaply), else :class:`SpilledValues`
    pointing at its bytes on disk; the array can then be dropped.
    """

    MIN_BYTES = 1 << 20

    def __init__(self, min_bytes: int | None = None, *, enabled: bool = True) -> None:
        """``enabled``: False keeps every value in memory (a model without external data
        is held in memory anyway, and its copies must not depend on a file they cannot own)."""
        self.min_bytes = (self.MIN_BYTES if min_bytes is None else min_bytes) if enabled else sys.maxsize
        self._file: SpillFile | None = None

    def values(self, array: np.ndarray) -> np.ndarray | SpilledValues:
        if array.nbytes < self.min_bytes or array.dtype.kind not in "biuf" or array.dtype.byteorder == ">":
            return array
        return self.write_chunks(array.dtype, array.shape, [np.ascontiguousarray(array)])

    def write_chunks(self, dtype: np.dtype, shape: tuple, chunks) -> SpilledValues:
        """Spill a tensor given as consecutive pieces (flat arrays of ``dtype``, in order)."""
        if self._file is None:
            self._file = SpillFile()
        tensor = onnx.TensorProto()
        tensor.data_type = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        tensor.dims.extend(int(d) for d in shape)
        offset, length = self._file.append(b"")  # the aligned start; pieces follow
        for piece in chunks:
            data = np.ascontiguousarray(piece, dtype=np.dtype(dtype).newbyteorder("<")).view(np.uint8).reshape(-1)
            length += self._file.append_more(data)
        set_external(tensor, str(self._file.path), offset, length)
        return SpilledValues(tensor, self._file)


def lazy_external(tensor: onnx.TensorProto, base_dir: Path) -> ExternalValues:
    """Lazy values for an external tensor read from ``base_dir``. A tensor in one of this
    process's spill files (a model exported and loaded again: ``Model.copy()``, a rewrite
    by an onnx tool) gets :class:`SpilledValues`, which keep that file alive: the copy
    must still read its weights once the model that spilled them is gone."""
    location = spill_location(tensor)
    spill = _LIVE.get(str(location)) if location is not None else None
    return SpilledValues(tensor, spill) if spill is not None else ExternalValues(tensor, base_dir)


def is_spilled(values: object) -> bool:
    return isinstance(values, SpilledValues)


def spill_location(tensor: onnx.TensorProto) -> Path | None:
    """The spill file an exported tensor refers to (an absolute location), or None."""
    location = external_location(tensor)
    return Path(location) if location and os.path.isabs(location) else None


def read_inline(tensor: onnx.TensorProto, base_dir: Path | None) -> None:
    """Bring an external tensor's bytes into ``raw_data`` (for a model saved without external data)."""
    ref = external_ref(tensor, base_dir or Path("."))
    length = ref.length if ref.length is not None else os.path.getsize(ref.path) - ref.offset
    with open(ref.path, "rb") as f:
        f.seek(ref.offset)
        data = f.read(length)
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.DEFAULT
    tensor.raw_data = data


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
