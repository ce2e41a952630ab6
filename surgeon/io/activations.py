"""Sample inputs for a model, and one onnxruntime run that measures its intermediate tensors.

``to_fp16`` keeps in float32 the nodes whose values float16 cannot hold; for
activations it needs their magnitudes on real-looking inputs. onnxruntime
exposes intermediate tensors only in a debug build (an environment switch),
so :func:`activation_peaks` exports the graph, lists the tensors it wants as
extra graph outputs and runs it once.

The weights are never copied for the run: external weights stay in their
files and onnxruntime reads them from the model's folder
(``session.model_external_initializers_file_folder_path``); in-memory weights
go into the exported protobuf, as they would to save. onnxruntime holds every
exposed tensor of the run at once, so the run costs about the model's weights
(1.2x on a chain of MatMuls with 256 MiB of external weights, 1.5x when each
weight is transposed first) plus all its activations for one input.

:func:`sample_inputs` synthesizes inputs (its resolution of symbolic dims is
the one to unify with ``surgeon.verify``'s when both read model metadata).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from surgeon.errors import SurgeonError
from surgeon.io.model import Model

IMAGE_SIZE = 224
"""Symbolic height and width of an image-like input (rank 4, [N, C, H, W]): a size convolutional
backbones are trained at, large enough that strided stages keep more than one pixel."""
IMAGE_SIZES = (224, 256, 320)
"""Sizes :func:`activation_peaks` tries in turn for symbolic image dims when the model rejects one
(224 = 7 x 32 suits strides of 32; 256 multiples of 64; 320 multiples of 64 and 80). Each try is a
whole run, so the list is short; give real inputs for anything else."""
BATCH = 1
"""A symbolic first dim (the batch)."""
LENGTH = 64
"""Any other symbolic dim (sequence length, time steps...)."""


class ActivationRunError(SurgeonError):
    """The float32 model could not be run on the sample inputs."""


def resolve_dims(inputs: Iterable[gs.Tensor], dims: dict[str, int] | None = None,
                 image_size: int = IMAGE_SIZE) -> dict[str, list[int]]:
    """Concrete shapes for ``inputs``: fixed dims as declared; a symbolic dim from ``dims`` by name,
    else ``BATCH`` for the first axis, ``IMAGE_SIZE`` for the last two axes of a rank-4 input,
    ``LENGTH`` otherwise. One symbol gets one size everywhere (the first input that has it decides)."""
    chosen: dict[str, int] = dict(dims or {})
    shapes: dict[str, list[int]] = {}
    for t in inputs:
        if t.shape is None:
            raise ActivationRunError(f"input '{t.name}' has no declared shape, so no sample can be made for it",
                                     hint="give sample inputs as a .npz file (numpy.savez(path, name=array))")
        shape = []
        for axis, d in enumerate(t.shape):
            if isinstance(d, int) and d > 0:
                shape.append(d)
                continue
            default = BATCH if axis == 0 else image_size if len(t.shape) == 4 and axis >= 2 else LENGTH
            if isinstance(d, str) and d:
                shape.append(chosen.setdefault(d, default))
            else:
                shape.append(default)
        shapes[t.name] = shape
    return shapes


def sample_inputs(inputs: Iterable[gs.Tensor], dims: dict[str, int] | None = None,
                  seed: int = 0, image_size: int = IMAGE_SIZE) -> dict[str, np.ndarray]:
    """Seeded random arrays for ``inputs`` (gs tensors with dtype and shape), shapes from :func:`resolve_dims`:
    floats standard normal (about the range of normalized images and embeddings), integers 1..3
    (safe as indices, sizes and trip counts), booleans either."""
    inputs = list(inputs)
    shapes = resolve_dims(inputs, dims, image_size)
    rng = np.random.default_rng(seed)
    feeds = {}
    for t in inputs:
        try:
            dtype = np.dtype(t.dtype)
        except TypeError:
            dtype = None
        if dtype is None or dtype.kind not in "biuf":
            raise ActivationRunError(f"cannot make sample values for input '{t.name}' of type {t.dtype}",
                                     hint="give sample inputs as a .npz file (numpy.savez(path, name=array))")
        shape = shapes[t.name]
        if dtype.kind == "f":
            feeds[t.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[t.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feeds[t.name] = rng.integers(1, 4, shape).astype(dtype)
    return feeds


def load_inputs(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` file, by name."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise SurgeonError(f"sample inputs not found: {path}", hint="check the path of the .npz file") from None
    except Exception as exc:  # numpy raises ValueError, OSError, BadZipFile... for a bad file
        raise SurgeonError(f"cannot read sample inputs {path}: {_short(exc)}",
                           hint="save them with numpy.savez(path, input_name=array, ...)") from None


def activation_peaks(model: Model, names: Iterable[str],
                     feeds: dict[str, np.ndarray] | None = None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Largest finite magnitude of each tensor in ``names`` (tensors of the main graph) when onnxruntime
    runs ``model`` on ``feeds``, and the feeds used. Without ``feeds``, :func:`sample_inputs` makes
    them, trying the sizes of ``IMAGE_SIZES`` in turn for symbolic image dims until the model runs.
    Tensors that are not float, or hold no finite value, are left out. Raises
    :class:`ActivationRunError` when onnxruntime cannot load or run the model."""
    import onnxruntime as ort

    from surgeon.io.export import to_proto

    names = list(dict.fromkeys(names))
    proto = to_proto(model)
    graph_inputs = {i.name for i in proto.graph.input}
    declared = {o.name for o in proto.graph.output}
    wanted = [n for n in names if n not in graph_inputs]
    proto.graph.output.extend(onnx.ValueInfoProto(name=n) for n in wanted if n not in declared)
    opts = ort.SessionOptions()
    opts.enable_cpu_mem_arena = False
    opts.log_severity_level = 4  # onnxruntime's own error lines never reach the terminal: the error says it
    # Basic optimizations fold what is computed from weights alone (a Transpose of each weight) once, at load,
    # instead of holding a copy per node at run time (1.5x instead of 2x the weights on tests/test_memory.py's
    # transposed MatMul chain); exposed tensors are graph outputs, which no optimization removes or changes.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if model.base_dir is not None:
        opts.add_session_config_entry("session.model_external_initializers_file_folder_path", str(model.base_dir))
    try:
        session = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument/NotImplemented types
        raise ActivationRunError(f"onnxruntime cannot load the float32 model: {_short(exc)}",
                                 hint="onnxruntime cannot run custom ops without their library") from None
    del proto
    known = {i.name for i in session.get_inputs()}
    run_options = ort.RunOptions()
    run_options.log_severity_level = 4
    tries = [feeds] if feeds is not None else \
        [sample_inputs(model.graph.inputs, image_size=size) for size in _image_sizes(model)]
    failure = ""
    for tried in tries:
        missing = sorted(known - set(tried))
        if missing:
            raise ActivationRunError(f"the sample inputs have no array for input(s) {', '.join(missing)}",
                                     hint="the .npz file must hold every graph input, by name: "
                                          + ", ".join(sorted(known)))
        try:
            values = session.run(wanted, {k: v for k, v in tried.items() if k in known}, run_options)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument/RuntimeException types
            shapes = ", ".join(f"{k} {list(np.shape(v))}" for k, v in tried.items())
            failure = failure or f"({shapes}): {_short(exc)}"
            continue
        peaks = {name: _peak(v) for name, v in zip(wanted, values)}
        peaks.update({k: _peak(v) for k, v in tried.items() if k in set(names)})
        return {k: v for k, v in peaks.items() if v is not None}, tried
    raise ActivationRunError(f"onnxruntime cannot run the float32 model on the sample inputs {failure}",
                             hint="give sample inputs the model accepts as a .npz file (inputs: <file.npz>)")


def _image_sizes(model: Model) -> list[int]:
    """IMAGE_SIZES when an input has a symbolic image dim, else just the first (nothing to vary)."""
    symbolic = any(t.shape is not None and len(t.shape) == 4
                   and any(not (isinstance(d, int) and d > 0) for d in t.shape[2:]) for t in model.graph.inputs)
    return list(IMAGE_SIZES) if symbolic else [IMAGE_SIZE]


def _peak(value: Any) -> float | None:
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f" or value.size == 0:
        return None
    magnitude = np.abs(value, dtype=np.float32)
    finite = np.isfinite(magnitude)
    if not finite.all():
        magnitude = magnitude[finite]
    return float(magnitude.max()) if magnitude.size else None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."
