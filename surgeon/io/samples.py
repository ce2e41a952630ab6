"""Sample inputs for running a model: shapes that mean something, seeded values.

Verification (:mod:`surgeon.verify`) runs models on these, and a pass that
needs to run the model (``to_fp16`` measuring activations) can import them
too: :func:`input_specs` reads a model's graph inputs, :func:`resolve_dims`
gives every symbolic or unknown dimension a size, :func:`sample_feeds` makes
the arrays.

A dimension's size comes from, in order:

1. ``dims`` given on the command line (``--dim N=2``; ``--dim ?=N`` for the
   unnamed ``?``/``-1`` dimensions);
2. the recipe's ``verify: dims``;
3. arrays the user gave (``--inputs``): their shapes bind the dimension names;
4. the model: a size the other model fixes at the same place, or its metadata
   (Ultralytics' ``imgsz`` and ``batch``);
5. a default by kind: 224 for the height and width of an image-like input
   ``[N, C, H, W]`` (C of 1, 3 or 4), 2 for a batch (first) dimension (so batch-mixing bugs show), 16 for
   any other (a sequence length). Never 2 for an image: a 2x2 image proves
   nothing (convolutions pad it to zeros).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from surgeon.errors import SurgeonError
from surgeon.graph.constants import DTYPE_TABLE

IMAGE_SIZE = 224
"""Height and width of an image-like input whose size nothing else gives."""
IMAGE_SIZES = (224, 256, 320, 640, 32)
"""Image sizes to try, in order, when a model rejects the first (e.g. it needs a multiple of 64)."""
BATCH = 2
OTHER = 16
UNNAMED = "?"
"""The name ``--dim`` uses for dimensions without a name (``?`` or ``-1``)."""

Dim = int | str | None


@dataclass(frozen=True)
class InputSpec:
    """A graph input: name, numpy dtype (None: a type numpy cannot make) and declared shape
    (ints, dimension names, or None for an unknown dimension)."""

    name: str
    dtype: np.dtype | None
    shape: tuple[Dim, ...] | None
    type_name: str = ""

    @property
    def image_like(self) -> bool:
        """[N, C, H, W] with C known and 1, 3 or 4, and a float or uint8 dtype."""
        s = self.shape
        return (s is not None and len(s) == 4 and s[1] in (1, 3, 4) and self.dtype is not None
                and (self.dtype.kind == "f" or self.dtype == np.uint8))


@dataclass
class ResolvedDims:
    """Sizes of the symbolic dimensions and where each came from."""

    sizes: dict[str, int] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    image_defaulted: list[tuple[str, int]] = field(default_factory=list)
    """(input, axis) of image dimensions that got the default size (so a retry may change them)."""


def input_specs(model: Any) -> list[InputSpec]:
    """The graph inputs of a model (a path, ``ModelProto``, bytes or ``surgeon.Model``) that are not initializers."""
    proto = _proto(model)
    inits = {i.name for i in proto.graph.initializer}
    return [_spec(i) for i in proto.graph.input if i.name not in inits]


def metadata(model: Any) -> dict[str, str]:
    return {p.key: p.value for p in _proto(model).metadata_props}


def _proto(model: Any) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (str, Path)):
        return onnx.load(str(model), load_external_data=False)
    if isinstance(model, bytes):
        return onnx.load_from_string(model)
    from surgeon.io.model import Model

    if isinstance(model, Model):
        from surgeon.io.export import to_proto

        return to_proto(model)
    raise TypeError(f"expected a path, ModelProto, bytes or surgeon.Model, not {type(model).__name__}")


def tensor_spec(vi: onnx.ValueInfoProto) -> InputSpec:
    """The spec of any typed tensor (a graph input, or a value_info entry: a tensor fed from outside)."""
    return _spec(vi)


def _spec(vi: onnx.ValueInfoProto) -> InputSpec:
    t = vi.type
    if not t.HasField("tensor_type"):
        return InputSpec(vi.name, None, None, t.WhichOneof("value") or "unknown")
    elem = t.tensor_type.elem_type
    known = next((d for d in DTYPE_TABLE if d.onnx == elem), None)
    dtype = known.np if known is not None and known.np.kind in "biuf" else None  # not bfloat16
    shape: tuple[Dim, ...] | None = None
    if t.tensor_type.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0
                      else d.dim_param if d.HasField("dim_param") and d.dim_param not in ("", "?", "-1")
                      else None
                      for d in t.tensor_type.shape.dim)
    return InputSpec(vi.name, dtype, shape, onnx.helper.tensor_dtype_to_string(elem))


def shape_text(shape: tuple[Dim, ...] | list[Dim] | None) -> str:
    if shape is None:
        return "[?]"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def resolve_dims(specs: list[InputSpec], *, dims: dict[str, int] | None = None,
                 recipe_dims: dict[str, int] | None = None, arrays: dict[str, np.ndarray] | None = None,
                 other: list[InputSpec] | None = None, meta: dict[str, str] | None = None,
                 image_size: int = IMAGE_SIZE, batch: int = BATCH) -> ResolvedDims:
    """A size for every symbolic dimension of ``specs``, by the order of the module docstring.

    ``other``: the same inputs as another model declares them (fixed sizes there count);
    ``meta``: the model's metadata_props; ``batch``: the default of a symbolic first dimension."""
    out = ResolvedDims()
    for source, table in (("--dim", dims or {}), ("the recipe's verify: dims", recipe_dims or {})):
        for name, size in table.items():
            if name not in out.sizes:
                out.sizes[name], out.sources[name] = int(size), source
    for spec in specs:
        given = (arrays or {}).get(spec.name)
        if given is None or spec.shape is None or np.ndim(given) != len(spec.shape):
            continue
        for d, n in zip(spec.shape, np.shape(given)):
            if isinstance(d, str) and d not in out.sizes:
                out.sizes[d], out.sources[d] = int(n), "the given inputs"
    others = {s.name: s for s in other or []}
    imgsz = _imgsz(meta or {})
    for spec in specs:
        if spec.shape is None:
            continue
        twin = others.get(spec.name)
        for axis, d in enumerate(spec.shape):
            if isinstance(d, int):
                continue
            key = d if isinstance(d, str) else UNNAMED
            if key in out.sizes:
                continue
            fixed = twin.shape[axis] if twin is not None and twin.shape is not None and \
                len(twin.shape) == len(spec.shape) else None
            if isinstance(fixed, int):
                size, source = fixed, "the other model"
            elif spec.image_like and axis in (2, 3) and imgsz is not None:
                size, source = imgsz[axis - 2], "the model's metadata (imgsz)"
            elif axis == 0 and (meta or {}).get("batch", "").isdigit():
                size, source = int((meta or {})["batch"]), "the model's metadata (batch)"
            elif spec.image_like and axis in (2, 3):
                size, source = image_size, "default for image height and width"
                out.image_defaulted.append((spec.name, axis))
            elif axis == 0:
                size, source = batch, "default for a batch dimension"
            else:
                size, source = OTHER, "default for other dimensions"
            if key == UNNAMED:  # unnamed dims are not shared: each place gets its own default
                continue
            out.sizes[key], out.sources[key] = size, source
    return out


def _imgsz(meta: dict[str, str]) -> tuple[int, int] | None:
    """Ultralytics writes ``imgsz: [640, 640]`` into the model's metadata."""
    text = meta.get("imgsz")
    if not text:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    return None


def concrete_shape(spec: InputSpec, resolved: ResolvedDims, image_size: int = IMAGE_SIZE) -> list[int]:
    """The shape an array for ``spec`` gets."""
    if spec.shape is None:
        raise SurgeonError(f"input '{spec.name}' declares no shape, so no sample input can be made for it",
                           hint="give real inputs with --inputs FILE.npz")
    shape = []
    for axis, d in enumerate(spec.shape):
        if isinstance(d, int):
            shape.append(d)
        elif isinstance(d, str):
            shape.append(resolved.sizes[d])
        elif UNNAMED in resolved.sizes:
            shape.append(resolved.sizes[UNNAMED])
        elif spec.image_like and axis in (2, 3):
            shape.append(image_size)
        else:
            shape.append(BATCH if axis == 0 else OTHER)
    return shape


def sample_array(spec: InputSpec, shape: list[int], rng: np.random.Generator) -> np.ndarray:
    """Seeded values that exercise the model: standard normal floats, full-range 8-bit
    integers (pixels), small positive other integers (safe as indices, sizes and trip counts)."""
    dtype = spec.dtype
    if dtype is None:
        raise SurgeonError(f"cannot make sample values for input '{spec.name}' of type {spec.type_name}",
                           hint="give real inputs with --inputs FILE.npz")
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    if dtype in (np.dtype(np.uint8), np.dtype(np.int8)):
        info = np.iinfo(dtype)
        return rng.integers(int(info.min), int(info.max) + 1, shape).astype(dtype)
    return rng.integers(1, 4, shape).astype(dtype)


def sample_feeds(specs: list[InputSpec], resolved: ResolvedDims, seed: int = 0,
                 image_size: int = IMAGE_SIZE) -> dict[str, np.ndarray]:
    """One seeded array per input (the same seed gives the same arrays)."""
    rng = np.random.default_rng(seed)
    return {s.name: sample_array(s, concrete_shape(s, resolved, image_size), rng) for s in specs}


__all__ = ["IMAGE_SIZE", "IMAGE_SIZES", "InputSpec", "ResolvedDims", "UNNAMED", "concrete_shape", "input_specs",
           "metadata", "resolve_dims", "sample_array", "sample_feeds", "shape_text", "tensor_spec"]
